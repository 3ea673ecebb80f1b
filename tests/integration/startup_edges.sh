#!/usr/bin/env bash
# relayd start-up edge cases; one case per run (argument):
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

fail() { echo "FAIL: $*"; exit 1; }

base_env=(PATH="$PATH" HOME="$tmp" AWS_EC2_METADATA_DISABLED=true
          AWS_CONFIG_FILE="$tmp/none" AWS_SHARED_CREDENTIALS_FILE="$tmp/none"
          RELAY_LISTEN=127.0.0.1:0 RELAY_ADMIN_LISTEN=127.0.0.1:0
          RELAY_DATA_DIR="$tmp/data" RELAY_INSECURE_NO_SIGNATURE=1
          RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:000000000000:review-start
          AWS_ACCESS_KEY_ID=AKIDREVIEWSTART AWS_SECRET_ACCESS_KEY=review-start-secret-value)

pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# Waits up to SECS for relayd ($pid) to exit; sets rc (or "running").
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

case "$case_name" in
  closed_stdio)
    # The dead SNS port keeps the drainer quiet (nothing is queued).
    env -i "${base_env[@]}" RELAY_SNS_ENDPOINT=http://127.0.0.1:9 \
      "$relayd" <&- >&- 2>&- &
    pid=$!
    # Without stderr the ports cannot be read from the log: find relayd's
    # listening sockets through /proc, and the admin one by /healthz.
    python3 - "$pid" "$slow" <<'PY' || fail "relayd stopped answering with its stdio closed"
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
    [ "$rc" = 0 ] || fail "SIGTERM: exit status $rc, want 0"
    echo "ok: closed stdio, relayd kept answering and exited 0"
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
    trap 'cleanup; umount "$mnt" 2>/dev/null || true' EXIT
    mkdir "$mnt/data"
    dd if=/dev/zero of="$mnt/fill" bs=4k 2>/dev/null || true
    env -i "${base_env[@]}" RELAY_DATA_DIR="$mnt/data" RELAY_SNS_ENDPOINT=http://127.0.0.1:9 \
      "$relayd" 2>"$tmp/err" &
    pid=$!
    wait_exit $((10 * slow))
    cat "$tmp/err"
    [ "$rc" = 1 ] || fail "exit status $rc on a full disk, want 1"
    grep -q '"msg":"cannot open the queue".*"key":"RELAY_DATA_DIR".*No space left on device' "$tmp/err" ||
      fail "no line naming RELAY_DATA_DIR and the full disk"
    echo "ok: full disk, exit 1 with the cause"
    ;;
  *)
    fail "unknown case $case_name"
    ;;
esac
