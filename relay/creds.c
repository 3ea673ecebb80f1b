/* AWS credential provider chain (see creds.h for the order and contract).
 *
 * Shape: the environment and options are copied once into an immutable
 * creds_cfg; every resolution (the first one in creds_provider_new, later
 * ones on the refresh thread) walks the chain from scratch with blocking
 * libcurl easy handles, so a rotated token file or credentials file is
 * picked up on the next refresh. The result is published under a mutex;
 * creds_get only copies it.
 *
 * Secrets: error strings are built from formats that never take a secret,
 * and as a second line of defence every message is scrubbed of each secret
 * the resolution touched (keys, tokens, file contents) before it leaves the
 * fetch, because AWS error messages are foreign text we do not control.
 */
#include "creds.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <expat.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "sigv4.h"

#define CREDS_MAX_RESPONSE (1024 * 1024)
#define CREDS_MAX_FILE (1024 * 1024)
#define CREDS_MAX_PROFILE_DEPTH 5
#define CREDS_ERR_MAX 512
#define CREDS_MAX_SECRETS 64
#define CREDS_REFRESH_MARGIN_S 300
/* Refresh retries: a broken metadata endpoint or token must not become a
 * request (and log line) a second. The base is also the shortest gap
 * creds_invalidate() can cause, so a storm of auth errors from AWS does not
 * turn into a storm of STS calls. */
#define CREDS_RETRY_BASE_MS 1000
#define CREDS_RETRY_MAX_MS 60000
/* A failure that goes on unchanged at the cap is logged at WARN again this
 * often, so it stays visible without flooding. */
#define CREDS_WARN_REPEAT_MS (10 * 60 * 1000)
/* Longest sleep of the refresh thread while a refresh is scheduled, so it
 * sees a wall-clock step (expiry is wall-clock time) without a caller. */
#define CREDS_WALL_CHECK_MS (60 * 1000)

#define IMDS_DEFAULT_ENDPOINT "http://169.254.169.254"
#define IMDS_IPV6_ENDPOINT "http://[fd00:ec2::254]"
#define CONTAINER_HOST "http://169.254.170.2"

enum {
  E_ACCESS_KEY_ID,
  E_SECRET_ACCESS_KEY,
  E_SESSION_TOKEN,
  E_WEB_IDENTITY_TOKEN_FILE,
  E_ROLE_ARN,
  E_ROLE_SESSION_NAME,
  E_SHARED_CREDENTIALS_FILE,
  E_CONFIG_FILE,
  E_PROFILE,
  E_HOME,
  E_CONTAINER_RELATIVE_URI,
  E_CONTAINER_FULL_URI,
  E_CONTAINER_TOKEN,
  E_CONTAINER_TOKEN_FILE,
  E_IMDS_DISABLED,
  E_IMDS_ENDPOINT,
  E_IMDS_ENDPOINT_MODE,
  E_ENDPOINT_URL_STS,
  E_ENDPOINT_URL,
  E_IGNORE_ENDPOINT_URLS,
  E_REGION,
  E_DEFAULT_REGION,
  E_COUNT
};

static const char *const env_names[E_COUNT] = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_PROFILE",
    "HOME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
};

/* Immutable after creds_provider_new: the refresh thread reads it without
 * locks, and the caller's getenv_fn is never called from that thread. */
typedef struct {
  char *env[E_COUNT]; /* NULL when unset or empty */
  char *key_id, *secret, *token;
  char *role_arn, *external_id, *region;
  long timeout_ms;
} creds_cfg;

typedef struct {
  const creds_cfg *cfg;
  atomic_int *stop;
  /* Copies of every secret seen, so scrubbing never reads a dead buffer. */
  char *secrets[CREDS_MAX_SECRETS];
  size_t nsecrets;
  char err[CREDS_ERR_MAX];
} fetch_ctx;

struct creds_provider {
  creds_cfg cfg;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  int thread_started;
  atomic_int stop;
  int invalidated;
  aws_creds cur;
  int have;
  char err[CREDS_ERR_MAX];
  int64_t next_refresh_ms; /* monotonic; 0 = nothing scheduled */
  /* The same moment on the wall clock, which expiry is measured on. The
   * two drift apart when the wall clock steps forward or the host was
   * suspended (CLOCK_MONOTONIC stops meanwhile); whichever comes first
   * triggers the refresh. 0 = nothing scheduled. */
  time_t refresh_wall;
  int64_t last_attempt_ms;
  uint64_t retry_base_ms, retry_max_ms;
  unsigned failures; /* failed refreshes in a row */
  /* The last failure logged at WARN: a repeat of it logs at DEBUG unless
   * the backoff stepped up or CREDS_WARN_REPEAT_MS passed. */
  int warned_rc;
  uint64_t warned_interval_ms;
  int64_t warned_at_ms;
  char warned_err[CREDS_ERR_MAX];
};

/* ---------------------------------------------------------------- utils */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void secure_zero(void *p, size_t n) {
  volatile unsigned char *v = p;
  while (n--) *v++ = 0;
}

static void free_secret(char *s) {
  if (s) {
    secure_zero(s, strlen(s));
    free(s);
  }
}

static int copy_str(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap) return -1;
  memcpy(dst, src, n + 1);
  return 0;
}

/* snprintf without -Wformat-truncation noise: every caller accepts a cut. */
static void bfmt(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void bfmt(char *dst, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(dst, cap, fmt, ap);
  va_end(ap);
}

static void add_secret(fetch_ctx *fc, const char *s) {
  if (!s || strlen(s) < 4 || fc->nsecrets >= CREDS_MAX_SECRETS) return;
  for (size_t i = 0; i < fc->nsecrets; i++)
    if (strcmp(fc->secrets[i], s) == 0) return;
  char *c = strdup(s);
  if (c) fc->secrets[fc->nsecrets++] = c;
}

static int set_err(fetch_ctx *fc, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_err(fetch_ctx *fc, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(fc->err, sizeof fc->err, fmt, ap);
  va_end(ap);
  return rc;
}

/* Prepends context ("profile 'x': ") to the current error. */
static void prefix_err(fetch_ctx *fc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void prefix_err(fetch_ctx *fc, const char *fmt, ...) {
  char pre[256], old[CREDS_ERR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  memcpy(old, fc->err, sizeof old);
  bfmt(fc->err, sizeof fc->err, "%s%s", pre, old);
}

/* Replaces every occurrence of each secret with "***". Short strings are
 * skipped: redacting "a" would shred the message without protecting anything. */
static void scrub(char *msg, size_t cap, char *const *secrets, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const char *s = secrets[i];
    size_t sl = s ? strlen(s) : 0;
    if (sl < 4) continue;
    char *hit;
    while ((hit = memmem(msg, strlen(msg), s, sl)) != NULL) {
      size_t tail = strlen(hit + sl) + 1;
      memcpy(hit, "***", 3);
      memmove(hit + 3, hit + sl, tail);
    }
    /* A message cut at the buffer end may hold the start of a secret. */
    size_t ml = strlen(msg);
    for (size_t k = sl - 1 < ml ? sl - 1 : ml; k >= 4; k--) {
      if (memcmp(msg + ml - k, s, k) == 0) {
        memcpy(msg + ml - k, "***", 4);
        break;
      }
    }
  }
  msg[cap - 1] = '\0';
}

static const char *env(const fetch_ctx *fc, int idx) {
  return fc->cfg->env[idx];
}

static int env_true(const char *v) {
  return v && strcasecmp(v, "true") == 0;
}

/* URL without query string and userinfo, for messages. */
static void display_url(const char *url, char *out, size_t cap) {
  char tmp[512];
  size_t n = strcspn(url, "?#");
  if (n >= sizeof tmp) n = sizeof tmp - 1;
  memcpy(tmp, url, n);
  tmp[n] = '\0';
  char *scheme = strstr(tmp, "://");
  if (scheme) {
    char *host = scheme + 3;
    char *slash = strchr(host, '/');
    char *at = strchr(host, '@');
    if (at && (!slash || at < slash)) memmove(host, at + 1, strlen(at + 1) + 1);
  }
  bfmt(out, cap, "%s", tmp);
}

/* Reads a small file whole. Returns 0, -errno, or -EFBIG. */
static int read_small_file(const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return -errno;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  if (!buf) {
    fclose(f);
    return -ENOMEM;
  }
  for (;;) {
    if (n + 1 >= cap) {
      if (cap >= CREDS_MAX_FILE) {
        free_secret(buf);
        fclose(f);
        return -EFBIG;
      }
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free_secret(buf);
        fclose(f);
        return -ENOMEM;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - n - 1, f);
    n += r;
    buf[n] = '\0';
    if (r == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free_secret(buf);
    return -EIO;
  }
  *out = buf;
  if (len) *len = n;
  return 0;
}

static char *trim(char *s) {
  while (*s && isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
  return s;
}

/* Reads a token file (web identity, container authorization). The token is
 * registered as a secret; the caller frees it with free_secret. */
static int read_token_file(fetch_ctx *fc, const char *what, const char *path, char **out) {
  char *buf = NULL;
  int rc = read_small_file(path, &buf, NULL);
  if (rc < 0)
    return set_err(fc, rc == -EFBIG ? -EINVAL : rc, "%s %s: %s", what, path,
                   rc == -EFBIG ? "file too large" : strerror(-rc));
  char *t = trim(buf);
  if (!*t) {
    free(buf);
    return set_err(fc, -EINVAL, "%s %s is empty", what, path);
  }
  memmove(buf, t, strlen(t) + 1);
  add_secret(fc, buf);
  *out = buf;
  return 0;
}

/* "2026-11-28T03:34:42Z", optional fraction, "Z" or "+hh:mm"/"-hh:mm". */
static int parse_iso8601(const char *s, time_t *out) {
  int v[6];
  static const char seps[] = "--T::";
  const char *p = s;
  static const int widths[6] = {4, 2, 2, 2, 2, 2};
  for (int i = 0; i < 6; i++) {
    int x = 0;
    for (int d = 0; d < widths[i]; d++, p++) {
      if (!isdigit((unsigned char)*p)) return -1;
      x = x * 10 + (*p - '0');
    }
    v[i] = x;
    if (i < 5) {
      if (*p != seps[i] && !(i == 2 && *p == 't')) return -1;
      p++;
    }
  }
  if (*p == '.') {
    p++;
    if (!isdigit((unsigned char)*p)) return -1;
    while (isdigit((unsigned char)*p)) p++;
  }
  long off = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p == '-' ? -1 : 1;
    p++;
    if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1]) || p[2] != ':' ||
        !isdigit((unsigned char)p[3]) || !isdigit((unsigned char)p[4]))
      return -1;
    off = sign *
          (((p[0] - '0') * 10 + (p[1] - '0')) * 3600L + ((p[3] - '0') * 10 + (p[4] - '0')) * 60L);
    p += 5;
  } else {
    return -1;
  }
  if (*p) return -1;
  if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 60)
    return -1;
  struct tm tm = {0};
  tm.tm_year = v[0] - 1900;
  tm.tm_mon = v[1] - 1;
  tm.tm_mday = v[2];
  tm.tm_hour = v[3];
  tm.tm_min = v[4];
  tm.tm_sec = v[5];
  time_t t = timegm(&tm);
  if (t == (time_t)-1) return -1;
  *out = t - off;
  return 0;
}

/* ---------------------------------------------------------------- buffers */

typedef struct {
  char *data;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + n + 1) nc *= 2;
    char *nd = realloc(b->data, nc);
    if (!nd) {
      b->oom = 1;
      return;
    }
    b->data = nd;
    b->cap = nc;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void sb_free_secret(sbuf *b) {
  if (b->data) secure_zero(b->data, b->cap);
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* Appends "&name=value" form-encoded (application/x-www-form-urlencoded with
 * RFC 3986 unreserved characters kept, which is what AWS query APIs expect). */
static void form_add(sbuf *b, const char *name, const char *value) {
  static const char hex[] = "0123456789ABCDEF";
  if (b->len) sb_add(b, "&", 1);
  sb_add(b, name, strlen(name));
  sb_add(b, "=", 1);
  for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
    if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
      sb_add(b, (const char *)p, 1);
    } else {
      char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
      sb_add(b, e, 3);
    }
  }
}

/* ---------------------------------------------------------------- HTTP */

static size_t http_write_cb(char *ptr, size_t sz, size_t nm, void *ud) {
  sbuf *b = ud;
  size_t n = sz * nm;
  if (b->len + n > CREDS_MAX_RESPONSE) return 0; /* aborts with CURLE_WRITE_ERROR */
  sb_add(b, ptr, n);
  return b->oom ? 0 : n;
}

static int http_progress_cb(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
  (void)a, (void)b, (void)c, (void)d;
  return atomic_load((atomic_int *)ud) ? 1 : 0;
}

typedef struct {
  const char *what;   /* "STS", "IMDS", "container endpoint" for messages */
  const char *method; /* "GET", "PUT", "POST" */
  const char *url;
  struct curl_slist *headers;
  const char *body; /* POST/PUT body or NULL */
  size_t body_len;
  long timeout_ms;
  int direct; /* bypass proxies: link-local metadata endpoints */
} http_req;

/* One blocking request. Returns 0 with *status and the body in out (which the
 * caller frees), or a negative errno with fc->err set. */
static int http_call(fetch_ctx *fc, const http_req *rq, long *status, sbuf *out) {
  char shown[300];
  display_url(rq->url, shown, sizeof shown);
  CURL *h = curl_easy_init();
  if (!h) return set_err(fc, -ENOMEM, "%s: cannot create HTTP handle", rq->what);
  char cerr[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(h, CURLOPT_URL, rq->url);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, rq->timeout_ms);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, rq->timeout_ms);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_write_cb);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, http_progress_cb);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, fc->stop);
  if (rq->direct) curl_easy_setopt(h, CURLOPT_PROXY, "");
  if (rq->headers) curl_easy_setopt(h, CURLOPT_HTTPHEADER, rq->headers);
  if (strcmp(rq->method, "POST") == 0) {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)rq->body_len);
  } else if (strcmp(rq->method, "PUT") == 0) {
    /* A PUT without body: POSTFIELDS + custom method keeps it simple. */
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
  }
  CURLcode cc = curl_easy_perform(h);
  int rc = 0;
  if (cc == CURLE_OK) {
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (out->oom) rc = set_err(fc, -ENOMEM, "%s %s: out of memory", rq->what, shown);
  } else {
    switch (cc) {
      case CURLE_OPERATION_TIMEDOUT:
        rc = set_err(fc, -ETIMEDOUT, "%s %s: no answer within %ld ms", rq->what, shown,
                     rq->timeout_ms);
        break;
      case CURLE_COULDNT_CONNECT:
        rc = set_err(fc, -ECONNREFUSED, "%s %s: cannot connect (%s)", rq->what, shown,
                     cerr[0] ? cerr : curl_easy_strerror(cc));
        break;
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_RESOLVE_PROXY:
        rc = set_err(fc, -EHOSTUNREACH, "%s %s: cannot resolve host", rq->what, shown);
        break;
      case CURLE_ABORTED_BY_CALLBACK:
        rc = set_err(fc, -ECANCELED, "%s %s: cancelled (provider shutting down)", rq->what, shown);
        break;
      case CURLE_WRITE_ERROR:
        rc = set_err(fc, out->oom ? -ENOMEM : -EPROTO, "%s %s: response larger than %d bytes",
                     rq->what, shown, CREDS_MAX_RESPONSE);
        break;
      case CURLE_URL_MALFORMAT:
      case CURLE_UNSUPPORTED_PROTOCOL:
        rc = set_err(fc, -EINVAL, "%s %s: invalid URL", rq->what, shown);
        break;
      case CURLE_GOT_NOTHING:
      case CURLE_RECV_ERROR:
      case CURLE_WEIRD_SERVER_REPLY:
      case CURLE_PARTIAL_FILE:
        rc = set_err(fc, -EPROTO, "%s %s: broken HTTP answer (%s)", rq->what, shown,
                     curl_easy_strerror(cc));
        break;
      default:
        rc = set_err(fc, -EIO, "%s %s: %s", rq->what, shown,
                     cerr[0] ? cerr : curl_easy_strerror(cc));
        break;
    }
  }
  curl_easy_cleanup(h);
  return rc;
}

/* ---------------------------------------------------------------- STS XML */

enum { X_NONE, X_KEY, X_SECRET, X_TOKEN, X_EXPIRATION, X_CODE, X_MESSAGE };

typedef struct {
  XML_Parser parser;
  char stack[12][48];
  int depth;
  int target;
  int overflow;
  int doctype;
  char root[64];
  char key[128], secret[128], token[4096], expiration[64], code[128], message[384];
  size_t lens[7];
} sts_xml;

static const char *local_name(const char *name) {
  const char *c = strrchr(name, ':');
  return c ? c + 1 : name;
}

static char *xml_field(sts_xml *x, int t, size_t *cap) {
  switch (t) {
    case X_KEY:
      *cap = sizeof x->key;
      return x->key;
    case X_SECRET:
      *cap = sizeof x->secret;
      return x->secret;
    case X_TOKEN:
      *cap = sizeof x->token;
      return x->token;
    case X_EXPIRATION:
      *cap = sizeof x->expiration;
      return x->expiration;
    case X_CODE:
      *cap = sizeof x->code;
      return x->code;
    case X_MESSAGE:
      *cap = sizeof x->message;
      return x->message;
    default:
      *cap = 0;
      return NULL;
  }
}

static void XMLCALL sts_start(void *ud, const XML_Char *name, const XML_Char **attrs) {
  (void)attrs;
  sts_xml *x = ud;
  const char *n = local_name(name);
  const char *parent = x->depth > 0 && x->depth <= 12 ? x->stack[x->depth - 1] : "";
  if (x->depth == 0) snprintf(x->root, sizeof x->root, "%s", n);
  if (x->depth < 12) snprintf(x->stack[x->depth], sizeof x->stack[0], "%s", n);
  x->depth++;
  x->target = X_NONE;
  if (strcmp(parent, "Credentials") == 0) {
    if (strcmp(n, "AccessKeyId") == 0)
      x->target = X_KEY;
    else if (strcmp(n, "SecretAccessKey") == 0)
      x->target = X_SECRET;
    else if (strcmp(n, "SessionToken") == 0)
      x->target = X_TOKEN;
    else if (strcmp(n, "Expiration") == 0)
      x->target = X_EXPIRATION;
  } else if (strcmp(parent, "Error") == 0) {
    if (strcmp(n, "Code") == 0)
      x->target = X_CODE;
    else if (strcmp(n, "Message") == 0)
      x->target = X_MESSAGE;
  }
  if (x->target != X_NONE) {
    size_t cap;
    char *f = xml_field(x, x->target, &cap);
    f[0] = '\0';
    x->lens[x->target] = 0;
  }
}

static void XMLCALL sts_end(void *ud, const XML_Char *name) {
  (void)name;
  sts_xml *x = ud;
  x->depth--;
  x->target = X_NONE;
}

static void XMLCALL sts_text(void *ud, const XML_Char *s, int len) {
  sts_xml *x = ud;
  if (x->target <= X_NONE || x->target > X_MESSAGE || len <= 0) return;
  size_t cap;
  char *f = xml_field(x, x->target, &cap);
  size_t *l = &x->lens[x->target];
  size_t n = (size_t)len;
  if (*l + n >= cap) {
    /* A truncated message is fine; a truncated key would be silently wrong. */
    if (x->target != X_MESSAGE) x->overflow = 1;
    n = *l + 1 < cap ? cap - 1 - *l : 0;
  }
  memcpy(f + *l, s, n);
  *l += n;
  f[*l] = '\0';
}

static void XMLCALL sts_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                                const XML_Char *pubid, int has_internal) {
  (void)name, (void)sysid, (void)pubid, (void)has_internal;
  sts_xml *x = ud;
  /* STS never sends a DTD; refusing one closes the door on entity tricks. */
  x->doctype = 1;
  XML_StopParser(x->parser, XML_FALSE);
}

/* Keeps only printable ASCII so foreign text cannot forge log lines. */
static void sanitize(char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) *s = ' ';
}

static int sts_parse(fetch_ctx *fc, const char *what, long status, const sbuf *body,
                     aws_creds *out) {
  sts_xml *x = calloc(1, sizeof *x);
  if (!x) return set_err(fc, -ENOMEM, "%s: out of memory", what);
  XML_Parser p = XML_ParserCreate("UTF-8");
  if (!p) {
    free(x);
    return set_err(fc, -ENOMEM, "%s: out of memory", what);
  }
  x->parser = p;
  XML_SetUserData(p, x);
  XML_SetElementHandler(p, sts_start, sts_end);
  XML_SetCharacterDataHandler(p, sts_text);
  XML_SetStartDoctypeDeclHandler(p, sts_doctype);
  int ok = XML_Parse(p, body->data ? body->data : "", (int)body->len, XML_TRUE) == XML_STATUS_OK;
  XML_ParserFree(p);
  int rc;
  if (!ok || x->doctype || !x->root[0]) {
    rc = set_err(fc, status >= 400 ? -EACCES : -EPROTO,
                 "%s: HTTP %ld with an unparseable body (not STS XML)", what, status);
  } else if (x->code[0] || strcmp(x->root, "ErrorResponse") == 0 || status >= 300) {
    sanitize(x->code);
    sanitize(x->message);
    rc =
        set_err(fc, -EACCES, "%s: HTTP %ld %s%s%s", what, status,
                x->code[0] ? x->code : "error without code", x->message[0] ? ": " : "", x->message);
  } else if (x->overflow) {
    rc = set_err(fc, -EPROTO, "%s: credential field too long", what);
  } else if (!x->key[0] || !x->secret[0] || !x->token[0] || !x->expiration[0]) {
    rc = set_err(fc, -EPROTO, "%s: answer lacks %s", what,
                 !x->key[0]      ? "AccessKeyId"
                 : !x->secret[0] ? "SecretAccessKey"
                 : !x->token[0]  ? "SessionToken"
                                 : "Expiration");
  } else if (parse_iso8601(x->expiration, &out->expiration) < 0) {
    rc = set_err(fc, -EPROTO, "%s: unparseable Expiration", what);
  } else {
    memcpy(out->access_key_id, x->key, sizeof x->key);
    memcpy(out->secret_access_key, x->secret, sizeof x->secret);
    memcpy(out->session_token, x->token, sizeof x->token);
    rc = 0;
  }
  secure_zero(x, sizeof *x);
  free(x);
  return rc;
}

/* ---------------------------------------------------------------- STS */

typedef struct {
  const char *label; /* context for messages */
  const char *role_arn;
  const char *session_name; /* NULL = "relay-<time>" */
  const char *external_id;  /* AssumeRole only */
  long duration_s;          /* 0 = STS default */
  const char *web_token;    /* set: AssumeRoleWithWebIdentity (unsigned) */
  const aws_creds *signer;  /* AssumeRole: the source credentials */
} sts_params;

static int valid_region(const char *r) {
  if (!r || !*r || strlen(r) > 30) return 0;
  for (; *r; r++)
    if (!islower((unsigned char)*r) && !isdigit((unsigned char)*r) && *r != '-') return 0;
  return 1;
}

static int sts_endpoint(fetch_ctx *fc, char *url, size_t ucap, char *region, size_t rcap) {
  const creds_cfg *c = fc->cfg;
  const char *r = c->region          ? c->region
                  : c->env[E_REGION] ? c->env[E_REGION]
                                     : c->env[E_DEFAULT_REGION];
  if (r && !valid_region(r)) return set_err(fc, -EINVAL, "invalid AWS region name");
  snprintf(region, rcap, "%s", r ? r : "us-east-1");
  const char *ep = NULL;
  if (!env_true(c->env[E_IGNORE_ENDPOINT_URLS]))
    ep = c->env[E_ENDPOINT_URL_STS] ? c->env[E_ENDPOINT_URL_STS] : c->env[E_ENDPOINT_URL];
  if (ep) {
    if (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0)
      return set_err(fc, -EINVAL, "STS endpoint override must be an http(s) URL");
    snprintf(url, ucap, "%s", ep);
  } else if (r) {
    snprintf(url, ucap, "https://sts.%s.amazonaws.com%s", r,
             strncmp(r, "cn-", 3) == 0 ? ".cn" : "");
  } else {
    snprintf(url, ucap, "https://sts.amazonaws.com");
  }
  return 0;
}

/* The Host header value and path as curl will send them, for signing. */
static int url_host_path(const char *url, char *host, size_t hcap, char *path, size_t pcap) {
  CURLU *u = curl_url();
  if (!u) return -ENOMEM;
  int rc = -EINVAL;
  char *h = NULL, *port = NULL, *pa = NULL;
  if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PATH, &pa, 0) == CURLUE_OK) {
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK) port = NULL;
    int n = port ? snprintf(host, hcap, "%s:%s", h, port) : snprintf(host, hcap, "%s", h);
    int m = snprintf(path, pcap, "%s", pa && *pa ? pa : "/");
    if (n > 0 && (size_t)n < hcap && m > 0 && (size_t)m < pcap) rc = 0;
  }
  curl_free(h);
  curl_free(port);
  curl_free(pa);
  curl_url_cleanup(u);
  return rc;
}

static int sts_call(fetch_ctx *fc, const sts_params *sp, aws_creds *out) {
  const char *action = sp->web_token ? "AssumeRoleWithWebIdentity" : "AssumeRole";
  char url[512], region[40], what[160];
  int rc = sts_endpoint(fc, url, sizeof url, region, sizeof region);
  if (rc < 0) return rc;
  char shown[300];
  display_url(url, shown, sizeof shown);
  bfmt(what, sizeof what, "STS %s at %s", action, shown);

  char session[80];
  if (sp->session_name)
    snprintf(session, sizeof session, "%s", sp->session_name);
  else
    snprintf(session, sizeof session, "relay-%lld", (long long)time(NULL));

  sbuf body = {0};
  form_add(&body, "Action", action);
  form_add(&body, "Version", "2011-06-15");
  form_add(&body, "RoleArn", sp->role_arn);
  form_add(&body, "RoleSessionName", session);
  if (sp->duration_s > 0) {
    char d[24];
    snprintf(d, sizeof d, "%ld", sp->duration_s);
    form_add(&body, "DurationSeconds", d);
  }
  if (sp->web_token)
    form_add(&body, "WebIdentityToken", sp->web_token);
  else if (sp->external_id)
    form_add(&body, "ExternalId", sp->external_id);
  if (body.oom) {
    sb_free_secret(&body);
    return set_err(fc, -ENOMEM, "%s: out of memory", what);
  }

  static const char ctype[] = "application/x-www-form-urlencoded; charset=utf-8";
  struct curl_slist *hdrs = NULL;
  sbuf line = {0};
  hdrs = curl_slist_append(hdrs, "Content-Type: application/x-www-form-urlencoded; charset=utf-8");
  hdrs = curl_slist_append(hdrs, "Accept: text/xml");
  /* Tokens can exceed curl's 1 KiB Expect: 100-continue threshold; the
   * extra round trip buys nothing for a request this small. */
  hdrs = curl_slist_append(hdrs, "Expect:");
  sigv4_result sig;
  int signed_ok = 0;
  if (!sp->web_token) {
    char host[300], path[256];
    if (url_host_path(url, host, sizeof host, path, sizeof path) < 0) {
      rc = set_err(fc, -EINVAL, "%s: invalid endpoint URL", what);
      goto out;
    }
    sigv4_header sh[2] = {{"host", host}, {"content-type", ctype}};
    sigv4_request req = {.method = "POST",
                         .path = path,
                         .query = NULL,
                         .headers = sh,
                         .nheaders = 2,
                         .body = (const uint8_t *)body.data,
                         .body_len = body.len,
                         .region = region,
                         .service = "sts",
                         .when = time(NULL),
                         .sign_body_header = 0,
                         .sign_session_token = 1};
    sigv4_credentials sc = {sp->signer->access_key_id, sp->signer->secret_access_key,
                            sp->signer->session_token[0] ? sp->signer->session_token : NULL};
    int src = sigv4_sign(&req, &sc, NULL, &sig);
    if (src < 0) {
      rc = set_err(fc, src == -ENOMEM ? -ENOMEM : -EINVAL, "%s: cannot sign request (%s)", what,
                   strerror(-src));
      goto out;
    }
    signed_ok = 1;
    sb_add(&line, "Host: ", 6);
    sb_add(&line, host, strlen(host));
    hdrs = curl_slist_append(hdrs, line.data ? line.data : "");
    for (size_t i = 0; i < sig.nadd; i++) {
      line.len = 0;
      sb_add(&line, sig.add[i].name, strlen(sig.add[i].name));
      sb_add(&line, ": ", 2);
      sb_add(&line, sig.add[i].value, strlen(sig.add[i].value));
      hdrs = curl_slist_append(hdrs, line.data ? line.data : "");
    }
    line.len = 0;
    sb_add(&line, "Authorization: ", 15);
    sb_add(&line, sig.authorization, strlen(sig.authorization));
    hdrs = curl_slist_append(hdrs, line.data ? line.data : "");
    if (line.oom || !hdrs) {
      rc = set_err(fc, -ENOMEM, "%s: out of memory", what);
      goto out;
    }
  }
  {
    char tr[64];
    snprintf(tr, sizeof tr, "STS %s", action);
    http_req rq = {.what = tr,
                   .method = "POST",
                   .url = url,
                   .headers = hdrs,
                   .body = body.data,
                   .body_len = body.len,
                   .timeout_ms = fc->cfg->timeout_ms ? fc->cfg->timeout_ms : 5000};
    long status = 0;
    sbuf resp = {0};
    rc = http_call(fc, &rq, &status, &resp);
    if (rc == 0) rc = sts_parse(fc, what, status, &resp, out);
    sb_free_secret(&resp);
  }
out:
  if (signed_ok) sigv4_result_free(&sig);
  curl_slist_free_all(hdrs);
  sb_free_secret(&line);
  sb_free_secret(&body);
  if (rc == 0) {
    add_secret(fc, out->secret_access_key);
    add_secret(fc, out->session_token);
  } else {
    prefix_err(fc, "%s: ", sp->label);
  }
  return rc;
}

/* ---------------------------------------------------------------- JSON */

static int json_str(json_object *o, const char *key, const char **out) {
  json_object *v;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v)) return 0;
  if (!json_object_is_type(v, json_type_string)) return -1;
  *out = json_object_get_string(v);
  return 0;
}

/* Container and IMDS answers share one JSON shape. */
static int json_creds(fetch_ctx *fc, const char *what, const sbuf *b, aws_creds *out) {
  json_tokener *tok = json_tokener_new();
  if (!tok) return set_err(fc, -ENOMEM, "%s: out of memory", what);
  json_object *o = b->len ? json_tokener_parse_ex(tok, b->data, (int)b->len) : NULL;
  int bad = !o || json_tokener_get_error(tok) != json_tokener_success ||
            !json_object_is_type(o, json_type_object);
  if (!bad) {
    /* Anything but whitespace after the object is garbage too. */
    for (size_t i = json_tokener_get_parse_end(tok); i < b->len; i++)
      if (!isspace((unsigned char)b->data[i])) bad = 1;
  }
  json_tokener_free(tok);
  int rc;
  const char *key, *secret, *token, *exp, *code;
  if (bad) {
    rc = set_err(fc, -EPROTO, "%s: answer is not a JSON object", what);
  } else if (json_str(o, "AccessKeyId", &key) < 0 || json_str(o, "SecretAccessKey", &secret) < 0 ||
             json_str(o, "Token", &token) < 0 || json_str(o, "Expiration", &exp) < 0 ||
             json_str(o, "Code", &code) < 0) {
    rc = set_err(fc, -EPROTO, "%s: a credential field is not a string", what);
  } else {
    add_secret(fc, secret);
    add_secret(fc, token);
    if (code && strcmp(code, "Success") != 0) {
      char c[96];
      snprintf(c, sizeof c, "%s", code);
      sanitize(c);
      rc = set_err(fc, -EACCES, "%s: Code %s", what, c);
    } else if (!key || !*key || !secret || !*secret) {
      rc = set_err(fc, -EPROTO, "%s: answer lacks %s", what,
                   !key || !*key ? "AccessKeyId" : "SecretAccessKey");
    } else if (copy_str(out->access_key_id, sizeof out->access_key_id, key) < 0 ||
               copy_str(out->secret_access_key, sizeof out->secret_access_key, secret) < 0 ||
               copy_str(out->session_token, sizeof out->session_token, token ? token : "") < 0) {
      rc = set_err(fc, -EPROTO, "%s: credential field too long", what);
    } else if (exp && parse_iso8601(exp, &out->expiration) < 0) {
      rc = set_err(fc, -EPROTO, "%s: unparseable Expiration", what);
    } else {
      if (!exp) out->expiration = 0;
      rc = 0;
    }
  }
  if (o) json_object_put(o);
  if (rc == 0) {
    add_secret(fc, out->secret_access_key);
    add_secret(fc, out->session_token);
  }
  return rc;
}

/* ---------------------------------------------------------------- sources */

static void set_static(aws_creds *out, const char *src) {
  out->expiration = 0;
  snprintf(out->source, sizeof out->source, "%s", src);
}

static int static_keys(fetch_ctx *fc, const char *what, const char *key, const char *secret,
                       const char *token, aws_creds *out) {
  if (copy_str(out->access_key_id, sizeof out->access_key_id, key) < 0 ||
      copy_str(out->secret_access_key, sizeof out->secret_access_key, secret) < 0 ||
      copy_str(out->session_token, sizeof out->session_token, token ? token : "") < 0)
    return set_err(fc, -EINVAL, "%s: credential value too long", what);
  add_secret(fc, out->secret_access_key);
  add_secret(fc, out->session_token);
  return 0;
}

/* 1: explicit options, then the AWS_* variables. Returns 1 when unset. */
static int src_env(fetch_ctx *fc, aws_creds *out) {
  const creds_cfg *c = fc->cfg;
  if (c->token && !c->key_id && !c->secret)
    return set_err(fc, -EINVAL, "relay config: a session token is set without keys");
  if (c->key_id || c->secret) {
    if (!c->key_id || !c->secret)
      return set_err(fc, -EINVAL, "relay config: %s is set without %s",
                     c->key_id ? "the access key id" : "the secret access key",
                     c->key_id ? "the secret access key" : "the access key id");
    int rc = static_keys(fc, "relay config", c->key_id, c->secret, c->token, out);
    if (rc == 0) set_static(out, "env");
    return rc;
  }
  const char *k = env(fc, E_ACCESS_KEY_ID), *s = env(fc, E_SECRET_ACCESS_KEY);
  if (!k && !s) return 1;
  if (!k || !s)
    return set_err(fc, -EINVAL, "%s is set without %s",
                   k ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                   k ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
  int rc = static_keys(fc, "environment", k, s, env(fc, E_SESSION_TOKEN), out);
  if (rc == 0) set_static(out, "env");
  return rc;
}

static int web_identity(fetch_ctx *fc, const char *label, const char *token_file,
                        const char *role_arn, const char *session, aws_creds *out) {
  char *tok = NULL;
  int rc = read_token_file(fc, "web identity token file", token_file, &tok);
  if (rc < 0) {
    prefix_err(fc, "%s: ", label);
    return rc;
  }
  sts_params sp = {.label = label, .role_arn = role_arn, .session_name = session, .web_token = tok};
  rc = sts_call(fc, &sp, out);
  free_secret(tok);
  if (rc == 0) snprintf(out->source, sizeof out->source, "web_identity");
  return rc;
}

/* 2: EKS IRSA. Returns 1 when unset. */
static int src_web_identity(fetch_ctx *fc, aws_creds *out) {
  const char *file = env(fc, E_WEB_IDENTITY_TOKEN_FILE), *role = env(fc, E_ROLE_ARN);
  if (!file) return 1;
  if (!role) return set_err(fc, -EINVAL, "AWS_WEB_IDENTITY_TOKEN_FILE is set without AWS_ROLE_ARN");
  return web_identity(fc, "web identity", file, role, env(fc, E_ROLE_SESSION_NAME), out);
}

/* ---- shared files */

typedef struct {
  char *section, *key, *value;
} ini_ent;

typedef struct {
  ini_ent *e;
  size_t n, cap;
  char path[PATH_MAX];
  int present;
} ini_file;

static void ini_free(ini_file *f) {
  for (size_t i = 0; i < f->n; i++) {
    free(f->e[i].section);
    free(f->e[i].key);
    free_secret(f->e[i].value);
  }
  free(f->e);
  f->e = NULL;
  f->n = f->cap = 0;
}

static int ini_push(ini_file *f, const char *sec, const char *k, const char *v) {
  if (f->n == f->cap) {
    size_t nc = f->cap ? f->cap * 2 : 16;
    ini_ent *ne = realloc(f->e, nc * sizeof *ne);
    if (!ne) return -ENOMEM;
    f->e = ne;
    f->cap = nc;
  }
  ini_ent *e = &f->e[f->n];
  e->section = strdup(sec);
  e->key = strdup(k);
  e->value = strdup(v);
  if (!e->section || !e->key || !e->value) {
    free(e->section);
    free(e->key);
    free_secret(e->value);
    return -ENOMEM;
  }
  for (char *p = e->key; *p; p++) *p = (char)tolower((unsigned char)*p);
  f->n++;
  return 0;
}

/* Parses the AWS ini dialect: [section], key = value, # and ; comments at
 * line start, indented lines are sub-settings (ignored). In the config file
 * "[profile x]" names profile x and "[default]" the default profile; other
 * section kinds (sso-session, services) are kept under a name no profile
 * lookup can produce. A missing file is not an error (SDKs agree). */
static int ini_load(fetch_ctx *fc, ini_file *f, const char *path, int is_config) {
  snprintf(f->path, sizeof f->path, "%s", path);
  char *buf = NULL;
  size_t len = 0;
  int rc = read_small_file(path, &buf, &len);
  if (rc == -ENOENT) return 0;
  if (rc < 0)
    return set_err(fc, rc == -EFBIG ? -EINVAL : rc, "%s: %s", path,
                   rc == -EFBIG ? "file too large" : strerror(-rc));
  f->present = 1;
  char section[256] = "";
  int have_section = 0;
  int lineno = 0;
  char *save = NULL;
  rc = 0;
  char *start = buf;
  if ((unsigned char)start[0] == 0xEF && (unsigned char)start[1] == 0xBB &&
      (unsigned char)start[2] == 0xBF)
    start += 3; /* UTF-8 byte order mark from Windows editors */
  for (char *line = start; line && rc == 0; line = save) {
    char *nl = strchr(line, '\n');
    save = nl ? nl + 1 : NULL;
    if (nl) *nl = '\0';
    lineno++;
    int indented = line[0] == ' ' || line[0] == '\t';
    char *t = trim(line);
    if (!*t || *t == '#' || *t == ';') continue;
    if (*t == '[') {
      char *end = strchr(t, ']');
      /* A comment may follow the header, as the AWS CLI and SDKs allow. */
      const char *after = end ? end + 1 : NULL;
      while (after && (*after == ' ' || *after == '\t')) after++;
      if (!end || (*after && *after != '#' && *after != ';')) {
        rc = set_err(fc, -EPROTO, "%s:%d: malformed section header", path, lineno);
        break;
      }
      *end = '\0';
      char *name = trim(t + 1);
      if (is_config) {
        if (strncmp(name, "profile", 7) == 0 && isspace((unsigned char)name[7])) {
          name = trim(name + 8);
        } else if (strcmp(name, "default") != 0) {
          snprintf(section, sizeof section, "\x01%s", name); /* not a profile */
          have_section = 1;
          continue;
        }
      }
      if (!*name) {
        rc = set_err(fc, -EPROTO, "%s:%d: empty section name", path, lineno);
        break;
      }
      snprintf(section, sizeof section, "%s", name);
      have_section = 1;
      continue;
    }
    if (indented) continue;
    char *eq = strchr(t, '=');
    if (!eq) {
      rc = set_err(fc, -EPROTO, "%s:%d: expected key = value", path, lineno);
      break;
    }
    if (!have_section) {
      rc = set_err(fc, -EPROTO, "%s:%d: setting outside of a [section]", path, lineno);
      break;
    }
    *eq = '\0';
    char *k = trim(t), *v = trim(eq + 1);
    if (!*k) {
      rc = set_err(fc, -EPROTO, "%s:%d: empty key", path, lineno);
      break;
    }
    if (ini_push(f, section, k, v) < 0) rc = set_err(fc, -ENOMEM, "%s: out of memory", path);
  }
  /* The whole buffer: parsing put NULs in place of the newlines, so
   * strlen() would stop after the first line and leave the keys. */
  secure_zero(buf, len);
  free(buf);
  return rc;
}

static int ini_has_section(const ini_file *f, const char *sec) {
  for (size_t i = 0; i < f->n; i++)
    if (strcmp(f->e[i].section, sec) == 0) return 1;
  return 0;
}

static const char *ini_get1(const ini_file *f, const char *sec, const char *key) {
  const char *v = NULL;
  for (size_t i = 0; i < f->n; i++)
    if (strcmp(f->e[i].section, sec) == 0 && strcmp(f->e[i].key, key) == 0) v = f->e[i].value;
  return v && *v ? v : NULL;
}

typedef struct {
  ini_file creds, config;
} profiles;

/* The credentials file wins over the config file for the same key. */
static const char *prof_get(const profiles *pf, const char *name, const char *key) {
  const char *v = ini_get1(&pf->creds, name, key);
  return v ? v : ini_get1(&pf->config, name, key);
}

static int resolve_profile(fetch_ctx *fc, const profiles *pf, const char *name, int depth,
                           aws_creds *out);

/* aws_security_token is the name older SDKs and tools (boto 2, aws-vault,
 * awsume) still write; the CLI and the SDKs read it when aws_session_token
 * is absent, so a file they accept works here too. */
static const char *prof_token(const profiles *pf, const char *name) {
  const char *t = prof_get(pf, name, "aws_session_token");
  return t ? t : prof_get(pf, name, "aws_security_token");
}

static int src_container(fetch_ctx *fc, aws_creds *out);
static int src_imds(fetch_ctx *fc, aws_creds *out, int *implicit);

/* The base credentials of a role profile: source_profile or credential_source. */
static int role_source(fetch_ctx *fc, const profiles *pf, const char *name, int depth,
                       aws_creds *base) {
  const char *src = prof_get(pf, name, "source_profile");
  const char *csrc = prof_get(pf, name, "credential_source");
  if (src && csrc)
    return set_err(fc, -EINVAL, "profile '%s' has both source_profile and credential_source", name);
  if (src) {
    if (strcmp(src, name) == 0) {
      /* A profile may name itself: its own static keys sign the AssumeRole. */
      const char *k = prof_get(pf, name, "aws_access_key_id");
      const char *s = prof_get(pf, name, "aws_secret_access_key");
      if (!k || !s)
        return set_err(fc, -EINVAL, "profile '%s' is its own source_profile but has no keys", name);
      return static_keys(fc, "profile", k, s, prof_token(pf, name), base);
    }
    if (depth >= CREDS_MAX_PROFILE_DEPTH)
      return set_err(fc, -EINVAL, "source_profile chain longer than %d (a cycle?)",
                     CREDS_MAX_PROFILE_DEPTH);
    if (!ini_has_section(&pf->creds, src) && !ini_has_section(&pf->config, src))
      return set_err(fc, -ENOENT, "profile '%s': source_profile '%s' not found", name, src);
    int rc = resolve_profile(fc, pf, src, depth + 1, base);
    if (rc == 1)
      return set_err(fc, -EINVAL, "profile '%s': source_profile '%s' has no credentials", name,
                     src);
    if (rc < 0) prefix_err(fc, "profile '%s': source_profile ", name);
    return rc;
  }
  if (csrc) {
    int rc, implicit = 0;
    if (strcmp(csrc, "Environment") == 0) {
      const char *k = env(fc, E_ACCESS_KEY_ID), *s = env(fc, E_SECRET_ACCESS_KEY);
      if (!k || !s)
        return set_err(fc, -EINVAL,
                       "profile '%s': credential_source Environment but AWS_ACCESS_KEY_ID/"
                       "AWS_SECRET_ACCESS_KEY are not both set",
                       name);
      return static_keys(fc, "environment", k, s, env(fc, E_SESSION_TOKEN), base);
    } else if (strcmp(csrc, "EcsContainer") == 0) {
      rc = src_container(fc, base);
      if (rc == 1)
        rc = set_err(fc, -EINVAL, "no AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI");
    } else if (strcmp(csrc, "Ec2InstanceMetadata") == 0) {
      rc = src_imds(fc, base, &implicit);
      if (rc == 1) rc = set_err(fc, -EINVAL, "IMDS is disabled (AWS_EC2_METADATA_DISABLED)");
    } else {
      return set_err(fc, -EINVAL, "profile '%s': unknown credential_source", name);
    }
    if (rc < 0) prefix_err(fc, "profile '%s': credential_source %s: ", name, csrc);
    return rc;
  }
  return set_err(fc, -EINVAL,
                 "profile '%s' has role_arn but no source_profile or credential_source", name);
}

/* Returns 0, 1 when the profile holds no credential settings, or an error. */
static int resolve_profile(fetch_ctx *fc, const profiles *pf, const char *name, int depth,
                           aws_creds *out) {
  const char *role = prof_get(pf, name, "role_arn");
  const char *k = prof_get(pf, name, "aws_access_key_id");
  const char *s = prof_get(pf, name, "aws_secret_access_key");
  if (role) {
    const char *session = prof_get(pf, name, "role_session_name");
    const char *wit = prof_get(pf, name, "web_identity_token_file");
    char label[200];
    snprintf(label, sizeof label, "profile '%s'", name);
    if (wit) {
      int rc = web_identity(fc, label, wit, role, session, out);
      if (rc == 0) snprintf(out->source, sizeof out->source, "profile");
      return rc;
    }
    aws_creds base;
    memset(&base, 0, sizeof base);
    int rc = role_source(fc, pf, name, depth, &base);
    if (rc < 0) return rc;
    long duration = 0;
    const char *ds = prof_get(pf, name, "duration_seconds");
    if (ds) {
      char *end;
      errno = 0;
      duration = strtol(ds, &end, 10);
      if (errno || *end || duration < 900 || duration > 43200)
        return set_err(fc, -EINVAL, "profile '%s': duration_seconds must be 900..43200", name);
    }
    sts_params sp = {.label = label,
                     .role_arn = role,
                     .session_name = session,
                     .external_id = prof_get(pf, name, "external_id"),
                     .duration_s = duration,
                     .signer = &base};
    rc = sts_call(fc, &sp, out);
    secure_zero(&base, sizeof base);
    if (rc == 0) snprintf(out->source, sizeof out->source, "profile");
    return rc;
  }
  if (k || s) {
    if (!k || !s)
      return set_err(fc, -EINVAL, "profile '%s': %s is set without %s", name,
                     k ? "aws_access_key_id" : "aws_secret_access_key",
                     k ? "aws_secret_access_key" : "aws_access_key_id");
    int rc = static_keys(fc, "profile", k, s, prof_token(pf, name), out);
    if (rc == 0) set_static(out, "profile");
    return rc;
  }
  if (prof_get(pf, name, "credential_process") || prof_get(pf, name, "sso_session") ||
      prof_get(pf, name, "sso_start_url"))
    return set_err(fc, -ENOTSUP,
                   "profile '%s' uses credential_process or SSO, which relay does not support",
                   name);
  return 1;
}

/* 3: shared files. Returns 1 when the profile is absent or holds no
 * credentials; *note describes what was looked at. */
static int src_profile(fetch_ctx *fc, aws_creds *out, char *note, size_t ncap) {
  const char *home = env(fc, E_HOME);
  char cpath[PATH_MAX], fpath[PATH_MAX];
  const char *cp = env(fc, E_SHARED_CREDENTIALS_FILE), *fp = env(fc, E_CONFIG_FILE);
  if (cp)
    snprintf(cpath, sizeof cpath, "%s", cp);
  else if (home)
    snprintf(cpath, sizeof cpath, "%s/.aws/credentials", home);
  else
    cpath[0] = '\0';
  if (fp)
    snprintf(fpath, sizeof fpath, "%s", fp);
  else if (home)
    snprintf(fpath, sizeof fpath, "%s/.aws/config", home);
  else
    fpath[0] = '\0';
  const char *name = env(fc, E_PROFILE) ? env(fc, E_PROFILE) : "default";

  profiles pf;
  memset(&pf, 0, sizeof pf);
  int rc = 0;
  if (cpath[0]) rc = ini_load(fc, &pf.creds, cpath, 0);
  if (rc == 0 && fpath[0]) rc = ini_load(fc, &pf.config, fpath, 1);
  if (rc == 0) {
    if (!ini_has_section(&pf.creds, name) && !ini_has_section(&pf.config, name)) {
      if (env(fc, E_PROFILE))
        rc = set_err(fc, -ENOENT, "AWS_PROFILE '%s' not found in %s%s or %s%s", name,
                     cpath[0] ? cpath : "(no credentials file)",
                     pf.creds.present ? "" : " (missing)", fpath[0] ? fpath : "(no config file)",
                     pf.config.present ? "" : " (missing)");
      else
        rc = 1;
      snprintf(note, ncap, "no profile '%s' in %s or %s", name, cpath[0] ? cpath : "-",
               fpath[0] ? fpath : "-");
    } else {
      rc = resolve_profile(fc, &pf, name, 0, out);
      if (rc == 1) snprintf(note, ncap, "profile '%s' has no credentials", name);
    }
  }
  ini_free(&pf.creds);
  ini_free(&pf.config);
  return rc;
}

/* ---- container */

static int is_ip_loopback_or_ecs(const char *host) {
  if (strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0) return 1;
  if (strcmp(host, "169.254.170.2") == 0 || strcmp(host, "169.254.170.23") == 0) return 1;
  if (strcasecmp(host, "[fd00:ec2::23]") == 0) return 1;
  /* 127.0.0.0/8 as a dotted quad */
  int a, b, c, d;
  char extra;
  if (sscanf(host, "%d.%d.%d.%d%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b >= 0 && b < 256 &&
      c >= 0 && c < 256 && d >= 0 && d < 256)
    return 1;
  return 0;
}

/* 4: ECS / EKS Pod Identity. Returns 1 when unset. */
static int src_container(fetch_ctx *fc, aws_creds *out) {
  const char *rel = env(fc, E_CONTAINER_RELATIVE_URI), *full = env(fc, E_CONTAINER_FULL_URI);
  if (!rel && !full) return 1;
  char url[1024];
  if (rel) {
    /* The relative form wins, as in the SDKs. */
    if (rel[0] != '/')
      return set_err(fc, -EINVAL, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with '/'");
    snprintf(url, sizeof url, "%s%s", CONTAINER_HOST, rel);
  } else {
    if (strlen(full) >= sizeof url)
      return set_err(fc, -EINVAL, "AWS_CONTAINER_CREDENTIALS_FULL_URI too long");
    snprintf(url, sizeof url, "%s", full);
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK;
    int allowed = ok && (strcmp(scheme, "https") == 0 ||
                         (strcmp(scheme, "http") == 0 && is_ip_loopback_or_ecs(host)));
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    if (!ok) return set_err(fc, -EINVAL, "AWS_CONTAINER_CREDENTIALS_FULL_URI is not a valid URL");
    /* Plain http only to addresses that cannot leave the host or task, so
     * the authorization token is never sent over the network in clear. */
    if (!allowed)
      return set_err(fc, -EINVAL,
                     "AWS_CONTAINER_CREDENTIALS_FULL_URI: http is only allowed to loopback or "
                     "the ECS/EKS agent addresses; use https");
  }
  char *tokbuf = NULL;
  const char *token = NULL;
  int rc;
  if (env(fc, E_CONTAINER_TOKEN_FILE)) {
    rc = read_token_file(fc, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                         env(fc, E_CONTAINER_TOKEN_FILE), &tokbuf);
    if (rc < 0) {
      prefix_err(fc, "container endpoint: ");
      return rc;
    }
    token = tokbuf;
  } else {
    token = env(fc, E_CONTAINER_TOKEN);
  }
  sbuf hdr = {0};
  struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
  if (token) {
    if (strpbrk(token, "\r\n")) {
      rc = set_err(fc, -EINVAL, "container endpoint: authorization token contains a line break");
      goto out;
    }
    sb_add(&hdr, "Authorization: ", 15);
    sb_add(&hdr, token, strlen(token));
    struct curl_slist *n = hdr.oom ? NULL : curl_slist_append(hdrs, hdr.data);
    if (!n) {
      rc = set_err(fc, -ENOMEM, "container endpoint: out of memory");
      goto out;
    }
    hdrs = n;
  }
  {
    http_req rq = {.what = "container endpoint",
                   .method = "GET",
                   .url = url,
                   .headers = hdrs,
                   .timeout_ms = fc->cfg->timeout_ms ? fc->cfg->timeout_ms : 5000,
                   .direct = 1};
    long status = 0;
    sbuf resp = {0};
    rc = http_call(fc, &rq, &status, &resp);
    if (rc == 0) {
      char shown[300], what[340];
      display_url(url, shown, sizeof shown);
      snprintf(what, sizeof what, "container endpoint %s", shown);
      if (status != 200)
        rc = set_err(fc, -EACCES, "%s: HTTP %ld", what, status);
      else
        rc = json_creds(fc, what, &resp, out);
    }
    sb_free_secret(&resp);
  }
out:
  if (hdrs) {
    for (struct curl_slist *s = hdrs; s; s = s->next) secure_zero(s->data, strlen(s->data));
    curl_slist_free_all(hdrs);
  }
  sb_free_secret(&hdr);
  free_secret(tokbuf);
  if (rc == 0) snprintf(out->source, sizeof out->source, "container");
  return rc;
}

/* ---- IMDSv2 */

/* 5: EC2 instance metadata. Returns 1 when disabled. *implicit is set when
 * the default endpoint was used (no override), so a caller can tell "not on
 * EC2" from "the configured endpoint is broken". */
static int src_imds(fetch_ctx *fc, aws_creds *out, int *implicit) {
  if (env_true(env(fc, E_IMDS_DISABLED))) return 1;
  const char *base = env(fc, E_IMDS_ENDPOINT);
  *implicit = base == NULL;
  if (!base) {
    const char *mode = env(fc, E_IMDS_ENDPOINT_MODE);
    base = mode && strcasecmp(mode, "IPv6") == 0 ? IMDS_IPV6_ENDPOINT : IMDS_DEFAULT_ENDPOINT;
  }
  if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
    return set_err(fc, -EINVAL, "AWS_EC2_METADATA_SERVICE_ENDPOINT must be an http(s) URL");
  size_t bl = strlen(base);
  while (bl && base[bl - 1] == '/') bl--;
  long tmo = fc->cfg->timeout_ms ? fc->cfg->timeout_ms : 1000;
  char url[1024];
  int rc;
  long status = 0;
  sbuf resp = {0}, tokhdr = {0};
  struct curl_slist *hdrs = NULL;
  char role[256];

  snprintf(url, sizeof url, "%.*s/latest/api/token", (int)bl, base);
  hdrs = curl_slist_append(NULL, "X-aws-ec2-metadata-token-ttl-seconds: 21600");
  http_req rq = {
      .what = "IMDS", .method = "PUT", .url = url, .headers = hdrs, .timeout_ms = tmo, .direct = 1};
  rc = http_call(fc, &rq, &status, &resp);
  curl_slist_free_all(hdrs);
  hdrs = NULL;
  if (rc < 0) goto out;
  if (status != 200 || resp.len == 0 || resp.len > 1024 || strpbrk(resp.data, "\r\n")) {
    rc = set_err(fc, status == 200 ? -EPROTO : -EACCES, "IMDS token request: HTTP %ld%s", status,
                 status == 200 ? " with an unusable token" : "");
    goto out;
  }
  sb_add(&tokhdr, "X-aws-ec2-metadata-token: ", 26);
  sb_add(&tokhdr, resp.data, resp.len);
  add_secret(fc, resp.data);
  hdrs = tokhdr.oom ? NULL : curl_slist_append(NULL, tokhdr.data);
  if (!hdrs) {
    rc = set_err(fc, -ENOMEM, "IMDS: out of memory");
    goto out;
  }

  snprintf(url, sizeof url, "%.*s/latest/meta-data/iam/security-credentials/", (int)bl, base);
  sbuf r2 = {0};
  rq.method = "GET";
  rq.headers = hdrs;
  rc = http_call(fc, &rq, &status, &r2);
  if (rc == 0) {
    if (status == 404)
      rc = set_err(fc, -ENOENT, "IMDS: this instance has no IAM role");
    else if (status != 200)
      rc = set_err(fc, -EACCES, "IMDS role lookup: HTTP %ld", status);
    else {
      char *first = r2.data ? trim(r2.data) : NULL;
      size_t n = first ? strcspn(first, "\r\n") : 0;
      int ok = n > 0 && n < sizeof role;
      for (size_t i = 0; ok && i < n; i++)
        if (!isalnum((unsigned char)first[i]) && !strchr("+=,.@_-", first[i])) ok = 0;
      if (!ok)
        rc = set_err(fc, -EPROTO, "IMDS role lookup: unusable role name");
      else {
        memcpy(role, first, n);
        role[n] = '\0';
      }
    }
  }
  sb_free_secret(&r2);
  if (rc < 0) goto out;

  snprintf(url, sizeof url, "%.*s/latest/meta-data/iam/security-credentials/%s", (int)bl, base,
           role);
  sbuf r3 = {0};
  rc = http_call(fc, &rq, &status, &r3);
  if (rc == 0) {
    char what[300];
    snprintf(what, sizeof what, "IMDS role '%s'", role);
    if (status != 200)
      rc = set_err(fc, -EACCES, "%s: HTTP %ld", what, status);
    else
      rc = json_creds(fc, what, &r3, out);
  }
  sb_free_secret(&r3);
out:
  curl_slist_free_all(hdrs);
  sb_free_secret(&tokhdr);
  sb_free_secret(&resp);
  if (rc == 0) snprintf(out->source, sizeof out->source, "imds");
  return rc;
}

/* ---------------------------------------------------------------- chain */

static int resolve_chain(fetch_ctx *fc, aws_creds *out) {
  memset(out, 0, sizeof *out);
  int rc = src_env(fc, out);
  if (rc <= 0) return rc;
  rc = src_web_identity(fc, out);
  if (rc <= 0) return rc;
  char pnote[PATH_MAX * 2 + 64] = "";
  rc = src_profile(fc, out, pnote, sizeof pnote);
  if (rc <= 0) return rc;
  rc = src_container(fc, out);
  if (rc <= 0) return rc;
  int implicit = 0;
  rc = src_imds(fc, out, &implicit);
  if (rc == 0) return 0;
  char imds_note[CREDS_ERR_MAX];
  if (rc == 1) {
    snprintf(imds_note, sizeof imds_note, "IMDS disabled");
  } else if (implicit && (rc == -ETIMEDOUT || rc == -ECONNREFUSED || rc == -EHOSTUNREACH ||
                          rc == -ENETUNREACH || rc == -EIO)) {
    /* Not being on EC2 is the normal case on a laptop: fold it into "no
     * credentials" instead of reporting a timeout nobody asked for. */
    bfmt(imds_note, sizeof imds_note, "IMDS: %s", fc->err);
  } else {
    return rc;
  }
  return set_err(fc, -ENOENT,
                 "no AWS credentials found: AWS_ACCESS_KEY_ID unset; AWS_WEB_IDENTITY_TOKEN_FILE "
                 "unset; %s; no AWS_CONTAINER_CREDENTIALS_*_URI; %.200s",
                 pnote, imds_note);
}

static int resolve_all(fetch_ctx *fc, aws_creds *out) {
  aws_creds base;
  int rc = resolve_chain(fc, &base);
  if (rc < 0) return rc;
  if (!fc->cfg->role_arn) {
    *out = base;
    secure_zero(&base, sizeof base);
    return 0;
  }
  memset(out, 0, sizeof *out);
  char label[80];
  snprintf(label, sizeof label, "RELAY_SNS_ROLE_ARN (signed with %s credentials)", base.source);
  sts_params sp = {.label = label,
                   .role_arn = fc->cfg->role_arn,
                   .external_id = fc->cfg->external_id,
                   .signer = &base};
  rc = sts_call(fc, &sp, out);
  secure_zero(&base, sizeof base);
  if (rc == 0) snprintf(out->source, sizeof out->source, "assume_role");
  return rc;
}

/* Credentials that expired before they arrived cannot sign anything: a
 * metadata endpoint serving stale ones, or a system clock ahead of AWS's.
 * Treating them as a failure (instead of storing them and asking again in a
 * second) puts them under the retry backoff and names the cause. */
static int check_fresh(fetch_ctx *fc, const aws_creds *c) {
  time_t now = time(NULL);
  if (c->expiration == 0 || c->expiration > now) return 0;
  struct tm tm;
  char when[32] = "?";
  if (gmtime_r(&c->expiration, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return set_err(fc, -EACCES,
                 "the %s credentials expired at %s, before they arrived; check the credential "
                 "source and the system clock",
                 c->source, when);
}

/* One full resolution; on failure errbuf holds a scrubbed message. */
static int fetch(creds_provider *p, aws_creds *out, char *err, size_t errlen) {
  fetch_ctx *fc = calloc(1, sizeof *fc);
  if (!fc) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  fc->cfg = &p->cfg;
  fc->stop = &p->stop;
  const creds_cfg *c = &p->cfg;
  add_secret(fc, c->secret);
  add_secret(fc, c->token);
  add_secret(fc, c->env[E_SECRET_ACCESS_KEY]);
  add_secret(fc, c->env[E_SESSION_TOKEN]);
  add_secret(fc, c->env[E_CONTAINER_TOKEN]);
  add_secret(fc, c->external_id);
  int rc = resolve_all(fc, out);
  if (rc == 0) rc = check_fresh(fc, out);
  if (rc < 0) {
    scrub(fc->err, sizeof fc->err, fc->secrets, fc->nsecrets);
    snprintf(err, errlen, "%s", fc->err[0] ? fc->err : "credential resolution failed");
    secure_zero(out, sizeof *out);
  }
  for (size_t i = 0; i < fc->nsecrets; i++) free_secret(fc->secrets[i]);
  secure_zero(fc, sizeof *fc);
  free(fc);
  return rc;
}

/* ---------------------------------------------------------------- provider */

static void cfg_free(creds_cfg *c) {
  for (int i = 0; i < E_COUNT; i++) free_secret(c->env[i]);
  free(c->key_id);
  free_secret(c->secret);
  free_secret(c->token);
  free(c->role_arn);
  free_secret(c->external_id);
  free(c->region);
}

static int dup_opt(char **dst, const char *src) {
  *dst = NULL;
  if (!src || !*src) return 0;
  *dst = strdup(src);
  return *dst ? 0 : -ENOMEM;
}

static int cfg_init(creds_cfg *c, const creds_options *o) {
  memset(c, 0, sizeof *c);
  creds_options none;
  memset(&none, 0, sizeof none);
  if (!o) o = &none;
  for (int i = 0; i < E_COUNT; i++) {
    const char *v = o->getenv_fn ? o->getenv_fn(env_names[i], o->getenv_arg) : getenv(env_names[i]);
    if (dup_opt(&c->env[i], v) < 0) return -ENOMEM;
  }
  if (dup_opt(&c->key_id, o->access_key_id) < 0 || dup_opt(&c->secret, o->secret_access_key) < 0 ||
      dup_opt(&c->token, o->session_token) < 0 || dup_opt(&c->role_arn, o->role_arn) < 0 ||
      dup_opt(&c->external_id, o->external_id) < 0 || dup_opt(&c->region, o->region) < 0)
    return -ENOMEM;
  c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 0;
  return 0;
}

/* When to refresh credentials that expire at `exp`: 5 minutes before, or
 * half-way through their remaining life when that is shorter. Sets the
 * monotonic and wall-clock due times (0 when they never expire). */
static void schedule_refresh(creds_provider *p, time_t exp) {
  p->next_refresh_ms = 0;
  p->refresh_wall = 0;
  if (exp == 0) return;
  time_t now = time(NULL);
  long life = (long)(exp - now);
  long margin = life / 2 < CREDS_REFRESH_MARGIN_S ? life / 2 : CREDS_REFRESH_MARGIN_S;
  long delay = life - margin;
  if (delay < 1) delay = 1;
  p->next_refresh_ms = mono_ms() + (int64_t)delay * 1000;
  p->refresh_wall = now + delay;
}

/* Whether the wall clock says the scheduled refresh is due (mu held). Only
 * while not failing: then the retry backoff decides. */
static int wall_refresh_due(const creds_provider *p, time_t now) {
  return p->failures == 0 && p->refresh_wall != 0 && now >= p->refresh_wall;
}

/* Nominal gap before the next attempt after `failures` failures in a row:
 * base, doubling, at most cap. */
static uint64_t retry_interval(uint64_t base, uint64_t cap, unsigned failures) {
  uint64_t iv = base;
  for (unsigned i = 1; i < failures && iv < cap; i++) iv *= 2;
  return iv < cap ? iv : cap;
}

/* iv +-20 %, so relays that lost the same endpoint together do not retry in
 * step. The shape of backoff_probe_delay() (relay/backoff.h); not that
 * function itself, because backoff.h brings sns.h and libuv into this
 * leaf module and into every program that links it. arc4random needs no
 * seeding and is thread-safe. */
static uint64_t retry_jitter(uint64_t iv) {
  uint64_t j = iv / 5;
  if (j == 0) return iv;
  if (j > UINT32_MAX / 2 - 1) j = UINT32_MAX / 2 - 1;
  return iv - j + arc4random_uniform((uint32_t)(2 * j + 1));
}

/* A refresh failed (mu held): schedule the retry and log, at WARN only
 * when something changed (error, backoff step) or after a long silence. */
static void refresh_failed(creds_provider *p, int rc, const char *err, int64_t now) {
  p->failures++;
  uint64_t iv = retry_interval(p->retry_base_ms, p->retry_max_ms, p->failures);
  uint64_t delay = retry_jitter(iv);
  if (delay < 1) delay = 1;
  p->next_refresh_ms = now + (int64_t)delay;
  snprintf(p->err, sizeof p->err, "%s", err);
  int warn = rc != p->warned_rc || strcmp(err, p->warned_err) != 0 || iv > p->warned_interval_ms ||
             now - p->warned_at_ms >= CREDS_WARN_REPEAT_MS;
  if (warn) {
    p->warned_rc = rc;
    p->warned_interval_ms = iv;
    p->warned_at_ms = now;
    snprintf(p->warned_err, sizeof p->warned_err, "%s", err);
  }
  log_level lvl = warn ? LOG_WARN : LOG_DEBUG;
  if (!log_enabled(lvl)) return;
  char rcs[16], n[16], retry[24];
  snprintf(rcs, sizeof rcs, "%d", rc);
  snprintf(n, sizeof n, "%u", p->failures);
  snprintf(retry, sizeof retry, "%llu", (unsigned long long)delay);
  rlog(lvl, "aws credentials refresh failed", "error", err, "#rc", rcs, "#failures", n,
       "#retry_in_ms", retry, NULL);
}

static void *refresh_main(void *arg) {
  creds_provider *p = arg;
  pthread_mutex_lock(&p->mu);
  while (!atomic_load(&p->stop)) {
    int64_t now = mono_ms();
    int64_t due = p->next_refresh_ms;
    /* While failing, the backoff already says when to try again, and an
     * invalidation (AWS refusing the old credentials) changes nothing
     * about the source that fails. */
    if (p->invalidated && p->failures == 0) {
      int64_t soonest = p->last_attempt_ms + (int64_t)p->retry_base_ms;
      if (!due || soonest < due) due = soonest < now ? now : soonest;
    }
    if (wall_refresh_due(p, time(NULL))) due = now;
    if (!due || due > now) {
      if (!due) {
        pthread_cond_wait(&p->cv, &p->mu);
      } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait = due - now;
        /* A wall-clock step is only noticed awake, or when creds_get()
         * wakes us: look at least this often, even without callers. */
        if (p->refresh_wall && wait > CREDS_WALL_CHECK_MS) wait = CREDS_WALL_CHECK_MS;
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (long)(wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
      }
      continue;
    }
    p->invalidated = 0;
    p->last_attempt_ms = now;
    pthread_mutex_unlock(&p->mu);

    aws_creds fresh;
    char err[CREDS_ERR_MAX];
    int rc = fetch(p, &fresh, err, sizeof err);

    pthread_mutex_lock(&p->mu);
    if (atomic_load(&p->stop)) {
      secure_zero(&fresh, sizeof fresh);
      break;
    }
    if (rc == 0) {
      p->cur = fresh;
      p->have = 1;
      p->err[0] = '\0';
      schedule_refresh(p, fresh.expiration);
      secure_zero(&fresh, sizeof fresh);
      if (p->failures > 0) {
        char n[16];
        snprintf(n, sizeof n, "%u", p->failures);
        rlog(LOG_INFO, "aws credentials refreshed after failures", "source", p->cur.source,
             "#failures", n, NULL);
        p->failures = 0;
        p->warned_rc = 0;
        p->warned_interval_ms = 0;
        p->warned_err[0] = '\0';
      } else if (log_enabled(LOG_DEBUG)) {
        char exp[32];
        snprintf(exp, sizeof exp, "%lld", (long long)p->cur.expiration);
        rlog(LOG_DEBUG, "aws credentials refreshed", "source", p->cur.source, "#expiration", exp,
             NULL);
      }
    } else {
      refresh_failed(p, rc, err, mono_ms());
    }
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void provider_destroy(creds_provider *p) {
  cfg_free(&p->cfg);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  secure_zero(&p->cur, sizeof p->cur);
  free(p);
}

int creds_provider_new(creds_provider **out, const creds_options *opts, char *errbuf,
                       size_t errlen) {
  char scratch[CREDS_ERR_MAX];
  if (!errbuf || errlen == 0) {
    errbuf = scratch;
    errlen = sizeof scratch;
  }
  errbuf[0] = '\0';
  *out = NULL;
  pthread_once(&curl_once, curl_init_once);
  creds_provider *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(errbuf, errlen, "out of memory");
    return -ENOMEM;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);
  atomic_init(&p->stop, 0);
  p->retry_base_ms =
      opts && opts->retry_base_ms > 0 ? (uint64_t)opts->retry_base_ms : CREDS_RETRY_BASE_MS;
  p->retry_max_ms =
      opts && opts->retry_max_ms > 0 ? (uint64_t)opts->retry_max_ms : CREDS_RETRY_MAX_MS;
  if (p->retry_max_ms < p->retry_base_ms) p->retry_max_ms = p->retry_base_ms;
  if (cfg_init(&p->cfg, opts) < 0) {
    provider_destroy(p);
    snprintf(errbuf, errlen, "out of memory");
    return -ENOMEM;
  }
  aws_creds c;
  int rc = fetch(p, &c, errbuf, errlen);
  if (rc < 0) {
    provider_destroy(p);
    return rc;
  }
  p->cur = c;
  p->have = 1;
  secure_zero(&c, sizeof c);
  p->last_attempt_ms = mono_ms();
  schedule_refresh(p, p->cur.expiration);
  rc = pthread_create(&p->thread, NULL, refresh_main, p);
  if (rc != 0) {
    provider_destroy(p);
    snprintf(errbuf, errlen, "cannot start the credentials refresh thread: %s", strerror(rc));
    return -rc;
  }
  p->thread_started = 1;
  char exp[32];
  snprintf(exp, sizeof exp, "%lld", (long long)p->cur.expiration);
  rlog(LOG_INFO, "aws credentials resolved", "source", p->cur.source, "#expiration", exp, NULL);
  *out = p;
  return 0;
}

int creds_get(creds_provider *p, aws_creds *out, char *errbuf, size_t errlen) {
  pthread_mutex_lock(&p->mu);
  int rc = 0;
  time_t now = time(NULL);
  if (p->have && (p->cur.expiration == 0 || p->cur.expiration > now)) {
    *out = p->cur;
  } else {
    rc = -EAGAIN;
    if (errbuf && errlen)
      snprintf(errbuf, errlen, "AWS credentials expired; %s%s",
               p->err[0] ? "last refresh failed: " : "refresh in progress", p->err);
  }
  /* The refresh thread sleeps on the monotonic clock and cannot see a
   * wall-clock step; the callers asking for credentials wake it. */
  if (wall_refresh_due(p, now)) pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void creds_invalidate(creds_provider *p) {
  pthread_mutex_lock(&p->mu);
  p->invalidated = 1;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

void creds_provider_free(creds_provider *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->stop, 1);
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  if (p->thread_started) pthread_join(p->thread, NULL);
  provider_destroy(p);
}
