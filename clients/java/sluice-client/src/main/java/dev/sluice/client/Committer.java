package dev.sluice.client;

import com.google.protobuf.ByteString;
import dev.sluice.proto.v1.CommitRequest;
import dev.sluice.proto.v1.CommitResponse;

/**
 * Publishes a file (Flink's {@code Committer}). {@link #handle()} is the commit handle to keep in
 * the checkpoint until the commit is done.
 */
public final class Committer {
  private final SluiceClient client;
  private final byte[] handle;

  /** The file's CRC32C as CloseForCommit answered it, which Commit's answer must repeat. */
  private final Integer crc32c;

  /** Where a commit landed, and the CRC32C of the published file. */
  public record Committed(String path, long size, int crc32c) {}

  Committer(SluiceClient client, byte[] handle, Integer crc32c) {
    this.client = client;
    this.handle = handle.clone();
    this.crc32c = crc32c;
  }

  public byte[] handle() {
    return handle.clone();
  }

  /** Publishes the file; {@link SluiceException.AlreadyExists} when the target exists. */
  public Committed commit() throws SluiceException {
    return commit(false);
  }

  /** Publishes the file from a restored checkpoint: a commit that already happened succeeds. */
  public Committed commitAfterRecovery() throws SluiceException {
    return commit(true);
  }

  private Committed commit(boolean afterRecovery) throws SluiceException {
    ByteString bytes = ByteString.copyFrom(handle);
    // A retry may follow a commit that landed.
    CommitResponse r =
        client.unary(
            (s, attempt) ->
                s.commit(
                    CommitRequest.newBuilder()
                        .setHandle(bytes)
                        .setAfterRecovery(afterRecovery || attempt > 0)
                        .build()));
    if (crc32c != null && crc32c != r.getCrc32C()) {
      throw new SluiceException.DataLoss(
          String.format(
              "Commit of %s answered CRC32C %08x, CloseForCommit %08x",
              r.getPath(), r.getCrc32C(), crc32c));
    }
    return new Committed(r.getPath(), r.getSize(), r.getCrc32C());
  }
}
