/* SNS answer parsing and sns_classify() for every code SPEC names. */
#include <errno.h>
#include <string.h>

#include "sns.h"
#include "testlib.h"

typedef struct {
  const char *code;
  sns_outcome want;
} case_t;

TEST(classify_every_listed_code) {
  static const case_t cases[] = {
      {"Throttling", SNS_THROTTLED},
      {"ThrottlingException", SNS_THROTTLED},
      {"TooManyRequests", SNS_THROTTLED},
      {"TooManyRequestsException", SNS_THROTTLED},
      {"RequestThrottled", SNS_THROTTLED},
      {"InternalError", SNS_RETRY},
      {"InternalFailure", SNS_RETRY},
      {"ServiceUnavailable", SNS_RETRY},
      {"KMSThrottling", SNS_RETRY},
      {"RequestTimeout", SNS_RETRY},
      {"MalformedResponse", SNS_RETRY},
      {"InvalidParameter", SNS_PERMANENT},
      {"InvalidParameterValue", SNS_PERMANENT},
      {"ParameterValueInvalid", SNS_PERMANENT},
      {"ValidationException", SNS_PERMANENT},
      {"ValidationError", SNS_PERMANENT},
      {"SnsValidationException", SNS_PERMANENT},
      {"BatchRequestTooLong", SNS_PERMANENT},
      {"BatchEntryIdsNotDistinct", SNS_PERMANENT},
      {"AuthorizationError", SNS_CONFIG},
      {"InvalidClientTokenId", SNS_CONFIG},
      {"SignatureDoesNotMatch", SNS_CONFIG},
      {"ExpiredToken", SNS_CONFIG},
      {"ExpiredTokenException", SNS_CONFIG},
      {"InvalidSecurity", SNS_CONFIG},
      {"AccessDenied", SNS_CONFIG},
      {"AccessDeniedException", SNS_CONFIG},
      {"IncompleteSignature", SNS_CONFIG},
      {"MissingAuthenticationToken", SNS_CONFIG},
      {"RequestExpired", SNS_CONFIG},
      {"OptInRequired", SNS_CONFIG},
      {"NotFound", SNS_CONFIG},
      {"KMSAccessDenied", SNS_CONFIG},
      {"KMSDisabled", SNS_CONFIG},
      {"KMSNotFound", SNS_CONFIG},
      {"KMSInvalidState", SNS_CONFIG},
      {"KMSOptInRequired", SNS_CONFIG},
      {"KMSSomethingNew", SNS_CONFIG},
      {"CURLE_COULDNT_CONNECT", SNS_UNREACHABLE},
      {"CURLE_OPERATION_TIMEDOUT", SNS_UNREACHABLE},
      {"CURLE_RECV_ERROR", SNS_UNREACHABLE},
      {"CURLE_GOT_NOTHING", SNS_UNREACHABLE},
      {"CURLE_COULDNT_RESOLVE_HOST", SNS_UNREACHABLE},
      {"CURLE_PEER_FAILED_VERIFICATION", SNS_CONFIG},
      {"CURLE_URL_MALFORMAT", SNS_CONFIG},
      {"Cancelled", SNS_UNREACHABLE},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    /* The code decides regardless of the status it came with. */
    long statuses[] = {0, 400, 403, 404, 500};
    for (size_t s = 0; s < 5; s++) {
      sns_outcome got = sns_classify(cases[i].code, statuses[s], -1);
      if (got != cases[i].want)
        tl_fail(__FILE__, __LINE__, "%s/%ld: got %s want %s", cases[i].code, statuses[s],
                sns_outcome_name(got), sns_outcome_name(cases[i].want));
    }
  }
}

TEST(classify_by_sender_fault_and_status) {
  /* Unknown code on a batch entry: SenderFault decides. */
  CHECK_INT(sns_classify("SomethingNew", 0, 1), ==, SNS_PERMANENT);
  CHECK_INT(sns_classify("SomethingNew", 0, 0), ==, SNS_RETRY);
  CHECK_INT(sns_classify("SomethingNew", 0, -1), ==, SNS_RETRY);
  /* Known codes win over SenderFault (KMS key trouble never DLQs). */
  CHECK_INT(sns_classify("KMSAccessDenied", 0, 1), ==, SNS_CONFIG);
  CHECK_INT(sns_classify("Throttling", 0, 1), ==, SNS_THROTTLED);
  CHECK_INT(sns_classify("InternalError", 0, 1), ==, SNS_RETRY);
  /* Status only. */
  CHECK_INT(sns_classify(NULL, 200, -1), ==, SNS_OK);
  CHECK_INT(sns_classify("", 0, -1), ==, SNS_UNREACHABLE);
  CHECK_INT(sns_classify(NULL, 429, -1), ==, SNS_THROTTLED);
  CHECK_INT(sns_classify("HTTP429", 429, -1), ==, SNS_THROTTLED);
  CHECK_INT(sns_classify(NULL, 500, -1), ==, SNS_RETRY);
  CHECK_INT(sns_classify(NULL, 502, -1), ==, SNS_RETRY);
  CHECK_INT(sns_classify(NULL, 503, -1), ==, SNS_RETRY);
  CHECK_INT(sns_classify(NULL, 504, -1), ==, SNS_RETRY);
  CHECK_INT(sns_classify(NULL, 408, -1), ==, SNS_RETRY);
  CHECK_INT(sns_classify("HTTP413", 413, -1), ==, SNS_PERMANENT);
  CHECK_INT(sns_classify(NULL, 401, -1), ==, SNS_CONFIG);
  CHECK_INT(sns_classify(NULL, 403, -1), ==, SNS_CONFIG);
  CHECK_INT(sns_classify(NULL, 404, -1), ==, SNS_CONFIG);
  CHECK_INT(sns_classify(NULL, 301, -1), ==, SNS_CONFIG);
  /* Unknown 4xx code on a whole request: configuration (see sns.h). */
  CHECK_INT(sns_classify("InvalidAction", 400, -1), ==, SNS_CONFIG);
  CHECK_INT(sns_classify("MalformedQueryString", 400, -1), ==, SNS_CONFIG);
  CHECK_INT(sns_classify("SomethingNew", 503, -1), ==, SNS_RETRY);
}

#define NS " xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\""

static void parse(long status, const char *xml, size_t n, int batch, sns_result *r, sns_result *all,
                  int want_rc) {
  memset(r, 0x5a, sizeof(sns_result) * n);
  int rc = sns_parse_response(status, xml, strlen(xml), n, batch, r, all);
  CHECK_INT(rc, ==, want_rc);
}

TEST(publish_success) {
  sns_result r[1], all;
  parse(
      200,
      "<PublishResponse" NS
      ">\n  <PublishResult>\n    <MessageId> 94f20ce6-13c5-43a0-9a9e-ca52d816e90b </MessageId>\n"
      "  </PublishResult>\n  <ResponseMetadata><RequestId>f187a3c1</RequestId></ResponseMetadata>\n"
      "</PublishResponse>",
      1, 0, r, &all, 0);
  CHECK_INT(all.outcome, ==, SNS_OK);
  CHECK_INT(r[0].outcome, ==, SNS_OK);
  CHECK_INT(r[0].http_status, ==, 200);
  CHECK_STR(r[0].message_id, "94f20ce6-13c5-43a0-9a9e-ca52d816e90b");
  CHECK_STR(r[0].code, "");
}

TEST(publish_success_with_prefix_and_declaration) {
  sns_result r[1], all;
  parse(200,
        "<?xml version=\"1.0\"?><s:PublishResponse "
        "xmlns:s=\"http://sns.amazonaws.com/doc/2010-03-31/\">"
        "<s:PublishResult><s:MessageId>abc</s:MessageId></s:PublishResult></s:PublishResponse>",
        1, 0, r, &all, 0);
  CHECK_INT(r[0].outcome, ==, SNS_OK);
  CHECK_STR(r[0].message_id, "abc");
}

TEST(publish_batch_mixed) {
  sns_result r[6], all;
  parse(200,
        "<PublishBatchResponse" NS
        "><PublishBatchResult>"
        "<Successful><member><Id>0</Id><MessageId>m0</MessageId></member>"
        "<member><MessageId>m2</MessageId><Id>2</Id></member></Successful>"
        "<Failed>"
        "<member><Id>1</Id><Code>InvalidParameter</Code><Message>Invalid parameter: "
        "Message</Message><SenderFault>true</SenderFault></member>"
        "<member><Id>3</Id><Code>InternalError</Code><Message>oops</Message><SenderFault>false</"
        "SenderFault></member>"
        "<member><Id>4</Id><Code>Throttling</Code><Message>Rate "
        "exceeded</Message><SenderFault>true</SenderFault></member>"
        "<member><Id>5</Id><Code>KMSAccessDenied</Code><Message>denied</Message><SenderFault>true</"
        "SenderFault></member>"
        "</Failed></PublishBatchResult></PublishBatchResponse>",
        6, 1, r, &all, 0);
  CHECK_INT(all.outcome, ==, SNS_OK);
  CHECK_INT(r[0].outcome, ==, SNS_OK);
  CHECK_STR(r[0].message_id, "m0");
  CHECK_INT(r[2].outcome, ==, SNS_OK);
  CHECK_STR(r[2].message_id, "m2");
  CHECK_INT(r[1].outcome, ==, SNS_PERMANENT);
  CHECK_STR(r[1].code, "InvalidParameter");
  CHECK_STR(r[1].message, "Invalid parameter: Message");
  CHECK_STR(r[1].message_id, "");
  CHECK_INT(r[3].outcome, ==, SNS_RETRY);
  CHECK_INT(r[4].outcome, ==, SNS_THROTTLED);
  CHECK_INT(r[5].outcome, ==, SNS_CONFIG);
}

TEST(batch_unknown_codes_follow_sender_fault) {
  sns_result r[2], all;
  parse(200,
        "<PublishBatchResponse" NS
        "><PublishBatchResult><Successful/><Failed>"
        "<member><Id>0</Id><Code>Weird</Code><Message>x</Message><SenderFault>true</SenderFault></"
        "member>"
        "<member><Id>1</Id><Code>Weird</Code><Message>y</Message><SenderFault>false</SenderFault></"
        "member>"
        "</Failed></PublishBatchResult></PublishBatchResponse>",
        2, 1, r, &all, 0);
  CHECK_INT(r[0].outcome, ==, SNS_PERMANENT);
  CHECK_INT(r[1].outcome, ==, SNS_RETRY);
}

/* SNS's own throttling error (ThrottledException) is "Throttled" on the
 * wire, HTTP 429 and senderFault=true in the service model: throttling,
 * whatever SenderFault or status it comes with, never a DLQ entry or a
 * configuration pause. */
TEST(sns_throttled_code_is_throttling) {
  CHECK_INT(sns_classify("Throttled", 0, 1), ==, SNS_THROTTLED);
  CHECK_INT(sns_classify("Throttled", 400, -1), ==, SNS_THROTTLED);
  CHECK_INT(sns_classify("Throttled", 429, -1), ==, SNS_THROTTLED);
  sns_result r[2], all;
  parse(200,
        "<PublishBatchResponse" NS
        "><PublishBatchResult><Successful><member><Id>0</Id><MessageId>a</MessageId></member>"
        "</Successful><Failed><member><Id>1</Id><Code>Throttled</Code><Message>Rate exceeded"
        "</Message><SenderFault>true</SenderFault></member></Failed></PublishBatchResult>"
        "</PublishBatchResponse>",
        2, 1, r, &all, 0);
  CHECK_INT(r[0].outcome, ==, SNS_OK);
  CHECK_INT(r[1].outcome, ==, SNS_THROTTLED);
  CHECK_STR(r[1].code, "Throttled");
  parse(400,
        "<ErrorResponse" NS
        "><Error><Type>Sender</Type><Code>Throttled</Code>"
        "<Message>Rate exceeded</Message></Error></ErrorResponse>",
        2, 1, r, &all, 0);
  CHECK_INT(all.outcome, ==, SNS_THROTTLED);
  CHECK_INT(r[1].outcome, ==, SNS_THROTTLED);
}

TEST(batch_missing_or_bogus_entries_are_retried) {
  sns_result r[3], all;
  parse(200,
        "<PublishBatchResponse" NS
        "><PublishBatchResult>"
        "<Successful><member><Id>0</Id><MessageId>a</MessageId></member>"
        "<member><Id>0</Id><MessageId>dup</MessageId></member>"
        "<member><Id>7</Id><MessageId>out-of-range</MessageId></member>"
        "<member><Id>x1</Id><MessageId>bad-id</MessageId></member></Successful>"
        "<Failed/></PublishBatchResult></PublishBatchResponse>",
        3, 1, r, &all, -EPROTO);
  CHECK_INT(all.outcome, ==, SNS_OK);
  CHECK_INT(r[0].outcome, ==, SNS_OK);
  CHECK_STR(r[0].message_id, "a");
  CHECK_INT(r[1].outcome, ==, SNS_RETRY);
  CHECK_STR(r[1].code, "MalformedResponse");
  CHECK_INT(r[2].outcome, ==, SNS_RETRY);
}

static void check_error(long status, const char *xml, size_t n, sns_outcome want,
                        const char *code) {
  sns_result r[3], all;
  parse(status, xml, n, n > 1, r, &all, 0);
  CHECK_INT(all.outcome, ==, want);
  CHECK_STR(all.code, code);
  CHECK_INT(all.http_status, ==, status);
  for (size_t i = 0; i < n; i++) {
    CHECK_INT(r[i].outcome, ==, want);
    CHECK_STR(r[i].code, code);
  }
}

#define ERRDOC(type, code, msg)                                                         \
  "<ErrorResponse" NS "><Error><Type>" type "</Type><Code>" code "</Code><Message>" msg \
  "</Message></Error><RequestId>r</RequestId></ErrorResponse>"

TEST(error_documents) {
  check_error(403, ERRDOC("Sender", "AuthorizationError", "not authorized"), 3, SNS_CONFIG,
              "AuthorizationError");
  check_error(403, ERRDOC("Sender", "InvalidClientTokenId", "bad token"), 1, SNS_CONFIG,
              "InvalidClientTokenId");
  check_error(403, ERRDOC("Sender", "SignatureDoesNotMatch", "sig"), 1, SNS_CONFIG,
              "SignatureDoesNotMatch");
  check_error(400, ERRDOC("Sender", "Throttling", "Rate exceeded"), 2, SNS_THROTTLED, "Throttling");
  check_error(500, ERRDOC("Receiver", "InternalError", "x"), 1, SNS_RETRY, "InternalError");
  check_error(503, ERRDOC("Receiver", "ServiceUnavailable", "x"), 1, SNS_RETRY,
              "ServiceUnavailable");
  check_error(400, ERRDOC("Sender", "InvalidParameter", "Invalid parameter: Message too long"), 1,
              SNS_PERMANENT, "InvalidParameter");
  check_error(400, ERRDOC("Sender", "ParameterValueInvalid", "bad"), 1, SNS_PERMANENT,
              "ParameterValueInvalid");
  check_error(400, ERRDOC("Sender", "ValidationException", "bad"), 1, SNS_PERMANENT,
              "ValidationException");
  check_error(404, ERRDOC("Sender", "NotFound", "Topic does not exist"), 2, SNS_CONFIG, "NotFound");
  check_error(400, ERRDOC("Sender", "KMSDisabled", "k"), 1, SNS_CONFIG, "KMSDisabled");
  /* A malformed topic ARN is the configuration's fault, not the message's. */
  check_error(400, ERRDOC("Sender", "InvalidParameter", "Invalid parameter: TopicArn"), 1,
              SNS_CONFIG, "InvalidParameter");
}

TEST(non_xml_error_bodies_use_the_status) {
  check_error(503, "", 1, SNS_RETRY, "HTTP503");
  check_error(502, "<html><body>Bad Gateway</body></html>", 2, SNS_RETRY, "HTTP502");
  check_error(429, "slow down", 1, SNS_THROTTLED, "HTTP429");
  check_error(413, "<html>too big</html>", 1, SNS_PERMANENT, "HTTP413");
  check_error(403, "Forbidden", 1, SNS_CONFIG, "HTTP403");
}

TEST(malformed_2xx_is_retried) {
  static const char *bodies[] = {
      "",
      "not xml at all",
      "<PublishResponse" NS
      "><PublishResult><MessageId>x</MessageId></PublishResult>",                 /* truncated */
      "<PublishResponse" NS "><PublishResult></PublishResult></PublishResponse>", /* no id */
      "<PublishBatchResponse" NS "><PublishBatchResult/></PublishBatchResponse>", /* wrong action */
      ERRDOC("Sender", "InvalidParameter", "x"),
      "<!DOCTYPE x [<!ENTITY a \"b\">]><PublishResponse><PublishResult><MessageId>&a;</MessageId>"
      "</PublishResult></PublishResponse>",
  };
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    sns_result r[1], all;
    parse(200, bodies[i], 1, 0, r, &all, -EPROTO);
    CHECK_INT(all.outcome, ==, SNS_RETRY);
    CHECK_STR(all.code, "MalformedResponse");
    CHECK_INT(r[0].outcome, ==, SNS_RETRY);
  }
  /* A batch answered with a Publish document. */
  sns_result r[2], all;
  parse(200,
        "<PublishResponse" NS
        "><PublishResult><MessageId>x</MessageId></PublishResult></PublishResponse>",
        2, 1, r, &all, -EPROTO);
  CHECK_INT(r[0].outcome, ==, SNS_RETRY);
  CHECK_INT(r[1].outcome, ==, SNS_RETRY);
}

TEST(billion_laughs_is_refused) {
  const char *xml =
      "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\">"
      "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c "
      "\"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]>"
      "<ErrorResponse><Error><Code>&c;</Code></Error></ErrorResponse>";
  sns_result r[1], all;
  parse(400, xml, 1, 0, r, &all, 0);
  CHECK_STR(all.code, "HTTP400");
}

TEST(long_fields_are_truncated_safely) {
  char xml[4096], longmsg[2000];
  memset(longmsg, 'm', sizeof longmsg - 1);
  longmsg[sizeof longmsg - 1] = '\0';
  snprintf(xml, sizeof xml,
           "<ErrorResponse><Error><Code>"
           "ThrottlingExceptionWithAVeryLongNameThatGoesOnAndOnAndOnForeverAndEver</Code>"
           "<Message>%s</Message></Error></ErrorResponse>",
           longmsg);
  sns_result r[1], all;
  parse(400, xml, 1, 0, r, &all, 0);
  CHECK_INT(strlen(all.code), ==, sizeof all.code - 1);
  CHECK_INT(strlen(all.message), <, sizeof all.message);
  CHECK_INT(all.outcome, ==, SNS_CONFIG); /* truncated unknown 4xx code */
}

TEST(no_http_answer) {
  sns_result r[2], all;
  CHECK_INT(sns_parse_response(0, NULL, 0, 2, 1, r, &all), ==, 0);
  CHECK_INT(all.outcome, ==, SNS_UNREACHABLE);
  CHECK_INT(r[1].outcome, ==, SNS_UNREACHABLE);
  CHECK_INT(sns_parse_response(200, "", 0, 0, 1, r, &all), ==, -EINVAL);
  CHECK_INT(sns_parse_response(200, "", 0, 11, 1, r, &all), ==, -EINVAL);
  CHECK_INT(sns_parse_response(200, "", 0, 2, 0, r, &all), ==, -EINVAL);
}

/* Mutated answers (deterministic PRNG): never a crash (ASan/UBSan build),
 * always a valid outcome and NUL-terminated strings, and a 2xx never turns
 * into a success for an entry the answer did not accept. */
static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;
static unsigned rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (unsigned)(rng_state >> 11);
}

TEST(mutated_answers_are_safe) {
  static const char *seeds[] = {
      "<PublishBatchResponse" NS
      "><PublishBatchResult><Successful><member><Id>0</Id>"
      "<MessageId>m0</MessageId></member></Successful><Failed><member><Id>1</Id><Code>"
      "InvalidParameter</Code><Message>bad</Message><SenderFault>true</SenderFault></member>"
      "</Failed></PublishBatchResult></PublishBatchResponse>",
      "<PublishResponse" NS
      "><PublishResult><MessageId>abc</MessageId></PublishResult>"
      "</PublishResponse>",
      ERRDOC("Sender", "Throttling", "Rate exceeded"),
  };
  static const char alphabet[] = "<>/&;\"'= \n\x00\xff\xc3member Id 0 1 2 Code MessageId Failed";
  char buf[1024];
  for (int iter = 0; iter < 30000; iter++) {
    const char *seed = seeds[iter % 3];
    size_t len = strlen(seed);
    memcpy(buf, seed, len);
    int edits = 1 + (int)(rnd() % 8);
    for (int k = 0; k < edits; k++) {
      size_t pos = rnd() % (len ? len : 1);
      switch (rnd() % 3) {
        case 0: /* overwrite */
          buf[pos] = alphabet[rnd() % (sizeof alphabet - 1)];
          break;
        case 1: /* truncate */
          len = pos;
          break;
        default: /* duplicate a slice */
          if (len + 16 < sizeof buf) {
            memmove(buf + pos + 16, buf + pos, len - pos);
            len += 16;
          }
      }
    }
    long statuses[] = {200, 400, 403, 500};
    long st = statuses[rnd() % 4];
    int batch = iter % 3 == 0;
    size_t n = batch ? 1 + rnd() % 3 : 1;
    sns_result r[3], all;
    memset(r, 0x7f, sizeof r);
    int rc = sns_parse_response(st, buf, len, n, batch, r, &all);
    CHECK(rc == 0 || rc == -EPROTO);
    CHECK(all.outcome >= SNS_OK && all.outcome <= SNS_UNREACHABLE);
    CHECK(memchr(all.code, 0, sizeof all.code) && memchr(all.message, 0, sizeof all.message));
    for (size_t i = 0; i < n; i++) {
      CHECK(r[i].outcome >= SNS_OK && r[i].outcome <= SNS_UNREACHABLE);
      CHECK(memchr(r[i].code, 0, sizeof r[i].code) &&
            memchr(r[i].message_id, 0, sizeof r[i].message_id));
      if (st != 200) CHECK(r[i].outcome != SNS_OK);
      /* Success needs a message id; an entry the answer skipped is retried. */
      if (r[i].outcome == SNS_OK) CHECK(r[i].message_id[0] != '\0' || batch);
    }
  }
}
