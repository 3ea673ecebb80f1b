/* SNS answers: XML parsing (expat) and classification (pure, no I/O).
 *
 * sns_classify() is the single place that decides what the drainer does
 * with a failure: retry, slow down, dead-letter or pause. Its rules and the
 * reasoning for unknown codes are in sns.h.
 *
 * The parser is a small event-driven reader of the three documents SNS
 * returns (PublishResponse, PublishBatchResponse, ErrorResponse). Element
 * names are matched on their local part, so a default namespace (SNS always
 * sends one) or a prefixed one reads the same. DOCTYPE declarations are
 * refused: SNS never sends one, and it closes the door on entity tricks.
 */
#include <errno.h>
#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sns.h"

/* ---- classification --------------------------------------------------- */

typedef struct {
  const char *code;
  sns_outcome outcome;
} code_rule;

static const code_rule rules[] = {
    /* Throttling: retry and lower concurrency. "Throttled" is SNS's own
     * (ThrottledException on the wire; senderFault=true in the service
     * model, so without this rule a Failed entry would be dead-lettered). */
    {"Throttled", SNS_THROTTLED},
    {"Throttling", SNS_THROTTLED},
    {"ThrottlingException", SNS_THROTTLED},
    {"ThrottledException", SNS_THROTTLED},
    {"TooManyRequests", SNS_THROTTLED},
    {"TooManyRequestsException", SNS_THROTTLED},
    {"RequestThrottled", SNS_THROTTLED},
    {"RequestThrottledException", SNS_THROTTLED},
    {"RequestLimitExceeded", SNS_THROTTLED},
    {"SlowDown", SNS_THROTTLED},
    /* Transient on AWS's side. KMSThrottling is KMS's limit, not SNS's:
     * lowering SNS concurrency would not clearly help, so plain retry. */
    {"InternalError", SNS_RETRY},
    {"InternalFailure", SNS_RETRY},
    {"InternalServerError", SNS_RETRY},
    {"ServiceUnavailable", SNS_RETRY},
    {"ServiceUnavailableException", SNS_RETRY},
    {"KMSThrottling", SNS_RETRY},
    {"RequestTimeout", SNS_RETRY},
    {"RequestTimeoutException", SNS_RETRY},
    {"MalformedResponse", SNS_RETRY},
    {"ResponseTooLarge", SNS_RETRY},
    /* The message itself is invalid: dead-letter. The batch-shape codes
     * belong here too: republished one by one, the entries either go
     * through or show which one is bad (see sns_parse_response in sns.h). */
    {"InvalidParameter", SNS_PERMANENT},
    {"InvalidParameterValue", SNS_PERMANENT},
    {"ParameterValueInvalid", SNS_PERMANENT},
    {"InvalidParameterException", SNS_PERMANENT},
    {"InvalidParameterValueException", SNS_PERMANENT},
    {"ValidationException", SNS_PERMANENT},
    {"ValidationError", SNS_PERMANENT},
    {"BatchRequestTooLong", SNS_PERMANENT},
    {"BatchEntryIdsNotDistinct", SNS_PERMANENT},
    {"TooManyEntriesInBatchRequest", SNS_PERMANENT},
    {"InvalidBatchEntryId", SNS_PERMANENT},
    {"EmptyBatchRequest", SNS_PERMANENT},
    /* Configuration: credentials, permissions, clock, topic, KMS key.
     * Every event would fail the same way: pause, keep them queued. */
    {"AuthorizationError", SNS_CONFIG},
    {"InvalidClientTokenId", SNS_CONFIG},
    {"SignatureDoesNotMatch", SNS_CONFIG},
    {"IncompleteSignature", SNS_CONFIG},
    {"MissingAuthenticationToken", SNS_CONFIG},
    {"ExpiredToken", SNS_CONFIG},
    {"ExpiredTokenException", SNS_CONFIG},
    {"InvalidToken", SNS_CONFIG},
    {"UnrecognizedClientException", SNS_CONFIG},
    {"InvalidAccessKeyId", SNS_CONFIG},
    {"InvalidSecurity", SNS_CONFIG},
    {"AccessDenied", SNS_CONFIG},
    {"AccessDeniedException", SNS_CONFIG},
    {"NotAuthorized", SNS_CONFIG},
    {"OptInRequired", SNS_CONFIG},
    {"RequestExpired", SNS_CONFIG},
    {"RequestTimeTooSkewed", SNS_CONFIG},
    {"NotFound", SNS_CONFIG},
    {"NotFoundException", SNS_CONFIG},
    {"KMSAccessDenied", SNS_CONFIG},
    {"KMSDisabled", SNS_CONFIG},
    {"KMSNotFound", SNS_CONFIG},
    {"KMSInvalidState", SNS_CONFIG},
    {"KMSOptInRequired", SNS_CONFIG},
    /* Our own transport code for a request cut short by sns_client_close. */
    {"Cancelled", SNS_UNREACHABLE},
};

static int has_suffix(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && memcmp(s + a - b, suf, b) == 0;
}

/* curl failures that no retry can fix: the URL or TLS trust is wrong. */
static int transport_config_error(const char *code) {
  static const char *const cfg[] = {
      "CURLE_URL_MALFORMAT",
      "CURLE_UNSUPPORTED_PROTOCOL",
      "CURLE_PEER_FAILED_VERIFICATION",
      "CURLE_SSL_CACERT_BADFILE",
      "CURLE_SSL_CERTPROBLEM",
      "CURLE_SSL_CIPHER",
      "CURLE_SSL_ISSUER_ERROR",
      "CURLE_SSL_PINNEDPUBKEYNOTMATCH",
      "CURLE_SSL_INVALIDCERTSTATUS",
      "CURLE_SSL_CRL_BADFILE",
      "CURLE_SSL_ENGINE_NOTFOUND",
      "CURLE_SSL_ENGINE_SETFAILED",
  };
  for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++)
    if (strcmp(code, cfg[i]) == 0) return 1;
  return 0;
}

sns_outcome sns_classify(const char *code, long http_status, int sender_fault) {
  if (code && *code) {
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
      if (strcmp(code, rules[i].code) == 0) return rules[i].outcome;
    if (strncmp(code, "CURLE_", 6) == 0)
      return transport_config_error(code) ? SNS_CONFIG : SNS_UNREACHABLE;
    /* "ValidationException(-ish)": service-prefixed variants. */
    if (has_suffix(code, "ValidationException") || has_suffix(code, "ValidationError"))
      return SNS_PERMANENT;
    /* SPEC: KMS access errors pause; any new KMS code is about the key. */
    if (strncmp(code, "KMS", 3) == 0) return SNS_CONFIG;
  }
  if (sender_fault == 1) return SNS_PERMANENT;
  if (sender_fault == 0) return SNS_RETRY;
  if (http_status >= 200 && http_status < 300) return (code && *code) ? SNS_RETRY : SNS_OK;
  if (http_status == 429) return SNS_THROTTLED;
  if (http_status == 408 || http_status >= 500) return SNS_RETRY;
  if (http_status == 413) return SNS_PERMANENT;
  if (http_status >= 300 && http_status < 500) return SNS_CONFIG;
  if (http_status == 0) return (code && *code) ? SNS_RETRY : SNS_UNREACHABLE;
  return SNS_RETRY; /* 1xx or nonsense status */
}

/* Classification with the message text: "InvalidParameter: TopicArn" means
 * the configured topic is wrong, which no message can fix. */
static sns_outcome classify_full(const char *code, const char *msg, long status, int sf) {
  sns_outcome o = sns_classify(code, status, sf);
  if (o == SNS_PERMANENT && strcmp(code, "InvalidParameter") == 0 && msg && strstr(msg, "TopicArn"))
    return SNS_CONFIG;
  return o;
}

/* ---- XML reading ------------------------------------------------------ */

#define X_MAXDEPTH 16
#define X_NAMELEN 48
#define X_TEXTLEN 1024

typedef struct {
  char id[32];
  char message_id[128];
  char code[64];
  char message[512];
  int sender_fault;
} x_member;

typedef struct {
  XML_Parser p;
  int depth;
  char stack[X_MAXDEPTH][X_NAMELEN];
  char text[X_TEXTLEN];
  size_t text_len;
  int bad; /* refused construct (DOCTYPE) */

  char root[X_NAMELEN];
  int saw_publish_result, saw_batch_result;
  char message_id[128];
  char err_code[64], err_message[512], err_type[16];
  int saw_error;

  x_member cur;
  /* batch bookkeeping, filled as members close */
  size_t n;
  sns_result *results;
  int seen[SNS_MAX_BATCH]; /* 0 not listed, 1 Successful, 2 Failed */
  long status;
  int entries_bad; /* a member with an id we could not place */
} x_state;

static const char *local_name(const char *name) {
  const char *sp = strrchr(name, ' '); /* namespace separator */
  if (sp) return sp + 1;
  const char *colon = strrchr(name, ':'); /* prefix without namespace mode */
  return colon ? colon + 1 : name;
}

static const char *parent(const x_state *x, int up) {
  int i = x->depth - 1 - up;
  return i >= 0 && i < X_MAXDEPTH ? x->stack[i] : "";
}

/* Truncating copy; AWS strings longer than our fields are cut, not refused. */
static void copy_str(char *dst, size_t cap, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= cap) n = cap - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Text without surrounding whitespace, NUL-terminated in place. */
static const char *trimmed(x_state *x) {
  char *s = x->text;
  size_t len = x->text_len;
  while (len &&
         (s[len - 1] == ' ' || s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == '\t'))
    len--;
  s[len] = '\0';
  while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
  return s;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs) {
  (void)attrs;
  x_state *x = ud;
  const char *ln = local_name(name);
  if (x->depth == 0) copy_str(x->root, sizeof x->root, ln);
  if (x->depth < X_MAXDEPTH) copy_str(x->stack[x->depth], X_NAMELEN, ln);
  x->depth++;
  x->text_len = 0;
  if (strcmp(ln, "member") == 0) {
    memset(&x->cur, 0, sizeof x->cur);
    x->cur.sender_fault = -1;
  } else if (strcmp(ln, "PublishResult") == 0) {
    x->saw_publish_result = 1;
  } else if (strcmp(ln, "PublishBatchResult") == 0) {
    x->saw_batch_result = 1;
  } else if (strcmp(ln, "Error") == 0) {
    x->saw_error = 1;
  }
}

static void set_result(sns_result *r, sns_outcome o, long status, const char *code, const char *msg,
                       const char *mid) {
  r->outcome = o;
  r->http_status = status;
  copy_str(r->code, sizeof r->code, code);
  copy_str(r->message, sizeof r->message, msg);
  copy_str(r->message_id, sizeof r->message_id, mid);
}

/* A PublishBatch member closed: place it by its Id, exactly one of the
 * "0".."n-1" the request sent ("01" is not "1": it acknowledges nothing). */
static void finish_member(x_state *x, int failed) {
  const char *id = x->cur.id;
  char *end;
  if (!x->results || !*id || strspn(id, "0123456789") != strlen(id) || strlen(id) > 3 ||
      (id[0] == '0' && id[1])) {
    x->entries_bad = 1;
    return;
  }
  unsigned long i = strtoul(id, &end, 10);
  if (i >= x->n) {
    x->entries_bad = 1;
    return;
  }
  if (x->seen[i]) {
    /* Listed again: the same verdict twice is harmless, but Successful
     * and Failed for one entry leave its fate unknown, so it is retried
     * (a duplicate at worst, never an ack or a DLQ entry on a guess). */
    x->entries_bad = 1;
    if ((x->seen[i] == 2) != failed)
      set_result(&x->results[i], SNS_RETRY, x->status, "MalformedResponse",
                 "entry both Successful and Failed in the PublishBatch answer", "");
    return;
  }
  x->seen[i] = failed ? 2 : 1;
  if (!failed) {
    set_result(&x->results[i], SNS_OK, x->status, "", "", x->cur.message_id);
  } else {
    const char *code = x->cur.code[0] ? x->cur.code : "UnknownError";
    set_result(&x->results[i], classify_full(code, x->cur.message, 0, x->cur.sender_fault),
               x->status, code, x->cur.message, "");
  }
}

static void XMLCALL on_end(void *ud, const XML_Char *name) {
  x_state *x = ud;
  const char *ln = local_name(name);
  const char *up = parent(x, 1);
  const char *t = trimmed(x);

  if (strcmp(up, "member") == 0) {
    if (strcmp(ln, "Id") == 0)
      copy_str(x->cur.id, sizeof x->cur.id, t);
    else if (strcmp(ln, "MessageId") == 0)
      copy_str(x->cur.message_id, sizeof x->cur.message_id, t);
    else if (strcmp(ln, "Code") == 0)
      copy_str(x->cur.code, sizeof x->cur.code, t);
    else if (strcmp(ln, "Message") == 0)
      copy_str(x->cur.message, sizeof x->cur.message, t);
    else if (strcmp(ln, "SenderFault") == 0)
      x->cur.sender_fault = strcmp(t, "true") == 0 ? 1 : strcmp(t, "false") == 0 ? 0 : -1;
  } else if (strcmp(ln, "member") == 0 &&
             (strcmp(up, "Successful") == 0 || strcmp(up, "Failed") == 0)) {
    if (strcmp(parent(x, 2), "PublishBatchResult") == 0)
      finish_member(x, strcmp(up, "Failed") == 0);
  } else if (strcmp(up, "PublishResult") == 0 && strcmp(ln, "MessageId") == 0) {
    copy_str(x->message_id, sizeof x->message_id, t);
  } else if (strcmp(up, "Error") == 0) {
    if (strcmp(ln, "Code") == 0)
      copy_str(x->err_code, sizeof x->err_code, t);
    else if (strcmp(ln, "Message") == 0)
      copy_str(x->err_message, sizeof x->err_message, t);
    else if (strcmp(ln, "Type") == 0)
      copy_str(x->err_type, sizeof x->err_type, t);
  }
  x->depth--;
  x->text_len = 0;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len) {
  x_state *x = ud;
  size_t room = sizeof x->text - 1 - x->text_len;
  size_t n = (size_t)len < room ? (size_t)len : room;
  memcpy(x->text + x->text_len, s, n);
  x->text_len += n;
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal) {
  (void)name, (void)sysid, (void)pubid, (void)has_internal;
  x_state *x = ud;
  x->bad = 1;
  XML_StopParser(x->p, XML_FALSE);
}

/* Returns 0 when the body is well-formed XML without DOCTYPE. */
static int parse_xml(x_state *x, const char *body, size_t len) {
  if (len > (size_t)1 << 30) return -1;
  x->p = XML_ParserCreateNS(NULL, ' ');
  if (!x->p) return -1;
  XML_SetUserData(x->p, x);
  XML_SetElementHandler(x->p, on_start, on_end);
  XML_SetCharacterDataHandler(x->p, on_text);
  XML_SetStartDoctypeDeclHandler(x->p, on_doctype);
  enum XML_Status st = XML_Parse(x->p, body ? body : "", (int)len, XML_TRUE);
  XML_ParserFree(x->p);
  x->p = NULL;
  return st == XML_STATUS_OK && !x->bad ? 0 : -1;
}

int sns_parse_response(long http_status, const char *body, size_t len, size_t n, int was_batch,
                       sns_result *results, sns_result *overall) {
  if (n < 1 || n > SNS_MAX_BATCH || !results || !overall) return -EINVAL;
  if (!was_batch && n != 1) return -EINVAL;

  if (http_status <= 0) {
    set_result(overall, SNS_UNREACHABLE, 0, "NoResponse", "no HTTP answer", "");
    for (size_t i = 0; i < n; i++) results[i] = *overall;
    return 0;
  }

  x_state *x = calloc(1, sizeof *x);
  if (!x) return -ENOMEM;
  x->n = n;
  x->status = http_status;
  int is_2xx = http_status >= 200 && http_status < 300;
  if (is_2xx && was_batch) {
    x->results = results;
    for (size_t i = 0; i < n; i++)
      set_result(&results[i], SNS_RETRY, http_status, "MalformedResponse",
                 "entry missing from the PublishBatch answer", "");
  }
  int xml_ok = parse_xml(x, body, len) == 0;
  int rc = 0;

  if (is_2xx) {
    int ok =
        xml_ok && (was_batch ? strcmp(x->root, "PublishBatchResponse") == 0 && x->saw_batch_result
                             : strcmp(x->root, "PublishResponse") == 0 && x->saw_publish_result &&
                                   x->message_id[0]);
    if (!ok) {
      set_result(overall, SNS_RETRY, http_status, "MalformedResponse",
                 "unexpected answer to a 2xx Publish/PublishBatch", "");
      for (size_t i = 0; i < n; i++) results[i] = *overall;
      rc = -EPROTO;
    } else {
      set_result(overall, SNS_OK, http_status, "", "", was_batch ? "" : x->message_id);
      if (!was_batch) results[0] = *overall;
      if (was_batch && x->entries_bad) rc = -EPROTO;
      if (was_batch)
        for (size_t i = 0; i < n; i++)
          if (!x->seen[i]) rc = -EPROTO;
    }
  } else {
    char code[64], msg[512];
    if (xml_ok && x->err_code[0]) {
      copy_str(code, sizeof code, x->err_code);
      copy_str(msg, sizeof msg, x->err_message);
    } else {
      snprintf(code, sizeof code, "HTTP%ld", http_status);
      snprintf(msg, sizeof msg, "HTTP status %ld without an AWS error document", http_status);
    }
    set_result(overall, classify_full(code, msg, http_status, -1), http_status, code, msg, "");
    for (size_t i = 0; i < n; i++) results[i] = *overall;
  }
  free(x);
  return rc;
}
