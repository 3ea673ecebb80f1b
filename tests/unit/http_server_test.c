/* http_server: framing, ordering, limits and lifetime, over real loopback
 * sockets. The server runs on its own loop thread; the test is a blocking
 * client. Each case checks that the loop closes with no handle left. */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "http_testclient.h"
#include "testlib.h"

typedef struct fixture fixture;

typedef struct deferred {
  uv_timer_t t;
  http_request *req;
  fixture *f;
  size_t big; /* answer with this many bytes instead */
} deferred;

struct fixture {
  uv_loop_t loop;
  uv_thread_t th;
  uv_async_t stop;
  http_server *srv;
  http_server_options o;
  int port;
  atomic_int closed;
  atomic_int requests;
  atomic_int orphan_answers; /* http_respond() returned -ECONNRESET */
  atomic_int refused[600];
  http_server_stats final;
  uv_sem_t ready;
};

static void on_deferred_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_deferred(uv_timer_t *t) {
  deferred *d = t->data;
  char body[64];
  int n = snprintf(body, sizeof body, "late %s", d->req->path);
  char *big = d->big ? malloc(d->big) : NULL;
  if (big) memset(big, 'b', d->big);
  if (http_respond(d->req, 200, "text/plain", NULL, big ? big : body, big ? d->big : (size_t)n) ==
      -ECONNRESET)
    atomic_fetch_add(&d->f->orphan_answers, 1);
  free(big);
  uv_close((uv_handle_t *)t, on_deferred_closed);
}

/* Routes: /defer/<ms> answers after ms; /big/<ms> answers 16 MiB after ms;
 * /close answers and closes; others echo "METHOD target body_len body" at
 * once. */
static void handler(http_request *req, void *arg) {
  fixture *f = arg;
  atomic_fetch_add(&f->requests, 1);
  int big = strncmp(req->path, "/big/", 5) == 0;
  if (big || strncmp(req->path, "/defer/", 7) == 0) {
    deferred *d = calloc(1, sizeof *d);
    d->req = req;
    d->big = big ? (size_t)16 << 20 : 0;
    d->f = f;
    uv_timer_init(&f->loop, &d->t);
    d->t.data = d;
    uv_timer_start(&d->t, on_deferred, (uint64_t)strtoul(req->path + (big ? 5 : 7), NULL, 10), 0);
    return;
  }
  size_t cap = req->body_len + 4096;
  char *out = malloc(cap);
  const char *x = http_request_header(req, "x-test");
  int n = snprintf(out, cap, "%s %s %s|%s|%zu ", req->method, req->path, req->query,
                   x ? x : "-", req->body_len);
  memcpy(out + n, req->body, req->body_len);
  if (strcmp(req->path, "/close") == 0)
    http_respond_close(req, 200, "text/plain", NULL, out, (size_t)n + req->body_len);
  else
    http_respond(req, 200, "text/plain", "X-Extra: 1\r\n", out, (size_t)n + req->body_len);
  free(out);
}

static void on_refused(void *arg, int status) {
  fixture *f = arg;
  atomic_fetch_add(&f->refused[status], 1);
}

static void on_closed(void *arg) {
  fixture *f = arg;
  atomic_store(&f->closed, 1);
  uv_close((uv_handle_t *)&f->stop, NULL);
}

static void on_stop(uv_async_t *a) {
  fixture *f = a->data;
  http_server_get_stats(f->srv, &f->final);
  http_server_close(f->srv, 2000, on_closed, f);
}

static void run(void *arg) {
  fixture *f = arg;
  uv_loop_init(&f->loop);
  uv_async_init(&f->loop, &f->stop, on_stop);
  f->stop.data = f;
  f->o.on_request = handler;
  f->o.on_refused = on_refused;
  f->o.arg = f;
  f->o.name = "test";
  CHECK_INT(http_server_new(&f->srv, &f->loop, &f->o), ==, 0);
  struct sockaddr_in any;
  CHECK_INT(uv_ip4_addr("127.0.0.1", 0, &any), ==, 0);
  CHECK_INT(http_server_listen(f->srv, (const struct sockaddr *)&any), ==, 0);
  f->port = http_server_port(f->srv);
  uv_sem_post(&f->ready);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&f->loop), ==, 0);
}

static fixture *start(const http_server_options *o) {
  signal(SIGPIPE, SIG_IGN); /* as relayd does: writes to reset peers fail, not kill */
  fixture *f = calloc(1, sizeof *f);
  if (o) f->o = *o;
  uv_sem_init(&f->ready, 0);
  uv_thread_create(&f->th, run, f);
  uv_sem_wait(&f->ready);
  CHECK(f->port > 0);
  return f;
}

static void stop(fixture *f) {
  uv_async_send(&f->stop);
  uv_thread_join(&f->th);
  CHECK(atomic_load(&f->closed));
  uv_sem_destroy(&f->ready);
  free(f);
}

static void expect_echo(tc_conn *c, const char *want_prefix) {
  tc_resp r;
  CHECK_INT(tc_read(c, &r, 5000), ==, 0);
  CHECK_INT(r.status, ==, 200);
  if (strncmp(r.body, want_prefix, strlen(want_prefix)) != 0)
    tl_fail(__FILE__, __LINE__, "body \"%s\" does not start with \"%s\"", r.body, want_prefix);
  tc_resp_free(&r);
}

TEST(keepalive_two_requests) {
  fixture *f = start(NULL);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Test:  v1  \r\n\r\n"), ==, 0);
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_INT(r.status, ==, 200);
  CHECK_STR(r.body, "GET /a x=1|v1|0 ");
  char v[64];
  CHECK(tc_header(&r, "X-Extra", v, sizeof v));
  CHECK(tc_header(&r, "Date", v, sizeof v));
  CHECK(!tc_header(&r, "Connection", v, sizeof v));
  tc_resp_free(&r);
  CHECK_INT(tc_send_str(&c, "POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"), ==, 0);
  expect_echo(&c, "POST /b |-|5 hello");
  tc_close(&c);
  stop(f);
}

/* RFC 9112 3.2.2: a server must accept the absolute form; path and query
 * are those of the origin form, and an empty path is "/". */
TEST(absolute_form_target) {
  fixture *f = start(NULL);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(
      tc_send_str(&c,
                  "POST http://relay.example:8080/b?x=1 HTTP/1.1\r\nHost: relay.example:8080\r\n"
                  "Content-Length: 2\r\n\r\nhi"),
      ==, 0);
  expect_echo(&c, "POST /b x=1|-|2 hi");
  CHECK_INT(tc_send_str(&c, "GET HTTPS://relay.example HTTP/1.1\r\nHost: relay.example\r\n\r\n"),
            ==, 0);
  expect_echo(&c, "GET / |-|0 ");
  CHECK_INT(tc_send_str(&c, "GET /http://x/y HTTP/1.1\r\nHost: h\r\n\r\n"), ==, 0);
  expect_echo(&c, "GET /http://x/y |-|0 "); /* origin form: taken as it is */
  tc_close(&c);
  stop(f);
}

TEST(pipelined_answers_in_order) {
  fixture *f = start(NULL);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  /* The first waits 150 ms, the next two are answered at once: the order
   * on the wire must still be 1, 2, 3, then 4 (deferred 10 ms). */
  CHECK_INT(tc_send_str(&c,
                        "GET /defer/150 HTTP/1.1\r\n\r\n"
                        "POST /two HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                        "POST /three HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "2\r\nxy\r\n0\r\n\r\n"
                        "GET /defer/10 HTTP/1.1\r\n\r\n"),
            ==, 0);
  expect_echo(&c, "late /defer/150");
  expect_echo(&c, "POST /two |-|3 abc");
  expect_echo(&c, "POST /three |-|2 xy");
  expect_echo(&c, "late /defer/10");
  tc_close(&c);
  stop(f);
}

TEST(many_pipelined_over_backpressure_limit) {
  http_server_options o = {.max_pipeline = 4};
  fixture *f = start(&o);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  char *all = malloc(200 * 64);
  size_t len = 0;
  for (int i = 0; i < 200; i++)
    len += (size_t)snprintf(all + len, 64, "GET /%s%d HTTP/1.1\r\n\r\n", i % 7 ? "n" : "defer/", i % 7 ? i : 1);
  CHECK_INT(tc_send(&c, all, len), ==, 0);
  free(all);
  for (int i = 0; i < 200; i++) {
    char want[64];
    if (i % 7) snprintf(want, sizeof want, "GET /n%d |", i);
    else snprintf(want, sizeof want, "late /defer/1");
    expect_echo(&c, want);
  }
  tc_close(&c);
  CHECK_INT(atomic_load(&f->requests), ==, 200);
  stop(f);
}

/* Every split of a request into two writes, with the second write after the
 * server has certainly read the first. */
static void split_everywhere(fixture *f, const char *req, const char *want) {
  size_t len = strlen(req);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  for (size_t cut = 1; cut < len; cut++) {
    CHECK_INT(tc_send(&c, req, cut), ==, 0);
    usleep(300);
    CHECK_INT(tc_send(&c, req + cut, len - cut), ==, 0);
    expect_echo(&c, want);
  }
  tc_close(&c);
}

TEST(split_at_every_byte) {
  fixture *f = start(NULL);
  split_everywhere(f, "POST /s?q HTTP/1.1\r\nHost: x\r\nX-Test: abc\r\nContent-Length: 4\r\n\r\nbody",
                   "POST /s q|abc|4 body");
  split_everywhere(f,
                   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Test: t\r\n\r\n"
                   "3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: 1\r\n\r\n",
                   "POST /c |t|19 abc0123456789abcdef");
  stop(f);
}

TEST(one_byte_at_a_time) {
  fixture *f = start(NULL);
  const char *req = "POST /b HTTP/1.1\r\nX-Test: 1\r\nContent-Length: 3\r\n\r\nxyz";
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  for (size_t i = 0; req[i]; i++) {
    CHECK_INT(tc_send(&c, req + i, 1), ==, 0);
    usleep(200);
  }
  expect_echo(&c, "POST /b |1|3 xyz");
  tc_close(&c);
  stop(f);
}

TEST(header_too_large_431) {
  http_server_options o = {.max_header_bytes = 1024};
  fixture *f = start(&o);
  char big[4096];
  int n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Big: ");
  memset(big + n, 'a', 2000);
  memcpy(big + n + 2000, "\r\n\r\n", 5);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, big), ==, 0);
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_INT(r.status, ==, 431);
  char v[32];
  CHECK_STR(tc_header(&r, "Connection", v, sizeof v), "close");
  tc_resp_free(&r);
  CHECK(tc_wait_closed(&c, 5000));
  tc_close(&c);
  /* Many small headers add up too. */
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET / HTTP/1.1\r\n"), ==, 0);
  for (int i = 0; i < 200; i++) CHECK_INT(tc_send_str(&c, "X-A: b\r\n"), ==, 0);
  CHECK_INT(tc_send_str(&c, "\r\n"), ==, 0);
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_INT(r.status, ==, 431);
  tc_resp_free(&r);
  tc_close(&c);
  CHECK_INT(atomic_load(&f->requests), ==, 0);
  CHECK_INT(atomic_load(&f->refused[431]), ==, 2);
  stop(f);
}

TEST(body_too_large_413_from_content_length) {
  http_server_options o = {.max_body_bytes = 1000};
  fixture *f = start(&o);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  /* The answer comes before any body byte was sent. */
  CHECK_INT(tc_send_str(&c, "POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"), ==, 0);
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_INT(r.status, ==, 413);
  tc_resp_free(&r);
  CHECK(tc_wait_closed(&c, 5000));
  tc_close(&c);
  /* Exactly at the cap is fine. */
  char *req = malloc(2000);
  int n = snprintf(req, 2000, "POST /ok HTTP/1.1\r\nContent-Length: 1000\r\n\r\n");
  memset(req + n, 'z', 1000);
  char *body = NULL;
  CHECK_INT(tc_request(f->port, req, (size_t)n + 1000, &body), ==, 200);
  CHECK(strncmp(body, "POST /ok |-|1000 zzz", 20) == 0);
  free(body);
  free(req);
  stop(f);
}

TEST(body_too_large_413_while_chunked) {
  http_server_options o = {.max_body_bytes = 100};
  fixture *f = start(&o);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), ==, 0);
  char chunk[80];
  memset(chunk, 'q', sizeof chunk);
  /* 80 + 80 > 100: refused while streaming; we keep sending, as a client
   * that does not read would, and must still see the 413. */
  for (int i = 0; i < 2; i++) {
    CHECK_INT(tc_send_str(&c, "50\r\n"), ==, 0);
    CHECK_INT(tc_send(&c, chunk, sizeof chunk), ==, 0);
    CHECK_INT(tc_send_str(&c, "\r\n"), ==, 0);
  }
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_INT(r.status, ==, 413);
  tc_resp_free(&r);
  CHECK(tc_wait_closed(&c, 5000));
  tc_close(&c);
  CHECK_INT(atomic_load(&f->requests), ==, 0);
  stop(f);
}

TEST(malformed_400) {
  fixture *f = start(NULL);
  const char *bad[] = {
      "GARBAGE\r\n\r\n",
      "GET / HTTP/9.9x\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int st = tc_request(f->port, bad[i], strlen(bad[i]), NULL);
    if (st != 400) tl_fail(__FILE__, __LINE__, "case %zu: status %d", i, st);
  }
  /* A good request before a bad one on the same connection is answered. */
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /good HTTP/1.1\r\n\r\nBLAH\r\n\r\n"), ==, 0);
  expect_echo(&c, "GET /good");
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_INT(r.status, ==, 400);
  tc_resp_free(&r);
  CHECK(tc_wait_closed(&c, 5000));
  tc_close(&c);
  stop(f);
}

TEST(header_and_body_timeouts_408) {
  http_server_options o = {.header_timeout_ms = 200, .body_timeout_ms = 300, .idle_timeout_ms = 5000};
  fixture *f = start(&o);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET / HTTP/1.1\r\nX-Slow: "), ==, 0);
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 3000), ==, 0);
  CHECK_INT(r.status, ==, 408);
  tc_resp_free(&r);
  CHECK(tc_wait_closed(&c, 3000));
  tc_close(&c);
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab"), ==, 0);
  CHECK_INT(tc_read(&c, &r, 3000), ==, 0);
  CHECK_INT(r.status, ==, 408);
  tc_resp_free(&r);
  tc_close(&c);
  CHECK_INT(atomic_load(&f->refused[408]), ==, 2);
  stop(f);
}

TEST(idle_timeout_closes) {
  http_server_options o = {.idle_timeout_ms = 200};
  fixture *f = start(&o);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /x HTTP/1.1\r\n\r\n"), ==, 0);
  expect_echo(&c, "GET /x");
  CHECK(tc_wait_closed(&c, 3000));
  tc_close(&c);
  /* A connection that never sends anything is closed too. */
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK(tc_wait_closed(&c, 3000));
  tc_close(&c);
  stop(f);
  /* final stats were taken before close */
}

TEST(max_connections_refuses_new_keeps_old) {
  http_server_options o = {.max_connections = 3};
  fixture *f = start(&o);
  tc_conn c[3], extra;
  for (int i = 0; i < 3; i++) {
    CHECK_INT(tc_connect(&c[i], f->port), ==, 0);
    CHECK_INT(tc_send_str(&c[i], "GET /first HTTP/1.1\r\n\r\n"), ==, 0);
    expect_echo(&c[i], "GET /first");
  }
  CHECK_INT(tc_connect(&extra, f->port), ==, 0);
  CHECK(tc_wait_closed(&extra, 3000));
  tc_close(&extra);
  for (int i = 0; i < 3; i++) {
    CHECK_INT(tc_send_str(&c[i], "GET /again HTTP/1.1\r\n\r\n"), ==, 0);
    expect_echo(&c[i], "GET /again");
  }
  tc_close(&c[0]);
  usleep(100000);
  /* A slot is free again. */
  CHECK_INT(tc_connect(&extra, f->port), ==, 0);
  CHECK_INT(tc_send_str(&extra, "GET /late HTTP/1.1\r\n\r\n"), ==, 0);
  expect_echo(&extra, "GET /late");
  tc_close(&extra);
  tc_close(&c[1]);
  tc_close(&c[2]);
  stop(f);
  /* stats are checked through the closed-slot behaviour above */
}

TEST(connection_close_and_http10) {
  fixture *f = start(NULL);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n"), ==, 0);
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  char v[32];
  CHECK_STR(tc_header(&r, "Connection", v, sizeof v), "close");
  tc_resp_free(&r);
  CHECK(tc_wait_closed(&c, 5000));
  tc_close(&c);
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /b HTTP/1.0\r\n\r\n"), ==, 0);
  expect_echo(&c, "GET /b");
  CHECK(tc_wait_closed(&c, 5000));
  tc_close(&c);
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), ==, 0);
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_STR(tc_header(&r, "Connection", v, sizeof v), "keep-alive");
  tc_resp_free(&r);
  CHECK_INT(tc_send_str(&c, "GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), ==, 0);
  expect_echo(&c, "GET /d");
  tc_close(&c);
  /* The handler asks to close. */
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /close HTTP/1.1\r\n\r\n"), ==, 0);
  expect_echo(&c, "GET /close");
  CHECK(tc_wait_closed(&c, 5000));
  tc_close(&c);
  CHECK_INT(atomic_load(&f->requests), ==, 5); /* /never was not parsed */
  stop(f);
}

TEST(client_gone_before_answer) {
  fixture *f = start(NULL);
  for (int i = 0; i < 5; i++) {
    tc_conn c;
    CHECK_INT(tc_connect(&c, f->port), ==, 0);
    CHECK_INT(tc_send_str(&c, "GET /defer/100 HTTP/1.1\r\n\r\nGET /defer/50 HTTP/1.1\r\n\r\n"), ==, 0);
    /* Both requests parsed before the reset, however loaded the machine
     * (a fixed 20 ms sleep was not always enough under ASan at -j2). */
    for (int w = 0; w < 500 && atomic_load(&f->requests) < 2 * (i + 1); w++) usleep(10000);
    CHECK_INT(atomic_load(&f->requests), ==, 2 * (i + 1));
    /* Reset (not FIN, which would be a half-close still owed answers). */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    tc_close(&c);
  }
  for (int w = 0; w < 500 && atomic_load(&f->orphan_answers) < 10; w++) usleep(10000);
  CHECK_INT(atomic_load(&f->orphan_answers), ==, 10);
  /* A FIN-closed client: the answers are attempted, nothing breaks. */
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /defer/50 HTTP/1.1\r\n\r\nGET /defer/60 HTTP/1.1\r\n\r\n"), ==, 0);
  tc_close(&c);
  usleep(200000);
  stop(f);
}

TEST(half_close_still_answered) {
  fixture *f = start(NULL);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /defer/50 HTTP/1.1\r\n\r\nGET /z HTTP/1.1\r\n\r\n"), ==, 0);
  shutdown(c.fd, SHUT_WR);
  expect_echo(&c, "late /defer/50");
  expect_echo(&c, "GET /z");
  CHECK(tc_wait_closed(&c, 3000));
  tc_close(&c);
  stop(f);
}

TEST(close_waits_for_pending_answers) {
  fixture *f = start(NULL);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /defer/300 HTTP/1.1\r\n\r\n"), ==, 0);
  usleep(50000);
  uv_async_send(&f->stop);
  /* The answer still arrives, then the connection closes. */
  expect_echo(&c, "late /defer/300");
  CHECK(tc_wait_closed(&c, 3000));
  tc_close(&c);
  uv_thread_join(&f->th);
  CHECK(atomic_load(&f->closed));
  CHECK_INT(f->final.requests, ==, 1);
  /* After close nothing listens. */
  CHECK(tc_connect(&c, f->port) < 0);
  uv_sem_destroy(&f->ready);
  free(f);
}

TEST(expect_100_continue) {
  http_server_options o = {.max_body_bytes = 100};
  fixture *f = start(&o);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"), ==, 0);
  tc_resp r;
  CHECK_INT(tc_read_interim(&c, &r, 3000), ==, 0);
  CHECK_INT(r.status, ==, 100);
  CHECK_INT(tc_send_str(&c, "ok"), ==, 0);
  expect_echo(&c, "POST /e |-|2 ok");
  tc_close(&c);
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 200\r\n\r\n"), ==, 0);
  CHECK_INT(tc_read_interim(&c, &r, 3000), ==, 0);
  CHECK_INT(r.status, ==, 413);
  tc_resp_free(&r);
  tc_close(&c);
  stop(f);
}

TEST(head_has_no_body) {
  fixture *f = start(NULL);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "HEAD /h HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n"), ==, 0);
  /* Our reader would take the next answer as the HEAD body if one were
   * sent: read raw and check the second status line follows directly. */
  char buf[2048];
  buf[0] = 0;
  size_t got = 0;
  for (int i = 0; i < 50 && !strstr(buf, "GET /after"); i++) {
    ssize_t n = recv(c.fd, buf + got, sizeof buf - got - 1, 0);
    CHECK(n > 0);
    got += (size_t)n;
    buf[got] = 0;
  }
  char *second = strstr(buf + 4, "HTTP/1.1 200");
  CHECK(second);
  CHECK(strncmp(second - 4, "\r\n\r\n", 4) == 0);
  tc_close(&c);
  stop(f);
}

TEST(listen_bad_address) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  http_server_options o = {.on_request = handler};
  http_server *s;
  CHECK_INT(http_server_new(&s, &loop, &o), ==, 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  CHECK_INT(http_server_listen(s, (const struct sockaddr *)&un), ==, -EINVAL);
  CHECK_INT(http_server_listen(s, NULL), ==, -EINVAL);
  struct sockaddr_in6 v6;
  CHECK_INT(uv_ip6_addr("::1", 0, &v6), ==, 0);
  CHECK_INT(http_server_listen(s, (const struct sockaddr *)&v6), ==, 0);
  CHECK(http_server_port(s) > 0);
  http_server_close(s, 100, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
}

/* ---- clients that send but do not read ------------------------------------ */

/* A loopback connection with small socket buffers (set before connect, so
 * the kernel does not grow them): the server's answers back up quickly. */
static int small_buf_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  int sz = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  sz = 65536;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_INT(connect(fd, (struct sockaddr *)&a, sizeof a), ==, 0);
  return fd;
}

/* Pipelined requests whose answers are made at once, from a client that
 * never reads them: once the answers back up, the server must stop reading
 * (as it does for unanswered ones at max_pipeline), not buffer an answer for
 * every request the client can push. Before, the client could push all
 * 96 MiB and the server held as many bytes of answers in memory. */
TEST(unread_answers_stop_reading) {
  http_server_options o = {.max_body_bytes = 1 << 20};
  fixture *f = start(&o);
  int fd = small_buf_connect(f->port);
  const size_t body = 32768, total_max = (size_t)96 << 20;
  char head[128];
  int hn = snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", body);
  size_t one = (size_t)hn + body;
  char *req = malloc(one);
  memcpy(req, head, (size_t)hn);
  memset(req + hn, 'e', body);
  size_t sent = 0, off = 0; /* off: position inside the current request */
  while (sent < total_max) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, 1500) <= 0) break; /* the server stopped reading */
    ssize_t n = send(fd, req + off, one - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
      continue;
    }
    sent += (size_t)n;
    off = (off + (size_t)n) % one;
  }
  /* Socket buffers hold some MiB at most; the rest would be server memory. */
  if (sent >= (size_t)48 << 20)
    tl_fail(__FILE__, __LINE__, "server kept reading: %zu bytes accepted with no answer read",
            sent);
  free(req);
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  stop(f);
}

/* An answer that cannot be written (the client does not read) must not keep
 * the connection forever, even when more requests arrive meanwhile: parsing
 * them used to replace the write deadline, and nothing set it again. With
 * max_connections 1 the stuck connection would refuse every new client. */
TEST(stalled_write_times_out_despite_later_requests) {
  http_server_options o = {.max_connections = 1, .idle_timeout_ms = 500};
  fixture *f = start(&o);
  int fd = small_buf_connect(f->port);
  /* 16 MiB, answered 50 ms later: more than every socket buffer holds. */
  const char *first = "GET /big/50 HTTP/1.1\r\n\r\n";
  CHECK_INT(send(fd, first, strlen(first), MSG_NOSIGNAL), ==, (ssize_t)strlen(first));
  /* Wait until the answer is on its way (and then stuck). */
  int queued = 0;
  for (int i = 0; i < 500 && queued <= 0; i++) {
    usleep(10000);
    ioctl(fd, FIONREAD, &queued);
  }
  CHECK(queued > 0);
  usleep(100000);
  const char *later = "GET /later HTTP/1.1\r\n\r\n";
  CHECK_INT(send(fd, later, strlen(later), MSG_NOSIGNAL), ==, (ssize_t)strlen(later));
  /* Well past the 500 ms write timeout: the slot must be free again. */
  usleep(2500000);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /after HTTP/1.1\r\n\r\n"), ==, 0);
  expect_echo(&c, "GET /after");
  tc_close(&c);
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  stop(f);
}

/* Answers sent while the server stops: the last one on each connection says
 * "Connection: close", so that a keep-alive client (a load balancer's pool,
 * Stream's) does not send its next webhook into the closing connection, where
 * a POST fails instead of being retried elsewhere. Earlier answers of a
 * pipelined batch must not say it: more answers follow them. */
TEST(answers_while_stopping_say_connection_close) {
  fixture *f = start(NULL);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /defer/300 HTTP/1.1\r\n\r\nGET /defer/350 HTTP/1.1\r\n\r\n"), ==,
            0);
  for (int i = 0; i < 500 && atomic_load(&f->requests) < 2; i++) usleep(10000);
  CHECK_INT(atomic_load(&f->requests), ==, 2);
  uv_async_send(&f->stop);
  tc_resp r;
  char v[32];
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_STR(r.body, "late /defer/300");
  CHECK(!tc_header(&r, "Connection", v, sizeof v));
  tc_resp_free(&r);
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_STR(r.body, "late /defer/350");
  if (!tc_header(&r, "Connection", v, sizeof v) || strcasecmp(v, "close") != 0)
    tl_fail(__FILE__, __LINE__, "last answer before the close lacks Connection: close:\n%s",
            r.head);
  tc_resp_free(&r);
  CHECK(tc_wait_closed(&c, 3000));
  tc_close(&c);
  uv_thread_join(&f->th);
  CHECK(atomic_load(&f->closed));
  uv_sem_destroy(&f->ready);
  free(f);
}

/* A client that half-closes in the middle of a request: what it sent before
 * is answered, the partial request is dropped, and nothing else follows;
 * the header deadline of the dropped request used to fire anyway and append
 * a 408 after the last answer (after its "Connection: close"). */
TEST(half_close_mid_request_no_late_408) {
  http_server_options o = {.header_timeout_ms = 100};
  fixture *f = start(&o);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send_str(&c, "GET /defer/400 HTTP/1.1\r\n\r\nGET /partial HTTP/1.1\r\nX-A:"), ==, 0);
  usleep(30000);
  shutdown(c.fd, SHUT_WR);
  expect_echo(&c, "late /defer/400");
  tc_resp r;
  if (tc_read(&c, &r, 1000) == 0) {
    tl_fail(__FILE__, __LINE__, "unexpected answer after the last one:\n%s", r.head);
    tc_resp_free(&r);
  }
  tc_close(&c);
  CHECK_INT(atomic_load(&f->refused[408]), ==, 0);
  stop(f);
}
