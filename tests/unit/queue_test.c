/* Unit tests of the durable queue (queue/rq.h), on real LMDB directories. */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rq.h"
#include "testlib.h"

#define NOW 1700000000000LL /* fixed "now" for tests that do not need wall time */

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static rq_env *open_env(const rq_options *o) {
  rq_env *env = NULL;
  int rc = rq_env_open(&env, tl_tmpdir, o);
  if (rc) tl_fail(__FILE__, __LINE__, "rq_env_open: %s", rq_strerror(rc));
  return env;
}

static rq_record mkrec(const char *body, const char *id, const char *type, const char *cid) {
  rq_record r = {0};
  r.received_ms = NOW;
  r.body = (const uint8_t *)body;
  r.body_len = strlen(body);
  r.webhook_id = id;
  r.type = type;
  r.cid = cid;
  return r;
}

/* Appends one record per body in its own commit; returns the last seq. */
static uint64_t append1(rq_env *env, const rq_record *r) {
  rq_txn *t;
  uint64_t seq = 0;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, r, &seq), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  return seq;
}

static void ack1(rq_env *env, uint64_t seq) {
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, seq), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
}

/* Acks every ready record, a batch of up to 5,000 at a time (as the drainer
 * would after publishing them). Returns how many. */
static int ack_all(rq_env *env) {
  int total = 0, n;
  rq_record *out;
  while ((n = rq_lease(env, 1LL << 62, 5000, 0, &out)) > 0) {
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (int i = 0; i < n; i++) CHECK_INT(rq_txn_ack(t, out[i].seq), ==, 0);
    CHECK_INT(rq_txn_commit(t), ==, 0);
    rq_records_free(out, (size_t)n);
    total += n;
  }
  CHECK_INT(n, ==, 0);
  return total;
}

/* The queue's LMDB environment opened directly, to inspect or damage it:
 * flags 0 or MDB_RDONLY for both the environment and the transaction. */
static MDB_txn *raw_begin(MDB_env **e, unsigned flags) {
  MDB_txn *txn = NULL;
  CHECK_INT(mdb_env_create(e), ==, 0);
  CHECK_INT(mdb_env_set_maxdbs(*e, 8), ==, 0);
  CHECK_INT(mdb_env_open(*e, tl_tmpdir, flags, 0600), ==, 0);
  CHECK_INT(mdb_txn_begin(*e, NULL, flags, &txn), ==, 0);
  return txn;
}

static void raw_end(MDB_env *e, MDB_txn *txn, bool commit) {
  if (commit)
    CHECK_INT(mdb_txn_commit(txn), ==, 0);
  else
    mdb_txn_abort(txn);
  mdb_env_close(e);
}

/* A seq as the 8-byte big-endian key the DBs use. */
static void be64key(uint8_t kb[8], uint64_t seq) {
  for (int j = 0; j < 8; j++) kb[j] = (uint8_t)(seq >> (56 - 8 * j));
}

TEST(strerror_names_codes) {
  CHECK_STR(rq_strerror(RQ_MAP_FULL), "queue map is full (RELAY_QUEUE_MAX_BYTES)");
  CHECK_STR(rq_strerror(RQ_BAD_TXN), "batch already failed; it can only be aborted");
  CHECK(strlen(rq_strerror(-ENOSPC)) > 0);
  CHECK_STR(rq_strerror(0), "success");
}

TEST(empty_queue) {
  rq_env *env = open_env(NULL);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 0);
  CHECK_INT(st.dlq, ==, 0);
  CHECK_INT(st.oldest_ready_ms, ==, 0);
  CHECK_INT(st.map_size, ==, 4ull << 30);
  CHECK(st.map_used > 0);
  rq_record *out = NULL;
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 0);
  rq_records_free(out, 0);
  CHECK_INT(rq_lease(env, NOW, 10, RQ_LEASE_FIFO, &out), ==, 0);
  rq_records_free(out, 0);
  CHECK_INT(rq_next_due_ms(env), ==, INT64_MAX);
  CHECK_INT(rq_dlq_list(env, NULL, &out), ==, 0);
  rq_records_free(out, 0);
  rq_record one;
  CHECK_INT(rq_dlq_get(env, 1, &one), ==, RQ_NOTFOUND);
  CHECK_INT(rq_over_watermark(env), ==, 0);
  rq_verify_report rep;
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.records, ==, 0);
  /* An empty batch commits fine. */
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_env_close(env);
  env = open_env(NULL);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 0);
  rq_env_close(env);
}

TEST(open_errors) {
  rq_env *env = NULL;
  rq_options ro = {.flags = RQ_OPEN_READONLY};
  /* Read-only on a directory without a queue. */
  CHECK_INT(rq_env_open(&env, tl_tmpdir, &ro), ==, -ENOENT);
  char path[4200];
  snprintf(path, sizeof path, "%s/missing", tl_tmpdir);
  CHECK_INT(rq_env_open(&env, path, NULL), ==, -ENOENT);
  CHECK(env == NULL);
}

TEST(append_lease_ack) {
  rq_env *env = open_env(NULL);
  rq_txn *t;
  uint64_t s[3];
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  rq_record a = mkrec("{\"type\":\"a\"}", "id-a", "a", NULL);
  rq_record b = mkrec("{\"type\":\"bb\"}", "id-b", "bb", NULL);
  rq_record c = mkrec("{\"type\":\"ccc\"}", NULL, "ccc", NULL);
  CHECK_INT(rq_txn_append(t, &a, &s[0]), ==, 0);
  CHECK_INT(rq_txn_append(t, &b, &s[1]), ==, 0);
  CHECK_INT(rq_txn_append(t, &c, &s[2]), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(s[0], ==, 1);
  CHECK(s[0] < s[1] && s[1] < s[2]);

  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 3);
  CHECK_INT(st.ready_bytes, ==, a.body_len + b.body_len + c.body_len);
  CHECK_INT(st.oldest_ready_ms, ==, NOW);
  CHECK_INT(st.appended_total, ==, 3);

  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 2, 0, &out), ==, 2);
  CHECK_INT(out[0].seq, ==, s[0]);
  CHECK_INT(out[1].seq, ==, s[1]);
  CHECK_MEM(out[0].body, out[0].body_len, a.body, a.body_len);
  CHECK_STR(out[1].webhook_id, "id-b");
  CHECK_STR(out[1].type, "bb");
  CHECK(out[1].cid == NULL);
  rq_records_free(out, 2);
  CHECK_INT(rq_leased_count(env), ==, 2);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.inflight, ==, 2);

  /* Leased records are not handed out twice. */
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, s[2]);
  rq_records_free(out, 1);
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 0);
  rq_records_free(out, 0);

  /* Ack releases; a second ack of the same seq is harmless. */
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[0]), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[0]), ==, RQ_NOTFOUND);
  CHECK_INT(rq_txn_ack(t, 999), ==, RQ_NOTFOUND);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_leased_count(env), ==, 2);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 2);
  CHECK_INT(st.acked_total, ==, 1);
  CHECK_INT(st.ready_bytes, ==, b.body_len + c.body_len);

  /* Release makes a record leasable again, unchanged. */
  rq_release(env, s[1]);
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, s[1]);
  CHECK_INT(out[0].attempts, ==, 0);
  rq_records_free(out, 1);
  rq_env_close(env);
}

/* The fsync histogram's source: the time of the last good commit spent in
 * LMDB's durable commit; a failed or aborted batch leaves it alone. */
TEST(last_commit_sync_seconds) {
  rq_env *env = open_env(NULL);
  CHECK(rq_last_commit_sync_seconds(env) == 0);
  rq_txn *t;
  rq_record a = mkrec("{\"type\":\"a\"}", "sync-a", "a", NULL);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &a, NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  double s = rq_last_commit_sync_seconds(env);
  CHECK(s > 0 && s < 10);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  rq_txn_abort(t);
  CHECK(rq_last_commit_sync_seconds(env) == s);
  rq_env_close(env);
}

TEST(roundtrip_byte_identical_after_reopen) {
  uint8_t body[1500];
  for (size_t i = 0; i < sizeof body; i++) body[i] = (uint8_t)(i * 7 + 3); /* NULs, high bytes */
  rq_record r = {0};
  r.received_ms = NOW + 123;
  r.body = body;
  r.body_len = sizeof body;
  r.webhook_id = "wh-1";
  r.webhook_attempt = "2";
  r.api_key = "key\xc3\xa9";
  r.type = "message.new";
  r.cid = "messaging:general";
  r.channel_type = "messaging";
  r.channel_id = "general";
  r.user_id = "user-42";
  r.attempts = 9; /* caller's retry state is not taken over */
  r.last_error = "ignored";
  rq_env *env = open_env(NULL);
  uint64_t seq = append1(env, &r);
  rq_env_close(env);

  env = open_env(NULL);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 5, 0, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, seq);
  CHECK_INT(out[0].received_ms, ==, NOW + 123);
  CHECK_MEM(out[0].body, out[0].body_len, body, sizeof body);
  CHECK(out[0].body[out[0].body_len] == 0);
  CHECK_STR(out[0].webhook_id, "wh-1");
  CHECK_STR(out[0].webhook_attempt, "2");
  CHECK_STR(out[0].api_key, "key\xc3\xa9");
  CHECK_STR(out[0].type, "message.new");
  CHECK_STR(out[0].cid, "messaging:general");
  CHECK_STR(out[0].channel_type, "messaging");
  CHECK_STR(out[0].channel_id, "general");
  CHECK_STR(out[0].user_id, "user-42");
  CHECK_INT(out[0].attempts, ==, 0);
  CHECK(out[0].last_error == NULL);
  CHECK(out[0].dlq_reason == NULL);
  rq_records_free(out, 1);
  rq_env_close(env);
}

TEST(empty_body_is_kept) {
  rq_env *env = open_env(NULL);
  rq_record r = mkrec("", NULL, "t", NULL);
  append1(env, &r);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 5, 0, &out), ==, 1);
  CHECK_INT(out[0].body_len, ==, 0);
  CHECK(out[0].body != NULL);
  rq_records_free(out, 1);
  rq_env_close(env);
}

TEST(nack_and_nothing_due) {
  rq_env *env = open_env(NULL);
  rq_record r = mkrec("{}", NULL, "t", NULL);
  uint64_t seq = append1(env, &r);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 5, 0, &out), ==, 1);
  rq_records_free(out, 1);

  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, seq, NOW + 10, NOW + 5000, "Throttling"), ==, 0);
  CHECK_INT(rq_txn_nack(t, 777, NOW, NOW, "x"), ==, RQ_NOTFOUND);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_leased_count(env), ==, 0);

  /* Not due yet: nothing to lease, and the drainer learns when to wake. */
  CHECK_INT(rq_lease(env, NOW + 4999, 5, 0, &out), ==, 0);
  rq_records_free(out, 0);
  CHECK_INT(rq_next_due_ms(env), ==, NOW + 5000);

  CHECK_INT(rq_lease(env, NOW + 5000, 5, 0, &out), ==, 1);
  CHECK_INT(out[0].attempts, ==, 1);
  CHECK_INT(out[0].first_attempt_ms, ==, NOW + 10);
  CHECK_INT(out[0].last_attempt_ms, ==, NOW + 10);
  CHECK_INT(out[0].next_attempt_ms, ==, NOW + 5000);
  CHECK_STR(out[0].last_error, "Throttling");
  CHECK_MEM(out[0].body, out[0].body_len, "{}", 2);
  rq_records_free(out, 1);

  /* Second failure: first_attempt stays, the rest moves on. */
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, seq, NOW + 6000, NOW + 7000, "InternalError"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_env_close(env);
  env = open_env(NULL); /* retry state survives a restart */
  CHECK_INT(rq_lease(env, NOW + 7000, 5, 0, &out), ==, 1);
  CHECK_INT(out[0].attempts, ==, 2);
  CHECK_INT(out[0].first_attempt_ms, ==, NOW + 10);
  CHECK_INT(out[0].last_attempt_ms, ==, NOW + 6000);
  CHECK_STR(out[0].last_error, "InternalError");
  rq_records_free(out, 1);
  rq_env_close(env);
}

TEST(lease_skips_not_due_keeps_order) {
  rq_env *env = open_env(NULL);
  uint64_t s[4];
  for (int i = 0; i < 4; i++) {
    rq_record r = mkrec("{}", NULL, "t", NULL);
    s[i] = append1(env, &r);
  }
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[1], NOW, NOW + 100, "e"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 3);
  CHECK_INT(out[0].seq, ==, s[0]);
  CHECK_INT(out[1].seq, ==, s[2]);
  CHECK_INT(out[2].seq, ==, s[3]);
  rq_records_free(out, 3);
  CHECK_INT(rq_next_due_ms(env), ==, NOW + 100);
  rq_env_close(env);
}

TEST(fifo_blocks_group) {
  rq_env *env = open_env(NULL);
  rq_record a1 = mkrec("{\"n\":1}", NULL, "message.new", "m:a");
  rq_record a2 = mkrec("{\"n\":2}", NULL, "message.new", "m:a");
  rq_record b1 = mkrec("{\"n\":3}", NULL, "message.new", "m:b");
  rq_record u1 = mkrec("{\"n\":4}", NULL, "user.updated", NULL); /* group = type */
  rq_record u2 = mkrec("{\"n\":5}", NULL, "user.updated", NULL);
  uint64_t sa1 = append1(env, &a1), sa2 = append1(env, &a2), sb1 = append1(env, &b1);
  uint64_t su1 = append1(env, &u1), su2 = append1(env, &u2);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 10, RQ_LEASE_FIFO, &out), ==, 3);
  CHECK_INT(out[0].seq, ==, sa1);
  CHECK_INT(out[1].seq, ==, sb1);
  CHECK_INT(out[2].seq, ==, su1);
  rq_records_free(out, 3);
  /* Heads in flight: each group is blocked. */
  CHECK_INT(rq_lease(env, NOW, 10, RQ_LEASE_FIFO, &out), ==, 0);
  rq_records_free(out, 0);
  CHECK_INT(rq_next_due_ms_flags(env, RQ_LEASE_FIFO), ==, INT64_MAX);
  CHECK_INT(rq_next_due_ms(env), ==, 0); /* without FIFO, a2 and u2 are due */

  /* a1 fails and backs off: a2 must still wait behind it. */
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, sa1, NOW, NOW + 1000, "e"), ==, 0);
  CHECK_INT(rq_txn_ack(t, su1), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_lease(env, NOW, 10, RQ_LEASE_FIFO, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, su2);
  rq_records_free(out, 1);
  CHECK_INT(rq_next_due_ms_flags(env, RQ_LEASE_FIFO), ==, NOW + 1000);
  CHECK_INT(rq_lease(env, NOW + 1000, 10, RQ_LEASE_FIFO, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, sa1);
  rq_records_free(out, 1);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, sa1), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_lease(env, NOW + 1000, 10, RQ_LEASE_FIFO, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, sa2);
  rq_records_free(out, 1);
  rq_env_close(env);
}

TEST(dead_letter_and_dlq_reads) {
  rq_env *env = open_env(NULL);
  rq_record a = mkrec("{\"a\":1}", "wa", "message.new", "m:a");
  rq_record b = mkrec("{\"b\":2}", "wb", "user.updated", NULL);
  rq_record c = mkrec("{\"c\":3}", "wc", "message.new", "m:c");
  uint64_t sa = append1(env, &a), sb = append1(env, &b), sc = append1(env, &c);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, sa, NOW, NOW + 10, "Throttling"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_dead(t, sa, NOW + 20, "rejected", "InvalidParameter", "bad attr"), ==, 0);
  CHECK_INT(rq_txn_dead(t, sb, NOW + 30, "expired", NULL, "too old"), ==, 0);
  CHECK_INT(rq_txn_dead(t, 4242, NOW, "expired", NULL, NULL), ==, RQ_NOTFOUND);
  CHECK_INT(rq_txn_commit(t), ==, 0);

  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1);
  CHECK_INT(st.dlq, ==, 2);
  CHECK_INT(st.dlq_bytes, ==, a.body_len + b.body_len);
  CHECK_INT(st.dead_lettered_total, ==, 2);

  rq_record one;
  CHECK_INT(rq_dlq_get(env, sa, &one), ==, 0);
  CHECK_INT(one.seq, ==, sa);
  CHECK_MEM(one.body, one.body_len, a.body, a.body_len);
  CHECK_STR(one.dlq_reason, "rejected");
  CHECK_STR(one.dlq_code, "InvalidParameter");
  CHECK_STR(one.dlq_message, "bad attr");
  CHECK_INT(one.dlq_time_ms, ==, NOW + 20);
  CHECK_INT(one.attempts, ==, 2);
  CHECK_INT(one.first_attempt_ms, ==, NOW);
  CHECK_INT(one.last_attempt_ms, ==, NOW + 20);
  CHECK_STR(one.last_error, "Throttling");
  CHECK_STR(one.cid, "m:a");
  rq_record_free(&one);
  CHECK(one.owned_ == NULL);

  rq_record *out;
  CHECK_INT(rq_dlq_list(env, NULL, &out), ==, 2);
  CHECK_INT(out[0].seq, ==, sa);
  CHECK_INT(out[1].seq, ==, sb);
  rq_records_free(out, 2);
  rq_dlq_filter f = {.reason = "expired"};
  CHECK_INT(rq_dlq_list(env, &f, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, sb);
  CHECK(out[0].dlq_code == NULL);
  rq_records_free(out, 1);
  rq_dlq_filter ft = {.type = "message.new"};
  CHECK_INT(rq_dlq_list(env, &ft, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, sa);
  rq_records_free(out, 1);
  rq_dlq_filter page = {.limit = 1};
  CHECK_INT(rq_dlq_list(env, &page, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, sa);
  page.after_seq = out[0].seq;
  rq_records_free(out, 1);
  CHECK_INT(rq_dlq_list(env, &page, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, sb);
  page.after_seq = out[0].seq;
  rq_records_free(out, 1);
  CHECK_INT(rq_dlq_list(env, &page, &out), ==, 0);
  rq_records_free(out, 0);

  /* The remaining ready record is untouched. */
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, sc);
  rq_records_free(out, 1);
  rq_env_close(env);
}

TEST(append_dead_goes_to_dlq) {
  rq_env *env = open_env(NULL);
  rq_txn *t;
  uint64_t seq, s2;
  rq_record big = mkrec("{\"huge\":true}", "w-big", "message.new", NULL);
  rq_record ok = mkrec("{}", "w-ok", "t", NULL);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append_dead(t, &big, "too_large", NULL, "over 262144 bytes", &seq), ==, 0);
  CHECK_INT(rq_txn_append(t, &ok, &s2), ==, 0);
  /* Dedup applies to the dead path as well. */
  CHECK_INT(rq_txn_append_dead(t, &big, "too_large", NULL, NULL, NULL), ==, RQ_DUPLICATE);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK(s2 > seq);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 1);
  CHECK_INT(st.ready, ==, 1);
  CHECK_INT(st.appended_total, ==, 2);
  CHECK_INT(st.dead_lettered_total, ==, 1);
  CHECK_INT(st.duplicates_total, ==, 1);
  rq_record one;
  CHECK_INT(rq_dlq_get(env, seq, &one), ==, 0);
  CHECK_STR(one.dlq_reason, "too_large");
  CHECK_STR(one.dlq_message, "over 262144 bytes");
  CHECK_MEM(one.body, one.body_len, big.body, big.body_len);
  CHECK_INT(one.attempts, ==, 0);
  rq_record_free(&one);
  rq_env_close(env);
}

static void make_dlq(rq_env *env, int n, uint64_t *seqs) {
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < n; i++) {
    rq_record r = mkrec(i % 2 ? "{\"odd\":1}" : "{\"even\":1}", NULL, i % 2 ? "odd" : "even", NULL);
    CHECK_INT(rq_txn_append_dead(t, &r, i % 3 ? "rejected" : "expired", NULL, NULL, &seqs[i]), ==,
              0);
  }
  CHECK_INT(rq_txn_commit(t), ==, 0);
}

TEST(replay_by_id_and_missing) {
  rq_env *env = open_env(NULL);
  uint64_t s[3];
  make_dlq(env, 3, s);
  uint64_t ids[] = {s[1], 99999, s[1]};
  size_t moved = 7, missing = 7;
  CHECK_INT(rq_dlq_replay(env, ids, 3, NULL, &moved, &missing), ==, 0);
  CHECK_INT(moved, ==, 1);
  CHECK_INT(missing, ==, 2); /* unknown id, and the second copy of s[1] */
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 1);
  CHECK(out[0].seq > s[2]); /* back at the tail with a new seq */
  CHECK_MEM(out[0].body, out[0].body_len, "{\"odd\":1}", 9);
  CHECK_INT(out[0].attempts, ==, 0);
  CHECK(out[0].dlq_reason == NULL);
  CHECK_STR(out[0].type, "odd");
  rq_records_free(out, 1);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 2);
  CHECK_INT(st.ready, ==, 1);
  /* Replay of nothing but missing ids. */
  uint64_t gone = 12345;
  CHECK_INT(rq_dlq_replay(env, &gone, 1, NULL, &moved, &missing), ==, 0);
  CHECK_INT(moved, ==, 0);
  CHECK_INT(missing, ==, 1);
  rq_env_close(env);
}

/* A replay stamps replayed_ms (the drainer restarts RELAY_RETRY_MAX_AGE
 * there), keeps received_ms, survives a second dead-lettering and a reopen,
 * for small and split (header + body) records; a fresh append never has it. */
TEST(replay_stamps_replayed_ms) {
  rq_env *env = open_env(NULL);
  static char big[6001];
  memset(big, 'x', sizeof big - 1);
  big[0] = '"';
  big[sizeof big - 2] = '"';
  rq_record rs[2] = {mkrec("{\"a\":1}", "r-small", "expired.t", NULL),
                     mkrec(big, "r-big", "expired.t", NULL)};
  rq_txn *t;
  uint64_t s[2];
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < 2; i++)
    CHECK_INT(rq_txn_append_dead(t, &rs[i], "expired", "HTTP503", "down", &s[i]), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_record *out;
  CHECK_INT(rq_dlq_list(env, NULL, &out), ==, 2);
  CHECK_INT(out[0].replayed_ms, ==, 0);
  rq_records_free(out, 2);

  int64_t t0 = wall_ms();
  size_t moved;
  CHECK_INT(rq_dlq_replay(env, NULL, 0, NULL, &moved, NULL), ==, 0);
  int64_t t1 = wall_ms();
  CHECK_INT(moved, ==, 2);
  CHECK_INT(rq_lease(env, t1, 10, 0, &out), ==, 2);
  for (int i = 0; i < 2; i++) {
    CHECK_INT(out[i].received_ms, ==, NOW);
    CHECK_INT(out[i].replayed_ms, >=, t0);
    CHECK_INT(out[i].replayed_ms, <=, t1);
  }
  CHECK_INT(out[1].body_len, ==, sizeof big - 1);
  uint64_t again[2] = {out[0].seq, out[1].seq};
  int64_t stamp = out[1].replayed_ms;
  rq_records_free(out, 2);
  /* It fails for good again: the DLQ entry still says when it was replayed. */
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < 2; i++)
    CHECK_INT(rq_txn_dead(t, again[i], t1, "rejected", "InvalidParameter", "no"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_env_close(env);
  env = open_env(NULL);
  rq_record got;
  CHECK_INT(rq_dlq_get(env, again[1], &got), ==, 0);
  CHECK_INT(got.replayed_ms, ==, stamp);
  CHECK_INT(got.received_ms, ==, NOW);
  CHECK_STR(got.dlq_reason, "rejected");
  rq_record_free(&got);

  /* A caller's replayed_ms does not enter the queue with a fresh append. */
  rq_record fresh = mkrec("{\"b\":2}", "r-fresh", "t", NULL);
  fresh.replayed_ms = t1;
  uint64_t fs = append1(env, &fresh);
  CHECK_INT(rq_lease(env, t1, 10, 0, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, fs);
  CHECK_INT(out[0].replayed_ms, ==, 0);
  rq_records_free(out, 1);
  rq_env_close(env);
}

TEST(replay_filter_and_all) {
  rq_env *env = open_env(NULL);
  uint64_t s[6];
  make_dlq(env, 6, s);
  size_t moved;
  rq_dlq_filter f = {.reason = "expired"}; /* i = 0, 3 */
  CHECK_INT(rq_dlq_replay(env, NULL, 0, &f, &moved, NULL), ==, 0);
  CHECK_INT(moved, ==, 2);
  rq_dlq_filter ft = {.type = "odd", .reason = "rejected"}; /* i = 1, 5 */
  CHECK_INT(rq_dlq_replay(env, NULL, 0, &ft, &moved, NULL), ==, 0);
  CHECK_INT(moved, ==, 2);
  CHECK_INT(rq_dlq_replay(env, NULL, 0, NULL, &moved, NULL), ==, 0);
  CHECK_INT(moved, ==, 2);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 0);
  CHECK_INT(st.dlq_bytes, ==, 0);
  CHECK_INT(st.ready, ==, 6);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 6);
  for (int i = 1; i < 6; i++) CHECK(out[i].seq > out[i - 1].seq);
  rq_records_free(out, 6);
  rq_env_close(env);
}

TEST(purge) {
  rq_env *env = open_env(NULL);
  uint64_t s[4];
  make_dlq(env, 4, s);
  size_t purged, missing;
  uint64_t ids[] = {s[0], 555};
  CHECK_INT(rq_dlq_purge(env, ids, 2, NULL, &purged, &missing), ==, 0);
  CHECK_INT(purged, ==, 1);
  CHECK_INT(missing, ==, 1);
  rq_dlq_filter f = {.type = "odd"};
  CHECK_INT(rq_dlq_purge(env, NULL, 0, &f, &purged, NULL), ==, 0);
  CHECK_INT(purged, ==, 2);
  rq_record *out;
  CHECK_INT(rq_dlq_list(env, NULL, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, s[2]);
  rq_records_free(out, 1);
  CHECK_INT(rq_dlq_purge(env, NULL, 0, NULL, &purged, NULL), ==, 0);
  CHECK_INT(purged, ==, 1);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 0);
  CHECK_INT(st.ready, ==, 0);
  rq_env_close(env);
}

/* Given ids still obey f's reason/type: ids "with reason expired" never
 * touch an entry of another reason (neither done nor missing). */
TEST(ids_obey_filter) {
  rq_env *env = open_env(NULL);
  uint64_t s[4];
  make_dlq(env, 4, s); /* 0 expired/even, 1 rejected/odd, 2 rejected/even, 3 expired/odd */
  size_t n, missing;
  rq_dlq_filter f = {.reason = "expired"};
  uint64_t ids[] = {s[0], s[1], s[2], 4242};
  CHECK_INT(rq_dlq_purge(env, ids, 4, &f, &n, &missing), ==, 0);
  CHECK_INT(n, ==, 1);
  CHECK_INT(missing, ==, 1);
  rq_dlq_filter ft = {.type = "odd"};
  uint64_t ids2[] = {s[1], s[2], s[3]};
  CHECK_INT(rq_dlq_replay(env, ids2, 3, &ft, &n, &missing), ==, 0);
  CHECK_INT(n, ==, 2);
  CHECK_INT(missing, ==, 0);
  rq_record *out;
  CHECK_INT(rq_dlq_list(env, NULL, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, s[2]);
  rq_records_free(out, 1);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dlq, ==, 1);
  CHECK_INT(st.ready, ==, 2);
  rq_env_close(env);
}

/* rq_dlq_list_meta: the same records and paging as rq_dlq_list, without
 * copies of the bodies (NULL), their sizes kept. */
TEST(dlq_list_meta_has_no_bodies) {
  rq_env *env = open_env(NULL);
  uint64_t s[4];
  make_dlq(env, 4, s);
  rq_record *full, *meta;
  CHECK_INT(rq_dlq_list(env, NULL, &full), ==, 4);
  CHECK_INT(rq_dlq_list_meta(env, NULL, &meta), ==, 4);
  for (int i = 0; i < 4; i++) {
    CHECK_INT(meta[i].seq, ==, full[i].seq);
    CHECK(meta[i].body == NULL);
    CHECK_INT(meta[i].body_len, ==, full[i].body_len);
    CHECK_STR(meta[i].type, full[i].type);
    CHECK_STR(meta[i].dlq_reason, full[i].dlq_reason);
  }
  rq_records_free(full, 4);
  rq_records_free(meta, 4);
  rq_dlq_filter f = {.reason = "rejected", .after_seq = s[1], .limit = 1};
  CHECK_INT(rq_dlq_list_meta(env, &f, &meta), ==, 1);
  CHECK_INT(meta[0].seq, ==, s[2]);
  CHECK_INT(meta[0].body_len, ==, 10); /* {"even":1} */
  rq_records_free(meta, 1);
  rq_env_close(env);
}

TEST(dedup_within_window) {
  rq_env *env = open_env(NULL);
  int64_t now = wall_ms();
  rq_record r = mkrec("{}", "dup-1", "t", NULL);
  r.received_ms = now;
  rq_txn *t;
  uint64_t seq;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, &seq), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_DUPLICATE); /* same batch */
  rq_record other = mkrec("{}", "dup-2", "t", NULL);
  other.received_ms = now;
  CHECK_INT(rq_txn_append(t, &other, NULL), ==, 0); /* batch still usable */
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "dup-1", now), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "never", now), ==, 0);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_DUPLICATE); /* later batch */
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_env_close(env);
  env = open_env(NULL); /* the index survives a restart */
  CHECK_INT(rq_dedup_seen(env, "dup-1", now + 1000), ==, 1);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.duplicates_total, ==, 2);
  CHECK_INT(st.ready, ==, 2);
  /* The ready records hold their ids: appends log nothing. */
  CHECK_INT(st.dedup_entries, ==, 0);
  /* Ack does not forget the id: a redelivery after publishing is still a
   * dup. The log takes the id over from the record, also across a restart. */
  ack1(env, seq);
  CHECK_INT(rq_dedup_seen(env, "dup-1", now + 1000), ==, 1);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dedup_entries, ==, 1);
  rq_env_close(env);
  env = open_env(NULL);
  CHECK_INT(rq_dedup_seen(env, "dup-1", now + 1000), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "dup-2", now + 1000), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "dup-1", now + 600 * 1000), ==, 0);
  /* Very long ids work too (LMDB keys are limited). */
  char longid[2000];
  memset(longid, 'x', sizeof longid - 1);
  longid[sizeof longid - 1] = '\0';
  rq_record l = mkrec("{}", longid, "t", NULL);
  l.received_ms = now;
  append1(env, &l);
  CHECK_INT(rq_dedup_seen(env, longid, now), ==, 1);
  longid[1500] = 'y';
  CHECK_INT(rq_dedup_seen(env, longid, now), ==, 0);
  rq_env_close(env);
}

TEST(dedup_window_expiry) {
  rq_options o = {.dedup_window_s = 2};
  rq_env *env = open_env(&o);
  int64_t now = wall_ms();
  rq_record r = mkrec("{}", "exp-1", "t", NULL);
  r.received_ms = now;
  append1(env, &r);
  CHECK_INT(rq_dedup_seen(env, "exp-1", now + 1999), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "exp-1", now + 2000), ==, 0);
  /* Appended again after the window: stored, and the entry refreshed. */
  r.received_ms = now + 2500;
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "exp-1", now + 4000), ==, 1);

  rq_env_close(env);
}

/* Old sightings (by wall clock) are forgotten at the next batch start:
 * one held by its ready record, one in the log (straight to the DLQ). */
TEST(dedup_expired_pruned) {
  rq_options o = {.dedup_window_s = 2};
  rq_env *env = open_env(&o);
  int64_t now = wall_ms();
  rq_record old = mkrec("{}", "old-1", "t", NULL), old2 = mkrec("{}", "old-2", "t", NULL);
  old.received_ms = old2.received_ms = now - 60000;
  rq_record cur = mkrec("{}", "cur-1", "t", NULL);
  cur.received_ms = now;
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &old, NULL), ==, 0);
  CHECK_INT(rq_txn_append_dead(t, &old2, "too_large", NULL, NULL, NULL), ==, 0);
  CHECK_INT(rq_txn_append(t, &cur, NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  /* Looked up on their own timeline, both are still known ... */
  CHECK_INT(rq_dedup_seen(env, "old-1", now - 60000), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "old-2", now - 60000), ==, 1);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dedup_entries, ==, 1);
  /* ... until the next batch prunes them. */
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dedup_entries, ==, 0);
  CHECK_INT(rq_dedup_seen(env, "old-1", now - 60000), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "old-2", now - 60000), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "cur-1", now), ==, 1);
  /* An acked record whose sighting expired leaves nothing in the log. */
  CHECK_INT(ack_all(env), ==, 2);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dedup_entries, ==, 1); /* cur-1 only */
  CHECK_INT(rq_dedup_seen(env, "cur-1", now), ==, 1);
  rq_env_close(env);
}

/* The in-memory table through many growths (it grows incrementally) with
 * expiry deleting along the way, and rebuilt from the log on reopen. */
static void many_id(char *buf, size_t n, int i) {
  snprintf(buf, n, "%08x-many-%d", (unsigned)i * 2654435761u, i);
}

/* Every 7th of the 2n ids is a duplicate at now: all of them, or only the
 * odd ones once the even ones expired. */
static void check_many_seen(rq_env *env, int n, int64_t now, bool odd_only) {
  char id[48];
  for (int i = 0; i < 2 * n; i += 7) {
    many_id(id, sizeof id, i);
    CHECK_INT(rq_dedup_seen(env, id, now), ==, odd_only ? i % 2 : 1);
  }
}

TEST(dedup_table_many_ids) {
  rq_options o = {.dedup_window_s = 60};
  rq_env *env = open_env(&o);
  int64_t start = wall_ms();
  enum { N = 60000, BATCH = 2000 };
  char id[48];
  rq_txn *t;
  for (int b = 0; b < 2 * N; b += BATCH) {
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (int i = b; i < b + BATCH; i++) {
      /* Even ids expire 3 s from now (time for the acks on a slow build), odd
       * ones stay. */
      many_id(id, sizeof id, i);
      rq_record r = mkrec("{}", id, "t", NULL);
      r.received_ms = i % 2 ? start : start - 57000;
      CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
    }
    CHECK_INT(rq_txn_commit(t), ==, 0);
  }
  check_many_seen(env, N, start, false);
  CHECK_INT(rq_dedup_seen(env, "never-seen", start), ==, 0);
  rq_env_close(env);
  env = open_env(&o); /* the table again, from the ready records */
  check_many_seen(env, N, start, false);
  CHECK_INT(ack_all(env), ==, 2 * N); /* the log takes the ids over */
  check_many_seen(env, N, start, false);
  while (wall_ms() < start + 3100) {
    struct timespec pause = {0, 50000000};
    nanosleep(&pause, NULL);
  }
  rq_stats st;
  int rounds = 0;
  do {
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    CHECK_INT(rq_txn_commit(t), ==, 0);
    CHECK_INT(rq_stat(env, &st), ==, 0);
  } while (st.dedup_entries > N && ++rounds < 10000);
  CHECK_INT(st.dedup_entries, ==, N);
  int64_t now = wall_ms();
  check_many_seen(env, N, now, true);
  rq_env_close(env);
  env = open_env(&o); /* the table again, from the log */
  check_many_seen(env, N, now, true);
  rq_env_close(env);
}

/* Ids of a batch that did not commit are not duplicates afterwards, and
 * the index is the writer's: a read-only env cannot answer. */
TEST(dedup_after_abort_and_readonly) {
  rq_env *env = open_env(NULL);
  int64_t now = wall_ms();
  rq_record r = mkrec("{}", "ab-1", "t", NULL);
  r.received_ms = now;
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
  rq_txn_abort(t);
  CHECK_INT(rq_dedup_seen(env, "ab-1", now), ==, 0);
  CHECK_INT(append1(env, &r), >, 0); /* stored, not a duplicate */
  CHECK_INT(rq_dedup_seen(env, "ab-1", now), ==, 1);
  rq_options ro = {.flags = RQ_OPEN_READONLY};
  rq_env *rd = open_env(&ro);
  CHECK_INT(rq_dedup_seen(rd, "ab-1", now), ==, RQ_READONLY);
  rq_env_close(rd);
  rq_env_close(env);
}

/* A table entry of an aborted batch points at a seq that the next batch
 * gives to another record: the record's own id decides, not the seq. */
TEST(dedup_aborted_seq_reused) {
  rq_env *env = open_env(NULL);
  int64_t now = wall_ms();
  rq_record a = mkrec("{}", "sr-a", "t", NULL), b = mkrec("{}", "sr-b", "t", NULL);
  a.received_ms = b.received_ms = now;
  rq_txn *t;
  uint64_t sa, sb;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &a, &sa), ==, 0);
  rq_txn_abort(t);
  sb = append1(env, &b);
  CHECK_INT(sb, ==, sa);
  CHECK_INT(rq_dedup_seen(env, "sr-a", now), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "sr-b", now), ==, 1);
  CHECK_INT(append1(env, &a), >, sb); /* stored, not a duplicate */
  rq_env_close(env);
}

/* The id moves from the ready record to the log in the transaction that
 * removes the record, and only if that commits; a dead-lettered or
 * replayed event stays known, also across a restart. */
TEST(dedup_survives_record_leaving) {
  rq_env *env = open_env(NULL);
  int64_t now = wall_ms();
  rq_record a = mkrec("{}", "lv-a", "t", NULL), d = mkrec("{}", "lv-d", "t", NULL);
  a.received_ms = d.received_ms = now;
  uint64_t sa = append1(env, &a), sd = append1(env, &d);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, sa), ==, 0);
  rq_txn_abort(t);
  CHECK_INT(rq_dedup_seen(env, "lv-a", now), ==, 1);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dedup_entries, ==, 0);
  CHECK_INT(st.ready, ==, 2);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, sa), ==, 0);
  CHECK_INT(rq_txn_dead(t, sd, now, "rejected", "InvalidParameter", "no"), ==, 0);
  /* Inside the batch that removes them, both are still duplicates. */
  CHECK_INT(rq_txn_append(t, &a, NULL), ==, RQ_DUPLICATE);
  CHECK_INT(rq_txn_append(t, &d, NULL), ==, RQ_DUPLICATE);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dedup_entries, ==, 2);
  CHECK_INT(st.ready, ==, 0);
  CHECK_INT(rq_dedup_seen(env, "lv-a", now), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "lv-d", now), ==, 1);
  rq_env_close(env);
  env = open_env(NULL);
  CHECK_INT(rq_dedup_seen(env, "lv-a", now), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "lv-d", now), ==, 1);
  /* Replayed, published and acked: still the same event. */
  size_t moved = 0;
  CHECK_INT(rq_dlq_replay(env, &sd, 1, NULL, &moved, NULL), ==, 0);
  CHECK_INT(moved, ==, 1);
  CHECK_INT(ack_all(env), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "lv-d", now), ==, 1);
  rq_env_close(env);
  env = open_env(NULL);
  CHECK_INT(rq_dedup_seen(env, "lv-d", now), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "lv-a", now), ==, 1);
  rq_env_close(env);
}

/* Expiry of dedup entries: bounded bites per batch that keep pace, and an
 * id seen again keeps its newer entry (and its place in the memory table)
 * while the older one expires. */
TEST(dedup_expiry_keeps_pace) {
  /* First entries seen 9 s ago: with a 10 s window they expire in 1 s; the
   * ones seen again later have 10 s, plenty for the sweep on a slow box. */
  rq_options o = {.dedup_window_s = 10};
  rq_env *env = open_env(&o);
  int64_t start = wall_ms(), now = start - 9000;
  rq_txn *t;
  char id[32];
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < 3000; i++) {
    snprintf(id, sizeof id, "sw-%05d", i);
    rq_record r = mkrec("{}", id, "t", NULL);
    r.received_ms = now;
    CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
  }
  CHECK_INT(rq_txn_commit(t), ==, 0);
  for (int i = 0; i < 2; i++) { /* small batches: the next bite is small again */
    snprintf(id, sizeof id, "zz-%d", i);
    rq_record r = mkrec("{}", id, "t", NULL);
    r.received_ms = now;
    append1(env, &r);
  }
  CHECK_INT(ack_all(env), ==, 3002);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  if (wall_ms() - start < 900) CHECK_INT(st.dedup_entries, ==, 3002); /* none expired yet */
  struct timespec pause = {1, 300000000};
  nanosleep(&pause, NULL);
  /* Every third id seen again: those must survive every sweep. */
  int64_t later = wall_ms();
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < 3000; i += 3) {
    snprintf(id, sizeof id, "sw-%05d", i);
    rq_record r = mkrec("{}", id, "t", NULL);
    r.received_ms = later;
    CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
  }
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(ack_all(env), ==, 1000);
  /* Empty batches, each looking at a bounded bite, until only those remain. */
  int batches = 0;
  uint64_t prev = UINT64_MAX;
  do {
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    CHECK_INT(rq_txn_commit(t), ==, 0);
    CHECK_INT(rq_stat(env, &st), ==, 0);
    CHECK(st.dedup_entries <= prev);
    prev = st.dedup_entries;
  } while (st.dedup_entries > 1000 && ++batches < 1000);
  CHECK_INT(st.dedup_entries, ==, 1000);
  CHECK(batches >= 1); /* 3,002 entries do not fit one bite */
  for (int i = 0; i < 3000; i++) {
    snprintf(id, sizeof id, "sw-%05d", i);
    CHECK_INT(rq_dedup_seen(env, id, later), ==, i % 3 == 0);
  }
  /* An id logged long ago goes at the next batch. */
  rq_record r = mkrec("{}", "aa-first", "t", NULL);
  r.received_ms = later - 20000;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append_dead(t, &r, "too_large", NULL, NULL, NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dedup_entries, ==, 1001);
  for (int i = 0; i < 100 && st.dedup_entries > 1000; i++) {
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    CHECK_INT(rq_txn_commit(t), ==, 0);
    CHECK_INT(rq_stat(env, &st), ==, 0);
  }
  CHECK_INT(st.dedup_entries, ==, 1000);
  rq_env_close(env);
}

/* A queue written by format 1 (counters in `meta`, an id-keyed `dedup` DB)
 * opens, keeps its records, counters and dedup entries, and is moved up. */
/* A format 1 ready record, msgpack by hand: {v:1, seq, received_ms, body
 * (bin, inline), webhook_id, type "t"}. Returns its length. */
static size_t v1_record(uint8_t *buf, uint64_t seq, int64_t received, const char *body,
                        const char *id) {
  uint8_t *p = buf;
  size_t bl = strlen(body), il = strlen(id);
  *p++ = 0x86;
  *p++ = 0; /* v */
  *p++ = 1;
  *p++ = 1; /* seq, small in the test */
  *p++ = (uint8_t)seq;
  *p++ = 2; /* received_ms: int64 */
  *p++ = 0xd3;
  for (int i = 7; i >= 0; i--) *p++ = (uint8_t)((uint64_t)received >> (8 * i));
  *p++ = 3; /* body: bin 8 */
  *p++ = 0xc4;
  *p++ = (uint8_t)bl;
  memcpy(p, body, bl);
  p += bl;
  *p++ = 4; /* webhook_id: fixstr */
  *p++ = (uint8_t)(0xa0 | il);
  memcpy(p, id, il);
  p += il;
  *p++ = 7; /* type */
  *p++ = 0xa1;
  *p++ = 't';
  return (size_t)(p - buf);
}

TEST(upgrade_from_format_1) {
  int64_t now = wall_ms();
  rq_env *env = open_env(NULL);
  const char *ids[] = {"up-1", "up-2", "up-3"},
             *bodies_txt[] = {"{\"a\":1}", "{\"b\":2}", "{\"c\":3}"};
  uint64_t seqs[3];
  for (int i = 0; i < 3; i++) {
    rq_record r = mkrec(bodies_txt[i], ids[i], "t", NULL);
    r.received_ms = now;
    seqs[i] = append1(env, &r);
  }
  ack1(env, seqs[0]);
  rq_env_close(env);
  /* Turn it into the format 1 layout by hand. */
  {
    MDB_env *e;
    MDB_txn *txn;
    MDB_dbi maindb, meta, dt, dd, ready, bodies;
    txn = raw_begin(&e, 0);
    CHECK_INT(mdb_dbi_open(txn, NULL, 0, &maindb), ==, 0);
    /* Bodies inline in `ready`, no `bodies` DB. */
    CHECK_INT(mdb_dbi_open(txn, "ready", 0, &ready), ==, 0);
    CHECK_INT(mdb_dbi_open(txn, "bodies", 0, &bodies), ==, 0);
    for (int i = 1; i < 3; i++) {
      uint8_t kb[8], rec[128];
      be64key(kb, seqs[i]);
      MDB_val k = {8, kb}, v = {v1_record(rec, seqs[i], now, bodies_txt[i], ids[i]), rec};
      CHECK_INT(mdb_put(txn, ready, &k, &v, 0), ==, 0);
    }
    CHECK_INT(mdb_drop(txn, bodies, 1), ==, 0);
    CHECK_INT(mdb_dbi_open(txn, "meta", 0, &meta), ==, 0);
    CHECK_INT(mdb_dbi_open(txn, "dedup", MDB_CREATE, &dd), ==, 0);
    CHECK_INT(mdb_dbi_open(txn, "dedup_time", 0, &dt), ==, 0);
    MDB_val k = {8, "counters"}, v, fk = {6, "format"};
    CHECK_INT(mdb_get(txn, maindb, &k, &v), ==, 0);
    uint8_t buf[128];
    CHECK(v.mv_size <= sizeof buf);
    memcpy(buf, v.mv_data, v.mv_size);
    MDB_val cv = {v.mv_size, buf};
    CHECK_INT(mdb_put(txn, meta, &k, &cv, 0), ==, 0);
    CHECK_INT(mdb_del(txn, maindb, &k, NULL), ==, 0);
    uint8_t one = 1;
    MDB_val ov = {1, &one};
    CHECK_INT(mdb_put(txn, meta, &fk, &ov, 0), ==, 0);
    for (int i = 0; i < 3; i++) { /* the id-keyed index: id -> seen ms */
      uint8_t tk[64];
      be64key(tk, (uint64_t)now);
      memcpy(tk + 8, ids[i], strlen(ids[i]));
      MDB_val tkv = {8 + strlen(ids[i]), tk}, tv = {0, ""};
      CHECK_INT(mdb_put(txn, dt, &tkv, &tv, 0), ==, 0); /* format 1 logged each append */
      MDB_val ik = {strlen(ids[i]), (void *)ids[i]}, sv = {8, tk};
      CHECK_INT(mdb_put(txn, dd, &ik, &sv, 0), ==, 0);
    }
    raw_end(e, txn, true);
  }
  /* A reader (relayctl) of the old layout sees the old counters. */
  rq_options ro = {.flags = RQ_OPEN_READONLY};
  rq_stats st;
  env = open_env(&ro);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 2);
  CHECK_INT(st.appended_total, ==, 3);
  rq_env_close(env);
  /* The writer moves it up and loses nothing. */
  env = open_env(NULL);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 2);
  CHECK_INT(st.appended_total, ==, 3);
  CHECK_INT(st.acked_total, ==, 1);
  CHECK_INT(st.dedup_entries, ==, 3);
  for (int i = 0; i < 3; i++) CHECK_INT(rq_dedup_seen(env, ids[i], now), ==, 1);
  rq_record *out;
  CHECK_INT(rq_lease(env, now, 10, 0, &out), ==, 2);
  CHECK_INT(out[0].seq, ==, seqs[1]);
  CHECK_MEM(out[0].body, out[0].body_len, bodies_txt[1], strlen(bodies_txt[1]));
  CHECK_MEM(out[1].body, out[1].body_len, bodies_txt[2], strlen(bodies_txt[2]));
  CHECK_STR(out[0].webhook_id, "up-2");
  rq_records_free(out, 2);
  /* Format 1 records stay readable for everything: verify, ack, dead-letter. */
  rq_verify_report rep;
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.corrupt, ==, 0);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, seqs[1]), ==, 0);
  CHECK_INT(rq_txn_dead(t, seqs[2], now, "rejected", "X", "m"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_record got;
  CHECK_INT(rq_dlq_get(env, seqs[2], &got), ==, 0);
  CHECK_MEM(got.body, got.body_len, bodies_txt[2], strlen(bodies_txt[2]));
  rq_record_free(&got);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 0);
  CHECK_INT(st.ready_bytes, ==, 0);
  rq_record r = mkrec("{}", "up-4", "t", NULL);
  r.received_ms = now;
  CHECK_INT(append1(env, &r), >, seqs[2]);
  rq_env_close(env);
  {
    MDB_env *e;
    MDB_txn *txn;
    MDB_dbi meta, dt;
    txn = raw_begin(&e, MDB_RDONLY);
    CHECK_INT(mdb_dbi_open(txn, "dedup", 0, &dt), ==, MDB_NOTFOUND);
    CHECK_INT(mdb_dbi_open(txn, "meta", 0, &meta), ==, 0);
    MDB_val k = {8, "counters"}, fk = {6, "format"}, v;
    CHECK_INT(mdb_get(txn, meta, &k, &v), ==, MDB_NOTFOUND);
    CHECK_INT(mdb_get(txn, meta, &fk, &v), ==, 0);
    CHECK_INT(v.mv_size, ==, 1);
    CHECK_INT(*(const uint8_t *)v.mv_data, ==, 2);
    raw_end(e, txn, false);
  }
}

static void lease_expect(rq_env *env, int64_t now, size_t max, const uint64_t *want, int n) {
  rq_record *out = NULL;
  int got = rq_lease(env, now, max, 0, &out);
  CHECK_INT(got, ==, n);
  for (int i = 0; i < n && i < got; i++) CHECK_INT(out[i].seq, ==, want[i]);
  rq_records_free(out, got > 0 ? (size_t)got : 0);
}

/* Leases resume after what is already leased or backed off; whatever makes
 * an earlier record leasable again (release, abort, its retry time) is seen. */
TEST(lease_resumes_and_sees_returns) {
  rq_env *env = open_env(NULL);
  int64_t now = wall_ms();
  uint64_t s[12];
  for (int i = 0; i < 12; i++) {
    char id[16];
    snprintf(id, sizeof id, "lr-%d", i);
    rq_record r = mkrec("{}", id, "t", NULL);
    r.received_ms = now;
    s[i] = append1(env, &r);
  }
  lease_expect(env, now, 3, s, 3);     /* 0 1 2 */
  lease_expect(env, now, 3, s + 3, 3); /* 3 4 5 */
  rq_release(env, s[1]);               /* back to ready */
  uint64_t w1[] = {s[1], s[6]};
  lease_expect(env, now, 2, w1, 2);
  /* An aborted batch gives its records back. */
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[0]), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[2]), ==, 0);
  rq_txn_abort(t);
  uint64_t w2[] = {s[0], s[2], s[7]};
  lease_expect(env, now, 3, w2, 3);
  /* Acked records are gone, nacked ones come back when due: one retry in
   * the future (wall clock), one already due. */
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[0]), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[3], now, now + 60000, "later"), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[4], now, now - 1, "now"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  uint64_t w3[] = {s[4], s[8], s[9], s[10], s[11]};
  lease_expect(env, now, 10, w3, 5);
  lease_expect(env, now, 10, NULL, 0);
  CHECK_INT(rq_next_due_ms(env), ==, now + 60000);
  uint64_t w4[] = {s[3]};
  lease_expect(env, now + 60000, 10, w4, 1);
  /* A retry time in the past by the wall clock, in the future for the caller. */
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[5], now, now - 500, "e"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  lease_expect(env, now - 1000, 10, NULL, 0);
  uint64_t w5[] = {s[5]};
  lease_expect(env, now, 10, w5, 1);
  rq_env_close(env);
}

/* Where a ready body is stored: inline when the record fits a leaf or the
 * header would not cost an extra page, in `bodies` otherwise. Either way it
 * reads back byte for byte. */
TEST(ready_body_placement) {
  rq_env *env = open_env(NULL);
  static char body[12200];
  for (size_t i = 0; i < sizeof body; i++) body[i] = (char)('a' + i % 26);
  /* 12,000 bytes take 3 pages with or without the header: stays whole. */
  const size_t sizes[] = {0, 600, 1900, 2100, 3993, 4000, 4070, 8100, 12000, 12200};
  const int split[] = {0, 0, 0, 0, 1, 1, 1, 1, 0, 1};
  enum { N = sizeof sizes / sizeof sizes[0] };
  uint64_t seqs[N];
  for (int i = 0; i < N; i++) {
    rq_record r = mkrec("", "", "message.new", "messaging:general");
    r.webhook_id = NULL;
    r.body = (const uint8_t *)body;
    r.body_len = sizes[i];
    r.api_key = "0123456789abcdef0123456789abcdef";
    r.user_id = "a-user-with-a-long-identifier-0123456789";
    /* A header of about 150 bytes with these fields. */
    seqs[i] = append1(env, &r);
  }
  rq_env_close(env);
  {
    MDB_env *e;
    MDB_txn *txn;
    MDB_dbi bodies;
    txn = raw_begin(&e, MDB_RDONLY);
    CHECK_INT(mdb_dbi_open(txn, "bodies", 0, &bodies), ==, 0);
    for (int i = 0; i < N; i++) {
      uint8_t kb[8];
      be64key(kb, seqs[i]);
      MDB_val k = {8, kb}, v;
      int rc = mdb_get(txn, bodies, &k, &v);
      if (split[i] != (rc == 0))
        tl_fail(__FILE__, __LINE__, "body of %zu bytes: split %d", sizes[i], rc == 0);
    }
    raw_end(e, txn, false);
  }
  env = open_env(NULL);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, N, 0, &out), ==, N);
  for (int i = 0; i < N; i++) {
    CHECK_INT(out[i].seq, ==, seqs[i]);
    CHECK_MEM(out[i].body, out[i].body_len, body, sizes[i]);
    CHECK_STR(out[i].cid, "messaging:general");
  }
  rq_records_free(out, N);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  uint64_t total = 0;
  for (int i = 0; i < N; i++) total += sizes[i];
  CHECK_INT(st.ready_bytes, ==, total);
  /* Through the DLQ (stored whole there) and back (split again). */
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < N; i++) CHECK_INT(rq_txn_dead(t, seqs[i], NOW, "rejected", "X", "m"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready_bytes, ==, 0);
  CHECK_INT(st.dlq_bytes, ==, total);
  size_t moved = 0;
  CHECK_INT(rq_dlq_replay(env, NULL, 0, NULL, &moved, NULL), ==, 0);
  CHECK_INT(moved, ==, N);
  CHECK_INT(rq_lease(env, NOW, N, 0, &out), ==, N);
  for (int i = 0; i < N; i++) CHECK_MEM(out[i].body, out[i].body_len, body, sizes[i]);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < N; i++) CHECK_INT(rq_txn_ack(t, out[i].seq), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_records_free(out, N);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready_bytes, ==, 0);
  CHECK_INT(st.ready, ==, 0);
  rq_verify_report rep;
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.orphan_bodies, ==, 0);
  rq_env_close(env);
}

/* A ready header whose body is gone is quarantined; a body with no header
 * is removed. Neither can come from a commit, only from a damaged file. */
TEST(verify_missing_and_orphan_bodies) {
  rq_env *env = open_env(NULL);
  /* 4,070 bytes: kept apart from the header (together they need 2 pages). */
  static char big[4071];
  memset(big, ' ', 4070);
  big[0] = '{';
  big[4069] = '}';
  uint64_t s1 = append1(env, &(rq_record){.body = (const uint8_t *)big, .body_len = 4070});
  uint64_t s2 = append1(env, &(rq_record){.body = (const uint8_t *)big, .body_len = 4070});
  rq_env_close(env);
  {
    MDB_env *e;
    MDB_txn *txn;
    MDB_dbi bodies;
    txn = raw_begin(&e, 0);
    CHECK_INT(mdb_dbi_open(txn, "bodies", 0, &bodies), ==, 0);
    uint8_t k1[8], k9[8];
    be64key(k1, s1);
    be64key(k9, s2 + 7);
    MDB_val a = {8, k1}, b = {8, k9}, orphan = {3, "abc"};
    CHECK_INT(mdb_del(txn, bodies, &a, NULL), ==, 0);
    CHECK_INT(mdb_put(txn, bodies, &b, &orphan, 0), ==, 0);
    raw_end(e, txn, true);
  }
  env = open_env(NULL);
  rq_record *out;
  int n = rq_lease(env, NOW, 10, 0, &out); /* the broken one is skipped */
  CHECK_INT(n, ==, 1);
  if (n == 1) CHECK_INT(out[0].seq, ==, s2);
  rq_records_free(out, n > 0 ? (size_t)n : 0);
  rq_release(env, s2);
  rq_verify_report rep;
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.corrupt, ==, 1);
  CHECK_INT(rep.orphan_bodies, ==, 1);
  rq_record got;
  CHECK_INT(rq_dlq_get(env, s1, &got), ==, 0);
  CHECK_STR(got.dlq_reason, "corrupt");
  rq_record_free(&got);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1);
  CHECK_INT(st.dlq, ==, 1);
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.corrupt + rep.orphan_bodies, ==, 0);
  rq_env_close(env);
}

TEST(mixed_batch_one_commit) {
  rq_env *env = open_env(NULL);
  uint64_t s[3];
  for (int i = 0; i < 3; i++) {
    rq_record r = mkrec("{}", NULL, "t", NULL);
    s[i] = append1(env, &r);
  }
  rq_txn *t;
  uint64_t ns;
  rq_record n = mkrec("{\"new\":1}", NULL, "t", NULL);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[0]), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[1], NOW, NOW + 50, "e"), ==, 0);
  CHECK_INT(rq_txn_dead(t, s[2], NOW, "rejected", "X", "y"), ==, 0);
  CHECK_INT(rq_txn_append(t, &n, &ns), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 2);
  CHECK_INT(st.dlq, ==, 1);
  CHECK_INT(st.acked_total, ==, 1);
  CHECK_INT(st.appended_total, ==, 4);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, ns);
  rq_records_free(out, 1);
  rq_env_close(env);
}

TEST(abort_discards) {
  rq_env *env = open_env(NULL);
  rq_record r = mkrec("{}", "ab-1", "t", NULL);
  uint64_t seq = append1(env, &r);
  rq_txn *t;
  rq_record r2 = mkrec("{}", "ab-2", "t", NULL);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r2, NULL), ==, 0);
  CHECK_INT(rq_txn_ack(t, seq), ==, 0);
  rq_txn_abort(t);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1);
  CHECK_INT(st.appended_total, ==, 1);
  CHECK_INT(rq_dedup_seen(env, "ab-2", NOW), ==, 0);
  /* The seq of the aborted append is handed out again: nothing used it. */
  uint64_t s2 = append1(env, &r2);
  CHECK_INT(s2, ==, seq + 1);
  rq_env_close(env);
}

static int fail_hook(void *arg) {
  int *calls = arg;
  (*calls)++;
  return -EIO;
}

TEST(commit_hook_failure_then_recovery) {
  rq_env *env = open_env(NULL);
  rq_record r = mkrec("{}", "hk-1", "t", NULL);
  uint64_t s1 = append1(env, &r);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 1, 0, &out), ==, 1);
  rq_records_free(out, 1);
  int calls = 0;
  rq_set_commit_hook(env, fail_hook, &calls);
  rq_txn *t;
  rq_record r2 = mkrec("{}", "hk-2", "t", NULL);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r2, NULL), ==, 0);
  CHECK_INT(rq_txn_ack(t, s1), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, -EIO);
  CHECK_INT(calls, ==, 1);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1); /* nothing of the batch stored */
  CHECK_INT(st.appended_total, ==, 1);
  CHECK_INT(rq_dedup_seen(env, "hk-2", NOW), ==, 0);
  /* The failed ack's lease is released: the record is leasable again. */
  CHECK_INT(rq_leased_count(env), ==, 0);
  rq_set_commit_hook(env, NULL, NULL);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r2, NULL), ==, 0);
  CHECK_INT(rq_txn_ack(t, s1), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1);
  CHECK_INT(st.appended_total, ==, 2);
  CHECK_INT(st.acked_total, ==, 1);
  rq_env_close(env);
}

TEST(stats_across_restart) {
  rq_env *env = open_env(NULL);
  uint64_t s[5];
  for (int i = 0; i < 5; i++) {
    rq_record r = mkrec("12345", NULL, "t", NULL);
    s[i] = append1(env, &r);
  }
  ack1(env, s[0]);
  ack1(env, s[1]);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_dead(t, s[2], NOW, "rejected", NULL, NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_env_close(env);
  env = open_env(NULL);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.appended_total, ==, 5);
  CHECK_INT(st.acked_total, ==, 2);
  CHECK_INT(st.dead_lettered_total, ==, 1);
  CHECK_INT(st.ready, ==, 2);
  CHECK_INT(st.ready_bytes, ==, 10);
  CHECK_INT(st.dlq, ==, 1);
  CHECK_INT(st.dlq_bytes, ==, 5);
  CHECK_INT(st.inflight, ==, 0);
  /* Seqs keep growing after a restart, even after the tail was acked. */
  ack1(env, s[4]);
  rq_env_close(env);
  env = open_env(NULL);
  rq_record r = mkrec("x", NULL, "t", NULL);
  CHECK_INT(append1(env, &r), ==, s[4] + 1);
  rq_env_close(env);
}

/* Appends until the map is full; returns the number committed. */
static int fill(rq_env *env, size_t body_len, int per_batch, int *full_at_commit) {
  char *body = malloc(body_len + 1);
  memset(body, 'q', body_len);
  body[body_len] = '\0';
  int committed = 0;
  *full_at_commit = -1;
  for (int round = 0; round < 100000; round++) {
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    int rc = 0, n = 0;
    for (int i = 0; i < per_batch && !rc; i++) {
      rq_record r = mkrec(body, NULL, "t", NULL);
      rc = rq_txn_append(t, &r, NULL);
      if (!rc) n++;
    }
    if (rc) {
      CHECK_INT(rc, ==, RQ_MAP_FULL);
      /* The append cap refuses the record but keeps the batch: what fitted
       * before it commits, and a small ack-sized change still fits. */
      CHECK_INT(rq_txn_status(t), ==, 0);
      rq_record r = mkrec(body, NULL, "t", NULL);
      CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_MAP_FULL);
      CHECK_INT(rq_txn_commit(t), ==, 0);
      committed += n;
      *full_at_commit = 0;
      break;
    }
    rc = rq_txn_commit(t);
    if (rc) {
      CHECK_INT(rc, ==, RQ_MAP_FULL);
      *full_at_commit = 1;
      break;
    }
    committed += n;
  }
  free(body);
  return committed;
}

TEST(map_full_then_recovery) {
  rq_options o = {.map_size = 1 << 20, .high_watermark_pct = 50};
  rq_env *env = open_env(&o);
  CHECK_INT(rq_over_watermark(env), ==, 0);
  int how;
  int n = fill(env, 1000, 8, &how);
  CHECK(how >= 0);
  CHECK(n > 100);
  CHECK_INT(rq_over_watermark(env), ==, 1);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, n); /* committed data untouched */
  CHECK(st.map_used <= st.map_size);
  CHECK(st.map_used * 100 >= st.map_size * 50);
  /* Still usable: lease everything and ack most of it. */
  rq_record *out;
  int got = rq_lease(env, NOW, (size_t)n, 0, &out);
  CHECK_INT(got, ==, n);
  for (int i = 0; i < got; i++) CHECK_INT(out[i].body_len, ==, 1000);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < got - 10; i++) CHECK_INT(rq_txn_ack(t, out[i].seq), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_records_free(out, (size_t)got);
  /* LMDB reuses the freed pages once no snapshot needs them. */
  CHECK_INT(rq_over_watermark(env), ==, 0);
  int ok = 0;
  for (int attempt = 0; attempt < 3 && !ok; attempt++) {
    rq_record r = mkrec("{\"after\":\"full\"}", NULL, "t", NULL);
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    int rc = rq_txn_append(t, &r, NULL);
    if (rc == 0)
      rc = rq_txn_commit(t);
    else
      rq_txn_abort(t);
    ok = rc == 0;
  }
  CHECK(ok);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 11);
  /* And it can be filled about as much again. */
  int n2 = fill(env, 1000, 8, &how);
  CHECK(n2 > n / 2);
  rq_env_close(env);
  env = open_env(&o);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 11 + n2);
  rq_env_close(env);
}

TEST(too_big_record) {
  rq_options o = {.map_size = 1 << 20};
  rq_env *env = open_env(&o);
  size_t len = 600 * 1024;
  char *body = malloc(len + 1);
  memset(body, 'z', len);
  body[len] = '\0';
  rq_record r = mkrec(body, NULL, "t", NULL);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_TOO_BIG);
  rq_record small = mkrec("{}", NULL, "t", NULL);
  CHECK_INT(rq_txn_append(t, &small, NULL), ==, 0); /* batch still fine */
  CHECK_INT(rq_txn_commit(t), ==, 0);
  free(body);
  rq_env_close(env);
}

static off_t data_size(void) {
  char path[4200];
  snprintf(path, sizeof path, "%s/data.mdb", tl_tmpdir);
  struct stat st;
  CHECK_INT(stat(path, &st), ==, 0);
  return st.st_size;
}

TEST(steady_append_ack_reuses_space) {
  /* 64 MiB map: data.mdb is grown ahead in 1 MiB steps, far less than the
   * ~7.7 MB that pass through below. */
  rq_options o = {.map_size = 64u << 20};
  rq_env *env = open_env(&o);
  char body[601];
  memset(body, 'b', 600);
  body[600] = '\0';
  off_t at50 = 0;
  for (int round = 0; round < 400; round++) {
    rq_txn *t;
    uint64_t first = 0, seq;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (int i = 0; i < 32; i++) {
      rq_record r = mkrec(body, NULL, "t", NULL);
      CHECK_INT(rq_txn_append(t, &r, &seq), ==, 0);
      if (!i) first = seq;
    }
    CHECK_INT(rq_txn_commit(t), ==, 0);
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (uint64_t s = first; s <= seq; s++) CHECK_INT(rq_txn_ack(t, s), ==, 0);
    CHECK_INT(rq_txn_commit(t), ==, 0);
    if (round == 49) at50 = data_size();
  }
  off_t at400 = data_size();
  /* 12,800 records of 600 bytes went through (~7.7 MB); the file holds a
   * few dozen pages and stopped growing. */
  CHECK(at400 == at50);
  CHECK(at400 < 3 * 1024 * 1024);
  rq_env_close(env);
}

/* The space data.mdb keeps past LMDB's last page is written (zeros), not
 * just allocated: commits that land there then cost no allocation write
 * in fdatasync(). On file systems without O_DIRECT the queue falls back to
 * fallocate(), whose unwritten extents read back as holes: skip there. */
TEST(grows_ahead_into_written_space) {
  char probe[4096];
  snprintf(probe, sizeof probe, "%s/probe", tl_tmpdir);
  int pfd = open(probe, O_CREAT | O_WRONLY | O_DIRECT, 0600);
  if (pfd < 0) {
    fprintf(stderr, "SKIP: no O_DIRECT in %s\n", tl_tmpdir);
    return;
  }
  close(pfd);
  rq_options o = {.map_size = 256u << 20}; /* grows ahead in 4 MiB */
  rq_env *env = open_env(&o);
  char body[3001];
  memset(body, 'z', 3000);
  body[3000] = '\0';
  for (int round = 0; round < 40; round++) { /* ~3.6 MB */
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (int i = 0; i < 30; i++) {
      rq_record r = mkrec(body, NULL, "t", NULL);
      CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
    }
    CHECK_INT(rq_txn_commit(t), ==, 0);
  }
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  char path[4096];
  snprintf(path, sizeof path, "%s/data.mdb", tl_tmpdir);
  int fd = open(path, O_RDONLY);
  CHECK(fd >= 0);
  off_t size = lseek(fd, 0, SEEK_END);
  /* Ahead of LMDB by at least a step, and no hole from LMDB's end on. */
  CHECK((uint64_t)size >= st.map_used + (1u << 20));
  off_t from = (off_t)(st.map_used & ~(uint64_t)4095);
  CHECK_INT(lseek(fd, from, SEEK_HOLE), ==, size);
  close(fd);
  rq_env_close(env);
  /* And LMDB is none the wiser: everything reads back after a reopen. */
  env = open_env(&o);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1200);
  rq_env_close(env);
}

/* Writes a raw value into one of the queue's DBs, bypassing rq. */
static void raw_put(const char *db, uint64_t seq, const void *val, size_t len) {
  MDB_env *e;
  MDB_txn *txn;
  MDB_dbi dbi;
  txn = raw_begin(&e, 0);
  CHECK_INT(mdb_dbi_open(txn, db, 0, &dbi), ==, 0);
  uint8_t kb[8];
  be64key(kb, seq);
  MDB_val k = {8, kb}, v = {len, (void *)val};
  if (strcmp(db, "meta") == 0) {
    k.mv_size = 6;
    k.mv_data = "format";
  }
  CHECK_INT(mdb_put(txn, dbi, &k, &v, 0), ==, 0);
  raw_end(e, txn, true);
}

TEST(verify_quarantines_corrupt) {
  rq_env *env = open_env(NULL);
  rq_record a = mkrec("{\"good\":1}", NULL, "t", NULL);
  uint64_t s1 = append1(env, &a);
  rq_env_close(env);
  static const uint8_t junk[] = {0xc1, 'g', 'a', 'r', 'b', 0x00, 0xff};
  raw_put("ready", s1 + 1, junk, sizeof junk);
  static const uint8_t huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}; /* lies about size */
  raw_put("ready", s1 + 2, huge_array, sizeof huge_array);

  env = open_env(NULL);
  /* Lease never hands out undecodable bytes and never crashes on them. */
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 10, 0, &out), ==, 1);
  CHECK_INT(out[0].seq, ==, s1);
  rq_records_free(out, 1);
  rq_release(env, s1);
  rq_verify_report rep;
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.records, ==, 3);
  CHECK_INT(rep.corrupt, ==, 2);
  CHECK_INT(rep.order_errors, ==, 0);
  rq_record q;
  CHECK_INT(rq_dlq_get(env, s1 + 1, &q), ==, 0);
  CHECK_STR(q.dlq_reason, "corrupt");
  CHECK_MEM(q.body, q.body_len, junk, sizeof junk);
  rq_record_free(&q);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1);
  CHECK_INT(st.dlq, ==, 2);
  CHECK_INT(st.dlq_bytes, ==, sizeof junk + sizeof huge_array);
  /* New appends do not collide with the quarantined seqs. */
  uint64_t s4 = append1(env, &a);
  CHECK(s4 > s1 + 2);
  /* A second walk finds everything clean. */
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.corrupt, ==, 0);
  CHECK_INT(rep.records, ==, 4);
  rq_env_close(env);
}

TEST(newer_format_refused) {
  rq_env *env = open_env(NULL);
  rq_env_close(env);
  uint8_t v = 99;
  raw_put("meta", 0, &v, 1);
  CHECK_INT(rq_env_open(&env, tl_tmpdir, NULL), ==, RQ_VERSION);
}

TEST(readonly_open_rejects_writes) {
  rq_env *env = open_env(NULL);
  rq_record r = mkrec("{}", NULL, "t", NULL);
  append1(env, &r);
  rq_env_close(env);
  rq_options ro = {.flags = RQ_OPEN_READONLY};
  CHECK_INT(rq_env_open(&env, tl_tmpdir, &ro), ==, 0);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, RQ_READONLY);
  CHECK_INT(rq_dlq_purge(env, NULL, 0, NULL, NULL, NULL), ==, RQ_READONLY);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1);
  CHECK_INT(rq_over_watermark(env), ==, 0);
  rq_env_close(env);
}

TEST(second_writer_refused) {
  rq_env *env = open_env(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    rq_env *e2 = NULL;
    int rc = rq_env_open(&e2, tl_tmpdir, NULL);
    _exit(rc == -EAGAIN ? 0 : 1);
  }
  int status;
  CHECK_INT(waitpid(pid, &status, 0), ==, pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  rq_env_close(env);
  /* Once the writer is gone, the next one gets in. */
  env = open_env(NULL);
  rq_env_close(env);
}

/* The child reads stats and the DLQ read-only while the parent appends;
 * what it sees only grows, and it can never write. */
TEST(readonly_child_while_parent_writes) {
  rq_env *env = open_env(NULL);
  rq_record d = mkrec("{\"dead\":1}", NULL, "t", NULL);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append_dead(t, &d, "rejected", NULL, NULL, NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  int go[2];
  CHECK_INT(pipe(go), ==, 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(go[1]);
    rq_options ro = {.flags = RQ_OPEN_READONLY};
    rq_env *r = NULL;
    if (rq_env_open(&r, tl_tmpdir, &ro)) _exit(2);
    char c;
    if (read(go[0], &c, 1) != 1) _exit(3);
    uint64_t last = 0;
    int samples = 0;
    for (int i = 0; i < 200; i++) {
      rq_stats st;
      if (rq_stat(r, &st)) _exit(4);
      if (st.ready < last) _exit(5);
      if (st.appended_total != st.ready + 1) _exit(6);
      last = st.ready;
      rq_record *out;
      int n = rq_dlq_list(r, NULL, &out);
      if (n != 1) _exit(7);
      rq_records_free(out, 1);
      rq_txn *tx;
      if (rq_txn_begin(r, &tx) != RQ_READONLY) _exit(8);
      samples++;
      usleep(1000);
    }
    rq_env_close(r);
    _exit(samples == 200 && last > 0 ? 0 : 9);
  }
  close(go[0]);
  CHECK_INT(write(go[1], "g", 1), ==, 1);
  close(go[1]);
  for (int i = 0; i < 300; i++) {
    rq_record r = mkrec("{\"live\":1}", NULL, "t", NULL);
    append1(env, &r);
  }
  int status;
  CHECK_INT(waitpid(pid, &status, 0), ==, pid);
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), ==, 0);
  CHECK(rq_reader_check(env) >= 0);
  rq_env_close(env);
}

TEST(stale_readers_cleared) {
  rq_env *env = open_env(NULL);
  rq_record r = mkrec("{}", NULL, "t", NULL);
  append1(env, &r);
  /* A read-only child that dies holding a read transaction. */
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    MDB_env *e;
    MDB_txn *txn;
    if (mdb_env_create(&e) || mdb_env_set_maxdbs(e, 8) ||
        mdb_env_open(e, tl_tmpdir, MDB_RDONLY, 0600) || mdb_txn_begin(e, NULL, MDB_RDONLY, &txn))
      _exit(1);
    raise(SIGKILL);
  }
  int status;
  CHECK_INT(waitpid(pid, &status, 0), ==, pid);
  CHECK(WIFSIGNALED(status));
  CHECK_INT(rq_reader_check(env), ==, 1);
  CHECK_INT(rq_reader_check(env), ==, 0);
  rq_env_close(env);
}

/* Lease on one thread while another commits acks: each record is leased
 * exactly once even though leases are released while scans run. */
typedef struct {
  rq_env *env;
  uint64_t *acks;
  size_t nacks;
  pthread_mutex_t mu;
  int done;
} race_ctx;

static void *acker(void *arg) {
  race_ctx *c = arg;
  for (;;) {
    pthread_mutex_lock(&c->mu);
    size_t n = c->nacks;
    uint64_t batch[256];
    if (n > 256) n = 256;
    memcpy(batch, c->acks, n * sizeof *batch);
    memmove(c->acks, c->acks + n, (c->nacks - n) * sizeof *batch);
    c->nacks -= n;
    int done = c->done;
    pthread_mutex_unlock(&c->mu);
    if (!n && done) break;
    if (!n) {
      usleep(100);
      continue;
    }
    rq_txn *t;
    if (rq_txn_begin(c->env, &t)) abort();
    for (size_t i = 0; i < n; i++)
      if (rq_txn_ack(t, batch[i])) abort();
    if (rq_txn_commit(t)) abort();
  }
  return NULL;
}

TEST(lease_races_with_ack) {
  rq_env *env = open_env(NULL);
  enum { N = 3000 };
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < N; i++) {
    rq_record r = mkrec("{}", NULL, "t", NULL);
    CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
  }
  CHECK_INT(rq_txn_commit(t), ==, 0);
  race_ctx c = {.env = env, .acks = malloc(N * sizeof(uint64_t))};
  pthread_mutex_init(&c.mu, NULL);
  pthread_t th;
  CHECK_INT(pthread_create(&th, NULL, acker, &c), ==, 0);
  static unsigned char seen[N + 1];
  memset(seen, 0, sizeof seen);
  int total = 0;
  while (total < N) {
    rq_record *out;
    int n = rq_lease(env, NOW, 64, 0, &out);
    CHECK(n >= 0);
    pthread_mutex_lock(&c.mu);
    for (int i = 0; i < n; i++) {
      CHECK(out[i].seq >= 1 && out[i].seq <= N);
      CHECK_INT(seen[out[i].seq], ==, 0);
      seen[out[i].seq] = 1;
      c.acks[c.nacks++] = out[i].seq;
    }
    pthread_mutex_unlock(&c.mu);
    rq_records_free(out, (size_t)n);
    total += n;
  }
  pthread_mutex_lock(&c.mu);
  c.done = 1;
  pthread_mutex_unlock(&c.mu);
  pthread_join(th, NULL);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 0);
  CHECK_INT(st.acked_total, ==, N);
  CHECK_INT(st.inflight, ==, 0);
  free(c.acks);
  pthread_mutex_destroy(&c.mu);
  rq_env_close(env);
}

/* LMDB itself runs out of pages while a reader pins an old snapshot (live
 * data stays small, so the append cap does not help): the batch is poisoned
 * with RQ_MAP_FULL, nothing committed is lost, and once the reader is gone
 * the freed pages are reused. */
TEST(map_full_from_pinned_reader) {
  rq_options o = {.map_size = 1 << 20};
  rq_env *env = open_env(&o);
  rq_record first = mkrec("{\"first\":1}", NULL, "t", NULL);
  uint64_t s1 = append1(env, &first);
  int up[2], down[2];
  CHECK_INT(pipe(up), ==, 0);
  CHECK_INT(pipe(down), ==, 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    MDB_env *e;
    MDB_txn *txn;
    char c = 'r';
    if (mdb_env_create(&e) || mdb_env_set_maxdbs(e, 8) ||
        mdb_env_open(e, tl_tmpdir, MDB_RDONLY, 0600) || mdb_txn_begin(e, NULL, MDB_RDONLY, &txn))
      _exit(1);
    if (write(up[1], &c, 1) != 1) _exit(2);
    if (read(down[0], &c, 1) != 1) _exit(3); /* hold the snapshot until told */
    raw_end(e, txn, false);
    _exit(0);
  }
  char c;
  CHECK_INT(read(up[0], &c, 1), ==, 1);
  char body[1001];
  memset(body, 'p', 1000);
  body[1000] = '\0';
  int rc = 0, rounds = 0, poisoned = 0;
  for (; rounds < 5000 && !rc; rounds++) {
    rq_txn *t;
    uint64_t seq[8];
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (int i = 0; i < 8 && !rc; i++) {
      rq_record r = mkrec(body, NULL, "t", NULL);
      rc = rq_txn_append(t, &r, &seq[i]);
    }
    if (rc) {
      CHECK_INT(rc, ==, RQ_MAP_FULL);
      CHECK_INT(rq_txn_status(t), ==, RQ_MAP_FULL);
      rq_record r = mkrec("{}", NULL, "t", NULL);
      CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_BAD_TXN);
      CHECK_INT(rq_txn_commit(t), ==, RQ_MAP_FULL);
      poisoned = 1;
      break;
    }
    rc = rq_txn_commit(t);
    if (rc) break;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (int i = 0; i < 8 && !rc; i++) rc = rq_txn_ack(t, seq[i]);
    if (rc) {
      /* Even a delete needs fresh pages (copy-on-write). */
      CHECK_INT(rc, ==, RQ_MAP_FULL);
      CHECK_INT(rq_txn_status(t), ==, RQ_MAP_FULL);
      CHECK_INT(rq_txn_commit(t), ==, RQ_MAP_FULL);
      poisoned = 1;
      break;
    }
    rc = rq_txn_commit(t);
  }
  CHECK_INT(rc, ==, RQ_MAP_FULL);
  CHECK(rounds > 3);
  (void)poisoned;
  /* Committed data is intact and readable. */
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK(st.ready >= 1);
  rq_record *out;
  int n = rq_lease(env, NOW, 100, 0, &out);
  CHECK(n >= 1);
  CHECK_INT(out[0].seq, ==, s1);
  CHECK_MEM(out[0].body, out[0].body_len, first.body, first.body_len);
  rq_records_free(out, (size_t)n);
  /* Reader gone: the pinned pages come back. */
  CHECK_INT(write(down[1], "x", 1), ==, 1);
  int status;
  CHECK_INT(waitpid(pid, &status, 0), ==, pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  int ok = 0;
  for (int attempt = 0; attempt < 4 && !ok; attempt++) {
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    rq_record r = mkrec(body, NULL, "t", NULL);
    rc = rq_txn_append(t, &r, NULL);
    if (rc == 0)
      rc = rq_txn_commit(t);
    else
      rq_txn_abort(t);
    ok = rc == 0;
  }
  CHECK(ok);
  rq_env_close(env);
}

TEST(argument_edge_cases) {
  rq_env *env = open_env(NULL);
  rq_record r = mkrec("{}", NULL, "t", NULL);
  uint64_t s1 = append1(env, &r);
  rq_record *out = NULL;
  CHECK_INT(rq_lease(env, NOW, 0, 0, &out), ==, 0);
  CHECK(out == NULL);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  rq_record bad = mkrec("{}", NULL, "t", NULL);
  bad.body = NULL; /* body_len 2 without bytes */
  CHECK_INT(rq_txn_append(t, &bad, NULL), ==, -EINVAL);
  CHECK_INT(rq_txn_status(t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  uint64_t id;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_dead(t, s1, NOW, "rejected", NULL, NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  id = s1;
  rq_dlq_filter end = {.after_seq = UINT64_MAX};
  CHECK_INT(rq_dlq_list(env, &end, &out), ==, 0);
  rq_records_free(out, 0);
  rq_dlq_filter none = {.reason = "expired"};
  size_t moved = 9;
  CHECK_INT(rq_dlq_replay(env, NULL, 0, &none, &moved, NULL), ==, 0);
  CHECK_INT(moved, ==, 0);
  CHECK_INT(rq_dlq_replay(env, &id, 1, NULL, &moved, NULL), ==, 0);
  CHECK_INT(moved, ==, 1);
  /* A file where a directory is expected. */
  char path[4200];
  snprintf(path, sizeof path, "%s/data.mdb", tl_tmpdir);
  rq_env *e2 = NULL;
  CHECK_INT(rq_env_open(&e2, path, NULL), ==, -ENOTDIR);
  rq_env_close(env);
}

TEST(verify_rebuilds_gauges) {
  rq_env *env = open_env(NULL);
  uint64_t s[3];
  for (int i = 0; i < 3; i++) {
    rq_record r = mkrec("abcd", NULL, "t", NULL);
    s[i] = append1(env, &r);
  }
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[0], NOW, NOW, "e"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_env_close(env);
  /* Damage the counters: a gauge claims 1000 ready records. */
  {
    MDB_env *e;
    MDB_txn *txn;
    MDB_dbi dbi;
    txn = raw_begin(&e, 0);
    CHECK_INT(mdb_dbi_open(txn, NULL, 0, &dbi), ==, 0); /* the main DB (FORMAT.md) */
    MDB_val k = {8, "counters"}, v;
    CHECK_INT(mdb_get(txn, dbi, &k, &v), ==, 0);
    uint8_t buf[128];
    CHECK(v.mv_size <= sizeof buf);
    memcpy(buf, v.mv_data, v.mv_size);
    /* [0x9a, (0xcf + 8 bytes) x 10]: element 6 is ready_count. */
    size_t off = 1 + 6 * 9 + 1;
    memset(buf + off, 0, 8);
    buf[off + 6] = 0x03;
    buf[off + 7] = 0xe8;
    MDB_val nv = {v.mv_size, buf};
    CHECK_INT(mdb_put(txn, dbi, &k, &nv, 0), ==, 0);
    raw_end(e, txn, true);
  }
  env = open_env(NULL);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1000);
  rq_verify_report rep;
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.records, ==, 3);
  CHECK_INT(rep.corrupt, ==, 0);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 3);
  CHECK_INT(st.ready_bytes, ==, 12);
  /* The nacked record kept its retry state through verify. */
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW, 1, 0, &out), ==, 1);
  CHECK_INT(out[0].attempts, ==, 1);
  rq_records_free(out, 1);
  rq_env_close(env);
}

/* FIFO under concurrency: a writer thread appends records of 8 groups and
 * applies the drainer's acks/nacks in its batches, while the drainer (this
 * thread) leases with RQ_LEASE_FIFO. Every lease must be the oldest unacked
 * record of its group, with nothing else of that group in flight. */
enum { FIFO_GROUPS = 8, FIFO_TOTAL = 3000 };

typedef struct {
  uint64_t seq;
  int ack; /* 1 ack, 0 nack */
  int group;
} fifo_op;

typedef struct {
  rq_env *env;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  fifo_op ops[4096];
  size_t nops;
  int done_groups[FIFO_GROUPS]; /* ops of a group handed to a commit */
  int appended, stop;
  int counter[FIFO_GROUPS];
} fifo_ctx;

static void *fifo_writer(void *arg) {
  fifo_ctx *c = arg;
  unsigned seed = 7;
  for (;;) {
    fifo_op ops[4096];
    pthread_mutex_lock(&c->mu);
    size_t n = c->nops;
    memcpy(ops, c->ops, n * sizeof *ops);
    c->nops = 0;
    int stop = c->stop;
    pthread_mutex_unlock(&c->mu);
    if (stop) break;
    rq_txn *t;
    if (rq_txn_begin(c->env, &t)) abort();
    int k = c->appended < FIFO_TOTAL ? 1 + (int)(rand_r(&seed) % 20) : 0;
    for (int i = 0; i < k && c->appended < FIFO_TOTAL; i++) {
      int g = (int)(rand_r(&seed) % FIFO_GROUPS);
      char body[64], cid[16];
      snprintf(body, sizeof body, "g=%d n=%d", g, c->counter[g]++);
      snprintf(cid, sizeof cid, "c%d", g);
      rq_record r = mkrec(body, NULL, "fifo", cid);
      if (rq_txn_append(t, &r, NULL)) abort();
      c->appended++;
    }
    for (size_t i = 0; i < n; i++) {
      int rc = ops[i].ack ? rq_txn_ack(t, ops[i].seq) : rq_txn_nack(t, ops[i].seq, NOW, 0, "retry");
      if (rc) abort();
    }
    /* Counted before the commit: the library releases the leases inside
     * rq_txn_commit(), so a lease of the group's next record may come
     * before the commit call returns. */
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) c->done_groups[ops[i].group]++;
    pthread_mutex_unlock(&c->mu);
    if (rq_txn_commit(t)) abort();
    if (n || k) {
      pthread_mutex_lock(&c->mu);
      pthread_cond_broadcast(&c->cv);
      pthread_mutex_unlock(&c->mu);
    } else {
      usleep(200);
    }
  }
  return NULL;
}

TEST(fifo_order_under_concurrency) {
  rq_env *env = open_env(NULL);
  fifo_ctx c = {.env = env};
  pthread_mutex_init(&c.mu, NULL);
  pthread_cond_init(&c.cv, NULL);
  pthread_t th;
  CHECK_INT(pthread_create(&th, NULL, fifo_writer, &c), ==, 0);
  int next[FIFO_GROUPS] = {0}, submitted[FIFO_GROUPS] = {0};
  int inflight[FIFO_GROUPS] = {0};
  unsigned seed = 11;
  int acked = 0, nacks = 0;
  while (acked < FIFO_TOTAL) {
    rq_record *out;
    int n = rq_lease(env, NOW, 6, RQ_LEASE_FIFO, &out);
    CHECK(n >= 0);
    pthread_mutex_lock(&c.mu);
    for (int i = 0; i < n; i++) {
      int g, num;
      CHECK_INT(sscanf((const char *)out[i].body, "g=%d n=%d", &g, &num), ==, 2);
      CHECK(g >= 0 && g < FIFO_GROUPS);
      /* The group's previous op must at least be in a commit by now. */
      if (c.done_groups[g] == submitted[g]) inflight[g] = 0;
      CHECK_INT(inflight[g], ==, 0);
      CHECK_INT(num, ==, next[g]);
      int ack = rand_r(&seed) % 5 != 0;
      c.ops[c.nops++] = (fifo_op){out[i].seq, ack, g};
      submitted[g]++;
      inflight[g] = 1;
      if (ack) {
        next[g]++;
        acked++;
      } else {
        nacks++;
      }
    }
    if (n == 0) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 2000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&c.cv, &c.mu, &ts);
    }
    pthread_mutex_unlock(&c.mu);
    rq_records_free(out, (size_t)n);
  }
  pthread_mutex_lock(&c.mu);
  while (c.nops) {
    pthread_mutex_unlock(&c.mu);
    usleep(1000);
    pthread_mutex_lock(&c.mu);
  }
  c.stop = 1;
  pthread_mutex_unlock(&c.mu);
  pthread_join(th, NULL);
  CHECK(nacks > 0);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 0);
  CHECK_INT(st.acked_total, ==, FIFO_TOTAL);
  CHECK_INT(st.inflight, ==, 0);
  pthread_cond_destroy(&c.cv);
  pthread_mutex_destroy(&c.mu);
  rq_env_close(env);
}

/* The FIFO lease index (queue/rq_fifo.c) against a model of the rule it
 * implements: walk the ready records in seq order; the first record of a
 * group (cid, else type; none: a group of its own) is its head; a head that
 * is neither leased nor waiting for its retry is leasable, oldest first.
 * Random appends, leases (FIFO and not), acks, nacks, dead-letters, aborted
 * batches, releases, DLQ replays and reopens; every lease must return
 * exactly what the model says. */
enum { M_MAX = 6000 };
typedef struct {
  uint64_t seq;
  int group; /* < 0: ungrouped */
  int64_t due;
  bool leased, present, dead;
} mrec;

typedef struct {
  mrec r[M_MAX];
  int n;
} model;

static mrec *model_find(model *m, uint64_t seq) {
  for (int i = 0; i < m->n; i++)
    if (m->r[i].seq == seq) return &m->r[i];
  return NULL;
}

/* Expected seqs of a lease at `now` (FIFO or not), in order. */
static int model_lease(model *m, int64_t now, int max, bool fifo, uint64_t *out) {
  bool seen[64] = {0};
  int n = 0;
  for (int i = 0; i < m->n && n < max; i++) {
    mrec *r = &m->r[i];
    if (!r->present) continue;
    if (fifo && r->group >= 0) {
      if (seen[r->group]) continue;
      seen[r->group] = true;
    }
    if (r->leased || r->due > now) continue;
    out[n++] = r->seq;
  }
  return n;
}

/* Earliest due among unleased FIFO heads (0 if never nacked). */
static int64_t model_next_due(model *m) {
  bool seen[64] = {0};
  int64_t best = INT64_MAX;
  for (int i = 0; i < m->n; i++) {
    mrec *r = &m->r[i];
    if (!r->present) continue;
    if (r->group >= 0) {
      if (seen[r->group]) continue;
      seen[r->group] = true;
    }
    if (!r->leased && r->due < best) best = r->due;
  }
  return best;
}

static void model_run_at(unsigned seed0, int64_t base) {
  unsigned seed = seed0;
  static model m;
  memset(&m, 0, sizeof m);
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/run%u", tl_tmpdir, seed0);
  CHECK_INT(mkdir(dir, 0700), ==, 0);
  rq_env *env = NULL;
  CHECK_INT(rq_env_open(&env, dir, NULL), ==, 0);
  int64_t now = base;
  static const char *cids[] = {"m:a", "m:b", "m:c", "m:d", "m:e"};
  static const char *types[] = {"user.updated", "user.banned"};
  int fifo_leased = 0, nacked = 0, replayed = 0, reopened = 0;
  for (int step = 0; step < 1500 && m.n < M_MAX - 8; step++) {
    now += rand_r(&seed) % 150;
    int op = rand_r(&seed) % 100;
    if (op < 30) { /* append a batch */
      rq_txn *t;
      CHECK_INT(rq_txn_begin(env, &t), ==, 0);
      int k = 1 + rand_r(&seed) % 5;
      for (int i = 0; i < k; i++) {
        int g = rand_r(&seed) % 8; /* 0-4 cid, 5-6 type only, 7 ungrouped */
        rq_record r = mkrec("{\"type\":\"x\"}", NULL,
                            g < 5   ? "message.new"
                            : g < 7 ? types[g - 5]
                                    : NULL,
                            g < 5 ? cids[g] : NULL);
        uint64_t seq;
        CHECK_INT(rq_txn_append(t, &r, &seq), ==, 0);
        m.r[m.n++] = (mrec){.seq = seq, .group = g < 7 ? g : -1, .present = true};
      }
      CHECK_INT(rq_txn_commit(t), ==, 0);
    } else if (op < 62) { /* lease and compare */
      /* The wall-clock runs lease mostly without FIFO (the scan). */
      bool fifo = op < (base == NOW ? 59 : 40);
      int max = 1 + rand_r(&seed) % 6;
      uint64_t want[8];
      int nw = model_lease(&m, now, max, fifo, want);
      rq_record *out;
      int got = rq_lease(env, now, (size_t)max, fifo ? RQ_LEASE_FIFO : 0, &out);
      if (got != nw) {
        fprintf(stderr, "seed %u step %d fifo %d max %d now %lld: got", seed0, step, fifo, max,
                (long long)now);
        for (int i = 0; i < got; i++) fprintf(stderr, " %llu", (unsigned long long)out[i].seq);
        fprintf(stderr, "; want");
        for (int i = 0; i < nw; i++) fprintf(stderr, " %llu", (unsigned long long)want[i]);
        fprintf(stderr, "\nmodel:");
        for (int i = 0; i < m.n; i++)
          if (m.r[i].present)
            fprintf(stderr, " %llu:g%d%s@%lld", (unsigned long long)m.r[i].seq, m.r[i].group,
                    m.r[i].leased ? "L" : "", (long long)(m.r[i].due ? m.r[i].due - NOW : 0));
        fprintf(stderr, "\n");
      }
      CHECK_INT(got, ==, nw);
      for (int i = 0; i < got && i < nw; i++) {
        CHECK_INT(out[i].seq, ==, want[i]);
        model_find(&m, out[i].seq)->leased = true;
        fifo_leased += fifo;
      }
      rq_records_free(out, (size_t)(got > 0 ? got : 0));
    } else if (op < 87) { /* end some leases in one batch, maybe aborted */
      rq_txn *t;
      CHECK_INT(rq_txn_begin(env, &t), ==, 0);
      bool commit = rand_r(&seed) % 10 != 0;
      mrec *touched[64];
      int what[64], nt = 0;
      int64_t dues[64];
      for (int i = 0; i < m.n && nt < 64; i++) {
        mrec *r = &m.r[i];
        if (!r->present || !r->leased || rand_r(&seed) % 2) continue;
        int w = rand_r(&seed) % 4; /* 0-1 ack, 2 nack, 3 dead-letter */
        dues[nt] = now - 100 + rand_r(&seed) % 500;
        if (w <= 1)
          CHECK_INT(rq_txn_ack(t, r->seq), ==, 0);
        else if (w == 2)
          CHECK_INT(rq_txn_nack(t, r->seq, now, dues[nt], "e"), ==, 0);
        else
          CHECK_INT(rq_txn_dead(t, r->seq, now, "rejected", "X", "m"), ==, 0);
        touched[nt] = r;
        what[nt++] = w;
      }
      if (commit) {
        CHECK_INT(rq_txn_commit(t), ==, 0);
      } else {
        rq_txn_abort(t);
      }
      for (int i = 0; i < nt; i++) {
        touched[i]->leased = false;
        if (!commit) continue;
        nacked += what[i] == 2;
        if (what[i] == 2)
          touched[i]->due = dues[i];
        else
          touched[i]->present = false;
        if (what[i] == 3) touched[i]->dead = true;
      }
    } else if (op < 92) { /* release one lease */
      for (int i = 0; i < m.n; i++)
        if (m.r[i].present && m.r[i].leased) {
          rq_release(env, m.r[i].seq);
          m.r[i].leased = false;
          break;
        }
    } else if (op < 96) { /* FIFO due time */
      int64_t want = model_next_due(&m), got = rq_next_due_ms_flags(env, RQ_LEASE_FIFO);
      /* 0 may stand for a head a lease already found due. */
      if (got == 0)
        CHECK(want <= now);
      else
        CHECK_INT(got, ==, want);
      /* Without FIFO: never later than the earliest unleased record. */
      int64_t pw = INT64_MAX;
      for (int i = 0; i < m.n; i++)
        if (m.r[i].present && !m.r[i].leased && m.r[i].due < pw) pw = m.r[i].due;
      int64_t pg = rq_next_due_ms(env);
      if (pg > pw)
        fprintf(stderr, "seed %u step %d: next_due %lld want <= %lld\n", seed0, step, (long long)pg,
                (long long)pw);
      CHECK(pg <= pw);
    } else if (op < 98) { /* replay the DLQ: new seqs at the tail, in seq order */
      size_t moved = 0;
      CHECK_INT(rq_dlq_replay(env, NULL, 0, NULL, &moved, NULL), ==, 0);
      uint64_t next = m.n ? m.r[m.n - 1].seq + 1 : 1; /* seqs are never reused */
      int n0 = m.n;
      size_t nd = 0;
      for (int i = 0; i < n0; i++)
        if (m.r[i].dead) {
          m.r[i].dead = false;
          m.r[m.n++] = (mrec){.seq = next++, .group = m.r[i].group, .present = true};
          nd++;
        }
      CHECK_INT(nd, ==, moved);
      replayed += (int)moved;
    } else { /* reopen: leases are per process and end with it */
      rq_env_close(env);
      CHECK_INT(rq_env_open(&env, dir, NULL), ==, 0);
      for (int i = 0; i < m.n; i++) m.r[i].leased = false;
      reopened++;
    }
  }
  rq_env_close(env);
  /* The run must have exercised what it claims to. */
  CHECK(fifo_leased > (base == NOW ? 300 : 100));
  CHECK(nacked > 50);
  CHECK(replayed > 5);
  CHECK(reopened > 3);
}

static void model_run(unsigned seed0) {
  model_run_at(seed0, NOW);
}

/* The same with due times around the wall clock, which the plain lease
 * scan compares against when a lease ends (scan_due). */
TEST(lease_index_matches_model_wall_clock) {
  model_run_at(11, wall_ms());
  model_run_at(12, wall_ms());
  model_run_at(13, wall_ms());
}

TEST(fifo_index_matches_model) {
  model_run(1);
  model_run(2);
  model_run(3);
}

/* Appends n records of one group in one commit; returns the first seq. */
static uint64_t append_group(rq_env *env, int n, const char *cid) {
  rq_txn *t;
  uint64_t first = 0;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < n; i++) {
    rq_record r = mkrec("{\"type\":\"message.new\"}", NULL, "message.new", cid);
    uint64_t seq;
    CHECK_INT(rq_txn_append(t, &r, &seq), ==, 0);
    if (!i) first = seq;
  }
  CHECK_INT(rq_txn_commit(t), ==, 0);
  return first;
}

/* One busy group drained through FIFO leases: strictly in order, one at a
 * time, while the index gives back the room the backlog took; then the
 * idle group comes back to life with new records. */
TEST(fifo_one_busy_group) {
  rq_env *env = open_env(NULL);
  enum { N = 700 };
  uint64_t first = append_group(env, N, "livestream:big");
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < N; i++) {
      rq_record *out, *none;
      CHECK_INT(rq_lease(env, NOW, 10, RQ_LEASE_FIFO, &out), ==, 1);
      CHECK_INT(out[0].seq, ==, first + (uint64_t)i);
      CHECK_INT(rq_lease(env, NOW, 10, RQ_LEASE_FIFO, &none), ==, 0); /* head in flight */
      rq_records_free(none, 0);
      rq_records_free(out, 1);
      ack1(env, first + (uint64_t)i);
    }
    rq_record *out;
    CHECK_INT(rq_lease(env, NOW, 10, RQ_LEASE_FIFO, &out), ==, 0);
    CHECK_INT(rq_next_due_ms_flags(env, RQ_LEASE_FIFO), ==, INT64_MAX);
    /* The group is idle now; new records bring it back. */
    if (!round) first = append_group(env, N, "livestream:big");
  }
  rq_env_close(env);
}

/* A ready record whose header no longer decodes (damaged, or written by a
 * newer record version) while its body, kept apart in `bodies`, is intact:
 * quarantine must keep the event bytes, not replace them by the header's. */
TEST(verify_keeps_body_of_corrupt_header) {
  rq_env *env = open_env(NULL);
  static char big[4071];
  memset(big, 'x', 4070);
  big[0] = '{';
  big[4069] = '}';
  rq_record r = mkrec(big, NULL, "t", "c:1");
  uint64_t s1 = append1(env, &r);
  uint64_t s2 = append1(env, &r);
  rq_env_close(env);
  /* {0: 2, 1: s1}: record version 2, unknown to this reader. */
  uint8_t hdr[] = {0x82, 0x00, 0x02, 0x01, 0xcf, 0, 0, 0, 0, 0, 0, 0, 0};
  be64key(hdr + 5, s1);
  raw_put("ready", s1, hdr, sizeof hdr);
  env = open_env(NULL);
  rq_verify_report rep;
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.corrupt, ==, 1);
  rq_record q;
  CHECK_INT(rq_dlq_get(env, s1, &q), ==, 0);
  CHECK_STR(q.dlq_reason, "corrupt");
  CHECK_MEM(q.body, q.body_len, big, 4070);
  rq_record_free(&q);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 1);
  CHECK_INT(st.ready_bytes, ==, 4070);
  CHECK_INT(st.dlq, ==, 1);
  CHECK_INT(st.dlq_bytes, ==, 4070);
  /* Replay brings the event itself back. */
  size_t moved = 0;
  CHECK_INT(rq_dlq_replay(env, &s1, 1, NULL, &moved, NULL), ==, 0);
  CHECK_INT(moved, ==, 1);
  rq_record *out;
  int n = rq_lease(env, NOW, 10, 0, &out);
  CHECK_INT(n, ==, 2);
  if (n == 2) {
    CHECK_INT(out[0].seq, ==, s2);
    CHECK_MEM(out[1].body, out[1].body_len, big, 4070);
  }
  rq_records_free(out, n > 0 ? (size_t)n : 0);
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.corrupt + rep.orphan_bodies, ==, 0);
  rq_env_close(env);
}

/* Counters against a model of what is stored, over a random mix of every
 * write operation, aborted batches and reopens. */
#define CM_MAX 3000
typedef struct {
  uint64_t seq;
  size_t len;
  int where; /* 0 gone, 1 ready, 2 dlq */
  bool leased;
} cmrec;

static void counters_run(unsigned seed0) {
  unsigned seed = seed0;
  static cmrec m[CM_MAX];
  int n = 0;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/c%u", tl_tmpdir, seed0);
  CHECK_INT(mkdir(dir, 0700), ==, 0);
  rq_env *env = NULL;
  CHECK_INT(rq_env_open(&env, dir, NULL), ==, 0);
  static char body[6000];
  memset(body, 'b', sizeof body);
  int64_t now = wall_ms();
  uint64_t appended = 0, acked = 0, dead = 0;
  for (int step = 0; step < 600 && n < CM_MAX - 20; step++) {
    now += rand_r(&seed) % 50;
    int op = rand_r(&seed) % 100;
    if (op < 35) {
      rq_txn *t;
      CHECK_INT(rq_txn_begin(env, &t), ==, 0);
      bool commit = rand_r(&seed) % 8 != 0;
      int k = 1 + rand_r(&seed) % 6, n0 = n;
      for (int i = 0; i < k; i++) {
        size_t len = (size_t)(rand_r(&seed) % 3 == 0 ? rand_r(&seed) % 6000 : rand_r(&seed) % 300);
        char save = body[len];
        body[len] = '\0';
        rq_record r = mkrec(body, NULL, "t", rand_r(&seed) % 2 ? "c:1" : "c:2");
        body[len] = save;
        r.body_len = len;
        r.received_ms = now;
        uint64_t seq;
        bool d = rand_r(&seed) % 5 == 0;
        if (d)
          CHECK_INT(rq_txn_append_dead(t, &r, "too_large", NULL, NULL, &seq), ==, 0);
        else
          CHECK_INT(rq_txn_append(t, &r, &seq), ==, 0);
        m[n++] = (cmrec){seq, len, d ? 2 : 1, false};
      }
      if (commit) {
        CHECK_INT(rq_txn_commit(t), ==, 0);
        appended += (uint64_t)k;
        for (int i = n0; i < n; i++) dead += m[i].where == 2;
      } else {
        rq_txn_abort(t);
        n = n0;
      }
    } else if (op < 55) {
      rq_record *out;
      int got = rq_lease(env, now, 8, rand_r(&seed) % 2 ? RQ_LEASE_FIFO : 0, &out);
      CHECK(got >= 0);
      for (int i = 0; i < got; i++)
        for (int j = 0; j < n; j++)
          if (m[j].seq == out[i].seq) {
            CHECK_INT(m[j].where, ==, 1);
            CHECK_INT(out[i].body_len, ==, m[j].len);
            m[j].leased = true;
          }
      rq_records_free(out, (size_t)(got > 0 ? got : 0));
    } else if (op < 80) {
      rq_txn *t;
      CHECK_INT(rq_txn_begin(env, &t), ==, 0);
      bool commit = rand_r(&seed) % 6 != 0;
      int idx[64], what[64], nt = 0;
      for (int j = 0; j < n && nt < 64; j++) {
        if (m[j].where != 1 || !m[j].leased || rand_r(&seed) % 2) continue;
        int w = rand_r(&seed) % 3;
        if (w == 0) CHECK_INT(rq_txn_ack(t, m[j].seq), ==, 0);
        if (w == 1) CHECK_INT(rq_txn_nack(t, m[j].seq, now, now - 1, "e"), ==, 0);
        if (w == 2) CHECK_INT(rq_txn_dead(t, m[j].seq, now, "rejected", "X", "m"), ==, 0);
        idx[nt] = j;
        what[nt++] = w;
      }
      if (commit)
        CHECK_INT(rq_txn_commit(t), ==, 0);
      else
        rq_txn_abort(t);
      for (int i = 0; i < nt; i++) {
        m[idx[i]].leased = false;
        if (!commit) continue;
        if (what[i] == 0) m[idx[i]].where = 0, acked++;
        if (what[i] == 2) m[idx[i]].where = 2, dead++;
      }
    } else if (op < 86) {
      size_t moved = 0;
      rq_dlq_filter f = {.limit = 5};
      CHECK_INT(rq_dlq_replay(env, NULL, 0, &f, &moved, NULL), ==, 0);
      int n0 = n;
      for (int j = 0; j < n0 && moved; j++)
        if (m[j].where == 2) {
          m[j].where = 0;
          moved--;
          m[n++] = (cmrec){0, m[j].len, 1, false};
        }
      /* New seqs: read them back from the tail of the ready queue. */
      rq_record *out;
      int got = rq_lease(env, INT64_MAX, 100000, 0, &out);
      CHECK(got >= 0);
      for (int i = 0; i < got; i++) rq_release(env, out[i].seq);
      int fill = n - 1;
      for (int i = got - 1; i >= 0 && fill >= n0; i--) m[fill--].seq = out[i].seq;
      rq_records_free(out, (size_t)(got > 0 ? got : 0));
    } else if (op < 90) {
      for (int j = 0; j < n; j++)
        if (m[j].where == 2 && rand_r(&seed) % 3 == 0) {
          size_t purged = 0;
          CHECK_INT(rq_dlq_purge(env, &m[j].seq, 1, NULL, &purged, NULL), ==, 0);
          CHECK_INT(purged, ==, 1);
          m[j].where = 0;
          break;
        }
    } else if (op < 94) {
      rq_verify_report rep;
      CHECK_INT(rq_verify(env, &rep), ==, 0);
      CHECK_INT(rep.corrupt + rep.order_errors + rep.orphan_bodies, ==, 0);
    } else {
      rq_env_close(env);
      CHECK_INT(rq_env_open(&env, dir, NULL), ==, 0);
      for (int j = 0; j < n; j++) m[j].leased = false;
    }
    uint64_t rc_ = 0, rb = 0, dc = 0, db = 0, infl = 0;
    for (int j = 0; j < n; j++) {
      if (m[j].where == 1) rc_++, rb += m[j].len, infl += m[j].leased;
      if (m[j].where == 2) dc++, db += m[j].len;
    }
    rq_stats st;
    CHECK_INT(rq_stat(env, &st), ==, 0);
    if (st.ready != rc_ || st.ready_bytes != rb || st.dlq != dc || st.dlq_bytes != db ||
        st.inflight != infl || st.appended_total != appended || st.acked_total != acked ||
        st.dead_lettered_total != dead) {
      fprintf(stderr, "seed %u step %d op %d\n", seed0, step, op);
      CHECK_INT(st.ready, ==, rc_);
      CHECK_INT(st.ready_bytes, ==, rb);
      CHECK_INT(st.dlq, ==, dc);
      CHECK_INT(st.dlq_bytes, ==, db);
      CHECK_INT(st.inflight, ==, infl);
      CHECK_INT(st.appended_total, ==, appended);
      CHECK_INT(st.acked_total, ==, acked);
      CHECK_INT(st.dead_lettered_total, ==, dead);
      break;
    }
  }
  rq_env_close(env);
}

TEST(counters_match_model) {
  for (unsigned s = 1; s <= 4; s++) counters_run(s);
}

/* Ids over 400 bytes (stored hashed) and ids differing only past byte 392
 * are told apart, and found again after a reopen. */
TEST(dedup_long_ids_after_reopen) {
  rq_env *env = open_env(NULL);
  int64_t now = wall_ms();
  static char a[1001], b[1001], c[401];
  memset(a, 'a', 1000);
  memcpy(b, a, sizeof a);
  b[999] = 'b';
  memset(c, 'a', 400);
  rq_record r = mkrec("{}", a, "t", NULL);
  r.received_ms = now;
  append1(env, &r);
  r.webhook_id = c;
  append1(env, &r);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  r.webhook_id = b;
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
  r.webhook_id = a;
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_DUPLICATE);
  rq_txn_abort(t);
  rq_env_close(env);
  env = open_env(NULL);
  CHECK_INT(rq_dedup_seen(env, a, now + 1), ==, 1);
  CHECK_INT(rq_dedup_seen(env, c, now + 1), ==, 1);
  CHECK_INT(rq_dedup_seen(env, b, now + 1), ==, 0);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  r.webhook_id = a;
  r.received_ms = now + 5;
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_DUPLICATE);
  r.webhook_id = b;
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_DUPLICATE);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  /* The clock steps back an hour: ids seen "later" are still duplicates. */
  CHECK_INT(rq_dedup_seen(env, a, now - 3600 * 1000), ==, 1);
  r.webhook_id = "fresh";
  r.received_ms = now - 3600 * 1000;
  append1(env, &r);
  rq_env_close(env);
  env = open_env(NULL);
  CHECK_INT(rq_dedup_seen(env, b, now + 10), ==, 1);
  CHECK_INT(rq_dedup_seen(env, a, now + 600 * 1000 + 1), ==, 0);
  rq_env_close(env);
}

/* The file system refuses to let data.mdb grow (EFBIG under RLIMIT_FSIZE,
 * as ENOSPC would): grow-ahead fails quietly, commits fail, nothing
 * committed is harmed, and once space is back the same env works on. */
TEST(grow_ahead_failure_keeps_env_usable) {
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);
    rq_options o = {.map_size = 256u << 20};
    rq_env *env = NULL;
    if (rq_env_open(&env, tl_tmpdir, &o)) _exit(10);
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", tl_tmpdir);
    struct stat sb;
    if (stat(path, &sb)) _exit(11);
    struct rlimit rl;
    getrlimit(RLIMIT_FSIZE, &rl);
    struct rlimit lim = {(rlim_t)sb.st_size + (1u << 20) + 12345, rl.rlim_max};
    if (setrlimit(RLIMIT_FSIZE, &lim)) _exit(12);
    static char body[3001];
    memset(body, 'z', 3000);
    uint64_t ok = 0;
    int failed = 0;
    for (int round = 0; round < 200 && failed < 3; round++) {
      rq_txn *t;
      int rc = rq_txn_begin(env, &t);
      if (rc) _exit(13);
      for (int i = 0; i < 30 && !rc; i++) {
        rq_record r = mkrec(body, NULL, "t", NULL);
        rc = rq_txn_append(t, &r, NULL);
      }
      if (rc) {
        rq_txn_abort(t);
        failed++;
        continue;
      }
      if (rq_txn_commit(t))
        failed++;
      else
        ok += 30;
    }
    if (!failed) _exit(14);
    setrlimit(RLIMIT_FSIZE, &rl);
    rq_stats st;
    if (rq_stat(env, &st) || st.ready != ok) _exit(15);
    for (int round = 0; round < 5; round++) {
      rq_txn *t;
      if (rq_txn_begin(env, &t)) _exit(16);
      rq_record r = mkrec(body, NULL, "t", NULL);
      if (rq_txn_append(t, &r, NULL) || rq_txn_commit(t)) _exit(17);
    }
    rq_env_close(env);
    if (rq_env_open(&env, tl_tmpdir, &o)) _exit(18);
    rq_verify_report rep;
    if (rq_verify(env, &rep) || rep.corrupt || rep.order_errors) _exit(19);
    if (rq_stat(env, &st) || st.ready != ok + 5) _exit(20);
    rq_env_close(env);
    _exit(0);
  }
  int status;
  CHECK_INT(waitpid(pid, &status, 0), ==, pid);
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), ==, 0);
}

/* ---- Wall-clock steps ----------------------------------------------------
 * Records carry wall-clock times, and the clock can step: a VM restored from
 * a snapshot, NTP fixing a bad RTC at boot, an operator setting the date.
 * The queue's clock is the caller's now_ms, so these tests step it. */

/* The clock steps back by hours after events were nacked: their next
 * attempt times lie hours ahead in the new timeline. They must not stall
 * for hours (ready in the stats, nothing leased, nothing logged). */
TEST(clock_back_nacked_not_stalled) {
  rq_env *env = open_env(NULL);
  int64_t now = wall_ms();
  const int64_t hours = 5LL * 3600 * 1000;
  uint64_t s[6];
  for (int i = 0; i < 6; i++) {
    rq_record r = mkrec("{}", NULL, "t", NULL);
    r.received_ms = now;
    s[i] = append1(env, &r);
  }
  uint64_t all[] = {s[0], s[1], s[2], s[3], s[4], s[5]};
  lease_expect(env, now, 6, all, 6);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[0], now, now + 1000, "e"), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[1], now, now + 30000, "e"), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[2]), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[3]), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[4]), ==, 0);
  CHECK_INT(rq_txn_ack(t, s[5]), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  /* Not due yet in the old timeline; the scan remembers that. */
  lease_expect(env, now + 500, 10, NULL, 0);
  /* Clock back 5 h: both failed "in the future"; their remaining wait is
   * longer than any delay a nack asked for, so they are due now. */
  uint64_t w[] = {s[0], s[1]};
  lease_expect(env, now - hours, 10, w, 2);
  /* Nacked again in the new timeline: ordinary backoff from here on. */
  int64_t now2 = now - hours + 100;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[0], now2, now2 + 1000, "e"), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[1], now2, now2 + 2000, "e"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  lease_expect(env, now2 + 999, 10, NULL, 0);
  uint64_t w0[] = {s[0]};
  lease_expect(env, now2 + 1000, 10, w0, 1);
  uint64_t w1[] = {s[1]};
  lease_expect(env, now2 + 2000, 10, w1, 1);
  rq_env_close(env);
}

/* Same after a restart (no scan state in memory), and a small step back
 * (under a couple of seconds, NTP's usual) keeps the due time it had. */
TEST(clock_back_after_reopen_and_small_steps) {
  rq_env *env = open_env(NULL);
  int64_t now = wall_ms();
  rq_record r = mkrec("{}", NULL, "t", NULL);
  r.received_ms = now;
  uint64_t s = append1(env, &r);
  uint64_t w[] = {s};
  lease_expect(env, now, 1, w, 1);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, s, now, now + 60000, "e"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_env_close(env);
  env = open_env(NULL);
  lease_expect(env, now + 1000, 1, NULL, 0);
  lease_expect(env, now - 1000, 1, NULL, 0); /* a 1 s step: still waits */
  lease_expect(env, now - 24LL * 3600 * 1000, 1, w, 1);
  rq_env_close(env);
}

/* The lease scan skips records below scan_from until scan_due; a step back
 * must not keep it skipping records that became due by the rule above,
 * nor may rq_next_due_ms() keep reporting their old-timeline due time. */
TEST(clock_back_scan_from_not_skipping) {
  rq_env *env = open_env(NULL);
  /* The clock was 3 h ahead when the events failed, and is right now
   * (rq_next_due_ms() reads the real clock: "before" is in the future). */
  int64_t now = wall_ms();
  int64_t before = now + 3LL * 3600 * 1000;
  uint64_t s[40];
  for (int i = 0; i < 40; i++) {
    rq_record r = mkrec("{}", NULL, "t", NULL);
    r.received_ms = before;
    s[i] = append1(env, &r);
  }
  rq_record *out;
  CHECK_INT(rq_lease(env, before, 40, 0, &out), ==, 40);
  rq_records_free(out, 40);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < 40; i++)
    CHECK_INT(rq_txn_nack(t, s[i], before, before + 20000 + i, "e"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  /* Scans in the old timeline pass them all: scan_from moves past. */
  lease_expect(env, before + 1, 40, NULL, 0);
  lease_expect(env, before + 2, 40, NULL, 0);
  /* The clock steps back: every one is due, in seq order. */
  CHECK_INT(rq_lease(env, now, 10, 0, &out), ==, 10);
  for (int i = 0; i < 10; i++) CHECK_INT(out[i].seq, ==, s[i]);
  rq_records_free(out, 10);
  /* rq_next_due_ms() is the drainer's sleep: "due now", not in 3 h. */
  CHECK_INT(rq_next_due_ms(env), ==, 0);
  rq_env_close(env);
}

/* Dedup log under clock steps. While the clock was ahead (a bad RTC before
 * NTP fixed it), ids were logged at "future" times. After the step back:
 * a Stream retry of such an id is still a duplicate (the window holds),
 * but the entry must not stay in the log, and the id a duplicate, until
 * the clock catches up (years, for a bad RTC); it lasts one window in the
 * new timeline. */
TEST(dedup_clock_back_future_entries) {
  rq_options o = {.dedup_window_s = 2};
  rq_env *env = open_env(&o);
  int64_t now = wall_ms();
  int64_t ahead = now + 365LL * 24 * 3600 * 1000;
  rq_record r = mkrec("{}", "fut-1", "t", NULL);
  r.received_ms = ahead;
  append1(env, &r);
  rq_record r2 = mkrec("{}", "fut-2", "t", NULL);
  r2.received_ms = ahead + 5;
  append1(env, &r2);
  /* The clock is right again: the retry arrives, stamped in the new timeline. */
  r.received_ms = wall_ms();
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_DUPLICATE);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "fut-2", wall_ms()), ==, 1);
  /* ... but not for a year: one window from the step on. */
  CHECK_INT(rq_dedup_seen(env, "fut-1", wall_ms() + 5000), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "fut-2", wall_ms() + 5000), ==, 0);
  /* The same across a restart (the table is rebuilt from the log). */
  rq_env_close(env);
  env = open_env(&o);
  CHECK_INT(rq_dedup_seen(env, "fut-1", wall_ms()), ==, 1);
  CHECK_INT(rq_dedup_seen(env, "fut-1", wall_ms() + 5000), ==, 0);
  /* And the ids are forgotten once the window has passed. */
  struct timespec ts = {2, 300000000};
  nanosleep(&ts, NULL);
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "fut-1", wall_ms()), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "fut-2", wall_ms()), ==, 0);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dedup_entries, ==, 0);
  CHECK_INT(st.duplicates_total, ==, 1);
  rq_env_close(env);
}

/* The same for FIFO leases: the group index keeps waiting heads by due time. */
TEST(clock_back_fifo_not_stalled) {
  rq_env *env = open_env(NULL);
  int64_t now = wall_ms();
  int64_t before = now + 3LL * 3600 * 1000; /* the clock was 3 h ahead */
  uint64_t s[3];
  for (int i = 0; i < 3; i++) {
    rq_record r = mkrec("{}", NULL, "t", i < 2 ? "c:1" : "c:2");
    r.received_ms = before;
    s[i] = append1(env, &r);
  }
  rq_record *out;
  CHECK_INT(rq_lease(env, before, 10, RQ_LEASE_FIFO, &out), ==, 2); /* heads of c:1, c:2 */
  rq_records_free(out, 2);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[0], before, before + 20000, "e"), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[2], before, before + 30000, "e"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_lease(env, before + 1, 10, RQ_LEASE_FIFO, &out), ==, 0);
  free(out);
  CHECK_INT(rq_lease(env, now, 10, RQ_LEASE_FIFO, &out), ==, 2);
  CHECK_INT(out[0].seq, ==, s[0]);
  CHECK_INT(out[1].seq, ==, s[2]);
  rq_records_free(out, 2);
  rq_env_close(env);
  /* And after a restart, when the index is built from the queue. */
  env = open_env(NULL);
  CHECK_INT(rq_lease(env, now, 10, RQ_LEASE_FIFO, &out), ==, 2);
  rq_records_free(out, 2);
  rq_env_close(env);
}
