package dev.sluice.flink;

import dev.sluice.client.Committer;
import dev.sluice.client.RecoverableStream;
import dev.sluice.client.SluiceClient;
import dev.sluice.proto.v1.CapabilitiesResponse;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import org.apache.flink.core.fs.Path;
import org.apache.flink.core.fs.RecoverableFsDataOutputStream;
import org.apache.flink.core.fs.RecoverableWriter;
import org.apache.flink.core.io.SimpleVersionedSerializer;

/**
 * Flink's {@link RecoverableWriter} on a sluice gateway: open, persist, recover, close for commit
 * and commit are the gateway's calls, and a recoverable is the gateway's handle (opaque, signed,
 * and enough for any replica to recover or commit it). Whether it supports resume and needs cleanup
 * comes from the gateway's {@code Capabilities} for the scheme.
 */
public final class SluiceRecoverableWriter implements RecoverableWriter {
  private final SluiceClient client;
  private final CapabilitiesResponse capabilities;

  SluiceRecoverableWriter(SluiceClient client, CapabilitiesResponse capabilities) {
    this.client = client;
    this.capabilities = capabilities;
  }

  @Override
  public RecoverableFsDataOutputStream open(Path path) throws IOException {
    return new Stream(client.open(SluiceFileSystem.location(path)));
  }

  @Override
  public RecoverableFsDataOutputStream recover(ResumeRecoverable resumable) throws IOException {
    return new Stream(client.recover(handle(resumable)));
  }

  @Override
  public boolean requiresCleanupOfRecoverableState() {
    return capabilities.getRequiresCleanup();
  }

  @Override
  public boolean cleanupRecoverableState(ResumeRecoverable resumable) throws IOException {
    return client.cleanup(handle(resumable));
  }

  @Override
  public RecoverableFsDataOutputStream.Committer recoverForCommit(CommitRecoverable recoverable) {
    Handle h = (Handle) recoverable;
    return new CommitterAdapter(client.committer(h.bytes), h);
  }

  @Override
  public SimpleVersionedSerializer<CommitRecoverable> getCommitRecoverableSerializer() {
    @SuppressWarnings({"unchecked", "rawtypes"})
    SimpleVersionedSerializer<CommitRecoverable> s = (SimpleVersionedSerializer) Handle.SERIALIZER;
    return s;
  }

  @Override
  public SimpleVersionedSerializer<ResumeRecoverable> getResumeRecoverableSerializer() {
    @SuppressWarnings({"unchecked", "rawtypes"})
    SimpleVersionedSerializer<ResumeRecoverable> s = (SimpleVersionedSerializer) Handle.SERIALIZER;
    return s;
  }

  @Override
  public boolean supportsResume() {
    return capabilities.getSupportsResume();
  }

  private static byte[] handle(ResumeRecoverable resumable) {
    return ((Handle) resumable).bytes;
  }

  /**
   * A gateway handle as a Flink recoverable: every resume handle is a commit handle too. Serialized
   * versioned: version 1 is the handle's length and bytes, then the target and position (for logs).
   */
  static final class Handle implements ResumeRecoverable, CommitRecoverable {
    final byte[] bytes;
    final String target;
    final long position;

    Handle(byte[] bytes, String target, long position) {
      this.bytes = bytes;
      this.target = target;
      this.position = position;
    }

    @Override
    public String toString() {
      return "sluice handle of " + target + " at byte " + position;
    }

    static final SimpleVersionedSerializer<Handle> SERIALIZER =
        new SimpleVersionedSerializer<>() {
          /** Version 1 begins with this, so a stranger's bytes are told apart. */
          private static final int MAGIC = 0x534c4831; // "SLH1"

          @Override
          public int getVersion() {
            return 1;
          }

          @Override
          public byte[] serialize(Handle h) throws IOException {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream(h.bytes.length + 64);
            DataOutputStream out = new DataOutputStream(bytes);
            out.writeInt(MAGIC);
            out.writeInt(h.bytes.length);
            out.write(h.bytes);
            out.writeUTF(h.target);
            out.writeLong(h.position);
            out.flush();
            return bytes.toByteArray();
          }

          @Override
          public Handle deserialize(int version, byte[] serialized) throws IOException {
            if (version != 1) {
              throw new IOException(
                  "unknown version " + version + " of a sluice recoverable; this plugin reads 1");
            }
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(serialized));
            if (in.readInt() != MAGIC) {
              throw new IOException("not a sluice recoverable");
            }
            byte[] handle = new byte[in.readInt()];
            in.readFully(handle);
            return new Handle(handle, in.readUTF(), in.readLong());
          }
        };
  }

  /** A file being written, as Flink's stream. */
  static final class Stream extends RecoverableFsDataOutputStream {
    private final RecoverableStream stream;

    Stream(RecoverableStream stream) {
      this.stream = stream;
      SluiceFileSystem.LIVE.add(stream);
    }

    @Override
    public void write(int b) throws IOException {
      stream.write(b);
    }

    @Override
    public void write(byte[] b, int off, int len) throws IOException {
      stream.write(b, off, len);
    }

    @Override
    public long getPos() {
      return stream.position();
    }

    @Override
    public void flush() throws IOException {
      stream.flush();
    }

    /** Durable, as a persist is (the handle is not kept). */
    @Override
    public void sync() throws IOException {
      stream.persist();
    }

    @Override
    public ResumeRecoverable persist() throws IOException {
      long position = stream.position();
      return new Handle(stream.persist(), stream.path(), position);
    }

    @Override
    public RecoverableFsDataOutputStream.Committer closeForCommit() throws IOException {
      long position = stream.position();
      // (Committer alone is Flink's here: this class inherits that name.)
      dev.sluice.client.Committer committer = stream.closeForCommit();
      SluiceFileSystem.LIVE.remove(stream);
      return new CommitterAdapter(
          committer, new Handle(committer.handle(), stream.path(), position));
    }

    /** Flink's close(): the session goes, with no durability promise. */
    @Override
    public void close() throws IOException {
      SluiceFileSystem.LIVE.remove(stream);
      stream.close();
    }
  }

  private static final class CommitterAdapter implements RecoverableFsDataOutputStream.Committer {
    private final Committer committer;
    private final Handle handle;

    CommitterAdapter(Committer committer, Handle handle) {
      this.committer = committer;
      this.handle = handle;
    }

    @Override
    public void commit() throws IOException {
      committer.commit();
    }

    @Override
    public void commitAfterRecovery() throws IOException {
      committer.commitAfterRecovery();
    }

    @Override
    public CommitRecoverable getRecoverable() {
      return handle;
    }
  }
}
