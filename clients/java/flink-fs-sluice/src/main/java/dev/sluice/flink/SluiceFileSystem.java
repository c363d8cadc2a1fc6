package dev.sluice.flink;

import dev.sluice.client.Committer;
import dev.sluice.client.RecoverableStream;
import dev.sluice.client.SluiceClient;
import dev.sluice.client.SluiceException;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.util.List;
import org.apache.flink.core.fs.BlockLocation;
import org.apache.flink.core.fs.FSDataInputStream;
import org.apache.flink.core.fs.FSDataOutputStream;
import org.apache.flink.core.fs.FileStatus;
import org.apache.flink.core.fs.FileSystem;
import org.apache.flink.core.fs.Path;
import org.apache.flink.core.fs.RecoverableWriter;

/**
 * A Flink file system for one scheme and authority ({@code s3://bucket}), every call through a
 * sluice gateway: the read side and the namespace calls as they are, {@link
 * #createRecoverableWriter} as the gateway's write protocol, and {@link #create} as a one-shot
 * session committed on close.
 */
public final class SluiceFileSystem extends FileSystem {
  private final URI uri;
  private final SluiceClient client;

  /**
   * The write sessions this process has open, by target: a delete of a directory aborts the ones
   * under it first (the gateway refuses to delete under a live session, and a local file system
   * would take the in-progress file along).
   */
  static final java.util.Set<RecoverableStream> LIVE =
      java.util.concurrent.ConcurrentHashMap.newKeySet();

  public SluiceFileSystem(URI uri, SluiceClient client) {
    this.uri =
        URI.create(
            uri.getScheme() + "://" + (uri.getAuthority() == null ? "" : uri.getAuthority()) + "/");
    this.client = client;
  }

  /** A Flink path as the gateway writes URIs: {@code scheme://authority/path}. */
  static String location(Path path) {
    URI u = path.toUri();
    String authority = u.getAuthority() == null ? "" : u.getAuthority();
    return u.getScheme() + "://" + authority + (u.getPath() == null ? "" : u.getPath());
  }

  SluiceClient client() {
    return client;
  }

  @Override
  public Path getWorkingDirectory() {
    return new Path(uri);
  }

  @Override
  public Path getHomeDirectory() {
    return new Path(uri);
  }

  @Override
  public URI getUri() {
    return uri;
  }

  @Override
  public FileStatus getFileStatus(Path path) throws IOException {
    try {
      return status(client.stat(location(path)));
    } catch (SluiceException.NotFound e) {
      throw new FileNotFoundException(e.details());
    }
  }

  private static FileStatus status(dev.sluice.proto.v1.FileStatus s) {
    return new Status(s.getSize(), s.getIsDir(), s.getModifiedMs(), new Path(s.getPath()));
  }

  /** A file or directory as the gateway reports it. */
  record Status(long len, boolean dir, long modified, Path path) implements FileStatus {
    @Override
    public long getLen() {
      return len;
    }

    @Override
    public long getBlockSize() {
      return 64L << 20;
    }

    @Override
    public short getReplication() {
      return 1;
    }

    @Override
    public long getModificationTime() {
      return modified;
    }

    @Override
    public long getAccessTime() {
      return 0;
    }

    @Override
    public boolean isDir() {
      return dir;
    }

    @Override
    public Path getPath() {
      return path;
    }
  }

  @Override
  public BlockLocation[] getFileBlockLocations(FileStatus file, long start, long len) {
    return new BlockLocation[] {
      new BlockLocation() {
        @Override
        public String[] getHosts() {
          return new String[] {"localhost"};
        }

        @Override
        public long getOffset() {
          return 0;
        }

        @Override
        public long getLength() {
          return file.getLen();
        }

        @Override
        public int compareTo(BlockLocation o) {
          return Long.compare(getOffset(), o.getOffset());
        }
      }
    };
  }

  @Override
  public FSDataInputStream open(Path path, int bufferSize) throws IOException {
    return open(path);
  }

  @Override
  public FSDataInputStream open(Path path) throws IOException {
    String file = location(path);
    try {
      client.stat(file);
    } catch (SluiceException.NotFound e) {
      throw new FileNotFoundException(e.details());
    }
    return new Reader(client, file);
  }

  /** Reads a committed file; a seek reopens the read at the new offset. */
  private static final class Reader extends FSDataInputStream {
    private final SluiceClient client;
    private final String file;
    private InputStream in;
    private long pos;

    Reader(SluiceClient client, String file) {
      this.client = client;
      this.file = file;
    }

    private InputStream stream() throws IOException {
      if (in == null) {
        in = client.read(file, pos, 0);
      }
      return in;
    }

    @Override
    public void seek(long desired) throws IOException {
      if (desired != pos) {
        close();
        pos = desired;
      }
    }

    @Override
    public long getPos() {
      return pos;
    }

    @Override
    public int read() throws IOException {
      int b = stream().read();
      if (b >= 0) {
        pos++;
      }
      return b;
    }

    @Override
    public int read(byte[] b, int off, int len) throws IOException {
      int n = stream().read(b, off, len);
      if (n > 0) {
        pos += n;
      }
      return n;
    }

    @Override
    public void close() throws IOException {
      if (in != null) {
        in.close();
        in = null;
      }
    }
  }

  @Override
  public FileStatus[] listStatus(Path dir) throws IOException {
    try {
      List<dev.sluice.proto.v1.FileStatus> entries = client.list(location(dir));
      return entries.stream().map(SluiceFileSystem::status).toArray(FileStatus[]::new);
    } catch (SluiceException.NotFound e) {
      // Object stores have no directories: a prefix nothing lies under
      // lists as empty, as it does after mkdirs.
      return new FileStatus[0];
    } catch (SluiceException.FailedPrecondition e) {
      // A file, not a directory: Flink lists a file as itself.
      return new FileStatus[] {getFileStatus(dir)};
    }
  }

  @Override
  public boolean delete(Path path, boolean recursive) throws IOException {
    String target = location(path);
    String under = target.endsWith("/") ? target : target + "/";
    for (RecoverableStream stream : LIVE) {
      if (stream.path().equals(target) || (recursive && stream.path().startsWith(under))) {
        LIVE.remove(stream);
        stream.close();
      }
    }
    return client.delete(target, recursive);
  }

  @Override
  public boolean mkdirs(Path path) throws IOException {
    client.mkdirs(location(path));
    return true;
  }

  @Override
  public FSDataOutputStream create(Path path, WriteMode mode) throws IOException {
    String file = location(path);
    if (mode == WriteMode.OVERWRITE) {
      client.delete(file, false);
    }
    RecoverableStream stream = client.open(file);
    return new FSDataOutputStream() {
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

      @Override
      public void sync() throws IOException {
        stream.persist();
      }

      /** Publishes the file (a one-shot write is committed when it is closed). */
      @Override
      public void close() throws IOException {
        if (!stream.isClosed()) {
          Committer committer = stream.closeForCommit();
          committer.commit();
        }
      }
    };
  }

  @Override
  public boolean rename(Path from, Path to) throws IOException {
    try {
      client.rename(location(from), location(to));
      return true;
    } catch (SluiceException.AlreadyExists | SluiceException.NotFound e) {
      return false;
    }
  }

  @Override
  public boolean isDistributedFS() {
    return true;
  }

  @Override
  public RecoverableWriter createRecoverableWriter() throws IOException {
    // Capabilities are the scheme's: any name under this file system resolves to them.
    return new SluiceRecoverableWriter(client, client.capabilities(uri + "capabilities"));
  }
}
