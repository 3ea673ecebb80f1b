/* A tiny scripted HTTP/1.1 server on 127.0.0.1 for the credential tests: it
 * plays STS, the container endpoint and IMDS. One thread, one connection at a
 * time, Connection: close. Every request is recorded so tests can assert on
 * what the client sent; the handler decides the answer, or to hang, stall or
 * hang up. */
#ifndef CREDS_HTTPD_H
#define CREDS_HTTPD_H

#include <stddef.h>

typedef struct {
  char method[16];
  char path[1024];
  char headers[8192]; /* raw header lines, "\r\n" separated */
  char *body;         /* NUL-terminated */
  size_t body_len;
} chd_request;

typedef struct {
  int status;
  char content_type[64];
  char *body; /* set with chd_reply */
  size_t body_len;
  int hang;     /* never answer; the connection stays open until chd_stop */
  int hang_up;  /* close without answering */
  int delay_ms; /* wait before answering */
} chd_response;

typedef void (*chd_handler)(const chd_request *rq, chd_response *rs, void *arg);
typedef struct chd_server chd_server;

chd_server *chd_start(chd_handler h, void *arg);
const char *chd_url(const chd_server *s); /* "http://127.0.0.1:PORT" */
int chd_port(const chd_server *s);
int chd_count(chd_server *s); /* requests received so far */
/* Copies request i (0-based); the caller frees out->body. Returns 0 or -1. */
int chd_get(chd_server *s, int i, chd_request *out);
void chd_stop(chd_server *s);

void chd_reply(chd_response *rs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Case-insensitive header lookup; copies the trimmed value. NULL if absent. */
const char *chd_header(const chd_request *rq, const char *name, char *out, size_t cap);
/* Value of a form field in an x-www-form-urlencoded body, percent-decoded. */
const char *chd_form(const char *body, const char *name, char *out, size_t cap);
/* A loopback port with nothing listening (bound, then closed). */
int chd_dead_port(void);

#endif
