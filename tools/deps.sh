#!/usr/bin/env bash
# Installs everything relay needs to build, test and run its demo, from
# Debian's packages and (for the SNS emulator used by tests) npm.
# Idempotent and quiet when everything is already present.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

# Build and runtime libraries, test tools (wrk, nginx for the ingest
# baseline, clang for libFuzzer, promtool for the metrics check).
pkgs=(build-essential cmake pkg-config git ca-certificates curl
      liblmdb-dev lmdb-utils libuv1-dev libcurl4-openssl-dev libssl-dev
      libmsgpack-dev libhttp-parser-dev zlib1g-dev libjson-c-dev libexpat1-dev
      nodejs npm python3 clang libclang-rt-14-dev wrk nginx-light prometheus)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # node and npm may come from outside Debian on some images: keep them.
  if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=($(printf '%s\n' "${missing[@]}" | grep -vxE 'nodejs|npm' || true))
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The nginx package starts a system nginx on port 80; the benchmark runs its own.
  if printf '%s\n' "${missing[@]}" | grep -qx nginx-light; then
    (systemctl stop nginx 2>/dev/null || service nginx stop 2>/dev/null || pkill -x nginx || true) >/dev/null 2>&1
  fi
  # Same for prometheus: only promtool is wanted.
  if printf '%s\n' "${missing[@]}" | grep -qx prometheus; then
    (systemctl stop prometheus prometheus-node-exporter 2>/dev/null || service prometheus stop 2>/dev/null || true) >/dev/null 2>&1
  fi
fi

# The SNS/SQS emulator (fauxqs) and test helpers, pinned by package-lock.json.
if [ ! -d "$here/tests/support/node_modules/fauxqs" ]; then
  echo "deps: installing test node modules" >&2
  (cd "$here/tests/support" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
