package dev.sluice.minidfs;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.DFSConfigKeys;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/**
 * A MiniDFSCluster for sluice's tests: a NameNode and {@code datanodes} DataNodes (replication 2)
 * on loopback ports, its data in {@code dir}. It prints {@code ready hdfs://127.0.0.1:<port>
 * http://127.0.0.1:<webhdfs port>} once it serves, then reads commands on stdin: {@code
 * stop-datanode N}, {@code start-datanode N} (restarts it), {@code quit}.
 */
public final class MiniDfs {
  private MiniDfs() {}

  public static void main(String[] args) throws Exception {
    File dir = new File(args.length > 0 ? args[0] : "minidfs");
    int datanodes = args.length > 1 ? Integer.parseInt(args[1]) : 2;
    Configuration conf = new Configuration();
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, dir.getAbsolutePath());
    conf.setInt(DFSConfigKeys.DFS_REPLICATION_KEY, Math.min(2, datanodes));
    // Small blocks, so that a test file spans several.
    conf.setLong(DFSConfigKeys.DFS_BLOCK_SIZE_KEY, 4L << 20);
    conf.setLong(DFSConfigKeys.DFS_NAMENODE_MIN_BLOCK_SIZE_KEY, 1L << 20);
    conf.set(DFSConfigKeys.DFS_NAMENODE_RPC_BIND_HOST_KEY, "127.0.0.1");
    conf.setBoolean("dfs.webhdfs.enabled", true);
    conf.setBoolean(DFSConfigKeys.DFS_PERMISSIONS_ENABLED_KEY, false);
    // A lost DataNode is noticed within seconds, and a writer replaces it.
    conf.setLong(DFSConfigKeys.DFS_HEARTBEAT_INTERVAL_KEY, 1);
    conf.setInt(DFSConfigKeys.DFS_NAMENODE_HEARTBEAT_RECHECK_INTERVAL_KEY, 2000);
    conf.set("dfs.client.block.write.replace-datanode-on-failure.policy", "NEVER");
    MiniDFSCluster cluster =
        new MiniDFSCluster.Builder(conf).numDataNodes(datanodes).format(true).build();
    cluster.waitActive();
    int port = cluster.getNameNodePort();
    int http = cluster.getNameNode().getHttpAddress().getPort();
    System.out.println("ready hdfs://127.0.0.1:" + port + " http://127.0.0.1:" + http);
    System.out.flush();
    MiniDFSCluster.DataNodeProperties[] stopped = new MiniDFSCluster.DataNodeProperties[datanodes];
    try (BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
      String line;
      while ((line = in.readLine()) != null) {
        String[] words = line.trim().split("\\s+");
        switch (words[0]) {
          case "stop-datanode" -> {
            int n = Integer.parseInt(words[1]);
            stopped[n] = cluster.stopDataNode(n);
            System.out.println("stopped datanode " + n);
          }
          case "start-datanode" -> {
            int n = Integer.parseInt(words[1]);
            cluster.restartDataNode(stopped[n], true);
            cluster.waitActive();
            System.out.println("started datanode " + n);
          }
          case "quit" -> {
            cluster.shutdown();
            System.out.println("stopped");
            return;
          }
          default -> System.out.println("unknown command " + line);
        }
        System.out.flush();
      }
    }
    cluster.shutdown();
  }
}
