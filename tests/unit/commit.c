/* relay/commit.c against the real queue (LMDB on a temp dir). */
#include "commit.h"

#include <errno.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rq.h"
#include "testlib.h"

/* ---- fixture ------------------------------------------------------------ */

typedef struct {
  uv_loop_t loop;
  rq_env *env;
  committer *c;
  uv_thread_t loop_thread;
  int done_calls;
  unsigned answered_at_done;
  /* observer */
  unsigned nbatches;
  unsigned batch_ops[64];
  int batch_rc[64];
} fx;

typedef struct {
  commit_op op;
  fx *f;
  int calls;
  char id[32];
  void (*then)(commit_op *op); /* extra per-test action inside the callback */
} top;

static unsigned answered; /* callbacks run so far, all tests */

static void observe(void *arg, unsigned ops, double seconds, double sync_seconds, int result) {
  fx *f = arg;
  CHECK(seconds >= 0 && seconds < 60);
  /* The durable part is inside the commit; every good commit went through
   * mdb_txn_commit, a failed one reports none. */
  CHECK(sync_seconds >= 0 && sync_seconds <= seconds);
  if (result == 0) CHECK(sync_seconds > 0);
  else CHECK(sync_seconds == 0);
  if (f->nbatches < 64) {
    f->batch_ops[f->nbatches] = ops;
    f->batch_rc[f->nbatches] = result;
  }
  f->nbatches++;
}

static void fx_open(fx *f, uint64_t map_size, unsigned max_batch) {
  memset(f, 0, sizeof *f);
  answered = 0;
  CHECK_INT(uv_loop_init(&f->loop), ==, 0);
  rq_options o = {.map_size = map_size};
  CHECK_INT(rq_env_open(&f->env, tl_tmpdir, &o), ==, 0);
  CHECK_INT(committer_new(&f->c, &f->loop, f->env, max_batch), ==, 0);
  committer_set_observer(f->c, observe, f);
  f->loop_thread = uv_thread_self();
}

static void on_done(void *arg) {
  fx *f = arg;
  f->done_calls++;
  f->answered_at_done = answered;
}

/* Closes everything and checks that no handle leaked. */
static void fx_close(fx *f) {
  committer_close(f->c, on_done, f);
  CHECK_INT(uv_run(&f->loop, UV_RUN_DEFAULT), ==, 0);
  CHECK_INT(f->done_calls, ==, 1);
  CHECK_INT(uv_loop_close(&f->loop), ==, 0);
  rq_env_close(f->env);
}

static void on_op(commit_op *op) {
  top *t = op->arg;
  CHECK(uv_thread_equal(&(uv_thread_t){uv_thread_self()}, &t->f->loop_thread));
  CHECK_INT(t->f->done_calls, ==, 0);
  t->calls++;
  answered++;
  if (t->then) t->then(op);
}

static int64_t wall_ms(void) {
  struct timespec ts;
  CHECK_INT(clock_gettime(CLOCK_REALTIME, &ts), ==, 0);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char body[] = "{\"type\":\"message.new\",\"cid\":\"messaging:general\"}";

static void make_append(top *t, fx *f, const char *webhook_id) {
  memset(t, 0, sizeof *t);
  t->f = f;
  t->op.kind = COMMIT_APPEND;
  t->op.rec.received_ms = wall_ms(); /* dedup windows count from now */
  t->op.rec.body = (const uint8_t *)body;
  t->op.rec.body_len = sizeof body - 1;
  t->op.rec.type = "message.new";
  t->op.rec.cid = "messaging:general";
  if (webhook_id) {
    snprintf(t->id, sizeof t->id, "%s", webhook_id);
    t->op.rec.webhook_id = t->id;
  }
  t->op.result = 12345; /* must be overwritten */
  t->op.cb = on_op;
  t->op.arg = t;
}

static void make_seq_op(top *t, fx *f, commit_kind kind, uint64_t seq) {
  memset(t, 0, sizeof *t);
  t->f = f;
  t->op.kind = kind;
  t->op.seq = seq;
  t->op.now_ms = 1700000001000;
  t->op.result = 12345;
  t->op.cb = on_op;
  t->op.arg = t;
}

/* Submits n ops in one go and runs the loop until all are answered (the
 * committer keeps the loop alive exactly while ops are unanswered). */
static void run_batch(fx *f, top *ts, size_t n) {
  for (size_t i = 0; i < n; i++) committer_submit(f->c, &ts[i].op);
  CHECK_INT(committer_pending(f->c), ==, n);
  CHECK_INT(uv_run(&f->loop, UV_RUN_DEFAULT), ==, 0);
  CHECK_INT(committer_pending(f->c), ==, 0);
  for (size_t i = 0; i < n; i++) CHECK_INT(ts[i].calls, ==, 1);
}

static rq_stats stat_of(rq_env *env) {
  rq_stats st;
  CHECK_INT(rq_stat(env, &st), ==, 0);
  return st;
}

/* ---- tests -------------------------------------------------------------- */

TEST(one_iteration_one_commit) {
  fx f;
  fx_open(&f, 0, 0);
  top ts[50];
  for (int i = 0; i < 50; i++) {
    char id[16];
    snprintf(id, sizeof id, "w%d", i);
    make_append(&ts[i], &f, id);
  }
  run_batch(&f, ts, 50);
  commit_stats st;
  committer_get_stats(f.c, &st);
  CHECK_INT(st.commits, ==, 1);
  CHECK_INT(st.failed_commits, ==, 0);
  CHECK_INT(st.ops, ==, 50);
  CHECK_INT(st.last_batch_ops, ==, 50);
  CHECK(st.last_commit_seconds > 0);
  CHECK_INT(f.nbatches, ==, 1);
  CHECK_INT(f.batch_ops[0], ==, 50);
  CHECK_INT(f.batch_rc[0], ==, 0);
  for (int i = 0; i < 50; i++) {
    CHECK_INT(ts[i].op.result, ==, 0);
    CHECK(ts[i].op.seq > 0);
    CHECK(ts[i].op.rec.seq == ts[i].op.seq);
    if (i) CHECK(ts[i].op.seq == ts[i - 1].op.seq + 1); /* submission order kept */
  }
  CHECK_INT(stat_of(f.env).ready, ==, 50);
  fx_close(&f);
}

/* Ops submitted by different callbacks of the same iteration (three timers
 * due at the same time) still share one commit. */
static top timer_ops[3][10];
static fx *timer_fx;

static void submit_ten(uv_timer_t *h) {
  top *row = h->data;
  for (int i = 0; i < 10; i++) {
    make_append(&row[i], timer_fx, NULL);
    committer_submit(timer_fx->c, &row[i].op);
  }
  uv_close((uv_handle_t *)h, NULL);
}

TEST(callbacks_of_one_iteration_share_a_commit) {
  fx f;
  fx_open(&f, 0, 0);
  timer_fx = &f;
  uv_timer_t timers[3];
  for (int i = 0; i < 3; i++) {
    CHECK_INT(uv_timer_init(&f.loop, &timers[i]), ==, 0);
    timers[i].data = timer_ops[i];
  }
  uv_update_time(&f.loop);
  for (int i = 0; i < 3; i++) CHECK_INT(uv_timer_start(&timers[i], submit_ten, 5, 0), ==, 0);
  CHECK_INT(uv_run(&f.loop, UV_RUN_DEFAULT), ==, 0);
  CHECK_INT(f.nbatches, ==, 1);
  CHECK_INT(f.batch_ops[0], ==, 30);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 10; j++) CHECK_INT(timer_ops[i][j].op.result, ==, 0);
  fx_close(&f);
}

/* While the writer is busy with a batch, ops submitted in several later
 * iterations pile up and go together into the next commit. The first
 * commit is held in the hook until the loop has submitted 5 ops, one per
 * timer tick (so one per iteration). */
static uv_sem_t release_first, first_entered;
static atomic_int hook_calls;

static int hold_first_commit(void *arg) {
  (void)arg;
  if (atomic_fetch_add(&hook_calls, 1) == 0) {
    uv_sem_post(&first_entered);
    uv_sem_wait(&release_first);
  }
  return 0;
}

static top late_ops[5];
static int late_n;

static void submit_one(uv_timer_t *h) {
  make_append(&late_ops[late_n], timer_fx, NULL);
  committer_submit(timer_fx->c, &late_ops[late_n].op);
  if (++late_n == 5) {
    uv_timer_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    uv_sem_post(&release_first);
  }
}

TEST(ops_pile_up_while_writer_commits) {
  fx f;
  fx_open(&f, 0, 0);
  timer_fx = &f;
  CHECK_INT(uv_sem_init(&release_first, 0), ==, 0);
  CHECK_INT(uv_sem_init(&first_entered, 0), ==, 0);
  rq_set_commit_hook(f.env, hold_first_commit, NULL);
  top first[3];
  for (int i = 0; i < 3; i++) {
    make_append(&first[i], &f, NULL);
    committer_submit(f.c, &first[i].op);
  }
  /* One iteration hands the first batch to the writer; once the writer is
   * inside that commit, the timer's ops cannot join it. (Ops handed over
   * before the writer wakes may join: the writer takes all it has.) */
  uv_run(&f.loop, UV_RUN_NOWAIT);
  uv_sem_wait(&first_entered);
  uv_timer_t tick;
  CHECK_INT(uv_timer_init(&f.loop, &tick), ==, 0);
  CHECK_INT(uv_timer_start(&tick, submit_one, 1, 1), ==, 0);
  CHECK_INT(uv_run(&f.loop, UV_RUN_DEFAULT), ==, 0);
  CHECK_INT(late_n, ==, 5);
  CHECK_INT(f.nbatches, ==, 2);
  CHECK_INT(f.batch_ops[0], ==, 3);
  CHECK_INT(f.batch_ops[1], ==, 5);
  for (int i = 0; i < 5; i++) CHECK_INT(late_ops[i].op.result, ==, 0);
  rq_set_commit_hook(f.env, NULL, NULL);
  uv_sem_destroy(&release_first);
  uv_sem_destroy(&first_entered);
  fx_close(&f);
}

/* No callback runs before the commit covering its op returned; when a
 * callback runs, another process opening the queue read-only sees the data. */
static atomic_int hook_entered, hook_returned, cb_seen, violations;
static unsigned expect_ready;

static int slow_hook(void *arg) {
  (void)arg;
  atomic_fetch_add(&hook_entered, 1);
  int before = atomic_load(&cb_seen);
  uv_sleep(30); /* a slow fsync: callbacks must keep waiting */
  if (atomic_load(&cb_seen) != before) atomic_fetch_add(&violations, 1);
  atomic_fetch_add(&hook_returned, 1);
  return 0;
}

static int child_sees_ready(unsigned want) {
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    rq_env *ro;
    rq_options o = {.flags = RQ_OPEN_READONLY};
    if (rq_env_open(&ro, tl_tmpdir, &o) != 0) _exit(2);
    rq_stats st;
    int ok = rq_stat(ro, &st) == 0 && st.ready == want;
    rq_env_close(ro);
    _exit(ok ? 0 : 1);
  }
  int status;
  CHECK(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
}

static void check_after_commit(commit_op *op) {
  top *t = op->arg;
  atomic_fetch_add(&cb_seen, 1);
  /* The batch's hook ran to completion and no other commit is under way. */
  CHECK(atomic_load(&hook_returned) >= 1);
  CHECK_INT(atomic_load(&hook_entered), ==, atomic_load(&hook_returned));
  (void)t;
  /* Once per batch (its first op): a separate process reads the queue. */
  if (op->seq == 1 || op->seq == 21) CHECK_INT(child_sees_ready(expect_ready), ==, 0);
}

TEST(callbacks_only_after_commit_returned) {
  fx f;
  fx_open(&f, 0, 0);
  rq_set_commit_hook(f.env, slow_hook, NULL);
  top ts[20];
  for (int i = 0; i < 20; i++) {
    make_append(&ts[i], &f, NULL);
    ts[i].then = check_after_commit;
  }
  expect_ready = 20;
  run_batch(&f, ts, 20);
  CHECK_INT(atomic_load(&violations), ==, 0);
  CHECK_INT(atomic_load(&cb_seen), ==, 20);
  CHECK_INT(atomic_load(&hook_returned), ==, 1);
  CHECK(ts[0].op.seq == 1); /* the fork check above ran */

  /* A second batch: same rules. */
  top more[5];
  expect_ready = 25;
  for (int i = 0; i < 5; i++) {
    make_append(&more[i], &f, NULL);
    more[i].then = check_after_commit;
  }
  run_batch(&f, more, 5);
  CHECK_INT(atomic_load(&violations), ==, 0);
  CHECK_INT(atomic_load(&hook_returned), ==, 2);
  CHECK_INT(child_sees_ready(25), ==, 0);
  rq_set_commit_hook(f.env, NULL, NULL);
  fx_close(&f);
}

TEST(duplicate_webhook_ids) {
  fx f;
  fx_open(&f, 0, 0);
  top ts[4];
  make_append(&ts[0], &f, "id-a");
  make_append(&ts[1], &f, "id-b");
  make_append(&ts[2], &f, "id-a"); /* same batch */
  make_append(&ts[3], &f, NULL);   /* no id: never a duplicate */
  run_batch(&f, ts, 4);
  CHECK_INT(ts[0].op.result, ==, 0);
  CHECK_INT(ts[1].op.result, ==, 0);
  CHECK_INT(ts[2].op.result, ==, RQ_DUPLICATE);
  CHECK_INT(ts[3].op.result, ==, 0);
  top again[3];
  make_append(&again[0], &f, "id-b"); /* later batch */
  make_append(&again[1], &f, "id-c");
  make_append(&again[2], &f, NULL);
  run_batch(&f, again, 3);
  CHECK_INT(again[0].op.result, ==, RQ_DUPLICATE);
  CHECK_INT(again[1].op.result, ==, 0);
  CHECK_INT(again[2].op.result, ==, 0);
  rq_stats st = stat_of(f.env);
  CHECK_INT(st.ready, ==, 5);
  CHECK_INT(st.duplicates_total, ==, 2);
  CHECK_INT(f.nbatches, ==, 2);
  fx_close(&f);
}

TEST(ack_nack_dead_and_append_dead) {
  fx f;
  fx_open(&f, 0, 0);
  top ts[3];
  for (int i = 0; i < 3; i++) make_append(&ts[i], &f, NULL);
  run_batch(&f, ts, 3);
  uint64_t s1 = ts[0].op.seq, s2 = ts[1].op.seq, s3 = ts[2].op.seq;

  top ops[6];
  make_seq_op(&ops[0], &f, COMMIT_ACK, s1);
  make_seq_op(&ops[1], &f, COMMIT_NACK, s2);
  ops[1].op.next_attempt_ms = 1700000060000;
  ops[1].op.message = "Throttling";
  make_seq_op(&ops[2], &f, COMMIT_DEAD, s3);
  ops[2].op.reason = "rejected";
  ops[2].op.code = "InvalidParameter";
  ops[2].op.message = "bad attribute";
  make_seq_op(&ops[3], &f, COMMIT_ACK, 999999);
  make_seq_op(&ops[4], &f, COMMIT_ACK, s1); /* acked earlier in this batch */
  make_append(&ops[5], &f, "big-one");
  ops[5].op.kind = COMMIT_APPEND_DEAD;
  ops[5].op.reason = "too_large";
  run_batch(&f, ops, 6);
  CHECK_INT(f.nbatches, ==, 2);
  CHECK_INT(ops[0].op.result, ==, 0);
  CHECK_INT(ops[1].op.result, ==, 0);
  CHECK_INT(ops[2].op.result, ==, 0);
  CHECK_INT(ops[3].op.result, ==, RQ_NOTFOUND);
  CHECK_INT(ops[4].op.result, ==, RQ_NOTFOUND);
  CHECK_INT(ops[5].op.result, ==, 0);
  CHECK(ops[5].op.seq > s3);

  rq_stats st = stat_of(f.env);
  CHECK_INT(st.ready, ==, 1);
  CHECK_INT(st.dlq, ==, 2);
  rq_record r;
  CHECK_INT(rq_dlq_get(f.env, s3, &r), ==, 0);
  CHECK_STR(r.dlq_reason, "rejected");
  CHECK_STR(r.dlq_code, "InvalidParameter");
  rq_record_free(&r);
  CHECK_INT(rq_dlq_get(f.env, ops[5].op.seq, &r), ==, 0);
  CHECK_STR(r.dlq_reason, "too_large");
  CHECK_MEM(r.body, r.body_len, body, sizeof body - 1);
  rq_record_free(&r);
  /* The nacked record waits for its next attempt, with the attempt counted. */
  rq_record *leased;
  CHECK_INT(rq_lease(f.env, 1700000000000, 10, 0, &leased), ==, 0);
  rq_records_free(leased, 0);
  int n = rq_lease(f.env, 1700000060000, 10, 0, &leased);
  CHECK_INT(n, ==, 1);
  CHECK(leased[0].seq == s2);
  CHECK_INT(leased[0].attempts, ==, 1);
  CHECK_STR(leased[0].last_error, "Throttling");
  rq_release(f.env, s2);
  rq_records_free(leased, (size_t)n);
  fx_close(&f);
}

/* An injected -ENOSPC at commit: every op of that batch gets it and nothing
 * of it is stored; the next batch commits normally. */
static int fail_first_commit(void *arg) {
  int *n = arg;
  return (*n)++ == 0 ? -ENOSPC : 0;
}

TEST(injected_commit_failure_then_recovery) {
  fx f;
  fx_open(&f, 0, 0);
  int calls = 0;
  rq_set_commit_hook(f.env, fail_first_commit, &calls);
  top ts[6];
  for (int i = 0; i < 5; i++) {
    char id[16];
    snprintf(id, sizeof id, "e%d", i);
    make_append(&ts[i], &f, id);
  }
  make_append(&ts[5], &f, "e0"); /* a duplicate inside the failed batch */
  run_batch(&f, ts, 6);
  for (int i = 0; i < 6; i++) {
    CHECK_INT(ts[i].op.result, ==, -ENOSPC);
    CHECK(ts[i].op.seq == 0);
  }
  CHECK_INT(f.nbatches, ==, 1);
  CHECK_INT(f.batch_rc[0], ==, -ENOSPC);
  commit_stats cs;
  committer_get_stats(f.c, &cs);
  CHECK_INT(cs.commits, ==, 1);
  CHECK_INT(cs.failed_commits, ==, 1);
  rq_stats st = stat_of(f.env);
  CHECK_INT(st.ready, ==, 0);
  CHECK_INT(st.appended_total, ==, 0);

  /* Same ids again (as Stream's retry would send them): stored this time. */
  top again[5];
  for (int i = 0; i < 5; i++) {
    char id[16];
    snprintf(id, sizeof id, "e%d", i);
    make_append(&again[i], &f, id);
  }
  run_batch(&f, again, 5);
  for (int i = 0; i < 5; i++) CHECK_INT(again[i].op.result, ==, 0);
  CHECK_INT(f.batch_rc[1], ==, 0);
  committer_get_stats(f.c, &cs);
  CHECK_INT(cs.commits, ==, 2);
  CHECK_INT(cs.failed_commits, ==, 1);
  CHECK_INT(stat_of(f.env).ready, ==, 5);
  rq_set_commit_hook(f.env, NULL, NULL);
  fx_close(&f);
}

/* One bad op (-EINVAL, too big for the map) does not fail its neighbours. */
TEST(bad_op_is_isolated) {
  fx f;
  fx_open(&f, 1 << 20, 0);
  size_t big_len = (1 << 20) / 2 + 4096;
  uint8_t *big = calloc(1, big_len);
  CHECK(big != NULL);
  top ts[4];
  make_append(&ts[0], &f, "ok-1");
  make_append(&ts[1], &f, "bad-1");
  ts[1].op.rec.body = NULL; /* length without bytes */
  make_append(&ts[2], &f, "huge-1");
  ts[2].op.rec.body = big;
  ts[2].op.rec.body_len = big_len;
  make_append(&ts[3], &f, "ok-2");
  run_batch(&f, ts, 4);
  CHECK_INT(ts[0].op.result, ==, 0);
  CHECK_INT(ts[1].op.result, ==, -EINVAL);
  CHECK_INT(ts[2].op.result, ==, RQ_TOO_BIG);
  CHECK_INT(ts[3].op.result, ==, 0);
  CHECK(ts[1].op.seq == 0 && ts[2].op.seq == 0);
  CHECK(ts[3].op.seq == ts[0].op.seq + 1);
  CHECK_INT(f.nbatches, ==, 1);
  CHECK_INT(f.batch_rc[0], ==, 0);
  CHECK_INT(stat_of(f.env).ready, ==, 2);
  free(big);
  fx_close(&f);
}

/* A tiny map fills up: the batch gets RQ_MAP_FULL (acks in it still go
 * through: they free space); after acking, appends succeed again. */
TEST(map_full_then_recovery_after_acks) {
  fx f;
  fx_open(&f, 512 << 10, 0);
  static uint8_t payload[8192];
  memset(payload, 'x', sizeof payload);
  top ts[8];
  uint64_t first_seq = 0, acked = 0;
  int full_at = -1;
  for (int b = 0; b < 200 && full_at < 0; b++) {
    for (int i = 0; i < 7; i++) {
      make_append(&ts[i], &f, NULL);
      ts[i].op.rec.body = payload;
      ts[i].op.rec.body_len = sizeof payload;
    }
    /* Each batch after the first also acks one earlier record. */
    int n = 7;
    if (first_seq) {
      make_seq_op(&ts[7], &f, COMMIT_ACK, first_seq + acked++);
      n = 8;
    }
    run_batch(&f, ts, (size_t)n);
    if (ts[0].op.result == RQ_MAP_FULL) {
      full_at = b;
      for (int i = 0; i < 7; i++) {
        CHECK_INT(ts[i].op.result, ==, RQ_MAP_FULL);
        CHECK(ts[i].op.seq == 0);
      }
      CHECK(n == 8);
      CHECK_INT(ts[7].op.result, ==, 0); /* the ack was not starved */
      CHECK_INT(f.batch_rc[f.nbatches - 1], ==, 0);
    } else {
      for (int i = 0; i < n; i++) CHECK_INT(ts[i].op.result, ==, 0);
      if (!first_seq) first_seq = ts[0].op.seq;
    }
  }
  CHECK(full_at > 0);
  rq_stats st = stat_of(f.env);
  uint64_t stored = (uint64_t)full_at * 7 - acked;
  CHECK_INT(st.ready, ==, stored);

  /* Appends alone in a full map: the whole batch fails. */
  for (int i = 0; i < 7; i++) {
    make_append(&ts[i], &f, NULL);
    ts[i].op.rec.body = payload;
    ts[i].op.rec.body_len = sizeof payload;
  }
  run_batch(&f, ts, 7);
  for (int i = 0; i < 7; i++) CHECK_INT(ts[i].op.result, ==, RQ_MAP_FULL);
  CHECK_INT(f.batch_rc[f.nbatches - 1], ==, RQ_MAP_FULL);

  /* Drain: lease and ack everything in one batch. */
  rq_record *recs;
  int n = rq_lease(f.env, INT64_MAX / 2, 10000, 0, &recs);
  CHECK_INT(n, ==, stored);
  top *acks = calloc((size_t)n, sizeof *acks);
  CHECK(acks != NULL);
  for (int i = 0; i < n; i++) make_seq_op(&acks[i], &f, COMMIT_ACK, recs[i].seq);
  rq_records_free(recs, (size_t)n);
  run_batch(&f, acks, (size_t)n);
  for (int i = 0; i < n; i++) CHECK_INT(acks[i].op.result, ==, 0);
  free(acks);
  CHECK_INT(stat_of(f.env).ready, ==, 0);

  /* Recovered without reopening anything. */
  for (int i = 0; i < 7; i++) {
    make_append(&ts[i], &f, NULL);
    ts[i].op.rec.body = payload;
    ts[i].op.rec.body_len = sizeof payload;
  }
  run_batch(&f, ts, 7);
  for (int i = 0; i < 7; i++) CHECK_INT(ts[i].op.result, ==, 0);
  CHECK_INT(stat_of(f.env).ready, ==, 7);
  fx_close(&f);
}

/* A dead-letter copies its whole body into the DLQ, and the ready copy's
 * pages become reusable only two commits later: in a small full map a
 * large one does not fit. It must not take the ack of the same batch down
 * with it (the ack is what frees space); it goes in once that space is
 * reusable. */
TEST(map_full_dead_letter_does_not_block_acks) {
  fx f;
  fx_open(&f, 8u << 20, 0);
  size_t len = (1u << 20) + 1000;
  uint8_t *big = malloc(len);
  CHECK(big != NULL);
  memset(big, 'x', len);
  int n = 0, rc = 0;
  while (!rc) { /* fill to the append cap */
    rq_txn *t;
    CHECK_INT(rq_txn_begin(f.env, &t), ==, 0);
    rq_record r = {.received_ms = wall_ms(), .body = big, .body_len = len, .type = "t"};
    if (!(rc = rq_txn_append(t, &r, NULL))) n++;
    CHECK_INT(rq_txn_commit(t), ==, 0);
  }
  CHECK_INT(rc, ==, RQ_MAP_FULL);
  CHECK(n >= 4);
  free(big);
  rq_record *recs;
  CHECK_INT(rq_lease(f.env, INT64_MAX / 2, 4, 0, &recs), ==, 4);
  uint64_t seq[4];
  for (int i = 0; i < 4; i++) seq[i] = recs[i].seq;
  rq_records_free(recs, 4);

  top ts[2];
  make_seq_op(&ts[0], &f, COMMIT_DEAD, seq[0]);
  ts[0].op.reason = "rejected";
  ts[0].op.code = "InvalidParameter";
  ts[0].op.message = "bad";
  make_seq_op(&ts[1], &f, COMMIT_ACK, seq[1]);
  run_batch(&f, ts, 2);
  CHECK_INT(ts[1].op.result, ==, 0); /* before: RQ_MAP_FULL with the dead-letter */
  CHECK_INT(ts[0].op.result, ==, RQ_MAP_FULL);
  CHECK_INT(stat_of(f.env).dlq, ==, 0);

  /* As draining goes on, acks free more space (and make the first ack's
   * pages reusable; the small pages each commit copies cut into those
   * runs, and a body needs one contiguous run): then it goes in. */
  for (int k = 0; k < 2; k++) {
    make_seq_op(&ts[0], &f, COMMIT_ACK, seq[2 + k]);
    run_batch(&f, ts, 1);
    CHECK_INT(ts[0].op.result, ==, 0);
  }
  make_seq_op(&ts[0], &f, COMMIT_DEAD, seq[0]);
  ts[0].op.reason = "rejected";
  run_batch(&f, ts, 1);
  CHECK_INT(ts[0].op.result, ==, 0);
  rq_stats st = stat_of(f.env);
  CHECK_INT(st.dlq, ==, 1);
  CHECK_INT(st.ready, ==, (uint64_t)n - 4);
  fx_close(&f);
}

TEST(max_batch_bounds_each_commit) {
  fx f;
  fx_open(&f, 0, 4);
  top ts[10];
  for (int i = 0; i < 10; i++) make_append(&ts[i], &f, NULL);
  run_batch(&f, ts, 10);
  CHECK_INT(f.nbatches, ==, 3);
  CHECK_INT(f.batch_ops[0], ==, 4);
  CHECK_INT(f.batch_ops[1], ==, 4);
  CHECK_INT(f.batch_ops[2], ==, 2);
  for (int i = 0; i < 10; i++) CHECK_INT(ts[i].op.result, ==, 0);
  for (int i = 1; i < 10; i++) CHECK(ts[i].op.seq == ts[i - 1].op.seq + 1);
  fx_close(&f);
}

/* close() with ops not yet committed: they are committed and answered
 * before done runs. */
TEST(close_commits_pending_ops) {
  fx f;
  fx_open(&f, 0, 0);
  top ts[10];
  for (int i = 0; i < 10; i++) {
    make_append(&ts[i], &f, NULL);
    committer_submit(f.c, &ts[i].op);
  }
  committer_close(f.c, on_done, &f);
  CHECK_INT(uv_run(&f.loop, UV_RUN_DEFAULT), ==, 0);
  CHECK_INT(f.done_calls, ==, 1);
  CHECK_INT(f.answered_at_done, ==, 10);
  for (int i = 0; i < 10; i++) {
    CHECK_INT(ts[i].calls, ==, 1);
    CHECK_INT(ts[i].op.result, ==, 0);
  }
  CHECK_INT(uv_loop_close(&f.loop), ==, 0);
  rq_env_close(f.env);

  /* Durable: visible after reopening. */
  rq_env *env;
  CHECK_INT(rq_env_open(&env, tl_tmpdir, NULL), ==, 0);
  CHECK_INT(stat_of(env).ready, ==, 10);
  rq_env_close(env);
}

/* close() from inside a callback while more ops are queued, and ops
 * submitted from a callback after close(): all committed before done. */
static top extra[2];

static void close_and_submit(commit_op *op) {
  top *t = op->arg;
  fx *f = t->f;
  committer_close(f->c, on_done, f);
  for (int i = 0; i < 2; i++) {
    make_append(&extra[i], f, NULL);
    committer_submit(f->c, &extra[i].op);
  }
}

TEST(close_from_callback) {
  fx f;
  fx_open(&f, 0, 3);
  top ts[5];
  for (int i = 0; i < 5; i++) make_append(&ts[i], &f, NULL);
  ts[0].then = close_and_submit;
  for (int i = 0; i < 5; i++) committer_submit(f.c, &ts[i].op);
  CHECK_INT(uv_run(&f.loop, UV_RUN_DEFAULT), ==, 0);
  CHECK_INT(f.done_calls, ==, 1);
  CHECK_INT(f.answered_at_done, ==, 7);
  for (int i = 0; i < 5; i++) CHECK_INT(ts[i].op.result, ==, 0);
  for (int i = 0; i < 2; i++) {
    CHECK_INT(extra[i].calls, ==, 1);
    CHECK_INT(extra[i].op.result, ==, 0);
  }
  CHECK_INT(f.nbatches, ==, 3); /* ts0-2; ts3, ts4, extra0; extra1 */
  CHECK_INT(uv_loop_close(&f.loop), ==, 0);
  CHECK_INT(stat_of(f.env).ready, ==, 7);
  rq_env_close(f.env);
}

/* The last callback of the last batch closes and then submits: with
 * nothing else queued, those ops are still committed. */
TEST(close_then_submit_from_last_callback) {
  fx f;
  fx_open(&f, 0, 0);
  top ts[5];
  for (int i = 0; i < 5; i++) make_append(&ts[i], &f, NULL);
  ts[4].then = close_and_submit;
  for (int i = 0; i < 5; i++) committer_submit(f.c, &ts[i].op);
  CHECK_INT(uv_run(&f.loop, UV_RUN_DEFAULT), ==, 0); /* f.c is gone now */
  for (int i = 0; i < 5; i++) CHECK_INT(ts[i].op.result, ==, 0);
  CHECK_INT(f.done_calls, ==, 1);
  CHECK_INT(f.answered_at_done, ==, 7);
  for (int i = 0; i < 2; i++) CHECK_INT(extra[i].op.result, ==, 0);
  CHECK_INT(f.nbatches, ==, 2);
  CHECK_INT(uv_loop_close(&f.loop), ==, 0);
  CHECK_INT(stat_of(f.env).ready, ==, 7);
  rq_env_close(f.env);
}

/* An op submitted after the last commit, while the handles close (here
 * from a check callback of the iteration that finishes the close), is
 * answered with -ECANCELED before done: callbacks always run once. */
static top late;
static uv_check_t late_check;

static void submit_late(uv_check_t *h) {
  fx *f = h->data;
  make_append(&late, f, NULL);
  committer_submit(f->c, &late.op);
  uv_close((uv_handle_t *)h, NULL);
}

static void close_now(uv_timer_t *h) {
  fx *f = h->data;
  committer_close(f->c, on_done, f);
  CHECK_INT(uv_check_init(&f->loop, &late_check), ==, 0);
  late_check.data = f;
  CHECK_INT(uv_check_start(&late_check, submit_late), ==, 0);
  uv_close((uv_handle_t *)h, NULL);
}

TEST(submit_while_closing_is_cancelled) {
  fx f;
  fx_open(&f, 0, 0);
  uv_timer_t t;
  CHECK_INT(uv_timer_init(&f.loop, &t), ==, 0);
  t.data = &f;
  CHECK_INT(uv_timer_start(&t, close_now, 0, 0), ==, 0);
  CHECK_INT(uv_run(&f.loop, UV_RUN_DEFAULT), ==, 0);
  CHECK_INT(f.done_calls, ==, 1);
  CHECK_INT(late.calls, ==, 1);
  CHECK_INT(late.op.result, ==, -ECANCELED);
  CHECK_INT(f.answered_at_done, ==, 1);
  CHECK_INT(f.nbatches, ==, 0);
  CHECK_INT(uv_loop_close(&f.loop), ==, 0);
  CHECK_INT(stat_of(f.env).ready, ==, 0);
  rq_env_close(f.env);
}

TEST(close_idle_committer) {
  fx f;
  fx_open(&f, 0, 0);
  /* An idle committer does not keep the loop alive... */
  CHECK_INT(uv_run(&f.loop, UV_RUN_DEFAULT), ==, 0);
  CHECK_INT(f.nbatches, ==, 0);
  /* ...and closes cleanly. */
  fx_close(&f);
}
