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

/* A webhook request that was accepted (stored, or a duplicate). */
void metrics_event_received(void);
/* A webhook request refused or not stored; reason is one of: "bad_signature",
 * "bad_request" (not JSON / no type), "too_large_body" (413),
 * "headers_too_large" (431), "overloaded" (503 watermark),
 * "commit_failed" (503 disk), "duplicate" (200, not stored again),
 * "too_large" (200, stored in the DLQ). Other short snake_case names are
 * allowed; the label set grows as needed (bounded by the code's names). */
void metrics_event_rejected(const char *reason);
/* One group commit: ops in it, fsync'd duration, result 0 or error. */
void metrics_commit(unsigned ops, double seconds, int result);
/* One SNS request finished: result is sns_outcome_name() of the request's
 * overall outcome ("ok", "retry", "throttled", "permanent", "config",
 * "unreachable"); messages = entries in it. */
void metrics_publish(const char *result, unsigned messages, double seconds);

#endif
