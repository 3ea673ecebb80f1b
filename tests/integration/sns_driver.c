/* sns_driver: publishes Stream event files through the real SNS client
 * (relay/sns_client.c) on a libuv loop. Used by the SNS integration tests
 * (against fauxqs and tests/support/fault-sns.mjs) and by tools/bench-sns.sh.
 *
 *   sns_driver --endpoint URL --topic ARN [options] FILE...
 *     --batch N            entries per request (1 = Publish; default 1)
 *     --force-batch        PublishBatch even for one entry
 *     --concurrency C      requests in flight (default 1: publish order kept)
 *     --repeat K           send the whole file list K times (bench)
 *     --webhook-prefix P   webhook_id = P<index> (default "wh-"); "" = none
 *     --timeout-ms T / --connect-timeout-ms T / --max-connections M
 *     --close-after-ms T   close the client T ms after the start (cancel test)
 *     --duration-ms T      keep sending (rounds without end) for T ms (bench)
 *     --quiet              no per-entry lines, only the summary
 * Attributes come from the JSON the way the relay takes them (type, cid,
 * channel_type, channel_id, user.id or user_id, webhook_id); on a .fifo topic
 * MessageGroupId = cid (else type) and MessageDeduplicationId = webhook_id.
 * Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
 * else fixed dummy keys.
 *
 * Output, one JSON object a line: per entry {"kind":"entry","file","index",
 * "request","outcome","overall","code","message","message_id","http_status"};
 * an entry sns_publish() refused: {"kind":"refused","file","index","err"};
 * then {"kind":"summary","requests","messages","ok","failed","refused",
 * "seconds","cancelled"}. Exit 0 when the run completed (whatever SNS
 * answered), 2 on usage/setup errors, 3 if the loop did not close cleanly.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "sns.h"

typedef struct {
  const char *path;
  char *body;
  size_t len;
  char *type, *cid, *channel_type, *channel_id, *user_id;
  char webhook_id[64];
} item;

typedef struct {
  uv_loop_t loop;
  sns_client *sns;
  item *items;
  sns_entry *entries; /* contiguous, entries[i] describes items[i] */
  size_t nitems;
  size_t batch;
  int force_batch;
  int concurrency, inflight;
  long repeat, round;
  size_t next; /* next item index in the current round */
  int quiet;
  uint64_t t0, t_end;
  long duration_ms;
  unsigned long requests, messages, ok, failed, refused, cancelled;
  uv_timer_t close_timer;
  int closing, closed;
} driver;

typedef struct {
  driver *d;
  size_t first, n;
  unsigned long req_no;
} req_ctx;

static char *jstr(json_object *o, const char *k) {
  json_object *v;
  if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  const char *s = json_object_get_string(v);
  return s && *s ? strdup(s) : NULL;
}

static int load_item(item *it, sns_entry *e, const char *path, size_t index, const char *wh_prefix,
                     int fifo) {
  FILE *f = fopen(path, "rb");
  if (!f) return -errno;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  it->body = malloc((size_t)sz + 1);
  if (!it->body || fread(it->body, 1, (size_t)sz, f) != (size_t)sz) {
    fclose(f);
    return -EIO;
  }
  fclose(f);
  it->body[sz] = '\0';
  it->len = (size_t)sz;
  it->path = path;
  json_object *o = json_tokener_parse(it->body);
  if (!o) return -EINVAL;
  it->type = jstr(o, "type");
  it->cid = jstr(o, "cid");
  it->channel_type = jstr(o, "channel_type");
  it->channel_id = jstr(o, "channel_id");
  json_object *u;
  if (json_object_object_get_ex(o, "user", &u) && json_object_is_type(u, json_type_object))
    it->user_id = jstr(u, "id");
  if (!it->user_id) it->user_id = jstr(o, "user_id");
  json_object_put(o);
  if (*wh_prefix) snprintf(it->webhook_id, sizeof it->webhook_id, "%s%zu", wh_prefix, index);

  memset(e, 0, sizeof *e);
  e->message = (const uint8_t *)it->body;
  e->message_len = it->len;
  e->type = it->type;
  e->cid = it->cid;
  e->channel_type = it->channel_type;
  e->channel_id = it->channel_id;
  e->user_id = it->user_id;
  e->webhook_id = it->webhook_id[0] ? it->webhook_id : NULL;
  if (fifo) {
    e->group_id = it->cid ? it->cid : it->type;
    e->dedup_id = e->webhook_id;
  }
  return 0;
}

static void print_json(json_object *o) {
  puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put(o);
}

static void pump(driver *d);

static void finish_if_done(driver *d);

static void on_done(void *arg, const sns_result *results, size_t n, const sns_result *overall,
                    double duration_s) {
  req_ctx *r = arg;
  driver *d = r->d;
  (void)duration_s;
  d->inflight--;
  for (size_t i = 0; i < n; i++) {
    const sns_result *res = &results[i];
    if (res->outcome == SNS_OK)
      d->ok++;
    else
      d->failed++;
    if (strcmp(res->code, "Cancelled") == 0) d->cancelled++;
    if (d->quiet) continue;
    item *it = &d->items[r->first + i];
    json_object *o = json_object_new_object();
    json_object_object_add(o, "kind", json_object_new_string("entry"));
    json_object_object_add(o, "file", json_object_new_string(it->path));
    json_object_object_add(o, "index", json_object_new_int64((int64_t)(r->first + i)));
    json_object_object_add(o, "request", json_object_new_int64((int64_t)r->req_no));
    json_object_object_add(o, "batch", json_object_new_int64((int64_t)n));
    json_object_object_add(o, "outcome", json_object_new_string(sns_outcome_name(res->outcome)));
    json_object_object_add(o, "overall",
                           json_object_new_string(sns_outcome_name(overall->outcome)));
    json_object_object_add(o, "code", json_object_new_string(res->code));
    json_object_object_add(o, "message", json_object_new_string(res->message));
    json_object_object_add(o, "message_id", json_object_new_string(res->message_id));
    json_object_object_add(o, "http_status", json_object_new_int64(res->http_status));
    print_json(o);
  }
  free(r);
  d->t_end = uv_hrtime();
  if (!d->closing) pump(d);
  finish_if_done(d);
}

static void on_closed(void *arg) {
  driver *d = arg;
  d->closed = 1;
}

static void finish_if_done(driver *d) {
  if (d->inflight == 0 && (d->round >= d->repeat || d->closing) && !d->closed && d->sns) {
    sns_client *c = d->sns;
    d->sns = NULL;
    d->closing = 1;
    if (!uv_is_closing((uv_handle_t *)&d->close_timer))
      uv_close((uv_handle_t *)&d->close_timer, NULL);
    sns_client_close(c, on_closed, d);
  }
}

static void refuse(driver *d, size_t idx, int err) {
  d->refused++;
  json_object *o = json_object_new_object();
  json_object_object_add(o, "kind", json_object_new_string("refused"));
  json_object_object_add(o, "file", json_object_new_string(d->items[idx].path));
  json_object_object_add(o, "index", json_object_new_int64((int64_t)idx));
  json_object_object_add(o, "err", json_object_new_int(err));
  if (!d->quiet)
    print_json(o);
  else
    json_object_put(o);
}

/* Keeps `concurrency` requests in flight, walking the items round after
 * round. An entry too big for SNS is offered to sns_publish alone, which
 * must refuse it (-EINVAL): the refusal is reported, not hidden. */
static void pump(driver *d) {
  while (!d->closing && d->inflight < d->concurrency && d->round < d->repeat) {
    if (d->duration_ms > 0 && uv_hrtime() - d->t0 >= (uint64_t)d->duration_ms * 1000000u) {
      d->round = d->repeat;
      break;
    }
    if (d->next >= d->nitems) {
      d->next = 0;
      d->round++;
      continue;
    }
    size_t first = d->next;
    size_t k = sns_batch_fit(&d->entries[first], d->nitems - first, d->batch);
    if (k == 0) {
      int rc = sns_publish(d->sns, &d->entries[first], 1, d->force_batch, on_done, d);
      if (rc == 0) { /* must not happen: count it loudly */
        fprintf(stderr, "sns_driver: oversize entry accepted\n");
        exit(4);
      }
      refuse(d, first, rc);
      d->next++;
      continue;
    }
    req_ctx *r = calloc(1, sizeof *r);
    if (!r) exit(2);
    r->d = d;
    r->first = first;
    r->n = k;
    r->req_no = d->requests;
    int rc = sns_publish(d->sns, &d->entries[first], k, d->force_batch, on_done, r);
    if (rc < 0) {
      free(r);
      for (size_t i = 0; i < k; i++) refuse(d, first + i, rc);
      d->next += k;
      continue;
    }
    d->requests++;
    d->messages += k;
    d->inflight++;
    d->next += k;
  }
}

static void on_close_timer(uv_timer_t *t) {
  driver *d = t->data;
  if (d->sns && !d->closing) {
    sns_client *c = d->sns;
    d->sns = NULL;
    d->closing = 1;
    uv_close((uv_handle_t *)&d->close_timer, NULL);
    sns_client_close(c, on_closed, d);
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: sns_driver --endpoint URL --topic ARN [--batch N] [--force-batch] "
          "[--concurrency C] [--repeat K] [--webhook-prefix P] [--timeout-ms T] "
          "[--connect-timeout-ms T] [--max-connections M] [--close-after-ms T] "
          "[--duration-ms T] [--quiet] FILE...\n");
  exit(2);
}

int main(int argc, char **argv) {
  static driver d;
  const char *endpoint = NULL, *topic = NULL, *wh_prefix = "wh-";
  long timeout_ms = 0, connect_ms = 0, close_after = -1;
  int max_conn = 0;
  d.batch = 1;
  d.concurrency = 1;
  d.repeat = 1;
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NUM(x) (v ? strtol(v, NULL, 10) : (usage(), 0))
    if (strcmp(a, "--endpoint") == 0 && v)
      endpoint = v, i++;
    else if (strcmp(a, "--topic") == 0 && v)
      topic = v, i++;
    else if (strcmp(a, "--batch") == 0)
      d.batch = (size_t)NUM(v), i++;
    else if (strcmp(a, "--force-batch") == 0)
      d.force_batch = 1;
    else if (strcmp(a, "--concurrency") == 0)
      d.concurrency = (int)NUM(v), i++;
    else if (strcmp(a, "--repeat") == 0)
      d.repeat = NUM(v), i++;
    else if (strcmp(a, "--webhook-prefix") == 0 && v)
      wh_prefix = v, i++;
    else if (strcmp(a, "--timeout-ms") == 0)
      timeout_ms = NUM(v), i++;
    else if (strcmp(a, "--connect-timeout-ms") == 0)
      connect_ms = NUM(v), i++;
    else if (strcmp(a, "--max-connections") == 0)
      max_conn = (int)NUM(v), i++;
    else if (strcmp(a, "--close-after-ms") == 0)
      close_after = NUM(v), i++;
    else if (strcmp(a, "--quiet") == 0)
      d.quiet = 1;
    else if (strcmp(a, "--duration-ms") == 0)
      d.duration_ms = NUM(v), d.repeat = 1L << 40, i++;
    else if (a[0] == '-')
      usage();
    else
      break;
  }
  if (!endpoint || !topic || i >= argc || d.batch < 1 || d.concurrency < 1 || d.repeat < 1) usage();
  int fifo = strlen(topic) > 5 && strcmp(topic + strlen(topic) - 5, ".fifo") == 0;
  d.nitems = (size_t)(argc - i);
  d.items = calloc(d.nitems, sizeof *d.items);
  d.entries = calloc(d.nitems, sizeof *d.entries);
  if (!d.items || !d.entries) return 2;
  for (size_t k = 0; k < d.nitems; k++) {
    int rc = load_item(&d.items[k], &d.entries[k], argv[i + (int)k], k, wh_prefix, fifo);
    if (rc < 0) {
      fprintf(stderr, "sns_driver: cannot load %s: %s\n", argv[i + (int)k], strerror(-rc));
      return 2;
    }
  }

  aws_creds creds;
  memset(&creds, 0, sizeof creds);
  const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY"),
             *st = getenv("AWS_SESSION_TOKEN");
  snprintf(creds.access_key_id, sizeof creds.access_key_id, "%s", ak ? ak : "AKIDEXAMPLE");
  snprintf(creds.secret_access_key, sizeof creds.secret_access_key, "%s",
           sk ? sk : "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
  snprintf(creds.session_token, sizeof creds.session_token, "%s", st ? st : "");
  snprintf(creds.source, sizeof creds.source, "static");

  uv_loop_init(&d.loop);
  sns_client_options o = {.topic_arn = topic,
                          .endpoint = endpoint,
                          .static_creds = &creds,
                          .timeout_ms = timeout_ms,
                          .connect_timeout_ms = connect_ms,
                          .max_connections = max_conn};
  int rc = sns_client_new(&d.sns, &d.loop, &o);
  if (rc < 0) {
    fprintf(stderr, "sns_driver: sns_client_new: %s\n", strerror(-rc));
    return 2;
  }
  uv_timer_init(&d.loop, &d.close_timer);
  d.close_timer.data = &d;
  if (close_after >= 0)
    uv_timer_start(&d.close_timer, on_close_timer, (uint64_t)close_after, 0);
  else
    uv_unref((uv_handle_t *)&d.close_timer);

  d.t0 = d.t_end = uv_hrtime();
  pump(&d);
  finish_if_done(&d);
  uv_run(&d.loop, UV_RUN_DEFAULT);

  json_object *o2 = json_object_new_object();
  json_object_object_add(o2, "kind", json_object_new_string("summary"));
  json_object_object_add(o2, "requests", json_object_new_int64((int64_t)d.requests));
  json_object_object_add(o2, "messages", json_object_new_int64((int64_t)d.messages));
  json_object_object_add(o2, "ok", json_object_new_int64((int64_t)d.ok));
  json_object_object_add(o2, "failed", json_object_new_int64((int64_t)d.failed));
  json_object_object_add(o2, "refused", json_object_new_int64((int64_t)d.refused));
  json_object_object_add(o2, "cancelled", json_object_new_int64((int64_t)d.cancelled));
  json_object_object_add(o2, "seconds", json_object_new_double((double)(d.t_end - d.t0) / 1e9));
  print_json(o2);
  fflush(stdout);

  int clean = d.closed && uv_loop_close(&d.loop) == 0;
  for (size_t k = 0; k < d.nitems; k++) {
    item *it = &d.items[k];
    free(it->body);
    free(it->type);
    free(it->cid);
    free(it->channel_type);
    free(it->channel_id);
    free(it->user_id);
  }
  free(d.items);
  free(d.entries);
  if (!clean) {
    fprintf(stderr, "sns_driver: loop did not close cleanly\n");
    return 3;
  }
  return 0;
}
