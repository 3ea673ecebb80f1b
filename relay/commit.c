/* Group commit: see commit.h for the contract.
 *
 * Two threads; the writer never waits for the loop:
 *
 *   loop thread                              writer thread
 *   -----------                              -------------
 *   committer_submit: op -> pending list
 *   prepare (just before the loop blocks):
 *     move pending to the shared work   -->  take <= max_batch ops of work,
 *     list (mutex + condvar)                 rq_txn_begin, apply each op,
 *   ...loop keeps parsing requests;          rq_txn_commit (fsync)
 *      new ops pile up in work...            batch -> finished list,
 *   async callback                      <--  uv_async_send; then at once
 *     run every op's cb with its result      the next batch from work
 *
 * A uv_prepare handle runs right before the loop polls for I/O, i.e. after
 * every callback of this iteration had its chance to submit: that is
 * Redis's beforeSleep, and why everything of one iteration lands in one
 * commit (unless max_batch splits it). While the writer commits, the loop
 * keeps handing over, so the next commit starts as soon as the last one
 * returned: the disk, not the hand-over, sets the pace. Callbacks run only
 * from the async callback, i.e. only after rq_txn_commit() returned on the
 * writer thread for their batch.
 *
 * Handle references: the prepare handle is unreferenced (it must not keep
 * the loop alive by itself); the async handle is referenced exactly while
 * some operation is unanswered, so uv_run() does not return while a commit
 * is on its way.
 */
#include "commit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define COMMIT_DEFAULT_MAX_BATCH 4096

/* One commit's operations and outcome, from the writer back to the loop. */
typedef struct commit_batch {
  commit_op *ops;
  unsigned n;
  int rc;
  double seconds, sync_seconds;
  struct commit_batch *next;
} commit_batch;

struct committer {
  uv_loop_t *loop;
  rq_env *env;
  unsigned max_batch;
  uv_prepare_t prepare;
  uv_async_t async;
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;

  /* Loop thread only. */
  commit_op *pending, *pending_tail;
  unsigned handed; /* handed to the writer, not yet answered */
  unsigned unanswered;
  commit_stats stats;
  void (*observer)(void *arg, unsigned ops, double seconds, double sync_seconds, int result);
  void *observer_arg;
  int closing, finishing, open_handles;
  int failing; /* last batch failed: log transitions, not every batch */
  void (*done)(void *arg);
  void *done_arg;

  /* Shared, under mu. */
  commit_op *work, *work_tail; /* handed over, not yet taken by the writer */
  commit_batch *finished, *finished_tail; /* committed, not yet answered */
  int stop;

  /* Writer thread only: per-batch scratch, max_batch bytes. */
  unsigned char *excluded;
};

static int is_append(const commit_op *op) {
  return op->kind == COMMIT_APPEND || op->kind == COMMIT_APPEND_DEAD;
}

static int apply(rq_txn *t, commit_op *op) {
  int rc;
  switch (op->kind) {
    case COMMIT_APPEND:
      op->seq = 0;
      rc = rq_txn_append(t, &op->rec, &op->seq);
      op->rec.seq = op->seq;
      return rc;
    case COMMIT_APPEND_DEAD:
      op->seq = 0;
      rc = rq_txn_append_dead(t, &op->rec, op->reason, op->code, op->message, &op->seq);
      op->rec.seq = op->seq;
      return rc;
    case COMMIT_ACK:
      return rq_txn_ack(t, op->seq);
    case COMMIT_NACK:
      return rq_txn_nack(t, op->seq, op->now_ms, op->next_attempt_ms, op->message);
    case COMMIT_DEAD:
      return rq_txn_dead(t, op->seq, op->now_ms, op->reason, op->code, op->message);
  }
  return -EINVAL;
}

/* Errors that belong to one operation (a bad or oversized record), not to
 * the batch. Failing the whole batch for them would let one bad request,
 * retried by its sender, 503 every request that shares a commit with it. */
static int is_op_error(int rc) {
  return rc == -EINVAL || rc == RQ_TOO_BIG || rc == RQ_CORRUPT;
}

/* Every operation still in play gets the error rc; appends lose their seq. */
static int settle(commit_op *ops, const unsigned char *excluded, int rc) {
  unsigned i = 0;
  for (commit_op *op = ops; op; op = op->next_, i++) {
    if (excluded[i]) continue;
    op->result = rc;
    if (rc != 0 && is_append(op)) op->seq = op->rec.seq = 0;
  }
  return rc;
}

static int is_dead_letter(const commit_op *op) {
  return op->kind == COMMIT_DEAD;
}

/* Takes the operations `pick` chooses out of the batch with result rc.
 * Returns 1 when it took some and some are left (so a retry makes sense). */
static int exclude(commit_op *ops, unsigned char *excluded, int rc,
                   int (*pick)(const commit_op *op)) {
  unsigned i = 0;
  int any = 0, rest = 0;
  for (commit_op *op = ops; op; op = op->next_, i++) {
    if (excluded[i]) continue;
    if (pick(op)) {
      excluded[i] = 1;
      op->result = rc;
      if (is_append(op)) op->seq = op->rec.seq = 0;
      any = 1;
    } else {
      rest = 1;
    }
  }
  return any && rest;
}

/* On a full map, appends cannot go in, but acks and nacks of the same
 * batch must: they are what frees the space. Appends go first; if the map
 * is still full, dead-letters: each copies its whole body into the DLQ
 * while the ready copy's pages become reusable only two commits later, so
 * in a small map a few large ones (or the drainer's expiry sweep) do not
 * fit, and they must not take the acks down with them. A dead-letter that
 * fails is published again and dead-lettered later, once acks freed space.
 * Returns 1 when a retry makes sense. */
static int exclude_for_space(commit_op *ops, unsigned char *excluded, int rc) {
  if (exclude(ops, excluded, rc, is_append)) return 1;
  return exclude(ops, excluded, rc, is_dead_letter);
}

/* One write batch, one commit. A per-operation error or a full map takes
 * the culprits out and writes the rest again in a fresh batch (nothing of
 * an aborted batch is stored, so a retry is safe); each retry excludes at
 * least one operation, so this ends. Any other error (the commit's -ENOSPC,
 * -EIO, ...) is the whole batch's. Returns the batch result. */
static int write_batch(rq_env *env, commit_op *ops, unsigned char *excluded) {
  for (;;) {
    rq_txn *t;
    int rc = rq_txn_begin(env, &t);
    if (rc != 0) return settle(ops, excluded, rc);
    int retry = 0;
    unsigned i = 0;
    for (commit_op *op = ops; op; op = op->next_, i++) {
      if (excluded[i]) continue;
      int r = apply(t, op);
      if (r == 0 || r == RQ_DUPLICATE || r == RQ_NOTFOUND) {
        op->result = r;
        continue;
      }
      rq_txn_abort(t);
      if (is_op_error(r)) {
        excluded[i] = 1;
        op->result = r;
        if (is_append(op)) op->seq = op->rec.seq = 0;
        retry = 1;
      } else if (r == RQ_MAP_FULL && exclude_for_space(ops, excluded, r)) {
        retry = 1;
      } else {
        return settle(ops, excluded, r);
      }
      break;
    }
    if (retry) continue;
    rc = rq_txn_commit(t);
    if (rc == 0) return 0; /* each op keeps its own 0 / DUPLICATE / NOTFOUND */
    if (rc == RQ_MAP_FULL && exclude_for_space(ops, excluded, rc)) continue;
    return settle(ops, excluded, rc);
  }
}

static void writer_main(void *arg) {
  committer *c = arg;
  uv_mutex_lock(&c->mu);
  for (;;) {
    while (!c->work && !c->stop) uv_cond_wait(&c->cv, &c->mu);
    if (!c->work) break;
    /* Everything handed over so far, up to max_batch, in submission order. */
    commit_op *ops = c->work, *last = ops;
    unsigned n = 1;
    while (n < c->max_batch && last->next_) {
      last = last->next_;
      n++;
    }
    c->work = last->next_;
    if (!c->work) c->work_tail = NULL;
    last->next_ = NULL;
    uv_mutex_unlock(&c->mu);

    /* The hand-back record is allocated before committing: a batch must
     * never be committed without a way to answer it. */
    commit_batch *b = malloc(sizeof *b);
    if (!b) {
      uv_mutex_lock(&c->mu);
      last->next_ = c->work; /* put the ops back at the front */
      c->work = ops;
      if (!c->work_tail) c->work_tail = last;
      uv_mutex_unlock(&c->mu);
      uv_sleep(10);
      uv_mutex_lock(&c->mu);
      continue;
    }
    uint64_t t0 = uv_hrtime();
    memset(c->excluded, 0, n);
    int rc = write_batch(c->env, ops, c->excluded);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    /* This thread is the one that just committed (see rq.h). */
    double sync_secs = rc == 0 ? rq_last_commit_sync_seconds(c->env) : 0;

    uv_mutex_lock(&c->mu);
    b->ops = ops;
    b->n = n;
    b->rc = rc;
    b->seconds = secs;
    b->sync_seconds = sync_secs;
    b->next = NULL;
    if (c->finished_tail)
      c->finished_tail->next = b;
    else
      c->finished = b;
    c->finished_tail = b;
    uv_async_send(&c->async);
  }
  uv_mutex_unlock(&c->mu);
}

/* Loop thread: gives the writer every pending operation. */
static void hand_over(committer *c) {
  if (!c->pending || c->finishing) return;
  unsigned n = 0;
  for (commit_op *op = c->pending; op; op = op->next_) n++;
  uv_mutex_lock(&c->mu);
  if (c->work_tail)
    c->work_tail->next_ = c->pending;
  else
    c->work = c->pending;
  c->work_tail = c->pending_tail;
  uv_cond_signal(&c->cv);
  uv_mutex_unlock(&c->mu);
  c->handed += n;
  c->pending = c->pending_tail = NULL;
}

static void maybe_finish(committer *c);

/* Also where closing completes: deciding here, just before the loop
 * blocks, rather than inside committer_close(), lets a callback close the
 * committer and still submit its last operations (e.g. final acks). */
static void on_prepare(uv_prepare_t *h) {
  committer *c = h->data;
  hand_over(c);
  maybe_finish(c);
}

static void on_handle_closed(uv_handle_t *h) {
  committer *c = h->data;
  if (--c->open_handles > 0) return;
  /* Operations submitted while the handles were closing never reached a
   * writer: they are answered (with an error) so that each callback still
   * runs exactly once. */
  while (c->pending) {
    commit_op *op = c->pending;
    c->pending = op->next_;
    if (!c->pending) c->pending_tail = NULL;
    op->next_ = NULL;
    op->result = -ECANCELED;
    if (is_append(op)) op->seq = op->rec.seq = 0;
    op->cb(op);
  }
  uv_mutex_destroy(&c->mu);
  uv_cond_destroy(&c->cv);
  void (*done)(void *) = c->done;
  void *arg = c->done_arg;
  free(c->excluded);
  free(c);
  if (done) done(arg);
}

/* Once closing and nothing is left to commit: stop the writer, close the
 * handles; on_handle_closed() finishes. */
static void maybe_finish(committer *c) {
  if (!c->closing || c->finishing || c->handed || c->pending) return;
  c->finishing = 1;
  uv_mutex_lock(&c->mu);
  c->stop = 1;
  uv_cond_signal(&c->cv);
  uv_mutex_unlock(&c->mu);
  /* The writer is idle (nothing in flight): this join is immediate. */
  uv_thread_join(&c->thread);
  c->open_handles = 2;
  uv_close((uv_handle_t *)&c->prepare, on_handle_closed);
  uv_close((uv_handle_t *)&c->async, on_handle_closed);
}

/* Answers one committed batch: stats, logs, observer, then callbacks. */
static void answer_batch(committer *c, commit_batch *b) {
  commit_op *ops = b->ops;
  unsigned n = b->n;
  int rc = b->rc;
  double secs = b->seconds, sync_secs = b->sync_seconds;
  free(b);
  c->handed -= n;

  c->stats.commits++;
  if (rc != 0) c->stats.failed_commits++;
  c->stats.ops += n;
  c->stats.last_batch_ops = n;
  c->stats.last_commit_seconds = secs;
  /* A full disk fails every batch until it is fixed: log the change of
   * state, not each batch (the failure count is in the stats/metrics). */
  if (rc != 0 && !c->failing) {
    char ops_s[24];
    snprintf(ops_s, sizeof ops_s, "%u", n);
    rlog(LOG_ERROR, "commit failed; answering its operations with an error", "error",
         rq_strerror(rc), "#ops", ops_s, NULL);
  } else if (rc == 0 && c->failing) {
    rlog(LOG_INFO, "commits succeed again", NULL);
  }
  c->failing = rc != 0;
  if (c->observer) c->observer(c->observer_arg, n, secs, sync_secs, rc);

  /* Detach before each callback: it may free or resubmit its op. */
  while (ops) {
    commit_op *op = ops;
    ops = op->next_;
    op->next_ = NULL;
    c->unanswered--;
    op->cb(op);
  }
}

static void on_async(uv_async_t *h) {
  committer *c = h->data;
  uv_mutex_lock(&c->mu);
  commit_batch *b = c->finished;
  c->finished = c->finished_tail = NULL;
  uv_mutex_unlock(&c->mu);
  if (!b) return; /* sends coalesce; nothing new */
  while (b) {
    commit_batch *next = b->next;
    answer_batch(c, b);
    b = next;
  }
  /* While closing, the async handle stays referenced so the loop reaches
   * the prepare callback that finishes the close. */
  if (c->unanswered == 0 && !c->closing) uv_unref((uv_handle_t *)&c->async);
}

int committer_new(committer **out, uv_loop_t *loop, rq_env *env, unsigned max_batch) {
  if (!out || !loop || !env) return -EINVAL;
  *out = NULL;
  committer *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  c->loop = loop;
  c->env = env;
  c->max_batch = max_batch ? max_batch : COMMIT_DEFAULT_MAX_BATCH;
  c->excluded = malloc(c->max_batch);
  if (!c->excluded) {
    free(c);
    return -ENOMEM;
  }
  int rc = uv_mutex_init(&c->mu);
  if (rc) {
    free(c->excluded);
    free(c);
    return rc;
  }
  if ((rc = uv_cond_init(&c->cv))) {
    uv_mutex_destroy(&c->mu);
    free(c->excluded);
    free(c);
    return rc;
  }
  if ((rc = uv_async_init(loop, &c->async, on_async))) {
    uv_cond_destroy(&c->cv);
    uv_mutex_destroy(&c->mu);
    free(c->excluded);
    free(c);
    return rc;
  }
  c->async.data = c;
  uv_unref((uv_handle_t *)&c->async);
  uv_prepare_init(loop, &c->prepare);
  c->prepare.data = c;
  uv_prepare_start(&c->prepare, on_prepare);
  uv_unref((uv_handle_t *)&c->prepare);
  if ((rc = uv_thread_create(&c->thread, writer_main, c))) {
    /* The handles are initialized, so they can only go through uv_close;
     * c is freed in the last close callback and no done is called. */
    c->closing = c->finishing = 1;
    c->open_handles = 2;
    uv_close((uv_handle_t *)&c->prepare, on_handle_closed);
    uv_close((uv_handle_t *)&c->async, on_handle_closed);
    return rc;
  }
  *out = c;
  return 0;
}

void committer_submit(committer *c, commit_op *op) {
  op->next_ = NULL;
  op->result = 0;
  if (c->pending_tail)
    c->pending_tail->next_ = op;
  else
    c->pending = op;
  c->pending_tail = op;
  if (c->finishing) return; /* answered with -ECANCELED by on_handle_closed */
  c->unanswered++;
  uv_ref((uv_handle_t *)&c->async);
}

unsigned committer_pending(const committer *c) {
  return c->unanswered;
}

void committer_set_observer(committer *c,
                            void (*fn)(void *arg, unsigned ops, double seconds,
                                       double sync_seconds, int result),
                            void *arg) {
  c->observer = fn;
  c->observer_arg = arg;
}

void committer_get_stats(const committer *c, commit_stats *out) {
  *out = c->stats;
}

void committer_close(committer *c, void (*done)(void *arg), void *arg) {
  if (c->closing) return;
  c->closing = 1;
  c->done = done;
  c->done_arg = arg;
  uv_ref((uv_handle_t *)&c->async);
}
