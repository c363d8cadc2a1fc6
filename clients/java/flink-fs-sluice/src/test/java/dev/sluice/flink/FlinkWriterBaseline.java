package dev.sluice.flink;

import java.io.IOException;
import java.net.URI;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.fs.FileSystem;
import org.apache.flink.core.fs.Path;
import org.apache.flink.core.fs.RecoverableFsDataOutputStream;
import org.apache.flink.core.fs.RecoverableWriter;
import org.apache.flink.core.plugin.PluginUtils;

/**
 * sluice-bench's baseline "Flink's own writer": the workload sluice-bench sends through the
 * gateway, written in this JVM with the {@link RecoverableWriter} Flink itself picks for the URI
 * (its {@code LocalRecoverableWriter} for {@code file://}, flink-s3-fs-hadoop's for {@code s3://},
 * flink-gs-fs-hadoop's for {@code gs://}) — the same bytes, the same chunks, a persist at the same
 * points, then closeForCommit and commit.
 *
 * <p>Arguments: {@code URI_DIR FILE_BYTES CHUNK_BYTES PERSIST_EVERY WRITERS FILES_PER_WRITER
 * [key=value ...]} (Flink configuration); Flink's plugins (flink-s3-fs-hadoop, flink-gs-fs-hadoop)
 * come from {@code FLINK_PLUGINS_DIR}. One warm-up file is written first so that the JIT and the
 * file system are warm, as in a running job, and is not timed. Prints one JSON line: {@code
 * {"seconds":..,"persist_us":[..],"commit_us":[..]}}. Progress goes to standard error.
 */
public final class FlinkWriterBaseline {
  private FlinkWriterBaseline() {}

  /** What one measured run took. */
  public record Result(double seconds, List<Long> persistMicros, List<Long> commitMicros) {
    String json() {
      return "{\"seconds\":"
          + seconds
          + ",\"persist_us\":"
          + persistMicros
          + ",\"commit_us\":"
          + commitMicros
          + "}";
    }
  }

  /** The bytes sluice-bench writes: its xorshift chunk, bit for bit. */
  static byte[] chunkData(int chunk) {
    byte[] out = new byte[chunk];
    long state = 0x9E3779B97F4A7C15L;
    for (int i = 0; i < chunk; i++) {
      state ^= state << 13;
      state ^= state >>> 7;
      state ^= state << 17;
      out[i] = (byte) state;
    }
    return out;
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 6) {
      System.err.println(
          "usage: FlinkWriterBaseline URI_DIR FILE_BYTES CHUNK_BYTES PERSIST_EVERY WRITERS FILES_PER_WRITER [key=value ...]");
      System.exit(2);
    }
    Configuration conf = new Configuration();
    setAll(conf, Arrays.asList(args).subList(6, args.length));
    Result result =
        measure(
            URI.create(args[0]),
            Long.parseLong(args[1]),
            Integer.parseInt(args[2]),
            Long.parseLong(args[3]),
            Integer.parseInt(args[4]),
            Integer.parseInt(args[5]),
            conf);
    System.out.println(result.json());
  }

  /** Writes the warm-up file, then the measured workload; every file is deleted after. */
  public static Result measure(
      URI dir,
      long fileBytes,
      int chunk,
      long persistEvery,
      int writers,
      int filesPerWriter,
      Configuration conf)
      throws Exception {
    // Flink's own plugins (flink-s3-fs-hadoop) from FLINK_PLUGINS_DIR, each in its own class
    // loader, as a Flink distribution loads them.
    FileSystem.initialize(conf, PluginUtils.createPluginManagerFromRootFolder(conf));
    Path base = new Path(dir);
    FileSystem fs = base.getFileSystem();
    RecoverableWriter writer = fs.createRecoverableWriter();
    byte[] data = chunkData(chunk);
    List<Long> persists = new ArrayList<>();
    List<Long> commits = new ArrayList<>();
    System.err.println("flink baseline: warm-up file on " + fs.getClass().getSimpleName());
    Path warm = new Path(base, "warmup-" + UUID.randomUUID());
    writeOne(writer, warm, Math.min(fileBytes, 64L << 20), data, persistEvery, null, null);
    fs.delete(warm, false);
    System.err.println("flink baseline: measuring");
    ExecutorService pool = Executors.newFixedThreadPool(writers);
    List<Future<List<Path>>> done = new ArrayList<>();
    long started = System.nanoTime();
    for (int w = 0; w < writers; w++) {
      int id = w;
      done.add(
          pool.submit(
              () -> {
                List<Path> written = new ArrayList<>();
                for (int f = 0; f < filesPerWriter; f++) {
                  Path target = new Path(base, "w" + id + "-f" + f + "-" + UUID.randomUUID());
                  writeOne(writer, target, fileBytes, data, persistEvery, persists, commits);
                  written.add(target);
                }
                return written;
              }));
    }
    List<Path> all = new ArrayList<>();
    for (Future<List<Path>> f : done) {
      all.addAll(f.get());
    }
    double seconds = (System.nanoTime() - started) / 1e9;
    pool.shutdown();
    for (Path p : all) {
      fs.delete(p, false);
    }
    return new Result(seconds, persists, commits);
  }

  static void writeOne(
      RecoverableWriter writer,
      Path target,
      long size,
      byte[] data,
      long persistEvery,
      List<Long> persists,
      List<Long> commits)
      throws IOException {
    RecoverableFsDataOutputStream out = writer.open(target);
    long written = 0;
    long nextPersist = persistEvery;
    while (written < size) {
      int n = (int) Math.min(size - written, data.length);
      out.write(data, 0, n);
      written += n;
      if (persistEvery > 0 && written >= nextPersist && written < size) {
        long t = System.nanoTime();
        out.persist();
        record(persists, t);
        nextPersist += persistEvery;
      }
    }
    long t = System.nanoTime();
    out.closeForCommit().commit();
    record(commits, t);
  }

  /** Sets each {@code key=value} of {@code keyValues} in {@code conf}. */
  static void setAll(Configuration conf, List<String> keyValues) {
    for (String keyValue : keyValues) {
      int eq = keyValue.indexOf('=');
      if (eq <= 0) {
        throw new IllegalArgumentException(keyValue + ": configuration is key=value");
      }
      conf.setString(keyValue.substring(0, eq), keyValue.substring(eq + 1));
    }
  }

  /**
   * Flink configuration for flink-gs-fs-hadoop on a GCS emulator at {@code endpoint}: the JSON
   * API's root URL for both its Storage client and the Hadoop connector behind it, and no
   * credentials (the emulator asks for none).
   */
  public static List<String> gcsEmulatorConf(String endpoint) {
    return List.of(
        "gs.storage.root.url=" + endpoint,
        "gs.auth.service.account.enable=false",
        "gs.auth.null.enable=true");
  }

  private static void record(List<Long> into, long startedNanos) {
    if (into != null) {
      long micros = (System.nanoTime() - startedNanos) / 1000;
      synchronized (into) {
        into.add(micros);
      }
    }
  }
}
