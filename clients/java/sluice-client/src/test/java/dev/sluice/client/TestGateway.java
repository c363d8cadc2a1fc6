package dev.sluice.client;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code sluice serve} (the binary {@code SLUICE_BIN} names) on a loopback port, in a data dir of
 * its own; it can be killed with -9 and started again on the same port and data dir. Closing it
 * removes the data dir.
 */
public final class TestGateway implements AutoCloseable {
  public final Path dir;
  public final Path files;
  private final String config;
  private Process process;
  private String address = "127.0.0.1:0";

  public TestGateway(Path dir, String config) throws IOException {
    this.dir = dir;
    this.files = dir.resolve("files");
    this.config = config;
    start();
  }

  public static TestGateway start(String config) throws IOException {
    return new TestGateway(Files.createTempDirectory("sluice-java-"), config);
  }

  public String address() {
    return address;
  }

  public String uri(String name) {
    return "file://" + files + "/" + name;
  }

  /** Starts the gateway (again, after a kill: same port, same data dir). */
  public void start() throws IOException {
    String bin = System.getenv("SLUICE_BIN");
    if (bin == null || !Files.isRegularFile(Path.of(bin))) {
      throw new IllegalStateException(
          "SLUICE_BIN must name the sluice binary (cargo build, then SLUICE_BIN=$PWD/target/debug/sluice); it is "
              + bin);
    }
    List<String> args =
        new ArrayList<>(
            List.of(
                bin,
                "serve",
                "--listen",
                address,
                "--data-dir",
                dir.toString(),
                "--admin-listen",
                "off"));
    if (!config.isEmpty()) {
      Path file = dir.resolve("sluice.yaml");
      Files.writeString(file, config);
      args.addAll(List.of("--config", file.toString()));
    }
    process = new ProcessBuilder(args).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
    CompletableFuture<String> found = new CompletableFuture<>();
    Thread drain =
        new Thread(
            () -> {
              Pattern pattern = Pattern.compile("address=(\\S+)");
              try (BufferedReader lines =
                  new BufferedReader(
                      new InputStreamReader(process.getErrorStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = lines.readLine()) != null) {
                  Matcher m = pattern.matcher(line);
                  if (m.find()) {
                    found.complete(m.group(1));
                  }
                }
              } catch (IOException e) {
                found.completeExceptionally(e);
              }
              found.completeExceptionally(
                  new IOException("sluice exited before it logged its address"));
            });
    drain.setDaemon(true);
    drain.start();
    try {
      address = found.get(30, TimeUnit.SECONDS);
    } catch (Exception e) {
      process.destroyForcibly();
      throw new IOException("sluice did not start: " + e, e);
    }
  }

  /** SIGKILL, as a crash would. */
  public void kill() throws InterruptedException {
    process.destroyForcibly();
    process.waitFor();
  }

  /** Kills the gateway and removes its data dir (use {@link #kill} to keep it). */
  @Override
  public void close() throws InterruptedException, IOException {
    kill();
    deleteTree(dir);
  }

  /** Removes {@code dir} and everything under it, if it exists. */
  public static void deleteTree(Path dir) throws IOException {
    if (!Files.exists(dir)) {
      return;
    }
    try (var paths = Files.walk(dir)) {
      for (Path path : paths.sorted(java.util.Comparator.reverseOrder()).toList()) {
        Files.delete(path);
      }
    }
  }
}
