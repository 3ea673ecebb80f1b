#!/usr/bin/env bash
# Quick start, step 1: installs what is needed, builds, starts an SNS/SQS
# emulator and relayd against it, posts signed sample events and shows them
# arriving, then keeps relay running until Ctrl-C.
#   bash tools/demo.sh [--once]     (--once: exit after the demo, for scripts)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash tools/deps.sh
bash tools/build.sh build
exec node tools/demo.mjs "$@"
