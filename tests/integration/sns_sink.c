/* sns_sink: the fastest SNS stand-in we can make, for tools/bench-sns.sh.
 *
 * One libuv loop, http_parser, keep-alive and pipelining. Every request is
 * answered 200 with a canned document: PublishBatchResponse listing entry
 * ids 0..9 as Successful when the body starts with Action=PublishBatch,
 * else a PublishResponse. No parsing of the form, no signature check: the
 * point is to measure the client, so the sink must cost as little as
 * possible (its own capacity is measured with wrk as the baseline).
 *
 *   sns_sink [--port N] [--save-first-body PATH]
 * prints "PORT\n" once listening on 127.0.0.1; runs until killed.
 */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static char publish_resp[1024], batch_resp[4096];
static size_t publish_len, batch_len;
static const char *save_path;
static int saved;

typedef struct {
  uv_tcp_t tcp;
  http_parser parser;
  int is_batch, body_seen;
  char head[24];
  size_t head_len;
  FILE *save;
} conn;

static void build_responses(void) {
  char body[3000];
  int n = snprintf(body, sizeof body,
                   "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">"
                   "<PublishResult><MessageId>00000000-0000-0000-0000-000000000000</MessageId>"
                   "</PublishResult><ResponseMetadata><RequestId>sink</RequestId>"
                   "</ResponseMetadata></PublishResponse>");
  publish_len = (size_t)snprintf(publish_resp, sizeof publish_resp,
                                 "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                                 "Content-Length: %d\r\n\r\n%s",
                                 n, body);
  size_t k =
      (size_t)snprintf(body, sizeof body,
                       "<PublishBatchResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">"
                       "<PublishBatchResult><Successful>");
  for (int i = 0; i < 10; i++)
    k += (size_t)snprintf(body + k, sizeof body - k,
                          "<member><Id>%d</Id><MessageId>00000000-0000-0000-0000-00000000000%d"
                          "</MessageId></member>",
                          i, i);
  k += (size_t)snprintf(body + k, sizeof body - k,
                        "</Successful><Failed/></PublishBatchResult><ResponseMetadata>"
                        "<RequestId>sink</RequestId></ResponseMetadata></PublishBatchResponse>");
  batch_len = (size_t)snprintf(batch_resp, sizeof batch_resp,
                               "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                               "Content-Length: %zu\r\n\r\n%s",
                               k, body);
}

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

static void close_conn(conn *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static int on_message_begin(http_parser *p) {
  conn *c = p->data;
  c->head_len = 0;
  c->is_batch = 0;
  if (save_path && !saved) {
    c->save = fopen(save_path, "wb");
    saved = 1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  if (c->head_len < sizeof c->head) {
    size_t n = sizeof c->head - c->head_len;
    if (n > len) n = len;
    memcpy(c->head + c->head_len, at, n);
    c->head_len += n;
  }
  if (c->save) fwrite(at, 1, len, c->save);
  return 0;
}

static int on_message_complete(http_parser *p) {
  conn *c = p->data;
  static const char tag[] = "Action=PublishBatch";
  int batch = c->head_len >= sizeof tag - 1 && memcmp(c->head, tag, sizeof tag - 1) == 0;
  if (c->save) {
    fclose(c->save);
    c->save = NULL;
  }
  uv_write_t *w = malloc(sizeof *w);
  if (!w) return -1;
  uv_buf_t b =
      uv_buf_init(batch ? batch_resp : publish_resp, (unsigned)(batch ? batch_len : publish_len));
  if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) free(w);
  if (!http_should_keep_alive(p)) close_conn(c);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  static char slab[256 * 1024]; /* one loop thread: one read at a time */
  (void)suggested;
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn *c = s->data;
  if (n < 0) {
    close_conn(c);
    return;
  }
  if (n == 0) return;
  size_t used = http_parser_execute(&c->parser, &settings, buf->base, (size_t)n);
  if (used != (size_t)n || c->parser.http_errno != HPE_OK) close_conn(c);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  conn *c = calloc(1, sizeof *c);
  if (!c) return;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    close_conn(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv) {
  int port = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
      port = (int)strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--save-first-body") == 0 && i + 1 < argc)
      save_path = argv[++i];
    else {
      fprintf(stderr, "usage: sns_sink [--port N] [--save-first-body PATH]\n");
      return 2;
    }
  }
  build_responses();
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in addr;
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", port, &addr);
  int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&server, 1024, on_connection);
  if (rc < 0) {
    fprintf(stderr, "sns_sink: %s\n", uv_strerror(rc));
    return 1;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&server, (struct sockaddr *)&ss, &len);
  printf("%d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
