package org.apache.flink.core.fs;

import dev.sluice.client.TestGateway;
import dev.sluice.flink.Gateways;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/** Flink's RecoverableWriter suite on memory:// through sluice. */
class SluiceMemoryRecoverableWriterTest extends SluiceRecoverableWriterSuite {
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
    return new Path("memory://flink/base");
  }

  @Override
  public FileSystem initializeFileSystem() {
    return Gateways.fileSystem(gateway, "memory://flink/");
  }
}
