/* relay/log.c: every line is one valid JSON object (UTF-8, closed), whatever
 * the values hold; text lines stay one line. stderr is redirected to a file
 * in the case's temporary directory and read back. */
#include "log.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <unistd.h>

#include "testlib.h"

static int saved_stderr = -1;
static char out_path[512];

static void capture_begin(void) {
  snprintf(out_path, sizeof out_path, "%s/stderr.txt", tl_tmpdir);
  int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0);
  saved_stderr = dup(STDERR_FILENO);
  CHECK(saved_stderr >= 0);
  CHECK(dup2(fd, STDERR_FILENO) == STDERR_FILENO);
  close(fd);
}

/* Restores stderr and returns what was written (caller frees). */
static char *capture_end(size_t *len) {
  CHECK(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
  close(saved_stderr);
  saved_stderr = -1;
  char *s = tl_read_file(out_path, len);
  CHECK(s != NULL);
  return s;
}

/* Strict UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
static int valid_utf8(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t k;
    unsigned min, cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      k = 1, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      k = 2, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      k = 3, min = 0x10000, cp = c & 0x07;
    } else {
      return 0;
    }
    for (size_t j = 1; j <= k; j++) {
      if (i + j >= n || (s[i + j] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += k + 1;
  }
  return 1;
}

/* Splits the capture into lines; each must be a JSON object. Returns the
 * number of lines; objs[i] owned by the caller (json_object_put). */
static size_t parse_lines(char *s, size_t len, json_object **objs, size_t max) {
  size_t n = 0;
  CHECK(len > 0 && s[len - 1] == '\n');
  char *p = s;
  while (p < s + len) {
    char *nl = memchr(p, '\n', (size_t)(s + len - p));
    CHECK(nl != NULL);
    size_t ll = (size_t)(nl - p);
    if (!valid_utf8((const unsigned char *)p, ll))
      tl_fail(__FILE__, __LINE__, "line %zu is not valid UTF-8", n + 1);
    json_tokener *tok = json_tokener_new();
    CHECK(tok != NULL);
    json_object *o = json_tokener_parse_ex(tok, p, (int)ll);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || e != json_tokener_success || used != ll)
      tl_fail(__FILE__, __LINE__, "line %zu is not one JSON value: %.120s", n + 1, p);
    CHECK(json_object_is_type(o, json_type_object));
    CHECK(n < max);
    objs[n++] = o;
    p = nl + 1;
  }
  return n;
}

static const char *get_str(json_object *o, const char *key) {
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v)) return NULL;
  return json_object_get_string(v);
}

TEST(json_escapes_control_and_quotes) {
  CHECK_INT(log_configure("info", "json"), ==, 0);
  capture_begin();
  rlog(LOG_INFO, "a \"quoted\"\nmessage", "path", "/tmp/x\"y\\z\t\x01\x1f\x7f", "#n", "42", NULL);
  rlog(LOG_DEBUG, "not shown", NULL);
  size_t len;
  char *s = capture_end(&len);
  json_object *objs[4];
  CHECK_INT(parse_lines(s, len, objs, 4), ==, 1);
  CHECK_STR(get_str(objs[0], "msg"), "a \"quoted\"\nmessage");
  CHECK_STR(get_str(objs[0], "path"), "/tmp/x\"y\\z\t\x01\x1f\x7f");
  CHECK_STR(get_str(objs[0], "level"), "info");
  json_object *n;
  CHECK(json_object_object_get_ex(objs[0], "n", &n));
  CHECK_INT(json_object_get_int(n), ==, 42);
  json_object_put(objs[0]);
  free(s);
}

/* A data directory named in Latin-1, an error message cut in the middle of
 * a character: the line must still be UTF-8 (invalid bytes become U+FFFD),
 * valid sequences untouched. */
TEST(json_invalid_utf8_replaced) {
  CHECK_INT(log_configure("info", "json"), ==, 0);
  capture_begin();
  rlog(LOG_WARN, "queue opened", "path", "/var/lib/r\xe9lay", "error", "caf\xc3\xa9 \xe2\x82", "x",
       "\xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80 ok \xf0\x9f\x98\x80", NULL);
  size_t len;
  char *s = capture_end(&len);
  json_object *objs[4];
  CHECK_INT(parse_lines(s, len, objs, 4), ==, 1);
  CHECK_STR(get_str(objs[0], "path"), "/var/lib/r\xef\xbf\xbdlay");
  const char *e = get_str(objs[0], "error");
  CHECK(e != NULL);
  CHECK(strncmp(e, "caf\xc3\xa9 ", 6) == 0);
  CHECK(strstr(e, "\xef\xbf\xbd") != NULL);
  const char *x = get_str(objs[0], "x");
  CHECK(x != NULL);
  CHECK(strstr(x, " ok \xf0\x9f\x98\x80") != NULL);
  json_object_put(objs[0]);
  free(s);
}

/* A value longer than the line buffer (an event type of 20 KB in a
 * dead-letter line) is cut, but the line stays one closed JSON object and
 * the cut never splits a UTF-8 character. */
TEST(json_long_values_stay_valid) {
  CHECK_INT(log_configure("info", "json"), ==, 0);
  size_t big = 20000;
  char *v = malloc(big + 1);
  CHECK(v != NULL);
  for (size_t i = 0; i + 2 <= big; i += 2) memcpy(v + i, "\xc3\xa9", 2); /* é */
  v[big] = '\0';
  char *q = malloc(big + 1);
  CHECK(q != NULL);
  memset(q, '"', big);
  q[big] = '\0';
  capture_begin();
  rlog(LOG_WARN, "event dead-lettered", "reason", "too_large", "type", v, "#seq", "7", "after", "x",
       NULL);
  for (size_t cut = 8100; cut < 8200; cut += 3) {
    char save = q[cut];
    q[cut] = '\0';
    rlog(LOG_INFO, "quotes", "v", q, NULL);
    q[cut] = save;
  }
  rlog(LOG_INFO, q, "k", v, NULL);
  size_t len;
  char *s = capture_end(&len);
  json_object *objs[64];
  size_t n = parse_lines(s, len, objs, 64);
  CHECK_INT(n, ==, 36);
  CHECK_STR(get_str(objs[0], "reason"), "too_large");
  CHECK_STR(get_str(objs[0], "level"), "warn");
  const char *t = get_str(objs[0], "type");
  CHECK(t != NULL);
  CHECK(strlen(t) > 1000);
  for (size_t i = 0; i < n; i++) json_object_put(objs[i]);
  free(s);
  free(v);
  free(q);
}

/* Text format: one line per call, control characters escaped. */
TEST(text_one_line) {
  CHECK_INT(log_configure("info", "text"), ==, 0);
  capture_begin();
  rlog(LOG_INFO, "two\nlines", "k", "a\nb\r\x1b[31m", "#n", "1", NULL);
  size_t len;
  char *s = capture_end(&len);
  CHECK_INT(log_configure(NULL, "json"), ==, 0);
  CHECK(len > 0 && s[len - 1] == '\n');
  CHECK(memchr(s, '\n', len - 1) == NULL);
  CHECK(memchr(s, '\r', len) == NULL);
  CHECK(memchr(s, 0x1b, len) == NULL);
  CHECK(strstr(s, " k=a") != NULL);
  CHECK(strstr(s, " n=1") != NULL);
  free(s);
}

TEST(configure_levels) {
  CHECK_INT(log_configure("verbose", NULL), <, 0);
  CHECK_INT(log_configure(NULL, "xml"), <, 0);
  CHECK_INT(log_configure("warning", "json"), ==, 0);
  CHECK(!log_enabled(LOG_INFO));
  CHECK(log_enabled(LOG_WARN));
  CHECK_INT(log_configure("debug", NULL), ==, 0);
  CHECK(log_enabled(LOG_DEBUG));
  CHECK_INT(log_configure("info", NULL), ==, 0);
}
