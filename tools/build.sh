#!/usr/bin/env bash
# Builds relay. Used by the test suite, the demo and the container image, so
# what the image builds is what the tests build.
#   tools/build.sh [BUILD_DIR] [extra cmake args...]
#   tools/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DRELAY_SANITIZE=ON
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}
shift || true
case "$dir" in /*) ;; *) dir="$here/$dir" ;; esac
cmake -S "$here" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
