/* relayctl: inspect and operate a running relayd through its admin API, or
 * read a data directory directly (--data-dir, read-only).
 *
 * Exit codes (SPEC): 0 ok, 1 failed, 2 usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "relayctl.h"
#include "rq.h"

#ifndef RELAY_VERSION
#define RELAY_VERSION "0.0.0"
#endif

#define REPLAY_CHUNK 200
#define LIST_PAGE 1000

static const char usage_main[] =
    "usage: relayctl [--admin URL] [--token T] COMMAND [options]\n"
    "       relayctl --data-dir DIR stats|dlq list|dlq show ...\n"
    "\n"
    "Commands:\n"
    "  stats [--json] [--watch] [--interval S]   queue, DLQ and drainer summary\n"
    "  dlq list [--json] [--reason R] [--type T] [--limit N] [--after ID]\n"
    "  dlq show ID [--json]                      one DLQ entry with its body\n"
    "  dlq replay (--all | ID...) [--reason R] [--type T] [--yes]\n"
    "  dlq purge (--all | ID...) [--reason R] [--type T] [--yes]\n"
    "  test-sns                                  publish one test event to the topic\n"
    "  pause | resume                            stop / restart publishing\n"
    "  version\n"
    "\n"
    "Global options:\n"
    "  --admin URL     admin API (default: RELAY_ADMIN_LISTEN, else http://127.0.0.1:8081)\n"
    "  --token T       bearer token (default: RELAY_ADMIN_TOKEN)\n"
    "  --data-dir DIR  read the LMDB queue in DIR directly, read-only (relayd running or not)\n"
    "  -h, --help      this text; `relayctl COMMAND --help` for one command\n"
    "\n"
    "Exit status: 0 ok, 1 failed, 2 usage error.\n";

static const char usage_stats[] =
    "usage: relayctl stats [--json] [--watch] [--interval S]\n"
    "  Shows ready events and bytes, the age of the oldest, the DLQ by reason,\n"
    "  publish rate, drainer state and last error.\n"
    "  --json         one JSON object (the fields of GET /v1/stats)\n"
    "  --watch        refresh in place every --interval seconds (default 2) until Ctrl-C\n";
static const char usage_list[] =
    "usage: relayctl dlq list [--json] [--reason R] [--type T] [--limit N] [--after ID]\n"
    "  Lists dead-lettered events: id, received time, type, cid, reason, attempts,\n"
    "  size and last error, oldest first.\n"
    "  --reason R     too_large, rejected, expired or corrupt\n"
    "  --type T       event type, e.g. message.new\n"
    "  --limit N      at most N entries (default 100, 0 = all)\n"
    "  --after ID     only entries with id > ID (paging)\n"
    "  --json         {\"entries\":[...]} instead of a table\n";
static const char usage_show[] =
    "usage: relayctl dlq show ID [--json]\n"
    "  Prints one DLQ entry and its body (pretty JSON on a terminal).\n";
static const char usage_replay[] =
    "usage: relayctl dlq replay (--all | ID...) [--reason R] [--type T] [--yes]\n"
    "  Moves DLQ entries back to the ready queue (tail) so the drainer publishes\n"
    "  them again. --all takes every entry matching --reason/--type; on a terminal\n"
    "  it asks for confirmation (skip with --yes) and shows progress. With IDs,\n"
    "  --reason/--type leave the given entries that do not match alone.\n";
static const char usage_purge[] =
    "usage: relayctl dlq purge (--all | ID...) [--reason R] [--type T] [--yes]\n"
    "  Deletes DLQ entries for good. --all takes every entry matching\n"
    "  --reason/--type; on a terminal it asks for confirmation (skip with --yes).\n"
    "  With IDs, --reason/--type leave the given entries that do not match alone.\n";
static const char usage_test_sns[] =
    "usage: relayctl test-sns\n"
    "  Publishes one test event ({\"type\":\"relay.test\"}) to the configured topic\n"
    "  and prints the MessageId, or the AWS error code and message (exit 1).\n";
static const char usage_pause[] =
    "usage: relayctl pause | resume\n"
    "  pause: the drainer stops taking new events (ingest continues, events queue up).\n"
    "  resume: publishing starts again, cutting short any backoff.\n";
static const char usage_version[] = "usage: relayctl version\n";

typedef struct {
  ctl_client client;
  const char *data_dir;
  char **args; /* the command and its arguments, global options removed */
  int nargs;
} ctl;

static int usage_error(const char *usage, const char *fmt, const char *arg) {
  fputs("relayctl: ", stderr);
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  fputs(usage, stderr);
  return CTL_USAGE;
}

static int want_help(int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
  return 0;
}

/* ---- Offline mode ---------------------------------------------------------- */

static int64_t wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int open_dir(const ctl *c, rq_env **env) {
  rq_options o;
  memset(&o, 0, sizeof o);
  o.flags = RQ_OPEN_READONLY;
  int rc = rq_env_open(env, c->data_dir, &o);
  if (rc < 0) {
    fprintf(stderr, "relayctl: cannot open the queue in %s: %s\n", c->data_dir, rq_strerror(rc));
    return CTL_FAILED;
  }
  return 0;
}

static int offline_stats(const ctl *c, json_object **out) {
  rq_env *env;
  if (open_dir(c, &env)) return CTL_FAILED;
  rq_stats st;
  json_object *by = json_object_new_object();
  int rc = rq_stat(env, &st);
  if (rc == 0) rc = admin_dlq_by_reason(env, by);
  rq_env_close(env);
  if (rc < 0) {
    json_object_put(by);
    fprintf(stderr, "relayctl: reading %s: %s\n", c->data_dir, rq_strerror(rc));
    return CTL_FAILED;
  }
  json_object *o = json_object_new_object();
  admin_queue_json(wall_ms(), &st, by, o);
  json_object_object_add(o, "source", json_object_new_string("data-dir"));
  json_object_object_add(o, "drainer", NULL);
  json_object_object_add(o, "last_error", NULL);
  *out = o;
  return 0;
}

/* ---- Commands ------------------------------------------------------------------ */

/* --watch ends on SIGINT/SIGTERM after the frame being printed; during a
 * request it ends at once: a relayd that accepts but does not answer would
 * otherwise hold relayctl for the whole request timeout (120 s), and a
 * stats request has nothing to finish. */
static volatile sig_atomic_t interrupted, fetching;
static void on_sigint(int sig) {
  (void)sig;
  if (fetching) _exit(CTL_OK);
  interrupted = 1;
}

static int fetch_stats(const ctl *c, json_object **st) {
  if (c->data_dir) return offline_stats(c, st);
  return ctl_call(&c->client, "GET", "/v1/stats", NULL, st, NULL) == 0 ? 0 : CTL_FAILED;
}

static int cmd_stats(const ctl *c, int argc, char **argv) {
  int json = 0, watch = 0;
  double interval = 2;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (strcmp(argv[i], "--watch") == 0 || strcmp(argv[i], "-w") == 0)
      watch = 1;
    else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
      char *end;
      interval = strtod(argv[++i], &end);
      /* Written as "not in range" so that NaN, which compares false with
       * everything, is refused too (it made --watch loop without sleeping). */
      if (*end || end == argv[i] || !(interval >= 0.1 && interval <= 3600))
        return usage_error(usage_stats, "bad --interval: %s", argv[i]);
    } else
      return usage_error(usage_stats, "unknown option: %s", argv[i]);
  }
  const char *where = c->data_dir ? c->data_dir : c->client.base_url;
  if (!watch) {
    json_object *st;
    if (fetch_stats(c, &st)) return CTL_FAILED;
    if (json)
      puts(json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
    else
      ctl_print_stats(stdout, st, where);
    json_object_put(st);
    return CTL_OK;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int tty = isatty(STDOUT_FILENO);
  while (!interrupted) {
    json_object *st = NULL;
    fetching = 1;
    int rc = interrupted ? CTL_FAILED : fetch_stats(c, &st);
    fetching = 0;
    if (interrupted) {
      json_object_put(st);
      break;
    }
    if (tty && !json) fputs("\033[H\033[2J", stdout); /* home + clear: refresh in place */
    if (rc == 0) {
      if (json)
        puts(json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
      else {
        time_t now = time(NULL);
        char ts[32];
        strftime(ts, sizeof ts, "%H:%M:%S", localtime(&now));
        printf("every %.1fs, %s, Ctrl-C to stop\n", interval, ts);
        ctl_print_stats(stdout, st, where);
      }
      json_object_put(st);
    }
    fflush(stdout);
    struct timespec ts = {(time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9)};
    while (!interrupted && nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
  }
  return CTL_OK;
}

/* Parses --reason/--type/--limit/--after/--json/--all/--yes and ids; which
 * are allowed is up to the caller. */
typedef struct {
  int json, all, yes;
  const char *reason, *type;
  uint64_t limit, after;
  int has_limit;
  uint64_t *ids;
  size_t nids;
} dlq_args;

/* The DLQ reasons relayd writes (SPEC). */
static int known_reason(const char *r) {
  static const char *const reasons[] = {"too_large", "rejected", "expired", "corrupt"};
  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
    if (strcmp(r, reasons[i]) == 0) return 1;
  return 0;
}

static int parse_dlq_args(int argc, char **argv, const char *usage, int allow_ids, dlq_args *d) {
  memset(d, 0, sizeof *d);
  d->ids = calloc((size_t)argc + 1, sizeof *d->ids);
  if (!d->ids) return CTL_FAILED;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    int has_val = i + 1 < argc;
    if (strcmp(a, "--json") == 0)
      d->json = 1;
    else if (strcmp(a, "--all") == 0 && allow_ids)
      d->all = 1;
    else if ((strcmp(a, "--yes") == 0 || strcmp(a, "-y") == 0) && allow_ids)
      d->yes = 1;
    else if ((strcmp(a, "--reason") == 0 || strcmp(a, "--type") == 0) && has_val) {
      /* An empty value is an unset variable in a script, not "any": with
       * purge --all it would select the whole DLQ. */
      if (!*argv[i + 1]) return usage_error(usage, "empty value for %s", a);
      /* A misspelt reason would match nothing: an empty listing, or a
       * replay that "did nothing", with no hint why. */
      if (a[2] == 'r' && !known_reason(argv[i + 1]))
        return usage_error(usage, "unknown --reason %s (too_large, rejected, expired or corrupt)",
                           argv[i + 1]);
      *(a[2] == 'r' ? &d->reason : &d->type) = argv[++i];
    } else if (strcmp(a, "--limit") == 0 && has_val && !allow_ids) {
      if (admin_parse_u64(argv[++i], &d->limit) < 0)
        return usage_error(usage, "bad --limit: %s", argv[i]);
      d->has_limit = 1;
    } else if (strcmp(a, "--after") == 0 && has_val && !allow_ids) {
      if (admin_parse_u64(argv[++i], &d->after) < 0)
        return usage_error(usage, "bad --after: %s", argv[i]);
    } else if (a[0] == '-') {
      return usage_error(usage, "unknown option or missing value: %s", a);
    } else if (allow_ids) {
      uint64_t id;
      if (admin_parse_u64(a, &id) < 0 || id == 0) return usage_error(usage, "not an entry id: %s", a);
      /* An id given twice is one entry: sent twice, its second copy
       * would come back "not found" and fail the command. */
      size_t k = 0;
      while (k < d->nids && d->ids[k] != id) k++;
      if (k == d->nids) d->ids[d->nids++] = id;
    } else {
      return usage_error(usage, "unexpected argument: %s", a);
    }
  }
  return 0;
}

/* One page of the DLQ, from the API or the data directory, as
 * {"entries":[...],"next_after":...}. */
static int fetch_dlq_page(const ctl *c, const dlq_args *d, uint64_t after, uint64_t limit,
                          json_object **out) {
  if (c->data_dir) {
    rq_env *env;
    if (open_dir(c, &env)) return CTL_FAILED;
    /* One more than asked tells whether a next page exists (as the API). */
    rq_dlq_filter f = {d->reason, d->type, after, limit ? (size_t)limit + 1 : 0};
    rq_record *recs = NULL;
    int got = rq_dlq_list_meta(env, &f, &recs); /* lists carry no bodies */
    if (got < 0) {
      rq_env_close(env);
      fprintf(stderr, "relayctl: reading %s: %s\n", c->data_dir, rq_strerror(got));
      return CTL_FAILED;
    }
    int n = limit && (uint64_t)got > limit ? (int)limit : got;
    json_object *o = json_object_new_object(), *arr = json_object_new_array();
    for (int i = 0; i < n; i++) json_object_array_add(arr, admin_record_json(&recs[i], 0));
    json_object_object_add(o, "entries", arr);
    if (got > n && n > 0)
      json_object_object_add(o, "next_after", json_object_new_int64((int64_t)recs[n - 1].seq));
    else
      json_object_object_add(o, "next_after", NULL);
    rq_records_free(recs, (size_t)got);
    rq_env_close(env);
    *out = o;
    return 0;
  }
  char path[1024];
  int len = snprintf(path, sizeof path, "/v1/dlq?limit=%" PRIu64 "&after=%" PRIu64, limit, after);
  const char *keys[2] = {"reason", "type"};
  const char *vals[2] = {d->reason, d->type};
  for (int k = 0; k < 2; k++) {
    if (!vals[k]) continue;
    char *enc = ctl_urlencode(vals[k]);
    if (!enc) return CTL_FAILED;
    len += snprintf(path + len, sizeof path - (size_t)len, "&%s=%s", keys[k], enc);
    free(enc);
    if ((size_t)len >= sizeof path) return usage_error(usage_list, "filter too long: %s", vals[k]);
  }
  return ctl_call(&c->client, "GET", path, NULL, out, NULL) == 0 ? 0 : CTL_FAILED;
}

static int cmd_dlq_list(const ctl *c, int argc, char **argv) {
  dlq_args d;
  int rc = parse_dlq_args(argc, argv, usage_list, 0, &d);
  if (rc) {
    free(d.ids);
    return rc;
  }
  uint64_t want = d.has_limit ? d.limit : 100; /* 0 = all */
  json_object *all = json_object_new_array();
  uint64_t after = d.after;
  int more = 0;
  for (;;) {
    uint64_t page = want == 0 ? LIST_PAGE : want - json_object_array_length(all);
    if (page > LIST_PAGE) page = LIST_PAGE;
    json_object *o;
    if (fetch_dlq_page(c, &d, after, page, &o)) {
      json_object_put(all);
      free(d.ids);
      return CTL_FAILED;
    }
    json_object *entries = json_object_object_get(o, "entries");
    size_t n = entries ? json_object_array_length(entries) : 0;
    for (size_t i = 0; i < n; i++)
      json_object_array_add(all, json_object_get(json_object_array_get_idx(entries, i)));
    int64_t next = ctl_get_i64(o, "next_after", 0);
    json_object_put(o);
    if (!next || n == 0) break;
    after = (uint64_t)next;
    if (want && json_object_array_length(all) >= want) {
      more = 1;
      break;
    }
  }
  if (d.json) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "entries", all);
    if (more)
      json_object_object_add(o, "next_after", json_object_new_int64((int64_t)after));
    else
      json_object_object_add(o, "next_after", NULL);
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
  } else {
    if (json_object_array_length(all) == 0)
      puts("DLQ: no entries");
    else
      ctl_print_dlq_table(stdout, all);
    if (more)
      printf("(more entries: --after %" PRIu64 " for the next page, --limit 0 for all)\n", after);
    json_object_put(all);
  }
  free(d.ids);
  return CTL_OK;
}

static int cmd_dlq_show(const ctl *c, int argc, char **argv) {
  int json = 0;
  uint64_t id = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (argv[i][0] != '-' && !id && admin_parse_u64(argv[i], &id) == 0 && id)
      continue;
    else
      return usage_error(usage_show, "bad argument: %s", argv[i]);
  }
  if (!id) return usage_error(usage_show, "%s", "which entry? give its ID");
  json_object *e = NULL;
  if (c->data_dir) {
    rq_env *env;
    if (open_dir(c, &env)) return CTL_FAILED;
    rq_record r;
    int rc = rq_dlq_get(env, id, &r);
    if (rc == 0) {
      e = admin_record_json(&r, 1);
      rq_record_free(&r);
    }
    rq_env_close(env);
    if (rc == RQ_NOTFOUND) {
      fprintf(stderr, "relayctl: no DLQ entry with id %" PRIu64 "\n", id);
      return CTL_FAILED;
    }
    if (rc < 0) {
      fprintf(stderr, "relayctl: reading %s: %s\n", c->data_dir, rq_strerror(rc));
      return CTL_FAILED;
    }
  } else {
    char path[64];
    snprintf(path, sizeof path, "/v1/dlq/%" PRIu64, id);
    json_object *err = NULL;
    int rc = ctl_call(&c->client, "GET", path, NULL, &e, &err);
    if (rc == 404) {
      fprintf(stderr, "relayctl: no DLQ entry with id %" PRIu64 "\n", id);
      json_object_put(err);
      return CTL_FAILED;
    }
    if (rc != 0) {
      if (err)
        fprintf(stderr, "relayctl: relayd answered %d: %s\n", rc,
                ctl_get_str(err, "error") ? ctl_get_str(err, "error") : "?");
      json_object_put(err);
      return CTL_FAILED;
    }
  }
  if (json)
    puts(json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN));
  else
    ctl_print_dlq_entry(stdout, e, isatty(STDOUT_FILENO));
  json_object_put(e);
  return CTL_OK;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void progress(const char *verb, size_t done, size_t total, double t0) {
  char bar[31];
  size_t fill = total ? done * 30 / total : 30;
  for (size_t i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
  bar[30] = '\0';
  double el = mono_s() - t0;
  fprintf(stderr, "\r%s [%s] %zu/%zu %3zu %%  %.0f/s ", verb, bar, done, total,
          total ? done * 100 / total : 100, el > 0 ? (double)done / el : 0.0);
  fflush(stderr);
}

/* Replay and purge. With ids: one call. With --all: the matching ids are
 * listed first and sent in chunks, which gives an exact total for the
 * progress bar and never touches entries dead-lettered again meanwhile (a
 * replayed event that fails again comes back under a new id). */
static int cmd_dlq_change(const ctl *c, int argc, char **argv, int replay) {
  const char *usage = replay ? usage_replay : usage_purge;
  const char *verb = replay ? "replay" : "purge";
  const char *field = replay ? "replayed" : "purged";
  if (c->data_dir) {
    fprintf(stderr, "relayctl: dlq %s needs the admin API of a running relayd (not --data-dir)\n",
            verb);
    return CTL_USAGE;
  }
  dlq_args d;
  int rc = parse_dlq_args(argc, argv, usage, 1, &d);
  if (rc) {
    free(d.ids);
    return rc;
  }
  if (d.all == (d.nids > 0)) {
    free(d.ids);
    return usage_error(usage, "%s", "give either --all or entry ids");
  }
  uint64_t *ids = d.ids;
  size_t nids = d.nids;
  if (d.all) {
    size_t cap = 0;
    ids = NULL;
    nids = 0;
    uint64_t after = 0;
    for (;;) {
      json_object *o;
      if (fetch_dlq_page(c, &d, after, LIST_PAGE, &o)) {
        free(ids);
        free(d.ids);
        return CTL_FAILED;
      }
      json_object *entries = json_object_object_get(o, "entries");
      size_t n = entries ? json_object_array_length(entries) : 0;
      if (nids + n > cap) {
        cap = (nids + n) * 2 + 64;
        uint64_t *np = realloc(ids, cap * sizeof *ids);
        if (!np) {
          json_object_put(o);
          free(ids);
          free(d.ids);
          fprintf(stderr, "relayctl: out of memory\n");
          return CTL_FAILED;
        }
        ids = np;
      }
      for (size_t i = 0; i < n; i++)
        ids[nids++] = (uint64_t)ctl_get_i64(json_object_array_get_idx(entries, i), "id", 0);
      int64_t next = ctl_get_i64(o, "next_after", 0);
      json_object_put(o);
      if (!next || n == 0) break;
      after = (uint64_t)next;
    }
    free(d.ids);
    d.ids = ids;
    if (nids == 0) {
      printf("DLQ: nothing to %s\n", verb);
      free(ids);
      return CTL_OK;
    }
    if (!d.yes && isatty(STDIN_FILENO) && isatty(STDERR_FILENO)) {
      fprintf(stderr, "%s %zu DLQ entr%s%s%s%s%s? [y/N] ",
              replay ? "Replay" : "Purge (delete for good)", nids, nids == 1 ? "y" : "ies",
              d.reason ? " with reason " : "", d.reason ? d.reason : "", d.type ? " of type " : "",
              d.type ? d.type : "");
      char line[16];
      if (!fgets(line, sizeof line, stdin) || (line[0] != 'y' && line[0] != 'Y')) {
        fprintf(stderr, "nothing done\n");
        free(ids);
        return CTL_FAILED;
      }
    }
  }
  int bar = d.all && isatty(STDERR_FILENO);
  double t0 = mono_s();
  size_t moved = 0, missing = 0, sent = 0;
  int failed = 0;
  while (sent < nids) {
    size_t n = nids - sent > REPLAY_CHUNK ? REPLAY_CHUNK : nids - sent;
    json_object *req = json_object_new_object(), *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++)
      json_object_array_add(arr, json_object_new_int64((int64_t)ids[sent + i]));
    json_object_object_add(req, "ids", arr);
    /* With ids the filters restrict them (relayd leaves non-matching ids
     * alone); with --all the ids were listed by them already. */
    if (d.reason) json_object_object_add(req, "reason", json_object_new_string(d.reason));
    if (d.type) json_object_object_add(req, "type", json_object_new_string(d.type));
    json_object *res;
    rc = ctl_call(&c->client, "POST", replay ? "/v1/dlq/replay" : "/v1/dlq/purge",
                  json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN), &res, NULL);
    json_object_put(req);
    if (rc != 0) {
      failed = 1;
      break;
    }
    moved += (size_t)ctl_get_i64(res, field, 0);
    missing += (size_t)ctl_get_i64(res, "missing", 0);
    json_object_put(res);
    sent += n;
    if (bar) progress(replay ? "replaying" : "purging", sent, nids, t0);
  }
  if (bar) fputc('\n', stderr);
  if (failed) {
    /* The error is on stderr already; stdout carries results only. Say
     * what was done before it, since that part stays done. */
    if (sent)
      fprintf(stderr, "relayctl: %s %zu of %zu DLQ entr%s before the error\n", field, moved, nids,
              nids == 1 ? "y" : "ies");
    free(ids);
    return CTL_FAILED;
  }
  if (d.json) {
    printf("{\"%s\":%zu,\"missing\":%zu}\n", field, moved, missing);
  } else {
    printf("%s %zu of %zu DLQ entr%s", field, moved, nids, nids == 1 ? "y" : "ies");
    if (missing) printf(" (%zu not found)", missing);
    /* moved + missing + skipped is the number of ids sent. */
    if (nids > moved + missing)
      printf(" (%zu did not match --reason/--type)", nids - moved - missing);
    putchar('\n');
  }
  if (!d.all && missing)
    fprintf(stderr, "relayctl: %zu of the given ids are not in the DLQ (unknown id)\n", missing);
  free(ids);
  return (!d.all && missing) ? CTL_FAILED : CTL_OK;
}

static int cmd_test_sns(const ctl *c, int argc, char **argv) {
  (void)argv;
  if (argc > 1) return usage_error(usage_test_sns, "unexpected argument: %s", argv[1]);
  json_object *res = NULL, *err = NULL;
  int rc = ctl_call(&c->client, "POST", "/v1/test-sns", NULL, &res, &err);
  if (rc == 0) {
    printf("ok: SNS accepted the test event (MessageId %s)\n",
           ctl_get_str(res, "message_id") ? ctl_get_str(res, "message_id") : "?");
    json_object_put(res);
    return CTL_OK;
  }
  if (err) {
    const char *code = ctl_get_str(err, "code"), *msg = ctl_get_str(err, "message");
    /* 502: SNS (or the way to it) answered; else relayd could not try. */
    if (code)
      printf("failed: %s: %s%s%s\n",
             rc == 502 ? "SNS refused the test event" : "the test event was not sent", code,
             msg ? ": " : "", msg ? msg : "");
    else
      fprintf(stderr, "relayctl: relayd answered %d: %s\n", rc,
              ctl_get_str(err, "error") ? ctl_get_str(err, "error") : "?");
    json_object_put(err);
  }
  return CTL_FAILED;
}

static int cmd_pause(const ctl *c, int argc, char **argv, int pause) {
  if (argc > 1) return usage_error(usage_pause, "unexpected argument: %s", argv[1]);
  json_object *res;
  if (ctl_call(&c->client, "POST", pause ? "/v1/pause" : "/v1/resume", NULL, &res, NULL) != 0)
    return CTL_FAILED;
  printf("drainer: %s\n", ctl_get_str(res, "drainer") ? ctl_get_str(res, "drainer") : "?");
  json_object_put(res);
  return CTL_OK;
}

/* ---- main --------------------------------------------------------------------------- */

/* "host:port" from RELAY_ADMIN_LISTEN becomes an http:// URL; a wildcard
 * listen address is reached over loopback. */
static char *make_base_url(const char *s) {
  size_t n = strlen(s);
  while (n && s[n - 1] == '/') n--;
  const char *scheme = strstr(s, "://") ? "" : "http://";
  const char *rest = s;
  char tmp[512];
  if (!*scheme) {
    /* Already a URL. */
  } else if (strncmp(s, "0.0.0.0:", 8) == 0) {
    snprintf(tmp, sizeof tmp, "127.0.0.1:%s", s + 8);
    rest = tmp;
    n = strlen(tmp);
  } else if (strncmp(s, "[::]:", 5) == 0) {
    snprintf(tmp, sizeof tmp, "[::1]:%s", s + 5);
    rest = tmp;
    n = strlen(tmp);
  }
  size_t len = strlen(scheme) + n + 1;
  char *u = malloc(len);
  if (u) snprintf(u, len, "%s%.*s", scheme, (int)n, rest);
  return u;
}

int main(int argc, char **argv) {
  ctl c;
  memset(&c, 0, sizeof c);
  const char *admin = NULL, *token = NULL;
  c.args = calloc((size_t)argc + 1, sizeof *c.args);
  if (!c.args) return CTL_FAILED;
  int help = 0;
  /* Global options may come before or after the command. */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **dst = NULL;
    size_t kl = 0;
    if (strncmp(a, "--admin", 7) == 0 && (a[7] == '\0' || a[7] == '='))
      dst = &admin, kl = 7;
    else if (strncmp(a, "--token", 7) == 0 && (a[7] == '\0' || a[7] == '='))
      dst = &token, kl = 7;
    else if (strncmp(a, "--data-dir", 10) == 0 && (a[10] == '\0' || a[10] == '='))
      dst = &c.data_dir, kl = 10;
    if (dst) {
      if (a[kl] == '=')
        *dst = a + kl + 1;
      else if (i + 1 < argc)
        *dst = argv[++i];
      else {
        free(c.args);
        return usage_error(usage_main, "%s needs a value", a);
      }
      continue;
    }
    if (c.nargs == 0 && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
      help = 1;
      continue;
    }
    if (strcmp(a, "--version") == 0 && c.nargs == 0) {
      c.args[c.nargs++] = "version";
      continue;
    }
    c.args[c.nargs++] = argv[i];
  }
  if (help || c.nargs == 0) {
    free(c.args);
    fputs(usage_main, help ? stdout : stderr);
    return help ? CTL_OK : CTL_USAGE;
  }
  if (!admin) admin = getenv("RELAY_ADMIN_LISTEN");
  if (!admin || !*admin) admin = "http://127.0.0.1:8081";
  if (!token) token = getenv("RELAY_ADMIN_TOKEN");
  c.client.base_url = make_base_url(admin);
  c.client.token = token && *token ? token : NULL;
  if (!c.client.base_url) return CTL_FAILED;

  const char *cmd = c.args[0];
  int n = c.nargs;
  char **v = c.args;
  int rc;
  const char *usage = NULL;
  int offline_ok = 0;
  enum { C_STATS, C_LIST, C_SHOW, C_REPLAY, C_PURGE, C_TEST, C_PAUSE, C_RESUME, C_VERSION } which;
  if (strcmp(cmd, "stats") == 0)
    which = C_STATS, usage = usage_stats, offline_ok = 1;
  else if (strcmp(cmd, "dlq") == 0) {
    const char *sub = n > 1 ? v[1] : "";
    if (strcmp(sub, "list") == 0 || strcmp(sub, "ls") == 0)
      which = C_LIST, usage = usage_list, offline_ok = 1;
    else if (strcmp(sub, "show") == 0)
      which = C_SHOW, usage = usage_show, offline_ok = 1;
    else if (strcmp(sub, "replay") == 0)
      which = C_REPLAY, usage = usage_replay;
    else if (strcmp(sub, "purge") == 0)
      which = C_PURGE, usage = usage_purge;
    else {
      if (want_help(n, v)) {
        printf("%s%s%s%s", usage_list, usage_show, usage_replay, usage_purge);
        rc = CTL_OK;
      } else {
        rc = usage_error(usage_main, "dlq: unknown subcommand '%s' (list, show, replay, purge)",
                         sub);
      }
      goto out;
    }
  } else if (strcmp(cmd, "test-sns") == 0)
    which = C_TEST, usage = usage_test_sns;
  else if (strcmp(cmd, "pause") == 0)
    which = C_PAUSE, usage = usage_pause;
  else if (strcmp(cmd, "resume") == 0)
    which = C_RESUME, usage = usage_pause;
  else if (strcmp(cmd, "version") == 0)
    which = C_VERSION, usage = usage_version, offline_ok = 1;
  else if (strcmp(cmd, "help") == 0) {
    fputs(usage_main, stdout);
    rc = CTL_OK;
    goto out;
  } else {
    rc = usage_error(usage_main, "unknown command: %s", cmd);
    goto out;
  }
  if (want_help(n, v)) {
    fputs(usage, stdout);
    rc = CTL_OK;
    goto out;
  }
  if (c.data_dir && !offline_ok) {
    fprintf(stderr,
            "relayctl: %s needs the admin API of a running relayd; --data-dir supports "
            "stats, dlq list and dlq show\n",
            cmd);
    rc = CTL_USAGE;
    goto out;
  }
  switch (which) {
    case C_STATS:
      rc = cmd_stats(&c, n, v);
      break;
    case C_LIST:
      rc = cmd_dlq_list(&c, n, v);
      break;
    case C_SHOW:
      rc = cmd_dlq_show(&c, n, v);
      break;
    case C_REPLAY:
      rc = cmd_dlq_change(&c, n, v, 1);
      break;
    case C_PURGE:
      rc = cmd_dlq_change(&c, n, v, 0);
      break;
    case C_TEST:
      rc = cmd_test_sns(&c, n, v);
      break;
    case C_PAUSE:
      rc = cmd_pause(&c, n, v, 1);
      break;
    case C_RESUME:
      rc = cmd_pause(&c, n, v, 0);
      break;
    case C_VERSION:
      if (n > 1) {
        rc = usage_error(usage_version, "unexpected argument: %s", v[1]);
        break;
      }
      printf("relayctl %s\n", RELAY_VERSION);
      rc = CTL_OK;
      break;
    default:
      rc = CTL_USAGE;
      break;
  }
out:
  free(c.client.base_url);
  free(c.args);
  return rc;
}
