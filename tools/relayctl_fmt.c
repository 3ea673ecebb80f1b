/* relayctl's human output: units, tables, the stats summary. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "relayctl.h"

int64_t ctl_get_i64(json_object *o, const char *k, int64_t def) {
  json_object *v;
  if (!o || !json_object_object_get_ex(o, k, &v) || !v) return def;
  return json_object_get_int64(v);
}

double ctl_get_double(json_object *o, const char *k, double def) {
  json_object *v;
  if (!o || !json_object_object_get_ex(o, k, &v) || !v) return def;
  return json_object_get_double(v);
}

const char *ctl_get_str(json_object *o, const char *k) {
  json_object *v;
  if (!o || !json_object_object_get_ex(o, k, &v) || !v) return NULL;
  if (!json_object_is_type(v, json_type_string)) return NULL;
  return json_object_get_string(v);
}

void ctl_fmt_bytes(uint64_t n, char *buf, size_t len) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  if (n < 1024) {
    snprintf(buf, len, "%" PRIu64 " B", n);
    return;
  }
  double v = (double)n;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  snprintf(buf, len, v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void ctl_fmt_duration(double s, char *buf, size_t len) {
  if (s < 0) s = 0;
  if (s < 1) {
    snprintf(buf, len, "%.0f ms", s * 1000);
    return;
  }
  uint64_t t = (uint64_t)s;
  uint64_t d = t / 86400, h = t % 86400 / 3600, m = t % 3600 / 60, sec = t % 60;
  if (d)
    snprintf(buf, len, "%" PRIu64 "d %" PRIu64 "h", d, h);
  else if (h)
    snprintf(buf, len, "%" PRIu64 "h %" PRIu64 "m", h, m);
  else if (m)
    snprintf(buf, len, "%" PRIu64 "m %" PRIu64 "s", m, sec);
  else
    snprintf(buf, len, "%.1f s", s);
}

void ctl_fmt_count(uint64_t n, char *buf, size_t len) {
  char raw[32];
  int rl = snprintf(raw, sizeof raw, "%" PRIu64, n);
  size_t o = 0;
  for (int i = 0; i < rl && o + 2 < len; i++) {
    if (i > 0 && (rl - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = raw[i];
  }
  buf[o] = '\0';
}

void ctl_fmt_time_ms(int64_t ms, char *buf, size_t len) {
  if (ms <= 0) {
    snprintf(buf, len, "-");
    return;
  }
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

static int64_t wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Seconds since an ISO-8601 UTC time as written by the admin API. */
static double age_of(const char *iso) {
  if (!iso) return -1;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end) return -1;
  time_t t = timegm(&tm);
  return (double)(wall_ms() / 1000 - (int64_t)t);
}

void ctl_print_stats(FILE *f, json_object *st, const char *where) {
  char a[64], b[64], c[64];
  const char *src = ctl_get_str(st, "source");
  int live = src && strcmp(src, "relayd") == 0;
  if (live) {
    ctl_fmt_duration(ctl_get_double(st, "uptime_s", 0), a, sizeof a);
    fprintf(f, "relayd %s at %s, up %s\n\n",
            ctl_get_str(st, "version") ? ctl_get_str(st, "version") : "?", where, a);
  } else {
    fprintf(f, "data directory %s (read directly; drainer state unknown)\n\n", where);
  }

  const char *drainer = ctl_get_str(st, "drainer");
  if (live && !drainer) fprintf(f, "%-13s not running (see relayd's log)\n", "Drainer");
  if (drainer) {
    fprintf(f, "%-13s %s", "Drainer", drainer);
    int64_t conc = ctl_get_i64(st, "concurrency", -1),
            maxc = ctl_get_i64(st, "max_concurrency", -1);
    if (conc >= 0)
      fprintf(f, "  (concurrency %" PRId64 "/%" PRId64 ", %" PRId64 " requests in flight)", conc,
              maxc, ctl_get_i64(st, "inflight_requests", 0));
    fputc('\n', f);
    const char *err = ctl_get_str(st, "last_error");
    if (err) {
      double age = age_of(ctl_get_str(st, "last_error_at"));
      if (age >= 0) {
        ctl_fmt_duration(age, a, sizeof a);
        fprintf(f, "%-13s %s (%s ago)\n", "Last error", err, a);
      } else {
        fprintf(f, "%-13s %s\n", "Last error", err);
      }
    } else {
      fprintf(f, "%-13s none\n", "Last error");
    }
  }

  uint64_t ready = (uint64_t)ctl_get_i64(st, "ready", 0);
  ctl_fmt_count(ready, a, sizeof a);
  ctl_fmt_bytes((uint64_t)ctl_get_i64(st, "ready_bytes", 0), b, sizeof b);
  fprintf(f, "%-13s %s events, %s", "Ready", a, b);
  if (ready) {
    ctl_fmt_duration(ctl_get_double(st, "oldest_ready_age_s", 0), c, sizeof c);
    fprintf(f, ", oldest %s", c);
  }
  fputc('\n', f);
  if (live) {
    ctl_fmt_count((uint64_t)ctl_get_i64(st, "inflight", 0), a, sizeof a);
    fprintf(f, "%-13s %s events\n", "In flight", a);
  }

  ctl_fmt_count((uint64_t)ctl_get_i64(st, "dlq", 0), a, sizeof a);
  ctl_fmt_bytes((uint64_t)ctl_get_i64(st, "dlq_bytes", 0), b, sizeof b);
  fprintf(f, "%-13s %s events, %s", "DLQ", a, b);
  json_object *by;
  if (json_object_object_get_ex(st, "dlq_by_reason", &by) && by &&
      json_object_object_length(by) > 0) {
    fputs("  (", f);
    int first = 1;
    json_object_object_foreach(by, k, v) {
      ctl_fmt_count((uint64_t)json_object_get_int64(v), a, sizeof a);
      fprintf(f, "%s%s %s", first ? "" : ", ", k, a);
      first = 0;
    }
    fputc(')', f);
  }
  fputc('\n', f);

  ctl_fmt_count((uint64_t)ctl_get_i64(st, "published_total", 0), a, sizeof a);
  fprintf(f, "%-13s %s total", "Published", a);
  if (live) fprintf(f, ", %.1f/s", ctl_get_double(st, "publish_rate", 0));
  fputc('\n', f);
  ctl_fmt_count((uint64_t)ctl_get_i64(st, "received_total", 0), a, sizeof a);
  fprintf(f, "%-13s %s total", "Received", a);
  if (live) fprintf(f, ", %.1f/s", ctl_get_double(st, "receive_rate", 0));
  fputc('\n', f);
  ctl_fmt_count((uint64_t)ctl_get_i64(st, "dead_lettered_total", 0), a, sizeof a);
  ctl_fmt_count((uint64_t)ctl_get_i64(st, "duplicates_total", 0), b, sizeof b);
  fprintf(f, "%-13s %s total (duplicates skipped: %s)\n", "Dead-lettered", a, b);

  uint64_t used = (uint64_t)ctl_get_i64(st, "map_used", 0),
           size = (uint64_t)ctl_get_i64(st, "map_size", 0);
  ctl_fmt_bytes(used, a, sizeof a);
  ctl_fmt_bytes(size, b, sizeof b);
  fprintf(f, "%-13s %s of %s (%.0f %%)%s\n", "Disk (map)", a, b,
          size ? 100.0 * (double)used / (double)size : 0.0,
          json_object_get_boolean(json_object_object_get(st, "over_watermark"))
              ? "  OVER WATERMARK: ingest answers 503"
              : "");
}

/* Column text of one entry, for width computing and printing. */
enum { COL_ID, COL_TIME, COL_TYPE, COL_CID, COL_REASON, COL_ATT, COL_SIZE, COL_ERR, NCOLS };

static void entry_cols(json_object *e, char cols[NCOLS][160]) {
  snprintf(cols[COL_ID], 160, "%" PRId64, ctl_get_i64(e, "id", 0));
  ctl_fmt_time_ms(ctl_get_i64(e, "received_ms", 0), cols[COL_TIME], 160);
  snprintf(cols[COL_TYPE], 160, "%s", ctl_get_str(e, "type") ? ctl_get_str(e, "type") : "-");
  snprintf(cols[COL_CID], 160, "%.40s", ctl_get_str(e, "cid") ? ctl_get_str(e, "cid") : "-");
  snprintf(cols[COL_REASON], 160, "%s", ctl_get_str(e, "reason") ? ctl_get_str(e, "reason") : "-");
  snprintf(cols[COL_ATT], 160, "%" PRId64, ctl_get_i64(e, "attempts", 0));
  ctl_fmt_bytes((uint64_t)ctl_get_i64(e, "size", 0), cols[COL_SIZE], 160);
  const char *code = ctl_get_str(e, "code"), *msg = ctl_get_str(e, "message");
  const char *last = ctl_get_str(e, "last_error");
  if (code || msg)
    snprintf(cols[COL_ERR], 160, "%s%s%.100s", code ? code : "", code && msg ? ": " : "",
             msg ? msg : "");
  else
    snprintf(cols[COL_ERR], 160, "%.100s", last ? last : "-");
}

void ctl_print_dlq_table(FILE *f, json_object *entries) {
  static const char *const heads[NCOLS] = {"ID",     "RECEIVED (UTC)", "TYPE", "CID",
                                           "REASON", "ATTEMPTS",       "SIZE", "ERROR"};
  size_t n = json_object_array_length(entries);
  int width[NCOLS];
  for (int c = 0; c < NCOLS; c++) width[c] = (int)strlen(heads[c]);
  char cols[NCOLS][160];
  for (size_t i = 0; i < n; i++) {
    entry_cols(json_object_array_get_idx(entries, i), cols);
    for (int c = 0; c < NCOLS; c++)
      if ((int)strlen(cols[c]) > width[c]) width[c] = (int)strlen(cols[c]);
  }
  for (int c = 0; c < NCOLS; c++)
    if (c == NCOLS - 1)
      fprintf(f, "%s\n", heads[c]);
    else
      fprintf(f, "%-*s  ", width[c], heads[c]);
  for (size_t i = 0; i < n; i++) {
    entry_cols(json_object_array_get_idx(entries, i), cols);
    for (int c = 0; c < NCOLS; c++) {
      if (c == NCOLS - 1)
        fprintf(f, "%s\n", cols[c]);
      else if (c == COL_ATT || c == COL_ID)
        fprintf(f, "%*s  ", width[c], cols[c]);
      else
        fprintf(f, "%-*s  ", width[c], cols[c]);
    }
  }
}

static void newline_indent(FILE *f, int depth) {
  fputc('\n', f);
  for (int i = 0; i < depth; i++) fputs("  ", f);
}

/* Pretty-prints valid JSON text by re-indenting its tokens, each copied as
 * it is: printing a json-c parse of it instead clamps integers beyond 64
 * bits, drops repeated keys and rewrites escapes, so the operator would
 * see another body than the one stored and published. */
static void print_json_reindented(FILE *f, const char *s) {
  int depth = 0, in_str = 0;
  for (const char *p = s; *p; p++) {
    char c = *p;
    if (in_str) {
      fputc(c, f);
      if (c == '\\' && p[1])
        fputc(*++p, f);
      else if (c == '"')
        in_str = 0;
      continue;
    }
    switch (c) {
      case '"':
        in_str = 1;
        fputc(c, f);
        break;
      case '{':
      case '[': {
        const char *q = p + 1;
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
        fputc(c, f);
        if (*q == (c == '{' ? '}' : ']')) { /* empty: {} and [] */
          fputc(*q, f);
          p = q;
        } else {
          newline_indent(f, ++depth);
        }
        break;
      }
      case '}':
      case ']':
        newline_indent(f, depth > 0 ? --depth : 0);
        fputc(c, f);
        break;
      case ',':
        fputc(c, f);
        newline_indent(f, depth);
        break;
      case ':':
        fputs(": ", f);
        break;
      case ' ':
      case '\t':
      case '\n':
      case '\r':
        break;
      default:
        fputc(c, f);
    }
  }
  fputc('\n', f);
}

void ctl_print_dlq_entry(FILE *f, json_object *e, int pretty) {
  static const char *const keys[] = {"id",           "received_at", "type",       "cid",
                                     "channel_type", "channel_id",  "user_id",    "webhook_id",
                                     "reason",       "code",        "message",    "dead_at",
                                     "replayed_at",  "attempts",    "last_error", "size"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    json_object *v;
    if (!json_object_object_get_ex(e, keys[i], &v) || !v) continue;
    if (json_object_is_type(v, json_type_string))
      fprintf(f, "%-13s %s\n", keys[i], json_object_get_string(v));
    else
      fprintf(f, "%-13s %s\n", keys[i], json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
  }
  const char *body = ctl_get_str(e, "body");
  const char *b64 = ctl_get_str(e, "body_base64");
  if (body) {
    fputs("body:\n", f);
    json_object *parsed = pretty ? json_tokener_parse(body) : NULL; /* only checks it is JSON */
    if (parsed) {
      json_object_put(parsed);
      print_json_reindented(f, body);
    } else {
      fputs(body, f);
      if (!*body || body[strlen(body) - 1] != '\n') fputc('\n', f);
    }
  } else if (b64) {
    fprintf(f, "body (not UTF-8, base64):\n%s\n", b64);
  }
}
