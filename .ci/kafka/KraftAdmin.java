// Admin-API helper for the KRaft clusters of .ci/kafka (start-kraft.sh, node-ctl.sh). Run as a single
// source file with the broker jars on the class path (no build step):
//   java -cp "lib/*" KraftAdmin.java COMMAND BOOTSTRAP [ARGS...]
//
//   wait-brokers BOOTSTRAP N TIMEOUT_S      metadata lists >= N live brokers (start-kraft.sh)
//   wait-healthy BOOTSTRAP N TIMEOUT_S      N live brokers, N metadata voters caught up, and every partition
//                                           of every topic (internal ones too) has a leader and a full ISR
//   wait-fenced  BOOTSTRAP NODE TIMEOUT_S   node NODE has left the metadata and leads no partition (after a
//                                           kill: the controller notices only after broker.session.timeout.ms)
//   leader       BOOTSTRAP TOPIC [PARTITION|all]   the leader's node id (-1: none); `all`: "PARTITION LEADER" lines
//   create-topic BOOTSTRAP NAME PARTITIONS RF [KEY=VALUE...]
//   end-offsets  BOOTSTRAP TOPIC...         "TOPIC PARTITION OFFSET" lines (latest offsets)
//   elect-preferred BOOTSTRAP               move leadership back to the preferred replicas (after restarts)
//   add-acls     BOOTSTRAP SPEC...          allow ACLs, each SPEC PRINCIPAL,OPERATION,RESOURCE_TYPE,PATTERN_TYPE,NAME
//                                           (e.g. User:hsepay-orders,WRITE,TOPIC,LITERAL,orders), from any host;
//                                           then "ACL ..." lines of every binding the cluster holds
//
// Exit 0 on success, 1 on failure or time-out (one line on stderr), 2 on bad usage. The wait-* commands
// print what is still missing to stderr while they wait, whenever it changes and at least every 5 s.

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KraftAdmin {
    /** Bounds every single Admin call. One-shot commands are generous, as other jobs may load the box (a
     *  load of 20 on 2 cores was seen to make createTopics take over 5 s). The wait-* commands retry
     *  anyway, and a call that went to a paused node (SIGSTOP: it accepts connections, never answers)
     *  must not hold up the loop for long; they never wait past their own deadline either. */
    static long callMs = 15_000;
    static long deadlineNanos = Long.MAX_VALUE;
    /** A voter whose fetches have not reached the leader's log end for this long is lagging. */
    static final long VOTER_LAG_MS = 5000;

    static final class Failure extends Exception {
        Failure(String message) { super(message); }
    }

    public static void main(String[] args) {
        if (args.length < 2) usage();
        String cmd = args[0];
        if (cmd.startsWith("wait-")) callMs = 5_000;
        try (Admin admin = admin(args[1])) {
            switch (cmd) {
                case "wait-brokers" -> { need(args, 4, 4); waitBrokers(admin, num(args[2]), num(args[3])); }
                case "wait-healthy" -> { need(args, 4, 4); waitHealthy(admin, num(args[2]), num(args[3])); }
                case "wait-fenced" -> { need(args, 4, 4); waitFenced(admin, num(args[2]), num(args[3])); }
                case "leader" -> { need(args, 3, 4); leader(admin, args[2], args.length > 3 ? args[3] : "0"); }
                case "create-topic" -> { need(args, 5, Integer.MAX_VALUE); createTopic(admin, args); }
                case "end-offsets" -> { need(args, 3, Integer.MAX_VALUE); endOffsets(admin, List.of(args).subList(2, args.length)); }
                case "elect-preferred" -> { need(args, 2, 2); electPreferred(admin); }
                case "add-acls" -> { need(args, 3, Integer.MAX_VALUE); addAcls(admin, List.of(args).subList(2, args.length)); }
                default -> usage();
            }
        } catch (Failure e) {
            System.err.println("KraftAdmin " + cmd + ": " + e.getMessage());
            System.exit(1);
        } catch (Exception e) {
            System.err.println("KraftAdmin " + cmd + ": " + describe(e));
            System.exit(1);
        }
    }

    static void usage() {
        System.err.println("usage: KraftAdmin {wait-brokers|wait-healthy} BOOTSTRAP N TIMEOUT_S | wait-fenced BOOTSTRAP NODE TIMEOUT_S"
            + " | leader BOOTSTRAP TOPIC [PARTITION|all] | create-topic BOOTSTRAP NAME PARTITIONS RF [KEY=VALUE...]"
            + " | end-offsets BOOTSTRAP TOPIC... | elect-preferred BOOTSTRAP"
            + " | add-acls BOOTSTRAP PRINCIPAL,OPERATION,RESOURCE_TYPE,PATTERN_TYPE,NAME...");
        System.exit(2);
    }

    static void need(String[] args, int min, int max) {
        if (args.length < min || args.length > max) usage();
    }

    static int num(String s) {
        try {
            return Integer.parseInt(s);
        } catch (NumberFormatException e) {
            usage();
            return 0;
        }
    }

    static Admin admin(String bootstrap) {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, String.valueOf(callMs * 2 / 3));
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(callMs));
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "200");
        // A killed node must not stall a call for long: reconnect attempts stay short and frequent.
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "1000");
        props.put(AdminClientConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MAX_MS_CONFIG, "2000");
        return Admin.create(props);
    }

    /** The root cause of a failed Admin future, in one line. */
    static String describe(Throwable e) {
        while ((e instanceof ExecutionException || e.getCause() != null && e.getMessage() == null) && e.getCause() != null) {
            e = e.getCause();
        }
        return e.getClass().getSimpleName() + (e.getMessage() == null ? "" : ": " + e.getMessage());
    }

    /** The result of an Admin call, naming the call if it times out. */
    static <T> T get(String call, org.apache.kafka.common.KafkaFuture<T> f) throws Exception {
        long left = Math.max(1000, Math.min(callMs, (deadlineNanos - System.nanoTime()) / 1_000_000));
        try {
            return f.get(left, TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            throw new Failure(call + " got no answer within " + left + " ms");
        }
    }

    static Set<Integer> liveBrokers(Admin admin) throws Exception {
        return get("describeCluster", admin.describeCluster().nodes()).stream().map(Node::id).collect(Collectors.toCollection(TreeSet::new));
    }

    static Map<String, TopicDescription> allTopics(Admin admin) throws Exception {
        Set<String> names = get("listTopics", admin.listTopics(new ListTopicsOptions().listInternal(true)).names());
        if (names.isEmpty()) return Map.of();
        return new TreeMap<>(get("describeTopics", admin.describeTopics(names).allTopicNames()));
    }

    static int leaderId(TopicPartitionInfo p) {
        Node leader = p.leader();
        return leader == null || leader.isEmpty() ? -1 : leader.id();
    }

    static String ids(Collection<Node> nodes) {
        return nodes.stream().map(n -> String.valueOf(n.id())).collect(Collectors.joining(",", "[", "]"));
    }

    /** A condition polled by waitFor: the list of what is still wrong, empty when satisfied. */
    interface Check {
        List<String> problems() throws Exception;
    }

    static void waitFor(String what, long timeoutS, Check check) throws Exception {
        long start = System.nanoTime();
        long deadline = start + TimeUnit.SECONDS.toNanos(timeoutS);
        deadlineNanos = deadline;
        String last = "no answer yet";
        String printed = null;
        long printedAt = 0;
        while (true) {
            List<String> problems;
            try {
                problems = check.problems();
            } catch (Failure e) {
                problems = List.of(e.getMessage());
            } catch (Exception e) {
                problems = List.of(describe(e));
            }
            double elapsed = (System.nanoTime() - start) / 1e9;
            if (problems.isEmpty()) {
                System.err.printf("%s after %.1fs%n", what, elapsed);
                return;
            }
            last = problems.size() <= 6 ? String.join("; ", problems)
                : String.join("; ", problems.subList(0, 6)) + "; and " + (problems.size() - 6) + " more";
            if (!last.equals(printed) || System.nanoTime() - printedAt > TimeUnit.SECONDS.toNanos(5)) {
                System.err.printf("waiting (%.1fs): %s%n", elapsed, last);
                printed = last;
                printedAt = System.nanoTime();
            }
            if (System.nanoTime() > deadline) throw new Failure("not " + what + " within " + timeoutS + "s: " + last);
            Thread.sleep(500);
        }
    }

    static void waitBrokers(Admin admin, int expected, long timeoutS) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
        deadlineNanos = deadline;
        String last = "no answer yet";
        // Same output as the former WaitBrokers.java, which start-kraft.sh shows on stderr.
        while (System.nanoTime() < deadline) {
            try {
                var cluster = admin.describeCluster();
                int brokers = get("describeCluster", cluster.nodes()).size();
                last = brokers + " of " + expected + " brokers, controller " + get("describeCluster", cluster.controller());
                if (brokers >= expected) {
                    System.out.println("cluster ready: " + last);
                    return;
                }
            } catch (Failure e) {
                last = e.getMessage();
            } catch (Exception e) {
                last = describe(e);
            }
            Thread.sleep(500);
        }
        throw new Failure("cluster not ready in time: " + last);
    }

    static void waitHealthy(Admin admin, int expected, long timeoutS) throws Exception {
        waitFor("healthy", timeoutS, () -> {
            List<String> problems = new ArrayList<>();
            Set<Integer> live = liveBrokers(admin);
            if (live.size() < expected) problems.add("live brokers " + live + " of " + expected);
            QuorumInfo quorum = get("describeMetadataQuorum", admin.describeMetadataQuorum().quorumInfo());
            if (quorum.voters().size() < expected) {
                problems.add("metadata voters " + quorum.voters().stream().map(QuorumInfo.ReplicaState::replicaId)
                    .collect(Collectors.toList()) + " of " + expected);
            }
            long now = System.currentTimeMillis();
            for (QuorumInfo.ReplicaState voter : quorum.voters()) {
                if (voter.replicaId() == quorum.leaderId()) continue;
                OptionalLong caughtUp = voter.lastCaughtUpTimestamp();
                if (caughtUp.isEmpty() || now - caughtUp.getAsLong() > VOTER_LAG_MS) {
                    problems.add("voter " + voter.replicaId() + " behind the metadata leader " + quorum.leaderId());
                }
            }
            int partitions = 0;
            for (TopicDescription t : allTopics(admin).values()) {
                for (TopicPartitionInfo p : t.partitions()) {
                    partitions++;
                    String tp = t.name() + "-" + p.partition();
                    int leader = leaderId(p);
                    if (leader < 0) {
                        problems.add(tp + " offline (no leader; replicas " + ids(p.replicas()) + ")");
                    } else if (!live.contains(leader)) {
                        problems.add(tp + " led by " + leader + ", not a live broker");
                    } else if (p.isr().size() < p.replicas().size()) {
                        problems.add(tp + " under-replicated (isr " + ids(p.isr()) + " of " + ids(p.replicas()) + ")");
                    }
                }
            }
            if (problems.isEmpty()) {
                System.err.println("brokers " + live + ", metadata leader " + quorum.leaderId() + ", " + partitions + " partitions in sync");
            }
            return problems;
        });
    }

    static void waitFenced(Admin admin, int node, long timeoutS) throws Exception {
        waitFor("node " + node + " fenced", timeoutS, () -> {
            List<String> problems = new ArrayList<>();
            if (liveBrokers(admin).contains(node)) problems.add("node " + node + " still a live broker");
            for (TopicDescription t : allTopics(admin).values()) {
                for (TopicPartitionInfo p : t.partitions()) {
                    if (leaderId(p) == node) problems.add(t.name() + "-" + p.partition() + " still led by " + node);
                }
            }
            return problems;
        });
    }

    static void leader(Admin admin, String topic, String which) throws Exception {
        TopicDescription t;
        try {
            t = get("describeTopics", admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
        } catch (ExecutionException e) {
            throw new Failure("topic " + topic + ": " + describe(e));
        }
        if (which.equals("all")) {
            for (TopicPartitionInfo p : t.partitions()) System.out.println(p.partition() + " " + leaderId(p));
            return;
        }
        int partition = num(which);
        for (TopicPartitionInfo p : t.partitions()) {
            if (p.partition() == partition) {
                System.out.println(leaderId(p));
                if (leaderId(p) < 0) throw new Failure(topic + "-" + partition + " has no leader");
                return;
            }
        }
        throw new Failure("topic " + topic + " has no partition " + partition + " (it has " + t.partitions().size() + ")");
    }

    static void createTopic(Admin admin, String[] args) throws Exception {
        Map<String, String> configs = new HashMap<>();
        for (String kv : List.of(args).subList(5, args.length)) {
            int eq = kv.indexOf('=');
            if (eq <= 0) usage();
            configs.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        NewTopic topic = new NewTopic(args[2], num(args[3]), (short) num(args[4])).configs(configs);
        try {
            get("createTopics", admin.createTopics(List.of(topic)).all());
        } catch (ExecutionException e) {
            throw new Failure("topic " + args[2] + ": " + describe(e));
        }
        System.err.println("created topic " + args[2] + ": " + args[3] + " partitions, replication factor " + args[4]
            + (configs.isEmpty() ? "" : ", " + new TreeMap<>(configs)));
    }

    static void addAcls(Admin admin, List<String> specs) throws Exception {
        List<AclBinding> bindings = new ArrayList<>();
        for (String spec : specs) {
            String[] f = spec.split(",", -1);
            if (f.length != 5 || !f[0].contains(":")) throw new Failure("bad ACL spec '" + spec + "' (PRINCIPAL,OPERATION,RESOURCE_TYPE,PATTERN_TYPE,NAME)");
            AclOperation operation = AclOperation.fromString(f[1]);
            ResourceType type = ResourceType.fromString(f[2]);
            PatternType pattern = PatternType.fromString(f[3]);
            if (operation.isUnknown() || type.isUnknown() || pattern.isUnknown() || f[4].isEmpty()) {
                throw new Failure("bad ACL spec '" + spec + "': unknown operation, resource type or pattern type");
            }
            bindings.add(new AclBinding(new ResourcePattern(type, f[4], pattern),
                new AccessControlEntry(f[0], "*", operation, AclPermissionType.ALLOW)));
        }
        get("createAcls", admin.createAcls(bindings).all());
        for (AclBinding b : get("describeAcls", admin.describeAcls(AclBindingFilter.ANY).values())) {
            System.out.println("ACL " + b.entry().principal() + " " + b.entry().permissionType() + " " + b.entry().operation()
                + " " + b.pattern().resourceType() + " " + b.pattern().patternType() + " " + b.pattern().name());
        }
    }

    static void endOffsets(Admin admin, List<String> topics) throws Exception {
        Map<TopicPartition, OffsetSpec> request = new HashMap<>();
        for (TopicDescription t : get("describeTopics", admin.describeTopics(topics).allTopicNames()).values()) {
            for (TopicPartitionInfo p : t.partitions()) request.put(new TopicPartition(t.name(), p.partition()), OffsetSpec.latest());
        }
        get("listOffsets", admin.listOffsets(request).all()).entrySet().stream()
            .sorted(java.util.Comparator.comparing((Map.Entry<TopicPartition, ?> e) -> e.getKey().topic())
                .thenComparingInt(e -> e.getKey().partition()))
            .forEach(e -> System.out.println(e.getKey().topic() + " " + e.getKey().partition() + " " + e.getValue().offset()));
    }

    static void electPreferred(Admin admin) throws Exception {
        int moved = 0;
        List<String> failed = new ArrayList<>();
        for (var e : get("electLeaders", admin.electLeaders(ElectionType.PREFERRED, null).partitions()).entrySet()) {
            if (e.getValue().isEmpty()) {
                moved++;
            } else if (!(e.getValue().get() instanceof ElectionNotNeededException)) {
                failed.add(e.getKey() + ": " + describe(e.getValue().get()));
            }
        }
        System.err.println("preferred leaders elected for " + moved + " partition(s)");
        if (!failed.isEmpty()) throw new Failure(failed.size() + " partition(s) failed: " + String.join("; ", failed));
    }
}
