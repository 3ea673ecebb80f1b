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
CC=clang bash tools/build.sh build-fuzz -DCMAKE_BUILD_TYPE=Debug -DRELAY_FUZZ=ON

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
run() { # run NAME DIR CTEST-ARGS...: one ctest pass, its output kept for the summary
  local name=$1 dir=$2; shift 2
  echo "== $name =="
  if ! (cd "$dir" && ctest --output-on-failure -j"$jobs" "$@") 2>&1 | tee "$logs/$name.log"; then
    status=1
  fi
}
run plain build "${select[@]}"
run asan build-asan "${select[@]}"
run fuzz build-fuzz -L fuzz "${select[@]}"

# One closing line over the three passes.
passed=0 failed=0
for f in "$logs"/*.log; do
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$f" | tail -1)
  [ -n "$line" ] || { status=1; continue; }
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  bad=$(sed -E 's/.*, ([0-9]+) tests? failed.*/\1/' <<<"$line")
  passed=$((passed + total - bad)); failed=$((failed + bad))
done
echo "relay: $passed passed, $failed failed"
exit $status
