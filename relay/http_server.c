/* HTTP/1.1 server on libuv + nodejs http-parser (see http_server.h).
 *
 * Per connection, dispatched requests form a FIFO. A request's answer is
 * serialized when the handler calls http_respond(); answers leave the FIFO
 * from its head only, which is what keeps pipelined answers in order even
 * when request N waits for a group commit and N+1 was answered at once.
 * Output is coalesced: answers are appended to the connection's output
 * buffer and written from a uv_check handle, once per loop iteration, so a
 * batch of answers released by one commit costs one write per connection.
 *
 * Lifetime: a connection is freed in its close callback. Requests still
 * unanswered when their connection closes become orphans (req->conn NULL);
 * the server counts them and stays alive until the handler has answered
 * each one, so a late http_respond() never touches freed memory.
 *
 * Timeouts are checked by one sweep timer per server rather than a timer
 * per connection: each connection carries one deadline and its kind.
 */
#include "http_server.h"

#include <errno.h>
#include <http_parser.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#include "log.h"

#define LINGER_MS 2000
#define READ_BUF_SIZE 65536
/* Answer bytes waiting for a peer that does not read them, beyond which the
 * connection stops reading requests (as at max_pipeline): answers made at
 * once (4xx) are never "outstanding", so without this a client that only
 * sends could make the server buffer an answer for every request. */
#define OUT_HIGH_WATER (1u << 20)
/* Descriptors the rest of the process may need besides the listeners'
 * connections (queue, logs, SNS and credential connections), and the most
 * the soft open-file limit is raised to. */
#define NOFILE_RESERVE 256
#define NOFILE_CAP ((rlim_t)1 << 20)

typedef struct http_conn http_conn;

typedef struct hdr_off {
  size_t name, name_len, value, value_len;
} hdr_off;

typedef struct req_priv {
  http_request pub; /* first: http_request* <-> req_priv* */
  http_server *srv;
  http_conn *conn;  /* NULL once orphaned */
  struct req_priv *next;
  int answered;
  int close_after;  /* the connection closes after this answer */
  int keep_alive_10; /* HTTP/1.0 client asked for keep-alive */
  int head;          /* HEAD: answer without the body */
  char *resp;       /* serialized answer waiting for its predecessors */
  size_t resp_len;
  /* Parse state. */
  char *hbuf;       /* target, header names and values, NUL-separated */
  size_t hlen, hcap;
  size_t target_len;
  hdr_off *hoff;
  size_t nh, hoffcap;
  int last_field;   /* last callback was a header field (1) or value (0) */
  size_t header_bytes;
  uint8_t *body;
  size_t blen, bcap;
  http_header *headers;
  size_t headers_cap;
} req_priv;

/* Finished requests are kept (with their buffers, when small) for reuse:
 * at thousands of requests a second, malloc/free of a body-sized buffer
 * per request showed up as a top cost in profiles. */
#define REQ_POOL_MAX 1024
#define REQ_POOL_KEEP_BYTES 65536

enum deadline_kind { DL_NONE, DL_IDLE, DL_HEADER, DL_BODY, DL_LINGER };

typedef struct buf {
  char *p;
  size_t len, cap;
} buf;

struct http_conn {
  uv_tcp_t tcp;
  http_server *srv;
  http_parser parser;
  http_conn *prev, *next;       /* server's connection list */
  http_conn *dirty_next;        /* output waiting for the check handle */
  int dirty;
  req_priv *cur;                /* request being parsed */
  req_priv *head, *tail;        /* dispatched, in order */
  unsigned outstanding;         /* entries in head..tail */
  buf in;                       /* bytes read while parsing was paused */
  buf out;                      /* answers waiting to be written */
  buf wbuf;                     /* answers being written (uv_write) */
  uv_write_t wreq;
  uv_shutdown_t sreq;
  int writing;
  int paused;                   /* parser paused: pipeline full */
  int no_more;                  /* parse no further requests */
  int reading;
  int in_execute;
  int closing;                  /* uv_close called */
  int close_after_flush;
  int lingering;
  int eof;
  int reject;                   /* status decided inside a parser callback */
  enum deadline_kind dl_kind;
  uint64_t deadline;
  /* While writing: the write must complete by then. Kept apart from
   * deadline, which parsing the next requests sets and clears. */
  uint64_t write_deadline;
};

struct http_server {
  uv_loop_t *loop;
  http_server_options o;
  char name[32];
  uv_tcp_t listener;
  uv_timer_t sweep;
  uv_check_t check;
  uv_idle_t idle;   /* active while output waits: the loop must not sleep */
  int listening;
  int counted_nofile; /* max_connections is in nofile_budget */
  int accepting;
  int port;
  http_conn *conns;
  http_conn *dirty;
  uint64_t orphans;
  http_server_stats st;
  http_parser_settings settings;
  char rbuf[READ_BUF_SIZE];
  int rbuf_busy;
  /* Closing. */
  int closing;
  uint64_t close_deadline;
  int handles_open;
  void (*done)(void *);
  void *done_arg;
  char date[40];
  time_t date_sec;
  req_priv *pool;
  unsigned pool_n;
};

/* ---- small helpers ---------------------------------------------------- */

static int buf_reserve(buf *b, size_t extra) {
  if (b->len + extra <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return -ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int buf_append(buf *b, const void *d, size_t n) {
  if (buf_reserve(b, n) < 0) return -ENOMEM;
  memcpy(b->p + b->len, d, n);
  b->len += n;
  return 0;
}

static void buf_free(buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

const char *http_status_text(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: break;
  }
  if (status < 200) return "Informational";
  if (status < 300) return "Success";
  if (status < 400) return "Redirection";
  if (status < 500) return "Client Error";
  return "Server Error";
}

static const char *date_header(http_server *s) {
  time_t now = time(NULL);
  if (now != s->date_sec) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    s->date_sec = now;
  }
  return s->date;
}

/* Serializes one answer onto b. */
static int serialize(http_server *s, buf *b, int status, const char *content_type,
                     const char *extra, const void *body, size_t body_len, int close,
                     int keep_alive_10, int head) {
  if (!content_type && body_len) content_type = "application/json";
  size_t extra_len = extra ? strlen(extra) : 0;
  size_t need = 256 + (content_type ? strlen(content_type) : 0) + extra_len + body_len;
  if (buf_reserve(b, need) < 0) return -ENOMEM;
  int n = snprintf(b->p + b->len, b->cap - b->len,
                   "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %zu\r\n%s%s%s%s", status,
                   http_status_text(status), date_header(s), body_len,
                   content_type ? "Content-Type: " : "", content_type ? content_type : "",
                   content_type ? "\r\n" : "",
                   close ? "Connection: close\r\n"
                         : (keep_alive_10 ? "Connection: keep-alive\r\n" : ""));
  if (n < 0 || (size_t)n >= b->cap - b->len) return -EINVAL;
  b->len += (size_t)n;
  if (extra_len) memcpy(b->p + b->len, extra, extra_len), b->len += extra_len;
  memcpy(b->p + b->len, "\r\n", 2);
  b->len += 2;
  if (body_len && !head) memcpy(b->p + b->len, body, body_len), b->len += body_len;
  return 0;
}

static void req_destroy(req_priv *r) {
  free(r->hbuf);
  free(r->hoff);
  free(r->body);
  free(r->headers);
  free(r->resp);
  free(r);
}

static req_priv *req_alloc(http_server *s, http_conn *c) {
  req_priv *r = s->pool;
  if (!r) {
    r = calloc(1, sizeof *r);
    if (!r) return NULL;
  } else {
    s->pool = r->next;
    s->pool_n--;
    req_priv keep = *r;
    memset(r, 0, sizeof *r);
    r->hbuf = keep.hbuf;
    r->hcap = keep.hcap;
    r->hoff = keep.hoff;
    r->hoffcap = keep.hoffcap;
    r->body = keep.body;
    r->bcap = keep.bcap;
    r->headers = keep.headers;
    r->headers_cap = keep.headers_cap;
  }
  r->srv = s;
  r->conn = c;
  return r;
}

static void req_free(req_priv *r) {
  http_server *s = r->srv;
  free(r->resp);
  r->resp = NULL;
  if (s->closing || s->pool_n >= REQ_POOL_MAX) {
    r->resp = NULL;
    req_destroy(r);
    return;
  }
  if (r->bcap > REQ_POOL_KEEP_BYTES) {
    free(r->body);
    r->body = NULL;
    r->bcap = 0;
  }
  if (r->hcap > REQ_POOL_KEEP_BYTES) {
    free(r->hbuf);
    r->hbuf = NULL;
    r->hcap = 0;
  }
  r->next = s->pool;
  s->pool = r;
  s->pool_n++;
}

static uint64_t now_ms(http_server *s) {
  return uv_now(s->loop);
}

static void maybe_finish(http_server *s);
static void conn_close(http_conn *c);
static void conn_resume(http_conn *c);

/* Only there to keep the loop from blocking in poll when an answer was
 * queued from a phase after our check handle (the check then runs in the
 * next iteration, which must come at once). */
static void on_idle(uv_idle_t *h) {
  (void)h;
}

static void mark_dirty(http_conn *c) {
  if (c->dirty || c->closing) return;
  c->dirty = 1;
  c->dirty_next = c->srv->dirty;
  if (!c->srv->dirty) uv_idle_start(&c->srv->idle, on_idle);
  c->srv->dirty = c;
}

static void set_deadline(http_conn *c, enum deadline_kind k, unsigned ms) {
  c->dl_kind = k;
  c->deadline = k == DL_NONE ? 0 : now_ms(c->srv) + ms;
}

/* Recomputes the deadline once nothing is in progress. */
static void conn_idle_check(http_conn *c) {
  if (c->closing || c->lingering) return;
  if (c->cur) return; /* header/body deadline already runs */
  if (c->writing) {
    set_deadline(c, DL_NONE, 0); /* write_deadline runs */
    return;
  }
  if (c->outstanding == 0 && c->out.len == 0) {
    if (c->dl_kind != DL_IDLE) set_deadline(c, DL_IDLE, c->srv->o.idle_timeout_ms);
  } else {
    set_deadline(c, DL_NONE, 0);
  }
}

/* ---- orphans and the request FIFO -------------------------------------- */

static void orphan_all(http_conn *c) {
  req_priv *r = c->head;
  while (r) {
    req_priv *next = r->next;
    if (r->answered) {
      req_free(r);
    } else {
      r->conn = NULL;
      r->next = NULL;
      c->srv->orphans++;
    }
    r = next;
  }
  c->head = c->tail = NULL;
  c->outstanding = 0;
  if (c->cur) {
    req_free(c->cur);
    c->cur = NULL;
  }
}

static void fifo_push(http_conn *c, req_priv *r) {
  r->next = NULL;
  if (c->tail) c->tail->next = r;
  else c->head = r;
  c->tail = r;
  c->outstanding++;
}

/* Moves answered requests from the FIFO head into the output buffer. */
static void fifo_drain(http_conn *c) {
  while (c->head && c->head->answered) {
    req_priv *r = c->head;
    c->head = r->next;
    if (!c->head) c->tail = NULL;
    c->outstanding--;
    if (buf_append(&c->out, r->resp, r->resp_len) < 0) {
      req_free(r);
      conn_close(c);
      return;
    }
    int close = r->close_after;
    req_free(r);
    if (close) {
      /* Later pipelined requests will never be answered on this wire. */
      c->close_after_flush = 1;
      c->no_more = 1;
      orphan_all(c);
      return;
    }
  }
}

/* ---- writing ------------------------------------------------------------- */

static void conn_after_write(http_conn *c);

static void on_write(uv_write_t *w, int status) {
  http_conn *c = w->data;
  c->writing = 0;
  c->wbuf.len = 0;
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  conn_after_write(c);
}

static void on_shutdown(uv_shutdown_t *sr, int status) {
  http_conn *c = sr->data;
  if (c->closing) return;
  if (status < 0 || c->eof) conn_close(c);
}

static void conn_flush(http_conn *c) {
  if (c->closing) return;
  fifo_drain(c);
  if (c->closing) return;
  if (!c->writing && c->out.len) {
    uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN) n = 0;
    if (n < 0) {
      conn_close(c);
      return;
    }
    if ((size_t)n < c->out.len) {
      /* Swap: the rest goes out asynchronously from wbuf while new
       * answers accumulate in out. */
      buf tmp = c->wbuf;
      c->wbuf = c->out;
      c->out = tmp;
      c->out.len = 0;
      memmove(c->wbuf.p, c->wbuf.p + n, c->wbuf.len - (size_t)n);
      c->wbuf.len -= (size_t)n;
      uv_buf_t wb = uv_buf_init(c->wbuf.p, (unsigned)c->wbuf.len);
      c->wreq.data = c;
      int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &wb, 1, on_write);
      if (rc < 0) {
        c->wbuf.len = 0;
        conn_close(c);
        return;
      }
      c->writing = 1;
      c->write_deadline = now_ms(c->srv) + c->srv->o.idle_timeout_ms;
      return;
    }
    c->out.len = 0;
  }
  if (!c->writing) conn_after_write(c);
}

/* Everything queued has been written. */
static void conn_after_write(http_conn *c) {
  if (c->out.len || c->closing) {
    if (c->out.len) conn_flush(c);
    return;
  }
  http_server *s = c->srv;
  if (c->close_after_flush && c->outstanding == 0) {
    if (c->lingering) return;
    if (c->eof || s->closing) {
      conn_close(c);
      return;
    }
    /* Half-close and drain what the client still sends for a moment, so
     * it reads our final answer instead of a reset. */
    c->lingering = 1;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
      conn_close(c);
      return;
    }
    set_deadline(c, DL_LINGER, LINGER_MS);
    conn_resume(c);
    return;
  }
  if (s->closing || !s->accepting) {
    if (c->outstanding == 0 && !c->cur) {
      conn_close(c);
      return;
    }
  }
  if (c->paused && c->outstanding < s->o.max_pipeline) conn_resume(c);
  conn_idle_check(c);
}

static void on_check(uv_check_t *h) {
  http_server *s = h->data;
  while (s->dirty) {
    http_conn *c = s->dirty;
    s->dirty = c->dirty_next;
    c->dirty = 0;
    c->dirty_next = NULL;
    conn_flush(c);
  }
  uv_idle_stop(&s->idle);
}

/* ---- closing -------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h) {
  http_conn *c = h->data;
  http_server *s = c->srv;
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  /* Remove from the dirty list if it is still there. */
  if (c->dirty) {
    http_conn **pp = &s->dirty;
    while (*pp && *pp != c) pp = &(*pp)->dirty_next;
    if (*pp) *pp = c->dirty_next;
  }
  buf_free(&c->in);
  buf_free(&c->out);
  buf_free(&c->wbuf);
  s->st.connections_open--;
  free(c);
  maybe_finish(s);
}

static void conn_close(http_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  orphan_all(c);
  c->dl_kind = DL_NONE;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* ---- reading and parsing ---------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  http_conn *c = h->data;
  (void)suggested;
  /* One buffer per server: read_cb consumes (or copies) the bytes before
   * the next read of any connection. */
  b->base = c->srv->rbuf;
  b->len = sizeof c->srv->rbuf;
}

static void conn_parse(http_conn *c, const char *data, size_t len);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  http_conn *c = st->data;
  if (c->closing) return;
  if (nread == 0) return;
  if (nread < 0) {
    c->eof = 1;
    uv_read_stop(st);
    c->reading = 0;
    if (nread != UV_EOF || c->lingering) {
      conn_close(c);
      return;
    }
    /* The client half-closed: it may still read answers to what it sent. */
    if (c->cur) {
      /* Dropped with its deadline: no 408 for a request that never came. */
      req_free(c->cur);
      c->cur = NULL;
      set_deadline(c, DL_NONE, 0);
    }
    c->no_more = 1;
    if (c->outstanding == 0 && !c->writing && c->out.len == 0) conn_close(c);
    else c->close_after_flush = 1;
    return;
  }
  if (c->lingering) return; /* discarded */
  if (c->paused || c->no_more) {
    /* Should not happen (reading stops when paused), but keep the bytes. */
    if (!c->no_more && buf_append(&c->in, b->base, (size_t)nread) < 0) conn_close(c);
    return;
  }
  conn_parse(c, b->base, (size_t)nread);
}

static void conn_stop_reading(http_conn *c) {
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

static void conn_start_reading(http_conn *c) {
  if (!c->reading && !c->closing && !c->eof) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
  }
}

/* Queues a server-made answer after everything already dispatched and
 * closes the connection after it. */
static void conn_refuse(http_conn *c, int status) {
  http_server *s = c->srv;
  switch (status) {
    case 400: s->st.refused_400++; break;
    case 408: s->st.refused_408++; break;
    case 413: s->st.refused_413++; break;
    case 431: s->st.refused_431++; break;
    default: break;
  }
  if (s->o.on_refused) s->o.on_refused(s->o.arg, status);
  if (c->cur) {
    req_free(c->cur);
    c->cur = NULL;
  }
  c->no_more = 1;
  c->paused = 0;
  buf_free(&c->in);
  conn_stop_reading(c);
  req_priv *r = req_alloc(s, c);
  if (!r) {
    conn_close(c);
    return;
  }
  r->answered = 1;
  r->close_after = 1;
  char body[96];
  int n = snprintf(body, sizeof body, "{\"ok\":false,\"error\":\"%s\"}", http_status_text(status));
  buf b = {0};
  if (serialize(s, &b, status, "application/json", NULL, body, (size_t)n, 1, 0, 0) < 0) {
    req_free(r);
    buf_free(&b);
    conn_close(c);
    return;
  }
  r->resp = b.p;
  r->resp_len = b.len;
  fifo_push(c, r);
  set_deadline(c, DL_NONE, 0);
  mark_dirty(c);
}

/* Makes room for len more bytes (+1). May move hbuf: pointers into it are
 * stale afterwards. */
static int hbuf_reserve(req_priv *r, size_t len) {
  if (r->hlen + len + 1 > r->hcap) {
    size_t cap = r->hcap ? r->hcap : 512;
    while (cap < r->hlen + len + 1) cap *= 2;
    char *p = realloc(r->hbuf, cap);
    if (!p) return -ENOMEM;
    r->hbuf = p;
    r->hcap = cap;
  }
  return 0;
}

/* `at` must not point into hbuf (see finalize_headers for that case). */
static int hbuf_append(req_priv *r, const char *at, size_t len) {
  if (hbuf_reserve(r, len) < 0) return -ENOMEM;
  memcpy(r->hbuf + r->hlen, at, len);
  r->hlen += len;
  return 0;
}

static int count_header_bytes(http_conn *c, size_t n) {
  c->cur->header_bytes += n;
  if (c->cur->header_bytes > c->srv->o.max_header_bytes) {
    c->reject = 431;
    return -1;
  }
  return 0;
}

static int cb_message_begin(http_parser *p) {
  http_conn *c = p->data;
  req_priv *r = req_alloc(c->srv, c);
  if (!r) return -1;
  c->cur = r;
  set_deadline(c, DL_HEADER, c->srv->o.header_timeout_ms);
  return 0;
}

static int cb_url(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  if (count_header_bytes(c, len) < 0) return -1;
  if (hbuf_append(c->cur, at, len) < 0) return -1;
  c->cur->target_len += len;
  return 0;
}

static int cb_header_field(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  req_priv *r = c->cur;
  if (r->pub.method) return 0; /* chunked trailers: ignored */
  /* RFC 9112 5.1: whitespace in or before the colon of a field name is a
   * 400. http-parser's lenient token table lets a space through and would
   * honour "Content-Length : 5" or "Transfer-Encoding : chunked", which a
   * proxy in front may take for unknown headers and frame the message
   * otherwise (request smuggling). */
  if (memchr(at, ' ', len) || memchr(at, '\t', len)) {
    c->reject = 400;
    return -1;
  }
  if (!r->last_field) {
    /* A new header: terminate what came before (target or last value). */
    if (count_header_bytes(c, len + 4) < 0) return -1;
    if (hbuf_append(r, "", 1) < 0) return -1;
    if (r->nh == r->hoffcap) {
      size_t cap = r->hoffcap ? r->hoffcap * 2 : 16;
      hdr_off *h = realloc(r->hoff, cap * sizeof *h);
      if (!h) return -1;
      r->hoff = h;
      r->hoffcap = cap;
    }
    r->hoff[r->nh].name = r->hlen;
    r->hoff[r->nh].name_len = 0;
    r->hoff[r->nh].value = 0;
    r->hoff[r->nh].value_len = 0;
    r->nh++;
    r->last_field = 1;
  } else if (count_header_bytes(c, len) < 0) {
    return -1;
  }
  if (hbuf_append(r, at, len) < 0) return -1;
  r->hoff[r->nh - 1].name_len += len;
  return 0;
}

static int cb_header_value(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  req_priv *r = c->cur;
  if (r->pub.method) return 0;
  if (count_header_bytes(c, len) < 0) return -1;
  if (r->nh == 0) return -1;
  if (r->last_field) {
    if (hbuf_append(r, "", 1) < 0) return -1;
    r->hoff[r->nh - 1].value = r->hlen;
    r->last_field = 0;
  }
  if (hbuf_append(r, at, len) < 0) return -1;
  r->hoff[r->nh - 1].value_len += len;
  return 0;
}

/* Fixes the pointers of the public request once hbuf stops growing. */
static int finalize_headers(req_priv *r, http_parser *p) {
  if (hbuf_append(r, "", 1) < 0) return -1; /* ends target or last value */
  /* A header whose value never came (empty value) points at an empty
   * string: the terminator we just wrote, or the one after its name. */
  /* The absolute form ("POST http://host/webhook", which RFC 9112 3.2.2
   * says a server must accept, e.g. from a forward proxy): the path starts
   * after the scheme and authority, and an empty one is "/". */
  size_t start = 0;
  if (r->target_len > 7 && strncasecmp(r->hbuf, "http://", 7) == 0)
    start = 7;
  else if (r->target_len > 8 && strncasecmp(r->hbuf, "https://", 8) == 0)
    start = 8;
  int absolute = start > 0;
  while (absolute && start < r->target_len && r->hbuf[start] != '/' && r->hbuf[start] != '?')
    start++;
  size_t path_end = start;
  while (path_end < r->target_len && r->hbuf[path_end] != '?') path_end++;
  size_t path_len = path_end - start;
  size_t path_off = r->hlen;
  /* The path is copied from hbuf into hbuf: grow first, then copy within
   * the (possibly moved) buffer. The ranges cannot overlap: path_off is
   * past the target. */
  if (hbuf_reserve(r, path_len + 2) < 0) return -1;
  if (absolute && path_len == 0) {
    r->hbuf[path_off] = '/';
    path_len = 1;
  } else {
    memcpy(r->hbuf + path_off, r->hbuf + start, path_len);
  }
  r->hlen += path_len;
  if (hbuf_append(r, "", 1) < 0) return -1;
  if (r->nh > r->headers_cap) {
    http_header *h = realloc(r->headers, r->nh * sizeof *h);
    if (!h) return -1;
    r->headers = h;
    r->headers_cap = r->nh;
  }
  for (size_t i = 0; i < r->nh; i++) {
    hdr_off *h = &r->hoff[i];
    http_header *o = &r->headers[i];
    o->name = r->hbuf + h->name;
    o->name_len = h->name_len;
    if (h->value == 0) {
      o->value = r->hbuf + h->name + h->name_len; /* the NUL after the name */
      o->value_len = 0;
    } else {
      size_t vl = h->value_len;
      while (vl && (r->hbuf[h->value + vl - 1] == ' ' || r->hbuf[h->value + vl - 1] == '\t'))
        r->hbuf[h->value + --vl] = '\0';
      o->value = r->hbuf + h->value;
      o->value_len = vl;
    }
  }
  r->hbuf[r->target_len] = '\0';
  r->pub.target = r->hbuf;
  r->pub.path = r->hbuf + path_off;
  r->pub.query = path_end < r->target_len ? r->hbuf + path_end + 1 : r->hbuf + r->target_len;
  r->pub.headers = r->headers;
  r->pub.nheaders = r->nh;
  r->pub.method = http_method_str((enum http_method)p->method);
  r->pub.http_minor = p->http_minor;
  r->head = p->method == HTTP_HEAD;
  return 0;
}

static int cb_headers_complete(http_parser *p) {
  http_conn *c = p->data;
  http_server *s = c->srv;
  req_priv *r = c->cur;
  if (finalize_headers(r, p) < 0) return -1;
  int has_len = (p->flags & F_CONTENTLENGTH) != 0;
  if (has_len && p->content_length > s->o.max_body_bytes) {
    c->reject = 413;
    return -1;
  }
  if (has_len && p->content_length + 1 > r->bcap) {
    free(r->body);
    r->bcap = (size_t)p->content_length + 1;
    r->body = malloc(r->bcap);
    if (!r->body) {
      r->bcap = 0;
      return -1;
    }
  }
  const char *expect = http_request_header(&r->pub, "expect");
  if (expect && strcasecmp(expect, "100-continue") == 0 && p->http_minor >= 1 &&
      c->outstanding == 0 && (!has_len || p->content_length > 0)) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (buf_append(&c->out, cont, sizeof cont - 1) < 0) return -1;
    mark_dirty(c);
  }
  set_deadline(c, DL_BODY, s->o.body_timeout_ms);
  return 0;
}

static int cb_body(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  req_priv *r = c->cur;
  if (r->blen + len > c->srv->o.max_body_bytes) {
    c->reject = 413;
    return -1;
  }
  if (r->blen + len + 1 > r->bcap) {
    size_t cap = r->bcap ? r->bcap : 4096;
    while (cap < r->blen + len + 1) cap *= 2;
    uint8_t *b = realloc(r->body, cap);
    if (!b) return -1;
    r->body = b;
    r->bcap = cap;
  }
  memcpy(r->body + r->blen, at, len);
  r->blen += len;
  return 0;
}

static int cb_message_complete(http_parser *p) {
  http_conn *c = p->data;
  http_server *s = c->srv;
  req_priv *r = c->cur;
  c->cur = NULL;
  if (!r->body) {
    r->body = malloc(1);
    if (!r->body) {
      req_free(r);
      return -1;
    }
    r->bcap = 1;
  }
  r->body[r->blen] = 0;
  r->pub.body = r->body;
  r->pub.body_len = r->blen;
  int keep = http_should_keep_alive(p);
  if (!keep) {
    r->close_after = 1;
    c->no_more = 1;
  } else if (p->http_minor == 0) {
    r->keep_alive_10 = 1;
  }
  fifo_push(c, r);
  s->st.requests++;
  set_deadline(c, DL_NONE, 0);
  s->o.on_request(&r->pub, s->o.arg);
  if (c->no_more || c->outstanding >= s->o.max_pipeline || !s->accepting ||
      c->out.len + c->wbuf.len >= OUT_HIGH_WATER) {
    /* Resumed by conn_after_write() once every answer is written. */
    http_parser_pause(p, 1);
  }
  return 0;
}

static void conn_parse(http_conn *c, const char *data, size_t len) {
  http_server *s = c->srv;
  c->in_execute = 1;
  size_t n = http_parser_execute(&c->parser, &s->settings, data, len);
  c->in_execute = 0;
  enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
  if (err == HPE_PAUSED) {
    if (c->no_more || !s->accepting) {
      conn_stop_reading(c);
      buf_free(&c->in);
    } else {
      /* Pipeline full: keep the rest for later and stop reading. */
      c->paused = 1;
      conn_stop_reading(c);
      if (n < len) {
        if (c->in.p == data) {
          memmove(c->in.p, c->in.p + n, len - n);
          c->in.len = len - n;
        } else if (buf_append(&c->in, data + n, len - n) < 0) {
          conn_close(c);
          return;
        }
      } else {
        c->in.len = 0;
      }
    }
  } else if (err != HPE_OK) {
    int status = c->reject ? c->reject : (err == HPE_HEADER_OVERFLOW ? 431 : 400);
    c->reject = 0;
    if (log_enabled(LOG_DEBUG))
      rlog(LOG_DEBUG, "http request refused", "server", s->name, "error",
           http_errno_name(err), NULL);
    conn_refuse(c, status);
  } else if (c->parser.upgrade) {
    /* Protocol switches are not offered: answer what was parsed, stop. */
    c->no_more = 1;
    conn_stop_reading(c);
    if (c->outstanding == 0) c->close_after_flush = 1;
  } else if (c->in.p == data) {
    c->in.len = 0;
  }
  if (c->no_more && !c->closing) {
    conn_stop_reading(c);
    c->close_after_flush = 1;
    if (c->outstanding == 0 && !c->writing && c->out.len == 0 && !c->cur) conn_close(c);
  }
}

/* Parses what was kept while paused, then reads again. */
static void conn_resume(http_conn *c) {
  http_server *s = c->srv;
  if (c->closing || c->in_execute) return;
  if (c->lingering) {
    conn_start_reading(c);
    return;
  }
  if (!s->accepting || c->no_more) return;
  if (c->paused) {
    c->paused = 0;
    http_parser_pause(&c->parser, 0);
    if (c->in.len) {
      conn_parse(c, c->in.p, c->in.len);
      if (c->closing || c->paused || c->no_more) return;
    }
  }
  if (c->cur) set_deadline(c, c->cur->pub.method ? DL_BODY : DL_HEADER,
                           c->cur->pub.method ? s->o.body_timeout_ms : s->o.header_timeout_ms);
  conn_start_reading(c);
}

/* ---- accepting ---------------------------------------------------------- */

static void on_refused_closed(uv_handle_t *h) {
  free(h);
}

static void on_connection(uv_stream_t *ls, int status) {
  http_server *s = ls->data;
  if (status < 0) {
    rlog(LOG_WARN, "accept failed", "server", s->name, "error", uv_strerror(status), NULL);
    return;
  }
  if (!s->accepting) return;
  if (s->st.connections_open >= s->o.max_connections) {
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t) return;
    uv_tcp_init(s->loop, t);
    if (uv_accept(ls, (uv_stream_t *)t) == 0) {
      s->st.connections_refused++;
      uv_tcp_close_reset(t, on_refused_closed);
    } else {
      uv_close((uv_handle_t *)t, on_refused_closed);
    }
    return;
  }
  http_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
    uv_close((uv_handle_t *)&c->tcp, on_refused_closed); /* c is the handle's first member */
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->st.connections_accepted++;
  s->st.connections_open++;
  set_deadline(c, DL_IDLE, s->o.idle_timeout_ms);
  conn_start_reading(c);
  if (!c->reading) conn_close(c);
}

/* ---- timeouts ---------------------------------------------------------- */

static void on_sweep(uv_timer_t *t) {
  http_server *s = t->data;
  uint64_t now = now_ms(s);
  http_conn *c = s->conns;
  while (c) {
    http_conn *next = c->next;
    if (!c->closing) {
      if (s->closing && now >= s->close_deadline) {
        conn_close(c);
      } else if (c->writing && now >= c->write_deadline) {
        conn_close(c); /* the peer stopped reading its answers */
      } else if (c->dl_kind != DL_NONE && now >= c->deadline) {
        switch (c->dl_kind) {
          case DL_HEADER:
          case DL_BODY:
            if (c->paused) break;
            conn_refuse(c, 408);
            break;
          case DL_IDLE:
            s->st.idle_closed++;
            conn_close(c);
            break;
          default:
            conn_close(c);
            break;
        }
      }
    }
    c = next;
  }
}

/* ---- public ------------------------------------------------------------ */

/* http-parser's own cap on a header section, process-wide: 80 KiB as
 * built (HTTP_MAX_HEADER_SIZE). Below a larger max_header_bytes it would
 * answer 431 first, so it is raised (never lowered) to leave the binding
 * limit to count_header_bytes(). The slack covers what the parser counts
 * and we do not (request line, separators, optional whitespace). */
static uint32_t parser_header_max = HTTP_MAX_HEADER_SIZE; /* servers are made one at a time */

static void raise_parser_header_limit(size_t max_header_bytes) {
  uint64_t want = (uint64_t)max_header_bytes * 2 + 4096;
  if (want > UINT32_MAX) want = UINT32_MAX;
  if (want <= parser_header_max) return;
  parser_header_max = (uint32_t)want;
  http_parser_set_max_header_size(parser_header_max);
}

int http_server_new(http_server **out, uv_loop_t *loop, const http_server_options *opts) {
  if (!opts || !opts->on_request) return -EINVAL;
  http_server *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->loop = loop;
  s->o = *opts;
  snprintf(s->name, sizeof s->name, "%s", opts->name ? opts->name : "http");
  s->o.name = s->name;
  if (!s->o.max_connections) s->o.max_connections = 1024;
  if (!s->o.max_header_bytes) s->o.max_header_bytes = 16384;
  if (!s->o.max_body_bytes) s->o.max_body_bytes = 4194304;
  if (!s->o.header_timeout_ms) s->o.header_timeout_ms = 10000;
  if (!s->o.body_timeout_ms) s->o.body_timeout_ms = 30000;
  if (!s->o.idle_timeout_ms) s->o.idle_timeout_ms = 60000;
  if (!s->o.max_pipeline) s->o.max_pipeline = 64;
  raise_parser_header_limit(s->o.max_header_bytes);
  http_parser_settings_init(&s->settings);
  s->settings.on_message_begin = cb_message_begin;
  s->settings.on_url = cb_url;
  s->settings.on_header_field = cb_header_field;
  s->settings.on_header_value = cb_header_value;
  s->settings.on_headers_complete = cb_headers_complete;
  s->settings.on_body = cb_body;
  s->settings.on_message_complete = cb_message_complete;
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  uv_timer_init(loop, &s->sweep);
  s->sweep.data = s;
  uv_check_init(loop, &s->check);
  s->check.data = s;
  uv_idle_init(loop, &s->idle);
  s->idle.data = s;
  s->handles_open = 4;
  /* Sweep often enough that a timeout fires within a quarter of itself. */
  unsigned min = s->o.header_timeout_ms;
  if (s->o.body_timeout_ms < min) min = s->o.body_timeout_ms;
  if (s->o.idle_timeout_ms < min) min = s->o.idle_timeout_ms;
  unsigned period = min / 4;
  if (period < 10) period = 10;
  if (period > 1000) period = 1000;
  uv_timer_start(&s->sweep, on_sweep, period, period);
  uv_unref((uv_handle_t *)&s->sweep);
  uv_check_start(&s->check, on_check);
  uv_unref((uv_handle_t *)&s->check);
  s->accepting = 1;
  *out = s;
  return 0;
}

/* The max_connections of every server listening in this process. */
static _Atomic uint64_t nofile_budget;

/* Each connection is a descriptor. systemd (DefaultLimitNOFILE=1024:524288)
 * and recent Docker start services with a soft RLIMIT_NOFILE of 1024, far
 * below the hard one: past it accept() fails with EMFILE and libuv drops
 * each new connection without a word, long before max_connections, while
 * the admin listener and the SNS client cannot open sockets either (a
 * failing /healthz under a burst of webhooks). So the soft limit is raised
 * to the hard one, as systemd.exec(5) asks of programs that need more
 * (nothing here uses select()); a hard limit still too low is logged. */
static void ensure_nofile(http_server *s) {
  uint64_t need = atomic_fetch_add(&nofile_budget, s->o.max_connections) + s->o.max_connections +
                  NOFILE_RESERVE;
  s->counted_nofile = 1;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
  rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > NOFILE_CAP ? NOFILE_CAP : rl.rlim_max;
  if (rl.rlim_cur < want) {
    struct rlimit nl = {want, rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &nl) == 0) rl.rlim_cur = want;
  }
  if (rl.rlim_cur < need) {
    char limit[24], conns[24];
    snprintf(limit, sizeof limit, "%llu", (unsigned long long)rl.rlim_cur);
    snprintf(conns, sizeof conns, "%u", s->o.max_connections);
    rlog(LOG_WARN,
         "open-file limit too low for the connection limit: new connections may be dropped and "
         "SNS/admin sockets fail (raise LimitNOFILE / ulimit -n)",
         "server", s->name, "#nofile_limit", limit, "#max_connections", conns, NULL);
  }
}

int http_server_listen(http_server *s, const struct sockaddr *addr) {
  if (!addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)) return -EINVAL;
  int rc = uv_tcp_bind(&s->listener, addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
  if (rc < 0) return rc;
  if (!s->counted_nofile) ensure_nofile(s);
  struct sockaddr_storage got;
  int len = sizeof got;
  if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len) == 0) {
    if (got.ss_family == AF_INET) s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    else s->port = ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
  }
  s->listening = 1;
  return 0;
}

int http_server_port(const http_server *s) {
  return s->port;
}

static void on_handle_closed(uv_handle_t *h) {
  http_server *s = h->data;
  s->handles_open--;
  maybe_finish(s);
}

void http_server_stop_accepting(http_server *s) {
  if (!s->accepting) return;
  s->accepting = 0;
  if (!uv_is_closing((uv_handle_t *)&s->listener)) uv_close((uv_handle_t *)&s->listener, on_handle_closed);
  http_conn *c = s->conns;
  while (c) {
    http_conn *next = c->next;
    if (!c->closing) {
      c->no_more = 1;
      conn_stop_reading(c);
      if (c->cur) {
        /* A request still arriving is dropped, not timed out later. */
        req_free(c->cur);
        c->cur = NULL;
        set_deadline(c, DL_NONE, 0);
      }
      if (c->outstanding == 0 && !c->writing && c->out.len == 0) conn_close(c);
      else c->close_after_flush = 1;
    }
    c = next;
  }
}

static void maybe_finish(http_server *s) {
  if (!s->closing) return;
  if (s->conns || s->orphans) return;
  if (s->handles_open == 3 && !uv_is_closing((uv_handle_t *)&s->sweep)) {
    uv_close((uv_handle_t *)&s->sweep, on_handle_closed);
    uv_close((uv_handle_t *)&s->check, on_handle_closed);
    uv_close((uv_handle_t *)&s->idle, on_handle_closed);
    return;
  }
  if (s->handles_open == 0) {
    if (s->counted_nofile) atomic_fetch_sub(&nofile_budget, s->o.max_connections);
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;
    while (s->pool) {
      req_priv *r = s->pool;
      s->pool = r->next;
      req_destroy(r);
    }
    free(s);
    if (done) done(arg);
  }
}

void http_server_close(http_server *s, unsigned grace_ms, void (*done)(void *), void *arg) {
  if (s->closing) return;
  http_server_stop_accepting(s);
  s->closing = 1;
  s->done = done;
  s->done_arg = arg;
  s->close_deadline = now_ms(s) + (grace_ms ? grace_ms : 10000);
  /* The sweep timer must keep the loop alive while connections drain. */
  uv_ref((uv_handle_t *)&s->sweep);
  maybe_finish(s);
}

static int respond(http_request *pub, int status, const char *ct, const char *extra,
                   const void *body, size_t len, int close) {
  req_priv *r = (req_priv *)pub;
  http_conn *c = r->conn;
  if (!c) {
    http_server *s = r->srv;
    req_free(r);
    s->orphans--;
    maybe_finish(s);
    return -ECONNRESET;
  }
  if (r->answered) return -EALREADY;
  r->answered = 1;
  if (close) r->close_after = 1;
  /* No request will follow this one here (the server is stopping, or the
   * client half-closed): its answer is the last, so it says so, and a
   * keep-alive client does not send its next request into our close. */
  if (c->no_more && c->tail == r && !c->cur) r->close_after = 1;
  buf b = {0};
  int rc;
  if (c->head == r) {
    /* Common case: first in line. Serialize straight into the output. */
    rc = serialize(c->srv, &c->out, status, ct, extra, body, len, r->close_after,
                   r->keep_alive_10, r->head);
    if (rc == 0) {
      c->head = r->next;
      if (!c->head) c->tail = NULL;
      c->outstanding--;
      int closing = r->close_after;
      req_free(r);
      if (closing) {
        c->close_after_flush = 1;
        c->no_more = 1;
        orphan_all(c);
      }
      mark_dirty(c);
      return 0;
    }
  } else {
    rc = serialize(c->srv, &b, status, ct, extra, body, len, r->close_after, r->keep_alive_10,
                   r->head);
    if (rc == 0) {
      memset(&r->pub, 0, sizeof r->pub);
      r->resp = b.p;
      r->resp_len = b.len;
      if (c->head == r) mark_dirty(c);
      return 0;
    }
  }
  buf_free(&b);
  /* Out of memory: this connection cannot keep its order promise. */
  if (!c->in_execute) conn_close(c);
  else c->no_more = 1;
  return rc;
}

int http_respond(http_request *req, int status, const char *ct, const char *extra,
                 const void *body, size_t len) {
  return respond(req, status, ct, extra, body, len, 0);
}

int http_respond_close(http_request *req, int status, const char *ct, const char *extra,
                       const void *body, size_t len) {
  return respond(req, status, ct, extra, body, len, 1);
}

int http_request_orphaned(const http_request *req) {
  return ((const req_priv *)req)->conn == NULL;
}

const char *http_request_header(const http_request *req, const char *name) {
  size_t nl = strlen(name);
  for (size_t i = 0; i < req->nheaders; i++) {
    if (req->headers[i].name_len == nl && strncasecmp(req->headers[i].name, name, nl) == 0)
      return req->headers[i].value;
  }
  return NULL;
}

int http_request_peer(const http_request *req, char *out, size_t len) {
  const req_priv *r = (const req_priv *)req;
  if (!r->conn || len == 0) return -ENOTCONN;
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  int rc = uv_tcp_getpeername(&r->conn->tcp, (struct sockaddr *)&ss, &sl);
  if (rc < 0) return rc;
  char ip[64];
  int port;
  if (ss.ss_family == AF_INET) {
    uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  } else {
    uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  snprintf(out, len, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
  return 0;
}

http_server *http_request_server(const http_request *req) {
  return ((const req_priv *)req)->srv;
}

void http_server_get_stats(const http_server *s, http_server_stats *out) {
  *out = s->st;
}
