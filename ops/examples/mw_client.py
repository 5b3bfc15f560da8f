#!/usr/bin/env python3
"""A complete mwserve client with confluent-kafka and numpy (Debian:
python3-confluent-kafka python3-numpy): sends rows as requests to P.requests,
then reads their results from P.results and prints one JSON line per result.

  mw_client.py --bootstrap HOST:PORT --pipeline P --shape 1,64 --random 10
  mw_client.py --bootstrap HOST:PORT --pipeline P --shape 1,16 --input rows.f32
  mw_client.py --bootstrap HOST:PORT --pipeline P --shape 1,16 --random 10 \
      --reply-topic P.replies

--reply-topic T: each request carries kafka_replyTopic T and a 16-byte
kafka_correlationId (Spring Kafka's request-reply headers); the results come
back on T (the workers must allow it: results.reply_topics) and are matched by
correlation id.

--input: raw little-endian f32, one request per prod(shape) values.
Output lines: {"id": ..., "status": "ok", "shape": [...], "values": [...],
"latency_us": N} or {"id": ..., "status": "error", "error": "..."}.
Exit status: 0 when every request got a result in time, 1 otherwise.
tests/integration/test_clients.c runs it against a real pipeline.
"""
import argparse
import json
import sys
import time
import uuid

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

DTYPES = {"f32": "<f4", "f16": "<f2", "i32": "<i4", "i64": "<i8", "u8": "u1"}


def main():
    ap = argparse.ArgumentParser(description="send requests to mwserve, print the results")
    ap.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    ap.add_argument("--pipeline", required=True, help="pipeline name P (topics P.requests, P.results)")
    ap.add_argument("--shape", required=True, help="request shape, e.g. 1,64")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="raw little-endian f32 file, rows of prod(shape) values")
    src.add_argument("--random", type=int, metavar="N", help="N requests of uniform [0, 1) values")
    ap.add_argument("--id-prefix", default="py-%d-" % int(time.time()), help="request id prefix")
    ap.add_argument("--timeout-s", type=float, default=60.0)
    ap.add_argument("--reply-topic", help="answer on this topic (kafka_replyTopic) instead of P.results")
    a = ap.parse_args()

    shape = [int(d) for d in a.shape.split(",")]
    if a.input is not None:
        rows = np.fromfile(a.input, dtype="<f4").reshape([-1] + shape)
    else:
        rows = np.random.default_rng().random([a.random] + shape, dtype=np.float32)
    requests_topic = a.pipeline + ".requests"
    results_topic = a.reply_topic or a.pipeline + ".results"

    # Read results from where the topic ends now, before producing.
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": a.id_prefix + "client",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    meta = c.list_topics(results_topic, timeout=10)
    if meta.topics[results_topic].error is not None:
        sys.exit("mw_client: %s: %s" % (results_topic, meta.topics[results_topic].error))
    start = []
    for part in meta.topics[results_topic].partitions:
        _, high = c.get_watermark_offsets(TopicPartition(results_topic, part), timeout=10)
        start.append(TopicPartition(results_topic, part, high))
    c.assign(start)

    p = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True})
    pending = {}  # request id -> the correlation id its result must carry (None: none)
    for i, x in enumerate(rows):
        key = "%s%d" % (a.id_prefix, i)
        headers = [("mw-dtype", b"f32"), ("mw-shape", a.shape.encode())]
        cid = None
        if a.reply_topic is not None:
            cid = uuid.uuid4().bytes
            headers += [("kafka_replyTopic", a.reply_topic.encode()), ("kafka_correlationId", cid)]
        p.produce(requests_topic, key=key.encode(), value=x.astype("<f4").tobytes(),
                  headers=headers)
        pending[key] = cid
        p.poll(0)
    if p.flush(30) != 0:
        sys.exit("mw_client: requests not acknowledged by Kafka")

    deadline = time.monotonic() + a.timeout_s
    while pending and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error() is not None:
            continue
        key = m.key().decode() if m.key() is not None else ""
        raw = dict(m.headers() or [])
        if key not in pending or raw.get("kafka_correlationId") != pending[key]:
            continue  # another client's result
        del pending[key]
        h = {k: v.decode() for k, v in raw.items() if k != "kafka_correlationId"}
        if h.get("mw-status") == "ok":
            y = np.frombuffer(m.value(), DTYPES[h["mw-dtype"]])
            out = {"id": key, "status": "ok", "shape": [int(d) for d in h["mw-shape"].split(",")],
                   "values": [float(v) for v in y], "latency_us": int(h.get("mw-latency-us", 0))}
        else:
            out = {"id": key, "status": "error", "error": h.get("mw-error", "")}
        print(json.dumps(out), flush=True)
    c.close()
    if pending:
        print("mw_client: %d request(s) without a result after %.0f s" % (len(pending), a.timeout_s),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
