#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds relay twice (plain, and
# with AddressSanitizer + UndefinedBehaviorSanitizer) and runs every test in
# both builds. Long soak/fuzz variants are behind the CTest label "long":
#   RELAY_TEST_LONG=1 bash tools/test.sh   runs them too.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash tools/deps.sh

jobs=$(nproc)
select=(-LE long)
[ "${RELAY_TEST_LONG:-0}" = 1 ] && select=()

bash tools/build.sh build
bash tools/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DRELAY_SANITIZE=ON

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
echo "== tests (plain build) =="
(cd build && ctest --output-on-failure -j"$jobs" "${select[@]}")
echo "== tests (ASan + UBSan build) =="
(cd build-asan && ctest --output-on-failure -j"$jobs" "${select[@]}")
