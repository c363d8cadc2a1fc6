package dev.sluice.client;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/** Forwards a loopback port to a gateway; {@link #cut} drops every open connection at once. */
public final class CutProxy implements AutoCloseable {
  private final ServerSocket listener;
  private final List<Socket> sockets = new ArrayList<>();

  /** Bytes each connection carried towards the gateway. */
  public final List<AtomicLong> upstream = new ArrayList<>();

  public CutProxy(String target) throws IOException {
    String[] hostPort = target.split(":");
    listener = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
    Thread accept =
        new Thread(
            () -> {
              while (!listener.isClosed()) {
                try {
                  Socket in = listener.accept();
                  Socket out = new Socket(hostPort[0], Integer.parseInt(hostPort[1]));
                  AtomicLong counted = new AtomicLong();
                  synchronized (this) {
                    sockets.add(in);
                    sockets.add(out);
                    upstream.add(counted);
                  }
                  pump(in, out, counted);
                  pump(out, in, new AtomicLong());
                } catch (IOException e) {
                  // closed
                }
              }
            });
    accept.setDaemon(true);
    accept.start();
  }

  private static void pump(Socket from, Socket to, AtomicLong counted) {
    Thread t =
        new Thread(
            () -> {
              byte[] buf = new byte[65536];
              try (InputStream in = from.getInputStream();
                  OutputStream out = to.getOutputStream()) {
                int n;
                while ((n = in.read(buf)) > 0) {
                  out.write(buf, 0, n);
                  counted.addAndGet(n);
                }
              } catch (IOException e) {
                // cut
              } finally {
                try {
                  from.close();
                  to.close();
                } catch (IOException e) {
                  // already
                }
              }
            });
    t.setDaemon(true);
    t.start();
  }

  public String address() {
    return "127.0.0.1:" + listener.getLocalPort();
  }

  /** Drops every open connection; returns how many. */
  public synchronized int cut() {
    int n = sockets.size() / 2;
    for (Socket s : sockets) {
      try {
        s.close();
      } catch (IOException e) {
        // already
      }
    }
    sockets.clear();
    return n;
  }

  @Override
  public void close() throws IOException {
    listener.close();
    cut();
  }
}
