/* The drainer: publishes the queue to SNS (SPEC "Publishing").
 *
 * Runs on the relay's libuv loop. It leases due records from the queue
 * (oldest first; with RQ_LEASE_FIFO on .fifo topics so a group is published
 * strictly in seq order), packs them into Publish/PublishBatch requests (at
 * most RELAY_PUBLISH_BATCH entries and 256 KiB per request), keeps up to the
 * current concurrency of requests in flight, and settles every event through
 * the group committer: ack only after SNS accepted it, nack with a jittered
 * backoff for transient errors, dead-letter for permanent ones. A leased
 * record is copied out of LMDB, so no read transaction is ever open across
 * network I/O.
 *
 * States (drain_status.state):
 *   running  publishing, or idle waiting for work (a timer for the next due
 *            record, drain_kick() for new ones)
 *   backoff  SNS unreachable (no HTTP answer), or it failed a whole request
 *            (5xx, timeout, throttling): the whole drainer waits until
 *            backoff_until_ms (capped, decorrelated jitter) and then probes
 *            with one request at a time; when no record is due yet it stays
 *            in backoff until one is (backoff_until_ms moves with it), with
 *            an empty queue it runs idle. Unanswered requests release their
 *            events without counting an attempt; 5xx/throttled ones nack
 *            them with their own retry delay. Events past
 *            RELAY_RETRY_MAX_AGE go to the DLQ (expired) meanwhile too.
 *            Failed entries inside a 200 only retry those events, unless
 *            every entry of the request failed transiently (each one
 *            Failed with Throttled, say): that is a whole request failed.
 *   paused   operator pause (POST /v1/pause): nothing new is leased;
 *            requests already in flight finish and are settled normally
 *   blocked  configuration error (authorization, missing topic, KMS access,
 *            no credentials): events stay queued, no attempt is counted, one
 *            probe request every ~30 s (jittered) until SNS accepts again;
 *            logged once per state change
 * Operator pause wins over backoff/blocked in the reported state.
 *
 * Threads: every function here is for the loop thread only, except that
 * drain_get_status() may also be called there by the admin API (same
 * thread). None blocks on the network.
 */
#ifndef RELAY_DRAIN_H
#define RELAY_DRAIN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "commit.h"
#include "config.h"
#include "rq.h"
#include "sns.h"

typedef struct drain drain;

typedef enum { DRAIN_RUNNING = 0, DRAIN_BACKOFF, DRAIN_PAUSED, DRAIN_BLOCKED } drain_state;

/* "running", "backoff", "paused", "blocked" (SPEC relayctl stats). */
const char *drain_state_name(drain_state s);

/* Dead-letter reasons the drainer produces, as indexes into
 * drain_status.dead_lettered[]; names via drain_dead_reason_name(). */
typedef enum {
  DRAIN_DEAD_REJECTED = 0, /* SNS refused the message for good */
  DRAIN_DEAD_EXPIRED,      /* still failing transiently after RELAY_RETRY_MAX_AGE */
  DRAIN_DEAD_TOO_LARGE,    /* ready record over RELAY_MAX_MESSAGE_BYTES (config lowered) */
  DRAIN_DEAD_NREASONS
} drain_dead_reason;

const char *drain_dead_reason_name(drain_dead_reason r);

typedef struct {
  drain_state state;
  int operator_paused; /* 1 after drain_pause() until drain_resume() */
  /* backoff: when the next probe may go out; blocked: when the next
   * configuration probe is due. 0 otherwise. ms since epoch. */
  int64_t backoff_until_ms;
  /* The most recent failure of any kind (kept after recovery, with its
   * time); code "" when there was none. Never contains secrets. */
  struct {
    char code[64]; /* AWS code, or curl error name, or errno name */
    char message[512];
    int64_t at_ms; /* 0 = no error yet */
  } last_error;
  unsigned concurrency;     /* current AIMD limit of requests in flight */
  unsigned max_concurrency; /* RELAY_PUBLISH_CONCURRENCY */
  unsigned inflight_requests;
  uint64_t inflight_messages;                  /* leased by the drainer and not yet settled */
  uint64_t published_total;                    /* events SNS accepted (acks committed or not) */
  uint64_t failed_total;                       /* per-event failed attempts of any outcome */
  uint64_t retried_total;                      /* events nacked for a later retry */
  uint64_t throttled_total;                    /* per-event throttled attempts (subset of failed) */
  uint64_t requests_total;                     /* SNS requests completed */
  uint64_t dead_lettered[DRAIN_DEAD_NREASONS]; /* by drain_dead_reason */
  uint64_t dead_lettered_total;
  uint64_t ack_commit_failures; /* settle commits that failed (events republished later) */
  double publish_rate;          /* events accepted per second over the last ~10 s */
} drain_status;

/* Creates the drainer (idle until drain_start()). All arguments are
 * borrowed and must outlive it; `cfg` supplies publish_batch,
 * publish_concurrency, retry_base_ms, retry_max_ms, retry_max_age_s,
 * max_message_bytes and fifo. Returns 0, -ENOMEM, or a uv error. */
int drain_new(drain **out, uv_loop_t *loop, const relay_config *cfg, rq_env *env, committer *commit,
              sns_client *sns);

/* Starts leasing and publishing. Returns 0 or -EALREADY. */
int drain_start(drain *d);

/* Wakes an idle drainer at once (ingest calls it after each commit that
 * appended events). Cheap; safe to call at any time, also before start. */
void drain_kick(drain *d);

/* Operator pause/resume (POST /v1/pause, /v1/resume). Idempotent. Pause
 * stops leasing; requests in flight finish normally. Resume also cuts
 * short a backoff or blocked wait and probes at once. */
void drain_pause(drain *d);
void drain_resume(drain *d);

/* Optional: the credentials provider behind `sns`, so that authorization
 * errors ask it for fresh credentials (creds_invalidate) before the next
 * probe. Borrowed; NULL to unset. */
void drain_set_creds(drain *d, creds_provider *creds);

/* Snapshot of the drainer's state for stats, /metrics and logs. */
void drain_get_status(const drain *d, drain_status *out);

/* One test event ({"type":"relay.test",...}) published directly, not through
 * the queue (relayctl test-sns). The callback gets err = 0 and the result
 * (outcome SNS_OK with message_id, or the AWS code/message and outcome), or
 * err = -ECANCELED when the drainer closed first. Returns 0 (the callback
 * will be called exactly once, on the loop thread) or an error, and then the
 * callback is never called: -EAGAIN (no credentials right now), -ENOMEM,
 * -ESHUTDOWN (closing). Does not change the drainer's state or counters. */
typedef void (*drain_test_cb)(void *arg, int err, const sns_result *res);
int drain_test_sns(drain *d, drain_test_cb cb, void *arg);

/* Stops leasing, waits for in-flight requests (at most ~2 s; then they are
 * abandoned and their events simply stay queued), releases every lease
 * still held, waits for its pending settle commits, closes its handles, then
 * calls done(arg) on the loop thread and frees d. Call before closing the
 * committer and the SNS client. */
void drain_close(drain *d, void (*done)(void *arg), void *arg);

#endif
