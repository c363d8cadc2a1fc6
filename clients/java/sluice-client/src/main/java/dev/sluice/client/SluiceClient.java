package dev.sluice.client;

import com.google.protobuf.ByteString;
import dev.sluice.proto.v1.CapabilitiesRequest;
import dev.sluice.proto.v1.CapabilitiesResponse;
import dev.sluice.proto.v1.CleanupRequest;
import dev.sluice.proto.v1.DeleteRequest;
import dev.sluice.proto.v1.ExistsRequest;
import dev.sluice.proto.v1.FileStatus;
import dev.sluice.proto.v1.ListRequest;
import dev.sluice.proto.v1.ListResponse;
import dev.sluice.proto.v1.MkdirsRequest;
import dev.sluice.proto.v1.OpenRequest;
import dev.sluice.proto.v1.OpenResponse;
import dev.sluice.proto.v1.ReadRequest;
import dev.sluice.proto.v1.ReadResponse;
import dev.sluice.proto.v1.RecoverRequest;
import dev.sluice.proto.v1.RecoverResponse;
import dev.sluice.proto.v1.RenameRequest;
import dev.sluice.proto.v1.StatRequest;
import dev.sluice.proto.v1.StorageGatewayGrpc;
import io.grpc.ChannelCredentials;
import io.grpc.ClientInterceptor;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import java.io.IOException;
import java.io.InputStream;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * A client of a sluice gateway: Flink's {@code RecoverableWriter} for any store the gateway serves.
 *
 * <pre>{@code
 * try (SluiceClient client = SluiceClient.builder("127.0.0.1:50051").build()) {
 *   RecoverableStream stream = client.open("s3://bucket/out/part-0");
 *   stream.write(bytes);
 *   byte[] handle = stream.persist();          // keep it in the checkpoint
 *   stream.closeForCommit().commit();
 * }
 * }</pre>
 *
 * <p>Writes are batched into {@code Write} messages that carry their offset and CRC32C. A call cut
 * by {@code UNAVAILABLE}, or refused with {@code DATA_LOSS} (a message damaged on the way, of which
 * nothing was applied), is sent again from the last acknowledged offset, and the gateway skips what
 * it already has. Unary calls are retried on {@code UNAVAILABLE}. The CRC32C of the file that
 * persist, closeForCommit and commit answer is checked against the bytes written. Write streams run
 * on a connection of their own, so bytes in flight never hold back a persist or a commit. Failures
 * are {@link SluiceException}s named after their status codes. A client is safe for concurrent use;
 * a stream is not.
 */
public final class SluiceClient implements AutoCloseable {
  final Options options;
  private final ManagedChannel control;
  private final ManagedChannel data;
  final StorageGatewayGrpc.StorageGatewayBlockingStub rpc;
  final StorageGatewayGrpc.StorageGatewayStub writes;

  /** How calls are retried: {@code attempts} in all, with exponential backoff between. */
  public record Retry(int attempts, Duration initialBackoff, Duration maxBackoff) {
    long backoffMillis(int attempt) {
      long ms = Math.min(maxBackoff.toMillis(), initialBackoff.toMillis() << Math.min(attempt, 20));
      return ms / 2 + ThreadLocalRandom.current().nextLong(ms / 2 + 1);
    }
  }

  static final class Options {
    int chunkSize = 1 << 20;
    int maxUnacked = 8 << 20;
    Retry retry = new Retry(8, Duration.ofMillis(50), Duration.ofSeconds(2));
    Duration deadline = Duration.ofMinutes(2);
    boolean checksums = true;
  }

  /** Builds a client; see {@link SluiceClient#builder}. */
  public static final class Builder {
    private final String target;
    private final Options options = new Options();
    private ChannelCredentials credentials = InsecureChannelCredentials.create();
    private String token;
    private final List<ClientInterceptor> interceptors = new ArrayList<>();

    private Builder(String target) {
      this.target = target;
    }

    /** Bytes per Write message (default 1 MiB). */
    public Builder chunkSize(int bytes) {
      options.chunkSize = bytes;
      return this;
    }

    /** Bytes one Write call carries before it is acknowledged: what a retry may send again. */
    public Builder maxUnacked(int bytes) {
      options.maxUnacked = bytes;
      return this;
    }

    public Builder retry(Retry retry) {
      options.retry = retry;
      return this;
    }

    /** The deadline of each call (default 2 minutes). */
    public Builder deadline(Duration deadline) {
      options.deadline = deadline;
      return this;
    }

    /** Sent as {@code authorization: Bearer <token>} on every call. */
    public Builder bearerToken(String token) {
      this.token = token;
      return this;
    }

    /** TLS (and mutual TLS): {@code TlsChannelCredentials.newBuilder()...build()}. */
    public Builder credentials(ChannelCredentials credentials) {
      this.credentials = credentials;
      return this;
    }

    /** No CRC32C on the messages, and the file's not checked. */
    public Builder withoutChecksums() {
      options.checksums = false;
      return this;
    }

    public Builder intercept(ClientInterceptor interceptor) {
      interceptors.add(interceptor);
      return this;
    }

    public SluiceClient build() {
      if (options.chunkSize <= 0
          || options.maxUnacked < options.chunkSize
          || options.retry.attempts() < 1) {
        throw new IllegalArgumentException(
            "chunk size "
                + options.chunkSize
                + ", max unacked "
                + options.maxUnacked
                + ", "
                + options.retry.attempts()
                + " attempts: give a positive chunk size, max unacked at least that, and one attempt or more");
      }
      List<ClientInterceptor> all = new ArrayList<>(interceptors);
      if (token != null) {
        Metadata headers = new Metadata();
        headers.put(
            Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
        all.add(MetadataUtils.newAttachHeadersInterceptor(headers));
      }
      return new SluiceClient(target, credentials, all, options);
    }
  }

  /** A builder for a gateway at {@code target} ({@code host:port}). */
  public static Builder builder(String target) {
    return new Builder(target);
  }

  private SluiceClient(
      String target,
      ChannelCredentials credentials,
      List<ClientInterceptor> interceptors,
      Options options) {
    this.options = options;
    this.control = channel(target, credentials, interceptors, options);
    this.data = channel(target, credentials, interceptors, options);
    this.rpc = StorageGatewayGrpc.newBlockingStub(control);
    this.writes = StorageGatewayGrpc.newStub(data);
  }

  private static ManagedChannel channel(
      String target,
      ChannelCredentials credentials,
      List<ClientInterceptor> interceptors,
      Options options) {
    return Grpc.newChannelBuilder(target, credentials)
        .intercept(interceptors)
        .maxInboundMessageSize(64 << 20)
        .build();
  }

  @Override
  public void close() {
    control.shutdownNow();
    data.shutdownNow();
    try {
      control.awaitTermination(5, TimeUnit.SECONDS);
      data.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  /** One attempt of a unary call. */
  @FunctionalInterface
  interface Attempt<T> {
    T call(StorageGatewayGrpc.StorageGatewayBlockingStub stub, int attempt);
  }

  /**
   * A unary call, again while attempts remain on UNAVAILABLE, and on an UNKNOWN or INTERNAL the
   * gateway did not send (no {@code sluice-cause}): grpc-java reports a connection closed under a
   * call as "UNKNOWN: channel closed". Every call is safe to repeat (a repeated Commit asks for
   * after_recovery).
   */
  <T> T unary(Attempt<T> call) throws SluiceException {
    for (int attempt = 0; ; attempt++) {
      try {
        return call.call(
            rpc.withDeadlineAfter(options.deadline.toMillis(), TimeUnit.MILLISECONDS), attempt);
      } catch (StatusRuntimeException e) {
        Status.Code code = e.getStatus().getCode();
        boolean transport =
            code == Status.Code.UNAVAILABLE
                || ((code == Status.Code.UNKNOWN || code == Status.Code.INTERNAL)
                    && !SluiceException.fromGateway(e));
        if (!transport || attempt + 1 >= options.retry.attempts()) {
          throw SluiceException.of(e.getStatus());
        }
        sleep(options.retry.backoffMillis(attempt));
      }
    }
  }

  static void sleep(long millis) throws SluiceException {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new SluiceException(Status.Code.CANCELLED, "interrupted while waiting to retry");
    }
  }

  /** Starts a new file at {@code path}; nothing is visible there before the commit. */
  public RecoverableStream open(String path) throws SluiceException {
    OpenResponse r = unary((s, a) -> s.open(OpenRequest.newBuilder().setPath(path).build()));
    return new RecoverableStream(this, r.getSessionId(), r.getPath(), 0, 0);
  }

  /** Like {@link #open}, with the scheme's entropy key replaced; the stream's path says where. */
  public RecoverableStream openWithEntropy(String path) throws SluiceException {
    OpenResponse r =
        unary(
            (s, a) ->
                s.open(OpenRequest.newBuilder().setPath(path).setInjectEntropy(true).build()));
    return new RecoverableStream(this, r.getSessionId(), r.getPath(), 0, 0);
  }

  /** Continues the file of a resume handle at exactly its position; later bytes are discarded. */
  public RecoverableStream recover(byte[] handle) throws SluiceException {
    RecoverResponse r =
        unary(
            (s, a) ->
                s.recover(
                    RecoverRequest.newBuilder().setHandle(ByteString.copyFrom(handle)).build()));
    return new RecoverableStream(
        this, r.getSessionId(), r.getPath(), r.getPosition(), r.getCrc32C());
  }

  /** A committer for a commit (or resume) handle kept in a checkpoint. */
  public Committer committer(byte[] handle) {
    return new Committer(this, handle, null);
  }

  /** Frees what only this resume handle keeps (tail objects); never fails because it was done. */
  public boolean cleanup(byte[] handle) throws SluiceException {
    return unary(
            (s, a) ->
                s.cleanup(
                    CleanupRequest.newBuilder().setHandle(ByteString.copyFrom(handle)).build()))
        .getCleaned();
  }

  /** What the scheme of {@code path} promises: resume support, cleanup, part size, limits. */
  public CapabilitiesResponse capabilities(String path) throws SluiceException {
    return unary((s, a) -> s.capabilities(CapabilitiesRequest.newBuilder().setPath(path).build()));
  }

  /** What is at {@code path}; {@link SluiceException.NotFound} when nothing is. */
  public FileStatus stat(String path) throws SluiceException {
    return unary((s, a) -> s.stat(StatRequest.newBuilder().setPath(path).build())).getStatus();
  }

  public boolean exists(String path) throws SluiceException {
    return unary((s, a) -> s.exists(ExistsRequest.newBuilder().setPath(path).build())).getExists();
  }

  /** The entries one level below a directory, every page; staging never shows. */
  public List<FileStatus> list(String path) throws SluiceException {
    List<FileStatus> entries = new ArrayList<>();
    String token = "";
    while (true) {
      String page = token;
      ListResponse r =
          unary(
              (s, a) -> s.list(ListRequest.newBuilder().setPath(path).setPageToken(page).build()));
      entries.addAll(r.getEntriesList());
      if (r.getNextPageToken().isEmpty()) {
        return entries;
      }
      token = r.getNextPageToken();
    }
  }

  /** Removes a file, or a directory with {@code recursive}; false when there was nothing. */
  public boolean delete(String path, boolean recursive) throws SluiceException {
    return unary(
            (s, a) ->
                s.delete(DeleteRequest.newBuilder().setPath(path).setRecursive(recursive).build()))
        .getDeleted();
  }

  public void mkdirs(String path) throws SluiceException {
    unary((s, a) -> s.mkdirs(MkdirsRequest.newBuilder().setPath(path).build()));
  }

  /** Moves a file; never replaces one. */
  public void rename(String from, String to) throws SluiceException {
    unary((s, a) -> s.rename(RenameRequest.newBuilder().setFrom(from).setTo(to).build()));
  }

  /** {@code length} bytes (0: to the end) of a committed file from {@code offset}, as a stream. */
  public InputStream read(String path, long offset, long length) throws SluiceException {
    Iterator<ReadResponse> parts;
    try {
      parts =
          rpc.withDeadlineAfter(options.deadline.toMillis(), TimeUnit.MILLISECONDS)
              .read(
                  ReadRequest.newBuilder()
                      .setPath(path)
                      .setOffset(offset)
                      .setLength(length)
                      .build());
      // The first answer (or the error) before the stream is handed out.
      parts.hasNext();
    } catch (StatusRuntimeException e) {
      throw SluiceException.of(e.getStatus());
    }
    return new ReadStream(parts);
  }

  private static final class ReadStream extends InputStream {
    private final Iterator<ReadResponse> parts;
    private ByteString current = ByteString.EMPTY;
    private int at;

    ReadStream(Iterator<ReadResponse> parts) {
      this.parts = parts;
    }

    private boolean fill() throws IOException {
      try {
        while (at == current.size()) {
          if (!parts.hasNext()) {
            return false;
          }
          current = parts.next().getData();
          at = 0;
        }
        return true;
      } catch (StatusRuntimeException e) {
        throw SluiceException.of(e.getStatus());
      }
    }

    @Override
    public int read() throws IOException {
      return fill() ? current.byteAt(at++) & 0xff : -1;
    }

    @Override
    public int read(byte[] b, int off, int len) throws IOException {
      if (len == 0) {
        return 0;
      }
      if (!fill()) {
        return -1;
      }
      int n = Math.min(len, current.size() - at);
      current.copyTo(b, at, off, n);
      at += n;
      return n;
    }
  }
}
