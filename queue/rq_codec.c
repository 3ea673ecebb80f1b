/* Record encoding (msgpack-c's packer) and a bounds-checked reader.
 *
 * Records are written with msgpack-c. They are read with the small reader
 * below rather than msgpack_unpack(): msgpack-c's unpacker allocates an
 * object tree per record and trusts length headers (a corrupt array header
 * can ask for gigabytes), while the reader here checks every length against
 * the bytes at hand, allocates nothing, and returns views into LMDB's map.
 * The format it accepts is the one documented in queue/FORMAT.md. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rq_internal.h"

#define RQ_RD_MAX_DEPTH 32

/* Which fields carry strings/bytes; the rest are integers. */
static bool field_is_bytes(int f) {
  switch (f) {
    case RQ_F_BODY:
    case RQ_F_WEBHOOK_ID:
    case RQ_F_WEBHOOK_ATTEMPT:
    case RQ_F_API_KEY:
    case RQ_F_TYPE:
    case RQ_F_CID:
    case RQ_F_CHANNEL_TYPE:
    case RQ_F_CHANNEL_ID:
    case RQ_F_USER_ID:
    case RQ_F_LAST_ERROR:
    case RQ_F_DLQ_REASON:
    case RQ_F_DLQ_CODE:
    case RQ_F_DLQ_MESSAGE:
      return true;
    default:
      return false;
  }
}

static bool field_is_state(int f) {
  return f == RQ_F_ATTEMPTS || f == RQ_F_NEXT_ATTEMPT || f == RQ_F_FIRST_ATTEMPT ||
         f == RQ_F_LAST_ATTEMPT || f == RQ_F_LAST_ERROR;
}

void rq_view_set_num(rq_view *v, int f, int64_t x) {
  v->num[f] = x;
  v->present |= 1u << f;
}

void rq_view_set_str(rq_view *v, int f, const void *p, size_t n) {
  if (!p || (n == 0 && f != RQ_F_BODY)) {
    rq_view_clear(v, f);
    return;
  }
  v->ptr[f] = p;
  v->len[f] = n;
  v->present |= 1u << f;
}

void rq_view_clear(rq_view *v, int f) {
  v->present &= ~(1u << f);
  v->ptr[f] = NULL;
  v->len[f] = 0;
  v->num[f] = 0;
}

static void set_cstr(rq_view *v, int f, const char *s) {
  if (s && *s)
    rq_view_set_str(v, f, s, strlen(s));
  else
    rq_view_clear(v, f);
}

static void set_num_nz(rq_view *v, int f, int64_t x) {
  if (x)
    rq_view_set_num(v, f, x);
  else
    rq_view_clear(v, f);
}

void rq_view_from_record(rq_view *v, const rq_record *r) {
  memset(v, 0, sizeof *v);
  rq_view_set_num(v, RQ_F_V, RQ_RECORD_VERSION);
  rq_view_set_num(v, RQ_F_SEQ, (int64_t)r->seq);
  rq_view_set_num(v, RQ_F_RECEIVED, r->received_ms);
  static const uint8_t empty[1];
  rq_view_set_str(v, RQ_F_BODY, r->body ? r->body : empty, r->body ? r->body_len : 0);
  set_cstr(v, RQ_F_WEBHOOK_ID, r->webhook_id);
  set_cstr(v, RQ_F_WEBHOOK_ATTEMPT, r->webhook_attempt);
  set_cstr(v, RQ_F_API_KEY, r->api_key);
  set_cstr(v, RQ_F_TYPE, r->type);
  set_cstr(v, RQ_F_CID, r->cid);
  set_cstr(v, RQ_F_CHANNEL_TYPE, r->channel_type);
  set_cstr(v, RQ_F_CHANNEL_ID, r->channel_id);
  set_cstr(v, RQ_F_USER_ID, r->user_id);
  set_num_nz(v, RQ_F_ATTEMPTS, r->attempts);
  set_num_nz(v, RQ_F_NEXT_ATTEMPT, r->next_attempt_ms);
  set_num_nz(v, RQ_F_FIRST_ATTEMPT, r->first_attempt_ms);
  set_num_nz(v, RQ_F_LAST_ATTEMPT, r->last_attempt_ms);
  set_cstr(v, RQ_F_LAST_ERROR, r->last_error);
  set_cstr(v, RQ_F_DLQ_REASON, r->dlq_reason);
  set_cstr(v, RQ_F_DLQ_CODE, r->dlq_code);
  set_cstr(v, RQ_F_DLQ_MESSAGE, r->dlq_message);
  set_num_nz(v, RQ_F_DLQ_TIME, r->dlq_time_ms);
  set_num_nz(v, RQ_F_REPLAYED, r->replayed_ms);
}

void rq_view_overlay_state(rq_view *v, const rq_view *st) {
  for (int f = 0; f < RQ_F_COUNT; f++) {
    if (!field_is_state(f)) continue;
    if (rq_view_has(st, f)) {
      v->num[f] = st->num[f];
      v->ptr[f] = st->ptr[f];
      v->len[f] = st->len[f];
      v->present |= 1u << f;
    } else {
      rq_view_clear(v, f);
    }
  }
}

/* ---- reader ------------------------------------------------------------ */

static int need(rq_rd *r, size_t n) {
  return (size_t)(r->end - r->p) >= n ? 0 : RQ_CORRUPT;
}

static uint64_t be(const uint8_t *p, int n) {
  uint64_t x = 0;
  for (int i = 0; i < n; i++) x = (x << 8) | p[i];
  return x;
}

/* Reads a header and returns its kind: 'i' int (value in *u or *s), 's'
 * str, 'b' bin (length in *u, payload follows), 'a' array, 'm' map (count
 * in *u), 'n' nil, 't' bool/float/ext (skipped as opaque with *u bytes). */
static int rd_head(rq_rd *r, char *kind, uint64_t *u, int64_t *s) {
  if (need(r, 1)) return RQ_CORRUPT;
  uint8_t b = *r->p++;
  static const uint8_t szs[4] = {1, 2, 4, 8};
  if (b <= 0x7f) {
    *kind = 'i';
    *u = b;
    *s = b;
    return 0;
  }
  if (b >= 0xe0) {
    *kind = 'i';
    *s = (int8_t)b;
    *u = (uint64_t)*s;
    return 0;
  }
  if ((b & 0xf0) == 0x80) {
    *kind = 'm';
    *u = b & 0x0f;
    return 0;
  }
  if ((b & 0xf0) == 0x90) {
    *kind = 'a';
    *u = b & 0x0f;
    return 0;
  }
  if ((b & 0xe0) == 0xa0) {
    *kind = 's';
    *u = b & 0x1f;
    return 0;
  }
  int n;
  switch (b) {
    case 0xc0:
      *kind = 'n';
      return 0;
    case 0xc2:
    case 0xc3:
      *kind = 't';
      *u = 0;
      return 0;
    case 0xc4:
    case 0xc5:
    case 0xc6: /* bin 8/16/32 */
      n = szs[b - 0xc4];
      if (need(r, (size_t)n)) return RQ_CORRUPT;
      *u = be(r->p, n);
      r->p += n;
      *kind = 'b';
      return 0;
    case 0xc7:
    case 0xc8:
    case 0xc9: /* ext 8/16/32: length, type byte */
      n = szs[b - 0xc7];
      if (need(r, (size_t)n + 1)) return RQ_CORRUPT;
      *u = be(r->p, n) + 1;
      r->p += n;
      *kind = 't';
      return 0;
    case 0xca:
      *kind = 't';
      *u = 4;
      return 0;
    case 0xcb:
      *kind = 't';
      *u = 8;
      return 0;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
      n = szs[b - 0xcc];
      if (need(r, (size_t)n)) return RQ_CORRUPT;
      *u = be(r->p, n);
      r->p += n;
      if (*u > (uint64_t)INT64_MAX) {
        *s = -1;
        *kind = 'U';
        return 0;
      }
      *s = (int64_t)*u;
      *kind = 'i';
      return 0;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
      n = szs[b - 0xd0];
      if (need(r, (size_t)n)) return RQ_CORRUPT;
      uint64_t x = be(r->p, n);
      r->p += n;
      int bits = n * 8;
      if (bits < 64 && (x >> (bits - 1)) & 1) x |= ~0ull << bits; /* sign-extend */
      memcpy(s, &x, sizeof x);
      *u = x;
      *kind = 'i';
      return 0;
    }
    case 0xd4:
      *kind = 't';
      *u = 2;
      return 0; /* fixext 1 */
    case 0xd5:
      *kind = 't';
      *u = 3;
      return 0;
    case 0xd6:
      *kind = 't';
      *u = 5;
      return 0;
    case 0xd7:
      *kind = 't';
      *u = 9;
      return 0;
    case 0xd8:
      *kind = 't';
      *u = 17;
      return 0;
    case 0xd9:
    case 0xda:
    case 0xdb:
      n = szs[b - 0xd9];
      if (need(r, (size_t)n)) return RQ_CORRUPT;
      *u = be(r->p, n);
      r->p += n;
      *kind = 's';
      return 0;
    case 0xdc:
    case 0xdd:
      n = szs[b - 0xdc + 1];
      if (need(r, (size_t)n)) return RQ_CORRUPT;
      *u = be(r->p, n);
      r->p += n;
      *kind = 'a';
      return 0;
    case 0xde:
    case 0xdf:
      n = szs[b - 0xde + 1];
      if (need(r, (size_t)n)) return RQ_CORRUPT;
      *u = be(r->p, n);
      r->p += n;
      *kind = 'm';
      return 0;
    default: /* 0xc1: never used */
      return RQ_CORRUPT;
  }
}

static int rd_skip(rq_rd *r, int depth) {
  char k;
  uint64_t u = 0;
  int64_t s;
  if (depth > RQ_RD_MAX_DEPTH) return RQ_CORRUPT;
  int rc = rd_head(r, &k, &u, &s);
  if (rc) return rc;
  switch (k) {
    case 's':
    case 'b':
    case 't':
      if (need(r, u)) return RQ_CORRUPT;
      r->p += u;
      return 0;
    case 'a':
    case 'm': {
      uint64_t items = k == 'm' ? u * 2 : u;
      /* Every item takes at least one byte: reject impossible counts early. */
      if (items > (uint64_t)(r->end - r->p)) return RQ_CORRUPT;
      for (uint64_t i = 0; i < items; i++)
        if ((rc = rd_skip(r, depth + 1))) return rc;
      return 0;
    }
    default:
      return 0;
  }
}

int rq_rd_array(rq_rd *r, uint32_t *n) {
  char k;
  uint64_t u = 0;
  int64_t s;
  int rc = rd_head(r, &k, &u, &s);
  if (rc) return rc;
  if (k != 'a' || u > UINT32_MAX) return RQ_CORRUPT;
  *n = (uint32_t)u;
  return 0;
}

int rq_rd_uint(rq_rd *r, uint64_t *out) {
  char k;
  uint64_t u = 0;
  int64_t s = 0;
  int rc = rd_head(r, &k, &u, &s);
  if (rc) return rc;
  if (k == 'U' || (k == 'i' && s >= 0)) {
    *out = u;
    return 0;
  }
  return RQ_CORRUPT;
}

int rq_decode(const void *buf, size_t len, rq_view *out, bool full) {
  rq_rd r = {buf, (const uint8_t *)buf + len};
  char k;
  uint64_t n = 0;
  int64_t s;
  out->present = 0;
  int rc = rd_head(&r, &k, &n, &s);
  if (rc) return rc;
  if (k != 'm' || n * 2 > len) return RQ_CORRUPT;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t key = 0;
    if (rd_head(&r, &k, &key, &s) || k != 'i' || s < 0) return RQ_CORRUPT;
    if (key >= RQ_F_COUNT) { /* a field from a later minor revision: ignore */
      if ((rc = rd_skip(&r, 1))) return rc;
      continue;
    }
    int f = (int)key;
    if (rq_view_has(out, f)) return RQ_CORRUPT; /* duplicate key */
    uint64_t u = 0;
    if ((rc = rd_head(&r, &k, &u, &s))) return rc;
    if (k == 'n') continue; /* nil = absent */
    if (field_is_bytes(f)) {
      if (k != 's' && k != 'b') return RQ_CORRUPT;
      if (need(&r, u)) return RQ_CORRUPT;
      out->ptr[f] = r.p;
      out->len[f] = u;
      out->num[f] = 0;
      r.p += u;
    } else {
      if (k == 'U' && f == RQ_F_SEQ) { /* seqs never get that big; still be exact */
        return RQ_CORRUPT;
      }
      if (k != 'i') return RQ_CORRUPT;
      out->num[f] = s;
      out->ptr[f] = NULL;
      out->len[f] = 0;
    }
    out->present |= 1u << f;
  }
  if (r.p != r.end) return RQ_CORRUPT; /* trailing bytes */
  if (!rq_view_has(out, RQ_F_V)) return RQ_CORRUPT;
  if (out->num[RQ_F_V] < 1) return RQ_CORRUPT;
  if (out->num[RQ_F_V] > RQ_RECORD_VERSION) return RQ_VERSION;
  if (full &&
      (!rq_view_has(out, RQ_F_SEQ) || !rq_view_has(out, RQ_F_BODY) || out->num[RQ_F_SEQ] <= 0))
    return RQ_CORRUPT;
  if (rq_view_has(out, RQ_F_ATTEMPTS) &&
      (out->num[RQ_F_ATTEMPTS] < 0 || out->num[RQ_F_ATTEMPTS] > UINT32_MAX))
    return RQ_CORRUPT;
  /* Clear the slots of absent fields so callers can read them as 0/NULL. */
  for (int f = 0; f < RQ_F_COUNT; f++)
    if (!rq_view_has(out, f)) {
      out->num[f] = 0;
      out->ptr[f] = NULL;
      out->len[f] = 0;
    }
  return 0;
}

/* ---- writer ------------------------------------------------------------ */

static int encode_fields(msgpack_packer *pk, const rq_view *v, bool state_only) {
  uint32_t n = 0;
  for (int f = 0; f < RQ_F_COUNT; f++)
    if (rq_view_has(v, f) && (!state_only || f == RQ_F_V || field_is_state(f))) n++;
  if (msgpack_pack_map(pk, n)) return -ENOMEM;
  for (int f = 0; f < RQ_F_COUNT; f++) {
    if (!rq_view_has(v, f) || (state_only && f != RQ_F_V && !field_is_state(f))) continue;
    int rc = msgpack_pack_uint8(pk, (uint8_t)f);
    if (f == RQ_F_BODY)
      rc = rc ? rc : msgpack_pack_bin_with_body(pk, v->ptr[f], v->len[f]);
    else if (field_is_bytes(f))
      rc = rc ? rc : msgpack_pack_str_with_body(pk, v->ptr[f], v->len[f]);
    else
      rc = rc ? rc : msgpack_pack_int64(pk, v->num[f]);
    if (rc) return -ENOMEM;
  }
  return 0;
}

int rq_encode(msgpack_packer *pk, const rq_view *v) {
  return encode_fields(pk, v, false);
}
int rq_encode_state(msgpack_packer *pk, const rq_view *v) {
  return encode_fields(pk, v, true);
}

/* ---- owned copies ------------------------------------------------------ */

int rq_materialize(const rq_view *v, rq_record *out) {
  size_t total = 1;
  for (int f = 0; f < RQ_F_COUNT; f++)
    if (field_is_bytes(f) && rq_view_has(v, f)) total += v->len[f] + 1;
  char *blk = malloc(total);
  if (!blk) return -ENOMEM;
  memset(out, 0, sizeof *out);
  out->owned_ = blk;
  char *p = blk;
  const char *strs[RQ_F_COUNT] = {0};
  for (int f = 0; f < RQ_F_COUNT; f++) {
    if (!field_is_bytes(f) || !rq_view_has(v, f)) continue;
    if (v->len[f]) memcpy(p, v->ptr[f], v->len[f]);
    p[v->len[f]] = '\0'; /* bodies get a NUL too: handy for JSON parsers */
    strs[f] = p;
    p += v->len[f] + 1;
  }
  *p = '\0';
  out->seq = (uint64_t)v->num[RQ_F_SEQ];
  out->received_ms = v->num[RQ_F_RECEIVED];
  out->body = (const uint8_t *)(strs[RQ_F_BODY] ? strs[RQ_F_BODY] : p);
  out->body_len = rq_view_has(v, RQ_F_BODY) ? v->len[RQ_F_BODY] : 0;
  out->webhook_id = strs[RQ_F_WEBHOOK_ID];
  out->webhook_attempt = strs[RQ_F_WEBHOOK_ATTEMPT];
  out->api_key = strs[RQ_F_API_KEY];
  out->type = strs[RQ_F_TYPE];
  out->cid = strs[RQ_F_CID];
  out->channel_type = strs[RQ_F_CHANNEL_TYPE];
  out->channel_id = strs[RQ_F_CHANNEL_ID];
  out->user_id = strs[RQ_F_USER_ID];
  out->attempts = (uint32_t)v->num[RQ_F_ATTEMPTS];
  out->next_attempt_ms = v->num[RQ_F_NEXT_ATTEMPT];
  out->first_attempt_ms = v->num[RQ_F_FIRST_ATTEMPT];
  out->last_attempt_ms = v->num[RQ_F_LAST_ATTEMPT];
  out->last_error = strs[RQ_F_LAST_ERROR];
  out->dlq_reason = strs[RQ_F_DLQ_REASON];
  out->dlq_code = strs[RQ_F_DLQ_CODE];
  out->dlq_message = strs[RQ_F_DLQ_MESSAGE];
  out->dlq_time_ms = v->num[RQ_F_DLQ_TIME];
  out->replayed_ms = v->num[RQ_F_REPLAYED];
  return 0;
}

void rq_view_corrupt(rq_view *v, uint64_t seq, const void *raw, size_t len, int64_t now_ms) {
  static const char reason[] = "corrupt", msg[] = "record could not be decoded";
  static const uint8_t empty[1];
  memset(v, 0, sizeof *v);
  rq_view_set_num(v, RQ_F_V, RQ_RECORD_VERSION);
  rq_view_set_num(v, RQ_F_SEQ, (int64_t)seq);
  rq_view_set_num(v, RQ_F_RECEIVED, 0);
  rq_view_set_str(v, RQ_F_BODY, len ? raw : empty, len);
  rq_view_set_str(v, RQ_F_DLQ_REASON, reason, sizeof reason - 1);
  rq_view_set_str(v, RQ_F_DLQ_MESSAGE, msg, sizeof msg - 1);
  rq_view_set_num(v, RQ_F_DLQ_TIME, now_ms);
}

void rq_record_free(rq_record *r) {
  if (!r) return;
  free(r->owned_);
  memset(r, 0, sizeof *r);
}

void rq_records_free(rq_record *rs, size_t n) {
  if (!rs) return;
  for (size_t i = 0; i < n; i++) free(rs[i].owned_);
  free(rs);
}
