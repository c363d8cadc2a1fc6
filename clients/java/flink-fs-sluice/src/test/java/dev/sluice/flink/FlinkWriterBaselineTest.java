package dev.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.net.URI;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.fs.FileSystem;
import org.apache.flink.core.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * sluice-bench's Flink baselines at a tiny size: Flink's own writers, not the plugin, write
 * sluice-bench's bytes, persist where it persists, and commit.
 */
class FlinkWriterBaselineTest {
  @TempDir java.nio.file.Path dir;

  /** Flink's own factories for file, s3 and gs, as the baseline runs them. */
  static Configuration flinkOwn() {
    Configuration conf = new Configuration();
    conf.setString("fs.sluice.schemes", "memory");
    conf.setString("s3.endpoint", Gateways.s3Endpoint());
    conf.setString("s3.path.style.access", "true");
    conf.setString("s3.access-key", "test");
    conf.setString("s3.secret-key", "test");
    conf.setString("s3.endpoint.region", "us-east-1");
    FlinkWriterBaseline.setAll(conf, FlinkWriterBaseline.gcsEmulatorConf(Gateways.gcsEndpoint()));
    return conf;
  }

  static byte[] expected(long size, int chunk) {
    byte[] data = FlinkWriterBaseline.chunkData(chunk);
    byte[] out = new byte[(int) size];
    for (int at = 0; at < size; at += chunk) {
      System.arraycopy(data, 0, out, at, (int) Math.min(chunk, size - at));
    }
    return out;
  }

  static void check(URI dirUri, String writerClass) throws Exception {
    long size = (11L << 20) + 5;
    int chunk = 1 << 20;
    long persistEvery = 3L << 20;
    FlinkWriterBaseline.Result run =
        FlinkWriterBaseline.measure(dirUri, size, chunk, persistEvery, 2, 2, flinkOwn());
    // Persists at 3, 6 and 9 MiB of each of four files, one commit each.
    assertEquals(12, run.persistMicros().size());
    assertEquals(4, run.commitMicros().size());
    assertTrue(run.seconds() > 0);
    Path target = new Path(new Path(dirUri), "checked");
    FileSystem fs = target.getFileSystem();
    assertEquals(writerClass, fs.createRecoverableWriter().getClass().getSimpleName());
    List<Long> persists = new ArrayList<>();
    FlinkWriterBaseline.writeOne(
        fs.createRecoverableWriter(),
        target,
        size,
        FlinkWriterBaseline.chunkData(chunk),
        persistEvery,
        persists,
        null);
    assertEquals(3, persists.size());
    ByteArrayOutputStream read = new ByteArrayOutputStream();
    try (InputStream in = fs.open(target)) {
      in.transferTo(read);
    }
    assertArrayEquals(expected(size, chunk), read.toByteArray());
    fs.delete(target, false);
  }

  @Test
  void flinksLocalWriterWritesTheBenchWorkload() throws Exception {
    check(dir.toUri(), "LocalRecoverableWriter");
    try (var left = Files.list(dir)) {
      assertEquals(List.of(), left.toList(), "the baseline deletes what it wrote");
    }
  }

  @Test
  void flinksS3WriterWritesTheBenchWorkload() throws Exception {
    Gateways.createBucket("flink-baseline");
    check(URI.create("s3://flink-baseline/bench"), "S3RecoverableWriter");
  }

  @Test
  void flinksGcsWriterWritesTheBenchWorkload() throws Exception {
    Gateways.createGcsBucket("flink-baseline");
    check(URI.create("gs://flink-baseline/bench"), "GSRecoverableWriter");
  }
}
