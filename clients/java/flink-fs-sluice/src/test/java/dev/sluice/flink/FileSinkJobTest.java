package dev.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.sluice.client.SluiceClient;
import dev.sluice.client.TestGateway;
import dev.sluice.proto.v1.FileStatus;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.serialization.SimpleStringEncoder;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.lib.NumberSequenceSource;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.connector.file.sink.FileSink;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.fs.FileSystem;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.filesystem.rollingpolicies.DefaultRollingPolicy;
import org.junit.jupiter.api.Test;

/**
 * A Flink job on a MiniCluster, exactly-once checkpointing, a replayable source and {@code
 * FileSink} with rolling part files on {@code s3://} (moto) through the plugin, as a job configures
 * it: only {@code fs.sluice.address} and {@code fs.sluice.schemes}, the paths unchanged. A task
 * fails mid-stream three times, and the gateway is killed with -9 and started again while the job
 * runs. At the end every source record is in the committed parts exactly once, and after the
 * janitor's cleanup no in-progress upload or tail object is left in the bucket.
 */
class FileSinkJobTest {
  private static final long RECORDS = 30_000;
  private static final String BUCKET = "flink-job";

  /** A fresh prefix per run, so that a run never reads another's parts. */
  private static final String RUN = "out-" + java.util.UUID.randomUUID();

  /**
   * Slows the stream so that checkpoints and crashes land inside it; fails at three records, once
   * each.
   */
  static final class Slow extends RichMapFunction<Long, String> {
    private final String markers;

    Slow(String markers) {
      this.markers = markers;
    }

    /** Every start of a task, the first ones and each after a failure, leaves a mark. */
    @Override
    public void open(OpenContext context) throws Exception {
      Files.createFile(Path.of(markers, "started-" + java.util.UUID.randomUUID()));
    }

    @Override
    public String map(Long value) throws Exception {
      if (value % 3 == 0) {
        Thread.sleep(1);
      }
      if (value % 10_000 == 4_321) {
        Path marker = Path.of(markers, "failed-at-" + value);
        if (!Files.exists(marker)) {
          Files.createFile(marker);
          throw new IllegalStateException("injected task failure at record " + value);
        }
      }
      return String.format("%09d", value);
    }
  }

  @Test
  void everyRecordExactlyOnceDespiteTaskFailuresAndAGatewayKill() throws Exception {
    Gateways.createBucket(BUCKET);
    TestGateway gateway = Gateways.withS3("");
    Path markers = Files.createTempDirectory("sluice-flink-markers-");
    try {
      Configuration conf = new Configuration();
      conf.set(SluiceFileSystemFactory.ADDRESS, gateway.address());
      conf.set(SluiceFileSystemFactory.SCHEMES, List.of("s3"));
      conf.set(RestartStrategyOptions.RESTART_STRATEGY, "fixed-delay");
      conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS, 1000);
      conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_DELAY, Duration.ofMillis(200));
      FileSystem.initialize(conf);

      StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
      env.setParallelism(2);
      env.setRuntimeMode(RuntimeExecutionMode.STREAMING);
      env.enableCheckpointing(300, CheckpointingMode.EXACTLY_ONCE);
      env.fromSource(
              new NumberSequenceSource(0, RECORDS - 1), WatermarkStrategy.noWatermarks(), "numbers")
          .map(new Slow(markers.toString()))
          .returns(Types.STRING)
          .sinkTo(
              FileSink.forRowFormat(
                      new org.apache.flink.core.fs.Path("s3://" + BUCKET + "/" + RUN),
                      new SimpleStringEncoder<String>())
                  .withRollingPolicy(
                      DefaultRollingPolicy.builder()
                          .withMaxPartSize(MemorySize.parse("16kb"))
                          .withRolloverInterval(Duration.ofSeconds(2))
                          .build())
                  .build());

      // The gateway dies with -9 while the job runs, and comes back on the
      // same port and data dir, as an orchestrator would bring it back.
      // (Once the job has committed its first parts: its sinks hold live
      // sessions then, which the kill loses.)
      Thread killer =
          new Thread(
              () -> {
                try (SluiceClient watcher = Gateways.client(gateway)) {
                  while (files(watcher, "s3://" + BUCKET + "/" + RUN).size() < 2) {
                    Thread.sleep(100);
                  }
                  gateway.kill();
                  Thread.sleep(500);
                  gateway.start();
                } catch (Exception e) {
                  throw new RuntimeException(e);
                }
              });
      killer.start();
      env.execute("exactly once through sluice");
      killer.join();
      String[] marks = markers.toFile().list();
      long failed = java.util.Arrays.stream(marks).filter(m -> m.startsWith("failed-at-")).count();
      long started = java.util.Arrays.stream(marks).filter(m -> m.startsWith("started-")).count();
      assertEquals(3, failed, "a task failed at records 4321, 14321 and 24321");
      // 2 first starts, 3 after the injected failures, and more after the
      // gateway's kill lost the sinks' sessions.
      assertTrue(started >= 6, "the gateway's kill restarted no task: " + started + " starts");

      try (SluiceClient client = Gateways.client(gateway)) {
        BitSet seen = new BitSet();
        List<String> duplicates = new ArrayList<>();
        int parts = 0;
        for (String file : files(client, "s3://" + BUCKET + "/" + RUN)) {
          parts++;
          try (InputStream in = client.read(file, 0, 0)) {
            for (String line : new String(in.readAllBytes(), StandardCharsets.UTF_8).split("\n")) {
              if (line.isEmpty()) {
                continue;
              }
              int value = Integer.parseInt(line);
              if (seen.get(value)) {
                duplicates.add(line);
              }
              seen.set(value);
            }
          }
        }
        assertTrue(duplicates.isEmpty(), "duplicated records: " + duplicates.size());
        assertEquals(
            RECORDS, seen.cardinality(), "records lost: " + (RECORDS - seen.cardinality()));
        assertEquals(RECORDS, seen.nextClearBit(0));
        assertTrue(parts > 4, "the part files did not roll: " + parts);
      }
    } finally {
      // Killed, not closed: the cleaner below starts on its data dir.
      gateway.kill();
      TestGateway.deleteTree(markers);
    }

    // The janitor (1 s TTL) removes what the killed sessions left behind.
    try (TestGateway cleaner =
        new TestGateway(gateway.dir, s3Config("janitor.ttl: 1s\njanitor.interval: 500ms\n"))) {
      long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
      List<String> left = leftovers();
      while (!left.isEmpty() && System.nanoTime() < deadline) {
        Thread.sleep(500);
        left = leftovers();
      }
      assertEquals(List.of(), left, "left behind after the cleanup");
    }
  }

  private static String s3Config(String extra) {
    return "s3.endpoint: "
        + Gateways.s3Endpoint()
        + "\ns3.path.style.access: true\ns3.region: us-east-1\ns3.access-key: test\ns3.secret-key: test\n"
        + extra;
  }

  /** Every committed file under a prefix, through the gateway (staging never shows). */
  private static List<String> files(SluiceClient client, String dir) throws IOException {
    List<String> out = new ArrayList<>();
    List<FileStatus> entries;
    try {
      entries = client.list(dir);
    } catch (dev.sluice.client.SluiceException.NotFound e) {
      return out; // nothing committed yet
    }
    for (FileStatus entry : entries) {
      if (entry.getIsDir()) {
        out.addAll(files(client, entry.getPath()));
      } else {
        out.add(entry.getPath());
      }
    }
    return out;
  }

  /** What the bucket holds besides committed parts: open multipart uploads and hidden objects. */
  private static List<String> leftovers() throws IOException, InterruptedException {
    HttpClient http = HttpClient.newHttpClient();
    List<String> left = new ArrayList<>();
    String uploads = get(http, "/" + BUCKET + "?uploads&prefix=" + RUN + "/");
    Matcher upload = Pattern.compile("<Key>([^<]*)</Key>").matcher(uploads);
    while (upload.find()) {
      left.add("upload:" + upload.group(1));
    }
    String objects = get(http, "/" + BUCKET + "?list-type=2&max-keys=1000&prefix=" + RUN + "/");
    Matcher key = Pattern.compile("<Key>([^<]*)</Key>").matcher(objects);
    while (key.find()) {
      String name = key.group(1).substring(key.group(1).lastIndexOf('/') + 1);
      if (name.startsWith(".")) {
        left.add(key.group(1));
      }
    }
    return left;
  }

  private static String get(HttpClient http, String path) throws IOException, InterruptedException {
    HttpResponse<String> r =
        http.send(
            HttpRequest.newBuilder(URI.create(Gateways.s3Endpoint() + path)).GET().build(),
            HttpResponse.BodyHandlers.ofString());
    return r.body();
  }
}
