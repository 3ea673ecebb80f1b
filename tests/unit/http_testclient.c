#include "http_testclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tc_connect(tc_conn *c, int port) {
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0) return -errno;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
    int e = errno;
    close(c->fd);
    c->fd = -1;
    return -e;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return 0;
}

void tc_close(tc_conn *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  free(c->buf);
  c->buf = NULL;
  c->len = c->cap = 0;
}

int tc_send(tc_conn *c, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int tc_send_str(tc_conn *c, const char *s) {
  return tc_send(c, s, strlen(s));
}

/* Reads more bytes into c->buf; 1 got some, 0 EOF, -1 error/timeout. */
static int fill(tc_conn *c, long long deadline) {
  long long left = deadline - mono_ms();
  if (left <= 0) return -1;
  struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
  int pr = poll(&pfd, 1, (int)left);
  if (pr <= 0) return -1;
  if (c->cap - c->len < 65536) {
    size_t cap = c->cap ? c->cap * 2 : 131072;
    char *p = realloc(c->buf, cap);
    if (!p) return -1;
    c->buf = p;
    c->cap = cap;
  }
  ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
  if (n < 0) return errno == EINTR ? 1 : -1;
  if (n == 0) return 0;
  c->len += (size_t)n;
  c->buf[c->len] = 0;
  return 1;
}

static const char *find_hdr(const char *head, const char *name) {
  size_t nl = strlen(name);
  const char *p = strstr(head, "\r\n");
  while (p && p[2] != '\r' && p[2]) {
    p += 2;
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      p += nl + 1;
      while (*p == ' ') p++;
      return p;
    }
    p = strstr(p, "\r\n");
  }
  return NULL;
}

const char *tc_header(const tc_resp *r, const char *name, char *out, size_t outlen) {
  const char *v = find_hdr(r->head, name);
  if (!v) return NULL;
  size_t n = 0;
  while (v[n] && v[n] != '\r' && n + 1 < outlen) n++;
  memcpy(out, v, n);
  out[n] = 0;
  return out;
}

static int read_one(tc_conn *c, tc_resp *r, int timeout_ms, int keep_interim) {
  memset(r, 0, sizeof *r);
  long long deadline = mono_ms() + timeout_ms;
  for (;;) {
    char *end = c->len ? strstr(c->buf, "\r\n\r\n") : NULL;
    if (end) {
      size_t hl = (size_t)(end - c->buf) + 4;
      if (hl >= sizeof r->head) return -1;
      memcpy(r->head, c->buf, hl);
      r->head[hl] = 0;
      r->status = (int)strtol(r->head + 9, NULL, 10);
      if (r->status >= 100 && r->status < 200) {
        memmove(c->buf, c->buf + hl, c->len - hl + 1);
        c->len -= hl;
        if (keep_interim) return 0;
        continue;
      }
      const char *cl = find_hdr(r->head, "Content-Length");
      size_t blen = cl ? (size_t)strtoul(cl, NULL, 10) : 0;
      while (c->len < hl + blen) {
        int f = fill(c, deadline);
        if (f <= 0) return -1;
      }
      r->body = malloc(blen + 1);
      memcpy(r->body, c->buf + hl, blen);
      r->body[blen] = 0;
      r->body_len = blen;
      memmove(c->buf, c->buf + hl + blen, c->len - hl - blen + 1);
      c->len -= hl + blen;
      return 0;
    }
    int f = fill(c, deadline);
    if (f <= 0) return -1;
  }
}

int tc_read(tc_conn *c, tc_resp *r, int timeout_ms) {
  return read_one(c, r, timeout_ms, 0);
}

int tc_read_interim(tc_conn *c, tc_resp *r, int timeout_ms) {
  return read_one(c, r, timeout_ms, 1);
}

void tc_resp_free(tc_resp *r) {
  free(r->body);
  r->body = NULL;
}

int tc_wait_closed(tc_conn *c, int timeout_ms) {
  long long deadline = mono_ms() + timeout_ms;
  for (;;) {
    long long left = deadline - mono_ms();
    if (left <= 0) return 0;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int pr = poll(&pfd, 1, (int)left);
    if (pr <= 0) return 0;
    char tmp[4096];
    ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
    if (n <= 0) return 1;
  }
}

int tc_request(int port, const char *raw, size_t rawlen, char **body) {
  tc_conn c;
  if (tc_connect(&c, port) < 0) return -1;
  int status = -1;
  tc_resp r;
  if (tc_send(&c, raw, rawlen) == 0 && tc_read(&c, &r, 10000) == 0) {
    status = r.status;
    if (body) {
      *body = r.body;
      r.body = NULL;
    }
    tc_resp_free(&r);
  }
  tc_close(&c);
  return status;
}
