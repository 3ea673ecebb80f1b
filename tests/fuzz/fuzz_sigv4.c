/* Fuzz target for the SigV4 building blocks and the signer.
 *
 * Input: fields separated by NUL bytes, in this order (missing ones are
 * empty): flags, query, path, method, region, header name, header value,
 * session token, body (the rest, NULs included). The first flags byte picks
 * sign_body_header (bit 0), sign_session_token (bit 1) and presigning
 * (bit 2); the second byte, the time.
 *
 * Beyond "no crash, no sanitizer report", each call checks properties that
 * must hold for any input, and aborts when one does not:
 *  - uri_encode emits only unreserved characters and %XX (uppercase hex),
 *    and decoding it gives back the input;
 *  - the canonical query has the same alphabet plus '=' and '&', is sorted,
 *    and canonicalising it again changes nothing;
 *  - the canonical path starts with '/', has no empty, "." or ".." segment;
 *  - signing returns 0 or -EINVAL only; on success the signature is 64
 *    lowercase hex digits, and the cached and uncached signatures agree.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sigv4.h"

#define NFIELDS 9

static void require(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_sigv4: property violated: %s\n", what);
    abort();
  }
}

static int hexv(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1; /* lowercase hex is a violation here */
}

static int unreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

/* Checks the %XX / unreserved alphabet (plus `extra` characters) and, when
 * `orig` is given, that decoding yields exactly orig. */
static void check_encoded(const char *enc, const char *extra, const char *orig, size_t olen) {
  size_t o = 0;
  for (size_t i = 0; enc[i]; i++) {
    char c = enc[i];
    if (c == '%') {
      int h = hexv(enc[i + 1]), l = h >= 0 ? hexv(enc[i + 2]) : -1;
      require(h >= 0 && l >= 0, "%XX with uppercase hex");
      if (orig) require(o < olen && (unsigned char)orig[o] == (unsigned)(h * 16 + l), "round trip");
      o++;
      i += 2;
    } else {
      require(unreserved(c) || (extra && strchr(extra, c)), "encoded alphabet");
      if (orig) require(o < olen && orig[o] == c, "round trip");
      o++;
    }
  }
  if (orig) require(o == olen, "round trip length");
}

static void check_query(const char *q) {
  char *c = sigv4_canonical_query(q);
  if (!c) return; /* allocation failure */
  check_encoded(c, "=&", NULL, 0);
  /* Sorted by name, then value: compare neighbouring pairs. */
  const char *prev = NULL;
  size_t prevlen = 0;
  for (const char *p = c; *p;) {
    const char *amp = strchr(p, '&');
    size_t len = amp ? (size_t)(amp - p) : strlen(p);
    require(len > 0 && memchr(p, '=', len) != NULL, "every parameter has '='");
    if (prev) {
      const char *pe = memchr(prev, '=', prevlen), *ce = memchr(p, '=', len);
      size_t pn = (size_t)(pe - prev), cn = (size_t)(ce - p);
      int cmp = memcmp(prev, p, pn < cn ? pn : cn);
      if (cmp == 0 && pn != cn) cmp = pn < cn ? -1 : 1;
      if (cmp == 0) {
        size_t pv = prevlen - pn - 1, cv = len - cn - 1;
        cmp = memcmp(pe + 1, ce + 1, pv < cv ? pv : cv);
        if (cmp == 0) cmp = pv < cv ? -1 : pv > cv;
      }
      require(cmp <= 0, "sorted");
    }
    prev = p;
    prevlen = len;
    p = amp ? amp + 1 : p + len;
  }
  char *again = sigv4_canonical_query(c);
  if (again) require(strcmp(again, c) == 0, "canonical query is idempotent");
  free(again);
  free(c);
}

static void check_path(const char *path) {
  char *c = sigv4_canonical_path(path);
  if (!c) return;
  require(c[0] == '/', "path starts with '/'");
  check_encoded(c, "/", NULL, 0);
  require(strstr(c, "//") == NULL, "no empty segment");
  size_t n = strlen(c);
  require(strstr(c, "/./") == NULL && strstr(c, "/../") == NULL, "no dot segment");
  require(!(n >= 2 && strcmp(c + n - 2, "/.") == 0), "no trailing dot");
  require(!(n >= 3 && strcmp(c + n - 3, "/..") == 0), "no trailing dot-dot");
  free(c);
}

static void check_sign(const char *f[NFIELDS], const uint8_t *body, size_t body_len, unsigned flags,
                       unsigned t) {
  sigv4_header h[2] = {{"Host", "sns.us-east-1.amazonaws.com"}, {f[5], f[6]}};
  sigv4_request r = {
      .method = f[3],
      .path = f[2],
      .query = f[1],
      .headers = h,
      .nheaders = f[5][0] ? 2 : 1,
      .body = body,
      .body_len = body_len,
      .region = f[4],
      .service = "sns",
      .when = (time_t)1440938160 + (time_t)t * 3600 * 7,
      .sign_body_header = flags & 1,
      .sign_session_token = (flags >> 1) & 1,
  };
  sigv4_credentials c = {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", f[7]};
  static sigv4_key_cache cache; /* kept across inputs: exercises invalidation */
  int presign = (flags >> 2) & 1;
  sigv4_result a, b;
  int ra = presign ? sigv4_presign(&r, &c, &cache, 900, &a) : sigv4_sign(&r, &c, &cache, &a);
  require(ra == 0 || ra == -EINVAL || ra == -ENOMEM, "sign returns 0 or -EINVAL");
  int rb = presign ? sigv4_presign(&r, &c, NULL, 900, &b) : sigv4_sign(&r, &c, NULL, &b);
  require(ra == rb || ra == -ENOMEM || rb == -ENOMEM, "cached and uncached agree on errors");
  if (ra == 0 && rb == 0) {
    require(strlen(a.signature) == 64, "signature length");
    for (int i = 0; i < 64; i++)
      require((a.signature[i] >= '0' && a.signature[i] <= '9') ||
                  (a.signature[i] >= 'a' && a.signature[i] <= 'f'),
              "signature is lowercase hex");
    require(strcmp(a.signature, b.signature) == 0, "cached and uncached signatures agree");
    require(strcmp(a.canonical_request, b.canonical_request) == 0, "same canonical request");
    require(presign ? a.presigned_query != NULL : a.authorization != NULL, "output present");
  }
  if (ra == 0) sigv4_result_free(&a);
  if (rb == 0) sigv4_result_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* Copy with a terminating NUL so every field is a C string. */
  char *buf = malloc(size + 1);
  if (!buf) return 0;
  if (size) memcpy(buf, data, size);
  buf[size] = '\0';
  const char *f[NFIELDS];
  size_t pos = 0;
  int k = 0;
  for (; k < NFIELDS - 1 && pos <= size; k++) {
    f[k] = buf + pos;
    pos += strlen(buf + pos) + 1;
  }
  const uint8_t *body = (const uint8_t *)"";
  size_t body_len = 0;
  if (k == NFIELDS - 1 && pos <= size) {
    f[k] = buf + pos;
    body = (const uint8_t *)buf + pos;
    body_len = size - pos;
    k++;
  }
  for (; k < NFIELDS; k++) f[k] = buf + size; /* "" */

  unsigned flags = (unsigned char)f[0][0], t = f[0][0] ? (unsigned char)f[0][1] : 0;

  size_t whole = size;
  char *enc = sigv4_uri_encode((const char *)data, whole, 0);
  if (enc) check_encoded(enc, NULL, (const char *)data, whole);
  free(enc);
  enc = sigv4_uri_encode((const char *)data, whole, 1);
  if (enc) check_encoded(enc, "/", (const char *)data, whole);
  free(enc);

  check_query(f[1]);
  check_path(f[2]);
  check_sign(f, body, body_len, flags, t);
  free(buf);
  return 0;
}
