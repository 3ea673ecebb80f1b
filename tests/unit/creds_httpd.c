#include "creds_httpd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHD_MAX_REQ 128

struct chd_server {
  int lfd;
  int stop_pipe[2];
  int port;
  char url[64];
  chd_handler handler;
  void *arg;
  pthread_t thread;
  pthread_mutex_t mu;
  chd_request reqs[CHD_MAX_REQ];
  int nreq;
};

/* Waits for fd to be readable, or the stop pipe. Returns 1 readable, 0 stop
 * or timeout. */
static int wait_readable(chd_server *s, int fd, int timeout_ms) {
  struct pollfd p[2] = {{fd, POLLIN, 0}, {s->stop_pipe[0], POLLIN, 0}};
  int n = poll(p, fd >= 0 ? 2 : 1, timeout_ms);
  if (fd < 0) {
    return 0;
  }
  if (n <= 0 || (p[1].revents & POLLIN)) return 0;
  return (p[0].revents & (POLLIN | POLLHUP | POLLERR)) ? 1 : 0;
}

static void wait_stop(chd_server *s, int timeout_ms) {
  struct pollfd p = {s->stop_pipe[0], POLLIN, 0};
  poll(&p, 1, timeout_ms);
}

static int read_request(chd_server *s, int fd, chd_request *rq) {
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap + 1);
  if (!buf) return -1;
  char *hend = NULL;
  size_t need = 0;
  for (;;) {
    if (!hend) {
      buf[n] = '\0';
      hend = strstr(buf, "\r\n\r\n");
      if (hend) {
        const char *cl = strcasestr(buf, "\r\nContent-Length:");
        size_t clen = 0;
        if (cl && cl < hend) clen = strtoul(cl + 17, NULL, 10);
        need = (size_t)(hend - buf) + 4 + clen;
        if (need > cap) break;
      }
    }
    if (hend && n >= need) break;
    if (n >= cap) break;
    if (!wait_readable(s, fd, 5000)) break;
    ssize_t r = read(fd, buf + n, cap - n);
    if (r <= 0) break;
    n += (size_t)r;
  }
  if (!hend || n < need) {
    free(buf);
    return -1;
  }
  *hend = '\0';
  char *line_end = strstr(buf, "\r\n");
  char *hdrs = line_end ? line_end + 2 : hend;
  if (line_end) *line_end = '\0';
  memset(rq, 0, sizeof *rq);
  sscanf(buf, "%15s %1023s", rq->method, rq->path);
  snprintf(rq->headers, sizeof rq->headers, "%s", line_end ? hdrs : "");
  char *body = hend + 4;
  rq->body_len = need - (size_t)(body - buf);
  rq->body = malloc(rq->body_len + 1);
  if (rq->body) {
    memcpy(rq->body, body, rq->body_len);
    rq->body[rq->body_len] = '\0';
  }
  free(buf);
  return 0;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

static void *serve(void *arg) {
  chd_server *s = arg;
  for (;;) {
    if (!wait_readable(s, s->lfd, -1)) break;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) continue;
    chd_request rq;
    if (read_request(s, fd, &rq) < 0) {
      close(fd);
      continue;
    }
    chd_response rs;
    memset(&rs, 0, sizeof rs);
    rs.status = 200;
    s->handler(&rq, &rs, s->arg);
    pthread_mutex_lock(&s->mu);
    if (s->nreq < CHD_MAX_REQ)
      s->reqs[s->nreq++] = rq;
    else
      free(rq.body);
    pthread_mutex_unlock(&s->mu);
    if (rs.hang) {
      wait_stop(s, -1);
    } else if (!rs.hang_up) {
      if (rs.delay_ms) wait_stop(s, rs.delay_ms);
      char head[512];
      int hl =
          snprintf(head, sizeof head,
                   "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n",
                   rs.status, rs.content_type[0] ? rs.content_type : "text/plain", rs.body_len);
      write_all(fd, head, (size_t)hl);
      if (rs.body) write_all(fd, rs.body, rs.body_len);
    }
    free(rs.body);
    close(fd);
  }
  return NULL;
}

chd_server *chd_start(chd_handler h, void *arg) {
  chd_server *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->handler = h;
  s->arg = arg;
  pthread_mutex_init(&s->mu, NULL);
  s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t al = sizeof a;
  if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(s->lfd, 16) < 0 ||
      getsockname(s->lfd, (struct sockaddr *)&a, &al) < 0 || pipe(s->stop_pipe) < 0) {
    if (s->lfd >= 0) close(s->lfd);
    free(s);
    return NULL;
  }
  s->port = ntohs(a.sin_port);
  snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
  if (pthread_create(&s->thread, NULL, serve, s) != 0) {
    close(s->lfd);
    free(s);
    return NULL;
  }
  return s;
}

const char *chd_url(const chd_server *s) {
  return s->url;
}

int chd_port(const chd_server *s) {
  return s->port;
}

int chd_count(chd_server *s) {
  pthread_mutex_lock(&s->mu);
  int n = s->nreq;
  pthread_mutex_unlock(&s->mu);
  return n;
}

int chd_get(chd_server *s, int i, chd_request *out) {
  int rc = -1;
  pthread_mutex_lock(&s->mu);
  if (i >= 0 && i < s->nreq) {
    *out = s->reqs[i];
    out->body = malloc(out->body_len + 1);
    if (out->body) {
      memcpy(out->body, s->reqs[i].body ? s->reqs[i].body : "", out->body_len);
      out->body[out->body_len] = '\0';
      rc = 0;
    }
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void chd_stop(chd_server *s) {
  if (!s) return;
  ssize_t w = write(s->stop_pipe[1], "x", 1);
  (void)w;
  pthread_join(s->thread, NULL);
  close(s->lfd);
  close(s->stop_pipe[0]);
  close(s->stop_pipe[1]);
  for (int i = 0; i < s->nreq; i++) free(s->reqs[i].body);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

void chd_reply(chd_response *rs, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  free(rs->body);
  rs->body = malloc((size_t)n + 1);
  if (!rs->body) return;
  va_start(ap, fmt);
  vsnprintf(rs->body, (size_t)n + 1, fmt, ap);
  va_end(ap);
  rs->body_len = (size_t)n;
  rs->status = status;
}

const char *chd_header(const chd_request *rq, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  const char *p = rq->headers;
  while (*p) {
    const char *e = strstr(p, "\r\n");
    size_t ll = e ? (size_t)(e - p) : strlen(p);
    if (ll > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (*v == ' ' || *v == '\t') v++;
      size_t vl = ll - (size_t)(v - p);
      if (vl >= cap) vl = cap - 1;
      memcpy(out, v, vl);
      out[vl] = '\0';
      return out;
    }
    if (!e) break;
    p = e + 2;
  }
  return NULL;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

const char *chd_form(const char *body, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  const char *p = body;
  while (p && *p) {
    const char *amp = strchr(p, '&');
    size_t fl = amp ? (size_t)(amp - p) : strlen(p);
    if (fl > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
      size_t o = 0;
      for (size_t i = nl + 1; i < fl && o + 1 < cap; i++) {
        if (p[i] == '%' && i + 2 < fl + 1 && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
          out[o++] = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
          i += 2;
        } else if (p[i] == '+') {
          out[o++] = ' ';
        } else {
          out[o++] = p[i];
        }
      }
      out[o] = '\0';
      return out;
    }
    p = amp ? amp + 1 : NULL;
  }
  return NULL;
}

int chd_dead_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}
