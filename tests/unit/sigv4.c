/* SigV4 signer: AWS's published vectors byte for byte, the building blocks,
 * errors and the signing-key cache. The vectors are read at run time from
 * RELAY_SHARED_DIR/sigv4-vectors (see its SOURCE.txt): one TEST per vector
 * and variant, plus a test that fails when a vector appears there that no
 * TEST covers. */
#include "testlib.h"

#include <dirent.h>
#include <errno.h>
#include <strings.h>
#include <time.h>

#include <json-c/json.h>

#include "sigv4.h"

#define VEC_DIR RELAY_SHARED_DIR "/sigv4-vectors"

/* ---- a tiny parser for the vectors' HTTP text -------------------------- */

#define MAX_HDRS 32

typedef struct {
  char *text; /* owns every string below */
  char *method, *path, *query, *version;
  sigv4_header h[MAX_HDRS];
  size_t nh;
  char *body;
  size_t body_len;
} http_msg;

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = '\0';
  return s;
}

/* Request line, "Name:value" headers, blank line, body. A line that starts
 * with a blank continues the previous header: the vectors sign each such
 * line as one more value of that header (get-header-value-multiline), so it
 * becomes a repeated header here and the signer joins the values with ','. */
static void parse_http(const char *path, http_msg *m) {
  memset(m, 0, sizeof *m);
  size_t len;
  m->text = tl_read_file(path, &len);
  if (!m->text) tl_fail(__FILE__, __LINE__, "cannot read %s", path);
  char *p = m->text, *end = m->text + len;
  char *nl = memchr(p, '\n', (size_t)(end - p));
  if (nl) *nl = '\0';
  char *line = p;
  p = nl ? nl + 1 : end;
  char *sp1 = strchr(line, ' '), *sp2 = strrchr(line, ' ');
  if (!sp1 || sp1 == sp2) tl_fail(__FILE__, __LINE__, "%s: bad request line", path);
  *sp1 = '\0';
  *sp2 = '\0';
  m->method = line;
  m->path = sp1 + 1;
  m->version = trim(sp2 + 1);
  char *q = strchr(m->path, '?');
  if (q) {
    *q = '\0';
    m->query = q + 1;
  }
  const char *last_name = NULL;
  while (p < end) {
    nl = memchr(p, '\n', (size_t)(end - p));
    if (nl) *nl = '\0';
    line = p;
    p = nl ? nl + 1 : end;
    if (line[0] == '\0' || (line[0] == '\r' && line[1] == '\0')) {
      m->body = p;
      m->body_len = (size_t)(end - p);
      return;
    }
    if (m->nh == MAX_HDRS) tl_fail(__FILE__, __LINE__, "%s: too many headers", path);
    if (line[0] == ' ' || line[0] == '\t') {
      if (!last_name) tl_fail(__FILE__, __LINE__, "%s: continuation first", path);
      m->h[m->nh].name = last_name;
      m->h[m->nh].value = trim(line);
    } else {
      char *colon = strchr(line, ':');
      if (!colon) tl_fail(__FILE__, __LINE__, "%s: header without ':'", path);
      *colon = '\0';
      m->h[m->nh].name = line;
      m->h[m->nh].value = trim(colon + 1);
      last_name = line;
    }
    m->nh++;
  }
  m->body = end;
  m->body_len = 0;
}

/* Removes every header called `name`; returns the value of the first. */
static const char *take_header(http_msg *m, const char *name) {
  const char *v = NULL;
  size_t o = 0;
  for (size_t i = 0; i < m->nh; i++) {
    if (strcasecmp(m->h[i].name, name) == 0) {
      if (!v) v = m->h[i].value;
    } else {
      m->h[o++] = m->h[i];
    }
  }
  m->nh = o;
  return v;
}

static const char *find_header(const http_msg *m, const char *name) {
  for (size_t i = 0; i < m->nh; i++)
    if (strcasecmp(m->h[i].name, name) == 0) return m->h[i].value;
  return NULL;
}

static char *read_vec(const char *rel) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", VEC_DIR, rel);
  char *s = tl_read_file(path, NULL);
  if (!s) tl_fail(__FILE__, __LINE__, "cannot read %s", path);
  return s;
}

/* Every header the signer asks the caller to add must be in the signed
 * request of the vector with exactly that value. */
static void check_added_headers(const sigv4_result *r, const http_msg *signed_req,
                                const char *vec) {
  for (size_t i = 0; i < r->nadd; i++) {
    const char *v = find_header(signed_req, r->add[i].name);
    if (!v || strcmp(v, r->add[i].value) != 0)
      tl_fail(__FILE__, __LINE__, "%s: added header %s: \"%s\" but the vector has \"%s\"", vec,
              r->add[i].name, r->add[i].value, v ? v : "(none)");
  }
}

/* ---- legacy suite: <case>/<case>.{req,creq,sts,authz,sreq} -------------- */

static const time_t LEGACY_TIME = 1440938160; /* 20150830T123600Z */

static void run_legacy(const char *name) {
  char rel[512];
  http_msg req, sreq;
  snprintf(rel, sizeof rel, "%s/%s/%s.req", VEC_DIR, name, name);
  parse_http(rel, &req);
  snprintf(rel, sizeof rel, "%s/%s/%s.sreq", VEC_DIR, name, name);
  parse_http(rel, &sreq);

  /* The signer owns X-Amz-Date and the token header: take them out of the
   * input and pass them as inputs. A token in the .req is signed
   * (post-sts-header-before); one that only the .sreq carries was added
   * after signing (post-sts-header-after). */
  const char *date = take_header(&req, "X-Amz-Date");
  CHECK(date != NULL);
  CHECK_STR(date, "20150830T123600Z");
  sigv4_credentials creds = {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL};
  int sign_token = 0;
  const char *tok = take_header(&req, "X-Amz-Security-Token");
  if (tok) {
    creds.session_token = tok;
    sign_token = 1;
  } else {
    creds.session_token = find_header(&sreq, "X-Amz-Security-Token");
  }

  sigv4_request r = {
      .method = req.method,
      .path = req.path,
      .query = req.query,
      .headers = req.h,
      .nheaders = req.nh,
      .body = (const uint8_t *)req.body,
      .body_len = req.body_len,
      .region = "us-east-1",
      .service = "service",
      .when = LEGACY_TIME,
      .sign_session_token = sign_token,
  };
  sigv4_result out;
  int rc = sigv4_sign(&r, &creds, NULL, &out);
  CHECK_INT(rc, ==, 0);

  snprintf(rel, sizeof rel, "%s/%s.creq", name, name);
  char *creq = read_vec(rel);
  snprintf(rel, sizeof rel, "%s/%s.sts", name, name);
  char *sts = read_vec(rel);
  snprintf(rel, sizeof rel, "%s/%s.authz", name, name);
  char *authz = read_vec(rel);
  CHECK_STR(out.canonical_request, creq);
  CHECK_STR(out.string_to_sign, sts);
  CHECK_STR(out.authorization, authz);
  const char *sig = strstr(authz, "Signature=");
  CHECK(sig != NULL);
  CHECK_STR(out.signature, sig + 10);
  CHECK_STR(find_header(&sreq, "Authorization"), authz);
  CHECK_INT(out.nadd, ==, creds.session_token ? 2 : 1);
  check_added_headers(&out, &sreq, name);

  sigv4_result_free(&out);
  free(creq);
  free(sts);
  free(authz);
  free(req.text);
  free(sreq.text);
}

TEST(vector_get_header_key_duplicate) {
  run_legacy("get-header-key-duplicate");
}
TEST(vector_get_header_value_multiline) {
  run_legacy("get-header-value-multiline");
}
TEST(vector_get_header_value_trim) {
  run_legacy("get-header-value-trim");
}
TEST(vector_get_slash_dot_slash) {
  run_legacy("get-slash-dot-slash");
}
TEST(vector_get_vanilla) {
  run_legacy("get-vanilla");
}
TEST(vector_get_vanilla_query_order_key_case) {
  run_legacy("get-vanilla-query-order-key-case");
}
TEST(vector_get_vanilla_utf8_query) {
  run_legacy("get-vanilla-utf8-query");
}
TEST(vector_post_sts_header_after) {
  run_legacy("post-sts-header-after");
}
TEST(vector_post_sts_header_before) {
  run_legacy("post-sts-header-before");
}
TEST(vector_post_vanilla) {
  run_legacy("post-vanilla");
}
TEST(vector_post_x_www_form_urlencoded) {
  run_legacy("post-x-www-form-urlencoded");
}
TEST(vector_post_x_www_form_urlencoded_parameters) {
  run_legacy("post-x-www-form-urlencoded-parameters");
}

/* ---- aws-c-auth format: context.json + request.txt ---------------------- */

static const char *ctx_str(json_object *o, const char *key, int required) {
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string)) {
    if (required) tl_fail(__FILE__, __LINE__, "context.json: no string \"%s\"", key);
    return NULL;
  }
  return json_object_get_string(v);
}

static int ctx_bool(json_object *o, const char *key) {
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_boolean))
    tl_fail(__FILE__, __LINE__, "context.json: no boolean \"%s\"", key);
  return json_object_get_boolean(v);
}

static time_t parse_iso8601(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!end || *end) tl_fail(__FILE__, __LINE__, "bad timestamp %s", s);
  return timegm(&tm);
}

static void run_crt(const char *name, int query) {
  char rel[512], path[1024];
  snprintf(rel, sizeof rel, "aws-c-auth-format/%s/context.json", name);
  char *ctx_text = read_vec(rel);
  json_object *ctx = json_tokener_parse(ctx_text);
  CHECK(ctx != NULL);
  json_object *jc;
  CHECK(json_object_object_get_ex(ctx, "credentials", &jc));
  sigv4_credentials creds = {ctx_str(jc, "access_key_id", 1), ctx_str(jc, "secret_access_key", 1),
                             ctx_str(jc, "token", 0)};
  /* Path normalisation is always on in this signer (SigV4 for everything but
   * S3); a vector that turns it off would need an S3 mode. */
  CHECK(ctx_bool(ctx, "normalize"));
  json_object *jexp;
  CHECK(json_object_object_get_ex(ctx, "expiration_in_seconds", &jexp));

  snprintf(path, sizeof path, "%s/aws-c-auth-format/%s/request.txt", VEC_DIR, name);
  http_msg req;
  parse_http(path, &req);
  sigv4_request r = {
      .method = req.method,
      .path = req.path,
      .query = req.query,
      .headers = req.h,
      .nheaders = req.nh,
      .body = (const uint8_t *)req.body,
      .body_len = req.body_len,
      .region = ctx_str(ctx, "region", 1),
      .service = ctx_str(ctx, "service", 1),
      .when = parse_iso8601(ctx_str(ctx, "timestamp", 1)),
      /* aws-c-auth signs the token in both variants and, with sign_body,
       * adds and signs x-amz-content-sha256 in the header variant only. */
      .sign_body_header = ctx_bool(ctx, "sign_body"),
      .sign_session_token = 1,
  };
  const char *pfx = query ? "query" : "header";
  sigv4_result out;
  int rc = query ? sigv4_presign(&r, &creds, NULL, (long)json_object_get_int64(jexp), &out)
                 : sigv4_sign(&r, &creds, NULL, &out);
  CHECK_INT(rc, ==, 0);

  snprintf(rel, sizeof rel, "aws-c-auth-format/%s/%s-canonical-request.txt", name, pfx);
  char *creq = read_vec(rel);
  snprintf(rel, sizeof rel, "aws-c-auth-format/%s/%s-string-to-sign.txt", name, pfx);
  char *sts = read_vec(rel);
  snprintf(rel, sizeof rel, "aws-c-auth-format/%s/%s-signature.txt", name, pfx);
  char *sig = read_vec(rel);
  CHECK_STR(out.canonical_request, creq);
  CHECK_STR(out.string_to_sign, sts);
  CHECK_STR(out.signature, sig);

  snprintf(path, sizeof path, "%s/aws-c-auth-format/%s/%s-signed-request.txt", VEC_DIR, name, pfx);
  http_msg sreq;
  parse_http(path, &sreq);
  if (query) {
    CHECK(out.authorization == NULL);
    CHECK_INT(out.nadd, ==, 0);
    CHECK(out.presigned_query != NULL);
    CHECK_STR(sreq.path, req.path);
    CHECK_STR(sreq.query, out.presigned_query);
  } else {
    CHECK_STR(find_header(&sreq, "Authorization"), out.authorization);
    CHECK_INT(out.nadd, ==, 1 + (creds.session_token != NULL) + r.sign_body_header);
    check_added_headers(&out, &sreq, name);
    CHECK(out.presigned_query == NULL);
  }
  /* The signed request carries the body unchanged. */
  CHECK_MEM(sreq.body, sreq.body_len, req.body, req.body_len);

  sigv4_result_free(&out);
  json_object_put(ctx);
  free(ctx_text);
  free(creq);
  free(sts);
  free(sig);
  free(req.text);
  free(sreq.text);
}

TEST(vector_crt_get_vanilla_with_session_token_header) {
  run_crt("get-vanilla-with-session-token", 0);
}
TEST(vector_crt_get_vanilla_with_session_token_query) {
  run_crt("get-vanilla-with-session-token", 1);
}
TEST(vector_crt_post_x_www_form_urlencoded_header) {
  run_crt("post-x-www-form-urlencoded", 0);
}
TEST(vector_crt_post_x_www_form_urlencoded_query) {
  run_crt("post-x-www-form-urlencoded", 1);
}

/* A vector added to the shared directory without a TEST above fails here. */
static const char *const covered[] = {
    "get-header-key-duplicate",
    "get-header-value-multiline",
    "get-header-value-trim",
    "get-slash-dot-slash",
    "get-vanilla",
    "get-vanilla-query-order-key-case",
    "get-vanilla-utf8-query",
    "post-sts-header-after",
    "post-sts-header-before",
    "post-vanilla",
    "post-x-www-form-urlencoded",
    "post-x-www-form-urlencoded-parameters",
    "aws-c-auth-format/get-vanilla-with-session-token",
    "aws-c-auth-format/post-x-www-form-urlencoded",
};

static int count_uncovered(const char *sub) {
  char path[1024];
  snprintf(path, sizeof path, "%s%s%s", VEC_DIR, sub ? "/" : "", sub ? sub : "");
  DIR *d = opendir(path);
  if (!d) tl_fail(__FILE__, __LINE__, "cannot open %s", path);
  int bad = 0, seen = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char full[1400];
    snprintf(full, sizeof full, "%s/%s", path, e->d_name);
    DIR *sd = opendir(full);
    if (!sd) continue; /* a file: SOURCE.txt, licences */
    closedir(sd);
    if (!sub && strcmp(e->d_name, "aws-c-auth-format") == 0) continue;
    char rel[600];
    snprintf(rel, sizeof rel, "%s%s%s", sub ? sub : "", sub ? "/" : "", e->d_name);
    int found = 0;
    for (size_t i = 0; i < sizeof covered / sizeof covered[0]; i++)
      found |= !strcmp(covered[i], rel);
    if (!found) {
      fprintf(stderr, "vector without a TEST: %s\n", rel);
      bad++;
    }
    seen++;
  }
  closedir(d);
  CHECK_INT(seen, >, 0);
  return bad;
}

TEST(vectors_all_covered) {
  CHECK_INT(count_uncovered(NULL) + count_uncovered("aws-c-auth-format"), ==, 0);
}

/* ---- building blocks ---------------------------------------------------- */

static void check_enc(const char *in, int keep_slash, const char *want) {
  char *s = sigv4_uri_encode(in, strlen(in), keep_slash);
  CHECK_STR(s, want);
  free(s);
}

TEST(uri_encode) {
  check_enc("", 0, "");
  check_enc("AZaz09-_.~", 0, "AZaz09-_.~");
  check_enc("a b+c=d&e%f/g", 0, "a%20b%2Bc%3Dd%26e%25f%2Fg");
  check_enc("a b/c", 1, "a%20b/c");
  check_enc("\xe1\x88\xb4", 0, "%E1%88%B4");
  check_enc("*'()!", 0, "%2A%27%28%29%21");
  char *s = sigv4_uri_encode("a\0b", 3, 0);
  CHECK_STR(s, "a%00b");
  free(s);
}

static void check_query(const char *in, const char *want) {
  char *s = sigv4_canonical_query(in);
  CHECK_STR(s, want);
  free(s);
}

TEST(canonical_query) {
  check_query(NULL, "");
  check_query("", "");
  check_query("Param2=value2&Param1=value1", "Param1=value1&Param2=value2");
  /* Upper case sorts before lower case (byte order), equal names by value. */
  check_query("a=2&B=1&a=1", "B=1&a=1&a=2");
  check_query("a&b=&c", "a=&b=&c=");
  check_query("&&a=1&&", "a=1");
  /* Decode, then re-encode: %7E and ~ are the same, '+' is not a space. */
  check_query("x=%7e&y=~&z=a+b&w=%2b", "w=%2B&x=~&y=~&z=a%2Bb");
  check_query("k=a=b", "k=a%3Db");
  check_query("k=%zz%4&j=%", "j=%25&k=%25zz%254");
  check_query("\xe1\x88\xb4=bar", "%E1%88%B4=bar");
  check_query("k=%e1%88%b4", "k=%E1%88%B4");
}

static void check_path(const char *in, const char *want) {
  char *s = sigv4_canonical_path(in);
  CHECK_STR(s, want);
  free(s);
}

TEST(canonical_path) {
  check_path("", "/");
  check_path("/", "/");
  check_path("/./", "/");
  check_path("//", "/");
  check_path("//example//", "/example/");
  check_path("/example/..", "/");
  check_path("/a/b/../c", "/a/c");
  check_path("/a/./b/.", "/a/b/");
  check_path("/../../x", "/x");
  check_path("/a/b", "/a/b");
  check_path("/a/b/", "/a/b/");
  check_path("/example space/", "/example%20space/");
  check_path("/\xe1\x88\xb4", "/%E1%88%B4");
  /* Already-encoded input is encoded again, as AWS does for non-S3 services. */
  check_path("/a%20b", "/a%2520b");
  check_path("/-._~", "/-._~");
  check_path("/.../..a", "/.../..a");
}

TEST(sha256_hex) {
  char out[65];
  sigv4_sha256_hex("", 0, out);
  CHECK_STR(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  sigv4_sha256_hex(NULL, 0, out);
  CHECK_STR(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  sigv4_sha256_hex("Param1=value1", 13, out);
  CHECK_STR(out, "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
}

/* ---- signing: shapes and errors ----------------------------------------- */

static const sigv4_header base_hdrs[] = {{"Host", "sns.us-east-1.amazonaws.com"},
                                         {"Content-Type", "application/x-www-form-urlencoded"}};

static sigv4_request base_req(void) {
  static const char body[] = "Action=Publish&Message=hi";
  sigv4_request r = {
      .method = "POST",
      .path = "/",
      .headers = base_hdrs,
      .nheaders = 2,
      .body = (const uint8_t *)body,
      .body_len = sizeof body - 1,
      .region = "us-east-1",
      .service = "sns",
      .when = LEGACY_TIME,
  };
  return r;
}

static const sigv4_credentials base_creds = {"AKIDEXAMPLE",
                                             "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL};

TEST(sign_header_canonicalisation) {
  /* Case, blank runs, order of repeated headers and tabs: what the
   * canonical request shows, signed header list included. */
  const sigv4_header h[] = {{"Host", "example.amazonaws.com"},
                            {"X-B", "  two\t\twords   here  "},
                            {"x-a", "1"},
                            {"X-A", "0"},
                            {"x-empty", ""}};
  sigv4_request r = base_req();
  r.headers = h;
  r.nheaders = 5;
  r.body = NULL;
  r.body_len = 0;
  r.query = "b=2&a=1";
  sigv4_result out;
  CHECK_INT(sigv4_sign(&r, &base_creds, NULL, &out), ==, 0);
  CHECK_STR(out.canonical_request,
            "POST\n/\na=1&b=2\nhost:example.amazonaws.com\nx-a:1,0\nx-amz-date:20150830T123600Z\n"
            "x-b:two words here\nx-empty:\n\nhost;x-a;x-amz-date;x-b;x-empty\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK_STR(out.signed_headers, "host;x-a;x-amz-date;x-b;x-empty");
  CHECK_STR(out.amz_date, "20150830T123600Z");
  CHECK_INT(out.nadd, ==, 1);
  CHECK_STR(out.add[0].name, "X-Amz-Date");
  CHECK_STR(out.add[0].value, "20150830T123600Z");
  /* The authorization is built from the parts reported alongside it. */
  char want[512];
  snprintf(want, sizeof want,
           "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/sns/aws4_request, "
           "SignedHeaders=%s, Signature=%s",
           out.signed_headers, out.signature);
  CHECK_STR(out.authorization, want);
  sigv4_result_free(&out);
}

TEST(sign_token_and_body_header) {
  sigv4_credentials c = base_creds;
  c.session_token = "TOKEN/+=";
  sigv4_request r = base_req();
  r.sign_session_token = 1;
  r.sign_body_header = 1;
  sigv4_result out;
  CHECK_INT(sigv4_sign(&r, &c, NULL, &out), ==, 0);
  CHECK_STR(out.signed_headers,
            "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token");
  CHECK_INT(out.nadd, ==, 3);
  CHECK_STR(out.add[0].name, "X-Amz-Date");
  CHECK_STR(out.add[1].name, "X-Amz-Security-Token");
  CHECK_STR(out.add[1].value, "TOKEN/+=");
  CHECK_STR(out.add[2].name, "x-amz-content-sha256");
  CHECK_STR(out.add[2].value, out.payload_hash);
  char h[65];
  sigv4_sha256_hex(r.body, r.body_len, h);
  CHECK_STR(out.payload_hash, h);
  CHECK(strstr(out.canonical_request, "\nx-amz-security-token:TOKEN/+=\n") != NULL);
  char sig_signed[65];
  memcpy(sig_signed, out.signature, 65);

  /* A copy by value stays valid: nothing points into the struct itself. */
  sigv4_result copy = out;
  memset(&out, 0xAA, sizeof out);
  CHECK_STR(copy.add[1].value, "TOKEN/+=");
  sigv4_result_free(&copy);

  /* Unsigned token: still to be sent, but not in the canonical request. */
  r.sign_session_token = 0;
  r.sign_body_header = 0;
  CHECK_INT(sigv4_sign(&r, &c, NULL, &out), ==, 0);
  CHECK_STR(out.signed_headers, "content-type;host;x-amz-date");
  CHECK_INT(out.nadd, ==, 2);
  CHECK_STR(out.add[1].value, "TOKEN/+=");
  CHECK(strstr(out.canonical_request, "security") == NULL);
  CHECK(strcmp(out.signature, sig_signed) != 0);
  sigv4_result_free(&out);

  /* An empty token is no token. */
  c.session_token = "";
  r.sign_session_token = 1;
  CHECK_INT(sigv4_sign(&r, &c, NULL, &out), ==, 0);
  CHECK_INT(out.nadd, ==, 1);
  CHECK_STR(out.signed_headers, "content-type;host;x-amz-date");
  sigv4_result_free(&out);
}

TEST(sign_time_formatting) {
  sigv4_request r = base_req();
  sigv4_result out;
  r.when = 0;
  CHECK_INT(sigv4_sign(&r, &base_creds, NULL, &out), ==, 0);
  CHECK_STR(out.amz_date, "19700101T000000Z");
  CHECK(strstr(out.authorization, "/19700101/us-east-1/sns/aws4_request,") != NULL);
  sigv4_result_free(&out);
  r.when = 951868799; /* leap day 2000, last second */
  CHECK_INT(sigv4_sign(&r, &base_creds, NULL, &out), ==, 0);
  CHECK_STR(out.amz_date, "20000229T235959Z");
  sigv4_result_free(&out);
  r.when = (time_t)253402300800LL; /* year 10000 */
  CHECK_INT(sigv4_sign(&r, &base_creds, NULL, &out), ==, -EINVAL);
}

static void expect_einval(sigv4_request r, sigv4_credentials c, const char *what) {
  sigv4_result out;
  memset(&out, 0x5A, sizeof out);
  int rc = sigv4_sign(&r, &c, NULL, &out);
  if (rc != -EINVAL) {
    if (rc == 0) sigv4_result_free(&out);
    tl_fail(__FILE__, __LINE__, "%s: rc %d, want -EINVAL", what, rc);
  }
}

TEST(sign_errors) {
  sigv4_request r;
  sigv4_credentials c;
#define BAD(stmt, what)        \
  do {                         \
    r = base_req();            \
    c = base_creds;            \
    stmt;                      \
    expect_einval(r, c, what); \
  } while (0)
  BAD(r.method = NULL, "no method");
  BAD(r.method = "", "empty method");
  BAD(r.method = "GET X", "method with a space");
  BAD(r.path = NULL, "no path");
  BAD(r.region = "", "empty region");
  BAD(r.region = "us/east", "region with '/'");
  BAD(r.service = NULL, "no service");
  BAD(c.access_key_id = "", "empty key id");
  BAD(c.access_key_id = "AK/ID", "key id with '/'");
  BAD(c.secret_access_key = NULL, "no secret");
  BAD(c.session_token = "a\nb", "token with LF");
  BAD(r.nheaders = 1; r.headers = NULL, "headers NULL");
  BAD(r.body = NULL, "body NULL with a length");
  BAD(r.nheaders = 1; r.headers = base_hdrs + 1, "no host");
  static const sigv4_header empty_name[] = {{"Host", "h"}, {"", "v"}};
  BAD(r.headers = empty_name, "empty header name");
  static const sigv4_header colon_name[] = {{"Host", "h"}, {"a:b", "v"}};
  BAD(r.headers = colon_name, "header name with ':'");
  static const sigv4_header crlf_value[] = {{"Host", "h"}, {"x", "v\r\nInjected: 1"}};
  BAD(r.headers = crlf_value, "CRLF in value");
  static const sigv4_header null_value[] = {{"Host", "h"}, {"x", NULL}};
  BAD(r.headers = null_value, "NULL value");
  static const sigv4_header own_date[] = {{"Host", "h"}, {"x-amz-date", "20150830T123600Z"}};
  BAD(r.headers = own_date, "caller's x-amz-date");
  static const sigv4_header own_tok[] = {{"Host", "h"}, {"X-Amz-Security-Token", "t"}};
  BAD(r.headers = own_tok; c.session_token = "t", "token twice");
  static const sigv4_header own_sha[] = {{"Host", "h"}, {"x-amz-content-sha256", "x"}};
  BAD(r.headers = own_sha; r.sign_body_header = 1, "content hash twice");
#undef BAD
  /* Without a token in the credentials, the caller's token header is just a
   * header. */
  r = base_req();
  r.headers = own_tok;
  sigv4_result out;
  CHECK_INT(sigv4_sign(&r, &base_creds, NULL, &out), ==, 0);
  CHECK_STR(out.signed_headers, "host;x-amz-date;x-amz-security-token");
  sigv4_result_free(&out);

  r = base_req();
  CHECK_INT(sigv4_presign(&r, &base_creds, NULL, 0, &out), ==, -EINVAL);
  CHECK_INT(sigv4_presign(&r, &base_creds, NULL, 604801, &out), ==, -EINVAL);
  CHECK_INT(sigv4_presign(&r, &base_creds, NULL, 604800, &out), ==, 0);
  sigv4_result_free(&out);
  CHECK_INT(sigv4_sign(NULL, &base_creds, NULL, &out), ==, -EINVAL);
  CHECK_INT(sigv4_sign(&r, NULL, NULL, &out), ==, -EINVAL);
  sigv4_result_free(NULL);
}

/* ---- signing-key cache -------------------------------------------------- */

static void hex(const unsigned char *k, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", k[i]);
}

TEST(key_known_answer) {
  /* AWS General Reference, "Examples of how to derive a signing key":
   * 20120215 / us-east-1 / iam with the example secret. */
  sigv4_key_cache cache = {0};
  sigv4_request r = base_req();
  r.service = "iam";
  r.when = 1329264000; /* 2012-02-15 */
  sigv4_result out;
  CHECK_INT(sigv4_sign(&r, &base_creds, &cache, &out), ==, 0);
  sigv4_result_free(&out);
  CHECK(cache.valid);
  char k[65];
  hex(cache.key, 32, k);
  CHECK_STR(k, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
  CHECK_STR(cache.date, "20120215");
  CHECK_STR(cache.region, "us-east-1");
  CHECK_STR(cache.service, "iam");
  /* The secret is not stored, only its digest. */
  CHECK(memmem(&cache, sizeof cache, base_creds.secret_access_key,
               strlen(base_creds.secret_access_key)) == NULL);
  sigv4_key_cache_clear(&cache);
  CHECK(!cache.valid);
  static const unsigned char zero[32];
  CHECK(memcmp(cache.key, zero, 32) == 0);
}

/* Signs with and without the cache; returns 1 when the cached signature
 * differs from a fresh one, i.e. the (deliberately poisoned) cached key was
 * used. */
static int sign_used_poison(sigv4_request *r, const sigv4_credentials *c, sigv4_key_cache *cache) {
  sigv4_result a, b;
  CHECK_INT(sigv4_sign(r, c, cache, &a), ==, 0);
  CHECK_INT(sigv4_sign(r, c, NULL, &b), ==, 0);
  int differ = strcmp(a.signature, b.signature) != 0;
  CHECK_STR(a.canonical_request, b.canonical_request);
  sigv4_result_free(&a);
  sigv4_result_free(&b);
  return differ;
}

static void poison(sigv4_key_cache *cache) {
  CHECK(cache->valid);
  cache->key[0] ^= 0xFF;
}

TEST(key_cache_hit_and_invalidation) {
  sigv4_key_cache cache = {0};
  sigv4_request r = base_req();
  sigv4_credentials c = base_creds;
  r.when = LEGACY_TIME;

  /* First use derives and fills the cache; signatures match an uncached
   * signer. */
  CHECK(!sign_used_poison(&r, &c, &cache));
  CHECK(cache.valid);
  CHECK_STR(cache.date, "20150830");
  unsigned char key1[32];
  memcpy(key1, cache.key, 32);

  /* Hit: same day (a few hours later), region, service, secret. The key in
   * the cache is used as is, so a poisoned one shows in the signature. */
  poison(&cache);
  r.when = LEGACY_TIME + 3 * 3600;
  CHECK(sign_used_poison(&r, &c, &cache));
  cache.key[0] ^= 0xFF;
  CHECK(memcmp(cache.key, key1, 32) == 0);

  /* Miss on a new day: re-derived, the poison is gone. */
  poison(&cache);
  r.when = LEGACY_TIME + 86400;
  CHECK(!sign_used_poison(&r, &c, &cache));
  CHECK_STR(cache.date, "20150831");
  CHECK(memcmp(cache.key, key1, 32) != 0);

  /* Miss on a new region. */
  poison(&cache);
  r.region = "eu-west-1";
  CHECK(!sign_used_poison(&r, &c, &cache));
  CHECK_STR(cache.region, "eu-west-1");

  /* Miss on a new service. */
  poison(&cache);
  r.service = "sqs";
  CHECK(!sign_used_poison(&r, &c, &cache));
  CHECK_STR(cache.service, "sqs");

  /* Miss on a new secret (credentials rotated), same everything else. */
  poison(&cache);
  c.secret_access_key = "rotatedsecretrotatedsecretrotatedsecret0";
  CHECK(!sign_used_poison(&r, &c, &cache));

  /* And a hit again right after. */
  poison(&cache);
  CHECK(sign_used_poison(&r, &c, &cache));

  /* A region too long to cache is still signed correctly. */
  sigv4_key_cache_clear(&cache);
  r.region = "a-region-name-longer-than-thirty-one-characters";
  CHECK(!sign_used_poison(&r, &c, &cache));
  CHECK(!cache.valid);
}
