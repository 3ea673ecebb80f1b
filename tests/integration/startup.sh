#!/usr/bin/env bash
# relayd start-up against its environment, one case per run (argument):
#   sns_endpoint_config  RELAY_SNS_ENDPOINT the SNS client cannot use: exit 2
#                        at once, one line naming the key (it used to start,
#                        say "ready" and never publish).
#   sns_client_fatal     an endpoint only the SNS client sees
#                        (AWS_ENDPOINT_URL_SNS) and cannot use: relayd exits 1
#                        with a JSON line naming the key instead of running on
#                        without publishing.
#   service_links        Kubernetes variables of a Service named relay-admin
#                        (RELAY_ADMIN_SERVICE_HOST, ...): starts, exits 0 on
#                        SIGTERM.
#   sns_endpoint_good    endpoints config accepts (name with '_', [IPv6],
#                        upper case, path) are taken by the SNS client too.
#   sighup               SIGHUP (a closed terminal, a reload habit) is a
#                        clean shutdown like SIGTERM, exit 0, not death by
#                        signal in the middle of a commit.
#   late_publish_failure no credentials at start-up, a credentials file that
#                        appears later, and an endpoint the SNS client cannot
#                        use: relayd stays up and stores webhooks (stopping
#                        would lose what Stream sends meanwhile), and its
#                        stats say blocked, InvalidConfiguration, naming the
#                        key. Waits for the 30 s credentials retry.
#   full_disk     a new data dir on a full file system: exit 1 with the
#                 cause, not SIGBUS (see reserve_lock_file in queue/rq.c).
#   closed_stdio  relayd started with stdin, stdout and stderr closed (as
#                 `setsid relayd <&- >&- 2>&- &` or a supervisor that
#                 closes them does): the descriptors libuv opens at start-up
#                 take numbers 0-2, its signal pipe's write end became fd 2,
#                 every log line went into that pipe, and once about 64 KiB
#                 of log output had piled up there, the next log line blocked
#                 the event loop for good: no webhook, no health check
#                 answered. relayd must keep answering after thousands of log
#                 lines and stop cleanly on SIGTERM.
# Env (from relay_script_test): RELAY_BIN_DIR, RELAY_TEST_TMP, RELAY_SANITIZE.
set -euo pipefail
case_name=${1:?case}
relayd="$RELAY_BIN_DIR/relayd"
tmp="$RELAY_TEST_TMP"
slow=1
[ "${RELAY_SANITIZE:-0}" = 1 ] && slow=4

fail() { echo "FAIL: $*"; [ -f "$tmp/err" ] && sed 's/^/  stderr: /' "$tmp/err"; exit 1; }

# Every stderr line of a started relayd is one JSON object.
check_json_lines() {
  python3 - "$1" <<'PY' || fail "stderr has a line that is not one JSON object"
import json, sys
for i, line in enumerate(open(sys.argv[1], 'rb').read().split(b'\n')[:-1], 1):
    o = json.loads(line.decode('utf-8'))
    assert isinstance(o, dict), i
PY
}

base_env=(PATH="$PATH" HOME="$tmp" AWS_EC2_METADATA_DISABLED=true
          AWS_CONFIG_FILE="$tmp/none" AWS_SHARED_CREDENTIALS_FILE="$tmp/none"
          RELAY_LISTEN=127.0.0.1:0 RELAY_ADMIN_LISTEN=127.0.0.1:0
          RELAY_DATA_DIR="$tmp/data" RELAY_INSECURE_NO_SIGNATURE=1
          RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:000000000000:startup
          AWS_ACCESS_KEY_ID=AKIDSTARTUP AWS_SECRET_ACCESS_KEY=startup-secret-value)

# Waits up to $1 seconds for relayd ($pid) to exit. Sets rc (exit status,
# or "running" after the deadline).
wait_exit() {
  local i=0
  rc=running
  while [ $i -lt $(($1 * 10)) ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      set +e
      wait "$pid"
      rc=$?
      set -e
      return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
}

# Runs relayd with extra env; waits up to $1 seconds for it to exit.
# Sets rc (exit status, or "running" after the deadline; then it is killed).
run_until_exit() {
  local secs=$1
  shift
  env -i "${base_env[@]}" "$@" "$relayd" 2>"$tmp/err" &
  pid=$!
  wait_exit "$secs"
  [ "$rc" = running ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  set +e
  wait "$pid"
  set -e
}

# Waits up to SECS (x slow) for a stderr line matching PATTERN while relayd
# ($pid) runs; fails with WHAT if it exits or the line does not come.
wait_log() { # PATTERN SECS WHAT
  local i=0
  until grep -q "$1" "$tmp/err" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; fail "relayd exited: $3"; }
    i=$((i + 1))
    [ $i -lt $(($2 * 10 * slow)) ] || { kill "$pid"; fail "timed out: $3"; }
    sleep 0.1
  done
}

# Starts relayd with extra env and waits for "relayd ready" (sets pid).
start_until_ready() {
  rm -rf "$tmp/data"
  # Emptied here, not by the background redirection: that runs later, and
  # wait_log could meanwhile find the previous run's "relayd ready".
  : >"$tmp/err"
  env -i "${base_env[@]}" "$@" "$relayd" 2>"$tmp/err" &
  pid=$!
  wait_log '"msg":"relayd ready"' 10 "start-up ($*)"
}

stop_expect_0() {
  local sig=${1:-TERM}
  kill -"$sig" "$pid"
  set +e
  wait "$pid"
  local rc=$?
  set -e
  [ "$rc" = 0 ] || fail "exit $rc after SIG$sig, want 0"
  check_json_lines "$tmp/err"
}

case "$case_name" in
  sns_endpoint_config)
    for ep in "http://127.0.0.1:99999" "http://127.0.0.1:4566/?Action=Publish" "https://[::1/"; do
      run_until_exit $((5 * slow)) RELAY_SNS_ENDPOINT="$ep"
      [ "$rc" = 2 ] || fail "RELAY_SNS_ENDPOINT=$ep: exit $rc, want 2"
      [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "RELAY_SNS_ENDPOINT=$ep: not one line"
      grep -q '^relayd: RELAY_SNS_ENDPOINT: ' "$tmp/err" || fail "RELAY_SNS_ENDPOINT=$ep: key not named"
    done
    ;;
  sns_client_fatal)
    run_until_exit $((10 * slow)) AWS_ENDPOINT_URL_SNS="http://127.0.0.1:99999"
    [ "$rc" = 1 ] || fail "bad AWS_ENDPOINT_URL_SNS: exit $rc, want 1 (relayd must not run without publishing)"
    check_json_lines "$tmp/err"
    grep '"level":"error"' "$tmp/err" | grep -q '"key":"AWS_ENDPOINT_URL_SNS"' ||
      fail "no error line naming AWS_ENDPOINT_URL_SNS"
    if grep -q '"msg":"relayd ready"' "$tmp/err"; then fail "said ready"; fi
    if grep -q 'startup-secret-value' "$tmp/err"; then fail "secret in the log"; fi
    ;;
  service_links)
    start_until_ready RELAY_ADMIN_SERVICE_HOST=10.0.0.7 RELAY_ADMIN_SERVICE_PORT=8081 \
      RELAY_ADMIN_SERVICE_PORT_ADMIN=8081 RELAY_ADMIN_PORT=tcp://10.0.0.7:8081 \
      RELAY_ADMIN_PORT_8081_TCP=tcp://10.0.0.7:8081 RELAY_ADMIN_PORT_8081_TCP_PROTO=tcp \
      RELAY_ADMIN_PORT_8081_TCP_PORT=8081 RELAY_ADMIN_PORT_8081_TCP_ADDR=10.0.0.7 \
      AWS_ENDPOINT_URL_SNS=http://127.0.0.1:9
    stop_expect_0
    ;;
  sighup)
    start_until_ready AWS_ENDPOINT_URL_SNS=http://127.0.0.1:9
    stop_expect_0 HUP
    grep -q '"msg":"shutting down"' "$tmp/err" || fail "no clean shutdown logged"
    ;;
  sns_endpoint_good)
    # What config accepts, the SNS client takes: relayd publishes.
    for ep in "http://127.0.0.1:9" "http://localhost:9/" "http://sns_emulator:4566/sns/" \
              "http://[::1]:9/" "HTTPS://SNS.US-EAST-1.AMAZONAWS.COM:443/"; do
      start_until_ready RELAY_SNS_ENDPOINT="$ep"
      grep -q '"msg":"publishing"' "$tmp/err" || { kill "$pid"; fail "$ep: not publishing"; }
      stop_expect_0
    done
    ;;
  late_publish_failure)
    rm -rf "$tmp/data"
    late_env=()
    for e in "${base_env[@]}"; do
      case $e in AWS_ACCESS_KEY_ID=* | AWS_SECRET_ACCESS_KEY=* | AWS_SHARED_CREDENTIALS_FILE=*) ;; *) late_env+=("$e") ;; esac
    done
    env -i "${late_env[@]}" AWS_SHARED_CREDENTIALS_FILE="$tmp/creds" \
      AWS_ENDPOINT_URL_SNS="http://127.0.0.1:99999" "$relayd" 2>"$tmp/err" &
    pid=$!
    wait_log '"msg":"relayd ready"' 10 "start-up without credentials"
    port_of() { sed -n "s/.*\"msg\":\"$1 listening\".*\"port\":\([0-9]*\).*/\1/p" "$tmp/err" | head -1; }
    aport=$(port_of admin)
    iport=$(port_of ingest)
    [ -n "$aport" ] && [ -n "$iport" ] || { kill "$pid"; fail "ports not logged"; }
    curl -s "http://127.0.0.1:$aport/v1/stats" | grep -q '"last_error_code":"NoCredentials"' ||
      { kill "$pid"; fail "not blocked on credentials at first"; }
    printf '[default]\naws_access_key_id = AKIDLATE\naws_secret_access_key = late-secret-value\n' >"$tmp/creds"
    wait_log '"msg":"cannot publish; events stay queued' 45 \
      "the late publishing failure (relayd must stay up and log it)"
    sleep 0.5
    kill -0 "$pid" 2>/dev/null || fail "relayd exited after the late failure"
    st=$(curl -s "http://127.0.0.1:$aport/v1/stats")
    echo "$st" | grep -q '"drainer":"blocked"' || { kill "$pid"; fail "drainer not blocked: $st"; }
    echo "$st" | grep -q '"last_error_code":"InvalidConfiguration"' || { kill "$pid"; fail "wrong code: $st"; }
    echo "$st" | grep -q 'AWS_ENDPOINT_URL_SNS' || { kill "$pid"; fail "key not named: $st"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      --data '{"type":"message.new","cid":"messaging:late"}' "http://127.0.0.1:$iport/webhook")
    [ "$code" = 200 ] || { kill "$pid"; fail "webhook answered $code, want 200 (stored)"; }
    if grep -q 'late-secret-value' "$tmp/err"; then kill "$pid"; fail "secret in the log"; fi
    stop_expect_0
    ;;
  closed_stdio)
    # The dead SNS port keeps the drainer quiet (nothing is queued).
    env -i "${base_env[@]}" RELAY_SNS_ENDPOINT=http://127.0.0.1:9 \
      "$relayd" <&- >&- 2>&- &
    pid=$!
    # Without stderr the ports cannot be read from the log: find relayd's
    # listening sockets through /proc, and the admin one by /healthz.
    python3 - "$pid" "$slow" <<'PY' || { kill -KILL "$pid"; fail "relayd stopped answering with its stdio closed"; }
import http.client, os, sys, time
pid, slow = int(sys.argv[1]), int(sys.argv[2])

def listening_ports():
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:
                ports.append(int(parts[1].split(":")[1], 16))
    return ports

deadline = time.time() + 15 * slow
admin = None
while admin is None and time.time() < deadline:
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit("relayd exited at start-up")
    for port in listening_ports():
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                admin = port
            c.close()
        except OSError:
            pass
    if admin is None:
        time.sleep(0.1)
if admin is None:
    sys.exit("no admin listener found")

# Each pause and each resume writes one log line (about 90 bytes): 3000 of
# them are about four times what a pipe holds.
c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5 * slow)
for i in range(1500):
    for path in ("/v1/pause", "/v1/resume"):
        try:
            c.request("POST", path, body=b"")
            r = c.getresponse()
            r.read()
        except OSError as e:
            sys.exit(f"request {2 * i + (path == '/v1/resume')} ({path}) failed: {e!r}")
        if r.status != 200:
            sys.exit(f"{path}: HTTP {r.status}")
c.close()
c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5 * slow)
c.request("GET", "/healthz")
if c.getresponse().status != 200:
    sys.exit("healthz not 200")
print(f"admin port {admin}: 3000 logged requests answered, /healthz 200")
PY
    kill -TERM "$pid"
    wait_exit $((10 * slow))
    [ "$rc" != running ] || kill -KILL "$pid"
    [ "$rc" = 0 ] || fail "SIGTERM: exit status $rc, want 0"
    ;;
  full_disk)
    # A new data dir on a full file system: LMDB made lock.mdb with
    # ftruncate() and wrote it through a mapping, and relayd died of SIGBUS
    # with no word; it must exit 1 naming the data dir and the cause.
    # Needs a tmpfs mount (root); skipped where that is not allowed.
    mnt="$tmp/full"
    mkdir -p "$mnt"
    if ! mount -t tmpfs -o size=256k tmpfs "$mnt" 2>/dev/null; then
      echo "skipped: cannot mount a tmpfs here"
      exit 0
    fi
    trap 'umount "$mnt" 2>/dev/null || true' EXIT
    mkdir "$mnt/data"
    dd if=/dev/zero of="$mnt/fill" bs=4k 2>/dev/null || true
    run_until_exit $((10 * slow)) RELAY_DATA_DIR="$mnt/data" RELAY_SNS_ENDPOINT=http://127.0.0.1:9
    [ "$rc" = 1 ] || fail "exit status $rc on a full disk, want 1"
    grep -q '"msg":"cannot open the queue".*"key":"RELAY_DATA_DIR".*No space left on device' "$tmp/err" ||
      fail "no line naming RELAY_DATA_DIR and the full disk"
    ;;
  *)
    echo "unknown case $case_name"
    exit 2
    ;;
esac
echo "ok $case_name"
