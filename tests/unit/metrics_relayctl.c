/* relayctl without a running relayd: --data-dir (read-only LMDB, also while
 * a writer has the environment open), usage errors and exit codes, and a
 * clear error when the admin API is unreachable. The queue is filled with
 * the real rq library; relayctl is the built binary. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "admin.h"
#include "rq.h"
#include "testlib.h"

static char out_buf[1 << 20];

/* Runs relayctl with args (a shell fragment); stdout in out_buf, stderr
 * appended after a "\n--stderr--\n" marker. Returns the exit code. */
static int ctl(const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && env -u RELAY_ADMIN_LISTEN -u RELAY_ADMIN_TOKEN '%s/relayctl' %s "
           ">out.txt 2>err.txt",
           tl_tmpdir, RELAY_BIN_DIR, args);
  int rc = system(cmd);
  char path[4200];
  snprintf(path, sizeof path, "%s/out.txt", tl_tmpdir);
  size_t n1 = 0, n2 = 0;
  char *o = tl_read_file(path, &n1);
  snprintf(path, sizeof path, "%s/err.txt", tl_tmpdir);
  char *e = tl_read_file(path, &n2);
  snprintf(out_buf, sizeof out_buf, "%s\n--stderr--\n%s", o ? o : "", e ? e : "");
  free(o);
  free(e);
  CHECK(WIFEXITED(rc));
  return WEXITSTATUS(rc);
}

static json_object *ctl_json(const char *args) {
  int rc = ctl(args);
  if (rc != 0) fprintf(stderr, "relayctl %s -> %d\n%s\n", args, rc, out_buf);
  CHECK_INT(rc, ==, 0);
  char *end = strstr(out_buf, "\n--stderr--\n");
  CHECK(end != NULL);
  *end = '\0';
  json_object *o = json_tokener_parse(out_buf);
  CHECK(o != NULL);
  return o;
}

static int64_t geti(json_object *o, const char *k) {
  json_object *v;
  if (!json_object_object_get_ex(o, k, &v)) tl_fail(__FILE__, __LINE__, "no field %s", k);
  return json_object_get_int64(v);
}

static const char body_a[] = "{\"type\":\"message.new\",\"cid\":\"messaging:general\",\"n\":1}";
static const char body_b[] = "{\"type\":\"user.updated\",\"user\":{\"id\":\"u1\"}}";
static const char body_c[] = "{\"type\":\"message.new\",\"cid\":\"messaging:big\",\"big\":true}";
static const char body_d[] = "{\"type\":\"reaction.new\",\"cid\":\"messaging:x\"}";

/* ready: a, b; DLQ: c (too_large), d (rejected with an AWS code). One more
 * event was published (acked). Returns the open writer environment: relayd
 * would hold it while relayctl reads. */
static rq_env *fill(uint64_t *id_c, uint64_t *id_d) {
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/data", tl_tmpdir);
  char cmd[4300];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  CHECK_INT(system(cmd), ==, 0);
  rq_env *env;
  rq_options o;
  memset(&o, 0, sizeof o);
  o.map_size = 64 << 20;
  CHECK_INT(rq_env_open(&env, dir, &o), ==, 0);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  rq_record r;
  uint64_t seq, acked;
  memset(&r, 0, sizeof r);
  r.received_ms = 1700000000000;
  r.body = (const uint8_t *)body_a, r.body_len = strlen(body_a), r.type = "message.new";
  r.cid = "messaging:general";
  CHECK_INT(rq_txn_append(t, &r, &acked), ==, 0);
  r.body = (const uint8_t *)body_a, r.body_len = strlen(body_a);
  r.webhook_id = "wh-a";
  CHECK_INT(rq_txn_append(t, &r, &seq), ==, 0);
  memset(&r, 0, sizeof r);
  r.received_ms = 1700000001000;
  r.body = (const uint8_t *)body_b, r.body_len = strlen(body_b), r.type = "user.updated";
  r.user_id = "u1";
  CHECK_INT(rq_txn_append(t, &r, &seq), ==, 0);
  memset(&r, 0, sizeof r);
  r.received_ms = 1700000002000;
  r.body = (const uint8_t *)body_c, r.body_len = strlen(body_c), r.type = "message.new";
  r.cid = "messaging:big";
  CHECK_INT(rq_txn_append_dead(t, &r, "too_large", NULL, "over RELAY_MAX_MESSAGE_BYTES", id_c), ==,
            0);
  memset(&r, 0, sizeof r);
  r.received_ms = 1700000003000;
  r.body = (const uint8_t *)body_d, r.body_len = strlen(body_d), r.type = "reaction.new";
  r.cid = "messaging:x";
  CHECK_INT(rq_txn_append(t, &r, id_d), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, acked), ==, 0);
  CHECK_INT(rq_txn_dead(t, *id_d, 1700000004000, "rejected", "InvalidParameter",
                        "Invalid parameter: Message too long"),
            ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  return env;
}

TEST(offline_stats_while_writer_open) {
  uint64_t id_c, id_d;
  rq_env *env = fill(&id_c, &id_d);
  json_object *st = ctl_json("--data-dir data stats --json");
  CHECK_INT(geti(st, "ready"), ==, 2);
  CHECK_INT(geti(st, "ready_bytes"), ==, strlen(body_a) + strlen(body_b));
  CHECK_INT(geti(st, "dlq"), ==, 2);
  CHECK_INT(geti(st, "dlq_bytes"), ==, strlen(body_c) + strlen(body_d));
  CHECK_INT(geti(st, "published_total"), ==, 1);
  CHECK_INT(geti(st, "dead_lettered_total"), >=, 1);
  json_object *by = json_object_object_get(st, "dlq_by_reason");
  CHECK(by != NULL);
  CHECK_INT(geti(by, "too_large"), ==, 1);
  CHECK_INT(geti(by, "rejected"), ==, 1);
  CHECK(json_object_object_get(st, "oldest_ready_age_s") != NULL);
  CHECK(json_object_get_double(json_object_object_get(st, "oldest_ready_age_s")) > 1000);
  CHECK_STR(json_object_get_string(json_object_object_get(st, "source")), "data-dir");
  json_object_put(st);

  /* Human form: aligned labels, units, reasons. */
  CHECK_INT(ctl("--data-dir data stats"), ==, 0);
  CHECK(strstr(out_buf, "Ready         2 events") != NULL);
  CHECK(strstr(out_buf, "DLQ           2 events") != NULL);
  CHECK(strstr(out_buf, "too_large 1") != NULL);
  CHECK(strstr(out_buf, "rejected 1") != NULL);
  CHECK(strstr(out_buf, "oldest ") != NULL);
  rq_env_close(env);
}

TEST(offline_dlq_list_and_show) {
  uint64_t id_c, id_d;
  rq_env *env = fill(&id_c, &id_d);
  rq_env_close(env); /* post-mortem on a stopped relayd's directory */
  json_object *l = ctl_json("--data-dir data dlq list --json");
  json_object *entries = json_object_object_get(l, "entries");
  CHECK_INT(json_object_array_length(entries), ==, 2);
  json_object *e0 = json_object_array_get_idx(entries, 0),
              *e1 = json_object_array_get_idx(entries, 1);
  CHECK_INT(geti(e0, "id"), ==, id_c);
  CHECK_STR(json_object_get_string(json_object_object_get(e0, "reason")), "too_large");
  CHECK_INT(geti(e0, "size"), ==, strlen(body_c));
  CHECK(json_object_object_get(e0, "body") == NULL); /* lists carry no bodies */
  CHECK_INT(geti(e1, "id"), ==, id_d);
  CHECK_STR(json_object_get_string(json_object_object_get(e1, "reason")), "rejected");
  CHECK_STR(json_object_get_string(json_object_object_get(e1, "code")), "InvalidParameter");
  CHECK_STR(json_object_get_string(json_object_object_get(e1, "type")), "reaction.new");
  json_object_put(l);

  l = ctl_json("--data-dir data dlq list --json --reason rejected");
  CHECK_INT(json_object_array_length(json_object_object_get(l, "entries")), ==, 1);
  json_object_put(l);
  l = ctl_json("--data-dir data dlq list --json --type message.new");
  CHECK_INT(json_object_array_length(json_object_object_get(l, "entries")), ==, 1);
  json_object_put(l);
  l = ctl_json("--data-dir data dlq list --json --limit 1");
  CHECK_INT(json_object_array_length(json_object_object_get(l, "entries")), ==, 1);
  CHECK_INT(geti(l, "next_after"), ==, id_c);
  json_object_put(l);

  CHECK_INT(ctl("--data-dir data dlq list"), ==, 0);
  CHECK(strstr(out_buf, "REASON") != NULL);
  CHECK(strstr(out_buf, "InvalidParameter: Invalid parameter: Message too long") != NULL);
  CHECK(strstr(out_buf, "messaging:big") != NULL);
  CHECK(strstr(out_buf, "2023-11-14 22:13:22") != NULL); /* received time, UTC */

  char args[128];
  snprintf(args, sizeof args, "--data-dir data dlq show %llu --json", (unsigned long long)id_d);
  json_object *e = ctl_json(args);
  CHECK_STR(json_object_get_string(json_object_object_get(e, "body")), body_d);
  CHECK_STR(json_object_get_string(json_object_object_get(e, "message")),
            "Invalid parameter: Message too long");
  json_object_put(e);
  snprintf(args, sizeof args, "--data-dir data dlq show %llu", (unsigned long long)id_c);
  CHECK_INT(ctl(args), ==, 0);
  CHECK(strstr(out_buf, "reason        too_large") != NULL);
  CHECK(strstr(out_buf, body_c) != NULL); /* not a terminal: raw body */

  CHECK_INT(ctl("--data-dir data dlq show 999999"), ==, 1);
  CHECK(strstr(out_buf, "no DLQ entry with id 999999") != NULL);
}

TEST(offline_refuses_writes_and_missing_dir) {
  uint64_t id_c, id_d;
  rq_env *env = fill(&id_c, &id_d);
  rq_env_close(env);
  CHECK_INT(ctl("--data-dir data dlq replay --all"), ==, 2);
  CHECK(strstr(out_buf, "admin API") != NULL);
  CHECK_INT(ctl("--data-dir data pause"), ==, 2);
  CHECK_INT(ctl("--data-dir nowhere stats"), ==, 1);
  CHECK(strstr(out_buf, "cannot open the queue in nowhere") != NULL);
  /* Nothing was changed by reading. */
  json_object *st = ctl_json("--data-dir data stats --json");
  CHECK_INT(geti(st, "dlq"), ==, 2);
  json_object_put(st);
}

TEST(usage_and_exit_codes) {
  CHECK_INT(ctl("--help"), ==, 0);
  CHECK(strstr(out_buf, "usage: relayctl") != NULL);
  const char *cmds[] = {"stats",    "dlq list", "dlq show", "dlq replay", "dlq purge",
                        "test-sns", "pause",    "resume",   "version"};
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
    char args[64];
    snprintf(args, sizeof args, "%s --help", cmds[i]);
    CHECK_INT(ctl(args), ==, 0);
    CHECK(strstr(out_buf, "usage: relayctl") != NULL);
  }
  CHECK_INT(ctl(""), ==, 2);
  CHECK_INT(ctl("frobnicate"), ==, 2);
  CHECK(strstr(out_buf, "unknown command: frobnicate") != NULL);
  CHECK_INT(ctl("dlq"), ==, 2);
  CHECK_INT(ctl("dlq show"), ==, 2);
  CHECK_INT(ctl("dlq show abc"), ==, 2);
  CHECK_INT(ctl("dlq replay"), ==, 2);
  CHECK_INT(ctl("dlq replay --all 5"), ==, 2);
  CHECK_INT(ctl("dlq purge 0"), ==, 2);
  CHECK_INT(ctl("stats --bogus"), ==, 2);
  CHECK_INT(ctl("dlq list --limit x"), ==, 2);
  CHECK_INT(ctl("--admin"), ==, 2);
  CHECK_INT(ctl("version"), ==, 0);
  CHECK(strncmp(out_buf, "relayctl ", 9) == 0);
}

TEST(unreachable_admin_is_a_clear_failure) {
  /* Port 1 on loopback: nothing listens there (connection refused). */
  CHECK_INT(ctl("--admin http://127.0.0.1:1 stats"), ==, 1);
  CHECK(strstr(out_buf, "cannot reach the relayd admin API at http://127.0.0.1:1") != NULL);
  CHECK_INT(ctl("--admin 127.0.0.1:1 dlq list"), ==, 1);
  CHECK(strstr(out_buf, "is relayd running?") != NULL);
  /* A wildcard listen address from RELAY_ADMIN_LISTEN is reached over loopback. */
  CHECK_INT(ctl("--admin 0.0.0.0:1 stats"), ==, 1);
  CHECK(strstr(out_buf, "http://127.0.0.1:1") != NULL);
}

TEST(loopback_rule) {
  CHECK_INT(admin_addr_is_loopback("127.0.0.1:8081"), ==, 1);
  CHECK_INT(admin_addr_is_loopback("127.3.4.5:1"), ==, 1);
  CHECK_INT(admin_addr_is_loopback("[::1]:8081"), ==, 1);
  CHECK_INT(admin_addr_is_loopback("localhost:8081"), ==, 1);
  CHECK_INT(admin_addr_is_loopback("0.0.0.0:8081"), ==, 0);
  CHECK_INT(admin_addr_is_loopback("[::]:8081"), ==, 0);
  CHECK_INT(admin_addr_is_loopback("10.0.0.5:8081"), ==, 0);
  CHECK_INT(admin_addr_is_loopback(":8081"), ==, 0);
  CHECK_INT(admin_addr_is_loopback("128.0.0.1:8081"), ==, 0);
  relay_config c;
  memset(&c, 0, sizeof c);
  char err[256] = "";
  c.admin_listen = "0.0.0.0:8081";
  CHECK_INT(admin_check_config(&c, err, sizeof err), ==, -22);
  CHECK(strstr(err, "RELAY_ADMIN_TOKEN") != NULL);
  c.admin_token = "s3cret";
  CHECK_INT(admin_check_config(&c, err, sizeof err), ==, 0);
  c.admin_token = NULL;
  c.admin_listen = "127.0.0.1:9";
  CHECK_INT(admin_check_config(&c, err, sizeof err), ==, 0);
}

/* The last page has no next: --data-dir answers like the API. */
TEST(offline_last_page_has_no_next) {
  uint64_t id_c, id_d;
  rq_env *env = fill(&id_c, &id_d);
  rq_env_close(env);
  json_object *l = ctl_json("--data-dir data dlq list --json --limit 2");
  CHECK_INT(json_object_array_length(json_object_object_get(l, "entries")), ==, 2);
  CHECK(json_object_object_get(l, "next_after") == NULL);
  json_object_put(l);
  CHECK_INT(ctl("--data-dir data dlq list --limit 2"), ==, 0);
  CHECK(strstr(out_buf, "more entries") == NULL);
  CHECK_INT(ctl("--data-dir data dlq list --limit 1"), ==, 0);
  CHECK(strstr(out_buf, "more entries: --after") != NULL);
}
