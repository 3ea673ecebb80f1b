/* ingest: every status of SPEC "Webhook ingest", with the real queue, the
 * real group committer and real sockets. relayd's loop runs on a thread;
 * the test is a blocking HTTP client. The queue is inspected after the
 * fixture stopped (or through read-only calls). */
#include "ingest.h"

#include <json-c/json.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "http_testclient.h"
#include "testlib.h"

/* ---- helpers ------------------------------------------------------------ */

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Independent of ingest_hmac_hex(): the test's own signer. */
static void sign(const char *secret, const void *body, size_t len, char out[65]) {
  unsigned char mac[32];
  unsigned int ml = 0;
  HMAC(EVP_sha256(), secret, (int)strlen(secret), body, len, mac, &ml);
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

static uint8_t *gz(const void *data, size_t len, size_t *out_len) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  CHECK_INT(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY), ==, Z_OK);
  size_t cap = deflateBound(&zs, len) + 64;
  uint8_t *out = malloc(cap);
  zs.next_in = (Bytef *)data;
  zs.avail_in = (uInt)len;
  zs.next_out = out;
  zs.avail_out = (uInt)cap;
  CHECK_INT(deflate(&zs, Z_FINISH), ==, Z_STREAM_END);
  *out_len = cap - zs.avail_out;
  deflateEnd(&zs);
  return out;
}

typedef struct {
  char *p;
  size_t len;
} raw;

/* A webhook request: headers may be NULL; sig_body is what gets signed
 * (NULL: the body itself); secret NULL: no X-Signature. */
static raw mkreq(const char *path, const char *api_key, const char *secret, const char *wid,
                 const void *body, size_t len, const void *sig_body, size_t sig_len,
                 const char *extra) {
  char sig[65] = "";
  if (secret) sign(secret, sig_body ? sig_body : body, sig_body ? sig_len : len, sig);
  raw r;
  size_t hcap = 2048 + (extra ? strlen(extra) : 0);
  r.p = malloc(len + hcap);
  int n = snprintf(r.p, 2048,
                   "POST %s HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n%s%s%s%s%s%s%s%s%s\r\n",
                   path, len, api_key ? "X-Api-Key: " : "", api_key ? api_key : "",
                   api_key ? "\r\n" : "", secret ? "X-Signature: " : "", secret ? sig : "",
                   secret ? "\r\n" : "", wid ? "X-Webhook-Id: " : "", wid ? wid : "",
                   wid ? "\r\n" : "");
  if (extra) {
    /* insert before the final CRLF */
    n -= 2;
    n += snprintf(r.p + n, hcap - (size_t)n, "%s\r\n\r\n", extra);
  }
  memcpy(r.p + n, body, len);
  r.len = (size_t)n + len;
  return r;
}

static raw event_req(const char *wid, const char *body) {
  return mkreq("/", "key1", "s3cret", wid, body, strlen(body), NULL, 0, NULL);
}

static const char *EV = "{\"type\":\"message.new\",\"cid\":\"messaging:general\","
                        "\"channel_type\":\"messaging\",\"channel_id\":\"general\","
                        "\"user\":{\"id\":\"alice\"},\"message\":{\"text\":\"hi\"}}";

/* ---- fixture: relayd's ingest half on a loop thread ----------------------- */

typedef struct fixture {
  uv_loop_t loop;
  uv_thread_t th;
  uv_async_t cmd;
  atomic_int command; /* 1 stop, 2 ack everything ready */
  uv_sem_t sem;
  rq_env *env;
  committer *commit;
  ingest *ing;
  relay_config cfg;
  cfg_app_secret secrets[3];
  int port;
  atomic_int stored_events;
  atomic_int outcomes[600];
  atomic_int acks_pending;
  ingest_stats final;
  commit_stats cstats;
  uint64_t map_size;
} fixture;

static void on_outcome(void *arg, int status, const char *reason) {
  fixture *f = arg;
  (void)reason;
  atomic_fetch_add(&f->outcomes[status], 1);
}

static void on_stored(void *arg) {
  fixture *f = arg;
  atomic_fetch_add(&f->stored_events, 1);
}

static void on_committer_closed(void *arg) {
  fixture *f = arg;
  uv_close((uv_handle_t *)&f->cmd, NULL);
}

static void on_ingest_closed(void *arg) {
  fixture *f = arg;
  committer_get_stats(f->commit, &f->cstats);
  committer_close(f->commit, on_committer_closed, f);
}

static void on_ack(commit_op *op) {
  fixture *f = op->arg;
  free(op);
  if (atomic_fetch_sub(&f->acks_pending, 1) == 1) uv_sem_post(&f->sem);
}

static void on_cmd(uv_async_t *a) {
  fixture *f = a->data;
  int c = atomic_exchange(&f->command, 0);
  if (c == 1) {
    ingest_get_stats(f->ing, &f->final);
    ingest_close(f->ing, 3000, on_ingest_closed, f);
  } else if (c == 2) {
    rq_record *recs = NULL;
    int n = rq_lease(f->env, INT64_MAX, 1000000, 0, &recs);
    CHECK(n >= 0);
    if (n == 0) {
      uv_sem_post(&f->sem);
    } else {
      atomic_store(&f->acks_pending, n);
      for (int i = 0; i < n; i++) {
        commit_op *op = calloc(1, sizeof *op);
        op->kind = COMMIT_ACK;
        op->seq = recs[i].seq;
        op->cb = on_ack;
        op->arg = f;
        committer_submit(f->commit, op);
      }
    }
    rq_records_free(recs, (size_t)(n > 0 ? n : 0));
  }
}

static void run(void *arg) {
  fixture *f = arg;
  CHECK_INT(uv_loop_init(&f->loop), ==, 0);
  uv_async_init(&f->loop, &f->cmd, on_cmd);
  f->cmd.data = f;
  CHECK_INT(committer_new(&f->commit, &f->loop, f->env, 0), ==, 0);
  /* "localhost" as an operator may spell it: the listener parses it with
   * cfg_parse_listen(), the parser that validated the configuration. */
  ingest_options o = {.cfg = &f->cfg, .env = f->env, .commit = f->commit,
                      .listen = "localhost:0", .on_stored = on_stored,
                      .on_outcome = on_outcome, .arg = f};
  CHECK_INT(ingest_new(&f->ing, &f->loop, &o), ==, 0);
  f->port = ingest_port(f->ing);
  uv_sem_post(&f->sem);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&f->loop), ==, 0);
}

static fixture *fixture_new(uint64_t map_size) {
  signal(SIGPIPE, SIG_IGN);
  fixture *f = calloc(1, sizeof *f);
  f->map_size = map_size;
  f->secrets[0] = (cfg_app_secret){"key1", "old-secret"};
  f->secrets[1] = (cfg_app_secret){"key1", "s3cret"};
  f->secrets[2] = (cfg_app_secret){"key2", "other"};
  f->cfg.secrets = f->secrets;
  f->cfg.nsecrets = 3;
  f->cfg.max_body_bytes = 4194304;
  f->cfg.max_message_bytes = 262144;
  f->cfg.http_max_connections = 256;
  f->cfg.http_max_header_bytes = 16384;
  f->cfg.http_header_timeout_ms = 5000;
  f->cfg.http_body_timeout_ms = 5000;
  f->cfg.http_idle_timeout_ms = 10000;
  rq_options ro = {.map_size = map_size};
  CHECK_INT(rq_env_open(&f->env, tl_tmpdir, &ro), ==, 0);
  uv_sem_init(&f->sem, 0);
  return f;
}

static void fixture_start(fixture *f) {
  uv_thread_create(&f->th, run, f);
  uv_sem_wait(&f->sem);
  CHECK(f->port > 0);
}

static fixture *start(void) {
  fixture *f = fixture_new(0);
  fixture_start(f);
  return f;
}

static void fixture_stop(fixture *f) {
  atomic_store(&f->command, 1);
  uv_async_send(&f->cmd);
  uv_thread_join(&f->th);
}

static void fixture_free(fixture *f) {
  rq_env_close(f->env);
  uv_sem_destroy(&f->sem);
  free(f);
}

static void ack_all(fixture *f) {
  atomic_store(&f->command, 2);
  uv_async_send(&f->cmd);
  uv_sem_wait(&f->sem);
}

static int post(fixture *f, raw r, tc_resp *out) {
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  CHECK_INT(tc_send(&c, r.p, r.len), ==, 0);
  free(r.p);
  tc_resp resp;
  int rc = tc_read(&c, &resp, 10000);
  tc_close(&c);
  if (rc < 0) return -1;
  if (out) *out = resp;
  else tc_resp_free(&resp);
  return resp.status;
}

static uint64_t ready_count(fixture *f) {
  rq_stats st;
  CHECK_INT(rq_stat(f->env, &st), ==, 0);
  return st.ready;
}

static uint64_t dlq_count(fixture *f) {
  rq_stats st;
  CHECK_INT(rq_stat(f->env, &st), ==, 0);
  return st.dlq;
}

/* ---- pure parts ------------------------------------------------------------ */

TEST(gunzip_limits) {
  const char *text = "hello hello hello hello";
  size_t zl;
  uint8_t *z = gz(text, strlen(text), &zl);
  CHECK(ingest_is_gzip(z, zl));
  uint8_t *out;
  size_t ol;
  CHECK_INT(ingest_gunzip(z, zl, 1000, &out, &ol), ==, 0);
  CHECK_MEM(out, ol, text, strlen(text));
  free(out);
  /* exactly at the cap, one below */
  CHECK_INT(ingest_gunzip(z, zl, strlen(text), &out, &ol), ==, 0);
  free(out);
  CHECK_INT(ingest_gunzip(z, zl, strlen(text) - 1, &out, &ol), ==, -E2BIG);
  CHECK(out == NULL);
  /* truncated at every length */
  for (size_t cut = 0; cut < zl; cut++) {
    int rc = ingest_gunzip(z, cut, 1000, &out, &ol);
    if (rc != -EINVAL) tl_fail(__FILE__, __LINE__, "cut %zu gave %d", cut, rc);
  }
  /* two members concatenated, as gunzip accepts */
  uint8_t *two = malloc(2 * zl);
  memcpy(two, z, zl);
  memcpy(two + zl, z, zl);
  CHECK_INT(ingest_gunzip(two, 2 * zl, 1000, &out, &ol), ==, 0);
  CHECK_INT(ol, ==, 2 * strlen(text));
  free(out);
  /* garbage after a member */
  memcpy(two + zl, "\x1f\x8bxx", 4);
  CHECK_INT(ingest_gunzip(two, zl + 4, 1000, &out, &ol), ==, -EINVAL);
  free(two);
  free(z);
  /* a bomb: 64 MiB of zeros in ~64 KiB, cap 1 MiB */
  size_t big = 64u << 20;
  uint8_t *zeros = calloc(1, big);
  z = gz(zeros, big, &zl);
  free(zeros);
  CHECK(zl < 200000);
  CHECK_INT(ingest_gunzip(z, zl, 1u << 20, &out, &ol), ==, -E2BIG);
  free(z);
}

TEST(parse_event_fields) {
  ingest_fields f;
  CHECK_INT(ingest_parse_event((const uint8_t *)EV, strlen(EV), &f), ==, 0);
  CHECK_STR(f.type, "message.new");
  CHECK_STR(f.cid, "messaging:general");
  CHECK_STR(f.channel_type, "messaging");
  CHECK_STR(f.channel_id, "general");
  CHECK_STR(f.user_id, "alice");
  ingest_fields_free(&f);
  const char *b = "{\"type\":\"user.updated\",\"user_id\":\"bob\"}\n";
  CHECK_INT(ingest_parse_event((const uint8_t *)b, strlen(b), &f), ==, 0);
  CHECK_STR(f.user_id, "bob");
  CHECK(f.cid == NULL);
  ingest_fields_free(&f);
  const char *bad[] = {"", "{", "[]", "\"x\"", "{\"type\":1}", "{\"typ\":\"a\"}",
                       "{\"type\":\"a\"} x", "not json", "{\"type\":\"a\"}{}", "null"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    if (ingest_parse_event((const uint8_t *)bad[i], strlen(bad[i]), &f) != -EINVAL)
      tl_fail(__FILE__, __LINE__, "accepted %s", bad[i]);
  }
  /* every fixture event parses */
  const char *names[] = {"channel.created", "custom.event-no-cid", "member.added",
                         "message.new", "message.new-unicode", "reaction.new", "user.banned"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures/events/%s.json", RELAY_SHARED_DIR, names[i]);
    size_t len;
    char *body = tl_read_file(path, &len);
    CHECK(body);
    CHECK_INT(ingest_parse_event((const uint8_t *)body, len, &f), ==, 0);
    CHECK(f.type && *f.type);
    ingest_fields_free(&f);
    free(body);
  }
}

/* The reference: json-c in strict RFC mode with UTF-8 validation, fields
 * read from its document the way a DOM user would. Returns 0 and fills f
 * (strings strdup'd into *keep) or -EINVAL. */
static const char *ref_str(json_object *o, const char *key) {
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  const char *s = json_object_get_string(v);
  /* A value with a U+0000 inside counts as empty (see ingest_parse_event). */
  return s && *s && strlen(s) == (size_t)json_object_get_string_len(v) ? s : NULL;
}

static int ref_parse(const uint8_t *body, size_t len, json_object **keep, ingest_fields *f) {
  memset(f, 0, sizeof *f);
  *keep = NULL;
  json_tokener *tok = json_tokener_new_ex(128);
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  json_object *o = json_tokener_parse_ex(tok, (const char *)body, (int)len);
  int ok = o && json_tokener_get_error(tok) == json_tokener_success;
  size_t used = tok->char_offset;
  json_tokener_free(tok);
  for (size_t i = used; ok && i < len; i++)
    if (body[i] != ' ' && body[i] != '\n' && body[i] != '\r' && body[i] != '\t') ok = 0;
  json_object *t;
  if (ok && (!json_object_is_type(o, json_type_object) ||
             !json_object_object_get_ex(o, "type", &t) || !json_object_is_type(t, json_type_string)))
    ok = 0;
  if (!ok) {
    json_object_put(o);
    return -EINVAL;
  }
  *keep = o;
  f->type = json_object_get_string(t);
  if (strlen(f->type) != (size_t)json_object_get_string_len(t)) f->type = "";
  f->cid = ref_str(o, "cid");
  f->channel_type = ref_str(o, "channel_type");
  f->channel_id = ref_str(o, "channel_id");
  json_object *user;
  if (json_object_object_get_ex(o, "user", &user) && json_object_is_type(user, json_type_object))
    f->user_id = ref_str(user, "id");
  if (!f->user_id) f->user_id = ref_str(o, "user_id");
  return 0;
}

static int same(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Constructs json-c accepts even in strict mode although RFC 8259/3629
 * forbid them: raw control bytes, invalid UTF-8 (overlong, surrogates,
 * above U+10FFFF), NaN/Infinity, "1." numbers. The scanner may reject
 * these; nothing else may differ. */
static int json_c_lenient(const uint8_t *b, size_t len) {
  for (size_t i = 0; i < len; i++) {
    uint8_t c = b[i];
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return 1;
    if (c == '.' && (i + 1 == len || b[i + 1] < '0' || b[i + 1] > '9')) return 1;
    if ((c == 'N' && i + 3 <= len && memcmp(b + i, "NaN", 3) == 0) ||
        (c == 'I' && i + 8 <= len && memcmp(b + i, "Infinity", 8) == 0))
      return 1;
    if (c >= 0x80) {
      int n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
      if (!n || i + (size_t)n > len) return 1;
      uint32_t cp = c & (0x7f >> n);
      for (int k = 1; k < n; k++) {
        if ((b[i + k] & 0xc0) != 0x80) return 1;
        cp = (cp << 6) | (b[i + k] & 0x3f);
      }
      uint32_t min = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
      if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 1;
      i += (size_t)n - 1;
    }
  }
  return 0;
}

/* Returns 1 when scanner and reference agree on body. */
static int agree(const uint8_t *body, size_t len, int verbose) {
  ingest_fields mine, ref;
  json_object *keep;
  int a = ingest_parse_event(body, len, &mine);
  int b = ref_parse(body, len, &keep, &ref);
  int ok = (a == 0) == (b == 0) || (a != 0 && b == 0 && json_c_lenient(body, len));
  if (ok && a == 0)
    ok = same(mine.type, ref.type) && same(mine.cid, ref.cid) &&
         same(mine.channel_type, ref.channel_type) && same(mine.channel_id, ref.channel_id) &&
         same(mine.user_id, ref.user_id);
  if (!ok && verbose)
    fprintf(stderr, "disagree (scanner %d, json-c %d) on %zu bytes: %.*s\n", a, b, len,
            (int)(len > 300 ? 300 : len), (const char *)body);
  if (a == 0) ingest_fields_free(&mine);
  json_object_put(keep);
  return ok;
}

TEST(scanner_agrees_with_json_c) {
  const char *cases[] = {
      "{\"type\":\"a\"}", " {\"type\" : \"a\" } \n", "{\"type\":\"a\",\"type\":\"b\"}",
      "{\"type\":\"a\",\"type\":1}", "{\"type\":1,\"type\":\"a\"}", "{\"t\\u0079pe\":\"x\"}",
      "{\"type\":\"\\u00e9\\ud83d\\ude00\\n\"}", "{\"type\":\"a\",\"cid\":\"\\\"q\\\"\"}",
      "{\"type\":\"a\",\"user\":{\"id\":\"u1\"},\"user_id\":\"u2\"}",
      "{\"type\":\"a\",\"user\":{\"id\":5},\"user_id\":\"u2\"}",
      "{\"type\":\"a\",\"user\":\"x\",\"user_id\":\"u2\"}",
      "{\"type\":\"a\",\"user\":{\"id\":\"u1\",\"id\":\"u3\"}}",
      "{\"type\":\"a\",\"x\":[1,-2.5e+3,0.1,true,false,null,{},[],{\"a\":[{}]}]}",
      "{\"type\":\"a\",\"n\":01}", "{\"type\":\"a\",\"n\":1.}", "{\"type\":\"a\",\"n\":-}",
      "{\"type\":\"a\",\"n\":.5}", "{\"type\":\"a\",}", "{\"type\":\"a\" \"b\":1}",
      "{\"type\":'a'}", "{\"type\":\"a\",\"n\":NaN}", "{\"type\":\"a\"} x", "{\"type\":\"a\"}}",
      "{\"type\":\"\x01\"}", "{\"type\":\"\\x\"}", "{\"type\":\"\\u12\"}",
      "{\"type\":\"\xc3\xa9\"}", "{\"type\":\"\xc3\"}", "{\"type\":\"\xed\xa0\x80\"}",
      "{\"type\":\"\xf4\x90\x80\x80\"}", "{\"type\":\"\xe0\x80\xaf\"}", "[]", "\"a\"", "",
      "{", "{\"type\"}", "{\"type\":}", "{\"type\":\"a\",\"x\":[1,]}", "{\"type\":\"a\",\"x\":tru}",
      "{\"type\":\"a\",\"x\":{\"y\":}}", "{\"type\":\"a\",\"user\":{}}", "{}",
  };
  int case_bad = 0;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    case_bad += !agree((const uint8_t *)cases[i], strlen(cases[i]), 1);
  CHECK_INT(case_bad, ==, 0);
  /* nesting right at and beyond the limit */
  char deep[600];
  for (int depth = 120; depth <= 132; depth++) {
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{\"type\":\"a\",\"x\":");
    for (int i = 0; i < depth - 1; i++) deep[n++] = '[';
    for (int i = 0; i < depth - 1; i++) deep[n++] = ']';
    deep[n++] = '}';
    ingest_fields f;
    int rc = ingest_parse_event((const uint8_t *)deep, n, &f);
    if (rc == 0) ingest_fields_free(&f);
    CHECK_INT(rc == 0, ==, depth <= 128);
  }
  /* mutations of every fixture: insert, delete or replace one byte */
  static const char alphabet[] = "{}[],:\"\\0-+e.a tnu\x01\xc3\xa9\xff\x80";
  const char *names[] = {"channel.created", "channel.truncated", "custom.event-no-cid",
                         "member.added", "message.deleted", "message.new", "message.new-unicode",
                         "message.read", "message.updated", "reaction.new", "user.banned",
                         "user.updated"};
  unsigned seed = 12345;
  int checked = 0, accepted = 0, bad = 0;
  for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures/events/%s.json", RELAY_SHARED_DIR, names[k]);
    size_t len;
    char *body = tl_read_file(path, &len);
    CHECK(body);
    CHECK(agree((const uint8_t *)body, len, 1));
    uint8_t *m = malloc(len + 2);
    int rounds = len > 20000 ? 200 : 1500;
    for (int r = 0; r < rounds; r++) {
      seed = seed * 1103515245u + 12345u;
      size_t pos = (seed >> 8) % (len + 1);
      seed = seed * 1103515245u + 12345u;
      uint8_t ch = (uint8_t)alphabet[(seed >> 8) % (sizeof alphabet - 1)];
      size_t ml;
      switch (r % 3) {
        case 0: /* insert */
          memcpy(m, body, pos);
          m[pos] = ch;
          memcpy(m + pos + 1, body + pos, len - pos);
          ml = len + 1;
          break;
        case 1: /* delete */
          if (pos == len) pos--;
          memcpy(m, body, pos);
          memcpy(m + pos, body + pos + 1, len - pos - 1);
          ml = len - 1;
          break;
        default: /* replace */
          if (pos == len) pos--;
          memcpy(m, body, len);
          m[pos] = ch;
          ml = len;
          break;
      }
      int ok = agree(m, ml, bad < 40);
      if (!ok) bad++;
      ingest_fields f;
      if (ingest_parse_event(m, ml, &f) == 0) {
        accepted++;
        ingest_fields_free(&f);
      }
      checked++;
    }
    free(m);
    free(body);
  }
  if (bad) tl_fail(__FILE__, __LINE__, "%d of %d mutations disagree", bad, checked);
  /* the mutations exercised both sides */
  CHECK(accepted > checked / 20);
  CHECK(accepted < checked);
}

/* ---- strings at every position relative to an 8-byte word -------------- */

/* scan_string tests plain string bytes a word of eight at a time and goes
 * byte by byte from the word holding anything else. These tests put each
 * kind of byte at every offset 0..16 of a string (so at every position in a
 * word, in the first, second and third word), with 0..9 plain bytes after
 * it, in the three places a string is scanned: the "type" value (decoded and
 * compared), a skipped value inside an array, and a key. Bodies are
 * malloc'd to their exact length so that ASan sees any read past the end. */

static const char STR_FILLER[] = "plain text ~#!][\x7f 0123456789 abcdefgh";

static size_t str_in_context(int ctx, const char *str, size_t n, char *out) {
  static const char *const pre[] = {"{\"type\":\"", "{\"type\":\"t\",\"x\":[\"", "{\""};
  static const char *const post[] = {"\"}", "\"]}", "\":1,\"type\":\"t\"}"};
  size_t a = strlen(pre[ctx]), b = strlen(post[ctx]);
  memcpy(out, pre[ctx], a);
  memcpy(out + a, str, n);
  memcpy(out + a + n, post[ctx], b);
  return a + n + b;
}

/* ingest_parse_event on a copy of exactly len bytes; frees f on success
 * unless keep. */
static int parse_exact(const char *bytes, size_t len, ingest_fields *f, int keep) {
  uint8_t *b = malloc(len ? len : 1);
  CHECK(b);
  memcpy(b, bytes, len);
  int rc = ingest_parse_event(b, len, f);
  free(b);
  if (rc == 0 && !keep) ingest_fields_free(f);
  return rc;
}

TEST(string_bytes_at_every_word_offset) {
  static const struct {
    const char *raw; /* put at the offset */
    size_t len;
    const char *decoded; /* NULL: the body must be rejected */
  } pieces[] = {
      /* a quote ends the string: what follows is not JSON */
      {"\"", 1, NULL},
      /* escapes */
      {"\\\"", 2, "\""}, {"\\\\", 2, "\\"}, {"\\/", 2, "/"}, {"\\n", 2, "\n"}, {"\\t", 2, "\t"},
      {"\\u00e9", 6, "\xc3\xa9"}, {"\\ud83d\\ude00", 12, "\xf0\x9f\x98\x80"},
      {"\\x", 2, NULL}, {"\\u12g4", 6, NULL}, {"\\a", 2, NULL},
      /* control bytes */
      {"\x00", 1, NULL}, {"\x01", 1, NULL}, {"\x1f", 1, NULL}, {"\t", 1, NULL}, {"\n", 1, NULL},
      /* plain bytes next to the special ones */
      {" ", 1, " "}, {"!", 1, "!"}, {"#", 1, "#"}, {"[", 1, "["}, {"]", 1, "]"},
      {"\x7f", 1, "\x7f"},
      /* invalid UTF-8: stray continuation, truncated, overlong, surrogate,
       * above U+10FFFF, bytes never used */
      {"\x80", 1, NULL}, {"\xbf", 1, NULL}, {"\xc3", 1, NULL}, {"\xe2\x82", 2, NULL},
      {"\xc0\xaf", 2, NULL}, {"\xed\xa0\x80", 3, NULL}, {"\xf4\x90\x80\x80", 4, NULL},
      {"\xf8", 1, NULL}, {"\xff", 1, NULL},
      /* valid multibyte UTF-8 */
      {"\xc3\xa9", 2, "\xc3\xa9"}, {"\xe2\x82\xac", 3, "\xe2\x82\xac"},
      {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"}, {"\xf4\x8f\xbf\xbf", 4, "\xf4\x8f\xbf\xbf"},
  };
  int checked = 0;
  for (size_t k = 0; k < sizeof pieces / sizeof *pieces; k++) {
    for (size_t off = 0; off <= 16; off++) {
      for (size_t tail = 0; tail <= 9; tail++) {
        char str[64], want[64], body[128];
        size_t n = 0, wn = 0;
        memcpy(str, STR_FILLER, off);
        n += off;
        memcpy(str + n, pieces[k].raw, pieces[k].len);
        n += pieces[k].len;
        memcpy(str + n, STR_FILLER + off, tail);
        n += tail;
        if (pieces[k].decoded) {
          size_t dl = strlen(pieces[k].decoded);
          memcpy(want, STR_FILLER, off);
          memcpy(want + off, pieces[k].decoded, dl);
          memcpy(want + off + dl, STR_FILLER + off, tail);
          wn = off + dl + tail;
        }
        for (int ctx = 0; ctx < 3; ctx++) {
          size_t bl = str_in_context(ctx, str, n, body);
          ingest_fields f;
          int rc = parse_exact(body, bl, &f, ctx == 0);
          int expect = pieces[k].decoded ? 0 : -EINVAL;
          if (rc != expect)
            tl_fail(__FILE__, __LINE__,
                    "piece %zu at offset %zu, %zu after, context %d: %d, want %d", k, off, tail,
                    ctx, rc, expect);
          if (ctx == 0 && rc == 0) {
            CHECK_MEM(f.type, strlen(f.type), want, wn);
            ingest_fields_free(&f);
          }
          checked++;
        }
      }
    }
  }
  CHECK_INT(checked, ==, 35 * 17 * 10 * 3);
  /* plain strings of every length: the closing quote at every offset */
  for (size_t len = 0; len <= 40; len++) {
    char str[64], body[128];
    for (size_t i = 0; i < len; i++) str[i] = STR_FILLER[i % (sizeof STR_FILLER - 1)];
    for (int ctx = 0; ctx < 3; ctx++) {
      size_t bl = str_in_context(ctx, str, len, body);
      ingest_fields f;
      CHECK_INT(parse_exact(body, bl, &f, ctx == 0), ==, 0);
      if (ctx == 0) {
        CHECK_MEM(f.type, strlen(f.type), str, len);
        ingest_fields_free(&f);
      }
    }
  }
}

TEST(string_unterminated_at_buffer_end) {
  /* The body ends inside a string: after plain bytes, or right after an
   * escape, a partial escape, a complete or truncated UTF-8 sequence. */
  static const char *const pre[] = {"{\"type\":\"", "{\"type\":\"t\",\"x\":[\"", "{\""};
  static const struct {
    const char *raw;
    size_t len;
  } ends[] = {{"", 0},         {"\\", 1},         {"\\\"", 2}, {"\\u00e", 5}, {"\\u00e9", 6},
              {"\xc3", 1},     {"\xc3\xa9", 2},   {"\xe2\x82", 2}, {"\xf0\x9f\x98\x80", 4}};
  int checked = 0;
  for (size_t c = 0; c < sizeof pre / sizeof *pre; c++) {
    for (size_t e = 0; e < sizeof ends / sizeof *ends; e++) {
      for (size_t n = 0; n <= 24; n++) {
        char body[128];
        size_t bl = strlen(pre[c]);
        memcpy(body, pre[c], bl);
        memcpy(body + bl, STR_FILLER, n);
        bl += n;
        memcpy(body + bl, ends[e].raw, ends[e].len);
        bl += ends[e].len;
        ingest_fields f;
        int rc = parse_exact(body, bl, &f, 0);
        if (rc != -EINVAL)
          tl_fail(__FILE__, __LINE__, "context %zu, %zu plain bytes, end %zu: %d, want -EINVAL",
                  c, n, e, rc);
        checked++;
      }
    }
  }
  CHECK_INT(checked, ==, 3 * 9 * 25);
  /* the same bytes with the quote that was missing are accepted */
  for (size_t n = 0; n <= 24; n++) {
    char body[128];
    size_t bl = strlen(pre[0]);
    memcpy(body, pre[0], bl);
    memcpy(body + bl, STR_FILLER, n);
    bl += n;
    memcpy(body + bl, "\"}", 2);
    ingest_fields f;
    CHECK_INT(parse_exact(body, bl + 2, &f, 0), ==, 0);
  }
}

/* Found with tests/fuzz/fuzz_json.c: a key spelled with \u escapes is the
 * same key (RFC 8259 compares decoded names), however many characters are
 * escaped. "channel_type" with 11 or 12 of its characters escaped is 67 or
 * 72 raw bytes, and the scanner ignored escaped keys longer than 64, so the
 * field was lost (json-c reads it). */
static size_t escape_all(const char *name, size_t escaped, char *out) {
  size_t n = 0, len = strlen(name);
  for (size_t i = 0; i < len; i++) {
    if (i < escaped) n += (size_t)snprintf(out + n, 8, "\\u%04x", (unsigned char)name[i]);
    else out[n++] = name[i];
  }
  out[n] = 0;
  return n;
}

TEST(parse_event_fully_escaped_keys) {
  static const char *const names[] = {"type", "cid", "channel_type", "channel_id", "user_id"};
  for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
    size_t len = strlen(names[k]);
    for (size_t esc = 0; esc <= len; esc++) {
      char key[128], body[512];
      escape_all(names[k], esc, key);
      int bl = snprintf(body, sizeof body, "{\"type\":\"t\",\"%s\":\"v%zu\"}", key, esc);
      ingest_fields f;
      CHECK_INT(ingest_parse_event((const uint8_t *)body, (size_t)bl, &f), ==, 0);
      const char *got = k == 0 ? f.type : k == 1 ? f.cid : k == 2 ? f.channel_type
                        : k == 3 ? f.channel_id : f.user_id;
      char want[32];
      snprintf(want, sizeof want, "v%zu", esc);
      if (!got || strcmp(got, want) != 0)
        tl_fail(__FILE__, __LINE__, "%s with %zu escaped characters: got %s", names[k], esc,
                got ? got : "(absent)");
      ingest_fields_free(&f);
    }
  }
  /* user.id: both keys escaped completely */
  const char *b = "{\"type\":\"t\",\"\\u0075\\u0073\\u0065\\u0072\":{\"\\u0069\\u0064\":\"u\"}}";
  ingest_fields f;
  CHECK_INT(ingest_parse_event((const uint8_t *)b, strlen(b), &f), ==, 0);
  CHECK(f.user_id && strcmp(f.user_id, "u") == 0);
  ingest_fields_free(&f);
  /* an escaped key that only starts like a name is not that name */
  b = "{\"type\":\"t\",\"\\u0063\\u0069\\u0064\\u0063\\u0069\\u0064\\u0063\\u0069\\u0064"
      "\\u0063\\u0069\\u0064\\u0063\\u0069\\u0064\":\"x\"}";
  CHECK_INT(ingest_parse_event((const uint8_t *)b, strlen(b), &f), ==, 0);
  CHECK(f.cid == NULL);
  ingest_fields_free(&f);
}

/* Surrogate escapes, pinned byte for byte where json-c 0.16 cannot be the
 * reference: it decodes the pairs of U+xD800..U+xDFFF (any supplementary
 * plane) as U+FFFD, so tests/fuzz/fuzz_json.c skips the field comparison
 * for them. A lone surrogate is allowed by RFC 8259's grammar (section
 * 8.2) and becomes U+FFFD, as in json-c: an SNS attribute must be valid
 * Unicode. */
TEST(parse_event_surrogate_escapes) {
  static const struct {
    const char *esc, *utf8;
  } cases[] = {
      {"\\ud836\\ude00", "\xf0\x9d\xa8\x80"},          /* U+1DA00 */
      {"\\ud836\\udc00", "\xf0\x9d\xa0\x80"},          /* U+1D800 */
      {"\\udbf7\\udfff", "\xf4\x8d\xbf\xbf"},          /* U+10DFFF */
      {"\\ud83d\\ude00", "\xf0\x9f\x98\x80"},          /* U+1F600 */
      {"\\udbff\\udfff", "\xf4\x8f\xbf\xbf"},          /* U+10FFFF */
      {"\\ud800", "\xef\xbf\xbd"},                     /* lone high */
      {"\\udc00", "\xef\xbf\xbd"},                     /* lone low */
      {"\\ud800\\u0041", "\xef\xbf\xbd" "A"},          /* high, then no low */
      {"\\ud800\\ud800\\udc00", "\xef\xbf\xbd\xf0\x90\x80\x80"},
      {"\\udc00\\ud800", "\xef\xbf\xbd\xef\xbf\xbd"},  /* the wrong order */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char body[128];
    int bl = snprintf(body, sizeof body, "{\"type\":\"%s\"}", cases[i].esc);
    ingest_fields f;
    CHECK_INT(ingest_parse_event((const uint8_t *)body, (size_t)bl, &f), ==, 0);
    CHECK_MEM(f.type, strlen(f.type), cases[i].utf8, strlen(cases[i].utf8));
    ingest_fields_free(&f);
  }
}

/* A U+0000 escape would cut a routing value short (the fields are C
 * strings): the event would be routed by a prefix of its field. Such a
 * value counts as empty instead; the body itself is stored unchanged. */
TEST(parse_event_nul_escape_empties_the_field) {
  const char *b =
      "{\"type\":\"message.new\\u0000x\",\"cid\":\"messaging:a\\u0000b\","
      "\"channel_id\":\"a\",\"user\":{\"id\":\"\\u0000\"},\"user_id\":\"u2\"}";
  ingest_fields f;
  CHECK_INT(ingest_parse_event((const uint8_t *)b, strlen(b), &f), ==, 0);
  CHECK_STR(f.type, "");
  CHECK(f.cid == NULL);
  CHECK_STR(f.channel_id, "a");
  CHECK_STR(f.user_id, "u2"); /* user.id is unusable, so user_id is taken */
  ingest_fields_free(&f);
  CHECK(agree((const uint8_t *)b, strlen(b), 1));
}

TEST(signature_rules) {
  relay_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg_app_secret s[3] = {{"key1", "a"}, {"key1", "b"}, {"key2", "c"}};
  cfg.secrets = s;
  cfg.nsecrets = 3;
  const uint8_t *body = (const uint8_t *)"{}";
  char sa[65], sb[65], sc[65], up[65];
  sign("a", body, 2, sa);
  sign("b", body, 2, sb);
  sign("c", body, 2, sc);
  CHECK_INT(ingest_check_signature(&cfg, "key1", sa, body, 2), ==, 0);
  CHECK_INT(ingest_check_signature(&cfg, "key1", sb, body, 2), ==, 0);
  CHECK_INT(ingest_check_signature(&cfg, "key2", sc, body, 2), ==, 0);
  CHECK_INT(ingest_check_signature(&cfg, "key2", sa, body, 2), ==, -EACCES);
  CHECK_INT(ingest_check_signature(&cfg, "key3", sa, body, 2), ==, -EACCES);
  CHECK_INT(ingest_check_signature(&cfg, "key1", NULL, body, 2), ==, -EACCES);
  CHECK_INT(ingest_check_signature(&cfg, "key1", "abc", body, 2), ==, -EACCES);
  /* two apps: no api key is ambiguous */
  CHECK_INT(ingest_check_signature(&cfg, NULL, sa, body, 2), ==, -EACCES);
  /* uppercase hex is the same MAC */
  for (int i = 0; i < 65; i++) up[i] = (char)(sa[i] >= 'a' && sa[i] <= 'f' ? sa[i] - 32 : sa[i]);
  CHECK_INT(ingest_check_signature(&cfg, "key1", up, body, 2), ==, 0);
  /* body changed by one byte */
  CHECK_INT(ingest_check_signature(&cfg, "key1", sa, (const uint8_t *)"{ ", 2), ==, -EACCES);
  /* one app: the key may be left out */
  cfg.nsecrets = 2;
  CHECK_INT(ingest_check_signature(&cfg, NULL, sb, body, 2), ==, 0);
  /* no secrets */
  cfg.nsecrets = 0;
  CHECK_INT(ingest_check_signature(&cfg, "key1", NULL, body, 2), ==, -EACCES);
  cfg.insecure_no_signature = 1;
  CHECK_INT(ingest_check_signature(&cfg, NULL, NULL, body, 2), ==, 0);
  char mine[65];
  ingest_hmac_hex("a", body, 2, mine);
  CHECK_STR(mine, sa);
}

TEST(sns_size_counts_attributes) {
  rq_record r;
  memset(&r, 0, sizeof r);
  r.body_len = 100;
  CHECK_INT(ingest_sns_size(&r), ==, 100);
  r.type = "message.new";  /* 4 + 6 + 11 */
  r.webhook_id = "w1";     /* 10 + 6 + 2 */
  r.cid = "";              /* absent */
  CHECK_INT(ingest_sns_size(&r), ==, 100 + 21 + 18);
  r.cid = "c";             /* 3 + 6 + 1 */
  r.channel_type = "t";    /* 12 + 6 + 1 */
  r.channel_id = "i";      /* 10 + 6 + 1 */
  r.user_id = "u";         /* 7 + 6 + 1 */
  CHECK_INT(ingest_sns_size(&r), ==, 100 + 21 + 18 + 10 + 19 + 17 + 14);
}

/* ---- over HTTP -------------------------------------------------------------- */

TEST(stored_event_200_with_fields) {
  fixture *f = start();
  tc_resp r;
  raw q = mkreq("/webhook", "key1", "s3cret", "wh-1", EV, strlen(EV), NULL, 0,
                "X-Webhook-Attempt: 2");
  CHECK_INT(post(f, q, &r), ==, 200);
  CHECK_STR(r.body, "{\"ok\":true}");
  tc_resp_free(&r);
  CHECK_INT(post(f, event_req("wh-2", EV), NULL), ==, 200);
  CHECK_INT(atomic_load(&f->stored_events), ==, 2);
  fixture_stop(f);
  CHECK_INT(f->final.stored, ==, 2);
  rq_record *recs;
  int n = rq_lease(f->env, INT64_MAX, 10, 0, &recs);
  CHECK_INT(n, ==, 2);
  CHECK_MEM(recs[0].body, recs[0].body_len, EV, strlen(EV));
  CHECK_STR(recs[0].webhook_id, "wh-1");
  CHECK_STR(recs[0].webhook_attempt, "2");
  CHECK_STR(recs[0].api_key, "key1");
  CHECK_STR(recs[0].type, "message.new");
  CHECK_STR(recs[0].cid, "messaging:general");
  CHECK_STR(recs[0].channel_type, "messaging");
  CHECK_STR(recs[0].channel_id, "general");
  CHECK_STR(recs[0].user_id, "alice");
  CHECK(recs[0].received_ms > 1600000000000LL);
  CHECK_STR(recs[1].webhook_id, "wh-2");
  rq_records_free(recs, 2);
  fixture_free(f);
}

TEST(routing_404_405) {
  fixture *f = start();
  CHECK_INT(post(f, mkreq("/other", "key1", "s3cret", NULL, EV, strlen(EV), NULL, 0, NULL), NULL),
            ==, 404);
  const char *get = "GET / HTTP/1.1\r\n\r\n";
  char *body = NULL;
  CHECK_INT(tc_request(f->port, get, strlen(get), &body), ==, 405);
  free(body);
  const char *put = "PUT /webhook HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
  CHECK_INT(tc_request(f->port, put, strlen(put), NULL), ==, 405);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 0);
  fixture_free(f);
}

TEST(signatures_401_and_rotation) {
  fixture *f = start();
  /* rotation: both secrets of key1 */
  CHECK_INT(post(f, mkreq("/", "key1", "old-secret", NULL, EV, strlen(EV), NULL, 0, NULL), NULL),
            ==, 200);
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", NULL, EV, strlen(EV), NULL, 0, NULL), NULL),
            ==, 200);
  CHECK_INT(post(f, mkreq("/", "key2", "other", NULL, EV, strlen(EV), NULL, 0, NULL), NULL), ==,
            200);
  /* wrong secret, other app's secret, unknown key, no signature, no key */
  CHECK_INT(post(f, mkreq("/", "key1", "wrong", NULL, EV, strlen(EV), NULL, 0, NULL), NULL), ==,
            401);
  CHECK_INT(post(f, mkreq("/", "key2", "s3cret", NULL, EV, strlen(EV), NULL, 0, NULL), NULL), ==,
            401);
  CHECK_INT(post(f, mkreq("/", "key9", "s3cret", NULL, EV, strlen(EV), NULL, 0, NULL), NULL), ==,
            401);
  CHECK_INT(post(f, mkreq("/", "key1", NULL, NULL, EV, strlen(EV), NULL, 0, NULL), NULL), ==, 401);
  CHECK_INT(post(f, mkreq("/", NULL, "s3cret", NULL, EV, strlen(EV), NULL, 0, NULL), NULL), ==,
            401);
  /* signature of a different body */
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", NULL, EV, strlen(EV), "{}", 2, NULL), NULL), ==,
            401);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 3);
  CHECK_INT(f->final.rejected, ==, 6);
  fixture_free(f);
}

TEST(insecure_mode_without_secrets) {
  fixture *f = fixture_new(0);
  f->cfg.nsecrets = 0;
  f->cfg.insecure_no_signature = 1;
  fixture_start(f);
  CHECK_INT(post(f, mkreq("/", NULL, NULL, NULL, EV, strlen(EV), NULL, 0, NULL), NULL), ==, 200);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 1);
  fixture_free(f);
}

TEST(bad_json_400) {
  fixture *f = start();
  const char *bad[] = {"not json", "{\"type\":5}", "{}", "[1]", "{\"type\":\"a\"", ""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int st = post(f, mkreq("/", "key1", "s3cret", NULL, bad[i], strlen(bad[i]), NULL, 0, NULL),
                  NULL);
    if (st != 400) tl_fail(__FILE__, __LINE__, "%s: %d", bad[i], st);
  }
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 0);
  CHECK_INT(dlq_count(f), ==, 0);
  fixture_free(f);
}

TEST(gzip_bodies) {
  fixture *f = start();
  size_t zl;
  uint8_t *z = gz(EV, strlen(EV), &zl);
  /* Content-Encoding: gzip, signature over the inflated body */
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "g1", z, zl, EV, strlen(EV),
                          "Content-Encoding: gzip"), NULL),
            ==, 200);
  /* no header, detected by its magic */
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "g2", z, zl, EV, strlen(EV), NULL), NULL), ==,
            200);
  /* signature over the compressed bytes is not what SPEC says */
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "g3", z, zl, NULL, 0,
                          "Content-Encoding: gzip"), NULL),
            ==, 401);
  /* truncated */
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "g4", z, zl - 5, EV, strlen(EV),
                          "Content-Encoding: gzip"), NULL),
            ==, 400);
  /* claims gzip, is not */
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "g5", EV, strlen(EV), NULL, 0,
                          "Content-Encoding: gzip"), NULL),
            ==, 400);
  /* unknown coding */
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "g6", EV, strlen(EV), NULL, 0,
                          "Content-Encoding: br"), NULL),
            ==, 415);
  free(z);
  /* a bomb over RELAY_MAX_BODY_BYTES: 413 */
  size_t big = 8u << 20;
  char *zeros = malloc(big);
  memset(zeros, ' ', big);
  memcpy(zeros, "{\"type\":\"x\"}", 12);
  z = gz(zeros, big, &zl);
  CHECK(zl < 4194304);
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "g7", z, zl, zeros, big,
                          "Content-Encoding: gzip"), NULL),
            ==, 413);
  free(z);
  free(zeros);
  fixture_stop(f);
  rq_record *recs;
  int n = rq_lease(f->env, INT64_MAX, 10, 0, &recs);
  CHECK_INT(n, ==, 2);
  /* stored bytes are the inflated, verified bytes */
  CHECK_MEM(recs[0].body, recs[0].body_len, EV, strlen(EV));
  CHECK_MEM(recs[1].body, recs[1].body_len, EV, strlen(EV));
  rq_records_free(recs, 2);
  fixture_free(f);
}

TEST(oversize_413_and_headers_431) {
  fixture *f = fixture_new(0);
  f->cfg.max_body_bytes = 10000;
  fixture_start(f);
  char *big = malloc(20000);
  memset(big, ' ', 20000);
  memcpy(big, "{\"type\":\"x\"}", 12);
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", NULL, big, 10001, NULL, 0, NULL), NULL), ==, 413);
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", NULL, big, 10000, NULL, 0, NULL), NULL), ==, 200);
  free(big);
  char hdr[20000];
  memcpy(hdr, "X-Big: ", 7);
  memset(hdr + 7, 'a', 17000);
  hdr[17007] = 0;
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", NULL, EV, strlen(EV), NULL, 0, hdr), NULL), ==,
            431);
  fixture_stop(f);
  CHECK_INT(atomic_load(&f->outcomes[413]), ==, 1);
  CHECK_INT(atomic_load(&f->outcomes[431]), ==, 1);
  CHECK_INT(ready_count(f), ==, 1);
  fixture_free(f);
}

TEST(duplicate_webhook_ids) {
  fixture *f = start();
  CHECK_INT(post(f, event_req("dup-1", EV), NULL), ==, 200);
  CHECK_INT(post(f, event_req("dup-1", EV), NULL), ==, 200);
  /* the same id twice in one pipeline (likely one commit) */
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  raw a = event_req("dup-2", EV), b = event_req("dup-2", EV);
  char *both = malloc(a.len + b.len);
  memcpy(both, a.p, a.len);
  memcpy(both + a.len, b.p, b.len);
  CHECK_INT(tc_send(&c, both, a.len + b.len), ==, 0);
  free(both);
  free(a.p);
  free(b.p);
  for (int i = 0; i < 2; i++) {
    tc_resp r;
    CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
    CHECK_INT(r.status, ==, 200);
    CHECK_STR(r.body, "{\"ok\":true}");
    tc_resp_free(&r);
  }
  tc_close(&c);
  /* no id: never deduplicated */
  CHECK_INT(post(f, event_req(NULL, EV), NULL), ==, 200);
  CHECK_INT(post(f, event_req(NULL, EV), NULL), ==, 200);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 4);
  CHECK_INT(f->final.duplicates, ==, 2);
  fixture_free(f);
}

TEST(too_large_goes_to_dlq_with_200) {
  fixture *f = start();
  char path[512];
  snprintf(path, sizeof path, "%s/fixtures/events/message.new-too-large.json", RELAY_SHARED_DIR);
  size_t len;
  char *body = tl_read_file(path, &len);
  CHECK(body);
  CHECK(len > 262144);
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "big-1", body, len, NULL, 0, NULL), NULL), ==,
            200);
  free(body);
  /* the 200 KiB one is under the limit */
  snprintf(path, sizeof path, "%s/fixtures/events/message.new-large.json", RELAY_SHARED_DIR);
  body = tl_read_file(path, &len);
  CHECK(body);
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "big-2", body, len, NULL, 0, NULL), NULL), ==,
            200);
  free(body);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 1);
  CHECK_INT(dlq_count(f), ==, 1);
  CHECK_INT(f->final.stored_dead, ==, 1);
  rq_record *recs;
  int n = rq_dlq_list(f->env, NULL, &recs);
  CHECK_INT(n, ==, 1);
  CHECK_STR(recs[0].dlq_reason, "too_large");
  CHECK_STR(recs[0].webhook_id, "big-1");
  CHECK(recs[0].body_len > 262144);
  rq_records_free(recs, 1);
  fixture_free(f);
}

TEST(too_large_boundary_counts_attributes) {
  fixture *f = fixture_new(0);
  /* {"type":"t"} plus type (4+6+1) and webhook_id "w" (10+6+1) = 12+11+17 */
  f->cfg.max_message_bytes = 40;
  fixture_start(f);
  const char *b = "{\"type\":\"t\"}";
  CHECK_INT(post(f, event_req("w", b), NULL), ==, 200);
  f->cfg.max_message_bytes = 39; /* read on the loop thread per request */
  CHECK_INT(post(f, event_req("x", b), NULL), ==, 200);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 1);
  CHECK_INT(dlq_count(f), ==, 1);
  fixture_free(f);
}

static atomic_int hook_calls;
static atomic_int hook_fail;        /* commits still to fail */
static atomic_int hook_sleep_ms;
static atomic_llong hook_done_at;   /* when the hook returned */

static int commit_hook(void *arg) {
  (void)arg;
  atomic_fetch_add(&hook_calls, 1);
  int ms = atomic_load(&hook_sleep_ms);
  if (ms) usleep((useconds_t)ms * 1000);
  atomic_store(&hook_done_at, mono_ms());
  if (atomic_load(&hook_fail) > 0) {
    atomic_fetch_sub(&hook_fail, 1);
    return -EIO;
  }
  return 0;
}

TEST(no_2xx_before_commit) {
  fixture *f = start();
  atomic_store(&hook_calls, 0);
  atomic_store(&hook_fail, 0);
  atomic_store(&hook_sleep_ms, 300);
  rq_set_commit_hook(f->env, commit_hook, NULL);
  long long t0 = mono_ms();
  tc_resp r;
  CHECK_INT(post(f, event_req("slow-1", EV), &r), ==, 200);
  long long t1 = mono_ms();
  tc_resp_free(&r);
  /* The hook runs right before rq_txn_commit: the answer came after it
   * returned, i.e. after the commit that covers the event began. */
  CHECK(atomic_load(&hook_calls) >= 1);
  CHECK(t1 - t0 >= 300);
  CHECK(t1 >= atomic_load(&hook_done_at));
  /* A commit that fails yields 503, never 200: the answer depends on it. */
  atomic_store(&hook_sleep_ms, 0);
  atomic_store(&hook_fail, 1);
  CHECK_INT(post(f, event_req("slow-2", EV), &r), ==, 503);
  tc_resp_free(&r);
  rq_set_commit_hook(f->env, NULL, NULL);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 1);
  fixture_free(f);
}

TEST(commit_failure_503_then_recovers) {
  fixture *f = start();
  atomic_store(&hook_sleep_ms, 0);
  atomic_store(&hook_fail, 2);
  rq_set_commit_hook(f->env, commit_hook, NULL);
  tc_resp r;
  CHECK_INT(post(f, event_req("e1", EV), &r), ==, 503);
  char v[32];
  CHECK_STR(tc_header(&r, "Retry-After", v, sizeof v), "1");
  tc_resp_free(&r);
  CHECK_INT(post(f, event_req("e2", EV), NULL), ==, 503);
  /* the cause is gone: the next commit works, the same id is accepted */
  CHECK_INT(post(f, event_req("e1", EV), NULL), ==, 200);
  rq_set_commit_hook(f->env, NULL, NULL);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 1);
  CHECK_INT(f->final.unavailable, ==, 2);
  fixture_free(f);
}

TEST(map_full_503_and_recovers) {
  /* A small map: the watermark (90 %) and then map-full are reached. */
  fixture *f = fixture_new(1u << 20);
  fixture_start(f);
  char path[512];
  snprintf(path, sizeof path, "%s/fixtures/events/message.new-large.json", RELAY_SHARED_DIR);
  size_t len;
  char *body = tl_read_file(path, &len);
  CHECK(body);
  int ok = 0, unavailable = 0;
  for (int i = 0; i < 20 && unavailable < 2; i++) {
    char wid[32];
    snprintf(wid, sizeof wid, "m%d", i);
    tc_resp r;
    int st = post(f, mkreq("/", "key1", "s3cret", wid, body, len, NULL, 0, NULL), &r);
    if (st == 200) ok++;
    else {
      CHECK_INT(st, ==, 503);
      char v[32];
      CHECK(tc_header(&r, "Retry-After", v, sizeof v));
      unavailable++;
    }
    tc_resp_free(&r);
  }
  CHECK(ok >= 1);
  CHECK_INT(unavailable, ==, 2);
  CHECK_INT(ready_count(f), ==, (uint64_t)ok); /* every 200 is stored */
  /* Space frees up (the drainer would ack): accepted again, no restart. */
  ack_all(f);
  CHECK_INT(ready_count(f), ==, 0);
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "after", body, len, NULL, 0, NULL), NULL), ==,
            200);
  free(body);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 1);
  fixture_free(f);
}

/* An event under RELAY_MAX_BODY_BYTES that a (very small) queue can never
 * hold gets 413 at once: a 503 would make Stream retry in vain, and the
 * relay would read as failing (/readyz) because of one event. The next
 * event is stored as usual. */
TEST(event_larger_than_the_queue_413) {
  fixture *f = fixture_new(1u << 20);
  fixture_start(f);
  size_t len = 600 * 1024;
  char *body = malloc(len + 1);
  int n = snprintf(body, len + 1, "{\"type\":\"message.new\",\"pad\":\"");
  memset(body + n, 'x', len - (size_t)n - 2);
  memcpy(body + len - 2, "\"}", 2);
  body[len] = '\0';
  tc_resp r;
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "huge", body, len, NULL, 0, NULL), &r), ==, 413);
  char v[32];
  CHECK(!tc_header(&r, "Retry-After", v, sizeof v));
  CHECK(strstr(r.body, "too_large_for_queue") != NULL);
  tc_resp_free(&r);
  free(body);
  static const char small[] = "{\"type\":\"message.new\",\"cid\":\"messaging:a\"}";
  CHECK_INT(post(f, mkreq("/", "key1", "s3cret", "next", small, sizeof small - 1, NULL, 0, NULL),
                 NULL),
            ==, 200);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 1);
  CHECK_INT(dlq_count(f), ==, 0);
  fixture_free(f);
}

TEST(pipelined_and_group_commit) {
  fixture *f = start();
  enum { CONNS = 8, PER = 50 };
  tc_conn c[CONNS];
  for (int k = 0; k < CONNS; k++) {
    CHECK_INT(tc_connect(&c[k], f->port), ==, 0);
    size_t cap = PER * 2048, len = 0;
    char *all = malloc(cap);
    for (int i = 0; i < PER; i++) {
      char wid[32];
      snprintf(wid, sizeof wid, "p%d-%d", k, i);
      raw q = event_req(wid, EV);
      memcpy(all + len, q.p, q.len);
      len += q.len;
      free(q.p);
    }
    CHECK_INT(tc_send(&c[k], all, len), ==, 0);
    free(all);
  }
  for (int k = 0; k < CONNS; k++) {
    for (int i = 0; i < PER; i++) {
      tc_resp r;
      CHECK_INT(tc_read(&c[k], &r, 10000), ==, 0);
      CHECK_INT(r.status, ==, 200);
      tc_resp_free(&r);
    }
    tc_close(&c[k]);
  }
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, CONNS * PER);
  /* group commit: far fewer commits than events */
  CHECK(f->cstats.commits < (uint64_t)(CONNS * PER) / 2);
  fixture_free(f);
}

TEST(client_gone_during_commit_is_still_stored) {
  fixture *f = start();
  atomic_store(&hook_sleep_ms, 200);
  atomic_store(&hook_fail, 0);
  rq_set_commit_hook(f->env, commit_hook, NULL);
  for (int i = 0; i < 3; i++) {
    tc_conn c;
    CHECK_INT(tc_connect(&c, f->port), ==, 0);
    char wid[16];
    snprintf(wid, sizeof wid, "gone%d", i);
    raw q = event_req(wid, EV);
    CHECK_INT(tc_send(&c, q.p, q.len), ==, 0);
    free(q.p);
    usleep(50000);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    tc_close(&c);
  }
  usleep(800000);
  rq_set_commit_hook(f->env, NULL, NULL);
  atomic_store(&hook_sleep_ms, 0);
  fixture_stop(f);
  CHECK_INT(ready_count(f), ==, 3);
  fixture_free(f);
}

TEST(shutdown_answers_commits_in_flight) {
  fixture *f = start();
  atomic_store(&hook_sleep_ms, 300);
  atomic_store(&hook_fail, 0);
  rq_set_commit_hook(f->env, commit_hook, NULL);
  tc_conn c;
  CHECK_INT(tc_connect(&c, f->port), ==, 0);
  raw q = event_req("sd-1", EV);
  CHECK_INT(tc_send(&c, q.p, q.len), ==, 0);
  free(q.p);
  usleep(100000); /* the commit is under way */
  atomic_store(&f->command, 1);
  uv_async_send(&f->cmd);
  tc_resp r;
  CHECK_INT(tc_read(&c, &r, 5000), ==, 0);
  CHECK_INT(r.status, ==, 200);
  tc_resp_free(&r);
  CHECK(tc_wait_closed(&c, 5000));
  tc_close(&c);
  uv_thread_join(&f->th);
  rq_set_commit_hook(f->env, NULL, NULL);
  atomic_store(&hook_sleep_ms, 0);
  CHECK_INT(ready_count(f), ==, 1);
  fixture_free(f);
}
