package dev.sluice.flink;

import dev.sluice.client.TestGateway;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.serialization.SimpleStringEncoder;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.lib.NumberSequenceSource;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.connector.file.sink.FileSink;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.fs.FileSystem;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.filesystem.rollingpolicies.DefaultRollingPolicy;

/**
 * The same Flink job written twice on {@code file://}, alternately: with Flink's own local
 * recoverable writer, and through sluice (the plugin serving {@code file}). A MiniCluster,
 * parallelism 1, exactly-once checkpoints every second (each persists the part in progress), {@code
 * FileSink} with 100-byte lines and 64 MiB parts. Throughput is the bytes over the job's own
 * runtime ({@code JobExecutionResult#getNetRuntime}), so the MiniCluster's start is not in it.
 *
 * <p>{@code mvn -pl flink-fs-sluice exec:exec -Dexec.classpathScope=test -Dexec.executable=java
 * '-Dexec.args=-cp %classpath dev.sluice.flink.FlinkSinkThroughput 256 5'}, with {@code SLUICE_BIN}
 * naming a release build: MiB per job, runs of each (a JVM of its own: Flink's MiniCluster cannot
 * load the job's classes inside Maven's with exec:java).
 */
public final class FlinkSinkThroughput {
  /** One line: 99 characters and a newline. */
  static final int LINE = 100;

  private FlinkSinkThroughput() {}

  /** What one job did. */
  record Run(String writer, long bytes, long millis) {
    double mibPerSecond() {
      return bytes / (1024.0 * 1024.0) / (millis / 1000.0);
    }
  }

  public static void main(String[] args) throws Exception {
    long mib = args.length > 0 ? Long.parseLong(args[0]) : 256;
    int runs = args.length > 1 ? Integer.parseInt(args[1]) : 3;
    List<Run> all = measure(mib, runs, true);
    System.out.printf(
        "Flink FileSink on file://, %d MiB per job, %d runs each (MiB/s over the job's runtime)%n",
        mib, runs);
    for (String writer : List.of("flink", "sluice")) {
      List<Double> rates = new ArrayList<>();
      for (Run r : all) {
        if (r.writer().equals(writer)) {
          rates.add(r.mibPerSecond());
        }
      }
      System.out.printf("  %-7s runs %s  median %.1f%n", writer, rounded(rates), median(rates));
    }
  }

  /** Runs the job `runs` times with each writer, alternately, each job writing `mib` MiB. */
  static List<Run> measure(long mib, int runs, boolean progress) throws Exception {
    long records = mib * 1024 * 1024 / LINE;
    Path work = Files.createTempDirectory("sluice-flink-throughput-");
    List<Run> out = new ArrayList<>();
    try (TestGateway gateway = TestGateway.start("")) {
      for (int run = 0; run < runs; run++) {
        Path own = work.resolve("flink-" + run);
        out.add(job("flink", new Configuration(), "file://" + own, own, records));
        Configuration through = new Configuration();
        through.set(SluiceFileSystemFactory.ADDRESS, gateway.address());
        through.set(SluiceFileSystemFactory.SCHEMES, List.of("file"));
        Path theirs = gateway.files.resolve("sluice-" + run);
        out.add(job("sluice", through, "file://" + theirs, theirs, records));
        if (progress) {
          Run a = out.get(out.size() - 2);
          Run b = out.get(out.size() - 1);
          System.err.printf(
              "run %d: flink %.1f MiB/s, sluice %.1f MiB/s%n",
              run + 1, a.mibPerSecond(), b.mibPerSecond());
        }
      }
    } finally {
      FileSystem.initialize(new Configuration());
      TestGateway.deleteTree(work);
    }
    return out;
  }

  private static Run job(String writer, Configuration conf, String uri, Path dir, long records)
      throws Exception {
    FileSystem.initialize(conf);
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
    env.setParallelism(1);
    env.setRuntimeMode(RuntimeExecutionMode.STREAMING);
    env.enableCheckpointing(1000, CheckpointingMode.EXACTLY_ONCE);
    env.fromSource(
            new NumberSequenceSource(0, records - 1), WatermarkStrategy.noWatermarks(), "numbers")
        .map(new Line())
        .returns(Types.STRING)
        .sinkTo(
            FileSink.forRowFormat(
                    new org.apache.flink.core.fs.Path(uri), new SimpleStringEncoder<String>())
                .withRollingPolicy(
                    DefaultRollingPolicy.builder()
                        .withMaxPartSize(MemorySize.parse("64mb"))
                        .withRolloverInterval(Duration.ofMinutes(10))
                        .build())
                .build());
    JobExecutionResult result = env.execute(writer + " writes " + uri);
    long bytes = committedBytes(dir);
    if (bytes != records * LINE) {
      throw new IllegalStateException(
          writer + " committed " + bytes + " bytes in " + dir + ", not " + records * LINE);
    }
    Run run = new Run(writer, bytes, result.getNetRuntime(TimeUnit.MILLISECONDS));
    TestGateway.deleteTree(dir);
    return run;
  }

  /** A record as a 99-character line: its number, zero-padded. */
  static final class Line implements MapFunction<Long, String> {
    @Override
    public String map(Long value) {
      char[] line = new char[LINE - 1];
      java.util.Arrays.fill(line, '0');
      String digits = Long.toString(value);
      digits.getChars(0, digits.length(), line, line.length - digits.length());
      return new String(line);
    }
  }

  /**
   * The bytes of the committed part files under `dir` (in-progress files are hidden, dot names).
   */
  static long committedBytes(Path dir) throws IOException {
    try (Stream<Path> files = Files.walk(dir)) {
      return files
          .filter(Files::isRegularFile)
          .filter(p -> !p.getFileName().toString().startsWith("."))
          .mapToLong(
              p -> {
                try {
                  return Files.size(p);
                } catch (IOException e) {
                  throw new UncheckedIOException(e);
                }
              })
          .sum();
    }
  }

  static double median(List<Double> values) {
    List<Double> sorted = new ArrayList<>(values);
    sorted.sort(null);
    int n = sorted.size();
    return n % 2 == 1 ? sorted.get(n / 2) : (sorted.get(n / 2 - 1) + sorted.get(n / 2)) / 2;
  }

  private static String rounded(List<Double> rates) {
    return rates.stream().map(r -> String.format("%.1f", r)).toList().toString();
  }
}
