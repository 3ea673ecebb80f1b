/* Minimal unit-test harness: one binary per module, one CTest test per case.
 *
 *   TEST(append_then_lease) { ... CHECK(x == 1); ... }
 *
 * The binary runs the case named by argv[1] (all cases without argument) in a
 * fresh temporary directory `tl_tmpdir`, removed when the case passes. A
 * failed CHECK prints file:line and the expression and exits 1.
 */
#ifndef TESTLIB_H
#define TESTLIB_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*tl_fn)(void);
void tl_register(const char *name, tl_fn fn);
void tl_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* Fresh per-case temporary directory (absolute path). */
extern const char *tl_tmpdir;

#define TEST(name)                                                         \
  static void test_##name(void);                                           \
  __attribute__((constructor)) static void tl_reg_##name(void) {           \
    tl_register(#name, test_##name);                                       \
  }                                                                        \
  static void test_##name(void)

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) tl_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);          \
  } while (0)

#define CHECK_INT(a, op, b)                                                \
  do {                                                                     \
    long long tl_a = (long long)(a), tl_b = (long long)(b);                \
    if (!(tl_a op tl_b))                                                   \
      tl_fail(__FILE__, __LINE__, "%s %s %s (%lld vs %lld)", #a, #op, #b,  \
              tl_a, tl_b);                                                 \
  } while (0)

#define CHECK_STR(a, b)                                                    \
  do {                                                                     \
    const char *tl_a = (a), *tl_b = (b);                                   \
    if (!tl_a || !tl_b || strcmp(tl_a, tl_b) != 0)                        \
      tl_fail(__FILE__, __LINE__, "%s == %s (\"%s\" vs \"%s\")", #a, #b,   \
              tl_a ? tl_a : "(null)", tl_b ? tl_b : "(null)");             \
  } while (0)

#define CHECK_MEM(a, alen, b, blen)                                        \
  do {                                                                     \
    size_t tl_al = (alen), tl_bl = (blen);                                 \
    if (tl_al != tl_bl || memcmp((a), (b), tl_al) != 0)                    \
      tl_fail(__FILE__, __LINE__, "%s == %s (lengths %zu vs %zu)", #a, #b, \
              tl_al, tl_bl);                                               \
  } while (0)

/* Reads a whole file; returns malloc'd bytes (NUL-terminated) or NULL. */
char *tl_read_file(const char *path, size_t *len);

#endif
