/* Webhook ingest (SPEC "Webhook ingest"): the RELAY_LISTEN endpoint.
 *
 * POST / and POST /webhook. For each request, on the loop thread:
 *   1. route (404 other paths, 405 other methods)
 *   2. queue at its high watermark -> 503 + Retry-After (checked at most
 *      once per loop iteration)
 *   3. Content-Encoding: gzip, or a body starting 1f 8b, is inflated under
 *      RELAY_MAX_BODY_BYTES (a bomb -> 413, broken gzip -> 400; another
 *      Content-Encoding -> 415)
 *   4. X-Signature must be the lowercase hex HMAC-SHA256 of the (inflated)
 *      body with a secret of X-Api-Key (any of them: rotation), compared in
 *      constant time -> else 401. Skipped only with
 *      RELAY_INSECURE_NO_SIGNATURE=1 and no secret configured.
 *   5. the body must be a JSON object (RFC 8259) with a string "type" ->
 *      else 400;
 *      type, cid, channel_type, channel_id and user_id (user.id, else
 *      user_id) are extracted here, once, and stored with the record
 *   6. an X-Webhook-Id already in the dedup window -> 200, not stored again
 *   7. the record goes to the group committer: COMMIT_APPEND, or
 *      COMMIT_APPEND_DEAD with reason "too_large" when its SNS size (body
 *      plus message attributes) is over RELAY_MAX_MESSAGE_BYTES.
 * The answer is sent from the commit callback, i.e. after the fsync that
 * covers the event: 200 {"ok":true} when stored (or RQ_DUPLICATE), 503 with
 * Retry-After when the commit failed. Nothing gets a 2xx without being on
 * disk. The bytes stored are exactly the bytes whose signature was checked.
 *
 * Framing limits (400, 408, 413, 431, connection limits) are the HTTP
 * server's (http_server.h), configured from RELAY_MAX_BODY_BYTES and the
 * RELAY_HTTP_* keys.
 */
#ifndef RELAY_INGEST_H
#define RELAY_INGEST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "commit.h"
#include "config.h"
#include "rq.h"

typedef struct ingest ingest;

typedef struct {
  const relay_config *cfg; /* borrowed: secrets, limits, listen address */
  rq_env *env;             /* borrowed: dedup lookups, watermark */
  committer *commit;       /* borrowed: must outlive ingest_close() */
  const char *listen;      /* NULL = cfg->listen */
  /* Optional observers, loop thread. on_stored: a commit stored at least
   * one new event (main wires drain_kick). on_outcome: one per answered
   * webhook request: status and reason, reason NULL for a plain stored
   * event, else "duplicate", "too_large" (both 200), "bad_signature",
   * "bad_request", "unsupported_encoding", "too_large_body",
   * "headers_too_large", "timeout", "overloaded", "commit_failed",
   * "not_found", "method_not_allowed". */
  void (*on_stored)(void *arg);
  void (*on_outcome)(void *arg, int status, const char *reason);
  void *arg;
} ingest_options;

typedef struct {
  uint64_t stored;        /* new events appended (ready queue) */
  uint64_t stored_dead;   /* too_large events appended to the DLQ */
  uint64_t duplicates;    /* 200 without storing */
  uint64_t rejected;      /* any 4xx */
  uint64_t unavailable;   /* 503 */
  uint64_t in_flight;     /* submitted, waiting for their commit */
} ingest_stats;

/* Creates the listener and starts serving. 0 or a negative errno. */
int ingest_new(ingest **out, uv_loop_t *loop, const ingest_options *o);
/* The bound port (RELAY_LISTEN with port 0 picks one). */
int ingest_port(const ingest *ing);
/* Stops accepting connections and reading requests; those already
 * submitted are still answered after their commit. */
void ingest_stop_accepting(ingest *ing);
/* Stops accepting, waits until every submitted request was answered (the
 * committer must keep running meanwhile) and written (at most grace_ms,
 * 0 = 10000), closes everything, then calls done(arg) and frees ing. */
void ingest_close(ingest *ing, unsigned grace_ms, void (*done)(void *arg), void *arg);
void ingest_get_stats(const ingest *ing, ingest_stats *out);

/* ---- Pure parts (exposed for tests and fuzzing) ------------------------ */

/* Inflates a gzip body (one or more members) into *out (malloc'd, NUL-
 * terminated; free()). Returns 0; -E2BIG when the output would exceed cap
 * (stops there: a bomb costs at most cap bytes); -EINVAL for a broken or
 * truncated stream; -ENOMEM. */
int ingest_gunzip(const uint8_t *in, size_t len, uint64_t cap, uint8_t **out, size_t *out_len);

/* 1 when the body is gzip-compressed (magic 1f 8b). */
int ingest_is_gzip(const uint8_t *body, size_t len);

/* Checks X-Signature for the body against the secrets of api_key: 0 when
 * one matches (or when signatures are disabled: no secret and
 * insecure_no_signature), -EACCES otherwise (missing/malformed signature,
 * unknown key). A missing api_key is accepted only when every configured
 * secret belongs to one app. */
int ingest_check_signature(const relay_config *cfg, const char *api_key, const char *signature,
                           const uint8_t *body, size_t len);

/* Lowercase hex HMAC-SHA256 of data with key into hex[65]. */
void ingest_hmac_hex(const char *key, const uint8_t *data, size_t len, char hex[65]);

/* Routing fields of an event; the strings live in `json_` (owned storage). */
typedef struct {
  const char *type, *cid, *channel_type, *channel_id, *user_id;
  void *json_;
} ingest_fields;

/* Validates the body as RFC 8259 JSON (UTF-8, nesting <= 128) that is an
 * object with a string "type", and extracts the routing fields in the same
 * pass, without building a document (the unit tests hold it to json-c's
 * strict mode). 0, -EINVAL, or -ENOMEM. Free with ingest_fields_free(). */
int ingest_parse_event(const uint8_t *body, size_t len, ingest_fields *f);
void ingest_fields_free(ingest_fields *f);

/* The size SNS counts for this record: body plus, for each attribute that
 * will be sent (type, cid, channel_type, channel_id, user_id, webhook_id),
 * its name, the data type "String" and its value. */
uint64_t ingest_sns_size(const rq_record *rec);

#endif
