/* The SNS client's own logic, on a real libuv loop with a canned loopback
 * HTTP server: ARN/region/endpoint resolution, argument errors, the
 * credential-provider contract (-EAGAIN, creds_invalidate on token errors),
 * signed headers, and clean loop shutdown.
 *
 * The credential provider here is a test double of relay/creds.h (this
 * binary does not link relay/creds.c): it hands out fixed keys or fails, and
 * counts creds_invalidate() calls.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "creds.h"
#include "sns.h"
#include "testlib.h"

/* ---- credential provider double --------------------------------------- */

struct creds_provider {
  int fail;
  int invalidated;
  const char *token;
};

int creds_get(creds_provider *p, aws_creds *out, char *errbuf, size_t errlen) {
  if (p->fail) {
    snprintf(errbuf, errlen, "no credentials (test)");
    return -EAGAIN;
  }
  memset(out, 0, sizeof *out);
  snprintf(out->access_key_id, sizeof out->access_key_id, "AKIDTEST");
  snprintf(out->secret_access_key, sizeof out->secret_access_key, "secret");
  snprintf(out->session_token, sizeof out->session_token, "%s", p->token ? p->token : "");
  return 0;
}

void creds_invalidate(creds_provider *p) {
  p->invalidated++;
}

/* ---- canned loopback server ----------------------------------------------- */

typedef struct {
  uv_tcp_t server;
  int port;
  const char *response; /* full HTTP response */
  char request[65536];  /* last request received (headers + body) */
  size_t request_len;
  int requests;
} canned;

typedef struct {
  uv_tcp_t tcp;
  canned *srv;
  char buf[65536];
  size_t len;
} canned_conn;

static void conn_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_write_done(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static void conn_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  canned_conn *c = h->data;
  (void)sz;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  canned_conn *c = s->data;
  (void)b;
  if (n < 0 || c->len + (size_t)n >= sizeof c->buf) {
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    return;
  }
  c->len += (size_t)n;
  c->buf[c->len] = '\0';
  char *end = strstr(c->buf, "\r\n\r\n");
  if (!end) return;
  const char *cl = strcasestr(c->buf, "\r\ncontent-length:");
  size_t body = cl ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
  size_t total = (size_t)(end + 4 - c->buf) + body;
  if (c->len < total) return;
  memcpy(c->srv->request, c->buf, total);
  c->srv->request[total] = '\0';
  c->srv->request_len = total;
  c->srv->requests++;
  memmove(c->buf, c->buf + total, c->len - total);
  c->len -= total;
  uv_write_t *w = malloc(sizeof *w);
  uv_buf_t out = uv_buf_init((char *)c->srv->response, (unsigned)strlen(c->srv->response));
  uv_write(w, s, &out, 1, on_write_done);
}

static void on_conn(uv_stream_t *server, int status) {
  CHECK_INT(status, ==, 0);
  canned *srv = server->data;
  canned_conn *c = calloc(1, sizeof *c);
  c->srv = srv;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  CHECK_INT(uv_accept(server, (uv_stream_t *)&c->tcp), ==, 0);
  uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

static void canned_start(canned *srv, uv_loop_t *loop, const char *response) {
  struct sockaddr_in a;
  memset(srv, 0, sizeof *srv);
  srv->response = response;
  uv_tcp_init(loop, &srv->server);
  srv->server.data = srv;
  uv_ip4_addr("127.0.0.1", 0, &a);
  CHECK_INT(uv_tcp_bind(&srv->server, (struct sockaddr *)&a, 0), ==, 0);
  CHECK_INT(uv_listen((uv_stream_t *)&srv->server, 16, on_conn), ==, 0);
  struct sockaddr_in got;
  int len = sizeof got;
  uv_tcp_getsockname(&srv->server, (struct sockaddr *)&got, &len);
  srv->port = ntohs(got.sin_port);
}

/* Closes the canned server (arg) and its connections. */
static void close_walk(uv_handle_t *h, void *arg) {
  if (uv_is_closing(h)) return;
  uv_close(h, h == arg ? NULL : conn_closed);
}

/* ---- helpers ---------------------------------------------------------------- */

#define ARN "arn:aws:sns:eu-west-3:123456789012:events"

static aws_creds static_keys(void) {
  aws_creds k;
  memset(&k, 0, sizeof k);
  snprintf(k.access_key_id, sizeof k.access_key_id, "AKIDSTATIC");
  snprintf(k.secret_access_key, sizeof k.secret_access_key, "s3cr3t");
  return k;
}

static int closed_flag;
static void on_client_closed(void *arg) {
  *(int *)arg = 1;
}

/* Closes the client, runs the loop dry and checks nothing was left open. */
static void close_and_check(uv_loop_t *loop, sns_client *c) {
  closed_flag = 0;
  sns_client_close(c, on_client_closed, &closed_flag);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(closed_flag, ==, 1);
}

static int new_client(uv_loop_t *loop, sns_client **c, const char *arn, const char *region,
                      const char *endpoint, creds_provider *p) {
  aws_creds k = static_keys();
  sns_client_options o = {.topic_arn = arn,
                          .region = region,
                          .endpoint = endpoint,
                          .creds = p,
                          .static_creds = p ? NULL : &k};
  return sns_client_new(c, loop, &o);
}

TEST(arn_region_and_endpoint_resolution) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sns_client *c;
  unsetenv("AWS_ENDPOINT_URL_SNS");
  unsetenv("AWS_ENDPOINT_URL");

  CHECK_INT(new_client(&loop, &c, ARN, NULL, NULL, NULL), ==, 0);
  CHECK_STR(sns_client_endpoint(c), "https://sns.eu-west-3.amazonaws.com/");
  CHECK_INT(sns_client_is_fifo(c), ==, 0);
  close_and_check(&loop, c);

  CHECK_INT(
      new_client(&loop, &c, "arn:aws-cn:sns:cn-north-1:123456789012:t.fifo", NULL, NULL, NULL), ==,
      0);
  CHECK_STR(sns_client_endpoint(c), "https://sns.cn-north-1.amazonaws.com.cn/");
  CHECK_INT(sns_client_is_fifo(c), ==, 1);
  close_and_check(&loop, c);

  CHECK_INT(new_client(&loop, &c, ARN, "us-west-2", NULL, NULL), ==, 0);
  CHECK_STR(sns_client_endpoint(c), "https://sns.us-west-2.amazonaws.com/");
  close_and_check(&loop, c);

  setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566", 1);
  CHECK_INT(new_client(&loop, &c, ARN, NULL, NULL, NULL), ==, 0);
  CHECK_STR(sns_client_endpoint(c), "http://127.0.0.1:4566/");
  close_and_check(&loop, c);
  setenv("AWS_ENDPOINT_URL_SNS", "https://vpce-1.sns.eu-west-3.vpce.amazonaws.com:443/base", 1);
  CHECK_INT(new_client(&loop, &c, ARN, NULL, NULL, NULL), ==, 0);
  CHECK_STR(sns_client_endpoint(c), "https://vpce-1.sns.eu-west-3.vpce.amazonaws.com/base");
  close_and_check(&loop, c);
  CHECK_INT(new_client(&loop, &c, ARN, NULL, "http://[::1]:9/", NULL), ==, 0);
  CHECK_STR(sns_client_endpoint(c), "http://[::1]:9/");
  close_and_check(&loop, c);
  unsetenv("AWS_ENDPOINT_URL_SNS");
  unsetenv("AWS_ENDPOINT_URL");

  static const char *bad_arns[] = {
      "",
      "arn:aws:sqs:us-east-1:1:q",
      "arn:aws:sns:us-east-1:1",
      "arn:aws:sns::1:t",
      "arn:aws:sns:us-east-1:1:",
      "arn:aws:sns:us-east-1:1:a:b",
      "nope:aws:sns:r:1:t",
      "arn:aws:sns:US_EAST:1:t",
  };
  for (size_t i = 0; i < sizeof bad_arns / sizeof bad_arns[0]; i++) {
    c = (sns_client *)1;
    CHECK_INT(new_client(&loop, &c, bad_arns[i], NULL, NULL, NULL), ==, -EINVAL);
    CHECK(c == NULL);
  }
  CHECK_INT(new_client(&loop, &c, ARN, NULL, "ftp://127.0.0.1/", NULL), ==, -EINVAL);
  CHECK_INT(new_client(&loop, &c, ARN, NULL, "http://127.0.0.1/?a=b", NULL), ==, -EINVAL);
  CHECK_INT(new_client(&loop, &c, ARN, NULL, "not a url", NULL), ==, -EINVAL);
  sns_client_options none = {.topic_arn = ARN};
  CHECK_INT(sns_client_new(&c, &loop, &none), ==, -EINVAL);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
}

static int cb_calls;
static sns_result last[SNS_MAX_BATCH], last_overall;
static void on_done(void *arg, const sns_result *r, size_t n, const sns_result *all, double d) {
  (void)arg;
  CHECK(d >= 0.0);
  cb_calls++;
  memcpy(last, r, n * sizeof *r);
  last_overall = *all;
}

TEST(publish_argument_errors_never_call_back) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  creds_provider p = {.fail = 0};
  sns_client *c;
  CHECK_INT(new_client(&loop, &c, ARN, NULL, "http://127.0.0.1:9/", &p), ==, 0);
  sns_entry e[11];
  memset(e, 0, sizeof e);
  for (int i = 0; i < 11; i++) {
    e[i].message = (const uint8_t *)"m";
    e[i].message_len = 1;
  }
  cb_calls = 0;
  CHECK_INT(sns_publish(c, e, 0, 0, on_done, NULL), ==, -EINVAL);
  CHECK_INT(sns_publish(c, e, 11, 0, on_done, NULL), ==, -EINVAL);

  /* 256 KiB edge: exactly the limit is accepted (then cancelled below),
   * one byte more refused. */
  uint8_t *big = malloc(SNS_MAX_REQUEST_BYTES + 1);
  memset(big, 'x', SNS_MAX_REQUEST_BYTES + 1);
  sns_entry two[2] = {{.message = big, .message_len = SNS_MAX_REQUEST_BYTES - 100},
                      {.message = big, .message_len = 100}};
  CHECK_INT(sns_publish(c, two, 2, 0, on_done, NULL), ==, 0);
  two[1].message_len = 101;
  CHECK_INT(sns_publish(c, two, 2, 0, on_done, NULL), ==, -EINVAL);
  two[1].message_len = 90;
  two[1].type = "abcd"; /* 4 + 6 + 4 = 14: 90 + 14 > 100 */
  CHECK_INT(sns_publish(c, two, 2, 0, on_done, NULL), ==, -EINVAL);

  /* No credentials right now. */
  p.fail = 1;
  CHECK_INT(sns_publish(c, e, 1, 0, on_done, NULL), ==, -EAGAIN);
  p.fail = 0;

  /* Closing cancels the one accepted request: exactly one callback. */
  CHECK_INT(cb_calls, ==, 0);
  closed_flag = 0;
  sns_client_close(c, on_client_closed, &closed_flag);
  CHECK_INT(cb_calls, ==, 1);
  CHECK_INT(last_overall.outcome, ==, SNS_UNREACHABLE);
  CHECK_STR(last[0].code, "Cancelled");
  CHECK_STR(last[1].code, "Cancelled");
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(closed_flag, ==, 1);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
  free(big);
}

TEST(publish_after_close_is_refused) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sns_client *c;
  CHECK_INT(new_client(&loop, &c, ARN, NULL, "http://127.0.0.1:9/", NULL), ==, 0);
  sns_entry e = {.message = (const uint8_t *)"m", .message_len = 1};
  closed_flag = 0;
  sns_client_close(c, on_client_closed, &closed_flag);
  CHECK_INT(sns_publish(c, &e, 1, 0, on_done, NULL), ==, -ECANCELED);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(closed_flag, ==, 1);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
}

#define XMLNS "xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\""
static char *response(const char *status, const char *body) {
  static char buf[4096];
  snprintf(buf, sizeof buf,
           "HTTP/1.1 %s\r\nContent-Type: text/xml\r\nContent-Length: %zu\r\n\r\n%s", status,
           strlen(body), body);
  return buf;
}

/* One request against a canned answer, the answer in last/last_overall
 * and what went on the wire in srv->request. */
static void one_exchange(const char *resp, creds_provider *p, int batch, canned *srv) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  canned_start(srv, &loop, resp);
  char ep[64];
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", srv->port);
  sns_client *c;
  CHECK_INT(new_client(&loop, &c, ARN, NULL, ep, p), ==, 0);
  sns_entry e = {.message = (const uint8_t *)"{\"type\":\"x\"}", .message_len = 12, .type = "x"};
  cb_calls = 0;
  CHECK_INT(sns_publish(c, &e, 1, batch, on_done, NULL), ==, 0);
  CHECK_INT(cb_calls, ==, 0); /* never from inside sns_publish */
  while (cb_calls == 0) uv_run(&loop, UV_RUN_ONCE);
  CHECK_INT(cb_calls, ==, 1);
  CHECK_INT(srv->requests, ==, 1);
  closed_flag = 0;
  sns_client_close(c, on_client_closed, &closed_flag);
  uv_walk(&loop, close_walk, &srv->server);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(closed_flag, ==, 1);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
}

/* one_exchange(), then checks of the wire format (for the token tok/en+=). */
static void one_request(const char *resp, creds_provider *p, int batch) {
  static canned srv;
  one_exchange(resp, p, batch, &srv);

  /* What went on the wire. */
  const char *req = srv.request;
  CHECK(strncmp(req, "POST / HTTP/1.1\r\n", 17) == 0);
  char host[64];
  snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", srv.port);
  CHECK(strstr(req, host) != NULL);
  CHECK(strstr(req, "\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"));
  CHECK(strstr(req, "\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/"));
  CHECK(strstr(req,
               "/eu-west-3/sns/aws4_request, SignedHeaders=content-type;host;x-amz-date;"
               "x-amz-security-token, Signature="));
  CHECK(strstr(req, "\r\nX-Amz-Security-Token: tok/en+=\r\n"));
  CHECK(strstr(req, "\r\nX-Amz-Date: 20"));
  CHECK(strstr(req, batch ? "\r\n\r\nAction=PublishBatch&Version=2010-03-31&TopicArn=arn%3Aaws"
                          : "\r\n\r\nAction=Publish&Version=2010-03-31&TopicArn=arn%3Aaws"));
}

TEST(success_and_signed_headers) {
  creds_provider p = {.token = "tok/en+="};
  one_request(response("200 OK", "<PublishResponse " XMLNS "><PublishResult><MessageId>mid-1"
                                 "</MessageId></PublishResult></PublishResponse>"),
              &p, 0);
  CHECK_INT(last_overall.outcome, ==, SNS_OK);
  CHECK_STR(last[0].message_id, "mid-1");
  CHECK_INT(last[0].http_status, ==, 200);
  CHECK_INT(p.invalidated, ==, 0);

  one_request(
      response("200 OK", "<PublishBatchResponse " XMLNS "><PublishBatchResult><Successful>"
                         "<member><Id>0</Id><MessageId>b-0</MessageId></member>"
                         "</Successful><Failed/></PublishBatchResult></PublishBatchResponse>"),
      &p, 1);
  CHECK_INT(last[0].outcome, ==, SNS_OK);
  CHECK_STR(last[0].message_id, "b-0");
}

TEST(token_errors_ask_for_fresh_credentials) {
  creds_provider p = {.token = "tok/en+="};
  one_request(response("403 Forbidden", "<ErrorResponse " XMLNS "><Error><Type>Sender</Type>"
                                        "<Code>ExpiredToken</Code><Message>expired</Message>"
                                        "</Error></ErrorResponse>"),
              &p, 0);
  CHECK_INT(last[0].outcome, ==, SNS_CONFIG);
  CHECK_STR(last[0].code, "ExpiredToken");
  CHECK_INT(last[0].http_status, ==, 403);
  CHECK_INT(p.invalidated, ==, 1);

  /* A permission problem is not fixed by new credentials. */
  one_request(response("403 Forbidden", "<ErrorResponse " XMLNS "><Error><Type>Sender</Type>"
                                        "<Code>AuthorizationError</Code><Message>no</Message>"
                                        "</Error></ErrorResponse>"),
              &p, 0);
  CHECK_INT(last[0].outcome, ==, SNS_CONFIG);
  CHECK_INT(p.invalidated, ==, 1);
}

/* Closing the client from inside a completion callback, while other
 * answers of the same loop turn are still queued in curl: every request
 * still gets exactly one callback, and nothing is touched after free. */
typedef struct {
  sns_client *c;
  int calls[8];
  int total;
} close_ctx;
static close_ctx cctx;
static void on_done_close(void *arg, const sns_result *r, size_t n, const sns_result *all,
                          double d) {
  (void)r, (void)n, (void)all, (void)d;
  int i = (int)(intptr_t)arg;
  cctx.calls[i]++;
  if (cctx.total++ == 0) sns_client_close(cctx.c, on_client_closed, &closed_flag);
}

TEST(close_inside_a_completion_callback) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  canned srv;
  canned_start(&srv, &loop,
               response("200 OK", "<PublishResponse " XMLNS "><PublishResult><MessageId>m"
                                  "</MessageId></PublishResult></PublishResponse>"));
  char ep[64];
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", srv.port);
  memset(&cctx, 0, sizeof cctx);
  CHECK_INT(new_client(&loop, &cctx.c, ARN, NULL, ep, NULL), ==, 0);
  sns_entry e = {.message = (const uint8_t *)"{\"type\":\"x\"}", .message_len = 12, .type = "x"};
  for (int i = 0; i < 8; i++)
    CHECK_INT(sns_publish(cctx.c, &e, 1, 0, on_done_close, (void *)(intptr_t)i), ==, 0);
  closed_flag = 0;
  while (!closed_flag) {
    if (cctx.total) uv_walk(&loop, close_walk, &srv.server);
    uv_run(&loop, UV_RUN_ONCE);
  }
  uv_walk(&loop, close_walk, &srv.server);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 8; i++) CHECK_INT(cctx.calls[i], ==, 1);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
}

/* SNS answers SignatureDoesNotMatch with the canonical request it expected,
 * and that includes the signed X-Amz-Security-Token header: the session
 * token must not travel on into results (drainer stats, logs, DLQ). Both a
 * token quoted whole and one cut by the 512-byte message field. */
TEST(signature_error_message_never_carries_the_session_token) {
  static char token[2][1200];
  snprintf(token[0], sizeof token[0], "FwoGZXIvYXdzEXAMPLEshortTOKEN0123456789abcdef/+=");
  size_t k = 0;
  const char *pat = "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN/x+y=";
  for (; k < 1000; k++) token[1][k] = pat[k % strlen(pat)];
  token[1][k] = '\0';
  for (int t = 0; t < 2; t++) {
    char body[3000];
    snprintf(body, sizeof body,
             "<ErrorResponse " XMLNS "><Error><Type>Sender</Type><Code>SignatureDoesNotMatch"
             "</Code><Message>The request signature we calculated does not match the signature "
             "you provided. Check your AWS Secret Access Key and signing method. Consult the "
             "service documentation for details.\n\nThe Canonical String for this request should "
             "have been\n'POST\n/\n\ncontent-type:application/x-www-form-urlencoded; "
             "charset=utf-8\nhost:127.0.0.1\nx-amz-date:20261128T103000Z\n"
             "x-amz-security-token:%s\n\ncontent-type;host;x-amz-date;x-amz-security-token\n"
             "0123'</Message></Error></ErrorResponse>",
             token[t]);
    creds_provider p = {.token = token[t]};
    static canned srv;
    one_exchange(response("403 Forbidden", body), &p, 0, &srv);
    CHECK_STR(last_overall.code, "SignatureDoesNotMatch");
    CHECK_INT(last_overall.outcome, ==, SNS_CONFIG);
    char head[13];
    memcpy(head, token[t], 12);
    head[12] = '\0';
    CHECK(strstr(last_overall.message, "The request signature we calculated") != NULL);
    CHECK(strstr(last_overall.message, head) == NULL);
    CHECK(strstr(last[0].message, head) == NULL);
  }
}

/* sns.h: every sns_client_close() call made while the close is under way
 * gets its `done`, once, after the client is freed, in call order; the
 * transfers are cancelled once. Owners that close independently (or a
 * completion callback that closes) must not wait forever. */
static int close_order[8], close_norder;
static void on_close_order(void *arg) {
  if (close_norder < 8) close_order[close_norder] = (int)(intptr_t)arg;
  close_norder++;
}

TEST(second_close_calls_its_done_too) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sns_client *c;
  /* Port 9 (discard) on loopback: the request is in flight when we close. */
  CHECK_INT(new_client(&loop, &c, ARN, NULL, "http://127.0.0.1:9/", NULL), ==, 0);
  sns_entry e = {.message = (const uint8_t *)"m", .message_len = 1};
  cb_calls = 0;
  CHECK_INT(sns_publish(c, &e, 1, 0, on_done, NULL), ==, 0);
  close_norder = 0;
  memset(close_order, 0, sizeof close_order);
  sns_client_close(c, on_close_order, (void *)(intptr_t)1);
  CHECK_INT(cb_calls, ==, 1); /* cancelled, from inside the first close */
  sns_client_close(c, on_close_order, (void *)(intptr_t)2);
  sns_client_close(c, NULL, NULL); /* a NULL done is fine too */
  sns_client_close(c, on_close_order, (void *)(intptr_t)3);
  CHECK_INT(cb_calls, ==, 1);     /* not cancelled twice */
  CHECK_INT(close_norder, ==, 0); /* never from inside sns_client_close */
  CHECK_INT(sns_publish(c, &e, 1, 0, on_done, NULL), ==, -ECANCELED);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(close_norder, ==, 3);
  CHECK_INT(close_order[0], ==, 1);
  CHECK_INT(close_order[1], ==, 2);
  CHECK_INT(close_order[2], ==, 3);
  CHECK_INT(cb_calls, ==, 1);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
}

/* The second close comes from the "Cancelled" callback of the first. */
static sns_client *reclose_c;
static void on_done_reclose(void *arg, const sns_result *r, size_t n, const sns_result *all,
                            double d) {
  (void)arg, (void)r, (void)n, (void)d;
  cb_calls++;
  CHECK_STR(all->code, "Cancelled");
  sns_client_close(reclose_c, on_close_order, (void *)(intptr_t)2);
}

TEST(close_again_from_a_cancelled_callback) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  CHECK_INT(new_client(&loop, &reclose_c, ARN, NULL, "http://127.0.0.1:9/", NULL), ==, 0);
  sns_entry e = {.message = (const uint8_t *)"m", .message_len = 1};
  cb_calls = 0;
  CHECK_INT(sns_publish(reclose_c, &e, 1, 0, on_done_reclose, NULL), ==, 0);
  CHECK_INT(sns_publish(reclose_c, &e, 1, 0, on_done_reclose, NULL), ==, 0);
  close_norder = 0;
  sns_client_close(reclose_c, on_close_order, (void *)(intptr_t)1);
  CHECK_INT(cb_calls, ==, 2);
  CHECK_INT(close_norder, ==, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(close_norder, ==, 3); /* the first close, then one per callback */
  CHECK_INT(close_order[0], ==, 1);
  CHECK_INT(close_order[1], ==, 2);
  CHECK_INT(close_order[2], ==, 2);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
}
