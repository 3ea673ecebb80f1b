#!/usr/bin/env bash
# prove.sh: runs the durability scenarios of shared/TESTING.md (tests/crash,
# driven by tests/support/harness.mjs) and prints one table: scenario, runs,
# events acknowledged, lost, corrupt, duplicates; plus libFuzzer executions
# and findings when a fuzz build has results.
#
#   tools/prove.sh [--short] [--build DIR] [--fuzz-build DIR] [-R REGEX]
#     --short        the short variants (the default run's), not the long ones
#     --build DIR    build directory (default: $RELAY_BUILD or ./build);
#                    relayd, relayctl and the sync-order shim are built there
#     --fuzz-build   a -DRELAY_FUZZ=ON build whose fuzz tests have run
#                    (default: ./build-fuzz, skipped if it has no results)
#     -R REGEX       only scenarios whose test name matches
# Exit status: 0 if every scenario passed, 1 otherwise.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
build=${RELAY_BUILD:-$here/build}
fuzz=$here/build-fuzz
variant=long
filter=".*"
while [ $# -gt 0 ]; do
  case $1 in
    --short) variant=short ;;
    --build) build=$2; shift ;;
    --fuzz-build) fuzz=$2; shift ;;
    -R) filter=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "prove.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
fi
cmake --build "$build" --target relayd relayctl sync_order_shim -j2 >/dev/null || {
  echo "prove.sh: build failed in $build" >&2; exit 1; }

results=$(mktemp "${TMPDIR:-/tmp}/prove-results.XXXXXX")
log=$(mktemp "${TMPDIR:-/tmp}/prove-log.XXXXXX")
if [ "$variant" = long ]; then
  sel=(-R "^prove\\.($filter)" -L long)
else
  sel=(-R "^prove\\.($filter)" -LE long)
fi
echo "prove.sh: $variant variants in $build (log: $log)" >&2
(cd "$build" && PROVE_RESULTS=$results ctest "${sel[@]}" -V) >"$log" 2>&1
rc=$?
failed=$(grep -E '^\s+[0-9]+ - prove\.' "$log" | sed -E 's/^\s+[0-9]+ - //')

node - "$results" "$variant" <<'JS'
const fs = require('fs');
const [file, variant] = process.argv.slice(2);
const rows = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('RESULT '))
  .map((l) => JSON.parse(l.slice(7)));
rows.sort((a, b) => a.scenario.localeCompare(b.scenario, undefined, { numeric: true }));
const head = ['scenario', 'variant', 'runs', 'acknowledged', 'lost', 'corrupt', 'duplicates', 'checks', 'note'];
const table = [head, ...rows.map((r) => [r.scenario, r.variant, r.runs, r.acked, r.lost, r.corrupt, r.duplicates,
  r.checksFailed ? `${r.checksFailed} FAILED` : 'pass', r.note || ''])];
const w = head.map((_, i) => Math.max(...table.map((r) => String(r[i]).length)));
const line = (r) => '| ' + r.map((c, i) => String(c).padEnd(w[i])).join(' | ') + ' |';
console.log(line(head));
console.log('|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|');
for (const r of table.slice(1)) console.log(line(r));
const tot = rows.reduce((a, r) => ({ acked: a.acked + r.acked, lost: a.lost + r.lost, corrupt: a.corrupt + r.corrupt, dup: a.dup + r.duplicates }), { acked: 0, lost: 0, corrupt: 0, dup: 0 });
console.log(`total: ${rows.length} scenarios, ${tot.acked} acknowledged, ${tot.lost} lost, ${tot.corrupt} corrupt, ${tot.dup} duplicates`);
JS

# Fuzzing: executions and findings from the fuzz build's last ctest logs.
if ls "$fuzz"/Testing/Temporary/LastTest*.log >/dev/null 2>&1; then
  node - "$fuzz"/Testing/Temporary/LastTest*.log <<'JS'
const fs = require('fs');
const runs = new Map();
for (const f of process.argv.slice(2)) {
  const t = fs.readFileSync(f, 'utf8');
  const parts = t.split(/\n\d+\/\d+ Test: /).slice(1);
  for (const p of parts) {
    const name = p.split('\n')[0].trim();
    if (!/^fuzz\./.test(name)) continue;
    const ex = [...p.matchAll(/stat::number_of_executed_units:\s*(\d+)/g)].map((m) => Number(m[1]));
    const passed = /Test Passed\./.test(p);
    runs.set(name, { execs: ex.reduce((a, b) => a + b, 0), findings: passed ? 0 : 1 });
  }
}
if (!runs.size) { console.log('fuzzing: no libFuzzer results in the fuzz build'); process.exit(0); }
console.log('\n| fuzz target | executions | findings |\n|---|---|---|');
let e = 0, fnd = 0;
for (const [n, r] of [...runs].sort()) { console.log(`| ${n} | ${r.execs} | ${r.findings} |`); e += r.execs; fnd += r.findings; }
console.log(`fuzzing total: ${runs.size} runs, ${e} executions, ${fnd} findings`);
JS
else
  echo "fuzzing: no results in $fuzz (run its fuzz tests, e.g. ctest -L fuzz, first)"
fi

if [ $rc -ne 0 ]; then
  echo "FAILED scenario tests:"; echo "$failed"
  echo "(details in $log)"
  exit 1
fi
rm -f "$results"
exit 0
