package dev.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/** The throughput comparison at a tiny size, so that it never rots: both jobs commit every byte. */
class FlinkSinkThroughputTest {
  @Test
  void bothWritersCommitEveryByteOfTheSameJob() throws Exception {
    List<FlinkSinkThroughput.Run> runs = FlinkSinkThroughput.measure(4, 1, false);
    assertEquals(
        List.of("flink", "sluice"), runs.stream().map(FlinkSinkThroughput.Run::writer).toList());
    for (FlinkSinkThroughput.Run run : runs) {
      long records = (4L << 20) / FlinkSinkThroughput.LINE;
      assertEquals(records * FlinkSinkThroughput.LINE, run.bytes(), run.writer());
      assertTrue(run.millis() > 0 && run.mibPerSecond() > 0, run.writer() + ": " + run);
    }
  }
}
