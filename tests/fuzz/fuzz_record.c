/* Fuzz target: the queue's msgpack record decoder (queue/rq_codec.c).
 *
 * Records are read back from LMDB pages that a torn write, a bad disk or
 * an older/newer relayd may have produced, so rq_decode() must survive any
 * bytes. Properties checked for every input:
 *   - rq_decode() (full and state-only) never crashes and returns 0,
 *     RQ_CORRUPT or RQ_VERSION;
 *   - a successful decode points only inside the input;
 *   - re-encoding a decoded view and decoding that gives the same view
 *     (fields, integers and bytes), also for the state-only encoding;
 *   - rq_materialize() of a decoded view gives NUL-terminated copies.
 */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rq_internal.h"

#define FAIL(...)                                        \
  do {                                                   \
    fprintf(stderr, "fuzz_record: " __VA_ARGS__);        \
    fprintf(stderr, "\n");                               \
    abort();                                             \
  } while (0)

static int is_bytes_field(int f) {
  return f == RQ_F_BODY || (f >= RQ_F_WEBHOOK_ID && f <= RQ_F_USER_ID) ||
         (f >= RQ_F_LAST_ERROR && f <= RQ_F_DLQ_MESSAGE);
}

static int is_state_field(int f) {
  return f == RQ_F_V || (f >= RQ_F_ATTEMPTS && f <= RQ_F_LAST_ERROR);
}

/* a and b hold the same fields and values; with state_only, only the
 * fields rq_encode_state() writes are compared. */
static void same_view(const rq_view *a, const rq_view *b, int state_only, const char *what) {
  for (int f = 0; f < RQ_F_COUNT; f++) {
    if (state_only && !is_state_field(f)) continue;
    if (rq_view_has(a, f) != rq_view_has(b, f)) FAIL("%s: field %d presence differs", what, f);
    if (!rq_view_has(a, f)) continue;
    if (is_bytes_field(f)) {
      if (a->len[f] != b->len[f]) FAIL("%s: field %d length %zu != %zu", what, f, a->len[f],
                                       b->len[f]);
      if (a->len[f] && memcmp(a->ptr[f], b->ptr[f], a->len[f]) != 0)
        FAIL("%s: field %d bytes differ", what, f);
    } else if (a->num[f] != b->num[f]) {
      FAIL("%s: field %d value %lld != %lld", what, f, (long long)a->num[f],
           (long long)b->num[f]);
    }
  }
}

static void inside(const rq_view *v, const uint8_t *data, size_t size) {
  for (int f = 0; f < RQ_F_COUNT; f++) {
    if (!rq_view_has(v, f) || !is_bytes_field(f)) continue;
    const uint8_t *p = v->ptr[f];
    if (!p || p < data || p > data + size || v->len[f] > (size_t)(data + size - p))
      FAIL("field %d points outside the input", f);
  }
}

static void roundtrip(const rq_view *v, int state_only) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  int rc = state_only ? rq_encode_state(&pk, v) : rq_encode(&pk, v);
  if (rc != 0) FAIL("encode failed: %d", rc);
  rq_view again;
  rc = rq_decode(sb.data, sb.size, &again, !state_only);
  if (rc != 0) FAIL("re-encoded %s record does not decode: %d", state_only ? "state" : "full", rc);
  same_view(v, &again, state_only, state_only ? "state roundtrip" : "full roundtrip");
  /* Encoding is deterministic: the second encoding is byte-identical. */
  msgpack_sbuffer sb2;
  msgpack_packer pk2;
  msgpack_sbuffer_init(&sb2);
  msgpack_packer_init(&pk2, &sb2, msgpack_sbuffer_write);
  if ((state_only ? rq_encode_state(&pk2, &again) : rq_encode(&pk2, &again)) != 0)
    FAIL("second encode failed");
  if (sb2.size != sb.size || memcmp(sb.data, sb2.data, sb.size) != 0)
    FAIL("encoding is not stable");
  msgpack_sbuffer_destroy(&sb2);
  msgpack_sbuffer_destroy(&sb);
}

static void check_materialize(const rq_view *v) {
  rq_record rec;
  if (rq_materialize(v, &rec) != 0) FAIL("materialize failed");
  if (rec.body_len != (rq_view_has(v, RQ_F_BODY) ? v->len[RQ_F_BODY] : 0))
    FAIL("materialized body length");
  if (rec.body_len && memcmp(rec.body, v->ptr[RQ_F_BODY], rec.body_len) != 0)
    FAIL("materialized body bytes");
  if (rec.body[rec.body_len] != '\0') FAIL("materialized body not NUL-terminated");
  const char *strs[] = {rec.webhook_id, rec.webhook_attempt, rec.api_key, rec.type,
                        rec.cid, rec.channel_type, rec.channel_id, rec.user_id,
                        rec.last_error, rec.dlq_reason, rec.dlq_code, rec.dlq_message};
  static const int fields[] = {RQ_F_WEBHOOK_ID, RQ_F_WEBHOOK_ATTEMPT, RQ_F_API_KEY,
                               RQ_F_TYPE, RQ_F_CID, RQ_F_CHANNEL_TYPE, RQ_F_CHANNEL_ID,
                               RQ_F_USER_ID, RQ_F_LAST_ERROR, RQ_F_DLQ_REASON, RQ_F_DLQ_CODE,
                               RQ_F_DLQ_MESSAGE};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    int f = fields[i];
    if (!rq_view_has(v, f)) {
      if (strs[i]) FAIL("absent field %d materialized", f);
      continue;
    }
    if (!strs[i]) FAIL("present field %d not materialized", f);
    /* Bytes up to the stored length, then a terminator (a stored NUL
     * inside is possible and kept). */
    if (memcmp(strs[i], v->ptr[f], v->len[f]) != 0 || strs[i][v->len[f]] != '\0')
      FAIL("field %d copy", f);
  }
  rq_record_free(&rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  for (int full = 0; full <= 1; full++) {
    rq_view v;
    int rc = rq_decode(data, size, &v, full);
    if (rc != 0 && rc != RQ_CORRUPT && rc != RQ_VERSION) FAIL("unexpected rq_decode result %d", rc);
    if (rc != 0) continue;
    inside(&v, data, size);
    if (full) {
      if (!rq_view_has(&v, RQ_F_SEQ) || v.num[RQ_F_SEQ] <= 0 || !rq_view_has(&v, RQ_F_BODY))
        FAIL("full record without seq/body accepted");
      roundtrip(&v, 0);
      check_materialize(&v);
    }
    roundtrip(&v, 1);
  }
  return 0;
}
