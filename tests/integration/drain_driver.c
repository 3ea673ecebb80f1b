/* Test and benchmark driver for the drainer: the real queue, group
 * committer, SNS client and drainer on one libuv loop, without the HTTP
 * ingest in front (so drainer tests and the drain benchmark do not depend
 * on it).
 *
 *   drain_driver fill DIR FILE
 *       appends the events of FILE to the queue in DIR. FILE holds frames:
 *       one JSON header line {"webhook_id","type","cid","channel_type",
 *       "channel_id","user_id","received_ms","len"} then exactly len body
 *       bytes. A header with "via_dlq":1 puts its event in the DLQ (reason
 *       expired) and the fill ends with a replay of the whole DLQ, as an
 *       operator would after an outage. Prints {"appended":N,"duplicates":M}.
 *   drain_driver gen DIR N FIXTURE...
 *       appends N events cycling over the fixture files (benchmarks).
 *   drain_driver run DIR --topic ARN --endpoint URL [--batch N]
 *       [--concurrency N] [--retry-base MS] [--retry-max MS] [--max-age S]
 *       [--max-msg BYTES] [--sns-timeout MS] [--until-empty] [--timeout S] [--status-ms MS]
 *       drains DIR to SNS. Prints a JSON status line every --status-ms (0:
 *       none) and a final line {"ev":"final",...} with the DLQ contents.
 *       [--feed FILE --feed-rate N] appends FILE's events through the
 *       committer at N events/s while draining (as ingest would).
 *       Reads commands from stdin, one a line: pause, resume, test, quit.
 *       With --until-empty it stops once the queue has no ready record and
 *       nothing is in flight. Exit 0; 3 on timeout; 1 on errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "commit.h"
#include "creds.h"
#include "drain.h"
#include "log.h"
#include "rq.h"
#include "sns.h"

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *jstr(json_object *o, const char *k) {
  json_object *v;
  if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  return json_object_get_string(v);
}

static int64_t jint(json_object *o, const char *k, int64_t dflt) {
  json_object *v;
  if (!json_object_object_get_ex(o, k, &v)) return dflt;
  return json_object_get_int64(v);
}

/* Frames of a FILE (see the top): records borrowing from one buffer. */
typedef struct {
  char *buf;
  json_object **hdrs;
  rq_record *recs;
  size_t n;
} frames;

static void frames_free(frames *fr) {
  for (size_t i = 0; i < fr->n; i++) json_object_put(fr->hdrs[i]);
  free(fr->hdrs);
  free(fr->recs);
  free(fr->buf);
}

static int frames_load(frames *fr, const char *file) {
  memset(fr, 0, sizeof *fr);
  FILE *f = fopen(file, "rb");
  if (!f) {
    perror(file);
    return -1;
  }
  fseek(f, 0, SEEK_END);
  size_t len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  fr->buf = malloc(len + 1);
  if (!fr->buf || fread(fr->buf, 1, len, f) != len) {
    fprintf(stderr, "read %s failed\n", file);
    fclose(f);
    return -1;
  }
  fclose(f);
  size_t cap = 0, off = 0;
  int64_t now = wall_ms();
  char *buf = fr->buf;
  while (off < len) {
    char *nl = memchr(buf + off, '\n', len - off);
    if (!nl) break;
    *nl = '\0';
    json_object *h = json_tokener_parse(buf + off);
    if (!h) {
      fprintf(stderr, "bad header at %zu\n", off);
      return -1;
    }
    size_t blen = (size_t)jint(h, "len", 0);
    off = (size_t)(nl - buf) + 1;
    if (off + blen > len) {
      fprintf(stderr, "short body at %zu\n", off);
      json_object_put(h);
      return -1;
    }
    if (fr->n == cap) {
      cap = cap ? cap * 2 : 1024;
      fr->recs = realloc(fr->recs, cap * sizeof *fr->recs);
      fr->hdrs = realloc(fr->hdrs, cap * sizeof *fr->hdrs);
      if (!fr->recs || !fr->hdrs) return -1;
    }
    rq_record *rec = &fr->recs[fr->n];
    memset(rec, 0, sizeof *rec);
    rec->received_ms = jint(h, "received_ms", now);
    rec->body = (const uint8_t *)buf + off;
    rec->body_len = blen;
    rec->webhook_id = jstr(h, "webhook_id");
    rec->type = jstr(h, "type");
    rec->cid = jstr(h, "cid");
    rec->channel_type = jstr(h, "channel_type");
    rec->channel_id = jstr(h, "channel_id");
    rec->user_id = jstr(h, "user_id");
    fr->hdrs[fr->n++] = h;
    off += blen;
  }
  return 0;
}

static int cmd_fill(const char *dir, const char *file) {
  frames fr;
  if (frames_load(&fr, file)) return 1;
  rq_env *env;
  rq_options o = {.map_size = (uint64_t)8 << 30};
  int rc = rq_env_open(&env, dir, &o);
  if (rc) {
    fprintf(stderr, "rq_env_open: %s\n", rq_strerror(rc));
    return 1;
  }
  uint64_t appended = 0, dups = 0;
  size_t via_dlq = 0;
  rq_txn *t = NULL;
  unsigned in_txn = 0;
  for (size_t i = 0; i < fr.n; i++) {
    if (!t && (rc = rq_txn_begin(env, &t))) {
      fprintf(stderr, "rq_txn_begin: %s\n", rq_strerror(rc));
      return 1;
    }
    if (jint(fr.hdrs[i], "via_dlq", 0)) {
      rc = rq_txn_append_dead(t, &fr.recs[i], "expired", "HTTP503", "SNS was down", NULL);
      via_dlq++;
    } else {
      rc = rq_txn_append(t, &fr.recs[i], NULL);
    }
    if (rc == RQ_DUPLICATE) {
      dups++;
    } else if (rc) {
      fprintf(stderr, "append: %s\n", rq_strerror(rc));
      return 1;
    } else {
      appended++;
    }
    if (++in_txn == 2000) {
      if ((rc = rq_txn_commit(t))) {
        fprintf(stderr, "commit: %s\n", rq_strerror(rc));
        return 1;
      }
      t = NULL;
      in_txn = 0;
    }
  }
  if (t && (rc = rq_txn_commit(t))) {
    fprintf(stderr, "commit: %s\n", rq_strerror(rc));
    return 1;
  }
  size_t moved = 0;
  if (via_dlq && ((rc = rq_dlq_replay(env, NULL, 0, NULL, &moved, NULL)) || moved != via_dlq)) {
    fprintf(stderr, "replay: %s (%zu of %zu)\n", rq_strerror(rc), moved, via_dlq);
    return 1;
  }
  rq_env_close(env);
  frames_free(&fr);
  printf("{\"appended\":%" PRIu64 ",\"duplicates\":%" PRIu64 "}\n", appended, dups);
  return 0;
}

/* Generates n events cycling over fixture files (benchmark fill): routing
 * fields from the JSON, webhook ids "gen-<i>". */
static int cmd_gen(const char *dir, long n, int nfiles, char **files) {
  typedef struct {
    char *body;
    size_t len;
    json_object *o;
    const char *type, *cid, *channel_type, *channel_id, *user_id;
  } fx;
  fx *f = calloc((size_t)nfiles, sizeof *f);
  if (!f) return 1;
  for (int i = 0; i < nfiles; i++) {
    FILE *fp = fopen(files[i], "rb");
    if (!fp) {
      perror(files[i]);
      return 1;
    }
    fseek(fp, 0, SEEK_END);
    f[i].len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    f[i].body = malloc(f[i].len + 1);
    if (!f[i].body || fread(f[i].body, 1, f[i].len, fp) != f[i].len) return 1;
    fclose(fp);
    f[i].body[f[i].len] = '\0';
    f[i].o = json_tokener_parse(f[i].body);
    if (!f[i].o) {
      fprintf(stderr, "%s: not JSON\n", files[i]);
      return 1;
    }
    f[i].type = jstr(f[i].o, "type");
    f[i].cid = jstr(f[i].o, "cid");
    f[i].channel_type = jstr(f[i].o, "channel_type");
    f[i].channel_id = jstr(f[i].o, "channel_id");
    json_object *u;
    f[i].user_id =
        json_object_object_get_ex(f[i].o, "user", &u) ? jstr(u, "id") : jstr(f[i].o, "user_id");
  }
  rq_env *env;
  rq_options o = {.map_size = (uint64_t)8 << 30};
  int rc = rq_env_open(&env, dir, &o);
  if (rc) {
    fprintf(stderr, "rq_env_open: %s\n", rq_strerror(rc));
    return 1;
  }
  int64_t now = wall_ms();
  rq_txn *t = NULL;
  for (long i = 0; i < n; i++) {
    const fx *e = &f[i % nfiles];
    char wid[48];
    snprintf(wid, sizeof wid, "gen-%ld", i);
    rq_record rec = {.received_ms = now,
                     .body = (const uint8_t *)e->body,
                     .body_len = e->len,
                     .webhook_id = wid,
                     .type = e->type,
                     .cid = e->cid,
                     .channel_type = e->channel_type,
                     .channel_id = e->channel_id,
                     .user_id = e->user_id};
    if (!t && (rc = rq_txn_begin(env, &t))) break;
    if ((rc = rq_txn_append(t, &rec, NULL)) && rc != RQ_DUPLICATE) break;
    rc = 0;
    if (i % 5000 == 4999) {
      rc = rq_txn_commit(t);
      t = NULL;
      if (rc) break;
    }
  }
  if (t) {
    if (rc)
      rq_txn_abort(t);
    else
      rc = rq_txn_commit(t);
  }
  rq_env_close(env);
  for (int i = 0; i < nfiles; i++) {
    json_object_put(f[i].o);
    free(f[i].body);
  }
  free(f);
  if (rc) {
    fprintf(stderr, "gen: %s\n", rq_strerror(rc));
    return 1;
  }
  printf("{\"appended\":%ld}\n", n);
  return 0;
}

/* ---- run ------------------------------------------------------------- */

typedef struct {
  uv_loop_t *loop;
  rq_env *env;
  committer *commit;
  sns_client *sns;
  creds_provider *creds;
  drain *d;
  relay_config cfg;
  uv_timer_t tick;
  uv_pipe_t in;
  int in_open;
  char inbuf[256];
  size_t inlen;
  int until_empty, stopping, exit_code;
  unsigned status_ms;
  double started, last_status, timeout_s;
  long sns_timeout_ms;
  int64_t first_publish_ms;
  uint64_t tests_ok, tests_failed;
  unsigned closes;
  /* --feed: appends through the committer at --feed-rate events/s and
   * kicks the drainer after each commit, as ingest does. */
  frames feed;
  commit_op *feed_ops;
  size_t feed_next, feed_answered;
  uint64_t feed_ok, feed_failed;
  double feed_rate, feed_started;
  int feeding;
} driver;

static void print_status(driver *v, const char *ev) {
  drain_status s;
  drain_get_status(v->d, &s);
  rq_stats q;
  memset(&q, 0, sizeof q);
  rq_stat(v->env, &q);
  printf("{\"ev\":\"%s\",\"t\":%.3f,\"state\":\"%s\",\"ready\":%" PRIu64 ",\"leased\":%" PRIu64
         ",\"dlq\":%" PRIu64 ",\"published\":%" PRIu64 ",\"failed\":%" PRIu64
         ",\"retried\":%" PRIu64 ",\"throttled\":%" PRIu64 ",\"requests\":%" PRIu64
         ",\"dead_rejected\":%" PRIu64 ",\"dead_expired\":%" PRIu64 ",\"dead_too_large\":%" PRIu64
         ",\"concurrency\":%u,\"max_concurrency\":%u,\"inflight_requests\":%u,\"inflight\":%" PRIu64
         ",\"backoff_until_ms\":%" PRId64 ",\"commit_failures\":%" PRIu64
         ",\"rate\":%.1f,\"tests_ok\":%" PRIu64 ",\"tests_failed\":%" PRIu64
         ",\"last_error\":{\"code\":\"%s\"}}\n",
         ev, mono_s() - v->started, drain_state_name(s.state), q.ready, s.inflight_messages, q.dlq,
         s.published_total, s.failed_total, s.retried_total, s.throttled_total, s.requests_total,
         s.dead_lettered[DRAIN_DEAD_REJECTED], s.dead_lettered[DRAIN_DEAD_EXPIRED],
         s.dead_lettered[DRAIN_DEAD_TOO_LARGE], s.concurrency, s.max_concurrency,
         s.inflight_requests, s.inflight_messages, s.backoff_until_ms, s.ack_commit_failures,
         s.publish_rate, v->tests_ok, v->tests_failed, s.last_error.code);
  fflush(stdout);
}

static void print_dlq(driver *v) {
  rq_record *rs = NULL;
  rq_dlq_filter all;
  memset(&all, 0, sizeof all);
  int n = rq_dlq_list(v->env, &all, &rs);
  if (n < 0) fprintf(stderr, "rq_dlq_list: %s\n", rq_strerror(n));
  printf("{\"ev\":\"dlq\",\"entries\":[");
  for (int i = 0; i < n; i++) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "webhook_id",
                           json_object_new_string(rs[i].webhook_id ? rs[i].webhook_id : ""));
    json_object_object_add(o, "reason",
                           json_object_new_string(rs[i].dlq_reason ? rs[i].dlq_reason : ""));
    json_object_object_add(o, "code", json_object_new_string(rs[i].dlq_code ? rs[i].dlq_code : ""));
    json_object_object_add(o, "attempts", json_object_new_int64(rs[i].attempts));
    json_object_object_add(o, "body_len", json_object_new_int64((int64_t)rs[i].body_len));
    printf("%s%s", i ? "," : "", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
  }
  printf("]}\n");
  if (n > 0) rq_records_free(rs, (size_t)n);
  fflush(stdout);
}

static void on_closed_part(void *arg) {
  driver *v = arg;
  v->closes++;
}

static void on_sns_closed(void *arg) {
  on_closed_part(arg);
}

static void on_commit_closed(void *arg) {
  driver *v = arg;
  on_closed_part(v);
  sns_client_close(v->sns, on_sns_closed, v);
}

static void on_drain_closed(void *arg) {
  driver *v = arg;
  on_closed_part(v);
  committer_close(v->commit, on_commit_closed, v);
}

static void stop(driver *v, int code) {
  if (v->stopping) return;
  v->stopping = 1;
  v->exit_code = code;
  double el = mono_s() - v->started;
  drain_status s;
  drain_get_status(v->d, &s);
  print_status(v, "final");
  printf("{\"ev\":\"elapsed\",\"seconds\":%.3f,\"published\":%" PRIu64 ",\"msgs_per_s\":%.1f}\n",
         el, s.published_total, el > 0 ? (double)s.published_total / el : 0.0);
  fflush(stdout);
  uv_timer_stop(&v->tick);
  uv_close((uv_handle_t *)&v->tick, NULL);
  if (v->in_open) {
    uv_close((uv_handle_t *)&v->in, NULL);
    v->in_open = 0;
  }
  drain_close(v->d, on_drain_closed, v);
}

static void on_test(void *arg, int err, const sns_result *res) {
  driver *v = arg;
  if (err == 0 && res->outcome == SNS_OK)
    v->tests_ok++;
  else
    v->tests_failed++;
  printf("{\"ev\":\"test\",\"err\":%d,\"outcome\":\"%s\",\"code\":\"%s\",\"message_id\":\"%s\"}\n",
         err, sns_outcome_name(res->outcome), res->code, res->message_id);
  fflush(stdout);
}

static void command(driver *v, const char *c) {
  if (!strcmp(c, "pause"))
    drain_pause(v->d);
  else if (!strcmp(c, "resume"))
    drain_resume(v->d);
  else if (!strcmp(c, "kick"))
    drain_kick(v->d);
  else if (!strcmp(c, "status"))
    print_status(v, "status");
  else if (!strcmp(c, "test")) {
    int rc = drain_test_sns(v->d, on_test, v);
    if (rc) {
      printf("{\"ev\":\"test\",\"err\":%d}\n", rc);
      fflush(stdout);
    }
  } else if (!strcmp(c, "quit"))
    stop(v, 0);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  driver *v = h->data;
  (void)sz;
  b->base = v->inbuf + v->inlen;
  b->len = sizeof v->inbuf - v->inlen - 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  driver *v = s->data;
  (void)b;
  if (n < 0) {
    if (v->in_open) {
      uv_close((uv_handle_t *)&v->in, NULL);
      v->in_open = 0;
    }
    return;
  }
  v->inlen += (size_t)n;
  char *p;
  while ((p = memchr(v->inbuf, '\n', v->inlen))) {
    *p = '\0';
    command(v, v->inbuf);
    if (v->stopping) return;
    size_t used = (size_t)(p - v->inbuf) + 1;
    memmove(v->inbuf, p + 1, v->inlen - used);
    v->inlen -= used;
  }
  if (v->inlen >= sizeof v->inbuf - 1) v->inlen = 0;
}

static void on_fed(commit_op *op) {
  driver *v = op->arg;
  v->feed_answered++;
  if (op->result == 0 || op->result == RQ_DUPLICATE)
    v->feed_ok++;
  else
    v->feed_failed++;
  if (v->d) drain_kick(v->d);
}

static void feed_more(driver *v, double now) {
  size_t due = (size_t)((now - v->feed_started) * v->feed_rate);
  if (due > v->feed.n) due = v->feed.n;
  while (v->feed_next < due) {
    commit_op *op = &v->feed_ops[v->feed_next];
    memset(op, 0, sizeof *op);
    op->kind = COMMIT_APPEND;
    op->rec = v->feed.recs[v->feed_next];
    op->rec.received_ms = wall_ms();
    op->cb = on_fed;
    op->arg = v;
    committer_submit(v->commit, op);
    v->feed_next++;
  }
  if (v->feed_next == v->feed.n && v->feed_answered == v->feed.n) v->feeding = 0;
}

static void on_tick(uv_timer_t *t) {
  driver *v = t->data;
  double now = mono_s();
  if (v->feeding) feed_more(v, now);
  if (v->status_ms && (now - v->last_status) * 1000 >= v->status_ms) {
    v->last_status = now;
    print_status(v, "status");
  }
  if (v->timeout_s > 0 && now - v->started > v->timeout_s) {
    stop(v, 3);
    return;
  }
  if (v->until_empty && !v->feeding) {
    drain_status s;
    drain_get_status(v->d, &s);
    rq_stats q;
    if (rq_stat(v->env, &q) == 0 && q.ready == 0 && s.inflight_messages == 0 &&
        committer_pending(v->commit) == 0)
      stop(v, 0);
  }
}

static const char *no_env(const char *name, void *arg) {
  (void)name;
  (void)arg;
  return NULL;
}

static int cmd_run(const char *dir, int argc, char **argv) {
  driver v;
  memset(&v, 0, sizeof v);
  const char *topic = NULL, *endpoint = NULL;
  v.cfg.publish_batch = 10;
  v.cfg.publish_concurrency = 16;
  v.cfg.retry_base_ms = 200;
  v.cfg.retry_max_ms = 60000;
  v.cfg.retry_max_age_s = 86400;
  v.cfg.max_message_bytes = 262144;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *n = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--until-empty")) {
      v.until_empty = 1;
      continue;
    }
    if (!n) {
      fprintf(stderr, "missing value for %s\n", a);
      return 2;
    }
    i++;
    long val = strtol(n, NULL, 10);
    if (!strcmp(a, "--topic"))
      topic = n;
    else if (!strcmp(a, "--endpoint"))
      endpoint = n;
    else if (!strcmp(a, "--batch"))
      v.cfg.publish_batch = (unsigned)val;
    else if (!strcmp(a, "--concurrency"))
      v.cfg.publish_concurrency = (unsigned)val;
    else if (!strcmp(a, "--retry-base"))
      v.cfg.retry_base_ms = (unsigned)val;
    else if (!strcmp(a, "--retry-max"))
      v.cfg.retry_max_ms = (unsigned)val;
    else if (!strcmp(a, "--max-age"))
      v.cfg.retry_max_age_s = (unsigned)val;
    else if (!strcmp(a, "--max-msg"))
      v.cfg.max_message_bytes = (uint64_t)val;
    else if (!strcmp(a, "--timeout"))
      v.timeout_s = (double)val;
    else if (!strcmp(a, "--sns-timeout"))
      v.sns_timeout_ms = val;
    else if (!strcmp(a, "--status-ms"))
      v.status_ms = (unsigned)val;
    else if (!strcmp(a, "--feed")) {
      if (frames_load(&v.feed, n)) return 1;
      v.feed_ops = calloc(v.feed.n ? v.feed.n : 1, sizeof *v.feed_ops);
      v.feeding = v.feed.n > 0;
    } else if (!strcmp(a, "--feed-rate"))
      v.feed_rate = (double)val;
    else {
      fprintf(stderr, "unknown option %s\n", a);
      return 2;
    }
  }
  if (!topic || !endpoint) {
    fprintf(stderr, "--topic and --endpoint are required\n");
    return 2;
  }
  size_t tl = strlen(topic);
  v.cfg.fifo = tl > 5 && !strcmp(topic + tl - 5, ".fifo");
  v.cfg.sns_topic_arn = (char *)topic;
  v.cfg.sns_endpoint = (char *)endpoint;
  log_configure(getenv("DRAIN_LOG_LEVEL") ? getenv("DRAIN_LOG_LEVEL") : "warn", "json");

  v.loop = uv_default_loop();
  rq_options o = {.map_size = (uint64_t)8 << 30};
  int rc = rq_env_open(&v.env, dir, &o);
  if (rc) {
    fprintf(stderr, "rq_env_open: %s\n", rq_strerror(rc));
    return 1;
  }
  char err[256] = "";
  creds_options co = {.access_key_id = "AKIDRELAYTEST",
                      .secret_access_key = "relay-test-secret",
                      .region = "us-east-1",
                      .getenv_fn = no_env};
  if ((rc = creds_provider_new(&v.creds, &co, err, sizeof err))) {
    fprintf(stderr, "creds: %s\n", err);
    return 1;
  }
  sns_client_options so = {.topic_arn = topic,
                           .region = "us-east-1",
                           .endpoint = endpoint,
                           .creds = v.creds,
                           .connect_timeout_ms = 1000,
                           .timeout_ms = v.sns_timeout_ms ? v.sns_timeout_ms : 5000,
                           .max_connections = (int)(v.cfg.publish_concurrency + 4)};
  if ((rc = sns_client_new(&v.sns, v.loop, &so))) {
    fprintf(stderr, "sns_client_new: %d\n", rc);
    return 1;
  }
  if ((rc = committer_new(&v.commit, v.loop, v.env, 0))) {
    fprintf(stderr, "committer_new: %d\n", rc);
    return 1;
  }
  if ((rc = drain_new(&v.d, v.loop, &v.cfg, v.env, v.commit, v.sns))) {
    fprintf(stderr, "drain_new: %d\n", rc);
    return 1;
  }
  drain_set_creds(v.d, v.creds);
  uv_timer_init(v.loop, &v.tick);
  v.tick.data = &v;
  uv_timer_start(&v.tick, on_tick, 20, 20);
  /* Commands only from a pipe: epoll refuses /dev/null and files. */
  if (uv_guess_handle(0) == UV_NAMED_PIPE && uv_pipe_init(v.loop, &v.in, 0) == 0) {
    if (uv_pipe_open(&v.in, 0) == 0) {
      v.in.data = &v;
      v.in_open = 1;
      uv_read_start((uv_stream_t *)&v.in, on_alloc, on_read);
    } else {
      uv_close((uv_handle_t *)&v.in, NULL);
    }
  }
  v.started = v.last_status = v.feed_started = mono_s();
  if (v.feeding && v.feed_rate <= 0) v.feed_rate = 1e9;
  drain_start(v.d);
  uv_run(v.loop, UV_RUN_DEFAULT);
  print_dlq(&v);
  int close_rc = uv_loop_close(v.loop);
  if (close_rc != 0) {
    fprintf(stderr, "loop did not close cleanly: %s\n", uv_strerror(close_rc));
    if (!v.exit_code) v.exit_code = 1;
  }
  if (v.closes != 3) {
    fprintf(stderr, "close callbacks: %u of 3\n", v.closes);
    if (!v.exit_code) v.exit_code = 1;
  }
  printf("{\"ev\":\"feed\",\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"submitted\":%zu}\n",
         v.feed_ok, v.feed_failed, v.feed_next);
  creds_provider_free(v.creds);
  rq_env_close(v.env);
  frames_free(&v.feed);
  free(v.feed_ops);
  return v.exit_code;
}

int main(int argc, char **argv) {
  if (argc >= 4 && !strcmp(argv[1], "fill")) return cmd_fill(argv[2], argv[3]);
  if (argc >= 5 && !strcmp(argv[1], "gen"))
    return cmd_gen(argv[2], strtol(argv[3], NULL, 10), argc - 4, argv + 4);
  if (argc >= 3 && !strcmp(argv[1], "run")) return cmd_run(argv[2], argc - 3, argv + 3);
  fprintf(stderr, "usage: drain_driver fill DIR FILE | run DIR --topic ARN --endpoint URL ...\n");
  return 2;
}
