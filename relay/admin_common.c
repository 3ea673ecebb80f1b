/* The admin module's parts that need no server: the start-up check of the
 * admin address, and the JSON forms of queue records and stats, shared with
 * relayctl's offline mode (--data-dir) so both print the same fields. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "utf8.h"

#define DLQ_COUNT_PAGE 256

/* ---- Configuration ------------------------------------------------------ */

int admin_addr_is_loopback(const char *addr) {
  struct sockaddr_storage ss;
  return cfg_parse_listen(addr, &ss) == 0 && cfg_listen_is_loopback(&ss);
}

int admin_check_config(const relay_config *cfg, char *err, size_t errlen) {
  const char *addr = cfg->admin_listen ? cfg->admin_listen : "127.0.0.1:8081";
  if ((!cfg->admin_token || !*cfg->admin_token) && !admin_addr_is_loopback(addr)) {
    snprintf(err, errlen,
             "RELAY_ADMIN_TOKEN: required when RELAY_ADMIN_LISTEN (%s) is not a loopback address",
             addr);
    return -EINVAL;
  }
  return 0;
}

/* ---- JSON helpers --------------------------------------------------------- */

/* Length of the character at s[i] (ASCII, or strict UTF-8), or 0 when the
 * bytes are not one. */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t i) {
  uint32_t cp;
  return s[i] < 0x80 ? 1 : utf8_decode(s + i, n - i, &cp);
}

static int valid_utf8(const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t len = s[i] ? utf8_seq(s, n, i) : 0; /* a NUL would be cut by C strings */
    if (!len) return 0;
    i += len;
  }
  return 1;
}

/* JSON text must be UTF-8 (RFC 8259), and json-c copies a string's bytes
 * as they are. Strings that reach the API from outside may not be: an
 * X-Webhook-Id header is stored as sent, an SNS error message is cut at a
 * fixed size. Each invalid byte becomes U+FFFD, so one bad field cannot
 * make a whole listing unparseable. */
static json_object *json_utf8_string(const char *v) {
  const uint8_t *s = (const uint8_t *)v;
  size_t n = strlen(v);
  if (valid_utf8(s, n)) return json_object_new_string(v);
  uint8_t *out = malloc(3 * n + 1); /* 1 byte -> at most 3 */
  if (!out) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    size_t len = utf8_seq(s, n, i);
    if (len) {
      memcpy(out + o, s + i, len);
      o += len;
      i += len;
    } else {
      memcpy(out + o, "\xef\xbf\xbd", 3);
      o += 3;
      i++;
    }
  }
  json_object *r = json_object_new_string_len((const char *)out, (int)o);
  free(out);
  return r;
}

void admin_json_str(json_object *o, const char *k, const char *v) {
  json_object_object_add(o, k, v && *v ? json_utf8_string(v) : NULL);
}

void admin_json_u64(json_object *o, const char *k, uint64_t v) {
  json_object_object_add(o, k, json_object_new_int64((int64_t)v));
}

void admin_json_time(json_object *o, const char *k, int64_t ms) {
  if (ms <= 0) {
    json_object_object_add(o, k, NULL);
    return;
  }
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  char buf[40];
  gmtime_r(&t, &tm);
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%03dZ", (int)(ms % 1000));
  json_object_object_add(o, k, json_object_new_string(buf));
}

json_object *admin_record_json(const rq_record *r, int with_body) {
  json_object *o = json_object_new_object();
  if (!o) return NULL;
  admin_json_u64(o, "id", r->seq);
  json_object_object_add(o, "received_ms", json_object_new_int64(r->received_ms));
  admin_json_time(o, "received_at", r->received_ms);
  admin_json_str(o, "type", r->type);
  admin_json_str(o, "cid", r->cid);
  admin_json_str(o, "channel_type", r->channel_type);
  admin_json_str(o, "channel_id", r->channel_id);
  admin_json_str(o, "user_id", r->user_id);
  admin_json_str(o, "webhook_id", r->webhook_id);
  admin_json_str(o, "reason", r->dlq_reason);
  admin_json_str(o, "code", r->dlq_code);
  admin_json_str(o, "message", r->dlq_message);
  json_object_object_add(o, "dead_at_ms", json_object_new_int64(r->dlq_time_ms));
  admin_json_time(o, "dead_at", r->dlq_time_ms);
  if (r->replayed_ms) { /* replayed from the DLQ before: its retry budget restarted then */
    json_object_object_add(o, "replayed_at_ms", json_object_new_int64(r->replayed_ms));
    admin_json_time(o, "replayed_at", r->replayed_ms);
  }
  admin_json_u64(o, "attempts", r->attempts);
  admin_json_str(o, "last_error", r->last_error);
  admin_json_u64(o, "size", r->body_len);
  if (with_body) {
    if (valid_utf8(r->body, r->body_len)) {
      json_object_object_add(o, "body",
                             json_object_new_string_len((const char *)r->body, (int)r->body_len));
    } else {
      size_t cap = 4 * ((r->body_len + 2) / 3) + 1;
      unsigned char *b64 = malloc(cap);
      if (b64) {
        int n = EVP_EncodeBlock(b64, r->body, (int)r->body_len);
        json_object_object_add(o, "body_base64", json_object_new_string_len((const char *)b64, n));
        free(b64);
      }
    }
  }
  return o;
}

int admin_dlq_by_reason(rq_env *env, json_object *obj) {
  rq_dlq_filter f = {NULL, NULL, 0, DLQ_COUNT_PAGE};
  for (;;) {
    rq_record *recs = NULL;
    int n = rq_dlq_list_meta(env, &f, &recs); /* counting needs no bodies */
    if (n < 0) return n;
    for (int i = 0; i < n; i++) {
      const char *reason =
          recs[i].dlq_reason && *recs[i].dlq_reason ? recs[i].dlq_reason : "unknown";
      json_object *cur = NULL;
      int64_t v = json_object_object_get_ex(obj, reason, &cur) ? json_object_get_int64(cur) : 0;
      json_object_object_add(obj, reason, json_object_new_int64(v + 1));
      f.after_seq = recs[i].seq;
    }
    rq_records_free(recs, (size_t)n);
    if ((size_t)n < DLQ_COUNT_PAGE) return 0;
  }
}

int admin_queue_json(int64_t now, const rq_stats *st, json_object *by_reason, json_object *obj) {
  admin_json_u64(obj, "ready", st->ready);
  admin_json_u64(obj, "ready_bytes", st->ready_bytes);
  admin_json_u64(obj, "inflight", st->inflight);
  admin_json_u64(obj, "dlq", st->dlq);
  admin_json_u64(obj, "dlq_bytes", st->dlq_bytes);
  json_object_object_add(obj, "dlq_by_reason", by_reason ? by_reason : json_object_new_object());
  double age = st->oldest_ready_ms > 0 && now > st->oldest_ready_ms
                   ? (double)(now - st->oldest_ready_ms) / 1000.0
                   : 0.0;
  admin_json_double(obj, "oldest_ready_age_s", age);
  admin_json_time(obj, "oldest_ready_at", st->oldest_ready_ms);
  admin_json_u64(obj, "received_total", st->appended_total);
  admin_json_u64(obj, "published_total", st->acked_total);
  admin_json_u64(obj, "dead_lettered_total", st->dead_lettered_total);
  admin_json_u64(obj, "duplicates_total", st->duplicates_total);
  admin_json_u64(obj, "map_used", st->map_used);
  admin_json_u64(obj, "map_size", st->map_size);
  return 0;
}

void admin_json_double(json_object *o, const char *key, double v) {
  /* Three decimals: json-c would otherwise print 17 significant digits. */
  char buf[64];
  snprintf(buf, sizeof buf, "%.3f", v);
  json_object_object_add(o, key, json_object_new_double_s(v, buf));
}

int admin_parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s || *s == '-' || *s == '+') return -EINVAL;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end) return -EINVAL;
  *out = v;
  return 0;
}
