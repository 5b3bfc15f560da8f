#!/usr/bin/env python3
"""Checks `mwctl dashboard`'s /metrics with Prometheus's own parser (Debian's
python3-prometheus-client), for tests/integration/test_dashboard.c.

  check_metrics.py scrapes URL MIN_RESULTS DEADLINE_S
      scrapes until mwserve_pipeline_results_total reaches MIN_RESULTS (at least
      two scrapes); every scrape must parse, every family be well formed, and no
      counter may go down between scrapes
  check_metrics.py lag URL BOOTSTRAP PIPELINE DEADLINE_S
      waits until the lag of every partition of PIPELINE.requests equals what
      Kafka reports for group mw.PIPELINE (committed offsets, high watermarks)

Exit 0 and a summary line on success; exit 1 with the reason otherwise."""
import math
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

TYPES = {"counter", "gauge", "summary"}


def fail(msg):
    print("check_metrics: " + msg)
    sys.exit(1)


def scrape(url):
    with urllib.request.urlopen(url + "metrics", timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
            fail("Content-Type %r is not the text exposition format 0.0.4" % ctype)
        return r.read().decode("utf-8")


def parse(text):
    """{(sample name, sorted labels): value} of every sample; fails on anything malformed."""
    samples = {}
    names = set()
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("mwserve_"):
            fail("family %s lacks the mwserve_ prefix" % fam.name)
        if fam.name in names:
            fail("family %s appears twice" % fam.name)
        names.add(fam.name)
        if fam.type not in TYPES:
            fail("family %s has type %s (no TYPE line?)" % (fam.name, fam.type))
        if not fam.documentation:
            fail("family %s has no HELP" % fam.name)
        if not fam.samples:
            fail("family %s has no samples" % fam.name)
        for s in fam.samples:
            if "cluster" not in s.labels:
                fail("%s has no cluster label" % s.name)
            if not math.isfinite(s.value):
                fail("%s%s is %r" % (s.name, s.labels, s.value))
            if fam.type == "counter":
                if not s.name.endswith("_total"):
                    fail("counter sample %s does not end in _total" % s.name)
                if s.value < 0:
                    fail("counter %s%s is negative" % (s.name, s.labels))
            if fam.type == "summary" and "quantile" not in s.labels:
                fail("summary sample %s has no quantile" % s.name)
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in samples:
                fail("sample %s%s appears twice" % key)
            samples[key] = (fam.type, s.value)
    return samples, names


def check_families(names):
    """Every family the README lists for a serving pipeline is there."""
    for want in ("mwserve_redis_up", "mwserve_coordinator_leader", "mwserve_coordinator_epoch",
                 "mwserve_worker_up", "mwserve_worker_state", "mwserve_worker_heartbeat_age_seconds",
                 "mwserve_worker_worlds_up", "mwserve_worker_inflight", "mwserve_requests",
                 "mwserve_stage_calls", "mwserve_batch_rows", "mwserve_kafka_consumer_lag",
                 "mwserve_latency_seconds", "mwserve_replays", "mwserve_dlq_records"):
        if want not in names:
            fail("family %s is missing" % want)


def value(samples, name, **labels):
    return sum(v for (n, ls), (_, v) in samples.items()
               if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def cmd_scrapes(url, min_results, deadline_s):
    deadline = time.monotonic() + deadline_s
    prev, n = None, 0
    while True:
        cur, names = parse(scrape(url))
        n += 1
        if value(cur, "mwserve_redis_up") != 1:
            fail("mwserve_redis_up is not 1")
        if prev is not None:
            for key, (typ, v) in cur.items():
                if typ == "counter" and key in prev and v < prev[key][1]:
                    fail("counter %s%s went down: %r -> %r" % (key[0], dict(key[1]), prev[key][1], v))
        results = value(cur, "mwserve_pipeline_results_total")
        if n >= 2 and results >= min_results:
            check_families(names)
            print("ok: %d scrapes, %d series, results_total %d" % (n, len(cur), results))
            return
        if time.monotonic() > deadline:
            fail("results_total %d < %d after %d s" % (results, min_results, deadline_s))
        prev = cur
        time.sleep(0.2)


def kafka_lag(bootstrap, pipeline):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "mw." + pipeline,
                  "enable.auto.commit": False})
    try:
        topic = pipeline + ".requests"
        md = c.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p) for p in sorted(md.topics[topic].partitions)]
        lag = {}
        for tp in c.committed(parts, timeout=10):
            low, high = c.get_watermark_offsets(tp, timeout=10)
            lag[str(tp.partition)] = high - (tp.offset if tp.offset >= 0 else low)
        return lag
    finally:
        c.close()


def cmd_lag(url, bootstrap, pipeline, deadline_s):
    deadline = time.monotonic() + deadline_s
    while True:
        want = kafka_lag(bootstrap, pipeline)
        samples, _ = parse(scrape(url))
        got = {dict(ls)["partition"]: v for (n, ls), (_, v) in samples.items()
               if n == "mwserve_kafka_consumer_lag" and dict(ls).get("pipeline") == pipeline}
        if got == want and sum(want.values()) > 0:
            print("ok: lag per partition %s, as Kafka reports" % sorted(got.items()))
            return
        if time.monotonic() > deadline:
            fail("lag %s, Kafka reports %s" % (sorted(got.items()), sorted(want.items())))
        time.sleep(0.2)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "scrapes":
        cmd_scrapes(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif len(sys.argv) == 6 and sys.argv[1] == "lag":
        cmd_lag(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        fail(__doc__)
