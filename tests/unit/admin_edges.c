/* Admin API and relayctl edge cases, one case per fault found in review,
 * against the contract (SPEC "Admin API" / "relayctl", README).
 * Same set-up as metrics_admin.c: the admin API over real HTTP on a real
 * queue, a scripted fake drainer, and the built relayctl. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "admin.h"
#include "drain.h"
#include "metrics.h"
#include "relayctl.h"
#include "rq.h"
#include "testlib.h"

/* ---- The fake drainer ------------------------------------------------------
 * `gone` stands for relayd having freed the drainer: relayd's shutdown
 * closes (frees) the drainer before it closes the admin API, so any call
 * after that point is a use after free in relayd (seen under ASan). */

struct drain {
  int unused;
};
static drain fake_drain;
static uv_mutex_t fake_lock;
static drain_status fake;
static atomic_int fake_gone, calls_after_gone;

static void touch(void) {
  if (atomic_load(&fake_gone)) atomic_fetch_add(&calls_after_gone, 1);
}
const char *drain_state_name(drain_state s) {
  static const char *const n[] = {"running", "backoff", "paused", "blocked"};
  return (unsigned)s < 4 ? n[s] : "unknown";
}
const char *sns_outcome_name(sns_outcome o) {
  static const char *const n[] = {"ok", "retry", "throttled", "permanent", "config", "unreachable"};
  return (unsigned)o < 6 ? n[o] : "unknown";
}
void drain_get_status(const drain *d, drain_status *out) {
  (void)d;
  touch();
  uv_mutex_lock(&fake_lock);
  *out = fake;
  uv_mutex_unlock(&fake_lock);
}
void drain_pause(drain *d) {
  (void)d;
  touch();
}
void drain_resume(drain *d) {
  (void)d;
  touch();
}
void drain_kick(drain *d) {
  (void)d;
  touch();
}
int drain_test_sns(drain *d, drain_test_cb cb, void *arg) {
  (void)d;
  touch();
  sns_result r;
  memset(&r, 0, sizeof r);
  r.outcome = SNS_OK;
  r.http_status = 200;
  snprintf(r.message_id, sizeof r.message_id, "msg-0001");
  cb(arg, 0, &r);
  return 0;
}

/* ---- Harness: admin on a loop thread --------------------------------------- */

static uv_loop_t loop;
static uv_async_t stop_async;
static uv_thread_t loop_thread;
static admin *adm;
static rq_env *env;
static int port, closed;
static char base[64];

static void on_closed(void *arg) {
  (void)arg;
  closed = 1;
  uv_close((uv_handle_t *)&stop_async, NULL);
}
static void on_stop(uv_async_t *a) {
  (void)a;
  admin_close(adm, on_closed, NULL);
}
static void run_loop(void *arg) {
  (void)arg;
  uv_run(&loop, UV_RUN_DEFAULT);
}

static void open_queue(void) {
  char dir[4200], cmd[4300];
  snprintf(dir, sizeof dir, "%s/data", tl_tmpdir);
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  CHECK_INT(system(cmd), ==, 0);
  rq_options o;
  memset(&o, 0, sizeof o);
  o.map_size = 64 << 20;
  CHECK_INT(rq_env_open(&env, dir, &o), ==, 0);
}

/* Admin on the queue opened by open_queue(); `before_loop` runs on this
 * thread after admin_new() and before the loop thread starts (it may queue
 * thread-pool work on the loop). */
static void start_admin(void (*before_loop)(void)) {
  uv_mutex_init(&fake_lock);
  memset(&fake, 0, sizeof fake);
  fake.state = DRAIN_BACKOFF;
  snprintf(fake.last_error.code, sizeof fake.last_error.code, "Throttling");
  snprintf(fake.last_error.message, sizeof fake.last_error.message, "Rate exceeded");
  fake.concurrency = 3;
  fake.max_concurrency = 16;
  atomic_store(&fake_gone, 0);
  atomic_store(&calls_after_gone, 0);
  metrics_reset();
  CHECK_INT(uv_loop_init(&loop), ==, 0);
  CHECK_INT(uv_async_init(&loop, &stop_async, on_stop), ==, 0);
  admin_options ao;
  memset(&ao, 0, sizeof ao);
  ao.listen = "127.0.0.1:0";
  ao.env = env;
  ao.drain = &fake_drain;
  CHECK_INT(admin_new(&adm, &loop, &ao), ==, 0);
  port = admin_port(adm);
  CHECK(port > 0);
  snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
  closed = 0;
  if (before_loop) before_loop();
  CHECK_INT(uv_thread_create(&loop_thread, run_loop, NULL), ==, 0);
}

static void stop(void) {
  uv_async_send(&stop_async);
  uv_thread_join(&loop_thread);
  CHECK(closed);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
  rq_env_close(env);
  env = NULL;
  uv_mutex_destroy(&fake_lock);
}

/* ---- HTTP client --------------------------------------------------------------- */

typedef struct {
  long status;
  char *body;
  size_t len;
} resp;

static size_t on_data(char *p, size_t sz, size_t n, void *arg) {
  resp *r = arg;
  char *nb = realloc(r->body, r->len + sz * n + 1);
  if (!nb) return 0;
  r->body = nb;
  memcpy(r->body + r->len, p, sz * n);
  r->len += sz * n;
  r->body[r->len] = '\0';
  return sz * n;
}

static resp call_with(const char *method, const char *path, const char *body) {
  resp r;
  memset(&r, 0, sizeof r);
  CURL *h = curl_easy_init();
  CHECK(h != NULL);
  char url[512];
  snprintf(url, sizeof url, "%s%s", base, path);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  if (strcmp(method, "POST") == 0) curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  CHECK_INT(curl_easy_perform(h), ==, CURLE_OK);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  curl_easy_cleanup(h);
  if (!r.body) r.body = calloc(1, 1);
  return r;
}

static resp call(const char *method, const char *path) {
  return call_with(method, path, NULL);
}

/* relayctl with the admin address of start_admin(); stdout and stderr
 * kept apart. */
static char ctl_out[1 << 20], ctl_err[1 << 16];
static size_t ctl_out_len;
static int ctl(const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && env -u RELAY_ADMIN_TOKEN RELAY_ADMIN_LISTEN=127.0.0.1:%d '%s/relayctl' %s "
           ">out.txt 2>err.txt </dev/null",
           tl_tmpdir, port, RELAY_BIN_DIR, args);
  int rc = system(cmd);
  char path[4200];
  snprintf(path, sizeof path, "%s/out.txt", tl_tmpdir);
  size_t n = 0;
  char *o = tl_read_file(path, &n);
  ctl_out_len = o ? (n < sizeof ctl_out - 1 ? n : sizeof ctl_out - 1) : 0;
  if (o) memcpy(ctl_out, o, ctl_out_len);
  ctl_out[ctl_out_len] = '\0';
  snprintf(path, sizeof path, "%s/err.txt", tl_tmpdir);
  char *e = tl_read_file(path, NULL);
  snprintf(ctl_err, sizeof ctl_err, "%s", e ? e : "");
  free(o);
  free(e);
  CHECK(WIFEXITED(rc));
  return WEXITSTATUS(rc);
}

/* ---- Cases ----------------------------------------------------------------------- */

/* Holds libuv's only pool thread (UV_THREADPOOL_SIZE=1) so that an admin
 * job queued behind it finishes only when the test says so. */
static uv_work_t blocker;
static uv_sem_t blocker_go;
static void blocker_run(uv_work_t *w) {
  (void)w;
  uv_sem_wait(&blocker_go);
}
static void blocker_done(uv_work_t *w, int status) {
  (void)w;
  (void)status;
}
static void queue_blocker(void) {
  CHECK_INT(uv_sem_init(&blocker_go, 0), ==, 0);
  CHECK_INT(uv_queue_work(&loop, &blocker, blocker_run, blocker_done), ==, 0);
}

/* Sends one request on its own connection and returns the socket; the
 * answer is read later with raw_answer(). */
static int raw_send(const char *method, const char *path, const char *body) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons((uint16_t)port);
  CHECK_INT(connect(fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  char req[1024];
  int n =
      snprintf(req, sizeof req,
               "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
               method, path, body ? strlen(body) : 0, body ? body : "");
  CHECK_INT(write(fd, req, (size_t)n), ==, n);
  return fd;
}

/* Reads the answer until the server closes: status and body. */
static resp raw_answer(int fd) {
  resp r;
  memset(&r, 0, sizeof r);
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    CHECK(n >= 0);
    if (n == 0) break;
    on_data(buf, 1, (size_t)n, &r);
  }
  close(fd);
  CHECK(r.body != NULL);
  CHECK(sscanf(r.body, "HTTP/1.1 %ld", &r.status) == 1);
  char *b = strstr(r.body, "\r\n\r\n");
  CHECK(b != NULL);
  memmove(r.body, b + 4, strlen(b + 4) + 1);
  r.len = strlen(r.body);
  return r;
}

/* relayd frees the drainer before it closes the admin API (SIGTERM: ingest,
 * drainer, SNS client, committer, then admin). A /v1/stats or /metrics
 * whose queue part was still running on the thread pool then read the
 * freed drainer when it answered (ASan: heap-use-after-free in
 * drain_get_status from answer_stats, with a large DLQ to count). The
 * drainer's state must be read when the request arrives, on the loop
 * thread, never after the pool hop. */
static resp request_across_drainer_free(const char *method, const char *path, const char *body) {
  setenv("UV_THREADPOOL_SIZE", "1", 1); /* read at the pool's first use */
  if (!env) open_queue();
  start_admin(queue_blocker);
  int fd = raw_send(method, path, body);
  /* /healthz is answered on the loop thread. The request above was in its
   * socket before the first probe connected, so the loop read it in the
   * same iteration as that probe at the latest; the second probe needs a
   * later iteration. After it, the job waits behind the blocker. */
  for (int i = 0; i < 2; i++) {
    resp h = call("GET", "/healthz");
    CHECK_INT(h.status, ==, 200);
    free(h.body);
  }
  admin_set_stopping(adm);     /* SIGTERM: relayd says so first, */
  atomic_store(&fake_gone, 1); /* then its drain_close() frees the drainer */
  uv_sem_post(&blocker_go);
  resp r = raw_answer(fd);
  if (atomic_load(&calls_after_gone))
    fprintf(stderr, "%s: %d drainer call(s) after it was freed\n", path,
            atomic_load(&calls_after_gone));
  CHECK_INT(atomic_load(&calls_after_gone), ==, 0);
  CHECK_INT(r.status, ==, 200);
  stop();
  uv_sem_destroy(&blocker_go);
  return r;
}

TEST(stats_reads_drainer_before_pool_hop) {
  resp r = request_across_drainer_free("GET", "/v1/stats", NULL);
  /* The answer still carries the drainer's state as it was. */
  CHECK(strstr(r.body, "\"drainer\":\"backoff\"") != NULL);
  CHECK(strstr(r.body, "\"last_error\":\"Throttling: Rate exceeded\"") != NULL);
  free(r.body);
}

TEST(metrics_reads_drainer_before_pool_hop) {
  resp r = request_across_drainer_free("GET", "/metrics", NULL);
  CHECK(strstr(r.body, "\nrelay_drainer_state{state=\"backoff\"} 1\n") != NULL);
  CHECK(strstr(r.body, "\nrelay_drainer_concurrency 3\n") != NULL);
  free(r.body);
}

/* The same for a replay: when it was done, the admin API woke the drainer
 * (drain_kick) for the requeued events, a freed one during shutdown (a
 * large {"all":true} replay takes seconds). A stopping relayd publishes
 * them after its restart; nothing needs waking. */
TEST(replay_does_not_kick_freed_drainer) {
  open_queue();
  static const char body[] = "{\"type\":\"message.new\"}";
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  rq_record r;
  memset(&r, 0, sizeof r);
  r.received_ms = 1700000000000;
  r.body = (const uint8_t *)body, r.body_len = strlen(body), r.type = "message.new";
  CHECK_INT(rq_txn_append_dead(t, &r, "rejected", "InvalidParameter", "bad", NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  resp a = request_across_drainer_free("POST", "/v1/dlq/replay", "{\"all\":true}");
  CHECK(strstr(a.body, "\"replayed\":1") != NULL);
  free(a.body);
}

/* ---- JSON output is UTF-8 --------------------------------------------------- */

/* Strict UTF-8 (RFC 3629), as a JSON parser that decodes its input needs. */
static int is_utf8(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t len = c < 0x80             ? 1
                 : (c & 0xE0) == 0xC0 ? 2
                 : (c & 0xF0) == 0xE0 ? 3
                 : (c & 0xF8) == 0xF0 ? 4
                                      : 0;
    if (!len || i + len > n) return 0;
    unsigned cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += len;
  }
  return 1;
}

static void check_json_utf8(const char *what, const char *text, size_t len) {
  if (!is_utf8((const unsigned char *)text, len))
    fprintf(stderr, "%s: not UTF-8:\n%s\n", what, text);
  CHECK(is_utf8((const unsigned char *)text, len));
  json_object *o = json_tokener_parse(text);
  CHECK(o != NULL);
  json_object_put(o);
}

/* An X-Webhook-Id is an HTTP header value: ingest stores its bytes as sent
 * (http-parser lets obs-text 0x80-0xFF through), and an SNS error message
 * cut at its 511-byte buffer can end inside a UTF-8 sequence. Such a DLQ
 * entry made GET /v1/dlq, /v1/dlq/{id}, /v1/stats and `relayctl ... --json`
 * print those raw bytes inside JSON strings: not JSON (RFC 8259 says
 * UTF-8), and e.g. Python's json.load refuses the whole listing. Invalid
 * sequences are now sent as U+FFFD. */
TEST(json_output_is_utf8) {
  open_queue();
  static const char body[] = "{\"type\":\"message.new\",\"cid\":\"messaging:u\"}";
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  rq_record r;
  memset(&r, 0, sizeof r);
  r.received_ms = 1700000000000;
  r.body = (const uint8_t *)body, r.body_len = strlen(body), r.type = "message.new";
  r.cid = "messaging:u";
  r.webhook_id = "wh-\xff\xfe-1";
  uint64_t id1, id2;
  CHECK_INT(rq_txn_append_dead(t, &r, "too_large", NULL, "too large", &id1), ==, 0);
  r.webhook_id = "wh-2";
  CHECK_INT(rq_txn_append(t, &r, &id2), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  /* "... caf\xc3\xa9" cut after its first byte. */
  CHECK_INT(rq_txn_dead(t, id2, 1700000005000, "rejected", "InvalidParameter", "bad value caf\xc3"),
            ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  start_admin(NULL);
  uv_mutex_lock(&fake_lock);
  snprintf(fake.last_error.message, sizeof fake.last_error.message, "Rate exceeded \xe2\x82");
  uv_mutex_unlock(&fake_lock);

  resp a = call("GET", "/v1/dlq");
  CHECK_INT(a.status, ==, 200);
  check_json_utf8("GET /v1/dlq", a.body, a.len);
  /* The valid parts are kept, each bad sequence becomes U+FFFD. */
  CHECK(strstr(a.body, "\"webhook_id\":\"wh-\xef\xbf\xbd\xef\xbf\xbd-1\"") != NULL);
  CHECK(strstr(a.body, "\"message\":\"bad value caf\xef\xbf\xbd\"") != NULL);
  free(a.body);
  char path[64];
  snprintf(path, sizeof path, "/v1/dlq/%llu", (unsigned long long)id1);
  a = call("GET", path);
  CHECK_INT(a.status, ==, 200);
  check_json_utf8(path, a.body, a.len);
  free(a.body);
  a = call("GET", "/v1/stats");
  CHECK_INT(a.status, ==, 200);
  check_json_utf8("GET /v1/stats", a.body, a.len);
  CHECK(strstr(a.body, "\"last_error\":\"Throttling: Rate exceeded \xef\xbf\xbd\xef\xbf\xbd\"") !=
        NULL);
  free(a.body);

  CHECK_INT(ctl("dlq list --json"), ==, 0);
  check_json_utf8("relayctl dlq list --json", ctl_out, ctl_out_len);
  char args[4300];
  snprintf(args, sizeof args, "dlq show %llu --json", (unsigned long long)id1);
  CHECK_INT(ctl(args), ==, 0);
  check_json_utf8("relayctl dlq show --json", ctl_out, ctl_out_len);
  stop();

  /* Offline (--data-dir) prints the same JSON forms. */
  snprintf(args, sizeof args, "--data-dir '%s/data' dlq list --json", tl_tmpdir);
  CHECK_INT(ctl(args), ==, 0);
  check_json_utf8("relayctl --data-dir dlq list --json", ctl_out, ctl_out_len);
  snprintf(args, sizeof args, "--data-dir '%s/data' dlq show %llu --json", tl_tmpdir,
           (unsigned long long)id2);
  CHECK_INT(ctl(args), ==, 0);
  check_json_utf8("relayctl --data-dir dlq show --json", ctl_out, ctl_out_len);
}

/* ---- relayctl against a relayd that does not answer -------------------------- */

/* A listening socket that never accepts: the kernel completes the
 * handshake, so a client connects and then waits for an answer, as with a
 * relayd whose loop is stuck. Returns the fd; *port_out its port. */
static int silent_listener(int *port_out) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  CHECK_INT(listen(fd, 8), ==, 0);
  socklen_t sl = sizeof sa;
  CHECK_INT(getsockname(fd, (struct sockaddr *)&sa, &sl), ==, 0);
  *port_out = ntohs(sa.sin_port);
  return fd;
}

/* Waits up to ms for pid; returns its wait status, or -1 if still running. */
static int wait_for(pid_t pid, int ms) {
  for (int waited = 0; waited < ms; waited += 20) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    uv_sleep(20);
  }
  return -1;
}

/* `stats --watch` runs "until Ctrl-C" (usage), but it caught SIGINT and
 * SIGTERM only to end the loop after the current request, which against a
 * relayd that accepts but does not answer waits for relayctl's 120 s
 * timeout: Ctrl-C did nothing for two minutes. It must stop at once. */
TEST(watch_stops_on_signal_while_relayd_hangs) {
  int sigs[] = {SIGINT, SIGTERM};
  for (int k = 0; k < 2; k++) {
    int hport;
    int lfd = silent_listener(&hport);
    char admin_url[64];
    snprintf(admin_url, sizeof admin_url, "127.0.0.1:%d", hport);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      char bin[4200];
      snprintf(bin, sizeof bin, "%s/relayctl", RELAY_BIN_DIR);
      int devnull = open("/dev/null", O_RDWR);
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execl(bin, "relayctl", "--admin", admin_url, "stats", "--watch", (char *)NULL);
      _exit(127);
    }
    uv_sleep(700); /* connected, waiting for the answer */
    CHECK_INT(wait_for(pid, 1), ==, -1);
    kill(pid, sigs[k]);
    int st = wait_for(pid, 3000);
    if (st == -1) {
      fprintf(stderr, "relayctl stats --watch still running 3 s after %s\n", strsignal(sigs[k]));
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
    }
    close(lfd);
    CHECK(st != -1);
    CHECK(WIFEXITED(st) || WIFSIGNALED(st));
  }
}

/* ---- Errors print nothing on stdout ------------------------------------------ */

/* `dlq replay|purge` that could not reach relayd (or was refused) printed
 * a result on stdout anyway: "replayed 0 of 1 DLQ entry", or with --json
 * {"purged":0,"missing":0}, an answer-shaped object for a command that
 * did nothing (exit 1). A script reading stdout takes it for a result.
 * Errors go to stderr only, as for every other command. */
TEST(failed_replay_prints_nothing_on_stdout) {
  /* A port nothing listens on. */
  int dead_port;
  close(silent_listener(&dead_port));
  port = dead_port; /* ctl() points RELAY_ADMIN_LISTEN there */
  const char *cmds[] = {"dlq replay 5", "dlq replay 5 6 --json", "dlq purge 5 --json",
                        "dlq purge 7 --reason rejected"};
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
    int rc = ctl(cmds[i]);
    if (rc != 1 || ctl_out_len)
      fprintf(stderr, "%s: exit %d\nstdout: %s\nstderr: %s\n", cmds[i], rc, ctl_out, ctl_err);
    CHECK_INT(rc, ==, 1);
    CHECK_INT(ctl_out_len, ==, 0);
    CHECK(strstr(ctl_err, "cannot reach the relayd admin API") != NULL);
  }
}

/* ---- HEAD on the probe endpoints --------------------------------------------- */

static long head_status(const char *path) {
  CURL *h = curl_easy_init();
  CHECK(h != NULL);
  char url[512];
  snprintf(url, sizeof url, "%s%s", base, path);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  CHECK_INT(curl_easy_perform(h), ==, CURLE_OK);
  long st = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
  curl_easy_cleanup(h);
  return st;
}

/* HTTP requires HEAD wherever GET works (RFC 9110 9.1), and uptime
 * monitors and `wget --spider` probe with HEAD; /healthz answered 405 to
 * it, so such a monitor reported a running relayd as down. HEAD gets the
 * GET answer's status and headers, without the body. */
TEST(head_on_probes) {
  open_queue();
  start_admin(NULL);
  CHECK_INT(head_status("/healthz"), ==, 200);
  CHECK_INT(head_status("/readyz"), ==, 200);
  CHECK_INT(head_status("/metrics"), ==, 200);
  admin_set_stopping(adm);
  CHECK_INT(head_status("/readyz"), ==, 503);
  CHECK_INT(head_status("/healthz"), ==, 200);
  /* Still only GET and POST where they belong. */
  CHECK_INT(head_status("/v1/pause"), ==, 405);
  resp r = call("PUT", "/healthz");
  CHECK_INT(r.status, ==, 405);
  free(r.body);
  stop();
}

/* ---- dlq show pretty-prints the body it was given -------------------------- */

/* Removes whitespace outside JSON strings. */
static void squeeze_json(const char *s, char *out) {
  int in_str = 0;
  for (; *s; s++) {
    if (in_str) {
      *out++ = *s;
      if (*s == '\\' && s[1])
        *out++ = *++s;
      else if (*s == '"')
        in_str = 0;
    } else if (*s == '"') {
      in_str = 1;
      *out++ = *s;
    } else if (*s != ' ' && *s != '\n' && *s != '\t' && *s != '\r') {
      *out++ = *s;
    }
  }
  *out = '\0';
}

/* On a terminal `dlq show` pretty-printed the body by parsing it with
 * json-c and printing the parsed value: integers beyond 64 bits came out
 * clamped (123456789012345678901234 as 18446744073709551615), a repeated
 * key lost its first value. The operator deciding about a DLQ entry saw
 * another body than the one stored and published. The pretty form must
 * differ from the body in whitespace only. */
TEST(show_pretty_keeps_body) {
  static const char body[] =
      "{\"type\":\"message.new\",\"cid\":\"messaging:n\",\"big\":123456789012345678901234,"
      "\"neg\":-99999999999999999999,\"f\":1.10e0,\"dup\":1,\"dup\":2,"
      "\"s\":\"a \\\"q\\\" [x], {y}: \\u00e9 \\/\",\"e\":{},\"a\":[ ],\"n\":[1,[2,{\"k\":null}]]}";
  json_object *e = json_object_new_object();
  json_object_object_add(e, "id", json_object_new_int64(7));
  json_object_object_add(e, "body", json_object_new_string(body));
  char path[4200];
  snprintf(path, sizeof path, "%s/show.txt", tl_tmpdir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  ctl_print_dlq_entry(f, e, 1);
  fclose(f);
  json_object_put(e);
  char *out = tl_read_file(path, NULL);
  CHECK(out != NULL);
  const char *b = strstr(out, "body:\n");
  CHECK(b != NULL);
  b += 6;
  fprintf(stderr, "%s", b);
  CHECK(strchr(b, '\n') != strrchr(b, '\n')); /* pretty: several lines */
  char *got = malloc(strlen(b) + 1), *want = malloc(sizeof body);
  CHECK(got && want);
  squeeze_json(b, got);
  squeeze_json(body, want);
  CHECK_STR(got, want);
  free(got);
  free(want);
  free(out);
}

/* ---- stats --interval must be a number in range ------------------------------ */

/* `--interval nan` passed the range check (every comparison with NaN is
 * false), and --watch then slept for nothing between requests: about
 * 4,500 /v1/stats a second against relayd until stopped, instead of a
 * usage error. */
TEST(watch_interval_nan_refused) {
  open_queue();
  start_admin(NULL);
  const char *bad[] = {"nan", "NaN", "-nan", ""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char admin_url[64], out[4200];
    snprintf(admin_url, sizeof admin_url, "127.0.0.1:%d", port);
    snprintf(out, sizeof out, "%s/watch.out", tl_tmpdir);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      char bin[4200];
      snprintf(bin, sizeof bin, "%s/relayctl", RELAY_BIN_DIR);
      int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int devnull = open("/dev/null", O_RDWR);
      dup2(devnull, 0);
      dup2(fd, 1);
      dup2(devnull, 2);
      execl(bin, "relayctl", "--admin", admin_url, "stats", "--watch", "--json", "--interval",
            bad[i], (char *)NULL);
      _exit(127);
    }
    int st = wait_for(pid, 3000);
    if (st == -1) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      size_t n = 0;
      char *o = tl_read_file(out, &n);
      size_t lines = 0;
      for (size_t k = 0; o && k < n; k++) lines += o[k] == '\n';
      free(o);
      fprintf(stderr, "--interval '%s': still running after 3 s, %zu stats printed\n", bad[i],
              lines);
    }
    CHECK(st != -1);
    CHECK(WIFEXITED(st));
    CHECK_INT(WEXITSTATUS(st), ==, 2);
  }
  stop();
}
