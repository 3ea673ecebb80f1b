#include "testlib.h"

#include <stdarg.h>
#include <unistd.h>

#define TL_MAX 512

static struct {
  const char *name;
  tl_fn fn;
} cases[TL_MAX];
static int ncases;
const char *tl_tmpdir;

void tl_register(const char *name, tl_fn fn) {
  if (ncases == TL_MAX) {
    fprintf(stderr, "testlib: too many cases\n");
    exit(2);
  }
  cases[ncases].name = name;
  cases[ncases].fn = fn;
  ncases++;
}

void tl_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "FAIL %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  if (tl_tmpdir) fprintf(stderr, "test files kept in %s\n", tl_tmpdir);
  exit(1);
}

char *tl_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  size_t r;
  while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      cap *= 2;
      char *nb = realloc(buf, cap + 1);
      if (!nb) {
        free(buf);
        buf = NULL;
      }
      buf = nb;
    }
  }
  fclose(f);
  if (!buf) return NULL;
  buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

static int run_case(int i) {
  char tmpl[4096];
  const char *base = getenv("TMPDIR");
  snprintf(tmpl, sizeof tmpl, "%s/relay-unit.XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(tmpl)) {
    perror("mkdtemp");
    return 2;
  }
  tl_tmpdir = tmpl;
  cases[i].fn();
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpl);
  tl_tmpdir = NULL;
  printf("ok %s\n", cases[i].name);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    for (int i = 0; i < ncases; i++) printf("%s\n", cases[i].name);
    return 0;
  }
  for (int i = 0; i < ncases; i++) {
    if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
    int rc = run_case(i);
    if (rc) return rc;
    if (argc > 1) return 0;
  }
  if (argc > 1) {
    fprintf(stderr, "no such case: %s\n", argv[1]);
    return 2;
  }
  return 0;
}
