#!/usr/bin/env bash
# The README's first command, non-interactive: it must post the sample events
# and see them arrive in the emulator's SQS queue (demo.mjs exits 1 if not).
set -euo pipefail
free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
p1=$(free_port); p2=$(free_port)
out="$RELAY_TEST_TMP/demo.out"
bash "$RELAY_SOURCE_DIR/tools/demo.sh" --once --listen "127.0.0.1:$p1" --admin-listen "127.0.0.1:$p2" \
  --bin "$RELAY_BIN_DIR" --data-dir "$RELAY_TEST_TMP/data" >"$out" 2>&1 || { cat "$out"; exit 1; }
cat "$out"
grep -q "5/5 events delivered byte for byte" "$out"
grep -q "too_large" "$out"
