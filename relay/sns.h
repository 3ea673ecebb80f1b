/* Amazon SNS client: Publish / PublishBatch over the query API
 * (Version=2010-03-31, SigV4 service "sns"), non-blocking on libcurl's multi
 * interface driven by the relay's libuv loop.
 *
 * The pure parts (request bodies, size accounting, response parsing and
 * classification) do no I/O and are tested exhaustively; sns_classify() is
 * THE place that decides what is retried, what is throttled, what goes to
 * the DLQ and what pauses publishing.
 */
#ifndef RELAY_SNS_H
#define RELAY_SNS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "creds.h"

#define SNS_MAX_BATCH 10
#define SNS_MAX_REQUEST_BYTES (256 * 1024) /* sum of message sizes per request */

/* What the drainer should do with an event after an attempt. */
typedef enum {
  SNS_OK = 0,        /* accepted: ack */
  SNS_RETRY,         /* transient (5xx, timeout, connection, SenderFault=false): nack + backoff */
  SNS_THROTTLED,     /* retry and lower concurrency (AIMD) */
  SNS_PERMANENT,     /* the message is invalid for good: DLQ "rejected" */
  SNS_CONFIG,        /* authorization / topic / KMS: pause publishing, keep queued */
  SNS_UNREACHABLE    /* no HTTP answer at all: back the whole drainer off */
} sns_outcome;

const char *sns_outcome_name(sns_outcome o);

/* One message. Attribute strings NULL or "" are left out. */
typedef struct {
  const uint8_t *message;
  size_t message_len;
  const char *type, *cid, *channel_type, *channel_id, *user_id, *webhook_id;
  const char *group_id;  /* FIFO topics only: MessageGroupId */
  const char *dedup_id;  /* FIFO topics only: MessageDeduplicationId */
} sns_entry;

typedef struct {
  sns_outcome outcome;
  long http_status;      /* 0 when no HTTP answer */
  char code[64];         /* AWS error code, or curl's error name */
  char message[512];     /* AWS or transport message, secrets never included */
  char message_id[128];  /* on success */
} sns_result;

/* SNS's size of one message: body plus, per attribute, name + "String" +
 * value. This is what RELAY_MAX_MESSAGE_BYTES and the 256 KiB per request
 * apply to. */
size_t sns_entry_size(const sns_entry *e);

/* Builds the x-www-form-urlencoded body for Publish (n == 1 and
 * !force_batch) or PublishBatch (entry ids "0".."n-1"). Returns a malloc'd
 * NUL-terminated body and its length, or NULL on ENOMEM / n out of 1..10. */
char *sns_build_body(const char *topic_arn, const sns_entry *entries, size_t n,
                     int force_batch, size_t *len_out);

/* Classifies one AWS error code (with the entry's SenderFault flag when it
 * comes from a PublishBatch Failed entry: 1 true, 0 false, -1 not given)
 * and the HTTP status (0 if none). */
sns_outcome sns_classify(const char *code, long http_status, int sender_fault);

/* Parses an SNS answer for a request of n entries. Fills results[0..n-1]
 * (per entry, by batch id) and *overall (the request as a whole: SNS_OK when
 * the HTTP exchange succeeded, even if some entries failed). Unparseable
 * bodies give SNS_RETRY with code "MalformedResponse". Returns 0 or -EPROTO. */
int sns_parse_response(long http_status, const char *body, size_t len, size_t n,
                       int was_batch, sns_result *results, sns_result *overall);

/* ---- The client ------------------------------------------------------ */

typedef struct sns_client sns_client;

typedef struct {
  const char *topic_arn;
  const char *region;      /* NULL: from the ARN */
  const char *endpoint;    /* NULL: https://sns.REGION.amazonaws.com (AWS_ENDPOINT_URL_SNS honoured) */
  creds_provider *creds;   /* borrowed */
  long connect_timeout_ms; /* 0 = 3000 */
  long timeout_ms;         /* 0 = 15000 total per request */
  int max_connections;     /* 0 = 64 */
} sns_client_options;

int sns_client_new(sns_client **out, uv_loop_t *loop, const sns_client_options *o);
/* Closes all transfers (their callbacks get SNS_UNREACHABLE "Cancelled")
 * and frees the client once libuv has closed its handles; `done` (may be
 * NULL) is called then. */
void sns_client_close(sns_client *c, void (*done)(void *arg), void *arg);
int sns_client_is_fifo(const sns_client *c);

/* Completion: results[i] for entries[i]; overall as in sns_parse_response().
 * duration_s is the wall time of the HTTP exchange (for metrics). Called on
 * the loop thread, exactly once per successful sns_publish(). */
typedef void (*sns_done_cb)(void *arg, const sns_result *results, size_t n,
                            const sns_result *overall, double duration_s);

/* Sends one Publish (n == 1 and !force_batch) or PublishBatch request. The
 * entries are copied before return. Errors (callback then never called):
 * -EINVAL (n out of range, request over 256 KiB), -ENOMEM, -EAGAIN (no
 * credentials right now; the drainer treats it as SNS_CONFIG). */
int sns_publish(sns_client *c, const sns_entry *entries, size_t n, int force_batch,
                sns_done_cb cb, void *arg);

#endif
