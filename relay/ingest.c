/* Webhook ingest: validates each request and hands it to the group
 * committer; answers from the commit callback (see ingest.h). This file is
 * where "2xx means fsync'd" is kept: the only 200 for a new event is sent
 * from on_committed(), which the committer calls after rq_txn_commit()
 * returned 0 for the batch holding it.
 */
#include "ingest.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <zlib.h>

#include "http_server.h"
#include "log.h"

/* Seconds a client should wait before retrying a 503. Stream retries
 * within ~15 s, so these stay short. */
#define RETRY_AFTER_COMMIT "Retry-After: 1\r\n"
#define RETRY_AFTER_WATERMARK "Retry-After: 2\r\n"

static const char OK_BODY[] = "{\"ok\":true}";

#define INGEST_MAC_CACHE 8 /* keyed HMAC contexts kept (secrets of a rotation) */

struct ingest {
  uv_loop_t *loop;
  ingest_options o;
  const relay_config *cfg;
  http_server *srv;
  uv_prepare_t prepare;
  int wm_valid, wm_over;
  int unavailable_logged, overloaded_logged;
  ingest_stats st;
  int closing;
  void (*done)(void *);
  void *done_arg;
  int pending_closes;
  /* Keyed HMAC contexts, see ingest_mac_hex(). Loop thread only. */
  EVP_MAC *hmac;
  struct {
    EVP_MAC_CTX *ctx;
    char *key;
    size_t klen;
  } mac[INGEST_MAC_CACHE];
  unsigned mac_next;
};

typedef struct ingest_req {
  commit_op op;
  ingest *ing;
  http_request *req;
  uint8_t *inflated;
  ingest_fields f;
  char too_large_msg[160];
} ingest_req;

/* ---- pure helpers --------------------------------------------------------- */

int ingest_is_gzip(const uint8_t *body, size_t len) {
  return len >= 2 && body[0] == 0x1f && body[1] == 0x8b;
}

int ingest_gunzip(const uint8_t *in, size_t len, uint64_t cap, uint8_t **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return -ENOMEM;
  /* Start near a typical ratio, grow by doubling, never past cap + 1 (the
   * one extra byte tells "exactly cap" from "over cap"). */
  size_t bufcap = len * 4 + 1024;
  if (bufcap > cap + 1) bufcap = (size_t)cap + 1;
  uint8_t *buf = malloc(bufcap + 1);
  if (!buf) {
    inflateEnd(&zs);
    return -ENOMEM;
  }
  size_t n = 0;
  zs.next_in = (Bytef *)in;
  zs.avail_in = (uInt)len;
  int rc = 0;
  for (;;) {
    if (n == bufcap) {
      if (bufcap >= cap + 1) {
        rc = -E2BIG;
        break;
      }
      size_t nc = bufcap * 2;
      if (nc > cap + 1) nc = (size_t)cap + 1;
      uint8_t *nb = realloc(buf, nc + 1);
      if (!nb) {
        rc = -ENOMEM;
        break;
      }
      buf = nb;
      bufcap = nc;
    }
    zs.next_out = buf + n;
    zs.avail_out = (uInt)(bufcap - n);
    int z = inflate(&zs, Z_NO_FLUSH);
    n = bufcap - zs.avail_out;
    if (z == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      /* Another gzip member follows (as gunzip accepts). */
      if (inflateReset(&zs) != Z_OK) {
        rc = -EINVAL;
        break;
      }
      continue;
    }
    if (z == Z_OK) continue;
    if (z == Z_BUF_ERROR && zs.avail_out != 0) {
      rc = -EINVAL; /* input ended inside the stream: truncated */
      break;
    }
    if (z == Z_BUF_ERROR) continue;
    rc = z == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
    break;
  }
  inflateEnd(&zs);
  if (rc == 0 && n > cap) rc = -E2BIG;
  if (rc < 0) {
    free(buf);
    return rc;
  }
  buf[n] = 0;
  *out = buf;
  *out_len = n;
  return 0;
}

static void mac_to_hex(const unsigned char *mac, char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  for (unsigned i = 0; i < 32; i++) {
    hex[2 * i] = digits[mac[i] >> 4];
    hex[2 * i + 1] = digits[mac[i] & 15];
  }
  hex[64] = 0;
}

void ingest_hmac_hex(const char *key, const uint8_t *data, size_t len, char hex[65]) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  HMAC(EVP_sha256(), key, (int)strlen(key), data, len, mac, &maclen);
  mac_to_hex(mac, hex);
  OPENSSL_cleanse(mac, sizeof mac);
}

static void mac_cache_free(ingest *ing) {
  for (unsigned i = 0; i < INGEST_MAC_CACHE; i++) {
    EVP_MAC_CTX_free(ing->mac[i].ctx);
    if (ing->mac[i].key) OPENSSL_clear_free(ing->mac[i].key, ing->mac[i].klen);
    ing->mac[i].ctx = NULL;
    ing->mac[i].key = NULL;
  }
  EVP_MAC_free(ing->hmac);
  ing->hmac = NULL;
}

/* A context holding this key's HMAC-SHA256 pads, made on first use. */
static EVP_MAC_CTX *mac_ctx_for(ingest *ing, const char *key) {
  size_t klen = strlen(key);
  for (unsigned i = 0; i < INGEST_MAC_CACHE; i++)
    if (ing->mac[i].key && ing->mac[i].klen == klen && memcmp(ing->mac[i].key, key, klen) == 0)
      return ing->mac[i].ctx;
  if (!ing->hmac && !(ing->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL))) return NULL;
  EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(ing->hmac);
  char *copy = malloc(klen + 1);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
      OSSL_PARAM_construct_end()};
  if (!ctx || !copy || !EVP_MAC_init(ctx, (const unsigned char *)key, klen, params)) {
    EVP_MAC_CTX_free(ctx);
    free(copy);
    return NULL;
  }
  memcpy(copy, key, klen + 1);
  unsigned slot = ing->mac_next++ % INGEST_MAC_CACHE;
  EVP_MAC_CTX_free(ing->mac[slot].ctx);
  if (ing->mac[slot].key) OPENSSL_clear_free(ing->mac[slot].key, ing->mac[slot].klen);
  ing->mac[slot].ctx = ctx;
  ing->mac[slot].key = copy;
  ing->mac[slot].klen = klen;
  return ctx;
}

/* Same result as ingest_hmac_hex(). HMAC() looks the algorithm up by name
 * (an OpenSSL 3 provider fetch, with locks and string compares) and derives
 * the key pads again on every call: ~0.8 us of the ~3 us a 4 KiB body costs
 * on the loop thread. A context per secret, re-initialised with its own key
 * (EVP_MAC_init with a NULL key keeps the pads), skips both. Contexts are
 * found by the secret's bytes, not its address, so a changed secret can
 * never be checked with an old key. Any failure falls back to HMAC(). */
static void ingest_mac_hex(ingest *ing, const char *key, const uint8_t *data, size_t len,
                           char hex[65]) {
  EVP_MAC_CTX *ctx = ing ? mac_ctx_for(ing, key) : NULL;
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t maclen = 0;
  if (ctx && EVP_MAC_init(ctx, NULL, 0, NULL) && EVP_MAC_update(ctx, data, len) &&
      EVP_MAC_final(ctx, mac, &maclen, sizeof mac) && maclen == 32) {
    mac_to_hex(mac, hex);
    OPENSSL_cleanse(mac, sizeof mac);
    return;
  }
  ingest_hmac_hex(key, data, len, hex);
}

static int check_signature(ingest *ing, const relay_config *cfg, const char *api_key,
                           const char *signature, const uint8_t *body, size_t len) {
  if (cfg->nsecrets == 0) return cfg->insecure_no_signature ? 0 : -EACCES;
  if (!signature || strlen(signature) != 64) return -EACCES;
  char given[65];
  for (int i = 0; i < 64; i++) {
    char ch = signature[i];
    if (ch >= 'A' && ch <= 'F') ch = (char)(ch - 'A' + 'a');
    given[i] = ch;
  }
  given[64] = 0;
  const cfg_app_secret *first = NULL;
  size_t n;
  if (api_key && *api_key) {
    n = cfg_secrets_for(cfg, api_key, &first);
  } else {
    /* Without X-Api-Key, only an unambiguous single app is tried. */
    n = cfg_secrets_for(cfg, cfg->secrets[0].api_key, &first);
    if (n != cfg->nsecrets) n = 0;
  }
  int ok = 0;
  for (size_t i = 0; i < n; i++) {
    char want[65];
    ingest_mac_hex(ing, first[i].secret, body, len, want);
    /* Every candidate is computed and compared: no early exit on a match
     * that could hint which secret of a rotation is in use. */
    ok |= CRYPTO_memcmp(want, given, 64) == 0;
    OPENSSL_cleanse(want, sizeof want);
  }
  return ok ? 0 : -EACCES;
}

int ingest_check_signature(const relay_config *cfg, const char *api_key, const char *signature,
                           const uint8_t *body, size_t len) {
  return check_signature(NULL, cfg, api_key, signature, body, len);
}

/* ---- event scanner ----------------------------------------------------------
 *
 * Validates the body as RFC 8259 JSON (UTF-8, depth <= JSON_MAX_DEPTH) and
 * picks the routing fields out of it in one pass, without building a
 * document. A DOM parser (json-c) spent ~70 % of the loop thread's time per
 * request in allocation and hashing for fields we mostly discard; this
 * scanner allocates once, for the few field values. The unit tests check
 * it against json-c in strict mode (the same accept/reject decision and
 * the same fields) over the fixtures and many mutations of them.
 *
 * Semantics follow a DOM parser: for a repeated key the last one wins; a
 * field is taken only when its value is a string; user_id comes from the
 * top-level "user" object's "id", else from a top-level "user_id".
 */

#define JSON_MAX_DEPTH 128

typedef struct {
  const uint8_t *p, *end;
} scan;

typedef struct {
  const uint8_t *raw; /* between the quotes, escapes not decoded */
  size_t len;
  int set;            /* 1 string, 0 absent (or not a string: last wins) */
} slice;

static void skip_ws(scan *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
    s->p++;
}

static int hexval(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* One UTF-8 sequence starting at p (p[0] >= 0x80): its length, 0 if
 * invalid (overlong, surrogate, above U+10FFFF, truncated). */
static size_t utf8_len(const uint8_t *p, const uint8_t *end) {
  uint8_t c = p[0];
  size_t n;
  uint32_t min, cp;
  if (c >= 0xc2 && c <= 0xdf) n = 2, min = 0x80, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) n = 3, min = 0x800, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, min = 0x10000, cp = c & 0x07;
  else return 0;
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

/* Webhook bodies are mostly plain ASCII string bytes (ids, timestamps,
 * URLs, message text), and scan_string, testing them one at a time, led the
 * scanner's profile. So eight are tested at once: a word is plain when none
 * of its bytes is '"', '\\', below 0x20 or at/above 0x80. With every byte
 * below 0x80, subtracting 0x01 from each byte sets its top bit exactly when
 * it was 0 (after the XOR: when it was '"', or '\\'), subtracting 0x20
 * exactly when it was below 0x20, unless a lower byte borrowed, which it
 * only does when it was a hit itself; "| w" catches bytes >= 0x80. So the
 * answer for the whole word is exact. memcpy: no alignment or aliasing
 * assumption, and the answer does not depend on the byte order. */
#define BYTES_01 0x0101010101010101ull
#define BYTES_80 0x8080808080808080ull

static int word_is_plain(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, sizeof w);
  uint64_t t = ((w ^ (BYTES_01 * '"')) - BYTES_01) | ((w ^ (BYTES_01 * '\\')) - BYTES_01) |
               (w - BYTES_01 * 0x20) | w;
  return (t & BYTES_80) == 0;
}

/* s->p at the opening quote. On success s->p is past the closing quote and
 * *out (may be NULL) spans the raw content. */
static int scan_string(scan *s, slice *out) {
  const uint8_t *start = ++s->p;
  for (;;) {
    while (s->end - s->p >= 8 && word_is_plain(s->p)) s->p += 8;
    /* Byte by byte through the word that holds something else (an escape
     * or a UTF-8 sequence may end past it), then back to whole words. */
    const uint8_t *stop = s->end - s->p > 8 ? s->p + 8 : s->end;
    while (s->p < stop) {
      uint8_t c = *s->p;
      if (c == '"') {
        if (out) {
          out->raw = start;
          out->len = (size_t)(s->p - start);
          out->set = 1;
        }
        s->p++;
        return 0;
      }
      if (c < 0x20) return -EINVAL;
      if (c == '\\') {
        if (s->end - s->p < 2) return -EINVAL;
        uint8_t e = s->p[1];
        if (e == 'u') {
          if (s->end - s->p < 6) return -EINVAL;
          for (int i = 2; i < 6; i++)
            if (hexval(s->p[i]) < 0) return -EINVAL;
          s->p += 6;
        } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                   e == 'r' || e == 't') {
          s->p += 2;
        } else {
          return -EINVAL;
        }
      } else if (c < 0x80) {
        s->p++;
      } else {
        size_t n = utf8_len(s->p, s->end);
        if (!n) return -EINVAL;
        s->p += n;
      }
    }
    if (s->p >= s->end) return -EINVAL; /* no closing quote */
  }
}

static int scan_number(scan *s) {
  const uint8_t *p = s->p, *e = s->end;
  if (p < e && *p == '-') p++;
  if (p >= e) return -EINVAL;
  if (*p == '0') {
    p++;
  } else if (*p >= '1' && *p <= '9') {
    while (p < e && *p >= '0' && *p <= '9') p++;
  } else {
    return -EINVAL;
  }
  if (p < e && *p == '.') {
    p++;
    if (p >= e || *p < '0' || *p > '9') return -EINVAL;
    while (p < e && *p >= '0' && *p <= '9') p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (p >= e || *p < '0' || *p > '9') return -EINVAL;
    while (p < e && *p >= '0' && *p <= '9') p++;
  }
  s->p = p;
  return 0;
}

static int scan_literal(scan *s, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) return -EINVAL;
  s->p += n;
  return 0;
}

/* A key followed by ':' (s->p at the key's quote). */
static int scan_key(scan *s, slice *key) {
  if (s->p >= s->end || *s->p != '"') return -EINVAL;
  if (scan_string(s, key) < 0) return -EINVAL;
  skip_ws(s);
  if (s->p >= s->end || *s->p != ':') return -EINVAL;
  s->p++;
  skip_ws(s);
  return 0;
}

/* Skips one value of any kind starting at s->p (whitespace skipped), at
 * nesting depth `depth` (the container holding it). Iterative: the nesting
 * lives in a small stack, not on the C stack. */
static int skip_value(scan *s, int depth) {
  char stack[JSON_MAX_DEPTH];
  int d = 0;
  for (;;) {
    /* A value. */
    if (s->p >= s->end) return -EINVAL;
    uint8_t c = *s->p;
    if (c == '{' || c == '[') {
      if (depth + d + 1 > JSON_MAX_DEPTH) return -EINVAL;
      stack[d++] = (char)c;
      s->p++;
      skip_ws(s);
      if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) {
        s->p++;
        d--;
      } else {
        if (c == '{' && scan_key(s, NULL) < 0) return -EINVAL;
        continue;
      }
    } else if (c == '"') {
      if (scan_string(s, NULL) < 0) return -EINVAL;
    } else if (c == 't') {
      if (scan_literal(s, "true") < 0) return -EINVAL;
    } else if (c == 'f') {
      if (scan_literal(s, "false") < 0) return -EINVAL;
    } else if (c == 'n') {
      if (scan_literal(s, "null") < 0) return -EINVAL;
    } else if (scan_number(s) < 0) {
      return -EINVAL;
    }
    /* After a value: close containers or move to the next element. */
    for (;;) {
      if (d == 0) return 0;
      skip_ws(s);
      if (s->p >= s->end) return -EINVAL;
      char top = stack[d - 1];
      if (*s->p == ',') {
        s->p++;
        skip_ws(s);
        if (top == '{' && scan_key(s, NULL) < 0) return -EINVAL;
        break;
      }
      if (*s->p == (top == '{' ? '}' : ']')) {
        s->p++;
        d--;
        continue;
      }
      return -EINVAL;
    }
  }
}

static int key_is(const slice *k, const char *name) {
  size_t n = strlen(name);
  /* Keys of interest have no escapes in practice; an escaped spelling is
   * decoded below before comparing. */
  if (k->len == n && memcmp(k->raw, name, n) == 0) return 1;
  if (!memchr(k->raw, '\\', k->len)) return 0;
  /* No bound on the raw length: every character may be escaped (six raw
   * bytes each). Decoding stops once the key is longer than the name. */
  char buf[32];
  size_t bl = 0;
  const uint8_t *p = k->raw, *e = k->raw + k->len;
  while (p < e) {
    if (bl == n || bl == sizeof buf) return 0;
    if (*p != '\\') {
      buf[bl++] = (char)*p++;
      continue;
    }
    if (p[1] == 'u') {
      unsigned v = 0;
      for (int i = 2; i < 6; i++) v = (v << 4) | (unsigned)hexval(p[i]);
      if (v == 0 || v >= 0x80) return 0; /* none of our names has such a char */
      buf[bl++] = (char)v;
      p += 6;
    } else {
      /* \b \f \n \r \t decode to control characters, which no name of
       * ours contains; only \" \\ \/ stand for themselves. */
      if (p[1] != '"' && p[1] != '\\' && p[1] != '/') return 0;
      buf[bl++] = (char)p[1];
      p += 2;
    }
  }
  return bl == n && memcmp(buf, name, n) == 0;
}

/* Decodes a validated string's escapes into out (room for len + 1 bytes:
 * the UTF-8 of an escape is never longer than the escape). Returns the
 * decoded length. */
static size_t unescape(const uint8_t *p, size_t len, char *out) {
  const uint8_t *e = p + len;
  size_t n = 0;
  while (p < e) {
    if (*p != '\\') {
      out[n++] = (char)*p++;
      continue;
    }
    uint8_t c = p[1];
    p += 2;
    switch (c) {
      case 'b': out[n++] = '\b'; continue;
      case 'f': out[n++] = '\f'; continue;
      case 'n': out[n++] = '\n'; continue;
      case 'r': out[n++] = '\r'; continue;
      case 't': out[n++] = '\t'; continue;
      case 'u': break;
      default: out[n++] = (char)c; continue;
    }
    uint32_t cp = 0;
    for (int i = 0; i < 4; i++) cp = (cp << 4) | (uint32_t)hexval(p[i]);
    p += 4;
    if (cp >= 0xd800 && cp <= 0xdbff && e - p >= 6 && p[0] == '\\' && p[1] == 'u') {
      uint32_t lo = 0;
      int ok = 1;
      for (int i = 2; i < 6; i++) {
        int h = hexval(p[i]);
        if (h < 0) ok = 0;
        lo = (lo << 4) | (uint32_t)(h < 0 ? 0 : h);
      }
      if (ok && lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p += 6;
      }
    }
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd; /* lone surrogate */
    if (cp < 0x80) {
      out[n++] = (char)cp;
    } else if (cp < 0x800) {
      out[n++] = (char)(0xc0 | (cp >> 6));
      out[n++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out[n++] = (char)(0xe0 | (cp >> 12));
      out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
      out[n++] = (char)(0x80 | (cp & 0x3f));
    } else {
      out[n++] = (char)(0xf0 | (cp >> 18));
      out[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
      out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
      out[n++] = (char)(0x80 | (cp & 0x3f));
    }
  }
  out[n] = 0;
  return n;
}

/* Reads the value of a top-level member: records it when it is a string,
 * forgets an earlier one when it is not (last key wins). */
static int take_string(scan *s, slice *dst) {
  if (s->p < s->end && *s->p == '"') return scan_string(s, dst);
  dst->set = 0;
  return skip_value(s, 1);
}

/* The "user" object: its "id" (depth 2). */
static int scan_user(scan *s, slice *id) {
  id->set = 0;
  if (s->p >= s->end || *s->p != '{') return skip_value(s, 1);
  s->p++;
  skip_ws(s);
  if (s->p < s->end && *s->p == '}') {
    s->p++;
    return 0;
  }
  for (;;) {
    slice k;
    if (scan_key(s, &k) < 0) return -EINVAL;
    int rc = key_is(&k, "id") ? take_string(s, id) : skip_value(s, 2);
    if (rc < 0) return rc;
    skip_ws(s);
    if (s->p >= s->end) return -EINVAL;
    if (*s->p == ',') {
      s->p++;
      skip_ws(s);
      continue;
    }
    if (*s->p == '}') {
      s->p++;
      return 0;
    }
    return -EINVAL;
  }
}

enum { F_TYPE, F_CID, F_CHANNEL_TYPE, F_CHANNEL_ID, F_USER_ID, F_USER_DOT_ID, F_N };

int ingest_parse_event(const uint8_t *body, size_t len, ingest_fields *f) {
  memset(f, 0, sizeof *f);
  slice v[F_N];
  memset(v, 0, sizeof v);
  scan s = {body, body + len};
  skip_ws(&s);
  if (s.p >= s.end || *s.p != '{') return -EINVAL;
  s.p++;
  skip_ws(&s);
  if (s.p < s.end && *s.p == '}') {
    s.p++;
  } else {
    for (;;) {
      slice k;
      if (scan_key(&s, &k) < 0) return -EINVAL;
      int rc;
      if (key_is(&k, "type")) rc = take_string(&s, &v[F_TYPE]);
      else if (key_is(&k, "cid")) rc = take_string(&s, &v[F_CID]);
      else if (key_is(&k, "channel_type")) rc = take_string(&s, &v[F_CHANNEL_TYPE]);
      else if (key_is(&k, "channel_id")) rc = take_string(&s, &v[F_CHANNEL_ID]);
      else if (key_is(&k, "user_id")) rc = take_string(&s, &v[F_USER_ID]);
      else if (key_is(&k, "user")) rc = scan_user(&s, &v[F_USER_DOT_ID]);
      else rc = skip_value(&s, 1);
      if (rc < 0) return -EINVAL;
      skip_ws(&s);
      if (s.p >= s.end) return -EINVAL;
      if (*s.p == ',') {
        s.p++;
        skip_ws(&s);
        continue;
      }
      if (*s.p == '}') {
        s.p++;
        break;
      }
      return -EINVAL;
    }
  }
  skip_ws(&s);
  if (s.p != s.end) return -EINVAL; /* only whitespace may follow */
  if (!v[F_TYPE].set) return -EINVAL;
  /* One allocation holds every decoded value. */
  size_t need = 0;
  for (int i = 0; i < F_N; i++)
    if (v[i].set) need += v[i].len + 1;
  char *arena = malloc(need ? need : 1);
  if (!arena) return -ENOMEM;
  const char *out[F_N] = {0};
  char *w = arena;
  for (int i = 0; i < F_N; i++) {
    if (!v[i].set) continue;
    size_t n = unescape(v[i].raw, v[i].len, w);
    /* A "\u0000" would cut the value short here and in the record (C
     * strings), routing the event by a prefix of its field: count the field
     * as empty instead. */
    if (strlen(w) != n) w[0] = '\0';
    out[i] = w;
    w += n + 1;
  }
  f->json_ = arena;
  f->type = out[F_TYPE];
  /* Empty strings count as absent, as SNS attributes cannot be empty. A
   * type stays "" (the body has a string type; it only cannot route). */
  f->cid = out[F_CID] && *out[F_CID] ? out[F_CID] : NULL;
  f->channel_type = out[F_CHANNEL_TYPE] && *out[F_CHANNEL_TYPE] ? out[F_CHANNEL_TYPE] : NULL;
  f->channel_id = out[F_CHANNEL_ID] && *out[F_CHANNEL_ID] ? out[F_CHANNEL_ID] : NULL;
  f->user_id = out[F_USER_DOT_ID] && *out[F_USER_DOT_ID] ? out[F_USER_DOT_ID]
               : out[F_USER_ID] && *out[F_USER_ID] ? out[F_USER_ID]
                                                   : NULL;
  return 0;
}

void ingest_fields_free(ingest_fields *f) {
  free(f->json_);
  memset(f, 0, sizeof *f);
}

static uint64_t attr_size(const char *name, const char *value) {
  if (!value || !*value) return 0;
  return strlen(name) + strlen("String") + strlen(value);
}

uint64_t ingest_sns_size(const rq_record *r) {
  return r->body_len + attr_size("type", r->type) + attr_size("cid", r->cid) +
         attr_size("channel_type", r->channel_type) + attr_size("channel_id", r->channel_id) +
         attr_size("user_id", r->user_id) + attr_size("webhook_id", r->webhook_id);
}

/* ---- request handling ----------------------------------------------------- */

static int64_t wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void outcome(ingest *ing, int status, const char *reason) {
  if (status >= 400 && status < 500) ing->st.rejected++;
  else if (status >= 500) ing->st.unavailable++;
  if (ing->o.on_outcome) ing->o.on_outcome(ing->o.arg, status, reason);
}

static void answer_error(ingest *ing, http_request *req, int status, const char *reason,
                         const char *extra) {
  char body[128];
  int n = snprintf(body, sizeof body, "{\"ok\":false,\"error\":\"%s\"}", reason);
  http_respond(req, status, "application/json", extra, body, (size_t)n);
  outcome(ing, status, reason);
}

static void ireq_free(ingest_req *ir) {
  ingest_fields_free(&ir->f);
  free(ir->inflated);
  free(ir);
}

static void on_committed(commit_op *op) {
  ingest_req *ir = op->arg;
  ingest *ing = ir->ing;
  ing->st.in_flight--;
  if (op->result == 0 || op->result == RQ_DUPLICATE) {
    /* Durable (this batch's commit returned 0) or already stored. */
    http_respond(ir->req, 200, "application/json", NULL, OK_BODY, sizeof OK_BODY - 1);
    const char *reason = NULL;
    if (op->result == RQ_DUPLICATE) {
      ing->st.duplicates++;
      reason = "duplicate";
    } else if (op->kind == COMMIT_APPEND_DEAD) {
      ing->st.stored_dead++;
      reason = "too_large";
    } else {
      ing->st.stored++;
    }
    if (ing->unavailable_logged && op->result == 0) {
      rlog(LOG_INFO, "ingest storing again", NULL);
      ing->unavailable_logged = 0;
    }
    outcome(ing, 200, reason);
    if (op->result == 0 && op->kind == COMMIT_APPEND && ing->o.on_stored)
      ing->o.on_stored(ing->o.arg);
  } else if (op->result == RQ_TOO_BIG && op->rec.body_len > rq_max_body_bytes(ing->o.env)) {
    /* Larger than this queue can ever hold (RELAY_QUEUE_MAX_BYTES set
     * below about twice RELAY_MAX_BODY_BYTES): a 503 would have Stream
     * retry in vain and mark the relay as failing (/readyz) for one event.
     * (RQ_TOO_BIG can also mean a batch too large for one transaction:
     * that one is worth a retry, and stays a 503.) */
    char bytes[24];
    snprintf(bytes, sizeof bytes, "%zu", op->rec.body_len);
    rlog(LOG_WARN, "event larger than the queue can hold: 413", "#bytes", bytes, "key",
         "RELAY_QUEUE_MAX_BYTES", NULL);
    answer_error(ing, ir->req, 413, "too_large_for_queue", NULL);
  } else {
    if (!ing->unavailable_logged) {
      /* The committer logs the failing commit itself; this line says what
       * clients see, once per outage. */
      rlog(LOG_WARN, "ingest answering 503: commit failed", "error", rq_strerror(op->result),
           NULL);
      ing->unavailable_logged = 1;
    }
    answer_error(ing, ir->req, 503, "commit_failed", RETRY_AFTER_COMMIT);
  }
  ireq_free(ir);
}

static void on_prepare(uv_prepare_t *p) {
  ingest *ing = p->data;
  ing->wm_valid = 0;
}

static int over_watermark(ingest *ing) {
  if (!ing->wm_valid) {
    int rc = rq_over_watermark(ing->o.env);
    /* An error here is not a reason to refuse: the commit would tell. */
    ing->wm_over = rc == 1;
    ing->wm_valid = 1;
    if (ing->wm_over != ing->overloaded_logged) {
      if (ing->wm_over) rlog(LOG_WARN, "queue at high watermark: ingest answering 503", NULL);
      else rlog(LOG_INFO, "queue below high watermark: ingest accepting again", NULL);
      ing->overloaded_logged = ing->wm_over;
    }
  }
  return ing->wm_over;
}

static int is_ingest_path(const char *p) {
  return strcmp(p, "/") == 0 || strcmp(p, "/webhook") == 0 || strcmp(p, "/webhook/") == 0;
}

static void on_request(http_request *req, void *arg) {
  ingest *ing = arg;
  if (!is_ingest_path(req->path)) {
    answer_error(ing, req, 404, "not_found", NULL);
    return;
  }
  if (strcmp(req->method, "POST") != 0) {
    answer_error(ing, req, 405, "method_not_allowed", "Allow: POST\r\n");
    return;
  }
  if (over_watermark(ing)) {
    answer_error(ing, req, 503, "overloaded", RETRY_AFTER_WATERMARK);
    return;
  }
  ingest_req *ir = calloc(1, sizeof *ir);
  if (!ir) {
    answer_error(ing, req, 503, "out_of_memory", RETRY_AFTER_COMMIT);
    return;
  }
  ir->ing = ing;
  ir->req = req;
  const uint8_t *body = req->body;
  size_t body_len = req->body_len;
  const char *enc = http_request_header(req, "content-encoding");
  int gz = 0;
  if (enc && *enc && strcasecmp(enc, "identity") != 0) {
    if (strcasecmp(enc, "gzip") != 0 && strcasecmp(enc, "x-gzip") != 0) {
      ireq_free(ir);
      answer_error(ing, req, 415, "unsupported_encoding", NULL);
      return;
    }
    gz = 1;
  } else if (ingest_is_gzip(body, body_len)) {
    gz = 1;
  }
  if (gz) {
    int rc = ingest_gunzip(body, body_len, ing->cfg->max_body_bytes, &ir->inflated, &body_len);
    if (rc < 0) {
      ireq_free(ir);
      if (rc == -E2BIG) answer_error(ing, req, 413, "too_large_body", NULL);
      else if (rc == -ENOMEM) answer_error(ing, req, 503, "out_of_memory", RETRY_AFTER_COMMIT);
      else answer_error(ing, req, 400, "bad_gzip", NULL);
      return;
    }
    body = ir->inflated;
  }
  const char *api_key = http_request_header(req, "x-api-key");
  if (check_signature(ing, ing->cfg, api_key, http_request_header(req, "x-signature"), body,
                      body_len) != 0) {
    ireq_free(ir);
    answer_error(ing, req, 401, "bad_signature", NULL);
    return;
  }
  if (ingest_parse_event(body, body_len, &ir->f) != 0) {
    ireq_free(ir);
    answer_error(ing, req, 400, "bad_request", NULL);
    return;
  }
  int64_t now = wall_ms();
  /* Duplicates are found by the committer (RQ_DUPLICATE), not by a lookup
   * here: a reader can see a commit a moment before its meta page is
   * synced, and a 200 for a retry must not leave before the original is
   * durable. Through the committer it leaves after the next commit. */
  const char *wid = http_request_header(req, "x-webhook-id");
  if (wid && !*wid) wid = NULL;
  rq_record *rec = &ir->op.rec;
  rec->received_ms = now;
  rec->body = body;
  rec->body_len = body_len;
  rec->webhook_id = wid;
  rec->webhook_attempt = http_request_header(req, "x-webhook-attempt");
  rec->api_key = api_key;
  rec->type = ir->f.type;
  rec->cid = ir->f.cid;
  rec->channel_type = ir->f.channel_type;
  rec->channel_id = ir->f.channel_id;
  rec->user_id = ir->f.user_id;
  uint64_t sns = ingest_sns_size(rec);
  if (sns > ing->cfg->max_message_bytes) {
    ir->op.kind = COMMIT_APPEND_DEAD;
    ir->op.reason = "too_large";
    ir->op.code = "";
    snprintf(ir->too_large_msg, sizeof ir->too_large_msg,
             "message with attributes is %llu bytes, over RELAY_MAX_MESSAGE_BYTES (%llu)",
             (unsigned long long)sns, (unsigned long long)ing->cfg->max_message_bytes);
    ir->op.message = ir->too_large_msg;
    ir->op.now_ms = now;
  } else {
    ir->op.kind = COMMIT_APPEND;
  }
  ir->op.cb = on_committed;
  ir->op.arg = ir;
  ing->st.in_flight++;
  committer_submit(ing->o.commit, &ir->op);
}

static void on_refused(void *arg, int status) {
  ingest *ing = arg;
  const char *reason = status == 413   ? "too_large_body"
                       : status == 431 ? "headers_too_large"
                       : status == 408 ? "timeout"
                                       : "bad_request";
  outcome(ing, status, reason);
}

/* ---- lifecycle ------------------------------------------------------------ */

int ingest_new(ingest **out, uv_loop_t *loop, const ingest_options *o) {
  if (!o || !o->cfg || !o->env || !o->commit) return -EINVAL;
  ingest *ing = calloc(1, sizeof *ing);
  if (!ing) return -ENOMEM;
  ing->loop = loop;
  ing->o = *o;
  ing->cfg = o->cfg;
  const relay_config *c = o->cfg;
  http_server_options so = {
      .name = "ingest",
      .on_request = on_request,
      .arg = ing,
      .max_connections = c->http_max_connections,
      .max_header_bytes = c->http_max_header_bytes,
      .max_body_bytes = c->max_body_bytes,
      .header_timeout_ms = c->http_header_timeout_ms,
      .body_timeout_ms = c->http_body_timeout_ms,
      .idle_timeout_ms = c->http_idle_timeout_ms,
      .on_refused = on_refused,
  };
  int rc = http_server_new(&ing->srv, loop, &so);
  if (rc < 0) {
    free(ing);
    return rc;
  }
  const char *addr = o->listen ? o->listen : c->listen;
  struct sockaddr_storage ss;
  rc = cfg_parse_listen(addr, &ss);
  if (rc == 0) rc = http_server_listen(ing->srv, (const struct sockaddr *)&ss);
  if (rc < 0) {
    rlog(LOG_ERROR, "cannot listen", "key", "RELAY_LISTEN", "addr", addr, "error",
         uv_strerror(rc), NULL);
    /* The server's handles close on the next loop turn; ing goes with it. */
    http_server_close(ing->srv, 0, free, ing);
    return rc;
  }
  uv_prepare_init(loop, &ing->prepare);
  ing->prepare.data = ing;
  uv_prepare_start(&ing->prepare, on_prepare);
  uv_unref((uv_handle_t *)&ing->prepare);
  char port[16];
  snprintf(port, sizeof port, "%d", http_server_port(ing->srv));
  rlog(LOG_INFO, "ingest listening", "addr", addr, "#port", port, NULL);
  *out = ing;
  return 0;
}

int ingest_port(const ingest *ing) {
  return http_server_port(ing->srv);
}

void ingest_stop_accepting(ingest *ing) {
  http_server_stop_accepting(ing->srv);
}

static void finish(ingest *ing) {
  if (--ing->pending_closes > 0) return;
  void (*done)(void *) = ing->done;
  void *arg = ing->done_arg;
  mac_cache_free(ing);
  free(ing);
  if (done) done(arg);
}

static void on_srv_closed(void *arg) {
  finish(arg);
}

static void on_prepare_closed(uv_handle_t *h) {
  finish(h->data);
}

void ingest_close(ingest *ing, unsigned grace_ms, void (*done)(void *), void *arg) {
  if (ing->closing) return;
  ing->closing = 1;
  ing->done = done;
  ing->done_arg = arg;
  ing->pending_closes = 2;
  uv_close((uv_handle_t *)&ing->prepare, on_prepare_closed);
  http_server_close(ing->srv, grace_ms, on_srv_closed, ing);
}

void ingest_get_stats(const ingest *ing, ingest_stats *out) {
  *out = ing->st;
}
