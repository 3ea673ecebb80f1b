/* Fuzz target: sns_parse_response() (relay/sns_response.c, expat).
 *
 * Input layout: byte 0 picks n (1..10) and batch/non-batch, bytes 1-2 the
 * HTTP status (0..599, 0 = no answer), the rest is the response body.
 * Properties: no crash; the return value is 0 or -EPROTO; every outcome is
 * a member of sns_outcome; every string field is NUL-terminated inside its
 * array; results past n are never written; a non-2xx answer is never OK
 * and gives every entry the overall result; a 2xx answer is OK or a retry
 * overall, and a single Publish is OK only with a message id; an answer
 * without HTTP status is SNS_UNREACHABLE.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sns.h"

#define FAIL(...)                                     \
  do {                                                \
    fprintf(stderr, "fuzz_sns_response: " __VA_ARGS__); \
    fprintf(stderr, "\n");                            \
    abort();                                          \
  } while (0)

static void check_result(const sns_result *r, const char *what, size_t i) {
  if ((int)r->outcome < (int)SNS_OK || (int)r->outcome > (int)SNS_UNREACHABLE)
    FAIL("%s %zu: outcome %d out of the enum", what, i, (int)r->outcome);
  if (!memchr(r->code, 0, sizeof r->code)) FAIL("%s %zu: code not terminated", what, i);
  if (!memchr(r->message, 0, sizeof r->message)) FAIL("%s %zu: message not terminated", what, i);
  if (!memchr(r->message_id, 0, sizeof r->message_id))
    FAIL("%s %zu: message_id not terminated", what, i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  size_t n = 1 + (size_t)(data[0] & 0x0f) % SNS_MAX_BATCH;
  int batch = (data[0] & 0x10) || n > 1;
  long status = (long)(((unsigned)data[1] << 8 | data[2]) % 600);
  /* A copy of exactly the body, so reads past its end are caught. */
  size_t len = size - 3;
  char *body = malloc(len ? len : 1);
  if (!body) return 0;
  if (len) memcpy(body, data + 3, len);

  sns_result results[SNS_MAX_BATCH + 1], overall;
  /* Garbage in the outputs: the parser must set every field it reports. */
  memset(results, 0xa5, sizeof results);
  memset(&overall, 0xa5, sizeof overall);
  int rc = sns_parse_response(status, body, len, n, batch, results, &overall);
  if (rc != 0 && rc != -EPROTO) FAIL("unexpected return %d", rc);
  check_result(&overall, "overall", 0);
  for (size_t i = 0; i < n; i++) check_result(&results[i], "entry", i);
  /* The slot past n is never written. */
  const uint8_t *guard = (const uint8_t *)&results[n];
  for (size_t i = 0; i < sizeof results[n]; i++)
    if (guard[i] != 0xa5) FAIL("result %zu written for an answer of %zu entries", n, n);

  if (status == 0) {
    if (overall.outcome != SNS_UNREACHABLE) FAIL("no status but outcome %d", overall.outcome);
  } else if (overall.http_status != status) {
    FAIL("overall status %ld != %ld", overall.http_status, status);
  }
  int is_2xx = status >= 200 && status < 300;
  if (!is_2xx) {
    if (overall.outcome == SNS_OK) FAIL("non-2xx %ld classified OK", status);
    for (size_t i = 0; i < n; i++)
      if (memcmp(&results[i], &overall, sizeof overall) != 0)
        FAIL("non-2xx: entry %zu differs from overall", i);
  } else {
    if (rc == 0 && overall.outcome != SNS_OK) FAIL("2xx parsed but overall not OK");
    if (overall.outcome == SNS_OK && !batch && results[0].message_id[0] == '\0')
      FAIL("Publish OK without a message id");
    if (overall.outcome != SNS_OK && overall.outcome != SNS_RETRY)
      FAIL("2xx overall outcome %d", overall.outcome);
    if (!batch && (results[0].outcome == SNS_OK) != (overall.outcome == SNS_OK))
      FAIL("Publish entry and overall disagree");
  }
  free(body);
  return 0;
}
