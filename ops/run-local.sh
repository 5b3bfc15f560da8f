#!/usr/bin/env bash
# The local cluster behind `make run`: Redis, a single-node Kafka, a generated
# model, the pipeline's topics, a coordinator, 2 stages x 2 CPU workers and the
# dashboard (mwctl dashboard), all in the background under the state directory
# (.cache/local/), then a sample scoring job whose every output is checked
# against the reference runner.
#
#   ops/run-local.sh [start] [OPTIONS]   bring up what is not running, run the job
#   ops/run-local.sh stop    [--state DIR]   stop workers, coordinator, dashboard, Kafka, Redis
#   ops/run-local.sh status  [--state DIR]   what runs, then `mwctl status`
#   ops/run-local.sh add-worker STAGE [--state DIR]    one more worker (tracked)
#   ops/run-local.sh remove-worker ID [--state DIR]    drain and stop one worker
#
# OPTIONS: --state DIR (default .cache/local), --requests N (10000; 0: no job),
#   --workers-per-stage K (2), --redis-port P, --kafka-port P (first start only;
#   default: free ports), --dashboard-port P (127.0.0.1:P; default: a free port),
#   --timeout-s S (deadline of each wait, 120).
# Environment: MW_BUILD (build dir, default build).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${MW_BUILD:-build}
case $build in /*) bin=$build/bin ;; *) bin=$root/$build/bin ;; esac
mwlocal=$root/ops/mwlocal
pipeline=demo
stages=2
model_args=(--layers 6 --hidden 256 --inputs 64 --outputs 10 --seed 7)
shape=1,64

die() {
    echo "run-local: error: $*" >&2
    exit 1
}
usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

# ---------------------------------------------------------------- arguments

action=start
case ${1:-} in
start | stop | status | add-worker | remove-worker) action=$1; shift ;;
-h | --help | help) usage ;;
esac
arg=""
if [ "$action" = add-worker ] || [ "$action" = remove-worker ]; then
    [ $# -ge 1 ] || die "$action needs an argument (ops/run-local.sh --help)"
    arg=$1
    shift
fi
state=$root/.cache/local
requests=10000
per_stage=2
redis_port="" kafka_port="" dashboard_port=0
timeout_s=120
while [ $# -gt 0 ]; do
    case $1 in
    --state) state=$2; shift 2 ;;
    --state=*) state=${1#*=}; shift ;;
    --requests) requests=$2; shift 2 ;;
    --requests=*) requests=${1#*=}; shift ;;
    --workers-per-stage) per_stage=$2; shift 2 ;;
    --workers-per-stage=*) per_stage=${1#*=}; shift ;;
    --redis-port) redis_port=$2; shift 2 ;;
    --redis-port=*) redis_port=${1#*=}; shift ;;
    --kafka-port) kafka_port=$2; shift 2 ;;
    --kafka-port=*) kafka_port=${1#*=}; shift ;;
    --dashboard-port) dashboard_port=$2; shift 2 ;;
    --dashboard-port=*) dashboard_port=${1#*=}; shift ;;
    --timeout-s) timeout_s=$2; shift 2 ;;
    --timeout-s=*) timeout_s=${1#*=}; shift ;;
    -h | --help) usage ;;
    *) die "unknown argument '$1' (ops/run-local.sh --help)" ;;
    esac
done
[[ $requests =~ ^[0-9]+$ ]] || die "--requests '$requests' is not a count"
[[ $per_stage =~ ^[1-9][0-9]*$ ]] || die "--workers-per-stage '$per_stage' is not a positive count"
[[ $dashboard_port =~ ^[0-9]+$ ]] || die "--dashboard-port '$dashboard_port' is not a port"
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "--timeout-s '$timeout_s' is not a positive number"
# Sanitizer builds run slower (the test runner exports the same scale).
timeout_s=$((timeout_s * ${MW_TEST_TIMEOUT_SCALE:-1}))
mkdir -p "$state"
state=$(cd "$state" && pwd)
config=$state/mwserve.json
model=$state/model.safetensors
procs=$state/procs # one NAME.pid and NAME.log per process we start

mwctl() { "$bin/mwctl" --config="$config" "$@"; }

# ---------------------------------------------------------------- processes

# The pid in procs/NAME.pid when that process runs and is ours: its command
# line names this state's config (a reused pid is not mistaken for it).
proc_pid() {
    local f=$procs/$1.pid pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--config=$config" ||
        return 1
    echo "$pid"
}

# proc_start NAME PROGRAM ARGS...: runs it in its own session, detached from
# the terminal, logging to procs/NAME.log.
proc_start() {
    local name=$1 prog=$2
    shift 2
    mkdir -p "$procs"
    setsid "$bin/$prog" --config="$config" "$@" </dev/null >>"$procs/$name.log" 2>&1 &
    echo $! >"$procs/$name.pid"
}

# wait_until SECONDS WHAT CMD...: polls CMD until it succeeds, or fails naming WHAT.
wait_until() {
    local deadline=$(($(date +%s) + $1)) what=$2
    shift 2
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

not_running() { ! kill -0 "$1" 2>/dev/null; }

# proc_stop NAME SIGNAL GRACE_S: signal, wait for the exit, SIGKILL after the grace.
proc_stop() {
    local name=$1 sig=$2 grace=$3 pid
    if pid=$(proc_pid "$name"); then
        kill "-$sig" "$pid" 2>/dev/null || true
        if ! wait_until "$grace" "$name to exit" not_running "$pid"; then
            echo "run-local: $name (pid $pid) did not exit within ${grace}s: killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            wait_until 10 "$name to die" not_running "$pid" || die "$name (pid $pid) does not die"
        fi
        echo "stopped $name (pid $pid)"
    fi
    rm -f "$procs/$name.pid"
}

log_tail() { tail -n "${2:-15}" "$procs/$1.log" 2>/dev/null | sed "s/^/  $1| /" >&2 || true; }

worker_names() { ls "$procs" 2>/dev/null | sed -n 's/^\(worker-s[0-9]*-[0-9]*\)\.pid$/\1/p' | sort; }

# Worker NAME (worker-s<stage>-<k>) has id local-s<stage>-<k> in Redis; a
# fixed id makes a restarted worker take over its predecessor's identity.
worker_start() {
    local name=$1 stage k
    stage=${name#worker-s}
    stage=${stage%%-*}
    k=${name##*-}
    proc_pid "$name" >/dev/null && return 0
    fresh=1
    proc_start "$name" mw-worker --pipeline="$pipeline" --stage="$stage" --id="local-s$stage-$k" \
        --worker.drain_timeout_ms=10000 --kafka.session.timeout.ms=10000 \
        --kafka.heartbeat.interval.ms=1000 --kafka.transaction.timeout.ms=10000
    echo "started $name (pid $(cat "$procs/$name.pid"), id local-s$stage-$k, log $procs/$name.log)"
}

# The dashboard's URL, from the line it prints once it listens.
dashboard_url() { sed -n 's/^mwctl dashboard: \(http[^ ]*\).*/\1/p' "$procs/dashboard.log" | tail -n 1; }
dashboard_listening() { [ -n "$(dashboard_url)" ]; }

# ---------------------------------------------------------------- readiness

rcli() { redis-cli -h 127.0.0.1 -p "$redis_port_now" --raw "$@"; }

# 0 when every tracked worker is ready, placed at its stage, on the current
# plan with all its worlds up (Redis keys, see the README's control plane).
workers_ready() {
    local plan name id stage f
    plan=$(rcli GET "mw:local:plan:version" 2>/dev/null) || return 1
    [ -n "$plan" ] || return 1
    for name in $(worker_names); do
        id=local-${name#worker-}
        stage=${name#worker-s}
        stage=${stage%%-*}
        mapfile -t f < <(rcli HMGET "mw:local:worker:$id" state assigned_stage plan_epoch \
            plan_version worlds_up worlds_total 2>/dev/null)
        [ "${#f[@]}" -eq 6 ] && [ "${f[0]}" = ready ] && [ "${f[1]}" = "$stage" ] &&
            [ "${f[2]}:${f[3]}" = "$plan" ] && [ -n "${f[5]}" ] && [ "${f[5]}" -gt 0 ] &&
            [ "${f[4]}" = "${f[5]}" ] || return 1
    done
}

# Fails with the logs when a process we started has died.
all_alive() {
    local name
    for name in coordinator dashboard $(worker_names); do
        if ! proc_pid "$name" >/dev/null; then
            echo "run-local: $name exited; the end of its log:" >&2
            log_tail "$name" 30
            return 2
        fi
    done
}

cluster_ready() {
    all_alive || die "a process of the cluster exited (logs in $procs)"
    workers_ready
}

# ---------------------------------------------------------------- actions

do_start() {
    local t0 addr fresh=0
    t0=$(date +%s)
    [ -x "$bin/mwctl" ] || die "$bin/mwctl is not built: run 'make' (or make run)"
    command -v redis-cli >/dev/null || die "redis-cli is missing: run 'make deps'"

    # Redis and Kafka (ops/mwlocal: free ports unless given, data kept in $state).
    if ! "$mwlocal" redis status --dir "$state/redis" >/dev/null 2>&1; then
        addr=$("$mwlocal" redis start --dir "$state/redis" ${redis_port:+--port "$redis_port"}) ||
            die "Redis did not start (log: $state/redis/redis.log)"
        echo "started Redis at $addr"
    fi
    if ! "$mwlocal" kafka status --dir "$state/kafka" >/dev/null 2>&1; then
        addr=$("$mwlocal" kafka start --dir "$state/kafka" ${kafka_port:+--port "$kafka_port"}) ||
            die "Kafka did not start (log: $state/kafka/kafka.log)"
        echo "started Kafka at $addr"
    fi
    local redis kafka
    redis=$("$mwlocal" redis address --dir "$state/redis")
    kafka=$("$mwlocal" kafka address --dir "$state/kafka")
    redis_port_now=${redis##*:}
    cat >"$config.tmp" <<JSON
{
  "cluster.name": "local",
  "redis": { "host": "${redis%:*}", "port": ${redis##*:} },
  "kafka": { "bootstrap.servers": "$kafka" },
  "pipeline.spec": "{\\"name\\":\\"$pipeline\\",\\"stages\\":$stages,\\"model\\":\\"$model\\"}"
}
JSON
    mv "$config.tmp" "$config"
    mwctl ping >/dev/null || die "mwctl ping failed: Redis $redis or Kafka $kafka does not answer"

    # The model and the topics (kept when they exist).
    if [ ! -f "$model" ]; then
        mwctl model init "${model_args[@]}" -o "$model" >/dev/null || die "mwctl model init failed"
        echo "generated model $model (${model_args[*]})"
    fi
    local info
    info=$(mwctl model info --model "$model" 2>&1) ||
        die "$model is not a usable model (remove it to have a new one generated): $info"
    mwctl topics create --pipeline "$pipeline" --partitions 4 >/dev/null ||
        die "could not create the topics of pipeline $pipeline (mwctl topics create)"

    # The coordinator and the workers (restarted when not running).
    if ! proc_pid coordinator >/dev/null; then
        fresh=1
        proc_start coordinator mw-coordinator
        echo "started coordinator (pid $(cat "$procs/coordinator.pid"), log $procs/coordinator.log)"
    fi
    # The dashboard (reads Redis and Kafka only; localhost).
    if ! proc_pid dashboard >/dev/null; then
        : >"$procs/dashboard.log"
        proc_start dashboard mwctl dashboard --listen "127.0.0.1:$dashboard_port"
        wait_until 10 "dashboard" dashboard_listening ||
            { log_tail dashboard 10; die "the dashboard did not start (log $procs/dashboard.log)"; }
        echo "started dashboard (pid $(cat "$procs/dashboard.pid"), log $procs/dashboard.log)"
    fi
    # K per stage, and the ones add-worker added (when they died: restarted).
    local s k name
    for name in $({
        for ((s = 0; s < stages; s++)); do
            for ((k = 0; k < per_stage; k++)); do echo "worker-s$s-$k"; done
        done
        worker_names
    } | sort -u); do
        worker_start "$name"
    done
    if ! wait_until "$timeout_s" "workers ready" cluster_ready; then
        echo "run-local: the workers were not all ready within ${timeout_s}s; mwctl status:" >&2
        mwctl status >&2 || true
        for name in coordinator $(worker_names); do log_tail "$name" 8; done
        die "the cluster did not come up (logs in $procs)"
    fi
    echo "cluster ready in $(($(date +%s) - t0)) s: coordinator + $(worker_names | wc -l) workers" \
        "(pipeline $pipeline, $stages stages), Redis $redis, Kafka $kafka"

    local job_rc=0
    if [ "$requests" -gt 0 ]; then
        [ "$fresh" -eq 0 ] || warm_up
        run_job || job_rc=$?
    fi
    local me=ops/run-local.sh b=${bin#"$root"/}
    [ "$state" = "$root/.cache/local" ] || me="ops/run-local.sh --state $state"
    cat <<TXT

Dashboard: $(dashboard_url)   (Prometheus metrics: $(dashboard_url)metrics)

What runs (state in $state; use the config from anywhere):
  export MW_CONFIG=$config
  $b/mwctl status                      # leader, plan, workers, worlds, events
  $b/mwctl events --follow             # the event stream, live
  $b/mwctl submit --pipeline $pipeline --generate 1000 --shape $shape --wait --verify --model $model
  $b/mwctl results --pipeline $pipeline --from-beginning --verify --model $model
  $me add-worker 1    # one more stage-1 worker; remove-worker ID drains one
  $me status          # processes + mwctl status
  $me stop            # stop everything (data kept; rm -rf $state for a fresh start)
Requests: Kafka $kafka topic $pipeline.requests (f32 [1,64]), results on $pipeline.results;
  any Kafka client works (README: "From make run to your own requests").
TXT
    return "$job_rc"
}

# Just-started processes open their Kafka transactions and consumer groups on
# the first requests: a few (verified too) first, so the job measures serving.
warm_up() {
    local out=$state/warm-up.txt
    if ! mwctl submit --pipeline "$pipeline" --generate 100 --shape "$shape" --no-progress \
        --id-prefix "warm-up-$(date +%Y%m%dT%H%M%S)-" --wait --verify --model "$model" \
        --timeout-s "$timeout_s" >"$out" 2>&1; then
        cat "$out" >&2
        die "the warm-up requests failed (logs in $procs)"
    fi
    echo "warm-up: $(sed -n 's/^verify: \([0-9/]*\) .*/\1/p' "$out") requests served and verified"
}

# The sample scoring job: --generate requests, wait for every result, verify each.
run_job() {
    local out=$state/last-job.txt rc=0
    echo
    echo "sample job: $requests requests of f32 [$shape] to $pipeline.requests," \
        "every output checked against the reference runner"
    mwctl submit --pipeline "$pipeline" --generate "$requests" --shape "$shape" --seed "$(date +%s)" \
        --id-prefix "job-$(date +%Y%m%dT%H%M%S)-" --wait --verify --model "$model" \
        --timeout-s "$timeout_s" | tee "$out" || rc=$?
    local thr client pipe errors verified got
    got=$(sed -n 's/^results: \([0-9]*\/[0-9]*\) received.*/\1/p' "$out")
    errors=$(sed -n 's/^results: [0-9/]* received, \([0-9]*\) errors.*/\1/p' "$out")
    # "LABEL (...) p50 A ms, p90 B ms, p99 C ms" of mwctl submit's results line -> "p50 A ms, p99 C ms"
    percentiles() { sed -n "s/.*; $1 ([^)]*) \(p50 [0-9.]* ms\), p90 [0-9.]* ms, \(p99 [0-9.]* ms\).*/\1, \2/p" "$out"; }
    client=$(percentiles latency)
    pipe=$(percentiles in-pipeline)
    thr=$(sed -n 's/.*throughput \([0-9]* results\/s\).*/\1/p' "$out")
    verified=$(sed -n 's/^verify: \([0-9]*\/[0-9]*\) .*/\1/p' "$out")
    echo
    echo "summary: ${got:-0/$requests} results, ${errors:-?} errors, throughput ${thr:-?};" \
        "latency as the client saw it (produce to committed result read, all $requests sent at once)" \
        "${client:-?}; in the pipeline (mw-latency-us: origin consume to result ready) ${pipe:-?};" \
        "outputs verified bit-exact: ${verified:-none}"
    if [ "$rc" -ne 0 ]; then
        echo "run-local: error: the sample job failed (exit $rc): see above and $procs/*.log" >&2
        return 1
    fi
    echo "ALL $requests OUTPUTS VERIFIED against the reference runner"
}

do_stop() {
    local name
    # Workers first (SIGTERM drains: in-flight requests finish and commit).
    for name in $(worker_names); do proc_stop "$name" TERM 20 & done
    wait
    proc_stop coordinator TERM 10
    proc_stop dashboard TERM 10
    "$mwlocal" kafka stop --dir "$state/kafka" >/dev/null 2>&1 && echo "stopped Kafka" || true
    "$mwlocal" redis stop --dir "$state/redis" >/dev/null 2>&1 && echo "stopped Redis" || true
    echo "stopped (data kept in $state; rm -rf it for a fresh start)"
}

do_status() {
    local name pid rc=0
    "$mwlocal" redis status --dir "$state/redis" || { echo "redis: not running"; rc=1; }
    "$mwlocal" kafka status --dir "$state/kafka" || { echo "kafka: not running"; rc=1; }
    for name in coordinator dashboard $(worker_names); do
        if pid=$(proc_pid "$name"); then
            echo "$name: running, pid $pid, log $procs/$name.log"
        else
            echo "$name: NOT running (log $procs/$name.log)"
            rc=1
        fi
    done
    if [ -f "$config" ]; then
        echo
        mwctl status || rc=1
    fi
    return "$rc"
}

do_add_worker() {
    [[ $arg =~ ^[0-9]+$ ]] && [ "$arg" -lt "$stages" ] || die "stage '$arg' is not 0..$((stages - 1))"
    [ -f "$config" ] && proc_pid coordinator >/dev/null || die "the cluster is not running (ops/run-local.sh)"
    redis_port_now=$("$mwlocal" redis address --dir "$state/redis")
    redis_port_now=${redis_port_now##*:}
    local k=0
    while [ -f "$procs/worker-s$arg-$k.pid" ]; do k=$((k + 1)); done
    worker_start "worker-s$arg-$k"
    wait_until "$timeout_s" "worker ready" cluster_ready ||
        { log_tail "worker-s$arg-$k" 20; die "worker-s$arg-$k did not become ready within ${timeout_s}s"; }
    echo "worker-s$arg-$k (id local-s$arg-$k) is ready"
}

do_remove_worker() {
    local name=${arg#local-}
    name=worker-${name#worker-}
    [ -f "$procs/$name.pid" ] || die "no worker $arg (ops/run-local.sh status lists them)"
    proc_stop "$name" TERM 20
}

case $action in
start) do_start ;;
stop) do_stop ;;
status) do_status ;;
add-worker) do_add_worker ;;
remove-worker) do_remove_worker ;;
esac
