/* A small HTTP/1.1 server on libuv, shared by the webhook listener (ingest)
 * and the admin API.
 *
 * Parsing is nodejs http-parser. The server owns framing and limits; the
 * handler owns routing and answers.
 *
 * Model
 * -----
 * Each complete request (headers and the whole body) is handed to the
 * handler, which answers it now or later with http_respond(): exactly once
 * per request, always, even when the connection has gone away in the
 * meantime (then the answer is dropped and the request freed). Requests of
 * one connection may be pipelined: the handler sees them as soon as they
 * are parsed (so a burst of them can share one group commit), but the
 * answers leave strictly in request order: the answer to request N+1 waits
 * in the server until N's has been written.
 *
 * Keep-alive is HTTP/1.1's default; "Connection: close" or HTTP/1.0 without
 * keep-alive closes the connection after the answer. When no request can
 * follow (the server stops accepting, or the client half-closed), the last
 * answer says "Connection: close" too, so that a keep-alive client does not
 * send its next request into the close.
 *
 * Limits (answered by the server itself; the handler never sees these
 * requests; the connection is closed after the answer):
 *   - request line + headers over max_header_bytes: 431
 *   - body over max_body_bytes: 413, decided from Content-Length before any
 *     of the body is read, or while a chunked body streams in (the oversize
 *     body is never buffered)
 *   - malformed HTTP (bad framing, bad chunking, bad method...): 400
 *   - headers not complete within header_timeout_ms of the request's first
 *     byte, or body not complete within body_timeout_ms of the headers: 408
 *   - a keep-alive connection with no request in progress and nothing
 *     to answer for idle_timeout_ms: closed silently
 *   - an answer not fully written within idle_timeout_ms (the peer stopped
 *     reading): the connection is closed
 *   - connections beyond max_connections: accepted and reset at once;
 *     existing connections are not affected
 * "Expect: 100-continue" is honoured (413 instead when Content-Length is
 * already over the cap).
 *
 * Threads: everything runs on the loop thread of `loop`. The process must
 * ignore SIGPIPE (a write to a peer that reset then fails with EPIPE).
 */
#ifndef RELAY_HTTP_SERVER_H
#define RELAY_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct http_server http_server;
typedef struct http_request http_request;

typedef struct {
  const char *name; /* as received; NUL-terminated */
  const char *value; /* NUL-terminated, surrounding whitespace trimmed */
  size_t name_len, value_len;
} http_header;

/* What the handler sees. Every pointer stays valid until http_respond()
 * returns for this request. */
struct http_request {
  const char *method;     /* "GET", "POST", ... */
  const char *target;     /* raw request target, e.g. "/v1/dlq?limit=5" */
  const char *path;       /* target up to '?', NUL-terminated, not decoded */
  const char *query;      /* after '?' (not decoded), "" when none */
  const http_header *headers;
  size_t nheaders;
  const uint8_t *body;    /* de-chunked, NOT content-decoded; never NULL
                             (points at "" when empty), NUL-terminated */
  size_t body_len;
  int http_minor;         /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
  void *user;             /* free for the handler */
};

/* Called on the loop thread for each complete request. */
typedef void (*http_handler)(http_request *req, void *arg);

typedef struct {
  const char *name;             /* for log lines: "ingest", "admin" */
  http_handler on_request;
  void *arg;
  unsigned max_connections;     /* 0 = 1024 */
  size_t max_header_bytes;      /* 0 = 16384 */
  uint64_t max_body_bytes;      /* 0 = 4 MiB */
  unsigned header_timeout_ms;   /* 0 = 10000 */
  unsigned body_timeout_ms;     /* 0 = 30000 */
  unsigned idle_timeout_ms;     /* 0 = 60000 */
  /* Requests of one connection parsed ahead of their answers before the
   * server stops reading from it (back-pressure). 0 = 64. Reading also
   * stops while 1 MiB of answers waits unwritten (answers made at once,
   * e.g. 4xx, are never ahead of their answers). */
  unsigned max_pipeline;
  /* Optional: called when the server answers a request by itself (400,
   * 408, 413, 431), so callers can count refusals (metrics). */
  void (*on_refused)(void *arg, int status);
} http_server_options;

typedef struct {
  uint64_t connections_accepted;  /* total */
  uint64_t connections_refused;   /* over max_connections */
  uint64_t connections_open;      /* now */
  uint64_t requests;              /* handed to the handler */
  uint64_t refused_400, refused_408, refused_413, refused_431;
  uint64_t idle_closed;           /* idle timeouts */
} http_server_stats;

/* Creates a server (not yet listening). The options are copied. */
int http_server_new(http_server **out, uv_loop_t *loop, const http_server_options *opts);

/* Binds and listens on addr (IPv4 or IPv6; port 0 picks a free port, see
 * http_server_port()). Configuration strings are parsed by the one parser,
 * cfg_parse_listen() in config.h. Returns 0 or a negative errno
 * (-EADDRINUSE, -EINVAL for an address family other than IPv4/IPv6).
 * Every connection is a descriptor: listening raises the process's soft
 * RLIMIT_NOFILE to its hard limit (at most 2^20), and logs a warning when
 * that is still below the max_connections of all listening servers plus a
 * reserve for the rest of the process. */
struct sockaddr;
int http_server_listen(http_server *s, const struct sockaddr *addr);

/* The bound port (after a successful listen), else 0. */
int http_server_port(const http_server *s);

/* Stops accepting new connections and stops reading new requests from
 * existing ones; requests already handed to the handler can still be
 * answered and their answers are still written. Idempotent. */
void http_server_stop_accepting(http_server *s);

/* Stops accepting, waits (up to grace_ms; 0 = 10000) until every request
 * handed to the handler has been answered and written, closes every
 * connection and the listener, then calls done(arg) on the loop thread and
 * frees the server. Requests still unanswered at the deadline become
 * orphans: their http_respond() just frees them (the handler must still
 * call it); done is called only after the last of them. */
void http_server_close(http_server *s, unsigned grace_ms, void (*done)(void *arg), void *arg);

/* Answers `req`. status: any 1xx-5xx code (a reason phrase is added).
 * content_type: NULL = none (when body_len is 0) or "application/json".
 * extra_headers: NULL or complete header lines, each ending "\r\n" (for
 * example "Retry-After: 1\r\n"). The body is copied. Content-Length and
 * Date are added by the server. `req` is invalid afterwards.
 * Returns 0, or -ECONNRESET when the connection was already gone (the
 * answer is dropped; the request freed all the same). */
int http_respond(http_request *req, int status, const char *content_type,
                 const char *extra_headers, const void *body, size_t body_len);

/* Like http_respond(), and closes the connection after this answer
 * (further pipelined requests are discarded unanswered). */
int http_respond_close(http_request *req, int status, const char *content_type,
                       const char *extra_headers, const void *body, size_t body_len);

/* 1 when the connection of an unanswered request has already gone away
 * (the handler may skip work; it must still call http_respond()). */
int http_request_orphaned(const http_request *req);

/* Case-insensitive header lookup: the first value of `name`, or NULL. */
const char *http_request_header(const http_request *req, const char *name);

/* The peer's address as "ip:port" into buf (for logs). 0 or -errno. */
int http_request_peer(const http_request *req, char *buf, size_t len);

/* The server a request arrived on. */
http_server *http_request_server(const http_request *req);

void http_server_get_stats(const http_server *s, http_server_stats *out);

/* Standard reason phrase for a status ("OK", "Not Found", ...). */
const char *http_status_text(int status);

#endif
