/* The admin API on RELAY_ADMIN_LISTEN (SPEC "Admin API").
 *
 *   GET  /healthz          200 while the process runs
 *   GET  /readyz           200 when the queue is below its watermark, else 503
 *                          (also while commits fail, and once shutting down)
 *   GET  /metrics          Prometheus text (metrics.h)
 *   GET  /v1/stats         the object of `relayctl stats --json`
 *   GET  /v1/dlq           ?reason=&type=&limit=(default 100, max 1000)&after=ID
 *                          {"entries":[...], "next_after": ID or null}
 *   GET  /v1/dlq/{id}      one entry with its body: "body" is the exact body
 *                          as a JSON string when it is valid UTF-8, else
 *                          "body_base64" (e.g. a "corrupt" record)
 *   POST /v1/dlq/replay    {"all":true} or {"ids":[...]}, optional "reason",
 *   POST /v1/dlq/purge     "type" (filters, never empty: with "ids" they
 *                          leave the ids that do not match alone) and
 *                          "limit" (with "all": at most that many, oldest
 *                          first): {"replayed"|"purged":N, "missing":M}
 *   POST /v1/test-sns      publishes one test event: {"ok":true,"message_id"}
 *                          or 502 {"ok":false,"error","code","message"};
 *                          503 with the same fields (code NoCredentials...)
 *                          while publishing is not running
 *   POST /v1/pause, /v1/resume
 *
 * The GET routes answer HEAD too (the same status and headers, no body).
 *
 * Every answer is JSON (except /metrics); errors are {"error":"..."} with a
 * 4xx/5xx status. When a token is configured every endpoint except /healthz
 * and /readyz needs "Authorization: Bearer <token>" (compared in constant
 * time); else 401. Queue reads and DLQ writes run on libuv's thread pool so a
 * large listing or replay never stalls ingest on the loop thread.
 */
#ifndef RELAY_ADMIN_H
#define RELAY_ADMIN_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "rq.h"

typedef struct admin admin;
typedef struct drain drain;

typedef struct {
  const char *listen;           /* "127.0.0.1:8081"; port 0 picks a free one */
  const char *token;            /* NULL or "": no authentication */
  rq_env *env;                  /* borrowed, required */
  drain *drain;                 /* borrowed; NULL: drainer endpoints answer 503 */
  unsigned max_connections;     /* 0 = 64 */
  unsigned commit_fail_hold_ms; /* 0 = 10000: see admin_set_commit_failing() */
} admin_options;

/* Start-up check (main.c calls it after cfg_load): refuses an admin address
 * that is not loopback when no token is set. 0, or -EINVAL with one line in
 * err naming the key. */
int admin_check_config(const relay_config *cfg, char *err, size_t errlen);

/* 1 when "host:port" is a loopback address (127.0.0.0/8, ::1, localhost)
 * as cfg_parse_listen() reads it, else 0 (also when it does not parse). */
int admin_addr_is_loopback(const char *addr);

/* Binds and serves. Returns 0 or a negative errno (-EADDRINUSE ...). */
int admin_new(admin **out, uv_loop_t *loop, const admin_options *o);
/* The bound port. */
int admin_port(const admin *a);
/* Stops serving, waits for answers in progress (and thread-pool work), then
 * calls done(arg) on the loop thread and frees a. */
void admin_close(admin *a, void (*done)(void *arg), void *arg);

/* relayd starts publishing late when no AWS credentials could be found at
 * start-up: until then the admin API reports the drainer as "blocked" with
 * `reason` (no secrets) as its last error, and hands it over with
 * admin_set_drain() once it runs. Loop thread. */
void admin_set_drain(admin *a, drain *d);

/* relayd reports here whether ingest can store events: while its commits
 * fail (disk full, EIO, map full before the watermark) /readyz answers 503,
 * so a load balancer stops sending webhooks that would only get 503s.
 * failing = 1 counts for commit_fail_hold_ms after the last call (then
 * /readyz follows the watermark alone again: an unready replica gets no
 * webhooks, so it cannot wait for one to succeed); failing = 0 (an event
 * was stored) ends it at once. Any thread. */
void admin_set_commit_failing(admin *a, int failing);

/* relayd is shutting down: the webhook listener is closed, so /readyz
 * answers 503 (and relay_ready 0) for the rest of the process's life, while
 * /healthz and the rest of the API keep answering. Any thread. */
void admin_set_stopping(admin *a);

/* A decimal id or count as used in the API and by relayctl: digits only,
 * no sign, no overflow. 0 or -EINVAL. */
int admin_parse_u64(const char *s, uint64_t *out);
void admin_set_blocked_reason(admin *a, const char *reason);
/* The same with another code than NoCredentials, e.g. "InvalidConfiguration"
 * when publishing cannot start although credentials were found. */
void admin_set_blocked(admin *a, const char *code, const char *reason);

/* ---- Shared with relayctl's offline mode (--data-dir) ------------------ */

/* The JSON form of a DLQ record: id, received_ms, received_at, type, cid,
 * channel_type, channel_id, user_id, webhook_id, reason, code, message,
 * dead_at_ms, attempts, last_error, size; with_body adds the body as above. */
json_object *admin_record_json(const rq_record *r, int with_body);

/* Fills obj with the queue part of /v1/stats from `st` (rq_stat()):
 * ready, ready_bytes, inflight, dlq, dlq_bytes, dlq_by_reason (takes the
 * reference by_reason; NULL gives {}), oldest_ready_age_s, oldest_ready_at,
 * received_total (appended_total), published_total (acked_total),
 * dead_lettered_total, duplicates_total, map_used, map_size. now_ms is the
 * wall clock. Returns 0. */
int admin_queue_json(int64_t now_ms, const rq_stats *st, json_object *by_reason, json_object *obj);

/* Counts the DLQ by reason into obj ({"rejected":3,...}). Any thread. */
int admin_dlq_by_reason(rq_env *env, json_object *obj);

/* Small builders: a NULL or "" string and a time <= 0 become JSON null;
 * times are ISO 8601 UTC with milliseconds. */
void admin_json_str(json_object *o, const char *key, const char *v);
void admin_json_u64(json_object *o, const char *key, uint64_t v);
void admin_json_time(json_object *o, const char *key, int64_t ms);
void admin_json_double(json_object *o, const char *key, double v); /* 3 decimals */

#endif
