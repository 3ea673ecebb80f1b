/* The drainer (see drain.h). Pure decisions live in backoff.c; this file
 * does the plumbing: leases, requests, settle commits, states, timers. */
#include "drain.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "log.h"
#include "metrics.h"

#define DRAIN_CLOSE_WAIT_MS 2000
#define DRAIN_BLOCKED_PROBE_MS 30000 /* slowest configuration probe */
#define DRAIN_BACKOFF_CAP_MS 30000   /* cap of the whole-drainer backoff */
#define DRAIN_COMMIT_FAIL_MS 1000    /* pause after a failed settle commit */
#define DRAIN_IDLE_POLL_MS 1000      /* catches replays and anything not kicked */
#define DRAIN_SWEEP_MAX 64           /* records a backoff probe looks at for expiry */
#define DRAIN_RATE_SLOTS 10

typedef enum { MODE_RUNNING = 0, MODE_BACKOFF, MODE_BLOCKED } drain_mode;

/* The array of one rq_lease() call, shared by the requests made from it. */
typedef struct {
  rq_record *recs;
  size_t n;
  unsigned refs;
} lease_set;

typedef struct dreq dreq;
struct dreq {
  drain *d;          /* NULL once abandoned by drain_close() */
  dreq *prev, *next; /* d->reqs: in flight or settling */
  lease_set *ls;
  size_t n;
  rq_record *recs[SNS_MAX_BATCH];
  uint64_t gen;  /* AIMD generation when sent */
  int probe;     /* the one request sent to test SNS after a backoff/block */
  int in_flight; /* waiting for SNS */
  unsigned ops_pending;
  commit_op ops[SNS_MAX_BATCH];
  char code[SNS_MAX_BATCH][64];
  char msg[SNS_MAX_BATCH][600];
  char fifo_ids[SNS_MAX_BATCH][2][2 * SHA256_DIGEST_LENGTH + 1]; /* group, dedup */
};

typedef struct dtest dtest;
struct dtest {
  drain *d; /* NULL once abandoned */
  dtest *prev, *next;
  drain_test_cb cb;
  void *arg;
  char body[256];
  char dedup[40];
};

struct drain {
  uv_loop_t *loop;
  const relay_config *cfg;
  rq_env *env;
  committer *commit;
  sns_client *sns;
  creds_provider *creds;
  int fifo;
  unsigned batch;

  uv_timer_t timer;       /* next wake-up: kick, due record, backoff end, probe */
  uv_timer_t close_timer; /* bound on waiting for in-flight requests at close */
  int started, closing, abandoned, handles_closing, handles_open;
  void (*done)(void *arg);
  void *done_arg;

  drain_mode mode;
  int operator_paused;
  /* Backoff end / next probe, on the monotonic clock: a wall-clock
   * deadline would hold the drainer in backoff for as long as the wall
   * clock is stepped back (hours), with nothing moving and nothing logged. */
  int64_t until_mono;
  /* Wall-clock steps seen so far: RELAY_RETRY_MAX_AGE does not count them
   * (see backoff.h). */
  backoff_clock clk;
  uint64_t backoff_prev_ms;
  int probe_inflight;
  /* In backoff because SNS failed transiently (not a local error): events
   * past RELAY_RETRY_MAX_AGE are dead-lettered with this error without
   * waiting for a request of their own. */
  int sns_down;
  char down_code[64];
  char down_msg[512];
  /* Records up to this seq go out one per request: a PublishBatch refused
   * as a whole (e.g. BatchRequestTooLong, or a request-level
   * InvalidParameter) says nothing about which entry is at fault, so each
   * is tried alone before any is dead-lettered. */
  uint64_t solo_upto;

  backoff_aimd aimd;
  backoff_rng rng;

  dreq *reqs;
  dtest *tests;
  unsigned inflight_reqs;
  uint64_t leased_msgs; /* leased by us, not yet settled or released */
  unsigned pending_ops; /* settle ops submitted, not answered */

  drain_status st; /* counters and last_error; state fields filled on read */
  struct {
    int64_t sec;
    uint64_t n;
  } rate[DRAIN_RATE_SLOTS];
};

#ifdef RELAY_TEST_CLOCK
/* Test builds only (tests/integration/clock.cmake; relayd never has it):
 * the file named by RELAY_TEST_CLOCK_FILE holds an offset in ms that is
 * added to the drainer's wall clock, so a test steps the clock by
 * rewriting it. The monotonic clock (libuv timers, mono_ms) does not move,
 * as with a real step. */
static int64_t test_clock_offset(void) {
  const char *path = getenv("RELAY_TEST_CLOCK_FILE");
  FILE *f = path ? fopen(path, "r") : NULL;
  if (!f) return 0;
  char buf[32];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strtoll(buf, NULL, 10);
}
#endif

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#ifdef RELAY_TEST_CLOCK
  ms += test_clock_offset();
#endif
  return ms;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A monotonic deadline as a wall-clock time, for status and logs. */
static int64_t wall_of(int64_t mono) {
  return now_ms() + (mono - mono_ms());
}

/* The wall clock for decisions about events, watching it for steps. */
static int64_t clock_now(drain *d) {
  int64_t wall = now_ms();
  int64_t step = backoff_clock_observe(&d->clk, wall, mono_ms());
  if (step) {
    char by[24];
    snprintf(by, sizeof by, "%" PRId64, step);
    rlog(LOG_WARN,
         step > 0
             ? "wall clock stepped forward; event ages for RELAY_RETRY_MAX_AGE leave the step out"
             : "wall clock stepped back; retries due in the old timeline run now",
         "#by_ms", by, NULL);
  }
  return wall;
}

const char *drain_state_name(drain_state s) {
  switch (s) {
    case DRAIN_RUNNING:
      return "running";
    case DRAIN_BACKOFF:
      return "backoff";
    case DRAIN_PAUSED:
      return "paused";
    case DRAIN_BLOCKED:
      return "blocked";
  }
  return "unknown";
}

const char *drain_dead_reason_name(drain_dead_reason r) {
  switch (r) {
    case DRAIN_DEAD_REJECTED:
      return "rejected";
    case DRAIN_DEAD_EXPIRED:
      return "expired";
    case DRAIN_DEAD_TOO_LARGE:
      return "too_large";
    case DRAIN_DEAD_NREASONS:
      break;
  }
  return "unknown";
}

static int has(const char *s) {
  return s && *s;
}

static void copy_str(char *dst, size_t cap, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= cap) n = cap - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = '\0';
}

static void set_error(drain *d, const char *code, const char *msg) {
  copy_str(d->st.last_error.code, sizeof d->st.last_error.code, has(code) ? code : "Unknown");
  copy_str(d->st.last_error.message, sizeof d->st.last_error.message, msg);
  d->st.last_error.at_ms = now_ms();
}

/* Rate slots count monotonic seconds: a wall-clock step would leave slots
 * "in the future" counted until the clock caught up. */
static void rate_add(drain *d, uint64_t n) {
  int64_t sec = mono_ms() / 1000;
  unsigned i = (unsigned)(sec % DRAIN_RATE_SLOTS);
  if (d->rate[i].sec != sec) {
    d->rate[i].sec = sec;
    d->rate[i].n = 0;
  }
  d->rate[i].n += n;
}

/* ---- Scheduling ----------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* Arms the single wake-up timer for `delay_ms` from now unless it is
 * already due sooner. Everything that may let the drainer do more work ends
 * here rather than calling pump() recursively from I/O callbacks. */
static void schedule(drain *d, uint64_t delay_ms) {
  if (!d->started || d->closing) return;
  if (uv_is_active((uv_handle_t *)&d->timer) && uv_timer_get_due_in(&d->timer) <= delay_ms) return;
  uv_timer_start(&d->timer, on_timer, delay_ms, 0);
}

static void log_mode(drain *d, drain_mode old) {
  if (old == d->mode) return;
  char until[32];
  snprintf(until, sizeof until, "%" PRId64, wall_of(d->until_mono));
  switch (d->mode) {
    case MODE_RUNNING:
      rlog(LOG_INFO, "drainer running again", "previous",
           old == MODE_BACKOFF ? "backoff" : "blocked", NULL);
      break;
    case MODE_BACKOFF:
      rlog(LOG_WARN, "drainer backing off", "code", d->st.last_error.code, "error",
           d->st.last_error.message, "#until_ms", until, NULL);
      break;
    case MODE_BLOCKED:
      rlog(LOG_ERROR, "drainer blocked by a configuration error; events stay queued", "code",
           d->st.last_error.code, "error", d->st.last_error.message, "#next_probe_ms", until, NULL);
      break;
  }
}

static void enter_running(drain *d) {
  drain_mode old = d->mode;
  d->mode = MODE_RUNNING;
  d->until_mono = 0;
  d->backoff_prev_ms = 0;
  d->sns_down = 0;
  log_mode(d, old);
}

static void enter_backoff(drain *d, uint64_t delay_ms) {
  drain_mode old = d->mode;
  d->mode = MODE_BACKOFF;
  d->until_mono = mono_ms() + (int64_t)delay_ms;
  log_mode(d, old);
  schedule(d, delay_ms);
}

/* SNS gave no answer, or failed a whole request (5xx, timeout,
 * throttled): decorrelated jitter, capped, growing while it stays down, and
 * then one probe request. Per-event retry delays alone would let a backlog
 * of due events become hundreds of fast-failing requests a second.
 * Requests that were already in flight when the first one failed settle
 * their events without growing the delay again. */
static void sns_trouble(drain *d, int probe, const sns_result *why) {
  /* Only the probe's answer may turn a configuration block into backoff. */
  if (d->mode == MODE_BLOCKED && !probe) return;
  copy_str(d->down_code, sizeof d->down_code, has(why->code) ? why->code : "Unknown");
  copy_str(d->down_msg, sizeof d->down_msg, why->message);
  d->sns_down = 1;
  if (d->mode == MODE_BACKOFF && !probe) return;
  uint64_t cap = d->cfg->retry_max_ms;
  if (cap > DRAIN_BACKOFF_CAP_MS) cap = DRAIN_BACKOFF_CAP_MS;
  d->backoff_prev_ms =
      backoff_decorrelated(&d->rng, d->cfg->retry_base_ms, cap, d->backoff_prev_ms);
  enter_backoff(d, d->backoff_prev_ms);
}

static void blocked(drain *d, int probe, const char *code) {
  /* Authorization errors may be stale credentials (rotated keys, an
   * expired session): ask for fresh ones before the next probe. A missing
   * topic or a KMS problem is not fixed by that. */
  if (d->creds && code && !strstr(code, "NotFound") && strncmp(code, "KMS", 3) != 0)
    creds_invalidate(d->creds);
  if (d->mode == MODE_BLOCKED && !probe) return;
  /* Probing slowly: at the retry cap, but at most every 30 s. */
  uint64_t iv = d->cfg->retry_max_ms;
  if (iv > DRAIN_BLOCKED_PROBE_MS) iv = DRAIN_BLOCKED_PROBE_MS;
  if (iv < 100) iv = 100;
  uint64_t delay = backoff_probe_delay(&d->rng, iv);
  drain_mode old = d->mode;
  d->mode = MODE_BLOCKED;
  d->until_mono = mono_ms() + (int64_t)delay;
  log_mode(d, old);
  schedule(d, delay);
}

/* Where an event's RELAY_RETRY_MAX_AGE budget starts: when it was
 * received, or when the operator last replayed it from the DLQ. Measured
 * from received_ms alone, a replayed "expired" event would go straight back
 * at its first failure, and while SNS is down the backoff sweep would
 * return it at once. */
static int64_t retry_clock(const rq_record *rec) {
  return rec->replayed_ms > rec->received_ms ? rec->replayed_ms : rec->received_ms;
}

/* The same, moved later by the forward clock steps seen since (a clock fix
 * must not dead-letter the backlog as expired). */
static int64_t budget_start(const drain *d, int64_t start) {
  return start + backoff_clock_credit(&d->clk, start);
}

/* ---- Requests ------------------------------------------------------- */

static void ls_unref(lease_set *ls) {
  if (ls && --ls->refs == 0) rq_records_free(ls->recs, ls->n);
  if (ls && ls->refs == 0) free(ls);
}

static void maybe_finish_close(drain *d);

static void req_unlink(drain *d, dreq *r) {
  if (r->prev)
    r->prev->next = r->next;
  else if (d->reqs == r)
    d->reqs = r->next;
  if (r->next) r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

static void req_free(dreq *r) {
  ls_unref(r->ls);
  free(r);
}

static void req_done_if_settled(dreq *r) {
  if (r->in_flight || r->ops_pending) return;
  drain *d = r->d;
  if (d) req_unlink(d, r);
  req_free(r);
  if (d) maybe_finish_close(d);
}

static void release_rec(drain *d, const rq_record *rec) {
  rq_release(d->env, rec->seq);
  d->leased_msgs--;
}

static void on_settled(commit_op *op) {
  dreq *r = op->arg;
  drain *d = r->d;
  if (op->result != 0 && op->result != RQ_NOTFOUND) {
    /* Nothing of the batch was stored: the record keeps its old state and
     * is published again (a duplicate at worst, never a loss). The queue
     * released its lease already when the commit failed, so it is not
     * released here (that could drop a newer lease of the same record). */
    d->st.ack_commit_failures++;
    if (d->st.ack_commit_failures == 1 || d->mode == MODE_RUNNING) {
      set_error(d, "CommitFailed", rq_strerror(op->result));
      rlog(LOG_WARN, "drainer settle commit failed; events will be published again", "error",
           rq_strerror(op->result), NULL);
    }
    if (d->mode == MODE_RUNNING && !d->closing) enter_backoff(d, DRAIN_COMMIT_FAIL_MS);
  }
  d->leased_msgs--;
  d->pending_ops--;
  r->ops_pending--;
  schedule(d, 0);
  req_done_if_settled(r);
}

static void submit_op(drain *d, dreq *r, size_t i, commit_kind kind) {
  commit_op *op = &r->ops[i];
  memset(op, 0, sizeof *op);
  op->kind = kind;
  op->seq = r->recs[i]->seq;
  op->cb = on_settled;
  op->arg = r;
  r->ops_pending++;
  d->pending_ops++;
  committer_submit(d->commit, op);
}

static void settle_dead(drain *d, dreq *r, size_t i, drain_dead_reason reason, const char *code,
                        const char *msg, int64_t now) {
  copy_str(r->code[i], sizeof r->code[i], code);
  copy_str(r->msg[i], sizeof r->msg[i], msg);
  commit_op *op = &r->ops[i];
  submit_op(d, r, i, COMMIT_DEAD);
  op->now_ms = now;
  op->reason = drain_dead_reason_name(reason);
  op->code = r->code[i];
  op->message = r->msg[i];
  d->st.dead_lettered[reason]++;
  d->st.dead_lettered_total++;
  char seq[24];
  snprintf(seq, sizeof seq, "%" PRIu64, r->recs[i]->seq);
  rlog(LOG_WARN, "event dead-lettered", "reason", op->reason, "code", code ? code : "", "#seq", seq,
       "type", r->recs[i]->type ? r->recs[i]->type : "", NULL);
}

static void settle_nack(drain *d, dreq *r, size_t i, const sns_result *res, int64_t now,
                        uint64_t delay) {
  snprintf(r->msg[i], sizeof r->msg[i], "%s: %s", res->code, res->message);
  commit_op *op = &r->ops[i];
  submit_op(d, r, i, COMMIT_NACK);
  op->now_ms = now;
  op->next_attempt_ms = now + (int64_t)delay;
  op->message = r->msg[i];
  d->st.retried_total++;
}

static void on_sns_done(void *arg, const sns_result *results, size_t n, const sns_result *overall,
                        double duration_s) {
  dreq *r = arg;
  drain *d = r->d;
  r->in_flight = 0;
  if (!d) { /* abandoned at close: its leases were released then */
    req_free(r);
    return;
  }
  d->inflight_reqs--;
  if (r->probe) d->probe_inflight = 0;
  d->st.requests_total++;
  metrics_publish(sns_outcome_name(overall->outcome), (unsigned)n, duration_s);

  int64_t now = clock_now(d);
  if (overall->outcome == SNS_PERMANENT && r->n > 1) {
    for (size_t i = 0; i < r->n; i++) {
      if (r->recs[i]->seq > d->solo_upto) d->solo_upto = r->recs[i]->seq;
      release_rec(d, r->recs[i]);
    }
    d->st.failed_total += r->n;
    set_error(d, overall->code, overall->message);
    rlog(LOG_WARN, "SNS refused a whole batch; publishing its events one by one", "code",
         overall->code, NULL);
    schedule(d, 0);
    req_done_if_settled(r);
    return;
  }
  int64_t max_age = (int64_t)d->cfg->retry_max_age_s * 1000;
  int any_throttled = overall->outcome == SNS_THROTTLED, any_config = 0;
  const sns_result *config_res = NULL, *err_res = NULL;
  uint64_t accepted = 0;
  size_t transient = 0; /* entries that failed with SNS_RETRY or SNS_THROTTLED */
  for (size_t i = 0; i < r->n; i++) {
    /* A request-level failure applies to every entry, whatever the
     * per-entry slots say. */
    const sns_result *res = overall->outcome != SNS_OK || i >= n ? overall : &results[i];
    const rq_record *rec = r->recs[i];
    backoff_action act =
        backoff_decide(res->outcome, budget_start(d, retry_clock(rec)), now, max_age);
    if (res->outcome != SNS_OK) {
      d->st.failed_total++;
      err_res = res;
    }
    if (res->outcome == SNS_RETRY || res->outcome == SNS_THROTTLED) transient++;
    switch (act) {
      case BACKOFF_ACK:
        accepted++;
        submit_op(d, r, i, COMMIT_ACK);
        break;
      case BACKOFF_RETRY:
        settle_nack(d, r, i, res, now,
                    backoff_retry_delay(&d->rng, d->cfg->retry_base_ms, d->cfg->retry_max_ms,
                                        rec->attempts));
        break;
      case BACKOFF_RETRY_SHORT:
        any_throttled = 1;
        d->st.throttled_total++;
        /* Grows with the event's attempts like any retry; AIMD below lowers
         * the request rate as well. */
        settle_nack(d, r, i, res, now,
                    backoff_retry_delay(&d->rng, d->cfg->retry_base_ms, d->cfg->retry_max_ms,
                                        rec->attempts));
        break;
      case BACKOFF_DEAD_REJECTED:
        settle_dead(d, r, i, DRAIN_DEAD_REJECTED, res->code, res->message, now);
        break;
      case BACKOFF_DEAD_EXPIRED:
        settle_dead(d, r, i, DRAIN_DEAD_EXPIRED, res->code, res->message, now);
        break;
      case BACKOFF_RELEASE:
        if (res->outcome == SNS_CONFIG) {
          any_config = 1;
          config_res = res;
        }
        release_rec(d, rec);
        break;
    }
  }
  if (accepted) {
    d->st.published_total += accepted;
    rate_add(d, accepted);
  }
  if (err_res) set_error(d, err_res->code, err_res->message);

  /* A 200 in which every entry failed transiently (each one Failed with
   * Throttled, say) is SNS failing the request as a whole, as a 5xx or a
   * request-level Throttling would: the whole drainer backs off too.
   * Retrying per entry only would send the rest of the backlog back to
   * back while SNS throttles, and a probe answered so would end the
   * backoff. */
  sns_outcome whole = overall->outcome;
  const sns_result *whole_res = overall;
  if (whole == SNS_OK && r->n > 0 && transient == r->n) {
    whole = any_throttled ? SNS_THROTTLED : SNS_RETRY;
    whole_res = err_res;
  }
  if (any_config) {
    set_error(d, config_res->code, config_res->message);
    blocked(d, r->probe, config_res->code);
  } else if (backoff_whole_drainer(whole)) {
    sns_trouble(d, r->probe, whole_res);
  } else if (r->probe && d->mode != MODE_RUNNING) {
    /* Only an answer to the probe proves recovery; an older request that
     * finishes late does not. Any HTTP answer means SNS is reachable and
     * configured; per-event retries handle the rest. */
    enter_running(d);
  } else if (d->mode == MODE_RUNNING) {
    d->backoff_prev_ms = 0;
  }
  if (any_throttled) {
    if (backoff_aimd_throttled(&d->aimd, r->gen)) {
      char c[16];
      snprintf(c, sizeof c, "%u", d->aimd.cur);
      rlog(LOG_INFO, "SNS throttling: concurrency lowered", "#concurrency", c, NULL);
    }
  } else if (whole == SNS_OK) {
    backoff_aimd_success(&d->aimd);
  }
  schedule(d, 0);
  req_done_if_settled(r);
}

/* ids: NULL when only sizing (FIFO ids do not count toward the size), else
 * room for the MessageGroupId and MessageDeduplicationId when they have to
 * be hashed (sns_fifo_id). */
static void fill_entry(drain *d, const rq_record *rec, sns_entry *e, char (*ids)[65]) {
  memset(e, 0, sizeof *e);
  e->message = rec->body;
  e->message_len = rec->body_len;
  e->type = rec->type;
  e->cid = rec->cid;
  e->channel_type = rec->channel_type;
  e->channel_id = rec->channel_id;
  e->user_id = rec->user_id;
  e->webhook_id = rec->webhook_id;
  if (d->fifo && ids) {
    const char *group = has(rec->cid) ? rec->cid : has(rec->type) ? rec->type : "default";
    e->group_id = sns_fifo_id(group, ids[0]);
    if (has(rec->webhook_id)) {
      e->dedup_id = sns_fifo_id(rec->webhook_id, ids[1]);
    } else {
      sns_sha256_hex(rec->body, rec->body_len, ids[1]);
      e->dedup_id = ids[1];
    }
  }
}

static dreq *req_new(drain *d, lease_set *ls) {
  dreq *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->d = d;
  r->ls = ls;
  ls->refs++;
  r->next = d->reqs;
  if (d->reqs) d->reqs->prev = r;
  d->reqs = r;
  return r;
}

/* Sends r (recs filled). On failure the events are released (no attempt
 * counted) and the drainer backs off or blocks. Returns 0 or the error. */
static int req_send(drain *d, dreq *r, int probe) {
  sns_entry ents[SNS_MAX_BATCH];
  for (size_t i = 0; i < r->n; i++) fill_entry(d, r->recs[i], &ents[i], r->fifo_ids[i]);
  r->gen = d->aimd.generation;
  r->probe = probe;
  r->in_flight = 1;
  int rc = sns_publish(d->sns, ents, r->n, d->batch > 1, on_sns_done, r);
  if (rc == 0) {
    d->inflight_reqs++;
    if (probe) d->probe_inflight = 1;
    return 0;
  }
  r->in_flight = 0;
  for (size_t i = 0; i < r->n; i++) release_rec(d, r->recs[i]);
  if (rc == -EAGAIN) {
    set_error(d, "NoCredentials", "no AWS credentials available");
    blocked(d, probe, NULL);
  } else {
    set_error(d, "PublishFailed", strerror(-rc));
    rlog(LOG_ERROR, "could not send an SNS request", "error", strerror(-rc), NULL);
    enter_backoff(d, DRAIN_COMMIT_FAIL_MS);
  }
  req_unlink(d, r);
  req_free(r);
  return rc;
}

/* Dead-letters one leased record of ls at once (no request), in *dead,
 * the request that collects them. Out of memory, it is released instead. */
static void dead_now(drain *d, dreq **dead, lease_set *ls, rq_record *rec, drain_dead_reason reason,
                     const char *code, const char *msg, int64_t now) {
  if (!*dead || (*dead)->n == SNS_MAX_BATCH) {
    *dead = req_new(d, ls);
    if (!*dead) {
      release_rec(d, rec);
      return;
    }
  }
  dreq *r = *dead;
  r->recs[r->n] = rec;
  settle_dead(d, r, r->n, reason, code, msg, now);
  r->n++;
}

/* Leases up to nreq requests' worth of events and sends them. Returns the
 * number of records leased (0: nothing due), or <0 when sending stopped. */
static int send_some(drain *d, int64_t now, unsigned nreq, int probe) {
  int64_t max_age = (int64_t)d->cfg->retry_max_age_s * 1000;
  /* While SNS fails, the probe's lease also dead-letters the events past
   * RELAY_RETRY_MAX_AGE: with one request per backoff interval they would
   * otherwise wait far longer than that for an attempt of their own. Only
   * when the oldest ready record is that old (rq_stat() is cheap), so a
   * probe does not copy DRAIN_SWEEP_MAX records out for nothing. */
  int sweep = 0;
  if (probe && d->mode == MODE_BACKOFF && d->sns_down && max_age > 0) {
    rq_stats q;
    sweep = rq_stat(d->env, &q) == 0 &&
            backoff_expired(budget_start(d, q.oldest_ready_ms), now, max_age);
  }
  size_t want = sweep ? DRAIN_SWEEP_MAX : (size_t)nreq * d->batch;
  rq_record *recs = NULL;
  int n = rq_lease(d->env, now, want, d->fifo ? RQ_LEASE_FIFO : 0, &recs);
  if (n < 0) {
    set_error(d, "QueueError", rq_strerror(n));
    rlog(LOG_ERROR, "drainer could not lease", "error", rq_strerror(n), NULL);
    enter_backoff(d, DRAIN_COMMIT_FAIL_MS);
    return n;
  }
  if (n == 0) {
    free(recs);
    return 0;
  }
  lease_set *ls = calloc(1, sizeof *ls);
  if (!ls) {
    for (int i = 0; i < n; i++) rq_release(d->env, recs[i].seq);
    rq_records_free(recs, (size_t)n);
    enter_backoff(d, DRAIN_COMMIT_FAIL_MS);
    return -ENOMEM;
  }
  ls->recs = recs;
  ls->n = (size_t)n;
  ls->refs = 1; /* ours until the loop below is done */
  d->leased_msgs += (uint64_t)n;

  size_t sizes[SNS_MAX_BATCH * 64];
  size_t *sz = (size_t)n <= sizeof sizes / sizeof *sizes ? sizes : malloc((size_t)n * sizeof *sz);
  rq_record **pub = malloc((size_t)n * sizeof *pub);
  int rc = 0;
  if (!sz || !pub) {
    for (int i = 0; i < n; i++) release_rec(d, &recs[i]);
    rc = -ENOMEM;
    goto out;
  }
  /* Over-size records cannot be published, ever: DLQ them now (a lowered
   * RELAY_MAX_MESSAGE_BYTES, or a record that slipped past ingest). */
  size_t np = 0;
  dreq *dead = NULL;
  uint64_t limit = d->cfg->max_message_bytes;
  if (limit == 0 || limit > SNS_MAX_REQUEST_BYTES) limit = SNS_MAX_REQUEST_BYTES;
  for (int i = 0; i < n; i++) {
    if (sweep && backoff_expired(budget_start(d, retry_clock(&recs[i])), now, max_age)) {
      dead_now(d, &dead, ls, &recs[i], DRAIN_DEAD_EXPIRED, d->down_code, d->down_msg, now);
      continue;
    }
    sns_entry e;
    fill_entry(d, &recs[i], &e, NULL);
    size_t s = sns_entry_size(&e);
    if (s > limit) {
      char m[128];
      snprintf(m, sizeof m, "message is %zu bytes, limit %" PRIu64, s, limit);
      dead_now(d, &dead, ls, &recs[i], DRAIN_DEAD_TOO_LARGE, "TooLarge", m, now);
      continue;
    }
    pub[np] = &recs[i];
    sz[np++] = s;
  }
  unsigned sent = 0;
  for (size_t off = 0; off < np;) {
    size_t k = pub[off]->seq <= d->solo_upto
                   ? 1
                   : backoff_pack(sz + off, np - off, d->batch, SNS_MAX_REQUEST_BYTES);
    /* nreq is a bound on requests, not only on the lease: records larger
     * than 256 KiB / batch (or sent solo) pack into more requests than the
     * concurrency allows, so the ones past it go back for a later lease. */
    dreq *r = sent < nreq ? req_new(d, ls) : NULL;
    if (!r || rc != 0 || (d->mode != MODE_RUNNING && !probe)) {
      /* Out of memory, an earlier request of this lease already failed, or
       * no request slot left: hand the rest back untouched. */
      for (size_t i = off; i < off + k; i++) release_rec(d, pub[i]);
      if (r) {
        req_unlink(d, r);
        req_free(r);
      }
      off += k;
      continue;
    }
    for (size_t i = 0; i < k; i++) r->recs[i] = pub[off + i];
    r->n = k;
    off += k;
    sent++;
    if (req_send(d, r, probe) != 0) rc = -EIO;
    probe = 0; /* only the first request of a probe lease is the probe */
  }
out:
  if (sz != sizes) free(sz);
  free(pub);
  ls_unref(ls);
  return rc < 0 ? rc : n;
}

/* How long an idle drainer sleeps: until the next record is due, at most
 * DRAIN_IDLE_POLL_MS. Sets *empty when no ready record waits at all. */
static uint64_t idle_wait(drain *d, int *empty) {
  /* With FIFO leasing, a due record behind a group head that waits for
   * its retry is not leasable: ask with the same rule. */
  int64_t due = rq_next_due_ms_flags(d->env, d->fifo ? RQ_LEASE_FIFO : 0);
  if (empty) *empty = due == INT64_MAX;
  uint64_t wait = DRAIN_IDLE_POLL_MS;
  if (due != INT64_MAX) {
    int64_t w = due - now_ms();
    if (w < 0) w = 0;
    if ((uint64_t)w < wait) wait = (uint64_t)w;
  }
  /* Due but nothing could be leased (leased elsewhere in this process):
   * poll gently instead of spinning. */
  if (wait == 0) wait = 50;
  return wait;
}

static void pump(drain *d) {
  if (!d->started || d->closing || d->operator_paused) return;
  int64_t now = clock_now(d);
  if (d->mode != MODE_RUNNING) {
    if (d->probe_inflight) return;
    int64_t mono = mono_ms();
    if (mono < d->until_mono) {
      schedule(d, (uint64_t)(d->until_mono - mono));
      return;
    }
    /* One request decides whether SNS is back. */
    int n = send_some(d, now, 1, 1);
    /* The probe's answer, or settles and requests still pending, pump again
     * when they finish; a failed send re-armed the timer itself. */
    if (n < 0 || d->probe_inflight || d->inflight_reqs > 0 || d->pending_ops > 0) return;
    if (d->mode == MODE_BLOCKED) {
      blocked(d, 1, NULL); /* keep the block until a real request succeeds */
      return;
    }
    /* Nothing to probe with, and nothing else will wake the drainer: the
     * retried events may not be due yet (their own delay outlasted the
     * drainer's), or the queue is empty. Stay in backoff until the next
     * record is due, then probe with it; with no record at all, run idle
     * (new events kick it). */
    int empty;
    uint64_t wait = idle_wait(d, &empty);
    if (!empty) {
      d->until_mono = mono_ms() + (int64_t)wait;
      schedule(d, wait);
      return;
    }
    enter_running(d);
  }
  while (d->inflight_reqs < d->aimd.cur && d->mode == MODE_RUNNING) {
    unsigned room = d->aimd.cur - d->inflight_reqs;
    int n = send_some(d, now, room, 0);
    if (n <= 0 || (size_t)n < (size_t)room * d->batch) break;
  }
  /* With requests in flight or settles pending, their completions pump
   * again; only an idle drainer needs to know when the next record is due
   * (rq_next_due_ms() may walk the queue, so it is not called per request). */
  if (d->mode != MODE_RUNNING || d->inflight_reqs > 0 || d->pending_ops > 0) return;
  uint64_t wait = idle_wait(d, NULL);
  schedule(d, wait);
}

static void on_timer(uv_timer_t *t) {
  pump(t->data);
}

/* ---- Public API ------------------------------------------------------ */

int drain_new(drain **out, uv_loop_t *loop, const relay_config *cfg, rq_env *env, committer *commit,
              sns_client *sns) {
  *out = NULL;
  drain *d = calloc(1, sizeof *d);
  if (!d) return -ENOMEM;
  d->loop = loop;
  d->cfg = cfg;
  d->env = env;
  d->commit = commit;
  d->sns = sns;
  d->fifo = cfg->fifo || (sns && sns_client_is_fifo(sns));
  d->batch = cfg->publish_batch;
  if (d->batch < 1) d->batch = 1;
  if (d->batch > SNS_MAX_BATCH) d->batch = SNS_MAX_BATCH;
  backoff_aimd_init(&d->aimd, cfg->publish_concurrency ? cfg->publish_concurrency : 16);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  backoff_rng_seed(&d->rng, (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)d);
  /* uv_timer_init() cannot fail on a live loop (it only links the handle). */
  int rc = uv_timer_init(loop, &d->timer);
  if (rc == 0) rc = uv_timer_init(loop, &d->close_timer);
  if (rc != 0) {
    free(d);
    return rc;
  }
  d->timer.data = d;
  d->close_timer.data = d;
  d->handles_open = 2;
  *out = d;
  return 0;
}

int drain_start(drain *d) {
  if (d->started) return -EALREADY;
  d->started = 1;
  rlog(LOG_INFO, "drainer started", "mode", d->fifo ? "fifo" : "standard", NULL);
  schedule(d, 0);
  return 0;
}

void drain_kick(drain *d) {
  if (d && d->mode == MODE_RUNNING) schedule(d, 0);
}

void drain_pause(drain *d) {
  if (d->operator_paused) return;
  d->operator_paused = 1;
  rlog(LOG_INFO, "drainer paused by operator", NULL);
}

void drain_resume(drain *d) {
  int was = d->operator_paused;
  d->operator_paused = 0;
  if (was) rlog(LOG_INFO, "drainer resumed by operator", NULL);
  if (d->mode != MODE_RUNNING) d->until_mono = 0; /* probe now */
  schedule(d, 0);
}

void drain_set_creds(drain *d, creds_provider *creds) {
  d->creds = creds;
}

void drain_get_status(const drain *d, drain_status *out) {
  *out = d->st;
  out->state = d->operator_paused        ? DRAIN_PAUSED
               : d->mode == MODE_BACKOFF ? DRAIN_BACKOFF
               : d->mode == MODE_BLOCKED ? DRAIN_BLOCKED
                                         : DRAIN_RUNNING;
  out->operator_paused = d->operator_paused;
  out->backoff_until_ms = d->mode == MODE_RUNNING ? 0 : wall_of(d->until_mono);
  out->concurrency = d->aimd.cur;
  out->max_concurrency = d->aimd.max;
  out->inflight_requests = d->inflight_reqs;
  out->inflight_messages = d->leased_msgs;
  int64_t sec = mono_ms() / 1000;
  uint64_t sum = 0;
  for (unsigned i = 0; i < DRAIN_RATE_SLOTS; i++)
    if (d->rate[i].sec > sec - DRAIN_RATE_SLOTS) sum += d->rate[i].n;
  out->publish_rate = (double)sum / DRAIN_RATE_SLOTS;
}

/* ---- Test event -------------------------------------------------------- */

static void test_unlink(drain *d, dtest *t) {
  if (t->prev)
    t->prev->next = t->next;
  else if (d->tests == t)
    d->tests = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
}

static void on_test_done(void *arg, const sns_result *results, size_t n, const sns_result *overall,
                         double duration_s) {
  dtest *t = arg;
  drain *d = t->d;
  (void)duration_s;
  if (d) {
    test_unlink(d, t);
    const sns_result *res = overall->outcome == SNS_OK && n > 0 ? &results[0] : overall;
    t->cb(t->arg, 0, res);
    maybe_finish_close(d);
  }
  free(t);
}

int drain_test_sns(drain *d, drain_test_cb cb, void *arg) {
  if (d->closing) return -ESHUTDOWN;
  dtest *t = calloc(1, sizeof *t);
  if (!t) return -ENOMEM;
  t->d = d;
  t->cb = cb;
  t->arg = arg;
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char ts[32];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  uint64_t nonce = backoff_rng_next(&d->rng);
  int len = snprintf(t->body, sizeof t->body,
                     "{\"type\":\"relay.test\",\"created_at\":\"%s\",\"test_id\":\"%016" PRIx64
                     "\",\"message\":\"relay test event; safe to ignore\"}",
                     ts, nonce);
  snprintf(t->dedup, sizeof t->dedup, "relay-test-%016" PRIx64, nonce);
  sns_entry e;
  memset(&e, 0, sizeof e);
  e.message = (const uint8_t *)t->body;
  e.message_len = (size_t)len;
  e.type = "relay.test";
  if (d->fifo) {
    e.group_id = "relay.test";
    e.dedup_id = t->dedup;
  }
  int rc = sns_publish(d->sns, &e, 1, 0, on_test_done, t);
  if (rc != 0) {
    free(t);
    return rc;
  }
  t->next = d->tests;
  if (d->tests) d->tests->prev = t;
  d->tests = t;
  return 0;
}

/* ---- Close ------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  drain *d = h->data;
  if (--d->handles_open > 0) return;
  void (*done)(void *) = d->done;
  void *arg = d->done_arg;
  free(d);
  if (done) done(arg);
}

/* Gives up on requests still in flight: their events are released now
 * (they stay queued, no attempt counted) and the late answers only free
 * memory. Test requests get -ECANCELED. */
static void abandon(drain *d) {
  d->abandoned = 1;
  for (dreq *r = d->reqs, *nx; r; r = nx) {
    nx = r->next;
    if (!r->in_flight) continue;
    for (size_t i = 0; i < r->n; i++) release_rec(d, r->recs[i]);
    d->inflight_reqs--;
    req_unlink(d, r);
    r->d = NULL;
  }
  for (dtest *t = d->tests, *nx; t; t = nx) {
    nx = t->next;
    test_unlink(d, t);
    t->d = NULL;
    sns_result res;
    memset(&res, 0, sizeof res);
    res.outcome = SNS_UNREACHABLE;
    copy_str(res.code, sizeof res.code, "Cancelled");
    copy_str(res.message, sizeof res.message, "relay is shutting down");
    t->cb(t->arg, -ECANCELED, &res);
  }
}

static void maybe_finish_close(drain *d) {
  if (!d->closing || d->handles_closing) return;
  if (!d->abandoned && (d->inflight_reqs > 0 || d->tests)) return;
  if (d->pending_ops > 0 || d->reqs) return;
  if (d->leased_msgs != 0) {
    char n[24];
    snprintf(n, sizeof n, "%" PRIu64, d->leased_msgs);
    rlog(LOG_WARN, "drainer closing with unaccounted leases", "#count", n, NULL);
  }
  d->handles_closing = 1;
  uv_timer_stop(&d->close_timer);
  uv_close((uv_handle_t *)&d->timer, on_handle_closed);
  uv_close((uv_handle_t *)&d->close_timer, on_handle_closed);
}

static void on_close_timer(uv_timer_t *t) {
  drain *d = t->data;
  if (d->inflight_reqs > 0 || d->tests) {
    char n[16];
    snprintf(n, sizeof n, "%u", d->inflight_reqs);
    rlog(LOG_WARN, "drainer stopped waiting for SNS requests; their events stay queued",
         "#requests", n, NULL);
  }
  abandon(d);
  maybe_finish_close(d);
}

void drain_close(drain *d, void (*done)(void *arg), void *arg) {
  d->done = done;
  d->done_arg = arg;
  d->closing = 1;
  uv_timer_stop(&d->timer);
  if (d->inflight_reqs > 0 || d->tests)
    uv_timer_start(&d->close_timer, on_close_timer, DRAIN_CLOSE_WAIT_MS, 0);
  else
    d->abandoned = 1;
  maybe_finish_close(d);
}
