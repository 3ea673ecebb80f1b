/* Fuzz target: ingest_parse_event() (relay/ingest.c), the single-pass JSON
 * validator/extractor, differential against json-c.
 *
 * Input: the request body, as is.
 * Properties: the scanner answers 0 or -EINVAL (never -ENOMEM here) and
 * accepts exactly the bodies that are an RFC 8259 JSON text (UTF-8, RFC
 * 3629) whose top value is an object with a string member "type", nested
 * at most 128 deep (the top object is depth 1); when it accepts, type,
 * cid, channel_type, channel_id and user_id equal what a DOM user of
 * json-c reads from the same body (last duplicate key wins, a field counts
 * only when it is a string, user_id from user.id else user_id, empty
 * optional fields absent).
 *
 * The reference is json_tokener in JSON_TOKENER_STRICT |
 * JSON_TOKENER_VALIDATE_UTF8 mode, the whole input consumed (only JSON
 * whitespace after the value). json-c 0.16 is more lenient than RFC 8259
 * even in strict mode, so a small lexer here (rfc_scan) flags the
 * constructs it lets through; a body with any of them must be REJECTED by
 * the scanner (they are not JSON), the reference is not asked:
 *   - raw control bytes (< 0x20) inside strings (json-c keeps them; a raw
 *     NUL makes json-c stop as at end of input);
 *   - invalid UTF-8 anywhere: overlong forms, UTF-16 surrogates encoded in
 *     UTF-8, code points above U+10FFFF (json-c's validation only checks
 *     the lead/continuation byte pattern);
 *   - single-quoted strings (json-c accepts 'type' even when strict);
 *   - NaN, Infinity, -Infinity;
 *   - "1." and "1.e5" (no digit after the point), "-.5" (none before it),
 *     "-01" and, inside arrays, "00" (leading zeros).
 * Other normalisations:
 *   - nesting: json-c gets a depth limit far above 128 and the lexer
 *     measures the depth itself, so the 128 boundary is checked exactly;
 *   - a \u0000 escape inside a KEY: json-c strdup()s keys, so "type\u0000x"
 *     would become "type" there; the reference parses a copy in which such
 *     escapes (in keys only) read \u0001, which no field name contains
 *     either, so the answer must not change;
 *   - a \u0000 escape inside a VALUE: the routing fields are C strings (as
 *     rq_record's are), and a value cut at its U+0000 would route the event
 *     by a prefix of its field, so the scanner makes such a value empty
 *     (an optional field is then absent, a type is ""); the reference
 *     reads a string whose length is not its strlen() as "";
 *   - lone surrogate escapes (\ud800 not followed by a low surrogate
 *     escape, or a lone \udc00): RFC 8259 section 8.2 allows them in the
 *     grammar; both sides decode each to U+FFFD (an SNS attribute must be
 *     valid Unicode) and accept the body;
 *   - json-c 0.16 decodes the surrogate pairs of U+xD800..U+xDFFF in every
 *     supplementary plane (\ud836\ude00 is U+1DA00, F0 9D A8 80) as one
 *     U+FFFD: it tests the combined code point's low 16 bits for a
 *     surrogate. The scanner decodes them right (tests/unit/ingest_test.c
 *     pins the bytes); for a body with such a pair only the accept/reject
 *     answer is compared, not the fields;
 *   - duplicate keys: both take the last one; very large numbers (1e400,
 *     2^64): valid JSON, both accept; neither needs normalising.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"

#define FAIL(...)                                   \
  do {                                              \
    fprintf(stderr, "fuzz_json: " __VA_ARGS__);     \
    fprintf(stderr, "\n");                          \
    abort();                                        \
  } while (0)

#define MAX_DEPTH 128

/* Length of the valid UTF-8 sequence at p (p[0] >= 0x80), 0 if invalid. */
static size_t utf8_seq(const uint8_t *p, size_t left) {
  uint8_t c = p[0];
  size_t n;
  uint32_t cp, min;
  if ((c & 0xe0) == 0xc0) n = 2, cp = c & 0x1fu, min = 0x80;
  else if ((c & 0xf0) == 0xe0) n = 3, cp = c & 0x0fu, min = 0x800;
  else if ((c & 0xf8) == 0xf0) n = 4, cp = c & 0x07u, min = 0x10000;
  else return 0;
  if (left < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (p[i] & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

static int is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

static int hex4(const uint8_t *p, uint32_t *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    uint8_t c = p[i];
    int h = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (h < 0) return 0;
    *v = *v << 4 | (uint32_t)h;
  }
  return 1;
}

/* 1 when the escape at b[i] ('\\') starts a surrogate pair that json-c
 * 0.16 decodes wrongly (see the top of the file). */
static int jsonc_bad_pair(const uint8_t *b, size_t i, size_t to) {
  uint32_t hi, lo;
  if (i + 12 > to || b[i + 1] != 'u' || b[i + 6] != '\\' || b[i + 7] != 'u') return 0;
  if (!hex4(b + i + 2, &hi) || !hex4(b + i + 8, &lo)) return 0;
  if (hi < 0xd800 || hi > 0xdbff || lo < 0xdc00 || lo > 0xdfff) return 0;
  uint32_t cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
  return (cp & 0xf800) == 0xd800;
}

/* Rewrites the \u0000 escapes of the string body b[from, to) in copy. */
static void key_nul_escapes(const uint8_t *b, size_t from, size_t to, uint8_t *copy) {
  for (size_t i = from; i < to; i++) {
    if (b[i] != '\\') continue;
    if (i + 5 < to && b[i + 1] == 'u' && memcmp(b + i + 2, "0000", 4) == 0) copy[i + 5] = '1';
    i++; /* the escaped character */
  }
}

/* Flags the constructs json-c accepts against RFC 8259 (returns 1), measures
 * the nesting depth outside strings, and fills copy (same length) for the
 * reference. */
static int rfc_scan(const uint8_t *b, size_t n, uint8_t *copy, int *max_depth, int *bad_pair) {
  int bad = 0, depth = 0;
  *max_depth = 0;
  *bad_pair = 0;
  memcpy(copy, b, n);
  for (size_t i = 0; i < n; i++) {
    uint8_t c = b[i];
    if (c >= 0x80) {
      size_t l = utf8_seq(b + i, n - i);
      if (!l) return 1;
      i += l - 1;
      continue;
    }
    if (c == '"') {
      size_t start = ++i;
      while (i < n && b[i] != '"') {
        if (b[i] < 0x20) bad = 1;
        if (b[i] >= 0x80) {
          size_t l = utf8_seq(b + i, n - i);
          if (!l) return 1;
          i += l;
          continue;
        }
        if (b[i] == '\\' && jsonc_bad_pair(b, i, n)) *bad_pair = 1;
        i += b[i] == '\\' ? 2 : 1;
      }
      if (i >= n) return bad; /* unterminated: json-c rejects it too */
      size_t j = i + 1;
      while (j < n && is_ws(b[j])) j++;
      if (j < n && b[j] == ':') key_nul_escapes(b, start, i, copy);
      continue;
    }
    if (c < 0x20 && !is_ws(c)) bad = 1;
    if (c == '\'' || c == 'N' || c == 'I') bad = 1;
    if (c == '.' && (i + 1 >= n || !is_digit(b[i + 1]) || i == 0 || !is_digit(b[i - 1])))
      bad = 1;
    /* A number's integer part starting with 0 and going on ("00", "-01");
     * "10", "0.01" and an exponent's "e-01" are fine. */
    if (c == '0' && i + 1 < n && is_digit(b[i + 1])) {
      uint8_t p = i > 0 ? b[i - 1] : ' ';
      uint8_t pp = i > 1 ? b[i - 2] : ' ';
      int starts = !is_digit(p) && p != '.' && p != 'e' && p != 'E' && p != '+' &&
                   !(p == '-' && (pp == 'e' || pp == 'E'));
      if (starts) bad = 1;
    }
    if (c == '{' || c == '[') {
      if (++depth > *max_depth) *max_depth = depth;
    } else if ((c == '}' || c == ']') && depth > 0) {
      depth--;
    }
  }
  return bad;
}

/* A string member of o as a C string; NULL when absent or not a string. */
static const char *member_str(json_object *o, const char *key) {
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  const char *s = json_object_get_string(v);
  return strlen(s) == (size_t)json_object_get_string_len(v) ? s : "";
}

static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

static void check_field(const char *name, const char *mine, const char *ref) {
  if (!mine && !ref) return;
  if (!mine || !ref || strcmp(mine, ref) != 0)
    FAIL("field %s: scanner \"%s\", json-c \"%s\"", name, mine ? mine : "(absent)",
         ref ? ref : "(absent)");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 1 << 20) return 0;
  uint8_t *copy = malloc(size ? size : 1);
  if (!copy) return 0;
  int depth, bad_pair;
  int lenient = rfc_scan(data, size, copy, &depth, &bad_pair);

  /* The scanner on an exact-size copy, so ASan sees any read past the end. */
  uint8_t *body = malloc(size ? size : 1);
  if (!body) {
    free(copy);
    return 0;
  }
  memcpy(body, data, size);
  ingest_fields f;
  int rc = ingest_parse_event(body, size, &f);
  free(body);
  if (rc != 0 && rc != -EINVAL) FAIL("returned %d", rc);

  json_object *doc = NULL, *type = NULL;
  int ok = 0;
  if (!lenient && depth <= MAX_DEPTH) {
    json_tokener *tok = json_tokener_new_ex(MAX_DEPTH * 8);
    if (!tok) abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    doc = json_tokener_parse_ex(tok, (const char *)copy, (int)size);
    ok = doc && json_tokener_get_error(tok) == json_tokener_success;
    for (size_t i = tok->char_offset; ok && i < size; i++)
      if (!is_ws(copy[i])) ok = 0;
    json_tokener_free(tok);
    ok = ok && json_object_is_type(doc, json_type_object) &&
         json_object_object_get_ex(doc, "type", &type) &&
         json_object_is_type(type, json_type_string);
  }
  if ((rc == 0) != ok)
    FAIL("scanner %s, reference %s (rfc-lenient %d, depth %d) on %zu bytes: %.*s",
         rc == 0 ? "accepts" : "rejects", ok ? "accepts" : "rejects", lenient, depth, size,
         (int)(size > 400 ? 400 : size), (const char *)data);
  if (rc == 0 && !f.json_) FAIL("accepted without storage");
  if (rc == 0 && !bad_pair) {
    check_field("type", f.type, member_str(doc, "type"));
    check_field("cid", f.cid, nonempty(member_str(doc, "cid")));
    check_field("channel_type", f.channel_type, nonempty(member_str(doc, "channel_type")));
    check_field("channel_id", f.channel_id, nonempty(member_str(doc, "channel_id")));
    json_object *user;
    const char *uid = NULL;
    if (json_object_object_get_ex(doc, "user", &user) && json_object_is_type(user, json_type_object))
      uid = nonempty(member_str(user, "id"));
    if (!uid) uid = nonempty(member_str(doc, "user_id"));
    check_field("user_id", f.user_id, uid);
  }
  if (rc == 0) ingest_fields_free(&f);
  json_object_put(doc);
  free(copy);
  return 0;
}
