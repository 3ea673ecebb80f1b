#!/usr/bin/env bash
# Ingest benchmark (a printed table, not a test).
#
# wrk drives signed, realistic Stream events (a fixture body, a unique
# X-Webhook-Id per request) over 64 keep-alive connections against relayd,
# and in the same run against nginx answering `return 200` with one worker:
# the non-durable ceiling of this machine. Prints requests/s, p50/p99
# latency, fsyncs/s (relayd's commit count from /metrics), peak RSS, and the
# ratio relay/nginx. Every 2xx relayd sends is durable: the script checks
# that the events stored equal the 2xx answers counted by wrk.
#
# Usage: tools/bench-ingest.sh [-d SECONDS] [-c CONNECTIONS] [-t THREADS]
#                              [-e FIXTURE_NAME] [-b BUILD_DIR] [-r ROUNDS]
#
# -r ROUNDS repeats the whole relayd-then-nginx pair and ends with one line
# per round and the median ratio: on a shared 2-core machine nginx's rate
# alone moves by 10 % from one run to the next.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
duration=10
conns=64
threads=2
fixture=message.new
build="$root/build"
rounds=1
args=("$@")
while getopts "d:c:t:e:b:r:h" o; do
  case $o in
    d) duration=$OPTARG ;;
    c) conns=$OPTARG ;;
    t) threads=$OPTARG ;;
    e) fixture=$OPTARG ;;
    b) build=$OPTARG ;;
    r) rounds=$OPTARG ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
  esac
done

if [ "$rounds" -gt 1 ]; then
  one=() # the same options without -r
  for ((i = 0; i < ${#args[@]}; i++)); do
    if [ "${args[i]}" = -r ]; then i=$((i + 1)); elif [[ ${args[i]} == -r* ]]; then :; else one+=("${args[i]}"); fi
  done
  sum=$(mktemp)
  trap 'rm -f "$sum"' EXIT
  for ((k = 1; k <= rounds; k++)); do
    echo "== round $k of $rounds" >&2
    out=$("$0" "${one[@]}")
    echo "$out"
    echo "$out" | awk -v k="$k" '$1 == "requests/s" {r = $2; n = $3} $1 == "p99" {p = $4}
      $1 == "ratio" {printf "round %d: relayd %s/s, nginx %s/s, relayd p99 %s ms, ratio %s\n", k, r, n, p, $4}' >>"$sum"
  done
  echo
  cat "$sum"
  awk '{print $NF}' "$sum" | sort -n | awk '{v[NR] = $1} END {printf "median ratio relay/nginx over %d rounds: %s   (target >= 0.60)\n", NR, v[int((NR + 1) / 2)]}'
  exit 0
fi

relayd="$build/bin/relayd"
shared="${RELAY_SHARED_DIR:-$root/../shared}"
body="$shared/fixtures/events/$fixture.json"
for x in "$relayd" "$body"; do [ -e "$x" ] || { echo "missing: $x" >&2; exit 1; }; done
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || { echo "nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-ingest.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# A free loopback port: bind 0, read it back, release it.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

secret="bench-secret-$(date +%s)"
sig=$(openssl dgst -sha256 -hmac "$secret" -r "$body" | cut -d' ' -f1)
run_id=$(date +%s%N)

cat >"$tmp/webhook.lua" <<'EOF'
-- Each wrk thread gets its own id; X-Webhook-Id = run-thread-counter.
local threads_made = 0
function setup(thread)
  threads_made = threads_made + 1
  thread:set("tid", threads_made)
end
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
local counter = 0
local run = os.getenv("BENCH_RUN")
wrk.method = "POST"
wrk.path = "/webhook"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Api-Key"] = "bench"
wrk.headers["X-Signature"] = os.getenv("BENCH_SIG")
wrk.headers["X-Webhook-Attempt"] = "1"
request = function()
  counter = counter + 1
  wrk.headers["X-Webhook-Id"] = string.format("%s-%d-%d", run, tid, counter)
  return wrk.format(nil, nil, nil, body)
end
-- No response() callback: with one defined, wrk hands every response to
-- Lua (headers parsed into a table), which costs wrk more CPU than relayd
-- spends on some requests, on the same 2 cores. wrk's own summary counts
-- non-2xx/3xx statuses (summary.errors.status).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d status_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF

# CPU time (user + system, all threads) of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Anonymous (heap) part of the resident set now: relayd's VmHWM also counts
# the LMDB file pages it mapped, which are page cache, not process memory.
anon_rss_kb() { awk '/RssAnon/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

run_wrk() { # url out
  BENCH_BODY="$body" BENCH_SIG="$sig" BENCH_RUN="$run_id" \
    wrk -t "$threads" -c "$conns" -d "${duration}s" --timeout 5s -s "$tmp/webhook.lua" "$1" >"$2" 2>&1
}

field() { sed -n "s/.*RESULT.* $2=\([0-9]*\).*/\1/p" "$1"; }
metric() { # port name
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}' | head -1
}

# ---- relayd --------------------------------------------------------------
rport=$(free_port)
aport=$(free_port)
mkdir -p "$tmp/data"
RELAY_LISTEN="127.0.0.1:$rport" RELAY_ADMIN_LISTEN="127.0.0.1:$aport" RELAY_DATA_DIR="$tmp/data" \
  RELAY_STREAM_API_KEY=bench RELAY_STREAM_API_SECRET="$secret" \
  RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:000000000000:bench RELAY_SNS_ENDPOINT=http://127.0.0.1:9 \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true \
  RELAY_LOG_LEVEL=warn RELAY_HTTP_MAX_CONNECTIONS=4096 \
  "$relayd" 2>"$tmp/relayd.log" &
rpid=$!
pids+=("$rpid")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$aport/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$aport/healthz" >/dev/null || { cat "$tmp/relayd.log" >&2; exit 1; }
c0=$(metric "$aport" relay_commit_duration_seconds_count); c0=${c0:-0}
s0=$(metric "$aport" relay_commit_duration_seconds_sum); s0=${s0:-0}
f0=$(metric "$aport" relay_commit_fsync_duration_seconds_sum); f0=${f0:-0}
echo "relayd: wrk -t$threads -c$conns -d${duration}s, body $(stat -c %s "$body") bytes ($fixture)" >&2
# BENCH_PERF=FILE: also record a CPU profile of relayd (perf record -g) during the run.
perf_pid=
if [ -n "${BENCH_PERF:-}" ]; then
  perf record -g -o "$BENCH_PERF" -p "$rpid" -- sleep "$duration" >/dev/null 2>&1 &
  perf_pid=$!
fi
rcpu0=$(cpu_ticks "$rpid")
run_wrk "http://127.0.0.1:$rport/webhook" "$tmp/wrk-relay.txt"
rcpu1=$(cpu_ticks "$rpid")
[ -n "$perf_pid" ] && wait "$perf_pid"
c1=$(metric "$aport" relay_commit_duration_seconds_count); c1=${c1:-0}
s1=$(metric "$aport" relay_commit_duration_seconds_sum); s1=${s1:-0}
f1=$(metric "$aport" relay_commit_fsync_duration_seconds_sum); f1=${f1:-0}
received=$(metric "$aport" relay_events_received_total); received=${received:-0}
relay_rss=$(peak_rss_kb "$rpid")
relay_anon=$(anon_rss_kb "$rpid")
kill -TERM "$rpid"; wait "$rpid" || true
grep RESULT "$tmp/wrk-relay.txt" >/dev/null || { cat "$tmp/wrk-relay.txt" >&2; exit 1; }

# ---- nginx ----------------------------------------------------------------
nport=$(free_port)
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  client_max_body_size 4m;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nport;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
}
EOF
"$nginx_bin" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" &
npid=$!
pids+=("$npid")
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$nport/" && break; sleep 0.1; done
echo "nginx: same load" >&2
ncpu0=$(cpu_ticks "$npid")
run_wrk "http://127.0.0.1:$nport/webhook" "$tmp/wrk-nginx.txt"
ncpu1=$(cpu_ticks "$npid")
nginx_rss=$(peak_rss_kb "$npid")
nginx_anon=$(anon_rss_kb "$npid")
kill -TERM "$npid"; wait "$npid" 2>/dev/null || true
grep RESULT "$tmp/wrk-nginx.txt" >/dev/null || { cat "$tmp/wrk-nginx.txt" >&2; exit 1; }

# ---- table ----------------------------------------------------------------
python3 - "$tmp/wrk-relay.txt" "$tmp/wrk-nginx.txt" "$c0" "$c1" "$received" "$relay_rss" "$nginx_rss" "$relay_anon" "$nginx_anon" "$s0" "$s1" \
  "$((rcpu1 - rcpu0))" "$((ncpu1 - ncpu0))" "$(getconf CLK_TCK)" "$f0" "$f1" <<'EOF'
import re, sys
def load(p):
    t = open(p).read()
    m = re.search(r"RESULT (.*)", t)
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
r, n = load(sys.argv[1]), load(sys.argv[2])
c0, c1, received, rrss, nrss, ranon, nanon = (int(float(x or 0)) for x in sys.argv[3:10])
s0, s1 = float(sys.argv[10] or 0), float(sys.argv[11] or 0)
rcpu, ncpu, tck = int(sys.argv[12]), int(sys.argv[13]), int(sys.argv[14])
f0, f1 = float(sys.argv[15] or 0), float(sys.argv[16] or 0)
def rps(x): return x["requests"] / (x["duration_us"] / 1e6)
rr, nr = rps(r), rps(n)
fs = (c1 - c0) / (r["duration_us"] / 1e6)
ok_relay = r["requests"] - r["status_errors"]
print(f"{'':24}{'relayd':>14}{'nginx':>14}")
print(f"{'requests/s':24}{rr:14.0f}{nr:14.0f}")
print(f"{'p50 latency (ms)':24}{r['p50_us']/1000:14.2f}{n['p50_us']/1000:14.2f}")
print(f"{'p99 latency (ms)':24}{r['p99_us']/1000:14.2f}{n['p99_us']/1000:14.2f}")
print(f"{'fsyncs/s (commits)':24}{fs:14.0f}{'0':>14}")
print(f"{'events per fsync':24}{(rr / fs if fs else 0):14.1f}{'-':>14}")
print(f"{'mean commit (ms)':24}{((s1 - s0) / (c1 - c0) * 1000 if c1 > c0 else 0):14.2f}{'-':>14}")
print(f"{'  of it LMDB fsync (ms)':24}{((f1 - f0) / (c1 - c0) * 1000 if c1 > c0 else 0):14.2f}{'-':>14}   (page writes, fdatasync, meta sync)")
print(f"{'CPU per request (us)':24}{rcpu / tck * 1e6 / max(r['requests'], 1):14.1f}{ncpu / tck * 1e6 / max(n['requests'], 1):14.1f}")
print(f"{'peak RSS (MiB)':24}{rrss/1024:14.1f}{nrss/1024:14.1f}   (relayd: incl. mapped LMDB pages)")
print(f"{'anon RSS at end (MiB)':24}{ranon/1024:14.1f}{nanon/1024:14.1f}")
print(f"{'non-2xx / socket errors':24}{str(r['status_errors'])+' / '+str(r['errors']):>14}{str(n['status_errors'])+' / '+str(n['errors']):>14}")
print(f"ratio relay/nginx (requests/s): {rr/nr:.2f}   (target >= 0.60; p99 target <= 5 ms)")
# Every 2xx is durable: relayd counts an event as received only from the
# commit callback; it must have counted at least every 2xx wrk saw (wrk's
# requests cut at the end of the run may be stored without being counted).
print(f"2xx seen by wrk: {ok_relay}; events stored by relayd: {received}"
      + ("" if received >= ok_relay else "   <-- MISMATCH"))
EOF
