/* drain_sink: a fast SNS-shaped sink for the drain benchmark.
 *
 * Answers every Publish with a MessageId and every PublishBatch with all
 * entries Successful, over HTTP/1.1 keep-alive, on one libuv thread. It does
 * not check signatures and does not keep messages: it only counts requests
 * and entries, so that its own capacity (measured with wrk) is an upper
 * bound for what the drainer can reach against it.
 *
 *   drain_sink [PORT]      listens on 127.0.0.1:PORT (0 = any), prints
 *                          {"port":N}; GET /stats -> {"requests":R,"messages":M}
 *                          SIGTERM/SIGINT: prints the stats and exits.
 *   SINK_DUMP_DIR=D        keeps the first SINK_DUMP_N Publish and PublishBatch
 *                          requests, whole (request line, the headers as
 *                          received, body), in D/publish.K.req and
 *                          D/batch.K.req, K = 1..SINK_DUMP_N, and their
 *                          bodies in D/publish.body and D/batch.body (the
 *                          first of each). The benchmark replays the
 *                          requests with wrk, so the sink's capacity is
 *                          measured on the drainer's own mix of request
 *                          sizes and headers.
 */
#include <http_parser.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
  uv_tcp_t tcp;
  http_parser parser;
  char *body;
  size_t len, cap;
  int is_stats;
  /* Request line and headers, rebuilt for dumping (only while dumping). */
  char head[16384];
  size_t hlen;
  int head_overflow, in_headers, last_was_value;
} conn;

static uint64_t n_requests, n_messages, n_ids;
static const char *dump_dir; /* SINK_DUMP_DIR: first requests kept for wrk */
static int dump_n = 11;      /* SINK_DUMP_N: one cycle of the benchmark's 11 fixtures */
static int dumped_publish, dumped_batch;

static int dumping(void) {
  return dump_dir && (dumped_publish < dump_n || dumped_batch < dump_n);
}

static void dump_file(const char *name, const char *a, size_t alen, const char *b, size_t blen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dump_dir, name);
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fwrite(a, 1, alen, f);
  if (blen) fwrite(b, 1, blen, f);
  fclose(f);
}

static void dump(conn *c, const char *kind, int k) {
  char name[64];
  const char *body = c->body ? c->body : "";
  if (k == 1) {
    snprintf(name, sizeof name, "%s.body", kind);
    dump_file(name, body, c->len, NULL, 0);
  }
  if (c->head_overflow) return;
  snprintf(name, sizeof name, "%s.%d.req", kind, k);
  dump_file(name, c->head, c->hlen, body, c->len);
}

static void head_add(conn *c, const char *s, size_t n) {
  if (c->head_overflow || n > sizeof c->head - c->hlen) {
    c->head_overflow = 1;
    return;
  }
  memcpy(c->head + c->hlen, s, n);
  c->hlen += n;
}
static http_parser_settings settings;
static uv_loop_t *loop;

static void on_close(uv_handle_t *h) {
  conn *c = h->data;
  free(c->body);
  free(c);
}

static void on_write(uv_write_t *w, int status) {
  (void)status;
  free(w->data);
  free(w);
}

static void send_resp(conn *c, const char *ctype, const char *body, size_t blen) {
  char head[256];
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                    "x-amzn-RequestId: sink\r\n\r\n",
                    ctype, blen);
  char *buf = malloc((size_t)hl + blen);
  if (!buf) return;
  memcpy(buf, head, (size_t)hl);
  memcpy(buf + hl, body, blen);
  uv_write_t *w = malloc(sizeof *w);
  if (!w) {
    free(buf);
    return;
  }
  w->data = buf;
  uv_buf_t b = uv_buf_init(buf, (unsigned)((size_t)hl + blen));
  if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    free(buf);
    free(w);
  }
}

static int on_url(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  c->is_stats = len >= 6 && memcmp(at, "/stats", 6) == 0;
  if (dumping()) {
    if (c->hlen == 0) head_add(c, "POST ", 5);
    head_add(c, at, len);
  }
  return 0;
}

/* Header callbacks may come in pieces: a field after a value starts a
 * new line. */
static int on_hfield(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  if (!dumping()) return 0;
  if (!c->in_headers) {
    head_add(c, " HTTP/1.1\r\n", 11);
    c->in_headers = 1;
  } else if (c->last_was_value) {
    head_add(c, "\r\n", 2);
  }
  c->last_was_value = 0;
  head_add(c, at, len);
  return 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  if (!dumping()) return 0;
  if (!c->last_was_value) head_add(c, ": ", 2);
  c->last_was_value = 1;
  head_add(c, at, len);
  return 0;
}

static int on_hdone(http_parser *p) {
  conn *c = p->data;
  if (!dumping()) return 0;
  if (!c->in_headers)
    head_add(c, " HTTP/1.1\r\n", 11);
  else if (c->last_was_value)
    head_add(c, "\r\n", 2);
  head_add(c, "\r\n", 2);
  return 0;
}

static int on_begin(http_parser *p) {
  conn *c = p->data;
  c->len = 0;
  c->is_stats = 0;
  c->hlen = 0;
  c->head_overflow = 0;
  c->in_headers = 0;
  c->last_was_value = 0;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  if (c->len + len > c->cap) {
    size_t nc = c->cap ? c->cap : 65536;
    while (nc < c->len + len) nc *= 2;
    char *n = realloc(c->body, nc);
    if (!n) return 1;
    c->body = n;
    c->cap = nc;
  }
  memcpy(c->body + c->len, at, len);
  c->len += len;
  return 0;
}

static size_t count(const char *hay, size_t n, const char *needle) {
  size_t k = 0, nl = strlen(needle);
  const char *p = hay, *end = hay + n;
  while ((p = memmem(p, (size_t)(end - p), needle, nl))) {
    k++;
    p += nl;
  }
  return k;
}

static int on_complete(http_parser *p) {
  conn *c = p->data;
  char out[8192];
  size_t ol = 0;
  if (c->is_stats) {
    ol = (size_t)snprintf(out, sizeof out, "{\"requests\":%" PRIu64 ",\"messages\":%" PRIu64 "}\n",
                          n_requests, n_messages);
    send_resp(c, "application/json", out, ol);
    return 0;
  }
  n_requests++;
  /* Entry ids are the only keys ending in ".Id=" (values are URL-encoded,
   * so '=' inside a message is %3D). */
  size_t entries = count(c->body ? c->body : "", c->len, ".Id=");
  if (dump_dir && entries == 0 && dumped_publish < dump_n)
    dump(c, "publish", ++dumped_publish);
  else if (dump_dir && entries > 0 && dumped_batch < dump_n)
    dump(c, "batch", ++dumped_batch);
  if (entries == 0) {
    n_messages++;
    ol = (size_t)snprintf(out, sizeof out,
                          "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">"
                          "<PublishResult><MessageId>sink-%" PRIu64
                          "</MessageId></PublishResult>"
                          "<ResponseMetadata><RequestId>sink</RequestId></ResponseMetadata>"
                          "</PublishResponse>",
                          ++n_ids);
  } else {
    n_messages += entries;
    ol =
        (size_t)snprintf(out, sizeof out,
                         "<PublishBatchResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">"
                         "<PublishBatchResult><Successful>");
    for (size_t i = 0; i < entries && ol < sizeof out - 256; i++)
      ol += (size_t)snprintf(out + ol, sizeof out - ol,
                             "<member><Id>%zu</Id><MessageId>sink-%" PRIu64 "</MessageId></member>",
                             i, ++n_ids);
    ol += (size_t)snprintf(out + ol, sizeof out - ol,
                           "</Successful><Failed></Failed></PublishBatchResult><ResponseMetadata>"
                           "<RequestId>sink</RequestId></ResponseMetadata></PublishBatchResponse>");
  }
  send_resp(c, "text/xml", out, ol);
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  (void)h;
  static char buf[65536];
  (void)sz;
  *b = uv_buf_init(buf, sizeof buf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn *c = s->data;
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  if (n == 0) return;
  size_t used = http_parser_execute(&c->parser, &settings, b->base, (size_t)n);
  if (used != (size_t)n || c->parser.http_errno) uv_close((uv_handle_t *)s, on_close);
}

static void on_conn(uv_stream_t *srv, int status) {
  if (status) return;
  conn *c = calloc(1, sizeof *c);
  if (!c) return;
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) == 0) {
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  } else {
    uv_close((uv_handle_t *)&c->tcp, on_close);
  }
}

static void on_signal(uv_signal_t *s, int sig) {
  (void)sig;
  printf("{\"requests\":%" PRIu64 ",\"messages\":%" PRIu64 "}\n", n_requests, n_messages);
  fflush(stdout);
  uv_stop(s->loop);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 0;
  signal(SIGPIPE, SIG_IGN);
  dump_dir = getenv("SINK_DUMP_DIR");
  const char *dn = getenv("SINK_DUMP_N");
  if (dn && strtol(dn, NULL, 10) > 0) dump_n = (int)strtol(dn, NULL, 10);
  loop = uv_default_loop();
  settings.on_message_begin = on_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_hfield;
  settings.on_header_value = on_hvalue;
  settings.on_headers_complete = on_hdone;
  settings.on_body = on_body;
  settings.on_message_complete = on_complete;
  uv_tcp_t srv;
  uv_tcp_init(loop, &srv);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  if (uv_tcp_bind(&srv, (const struct sockaddr *)&a, 0) ||
      uv_listen((uv_stream_t *)&srv, 1024, on_conn)) {
    fprintf(stderr, "drain_sink: cannot listen\n");
    return 1;
  }
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  uv_tcp_getsockname(&srv, (struct sockaddr *)&ss, &sl);
  printf("{\"port\":%d}\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
  fflush(stdout);
  uv_signal_t s1, s2;
  uv_signal_init(loop, &s1);
  uv_signal_init(loop, &s2);
  uv_signal_start(&s1, on_signal, SIGTERM);
  uv_signal_start(&s2, on_signal, SIGINT);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
