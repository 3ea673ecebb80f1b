/* SNS request bodies and SNS's own size accounting (pure, no I/O).
 *
 * The body is application/x-www-form-urlencoded the way AWS's query API
 * reads it: every byte except the RFC 3986 unreserved set is %XX encoded
 * (uppercase), and a space is %20, never '+'. Using the same strict set as
 * SigV4 means the bytes we sign are the bytes AWS decodes, with no room for
 * a '+' being read as a space or a '~' being re-encoded differently.
 *
 * Parameter order is fixed (Action, Version, TopicArn, then per entry:
 * Id, Message, attributes, FIFO ids) so bodies are reproducible for the
 * golden tests; AWS itself does not care about order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sns.h"

const char *sns_outcome_name(sns_outcome o) {
  switch (o) {
    case SNS_OK:
      return "ok";
    case SNS_RETRY:
      return "retry";
    case SNS_THROTTLED:
      return "throttled";
    case SNS_PERMANENT:
      return "permanent";
    case SNS_CONFIG:
      return "config";
    case SNS_UNREACHABLE:
      return "unreachable";
  }
  return "unknown";
}

/* The six attributes SPEC "Publishing" names, in the order they are sent. */
#define SNS_NATTRS 6
static void entry_attrs(const sns_entry *e, const char *names[SNS_NATTRS],
                        const char *values[SNS_NATTRS]) {
  names[0] = "type";
  values[0] = e->type;
  names[1] = "cid";
  values[1] = e->cid;
  names[2] = "channel_type";
  values[2] = e->channel_type;
  names[3] = "channel_id";
  values[3] = e->channel_id;
  names[4] = "user_id";
  values[4] = e->user_id;
  names[5] = "webhook_id";
  values[5] = e->webhook_id;
}

static int present(const char *s) {
  return s && *s;
}

size_t sns_entry_size(const sns_entry *e) {
  const char *names[SNS_NATTRS], *values[SNS_NATTRS];
  size_t size = e->message_len;
  entry_attrs(e, names, values);
  for (int i = 0; i < SNS_NATTRS; i++)
    if (present(values[i])) size += strlen(names[i]) + strlen("String") + strlen(values[i]);
  return size;
}

size_t sns_request_size(const sns_entry *entries, size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += sns_entry_size(&entries[i]);
  return total;
}

size_t sns_batch_fit(const sns_entry *entries, size_t n, size_t max_entries) {
  if (max_entries == 0 || max_entries > SNS_MAX_BATCH) max_entries = SNS_MAX_BATCH;
  size_t total = 0, k = 0;
  while (k < n && k < max_entries) {
    size_t s = sns_entry_size(&entries[k]);
    if (s > SNS_MAX_REQUEST_BYTES - total) break;
    total += s;
    k++;
  }
  return k;
}

/* ---- growable buffer -------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, cap;
  int failed;
} sbuf;

static int sb_reserve(sbuf *b, size_t more) {
  if (b->failed) return -1;
  if (more <= b->cap - b->len) return 0;
  size_t cap = b->cap ? b->cap : 1024;
  while (cap - b->len < more) {
    if (cap > ((size_t)-1) / 2) {
      b->failed = 1;
      return -1;
    }
    cap *= 2;
  }
  char *np = realloc(b->p, cap);
  if (!np) {
    b->failed = 1;
    return -1;
  }
  b->p = np;
  b->cap = cap;
  return 0;
}

static void sb_raw(sbuf *b, const char *s, size_t len) {
  if (sb_reserve(b, len + 1) < 0) return;
  memcpy(b->p + b->len, s, len);
  b->len += len;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) {
  sb_raw(b, s, strlen(s));
}

/* 1 for the RFC 3986 unreserved bytes. A table, because encoding the
 * message bodies is the client's hottest loop. */
static const unsigned char unreserved[256] = {
    ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1,
    ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,
    ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

static void sb_enc(sbuf *b, const uint8_t *s, size_t len) {
  static const char hex[] = "0123456789ABCDEF";
  if (len > ((size_t)-1) / 4 || sb_reserve(b, 3 * len + 1) < 0) {
    b->failed = 1;
    return;
  }
  char *o = b->p + b->len;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = s[i];
    if (unreserved[c]) {
      *o++ = (char)c;
    } else {
      o[0] = '%';
      o[1] = hex[c >> 4];
      o[2] = hex[c & 15];
      o += 3;
    }
  }
  b->len = (size_t)(o - b->p);
  b->p[b->len] = '\0';
}

/* "&" prefix + name (names are plain ASCII built here, so not encoded) +
 * "=" + encoded value. */
static void sb_param(sbuf *b, const char *prefix, const char *name, const uint8_t *v, size_t vlen) {
  sb_raw(b, "&", 1);
  sb_str(b, prefix);
  sb_str(b, name);
  sb_raw(b, "=", 1);
  sb_enc(b, v, vlen);
}

static void sb_param_str(sbuf *b, const char *prefix, const char *name, const char *v) {
  sb_param(b, prefix, name, (const uint8_t *)v, strlen(v));
}

/* One entry's parameters under `prefix` ("" for Publish,
 * "PublishBatchRequestEntries.member.N." for a batch). */
static void add_entry(sbuf *b, const char *prefix, const sns_entry *e) {
  const char *names[SNS_NATTRS], *values[SNS_NATTRS];
  char ap[96];
  int k = 0;

  sb_param(b, prefix, "Message", e->message ? e->message : (const uint8_t *)"",
           e->message ? e->message_len : 0);
  entry_attrs(e, names, values);
  for (int i = 0; i < SNS_NATTRS; i++) {
    if (!present(values[i])) continue;
    k++;
    snprintf(ap, sizeof ap, "%sMessageAttributes.entry.%d.", prefix, k);
    sb_param_str(b, ap, "Name", names[i]);
    sb_param_str(b, ap, "Value.DataType", "String");
    sb_param_str(b, ap, "Value.StringValue", values[i]);
  }
  if (present(e->group_id)) sb_param_str(b, prefix, "MessageGroupId", e->group_id);
  if (present(e->dedup_id)) sb_param_str(b, prefix, "MessageDeduplicationId", e->dedup_id);
}

char *sns_build_body(const char *topic_arn, const sns_entry *entries, size_t n, int force_batch,
                     size_t *len_out) {
  if (!topic_arn || !entries || n < 1 || n > SNS_MAX_BATCH) {
    errno = EINVAL;
    return NULL;
  }
  int batch = n > 1 || force_batch;
  sbuf b = {0};
  sb_str(&b, batch ? "Action=PublishBatch" : "Action=Publish");
  sb_str(&b, "&Version=2010-03-31");
  sb_param_str(&b, "", "TopicArn", topic_arn);
  if (!batch) {
    add_entry(&b, "", &entries[0]);
  } else {
    for (size_t i = 0; i < n; i++) {
      char prefix[64], id[24];
      snprintf(prefix, sizeof prefix, "PublishBatchRequestEntries.member.%zu.", i + 1);
      snprintf(id, sizeof id, "%zu", i);
      sb_param_str(&b, prefix, "Id", id);
      add_entry(&b, prefix, &entries[i]);
    }
  }
  if (b.failed) {
    free(b.p);
    errno = ENOMEM;
    return NULL;
  }
  if (len_out) *len_out = b.len;
  return b.p;
}
