/* The admin API (see admin.h). */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "drain.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"

#define ADMIN_MAX_BODY (1024 * 1024)
#define DLQ_LIST_DEFAULT 100
#define DLQ_LIST_MAX 1000
#define DLQ_CHANGE_PAGE 2000 /* DLQ entries replayed or purged per transaction */
/* How long /readyz stays 503 after a failed ingest commit: one default
 * Kubernetes probe period, so a replica whose commits keep failing stays
 * out, and one that recovered comes back within a probe or two. */
#define ADMIN_COMMIT_FAIL_HOLD_MS 10000

#ifndef RELAY_VERSION
#define RELAY_VERSION "0.0.0"
#endif

/* The DLQ count by reason needs a walk of the DLQ; it is cached and only
 * redone when the DLQ changed (its depth, bytes or the dead-letter total
 * moved), so frequent /v1/stats polls (relayctl stats --watch) stay cheap. */
typedef struct {
  uv_mutex_t lock;
  int valid;
  uint64_t dlq, dlq_bytes, dead_total;
  /* Kept as text: json-c's reference counts are not atomic, so no object
   * may be shared between pool threads and the loop thread. */
  char *by_reason;
} reason_cache;

struct admin {
  uv_loop_t *loop;
  http_server *server;
  rq_env *env;
  drain *drain;
  char blocked_reason[512]; /* while drain is NULL */
  char blocked_code[48];    /* its AWS-style code (NoCredentials unless set) */
  /* Monotonic ms of the last failed ingest commit (0: none since the last
   * stored event); /readyz is 503 for commit_fail_hold_ms after it. */
  _Atomic int64_t commit_failed_ms;
  uint64_t commit_fail_hold_ms;
  atomic_int stopping; /* relayd is shutting down: ingest takes nothing */
  char *token;
  unsigned jobs; /* thread-pool jobs not yet completed */
  int closing, server_closed;
  void (*done)(void *);
  void *done_arg;
  reason_cache cache;
  int64_t started_ms;
};

static int64_t mono_ms(void) {
  return (int64_t)(uv_hrtime() / 1000000);
}

/* Whether ingest's commits count as failing. Only for a while after the
 * last failure: a load balancer sends no webhooks to an unready replica, so
 * waiting for a stored event would keep it out of rotation even once the
 * disk has room again. After the hold /readyz says 200, traffic comes back,
 * and a commit that still fails makes it 503 again. */
static int commit_failing(admin *a) {
  int64_t t = atomic_load(&a->commit_failed_ms);
  return t != 0 && mono_ms() - t < (int64_t)a->commit_fail_hold_ms;
}

/* Why /readyz (and relay_ready) says not ready, given the watermark check's
 * result `over`; NULL when ready. */
static const char *not_ready_reason(admin *a, int over) {
  if (atomic_load(&a->stopping)) return "shutting down";
  if (over > 0) return "queue at its high watermark";
  if (over < 0) return rq_strerror(over);
  if (commit_failing(a)) return "commits are failing (disk full or I/O error)";
  return NULL;
}

static int64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* /v1/stats's queue part, with the DLQ count by reason from the cache when
 * the DLQ has not changed since it was made. Runs on a pool thread. */
static int queue_json(rq_env *env, int64_t now, json_object *obj, reason_cache *cache) {
  rq_stats st;
  int rc = rq_stat(env, &st);
  if (rc < 0) return rc;
  json_object *by = NULL;
  uv_mutex_lock(&cache->lock);
  if (cache->valid && cache->dlq == st.dlq && cache->dlq_bytes == st.dlq_bytes &&
      cache->dead_total == st.dead_lettered_total)
    by = json_tokener_parse(cache->by_reason);
  uv_mutex_unlock(&cache->lock);
  if (!by) {
    by = json_object_new_object();
    if (!by) return -ENOMEM;
    rc = admin_dlq_by_reason(env, by);
    if (rc < 0) {
      json_object_put(by);
      return rc;
    }
    char *text = strdup(json_object_to_json_string_ext(by, JSON_C_TO_STRING_PLAIN));
    uv_mutex_lock(&cache->lock);
    free(cache->by_reason);
    cache->by_reason = text;
    cache->dlq = st.dlq;
    cache->dlq_bytes = st.dlq_bytes;
    cache->dead_total = st.dead_lettered_total;
    cache->valid = text != NULL;
    uv_mutex_unlock(&cache->lock);
  }
  admin_queue_json(now, &st, by, obj);
  return 0;
}

/* ---- Answers ---------------------------------------------------------------- */

static void reply_json(http_request *req, int status, json_object *o) {
  size_t len = 0;
  const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
  /* A trailing newline makes curl and shells print it nicely. */
  char *buf = malloc(len + 2);
  if (!buf) {
    http_respond(req, 500, "application/json", NULL, "{\"error\":\"out of memory\"}\n", 26);
  } else {
    memcpy(buf, s, len);
    buf[len] = '\n';
    http_respond(req, status, "application/json", NULL, buf, len + 1);
    free(buf);
  }
  json_object_put(o);
}

static void reply_error(http_request *req, int status, const char *msg) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "error", json_object_new_string(msg));
  reply_json(req, status, o);
}

static void reply_rq_error(http_request *req, int rc) {
  if (rc == RQ_NOTFOUND)
    reply_error(req, 404, "no such DLQ entry");
  else if (rc == RQ_MAP_FULL)
    reply_error(req, 507, rq_strerror(rc));
  else
    reply_error(req, 500, rq_strerror(rc));
}

/* ---- Query strings ------------------------------------------------------------ */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Finds `key` in an x-www-form-urlencoded query and decodes its value into
 * out. 1 found, 0 absent, -EINVAL when malformed or too long. */
static int query_get(const char *q, const char *key, char *out, size_t outlen) {
  size_t klen = strlen(key);
  const char *p = q;
  while (p && *p) {
    const char *amp = strchr(p, '&');
    const char *end = amp ? amp : p + strlen(p);
    if ((size_t)(end - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
      size_t n = 0;
      for (const char *s = p + klen + 1; s < end; s++) {
        char c = *s;
        if (c == '+')
          c = ' ';
        else if (c == '%') {
          if (end - s < 3) return -EINVAL;
          int hi = hexval(s[1]), lo = hexval(s[2]);
          if (hi < 0 || lo < 0 || (hi | lo) == 0) return -EINVAL; /* no %00 */
          c = (char)(hi * 16 + lo);
          s += 2;
        }
        if (n + 1 >= outlen) return -EINVAL;
        out[n++] = c;
      }
      out[n] = '\0';
      return 1;
    }
    p = amp ? amp + 1 : NULL;
  }
  return 0;
}

/* ---- Thread-pool jobs ------------------------------------------------------------ */

typedef enum { JOB_METRICS, JOB_STATS, JOB_DLQ_LIST, JOB_DLQ_GET, JOB_REPLAY, JOB_PURGE } job_kind;

typedef struct {
  uv_work_t work;
  admin *a;
  http_request *req;
  job_kind kind;
  int64_t now;
  /* inputs */
  rq_dlq_filter f;
  char reason[64], type[128];
  int has_reason, has_type, all;
  uint64_t id;
  uint64_t *ids;
  size_t nids;
  /* outputs */
  int rc;
  rq_stats st;
  int over;
  json_object *obj;
  rq_record *recs;
  int nrecs;
  rq_record rec;
  int have_rec;
  size_t moved, missing;
  size_t page; /* GET /v1/dlq: entries to answer (f.limit is one more) */
  /* Metrics and stats: the drainer's status, read on the loop thread when
   * the request arrived. Never read it after the pool hop: on SIGTERM
   * relayd frees the drainer before it closes the admin API, so a job still
   * counting a large DLQ would read freed memory when it answers. */
  int have_ds;
  drain_status ds;
} job;

/* {"all":true} in pages, each its own write transaction: in one, a DLQ of
 * 100,000 entries held LMDB's writer lock for 0.9 s, and every ingest
 * commit (2xx answers) waited behind it. Progress of earlier pages stays
 * if a later one fails. At most the DLQ's size at the start is moved, so
 * events the drainer dead-letters meanwhile (a replayed event refused
 * again gets a new id) cannot keep the loop going. */
static int dlq_change_all(rq_env *env, job *j, int replay) {
  rq_stats st;
  int rc = rq_stat(env, &st);
  if (rc) return rc;
  size_t want = (size_t)st.dlq;
  if (j->f.limit && j->f.limit < want) want = j->f.limit;
  j->moved = 0;
  while (j->moved < want) {
    rq_dlq_filter f = j->f;
    f.limit = want - j->moved < DLQ_CHANGE_PAGE ? want - j->moved : DLQ_CHANGE_PAGE;
    size_t n = 0;
    rc = replay ? rq_dlq_replay(env, NULL, 0, &f, &n, NULL)
                : rq_dlq_purge(env, NULL, 0, &f, &n, NULL);
    if (rc) return rc;
    j->moved += n;
    if (n < f.limit) break; /* nothing more matches */
  }
  return 0;
}

static void job_run(uv_work_t *w) {
  job *j = w->data;
  rq_env *env = j->a->env;
  if (j->has_reason) j->f.reason = j->reason;
  if (j->has_type) j->f.type = j->type;
  switch (j->kind) {
    case JOB_METRICS:
      j->rc = rq_stat(env, &j->st);
      j->over = rq_over_watermark(env);
      break;
    case JOB_STATS:
      j->obj = json_object_new_object();
      j->rc = queue_json(env, j->now, j->obj, &j->a->cache);
      j->over = rq_over_watermark(env);
      break;
    case JOB_DLQ_LIST:
      j->nrecs = rq_dlq_list_meta(env, &j->f, &j->recs); /* no bodies in lists */
      j->rc = j->nrecs < 0 ? j->nrecs : 0;
      break;
    case JOB_DLQ_GET:
      j->rc = rq_dlq_get(env, j->id, &j->rec);
      j->have_rec = j->rc == 0;
      break;
    case JOB_REPLAY:
    case JOB_PURGE:
      if (j->all) {
        j->rc = dlq_change_all(env, j, j->kind == JOB_REPLAY);
      } else if (j->kind == JOB_REPLAY) {
        j->rc = rq_dlq_replay(env, j->ids, j->nids, &j->f, &j->moved, &j->missing);
      } else {
        j->rc = rq_dlq_purge(env, j->ids, j->nids, &j->f, &j->moved, &j->missing);
      }
      break;
  }
}

static void finish_close(admin *a);

static void drainer_json(const job *j, json_object *o) {
  admin *a = j->a;
  if (!j->have_ds) {
    /* Not publishing yet (no credentials): events stay queued, which is
     * what "blocked" means to an operator. */
    json_object_object_add(o, "drainer", json_object_new_string("blocked"));
    if (a->blocked_reason[0]) {
      char buf[600];
      snprintf(buf, sizeof buf, "%s: %s", a->blocked_code, a->blocked_reason);
      admin_json_str(o, "last_error", buf);
      admin_json_str(o, "last_error_code", a->blocked_code);
    } else {
      json_object_object_add(o, "last_error", NULL);
    }
    return;
  }
  const drain_status ds = j->ds;
  json_object_object_add(o, "drainer", json_object_new_string(drain_state_name(ds.state)));
  json_object_object_add(o, "paused", json_object_new_boolean(ds.operator_paused));
  if (ds.last_error.code[0] || ds.last_error.message[0]) {
    char buf[600];
    if (ds.last_error.message[0])
      snprintf(buf, sizeof buf, "%s: %s", ds.last_error.code, ds.last_error.message);
    else
      snprintf(buf, sizeof buf, "%s", ds.last_error.code);
    admin_json_str(o, "last_error", buf);
    admin_json_str(o, "last_error_code", ds.last_error.code);
    admin_json_time(o, "last_error_at", ds.last_error.at_ms);
  } else {
    json_object_object_add(o, "last_error", NULL);
    json_object_object_add(o, "last_error_code", NULL);
    json_object_object_add(o, "last_error_at", NULL);
  }
  admin_json_time(o, "backoff_until", ds.backoff_until_ms);
  admin_json_double(o, "publish_rate", (ds.publish_rate));
  admin_json_u64(o, "concurrency", ds.concurrency);
  admin_json_u64(o, "max_concurrency", ds.max_concurrency);
  admin_json_u64(o, "inflight_requests", ds.inflight_requests);
  admin_json_u64(o, "drainer_published_total", ds.published_total);
  admin_json_u64(o, "retried_total", ds.retried_total);
  admin_json_u64(o, "throttled_total", ds.throttled_total);
  admin_json_u64(o, "failed_attempts_total", ds.failed_total);
  admin_json_u64(o, "sns_requests_total", ds.requests_total);
}

static void answer_metrics(job *j) {
  admin *a = j->a;
  metrics_scrape s;
  memset(&s, 0, sizeof s);
  if (j->rc == 0) {
    s.have_queue = 1;
    s.queue_depth = j->st.ready;
    s.queue_bytes = j->st.ready_bytes;
    s.inflight = j->st.inflight;
    s.dlq_depth = j->st.dlq;
    s.dlq_bytes = j->st.dlq_bytes;
    s.oldest_age_s = j->st.oldest_ready_ms > 0 && j->now > j->st.oldest_ready_ms
                         ? (double)(j->now - j->st.oldest_ready_ms) / 1000.0
                         : 0.0;
    s.appended_total = j->st.appended_total;
    s.acked_total = j->st.acked_total;
    s.dead_lettered_total = j->st.dead_lettered_total;
    s.duplicates_total = j->st.duplicates_total;
    s.map_used = j->st.map_used;
    s.map_size = j->st.map_size;
  }
  s.ready = j->rc == 0 && !not_ready_reason(a, j->over);
  if (j->have_ds) {
    const drain_status ds = j->ds;
    s.drainer_state = drain_state_name(ds.state);
    s.concurrency = ds.concurrency;
    s.concurrency_max = ds.max_concurrency;
    s.requests_in_flight = ds.inflight_requests;
  } else {
    s.drainer_state = "blocked"; /* no credentials yet; see drainer_json() */
  }
  char *text = NULL;
  size_t len = 0;
  if (metrics_render(&s, &text, &len) < 0) {
    reply_error(j->req, 500, "out of memory");
    return;
  }
  http_respond(j->req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
  free(text);
}

static void answer_stats(job *j) {
  if (j->rc < 0) {
    reply_rq_error(j->req, j->rc);
    return;
  }
  json_object *o = j->obj;
  j->obj = NULL;
  json_object_object_add(o, "source", json_object_new_string("relayd"));
  json_object_object_add(o, "over_watermark", json_object_new_boolean(j->over == 1));
  drainer_json(j, o);
  if (!j->have_ds) admin_json_double(o, "publish_rate", (metrics_publish_rate(10)));
  admin_json_double(o, "receive_rate", (metrics_receive_rate(10)));
  metrics_totals mt;
  metrics_get_totals(&mt);
  admin_json_u64(o, "process_received_total", mt.received);
  admin_json_u64(o, "process_rejected_total", mt.rejected);
  admin_json_double(o, "uptime_s", ((double)(j->now - j->a->started_ms) / 1000.0));
  json_object_object_add(o, "version", json_object_new_string(RELAY_VERSION));
  reply_json(j->req, 200, o);
}

static void answer_list(job *j) {
  if (j->rc < 0) {
    reply_rq_error(j->req, j->rc);
    return;
  }
  json_object *o = json_object_new_object();
  json_object *arr = json_object_new_array();
  size_t n = (size_t)j->nrecs > j->page ? j->page : (size_t)j->nrecs;
  for (size_t i = 0; i < n; i++) json_object_array_add(arr, admin_record_json(&j->recs[i], 0));
  json_object_object_add(o, "entries", arr);
  if ((size_t)j->nrecs > n && n > 0)
    admin_json_u64(o, "next_after", j->recs[n - 1].seq);
  else
    json_object_object_add(o, "next_after", NULL);
  reply_json(j->req, 200, o);
}

static void job_done(uv_work_t *w, int status) {
  job *j = w->data;
  admin *a = j->a;
  if (status < 0) {
    reply_error(j->req, 500, uv_strerror(status));
  } else {
    switch (j->kind) {
      case JOB_METRICS:
        answer_metrics(j);
        break;
      case JOB_STATS:
        answer_stats(j);
        break;
      case JOB_DLQ_LIST:
        answer_list(j);
        break;
      case JOB_DLQ_GET:
        if (j->rc < 0)
          reply_rq_error(j->req, j->rc);
        else
          reply_json(j->req, 200, admin_record_json(&j->rec, 1));
        break;
      case JOB_REPLAY:
      case JOB_PURGE:
        if (j->rc < 0) {
          reply_rq_error(j->req, j->rc);
        } else {
          char n1[24], n2[24];
          snprintf(n1, sizeof n1, "%zu", j->moved);
          snprintf(n2, sizeof n2, "%zu", j->missing);
          int replay = j->kind == JOB_REPLAY;
          rlog(LOG_INFO, replay ? "dlq replayed" : "dlq purged", replay ? "#replayed" : "#purged",
               n1, "#missing", n2, NULL);
          /* Not once stopping: relayd frees the drainer before it closes
           * this API, and the events are published after the restart. */
          if (replay && j->moved && a->drain && !atomic_load(&a->stopping)) drain_kick(a->drain);
          json_object *o = json_object_new_object();
          admin_json_u64(o, replay ? "replayed" : "purged", j->moved);
          admin_json_u64(o, "missing", j->missing);
          reply_json(j->req, 200, o);
        }
        break;
    }
  }
  json_object_put(j->obj);
  if (j->recs) rq_records_free(j->recs, (size_t)j->nrecs);
  if (j->have_rec) rq_record_free(&j->rec);
  free(j->ids);
  free(j);
  a->jobs--;
  if (a->closing) finish_close(a);
}

static job *job_new(admin *a, http_request *req, job_kind kind) {
  job *j = calloc(1, sizeof *j);
  if (!j) {
    reply_error(req, 500, "out of memory");
    return NULL;
  }
  j->a = a;
  j->req = req;
  j->kind = kind;
  j->now = now_ms();
  j->work.data = j;
  if ((kind == JOB_METRICS || kind == JOB_STATS) && a->drain) {
    drain_get_status(a->drain, &j->ds);
    j->have_ds = 1;
  }
  return j;
}

static void job_start(job *j) {
  int rc = uv_queue_work(j->a->loop, &j->work, job_run, job_done);
  if (rc < 0) {
    reply_error(j->req, 500, uv_strerror(rc));
    free(j->ids);
    free(j);
    return;
  }
  j->a->jobs++;
}

/* ---- Routes ------------------------------------------------------------------------ */

/* The filter fields shared by GET /v1/dlq (query) and replay/purge (JSON). */
static int set_filter_str(char *dst, size_t cap, const char *v, int *flag) {
  size_t n = strlen(v);
  if (n >= cap) return -EINVAL;
  memcpy(dst, v, n + 1);
  *flag = n > 0;
  return 0;
}

static void route_dlq_list(admin *a, http_request *req) {
  job *j = job_new(a, req, JOB_DLQ_LIST);
  if (!j) return;
  char val[128];
  const char *bad = NULL;
  int rc;
  if ((rc = query_get(req->query, "reason", val, sizeof val)) < 0 ||
      (rc > 0 && set_filter_str(j->reason, sizeof j->reason, val, &j->has_reason) < 0))
    bad = "bad reason";
  if (!bad && ((rc = query_get(req->query, "type", val, sizeof val)) < 0 ||
               (rc > 0 && set_filter_str(j->type, sizeof j->type, val, &j->has_type) < 0)))
    bad = "bad type";
  /* An empty value ("?limit=&after=") means not given, as for reason and
   * type: scripts fill these from variables that may be empty. */
  uint64_t v = DLQ_LIST_DEFAULT;
  if (!bad && ((rc = query_get(req->query, "limit", val, sizeof val)) < 0 ||
               (rc > 0 && *val && (admin_parse_u64(val, &v) < 0 || v == 0 || v > DLQ_LIST_MAX))))
    bad = "bad limit (1..1000)";
  /* One more than asked: whether it comes back tells if there is a next
   * page, so next_after is null on the last page. */
  j->page = (size_t)v;
  j->f.limit = (size_t)v + 1;
  v = 0;
  if (!bad && ((rc = query_get(req->query, "after", val, sizeof val)) < 0 ||
               (rc > 0 && *val && admin_parse_u64(val, &v) < 0)))
    bad = "bad after (an entry id)";
  j->f.after_seq = v;
  if (bad) {
    free(j);
    reply_error(req, 400, bad);
    return;
  }
  job_start(j);
}

/* {"all":true} | {"ids":[...]}, plus "reason", "type", "limit". */
static void route_dlq_change(admin *a, http_request *req, job_kind kind) {
  json_tokener *tok = json_tokener_new();
  json_object *body = NULL;
  if (tok) {
    body = json_tokener_parse_ex(tok, (const char *)req->body, (int)req->body_len);
    if (json_tokener_get_error(tok) != json_tokener_success) body = NULL;
    json_tokener_free(tok);
  }
  if (!body || !json_object_is_type(body, json_type_object)) {
    json_object_put(body);
    reply_error(req, 400, "body must be a JSON object: {\"all\":true} or {\"ids\":[...]}");
    return;
  }
  job *j = job_new(a, req, kind);
  if (!j) {
    json_object_put(body);
    return;
  }
  const char *bad = NULL;
  json_object *v;
  if (json_object_object_get_ex(body, "all", &v)) {
    if (!json_object_is_type(v, json_type_boolean))
      bad = "\"all\" must be a boolean";
    else
      j->all = json_object_get_boolean(v);
  }
  int has_ids = json_object_object_get_ex(body, "ids", &v);
  if (!bad && has_ids) {
    if (!json_object_is_type(v, json_type_array)) {
      bad = "\"ids\" must be an array of entry ids";
    } else {
      size_t n = json_object_array_length(v);
      j->ids = calloc(n ? n : 1, sizeof *j->ids);
      if (!j->ids) bad = "out of memory";
      for (size_t i = 0; !bad && i < n; i++) {
        json_object *e = json_object_array_get_idx(v, i);
        int64_t id = 0;
        if (json_object_is_type(e, json_type_int))
          id = json_object_get_int64(e);
        else if (json_object_is_type(e, json_type_string)) {
          uint64_t u;
          if (admin_parse_u64(json_object_get_string(e), &u) == 0) id = (int64_t)u;
        }
        if (id <= 0)
          bad = "\"ids\" must be an array of entry ids";
        else
          j->ids[j->nids++] = (uint64_t)id;
      }
    }
  }
  if (!bad && j->all == has_ids) bad = "give either \"all\":true or \"ids\":[...]";
  if (!bad && has_ids && j->nids == 0) bad = "\"ids\" is empty";
  /* An empty filter is refused, not read as "any": {"all":true,
   * "reason":""} from an unset variable would otherwise purge everything. */
  if (!bad && json_object_object_get_ex(body, "reason", &v) && v) {
    if (!json_object_is_type(v, json_type_string) ||
        set_filter_str(j->reason, sizeof j->reason, json_object_get_string(v), &j->has_reason) < 0)
      bad = "bad reason";
    else if (!j->has_reason)
      bad = "bad reason (empty)";
  }
  if (!bad && json_object_object_get_ex(body, "type", &v) && v) {
    if (!json_object_is_type(v, json_type_string) ||
        set_filter_str(j->type, sizeof j->type, json_object_get_string(v), &j->has_type) < 0)
      bad = "bad type";
    else if (!j->has_type)
      bad = "bad type (empty)";
  }
  if (!bad && json_object_object_get_ex(body, "limit", &v) && v) {
    int64_t l = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
    if (l < 0)
      bad = "bad limit";
    else
      j->f.limit = (size_t)l;
  }
  json_object_put(body);
  if (bad) {
    free(j->ids);
    free(j);
    reply_error(req, 400, bad);
    return;
  }
  job_start(j);
}

static void test_sns_done(void *arg, int err, const sns_result *res) {
  http_request *req = arg;
  json_object *o = json_object_new_object();
  if (err == 0 && res && res->outcome == SNS_OK) {
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    admin_json_str(o, "message_id", res->message_id);
    reply_json(req, 200, o);
    return;
  }
  const char *code = res && res->code[0] ? res->code : (err < 0 ? uv_err_name(err) : "Unknown");
  const char *msg = res && res->message[0] ? res->message : (err < 0 ? uv_strerror(err) : "");
  char buf[700];
  snprintf(buf, sizeof buf, "%s%s%s", code, *msg ? ": " : "", msg);
  json_object_object_add(o, "ok", json_object_new_boolean(0));
  admin_json_str(o, "error", buf);
  admin_json_str(o, "code", code);
  admin_json_str(o, "message", msg);
  if (res) {
    json_object_object_add(o, "outcome", json_object_new_string(sns_outcome_name(res->outcome)));
    json_object_object_add(o, "http_status", json_object_new_int64(res->http_status));
  }
  reply_json(req, 502, o);
}

/* The drainer does not exist yet (no AWS credentials, or publishing could
 * not start): say why, with the code stats shows, since test-sns is what
 * an operator runs to find out. */
static void reply_not_publishing(admin *a, http_request *req, int test_sns) {
  const char *code = a->blocked_code;
  char buf[700];
  if (a->blocked_reason[0])
    snprintf(buf, sizeof buf, "publishing is not running: %s: %s", code, a->blocked_reason);
  else
    snprintf(buf, sizeof buf, "publishing is not running");
  json_object *o = json_object_new_object();
  if (test_sns) json_object_object_add(o, "ok", json_object_new_boolean(0));
  admin_json_str(o, "error", buf);
  if (test_sns && a->blocked_reason[0]) {
    admin_json_str(o, "code", code);
    admin_json_str(o, "message", a->blocked_reason);
  }
  reply_json(req, 503, o);
}

/* Constant time in the token's content; hashing first also hides its
 * length. */
static int token_ok(const admin *a, const http_request *req) {
  const char *h = http_request_header(req, "Authorization");
  if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
  const char *given = h + 7;
  while (*given == ' ') given++;
  unsigned char d1[SHA256_DIGEST_LENGTH], d2[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)given, strlen(given), d1);
  SHA256((const unsigned char *)a->token, strlen(a->token), d2);
  return CRYPTO_memcmp(d1, d2, sizeof d1) == 0;
}

static void on_request(http_request *req, void *arg) {
  admin *a = arg;
  const char *p = req->path;
  /* HEAD wherever GET works (RFC 9110): uptime monitors probe with it. The
   * server sends the GET answer's status and headers without the body. */
  int get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
  int post = strcmp(req->method, "POST") == 0;

  if (strcmp(p, "/healthz") == 0) {
    if (!get)
      reply_error(req, 405, "method not allowed");
    else
      http_respond(req, 200, "application/json", NULL, "{\"ok\":true}\n", 12);
    return;
  }
  if (strcmp(p, "/readyz") == 0) {
    if (!get) {
      reply_error(req, 405, "method not allowed");
      return;
    }
    const char *why = not_ready_reason(a, rq_over_watermark(a->env));
    if (!why)
      http_respond(req, 200, "application/json", NULL, "{\"ready\":true}\n", 15);
    else {
      json_object *o = json_object_new_object();
      json_object_object_add(o, "ready", json_object_new_boolean(0));
      json_object_object_add(o, "error", json_object_new_string(why));
      reply_json(req, 503, o);
    }
    return;
  }
  if (a->token && !token_ok(a, req)) {
    reply_error(req, 401,
                http_request_header(req, "Authorization")
                    ? "wrong admin token"
                    : "admin token required (Authorization: Bearer)");
    return;
  }

  job_kind kind;
  if (strcmp(p, "/metrics") == 0)
    kind = JOB_METRICS;
  else if (strcmp(p, "/v1/stats") == 0)
    kind = JOB_STATS;
  else if (strcmp(p, "/v1/dlq") == 0)
    kind = JOB_DLQ_LIST;
  else if (strncmp(p, "/v1/dlq/", 8) == 0 && strcmp(p, "/v1/dlq/replay") != 0 &&
           strcmp(p, "/v1/dlq/purge") != 0)
    kind = JOB_DLQ_GET;
  else {
    int is_post_route = strcmp(p, "/v1/dlq/replay") == 0 || strcmp(p, "/v1/dlq/purge") == 0 ||
                        strcmp(p, "/v1/test-sns") == 0 || strcmp(p, "/v1/pause") == 0 ||
                        strcmp(p, "/v1/resume") == 0;
    if (!is_post_route) {
      reply_error(req, 404, "no such endpoint");
      return;
    }
    if (!post) {
      reply_error(req, 405, "method not allowed (use POST)");
      return;
    }
    if (strcmp(p, "/v1/dlq/replay") == 0) {
      route_dlq_change(a, req, JOB_REPLAY);
      return;
    }
    if (strcmp(p, "/v1/dlq/purge") == 0) {
      route_dlq_change(a, req, JOB_PURGE);
      return;
    }
    if (!a->drain) {
      reply_not_publishing(a, req, strcmp(p, "/v1/test-sns") == 0);
      return;
    }
    if (strcmp(p, "/v1/test-sns") == 0) {
      int rc = drain_test_sns(a->drain, test_sns_done, req);
      if (rc < 0) reply_error(req, 503, uv_strerror(rc));
      return;
    }
    int pause = strcmp(p, "/v1/pause") == 0;
    if (pause)
      drain_pause(a->drain);
    else
      drain_resume(a->drain);
    drain_status ds;
    drain_get_status(a->drain, &ds);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "drainer", json_object_new_string(drain_state_name(ds.state)));
    json_object_object_add(o, "paused", json_object_new_boolean(ds.operator_paused));
    reply_json(req, 200, o);
    return;
  }
  if (!get) {
    reply_error(req, 405, "method not allowed (use GET)");
    return;
  }
  if (kind == JOB_DLQ_LIST) {
    route_dlq_list(a, req);
    return;
  }
  job *j = job_new(a, req, kind);
  if (!j) return;
  if (kind == JOB_DLQ_GET && (admin_parse_u64(p + 8, &j->id) < 0 || j->id == 0)) {
    free(j);
    reply_error(req, 404, "no such DLQ entry (ids are positive integers)");
    return;
  }
  job_start(j);
}

/* ---- Life cycle ---------------------------------------------------------------------- */

int admin_new(admin **out, uv_loop_t *loop, const admin_options *o) {
  if (!o || !o->env || !o->listen) return -EINVAL;
  admin *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->loop = loop;
  a->env = o->env;
  a->drain = o->drain;
  a->started_ms = now_ms();
  a->commit_fail_hold_ms =
      o->commit_fail_hold_ms ? o->commit_fail_hold_ms : ADMIN_COMMIT_FAIL_HOLD_MS;
  if (o->token && *o->token && !(a->token = strdup(o->token))) {
    free(a);
    return -ENOMEM;
  }
  int rc = uv_mutex_init(&a->cache.lock);
  if (rc < 0) {
    free(a->token);
    free(a);
    return rc;
  }
  http_server_options so;
  memset(&so, 0, sizeof so);
  so.name = "admin";
  so.on_request = on_request;
  so.arg = a;
  so.max_connections = o->max_connections ? o->max_connections : 64;
  so.max_body_bytes = ADMIN_MAX_BODY;
  rc = http_server_new(&a->server, loop, &so);
  struct sockaddr_storage ss;
  if (rc == 0) rc = cfg_parse_listen(o->listen, &ss);
  if (rc == 0) rc = http_server_listen(a->server, (const struct sockaddr *)&ss);
  if (rc < 0) {
    if (a->server) {
      /* Not listening, no connections: closing it is immediate enough, but
       * it still needs the loop to run its close callbacks. */
      http_server_close(a->server, 0, NULL, NULL);
    }
    uv_mutex_destroy(&a->cache.lock);
    free(a->token);
    free(a);
    return rc;
  }
  char port[16];
  snprintf(port, sizeof port, "%d", http_server_port(a->server));
  rlog(LOG_INFO, "admin listening", "addr", o->listen, "#port", port, "auth",
       a->token ? "bearer" : "none", NULL);
  *out = a;
  return 0;
}

int admin_port(const admin *a) {
  return http_server_port(a->server);
}

static void finish_close(admin *a) {
  if (!a->server_closed || a->jobs > 0) return;
  void (*done)(void *) = a->done;
  void *arg = a->done_arg;
  free(a->cache.by_reason);
  uv_mutex_destroy(&a->cache.lock);
  free(a->token);
  free(a);
  if (done) done(arg);
}

static void server_closed(void *arg) {
  admin *a = arg;
  a->server_closed = 1;
  finish_close(a);
}

void admin_close(admin *a, void (*done)(void *arg), void *arg) {
  a->closing = 1;
  a->done = done;
  a->done_arg = arg;
  http_server_close(a->server, 5000, server_closed, a);
}

void admin_set_drain(admin *a, drain *d) {
  a->drain = d;
  if (d) a->blocked_reason[0] = '\0';
}

void admin_set_blocked_reason(admin *a, const char *reason) {
  admin_set_blocked(a, NULL, reason);
}

void admin_set_blocked(admin *a, const char *code, const char *reason) {
  snprintf(a->blocked_code, sizeof a->blocked_code, "%s", code && *code ? code : "NoCredentials");
  snprintf(a->blocked_reason, sizeof a->blocked_reason, "%s", reason ? reason : "");
}

void admin_set_commit_failing(admin *a, int failing) {
  int64_t t = mono_ms();
  atomic_store(&a->commit_failed_ms, failing ? (t > 0 ? t : 1) : 0);
}

void admin_set_stopping(admin *a) {
  atomic_store(&a->stopping, 1);
}
