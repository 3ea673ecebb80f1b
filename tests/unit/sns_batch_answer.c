/* PublishBatch answers (relay/sns_response.c) that would place a member on the wrong entry. */
#include <errno.h>
#include <string.h>

#include "sns.h"
#include "testlib.h"

#define NS " xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\""

static int parse_batch(const char *xml, size_t n, sns_result *r, sns_result *all) {
  return sns_parse_response(200, xml, strlen(xml), n, 1, r, all);
}

/* The request numbers its entries "0".."n-1"; an answer member is placed
 * only by exactly such an id. "01" or "00" is not an id that was sent, so
 * it acknowledges nothing: the entry it resembles is retried, not acked
 * without a Successful member of its own. */
TEST(batch_member_ids_must_match_exactly) {
  sns_result r[3], all;
  int rc = parse_batch("<PublishBatchResponse" NS
                       "><PublishBatchResult><Successful>"
                       "<member><Id>00</Id><MessageId>m0</MessageId></member>"
                       "<member><Id>01</Id><MessageId>m1</MessageId></member>"
                       "<member><Id>2</Id><MessageId>m2</MessageId></member>"
                       "</Successful><Failed/></PublishBatchResult></PublishBatchResponse>",
                       3, r, &all);
  CHECK_INT(rc, ==, -EPROTO);
  CHECK_INT(all.outcome, ==, SNS_OK);
  CHECK_INT(r[0].outcome, ==, SNS_RETRY);
  CHECK_STR(r[0].code, "MalformedResponse");
  CHECK_INT(r[1].outcome, ==, SNS_RETRY);
  CHECK_STR(r[1].code, "MalformedResponse");
  CHECK_INT(r[2].outcome, ==, SNS_OK);
  CHECK_STR(r[2].message_id, "m2");
}

/* An entry listed both as Successful and as Failed has no trustworthy
 * outcome: acking could lose it, dead-lettering could drop an accepted
 * one. It is retried (at-least-once), whichever list comes first. */
TEST(batch_entry_both_successful_and_failed_is_retried) {
  static const char *const docs[] = {
      "<PublishBatchResponse" NS
      "><PublishBatchResult><Successful>"
      "<member><Id>0</Id><MessageId>m0</MessageId></member>"
      "<member><Id>1</Id><MessageId>m1</MessageId></member></Successful><Failed>"
      "<member><Id>0</Id><Code>InvalidParameter</Code><Message>bad</Message>"
      "<SenderFault>true</SenderFault></member>"
      "</Failed></PublishBatchResult></PublishBatchResponse>",
      "<PublishBatchResponse" NS
      "><PublishBatchResult><Failed>"
      "<member><Id>0</Id><Code>InvalidParameter</Code><Message>bad</Message>"
      "<SenderFault>true</SenderFault></member></Failed><Successful>"
      "<member><Id>0</Id><MessageId>m0</MessageId></member>"
      "<member><Id>1</Id><MessageId>m1</MessageId></member>"
      "</Successful></PublishBatchResult></PublishBatchResponse>",
  };
  for (size_t k = 0; k < 2; k++) {
    sns_result r[2], all;
    CHECK_INT(parse_batch(docs[k], 2, r, &all), ==, -EPROTO);
    CHECK_INT(all.outcome, ==, SNS_OK);
    CHECK_INT(r[0].outcome, ==, SNS_RETRY);
    CHECK_STR(r[0].code, "MalformedResponse");
    CHECK_INT(r[1].outcome, ==, SNS_OK);
  }
}
