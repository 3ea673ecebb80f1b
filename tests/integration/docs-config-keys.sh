#!/usr/bin/env bash
# Every configuration key of SPEC.md, and every key relayd itself knows
# (relayd --help), is documented in the README's configuration table.
set -euo pipefail
readme="$RELAY_SOURCE_DIR/README.md"
spec="$RELAY_SHARED_DIR/SPEC.md"
keys=$( { grep -oE 'RELAY_[A-Z_]+' "$spec";
          "$RELAY_BIN_DIR/relayd" --help 2>&1 | grep -oE 'RELAY_[A-Z_]+'; } | sort -u)
n=0; missing=0
for k in $keys; do
  n=$((n + 1))
  if ! grep -qE "^\| \`$k\`" "$readme"; then
    echo "not documented in README's configuration table: $k"
    missing=$((missing + 1))
  fi
done
echo "$n keys checked, $missing missing"
[ "$n" -ge 20 ] || { echo "too few keys found: is relayd --help listing them?"; exit 1; }
[ "$missing" -eq 0 ]
