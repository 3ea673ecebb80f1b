/* Drain policy: the pure decisions of the drainer, free of I/O and clocks
 * (time is always a parameter), so they can be tested exhaustively.
 *
 *  - jittered exponential backoff for one event's retries (full jitter with
 *    a floor) and decorrelated jitter for the whole-drainer backoff;
 *  - AIMD concurrency control for throttling;
 *  - packing leased records into requests (entry count and byte limits);
 *  - what to do with an event after an attempt (outcome -> action).
 */
#ifndef RELAY_BACKOFF_H
#define RELAY_BACKOFF_H

#include <stddef.h>
#include <stdint.h>

#include "sns.h"

/* ---- Random numbers (xorshift64*: fast, good enough for jitter) -------- */

typedef struct {
  uint64_t s;
} backoff_rng;

/* seed 0 is replaced by a fixed non-zero constant. */
void backoff_rng_seed(backoff_rng *r, uint64_t seed);
uint64_t backoff_rng_next(backoff_rng *r);
/* Uniform in [lo, hi] (inclusive); returns lo when hi <= lo. */
uint64_t backoff_rng_between(backoff_rng *r, uint64_t lo, uint64_t hi);

/* ---- Delays ------------------------------------------------------------ */

/* Delay before retry number attempt+1 of one event that has failed
 * `attempts` times before this failure (0 for the first failure): uniform
 * in [base, min(cap, base * 2^(attempts+1))]. The floor keeps a hot retry
 * loop impossible; the jitter spreads events that failed together. Always
 * within [base, max(base, cap)]. */
uint64_t backoff_retry_delay(backoff_rng *r, uint64_t base_ms, uint64_t cap_ms, uint32_t attempts);

/* Decorrelated jitter (AWS architecture blog): next = min(cap, uniform in
 * [base, prev * 3]); prev = 0 starts at base..3*base. Used for the drainer's
 * own backoff while SNS fails whole requests, where no attempt count exists. */
uint64_t backoff_decorrelated(backoff_rng *r, uint64_t base_ms, uint64_t cap_ms, uint64_t prev_ms);

/* Slow probe interval while blocked by a configuration error: about
 * `interval_ms` with +-20 % jitter. */
uint64_t backoff_probe_delay(backoff_rng *r, uint64_t interval_ms);

/* ---- AIMD concurrency ----------------------------------------------------
 * Multiplicative decrease on throttling, at most once per "generation": a
 * throttled answer to a request that was sent before the last decrease does
 * not cut again (TCP's once-per-window rule), so one burst of throttled
 * requests halves once instead of collapsing to 1. Additive increase: +1
 * after `cur` successful requests in a row (about one per round trip). */
typedef struct {
  unsigned cur, max, min;
  unsigned successes;  /* since the last change */
  uint64_t generation; /* bumped at every decrease */
} backoff_aimd;

void backoff_aimd_init(backoff_aimd *a, unsigned max);
/* A request sent in generation `sent_gen` was throttled. Returns 1 when the
 * limit was lowered. */
int backoff_aimd_throttled(backoff_aimd *a, uint64_t sent_gen);
/* A request finished without throttling. Returns 1 when the limit rose. */
int backoff_aimd_success(backoff_aimd *a);

/* ---- Packing ------------------------------------------------------------
 * How many of the next records (sizes[0..n-1], in lease order) go into one
 * request: at most max_entries, and their sizes sum to at most max_bytes.
 * Order is kept (no bin packing: FIFO groups and age order matter more than
 * a slightly fuller request). A single record larger than max_bytes still
 * gives 1 (the caller dead-letters over-size records before packing).
 * Returns 0 only for n == 0. */
size_t backoff_pack(const size_t *sizes, size_t n, size_t max_entries, size_t max_bytes);

/* ---- Outcome -> action --------------------------------------------------- */

typedef enum {
  BACKOFF_ACK = 0,       /* SNS accepted: remove from the queue */
  BACKOFF_RETRY,         /* nack; next attempt after backoff_retry_delay() */
  BACKOFF_RETRY_SHORT,   /* throttled: nack after backoff_retry_delay() as well; the caller
                          * also lowers its concurrency (AIMD) */
  BACKOFF_DEAD_REJECTED, /* DLQ "rejected" with the AWS code and message */
  BACKOFF_DEAD_EXPIRED,  /* DLQ "expired": transient failure past max age */
  BACKOFF_RELEASE        /* release the lease, count no attempt (unreachable, config) */
} backoff_action;

const char *backoff_action_name(backoff_action a);

/* Decides what happens to one event after an attempt with `outcome`.
 * received_ms is when relay accepted the event; an event older than
 * max_age_ms that failed transiently (retry, throttled, unreachable) is
 * expired. Configuration errors never expire or dead-letter anything. */
backoff_action backoff_decide(sns_outcome outcome, int64_t received_ms, int64_t now_ms,
                              int64_t max_age_ms);

/* 1 when an event received at received_ms is older than max_age_ms at
 * now_ms (the limit itself is not yet expired; received_ms 0 = unknown and
 * max_age_ms 0 = no limit never expire). The age rule of backoff_decide(). */
int backoff_expired(int64_t received_ms, int64_t now_ms, int64_t max_age_ms);

/* ---- Wall-clock steps ------------------------------------------------------
 * Records carry wall-clock times (received_ms, replayed_ms), and the wall
 * clock can step: a VM restored from a snapshot, NTP fixing a bad RTC, an
 * operator setting the date. Measured on the stepped clock, a forward step
 * of two days would make every queued event that fails once more "older
 * than RELAY_RETRY_MAX_AGE" and dead-letter the whole backlog as expired,
 * although none of it has been failing that long. The drainer watches the
 * wall clock against the monotonic one and remembers forward steps, and an
 * event's age leaves out the steps that happened after its budget started
 * (backoff_clock_credit). RELAY_RETRY_MAX_AGE keeps its meaning: time the
 * event has actually spent queued and failing.
 *
 * Limits: only steps this process saw count (one made while relayd was not
 * running cannot be told from real time); a step back is not credited (an
 * age taken across it is too small, so expiry comes late, never early);
 * differences under BACKOFF_CLOCK_STEP_MS are NTP's ordinary slewing, not
 * steps. */
#define BACKOFF_CLOCK_STEP_MS 2000
#define BACKOFF_CLOCK_MAX_STEPS 8

typedef struct {
  int started;
  int64_t offset; /* wall - monotonic at the last observation */
  size_t n;
  /* Forward steps, oldest first: a budget that started at or before
   * `before_ms` (old timeline) is credited `by_ms`. */
  struct {
    int64_t before_ms, by_ms;
  } step[BACKOFF_CLOCK_MAX_STEPS];
} backoff_clock;

/* Feeds one reading of both clocks. Returns the step seen since the last
 * reading (wall minus monotonic progress, positive = forward) when it is
 * at least BACKOFF_CLOCK_STEP_MS either way, else 0. */
int64_t backoff_clock_observe(backoff_clock *c, int64_t wall_ms, int64_t mono_ms);

/* Forward steps (ms) taken after a budget that started at start_ms: the
 * time to add to start_ms before measuring its age. 0 for start_ms 0. */
int64_t backoff_clock_credit(const backoff_clock *c, int64_t start_ms);

/* 1 when the answer to a whole request says SNS itself is in trouble (no
 * answer, 5xx or timeout, throttled): the whole drainer backs off and
 * probes with one request, besides each event's own retry delay. A 200
 * with Failed entries (overall SNS_OK) is handled per entry, unless every
 * entry failed transiently: the drainer treats that as a whole request
 * failed (SNS_THROTTLED when any entry was throttled, else SNS_RETRY). */
int backoff_whole_drainer(sns_outcome overall);

#endif
