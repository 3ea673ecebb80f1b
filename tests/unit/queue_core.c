/* Queue core (queue/rq.c, rq_dlq.c): a map smaller than the stored data
 * must still drain; gauges and verify through the less travelled paths. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "rq.h"
#include "testlib.h"

#define NOW 1700000000000LL

static rq_env *open_env(const rq_options *o) {
  rq_env *env = NULL;
  int rc = rq_env_open(&env, tl_tmpdir, o);
  if (rc) tl_fail(__FILE__, __LINE__, "rq_env_open: %s", rq_strerror(rc));
  return env;
}

static uint64_t append_body(rq_env *env, const char *type, const char *cid, size_t body_len) {
  uint8_t *body = malloc(body_len ? body_len : 1);
  memset(body, 'b', body_len);
  rq_txn *t;
  uint64_t seq = 0;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  rq_record r = {.received_ms = NOW, .body = body, .body_len = body_len, .type = type, .cid = cid};
  CHECK_INT(rq_txn_append(t, &r, &seq), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  free(body);
  return seq;
}

/* The gauges against a walk of what is there (lease everything, list the DLQ). */
static void check_gauges(rq_env *env) {
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  rq_record *out;
  int n = rq_lease(env, INT64_MAX / 2, 1000000, 0, &out);
  CHECK(n >= 0);
  uint64_t bytes = 0;
  for (int i = 0; i < n; i++) {
    bytes += out[i].body_len;
    rq_release(env, out[i].seq);
  }
  rq_records_free(out, n > 0 ? (size_t)n : 0);
  CHECK_INT(st.ready, ==, (uint64_t)n + st.inflight);
  if (st.inflight == 0) CHECK_INT(st.ready_bytes, ==, bytes);
  int d = rq_dlq_list_meta(env, NULL, &out);
  CHECK(d >= 0);
  bytes = 0;
  for (int i = 0; i < d; i++) bytes += out[i].body_len;
  rq_records_free(out, d > 0 ? (size_t)d : 0);
  CHECK_INT(st.dlq, ==, (uint64_t)d);
  CHECK_INT(st.dlq_bytes, ==, bytes);
}

/* Large and small bodies through nack, dead-letter in the same batch as a
 * nack, replay of ids given twice or gone, purge, verify: gauges exact. */
TEST(gauges_through_every_path) {
  rq_env *env = open_env(NULL);
  uint64_t s[6];
  const size_t sizes[] = {10, 5000, 70000, 3993, 0, 200000};
  for (int i = 0; i < 6; i++) s[i] = append_body(env, "t", i % 2 ? "c:1" : NULL, sizes[i]);
  check_gauges(env);
  rq_record *out;
  int n = rq_lease(env, NOW, 10, 0, &out);
  CHECK_INT(n, ==, 6);
  rq_records_free(out, (size_t)n);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[0], NOW, NOW + 100, "e"), ==, 0);
  CHECK_INT(rq_txn_nack(t, s[1], NOW, NOW + 100, "e"), ==, 0);
  CHECK_INT(rq_txn_dead(t, s[1], NOW, "rejected", "X", "m"), ==, 0); /* nacked, then dead */
  CHECK_INT(rq_txn_dead(t, s[2], NOW, "rejected", "X", "m"), ==, 0);
  CHECK_INT(rq_txn_dead(t, s[2], NOW, "rejected", "X", "m"), ==, RQ_NOTFOUND);
  CHECK_INT(rq_txn_ack(t, s[3]), ==, 0);
  CHECK_INT(rq_txn_dead(t, s[5], NOW, "expired", "X", "m"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_release(env, s[4]);
  check_gauges(env);
  uint64_t ids[] = {s[1], s[1], s[3], s[2], 999999};
  size_t moved = 0, missing = 0;
  rq_dlq_filter f = {.reason = "rejected"};
  CHECK_INT(rq_dlq_replay(env, ids, 5, &f, &moved, &missing), ==, 0);
  CHECK_INT(moved, ==, 2);
  CHECK_INT(missing, ==, 3);
  check_gauges(env);
  size_t purged = 0;
  CHECK_INT(rq_dlq_purge(env, ids, 5, NULL, &purged, &missing), ==, 0);
  CHECK_INT(purged, ==, 0);
  CHECK_INT(rq_dlq_purge(env, NULL, 0, NULL, &purged, &missing), ==, 0);
  CHECK_INT(purged, ==, 1);
  check_gauges(env);
  rq_verify_report rep;
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.corrupt + rep.orphan_bodies + rep.order_errors, ==, 0);
  check_gauges(env);
  rq_env_close(env);
}

static void be64key(uint8_t kb[8], uint64_t seq) {
  for (int j = 0; j < 8; j++) kb[j] = (uint8_t)(seq >> (56 - 8 * j));
}

/* Thousands of orphan state and body entries (many leaves): verify
 * removes every one in one pass, and keeps those of live records. */
TEST(verify_removes_many_orphans) {
  rq_env *env = open_env(NULL);
  uint64_t live = append_body(env, "t", NULL, 5000);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  CHECK_INT(rq_txn_nack(t, live, NOW, NOW + 5, "e"), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  rq_env_close(env);
  enum { N = 3000 };
  {
    MDB_env *e;
    MDB_txn *txn;
    MDB_dbi st, bo;
    CHECK_INT(mdb_env_create(&e), ==, 0);
    CHECK_INT(mdb_env_set_maxdbs(e, 8), ==, 0);
    CHECK_INT(mdb_env_open(e, tl_tmpdir, 0, 0600), ==, 0);
    CHECK_INT(mdb_txn_begin(e, NULL, 0, &txn), ==, 0);
    CHECK_INT(mdb_dbi_open(txn, "state", 0, &st), ==, 0);
    CHECK_INT(mdb_dbi_open(txn, "bodies", 0, &bo), ==, 0);
    static const uint8_t state_val[] = {0x81, 0x00, 0x01}; /* {v: 1} */
    for (uint64_t i = 0; i < N; i++) {
      uint8_t kb[8];
      be64key(kb, 100000 + i * 3);
      MDB_val k = {8, kb}, sv = {sizeof state_val, (void *)state_val},
              bv = {40, "0123456789012345678901234567890123456789"};
      CHECK_INT(mdb_put(txn, st, &k, &sv, 0), ==, 0);
      CHECK_INT(mdb_put(txn, bo, &k, &bv, 0), ==, 0);
    }
    CHECK_INT(mdb_txn_commit(txn), ==, 0);
    mdb_env_close(e);
  }
  env = open_env(NULL);
  rq_verify_report rep;
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.orphan_bodies, ==, N);
  CHECK_INT(rq_verify(env, &rep), ==, 0);
  CHECK_INT(rep.orphan_bodies, ==, 0);
  rq_record *out;
  CHECK_INT(rq_lease(env, NOW + 10, 10, 0, &out), ==, 1);
  CHECK_INT(out[0].attempts, ==, 1);
  CHECK_INT(out[0].body_len, ==, 5000);
  rq_records_free(out, 1);
  rq_env_close(env);
  {
    MDB_env *e;
    MDB_txn *txn;
    MDB_dbi st;
    MDB_stat ms;
    CHECK_INT(mdb_env_create(&e), ==, 0);
    CHECK_INT(mdb_env_set_maxdbs(e, 8), ==, 0);
    CHECK_INT(mdb_env_open(e, tl_tmpdir, MDB_RDONLY, 0600), ==, 0);
    CHECK_INT(mdb_txn_begin(e, NULL, MDB_RDONLY, &txn), ==, 0);
    CHECK_INT(mdb_dbi_open(txn, "state", 0, &st), ==, 0);
    CHECK_INT(mdb_stat(txn, st, &ms), ==, 0);
    CHECK_INT(ms.ms_entries, ==, 1);
    mdb_txn_abort(txn);
    mdb_env_close(e);
  }
}

/* RELAY_QUEUE_MAX_BYTES lowered below what the queue already holds, and
 * relayd restarted: LMDB raises the map to the data's size, so nothing can
 * be appended; but the backlog must still drain (acks need fresh pages). */
TEST(smaller_map_than_data_still_drains) {
  rq_options big = {.map_size = 16u << 20};
  rq_env *env = open_env(&big);
  size_t len = 3000;
  uint8_t *body = malloc(len);
  memset(body, 's', len);
  for (int b = 0; b < 40; b++) {
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (int i = 0; i < 50; i++) {
      rq_record r = {.received_ms = NOW, .body = body, .body_len = len, .type = "t"};
      CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
    }
    CHECK_INT(rq_txn_commit(t), ==, 0);
  }
  free(body);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  fprintf(stderr, "used %llu of %llu\n", (unsigned long long)st.map_used,
          (unsigned long long)st.map_size);
  rq_env_close(env);
  rq_options small = {.map_size = 1u << 20};
  env = open_env(&small);
  CHECK_INT(rq_stat(env, &st), ==, 0);
  fprintf(stderr, "reopened: used %llu of %llu\n", (unsigned long long)st.map_used,
          (unsigned long long)st.map_size);
  /* The lowered limit holds for new events. */
  {
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    rq_record r = {.received_ms = NOW, .body = (const uint8_t *)"{}", .body_len = 2, .type = "t"};
    CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_MAP_FULL);
    rq_txn_abort(t);
    CHECK_INT(rq_over_watermark(env), ==, 1);
  }
  int acked = 0, failed = 0, first_fail = -1;
  for (int round = 0; round < 200 && acked < 2000; round++) {
    rq_record *out;
    int n = rq_lease(env, NOW, 100, 0, &out);
    CHECK(n > 0);
    if (n <= 0) break;
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = rq_txn_ack(t, out[i].seq);
    if (!rc)
      rc = rq_txn_commit(t);
    else
      rq_txn_abort(t);
    rq_records_free(out, (size_t)n);
    if (rc) { /* the leases ended with the batch: the same records come again */
      CHECK_INT(rc, ==, RQ_MAP_FULL);
      if (first_fail < 0) first_fail = round;
      failed++;
      continue;
    }
    acked += n;
  }
  if (failed)
    fprintf(stderr, "%d ack batches failed (first: round %d), %d acked\n", failed, first_fail,
            acked);
  CHECK_INT(failed, ==, 0);
  CHECK_INT(acked, ==, 2000);
  /* Drained: new events go in again, also after a restart. */
  for (int pass = 0; pass < 2; pass++) {
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    rq_record r = {.received_ms = NOW, .body = (const uint8_t *)"{}", .body_len = 2, .type = "t"};
    CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
    CHECK_INT(rq_txn_commit(t), ==, 0);
    rq_env_close(env);
    env = open_env(&small);
  }
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.ready, ==, 2);
  rq_env_close(env);
}
