/* Process-wide Prometheus metrics (see metrics.h).
 *
 * Everything here lives on the loop thread, so the counters are plain
 * integers. Label sets are small and bounded by the code's own names: a
 * reason or result string that is not known yet takes one of a fixed number
 * of slots, and anything beyond that is counted under "other" rather than
 * growing without bound.
 */
#include "metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef RELAY_VERSION
#define RELAY_VERSION "0.0.0"
#endif

#define LABEL_SLOTS 32
#define LABEL_MAX 40

/* A counter family with one label. */
typedef struct {
  char names[LABEL_SLOTS][LABEL_MAX];
  uint64_t values[LABEL_SLOTS];
  unsigned n;
} labelled_counter;

/* Upper bounds (exclusive of +Inf) of each histogram. Commit latency is
 * dominated by fsync: sub-millisecond on NVMe, tens of ms on network disks. */
static const double commit_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                       0.05,   0.1,   0.25,   0.5,   1,    2.5};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
static const double publish_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,    2.5,   5,    10,  30};

#define HIST_MAX_BOUNDS 16

typedef struct {
  const double *bounds;
  unsigned nbounds;
  uint64_t buckets[HIST_MAX_BOUNDS + 1]; /* per bucket, not cumulative; last = +Inf */
  uint64_t count;
  double sum;
} histogram;

/* Per-second counts over the last minute, for the rates relayctl shows. */
#define RATE_SLOTS 64
typedef struct {
  int64_t sec[RATE_SLOTS];
  uint64_t n[RATE_SLOTS];
} rate_ring;

static struct {
  int init;
  double start_time;
  uint64_t received, rejected_sum;
  labelled_counter rejected;
  uint64_t commits_ok, commits_failed, commit_ops;
  histogram commit_duration, commit_sync, commit_batch, publish_duration;
  labelled_counter publish_requests, publish_messages;
  uint64_t publish_ok_messages;
  rate_ring publish_rate, receive_rate;
} M;

static const char *const known_rejections[] = {"bad_signature",     "bad_request", "too_large_body",
                                               "headers_too_large", "overloaded",  "commit_failed",
                                               "duplicate",         "too_large"};
static const char *const known_results[] = {"ok",        "retry",  "throttled",
                                            "permanent", "config", "unreachable"};

static int64_t mono_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec;
}

static void hist_init(histogram *h, const double *bounds, unsigned n) {
  memset(h, 0, sizeof *h);
  h->bounds = bounds;
  h->nbounds = n;
}

static void hist_observe(histogram *h, double v) {
  unsigned i = 0;
  while (i < h->nbounds && v > h->bounds[i]) i++;
  h->buckets[i]++;
  h->count++;
  h->sum += v;
}

/* Label values come from code, but keep them to [a-z0-9_] anyway so the
 * exposition can never be broken by an odd string. */
static void label_clean(char *dst, const char *src) {
  size_t i = 0;
  if (!src || !*src) src = "unknown";
  for (; src[i] && i < LABEL_MAX - 1; i++) {
    char c = src[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    dst[i] = ok ? c : '_';
  }
  dst[i] = '\0';
}

static void lc_add(labelled_counter *lc, const char *name, uint64_t v) {
  char clean[LABEL_MAX];
  label_clean(clean, name);
  for (unsigned i = 0; i < lc->n; i++) {
    if (strcmp(lc->names[i], clean) == 0) {
      lc->values[i] += v;
      return;
    }
  }
  if (lc->n >= LABEL_SLOTS - 1 && strcmp(clean, "other") != 0) {
    lc_add(lc, "other", v);
    return;
  }
  if (lc->n == LABEL_SLOTS) return; /* "other" itself is in the last slot */
  memcpy(lc->names[lc->n], clean, strlen(clean) + 1);
  lc->values[lc->n] = v;
  lc->n++;
}

static void rate_add(rate_ring *r, uint64_t n) {
  int64_t s = mono_sec();
  unsigned i = (unsigned)(s % RATE_SLOTS);
  if (r->sec[i] != s) {
    r->sec[i] = s;
    r->n[i] = 0;
  }
  r->n[i] += n;
}

/* Average over the last window_s completed seconds: the current second is
 * still filling and would make the figure jump. */
static double rate_get(const rate_ring *r, unsigned window_s) {
  if (window_s < 1) window_s = 1;
  if (window_s > 60) window_s = 60;
  int64_t now = mono_sec();
  uint64_t sum = 0;
  for (unsigned k = 1; k <= window_s; k++) {
    int64_t s = now - (int64_t)k;
    if (s < 0) break;
    unsigned i = (unsigned)(s % RATE_SLOTS);
    if (r->sec[i] == s) sum += r->n[i];
  }
  return (double)sum / (double)window_s;
}

static void ensure_init(void) {
  if (M.init) return;
  memset(&M, 0, sizeof M);
  M.init = 1;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  M.start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
  hist_init(&M.commit_duration, commit_bounds, sizeof commit_bounds / sizeof *commit_bounds);
  hist_init(&M.commit_sync, commit_bounds, sizeof commit_bounds / sizeof *commit_bounds);
  hist_init(&M.commit_batch, batch_bounds, sizeof batch_bounds / sizeof *batch_bounds);
  hist_init(&M.publish_duration, publish_bounds, sizeof publish_bounds / sizeof *publish_bounds);
  /* Known label values start at 0 so rate() and alerts see the series from
   * the first scrape instead of when the first failure happens. */
  for (size_t i = 0; i < sizeof known_rejections / sizeof *known_rejections; i++)
    lc_add(&M.rejected, known_rejections[i], 0);
  for (size_t i = 0; i < sizeof known_results / sizeof *known_results; i++) {
    lc_add(&M.publish_requests, known_results[i], 0);
    lc_add(&M.publish_messages, known_results[i], 0);
  }
}

void metrics_reset(void) {
  M.init = 0;
  ensure_init();
}

void metrics_event_received(void) {
  ensure_init();
  M.received++;
  rate_add(&M.receive_rate, 1);
}

void metrics_event_rejected(const char *reason) {
  ensure_init();
  M.rejected_sum++;
  lc_add(&M.rejected, reason, 1);
}

void metrics_commit(unsigned ops, double seconds, double sync_seconds, int result) {
  ensure_init();
  if (result == 0)
    M.commits_ok++;
  else
    M.commits_failed++;
  M.commit_ops += ops;
  if (seconds < 0) seconds = 0;
  hist_observe(&M.commit_duration, seconds);
  if (result == 0) hist_observe(&M.commit_sync, sync_seconds < 0 ? 0 : sync_seconds);
  hist_observe(&M.commit_batch, (double)ops);
}

void metrics_publish(const char *result, unsigned messages, double seconds) {
  ensure_init();
  lc_add(&M.publish_requests, result, 1);
  lc_add(&M.publish_messages, result, messages);
  if (seconds < 0) seconds = 0;
  hist_observe(&M.publish_duration, seconds);
  if (result && strcmp(result, "ok") == 0) {
    M.publish_ok_messages += messages;
    rate_add(&M.publish_rate, messages);
  }
}

void metrics_get_totals(metrics_totals *out) {
  ensure_init();
  memset(out, 0, sizeof *out);
  out->received = M.received;
  out->rejected = M.rejected_sum;
  out->published_ok_messages = M.publish_ok_messages;
  for (unsigned i = 0; i < M.publish_requests.n; i++)
    out->publish_requests += M.publish_requests.values[i];
  out->commits = M.commits_ok + M.commits_failed;
  out->failed_commits = M.commits_failed;
}

double metrics_publish_rate(unsigned window_s) {
  ensure_init();
  return rate_get(&M.publish_rate, window_s);
}

double metrics_receive_rate(unsigned window_s) {
  ensure_init();
  return rate_get(&M.receive_rate, window_s);
}

/* ---- Rendering ---------------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t ncap = b->cap * 2 + (size_t)n + 1;
    char *np = realloc(b->p, ncap);
    if (!np) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = ncap;
  }
}

static void head(sbuf *b, const char *name, const char *type, const char *help) {
  sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(sbuf *b, const char *name, const char *help, uint64_t v) {
  head(b, name, "counter", help);
  sb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(sbuf *b, const char *name, const char *help, double v) {
  head(b, name, "gauge", help);
  sb_printf(b, "%s %.17g\n", name, v);
}

static void labelled(sbuf *b, const char *name, const char *help, const char *label,
                     const labelled_counter *lc) {
  head(b, name, "counter", help);
  for (unsigned i = 0; i < lc->n; i++)
    sb_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, lc->names[i],
              (unsigned long long)lc->values[i]);
}

/* The shortest text that reads back as v (0.1 -> "0.1", not
 * "0.10000000000000001"). `le` is a label, matched as a string by
 * recording rules, dashboards and across processes, so it must be the
 * canonical form every Prometheus client writes. */
static void fmt_shortest(char *buf, size_t len, double v) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, len, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) return;
  }
}

static void hist(sbuf *b, const char *name, const char *help, const histogram *h) {
  head(b, name, "histogram", help);
  uint64_t cum = 0;
  for (unsigned i = 0; i < h->nbounds; i++) {
    cum += h->buckets[i];
    char le[32];
    fmt_shortest(le, sizeof le, h->bounds[i]);
    sb_printf(b, "%s_bucket{le=\"%s\"} %llu\n", name, le, (unsigned long long)cum);
  }
  cum += h->buckets[h->nbounds];
  sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
  sb_printf(b, "%s_sum %.17g\n", name, h->sum);
  sb_printf(b, "%s_count %llu\n", name, (unsigned long long)h->count);
}

/* The drainer states of SPEC, always all present so that a state gauge
 * reads as a one-hot vector. */
static const char *const drainer_states[] = {"running", "backoff", "paused", "blocked"};

int metrics_render(const metrics_scrape *s, char **out, size_t *len) {
  ensure_init();
  sbuf b = {malloc(8192), 0, 8192, 0};
  if (!b.p) return -ENOMEM;
  b.p[0] = '\0';

  head(&b, "relay_build_info", "gauge", "Build of the running relayd (always 1).");
  sb_printf(&b, "relay_build_info{version=\"%s\"} 1\n", RELAY_VERSION);
  gauge(&b, "relay_start_time_seconds", "Start time of the process since the Unix epoch.",
        M.start_time);

  counter(&b, "relay_events_received_total",
          "Webhook events accepted: stored durably, or a duplicate X-Webhook-Id.", M.received);
  labelled(&b, "relay_events_rejected_total",
           "Webhook requests refused or not stored in the ready queue, by reason.", "reason",
           &M.rejected);

  head(&b, "relay_commits_total", "counter", "Group commits (one fsync each), by result.");
  sb_printf(&b, "relay_commits_total{result=\"ok\"} %llu\n", (unsigned long long)M.commits_ok);
  sb_printf(&b, "relay_commits_total{result=\"error\"} %llu\n",
            (unsigned long long)M.commits_failed);
  counter(&b, "relay_commit_ops_total", "Queue operations applied by group commits.", M.commit_ops);
  hist(&b, "relay_commit_duration_seconds", "Duration of one group commit including its fsync.",
       &M.commit_duration);
  hist(&b, "relay_commit_fsync_duration_seconds",
       "Time of one successful group commit spent in LMDB's durable commit: dirty pages written, "
       "fdatasync, meta page written and synced.",
       &M.commit_sync);
  hist(&b, "relay_commit_batch_size", "Queue operations per group commit.", &M.commit_batch);

  labelled(&b, "relay_sns_publish_total", "SNS Publish/PublishBatch requests, by outcome.",
           "result", &M.publish_requests);
  labelled(&b, "relay_sns_messages_total",
           "Messages sent in SNS requests, by the request's outcome.", "result",
           &M.publish_messages);
  hist(&b, "relay_sns_publish_duration_seconds", "Duration of one SNS HTTP request.",
       &M.publish_duration);

  if (s && s->have_queue) {
    gauge(&b, "relay_queue_depth", "Events in the ready queue (not yet published).",
          (double)s->queue_depth);
    gauge(&b, "relay_queue_bytes", "Body bytes of the events in the ready queue.",
          (double)s->queue_bytes);
    gauge(&b, "relay_queue_oldest_age_seconds",
          "Age of the oldest event in the ready queue (0 when empty).", s->oldest_age_s);
    gauge(&b, "relay_queue_inflight", "Events leased by the drainer right now.",
          (double)s->inflight);
    gauge(&b, "relay_dlq_depth", "Events in the dead-letter queue.", (double)s->dlq_depth);
    gauge(&b, "relay_dlq_bytes", "Body bytes of the events in the dead-letter queue.",
          (double)s->dlq_bytes);
    gauge(&b, "relay_queue_map_used_bytes", "Bytes of the LMDB map in use.", (double)s->map_used);
    gauge(&b, "relay_queue_map_size_bytes", "Configured LMDB map size (RELAY_QUEUE_MAX_BYTES).",
          (double)s->map_size);
    counter(&b, "relay_queue_appended_total",
            "Events ever appended to the queue (kept across restarts).", s->appended_total);
    counter(&b, "relay_queue_acked_total",
            "Events ever removed after SNS accepted them (kept across restarts).", s->acked_total);
    counter(&b, "relay_queue_dead_lettered_total",
            "Events ever moved to the dead-letter queue (kept across restarts).",
            s->dead_lettered_total);
    counter(&b, "relay_queue_duplicates_total",
            "Appends skipped as duplicate X-Webhook-Id (kept across restarts).",
            s->duplicates_total);
  }
  if (s) {
    gauge(&b, "relay_ready", "1 when /readyz answers 200.", s->ready ? 1 : 0);
  }
  if (s && s->drainer_state) {
    head(&b, "relay_drainer_state", "gauge", "Drainer state: 1 for the current one.");
    int matched = 0;
    for (size_t i = 0; i < sizeof drainer_states / sizeof *drainer_states; i++) {
      int on = strcmp(s->drainer_state, drainer_states[i]) == 0;
      matched |= on;
      sb_printf(&b, "relay_drainer_state{state=\"%s\"} %d\n", drainer_states[i], on);
    }
    if (!matched) {
      char clean[LABEL_MAX];
      label_clean(clean, s->drainer_state);
      sb_printf(&b, "relay_drainer_state{state=\"%s\"} 1\n", clean);
    }
    gauge(&b, "relay_drainer_concurrency",
          "SNS requests the drainer allows in flight now (lowered on throttling).",
          (double)s->concurrency);
    gauge(&b, "relay_drainer_concurrency_max", "Configured RELAY_PUBLISH_CONCURRENCY.",
          (double)s->concurrency_max);
    gauge(&b, "relay_sns_requests_in_flight", "SNS requests in flight now.",
          (double)s->requests_in_flight);
  }

  if (b.oom) {
    free(b.p);
    return -ENOMEM;
  }
  *out = b.p;
  if (len) *len = b.len;
  return 0;
}
