package io.mwserve.example;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.UUID;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * An mwserve request-reply client with plain kafka-clients, following Spring Kafka's conventions
 * (what ReplyingKafkaTemplate sends and expects): each request carries kafka_replyTopic and a
 * 16-byte kafka_correlationId; the origin produces the result to the reply topic with the same
 * kafka_correlationId, which is how a reply is matched to its request here. The workers must allow
 * the reply topic (results.reply_topics).
 *
 * <pre>
 * java -cp 'target/mw-reply-client.jar:target/lib/*' io.mwserve.example.MwReplyClient \
 *     --bootstrap HOST:PORT --pipeline P --reply-topic T --shape 1,16 --random 10
 * </pre>
 *
 * --input: raw little-endian f32, one request per prod(shape) values. One JSON line per reply on
 * stdout, like ops/examples/mw_client.py: {"id": ..., "status": "ok", "shape": [...], "values":
 * [...], "latency_us": N} or {"id": ..., "status": "error", "error": "..."}. Exit status 0 when
 * every request got its reply in time. tests/integration/test_clients.c runs it.
 */
public final class MwReplyClient {
    private MwReplyClient() {}

    public static void main(String[] argv) throws IOException {
        Map<String, String> a = parseArgs(argv);
        String bootstrap = a.get("bootstrap"), pipeline = a.get("pipeline");
        String replyTopic = a.get("reply-topic"), shape = a.get("shape");
        if (bootstrap == null || pipeline == null || replyTopic == null || shape == null
                || (a.get("input") == null) == (a.get("random") == null)) {
            System.err.println("usage: MwReplyClient --bootstrap HOST:PORT --pipeline P"
                    + " --reply-topic T --shape 1,16 (--input FILE | --random N)"
                    + " [--id-prefix S] [--timeout-s N]");
            System.exit(2);
        }
        String prefix = a.getOrDefault("id-prefix", "java-" + System.currentTimeMillis() + "-");
        long timeoutMs = (long) (Double.parseDouble(a.getOrDefault("timeout-s", "60")) * 1000);
        List<float[]> rows = readRows(a, shape);

        // Read replies from where the reply topic ends now, before producing.
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        Map<String, String> pending = new HashMap<>(); // correlation id (hex) -> request id
        int failed = 0;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp,
                     new ByteArrayDeserializer(), new ByteArrayDeserializer());
                KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(pp,
                        new ByteArraySerializer(), new ByteArraySerializer())) {
            List<TopicPartition> parts = new ArrayList<>();
            for (PartitionInfo pi : c.partitionsFor(replyTopic, Duration.ofSeconds(10)))
                parts.add(new TopicPartition(replyTopic, pi.partition()));
            c.assign(parts);
            c.seekToEnd(parts);
            parts.forEach(c::position); // resolve the end offsets now

            for (int i = 0; i < rows.size(); i++) {
                String key = prefix + i;
                UUID u = UUID.randomUUID();
                byte[] cid = ByteBuffer.allocate(16).putLong(u.getMostSignificantBits())
                        .putLong(u.getLeastSignificantBits()).array();
                float[] x = rows.get(i);
                ByteBuffer v = ByteBuffer.allocate(4 * x.length).order(ByteOrder.LITTLE_ENDIAN);
                for (float f : x)
                    v.putFloat(f);
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(pipeline + ".requests",
                        key.getBytes(StandardCharsets.UTF_8), v.array());
                r.headers().add("mw-dtype", utf8("f32")).add("mw-shape", utf8(shape))
                        .add("kafka_replyTopic", utf8(replyTopic))
                        .add("kafka_correlationId", cid);
                pending.put(hex(cid), key);
                p.send(r);
            }
            p.flush();

            long deadline = System.currentTimeMillis() + timeoutMs;
            while (!pending.isEmpty() && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> m : c.poll(Duration.ofMillis(500))) {
                    Header h = m.headers().lastHeader("kafka_correlationId");
                    String key = h == null ? null : pending.remove(hex(h.value()));
                    if (key == null)
                        continue; // another client's reply
                    String id = new String(m.key(), StandardCharsets.UTF_8);
                    if (!id.equals(key)) {
                        System.err.println("reply for " + id + " carries the correlation id of "
                                + key);
                        failed++;
                    }
                    System.out.println(json(id, m));
                }
            }
        }
        if (!pending.isEmpty())
            System.err.printf("MwReplyClient: %d request(s) without a reply after %d ms%n",
                    pending.size(), timeoutMs);
        System.exit(pending.isEmpty() && failed == 0 ? 0 : 1);
    }

    private static Map<String, String> parseArgs(String[] argv) {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            if (!argv[i].startsWith("--"))
                throw new IllegalArgumentException("expected --name value, got " + argv[i]);
            a.put(argv[i].substring(2), argv[i + 1]);
        }
        return a;
    }

    private static List<float[]> readRows(Map<String, String> a, String shape) throws IOException {
        int width = 1;
        for (String d : shape.split(","))
            width *= Integer.parseInt(d.trim());
        List<float[]> rows = new ArrayList<>();
        if (a.get("input") != null) {
            ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(Paths.get(a.get("input"))))
                    .order(ByteOrder.LITTLE_ENDIAN);
            while (b.remaining() >= 4 * width) {
                float[] x = new float[width];
                b.asFloatBuffer().get(x);
                b.position(b.position() + 4 * width);
                rows.add(x);
            }
        } else {
            Random rnd = new Random();
            for (int i = Integer.parseInt(a.get("random")); i > 0; i--) {
                float[] x = new float[width];
                for (int k = 0; k < width; k++)
                    x[k] = rnd.nextFloat();
                rows.add(x);
            }
        }
        return rows;
    }

    private static String json(String id, ConsumerRecord<byte[], byte[]> m) {
        String status = text(m, "mw-status");
        StringBuilder s = new StringBuilder("{\"id\": ").append(quote(id));
        if (!"ok".equals(status))
            return s.append(", \"status\": \"error\", \"error\": ").append(quote(text(m, "mw-error")))
                    .append('}').toString();
        if (!"f32".equals(text(m, "mw-dtype")))
            return s.append(", \"status\": \"error\", \"error\": \"unexpected dtype ")
                    .append(text(m, "mw-dtype")).append("\"}").toString();
        s.append(", \"status\": \"ok\", \"shape\": [").append(text(m, "mw-shape"))
                .append("], \"values\": [");
        ByteBuffer v = ByteBuffer.wrap(m.value()).order(ByteOrder.LITTLE_ENDIAN);
        for (int k = 0; v.remaining() >= 4; k++)
            s.append(k > 0 ? ", " : "").append(v.getFloat()); // shortest text that reads back
        String lat = text(m, "mw-latency-us");
        return s.append("], \"latency_us\": ").append(lat == null ? "0" : lat).append('}')
                .toString();
    }

    private static String text(ConsumerRecord<byte[], byte[]> m, String name) {
        Header h = m.headers().lastHeader(name);
        return h == null || h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8);
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String hex(byte[] b) {
        StringBuilder s = new StringBuilder();
        for (byte x : b)
            s.append(String.format("%02x", x));
        return s.toString();
    }

    private static String quote(String s) {
        StringBuilder q = new StringBuilder("\"");
        for (char ch : (s == null ? "" : s).toCharArray()) {
            if (ch == '"' || ch == '\\')
                q.append('\\').append(ch);
            else if (ch < 0x20)
                q.append(String.format("\\u%04x", (int) ch));
            else
                q.append(ch);
        }
        return q.append('"').toString();
    }
}
