#!/usr/bin/env bash
# Benchmark of the SNS client (relay/sns_client.c): requests/s and messages/s
# from the client to a fast local sink, at concurrency 1, 16 and 64 and
# batch 1 (Publish) and 10 (PublishBatch), next to the sink's own capacity
# measured with wrk in the same run, with the same request bodies and the
# same concurrency (the baseline). Prints a table. Not a test: nothing is
# asserted, numbers depend on the machine and its load.
#
#   tools/bench-sns.sh [-d SECONDS] [-b BUILD_DIR] [-e EVENT.json] [-p]
#   -p pins the sink to CPU 0 and the load generator (client or wrk) to CPU 1;
#      steadier on an idle machine, worse on a busy one (no migration).
#
# Needs: a build with the targets sns_driver and sns_sink (built here if
# missing), wrk. Everything listens on 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
secs=3
build="$here/build"
event="$here/../shared/fixtures/events/message.new.json"
pin=0
while getopts "d:b:e:ph" opt; do
  case $opt in
    d) secs=$OPTARG ;;
    b) build=$OPTARG ;;
    e) event=$OPTARG ;;
    p) pin=1 ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "bench-sns: wrk not found (apt-get install wrk)" >&2; exit 1; }
if [ ! -x "$build/tests/sns_driver" ] || [ ! -x "$build/tests/sns_sink" ]; then
  cmake -S "$here" -B "$build" >/dev/null
  cmake --build "$build" --target sns_driver sns_sink -j2 >/dev/null
fi
driver="$build/tests/sns_driver"
sinkbin="$build/tests/sns_sink"

# With -p on two or more CPUs, the sink gets CPU 0 and the load generator
# (our client, or wrk for the baseline) CPU 1.
pin_sink=() pin_load=()
if [ "$pin" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_sink=(taskset -c 0) pin_load=(taskset -c 1)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-sns.XXXXXX")
sink_pid=
cleanup() {
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

topic=arn:aws:sns:us-east-1:123456789012:bench
export AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret AWS_SESSION_TOKEN=

start_sink() { # $1: file to save the first request body into, or ""
  local args=()
  [ -n "$1" ] && args=(--save-first-body "$1")
  "${pin_sink[@]}" "$sinkbin" "${args[@]}" >"$tmp/port" &
  sink_pid=$!
  for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.05; done
  port=$(head -1 "$tmp/port")
}
stop_sink() { kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; sink_pid=; }

# Capture the exact bodies the client sends (batch 1 and batch 10), for wrk.
events=()
for _ in $(seq 10); do events+=("$event"); done
for b in 1 10; do
  start_sink "$tmp/body$b"
  "$driver" --endpoint "http://127.0.0.1:$port" --topic "$topic" --batch "$b" --quiet "${events[@]:0:$b}" >/dev/null
  stop_sink
done

cat >"$tmp/post.lua" <<'EOF'
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
EOF

printf 'SNS client benchmark: %s s per cell, event %s (%s bytes), %s CPUs%s, load %s\n' "$secs" \
  "$(basename "$event")" "$(stat -c %s "$event")" "$(nproc)" "${pin_sink:+ (sink pinned to CPU 0, client/wrk to CPU 1)}" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'request bodies: batch 1 = %s bytes, batch 10 = %s bytes (form-encoded, as sent)\n' \
  "$(stat -c %s "$tmp/body1")" "$(stat -c %s "$tmp/body10")"
printf '%-6s %-6s %12s %12s %14s %10s\n' conc batch 'client req/s' 'client msg/s' 'sink req/s(wrk)' 'client/sink'
for b in 1 10; do
  for c in 1 16 64; do
    start_sink ""
    out=$("${pin_load[@]}" "$driver" --endpoint "http://127.0.0.1:$port" --topic "$topic" --batch "$b" \
      --concurrency "$c" --duration-ms "$((secs * 1000))" --quiet "${events[@]:0:$b}" | tail -1)
    read -r reqs msgs okn el < <(echo "$out" | python3 -c '
import json,sys; s=json.load(sys.stdin); print(s["requests"], s["messages"], s["ok"], s["seconds"])')
    base=$(BODY_FILE="$tmp/body$b" "${pin_load[@]}" wrk -t1 -c"$c" -d"${secs}s" -s "$tmp/post.lua" \
      "http://127.0.0.1:$port/" 2>/dev/null | awk '/^Requests\/sec/ {print $2}')
    stop_sink
    python3 - "$c" "$b" "$reqs" "$msgs" "$okn" "$el" "${base:-0}" <<'EOF'
import sys
c, b, reqs, msgs, ok, el, base = sys.argv[1:]
rps = int(reqs) / float(el); mps = int(msgs) / float(el)
base = float(base)
ratio = f"{rps / base:.2f}" if base else "n/a"
note = "" if int(ok) == int(msgs) else f"  ({int(msgs) - int(ok)} not ok!)"
print(f"{c:<6} {b:<6} {rps:12.0f} {mps:12.0f} {base:14.0f} {ratio:>10}{note}")
EOF
  done
done
