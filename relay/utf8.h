/* Strict UTF-8 (RFC 3629), shared by the places that check text from
 * outside before passing it on: log lines (log.c), admin JSON
 * (admin_common.c) and SNS attribute values (sns_request.c). The JSON
 * scanner on the ingest path has its own, word-at-a-time one (ingest.c). */
#ifndef RELAY_UTF8_H
#define RELAY_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (2-4) of the well-formed multi-byte sequence at s, whose first
 * byte is >= 0x80, reading at most avail bytes, with its code point in
 * *cp; 0 when the bytes are not one (overlong, surrogate, above U+10FFFF,
 * cut short). A NUL is no continuation byte, so a NUL-terminated string
 * may pass SIZE_MAX. */
static inline size_t utf8_decode(const unsigned char *s, size_t avail, uint32_t *cp) {
  unsigned c = s[0];
  size_t n;
  uint32_t v, min;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, v = c & 0x1f, min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3, v = c & 0x0f, min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (avail < n) return 0;
  for (size_t j = 1; j < n; j++) {
    if ((s[j] & 0xc0) != 0x80) return 0;
    v = (v << 6) | (s[j] & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return n;
}

#endif
