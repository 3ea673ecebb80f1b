#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

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

/* Appends s JSON-escaped; returns the new length (capped at cap-1). */
static size_t put_escaped(char *buf, size_t n, size_t cap, const char *s) {
  for (; *s && n + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      buf[n++] = '\\';
      buf[n++] = (char)c;
    } else if (c < 0x20) {
      n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", c);
    } else {
      buf[n++] = (char)c;
    }
  }
  return n;
}

static size_t put_raw(char *buf, size_t n, size_t cap, const char *s) {
  size_t l = strlen(s);
  if (n + l + 8 >= cap) l = cap > n + 8 ? cap - n - 8 : 0;
  memcpy(buf + n, s, l);
  return n + l;
}

void rlog(log_level level, const char *msg, ...) {
  if (level < threshold) return;
  char buf[8192];
  size_t n = 0, cap = sizeof buf;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[64];
  snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (long)(tv.tv_usec / 1000));
  va_list ap;
  va_start(ap, msg);
  if (text_format) {
    n += (size_t)snprintf(buf, cap, "%s %-5s %s", ts, level_names[level], msg);
    const char *k;
    while ((k = va_arg(ap, const char *)) != NULL) {
      const char *v = va_arg(ap, const char *);
      if (*k == '#') k++;
      n = put_raw(buf, n, cap, " ");
      n = put_raw(buf, n, cap, k);
      n = put_raw(buf, n, cap, "=");
      n = put_raw(buf, n, cap, v ? v : "");
    }
  } else {
    n += (size_t)snprintf(buf, cap, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                          level_names[level]);
    n = put_escaped(buf, n, cap, msg);
    n = put_raw(buf, n, cap, "\"");
    const char *k;
    while ((k = va_arg(ap, const char *)) != NULL) {
      const char *v = va_arg(ap, const char *);
      int raw = (*k == '#');
      if (raw) k++;
      n = put_raw(buf, n, cap, ",\"");
      n = put_escaped(buf, n, cap, k);
      n = put_raw(buf, n, cap, raw ? "\":" : "\":\"");
      if (raw) n = put_raw(buf, n, cap, v && *v ? v : "null");
      else n = put_escaped(buf, n, cap, v ? v : "");
      if (!raw) n = put_raw(buf, n, cap, "\"");
    }
    n = put_raw(buf, n, cap, "}");
  }
  va_end(ap);
  buf[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, buf, n);
  (void)w;
}
