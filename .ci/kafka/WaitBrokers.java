// Waits until a Kafka cluster's metadata lists the expected number of live brokers.
// Run as a single source file with the broker jars on the class path (no build step):
//   java -cp "lib/*" WaitBrokers.java BOOTSTRAP EXPECTED_BROKERS TIMEOUT_SECONDS
// Exit 0 when describeCluster() shows EXPECTED_BROKERS nodes, 1 on time-out.

import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class WaitBrokers {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int expected = Integer.parseInt(args[1]);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[2]));
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "200");
        String last = "no answer yet";
        try (Admin admin = Admin.create(props)) {
            while (System.nanoTime() < deadline) {
                try {
                    var cluster = admin.describeCluster();
                    int brokers = cluster.nodes().get(5, TimeUnit.SECONDS).size();
                    String controller = String.valueOf(cluster.controller().get(5, TimeUnit.SECONDS));
                    last = brokers + " of " + expected + " brokers, controller " + controller;
                    if (brokers >= expected) {
                        System.out.println("cluster ready: " + last);
                        return;
                    }
                } catch (Exception e) {
                    last = e.toString();
                }
                Thread.sleep(500);
            }
        }
        System.err.println("cluster not ready in time: " + last);
        System.exit(1);
    }
}
