#!/usr/bin/env bash
# The fauxqs helper as a process (the way shell tests use it): it prints its
# endpoint and topic, the SNS driver publishes to it, and the queue can be
# inspected without consuming it.
set -euo pipefail
: "${RELAY_SOURCE_DIR:?}" "${RELAY_TEST_BIN_DIR:?}" "${RELAY_SHARED_DIR:?}" "${NODE:?}"
ev="$RELAY_SHARED_DIR/fixtures/events"

coproc FX { exec "$NODE" "$RELAY_SOURCE_DIR/tests/support/fauxqs.mjs" --fifo --filter-type user.updated; }
trap 'kill "$FX_PID" 2>/dev/null || true' EXIT
read -r -t 20 line <&"${FX[0]}"
field() { "$NODE" -e 'const o=JSON.parse(process.argv[1]); console.log(process.argv[2].split(".").reduce((a,k)=>a[k],o))' "$line" "$1"; }
endpoint=$(field endpoint)
topic=$(field topicArn)
case "$endpoint" in http://127.0.0.1:*) ;; *) echo "FAIL: endpoint not on loopback: $endpoint"; exit 1 ;; esac
case "$topic" in *.fifo) ;; *) echo "FAIL: topic is not FIFO: $topic"; exit 1 ;; esac

"$RELAY_TEST_BIN_DIR/sns_driver" --endpoint "$endpoint" --topic "$topic" --batch 10 \
  "$ev/message.new.json" "$ev/user.updated.json" "$ev/reaction.new.json" >"$RELAY_TEST_TMP/out"
ok=$(grep -c '"outcome":"ok"' "$RELAY_TEST_TMP/out" || true)
[ "$ok" = 3 ] || { echo "FAIL: $ok of 3 published"; cat "$RELAY_TEST_TMP/out"; exit 1; }

count() { curl -sf "$endpoint/_fauxqs/queues/$1" | "$NODE" -e '
  let s=""; process.stdin.on("data",d=>s+=d).on("end",()=>{const q=JSON.parse(s).messages;
  console.log(q.ready.length+q.delayed.length+q.inflight.length)})'; }
all=$(count "$(field queues.all.name)")
filtered=$(count "$(field queues.filtered.name)")
[ "$all" = 3 ] || { echo "FAIL: raw queue holds $all, want 3"; exit 1; }
[ "$filtered" = 1 ] || { echo "FAIL: filtered queue holds $filtered, want 1"; exit 1; }
echo "ok fauxqs cli: all=$all filtered=$filtered"
