/* Fuzz target: ingest_gunzip() (relay/ingest.c), the inflation of gzip
 * request bodies under RELAY_MAX_BODY_BYTES.
 *
 * Input: byte 0 picks the mode, bytes 1-2 the cap, the rest is payload.
 *   mode & 1 == 0: the payload is inflated as is (arbitrary bytes, or a
 *     gzip stream the fuzzer found).
 *   mode & 1 == 1: the harness builds a gzip stream with zlib's deflate
 *     from the payload: 1..4 members, each with its own level, strategy and
 *     optional FEXTRA / FNAME / FCOMMENT / FHCRC / FTEXT header fields, and
 *     then damages it in one way (bits 4-6 of mode): none, truncated,
 *     trailing garbage, wrong CRC-32, wrong ISIZE, wrong header CRC, a
 *     run of zeros appended (as some tools pad).
 * Properties:
 *   - no crash, no leak; the result is 0, -E2BIG or -EINVAL;
 *   - 0 only with out_len <= cap, out NUL-terminated, *out NULL otherwise;
 *   - any input: the answer equals a reference inflater (zlib in gzip
 *     mode, one member at a time, a single output buffer of cap + 1 bytes,
 *     written independently of ingest.c's growth loop);
 *   - a built stream, undamaged (or truncated exactly at a member boundary)
 *     round-trips exactly when it inflates to at most cap bytes and is
 *     -E2BIG otherwise;
 *   - a damaged stream (truncated mid-member, garbage after the end, wrong
 *     CRC-32, ISIZE or header CRC) is refused: -EINVAL, or -E2BIG when the
 *     output before the damage is already over the cap. The wrong CRC is
 *     refused by zlib's gzip mode itself (windowBits 16 + 15 checks CRC-32,
 *     ISIZE and, when FHCRC is set, the header CRC); relayd answers 400.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ingest.h"

#define FAIL(...)                                   \
  do {                                              \
    fprintf(stderr, "fuzz_gunzip: " __VA_ARGS__);   \
    fprintf(stderr, "\n");                          \
    abort();                                        \
  } while (0)

#define MAX_MEMBERS 4

/* The reference: zlib in gzip mode into one buffer of cap + 1 bytes,
 * member after member while input is left. */
static int ref_gunzip(const uint8_t *in, size_t len, uint64_t cap, uint8_t *out, size_t *out_len) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) abort();
  zs.next_in = (Bytef *)in;
  zs.avail_in = (uInt)len;
  zs.next_out = out;
  zs.avail_out = (uInt)(cap + 1);
  int rc;
  for (;;) {
    int z = inflate(&zs, Z_FINISH);
    if (z == Z_STREAM_END) {
      if (zs.avail_in == 0) {
        rc = 0;
        break;
      }
      /* More than cap bytes already: over the cap whatever follows (ingest
       * stops reading there too, so garbage after it is not seen). */
      if (zs.avail_out == 0) {
        rc = -E2BIG;
        break;
      }
      if (inflateReset(&zs) != Z_OK) abort();
      continue;
    }
    /* Z_BUF_ERROR with the output full: more than cap bytes. Otherwise
     * the input ended inside a member. */
    if (z == Z_BUF_ERROR && zs.avail_out == 0) rc = -E2BIG;
    else rc = -EINVAL;
    break;
  }
  *out_len = (size_t)(cap + 1 - zs.avail_out);
  if (rc == 0 && *out_len > cap) rc = -E2BIG;
  inflateEnd(&zs);
  return rc;
}

typedef struct {
  uint8_t *p;
  size_t len, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
  if (n == 0) return;
  if (b->len + n > b->cap) {
    size_t nc = (b->len + n) * 2 + 64;
    uint8_t *np = realloc(b->p, nc);
    if (!np) abort();
    b->p = np;
    b->cap = nc;
  }
  memcpy(b->p + b->len, d, n);
  b->len += n;
}

/* One gzip member of data with the header options in opt. */
static void gzip_member(buf *b, const uint8_t *data, size_t len, uint8_t opt) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  int level = opt % 10;
  int strategy = (opt >> 4) & 1 ? Z_FILTERED : (opt >> 5) & 1 ? Z_HUFFMAN_ONLY : Z_DEFAULT_STRATEGY;
  if (deflateInit2(&zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8, strategy) != Z_OK) abort();
  gz_header h;
  memset(&h, 0, sizeof h);
  static uint8_t extra[] = "\x41\x70\x04\x00xyzw";
  static uint8_t name[] = "event.json";
  static uint8_t comment[] = "from the fuzzer";
  h.text = (opt >> 1) & 1;
  h.time = 1700000000;
  h.os = 3;
  if (opt & 0x40) {
    h.extra = extra;
    h.extra_len = 8;
  }
  if (opt & 0x80) h.name = name;
  if ((opt & 0x0c) == 0x0c) h.comment = comment;
  h.hcrc = (opt >> 2) & 1;
  if (deflateSetHeader(&zs, &h) != Z_OK) abort();
  size_t bound = deflateBound(&zs, len) + 128;
  uint8_t *out = malloc(bound);
  if (!out) abort();
  zs.next_in = (Bytef *)data;
  zs.avail_in = (uInt)len;
  zs.next_out = out;
  zs.avail_out = (uInt)bound;
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
  put(b, out, bound - zs.avail_out);
  deflateEnd(&zs);
  free(out);
}

static void check_shape(int rc, uint64_t cap, const uint8_t *out, size_t out_len) {
  if (rc != 0 && rc != -E2BIG && rc != -EINVAL) FAIL("returned %d", rc);
  if (rc != 0) {
    if (out) FAIL("error %d but output set", rc);
    return;
  }
  if (!out) FAIL("success without output");
  if (out_len > cap) FAIL("%zu bytes over the cap %llu", out_len, (unsigned long long)cap);
  if (out[out_len] != 0) FAIL("output not NUL-terminated");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  uint8_t mode = data[0];
  uint64_t cap = ((unsigned)data[1] << 8 | data[2]) * 4u; /* 0..256 KiB */
  data += 3;
  size -= 3;

  buf s = {0};
  buf plain = {0};
  size_t ends[MAX_MEMBERS];   /* offset of each member's end in s */
  size_t plain_at[MAX_MEMBERS]; /* plain bytes up to that member's end */
  int members = 0, damage = -1;
  size_t cut = 0;
  if (mode & 1) {
    /* Payload: n, then per member [opt][len][bytes...]; a payload shorter
     * than the lengths just gives shorter members. A member's data may be
     * a repeated byte (mode bit 1) to make bombs: len * 1024 copies. */
    size_t i = 0;
    members = size ? 1 + data[i++] % MAX_MEMBERS : 1;
    for (int m = 0; m < members; m++) {
      uint8_t opt = i < size ? data[i++] : 0;
      size_t len = i < size ? data[i++] : 0;
      if ((mode & 2) && i < size) {
        size_t n = (len + 1) * 1024;
        uint8_t *rep = malloc(n);
        if (!rep) abort();
        memset(rep, data[i++], n);
        gzip_member(&s, rep, n, opt);
        put(&plain, rep, n);
        free(rep);
      } else {
        if (len > size - i) len = size - i;
        gzip_member(&s, data + i, len, opt);
        put(&plain, data + i, len);
        i += len;
      }
      ends[m] = s.len;
      plain_at[m] = plain.len;
    }
    damage = (mode >> 4) & 7;
    /* Where to damage: the remaining payload byte, or 0. */
    size_t where = i < size ? data[i] : 0;
    switch (damage) {
      case 1: /* truncated */
        cut = s.len ? where * 257 % s.len : 0;
        s.len = cut;
        break;
      case 2: { /* trailing garbage that is not a gzip header */
        uint8_t g[4] = {(uint8_t)(where == 0x1f ? 0 : where), 0x8b, 0x08, 0};
        put(&s, g, 1 + where % 4);
        break;
      }
      case 3: /* CRC-32 of the last member */
        s.p[s.len - 8 + where % 4] ^= (uint8_t)(1u << (where >> 5));
        break;
      case 4: /* ISIZE of the last member */
        s.p[s.len - 4 + where % 4] ^= (uint8_t)(1u << (where >> 5));
        break;
      case 5: /* header CRC of the first member, when it has one */
        if (s.p[3] & 0x02) {
          size_t at = 10;
          if (s.p[3] & 0x04) at += 2 + (size_t)(s.p[10] | s.p[11] << 8);
          if (s.p[3] & 0x08) at += strlen((const char *)s.p + at) + 1;
          if (s.p[3] & 0x10) at += strlen((const char *)s.p + at) + 1;
          s.p[at + where % 2] ^= (uint8_t)(1u << (where >> 5));
        } else {
          damage = 0;
        }
        break;
      case 6: { /* a run of zeros: not a gzip member, so broken */
        uint8_t z[8] = {0};
        put(&s, z, 1 + where % 8);
        break;
      }
      default:
        damage = 0;
        break;
    }
    /* Bit 3: put the cap right at the plain length (or one below). */
    if (mode & 8) cap = plain.len - (plain.len && (mode & 4) ? 1 : 0);
  } else {
    put(&s, data, size);
  }

  /* An exact-size input, so ASan sees any read past the end. */
  uint8_t *in = malloc(s.len ? s.len : 1);
  if (!in) abort();
  if (s.len) memcpy(in, s.p, s.len);
  uint8_t *out = (uint8_t *)1;
  size_t out_len = 12345;
  int rc = ingest_gunzip(in, s.len, cap, &out, &out_len);
  check_shape(rc, cap, out, out_len);

  uint8_t *ref = malloc((size_t)cap + 1);
  if (!ref) abort();
  size_t ref_len;
  int ref_rc = ref_gunzip(in, s.len, cap, ref, &ref_len);
  if (rc != ref_rc) FAIL("returned %d, reference %d (%zu bytes in, cap %llu)", rc, ref_rc, s.len,
                         (unsigned long long)cap);
  if (rc == 0 && (out_len != ref_len || memcmp(out, ref, out_len) != 0))
    FAIL("output differs from the reference (%zu vs %zu bytes)", out_len, ref_len);

  if (mode & 1) {
    /* What the built stream must give. */
    size_t want = plain.len;
    int intact = damage == 0;
    if (damage == 1) {
      intact = 0;
      for (int m = 0; m < members; m++)
        if (cut == ends[m]) intact = 1, want = plain_at[m];
    }
    if (intact) {
      int expect = want <= cap ? 0 : -E2BIG;
      if (rc != expect)
        FAIL("intact stream of %zu bytes, cap %llu, damage %d: %d", want,
             (unsigned long long)cap, damage, rc);
      if (rc == 0 && (out_len != want || (want && memcmp(out, plain.p, want) != 0)))
        FAIL("round trip differs (%zu vs %zu bytes)", out_len, want);
    } else if (rc == 0 || (rc == -E2BIG && plain.len <= cap)) {
      FAIL("damage %d (cut %zu of %zu) gave %d, %zu bytes", damage, cut, s.len, rc, out_len);
    }
  }
  if (rc == 0) free(out);
  free(ref);
  free(in);
  free(s.p);
  free(plain.p);
  return 0;
}
