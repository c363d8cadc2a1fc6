package org.apache.flink.core.fs;

import dev.sluice.client.TestGateway;
import dev.sluice.flink.Gateways;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/** Flink's RecoverableWriter suite on s3:// (moto, real 5 MiB parts) through sluice. */
class SluiceS3RecoverableWriterTest extends SluiceRecoverableWriterSuite {
  private static TestGateway gateway;

  @BeforeAll
  static void start() throws Exception {
    Gateways.createBucket("flink-writer");
    gateway = Gateways.withS3("");
  }

  @AfterAll
  static void stop() throws Exception {
    gateway.close();
  }

  @Override
  public Path getBasePath() {
    return new Path("s3://flink-writer/base");
  }

  @Override
  public FileSystem initializeFileSystem() {
    return Gateways.fileSystem(gateway, "s3://flink-writer/");
  }
}
