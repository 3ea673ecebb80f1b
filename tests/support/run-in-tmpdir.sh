#!/usr/bin/env bash
# Runs one test command in a fresh temporary directory, removed on success
# (kept on failure for a post-mortem, and its path printed).
set -u
dir=$(mktemp -d "${TMPDIR:-/tmp}/relay-test.XXXXXX")
export RELAY_TEST_TMP="$dir"
"$@"
rc=$?
if [ $rc -eq 0 ]; then rm -rf "$dir"; else echo "test files kept in $dir" >&2; fi
exit $rc
