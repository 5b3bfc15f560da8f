#!/usr/bin/env bash
# GPU checks, in one go on a GPU machine that has no Kafka, no Java and no
# network (bounded: about 8 minutes on 16 cores):
#   1. builds into build/gpu with CUDA, and NCCL and cuBLAS where the Makefile
#      finds them (CUDA_HOME, NCCL_HOME, CUBLAS_HOME, or .cache/gpu, which
#      `ops/deps.sh --gpu` links from NVIDIA wheels installed for python3, or
#      fetches where a pip index answers);
#   2. starts a Redis of its own (ops/mwlocal; redis-server from PATH or from
#      .cache/bin, where a caller without one on the machine can bring it);
#   3. runs the cuBLAS stage test (test_model_cuda), the world tests including
#      the NCCL backend's (test_world_nccl: a world of one member on device
#      memory; NCCL allows one rank per GPU per world, so a one-GPU machine
#      cannot run an NCCL pair) and the cuda-ipc backend's (test_world_cuda_ipc:
#      two processes on the one GPU, kill -9, device memory checked), and the
#      Kafka-free pipeline of real cuda:0
#      workers (test_pipeline_kafka_free: 10,000 requests within 1e-5 relative
#      of the CPU reference, kill -9 of a worker);
#   4. runs bench_world_cuda_ipc (4 MiB device tensors: cuda-ipc vs tcp with
#      host staging; the goal is >= 5x) and bench_pipeline_kafka_free (4 MiB
#      activations between two cuda:0 workers over TCP) on cuda:0 and on the
#      CPU: JSON lines.
# Ends with "N passed, N failed"; exits non-zero when anything failed.
#   bash tests/gpu/run.sh                     (MW_GPU_DEVICE=cpu: the same steps on a CPU machine)
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$root/.cache/bin:$PATH"
build=build/gpu
ops/deps.sh --gpu
info=$(make --no-print-directory gpu-info)
echo "$info"
nvidia-smi -L 2>/dev/null || echo "tests/gpu/run.sh: no nvidia-smi"
command -v redis-server >/dev/null || { echo "tests/gpu/run.sh: no redis-server (PATH or .cache/bin)" >&2; exit 2; }
[[ $info == *cublas=1* ]] || echo "tests/gpu/run.sh: no cuBLAS found: cuda stages cannot run" >&2

tests=(unit/test_model_cuda integration/test_world_nccl integration/test_world_cuda_ipc
       integration/test_world_transfer integration/test_pipeline_kafka_free)
make --no-print-directory BUILD=$build -j"$(nproc)" all "${tests[@]/#/$build/tests/}" \
    $build/tests/bench/bench_pipeline_kafka_free $build/tests/bench/bench_world_cuda_ipc >$build.log 2>&1 ||
    { tail -n 40 $build.log; echo "0 passed, 1 failed"; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/mwgpu.XXXXXX")
trap '"$root/ops/mwlocal" redis kill --dir "$dir/redis" >/dev/null 2>&1; rm -rf "$dir"' EXIT
addr=$("$root/ops/mwlocal" redis start --dir "$dir/redis") || { echo "0 passed, 1 failed"; exit 1; }
export MW_BUILD=$build MWTEST_ROOT=$root MWTEST_DIR=$dir MWTEST_REDIS_PORT=${addr##*:}
export MWTEST_KAFKA_BOOTSTRAP=127.0.0.1:1 # the world tests need none; the config wants one

passed=0
failed=0
# run NAME TIMEOUT CMD...: one cmocka binary, its PASSED/FAILED counts.
run() {
    local name=$1 limit=$2 log
    shift 2
    log=$dir/$(basename "$name").log
    echo "=== $name"
    MWTEST_PREFIX="g$$.$RANDOM.$(basename "$name")" timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    local rc=$?
    grep -vE 'kafka: rdkafka' "$log" | tail -n 30
    local ok bad
    ok=$(grep -oE '^\[  PASSED  \] [0-9]+' "$log" | awk '{s+=$4} END {print s+0}')
    bad=$(grep -oE '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
    [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1 && echo "--- $name: exited with status $rc"
    passed=$((passed + ok))
    failed=$((failed + bad))
}

run unit/test_model_cuda 60 $build/tests/unit/test_model_cuda
run integration/test_world_nccl 90 $build/tests/integration/test_world_nccl
run integration/test_world_cuda_ipc 120 $build/tests/integration/test_world_cuda_ipc
run integration/test_world_transfer 120 $build/tests/integration/test_world_transfer
gpu=${MW_GPU_DEVICE:-cuda:0}
MWT_DRIVER_DEVICE=$gpu run integration/test_pipeline_kafka_free 120 \
    $build/tests/integration/test_pipeline_kafka_free
echo "=== bench/bench_world_cuda_ipc"
if MWTEST_PREFIX="g$$.bench.ipc" timeout 120 $build/tests/bench/bench_world_cuda_ipc 2>"$dir/bench.log"; then
    passed=$((passed + 1))
else
    tail -n 20 "$dir/bench.log"
    failed=$((failed + 1))
fi
for device in $gpu cpu; do
    echo "=== bench/bench_pipeline_kafka_free ($device)"
    if MWT_DRIVER_DEVICE=$device MW_BENCH_BATCHES=50 MWTEST_PREFIX="g$$.bench.${device%%:*}" \
        timeout 120 $build/tests/bench/bench_pipeline_kafka_free 2>"$dir/bench.log"; then
        passed=$((passed + 1))
    else
        tail -n 20 "$dir/bench.log"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
