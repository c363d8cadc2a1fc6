package dev.sluice.flink;

import dev.sluice.client.SluiceClient;
import io.grpc.ChannelCredentials;
import io.grpc.TlsChannelCredentials;
import java.io.File;
import java.io.IOException;
import java.net.URI;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.IllegalConfigurationException;
import org.apache.flink.core.fs.FileSystem;
import org.apache.flink.core.fs.FileSystemFactory;

/**
 * Flink file systems whose {@code RecoverableWriter} writes through a sluice gateway. One factory
 * per scheme sluice serves (Flink asks each for one scheme); a job's paths stay as they are ({@code
 * s3://bucket/out}), and Flink's configuration says which schemes go through sluice:
 *
 * <pre>
 * fs.sluice.address: sluice.storage.svc:50051
 * fs.sluice.schemes: s3,gs,oss,hdfs
 * </pre>
 *
 * <p>A listed scheme's factory registers with priority 100, above Flink's own plugins (0), so it
 * wins beside them; an unlisted one registers below everything, serving the scheme only where no
 * other plugin does. With {@code fs.sluice.schemes} unset, every scheme here is listed.
 */
public abstract class SluiceFileSystemFactory implements FileSystemFactory {
  public static final ConfigOption<String> ADDRESS =
      ConfigOptions.key("fs.sluice.address")
          .stringType()
          .noDefaultValue()
          .withDescription("host:port of the sluice gateway");
  public static final ConfigOption<List<String>> SCHEMES =
      ConfigOptions.key("fs.sluice.schemes")
          .stringType()
          .asList()
          .noDefaultValue()
          .withDescription("schemes written through sluice in place of Flink's own file systems");
  public static final ConfigOption<String> TOKEN =
      ConfigOptions.key("fs.sluice.token")
          .stringType()
          .noDefaultValue()
          .withDescription("bearer token");
  public static final ConfigOption<String> TLS_CA =
      ConfigOptions.key("fs.sluice.tls.ca-file")
          .stringType()
          .noDefaultValue()
          .withDescription("PEM file of the CA that signed the gateway's certificate: TLS");
  public static final ConfigOption<String> TLS_CERT =
      ConfigOptions.key("fs.sluice.tls.cert-file")
          .stringType()
          .noDefaultValue()
          .withDescription("this client's PEM certificate, for mutual TLS");
  public static final ConfigOption<String> TLS_KEY =
      ConfigOptions.key("fs.sluice.tls.key-file")
          .stringType()
          .noDefaultValue()
          .withDescription("this client's PEM key, for mutual TLS");
  public static final ConfigOption<Duration> DEADLINE =
      ConfigOptions.key("fs.sluice.timeout")
          .durationType()
          .defaultValue(Duration.ofMinutes(2))
          .withDescription("deadline of each call to the gateway");
  public static final ConfigOption<Integer> CHUNK =
      ConfigOptions.key("fs.sluice.chunk-size")
          .intType()
          .defaultValue(1 << 20)
          .withDescription("bytes per Write message");

  /** Clients by settings, shared by every factory and file system of one configuration. */
  private static final Map<String, SluiceClient> CLIENTS = new HashMap<>();

  private final String scheme;
  private Configuration config = new Configuration();
  private boolean listed = true;

  protected SluiceFileSystemFactory(String scheme) {
    this.scheme = scheme;
  }

  @Override
  public String getScheme() {
    return scheme;
  }

  @Override
  public void configure(Configuration config) {
    this.config = config;
    listed =
        config
            .getOptional(SCHEMES)
            .map(s -> s.stream().map(String::trim).collect(Collectors.toSet()).contains(scheme))
            .orElse(true);
  }

  @Override
  public int getPriority() {
    return listed ? 100 : Integer.MIN_VALUE + 1;
  }

  @Override
  public FileSystem create(URI uri) throws IOException {
    return new SluiceFileSystem(uri, client(config));
  }

  /** The shared client of a configuration. */
  static SluiceClient client(Configuration config) throws IOException {
    String address =
        config
            .getOptional(ADDRESS)
            .orElseThrow(
                () ->
                    new IllegalConfigurationException(
                        "fs.sluice.address is not set: give the gateway's host:port in Flink's configuration"));
    String key =
        String.join(
            "|",
            address,
            config.getOptional(TOKEN).orElse(""),
            config.getOptional(TLS_CA).orElse(""),
            config.getOptional(TLS_CERT).orElse(""),
            config.get(DEADLINE).toString(),
            String.valueOf(config.get(CHUNK)));
    synchronized (CLIENTS) {
      SluiceClient client = CLIENTS.get(key);
      if (client == null) {
        SluiceClient.Builder builder =
            SluiceClient.builder(address)
                .deadline(config.get(DEADLINE))
                .chunkSize(config.get(CHUNK));
        config.getOptional(TOKEN).ifPresent(builder::bearerToken);
        if (config.getOptional(TLS_CA).isPresent()) {
          builder.credentials(tls(config));
        }
        client = builder.build();
        CLIENTS.put(key, client);
      }
      return client;
    }
  }

  private static ChannelCredentials tls(Configuration config) throws IOException {
    TlsChannelCredentials.Builder tls =
        TlsChannelCredentials.newBuilder().trustManager(new File(config.get(TLS_CA)));
    if (config.getOptional(TLS_CERT).isPresent() && config.getOptional(TLS_KEY).isPresent()) {
      tls.keyManager(new File(config.get(TLS_CERT)), new File(config.get(TLS_KEY)));
    }
    return tls.build();
  }

  /** The schemes this plugin has a factory for. */
  public static final Set<String> SERVED =
      Set.copyOf(
          Arrays.asList(
              "s3", "s3a", "oss", "gs", "gcs", "hdfs", "az", "abfs", "abfss", "memory", "file"));

  public static final class S3 extends SluiceFileSystemFactory {
    public S3() {
      super("s3");
    }
  }

  public static final class S3A extends SluiceFileSystemFactory {
    public S3A() {
      super("s3a");
    }
  }

  public static final class Oss extends SluiceFileSystemFactory {
    public Oss() {
      super("oss");
    }
  }

  public static final class Gs extends SluiceFileSystemFactory {
    public Gs() {
      super("gs");
    }
  }

  public static final class Gcs extends SluiceFileSystemFactory {
    public Gcs() {
      super("gcs");
    }
  }

  public static final class Hdfs extends SluiceFileSystemFactory {
    public Hdfs() {
      super("hdfs");
    }
  }

  public static final class Az extends SluiceFileSystemFactory {
    public Az() {
      super("az");
    }
  }

  public static final class Abfs extends SluiceFileSystemFactory {
    public Abfs() {
      super("abfs");
    }
  }

  public static final class Abfss extends SluiceFileSystemFactory {
    public Abfss() {
      super("abfss");
    }
  }

  public static final class Memory extends SluiceFileSystemFactory {
    public Memory() {
      super("memory");
    }
  }

  /**
   * Local files through the gateway (its {@code file://} roots), only where {@code
   * fs.sluice.schemes} names {@code file}: otherwise Flink's own local file system wins.
   */
  public static final class LocalFiles extends SluiceFileSystemFactory {
    public LocalFiles() {
      super("file");
    }

    @Override
    public int getPriority() {
      return explicitlyListed() ? 100 : Integer.MIN_VALUE + 1;
    }
  }

  boolean explicitlyListed() {
    return config.getOptional(SCHEMES).isPresent() && listed;
  }
}
