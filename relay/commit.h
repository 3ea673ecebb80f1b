/* Group commit: where an event becomes durable.
 *
 * The loop thread submits operations (appends from ingest, acks/nacks/
 * dead-letters from the drainer). Everything submitted during one loop
 * iteration is handed, just before the loop sleeps (Redis's beforeSleep), to
 * the writer thread, which applies it in ONE rq write batch and ONE
 * rq_txn_commit() (fsync). Only after that commit returns are the
 * operations' callbacks run, back on the loop thread: so an ingest 200 is
 * never sent before the fsync that covers its event. While the writer
 * commits, new operations accumulate for the next batch.
 *
 * When the commit fails (-ENOSPC, -EIO, RQ_MAP_FULL), every operation of
 * that batch gets the error and nothing of it is stored; the next batch
 * starts afresh, so relayd recovers without a restart once the cause is
 * gone.
 */
#ifndef RELAY_COMMIT_H
#define RELAY_COMMIT_H

#include <stdint.h>
#include <uv.h>

#include "rq.h"

typedef enum {
  COMMIT_APPEND,      /* rec -> ready queue; seq out */
  COMMIT_APPEND_DEAD, /* rec -> DLQ with reason/code/message (too_large) */
  COMMIT_ACK,         /* seq */
  COMMIT_NACK,        /* seq, now_ms, next_attempt_ms, message */
  COMMIT_DEAD         /* seq, now_ms, reason, code, message */
} commit_kind;

typedef struct commit_op commit_op;
struct commit_op {
  commit_kind kind;
  rq_record rec;          /* APPEND*: borrowed until the callback */
  uint64_t seq;           /* ACK/NACK/DEAD: in; APPEND*: out */
  int64_t now_ms, next_attempt_ms;
  const char *reason, *code, *message; /* borrowed until the callback */
  /* Result, set before cb: 0, RQ_DUPLICATE (append not stored: already
   * seen), RQ_NOTFOUND (ack of a record already gone), or the batch's
   * commit error. */
  int result;
  void (*cb)(commit_op *op); /* loop thread, after the commit returned */
  void *arg;
  commit_op *next_;          /* internal */
};

/* commits counts every batch written, failed ones included. */
typedef struct {
  uint64_t commits, failed_commits, ops;
  uint64_t last_batch_ops;
  double last_commit_seconds;
} commit_stats;

typedef struct committer committer;

/* Starts the writer thread. `env` is borrowed and must outlive the
 * committer. Limits: at most max_batch operations per commit (0 = 4096). */
int committer_new(committer **out, uv_loop_t *loop, rq_env *env, unsigned max_batch);
/* Queues op (loop thread only). Its callback is always called exactly once. */
void committer_submit(committer *c, commit_op *op);
/* Operations submitted but not yet answered. */
unsigned committer_pending(const committer *c);
/* Optional observer called on the loop thread after each commit, with the
 * number of operations, the commit's duration, the part of it spent in
 * LMDB's durable commit (page writes, fdatasync, meta page sync: see
 * rq_last_commit_sync_seconds; 0 when the commit failed) and its result
 * (metrics). */
void committer_set_observer(committer *c,
                            void (*fn)(void *arg, unsigned ops, double seconds,
                                       double sync_seconds, int result),
                            void *arg);
void committer_get_stats(const committer *c, commit_stats *out);
/* Commits whatever is queued, answers it, stops the thread, closes the
 * libuv handles, then calls done(arg) on the loop thread and frees c.
 * Operations submitted after close() in the same loop iteration (e.g. by
 * callbacks) are still committed; ones submitted after the last commit
 * while the handles close are answered with -ECANCELED before done. */
void committer_close(committer *c, void (*done)(void *arg), void *arg);

#endif
