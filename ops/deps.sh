#!/usr/bin/env bash
# Installs what mwserve needs on Debian (missing packages only) and resolves the
# Apache Kafka broker from Maven Central into the git-ignored .cache/kafka/libs.
# Idempotent and quiet when everything is already there. On success it leaves
# .cache/deps.done, the mark that deps ran to the end (tests use it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/kafka"

# GPU libraries: where nvcc is installed but NCCL is not, the NCCL, cuBLAS and
# CUDA runtime of NVIDIA's wheels go into .cache/gpu/{include,lib}, which the
# Makefile then uses as NCCL_HOME and CUBLAS_HOME: linked from wheels already
# installed for python3 (an offline GPU machine), else fetched once with pip
# download (nvidia-nccl-cu13, nvidia-cublas, nvidia-cuda-runtime) and unpacked.
# Never fatal: without them the build leaves out the NCCL and cuBLAS parts and
# says so in one line. `ops/deps.sh --gpu` runs only this part.
gpu_deps() {
    local gpu="$root/.cache/gpu" cuda_home wheels w so d installed=()
    cuda_home=${CUDA_HOME:-/usr/local/cuda}
    [ -d "$cuda_home" ] || [ -n "${CUDA_HOME:-}" ] || cuda_home=/opt/cuda
    command -v nvcc >/dev/null 2>&1 || [ -x "$cuda_home/bin/nvcc" ] || return 0
    [ -f "$cuda_home/include/nccl.h" ] || [ -f /usr/include/nccl.h ] && return 0
    # Once: done, or the index had no wheels (remove .cache/gpu to try again).
    [ -f "$gpu/.done" ] && return 0
    # Installed wheels: nvidia/<pkg>/{include,lib} under python3's "nvidia" namespace.
    local nccl="" cublas=""
    for d in $(python3 -c 'import importlib.util as u; s = u.find_spec("nvidia"); print(*(s.submodule_search_locations if s else []))' 2>/dev/null); do
        for w in "$d"/*/include/nccl.h; do [ -f "$w" ] && nccl=$(dirname "$(dirname "$w")"); done
        for w in "$d"/*/include/cublas_v2.h; do [ -f "$w" ] && cublas=$(dirname "$(dirname "$w")"); done
    done
    [ -n "$nccl" ] && [ -n "$cublas" ] && installed=("$nccl")
    [ -n "$nccl" ] && [ -n "$cublas" ] && [ "$cublas" != "$nccl" ] && installed+=("$cublas")
    if [ ${#installed[@]} -gt 0 ]; then
        echo "deps: nvcc without NCCL: linking the NVIDIA wheels installed in ${installed[*]} into .cache/gpu"
        rm -rf "$gpu"
        mkdir -p "$gpu/include" "$gpu/lib"
        for d in "${installed[@]}"; do
            for w in "$d"/include/* "$d"/lib/*; do
                [ -e "$w" ] && ln -sfn "$w" "$gpu/$(basename "$(dirname "$w")")/$(basename "$w")"
            done
        done
    else
        [ -f "$gpu/.unavailable" ] && {
            echo "deps: no GPU wheels in the pip index (once; remove .cache/gpu to try again): building without NCCL and cuBLAS" >&2
            return 0
        }
        echo "deps: nvcc without NCCL: fetching NVIDIA's NCCL, cuBLAS and CUDA runtime wheels into .cache/gpu (once)"
        wheels=$(mktemp -d)
        rm -rf "$gpu"
        mkdir -p "$gpu/include" "$gpu/lib"
        if ! pip download -q --retries 1 --no-deps --only-binary=:all: --dest "$wheels" \
                --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
                --platform manylinux_2_18_x86_64 --platform manylinux_2_27_x86_64 \
                --platform manylinux_2_28_x86_64 \
                nvidia-nccl-cu13 nvidia-cublas nvidia-cuda-runtime >"$gpu/pip.log" 2>&1; then
            echo "deps: GPU wheels not available (pip download failed, see .cache/gpu/pip.log): building without NCCL and cuBLAS" >&2
            rm -rf "$wheels"
            : >"$gpu/.unavailable"
            return 0
        fi
        for w in "$wheels"/*.whl; do
            # nvidia/<pkg>/{include,lib}/...: headers and shared objects only.
            python3 - "$w" "$gpu" <<'PY'
import os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        parts = info.filename.split("/")
        if len(parts) < 4 or parts[0] != "nvidia" or parts[-1] == "":
            continue
        kind = parts[2]
        if kind not in ("include", "lib"):
            continue
        out = os.path.join(dest, kind, *parts[3:])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
        done
        rm -rf "$wheels"
    fi
    # The linker wants the unversioned names (-lnccl, -lcublas, -lcudart).
    for so in "$gpu"/lib/lib*.so.*; do
        [ -e "${so%%.so.*}.so" ] || ln -s "$(basename "$so")" "${so%%.so.*}.so"
    done
    if [ ! -f "$gpu/include/nccl.h" ] || [ ! -e "$gpu/lib/libnccl.so" ] || [ ! -e "$gpu/lib/libcublas.so" ]; then
        echo "deps: GPU wheels without nccl.h/libnccl.so/libcublas.so: building without NCCL and cuBLAS" >&2
        : >"$gpu/.unavailable"
        return 0
    fi
    : >"$gpu/.done"
}

if [ "${1:-}" = --gpu ]; then
    gpu_deps
    exit 0
fi

packages=(build-essential pkg-config librdkafka-dev libhiredis-dev libcjson-dev
          libmicrohttpd-dev libopenblas-dev libcmocka-dev redis-server redis-tools kcat
          clang libclang-rt-14-dev cppcheck clang-format clang-tidy iproute2 nftables maven
          openjdk-17-jre-headless procps python3-confluent-kafka python3-numpy
          python3-prometheus-client chromium)

missing=()
for p in "${packages[@]}"; do
    # A package counts as present when dpkg says it is installed, whatever
    # version: the build works with Debian 12's versions and newer ones.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# openjdk is satisfied by any Java 17+ runtime already on PATH.
if command -v java >/dev/null 2>&1; then
    filtered=()
    for p in "${missing[@]}"; do [ "$p" = openjdk-17-jre-headless ] || filtered+=("$p"); done
    missing=("${filtered[@]+"${filtered[@]}"}")
fi
if command -v mvn >/dev/null 2>&1; then
    filtered=()
    for p in "${missing[@]}"; do [ "$p" = maven ] || filtered+=("$p"); done
    missing=("${filtered[@]+"${filtered[@]}"}")
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        sudo_cmd=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo_cmd=(sudo -n)
    else
        echo "deps: missing Debian packages: ${missing[*]}" >&2
        echo "deps: not root and no password-less sudo; install them with:" >&2
        echo "  sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "deps: installing ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi


# The broker: resolved once; the stamp names the pom it came from so that a
# version change in ops/kafka/pom.xml downloads again.
stamp="$cache/libs/.pom.sha256"
want=$(sha256sum "$root/ops/kafka/pom.xml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "deps: downloading the Kafka broker from Maven Central (once)"
    rm -rf "$cache/libs"
    mkdir -p "$cache/libs"
    if ! mvn -q -B -f "$root/ops/kafka/pom.xml" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$cache/libs" >"$cache/mvn.log" 2>&1; then
        echo "deps: Maven could not resolve the Kafka broker; see $cache/mvn.log:" >&2
        tail -n 20 "$cache/mvn.log" >&2
        exit 1
    fi
    echo "$want" >"$stamp"
fi
gpu_deps
: >"$root/.cache/deps.done"
