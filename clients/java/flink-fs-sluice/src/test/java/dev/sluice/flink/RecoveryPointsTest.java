package dev.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.sluice.client.TestGateway;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.flink.core.fs.FileStatus;
import org.apache.flink.core.fs.Path;
import org.apache.flink.core.fs.RecoverableFsDataOutputStream;
import org.apache.flink.core.fs.RecoverableWriter;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * What the four cases of Flink's suite that list the in-progress file go on to check, through the
 * plugin: a file persisted at four points (before any byte, after one chunk, again with nothing
 * new, after two chunks), recovered from each through a fresh writer and its deserializer, written
 * on and committed, holds exactly the persisted bytes and what followed; a later handle is refused
 * once an earlier one has been recovered.
 */
class RecoveryPointsTest {
  private static final byte[] ONE = "THIS IS A TEST 1.".getBytes(StandardCharsets.UTF_8);
  private static final byte[] TWO = "THIS IS A TEST 2.".getBytes(StandardCharsets.UTF_8);
  private static final byte[] THREE = "THIS IS A TEST 3.".getBytes(StandardCharsets.UTF_8);

  private static TestGateway gateway;

  @BeforeAll
  static void start() throws Exception {
    gateway = TestGateway.start("");
  }

  @AfterAll
  static void stop() throws Exception {
    gateway.close();
  }

  private static byte[] concat(byte[]... parts) {
    java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
    for (byte[] p : parts) {
      out.writeBytes(p);
    }
    return out.toByteArray();
  }

  @ParameterizedTest
  @ValueSource(strings = {"empty", "one", "one-again", "two"})
  void recoversFromEachPersistPoint(String point) throws Exception {
    SluiceFileSystem fs = Gateways.fileSystem(gateway, "file:///");
    Path dir = new Path(gateway.uri("points/" + point));
    Path file = new Path(dir, "part-0");
    RecoverableWriter writer = fs.createRecoverableWriter();
    Map<String, RecoverableWriter.ResumeRecoverable> points = new LinkedHashMap<>();
    Map<String, byte[]> persisted = new LinkedHashMap<>();
    try (RecoverableFsDataOutputStream stream = writer.open(file)) {
      points.put("empty", stream.persist());
      persisted.put("empty", new byte[0]);
      stream.write(ONE);
      points.put("one", stream.persist());
      persisted.put("one", ONE);
      points.put("one-again", stream.persist());
      persisted.put("one-again", ONE);
      stream.write(TWO);
      points.put("two", stream.persist());
      persisted.put("two", concat(ONE, TWO));
    }
    SimpleVersionedSerializer<RecoverableWriter.ResumeRecoverable> serializer =
        writer.getResumeRecoverableSerializer();
    byte[] serialized = serializer.serialize(points.get(point));

    RecoverableWriter fresh = fs.createRecoverableWriter();
    RecoverableWriter.ResumeRecoverable restored =
        fresh.getResumeRecoverableSerializer().deserialize(serializer.getVersion(), serialized);
    try (RecoverableFsDataOutputStream stream = fresh.recover(restored)) {
      assertEquals(persisted.get(point).length, stream.getPos());
      stream.write(THREE);
      stream.closeForCommit().commit();
    }
    FileStatus[] listed = fs.listStatus(dir);
    assertEquals(1, listed.length, "only the committed file shows");
    assertEquals("part-0", listed[0].getPath().getName());
    try (InputStream in = fs.open(file)) {
      assertArrayEquals(concat(persisted.get(point), THREE), in.readAllBytes());
    }
    if (!point.equals("two")) {
      // Recovering an earlier point cut the file back: the last handle is refused.
      assertThrows(IOException.class, () -> fresh.recover(points.get("two")));
    }
  }
}
