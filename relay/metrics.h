/* Process-wide Prometheus metrics.
 *
 * Event-time hooks below are called by ingest, the committer observer and the
 * drainer, all on the loop thread (no locking needed). Gauges that describe
 * the queue (depth, bytes, oldest age, DLQ depth) and the drainer state are
 * read at scrape time, not pushed. metrics_render() writes the text
 * exposition format for GET /metrics.
 */
#ifndef RELAY_METRICS_H
#define RELAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* A webhook request that was accepted (stored, or a duplicate). */
void metrics_event_received(void);
/* A webhook request refused or not stored; reason is one of: "bad_signature",
 * "bad_request" (not JSON / no type), "too_large_body" (413),
 * "headers_too_large" (431), "overloaded" (503 watermark),
 * "commit_failed" (503 disk), "duplicate" (200, not stored again),
 * "too_large" (200, stored in the DLQ). Other short snake_case names are
 * allowed; the label set grows as needed (bounded by the code's names). */
void metrics_event_rejected(const char *reason);
/* One group commit: ops in it, its whole duration, the part of it in LMDB's
 * durable commit (page writes + fdatasync + meta page sync; observed only
 * when result is 0), result 0 or error. */
void metrics_commit(unsigned ops, double seconds, double sync_seconds, int result);
/* One SNS request finished: result is sns_outcome_name() of the request's
 * overall outcome ("ok", "retry", "throttled", "permanent", "config",
 * "unreachable"); messages = entries in it. */
void metrics_publish(const char *result, unsigned messages, double seconds);

/* ---- Scrape time ------------------------------------------------------ */

/* Values read when /metrics is scraped (queue from rq_stat(), drainer from
 * drain.h). Filled by the admin module; metrics.c stays free of both. */
typedef struct {
  int have_queue;                    /* 0: queue gauges are left out */
  uint64_t queue_depth, queue_bytes; /* ready records / stored body bytes */
  uint64_t inflight;                 /* leased by this process */
  uint64_t dlq_depth, dlq_bytes;
  double oldest_age_s; /* oldest ready record; 0 when empty */
  uint64_t appended_total, acked_total, dead_lettered_total, duplicates_total;
  uint64_t map_used, map_size;
  int ready;                             /* what /readyz answers: 1 ready */
  const char *drainer_state;             /* "running" ...; NULL: gauges left out */
  unsigned concurrency, concurrency_max; /* drainer's current limit and ceiling */
  unsigned requests_in_flight;           /* SNS requests now in flight */
} metrics_scrape;

/* Renders the Prometheus text exposition format (version 0.0.4): process
 * counters and histograms from the hooks above plus the scrape values.
 * *out is malloc'd and NUL-terminated (free() it). Returns 0 or -ENOMEM.
 * Loop thread only, like the hooks. */
int metrics_render(const metrics_scrape *s, char **out, size_t *len);

/* Counter values for /v1/stats (since this process started). */
typedef struct {
  uint64_t received, rejected, published_ok_messages, publish_requests;
  uint64_t commits, failed_commits;
} metrics_totals;
void metrics_get_totals(metrics_totals *out);

/* Messages per second accepted by SNS (requests with result "ok") and
 * webhook events received, averaged over the last `window_s` seconds
 * (1..60), for relayctl stats. */
double metrics_publish_rate(unsigned window_s);
double metrics_receive_rate(unsigned window_s);

/* Forgets everything (tests). */
void metrics_reset(void);

#endif
