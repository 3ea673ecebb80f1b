/* A blocking HTTP/1.1 test client over loopback: send raw bytes, read
 * answers one by one (Content-Length framing, which is all our servers
 * send). Shared by the http_server and ingest unit tests. */
#ifndef HTTP_TESTCLIENT_H
#define HTTP_TESTCLIENT_H

#include <stddef.h>

typedef struct {
  int fd;
  char *buf; /* received, not yet consumed */
  size_t len, cap;
} tc_conn;

typedef struct {
  int status;
  char head[8192]; /* status line and headers, NUL-terminated */
  char *body;      /* malloc'd, NUL-terminated */
  size_t body_len;
} tc_resp;

/* Connects to 127.0.0.1:port. 0 or -errno. */
int tc_connect(tc_conn *c, int port);
void tc_close(tc_conn *c);
/* Sends all bytes. 0 or -errno. */
int tc_send(tc_conn *c, const void *data, size_t len);
int tc_send_str(tc_conn *c, const char *s);
/* Reads one complete answer within timeout_ms. 0, or -1 on EOF, reset or
 * timeout before it was complete. Skips 1xx interim answers unless
 * keep_interim. */
int tc_read(tc_conn *c, tc_resp *r, int timeout_ms);
int tc_read_interim(tc_conn *c, tc_resp *r, int timeout_ms);
void tc_resp_free(tc_resp *r);
/* The value of header `name` in r (case-insensitive) copied into out, or
 * NULL. */
const char *tc_header(const tc_resp *r, const char *name, char *out, size_t outlen);
/* 1 when the server closed the connection (EOF or reset) within timeout_ms
 * (bytes received meanwhile are discarded), 0 if still open. */
int tc_wait_closed(tc_conn *c, int timeout_ms);
/* One-shot: connect, send, read one answer, close. Returns the status or
 * -1. body (may be NULL) receives a malloc'd copy of the body. */
int tc_request(int port, const char *raw, size_t rawlen, char **body);

#endif
