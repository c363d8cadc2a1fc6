package dev.sluice.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.sluice.proto.v1.FileStatus;
import io.grpc.Status;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.zip.CRC32C;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The Java client against a real gateway. */
class SluiceClientTest {
  private static TestGateway gateway;

  @BeforeAll
  static void start() throws Exception {
    gateway = TestGateway.start("");
  }

  @AfterAll
  static void stop() throws Exception {
    gateway.close();
  }

  static byte[] pattern(int size, int seed) throws Exception {
    byte[] out = new byte[size];
    MessageDigest sha = MessageDigest.getInstance("SHA-256");
    for (int block = 0, at = 0; at < size; block++) {
      byte[] d = sha.digest((seed + ":" + block).getBytes(StandardCharsets.UTF_8));
      int n = Math.min(d.length, size - at);
      System.arraycopy(d, 0, out, at, n);
      at += n;
    }
    return out;
  }

  static int crc32c(byte[] data, int off, int len) {
    CRC32C c = new CRC32C();
    c.update(data, off, len);
    return (int) c.getValue();
  }

  @Test
  void writesPersistsRecoversAndCommits() throws Exception {
    byte[] data = pattern(300_000, 1);
    String target = gateway.uri("out/part-0");
    try (SluiceClient client =
        SluiceClient.builder(gateway.address()).chunkSize(4096).maxUnacked(16384).build()) {
      RecoverableStream stream = client.open(target);
      assertEquals(target, stream.path());
      for (int i = 0; i < 100_000; i += 77) {
        stream.write(data, i, Math.min(77, 100_000 - i));
      }
      byte[] handle = stream.persist();
      stream.write(data, 100_000, 50_000); // lost in the crash
      stream.abort();

      RecoverableStream resumed = client.recover(handle);
      assertEquals(100_000, resumed.position());
      assertEquals(crc32c(data, 0, 100_000), resumed.crc32c());
      resumed.write(data, 100_000, data.length - 100_000);
      Committer committer = resumed.closeForCommit();
      assertFalse(Files.exists(gateway.files.resolve("out/part-0")), "visible before the commit");
      Committer.Committed committed = committer.commit();
      assertEquals(
          new Committer.Committed(target, data.length, crc32c(data, 0, data.length)), committed);
      assertArrayEquals(data, Files.readAllBytes(gateway.files.resolve("out/part-0")));
      try (InputStream in = client.read(target, 0, 0)) {
        assertArrayEquals(data, in.readAllBytes());
      }
      assertThrows(SluiceException.AlreadyExists.class, committer::commit);
      assertEquals(data.length, client.committer(committer.handle()).commitAfterRecovery().size());
      List<FileStatus> entries = client.list(gateway.uri("out"));
      assertEquals(List.of("part-0"), entries.stream().map(FileStatus::getName).toList());
      assertTrue(client.exists(target));
      client.rename(target, gateway.uri("out/part-1"));
      assertTrue(client.delete(gateway.uri("out"), true));
    }
  }

  @Test
  void failuresAreTypedByStatusCode() throws Exception {
    SluiceClient.Retry once = new SluiceClient.Retry(1, Duration.ofMillis(1), Duration.ofMillis(1));
    try (SluiceClient client = SluiceClient.builder(gateway.address()).retry(once).build()) {
      SluiceException e =
          assertThrows(SluiceException.Unimplemented.class, () -> client.open("nope://bucket/x"));
      assertEquals(Status.Code.UNIMPLEMENTED, e.code());
      assertTrue(e.details().contains("file"), e.details());
      assertThrows(
          SluiceException.InvalidArgument.class, () -> client.recover("not a handle".getBytes()));
      assertThrows(SluiceException.NotFound.class, () -> client.stat(gateway.uri("missing")));
      RecoverableStream stream = client.open(gateway.uri("typed/a"));
      stream.write("abc".getBytes());
      Committer committer = stream.closeForCommit();
      assertThrows(SluiceException.FailedPrecondition.class, () -> stream.write("more".getBytes()));
      committer.commit();
    }
    try (SluiceClient nobody = SluiceClient.builder("127.0.0.1:1").retry(once).build()) {
      assertThrows(SluiceException.Unavailable.class, () -> nobody.open("file:///tmp/x"));
    }
  }

  @Test
  void cutConnectionsAreSentAgainWithoutDuplicates() throws Exception {
    byte[] data = pattern(24 << 20, 3);
    try (CutProxy proxy = new CutProxy(gateway.address());
        SluiceClient client =
            SluiceClient.builder(proxy.address())
                .chunkSize(64 << 10)
                .maxUnacked(4 << 20)
                .retry(new SluiceClient.Retry(50, Duration.ofMillis(1), Duration.ofMillis(50)))
                .build()) {
      RecoverableStream stream = client.open(gateway.uri("cut/part-0"));
      int cuts = 0;
      for (int i = 0; i < data.length; i += 1 << 20) {
        stream.write(data, i, 1 << 20);
        if ((i >> 20) % 3 == 1) {
          Thread.sleep(5);
          cuts += proxy.cut();
        }
        if ((i >> 20) % 8 == 7) {
          stream.persist();
        }
      }
      Committer committer = stream.closeForCommit();
      proxy.cut();
      committer.commit();
      assertTrue(cuts >= 5, "only " + cuts + " connections were cut");
      assertArrayEquals(data, Files.readAllBytes(gateway.files.resolve("cut/part-0")));
    }
  }

  @Test
  void writeStreamsUseAConnectionOfTheirOwn() throws Exception {
    byte[] data = pattern(6 << 20, 4);
    try (CutProxy proxy = new CutProxy(gateway.address());
        SluiceClient client = SluiceClient.builder(proxy.address()).build()) {
      RecoverableStream stream = client.open(gateway.uri("separate/part-0"));
      stream.write(data, 0, 3 << 20);
      stream.persist();
      stream.write(data, 3 << 20, 3 << 20);
      stream.closeForCommit().commit();
      List<Long> carried = proxy.upstream.stream().map(a -> a.get()).sorted().toList();
      assertEquals(2, carried.size(), "bytes per connection: " + carried);
      assertTrue(
          carried.get(0) < 64 << 10 && carried.get(1) >= 6 << 20,
          "bytes per connection: " + carried);
    }
  }

  @Test
  void bearerTokens() throws Exception {
    String token = "java-job-token";
    String digest =
        HexFormat.of()
            .formatHex(
                MessageDigest.getInstance("SHA-256")
                    .digest(token.getBytes(StandardCharsets.UTF_8)));
    java.nio.file.Path dir = Files.createTempDirectory("sluice-java-auth-");
    try (TestGateway secured =
        new TestGateway(
            dir,
            "auth.principals.javajob.token-sha256: "
                + digest
                + "\nauth.principals.javajob.prefixes: file://"
                + dir.resolve("files/jobs")
                + "\n")) {
      SluiceClient.Retry once =
          new SluiceClient.Retry(1, Duration.ofMillis(1), Duration.ofMillis(1));
      try (SluiceClient anonymous = SluiceClient.builder(secured.address()).retry(once).build();
          SluiceClient client =
              SluiceClient.builder(secured.address()).bearerToken(token).retry(once).build()) {
        assertThrows(
            SluiceException.Unauthenticated.class,
            () -> anonymous.open(secured.uri("jobs/part-0")));
        assertThrows(
            SluiceException.PermissionDenied.class, () -> client.open(secured.uri("elsewhere")));
        RecoverableStream stream = client.open(secured.uri("jobs/part-0"));
        stream.write("with a token".getBytes());
        stream.closeForCommit().commit();
        assertEquals("with a token", Files.readString(secured.files.resolve("jobs/part-0")));
      }
    }
  }

  @Test
  void crc32cOfJoinedRuns() throws Exception {
    byte[] data = pattern(100_000, 9);
    for (int split : new int[] {0, 1, 7, 4096, 99_999, 100_000}) {
      int joined =
          Crc.combine(
              crc32c(data, 0, split),
              crc32c(data, split, data.length - split),
              data.length - split);
      assertEquals(crc32c(data, 0, data.length), joined, "split at " + split);
    }
  }
}
