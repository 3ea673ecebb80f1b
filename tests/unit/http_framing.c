/* http_server.c: request framing and header limits an RFC 9112 server must
 * hold, over real loopback sockets. The server runs on its own loop
 * thread; the test is a blocking client. */
#include "http_server.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include "http_testclient.h"
#include "testlib.h"

typedef struct fixture {
  uv_loop_t loop;
  uv_thread_t th;
  uv_async_t stop;
  uv_sem_t ready;
  http_server *srv;
  int port;
  atomic_int requests; /* handed to the handler */
  atomic_int refused[600];
  atomic_int closed;
  size_t max_header_bytes; /* 0: the default */
} fixture;

/* Echoes "METHOD path body_len" at once. */
static void handler(http_request *req, void *arg) {
  fixture *f = arg;
  atomic_fetch_add(&f->requests, 1);
  char out[256];
  int n = snprintf(out, sizeof out, "%s %s %zu", req->method, req->path, req->body_len);
  http_respond(req, 200, "text/plain", NULL, out, (size_t)n);
}

static void on_refused(void *arg, int status) {
  fixture *f = arg;
  if (status >= 0 && status < 600) atomic_fetch_add(&f->refused[status], 1);
}

static void on_closed(void *arg) {
  fixture *f = arg;
  atomic_store(&f->closed, 1);
  uv_close((uv_handle_t *)&f->stop, NULL);
}

static void on_stop(uv_async_t *a) {
  fixture *f = a->data;
  http_server_close(f->srv, 2000, on_closed, f);
}

static void run(void *arg) {
  fixture *f = arg;
  uv_loop_init(&f->loop);
  uv_async_init(&f->loop, &f->stop, on_stop);
  f->stop.data = f;
  http_server_options o;
  memset(&o, 0, sizeof o);
  o.name = "review";
  o.on_request = handler;
  o.on_refused = on_refused;
  o.arg = f;
  o.max_header_bytes = f->max_header_bytes;
  CHECK_INT(http_server_new(&f->srv, &f->loop, &o), ==, 0);
  struct sockaddr_in a;
  CHECK_INT(uv_ip4_addr("127.0.0.1", 0, &a), ==, 0);
  CHECK_INT(http_server_listen(f->srv, (const struct sockaddr *)&a), ==, 0);
  f->port = http_server_port(f->srv);
  uv_sem_post(&f->ready);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&f->loop), ==, 0);
}

static fixture *start_with(size_t max_header_bytes) {
  signal(SIGPIPE, SIG_IGN);
  fixture *f = calloc(1, sizeof *f);
  f->max_header_bytes = max_header_bytes;
  uv_sem_init(&f->ready, 0);
  uv_thread_create(&f->th, run, f);
  uv_sem_wait(&f->ready);
  CHECK(f->port > 0);
  return f;
}

static fixture *start(void) {
  return start_with(0);
}

static void stop(fixture *f) {
  uv_async_send(&f->stop);
  uv_thread_join(&f->th);
  CHECK(atomic_load(&f->closed));
  uv_sem_destroy(&f->ready);
  free(f);
}

/* Sends raw bytes on a fresh connection; expects exactly one answer with
 * `status`, then the connection closed by the server. */
static void expect_refused_and_closed(fixture *f, const char *raw, int status) {
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, raw), ==, 0);
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  if (r.status != status)
    tl_fail(__FILE__, __LINE__, "got %d (body \"%s\") for %s", r.status, r.body, raw);
  tc_resp_free(&r);
  CHECK_INT(tc_wait_closed(&c, 5000), ==, 1);
  tc_close(&c);
}

/* RFC 9112 5.1: "No whitespace is allowed between the field name and
 * colon ... A server MUST reject, with a response status code of 400 (Bad
 * Request), any received request message that contains whitespace between
 * a header field name and colon." http-parser's lenient token table lets a
 * space through and then honours "Content-Length : 5" and
 * "Transfer-Encoding : chunked" as framing headers. A proxy in front of
 * relayd that takes them for unknown headers frames the message
 * differently: request smuggling (the next request's bytes are read as
 * this one's body). */
TEST(header_name_whitespace_is_400) {
  fixture *f = start();
  /* Would be framed as a 5-byte body swallowing "GET /" of the next one. */
  expect_refused_and_closed(
      f, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
      400);
  /* Would be framed as chunked. */
  expect_refused_and_closed(
      f, "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400);
  /* Whitespace inside a name is no token either. */
  expect_refused_and_closed(f, "GET /a HTTP/1.1\r\nHost: h\r\nX Foo: 1\r\n\r\n", 400);
  CHECK_INT(atomic_load(&f->requests), ==, 0);
  CHECK_INT(atomic_load(&f->refused[400]), ==, 3);
  /* Whitespace around the value stays fine, and so do odd-case names. */
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "POST /ok HTTP/1.1\r\nhOsT: h\r\ncontent-LENGTH:   3  \r\n\r\nabc"), ==,
            0);
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_INT(r.status, ==, 200);
  CHECK_STR(r.body, "POST /ok 3");
  tc_resp_free(&r);
  tc_close(&c);
  stop(f);
}

/* A request whose header section is `pad` bytes of one header's value. */
static char *padded_request(size_t pad) {
  char *raw = malloc(pad + 256);
  int n = snprintf(raw, 256, "GET /pad HTTP/1.1\r\nHost: h\r\nX-Pad: ");
  memset(raw + n, 'p', pad);
  memcpy(raw + (size_t)n + pad, "\r\n\r\n", 5);
  return raw;
}

/* README: RELAY_HTTP_MAX_HEADER_BYTES (1 KiB..1 MiB) is where 431 starts.
 * http-parser has its own process-wide cap on a header section, 80 KiB as
 * Debian builds it, which answered 431 first: a limit configured above
 * 80 KiB was silently 80 KiB. */
TEST(max_header_bytes_above_parser_default) {
  fixture *f = start_with(256 * 1024);
  char *raw = padded_request(120 * 1024);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, raw), ==, 0);
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  if (r.status != 200)
    tl_fail(__FILE__, __LINE__, "120 KiB of headers under a 256 KiB limit: %d", r.status);
  CHECK_STR(r.body, "GET /pad 0");
  tc_resp_free(&r);
  tc_close(&c);
  free(raw);
  /* Over the configured limit: 431 all the same. */
  raw = padded_request(260 * 1024);
  expect_refused_and_closed(f, raw, 431);
  free(raw);
  CHECK_INT(atomic_load(&f->requests), ==, 1);
  stop(f);
  /* A server with the default limit still stops at its own 16 KiB. */
  f = start();
  raw = padded_request(20 * 1024);
  expect_refused_and_closed(f, raw, 431);
  free(raw);
  stop(f);
}
