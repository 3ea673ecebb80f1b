#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "utf8.h"

static log_level threshold = LOG_INFO;
static int text_format = 0;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_configure(const char *level, const char *format) {
  if (level) {
    int found = -1;
    for (int i = 0; i < 4; i++)
      if (strcmp(level, level_names[i]) == 0) found = i;
    if (strcmp(level, "warning") == 0) found = LOG_WARN;
    if (found < 0) return -EINVAL;
    threshold = (log_level)found;
  }
  if (format) {
    if (strcmp(format, "json") == 0) text_format = 0;
    else if (strcmp(format, "text") == 0) text_format = 1;
    else return -EINVAL;
  }
  return 0;
}

int log_enabled(log_level level) {
  return level >= threshold;
}

/* Room kept at the end of the line buffer for what closes a line (a
 * value's quote, "...", '}' and '\n'), so that a cut line is still one
 * JSON object. */
#define LINE_TAIL 16

/* Appends s escaped, never past lim and never splitting a character:
 * values come from files, the network and events, and a log collector
 * drops a line that is not valid UTF-8 JSON. JSON mode escapes '"', '\\'
 * and control characters; text mode only control characters (so a line
 * stays a line). Bytes that are not UTF-8 become U+FFFD. A value cut at
 * lim ends in "..." (the tail room holds it). Returns the new length. */
static size_t put_escaped(char *buf, size_t n, size_t lim, const char *s, int json) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    char tmp[8];
    size_t tl = 0, adv = 1;
    unsigned c = *p;
    uint32_t cp;
    if (json && (c == '"' || c == '\\')) {
      tmp[tl++] = '\\';
      tmp[tl++] = (char)c;
    } else if (c < 0x20) {
      memcpy(tmp, "\\u00", 4);
      tmp[4] = hex[c >> 4];
      tmp[5] = hex[c & 15];
      tl = 6;
    } else if (c < 0x80) {
      tmp[tl++] = (char)c;
    } else if ((adv = utf8_decode(p, SIZE_MAX, &cp)) > 0) {
      memcpy(tmp, p, adv);
      tl = adv;
    } else {
      adv = 1;
      memcpy(tmp, "\xef\xbf\xbd", 3); /* U+FFFD */
      tl = 3;
    }
    if (n + tl > lim) {
      memcpy(buf + n, "...", 3);
      return n + 3;
    }
    memcpy(buf + n, tmp, tl);
    n += tl;
    p += adv;
  }
  return n;
}

/* Appends s when all of it fits before lim; returns the new length, or
 * (size_t)-1 without writing when it does not. */
static size_t put_raw(char *buf, size_t n, size_t lim, const char *s) {
  size_t l = strlen(s);
  if (n + l > lim) return (size_t)-1;
  memcpy(buf + n, s, l);
  return n + l;
}

/* A '#' value is written unquoted; only what is a JSON number or literal
 * is, anything else becomes null so the line stays valid. */
static int json_bare_ok(const char *v) {
  if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0 || strcmp(v, "null") == 0) return 1;
  const char *p = v;
  if (*p == '-') p++;
  if (*p < '0' || *p > '9') return 0;
  if (*p == '0' && p[1] >= '0' && p[1] <= '9') return 0;
  while (*p >= '0' && *p <= '9') p++;
  if (*p == '.') {
    p++;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
  }
  return *p == '\0';
}

void rlog(log_level level, const char *msg, ...) {
  if (level < threshold) return;
  char buf[8192];
  const size_t lim = sizeof buf - LINE_TAIL;
  size_t n = 0;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[64];
  snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (long)(tv.tv_usec / 1000));
  int json = !text_format;
  char head[128];
  if (json)
    snprintf(head, sizeof head, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
             level_names[level]);
  else
    snprintf(head, sizeof head, "%s %-5s ", ts, level_names[level]);
  n = put_raw(buf, 0, lim, head);
  n = put_escaped(buf, n, lim, msg, json);
  if (json) buf[n++] = '"';
  va_list ap;
  va_start(ap, msg);
  const char *k;
  while ((k = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *);
    if (!v) v = "";
    int bare = (*k == '#');
    if (bare) k++;
    /* A pair is written whole or not at all, except for a long value,
     * which is cut; once one is cut or left out, the rest are too. */
    size_t m = put_raw(buf, n, lim, json ? ",\"" : " ");
    if (m != (size_t)-1) m = put_raw(buf, m, lim, k);
    if (m != (size_t)-1) m = put_raw(buf, m, lim, json ? (bare ? "\":" : "\":\"") : "=");
    if (m == (size_t)-1) break;
    if (json && bare) {
      m = put_raw(buf, m, lim, *v && json_bare_ok(v) ? v : "null");
      if (m == (size_t)-1) break;
      n = m;
      continue;
    }
    n = put_escaped(buf, m, lim, v, json);
    if (json) buf[n++] = '"';
    if (n > lim) break; /* cut: the tail room is in use */
  }
  va_end(ap);
  if (json) buf[n++] = '}';
  buf[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, buf, n);
  (void)w;
}
