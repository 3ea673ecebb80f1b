/* The SNS client: signed Publish/PublishBatch requests on libcurl's multi
 * interface, driven by the relay's libuv loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION, one
 * uv_poll_t per socket) and when to call it back (CURLMOPT_TIMERFUNCTION,
 * one uv_timer_t); everything runs on the loop thread and nothing blocks.
 * The multi handle owns the connection cache, so connections are kept
 * alive and reused across requests. Transfers are pooled with their easy
 * handle (configured once, TLS session cache included), header list and
 * body/answer buffers, so a request in steady state allocates nothing here
 * beyond what the signer does. TLS verification is always on.
 *
 * Lifetime rules (libuv style): a completion callback runs exactly once per
 * sns_publish() that returned 0, always from the loop (never inside
 * sns_publish); sns_client_close() cancels what is in flight and frees the
 * client only after every uv handle has been closed.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "sigv4.h"
#include "sns.h"

#define SNS_RESPONSE_MAX (1024 * 1024) /* SNS answers are a few KiB */

typedef struct sns_xfer sns_xfer;
typedef struct sns_sock sns_sock;

/* Header lines of one request: Host, Content-Type, X-Amz-Date, optional
 * X-Amz-Security-Token and x-amz-content-sha256, Authorization, Expect. */
#define SNS_MAX_HEADERS 8

struct sns_xfer {
  sns_client *c;
  sns_xfer *prev, *next; /* c->xfers while in flight, c->idle while pooled */
  CURL *easy;            /* owned: set up once, CURLOPT_PRIVATE is this xfer */
  /* curl only reads the list, so it is built in place over hdr_buf
   * rather than with curl_slist_append() (two mallocs per line). */
  struct curl_slist hdrs[SNS_MAX_HEADERS];
  char *hdr_buf;
  size_t hdr_cap;
  char *body;
  size_t body_len, body_cap;
  char *resp;
  size_t resp_len, resp_cap;
  int resp_overflow;
  size_t n;
  int was_batch;
  sns_done_cb cb;
  void *arg;
  char errbuf[CURL_ERROR_SIZE];
};

struct sns_sock {
  uv_poll_t poll;
  sns_client *c;
  curl_socket_t fd;
  sns_sock *prev, *next;
};

/* A `done` of a later sns_client_close() call, made while the client was
 * already closing: each caller is told, in call order. */
typedef struct sns_close_waiter {
  void (*done)(void *arg);
  void *arg;
  struct sns_close_waiter *next;
} sns_close_waiter;

struct sns_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  int open_handles; /* timer + polls not yet closed */
  int closing;
  void (*close_done)(void *arg);
  void *close_arg;
  sns_close_waiter *close_more, **close_tail;

  char *topic_arn;
  char region[32];
  char *url;         /* endpoint URL actually requested */
  char *host_header; /* value of Host, as signed */
  char *path;        /* URI path, as signed */
  int fifo;
  long connect_timeout_ms, timeout_ms;
  int max_connections;

  creds_provider *creds;
  aws_creds *static_creds;
  sigv4_key_cache key_cache;

  sns_xfer *xfers; /* in flight */
  sns_sock *socks; /* watched by uv_poll */
  sns_xfer *idle;  /* pooled for the next requests */
  int nidle;
  aws_creds cr; /* scratch for one signing, wiped after use */
};

/* ---- names for curl failures (stable strings for sns_classify) -------- */

static void curl_code_name(CURLcode rc, char *out, size_t cap) {
  static const struct {
    CURLcode rc;
    const char *name;
  } names[] = {
      {CURLE_UNSUPPORTED_PROTOCOL, "CURLE_UNSUPPORTED_PROTOCOL"},
      {CURLE_URL_MALFORMAT, "CURLE_URL_MALFORMAT"},
      {CURLE_COULDNT_RESOLVE_PROXY, "CURLE_COULDNT_RESOLVE_PROXY"},
      {CURLE_COULDNT_RESOLVE_HOST, "CURLE_COULDNT_RESOLVE_HOST"},
      {CURLE_COULDNT_CONNECT, "CURLE_COULDNT_CONNECT"},
      {CURLE_WEIRD_SERVER_REPLY, "CURLE_WEIRD_SERVER_REPLY"},
      {CURLE_PARTIAL_FILE, "CURLE_PARTIAL_FILE"},
      {CURLE_WRITE_ERROR, "CURLE_WRITE_ERROR"},
      {CURLE_READ_ERROR, "CURLE_READ_ERROR"},
      {CURLE_OUT_OF_MEMORY, "CURLE_OUT_OF_MEMORY"},
      {CURLE_OPERATION_TIMEDOUT, "CURLE_OPERATION_TIMEDOUT"},
      {CURLE_SSL_CONNECT_ERROR, "CURLE_SSL_CONNECT_ERROR"},
      {CURLE_GOT_NOTHING, "CURLE_GOT_NOTHING"},
      {CURLE_SEND_ERROR, "CURLE_SEND_ERROR"},
      {CURLE_RECV_ERROR, "CURLE_RECV_ERROR"},
      {CURLE_SSL_CERTPROBLEM, "CURLE_SSL_CERTPROBLEM"},
      {CURLE_SSL_CIPHER, "CURLE_SSL_CIPHER"},
      {CURLE_PEER_FAILED_VERIFICATION, "CURLE_PEER_FAILED_VERIFICATION"},
      {CURLE_SSL_CACERT_BADFILE, "CURLE_SSL_CACERT_BADFILE"},
      {CURLE_SSL_ISSUER_ERROR, "CURLE_SSL_ISSUER_ERROR"},
      {CURLE_SSL_PINNEDPUBKEYNOTMATCH, "CURLE_SSL_PINNEDPUBKEYNOTMATCH"},
      {CURLE_SSL_INVALIDCERTSTATUS, "CURLE_SSL_INVALIDCERTSTATUS"},
      {CURLE_SSL_CRL_BADFILE, "CURLE_SSL_CRL_BADFILE"},
      {CURLE_HTTP2, "CURLE_HTTP2"},
      {CURLE_HTTP2_STREAM, "CURLE_HTTP2_STREAM"},
      {CURLE_SEND_FAIL_REWIND, "CURLE_SEND_FAIL_REWIND"},
      {CURLE_ABORTED_BY_CALLBACK, "CURLE_ABORTED_BY_CALLBACK"},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].rc == rc) {
      snprintf(out, cap, "%s", names[i].name);
      return;
    }
  snprintf(out, cap, "CURLE_%d", (int)rc);
}

static void fill_all(sns_result *results, size_t n, sns_result *overall, sns_outcome o,
                     const char *code, const char *msg) {
  memset(overall, 0, sizeof *overall);
  overall->outcome = o;
  snprintf(overall->code, sizeof overall->code, "%s", code);
  snprintf(overall->message, sizeof overall->message, "%s", msg);
  for (size_t i = 0; i < n; i++) results[i] = *overall;
}

/* ---- teardown ----------------------------------------------------------- */

static void client_free(sns_client *c) {
  void (*done)(void *) = c->close_done;
  void *arg = c->close_arg;
  sns_close_waiter *more = c->close_more;
  free(c->topic_arn);
  free(c->url);
  free(c->host_header);
  free(c->path);
  if (c->static_creds) {
    memset(c->static_creds, 0, sizeof *c->static_creds);
    free(c->static_creds);
  }
  memset(&c->key_cache, 0, sizeof c->key_cache);
  free(c);
  if (done) done(arg);
  while (more) {
    sns_close_waiter *w = more;
    more = w->next;
    w->done(w->arg);
    free(w);
  }
}

static void timer_closed(uv_handle_t *h) {
  sns_client *c = h->data;
  if (--c->open_handles == 0) client_free(c);
}

/* uv_poll_t is the first member of sns_sock, and its data is the sock. */
static void sock_closed(uv_handle_t *h) {
  sns_sock *s = h->data;
  sns_client *c = s->c;
  free(s);
  if (--c->open_handles == 0) client_free(c);
}

static void sock_close(sns_client *c, sns_sock *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    c->socks = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static void xfer_unlink(sns_client *c, sns_xfer *x) {
  if (x->prev)
    x->prev->next = x->next;
  else
    c->xfers = x->next;
  if (x->next) x->next->prev = x->prev;
  x->prev = x->next = NULL;
}

static void xfer_free(sns_xfer *x) {
  if (x->easy) curl_easy_cleanup(x->easy);
  if (x->hdr_buf) memset(x->hdr_buf, 0, x->hdr_cap); /* held a session token */
  free(x->hdr_buf);
  free(x->body);
  free(x->resp);
  free(x);
}

/* Buffers above these sizes are not kept in the pool: a rare huge batch
 * should not pin its memory once per pooled transfer. */
#define SNS_KEEP_BODY (512 * 1024)
#define SNS_KEEP_RESP (64 * 1024)

/* Pools a finished transfer (easy handle, header storage, buffers) for the
 * next request, up to one per connection. */
static void xfer_release(sns_client *c, sns_xfer *x) {
  if (c->closing || c->nidle >= c->max_connections) {
    xfer_free(x);
    return;
  }
  if (x->body_cap > SNS_KEEP_BODY) {
    free(x->body);
    x->body = NULL;
    x->body_cap = 0;
  }
  if (x->resp_cap > SNS_KEEP_RESP) {
    free(x->resp);
    x->resp = NULL;
    x->resp_cap = 0;
  }
  x->body_len = x->resp_len = 0;
  x->resp_overflow = 0;
  x->cb = NULL;
  x->arg = NULL;
  x->prev = NULL;
  x->next = c->idle;
  c->idle = x;
  c->nidle++;
}

/* ---- completion ------------------------------------------------------- */

static int is_credential_code(const char *code) {
  static const char *const codes[] = {
      "ExpiredToken", "ExpiredTokenException",       "InvalidClientTokenId",
      "InvalidToken", "UnrecognizedClientException", "SignatureDoesNotMatch"};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
    if (strcmp(code, codes[i]) == 0) return 1;
  return 0;
}

/* Cuts `secret` out of msg: each whole occurrence, and a start of it left
 * at the end of a message that was truncated to fit its field. */
static void redact(char *msg, const char *secret, size_t sl) {
  char *hit;
  while ((hit = memmem(msg, strlen(msg), secret, sl)) != NULL) {
    memmove(hit + 3, hit + sl, strlen(hit + sl) + 1);
    memcpy(hit, "***", 3);
  }
  size_t ml = strlen(msg);
  for (size_t k = sl - 1 < ml ? sl - 1 : ml; k >= 8; k--)
    if (memcmp(msg + ml - k, secret, k) == 0) {
      memcpy(msg + ml - k, "***", 4);
      break;
    }
}

/* SNS answers SignatureDoesNotMatch with the canonical request it expected,
 * which holds the signed X-Amz-Security-Token value; that message goes on to
 * stats, logs and the DLQ, so the token this request was signed with (still
 * in its header list) is removed from every message first. */
static void scrub_token(const sns_xfer *x, sns_result *results, size_t n, sns_result *overall) {
  static const char name[] = "X-Amz-Security-Token: ";
  const char *tok = NULL;
  for (const struct curl_slist *h = x->hdrs; h; h = h->next)
    if (strncasecmp(h->data, name, sizeof name - 1) == 0) tok = h->data + sizeof name - 1;
  size_t tl = tok ? strlen(tok) : 0;
  if (tl < 8) return;
  redact(overall->message, tok, tl);
  for (size_t i = 0; i < n; i++) redact(results[i].message, tok, tl);
}

static void xfer_finish(sns_client *c, sns_xfer *x, CURLcode res) {
  sns_result results[SNS_MAX_BATCH], overall;
  curl_off_t us = 0;
  long status = 0;
  curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME_T, &us);
  double dur = (double)us / 1e6;

  if (res == CURLE_OK) {
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    int rc =
        sns_parse_response(status, x->resp, x->resp_len, x->n, x->was_batch, results, &overall);
    if (rc == -ENOMEM || rc == -EINVAL)
      fill_all(results, x->n, &overall, SNS_RETRY, "MalformedResponse",
               "could not parse the answer (out of memory)");
  } else if (res == CURLE_WRITE_ERROR && x->resp_overflow) {
    fill_all(results, x->n, &overall, sns_classify("ResponseTooLarge", 0, -1), "ResponseTooLarge",
             "SNS answer larger than 1 MiB");
  } else {
    char code[64];
    curl_code_name(res, code, sizeof code);
    fill_all(results, x->n, &overall, sns_classify(code, 0, -1), code,
             x->errbuf[0] ? x->errbuf : curl_easy_strerror(res));
  }
  if (overall.outcome != SNS_OK) scrub_token(x, results, x->n, &overall);
  /* A rejected or expired token: ask the provider to refresh now rather
   * than at its next scheduled time. */
  if (c->creds && overall.outcome == SNS_CONFIG && is_credential_code(overall.code))
    creds_invalidate(c->creds);
  if (overall.outcome != SNS_OK && log_enabled(LOG_DEBUG)) {
    char st[16];
    snprintf(st, sizeof st, "%ld", overall.http_status);
    rlog(LOG_DEBUG, "sns request failed", "outcome", sns_outcome_name(overall.outcome), "code",
         overall.code, "#http_status", st, NULL);
  }

  curl_multi_remove_handle(c->multi, x->easy);
  xfer_unlink(c, x);
  /* Back to the pool first: the callback may publish again at once. */
  sns_done_cb cb = x->cb;
  void *arg = x->arg;
  size_t n = x->n;
  xfer_release(c, x);
  cb(arg, results, n, &overall, dur);
}

static void check_done(sns_client *c) {
  CURLMsg *m;
  int left;
  while (!c->closing && (m = curl_multi_info_read(c->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *e = m->easy_handle;
    CURLcode res = m->data.result;
    sns_xfer *x = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
    if (x) xfer_finish(c, x, res);
  }
}

/* ---- curl <-> libuv glue ------------------------------------------------ */

static void on_poll(uv_poll_t *h, int status, int events) {
  sns_sock *s = h->data;
  sns_client *c = s->c;
  int flags = 0, running;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(c->multi, s->fd, flags, &running);
  check_done(c);
}

static void on_timer(uv_timer_t *t) {
  sns_client *c = t->data;
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(c);
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)e;
  sns_client *c = userp;
  sns_sock *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      sock_close(c, s);
      if (!c->closing) curl_multi_assign(c->multi, fd, NULL);
    }
    return 0;
  }
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s) return -1;
    if (uv_poll_init_socket(c->loop, &s->poll, fd) < 0) {
      free(s);
      return -1;
    }
    s->c = c;
    s->fd = fd;
    s->poll.data = s;
    s->next = c->socks;
    if (c->socks) c->socks->prev = s;
    c->socks = s;
    c->open_handles++;
    curl_multi_assign(c->multi, fd, s);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  uv_poll_start(&s->poll, ev, on_poll);
  return 0;
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  sns_client *c = userp;
  if (timeout_ms < 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userp) {
  sns_xfer *x = userp;
  size_t len = size * nmemb;
  if (len > SNS_RESPONSE_MAX - x->resp_len) {
    x->resp_overflow = 1;
    return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
  }
  if (x->resp_len + len + 1 > x->resp_cap) {
    size_t cap = x->resp_cap ? x->resp_cap : 4096;
    while (cap < x->resp_len + len + 1) cap *= 2;
    char *p = realloc(x->resp, cap);
    if (!p) return 0;
    x->resp = p;
    x->resp_cap = cap;
  }
  memcpy(x->resp + x->resp_len, data, len);
  x->resp_len += len;
  x->resp[x->resp_len] = '\0';
  return len;
}

/* ---- construction ------------------------------------------------------- */

/* arn:PARTITION:sns:REGION:ACCOUNT:NAME -> partition, region, name. */
static int parse_arn(const char *arn, char *partition, size_t pcap, char *region, size_t rcap,
                     const char **name) {
  const char *f[6];
  int k = 0;
  const char *p = arn;
  f[k++] = p;
  while (*p && k < 6) {
    if (*p == ':') f[k++] = p + 1;
    p++;
  }
  if (k != 6 || strncmp(arn, "arn:", 4) != 0 || strncmp(f[2], "sns:", 4) != 0) return -EINVAL;
  size_t plen = (size_t)(f[2] - f[1] - 1), rlen = (size_t)(f[4] - f[3] - 1);
  if (plen == 0 || plen >= pcap || rlen == 0 || rlen >= rcap) return -EINVAL;
  if (f[5][0] == '\0' || strchr(f[5], ':') || f[5] - f[4] - 1 == 0) return -EINVAL;
  memcpy(partition, f[1], plen);
  partition[plen] = '\0';
  memcpy(region, f[3], rlen);
  region[rlen] = '\0';
  *name = f[5];
  return 0;
}

static int valid_region(const char *r) {
  if (!*r) return 0;
  for (; *r; r++)
    if (!((*r >= 'a' && *r <= 'z') || (*r >= '0' && *r <= '9') || *r == '-')) return 0;
  return 1;
}

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

/* Splits the endpoint into what curl requests and what SigV4 signs: the
 * Host header (with a port only when it is not the scheme's default, as
 * curl would send it) and the path. */
static int parse_endpoint(sns_client *c, const char *endpoint) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL;
  int rc = -EINVAL;
  if (!u) return -ENOMEM;
  if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK) goto out;
  if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) goto out;
  if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0) goto out;
  if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) goto out;
  curl_url_get(u, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT);
  if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) goto out;
  if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK && query && *query) goto out;
  char hh[512];
  int w = port ? snprintf(hh, sizeof hh, "%s:%s", host, port) : snprintf(hh, sizeof hh, "%s", host);
  if (w < 0 || (size_t)w >= sizeof hh) goto out;
  char url[1024];
  w = snprintf(url, sizeof url, "%s://%s%s", scheme, hh, path && *path ? path : "/");
  if (w < 0 || (size_t)w >= sizeof url) goto out;
  c->host_header = dupstr(hh);
  c->url = dupstr(url);
  c->path = dupstr(path && *path ? path : "/");
  rc = c->host_header && c->url && c->path ? 0 : -ENOMEM;
out:
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_free(path);
  curl_free(query);
  curl_url_cleanup(u);
  return rc;
}

int sns_client_new(sns_client **out, uv_loop_t *loop, const sns_client_options *o) {
  char partition[32], region[32], ep[512];
  const char *name;
  *out = NULL;
  if (!o || !o->topic_arn || (!o->creds && !o->static_creds)) return -EINVAL;
  if (parse_arn(o->topic_arn, partition, sizeof partition, region, sizeof region, &name) < 0)
    return -EINVAL;
  if (o->region && *o->region) snprintf(region, sizeof region, "%s", o->region);
  if (!valid_region(region)) return -EINVAL;

  const char *endpoint = o->endpoint && *o->endpoint ? o->endpoint : NULL;
  if (!endpoint) endpoint = getenv("AWS_ENDPOINT_URL_SNS");
  if (!endpoint || !*endpoint) endpoint = getenv("AWS_ENDPOINT_URL");
  if (!endpoint || !*endpoint) {
    snprintf(ep, sizeof ep, "https://sns.%s.%s/", region,
             strcmp(partition, "aws-cn") == 0 ? "amazonaws.com.cn" : "amazonaws.com");
    endpoint = ep;
  }

  static int curl_ready;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return -ENOMEM;
    curl_ready = 1;
  }

  sns_client *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  int rc = parse_endpoint(c, endpoint);
  if (rc < 0) goto fail;
  rc = -ENOMEM;
  c->loop = loop;
  snprintf(c->region, sizeof c->region, "%s", region);
  c->topic_arn = dupstr(o->topic_arn);
  if (!c->topic_arn) goto fail;
  size_t nl = strlen(name);
  c->fifo = nl > 5 && strcmp(name + nl - 5, ".fifo") == 0;
  c->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 3000;
  c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 15000;
  c->max_connections = o->max_connections > 0 ? o->max_connections : 64;
  c->creds = o->creds;
  if (!c->creds) {
    c->static_creds = malloc(sizeof *c->static_creds);
    if (!c->static_creds) goto fail;
    *c->static_creds = *o->static_creds;
  }
  c->multi = curl_multi_init();
  if (!c->multi) goto fail;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  /* Requests beyond this wait inside curl for a free connection. */
  curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->max_connections);
  curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)c->max_connections);
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->max_connections);
  rc = uv_timer_init(loop, &c->timer);
  if (rc < 0) goto fail;
  c->timer.data = c;
  c->open_handles = 1;
  *out = c;
  return 0;

fail:
  if (c->multi) curl_multi_cleanup(c->multi);
  free(c->topic_arn);
  free(c->url);
  free(c->host_header);
  free(c->path);
  free(c->static_creds);
  free(c);
  return rc;
}

const char *sns_client_endpoint(const sns_client *c) {
  return c->url;
}

int sns_client_is_fifo(const sns_client *c) {
  return c->fifo;
}

void sns_client_close(sns_client *c, void (*done)(void *arg), void *arg) {
  if (c->closing) {
    /* Already closing (another owner, or a completion callback that closes
     * from inside the first call): this caller waits for the same end. */
    if (!done) return;
    sns_close_waiter *w = malloc(sizeof *w);
    if (!w) {
      /* Dropping `done` would leave the caller waiting forever; the client
       * is cancelled already and only its handles are still closing. */
      rlog(LOG_ERROR, "out of memory while closing the SNS client; reporting it closed early",
           NULL);
      done(arg);
      return;
    }
    w->done = done;
    w->arg = arg;
    w->next = NULL;
    *c->close_tail = w;
    c->close_tail = &w->next;
    return;
  }
  c->closing = 1;
  c->close_done = done;
  c->close_arg = arg;
  c->close_more = NULL;
  c->close_tail = &c->close_more;
  while (c->xfers) {
    sns_xfer *x = c->xfers;
    sns_result results[SNS_MAX_BATCH], overall;
    xfer_unlink(c, x);
    curl_multi_remove_handle(c->multi, x->easy);
    fill_all(results, x->n, &overall, sns_classify("Cancelled", 0, -1), "Cancelled",
             "SNS client closed");
    x->cb(x->arg, results, x->n, &overall, 0.0);
    xfer_free(x);
  }
  while (c->idle) {
    sns_xfer *x = c->idle;
    c->idle = x->next;
    xfer_free(x);
  }
  c->nidle = 0;
  curl_multi_cleanup(c->multi); /* closes cached connections */
  c->multi = NULL;
  while (c->socks) sock_close(c, c->socks);
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, timer_closed);
}

/* ---- publishing --------------------------------------------------------- */

static const char content_type[] = "application/x-www-form-urlencoded; charset=utf-8";

/* Longest header line accepted (as curl_slist lines used to be built). */
#define SNS_HEADER_LINE_MAX 8192

/* Lays the header lines out in x->hdr_buf and links x->hdrs over them. */
static int set_headers(sns_xfer *x, const char *const names[], const char *const values[],
                       size_t n) {
  size_t need = 0;
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(names[i]) + (values[i] ? 2 + strlen(values[i]) : 0);
    if (l >= SNS_HEADER_LINE_MAX) return -EINVAL;
    need += l + 1;
  }
  if (need > x->hdr_cap) {
    if (x->hdr_buf) memset(x->hdr_buf, 0, x->hdr_cap);
    free(x->hdr_buf);
    x->hdr_cap = 0;
    x->hdr_buf = malloc(need);
    if (!x->hdr_buf) return -ENOMEM;
    x->hdr_cap = need;
  }
  char *o = x->hdr_buf;
  for (size_t i = 0; i < n; i++) {
    x->hdrs[i].data = o;
    x->hdrs[i].next = i + 1 < n ? &x->hdrs[i + 1] : NULL;
    size_t nl = strlen(names[i]);
    memcpy(o, names[i], nl);
    o += nl;
    if (values[i]) { /* NULL: the name is the whole line ("Expect:" drops curl's own) */
      size_t vl = strlen(values[i]);
      *o++ = ':';
      *o++ = ' ';
      memcpy(o, values[i], vl);
      o += vl;
    }
    *o++ = '\0';
  }
  return 0;
}

/* Signs the body and builds the header list: Host and Content-Type are
 * signed as sent. "Expect:" keeps curl from ever waiting for a
 * 100-continue (it asks for one on large bodies, and a heavily
 * percent-encoded batch can approach that size), a round trip per request. */
static int sign_request(sns_client *c, sns_xfer *x, const aws_creds *cr) {
  sigv4_header hs[2] = {{"host", c->host_header}, {"content-type", content_type}};
  sigv4_request rq = {
      .method = "POST",
      .path = c->path,
      .query = NULL,
      .headers = hs,
      .nheaders = 2,
      .body = (const uint8_t *)x->body,
      .body_len = x->body_len,
      .region = c->region,
      .service = "sns",
      .when = time(NULL),
      .sign_body_header = 0,
      .sign_session_token = 1,
  };
  sigv4_credentials sc = {cr->access_key_id, cr->secret_access_key, cr->session_token};
  sigv4_result res;
  int rc = sigv4_sign(&rq, &sc, &c->key_cache, &res);
  /* The request itself is ours and well-formed, so a refusal to sign means
   * the credentials are unusable (say, a token with a newline): that is a
   * "no credentials right now" for the caller, never a bad message. */
  if (rc < 0) return rc == -ENOMEM ? -ENOMEM : -EAGAIN;
  const char *names[SNS_MAX_HEADERS], *values[SNS_MAX_HEADERS];
  size_t n = 0;
  names[n] = "Host";
  values[n++] = c->host_header;
  names[n] = "Content-Type";
  values[n++] = content_type;
  for (size_t i = 0; i < res.nadd && n < SNS_MAX_HEADERS - 2; i++) {
    names[n] = res.add[i].name;
    values[n++] = res.add[i].value;
  }
  names[n] = "Authorization";
  values[n++] = res.authorization;
  names[n] = "Expect:";
  values[n++] = NULL;
  rc = set_headers(x, names, values, n);
  sigv4_result_free(&res);
  return rc;
}

/* Options that never change for a transfer; set once per easy handle. */
static void setup_easy(sns_client *c, sns_xfer *x) {
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_URL, c->url);
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  /* AWS front ends drop connections idle for about a minute; not reusing
   * older ones avoids racing their close. */
  curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, 50L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
#ifdef RELAY_VERSION
  curl_easy_setopt(e, CURLOPT_USERAGENT, "relay/" RELAY_VERSION);
#else
  curl_easy_setopt(e, CURLOPT_USERAGENT, "relay");
#endif
}

/* A pooled transfer, or a new one with its easy handle set up. */
static sns_xfer *xfer_get(sns_client *c) {
  sns_xfer *x = c->idle;
  if (x) {
    c->idle = x->next;
    c->nidle--;
    x->next = NULL;
    return x;
  }
  x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->c = c;
  x->easy = curl_easy_init();
  if (!x->easy) {
    free(x);
    return NULL;
  }
  setup_easy(c, x);
  return x;
}

int sns_publish(sns_client *c, const sns_entry *entries, size_t n, int force_batch, sns_done_cb cb,
                void *arg) {
  if (c->closing) return -ECANCELED;
  if (!entries || !cb || n < 1 || n > SNS_MAX_BATCH) return -EINVAL;
  if (sns_request_size(entries, n) > SNS_MAX_REQUEST_BYTES) return -EINVAL;

  /* Fixed credentials are used in place; a provider's are copied into the
   * client's scratch and wiped once signed. */
  const aws_creds *cr = c->static_creds;
  int rc;
  if (c->creds) {
    char err[256];
    if (creds_get(c->creds, &c->cr, err, sizeof err) < 0) {
      memset(&c->cr, 0, sizeof c->cr);
      return -EAGAIN;
    }
    cr = &c->cr;
  }
  if (!cr->access_key_id[0] || !cr->secret_access_key[0]) {
    if (c->creds) memset(&c->cr, 0, sizeof c->cr);
    return -EAGAIN;
  }

  sns_xfer *x = xfer_get(c);
  if (!x) {
    rc = -ENOMEM;
    goto fail;
  }
  x->n = n;
  x->was_batch = n > 1 || force_batch;
  x->cb = cb;
  x->arg = arg;
  x->errbuf[0] = '\0';
  rc = sns_build_body_into(&x->body, &x->body_cap, c->topic_arn, entries, n, force_batch,
                           &x->body_len);
  if (rc < 0) goto fail;
  rc = sign_request(c, x, cr);
  if (rc < 0) goto fail;
  curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
  curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
  if (curl_multi_add_handle(c->multi, x->easy) != CURLM_OK) {
    rc = -ENOMEM;
    goto fail;
  }
  x->next = c->xfers;
  if (c->xfers) c->xfers->prev = x;
  c->xfers = x;
  if (c->creds) memset(&c->cr, 0, sizeof c->cr);
  return 0;

fail:
  if (c->creds) memset(&c->cr, 0, sizeof c->cr);
  if (x) xfer_release(c, x);
  return rc;
}
