/* Fuzz target: the webhook request path, relay/http_server.c + ingest.c,
 * with the real group committer and queue (LMDB in a temp dir, preferably
 * on tmpfs so the fsyncs are cheap).
 *
 * http_server.h has no socket-less seam, so each input is played by a
 * client over loopback against servers running in this process, on one
 * libuv loop that the harness turns itself (bounded per input).
 *
 * Input layout:
 *   byte 0   mode: bit 0 picks the server (0 = signatures required with
 *            api key "fuzzkey" / secret "fuzzsecret", 1 = no signatures);
 *            bits 1-3 all set = "slow client": no half-close after the
 *            bytes, against a third server with 25 ms timeouts (408, idle
 *            close), else the client half-closes after sending.
 *   byte 1   seed for the split points (0 = one write)
 *   rest     the bytes the client sends, in chunks of 1..64 bytes with a
 *            loop turn between chunks.
 * Properties:
 *   - no crash, UB or leak (ASan/UBSan/LSan);
 *   - the server closes the connection within 5 s;
 *   - the answer stream is a sequence of well-formed HTTP/1.1 responses
 *     (status line, one Content-Length, Date, header lines, the body) with
 *     a status in the SPEC set; 100 Continue only as an interim answer;
 *   - answers match the requests: a reference parse of the same bytes
 *     (http-parser, no limits) gives the complete requests; every one of
 *     them is answered in order unless the server closed early (an answer
 *     with "Connection: close", always the last); a stream the reference
 *     parser rejects ends with a 400/413/431 refusal (or a 408 from the
 *     slow-client server, whose timeout may fire first); HEAD answers carry
 *     no body;
 *   - a 200 means stored: over the whole run, the 200s equal the servers'
 *     stored + duplicate counts, and the records in the queue equal the
 *     stored count (they are leased and acked after each input, which
 *     also keeps the queue small).
 * FUZZ_HTTP_DEBUG=1 prints each exchange (for reading a reproducer).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "commit.h"
#include "config.h"
#include "ingest.h"
#include "log.h"
#include "rq.h"

#define FAIL(...)                                  \
  do {                                             \
    fprintf(stderr, "fuzz_http: " __VA_ARGS__);    \
    fprintf(stderr, "\n");                         \
    abort();                                       \
  } while (0)

#define NSERVERS 3
#define MAX_BODY 2048
#define CLOSE_WAIT_MS 5000

typedef struct {
  relay_config cfg;
  ingest *ing;
  int port;
} server;

static uv_loop_t loop;
static rq_env *env;
static committer *commit;
static server servers[NSERVERS];
static char data_dir[512];
static uint64_t total_200; /* answers 200 seen by clients */
static uint64_t total_acked;

static void cleanup(void) {
  if (!data_dir[0]) return;
  DIR *d = opendir(data_dir);
  if (d) {
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      snprintf(p, sizeof p, "%s/%s", data_dir, e->d_name);
      unlink(p);
    }
    closedir(d);
  }
  rmdir(data_dir);
}

/* A crashing input ends the process without atexit: remove the data dirs
 * of fuzzer processes that are gone (the pid is part of the name). */
static void remove_stale(const char *base) {
  DIR *d = opendir(base);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    long pid;
    char rest[16];
    if (sscanf(e->d_name, "relay-fuzz-http.%ld.%15s", &pid, rest) != 2 || pid <= 0) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    snprintf(data_dir, sizeof data_dir, "%s/%s", base, e->d_name);
    cleanup();
  }
  closedir(d);
  data_dir[0] = '\0';
}

static void load_cfg(relay_config *c, int secure, unsigned timeout_ms) {
  char dd[600], to[64], ho[64], bo[64];
  snprintf(dd, sizeof dd, "RELAY_DATA_DIR=%s", data_dir);
  snprintf(to, sizeof to, "RELAY_HTTP_IDLE_TIMEOUT_MS=%u", timeout_ms);
  snprintf(ho, sizeof ho, "RELAY_HTTP_HEADER_TIMEOUT_MS=%u", timeout_ms);
  snprintf(bo, sizeof bo, "RELAY_HTTP_BODY_TIMEOUT_MS=%u", timeout_ms);
  char *envp[] = {"RELAY_LISTEN=127.0.0.1:0",
                  "RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:000000000000:t",
                  dd,
                  to,
                  ho,
                  bo,
                  "RELAY_MAX_BODY_BYTES=2KiB",
                  "RELAY_HTTP_MAX_HEADER_BYTES=1KiB",
                  "RELAY_HTTP_MAX_CONNECTIONS=16",
                  secure ? "RELAY_STREAM_API_KEY=fuzzkey" : "RELAY_INSECURE_NO_SIGNATURE=1",
                  secure ? "RELAY_STREAM_API_SECRET=fuzzsecret" : NULL,
                  NULL};
  char err[256];
  char *argv[] = {"relayd", NULL};
  if (cfg_load_envp(c, 1, argv, envp, err, sizeof err) != 0) FAIL("config: %s", err);
}

static void setup(void) {
  signal(SIGPIPE, SIG_IGN);
  log_configure("error", "json");
  struct stat st;
  const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
  remove_stale(base);
  snprintf(data_dir, sizeof data_dir, "%s/relay-fuzz-http.%ld.XXXXXX", base, (long)getpid());
  if (!mkdtemp(data_dir)) FAIL("mkdtemp: %s", strerror(errno));
  atexit(cleanup);
  if (uv_loop_init(&loop) != 0) FAIL("loop");
  rq_options ro = {.map_size = 256ull << 20};
  int rc = rq_env_open(&env, data_dir, &ro);
  if (rc != 0) FAIL("rq_env_open: %d", rc);
  if (committer_new(&commit, &loop, env, 0) != 0) FAIL("committer_new");
  for (int i = 0; i < NSERVERS; i++) {
    load_cfg(&servers[i].cfg, i == 0, i == 2 ? 25 : 2000);
    ingest_options io = {.cfg = &servers[i].cfg, .env = env, .commit = commit};
    if (ingest_new(&servers[i].ing, &loop, &io) != 0) FAIL("ingest_new");
    servers[i].port = ingest_port(servers[i].ing);
  }
}

/* ---- reference parse of the request stream -------------------------- */

#define MAX_REQS 4096

typedef struct {
  size_t n;          /* complete requests */
  int head[MAX_REQS];
  int error;         /* the stream is malformed after request n */
} reference;

static int ref_complete(http_parser *p) {
  reference *r = p->data;
  if (r->n < MAX_REQS) r->head[r->n] = p->method == HTTP_HEAD;
  r->n++;
  return 0;
}

static void reference_parse(const uint8_t *d, size_t len, reference *r) {
  memset(r, 0, sizeof *r);
  http_parser p;
  http_parser_settings s;
  http_parser_settings_init(&s);
  s.on_message_complete = ref_complete;
  http_parser_init(&p, HTTP_REQUEST);
  p.data = r;
  size_t off = 0;
  while (off < len) {
    size_t n = http_parser_execute(&p, &s, (const char *)d + off, len - off);
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK) {
      r->error = 1;
      return;
    }
    if (p.upgrade) return; /* the server stops there too */
    if (n == 0) break;
    off += n;
  }
}

/* ---- the client ------------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, cap;
} rbuf;

static void rbuf_add(rbuf *b, const char *d, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + n) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) FAIL("oom");
    b->cap = cap;
  }
  memcpy(b->p + b->len, d, n);
  b->len += n;
}

static uint32_t rnd_state;
static uint32_t rnd(void) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 17;
  rnd_state ^= rnd_state << 5;
  return rnd_state;
}

/* Reads what is there. Returns 1 on EOF/reset, 0 otherwise. */
static int drain_socket(int fd, rbuf *out, int *reset) {
  char tmp[8192];
  for (;;) {
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n > 0) {
      rbuf_add(out, tmp, (size_t)n);
      continue;
    }
    if (n == 0) return 1;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (errno == EINTR) continue;
    *reset = 1;
    return 1;
  }
}

/* One loop turn without blocking, then waits (briefly) for the loop or
 * the client socket to have something. */
static void turn(int fd, short events) {
  uv_run(&loop, UV_RUN_NOWAIT);
  struct pollfd pf[2] = {{.fd = uv_backend_fd(&loop), .events = POLLIN},
                         {.fd = fd, .events = events}};
  int t = uv_backend_timeout(&loop);
  if (t < 0 || t > 5) t = 5;
  poll(pf, fd >= 0 ? 2 : 1, t);
  uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- checking the answers ------------------------------------------- */

static int allowed_status(int s) {
  switch (s) {
    case 200: case 400: case 401: case 404: case 405: case 408: case 413: case 415:
    case 431: case 503:
      return 1;
    default:
      return 0;
  }
}

static int is_refusal(int s) {
  return s == 400 || s == 408 || s == 413 || s == 431;
}

static const char *find_crlf(const char *p, const char *end) {
  for (; p + 1 < end; p++)
    if (p[0] == '\r' && p[1] == '\n') return p;
  return NULL;
}

/* Checks the whole answer stream; returns the number of 200s. */
static unsigned check_answers(const rbuf *b, const reference *ref, int slow) {
  /* No answer at all leaves b->p NULL: NULL + 0 is undefined in C. */
  const char *p = b->p, *end = b->p ? b->p + b->len : NULL;
  size_t finals = 0;
  int closed = 0, last_status = 0;
  unsigned ok = 0;
  while (p < end) {
    if (closed) FAIL("bytes after a Connection: close answer");
    const char *eol = find_crlf(p, end);
    if (!eol) FAIL("truncated status line");
    if (eol - p < 13 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[12] != ' ')
      FAIL("bad status line: %.*s", (int)(eol - p), p);
    int status = 0;
    for (int i = 9; i < 12; i++) {
      if (p[i] < '0' || p[i] > '9') FAIL("bad status code");
      status = status * 10 + (p[i] - '0');
    }
    if (eol - p == 13) FAIL("empty reason phrase");
    p = eol + 2;
    if (status == 100) {
      if (end - p < 2 || p[0] != '\r' || p[1] != '\n') FAIL("100 Continue with headers");
      p += 2;
      continue;
    }
    if (!allowed_status(status)) FAIL("status %d outside the SPEC set", status);
    long long clen = -1;
    int has_date = 0, conn_close = 0;
    for (;;) {
      eol = find_crlf(p, end);
      if (!eol) FAIL("truncated headers");
      if (eol == p) {
        p += 2;
        break;
      }
      const char *colon = memchr(p, ':', (size_t)(eol - p));
      if (!colon || colon == p || colon + 1 >= eol || colon[1] != ' ')
        FAIL("bad header line: %.*s", (int)(eol - p), p);
      for (const char *q = p; q < eol; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f) FAIL("control byte in a header");
      size_t nl = (size_t)(colon - p);
      const char *v = colon + 2;
      size_t vl = (size_t)(eol - v);
      if (nl == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
        if (clen >= 0) FAIL("two Content-Length headers");
        clen = 0;
        if (vl == 0 || vl > 9) FAIL("bad Content-Length");
        for (size_t i = 0; i < vl; i++) {
          if (v[i] < '0' || v[i] > '9') FAIL("bad Content-Length");
          clen = clen * 10 + (v[i] - '0');
        }
      } else if (nl == 4 && strncasecmp(p, "Date", 4) == 0) {
        has_date = 1;
      } else if (nl == 10 && strncasecmp(p, "Connection", 10) == 0) {
        if (vl == 5 && strncasecmp(v, "close", 5) == 0) conn_close = 1;
      }
      p = eol + 2;
    }
    if (clen < 0) FAIL("answer %d without Content-Length", status);
    if (!has_date) FAIL("answer without Date");
    /* HEAD answers from the handler carry no body; the server's own
     * refusals are never HEAD answers. */
    int head = finals < MAX_REQS && finals < ref->n && ref->head[finals] && !is_refusal(status);
    if (!head) {
      if (end - p < clen) FAIL("truncated body (%lld announced)", clen);
      p += clen;
    }
    if (status == 200) ok++;
    if (conn_close) closed = 1;
    last_status = status;
    finals++;
  }
  /* Matching the reference parse. */
  if (closed) {
    int refused = is_refusal(last_status);
    if (finals > ref->n + (refused ? 1 : 0))
      FAIL("%zu answers for %zu requests", finals, ref->n);
  } else {
    if (finals != ref->n) FAIL("%zu answers for %zu complete requests (no close)", finals, ref->n);
    if (ref->error) FAIL("malformed stream not refused");
  }
  if (ref->error && closed && finals > ref->n) {
    /* Against the slow-client server (25 ms timeouts) a 408 may come
     * first: on a loaded machine one loop turn can outlast the timeout
     * while the malformed bytes still wait in the socket. */
    if (last_status != 400 && last_status != 413 && last_status != 431 &&
        !(slow && last_status == 408))
      FAIL("malformed stream answered %d", last_status);
  }
  return ok;
}

/* ---- after each input: the queue must hold exactly what was stored ---- */

static int acks_pending;

static void on_acked(commit_op *op) {
  if (op->result != 0) FAIL("ack failed: %d", op->result);
  acks_pending--;
}

static void ack_all(void) {
  for (;;) {
    rq_record *recs = NULL;
    int n = rq_lease(env, INT64_MAX, 256, 0, &recs);
    if (n < 0) FAIL("rq_lease: %d", n);
    if (n == 0) {
      rq_records_free(recs, 0);
      return;
    }
    commit_op *ops = calloc((size_t)n, sizeof *ops);
    if (!ops) FAIL("oom");
    for (int i = 0; i < n; i++) {
      ops[i].kind = COMMIT_ACK;
      ops[i].seq = recs[i].seq;
      ops[i].cb = on_acked;
      acks_pending++;
      committer_submit(commit, &ops[i]);
    }
    while (acks_pending) turn(-1, 0);
    total_acked += (uint64_t)n;
    free(ops);
    rq_records_free(recs, (size_t)n);
  }
}

static void check_counts(void) {
  uint64_t stored = 0, answered_200 = 0;
  for (int i = 0; i < NSERVERS; i++) {
    ingest_stats s;
    ingest_get_stats(servers[i].ing, &s);
    if (s.in_flight) FAIL("requests still in flight after the connection closed");
    stored += s.stored;
    answered_200 += s.stored + s.duplicates + s.stored_dead;
  }
  if (answered_200 != total_200)
    FAIL("clients saw %llu 200s, servers stored or deduplicated %llu",
         (unsigned long long)total_200, (unsigned long long)answered_200);
  if (total_acked != stored)
    FAIL("queue held %llu records, servers stored %llu", (unsigned long long)total_acked,
         (unsigned long long)stored);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  if (!ready) {
    setup();
    ready = 1;
  }
  if (size < 2) return 0;
  int slow = (data[0] & 0x0e) == 0x0e;
  server *srv = &servers[slow ? 2 : (data[0] & 1)];
  rnd_state = data[1] ? 0x9e3779b9u ^ data[1] : 0;
  const uint8_t *req = data + 2;
  size_t len = size - 2;

  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) FAIL("socket: %s", strerror(errno));
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv->port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
    FAIL("connect: %s", strerror(errno));

  rbuf answers = {0};
  int reset = 0, eof = 0;
  size_t off = 0;
  uint64_t start = uv_now(&loop);
  while (off < len && !eof) {
    size_t chunk = rnd_state ? 1 + rnd() % 64 : len - off;
    if (chunk > len - off) chunk = len - off;
    ssize_t n = send(fd, req + off, chunk, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
               errno != ENOTCONN) {
      break; /* the server closed (after a refusal): stop sending */
    }
    turn(fd, POLLIN | (off < len ? POLLOUT : 0));
    eof = drain_socket(fd, &answers, &reset);
    if (uv_now(&loop) - start > CLOSE_WAIT_MS) FAIL("sending took over %d ms", CLOSE_WAIT_MS);
  }
  int shut = !slow;
  if (shut) shutdown(fd, SHUT_WR);
  start = uv_now(&loop);
  while (!eof) {
    turn(fd, POLLIN);
    eof = drain_socket(fd, &answers, &reset);
    /* A slow client still goes away once told to: the server lingers for
     * our EOF after a closing answer. */
    if (!shut && answers.len && memmem(answers.p, answers.len, "Connection: close\r\n", 19)) {
      shutdown(fd, SHUT_WR);
      shut = 1;
    }
    if (!eof && uv_now(&loop) - start > CLOSE_WAIT_MS)
      FAIL("server did not close the connection within %d ms", CLOSE_WAIT_MS);
  }
  close(fd);
  if (reset && !slow) FAIL("connection reset by the server");

  reference ref;
  reference_parse(req, off, &ref);
  if (getenv("FUZZ_HTTP_DEBUG"))
    fprintf(stderr, "--- server %d, %zu/%zu bytes sent, %zu complete requests%s%s\n%.*s\n",
            (int)(srv - servers), off, len, ref.n, ref.error ? ", malformed" : "",
            reset ? ", reset" : "", (int)answers.len, answers.p ? answers.p : "");
  total_200 += check_answers(&answers, &ref, slow);
  free(answers.p);

  /* Let the server finish closing its side, then audit the queue. */
  for (int i = 0; i < 3; i++) uv_run(&loop, UV_RUN_NOWAIT);
  ack_all();
  check_counts();
  return 0;
}
