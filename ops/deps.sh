#!/usr/bin/env bash
# Installs what mwserve needs on Debian (missing packages only) and resolves the
# Apache Kafka broker from Maven Central into the git-ignored .cache/kafka/libs.
# Idempotent and quiet when everything is already there. On success it leaves
# .cache/deps.done, the mark that deps ran to the end (tests use it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/kafka"

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
: >"$root/.cache/deps.done"
