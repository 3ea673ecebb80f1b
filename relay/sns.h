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
  SNS_OK = 0,     /* accepted: ack */
  SNS_RETRY,      /* transient (5xx, timeout, connection, SenderFault=false): nack + backoff */
  SNS_THROTTLED,  /* retry and lower concurrency (AIMD) */
  SNS_PERMANENT,  /* the message is invalid for good: DLQ "rejected" */
  SNS_CONFIG,     /* authorization / topic / KMS: pause publishing, keep queued */
  SNS_UNREACHABLE /* no HTTP answer at all: back the whole drainer off */
} sns_outcome;

const char *sns_outcome_name(sns_outcome o);

/* One message. Attribute strings that are NULL, "" or not
 * sns_attr_value_ok() are left out. */
typedef struct {
  const uint8_t *message;
  size_t message_len;
  const char *type, *cid, *channel_type, *channel_id, *user_id, *webhook_id;
  const char *group_id; /* FIFO topics only: MessageGroupId */
  const char *dedup_id; /* FIFO topics only: MessageDeduplicationId */
} sns_entry;

typedef struct {
  sns_outcome outcome;
  long http_status;     /* 0 when no HTTP answer */
  char code[64];        /* AWS error code, or curl's error name */
  char message[512];    /* AWS or transport message, secrets never included */
  char message_id[128]; /* on success */
} sns_result;

/* 1 when a String attribute value can go to SNS as it is: not empty, valid
 * UTF-8, and only characters SNS's XML-based API carries (tab, LF, CR,
 * U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF). Any other value is left
 * out of the message (and of its size): SNS would refuse the whole message
 * with InvalidParameterValue, and the event would go to the DLQ although
 * only a routing attribute is unusable. */
int sns_attr_value_ok(const char *s);

/* 1 when s can be a FIFO MessageGroupId / MessageDeduplicationId as it is:
 * 1 to 128 characters, each alphanumeric or ASCII punctuation. */
int sns_fifo_id_ok(const char *s);
/* The FIFO id to send for `value` (a cid, type or webhook id): value itself
 * when sns_fifo_id_ok(), else the lowercase hex SHA-256 of its bytes, in
 * out. The hash is stable, so every event of one cid still shares one
 * group and a retried webhook id keeps its dedup id. */
const char *sns_fifo_id(const char *value, char out[65]);
/* Lowercase hex SHA-256 of data[0..len) into out (64 digits and a NUL). */
void sns_sha256_hex(const void *data, size_t len, char out[65]);

/* SNS's size of one message: body plus, per attribute, name + "String" +
 * value. This is what RELAY_MAX_MESSAGE_BYTES and the 256 KiB per request
 * apply to. */
size_t sns_entry_size(const sns_entry *e);

/* Sum of sns_entry_size() over entries[0..n-1]: what the 256 KiB per
 * request applies to. */
size_t sns_request_size(const sns_entry *entries, size_t n);

/* How many leading entries of entries[0..n-1] fit in one request: at most
 * max_entries (0 or > SNS_MAX_BATCH means SNS_MAX_BATCH) and at most
 * SNS_MAX_REQUEST_BYTES in total. 0 when the first entry alone is too big. */
size_t sns_batch_fit(const sns_entry *entries, size_t n, size_t max_entries);

/* Builds the x-www-form-urlencoded body for Publish (n == 1 and
 * !force_batch) or PublishBatch (entry ids "0".."n-1"). Returns a malloc'd
 * NUL-terminated body and its length, or NULL on ENOMEM / n out of 1..10. */
char *sns_build_body(const char *topic_arn, const sns_entry *entries, size_t n, int force_batch,
                     size_t *len_out);
/* The same body into a caller-owned buffer that is reused across requests:
 * *buf (*cap bytes; NULL and 0 at first) is grown with realloc when it may
 * be too small, and stays the caller's to free in every case. Returns 0, or
 * -EINVAL (arguments as above) / -ENOMEM. */
int sns_build_body_into(char **buf, size_t *cap, const char *topic_arn, const sns_entry *entries,
                        size_t n, int force_batch, size_t *len_out);

/* Classifies one AWS error code (with the entry's SenderFault flag when it
 * comes from a PublishBatch Failed entry: 1 true, 0 false, -1 not given)
 * and the HTTP status (0 if none). `code` may be NULL or "".
 *
 * A known code decides first (throttling codes -> SNS_THROTTLED; 5xx-type
 * codes and KMSThrottling -> SNS_RETRY; invalid-message codes ->
 * SNS_PERMANENT; authorization, credential, clock, topic and KMS access codes
 * -> SNS_CONFIG). Transport failures use the codes the client puts in
 * sns_result.code: "CURLE_*" names are SNS_UNREACHABLE, except TLS
 * verification and URL/protocol errors, which are SNS_CONFIG; "Cancelled"
 * is SNS_UNREACHABLE. Then SenderFault (true -> SNS_PERMANENT, false ->
 * SNS_RETRY). Then the status: 2xx ok; 408 and 5xx retry; 429 throttled;
 * 413 permanent (the body itself is too big); 401/403/404 and any other
 * 3xx/4xx config. An unknown 4xx on a whole request is treated as
 * configuration on purpose: such codes (a new auth code, an opt-in, a
 * malformed request from a client bug) hit every event alike, so pausing
 * with the code in stats keeps the backlog safe, where "permanent" would
 * dead-letter all of it and "retry" would churn until events expire. An
 * unknown code on a batch entry without SenderFault is SNS_RETRY. No status
 * and no code is SNS_UNREACHABLE. */
sns_outcome sns_classify(const char *code, long http_status, int sender_fault);

/* Parses an SNS answer for a request of n entries. Fills results[0..n-1]
 * (per entry, by batch id) and *overall (the request as a whole: SNS_OK when
 * the HTTP exchange succeeded, even if some entries failed). Unparseable
 * bodies give SNS_RETRY with code "MalformedResponse". Returns 0 or -EPROTO.
 *
 * Details: a 2xx whose body is not the expected XML, or a batch answer that
 * does not mention an entry, gives that entry (or all) SNS_RETRY
 * "MalformedResponse" (at-least-once: a retry may duplicate, never lose).
 * A member is placed only by an Id exactly as sent ("0".."9": "01" places
 * nothing), and an entry listed both Successful and Failed is retried the
 * same way.
 * A non-2xx answer gives every entry the same result as *overall; its code
 * is the AWS Error/Code, or "HTTP<status>" when the body has none (then the
 * status classifies). "InvalidParameter" whose message names the TopicArn
 * is SNS_CONFIG: it is the topic that is wrong, not the message.
 * When a PublishBatch of several entries fails as a whole with
 * SNS_PERMANENT (rare: SNS reports bad messages per entry), the caller
 * should republish the entries singly before dead-lettering any of them. */
int sns_parse_response(long http_status, const char *body, size_t len, size_t n, int was_batch,
                       sns_result *results, sns_result *overall);

/* ---- The client ------------------------------------------------------ */

typedef struct sns_client sns_client;

typedef struct {
  const char *topic_arn;
  const char *region;   /* NULL: from the ARN */
  const char *endpoint; /* NULL: https://sns.REGION.amazonaws.com (AWS_ENDPOINT_URL_SNS honoured) */
  creds_provider *creds;   /* borrowed */
  long connect_timeout_ms; /* 0 = 3000 */
  long timeout_ms;         /* 0 = 15000 total per request */
  int max_connections;     /* 0 = 64 */
  /* Fixed credentials for tools and tests, used only when creds is NULL
   * (copied at sns_client_new). With neither, sns_client_new fails. */
  const aws_creds *static_creds;
} sns_client_options;

/* Returns 0; -EINVAL for a topic ARN that is not arn:PARTITION:sns:REGION:
 * ACCOUNT:NAME, a bad endpoint URL or no credentials source; -ENOMEM. */
int sns_client_new(sns_client **out, uv_loop_t *loop, const sns_client_options *o);
/* The endpoint URL in use (after option / AWS_ENDPOINT_URL_SNS /
 * AWS_ENDPOINT_URL / default), for logs. */
const char *sns_client_endpoint(const sns_client *c);
/* Closes all transfers (their callbacks get SNS_UNREACHABLE "Cancelled",
 * called from inside sns_client_close) and frees the client once libuv has
 * closed its handles; `done` (may be NULL) is called then. sns_publish()
 * after this returns -ECANCELED.
 * Calling it again while the close is under way (from a completion
 * callback, or a second owner) is allowed: the transfers are not cancelled
 * twice, and every non-NULL `done` is called once, in call order, after the
 * client is freed (never from inside sns_client_close, unless a later call
 * finds no memory to queue its `done`: then it is called at once, logged).
 * Once the first `done` has run the client is gone: a call after that is a
 * use after free. */
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
 * credentials right now; the drainer treats it as SNS_CONFIG), -ECANCELED
 * (the client is closing). */
int sns_publish(sns_client *c, const sns_entry *entries, size_t n, int force_batch, sns_done_cb cb,
                void *arg);

#endif
