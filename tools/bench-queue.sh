#!/usr/bin/env bash
# Queue benchmark: prints a table (not a test; nothing is asserted).
#
#   tools/bench-queue.sh [SECONDS_PER_ROW]
#
# Uses build/bin/bench_queue if present, else builds it in build/. Runs in a
# fresh directory under ${BENCH_DIR:-$TMPDIR or /tmp}: put BENCH_DIR on the
# disk you want to measure. The first row is the disk's raw 4 KiB
# write+fdatasync rate, measured in the same run as the baseline.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-3}
bin=${BENCH_QUEUE_BIN:-$here/build/bin/bench_queue}
if [ ! -x "$bin" ]; then
  cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$here/build" --target bench_queue -j"$(nproc)" >/dev/null
  bin=$here/build/bin/bench_queue
fi
base=${BENCH_DIR:-${TMPDIR:-/tmp}}
dir=$(mktemp -d "$base/relay-bench-queue.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "queue benchmark: $(nproc) cores, $(df -hT "$dir" | awk 'NR==2 {print $2 " on " $1}'), ${secs}s per row"
"$bin" "$dir" "$secs"
