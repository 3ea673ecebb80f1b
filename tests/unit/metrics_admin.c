/* The admin API over real HTTP (http_server.c) on a real queue (rq), and
 * relayctl against it. The drainer is replaced by a scripted fake (the only
 * double here) so that its states, pause/resume and test-sns answers can be
 * driven exactly; the end-to-end run with the real drainer is
 * tests/integration/ops_e2e.mjs. */
#include <curl/curl.h>
#include <stdatomic.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <uv.h>

#include "admin.h"
#include "drain.h"
#include "metrics.h"
#include "rq.h"
#include "testlib.h"

/* ---- The fake drainer ------------------------------------------------------ */

struct drain {
  int unused;
};
static drain fake_drain;
static uv_mutex_t fake_lock;
static drain_status fake;
static int fake_kicks, fake_test_fail;

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
  uv_mutex_lock(&fake_lock);
  *out = fake;
  uv_mutex_unlock(&fake_lock);
}
void drain_pause(drain *d) {
  (void)d;
  uv_mutex_lock(&fake_lock);
  fake.operator_paused = 1;
  fake.state = DRAIN_PAUSED;
  uv_mutex_unlock(&fake_lock);
}
void drain_resume(drain *d) {
  (void)d;
  uv_mutex_lock(&fake_lock);
  fake.operator_paused = 0;
  fake.state = DRAIN_RUNNING;
  uv_mutex_unlock(&fake_lock);
}
void drain_kick(drain *d) {
  (void)d;
  uv_mutex_lock(&fake_lock);
  fake_kicks++;
  uv_mutex_unlock(&fake_lock);
}
int drain_test_sns(drain *d, drain_test_cb cb, void *arg) {
  (void)d;
  sns_result r;
  memset(&r, 0, sizeof r);
  if (fake_test_fail) {
    r.outcome = SNS_CONFIG;
    r.http_status = 403;
    snprintf(r.code, sizeof r.code, "AuthorizationError");
    snprintf(r.message, sizeof r.message, "User is not authorized to perform SNS:Publish");
  } else {
    r.outcome = SNS_OK;
    r.http_status = 200;
    snprintf(r.message_id, sizeof r.message_id, "msg-0001");
  }
  cb(arg, 0, &r);
  return 0;
}

/* ---- Bytes allocated (the binary links with -Wl,--wrap=malloc) -------------
 * Counts malloc() calls from the code linked statically here (rq, admin,
 * http_server), which is where a copy of DLQ bodies would come from. */
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
static atomic_int malloc_counting;
static atomic_size_t malloc_bytes;
void *__wrap_malloc(size_t n) {
  if (atomic_load(&malloc_counting)) atomic_fetch_add(&malloc_bytes, n);
  return __real_malloc(n);
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

static const char body_a[] = "{\"type\":\"message.new\",\"cid\":\"messaging:a\"}";
static const char body_big[] =
    "{\"type\":\"message.new\",\"cid\":\"messaging:big\",\"x\":\"\xc3\xa9\"}";
static const char body_rej[] = "{\"type\":\"reaction.new\",\"cid\":\"messaging:r\"}";
static const uint8_t body_bin[] = {0xff, 0xfe, 0x00, 0x41};
static uint64_t id_big, id_rej1, id_rej2, id_bin;

static unsigned commit_fail_hold_ms; /* admin_options.commit_fail_hold_ms of start() */

static void start(const char *token) {
  char dir[4200], cmd[4300];
  snprintf(dir, sizeof dir, "%s/data", tl_tmpdir);
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  CHECK_INT(system(cmd), ==, 0);
  rq_options o;
  memset(&o, 0, sizeof o);
  o.map_size = 64 << 20;
  CHECK_INT(rq_env_open(&env, dir, &o), ==, 0);

  /* 3 ready, 4 in the DLQ: too_large, 2 rejected, 1 corrupt-looking body. */
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  rq_record r;
  uint64_t s, ready_ids[3];
  for (int i = 0; i < 3; i++) {
    memset(&r, 0, sizeof r);
    r.received_ms = 1700000000000 + i;
    r.body = (const uint8_t *)body_a, r.body_len = strlen(body_a), r.type = "message.new";
    CHECK_INT(rq_txn_append(t, &r, &ready_ids[i]), ==, 0);
  }
  memset(&r, 0, sizeof r);
  r.received_ms = 1700000001000;
  r.body = (const uint8_t *)body_big, r.body_len = strlen(body_big), r.type = "message.new";
  r.cid = "messaging:big";
  CHECK_INT(rq_txn_append_dead(t, &r, "too_large", NULL, "too large", &id_big), ==, 0);
  memset(&r, 0, sizeof r);
  r.received_ms = 1700000002000;
  r.body = (const uint8_t *)body_rej, r.body_len = strlen(body_rej), r.type = "reaction.new";
  CHECK_INT(rq_txn_append(t, &r, &id_rej1), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, &id_rej2), ==, 0);
  memset(&r, 0, sizeof r);
  r.received_ms = 1700000003000;
  r.body = body_bin, r.body_len = sizeof body_bin, r.type = "x.bin";
  CHECK_INT(rq_txn_append_dead(t, &r, "corrupt", NULL, NULL, &id_bin), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_dead(t, id_rej1, 1700000005000, "rejected", "InvalidParameter", "bad"), ==, 0);
  CHECK_INT(rq_txn_dead(t, id_rej2, 1700000005000, "rejected", "InvalidParameter", "bad"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  (void)s;

  uv_mutex_init(&fake_lock);
  memset(&fake, 0, sizeof fake);
  fake.state = DRAIN_BLOCKED;
  snprintf(fake.last_error.code, sizeof fake.last_error.code, "AuthorizationError");
  snprintf(fake.last_error.message, sizeof fake.last_error.message, "not authorized");
  fake.last_error.at_ms = 1700000000000;
  fake.concurrency = 4;
  fake.max_concurrency = 16;
  fake.publish_rate = 12.5;
  fake_kicks = 0;
  fake_test_fail = 0;

  metrics_reset();
  CHECK_INT(uv_loop_init(&loop), ==, 0);
  CHECK_INT(uv_async_init(&loop, &stop_async, on_stop), ==, 0);
  admin_options ao;
  memset(&ao, 0, sizeof ao);
  ao.listen = "127.0.0.1:0";
  ao.token = token;
  ao.env = env;
  ao.drain = &fake_drain;
  ao.commit_fail_hold_ms = commit_fail_hold_ms;
  CHECK_INT(admin_new(&adm, &loop, &ao), ==, 0);
  port = admin_port(adm);
  CHECK(port > 0);
  snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
  closed = 0;
  CHECK_INT(uv_thread_create(&loop_thread, run_loop, NULL), ==, 0);
}

static void stop(void) {
  uv_async_send(&stop_async);
  uv_thread_join(&loop_thread);
  CHECK(closed);
  CHECK_INT(uv_loop_close(&loop), ==, 0); /* no handle leaked */
  rq_env_close(env);
  uv_mutex_destroy(&fake_lock);
}

/* ---- HTTP client --------------------------------------------------------------- */

typedef struct {
  long status;
  char *body;
  size_t len;
  char ctype[128];
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

static resp call(const char *method, const char *path, const char *body, const char *auth) {
  resp r;
  memset(&r, 0, sizeof r);
  CURL *h = curl_easy_init();
  CHECK(h != NULL);
  char url[512];
  snprintf(url, sizeof url, "%s%s", base, path);
  struct curl_slist *hd = NULL;
  if (auth) hd = curl_slist_append(hd, auth);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  if (body)
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
  else if (strcmp(method, "POST") == 0)
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  CHECK_INT(curl_easy_perform(h), ==, CURLE_OK);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  char *ct = NULL;
  curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
  snprintf(r.ctype, sizeof r.ctype, "%s", ct ? ct : "");
  curl_easy_cleanup(h);
  curl_slist_free_all(hd);
  if (!r.body) r.body = calloc(1, 1);
  return r;
}

static json_object *call_json(const char *method, const char *path, const char *body,
                              const char *auth, long want_status) {
  resp r = call(method, path, body, auth);
  if (r.status != want_status) fprintf(stderr, "%s %s -> %ld %s\n", method, path, r.status, r.body);
  CHECK_INT(r.status, ==, want_status);
  CHECK(strncmp(r.ctype, "application/json", 16) == 0);
  json_object *o = json_tokener_parse(r.body);
  CHECK(o != NULL);
  free(r.body);
  return o;
}

static int64_t geti(json_object *o, const char *k) {
  json_object *v;
  if (!json_object_object_get_ex(o, k, &v)) tl_fail(__FILE__, __LINE__, "no field %s", k);
  return json_object_get_int64(v);
}
static const char *gets_(json_object *o, const char *k) {
  json_object *v;
  if (!json_object_object_get_ex(o, k, &v) || !v) return NULL;
  return json_object_get_string(v);
}

static char out_buf[1 << 20];
static int ctl(const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && env -u RELAY_ADMIN_TOKEN RELAY_ADMIN_LISTEN=127.0.0.1:%d '%s/relayctl' %s "
           ">out.txt 2>err.txt </dev/null",
           tl_tmpdir, port, RELAY_BIN_DIR, args);
  int rc = system(cmd);
  char path[4200];
  snprintf(path, sizeof path, "%s/out.txt", tl_tmpdir);
  char *o = tl_read_file(path, NULL);
  snprintf(path, sizeof path, "%s/err.txt", tl_tmpdir);
  char *e = tl_read_file(path, NULL);
  snprintf(out_buf, sizeof out_buf, "%s\n--stderr--\n%s", o ? o : "", e ? e : "");
  free(o);
  free(e);
  CHECK(WIFEXITED(rc));
  return WEXITSTATUS(rc);
}

/* ---- Cases ----------------------------------------------------------------------- */

TEST(health_and_errors) {
  start(NULL);
  json_object *o = call_json("GET", "/healthz", NULL, NULL, 200);
  json_object_put(o);
  o = call_json("GET", "/readyz", NULL, NULL, 200);
  CHECK(json_object_get_boolean(json_object_object_get(o, "ready")));
  json_object_put(o);
  /* While ingest's commits fail, readiness says so; it recovers with them. */
  admin_set_commit_failing(adm, 1);
  o = call_json("GET", "/readyz", NULL, NULL, 503);
  CHECK(!json_object_get_boolean(json_object_object_get(o, "ready")));
  CHECK(gets_(o, "error") && strstr(gets_(o, "error"), "commits are failing"));
  json_object_put(o);
  admin_set_commit_failing(adm, 0);
  o = call_json("GET", "/readyz", NULL, NULL, 200);
  json_object_put(o);
  o = call_json("GET", "/nope", NULL, NULL, 404);
  CHECK(gets_(o, "error") != NULL);
  json_object_put(o);
  o = call_json("POST", "/v1/stats", "{}", NULL, 405);
  json_object_put(o);
  o = call_json("GET", "/v1/pause", NULL, NULL, 405);
  json_object_put(o);
  o = call_json("POST", "/v1/dlq/replay", "not json", NULL, 400);
  json_object_put(o);
  o = call_json("POST", "/v1/dlq/replay", "{\"all\":true,\"ids\":[1]}", NULL, 400);
  json_object_put(o);
  o = call_json("POST", "/v1/dlq/purge", "{}", NULL, 400);
  json_object_put(o);
  o = call_json("GET", "/v1/dlq?limit=0", NULL, NULL, 400);
  json_object_put(o);
  o = call_json("GET", "/v1/dlq/abc", NULL, NULL, 404);
  json_object_put(o);
  o = call_json("GET", "/v1/dlq/424242", NULL, NULL, 404);
  json_object_put(o);
  stop();
}

/* A load balancer sends no webhooks to an unready replica, so readiness
 * cannot wait for a stored event to end "commits are failing": it ends by
 * itself a while after the last failed commit (then only the watermark
 * counts), and a new failure starts it again. */
TEST(readyz_commit_failure_expires) {
  commit_fail_hold_ms = 400;
  start(NULL);
  admin_set_commit_failing(adm, 1);
  resp r = call("GET", "/readyz", NULL, NULL);
  CHECK_INT(r.status, ==, 503);
  free(r.body);
  r = call("GET", "/metrics", NULL, NULL);
  CHECK(strstr(r.body, "\nrelay_ready 0\n") != NULL);
  free(r.body);
  long got = 0;
  for (int i = 0; i < 40 && got != 200; i++) {
    uv_sleep(50);
    r = call("GET", "/readyz", NULL, NULL);
    got = r.status;
    free(r.body);
  }
  CHECK_INT(got, ==, 200);
  r = call("GET", "/metrics", NULL, NULL);
  CHECK(strstr(r.body, "\nrelay_ready 1\n") != NULL);
  free(r.body);
  admin_set_commit_failing(adm, 1);
  r = call("GET", "/readyz", NULL, NULL);
  CHECK_INT(r.status, ==, 503);
  free(r.body);
  stop();
  commit_fail_hold_ms = 0;
}

/* From SIGTERM on the webhook listener is closed while relayd finishes:
 * not ready, though still alive and answering. */
TEST(readyz_503_once_stopping) {
  start(NULL);
  admin_set_stopping(adm);
  json_object *o = call_json("GET", "/readyz", NULL, NULL, 503);
  CHECK(gets_(o, "error") && strcmp(gets_(o, "error"), "shutting down") == 0);
  json_object_put(o);
  o = call_json("GET", "/healthz", NULL, NULL, 200);
  json_object_put(o);
  resp r = call("GET", "/metrics", NULL, NULL);
  CHECK(strstr(r.body, "\nrelay_ready 0\n") != NULL);
  free(r.body);
  o = call_json("GET", "/v1/stats", NULL, NULL, 200);
  json_object_put(o);
  stop();
}

TEST(token_enforced) {
  start("s3cret-token");
  json_object *o = call_json("GET", "/healthz", NULL, NULL, 200); /* probes stay open */
  json_object_put(o);
  o = call_json("GET", "/v1/stats", NULL, NULL, 401);
  CHECK(strstr(gets_(o, "error"), "token") != NULL);
  json_object_put(o);
  o = call_json("GET", "/v1/stats", NULL, "Authorization: Bearer wrong", 401);
  json_object_put(o);
  o = call_json("GET", "/v1/stats", NULL, "Authorization: Bearer s3cret-token-longer", 401);
  json_object_put(o);
  o = call_json("GET", "/v1/stats", NULL, "Authorization: Basic s3cret-token", 401);
  json_object_put(o);
  o = call_json("POST", "/v1/pause", NULL, "Authorization: Bearer s3cre", 401);
  json_object_put(o);
  CHECK_INT(fake.operator_paused, ==, 0);
  resp r = call("GET", "/metrics", NULL, NULL);
  CHECK_INT(r.status, ==, 401);
  free(r.body);
  o = call_json("GET", "/v1/stats", NULL, "Authorization: Bearer s3cret-token", 200);
  json_object_put(o);

  CHECK_INT(ctl("stats"), ==, 1);
  CHECK(strstr(out_buf, "needs a token") != NULL);
  CHECK_INT(ctl("--token nope stats"), ==, 1);
  CHECK(strstr(out_buf, "wrong token") != NULL);
  CHECK_INT(ctl("--token s3cret-token stats --json"), ==, 0);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "dlq list --token=s3cret-token");
  CHECK_INT(ctl(cmd), ==, 0);
  stop();
}

TEST(stats_match_queue) {
  start(NULL);
  json_object *o = call_json("GET", "/v1/stats", NULL, NULL, 200);
  CHECK_INT(geti(o, "ready"), ==, 3);
  CHECK_INT(geti(o, "ready_bytes"), ==, 3 * strlen(body_a));
  CHECK_INT(geti(o, "inflight"), ==, 0);
  CHECK_INT(geti(o, "dlq"), ==, 4);
  CHECK_INT(geti(o, "dlq_bytes"), ==, strlen(body_big) + 2 * strlen(body_rej) + sizeof body_bin);
  json_object *by = json_object_object_get(o, "dlq_by_reason");
  CHECK_INT(geti(by, "rejected"), ==, 2);
  CHECK_INT(geti(by, "too_large"), ==, 1);
  CHECK_INT(geti(by, "corrupt"), ==, 1);
  CHECK_INT(geti(o, "received_total"), ==, 7);
  CHECK_INT(geti(o, "published_total"), ==, 0);
  CHECK_INT(geti(o, "dead_lettered_total"), ==, 4);
  CHECK_STR(gets_(o, "drainer"), "blocked");
  CHECK_STR(gets_(o, "last_error"), "AuthorizationError: not authorized");
  CHECK(json_object_get_double(json_object_object_get(o, "publish_rate")) == 12.5);
  CHECK_INT(geti(o, "concurrency"), ==, 4);
  CHECK(geti(o, "map_size") == 64 << 20);
  CHECK(json_object_get_double(json_object_object_get(o, "oldest_ready_age_s")) > 1e6);
  json_object_put(o);

  /* relayctl's human summary carries the same numbers. */
  CHECK_INT(ctl("stats"), ==, 0);
  CHECK(strstr(out_buf, "Drainer       blocked  (concurrency 4/16, 0 requests in flight)") != NULL);
  CHECK(strstr(out_buf, "Last error    AuthorizationError: not authorized (") != NULL);
  CHECK(strstr(out_buf, "Ready         3 events, 126 B, oldest ") != NULL);
  CHECK(strstr(out_buf, "DLQ           4 events") != NULL);
  CHECK(strstr(out_buf, "rejected 2") != NULL);
  CHECK(strstr(out_buf, "12.5/s") != NULL);
  CHECK_INT(ctl("stats --json"), ==, 0);
  CHECK(strstr(out_buf, "\"ready\":3,") != NULL);
  stop();
}

TEST(metrics_endpoint_promtool) {
  start(NULL);
  metrics_event_received();
  resp r = call("GET", "/metrics", NULL, NULL);
  CHECK_INT(r.status, ==, 200);
  CHECK(strncmp(r.ctype, "text/plain; version=0.0.4", 25) == 0);
  CHECK(strstr(r.body, "\nrelay_queue_depth 3\n") != NULL);
  CHECK(strstr(r.body, "\nrelay_dlq_depth 4\n") != NULL);
  CHECK(strstr(r.body, "\nrelay_drainer_state{state=\"blocked\"} 1\n") != NULL);
  CHECK(strstr(r.body, "\nrelay_drainer_state{state=\"running\"} 0\n") != NULL);
  CHECK(strstr(r.body, "\nrelay_drainer_concurrency 4\n") != NULL);
  CHECK(strstr(r.body, "\nrelay_ready 1\n") != NULL);
  char path[4200], cmd[8600];
  snprintf(path, sizeof path, "%s/m.txt", tl_tmpdir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fwrite(r.body, 1, r.len, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "promtool check metrics < '%s'", path);
  CHECK_INT(system(cmd), ==, 0);
  free(r.body);
  stop();
}

TEST(dlq_list_show_filters) {
  start(NULL);
  json_object *o = call_json("GET", "/v1/dlq", NULL, NULL, 200);
  json_object *e = json_object_object_get(o, "entries");
  CHECK_INT(json_object_array_length(e), ==, 4);
  CHECK(json_object_object_get(o, "next_after") == NULL);
  json_object_put(o);
  o = call_json("GET", "/v1/dlq?reason=rejected", NULL, NULL, 200);
  e = json_object_object_get(o, "entries");
  CHECK_INT(json_object_array_length(e), ==, 2);
  CHECK_INT(geti(json_object_array_get_idx(e, 0), "id"), ==, id_rej1);
  CHECK_STR(gets_(json_object_array_get_idx(e, 0), "code"), "InvalidParameter");
  CHECK_INT(geti(json_object_array_get_idx(e, 0), "attempts"), ==, 1);
  json_object_put(o);
  o = call_json("GET", "/v1/dlq?type=message.new", NULL, NULL, 200);
  CHECK_INT(json_object_array_length(json_object_object_get(o, "entries")), ==, 1);
  json_object_put(o);
  o = call_json("GET", "/v1/dlq?type=message%2Enew&reason=too_large", NULL, NULL, 200);
  CHECK_INT(json_object_array_length(json_object_object_get(o, "entries")), ==, 1);
  json_object_put(o);
  char path[128];
  snprintf(path, sizeof path, "/v1/dlq?limit=2&after=%llu", (unsigned long long)id_big);
  o = call_json("GET", path, NULL, NULL, 200);
  e = json_object_object_get(o, "entries");
  CHECK_INT(json_object_array_length(e), ==, 2);
  CHECK_INT(geti(json_object_array_get_idx(e, 0), "id"), ==, id_rej1);
  CHECK_INT(geti(o, "next_after"), ==, id_rej2);
  json_object_put(o);

  snprintf(path, sizeof path, "/v1/dlq/%llu", (unsigned long long)id_big);
  o = call_json("GET", path, NULL, NULL, 200);
  CHECK_STR(gets_(o, "body"), body_big); /* UTF-8 kept exactly */
  CHECK_STR(gets_(o, "reason"), "too_large");
  json_object_put(o);
  snprintf(path, sizeof path, "/v1/dlq/%llu", (unsigned long long)id_bin);
  o = call_json("GET", path, NULL, NULL, 200);
  CHECK(json_object_object_get(o, "body") == NULL);
  CHECK_STR(gets_(o, "body_base64"), "//4AQQ==");
  json_object_put(o);

  CHECK_INT(ctl("dlq list --reason rejected"), ==, 0);
  CHECK(strstr(out_buf, "InvalidParameter: bad") != NULL);
  CHECK(strstr(out_buf, "too_large") == NULL);
  CHECK_INT(ctl("dlq list --limit 1"), ==, 0);
  CHECK(strstr(out_buf, "more entries") != NULL);
  snprintf(path, sizeof path, "dlq show %llu", (unsigned long long)id_big);
  CHECK_INT(ctl(path), ==, 0);
  CHECK(strstr(out_buf, body_big) != NULL);
  CHECK_INT(ctl("dlq show 999999"), ==, 1);
  CHECK(strstr(out_buf, "no DLQ entry with id 999999") != NULL);
  stop();
}

TEST(replay_and_purge) {
  start(NULL);
  char body[256];
  snprintf(body, sizeof body, "{\"ids\":[%llu, 999999]}", (unsigned long long)id_big);
  json_object *o = call_json("POST", "/v1/dlq/replay", body, NULL, 200);
  CHECK_INT(geti(o, "replayed"), ==, 1);
  CHECK_INT(geti(o, "missing"), ==, 1);
  json_object_put(o);
  CHECK_INT(fake_kicks, ==, 1); /* the drainer is woken for the requeued event */
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 4);
  CHECK_INT(st.dlq, ==, 3);

  /* Filters with "all". */
  o = call_json("POST", "/v1/dlq/purge", "{\"all\":true,\"reason\":\"corrupt\"}", NULL, 200);
  CHECK_INT(geti(o, "purged"), ==, 1);
  json_object_put(o);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 2);
  CHECK_INT(st.ready, ==, 4);

  /* The stats cache notices the change. */
  o = call_json("GET", "/v1/stats", NULL, NULL, 200);
  json_object *by = json_object_object_get(o, "dlq_by_reason");
  CHECK(json_object_object_get(by, "corrupt") == NULL);
  CHECK(json_object_object_get(by, "too_large") == NULL);
  CHECK_INT(geti(by, "rejected"), ==, 2);
  json_object_put(o);

  /* relayctl: unknown ids fail clearly; --all replays what matches. */
  CHECK_INT(ctl("dlq replay 999999"), ==, 1);
  CHECK(strstr(out_buf, "unknown id") != NULL);
  CHECK_INT(ctl("dlq replay --all --reason rejected"), ==, 0);
  CHECK(strstr(out_buf, "replayed 2 of 2 DLQ entries") != NULL);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 0);
  CHECK_INT(st.ready, ==, 6);
  CHECK_INT(ctl("dlq replay --all"), ==, 0);
  CHECK(strstr(out_buf, "nothing to replay") != NULL);
  stop();
}

static atomic_int page_commits;
static int count_commit(void *arg) {
  (void)arg;
  atomic_fetch_add(&page_commits, 1);
  return 0;
}

/* {"all":true} replays or purges in pages of their own transactions (one
 * transaction over a large DLQ held the writer lock for seconds), with the
 * filters and "limit" applied across pages. */
TEST(all_in_pages) {
  start(NULL);
  rq_stats st0, st;
  CHECK_INT(rq_stat(env, &st0), ==, 0);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < 4500; i++) {
    rq_record r = {.received_ms = 1700000000000LL,
                   .body = (const uint8_t *)body_rej,
                   .body_len = sizeof body_rej - 1,
                   .type = "page.t"};
    CHECK_INT(rq_txn_append_dead(t, &r, i % 3 == 2 ? "expired" : "rejected", NULL, NULL, NULL), ==,
              0);
  }
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_set_commit_hook(env, count_commit, NULL);

  json_object *o =
      call_json("POST", "/v1/dlq/replay",
                "{\"all\":true,\"type\":\"page.t\",\"reason\":\"expired\"}", NULL, 200);
  CHECK_INT(geti(o, "replayed"), ==, 1500);
  json_object_put(o);
  CHECK_INT(atomic_load(&page_commits), ==, 1); /* one page of at most 2000 */
  o = call_json("POST", "/v1/dlq/purge", "{\"all\":true,\"type\":\"page.t\",\"limit\":2500}", NULL,
                200);
  CHECK_INT(geti(o, "purged"), ==, 2500);
  json_object_put(o);
  CHECK_INT(atomic_load(&page_commits), ==, 3); /* 2000 + 500 */
  o = call_json("POST", "/v1/dlq/purge", "{\"all\":true,\"type\":\"page.t\"}", NULL, 200);
  CHECK_INT(geti(o, "purged"), ==, 500);
  json_object_put(o);
  rq_set_commit_hook(env, NULL, NULL);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, st0.dlq);
  CHECK_INT(st.ready, ==, st0.ready + 1500);
  stop();
}

TEST(purge_by_ids_with_relayctl) {
  start(NULL);
  char args[128];
  /* An id given twice is one entry, not a "not found" failure. */
  snprintf(args, sizeof args, "dlq purge %llu %llu %llu", (unsigned long long)id_rej1,
           (unsigned long long)id_rej2, (unsigned long long)id_rej1);
  CHECK_INT(ctl(args), ==, 0);
  CHECK(strstr(out_buf, "purged 2 of 2") != NULL);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 2);
  CHECK_INT(st.ready, ==, 3); /* purge never requeues */
  CHECK_INT(ctl("dlq purge --all --json"), ==, 0);
  CHECK(strstr(out_buf, "{\"purged\":2,\"missing\":0}") != NULL);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 0);
  stop();
}

TEST(drainer_controls) {
  start(NULL);
  CHECK_INT(ctl("pause"), ==, 0);
  CHECK(strstr(out_buf, "drainer: paused") != NULL);
  CHECK_INT(fake.operator_paused, ==, 1);
  json_object *o = call_json("GET", "/v1/stats", NULL, NULL, 200);
  CHECK_STR(gets_(o, "drainer"), "paused");
  json_object_put(o);
  CHECK_INT(ctl("resume"), ==, 0);
  CHECK(strstr(out_buf, "drainer: running") != NULL);
  CHECK_INT(fake.operator_paused, ==, 0);

  CHECK_INT(ctl("test-sns"), ==, 0);
  CHECK(strstr(out_buf, "msg-0001") != NULL);
  fake_test_fail = 1;
  o = call_json("POST", "/v1/test-sns", NULL, NULL, 502);
  CHECK_STR(gets_(o, "code"), "AuthorizationError");
  json_object_put(o);
  CHECK_INT(ctl("test-sns"), ==, 1);
  CHECK(strstr(out_buf, "AuthorizationError: User is not authorized") != NULL);
  stop();
}

/* "reason"/"type" given with "ids" restrict the ids: a purge by ids with a
 * reason filter must never delete entries of another reason. relayctl
 * passes its --reason/--type along with ids (SPEC: `dlq replay (--all |
 * ID...) [--reason R] [--type T]`). */
TEST(ids_with_filters) {
  start(NULL);
  char body[256];
  snprintf(body, sizeof body, "{\"ids\":[%llu,%llu],\"reason\":\"rejected\"}",
           (unsigned long long)id_big, (unsigned long long)id_rej1);
  json_object *o = call_json("POST", "/v1/dlq/purge", body, NULL, 200);
  CHECK_INT(geti(o, "purged"), ==, 1);
  CHECK_INT(geti(o, "missing"), ==, 0);
  json_object_put(o);
  rq_record r;
  CHECK_INT(rq_dlq_get(env, id_big, &r), ==, 0); /* too_large: kept */
  rq_record_free(&r);
  CHECK_INT(rq_dlq_get(env, id_rej1, &r), ==, RQ_NOTFOUND);

  snprintf(body, sizeof body, "{\"ids\":[%llu,%llu],\"type\":\"x.bin\"}",
           (unsigned long long)id_big, (unsigned long long)id_bin);
  o = call_json("POST", "/v1/dlq/replay", body, NULL, 200);
  CHECK_INT(geti(o, "replayed"), ==, 1);
  json_object_put(o);
  CHECK_INT(rq_dlq_get(env, id_big, &r), ==, 0);
  rq_record_free(&r);
  CHECK_INT(rq_dlq_get(env, id_bin, &r), ==, RQ_NOTFOUND);

  /* relayctl: ids plus filters; an id that does not match is left alone. */
  char args[160];
  snprintf(args, sizeof args, "dlq replay %llu %llu --reason rejected", (unsigned long long)id_big,
           (unsigned long long)id_rej2);
  CHECK_INT(ctl(args), ==, 0);
  CHECK(strstr(out_buf, "replayed 1 of 2") != NULL);
  CHECK(strstr(out_buf, "1 did not match") != NULL);
  CHECK_INT(rq_dlq_get(env, id_big, &r), ==, 0);
  rq_record_free(&r);
  CHECK_INT(rq_dlq_get(env, id_rej2, &r), ==, RQ_NOTFOUND);
  snprintf(args, sizeof args, "dlq purge %llu --type reaction.new", (unsigned long long)id_big);
  CHECK_INT(ctl(args), ==, 0);
  CHECK_INT(rq_dlq_get(env, id_big, &r), ==, 0);
  rq_record_free(&r);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 1);
  CHECK_INT(st.ready, ==, 5);
  stop();
}

/* An empty filter is a mistake (an unset shell variable), never "any": a
 * purge "--all --reason ''" must not empty the whole DLQ. */
TEST(empty_filter_refused) {
  start(NULL);
  CHECK_INT(ctl("dlq purge --all --reason '' --yes"), ==, 2);
  CHECK_INT(ctl("dlq replay --all --type ''"), ==, 2);
  CHECK_INT(ctl("dlq list --reason ''"), ==, 2);
  json_object *o = call_json("POST", "/v1/dlq/purge", "{\"all\":true,\"reason\":\"\"}", NULL, 400);
  json_object_put(o);
  o = call_json("POST", "/v1/dlq/replay", "{\"all\":true,\"type\":\"\"}", NULL, 400);
  json_object_put(o);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 4);
  CHECK_INT(st.ready, ==, 3);
  stop();
}

/* A misspelt reason matches nothing: relayctl says so (exit 2) instead of
 * an empty listing or a replay that silently did nothing. */
TEST(unknown_reason_refused) {
  start(NULL);
  const char *bad[] = {"dlq list --reason reject", "dlq replay --all --reason Rejected --yes",
                       "dlq purge --all --reason too-large --yes"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = ctl(bad[i]);
    if (rc != 2 || !strstr(out_buf, "unknown --reason")) fprintf(stderr, "%s:\n%s\n", bad[i], out_buf);
    CHECK_INT(rc, ==, 2);
    CHECK(strstr(out_buf, "unknown --reason") != NULL);
  }
  int rc = ctl("dlq list --reason corrupt");
  if (rc != 0) fprintf(stderr, "dlq list --reason corrupt:\n%s\n", out_buf);
  CHECK_INT(rc, ==, 0);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 4);
  stop();
}

/* A page that ends exactly at the last entry says so: next_after is null
 * and relayctl does not announce more entries that do not exist. */
TEST(last_page_has_no_next) {
  start(NULL);
  json_object *o = call_json("GET", "/v1/dlq?limit=4", NULL, NULL, 200);
  CHECK_INT(json_object_array_length(json_object_object_get(o, "entries")), ==, 4);
  CHECK(json_object_object_get(o, "next_after") == NULL);
  json_object_put(o);
  o = call_json("GET", "/v1/dlq?limit=3", NULL, NULL, 200);
  CHECK_INT(json_object_array_length(json_object_object_get(o, "entries")), ==, 3);
  CHECK_INT(geti(o, "next_after"), ==, id_rej2);
  json_object_put(o);
  o = call_json("GET", "/v1/dlq?limit=2&reason=rejected", NULL, NULL, 200);
  CHECK(json_object_object_get(o, "next_after") == NULL);
  json_object_put(o);
  CHECK_INT(ctl("dlq list --limit 4"), ==, 0);
  CHECK(strstr(out_buf, "more entries") == NULL);
  CHECK_INT(ctl("dlq list --limit 3"), ==, 0);
  CHECK(strstr(out_buf, "more entries") != NULL);
  CHECK_INT(ctl("dlq list --limit 2 --reason rejected --json"), ==, 0);
  CHECK(strstr(out_buf, "\"next_after\":null") != NULL);
  stop();
}

/* Listing the DLQ and counting it by reason (GET /v1/dlq, /v1/stats) need
 * no bodies: a DLQ of large too_large events (up to RELAY_MAX_BODY_BYTES
 * each) must not be copied into relayd's memory for a page of metadata
 * (1,000 entries of 4 MiB was 4 GiB: relayd killed by the OOM killer). */
TEST(dlq_listing_copies_no_bodies) {
  start(NULL);
  enum { N = 16, BIG = 1 << 20 };
  char *big = malloc(BIG);
  CHECK(big != NULL);
  memset(big, 'x', BIG);
  memcpy(big, "{\"type\":\"message.new\",\"x\":\"", 28);
  memcpy(big + BIG - 2, "\"}", 2);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < N; i++) {
    rq_record r;
    memset(&r, 0, sizeof r);
    r.received_ms = 1700000009000 + i;
    r.body = (const uint8_t *)big, r.body_len = BIG, r.type = "message.new";
    CHECK_INT(rq_txn_append_dead(t, &r, "too_large", NULL, "over the limit", NULL), ==, 0);
  }
  CHECK_INT(rq_txn_commit(t), ==, 0);
  free(big);

  atomic_store(&malloc_bytes, 0);
  atomic_store(&malloc_counting, 1);
  json_object *o = call_json("GET", "/v1/dlq?limit=1000", NULL, NULL, 200);
  atomic_store(&malloc_counting, 0);
  json_object *e = json_object_object_get(o, "entries");
  CHECK_INT(json_object_array_length(e), ==, N + 4);
  CHECK_INT(geti(json_object_array_get_idx(e, N + 3), "size"), ==, BIG); /* sizes still right */
  json_object_put(o);
  size_t list_bytes = atomic_load(&malloc_bytes);

  atomic_store(&malloc_bytes, 0);
  atomic_store(&malloc_counting, 1);
  o = call_json("GET", "/v1/stats", NULL, NULL, 200);
  atomic_store(&malloc_counting, 0);
  CHECK_INT(geti(json_object_object_get(o, "dlq_by_reason"), "too_large"), ==, N + 1);
  json_object_put(o);
  size_t stats_bytes = atomic_load(&malloc_bytes);
  fprintf(stderr, "allocated: list %zu, stats %zu bytes\n", list_bytes, stats_bytes);
  CHECK_INT(list_bytes, <, BIG);
  CHECK_INT(stats_bytes, <, BIG);

  /* relayctl's listing shows the sizes as well. */
  CHECK_INT(ctl("dlq list --reason too_large --limit 2 --json"), ==, 0);
  CHECK(strstr(out_buf, "\"size\":1048576") != NULL);
  stop();
}
