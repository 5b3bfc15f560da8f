#!/usr/bin/env bash
# Test runner: tests/run.sh unit|integration|fuzz|bench|all [NAME-FILTER]
#
# unit         every $MW_BUILD/tests/unit/test_* binary (cmocka)
# integration  starts its own Redis and Kafka on spare ports in a temporary
#              directory, runs every $MW_BUILD/tests/integration/test_* binary
#              with its own MWTEST_PREFIX (topics, consumer groups, Redis keys)
#              and a timeout, and always tears everything down
# fuzz         replays tests/fuzz/corpus/<fuzzer>/* through each fuzzer once
# bench        runs every $MW_BUILD/tests/bench/bench_* (JSON lines on stdout,
#              also collected in $MW_BUILD/bench.jsonl)
# Ends with the line "N passed, N failed".
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export MW_BUILD=${MW_BUILD:-build}
export MWTEST_ROOT=$root
mode=${1:-all}
filter=${2:-}
# Sanitizer builds run slower: stretch every timeout.
scale=${MW_TEST_TIMEOUT_SCALE:-$([[ $MW_BUILD == *san* ]] && echo 3 || echo 1)}
export MW_TEST_TIMEOUT_SCALE=$scale
unit_timeout_s=$((120 * scale))
integ_timeout_s=$((${MWTEST_TIMEOUT_S:-300} * scale))

passed=0
failed=0
skipped=0
failures=()
services_dir=""

cleanup() {
    if [ -n "$services_dir" ]; then
        "$root/ops/mwlocal" kafka kill --dir "$services_dir/kafka" >/dev/null 2>&1 || true
        "$root/ops/mwlocal" redis kill --dir "$services_dir/redis" >/dev/null 2>&1 || true
        [ -n "${MW_TEST_KEEP:-}" ] && echo "kept $services_dir" || rm -rf "$services_dir"
        services_dir=""
    fi
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

# run_one KIND BINARY TIMEOUT: runs one test binary, counts cmocka's results.
run_one() {
    local kind=$1 bin=$2 timeout_s=$3 name log rc
    name=$(basename "$bin")
    log=$(mktemp)
    echo "=== $kind/$name"
    MWTEST_PREFIX="t$$.$RANDOM.$name" timeout --kill-after=10 "$timeout_s" "$bin" >"$log" 2>&1
    rc=$?
    cat "$log"
    local ok bad skip
    ok=$(grep -oE '^\[  PASSED  \] [0-9]+' "$log" | awk '{s+=$4} END {print s+0}')
    skip=$(grep -oE '^\[  SKIPPED \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
    skipped=$((skipped + skip))
    bad=$(grep -oE '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
    rm -f "$log"
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
        bad=1
        [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "--- $name: timed out after ${timeout_s}s"
        echo "--- $name: exited with status $rc"
    fi
    passed=$((passed + ok))
    failed=$((failed + bad))
    [ "$bad" -eq 0 ] || failures+=("$kind/$name")
}

binaries() { ls "$MW_BUILD/tests/$1"/test_* 2>/dev/null | grep -v '\.d$' | grep -- "${filter}" || true; }

run_unit() {
    for bin in $(binaries unit); do run_one unit "$bin" "$unit_timeout_s"; done
}

start_services() {
    services_dir=$(mktemp -d "${TMPDIR:-/tmp}/mwtest.XXXXXX")
    export MWTEST_DIR=$services_dir
    export MWTEST_REDIS_DIR=$services_dir/redis
    export MWTEST_KAFKA_DIR=$services_dir/kafka
    local t0 t1 addr
    addr=$("$root/ops/mwlocal" redis start --dir "$MWTEST_REDIS_DIR") ||
        { echo "could not start Redis"; echo "$passed passed, $((failed + 1)) failed"; exit 1; }
    export MWTEST_REDIS_PORT=${addr##*:}
    t0=$(date +%s%N)
    addr=$("$root/ops/mwlocal" kafka start --dir "$MWTEST_KAFKA_DIR") ||
        { echo "could not start Kafka"; echo "$passed passed, $((failed + 1)) failed"; exit 1; }
    t1=$(date +%s%N)
    export MWTEST_KAFKA_BOOTSTRAP=$addr
    echo "services: redis 127.0.0.1:$MWTEST_REDIS_PORT, kafka $addr" \
        "(started in $(((t1 - t0) / 1000000)) ms), dir $services_dir"
}

run_integration() {
    local bins
    bins=$(binaries integration)
    [ -n "$bins" ] || return 0
    start_services
    for bin in $bins; do run_one integration "$bin" "$integ_timeout_s"; done
    cleanup
}

run_fuzz() {
    local f name files
    for f in $(ls "$MW_BUILD"/fuzz/fuzz_* 2>/dev/null | grep -vE '\.(d|log)$' | grep -- "${filter}"); do
        name=$(basename "$f")
        files=$(ls -d tests/fuzz/corpus/"$name"/* 2>/dev/null)
        [ -n "$files" ] || { echo "--- $name: empty corpus"; failed=$((failed + 1)); failures+=("fuzz/$name"); continue; }
        echo "=== fuzz/$name ($(echo "$files" | wc -l) corpus files)"
        if "$f" $files >"$MW_BUILD/fuzz/$name.log" 2>&1; then
            passed=$((passed + 1))
        else
            tail -n 40 "$MW_BUILD/fuzz/$name.log"
            failed=$((failed + 1))
            failures+=("fuzz/$name")
        fi
    done
}

run_bench() {
    local bins out=$MW_BUILD/bench.jsonl
    bins=$(ls "$MW_BUILD"/tests/bench/bench_* 2>/dev/null | grep -v '\.d$' | grep -- "${filter}")
    [ -n "$bins" ] || return 0
    start_services
    : >"$out"
    for bin in $bins; do
        echo "=== bench/$(basename "$bin")" >&2
        if MWTEST_PREFIX="b$$.$RANDOM.$(basename "$bin")" "$bin" | tee -a "$out"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            failures+=("bench/$(basename "$bin")")
        fi
    done
    echo "benchmark results: $out" >&2
    cleanup
}

case $mode in
unit) run_unit ;;
integration) run_integration ;;
fuzz) run_fuzz ;;
bench) run_bench ;;
all) run_unit; run_fuzz; run_integration ;;
*) sed -n '2,13p' "$0"; exit 2 ;;
esac

[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
