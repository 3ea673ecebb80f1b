/* SNS request bodies (golden) and size accounting at the 256 KiB edge. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sns.h"
#include "testlib.h"

#define ARN "arn:aws:sns:us-east-1:123456789012:events"
#define ARN_ENC "arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3Aevents"

static sns_entry msg(const char *s) {
  sns_entry e;
  memset(&e, 0, sizeof e);
  e.message = (const uint8_t *)s;
  e.message_len = strlen(s);
  return e;
}

static char *body(const sns_entry *e, size_t n, int force) {
  size_t len = 0;
  char *b = sns_build_body(ARN, e, n, force, &len);
  CHECK(b != NULL);
  CHECK_INT(strlen(b), ==, len);
  return b;
}

TEST(publish_minimal) {
  sns_entry e = msg("hello world");
  char *b = body(&e, 1, 0);
  CHECK_STR(b, "Action=Publish&Version=2010-03-31&TopicArn=" ARN_ENC "&Message=hello%20world");
  free(b);
}

TEST(publish_attributes_in_order_and_numbered) {
  sns_entry e = msg("{\"type\":\"message.new\"}");
  e.type = "message.new";
  e.cid = "messaging:general";
  e.channel_type = "messaging";
  e.channel_id = "general";
  e.user_id = "u 1";
  e.webhook_id = "wh-1";
  char *b = body(&e, 1, 0);
  CHECK_STR(b, "Action=Publish&Version=2010-03-31&TopicArn=" ARN_ENC
               "&Message=%7B%22type%22%3A%22message.new%22%7D"
               "&MessageAttributes.entry.1.Name=type"
               "&MessageAttributes.entry.1.Value.DataType=String"
               "&MessageAttributes.entry.1.Value.StringValue=message.new"
               "&MessageAttributes.entry.2.Name=cid"
               "&MessageAttributes.entry.2.Value.DataType=String"
               "&MessageAttributes.entry.2.Value.StringValue=messaging%3Ageneral"
               "&MessageAttributes.entry.3.Name=channel_type"
               "&MessageAttributes.entry.3.Value.DataType=String"
               "&MessageAttributes.entry.3.Value.StringValue=messaging"
               "&MessageAttributes.entry.4.Name=channel_id"
               "&MessageAttributes.entry.4.Value.DataType=String"
               "&MessageAttributes.entry.4.Value.StringValue=general"
               "&MessageAttributes.entry.5.Name=user_id"
               "&MessageAttributes.entry.5.Value.DataType=String"
               "&MessageAttributes.entry.5.Value.StringValue=u%201"
               "&MessageAttributes.entry.6.Name=webhook_id"
               "&MessageAttributes.entry.6.Value.DataType=String"
               "&MessageAttributes.entry.6.Value.StringValue=wh-1");
  free(b);
}

TEST(missing_and_empty_attributes_are_left_out) {
  sns_entry e = msg("x");
  e.type = "user.updated";
  e.cid = "";      /* empty: left out */
  e.user_id = "7"; /* numbering stays consecutive */
  char *b = body(&e, 1, 0);
  CHECK_STR(b, "Action=Publish&Version=2010-03-31&TopicArn=" ARN_ENC
               "&Message=x"
               "&MessageAttributes.entry.1.Name=type"
               "&MessageAttributes.entry.1.Value.DataType=String"
               "&MessageAttributes.entry.1.Value.StringValue=user.updated"
               "&MessageAttributes.entry.2.Name=user_id"
               "&MessageAttributes.entry.2.Value.DataType=String"
               "&MessageAttributes.entry.2.Value.StringValue=7");
  free(b);
}

TEST(encoding_of_reserved_and_unicode_bytes) {
  /* unreserved kept; '+', '~', '%', '=', '&', space, newline, UTF-8. */
  sns_entry e = msg("aZ09-_.~ +%=&/?\n\xc3\xa9\xf0\x9f\x98\x80");
  char *b = body(&e, 1, 0);
  CHECK_STR(b, "Action=Publish&Version=2010-03-31&TopicArn=" ARN_ENC
               "&Message=aZ09-_.~%20%2B%25%3D%26%2F%3F%0A%C3%A9%F0%9F%98%80");
  free(b);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1; /* lowercase hex is not what we emit */
}

TEST(every_byte_round_trips) {
  uint8_t all[256];
  for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
  sns_entry e;
  memset(&e, 0, sizeof e);
  e.message = all;
  e.message_len = sizeof all;
  char *b = body(&e, 1, 0);
  const char *m = strstr(b, "&Message=");
  CHECK(m != NULL);
  m += strlen("&Message=");
  uint8_t out[256];
  size_t k = 0;
  for (const char *p = m; *p && *p != '&'; k++) {
    CHECK(k < sizeof out);
    if (*p == '%') {
      int hi = hexval(p[1]), lo = hexval(p[2]);
      CHECK(hi >= 0 && lo >= 0);
      out[k] = (uint8_t)(hi * 16 + lo);
      p += 3;
    } else {
      CHECK(strchr("-_.~", *p) || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
            (*p >= '0' && *p <= '9'));
      out[k] = (uint8_t)*p++;
    }
  }
  CHECK_MEM(out, k, all, sizeof all);
  free(b);
}

TEST(batch_golden_with_fifo_ids) {
  sns_entry e[2] = {msg("a"), msg("b c")};
  e[0].type = "message.new";
  e[0].group_id = "messaging:general";
  e[0].dedup_id = "wh-1";
  e[1].group_id = "user.updated";
  e[1].dedup_id = "0123abcd";
  char *b = body(e, 2, 0);
  CHECK_STR(
      b,
      "Action=PublishBatch&Version=2010-03-31&TopicArn=" ARN_ENC
      "&PublishBatchRequestEntries.member.1.Id=0"
      "&PublishBatchRequestEntries.member.1.Message=a"
      "&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Name=type"
      "&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.DataType=String"
      "&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.StringValue=message.new"
      "&PublishBatchRequestEntries.member.1.MessageGroupId=messaging%3Ageneral"
      "&PublishBatchRequestEntries.member.1.MessageDeduplicationId=wh-1"
      "&PublishBatchRequestEntries.member.2.Id=1"
      "&PublishBatchRequestEntries.member.2.Message=b%20c"
      "&PublishBatchRequestEntries.member.2.MessageGroupId=user.updated"
      "&PublishBatchRequestEntries.member.2.MessageDeduplicationId=0123abcd");
  free(b);
}

TEST(publish_fifo_golden) {
  sns_entry e = msg("m");
  e.group_id = "g";
  e.dedup_id = "d";
  char *b = body(&e, 1, 0);
  CHECK_STR(b, "Action=Publish&Version=2010-03-31&TopicArn=" ARN_ENC
               "&Message=m&MessageGroupId=g&MessageDeduplicationId=d");
  free(b);
}

TEST(force_batch_with_one_entry) {
  sns_entry e = msg("m");
  char *b = body(&e, 1, 1);
  CHECK_STR(b, "Action=PublishBatch&Version=2010-03-31&TopicArn=" ARN_ENC
               "&PublishBatchRequestEntries.member.1.Id=0"
               "&PublishBatchRequestEntries.member.1.Message=m");
  free(b);
}

TEST(ten_entries_ids_and_eleven_refused) {
  sns_entry e[11];
  for (int i = 0; i < 11; i++) e[i] = msg("x");
  char *b = body(e, 10, 0);
  CHECK(strstr(b, "&PublishBatchRequestEntries.member.10.Id=9&") != NULL);
  CHECK(strstr(b, "member.11") == NULL);
  free(b);
  size_t len = 123;
  CHECK(sns_build_body(ARN, e, 11, 0, &len) == NULL);
  CHECK(sns_build_body(ARN, e, 0, 0, &len) == NULL);
  CHECK_INT(len, ==, 123);
}

TEST(entry_size_counts_body_and_attributes) {
  sns_entry e = msg("0123456789");
  CHECK_INT(sns_entry_size(&e), ==, 10);
  e.type = "message.new"; /* 4 + 6 + 11 */
  CHECK_INT(sns_entry_size(&e), ==, 10 + 21);
  e.cid = "";           /* absent */
  e.webhook_id = "abc"; /* 10 + 6 + 3 */
  CHECK_INT(sns_entry_size(&e), ==, 10 + 21 + 19);
  e.group_id = "ggg"; /* FIFO ids are not message size */
  e.dedup_id = "ddd";
  CHECK_INT(sns_entry_size(&e), ==, 50);
  sns_entry two[2] = {e, e};
  CHECK_INT(sns_request_size(two, 2), ==, 100);
}

/* SNS refuses a whole message whose attribute value has a character its
 * XML-based API cannot carry: such an attribute is left out, of the body
 * and of the size, and the numbering stays consecutive. */
TEST(attribute_values_sns_cannot_carry_are_left_out) {
  const char *bad[] = {"a\x01b",
                       "tab\x0b",
                       "\x1f",
                       "\xef\xbf\xbe",
                       "\xef\xbf\xbf",
                       "\xc3",
                       "\x80",
                       "\xc0\xaf",
                       "\xed\xa0\x80",
                       "\xf4\x90\x80\x80",
                       "\xe2\x82",
                       "\xf8\x88\x80\x80\x80",
                       ""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (sns_attr_value_ok(bad[i])) tl_fail(__FILE__, __LINE__, "accepted case %zu", i);
  CHECK(!sns_attr_value_ok(NULL));
  const char *good[] = {"message.new",      "a\tb\nc\rd",        "\x7f",
                        "\xc2\x80",         "\xc3\xa9",          "\xed\x9f\xbf",
                        "\xee\x80\x80",     "\xef\xbf\xbd",      "\xf0\x90\x80\x80",
                        "\xf4\x8f\xbf\xbf", "\xf0\x9f\x98\x80 x"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    if (!sns_attr_value_ok(good[i])) tl_fail(__FILE__, __LINE__, "refused case %zu", i);

  sns_entry e = msg("x");
  e.type = "message.new";
  e.cid = "messaging:\x01";    /* left out */
  e.user_id = "u\xef\xbf\xbf"; /* left out */
  e.webhook_id = "wh\xff";     /* a header's stray byte: left out */
  e.channel_id = "\xc3\xa9";   /* kept */
  char *b = body(&e, 1, 0);
  CHECK_STR(b, "Action=Publish&Version=2010-03-31&TopicArn=" ARN_ENC
               "&Message=x"
               "&MessageAttributes.entry.1.Name=type"
               "&MessageAttributes.entry.1.Value.DataType=String"
               "&MessageAttributes.entry.1.Value.StringValue=message.new"
               "&MessageAttributes.entry.2.Name=channel_id"
               "&MessageAttributes.entry.2.Value.DataType=String"
               "&MessageAttributes.entry.2.Value.StringValue=%C3%A9");
  free(b);
  CHECK_INT(sns_entry_size(&e), ==, 1 + (4 + 6 + 11) + (10 + 6 + 2));
}

/* FIFO ids: SNS takes 1-128 alphanumeric or punctuation characters. Any
 * other cid, type or webhook id is sent as its SHA-256, the same for the
 * same value, so a group stays one group and a retry keeps its dedup id. */
TEST(fifo_ids_sns_cannot_take_are_hashed) {
  char out[65];
  const char *ok[] = {"messaging:general", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "a"};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    CHECK(sns_fifo_id_ok(ok[i]));
    CHECK(sns_fifo_id(ok[i], out) == ok[i]);
  }
  char max[130];
  memset(max, 'x', 128);
  max[128] = '\0';
  CHECK(sns_fifo_id_ok(max));
  max[128] = 'x';
  max[129] = '\0';
  const char *bad[] = {"messaging:my room", "caf\xc3\xa9", "a\tb", "a\x7f", "", max};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    if (sns_fifo_id_ok(bad[i])) tl_fail(__FILE__, __LINE__, "accepted case %zu", i);
    const char *id = sns_fifo_id(bad[i], out);
    CHECK(id == out);
    CHECK_INT(strlen(id), ==, 64);
    CHECK(sns_fifo_id_ok(id));
  }
  /* sha256("messaging:my room"), as sha256sum prints it */
  CHECK_STR(sns_fifo_id("messaging:my room", out),
            "5a6cb0bad8f30ccfb3ddaadb3f78143486b4dc8d1afa620f15eaf89caa5a8dbe");
  char again[65];
  CHECK_STR(sns_fifo_id("messaging:my room", again), out);
  CHECK(strcmp(sns_fifo_id("messaging:my room2", again), out) != 0);
}

/* Entries whose SNS sizes are given exactly (body of 'a's plus a type). */
static uint8_t *big;
static sns_entry sized(size_t total) {
  sns_entry e;
  memset(&e, 0, sizeof e);
  e.type = "t"; /* 4 + 6 + 1 = 11 */
  e.message = big;
  e.message_len = total - 11;
  return e;
}

TEST(batch_fit_at_the_256k_edge) {
  big = malloc(SNS_MAX_REQUEST_BYTES);
  CHECK(big != NULL);
  memset(big, 'a', SNS_MAX_REQUEST_BYTES);

  sns_entry one = sized(SNS_MAX_REQUEST_BYTES);
  CHECK_INT(sns_entry_size(&one), ==, 262144);
  CHECK_INT(sns_batch_fit(&one, 1, 10), ==, 1);
  one = sized(SNS_MAX_REQUEST_BYTES + 1);
  CHECK_INT(sns_batch_fit(&one, 1, 10), ==, 0);

  /* Four entries summing to exactly 256 KiB fit; one byte more and the
   * last one waits for the next request. */
  sns_entry e[5];
  for (int i = 0; i < 4; i++) e[i] = sized(65536);
  e[4] = sized(11);
  CHECK_INT(sns_request_size(e, 4), ==, 262144);
  CHECK_INT(sns_batch_fit(e, 4, 10), ==, 4);
  CHECK_INT(sns_batch_fit(e, 5, 10), ==, 4);
  e[3] = sized(65537);
  CHECK_INT(sns_batch_fit(e, 4, 10), ==, 3);

  /* Count limits: never more than 10, nor than asked for. */
  sns_entry small[12];
  for (int i = 0; i < 12; i++) small[i] = sized(100);
  CHECK_INT(sns_batch_fit(small, 12, 0), ==, 10);
  CHECK_INT(sns_batch_fit(small, 12, 50), ==, 10);
  CHECK_INT(sns_batch_fit(small, 12, 3), ==, 3);
  CHECK_INT(sns_batch_fit(small, 2, 10), ==, 2);

  /* The largest legal request still builds. */
  one = sized(SNS_MAX_REQUEST_BYTES);
  size_t len;
  char *b = sns_build_body(ARN, &one, 1, 0, &len);
  CHECK(b != NULL);
  CHECK_INT(len, >, SNS_MAX_REQUEST_BYTES);
  free(b);
  free(big);
}

TEST(outcome_names) {
  CHECK_STR(sns_outcome_name(SNS_OK), "ok");
  CHECK_STR(sns_outcome_name(SNS_RETRY), "retry");
  CHECK_STR(sns_outcome_name(SNS_THROTTLED), "throttled");
  CHECK_STR(sns_outcome_name(SNS_PERMANENT), "permanent");
  CHECK_STR(sns_outcome_name(SNS_CONFIG), "config");
  CHECK_STR(sns_outcome_name(SNS_UNREACHABLE), "unreachable");
}
