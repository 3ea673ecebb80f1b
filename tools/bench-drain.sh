#!/usr/bin/env bash
# Drain benchmark: 200,000 events pre-queued (through the queue API), drained
# by the real drainer (queue + group commit + SNS client) to a fast local
# SNS-shaped sink, at batch 1 and 10 x concurrency 16 and 64. Next to each,
# the sink's own capacity measured in the same run: wrk replaying the
# drainer's own requests, byte for byte (headers included), cycling over the
# first 11 of each kind (one cycle of the fixture mix, so the same average
# size), on as many keep-alive connections as the drainer's concurrency.
# The drain rate is the real drain: from start until the queue is empty,
# nothing is in flight and every ack has been committed (fsync'd).
# Prints a table.
#
#   tools/bench-drain.sh [BUILD_DIR] [EVENTS]     (default: build, 200000)
#
# A last row drains BENCH_FIFO_EVENTS (default 20000) of the same events to
# a FIFO topic: they fall in 3 message groups (most fixtures share one
# cid), and a group has one event in flight at a time, so this row shows
# the per-group cost (publish + ack commit), not the sink's capacity.
#
# Needs: BUILD_DIR/tests/drain_driver and drain_sink (cmake --build BUILD_DIR
# --target drain_driver drain_sink), wrk. Everything on 127.0.0.1.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
events=${2:-200000}
bin=$build/tests
fixtures=${RELAY_SHARED_DIR:-$here/../shared}/fixtures/events
wrk_s=${BENCH_WRK_SECONDS:-5}
for b in "$bin/drain_driver" "$bin/drain_sink"; do
  [ -x "$b" ] || { echo "missing $b (cmake --build $build --target drain_driver drain_sink)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-drain.XXXXXX")
sink_pid=
cleanup() {
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null && wait "$sink_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Realistic small and medium events (the 26 KiB and 200+ KiB ones would turn
# this into a bandwidth test).
fx=()
for f in channel.truncated custom.event-no-cid member.added message.deleted message.new-unicode \
         message.new message.read message.updated reaction.new user.banned user.updated; do
  fx+=("$fixtures/$f.json")
done
topic=arn:aws:sns:us-east-1:123456789012:relay-bench

mkdir -p "$work/dump"
SINK_DUMP_DIR=$work/dump "$bin/drain_sink" 0 >"$work/sink.out" &
sink_pid=$!
for _ in $(seq 50); do [ -s "$work/sink.out" ] && break; sleep 0.1; done
port=$(head -1 "$work/sink.out" | tr -dc 0-9)
endpoint=http://127.0.0.1:$port

drain_run() { # batch concurrency [events topic] -> "msgs/s cpu_us_per_msg"
  local q=$work/q n=${3:-$events} to=${4:-$topic}
  rm -rf "$q" && mkdir -p "$q"
  "$bin/drain_driver" gen "$q" "$n" "${fx[@]}" >/dev/null
  sync
  # The drainer's own CPU (all threads, user + system) per message: on a
  # shared machine it is steadier than the rate, and it is what the
  # drainer can improve.
  local TIMEFORMAT='%U %S'
  { time "$bin/drain_driver" run "$q" --topic "$to" --endpoint "$endpoint" --batch "$1" \
    --concurrency "$2" --until-empty --timeout 600 --status-ms 0 </dev/null >"$work/run.out" \
    2>"$work/run.err"; } 2>"$work/cpu"
  local line
  line=$(grep '"ev":"elapsed"' "$work/run.out")
  local pub
  pub=$(sed 's/.*"published":\([0-9]*\).*/\1/' <<<"$line")
  if [ "$pub" != "$n" ]; then
    echo "drain at batch $1 concurrency $2 published $pub of $n" >&2
    exit 1
  fi
  local rate
  rate=$(sed 's/.*"msgs_per_s":\([0-9.]*\).*/\1/' <<<"$line")
  awk -v r="$rate" -v n="$n" '{ printf "%s %.2f\n", r, ($1 + $2) * 1e6 / n }' "$work/cpu"
}

sink_capacity() { # kind(publish|batch) entries connections -> msgs/s
  local n
  n=$(find "$work/dump" -name "$1.*.req" | wc -l)
  [ "$n" -gt 0 ] || { echo "sink kept no $1 requests" >&2; exit 1; }
  cat >"$work/post.lua" <<EOF
local reqs = {}
for i = 1, $n do
  local f = assert(io.open("$work/dump/$1." .. i .. ".req", "rb"))
  reqs[i] = f:read("*a")
  f:close()
end
local k = 0
request = function()
  k = k % #reqs + 1
  return reqs[k]
end
EOF
  local rps
  rps=$(wrk -t1 -c"$3" -d"${wrk_s}s" -s "$work/post.lua" "$endpoint/" | awk '/Requests\/sec/ {print $2}')
  awk -v r="$rps" -v n="$2" 'BEGIN { printf "%.1f", r * n }'
}

printf '%s events of %d fixtures, sink on %s, %d cores\n' "$events" "${#fx[@]}" "$endpoint" "$(nproc)"
rows=()
for batch in 1 10; do
  for conc in 16 64; do
    out=$(drain_run "$batch" "$conc")
    read -r rate cpu <<<"$out"
    kind=batch
    [ "$batch" = 1 ] && kind=publish
    cap=$(sink_capacity "$kind" "$batch" "$conc")
    rows+=("$batch $conc $rate $cap $cpu")
  done
done

printf '\n%-6s %-12s %-14s %-16s %-9s %s\n' batch concurrency "drain msg/s" "sink cap msg/s" "% of cap" \
  "drain CPU us/msg"
for r in "${rows[@]}"; do
  read -r b c rate cap cpu <<<"$r"
  awk -v b="$b" -v c="$c" -v r="$rate" -v k="$cap" -v u="$cpu" \
    'BEGIN { printf "%-6s %-12s %-14.0f %-16.0f %-9.1f %.2f\n", b, c, r, k, (k > 0 ? 100 * r / k : 0), u }'
done
fifo_events=${BENCH_FIFO_EVENTS:-20000}
out=$(drain_run 10 16 "$fifo_events" "$topic.fifo")
read -r rate cpu <<<"$out"
awk -v n="$fifo_events" -v r="$rate" -v u="$cpu" \
  'BEGIN { printf "%-6s %-12s %-14.0f %-16s %-9s %.2f   (FIFO topic, %d events in 3 groups)\n", 10, 16, r, "-", "-", u, n }'
echo
echo "targets: batch 10 >= 50000 msg/s and >= 80 % of the sink's capacity"
