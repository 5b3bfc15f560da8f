#!/usr/bin/env bash
# GPU checks: builds with CUDA + NCCL + cuBLAS (auto-detected by the Makefile;
# NCCL_HOME / CUBLAS_HOME for other locations), runs the cuBLAS stage test
# (test_model_cuda) and the world integration tests, including the NCCL backend
# ones (test_world_nccl: a world of one member on device memory, two ranks on
# one GPU). NCCL allows one rank per GPU per world, so a one-GPU machine runs
# worlds of size 1 on NCCL; the TCP-backend world tests run as everywhere.
#   tests/gpu/run.sh            build into build/gpu and run
set -euo pipefail
cd "$(dirname "$0")/../.."
make gpu-info
if ! make gpu-info | grep -q 'nccl=1'; then
    echo "tests/gpu/run.sh: NCCL not found (set CUDA_HOME, install libnccl-dev)" >&2
    exit 2
fi
nvidia-smi -L || true
make BUILD=build/gpu -j"$(nproc)" all \
    build/gpu/tests/integration/test_world_nccl \
    build/gpu/tests/integration/test_world_transfer \
    build/gpu/tests/unit/test_model_cuda
MW_BUILD=build/gpu tests/run.sh unit test_model_cuda
MW_BUILD=build/gpu tests/run.sh integration test_world
