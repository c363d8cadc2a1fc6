package dev.sluice.flink;

import dev.sluice.client.SluiceClient;
import dev.sluice.client.TestGateway;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

/** The gateways the plugin's tests write through, and the S3 and GCS emulators some use. */
public final class Gateways {
  private Gateways() {}

  /**
   * The S3 emulator (moto) the sluice test suite started: {@code SLUICE_TEST_S3_ENDPOINT}. A test
   * that needs it fails without it.
   */
  public static String s3Endpoint() {
    return emulator(
        "SLUICE_TEST_S3_ENDPOINT",
        "an S3 emulator (moto_server -p 5000, then http://127.0.0.1:5000)");
  }

  /**
   * The GCS emulator (fake-gcs-server) the sluice test suite started: {@code
   * SLUICE_TEST_GCS_ENDPOINT}. A test that needs it fails without it.
   */
  public static String gcsEndpoint() {
    return emulator(
        "SLUICE_TEST_GCS_ENDPOINT",
        "a GCS emulator (fake-gcs-server -scheme http -port 4443, then http://127.0.0.1:4443)");
  }

  private static String emulator(String variable, String what) {
    String endpoint = System.getenv(variable);
    if (endpoint == null || endpoint.isEmpty()) {
      throw new IllegalStateException(variable + " must name " + what);
    }
    return endpoint;
  }

  /** Creates a bucket on the S3 emulator (moto takes an unsigned PUT). */
  public static void createBucket(String name) throws IOException, InterruptedException {
    created(
        name,
        HttpRequest.newBuilder(URI.create(s3Endpoint() + "/" + name))
            .PUT(HttpRequest.BodyPublishers.noBody())
            .build());
  }

  /** Creates a bucket on the GCS emulator (the JSON API's buckets.insert, unauthenticated). */
  public static void createGcsBucket(String name) throws IOException, InterruptedException {
    created(
        name,
        HttpRequest.newBuilder(URI.create(gcsEndpoint() + "/storage/v1/b"))
            .header("content-type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString("{\"name\":\"" + name + "\"}"))
            .build());
  }

  private static void created(String name, HttpRequest request)
      throws IOException, InterruptedException {
    HttpResponse<String> r =
        HttpClient.newHttpClient().send(request, HttpResponse.BodyHandlers.ofString());
    if (r.statusCode() / 100 != 2 && r.statusCode() != 409) {
      throw new IOException(
          "cannot create bucket " + name + ": " + r.statusCode() + " " + r.body());
    }
  }

  /** A gateway serving s3:// on the emulator as well as its defaults. */
  public static TestGateway withS3(String extra) throws IOException {
    return TestGateway.start(
        "s3.endpoint: "
            + s3Endpoint()
            + "\ns3.path.style.access: true\ns3.region: us-east-1\ns3.access-key: test\ns3.secret-key: test\n"
            + extra);
  }

  public static SluiceClient client(TestGateway gateway) {
    return SluiceClient.builder(gateway.address()).build();
  }

  public static SluiceFileSystem fileSystem(TestGateway gateway, String uri) {
    return new SluiceFileSystem(URI.create(uri), client(gateway));
  }
}
