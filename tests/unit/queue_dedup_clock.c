/* The webhook-id dedup (queue/rq_dedup.c) after clock steps and batches
 * that do not commit, and a randomized model of appends, acks, aborts,
 * replays and reopens checked append by append. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "rq_internal.h" /* the table's size: what the sweep is for */
#include "testlib.h"

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static rq_env *open_env(const rq_options *o) {
  rq_env *env = NULL;
  int rc = rq_env_open(&env, tl_tmpdir, o);
  if (rc) tl_fail(__FILE__, __LINE__, "rq_env_open: %s", rq_strerror(rc));
  return env;
}

static rq_record mkrec(const char *id, int64_t received) {
  rq_record r = {0};
  r.received_ms = received;
  r.body = (const uint8_t *)"{}";
  r.body_len = 2;
  r.webhook_id = id;
  r.type = "t";
  return r;
}

/* ---- Clock stepped back, and the first batch after it does not commit ----
 * While the clock was ahead, ids were logged at "future" times. The first
 * batch after the step moves such entries to the new now (rekey_future),
 * and the memory table follows. If that batch is aborted (the committer
 * aborts and retries a batch on a per-record error or a full map) or its
 * commit fails, the log keeps the old key, but the table kept the new
 * time; the retry moves the log entry again, to a later now, and skips the
 * table (its time no longer matches the old key). From then on the id's
 * table entry names a log key that does not exist: a Stream retry of the
 * event is stored a second time, for a whole window. */
static int failing_hook(void *arg) {
  (void)arg;
  return -EIO;
}

static void rekey_then_fail(bool commit_fails) {
  rq_options o = {.dedup_window_s = 10};
  rq_env *env = open_env(&o);
  int64_t ahead = wall_ms() + 24LL * 3600 * 1000; /* the clock was a day ahead */
  rq_record r = mkrec("rk-1", ahead);
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  /* Straight to the DLQ: the log holds the sighting at once. */
  CHECK_INT(rq_txn_append_dead(t, &r, "too_large", NULL, NULL, NULL), ==, 0);
  CHECK_INT(rq_txn_commit(t), ==, 0);

  /* The clock is right again. The first batch after the step does not
   * commit: aborted, or its commit fails. */
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  if (commit_fails) {
    /* The commit fails (here through the commit hook; to the caller an
     * fsync error looks the same): rq_txn_commit() returns the error and
     * stores nothing. */
    rq_set_commit_hook(env, failing_hook, NULL);
    CHECK_INT(rq_txn_commit(t), ==, -EIO);
    rq_set_commit_hook(env, NULL, NULL);
  } else {
    rq_txn_abort(t);
  }
  pause_ms(20); /* the retry runs at a later millisecond */

  /* The retry: the event's Stream retry arrives in it and must be a duplicate. */
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  r.received_ms = wall_ms();
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_DUPLICATE);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "rk-1", wall_ms()), ==, 1);
  /* Later batches keep it a duplicate, for one window in the new timeline. */
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  r.received_ms = wall_ms();
  CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_DUPLICATE);
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(rq_dedup_seen(env, "rk-1", wall_ms() + 11000), ==, 0);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.duplicates_total, ==, 2);
  CHECK_INT(st.dlq, ==, 1);
  rq_env_close(env);
}

TEST(rekey_after_clock_back_survives_aborted_batch) {
  rekey_then_fail(false);
}

TEST(rekey_after_clock_back_survives_failed_commit) {
  rekey_then_fail(true);
}

/* ---- Entries of aborted appends stamped ahead of the clock ---------------
 * An append that does not commit leaves its table entry behind (the table
 * only proposes); the sweep removes it once it is older than the window.
 * One stamped far ahead (received while the clock was ahead, a bad RTC
 * before NTP fixed it) names a ready record that never existed: the sweep
 * left such entries alone ("the log's entry moves"), but there is no log
 * entry, so nothing ever removed them: memory held until the clock catches
 * up (years, for a bad RTC), for every id of every batch that failed then. */
static size_t table_entries(rq_env *env) {
  pthread_mutex_lock(&env->dmu);
  size_t n = env->dedup.n + env->dedup.old_n;
  pthread_mutex_unlock(&env->dmu);
  return n;
}

TEST(sweep_drops_future_entries_of_aborted_appends) {
  rq_options o = {.dedup_window_s = 10};
  rq_env *env = open_env(&o);
  int64_t ahead = wall_ms() + 24LL * 3600 * 1000;
  char id[32];
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < 100; i++) {
    snprintf(id, sizeof id, "ab-fut-%d", i);
    rq_record r = mkrec(id, ahead);
    CHECK_INT(rq_txn_append(t, &r, NULL), ==, 0);
  }
  rq_txn_abort(t);
  CHECK_INT(table_entries(env), ==, 100);
  /* Batches go on, their seqs reused by records without ids, acked. */
  for (int round = 0; round < 3; round++) {
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    uint64_t seqs[150];
    for (int i = 0; i < 150; i++) {
      rq_record r = mkrec(NULL, wall_ms());
      CHECK_INT(rq_txn_append(t, &r, &seqs[i]), ==, 0);
    }
    CHECK_INT(rq_txn_commit(t), ==, 0);
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (int i = 0; i < 150; i++) CHECK_INT(rq_txn_ack(t, seqs[i]), ==, 0);
    CHECK_INT(rq_txn_commit(t), ==, 0);
  }
  CHECK_INT(table_entries(env), ==, 0);
  snprintf(id, sizeof id, "ab-fut-%d", 7);
  CHECK_INT(rq_dedup_seen(env, id, wall_ms()), ==, 0);
  rq_env_close(env);
}

/* The guard for that: a sighting stamped ahead whose ready record left
 * (appended and acked in one batch: the log holds it at the stamped time),
 * still waiting for rekey_future because its bite was used up, stays. */
TEST(sweep_keeps_future_entries_the_log_holds) {
  rq_options o = {.dedup_window_s = 10};
  rq_env *env = open_env(&o);
  int64_t ahead = wall_ms() + 24LL * 3600 * 1000;
  enum { N = 700 };
  char id[32];
  rq_txn *t;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "kept-fut-%d", i);
    rq_record r = mkrec(id, ahead + i);
    uint64_t seq;
    CHECK_INT(rq_txn_append(t, &r, &seq), ==, 0);
    CHECK_INT(rq_txn_ack(t, seq), ==, 0);
  }
  CHECK_INT(rq_txn_commit(t), ==, 0);
  /* A small bite next: rekey_future moves 256 entries, the sweep sees the
   * other ones with their records gone and their log entries still there. */
  env->last_appends = 0;
  CHECK_INT(rq_txn_begin(env, &t), ==, 0);
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "kept-fut-%d", i);
    rq_record r = mkrec(id, wall_ms());
    CHECK_INT(rq_txn_append(t, &r, NULL), ==, RQ_DUPLICATE);
  }
  CHECK_INT(rq_txn_commit(t), ==, 0);
  CHECK_INT(table_entries(env), ==, N);
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  CHECK_INT(st.dedup_entries, ==, N);
  rq_env_close(env);
}

/* ---- Random batches against a model -------------------------------------
 * A cross-check of the paths above and the ones that looked sound on
 * review, mixed: appends (ready and straight to the DLQ, short ids and ids
 * over 400 bytes, the same id twice in a batch), acks and dead-letters (also
 * of records appended in the same batch), aborted batches, failed commits,
 * DLQ replay (new seq) and purge, rq_verify, reopen. Everything happens well
 * inside the window, so an id is a duplicate exactly when a committed batch
 * stored it, or an earlier append of the same batch did. MODEL_SEEDS=n runs
 * more seeds. */

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state % n);
}

enum { NIDS = 60, MAXQ = 4096 };

typedef struct {
  uint64_t seq[MAXQ];
  int n;
} seqlist;

/* The queue's ready seqs and DLQ seqs, read back from the queue. */
static void read_queue(rq_env *env, seqlist *ready, seqlist *dlq) {
  rq_record *out;
  int n = rq_lease(env, 1LL << 62, MAXQ, 0, &out);
  CHECK(n >= 0);
  ready->n = 0;
  for (int i = 0; i < n; i++) {
    ready->seq[ready->n++] = out[i].seq;
    rq_release(env, out[i].seq);
  }
  rq_records_free(out, (size_t)n);
  n = rq_dlq_list_meta(env, NULL, &out);
  CHECK(n >= 0);
  dlq->n = 0;
  for (int i = 0; i < n && dlq->n < MAXQ; i++) dlq->seq[dlq->n++] = out[i].seq;
  rq_records_free(out, (size_t)n);
}

/* Id x of the pool; every third one over 400 bytes (a cut + hash key). */
static const char *model_id(int x) {
  static char buf[600];
  if (x % 3 == 0) {
    memset(buf, 'L', 500);
    snprintf(buf + 500, sizeof buf - 500, "-%d", x);
  } else {
    snprintf(buf, sizeof buf, "m-%d", x);
  }
  return buf;
}

static void model_run(uint64_t seed, int rounds) {
  rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
  rq_options o = {.dedup_window_s = 600};
  rq_env *env = open_env(&o);
  bool committed[NIDS] = {0};
  static seqlist ready, dlq;
  read_queue(env, &ready, &dlq);
  for (int round = 0; round < rounds; round++) {
    uint32_t what = rnd(100);
    if (what < 4) {
      rq_env_close(env);
      env = open_env(&o);
      read_queue(env, &ready, &dlq);
      continue;
    }
    if (what < 8 && dlq.n) {
      uint64_t s = dlq.seq[rnd((uint32_t)dlq.n)];
      CHECK_INT(rnd(2) ? rq_dlq_replay(env, &s, 1, NULL, NULL, NULL)
                       : rq_dlq_purge(env, &s, 1, NULL, NULL, NULL),
                ==, 0);
      read_queue(env, &ready, &dlq);
      continue;
    }
    if (what < 10) {
      rq_verify_report rep;
      CHECK_INT(rq_verify(env, &rep), ==, 0);
      CHECK_INT(rep.corrupt, ==, 0);
      continue;
    }
    bool pend[NIDS] = {0};
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    int nops = 1 + (int)rnd(8);
    for (int k = 0; k < nops; k++) {
      uint32_t op = rnd(10);
      if (op < 5) {
        int x = (int)rnd(NIDS);
        rq_record r = mkrec(model_id(x), wall_ms());
        uint64_t seq = 0;
        int rc = op < 4 ? rq_txn_append(t, &r, &seq)
                        : rq_txn_append_dead(t, &r, "too_large", NULL, NULL, &seq);
        bool dup = committed[x] || pend[x];
        if (rc != (dup ? RQ_DUPLICATE : 0))
          tl_fail(__FILE__, __LINE__, "seed %llu round %d: id %d rc %d, duplicate expected: %d",
                  (unsigned long long)seed, round, x, rc, dup);
        if (!rc) {
          pend[x] = true;
          if (op < 4 && ready.n < MAXQ) ready.seq[ready.n++] = seq;
        }
      } else if (ready.n) {
        int i = (int)rnd((uint32_t)ready.n);
        uint64_t s = ready.seq[i];
        CHECK_INT(op < 8 ? rq_txn_ack(t, s) : rq_txn_dead(t, s, wall_ms(), "rejected", NULL, NULL),
                  ==, 0);
        ready.seq[i] = ready.seq[--ready.n];
      }
    }
    uint32_t end = rnd(10);
    if (end == 0) {
      rq_txn_abort(t);
    } else if (end == 1) {
      rq_set_commit_hook(env, failing_hook, NULL);
      CHECK_INT(rq_txn_commit(t), ==, -EIO);
      rq_set_commit_hook(env, NULL, NULL);
    } else {
      CHECK_INT(rq_txn_commit(t), ==, 0);
      for (int x = 0; x < NIDS; x++) committed[x] = committed[x] || pend[x];
    }
    read_queue(env, &ready, &dlq);
  }
  rq_env_close(env);
}

TEST(model_random_batches) {
  const char *e = getenv("MODEL_SEEDS");
  uint64_t seeds = e ? strtoull(e, NULL, 10) : 6;
  for (uint64_t s = 1; s <= seeds; s++) {
    model_run(s, 400);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'/*", tl_tmpdir);
    CHECK_INT(system(cmd), ==, 0);
  }
}
