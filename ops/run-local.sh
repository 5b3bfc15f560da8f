#!/usr/bin/env bash
# The local embedded setup behind `make run`: a Redis server and a single-node
# Kafka broker under .cache/local/, left running in the background.
#
#   ops/run-local.sh [start]   start them (if not running) and say how to reach them
#   ops/run-local.sh stop      stop them (data kept in .cache/local/)
#   ops/run-local.sh status    report what runs
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${MW_BUILD:-build}
state=$root/.cache/local
mwlocal=$root/ops/mwlocal

case ${1:-start} in
start)
    mkdir -p "$state"
    "$mwlocal" redis status --dir "$state/redis" >/dev/null 2>&1 ||
        "$mwlocal" redis start --dir "$state/redis" >/dev/null
    "$mwlocal" kafka status --dir "$state/kafka" >/dev/null 2>&1 ||
        "$mwlocal" kafka start --dir "$state/kafka" >/dev/null
    redis=$("$mwlocal" redis address --dir "$state/redis")
    kafka=$("$mwlocal" kafka address --dir "$state/kafka")
    cat >"$state/mwserve.json" <<JSON
{
  "cluster.name": "local",
  "redis": { "host": "${redis%:*}", "port": ${redis##*:} },
  "kafka": { "bootstrap.servers": "$kafka" }
}
JSON
    "$root/$build/bin/mwctl" --config="$state/mwserve.json" ping
    cat <<TXT

mwserve local setup is up (data in $state):
  Redis  $redis     redis-cli -p ${redis##*:}
  Kafka  $kafka     kcat -b $kafka -L
  config $state/mwserve.json

Use it from any mwserve program:
  $build/bin/mwctl --config=$state/mwserve.json ping
  export MW_CONFIG=$state/mwserve.json     # then plain: $build/bin/mwctl ping
Stop it with: ops/run-local.sh stop
TXT
    ;;
stop)
    "$mwlocal" kafka stop --dir "$state/kafka" || true
    "$mwlocal" redis stop --dir "$state/redis" || true
    echo "stopped (data kept in $state; rm -rf it for a fresh start)"
    ;;
status)
    "$mwlocal" redis status --dir "$state/redis" || echo "redis: not running"
    "$mwlocal" kafka status --dir "$state/kafka" || echo "kafka: not running"
    ;;
*)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
