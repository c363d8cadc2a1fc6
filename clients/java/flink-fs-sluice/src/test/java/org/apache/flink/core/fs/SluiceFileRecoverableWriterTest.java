package org.apache.flink.core.fs;

import dev.sluice.client.TestGateway;
import dev.sluice.flink.Gateways;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/** Flink's RecoverableWriter suite on file:// through sluice. */
class SluiceFileRecoverableWriterTest extends SluiceRecoverableWriterSuite {
  private static TestGateway gateway;

  @BeforeAll
  static void start() throws Exception {
    gateway = TestGateway.start("");
  }

  @AfterAll
  static void stop() throws Exception {
    gateway.close();
  }

  @Override
  public Path getBasePath() {
    return new Path(gateway.uri("flink"));
  }

  @Override
  public FileSystem initializeFileSystem() {
    return Gateways.fileSystem(gateway, "file:///");
  }
}
