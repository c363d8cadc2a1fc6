package dev.sluice.client;

import com.google.protobuf.ByteString;
import dev.sluice.proto.v1.AbortRequest;
import dev.sluice.proto.v1.CloseForCommitRequest;
import dev.sluice.proto.v1.CloseForCommitResponse;
import dev.sluice.proto.v1.PersistRequest;
import dev.sluice.proto.v1.PersistResponse;
import dev.sluice.proto.v1.WriteRequest;
import dev.sluice.proto.v1.WriteResponse;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.io.OutputStream;
import java.util.ArrayDeque;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.zip.CRC32C;

/**
 * A file being written (Flink's {@code RecoverableFsDataOutputStream}), as an {@link OutputStream}.
 * Bytes are gathered into Write messages of the chunk size and streamed on one Write call, which is
 * acknowledged every max-unacked bytes. Not safe for concurrent use.
 */
public final class RecoverableStream extends OutputStream {
  private final SluiceClient client;
  private final String sessionId;
  private final String path;

  /** The position the gateway acknowledged. */
  private long acked;

  /** CRC32C of the bytes before this stream began (a recovered prefix). */
  private final int startCrc;

  /** CRC32C of the bytes written through this stream, sent or not, and how many. */
  private final CRC32C written = new CRC32C();

  private long writtenLength;

  private byte[] pending;
  private int pendingLength;

  /** Chunks sent since {@code acked}, in order, for a retry. */
  private final ArrayDeque<byte[]> sent = new ArrayDeque<>();

  private long sentLength;
  private WriteCall call;
  private boolean closed;

  /** A Write call in flight. */
  private static final class WriteCall implements StreamObserver<WriteResponse> {
    final CompletableFuture<Long> done = new CompletableFuture<>();
    StreamObserver<WriteRequest> requests;
    boolean first = true;

    @Override
    public void onNext(WriteResponse response) {
      done.complete(response.getPosition());
    }

    @Override
    public void onError(Throwable error) {
      done.completeExceptionally(error);
    }

    @Override
    public void onCompleted() {
      done.complete(null);
    }
  }

  RecoverableStream(SluiceClient client, String sessionId, String path, long position, int crc) {
    this.client = client;
    this.sessionId = sessionId;
    this.path = path;
    this.acked = position;
    this.startCrc = crc;
  }

  public String sessionId() {
    return sessionId;
  }

  /** The target as the gateway resolved it. */
  public String path() {
    return path;
  }

  /** Bytes written so far, sent or not. */
  public long position() {
    return acked + sentLength + pendingLength;
  }

  /** CRC32C of the bytes written so far (with checksums on). */
  public int crc32c() {
    return Crc.combine(startCrc, (int) written.getValue(), writtenLength);
  }

  @Override
  public void write(int b) throws IOException {
    write(new byte[] {(byte) b}, 0, 1);
  }

  @Override
  public void write(byte[] b, int off, int len) throws IOException {
    if (closed) {
      throw new SluiceException.FailedPrecondition(
          "session " + sessionId + " is closed; open or recover a new one");
    }
    if (client.options.checksums) {
      written.update(b, off, len);
      writtenLength += len;
    }
    int chunk = client.options.chunkSize;
    while (len > 0) {
      if (pending == null) {
        pending = new byte[chunk];
      }
      int take = Math.min(chunk - pendingLength, len);
      System.arraycopy(b, off, pending, pendingLength, take);
      pendingLength += take;
      off += take;
      len -= take;
      if (pendingLength == chunk) {
        byte[] full = pending;
        pending = null;
        pendingLength = 0;
        send(full);
      }
    }
  }

  /** Sends everything written and waits until the gateway has it. */
  @Override
  public void flush() throws IOException {
    if (pendingLength > 0) {
      byte[] rest = java.util.Arrays.copyOf(pending, pendingLength);
      pending = null;
      pendingLength = 0;
      send(rest);
    }
    finishCall();
  }

  /** Makes every byte written so far durable; returns the resume handle for the checkpoint. */
  public byte[] persist() throws IOException {
    flush();
    PersistResponse r =
        client.unary(
            (s, a) -> s.persist(PersistRequest.newBuilder().setSessionId(sessionId).build()));
    check(r.getPosition(), r.getCrc32C(), "Persist");
    return r.getHandle().toByteArray();
  }

  /** Makes everything durable and closes the stream; the committer publishes the file. */
  public Committer closeForCommit() throws IOException {
    flush();
    CloseForCommitResponse r =
        client.unary(
            (s, a) ->
                s.closeForCommit(
                    CloseForCommitRequest.newBuilder().setSessionId(sessionId).build()));
    check(r.getSize(), r.getCrc32C(), "CloseForCommit");
    closed = true;
    return new Committer(
        client, r.getHandle().toByteArray(), client.options.checksums ? r.getCrc32C() : null);
  }

  /** Disposes of the stream with no durability promise (Flink's {@code close()}). */
  public void abort() throws IOException {
    closed = true;
    pending = null;
    pendingLength = 0;
    if (call != null) {
      call.requests.onError(Status.CANCELLED.withDescription("aborted").asRuntimeException());
      call = null;
    }
    client.unary((s, a) -> s.abort(AbortRequest.newBuilder().setSessionId(sessionId).build()));
  }

  /** {@link #abort} unless already closed for commit. */
  @Override
  public void close() throws IOException {
    if (!closed) {
      abort();
    }
  }

  public boolean isClosed() {
    return closed;
  }

  private void check(long position, int serverCrc, String method) throws SluiceException {
    if (position != acked) {
      throw new SluiceException.Internal(
          "session "
              + sessionId
              + ": the gateway is at byte "
              + position
              + ", this client at "
              + acked);
    }
    if (client.options.checksums && serverCrc != crc32c()) {
      throw new SluiceException.DataLoss(
          String.format(
              "session %s: %s answered CRC32C %08x for the file's %d bytes, but the bytes this client wrote have %08x",
              sessionId, method, serverCrc, position, crc32c()));
    }
  }

  private WriteRequest message(WriteCall c, long offset, byte[] data) {
    WriteRequest.Builder m =
        WriteRequest.newBuilder().setOffset(offset).setData(ByteString.copyFrom(data));
    if (c.first) {
      m.setSessionId(sessionId);
      c.first = false;
    }
    if (client.options.checksums) {
      CRC32C sum = new CRC32C();
      sum.update(data);
      m.setCrc32C((int) sum.getValue());
    }
    return m.build();
  }

  private void startCall() {
    WriteCall c = new WriteCall();
    c.requests =
        client
            .writes
            .withDeadlineAfter(client.options.deadline.toMillis(), TimeUnit.MILLISECONDS)
            .write(c);
    call = c;
  }

  private void send(byte[] data) throws IOException {
    long offset = acked + sentLength;
    sent.add(data);
    sentLength += data.length;
    if (call == null) {
      startCall();
    }
    if (call.done.isDone()) {
      // The call ended early; its outcome says why, and a retry sends this chunk too.
      finishCall();
      return;
    }
    call.requests.onNext(message(call, offset, data));
    if (sentLength >= client.options.maxUnacked) {
      finishCall();
    }
  }

  /** Ends the call in flight and settles what it acknowledged; resends while the failure allows. */
  private void finishCall() throws IOException {
    int attempts = client.options.retry.attempts();
    for (int attempt = 0; ; ) {
      if (call == null) {
        if (sent.isEmpty()) {
          return;
        }
        resend();
      }
      WriteCall c = call;
      call = null;
      c.requests.onCompleted();
      Throwable failure;
      try {
        Long position =
            c.done.get(client.options.deadline.toMillis() + 5000, TimeUnit.MILLISECONDS);
        if (position == null) {
          failure =
              Status.INTERNAL
                  .withDescription("the Write call ended without an answer")
                  .asRuntimeException();
        } else {
          settle(position);
          continue;
        }
      } catch (ExecutionException e) {
        failure = e.getCause();
      } catch (TimeoutException e) {
        failure =
            Status.DEADLINE_EXCEEDED
                .withDescription("no answer to a Write call")
                .asRuntimeException();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new SluiceException(Status.Code.CANCELLED, "interrupted while writing");
      }
      if (!retryable(failure) || attempt + 1 >= attempts) {
        throw SluiceException.of(failure);
      }
      SluiceClient.sleep(client.options.retry.backoffMillis(attempt));
      attempt++;
    }
  }

  /**
   * Whether a failed Write call may be sent again from the acknowledged offset (offsets make that
   * safe): UNAVAILABLE; DATA_LOSS, a message damaged on the way of which nothing was applied; and
   * INTERNAL or UNKNOWN the gateway did not send, as a cut connection may be reported.
   */
  private static boolean retryable(Throwable failure) {
    switch (Status.fromThrowable(failure).getCode()) {
      case UNAVAILABLE:
      case DATA_LOSS:
        return true;
      case INTERNAL:
      case UNKNOWN:
        return !SluiceException.fromGateway(failure);
      default:
        return false;
    }
  }

  /** Drops what the gateway acknowledged up to {@code position}. */
  private void settle(long position) throws SluiceException {
    long end = acked + sentLength;
    if (position < acked || position > end) {
      throw new SluiceException.Internal(
          "session "
              + sessionId
              + ": the gateway acknowledged byte "
              + position
              + ", this client sent "
              + acked
              + ".."
              + end);
    }
    long drop = position - acked;
    while (drop > 0) {
      byte[] front = sent.peekFirst();
      if (front.length <= drop) {
        drop -= front.length;
        sent.removeFirst();
      } else {
        sent.removeFirst();
        sent.addFirst(java.util.Arrays.copyOfRange(front, (int) drop, front.length));
        drop = 0;
      }
    }
    sentLength = end - position;
    acked = position;
  }

  /** A new call carrying every unacknowledged chunk. */
  private void resend() {
    startCall();
    long offset = acked;
    for (byte[] data : sent) {
      if (call.done.isDone()) {
        return;
      }
      call.requests.onNext(message(call, offset, data));
      offset += data.length;
    }
  }
}
