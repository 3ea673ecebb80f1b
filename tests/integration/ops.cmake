# Operations end to end: relayctl, the admin API and /metrics against a
# running relayd (fault-sns stand-in, then fauxqs). Needs promtool (Debian
# package prometheus, installed by tools/deps.sh) and python3 (pty).
relay_script_test(NAME ops.e2e
  COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/ops_e2e.mjs
  TIMEOUT 300)
