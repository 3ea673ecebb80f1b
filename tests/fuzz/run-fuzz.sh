#!/usr/bin/env bash
# run-fuzz.sh FUZZER CORPUS SECONDS: a bounded libFuzzer run on a copy of the
# seed corpus (new inputs go to a temp dir, not into the source tree).
# Findings are reported as crash-* files and fail the test.
set -u
fuzzer=$1 corpus=$2 secs=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/relay-fuzz.XXXXXX")
mkdir -p "$work/corpus"
cp -r "$corpus"/. "$work/corpus/" 2>/dev/null || true
cd "$work"
"$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/" corpus 2>fuzz.log
rc=$?
grep -E '^(stat::number_of_executed_units|#[0-9]+ +DONE)' fuzz.log | tail -2
if [ $rc -ne 0 ]; then
  tail -60 fuzz.log
  echo "fuzzer failed; reproducers kept in $work"
  exit 1
fi
rm -rf "$work"
