/* AWS Signature Version 4 (see sigv4.h for the contract).
 *
 * Everything is built in growable string buffers and handed to libcrypto at
 * the end. The order of the steps follows the AWS documentation: canonical
 * request, string to sign, signing key (HMAC chain over date, region,
 * service), signature. Nothing here reads the clock or the environment.
 */
#include "sigv4.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
/* AWS rejects presigned URLs valid for more than seven days. */
#define SIGV4_MAX_EXPIRES 604800L

/* ---- growable string ---------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, cap;
  int oom; /* sticky: once an append fails, the buffer is unusable */
} sbuf;

static int sb_reserve(sbuf *b, size_t extra) {
  if (b->oom) return -1;
  if (extra > SIZE_MAX - b->len - 1) {
    b->oom = 1;
    return -1;
  }
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *np = realloc(b->p, cap);
  if (!np) {
    b->oom = 1;
    return -1;
  }
  b->p = np;
  b->cap = cap;
  return 0;
}

static void sb_addn(sbuf *b, const char *s, size_t n) {
  if (sb_reserve(b, n) != 0) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_add(sbuf *b, const char *s) {
  sb_addn(b, s, strlen(s));
}

static void sb_addc(sbuf *b, char c) {
  sb_addn(b, &c, 1);
}

/* Hands the NUL-terminated contents to the caller (an empty string when
 * nothing was appended), or NULL after an allocation failure. */
static char *sb_take(sbuf *b) {
  if (!b->oom && !b->p) sb_reserve(b, 0);
  if (b->oom) {
    free(b->p);
    b->p = NULL;
    return NULL;
  }
  b->p[b->len] = '\0';
  char *p = b->p;
  b->p = NULL;
  b->len = b->cap = 0;
  return p;
}

static void sb_free(sbuf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* ---- hashing ------------------------------------------------------------ */

static void hex_encode(const unsigned char *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = '\0';
}

static int sha256(const void *data, size_t len, unsigned char out[32]) {
  unsigned int n = 0;
  /* EVP_Digest wants a non-NULL pointer even for zero bytes. */
  if (!EVP_Digest(data ? data : "", len, out, &n, EVP_sha256(), NULL) || n != 32) return -EIO;
  return 0;
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65]) {
  unsigned char md[32];
  if (sha256(data, len, md) != 0) {
    /* Cannot report an error through this signature; an all-zero digest
     * never matches a real one, so a signature built on it is rejected. */
    memset(md, 0, sizeof md);
  }
  hex_encode(md, sizeof md, out);
}

static int hmac256(const void *key, size_t klen, const void *msg, size_t mlen,
                   unsigned char out[32]) {
  unsigned int n = 0;
  if (klen > (size_t)INT32_MAX) return -EINVAL;
  if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, out, &n) || n != 32)
    return -EIO;
  return 0;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request"). */
static int derive_key(const char *secret, const char *date, const char *region, const char *service,
                      unsigned char key[32]) {
  size_t slen = strlen(secret);
  if (slen > SIZE_MAX - 5) return -EINVAL;
  char *k0 = malloc(slen + 5);
  if (!k0) return -ENOMEM;
  memcpy(k0, "AWS4", 4);
  memcpy(k0 + 4, secret, slen + 1);
  unsigned char a[32], b[32];
  int rc = hmac256(k0, slen + 4, date, strlen(date), a);
  if (rc == 0) rc = hmac256(a, 32, region, strlen(region), b);
  if (rc == 0) rc = hmac256(b, 32, service, strlen(service), a);
  if (rc == 0) rc = hmac256(a, 32, "aws4_request", 12, key);
  OPENSSL_cleanse(k0, slen + 4);
  OPENSSL_cleanse(a, sizeof a);
  OPENSSL_cleanse(b, sizeof b);
  free(k0);
  return rc;
}

void sigv4_key_cache_clear(sigv4_key_cache *cache) {
  if (!cache) return;
  OPENSSL_cleanse(cache, sizeof *cache);
  cache->valid = 0;
}

/* The key changes once a day per region, service and secret, and deriving it
 * costs four HMACs; a publisher signing thousands of requests a second reuses
 * it. The secret itself is never stored, only its digest for comparison. */
static int signing_key(sigv4_key_cache *cache, const char *secret, const char *date,
                       const char *region, const char *service, unsigned char key[32]) {
  if (!cache) return derive_key(secret, date, region, service, key);
  unsigned char digest[32];
  int rc = sha256(secret, strlen(secret), digest);
  if (rc != 0) return rc;
  size_t rl = strlen(region), sl = strlen(service);
  int cacheable = rl < sizeof cache->region && sl < sizeof cache->service;
  if (cacheable && cache->valid && strcmp(cache->date, date) == 0 &&
      strcmp(cache->region, region) == 0 && strcmp(cache->service, service) == 0 &&
      CRYPTO_memcmp(cache->secret_digest, digest, sizeof digest) == 0) {
    memcpy(key, cache->key, 32);
    return 0;
  }
  rc = derive_key(secret, date, region, service, key);
  if (rc != 0) return rc;
  if (!cacheable) return 0; /* odd lengths: correct, just not cached */
  sigv4_key_cache_clear(cache);
  memcpy(cache->date, date, 9);
  memcpy(cache->region, region, rl + 1);
  memcpy(cache->service, service, sl + 1);
  memcpy(cache->secret_digest, digest, sizeof digest);
  memcpy(cache->key, key, 32);
  cache->valid = 1;
  return 0;
}

/* ---- encoding ----------------------------------------------------------- */

static int is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

static void sb_uri_encode(sbuf *b, const char *s, size_t len, int keep_slash) {
  static const char digits[] = "0123456789ABCDEF";
  if (sb_reserve(b, len > SIZE_MAX / 3 ? SIZE_MAX : len * 3) != 0) return;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (is_unreserved(c) || (keep_slash && c == '/')) {
      b->p[b->len++] = (char)c;
    } else {
      b->p[b->len++] = '%';
      b->p[b->len++] = digits[c >> 4];
      b->p[b->len++] = digits[c & 15];
    }
  }
  b->p[b->len] = '\0';
}

char *sigv4_uri_encode(const char *s, size_t len, int keep_slash) {
  sbuf b = {0};
  if (!s) len = 0;
  sb_uri_encode(&b, s ? s : "", len, keep_slash);
  return sb_take(&b);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes %XX in place; a '%' not followed by two hex digits stays literal
 * (and is then encoded as %25). '+' stays '+': SigV4 does not treat it as a
 * space, and AWS re-encodes it as %2B. Returns the new length. */
static size_t percent_decode(char *s, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int h, l;
    if (s[i] == '%' && i + 2 < len && (h = hexval(s[i + 1])) >= 0 && (l = hexval(s[i + 2])) >= 0) {
      s[o++] = (char)(h * 16 + l);
      i += 2;
    } else {
      s[o++] = s[i];
    }
  }
  return o;
}

typedef struct {
  char *name;
  char *value;
} qparam;

static int qparam_cmp(const void *a, const void *b) {
  const qparam *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : strcmp(x->value, y->value);
}

/* Decodes one "name=value" piece of a query and stores its re-encoded form. */
static int canon_param(const char *s, size_t len, qparam *out) {
  const char *eq = memchr(s, '=', len);
  size_t nlen = eq ? (size_t)(eq - s) : len;
  const char *v = eq ? eq + 1 : s + len;
  size_t vlen = eq ? len - nlen - 1 : 0;
  char *tmp = malloc(len + 1);
  if (!tmp) return -ENOMEM;
  memcpy(tmp, s, nlen);
  out->name = sigv4_uri_encode(tmp, percent_decode(tmp, nlen), 0);
  memcpy(tmp, v, vlen);
  out->value = sigv4_uri_encode(tmp, percent_decode(tmp, vlen), 0);
  free(tmp);
  return out->name && out->value ? 0 : -ENOMEM;
}

char *sigv4_canonical_query(const char *query) {
  if (!query || !*query) return sigv4_uri_encode("", 0, 0);
  size_t n = 1;
  for (const char *p = query; *p; p++) n += *p == '&';
  qparam *ps = calloc(n, sizeof *ps);
  if (!ps) return NULL;
  size_t np = 0;
  int rc = 0;
  const char *p = query;
  while (rc == 0) {
    const char *amp = strchr(p, '&');
    size_t len = amp ? (size_t)(amp - p) : strlen(p);
    if (len > 0) rc = canon_param(p, len, &ps[np++]); /* "a&&b" has no empty parameter */
    if (!amp) break;
    p = amp + 1;
  }
  char *res = NULL;
  if (rc == 0) {
    qsort(ps, np, sizeof *ps, qparam_cmp);
    sbuf b = {0};
    for (size_t i = 0; i < np; i++) {
      if (i) sb_addc(&b, '&');
      sb_add(&b, ps[i].name);
      sb_addc(&b, '=');
      sb_add(&b, ps[i].value);
    }
    res = sb_take(&b);
  }
  for (size_t i = 0; i < np; i++) {
    free(ps[i].name);
    free(ps[i].value);
  }
  free(ps);
  return res;
}

/* Segments are kept as (offset, length) into the input; ".." pops one. The
 * result keeps a trailing slash when the input ended in "/", "/." or "/..",
 * as RFC 3986's remove_dot_segments does. */
char *sigv4_canonical_path(const char *path) {
  if (!path) path = "";
  size_t len = strlen(path);
  size_t maxseg = len / 2 + 1;
  size_t *off = malloc(maxseg * sizeof *off), *lens = malloc(maxseg * sizeof *lens);
  if (!off || !lens) {
    free(off);
    free(lens);
    return NULL;
  }
  size_t nseg = 0;
  int trailing = 0;
  size_t i = 0;
  while (i < len) {
    if (path[i] == '/') {
      trailing = 1;
      i++;
      continue;
    }
    size_t start = i;
    while (i < len && path[i] != '/') i++;
    size_t sl = i - start;
    if (sl == 1 && path[start] == '.') {
      trailing = 1;
    } else if (sl == 2 && path[start] == '.' && path[start + 1] == '.') {
      if (nseg) nseg--;
      trailing = 1;
    } else {
      off[nseg] = start;
      lens[nseg] = sl;
      nseg++;
      trailing = 0;
    }
  }
  sbuf b = {0};
  sb_addc(&b, '/');
  for (size_t k = 0; k < nseg; k++) {
    if (k) sb_addc(&b, '/');
    sb_uri_encode(&b, path + off[k], lens[k], 0);
  }
  if (nseg && trailing) sb_addc(&b, '/');
  free(off);
  free(lens);
  return sb_take(&b);
}

/* ---- canonical headers -------------------------------------------------- */

typedef struct {
  char *name;  /* lowercased */
  char *value; /* trimmed, blanks collapsed */
  size_t order;
} hdr;

static int hdr_cmp(const void *a, const void *b) {
  const hdr *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  if (c) return c;
  return x->order < y->order ? -1 : x->order > y->order;
}

/* RFC 7230 token characters. */
static int is_tchar(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return 1;
  if (c >= 'a' && c <= 'z') return 1;
  if (c >= '0' && c <= '9') return 1;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int hdr_set(hdr *h, const char *name, const char *value, size_t order) {
  size_t nl = strlen(name), vl = strlen(value);
  h->order = order;
  h->name = malloc(nl + 1);
  h->value = malloc(vl + 1);
  if (!h->name || !h->value) return -ENOMEM;
  for (size_t i = 0; i <= nl; i++) {
    char c = name[i];
    h->name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  size_t o = 0;
  int blank = 0;
  for (size_t i = 0; i < vl; i++) {
    char c = value[i];
    if (c == ' ' || c == '\t') {
      blank = 1;
      continue;
    }
    if (blank && o) h->value[o++] = ' ';
    blank = 0;
    h->value[o++] = c;
  }
  h->value[o] = '\0';
  return 0;
}

static int check_header(const sigv4_header *h) {
  if (!h->name || !h->value || !*h->name) return -EINVAL;
  for (const char *p = h->name; *p; p++)
    if (!is_tchar((unsigned char)*p)) return -EINVAL;
  for (const char *p = h->value; *p; p++)
    if (*p == '\r' || *p == '\n') return -EINVAL;
  return 0;
}

/* ---- signing ------------------------------------------------------------ */

static int format_amz_date(time_t when, char out[17]) {
  struct tm tm;
  if (!gmtime_r(&when, &tm)) return -EINVAL;
  if (tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) return -EINVAL;
  int n = snprintf(out, 17, "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                   tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return n == 16 ? 0 : -EINVAL;
}

static int nonempty(const char *s) {
  return s && *s;
}

static int validate(const sigv4_request *req, const sigv4_credentials *creds, sigv4_result *out) {
  if (!req || !creds || !out) return -EINVAL;
  if (!nonempty(req->method) || !req->path || !nonempty(req->region) || !nonempty(req->service) ||
      !nonempty(creds->access_key_id) || !nonempty(creds->secret_access_key))
    return -EINVAL;
  if (req->nheaders && !req->headers) return -EINVAL;
  if (req->body_len && !req->body) return -EINVAL;
  /* These end up inside the scope and the request line, where a '/' or a
   * newline would change the meaning of what is signed. */
  for (const char *p = req->region; *p; p++)
    if (*p == '/' || *p == '\n' || *p == '\r' || *p == ' ') return -EINVAL;
  for (const char *p = req->service; *p; p++)
    if (*p == '/' || *p == '\n' || *p == '\r' || *p == ' ') return -EINVAL;
  for (const char *p = req->method; *p; p++)
    if (!is_tchar((unsigned char)*p)) return -EINVAL;
  for (const char *p = creds->access_key_id; *p; p++)
    if (*p == '/' || *p == ',' || *p == ' ' || *p == '\n' || *p == '\r') return -EINVAL;
  if (creds->session_token)
    for (const char *p = creds->session_token; *p; p++)
      if (*p == '\r' || *p == '\n') return -EINVAL;
  return 0;
}

typedef enum { MODE_HEADER, MODE_QUERY } sign_mode;

/* Builds the X-Amz-* parameters of a presigned request, up to (not
 * including) the signature. */
static void presign_params(sbuf *q, const sigv4_credentials *creds, const char *scope,
                           const char *amz_date, const char *signed_headers, long expires,
                           int token_signed) {
  char num[24];
  snprintf(num, sizeof num, "%ld", expires);
  sb_add(q, "X-Amz-Algorithm=" SIGV4_ALGORITHM "&X-Amz-Credential=");
  sb_uri_encode(q, creds->access_key_id, strlen(creds->access_key_id), 0);
  sb_add(q, "%2F");
  sb_uri_encode(q, scope, strlen(scope), 0);
  sb_add(q, "&X-Amz-Date=");
  sb_add(q, amz_date);
  sb_add(q, "&X-Amz-SignedHeaders=");
  sb_uri_encode(q, signed_headers, strlen(signed_headers), 0);
  sb_add(q, "&X-Amz-Expires=");
  sb_add(q, num);
  if (token_signed) {
    sb_add(q, "&X-Amz-Security-Token=");
    sb_uri_encode(q, creds->session_token, strlen(creds->session_token), 0);
  }
}

static int sign_common(const sigv4_request *req, const sigv4_credentials *creds,
                       sigv4_key_cache *cache, sign_mode mode, long expires, sigv4_result *out) {
  int rc = validate(req, creds, out);
  if (rc != 0) return rc;
  memset(out, 0, sizeof *out);
  if (mode == MODE_QUERY && (expires < 1 || expires > SIGV4_MAX_EXPIRES)) return -EINVAL;

  const int has_token = nonempty(creds->session_token);
  const int token_hdr_signed = mode == MODE_HEADER && has_token && req->sign_session_token;
  const int token_query_signed = mode == MODE_QUERY && has_token && req->sign_session_token;
  const int body_hdr = mode == MODE_HEADER && req->sign_body_header;
  int have_host = 0;
  for (size_t i = 0; i < req->nheaders; i++) {
    const sigv4_header *h = &req->headers[i];
    if ((rc = check_header(h)) != 0) return rc;
    if (strcasecmp(h->name, "host") == 0) have_host = 1;
    if (mode == MODE_HEADER && strcasecmp(h->name, "x-amz-date") == 0) return -EINVAL;
    if (mode == MODE_HEADER && has_token && strcasecmp(h->name, "x-amz-security-token") == 0)
      return -EINVAL;
    if (body_hdr && strcasecmp(h->name, "x-amz-content-sha256") == 0) return -EINVAL;
  }
  if (!have_host) return -EINVAL;

  char amz_date[17], date[9];
  if ((rc = format_amz_date(req->when, amz_date)) != 0) return rc;
  memcpy(date, amz_date, 8);
  date[8] = '\0';
  unsigned char body_md[32];
  if ((rc = sha256(req->body, req->body_len, body_md)) != 0) return rc;
  hex_encode(body_md, sizeof body_md, out->payload_hash);

  /* The caller's headers, then the ones the signer owns; hdr_set() records
   * the position so that repeated names keep their order when sorted. */
  const char *own_names[3], *own_values[3];
  size_t nown = 0;
  if (mode == MODE_HEADER) {
    own_names[nown] = "x-amz-date";
    own_values[nown++] = amz_date;
  }
  if (token_hdr_signed) {
    own_names[nown] = "x-amz-security-token";
    own_values[nown++] = creds->session_token;
  }
  if (body_hdr) {
    own_names[nown] = "x-amz-content-sha256";
    own_values[nown++] = out->payload_hash;
  }
  size_t nh = req->nheaders + nown;
  hdr *hs = calloc(nh, sizeof *hs);
  if (!hs) return -ENOMEM;
  size_t n = 0;
  for (; n < nh && rc == 0; n++) {
    if (n < req->nheaders)
      rc = hdr_set(&hs[n], req->headers[n].name, req->headers[n].value, n);
    else
      rc = hdr_set(&hs[n], own_names[n - req->nheaders], own_values[n - req->nheaders], n);
  }

  sbuf creq = {0}, sh = {0}, sts = {0}, q = {0}, scope = {0}, tmp = {0};
  char *cpath = NULL, *cquery = NULL;
  if (rc != 0) goto done;
  qsort(hs, n, sizeof *hs, hdr_cmp);

  /* Signed header list: unique names in sorted order. */
  for (size_t i = 0; i < n; i++) {
    if (i && strcmp(hs[i].name, hs[i - 1].name) == 0) continue;
    if (sh.len) sb_addc(&sh, ';');
    sb_add(&sh, hs[i].name);
  }
  sb_add(&scope, date);
  sb_addc(&scope, '/');
  sb_add(&scope, req->region);
  sb_addc(&scope, '/');
  sb_add(&scope, req->service);
  sb_add(&scope, "/aws4_request");
  if (sh.oom || scope.oom) {
    rc = -ENOMEM;
    goto done;
  }

  cpath = sigv4_canonical_path(req->path);
  if (mode == MODE_QUERY) {
    if (nonempty(req->query)) {
      sb_add(&q, req->query);
      sb_addc(&q, '&');
    }
    presign_params(&q, creds, scope.p, amz_date, sh.p, expires, token_query_signed);
    cquery = q.oom ? NULL : sigv4_canonical_query(q.p);
  } else {
    cquery = sigv4_canonical_query(req->query);
  }
  if (!cpath || !cquery) {
    rc = -ENOMEM;
    goto done;
  }

  sb_add(&creq, req->method);
  sb_addc(&creq, '\n');
  sb_add(&creq, cpath);
  sb_addc(&creq, '\n');
  sb_add(&creq, cquery);
  sb_addc(&creq, '\n');
  for (size_t i = 0; i < n; i++) {
    int cont = i && strcmp(hs[i].name, hs[i - 1].name) == 0;
    if (cont) {
      sb_addc(&creq, ',');
    } else {
      if (i) sb_addc(&creq, '\n');
      sb_add(&creq, hs[i].name);
      sb_addc(&creq, ':');
    }
    sb_add(&creq, hs[i].value);
  }
  sb_add(&creq, "\n\n");
  sb_add(&creq, sh.p);
  sb_addc(&creq, '\n');
  sb_add(&creq, out->payload_hash);
  if (creq.oom) {
    rc = -ENOMEM;
    goto done;
  }

  char creq_hash[65];
  unsigned char md[32];
  if ((rc = sha256(creq.p, creq.len, md)) != 0) goto done;
  hex_encode(md, 32, creq_hash);
  sb_add(&sts, SIGV4_ALGORITHM "\n");
  sb_add(&sts, amz_date);
  sb_addc(&sts, '\n');
  sb_add(&sts, scope.p);
  sb_addc(&sts, '\n');
  sb_add(&sts, creq_hash);
  if (sts.oom) {
    rc = -ENOMEM;
    goto done;
  }

  unsigned char key[32], sig[32];
  rc = signing_key(cache, creds->secret_access_key, date, req->region, req->service, key);
  if (rc == 0) rc = hmac256(key, sizeof key, sts.p, sts.len, sig);
  OPENSSL_cleanse(key, sizeof key);
  if (rc != 0) goto done;
  hex_encode(sig, 32, out->signature);
  memcpy(out->amz_date, amz_date, sizeof amz_date);

  if (mode == MODE_QUERY) {
    sb_add(&q, "&X-Amz-Signature=");
    sb_add(&q, out->signature);
    if (has_token && !token_query_signed) {
      sb_add(&q, "&X-Amz-Security-Token=");
      sb_uri_encode(&q, creds->session_token, strlen(creds->session_token), 0);
    }
    out->presigned_query = sb_take(&q);
    if (!out->presigned_query) rc = -ENOMEM;
  } else {
    sb_add(&tmp, SIGV4_ALGORITHM " Credential=");
    sb_add(&tmp, creds->access_key_id);
    sb_addc(&tmp, '/');
    sb_add(&tmp, scope.p);
    sb_add(&tmp, ", SignedHeaders=");
    sb_add(&tmp, sh.p);
    sb_add(&tmp, ", Signature=");
    sb_add(&tmp, out->signature);
    out->authorization = sb_take(&tmp);

    /* The headers to add live in one allocation so the result can be copied
     * by value without pointing into itself. */
    const char *names[3], *values[3];
    size_t na = 0;
    names[na] = "X-Amz-Date";
    values[na++] = amz_date;
    if (has_token) {
      names[na] = "X-Amz-Security-Token";
      values[na++] = creds->session_token;
    }
    if (body_hdr) {
      names[na] = "x-amz-content-sha256";
      values[na++] = out->payload_hash;
    }
    size_t offs[6];
    for (size_t i = 0; i < na; i++) {
      offs[2 * i] = tmp.len;
      sb_addn(&tmp, names[i], strlen(names[i]) + 1);
      offs[2 * i + 1] = tmp.len;
      sb_addn(&tmp, values[i], strlen(values[i]) + 1);
    }
    if (!out->authorization || tmp.oom) {
      rc = -ENOMEM;
    } else {
      out->add_storage = tmp.p;
      tmp.p = NULL;
      for (size_t i = 0; i < na; i++) {
        out->add[i].name = out->add_storage + offs[2 * i];
        out->add[i].value = out->add_storage + offs[2 * i + 1];
      }
      out->nadd = na;
    }
  }
  if (rc == 0) {
    out->canonical_request = sb_take(&creq);
    out->string_to_sign = sb_take(&sts);
    out->signed_headers = sb_take(&sh);
    if (!out->canonical_request || !out->string_to_sign || !out->signed_headers) rc = -ENOMEM;
  }

done:
  for (size_t i = 0; i < nh; i++) {
    free(hs[i].name);
    free(hs[i].value);
  }
  free(hs);
  free(cpath);
  free(cquery);
  sb_free(&creq);
  sb_free(&sh);
  sb_free(&sts);
  sb_free(&q);
  sb_free(&scope);
  sb_free(&tmp);
  if (rc != 0) sigv4_result_free(out);
  return rc;
}

int sigv4_sign(const sigv4_request *req, const sigv4_credentials *creds, sigv4_key_cache *cache,
               sigv4_result *out) {
  return sign_common(req, creds, cache, MODE_HEADER, 0, out);
}

int sigv4_presign(const sigv4_request *req, const sigv4_credentials *creds, sigv4_key_cache *cache,
                  long expires, sigv4_result *out) {
  return sign_common(req, creds, cache, MODE_QUERY, expires, out);
}

void sigv4_result_free(sigv4_result *r) {
  if (!r) return;
  free(r->canonical_request);
  free(r->string_to_sign);
  free(r->signed_headers);
  free(r->authorization);
  free(r->add_storage);
  free(r->presigned_query);
  memset(r, 0, sizeof *r);
}
