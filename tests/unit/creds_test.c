/* Credential provider chain: every source against loopback stand-ins for STS,
 * the container endpoint and IMDS; precedence; refresh before expiry without
 * blocking creds_get; bad files; endpoints that hang or answer garbage; and
 * secrets never reaching stderr or error strings. The environment is injected
 * through creds_options.getenv_fn, so the real one is never consulted (HOME
 * points at the case's temp dir and IMDS is disabled unless a case enables it
 * against its own server). */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "creds.h"
#include "creds_httpd.h"
#include "sigv4.h"
#include "testlib.h"

/* ------------------------------------------------------------ helpers */

#define TENV_MAX 48

typedef struct {
  const char *k[TENV_MAX];
  char *v[TENV_MAX];
  int n;
} tenv;

static const char *tenv_get(const char *name, void *arg) {
  tenv *e = arg;
  for (int i = 0; i < e->n; i++)
    if (strcmp(e->k[i], name) == 0) return e->v[i];
  return NULL;
}

static void tenv_set(tenv *e, const char *k, const char *v) {
  for (int i = 0; i < e->n; i++)
    if (strcmp(e->k[i], k) == 0) {
      free(e->v[i]);
      e->v[i] = v ? strdup(v) : NULL;
      return;
    }
  CHECK(e->n < TENV_MAX);
  e->k[e->n] = k;
  e->v[e->n] = v ? strdup(v) : NULL;
  e->n++;
}

static void tenv_init(tenv *e) {
  memset(e, 0, sizeof *e);
  tenv_set(e, "HOME", tl_tmpdir);
  tenv_set(e, "AWS_EC2_METADATA_DISABLED", "true");
}

static void tenv_free(tenv *e) {
  for (int i = 0; i < e->n; i++) free(e->v[i]);
  e->n = 0;
}

static creds_options topts(tenv *e) {
  creds_options o;
  memset(&o, 0, sizeof o);
  o.getenv_fn = tenv_get;
  o.getenv_arg = e;
  o.timeout_ms = 2000;
  return o;
}

static char *tpath(const char *name) {
  static char buf[8][1024];
  static int idx;
  char *b = buf[idx++ % 8];
  snprintf(b, sizeof buf[0], "%s/%s", tl_tmpdir, name);
  return b;
}

static void write_file(const char *path, const char *text) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  CHECK(f != NULL);
  CHECK(fputs(text, f) >= 0);
  CHECK(fclose(f) == 0);
  CHECK(rename(tmp, path) == 0);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void iso8601(time_t t, char *out, size_t cap) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, cap, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}

static void get_req(chd_server *s, int i, chd_request *rq) {
  CHECK(chd_get(s, i, rq) == 0);
}

/* ------------------------------------------------------------ STS stand-in */

typedef struct {
  atomic_int calls;
  int expire_in;        /* seconds; 0 = 3600 */
  int fail_from;        /* calls >= this answer an error (1-based); 0 = never */
  const char *err_code; /* default AccessDenied */
  const char *err_msg;  /* "%s" in it is replaced by the WebIdentityToken received */
  int err_status;       /* default 403 */
  int delay_from, delay_ms;
  int hang_from;
  const char *raw; /* verbatim answer */
  int raw_status;
  /* When set, the request must carry a valid SigV4 signature by these keys. */
  const char *verify_key_id, *verify_secret, *verify_token;
  atomic_int sig_bad;
  char key_prefix[16];
} sts_script;

static int verify_sig(const chd_request *rq, const sts_script *sc) {
  char auth[1024], date[64], host[256], ctype[256], tok[4096];
  if (!chd_header(rq, "Authorization", auth, sizeof auth) ||
      !chd_header(rq, "X-Amz-Date", date, sizeof date) ||
      !chd_header(rq, "Host", host, sizeof host) ||
      !chd_header(rq, "Content-Type", ctype, sizeof ctype))
    return 0;
  const char *t = chd_header(rq, "X-Amz-Security-Token", tok, sizeof tok);
  if ((t == NULL) != (sc->verify_token == NULL)) return 0;
  if (t && strcmp(t, sc->verify_token) != 0) return 0;
  struct tm tm = {0};
  if (sscanf(date, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
             &tm.tm_min, &tm.tm_sec) != 6)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  sigv4_header h[2] = {{"host", host}, {"content-type", ctype}};
  sigv4_request req = {.method = rq->method,
                       .path = rq->path,
                       .headers = h,
                       .nheaders = 2,
                       .body = (const uint8_t *)rq->body,
                       .body_len = rq->body_len,
                       .region = "us-east-1",
                       .service = "sts",
                       .when = timegm(&tm),
                       .sign_session_token = 1};
  sigv4_credentials c = {sc->verify_key_id, sc->verify_secret, sc->verify_token};
  sigv4_result r;
  if (sigv4_sign(&req, &c, NULL, &r) != 0) return 0;
  int ok = strcmp(r.authorization, auth) == 0;
  sigv4_result_free(&r);
  return ok;
}

static void sts_handler(const chd_request *rq, chd_response *rs, void *arg) {
  sts_script *sc = arg;
  int n = atomic_fetch_add(&sc->calls, 1) + 1;
  snprintf(rs->content_type, sizeof rs->content_type, "text/xml");
  if (sc->hang_from && n >= sc->hang_from) {
    rs->hang = 1;
    return;
  }
  if (sc->delay_from && n >= sc->delay_from) rs->delay_ms = sc->delay_ms;
  if (sc->raw) {
    chd_reply(rs, sc->raw_status ? sc->raw_status : 200, "%s", sc->raw);
    return;
  }
  if (sc->verify_secret && !verify_sig(rq, sc)) {
    atomic_fetch_add(&sc->sig_bad, 1);
    chd_reply(rs, 403,
              "<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code>"
              "<Message>bad signature</Message></Error></ErrorResponse>");
    return;
  }
  if (sc->fail_from && n >= sc->fail_from) {
    char tok[4096] = "", msg[8192];
    chd_form(rq->body, "WebIdentityToken", tok, sizeof tok);
    const char *m = sc->err_msg ? sc->err_msg : "Not authorized to perform sts:AssumeRole";
    const char *pct = strstr(m, "%s");
    if (pct)
      snprintf(msg, sizeof msg, "%.*s%s%s", (int)(pct - m), m, tok, pct + 2);
    else
      snprintf(msg, sizeof msg, "%s", m);
    chd_reply(rs, sc->err_status ? sc->err_status : 403,
              "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
              "<Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>"
              "<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>",
              sc->err_code ? sc->err_code : "AccessDenied", msg);
    return;
  }
  char action[64] = "";
  chd_form(rq->body, "Action", action, sizeof action);
  char exp[64];
  iso8601(time(NULL) + (sc->expire_in ? sc->expire_in : 3600), exp, sizeof exp);
  chd_reply(rs, 200,
            "<%sResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
            "  <%sResult>\n"
            "    <SubjectFromWebIdentityToken>amzn1.account.AF6RHO7KZU5XRVQJGXK6HB56KR2A"
            "</SubjectFromWebIdentityToken>\n"
            "    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn>"
            "<AssumedRoleId>AROACLKWSDQRAOEXAMPLE:s</AssumedRoleId></AssumedRoleUser>\n"
            "    <Credentials>\n"
            "      <SessionToken>sts-token-%d</SessionToken>\n"
            "      <SecretAccessKey>sts-secret-%d</SecretAccessKey>\n"
            "      <Expiration>%s</Expiration>\n"
            "      <AccessKeyId>%s%d</AccessKeyId>\n"
            "    </Credentials>\n"
            "  </%sResult>\n"
            "  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>"
            "</ResponseMetadata>\n"
            "</%sResponse>\n",
            action, action, n, n, exp, sc->key_prefix[0] ? sc->key_prefix : "ASIASTS", n, action,
            action);
}

/* ------------------------------------------------------------ container/IMDS */

typedef struct {
  atomic_int calls;
  int status;       /* 0 = 200 */
  const char *body; /* verbatim; NULL = valid credentials */
  int hang;
  int expire_in;
} json_script;

static void container_handler(const chd_request *rq, chd_response *rs, void *arg) {
  (void)rq;
  json_script *sc = arg;
  int n = atomic_fetch_add(&sc->calls, 1) + 1;
  snprintf(rs->content_type, sizeof rs->content_type, "application/json");
  if (sc->hang) {
    rs->hang = 1;
    return;
  }
  if (sc->body) {
    chd_reply(rs, sc->status ? sc->status : 200, "%s", sc->body);
    return;
  }
  char exp[64];
  iso8601(time(NULL) + (sc->expire_in ? sc->expire_in : 3600), exp, sizeof exp);
  chd_reply(
      rs, sc->status ? sc->status : 200,
      "{\"AccessKeyId\":\"ASIACONT%d\",\"SecretAccessKey\":\"cont-secret-%d\","
      "\"Token\":\"cont-token-%d\",\"Expiration\":\"%s\",\"RoleArn\":\"arn:aws:iam::1:role/x\"}",
      n, n, n, exp);
}

#define IMDS_TOKEN "imds-session-token-AQAEAFh0cmVz"

typedef struct {
  atomic_int calls;
  int no_role;
  const char *creds_body; /* NULL = valid */
  int token_status;       /* 0 = 200 */
  int hang;
} imds_script;

static void imds_handler(const chd_request *rq, chd_response *rs, void *arg) {
  imds_script *sc = arg;
  atomic_fetch_add(&sc->calls, 1);
  char v[256];
  if (sc->hang) {
    rs->hang = 1;
    return;
  }
  if (strcmp(rq->path, "/latest/api/token") == 0) {
    if (strcmp(rq->method, "PUT") != 0) {
      chd_reply(rs, 405, "method");
      return;
    }
    if (!chd_header(rq, "X-aws-ec2-metadata-token-ttl-seconds", v, sizeof v) ||
        strtol(v, NULL, 10) <= 0) {
      chd_reply(rs, 400, "missing ttl");
      return;
    }
    chd_reply(rs, sc->token_status ? sc->token_status : 200, IMDS_TOKEN);
    return;
  }
  if (!chd_header(rq, "X-aws-ec2-metadata-token", v, sizeof v) || strcmp(v, IMDS_TOKEN) != 0) {
    chd_reply(rs, 401, "%s", "");
    return;
  }
  if (strcmp(rq->path, "/latest/meta-data/iam/security-credentials/") == 0) {
    if (sc->no_role)
      chd_reply(rs, 404, "not found");
    else
      chd_reply(rs, 200, "relay-instance-role\n");
    return;
  }
  if (strcmp(rq->path, "/latest/meta-data/iam/security-credentials/relay-instance-role") == 0) {
    if (sc->creds_body) {
      chd_reply(rs, 200, "%s", sc->creds_body);
      return;
    }
    char exp[64];
    iso8601(time(NULL) + 6 * 3600, exp, sizeof exp);
    chd_reply(rs, 200,
              "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2026-11-28T01:00:00Z\",\n"
              "  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"ASIAIMDS\",\n"
              "  \"SecretAccessKey\" : \"imds-secret\",\n  \"Token\" : \"imds-token\",\n"
              "  \"Expiration\" : \"%s\"\n}",
              exp);
    return;
  }
  chd_reply(rs, 404, "no such path");
}

/* ------------------------------------------------------------ 1. env */

TEST(env_keys) {
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_ACCESS_KEY_ID", "AKIDENV");
  tenv_set(&e, "AWS_SECRET_ACCESS_KEY", "env-secret");
  tenv_set(&e, "AWS_SESSION_TOKEN", "env-token");
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, err, sizeof err), ==, 0);
  CHECK_STR(c.access_key_id, "AKIDENV");
  CHECK_STR(c.secret_access_key, "env-secret");
  CHECK_STR(c.session_token, "env-token");
  CHECK_STR(c.source, "env");
  CHECK_INT(c.expiration, ==, 0);
  creds_provider_free(p);
  tenv_free(&e);
}

TEST(options_keys_win_over_env) {
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_ACCESS_KEY_ID", "AKIDENV");
  tenv_set(&e, "AWS_SECRET_ACCESS_KEY", "env-secret");
  creds_options o = topts(&e);
  o.access_key_id = "AKIDCONF";
  o.secret_access_key = "conf-secret";
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "AKIDCONF");
  CHECK_STR(c.secret_access_key, "conf-secret");
  CHECK_STR(c.session_token, "");
  creds_provider_free(p);
  tenv_free(&e);
}

TEST(env_partial_is_an_error) {
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_ACCESS_KEY_ID", "AKIDENV");
  creds_options o = topts(&e);
  creds_provider *p = (creds_provider *)1;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(p == NULL);
  CHECK(strstr(err, "AWS_SECRET_ACCESS_KEY") != NULL);
  tenv_free(&e);
}

TEST(nothing_configured) {
  tenv e;
  tenv_init(&e);
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ENOENT);
  CHECK(p == NULL);
  CHECK(strstr(err, "no AWS credentials") != NULL);
  CHECK(strstr(err, "IMDS disabled") != NULL);
  CHECK(strstr(err, "no profile 'default'") != NULL);
  tenv_free(&e);
}

/* ------------------------------------------------------------ 2. web identity */

TEST(web_identity) {
  sts_script sc = {0};
  chd_server *s = chd_start(sts_handler, &sc);
  CHECK(s != NULL);
  write_file(tpath("token"), "eyJhbGciOiJSUzI1NiJ9.web+token/value=\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/relay-irsa");
  tenv_set(&e, "AWS_ROLE_SESSION_NAME", "relay-pod-1");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  time_t before = time(NULL);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIASTS1");
  CHECK_STR(c.secret_access_key, "sts-secret-1");
  CHECK_STR(c.session_token, "sts-token-1");
  CHECK_STR(c.source, "web_identity");
  CHECK_INT(c.expiration, >=, before + 3599);
  CHECK_INT(c.expiration, <=, time(NULL) + 3601);

  chd_request rq;
  get_req(s, 0, &rq);
  CHECK_STR(rq.method, "POST");
  CHECK_STR(rq.path, "/");
  char v[4096];
  CHECK_STR(chd_form(rq.body, "Action", v, sizeof v), "AssumeRoleWithWebIdentity");
  CHECK_STR(chd_form(rq.body, "Version", v, sizeof v), "2011-06-15");
  CHECK_STR(chd_form(rq.body, "RoleArn", v, sizeof v), "arn:aws:iam::123456789012:role/relay-irsa");
  CHECK_STR(chd_form(rq.body, "RoleSessionName", v, sizeof v), "relay-pod-1");
  CHECK_STR(chd_form(rq.body, "WebIdentityToken", v, sizeof v),
            "eyJhbGciOiJSUzI1NiJ9.web+token/value=");
  /* '+' '/' '=' must be percent-encoded on the wire, or STS reads a space. */
  CHECK(strstr(rq.body, "web%2Btoken%2Fvalue%3D") != NULL);
  CHECK(chd_header(&rq, "Authorization", v, sizeof v) == NULL);
  CHECK(strstr(chd_header(&rq, "Content-Type", v, sizeof v), "application/x-www-form-urlencoded"));
  free(rq.body);
  creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
}

TEST(web_identity_sts_error) {
  sts_script sc = {0};
  sc.fail_from = 1;
  sc.err_code = "InvalidIdentityToken";
  sc.err_msg = "Couldn't retrieve verification key from your identity provider";
  sc.err_status = 400;
  chd_server *s = chd_start(sts_handler, &sc);
  write_file(tpath("token"), "tok");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r");
  /* the generic override applies when the STS one is unset */
  tenv_set(&e, "AWS_ENDPOINT_URL", chd_url(s));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "InvalidIdentityToken") != NULL);
  CHECK(strstr(err, "verification key") != NULL);
  CHECK(strstr(err, "web identity") != NULL);
  CHECK(strstr(err, "HTTP 400") != NULL);
  CHECK_INT(atomic_load(&sc.calls), ==, 1);
  chd_stop(s);
  tenv_free(&e);
}

TEST(web_identity_missing_or_empty_token_file) {
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("nope"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1");
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ENOENT);
  CHECK(strstr(err, tpath("nope")) != NULL);
  write_file(tpath("empty"), "\n  \n");
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("empty"));
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "empty") != NULL);
  /* token file without a role is a broken setup, not "unset" */
  tenv_set(&e, "AWS_ROLE_ARN", NULL);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "AWS_ROLE_ARN") != NULL);
  tenv_free(&e);
}

/* ------------------------------------------------------------ STS failure modes */

TEST(sts_hangs_times_out) {
  sts_script sc = {0};
  sc.hang_from = 1;
  chd_server *s = chd_start(sts_handler, &sc);
  write_file(tpath("token"), "tok");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  o.timeout_ms = 300;
  creds_provider *p;
  char err[512] = "";
  long long t0 = now_ms();
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ETIMEDOUT);
  long long took = now_ms() - t0;
  CHECK_INT(took, >=, 250);
  CHECK_INT(took, <, 2000);
  CHECK(strstr(err, "no answer within 300 ms") != NULL);
  CHECK(strstr(err, chd_url(s)) != NULL);
  chd_stop(s);
  tenv_free(&e);
}

TEST(sts_refused) {
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", chd_dead_port());
  write_file(tpath("token"), "tok");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", url);
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ECONNREFUSED);
  CHECK(strstr(err, "cannot connect") != NULL);
  tenv_free(&e);
}

static int sts_answer(const char *body, int status, char *err, size_t errlen) {
  sts_script sc = {0};
  sc.raw = body;
  sc.raw_status = status;
  chd_server *s = chd_start(sts_handler, &sc);
  CHECK(s != NULL);
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  creds_provider *p = NULL;
  int rc = creds_provider_new(&p, &o, err, errlen);
  if (rc == 0) creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
  return rc;
}

TEST(sts_garbage) {
  write_file(tpath("token"), "tok");
  char err[512];
  CHECK_INT(sts_answer("<html><body>hello</body></html>", 200, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "lacks AccessKeyId") != NULL);
  CHECK_INT(sts_answer("this is not xml at all", 200, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "unparseable") != NULL);
  CHECK_INT(sts_answer("<AssumeRoleWithWebIdentityResponse><Credentials><AccessKeyId>A", 200, err,
                       sizeof err),
            ==, -EPROTO);
  CHECK_INT(sts_answer("", 200, err, sizeof err), ==, -EPROTO);
  CHECK_INT(sts_answer("<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>", 200,
                       err, sizeof err),
            ==, -EPROTO);
  CHECK(strstr(err, "unparseable") != NULL); /* refused for the DTD, not for lacking keys */
  CHECK_INT(sts_answer("<R><Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S"
                       "</SecretAccessKey><SessionToken>T</SessionToken><Expiration>tomorrow"
                       "</Expiration></Credentials></R>",
                       200, err, sizeof err),
            ==, -EPROTO);
  CHECK(strstr(err, "Expiration") != NULL);
  CHECK_INT(sts_answer("<html>Bad Gateway</html>", 502, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "HTTP 502") != NULL);
  CHECK_INT(sts_answer("upstream down", 503, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "HTTP 503") != NULL);
  /* an over-long key must not be silently truncated */
  char big[1024];
  char k[300];
  memset(k, 'A', sizeof k - 1);
  k[sizeof k - 1] = '\0';
  snprintf(big, sizeof big,
           "<R><Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
           "<SessionToken>T</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration>"
           "</Credentials></R>",
           k);
  CHECK_INT(sts_answer(big, 200, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "too long") != NULL);
}

/* ------------------------------------------------------------ 3. shared files */

TEST(profile_static_keys) {
  write_file(
      tpath("credentials"),
      "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\n"
      "aws_secret_access_key = default-secret\n\n"
      "[dev]\n; another comment\naws_access_key_id=AKIDDEV\naws_secret_access_key=dev/se+cret=\n"
      "aws_session_token = dev-token\n");
  write_file(tpath("config"),
             "[default]\nregion = eu-west-1\n[profile dev]\nregion = us-west-2\n"
             "s3 =\n  max_concurrent_requests = 20\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  tenv_set(&e, "AWS_CONFIG_FILE", tpath("config"));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  aws_creds c;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "AKIDDEFAULT");
  CHECK_STR(c.secret_access_key, "default-secret");
  CHECK_STR(c.session_token, "");
  CHECK_STR(c.source, "profile");
  CHECK_INT(c.expiration, ==, 0);
  creds_provider_free(p);

  tenv_set(&e, "AWS_PROFILE", "dev");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "AKIDDEV");
  CHECK_STR(c.secret_access_key, "dev/se+cret=");
  CHECK_STR(c.session_token, "dev-token");
  creds_provider_free(p);
  tenv_free(&e);
}

TEST(profile_crlf_bom_and_options_token) {
  write_file(tpath("credentials"),
             "\xEF\xBB\xBF[default]\r\naws_access_key_id = AKIDCRLF\r\n"
             "aws_secret_access_key = crlf-secret\r\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  aws_creds c;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "AKIDCRLF");
  CHECK_STR(c.secret_access_key, "crlf-secret");
  creds_provider_free(p);
  /* a configured session token without keys is a mistake worth reporting */
  o.session_token = "tok-only";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "session token") != NULL);
  o.session_token = NULL;
  o.access_key_id = "AKIDHALF";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "relay config") != NULL);
  tenv_free(&e);
}

TEST(profile_default_paths_under_home) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/.aws", tl_tmpdir);
  CHECK(mkdir(dir, 0700) == 0);
  write_file(tpath(".aws/credentials"),
             "[default]\naws_access_key_id=AKIDHOME\n"
             "aws_secret_access_key=home-secret\n");
  write_file(tpath(".aws/config"),
             "[profile cfgonly]\naws_access_key_id=AKIDCFG\n"
             "aws_secret_access_key=cfg-secret\n");
  tenv e;
  tenv_init(&e);
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  aws_creds c;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "AKIDHOME");
  creds_provider_free(p);
  /* keys in the config file work too, under [profile x] */
  tenv_set(&e, "AWS_PROFILE", "cfgonly");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "AKIDCFG");
  creds_provider_free(p);
  tenv_free(&e);
}

TEST(profile_credentials_file_wins_over_config) {
  write_file(tpath("credentials"),
             "[x]\naws_access_key_id=AKIDCREDFILE\n"
             "aws_secret_access_key=credfile-secret\n");
  write_file(tpath("config"),
             "[profile x]\naws_access_key_id=AKIDCONFIGFILE\n"
             "aws_secret_access_key=configfile-secret\n"
             "[x]\naws_access_key_id=NOTAPROFILE\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  tenv_set(&e, "AWS_CONFIG_FILE", tpath("config"));
  tenv_set(&e, "AWS_PROFILE", "x");
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  aws_creds c;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "AKIDCREDFILE");
  CHECK_STR(c.secret_access_key, "credfile-secret");
  creds_provider_free(p);
  tenv_free(&e);
}

TEST(profile_missing_or_bad_files) {
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  tenv_set(&e, "AWS_CONFIG_FILE", tpath("config"));
  tenv_set(&e, "AWS_PROFILE", "prod");
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  /* an explicitly chosen profile that does not exist is an error, not a fall-through */
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ENOENT);
  CHECK(strstr(err, "AWS_PROFILE 'prod' not found") != NULL);
  CHECK(strstr(err, "(missing)") != NULL);

  write_file(tpath("credentials"), "[prod]\naws_access_key_id=AKID\naws_secret_access_key\n");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, ":3: expected key = value") != NULL);

  write_file(tpath("credentials"), "aws_access_key_id=AKID\n");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "outside of a [section]") != NULL);

  write_file(tpath("credentials"), "[prod\naws_access_key_id=AKID\n");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "malformed section header") != NULL);

  write_file(tpath("credentials"), "[prod]\naws_access_key_id=AKID\n");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "aws_secret_access_key") != NULL);

  write_file(tpath("credentials"), "[prod]\ncredential_process = /bin/echo\n");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ENOTSUP);

  /* unreadable: a directory in place of the file */
  CHECK(unlink(tpath("credentials")) == 0);
  CHECK(mkdir(tpath("credentials"), 0700) == 0);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), <, 0);
  CHECK(strstr(err, tpath("credentials")) != NULL);
  tenv_free(&e);
}

/* The AWS CLI and SDKs accept a comment after a section header
 * ("[prod]  # production account"); such a file must not stop relayd. */
TEST(profile_section_header_with_trailing_comment) {
  write_file(tpath("credentials"),
             "[prod]  # production account\naws_access_key_id = AKIDPROD\n"
             "aws_secret_access_key = prod-secret\n");
  write_file(tpath("config"), "[profile prod]\t; eu\nregion = eu-west-1\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  tenv_set(&e, "AWS_CONFIG_FILE", tpath("config"));
  tenv_set(&e, "AWS_PROFILE", "prod");
  creds_options o = topts(&e);
  creds_provider *p = NULL;
  char err[512] = "";
  aws_creds c;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  if (p) {
    CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
    CHECK_STR(c.access_key_id, "AKIDPROD");
    creds_provider_free(p);
  }
  /* Anything else after the bracket is still malformed. */
  write_file(tpath("credentials"), "[prod] junk\naws_access_key_id=A\naws_secret_access_key=B\n");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "malformed section header") != NULL);
  tenv_free(&e);
}

/* aws-vault, awsume and boto 2 write the session token as
 * aws_security_token; the CLI and SDKs read it when aws_session_token is
 * absent, and aws_session_token wins when both are there. */
TEST(profile_legacy_security_token) {
  write_file(tpath("credentials"),
             "[legacy]\naws_access_key_id = AKIDLEGACY\naws_secret_access_key = legacy-secret\n"
             "aws_security_token = legacy-token\n"
             "[both]\naws_security_token = old-name-token\naws_access_key_id = AKIDBOTH\n"
             "aws_secret_access_key = both-secret\naws_session_token = new-name-token\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  tenv_set(&e, "AWS_PROFILE", "legacy");
  creds_options o = topts(&e);
  creds_provider *p = NULL;
  char err[512] = "";
  aws_creds c;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  if (p) {
    CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
    CHECK_STR(c.access_key_id, "AKIDLEGACY");
    CHECK_STR(c.session_token, "legacy-token");
    creds_provider_free(p);
  }
  tenv_set(&e, "AWS_PROFILE", "both");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  if (p) {
    CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
    CHECK_STR(c.access_key_id, "AKIDBOTH");
    CHECK_STR(c.session_token, "new-name-token");
    creds_provider_free(p);
  }
  tenv_free(&e);
}

/* The legacy name also carries the token of a role's own keys
 * (source_profile naming itself): STS checks the signature with it. */
TEST(profile_legacy_security_token_signs_assume_role) {
  sts_script sc = {0};
  sc.verify_key_id = "AKIDSELF";
  sc.verify_secret = "self-secret";
  sc.verify_token = "self-legacy-token";
  chd_server *s = chd_start(sts_handler, &sc);
  write_file(tpath("credentials"),
             "[self]\naws_access_key_id = AKIDSELF\naws_secret_access_key = self-secret\n"
             "aws_security_token = self-legacy-token\n"
             "role_arn = arn:aws:iam::1:role/self\nsource_profile = self\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  tenv_set(&e, "AWS_PROFILE", "self");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  creds_provider *p = NULL;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(atomic_load(&sc.sig_bad), ==, 0);
  CHECK_INT(chd_count(s), ==, 1);
  if (p) creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
}

TEST(profile_role_with_source_profile) {
  sts_script sc = {0};
  sc.verify_key_id = "AKIDBASE";
  sc.verify_secret = "base-secret";
  sc.verify_token = "base-session-token";
  chd_server *s = chd_start(sts_handler, &sc);
  write_file(tpath("credentials"),
             "[base]\naws_access_key_id = AKIDBASE\n"
             "aws_secret_access_key = base-secret\n"
             "aws_session_token = base-session-token\n");
  write_file(tpath("config"),
             "[profile deploy]\nrole_arn = arn:aws:iam::210987654321:role/publisher\n"
             "source_profile = base\nexternal_id = ext-42\n"
             "role_session_name = relay-sess\nduration_seconds = 1800\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  tenv_set(&e, "AWS_CONFIG_FILE", tpath("config"));
  tenv_set(&e, "AWS_PROFILE", "deploy");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(atomic_load(&sc.sig_bad), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIASTS1");
  CHECK_STR(c.source, "profile");
  CHECK_INT(c.expiration, >, time(NULL) + 3000);
  chd_request rq;
  get_req(s, 0, &rq);
  char v[512];
  CHECK_STR(chd_form(rq.body, "Action", v, sizeof v), "AssumeRole");
  CHECK_STR(chd_form(rq.body, "RoleArn", v, sizeof v), "arn:aws:iam::210987654321:role/publisher");
  CHECK_STR(chd_form(rq.body, "ExternalId", v, sizeof v), "ext-42");
  CHECK_STR(chd_form(rq.body, "RoleSessionName", v, sizeof v), "relay-sess");
  CHECK_STR(chd_form(rq.body, "DurationSeconds", v, sizeof v), "1800");
  CHECK(strncmp(chd_header(&rq, "Authorization", v, sizeof v),
                "AWS4-HMAC-SHA256 Credential=AKIDBASE/", 37) == 0);
  CHECK(strstr(v, "/us-east-1/sts/aws4_request") != NULL);
  free(rq.body);
  creds_provider_free(p);

  /* the signer really is checked: wrong source keys are refused */
  write_file(tpath("credentials"),
             "[base]\naws_access_key_id = AKIDBASE\n"
             "aws_secret_access_key = wrong-secret\n"
             "aws_session_token = base-session-token\n");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "SignatureDoesNotMatch") != NULL);
  CHECK(strstr(err, "profile 'deploy'") != NULL);
  chd_stop(s);
  tenv_free(&e);
}

TEST(profile_role_chain_and_errors) {
  sts_script sc = {0};
  chd_server *s = chd_start(sts_handler, &sc);
  write_file(tpath("credentials"),
             "[root]\naws_access_key_id=AKIDROOT\naws_secret_access_key=root-s\n");
  write_file(tpath("config"),
             "[profile hop1]\nrole_arn=arn:aws:iam::1:role/hop1\nsource_profile=root\n"
             "[profile hop2]\nrole_arn=arn:aws:iam::1:role/hop2\nsource_profile=hop1\n"
             "[profile loopa]\nrole_arn=arn:aws:iam::1:role/a\nsource_profile=loopb\n"
             "[profile loopb]\nrole_arn=arn:aws:iam::1:role/b\nsource_profile=loopa\n"
             "[profile nosrc]\nrole_arn=arn:aws:iam::1:role/n\n"
             "[profile ghost]\nrole_arn=arn:aws:iam::1:role/g\nsource_profile=missing\n"
             "[profile both]\nrole_arn=arn:aws:iam::1:role/g\nsource_profile=root\n"
             "credential_source=Environment\n"
             "[profile envsrc]\nrole_arn=arn:aws:iam::1:role/e\ncredential_source=Environment\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  tenv_set(&e, "AWS_CONFIG_FILE", tpath("config"));
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  aws_creds c;
  /* hop2 <- hop1 <- root: two AssumeRole calls, the second signed by the first's result */
  tenv_set(&e, "AWS_PROFILE", "hop2");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIASTS2");
  CHECK_INT(chd_count(s), ==, 2);
  chd_request rq;
  char v[512];
  get_req(s, 0, &rq);
  CHECK_STR(chd_form(rq.body, "RoleArn", v, sizeof v), "arn:aws:iam::1:role/hop1");
  CHECK(strstr(chd_header(&rq, "Authorization", v, sizeof v), "Credential=AKIDROOT/") != NULL);
  free(rq.body);
  get_req(s, 1, &rq);
  CHECK_STR(chd_form(rq.body, "RoleArn", v, sizeof v), "arn:aws:iam::1:role/hop2");
  CHECK(strstr(chd_header(&rq, "Authorization", v, sizeof v), "Credential=ASIASTS1/") != NULL);
  CHECK_STR(chd_header(&rq, "X-Amz-Security-Token", v, sizeof v), "sts-token-1");
  free(rq.body);
  creds_provider_free(p);

  tenv_set(&e, "AWS_PROFILE", "loopa");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "cycle") != NULL);
  tenv_set(&e, "AWS_PROFILE", "nosrc");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "no source_profile or credential_source") != NULL);
  tenv_set(&e, "AWS_PROFILE", "ghost");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ENOENT);
  CHECK(strstr(err, "'missing' not found") != NULL);
  tenv_set(&e, "AWS_PROFILE", "both");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  tenv_set(&e, "AWS_PROFILE", "envsrc");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "credential_source Environment") != NULL);
  int before = chd_count(s);
  /* credential_source = Environment reads the env keys; since they are set,
   * the env source itself would win, which is the SDK order too. */
  tenv_set(&e, "AWS_ACCESS_KEY_ID", "AKIDENVSRC");
  tenv_set(&e, "AWS_SECRET_ACCESS_KEY", "envsrc-secret");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.source, "env");
  CHECK_INT(chd_count(s), ==, before);
  creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
}

/* ------------------------------------------------------------ 4. container */

TEST(container_full_uri_with_token) {
  json_script sc = {0};
  chd_server *s = chd_start(container_handler, &sc);
  char url[128];
  snprintf(url, sizeof url, "%s/v2/credentials/abc?x=1", chd_url(s));
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", url);
  tenv_set(&e, "AWS_CONTAINER_AUTHORIZATION_TOKEN", "Basic env-auth-token");
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIACONT1");
  CHECK_STR(c.secret_access_key, "cont-secret-1");
  CHECK_STR(c.session_token, "cont-token-1");
  CHECK_STR(c.source, "container");
  CHECK_INT(c.expiration, >, time(NULL) + 3500);
  chd_request rq;
  char v[512];
  get_req(s, 0, &rq);
  CHECK_STR(rq.method, "GET");
  CHECK_STR(rq.path, "/v2/credentials/abc?x=1");
  CHECK_STR(chd_header(&rq, "Authorization", v, sizeof v), "Basic env-auth-token");
  free(rq.body);
  creds_provider_free(p);

  /* the token file (EKS Pod Identity) wins over the variable, read on every fetch */
  write_file(tpath("eks-token"), "file-auth-token\n");
  tenv_set(&e, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tpath("eks-token"));
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  get_req(s, 1, &rq);
  CHECK_STR(chd_header(&rq, "Authorization", v, sizeof v), "file-auth-token");
  free(rq.body);
  creds_provider_free(p);

  tenv_set(&e, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tpath("missing-token"));
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ENOENT);
  CHECK(strstr(err, "missing-token") != NULL);
  tenv_set(&e, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", NULL);
  tenv_set(&e, "AWS_CONTAINER_AUTHORIZATION_TOKEN", "a\r\nX-Injected: 1");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK_INT(chd_count(s), ==, 2);
  chd_stop(s);
  tenv_free(&e);
}

TEST(container_uri_rules) {
  tenv e;
  tenv_init(&e);
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  /* plain http off the host would send the token in clear: refused without connecting */
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.9.8.7/creds");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "use https") != NULL);
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", "not a url");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  /* RELATIVE_URI takes precedence over FULL_URI (and must be a path) */
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/");
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "v2/credentials");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK(strstr(err, "RELATIVE_URI must start with '/'") != NULL);
  tenv_free(&e);
}

static int container_answer(json_script *sc, long timeout_ms, char *err, size_t errlen) {
  chd_server *s = chd_start(container_handler, sc);
  char url[128];
  snprintf(url, sizeof url, "%s/creds", chd_url(s));
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", url);
  creds_options o = topts(&e);
  o.timeout_ms = timeout_ms;
  creds_provider *p = NULL;
  int rc = creds_provider_new(&p, &o, err, errlen);
  if (rc == 0) creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
  return rc;
}

TEST(container_garbage_and_errors) {
  char err[512];
  json_script sc = {0};
  sc.body = "<html>not json</html>";
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "not a JSON object") != NULL);
  sc.body = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\"} trailing";
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EPROTO);
  sc.body = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":";
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EPROTO);
  sc.body = "[1,2,3]";
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EPROTO);
  sc.body = "{\"AccessKeyId\":\"A\"}";
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "lacks SecretAccessKey") != NULL);
  sc.body = "{\"AccessKeyId\":12,\"SecretAccessKey\":\"S\"}";
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "not a string") != NULL);
  sc.body = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Expiration\":\"soon\"}";
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EPROTO);
  sc.body = "";
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EPROTO);
  sc.body = "{\"code\":\"AccessDenied\",\"message\":\"no\"}";
  sc.status = 403;
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "HTTP 403") != NULL);
  sc.status = 500;
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, -EACCES);
  /* timestamps with offsets and fractions */
  sc.status = 0;
  sc.body =
      "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
      "\"Expiration\":\"2031-02-03T04:05:06.789+01:00\"}";
  CHECK_INT(container_answer(&sc, 2000, err, sizeof err), ==, 0);
  sc.body = NULL;
  sc.hang = 1;
  long long t0 = now_ms();
  CHECK_INT(container_answer(&sc, 300, err, sizeof err), ==, -ETIMEDOUT);
  CHECK_INT(now_ms() - t0, <, 2000);
  CHECK(strstr(err, "container endpoint") != NULL);
}

TEST(container_expiration_parsed) {
  json_script sc = {0};
  sc.body =
      "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
      "\"Expiration\":\"2031-02-03T04:05:06.789+01:00\"}";
  chd_server *s = chd_start(container_handler, &sc);
  char url[128];
  snprintf(url, sizeof url, "%s/creds", chd_url(s));
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", url);
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512];
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  struct tm tm = {
      .tm_year = 131, .tm_mon = 1, .tm_mday = 3, .tm_hour = 3, .tm_min = 5, .tm_sec = 6};
  CHECK_INT(c.expiration, ==, timegm(&tm));
  creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
}

/* ------------------------------------------------------------ 5. IMDS */

static void imds_env(tenv *e, chd_server *s) {
  tenv_init(e);
  tenv_set(e, "AWS_EC2_METADATA_DISABLED", NULL);
  tenv_set(e, "AWS_EC2_METADATA_SERVICE_ENDPOINT", chd_url(s));
}

TEST(imds_v2) {
  imds_script sc = {0};
  chd_server *s = chd_start(imds_handler, &sc);
  tenv e;
  imds_env(&e, s);
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIAIMDS");
  CHECK_STR(c.secret_access_key, "imds-secret");
  CHECK_STR(c.session_token, "imds-token");
  CHECK_STR(c.source, "imds");
  CHECK_INT(c.expiration, >, time(NULL) + 5 * 3600);
  CHECK_INT(chd_count(s), ==, 3);
  chd_request rq;
  char v[256];
  get_req(s, 0, &rq);
  CHECK_STR(rq.method, "PUT");
  CHECK_STR(rq.path, "/latest/api/token");
  CHECK_STR(chd_header(&rq, "X-aws-ec2-metadata-token-ttl-seconds", v, sizeof v), "21600");
  free(rq.body);
  get_req(s, 1, &rq);
  CHECK_STR(rq.method, "GET");
  CHECK_STR(rq.path, "/latest/meta-data/iam/security-credentials/");
  CHECK_STR(chd_header(&rq, "X-aws-ec2-metadata-token", v, sizeof v), IMDS_TOKEN);
  free(rq.body);
  get_req(s, 2, &rq);
  CHECK_STR(rq.path, "/latest/meta-data/iam/security-credentials/relay-instance-role");
  free(rq.body);
  creds_provider_free(p);

  /* a trailing slash on the override is tolerated */
  char ep[128];
  snprintf(ep, sizeof ep, "%s/", chd_url(s));
  tenv_set(&e, "AWS_EC2_METADATA_SERVICE_ENDPOINT", ep);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  creds_provider_free(p);
  /* AWS_EC2_METADATA_DISABLED=true turns it off entirely */
  int before = chd_count(s);
  tenv_set(&e, "AWS_EC2_METADATA_DISABLED", "TRUE");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ENOENT);
  CHECK(strstr(err, "IMDS disabled") != NULL);
  CHECK_INT(chd_count(s), ==, before);
  chd_stop(s);
  tenv_free(&e);
}

TEST(imds_errors) {
  imds_script sc = {0};
  chd_server *s = chd_start(imds_handler, &sc);
  tenv e;
  imds_env(&e, s);
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  sc.no_role = 1;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ENOENT);
  CHECK(strstr(err, "no IAM role") != NULL);
  sc.no_role = 0;
  sc.token_status = 403;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "HTTP 403") != NULL);
  sc.token_status = 0;
  sc.creds_body = "{\"Code\":\"AssumeRoleUnauthorizedAccess\",\"Message\":\"x\"}";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "AssumeRoleUnauthorizedAccess") != NULL);
  sc.creds_body = "\x01\x02garbage\xff";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EPROTO);
  CHECK(strstr(err, "IMDS role 'relay-instance-role'") != NULL);
  sc.creds_body = NULL;
  sc.hang = 1;
  o.timeout_ms = 300;
  long long t0 = now_ms();
  /* an explicitly configured endpoint that hangs is an error, not "no credentials" */
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ETIMEDOUT);
  CHECK_INT(now_ms() - t0, <, 2000);
  CHECK(strstr(err, "IMDS") != NULL);
  chd_stop(s);

  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", chd_dead_port());
  tenv_set(&e, "AWS_EC2_METADATA_SERVICE_ENDPOINT", url);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -ECONNREFUSED);
  tenv_free(&e);
}

/* ------------------------------------------------------------ precedence */

TEST(precedence) {
  sts_script sts = {0};
  json_script cont = {0};
  imds_script imds = {0};
  chd_server *ss = chd_start(sts_handler, &sts);
  chd_server *cs = chd_start(container_handler, &cont);
  chd_server *is = chd_start(imds_handler, &imds);
  write_file(tpath("token"), "tok");
  write_file(tpath("credentials"),
             "[default]\naws_access_key_id=AKIDFILE\naws_secret_access_key=f\n");
  char curl_[128];
  snprintf(curl_, sizeof curl_, "%s/c", chd_url(cs));
  tenv e;
  imds_env(&e, is);
  tenv_set(&e, "AWS_ACCESS_KEY_ID", "AKIDENV");
  tenv_set(&e, "AWS_SECRET_ACCESS_KEY", "e");
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::1:role/w");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(ss));
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", curl_);
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  aws_creds c;
  static const char *const expect[] = {"env", "web_identity", "profile", "container", "imds"};
  for (int step = 0; step < 5; step++) {
    CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
    CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
    CHECK_STR(c.source, expect[step]);
    creds_provider_free(p);
    /* lower sources were never consulted */
    CHECK_INT(chd_count(ss), ==, step >= 1 ? 1 : 0);
    CHECK_INT(chd_count(cs), ==, step >= 3 ? 1 : 0);
    CHECK_INT(chd_count(is), ==, step >= 4 ? 3 : 0);
    if (step == 0) {
      tenv_set(&e, "AWS_ACCESS_KEY_ID", NULL);
      tenv_set(&e, "AWS_SECRET_ACCESS_KEY", NULL);
    } else if (step == 1) {
      tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", NULL);
    } else if (step == 2) {
      tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("no-such-file"));
    } else if (step == 3) {
      tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", NULL);
    }
  }
  /* a configured source that fails is reported, not skipped */
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", curl_);
  sts.fail_from = 1;
  int cbefore = chd_count(cs), ibefore = chd_count(is);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "AccessDenied") != NULL);
  CHECK_INT(chd_count(cs), ==, cbefore);
  CHECK_INT(chd_count(is), ==, ibefore);
  chd_stop(ss);
  chd_stop(cs);
  chd_stop(is);
  tenv_free(&e);
}

/* ------------------------------------------------------------ RELAY_SNS_ROLE_ARN */

TEST(assume_role_on_top) {
  sts_script sc = {0};
  sc.verify_key_id = "AKIDENV";
  sc.verify_secret = "env-secret";
  sc.verify_token = "env-token";
  snprintf(sc.key_prefix, sizeof sc.key_prefix, "ASIAXACCT");
  chd_server *s = chd_start(sts_handler, &sc);
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_ACCESS_KEY_ID", "AKIDENV");
  tenv_set(&e, "AWS_SECRET_ACCESS_KEY", "env-secret");
  tenv_set(&e, "AWS_SESSION_TOKEN", "env-token");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  o.role_arn = "arn:aws:iam::999999999999:role/sns-publisher";
  o.external_id = "stream-external-id";
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(atomic_load(&sc.sig_bad), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIAXACCT1");
  CHECK_STR(c.source, "assume_role");
  chd_request rq;
  char v[512];
  get_req(s, 0, &rq);
  CHECK_STR(chd_form(rq.body, "Action", v, sizeof v), "AssumeRole");
  CHECK_STR(chd_form(rq.body, "RoleArn", v, sizeof v),
            "arn:aws:iam::999999999999:role/sns-publisher");
  CHECK_STR(chd_form(rq.body, "ExternalId", v, sizeof v), "stream-external-id");
  CHECK(chd_form(rq.body, "RoleSessionName", v, sizeof v) != NULL);
  CHECK(strncmp(v, "relay-", 6) == 0);
  free(rq.body);
  creds_provider_free(p);

  /* role on top of web identity: two STS calls, the second signed by the first */
  sts_script sc2 = {0};
  chd_server *s2 = chd_start(sts_handler, &sc2);
  write_file(tpath("token"), "tok");
  tenv_set(&e, "AWS_ACCESS_KEY_ID", NULL);
  tenv_set(&e, "AWS_SECRET_ACCESS_KEY", NULL);
  tenv_set(&e, "AWS_SESSION_TOKEN", NULL);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::1:role/irsa");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s2));
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIASTS2");
  CHECK_STR(c.source, "assume_role");
  get_req(s2, 1, &rq);
  CHECK(strstr(chd_header(&rq, "Authorization", v, sizeof v), "Credential=ASIASTS1/") != NULL);
  free(rq.body);
  creds_provider_free(p);

  /* AccessDenied on the top role is reported with its code and context */
  sc2.fail_from = 4;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "RELAY_SNS_ROLE_ARN") != NULL);
  CHECK(strstr(err, "AccessDenied") != NULL);
  CHECK(strstr(err, "web_identity") != NULL);
  chd_stop(s);
  chd_stop(s2);
  tenv_free(&e);
}

TEST(default_sts_endpoint_is_regional) {
  /* Proves the default URL without leaving loopback: libcurl sends the
   * request to our server as an HTTPS proxy, which sees the CONNECT target. */
  json_script sc = {0};
  sc.body = "x";
  sc.status = 403;
  chd_server *s = chd_start(container_handler, &sc);
  CHECK(setenv("https_proxy", chd_url(s), 1) == 0);
  CHECK(setenv("HTTPS_PROXY", chd_url(s), 1) == 0);
  CHECK(unsetenv("no_proxy") == 0);
  CHECK(unsetenv("NO_PROXY") == 0);
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_ACCESS_KEY_ID", "AKIDENV");
  tenv_set(&e, "AWS_SECRET_ACCESS_KEY", "env-secret");
  creds_options o = topts(&e);
  o.role_arn = "arn:aws:iam::999999999999:role/x";
  o.region = "eu-west-3";
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), <, 0);
  CHECK(strstr(err, "https://sts.eu-west-3.amazonaws.com") != NULL);
  chd_request rq;
  get_req(s, 0, &rq);
  CHECK_STR(rq.method, "CONNECT");
  CHECK_STR(rq.path, "sts.eu-west-3.amazonaws.com:443");
  free(rq.body);
  /* no region at all: the global endpoint */
  o.region = NULL;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), <, 0);
  get_req(s, 1, &rq);
  CHECK_STR(rq.path, "sts.amazonaws.com:443");
  free(rq.body);
  /* region from the environment */
  tenv_set(&e, "AWS_REGION", "ap-southeast-2");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), <, 0);
  get_req(s, 2, &rq);
  CHECK_STR(rq.path, "sts.ap-southeast-2.amazonaws.com:443");
  free(rq.body);
  /* AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true drops the override */
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1");
  tenv_set(&e, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), <, 0);
  get_req(s, 3, &rq);
  CHECK_STR(rq.path, "sts.ap-southeast-2.amazonaws.com:443");
  free(rq.body);
  /* a region that would smuggle a host into the URL is refused */
  o.region = "evil.example/x";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  CHECK_INT(chd_count(s), ==, 4);
  chd_stop(s);
  tenv_free(&e);
}

/* ------------------------------------------------------------ refresh */

TEST(refresh_before_expiry_never_blocks) {
  sts_script sc = {0};
  sc.expire_in = 6; /* refresh due at half-life: ~3 s */
  sc.delay_from = 2;
  sc.delay_ms = 700; /* the refresh itself is slow */
  chd_server *s = chd_start(sts_handler, &sc);
  write_file(tpath("token"), "tok");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::1:role/w");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIASTS1");
  time_t first_exp = c.expiration;
  long long t0 = now_ms(), worst = 0, changed_at = 0;
  int gets = 0;
  while (now_ms() - t0 < 6000) {
    long long a = now_ms();
    int rc = creds_get(p, &c, err, sizeof err);
    long long d = now_ms() - a;
    if (d > worst) worst = d;
    gets++;
    CHECK_INT(rc, ==, 0); /* never a gap: old creds stay valid until replaced */
    if (strcmp(c.access_key_id, "ASIASTS2") == 0) {
      changed_at = now_ms() - t0;
      break;
    }
    sleep_ms(5);
  }
  CHECK(changed_at > 0);
  /* due at ~3 s (whole-second expiry), answered 0.7 s later, before the expiry */
  CHECK_INT(changed_at, >=, 2400);
  CHECK_INT(changed_at, <, 5000);
  CHECK_INT(worst, <, 50);
  CHECK_INT(gets, >, 100);
  CHECK_INT(c.expiration, >, first_exp);
  CHECK_INT(chd_count(s), ==, 2);
  creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
}

TEST(invalidate_rereads_files) {
  write_file(tpath("credentials"),
             "[default]\naws_access_key_id=AKIDOLD\naws_secret_access_key=old\n");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  aws_creds c;
  write_file(tpath("credentials"),
             "[default]\naws_access_key_id=AKIDNEW\naws_secret_access_key=new\n");
  /* static credentials are not re-read on their own */
  sleep_ms(300);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "AKIDOLD");
  long long t0 = now_ms();
  creds_invalidate(p);
  CHECK_INT(now_ms() - t0, <, 50);
  while (now_ms() - t0 < 3000) {
    CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
    if (strcmp(c.access_key_id, "AKIDNEW") == 0) break;
    sleep_ms(20);
  }
  CHECK_STR(c.access_key_id, "AKIDNEW");
  CHECK_STR(c.secret_access_key, "new");
  creds_provider_free(p);
  tenv_free(&e);
}

TEST(invalidate_is_rate_limited) {
  sts_script sc = {0};
  chd_server *s = chd_start(sts_handler, &sc);
  write_file(tpath("token"), "tok");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::1:role/w");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  /* a burst of auth errors from AWS must not become a burst of STS calls */
  long long t0 = now_ms();
  while (now_ms() - t0 < 1500) {
    creds_invalidate(p);
    sleep_ms(10);
  }
  sleep_ms(200);
  int calls = chd_count(s);
  CHECK_INT(calls, >=, 2); /* it did refresh */
  CHECK_INT(calls, <=, 3); /* at most one per second */
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK(strcmp(c.access_key_id, "ASIASTS1") != 0);
  creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
}

TEST(refresh_failure_then_expiry) {
  sts_script sc = {0};
  sc.expire_in = 3; /* whole seconds: the refresh (~1.5 s) must fail before expiry */
  sc.fail_from = 2;
  sc.err_code = "ExpiredTokenException";
  chd_server *s = chd_start(sts_handler, &sc);
  write_file(tpath("token"), "tok");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::1:role/w");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, err, sizeof err), ==, 0);
  long long t0 = now_ms();
  int rc = 0;
  while (now_ms() - t0 < 4500) {
    rc = creds_get(p, &c, err, sizeof err);
    if (rc != 0) break;
    sleep_ms(20);
  }
  CHECK_INT(rc, ==, -EAGAIN);
  CHECK(strstr(err, "expired") != NULL);
  CHECK(strstr(err, "ExpiredTokenException") != NULL);
  CHECK_INT(chd_count(s), >=, 2); /* the refresh was attempted and retried */
  /* recovery: STS works again, the retry picks it up */
  sc.fail_from = 0;
  t0 = now_ms();
  while (now_ms() - t0 < 4000 && creds_get(p, &c, NULL, 0) != 0) sleep_ms(20);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
}

TEST(free_during_hanging_refresh) {
  sts_script sc = {0};
  sc.expire_in = 2;
  sc.hang_from = 2;
  chd_server *s = chd_start(sts_handler, &sc);
  write_file(tpath("token"), "tok");
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::1:role/w");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  o.timeout_ms = 20000;
  creds_provider *p;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  long long t0 = now_ms();
  while (atomic_load(&sc.calls) < 2 && now_ms() - t0 < 4000) sleep_ms(20);
  CHECK_INT(atomic_load(&sc.calls), ==, 2);
  sleep_ms(100);
  t0 = now_ms();
  creds_provider_free(p); /* must not wait for the 20 s timeout */
  CHECK_INT(now_ms() - t0, <, 2500);
  chd_stop(s);
  tenv_free(&e);
}

/* ------------------------------------------------------------ secrets */

static const char *const secret_list[] = {
    "ENVSECRET-9f8e7d6c5b4a",
    "ENVTOKEN-1a2b3c4d5e6f",
    "WEBIDTOKEN-s3cr3t-0123456789",
    "CONTAINERTOKEN-s3cr3t-abcdef",
    IMDS_TOKEN,
    "FILESECRET-77665544",
    "EXTERNALID-secret-9911",
    "sts-secret-1",
    "sts-token-1",
    "cont-secret-1",
    "cont-token-1",
};

static void check_no_secret(const char *text, const char *where) {
  for (size_t i = 0; i < sizeof secret_list / sizeof secret_list[0]; i++)
    if (strstr(text, secret_list[i]))
      tl_fail(__FILE__, __LINE__, "secret %s leaked into %s: %s", secret_list[i], where, text);
}

/* While stderr is captured, a failing CHECK would print into the capture;
 * this puts stderr back on exit and replays the failure lines. */
static int cap_saved = -1;
static char cap_path[1024];

static void cap_restore_at_exit(void) {
  if (cap_saved < 0) return;
  fflush(stderr);
  dup2(cap_saved, 2);
  char *text = tl_read_file(cap_path, NULL);
  for (char *l = text ? strtok(text, "\n") : NULL; l; l = strtok(NULL, "\n"))
    if (strncmp(l, "FAIL", 4) == 0 || strncmp(l, "test files", 10) == 0) fprintf(stderr, "%s\n", l);
  free(text);
}

TEST(secrets_never_logged) {
  snprintf(cap_path, sizeof cap_path, "%s/stderr.txt", tl_tmpdir);
  fflush(stderr);
  int saved = dup(2);
  cap_saved = saved;
  atexit(cap_restore_at_exit);
  int fd = open(cap_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(saved >= 0 && fd >= 0);
  CHECK(dup2(fd, 2) == 2);
  close(fd);

  char err[512];
  creds_provider *p;
  write_file(tpath("token"), "WEBIDTOKEN-s3cr3t-0123456789\n");

  /* 1. STS error whose message echoes the web identity token back */
  sts_script sc = {0};
  sc.fail_from = 1;
  sc.err_code = "InvalidIdentityToken";
  sc.err_msg = "token %s is not valid";
  chd_server *s = chd_start(sts_handler, &sc);
  tenv e;
  tenv_init(&e);
  tenv_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", tpath("token"));
  tenv_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::1:role/w");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s));
  creds_options o = topts(&e);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "InvalidIdentityToken") != NULL);
  CHECK(strstr(err, "token *** is not valid") != NULL); /* proves the echo was there */
  check_no_secret(err, "errbuf (web identity)");

  /* 1b. the echo cut off by a buffer end must not leave the token's start */
  char longmsg[400];
  memset(longmsg, 'x', 360);
  snprintf(longmsg + 360, sizeof longmsg - 360, " %%s");
  sc.err_msg = longmsg;
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  CHECK(strstr(err, "xxxxxxxxxx ***") != NULL);
  CHECK(strstr(err, "WEBIDTOKEN") == NULL);
  sc.err_msg = "token %s is not valid";

  /* 2. a refresh that fails and is logged, then expiry */
  sc.fail_from = 2;
  sc.expire_in = 2;
  atomic_store(&sc.calls, 0);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  long long t0 = now_ms();
  int rc = 0;
  aws_creds c;
  while (now_ms() - t0 < 4500 && (rc = creds_get(p, &c, err, sizeof err)) == 0) sleep_ms(20);
  CHECK_INT(rc, ==, -EAGAIN);
  check_no_secret(err, "errbuf (creds_get)");
  creds_provider_free(p);
  chd_stop(s);

  /* 3. role on top with env secrets echoed by STS */
  sts_script sc2 = {0};
  sc2.fail_from = 1;
  sc2.err_msg = "ENVSECRET-9f8e7d6c5b4a ENVTOKEN-1a2b3c4d5e6f EXTERNALID-secret-9911";
  chd_server *s2 = chd_start(sts_handler, &sc2);
  tenv_free(&e);
  tenv_init(&e);
  tenv_set(&e, "AWS_ACCESS_KEY_ID", "AKIDSECRETTEST");
  tenv_set(&e, "AWS_SECRET_ACCESS_KEY", "ENVSECRET-9f8e7d6c5b4a");
  tenv_set(&e, "AWS_SESSION_TOKEN", "ENVTOKEN-1a2b3c4d5e6f");
  tenv_set(&e, "AWS_ENDPOINT_URL_STS", chd_url(s2));
  o = topts(&e);
  o.role_arn = "arn:aws:iam::1:role/x";
  o.external_id = "EXTERNALID-secret-9911";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  check_no_secret(err, "errbuf (assume role)");
  chd_stop(s2);

  /* 4. container endpoint answering garbage and errors with the token in them */
  json_script cs = {0};
  cs.body = "CONTAINERTOKEN-s3cr3t-abcdef";
  chd_server *s3 = chd_start(container_handler, &cs);
  char url[128];
  snprintf(url, sizeof url, "%s/c", chd_url(s3));
  tenv_free(&e);
  tenv_init(&e);
  tenv_set(&e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", url);
  tenv_set(&e, "AWS_CONTAINER_AUTHORIZATION_TOKEN", "CONTAINERTOKEN-s3cr3t-abcdef");
  o = topts(&e);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EPROTO);
  check_no_secret(err, "errbuf (container garbage)");
  cs.body =
      "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"cont-secret-1\",\"Token\":\"cont-token-1\","
      "\"Expiration\":\"bad\"}";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EPROTO);
  check_no_secret(err, "errbuf (container bad expiration)");
  tenv_set(&e, "AWS_CONTAINER_AUTHORIZATION_TOKEN", "CONTAINERTOKEN-s3cr3t-abcdef\nX: y");
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  check_no_secret(err, "errbuf (container bad token)");
  chd_stop(s3);

  /* 5. IMDS with a failing credentials document */
  imds_script is = {0};
  is.creds_body = "{\"Code\":\"Failure\",\"SecretAccessKey\":\"" IMDS_TOKEN "\"}";
  chd_server *s4 = chd_start(imds_handler, &is);
  tenv_free(&e);
  imds_env(&e, s4);
  o = topts(&e);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  check_no_secret(err, "errbuf (imds)");
  chd_stop(s4);

  /* 6. malformed credentials file with the secret on the bad line */
  write_file(tpath("credentials"), "[default]\naws_secret_access_key FILESECRET-77665544\n");
  tenv_free(&e);
  tenv_init(&e);
  tenv_set(&e, "AWS_SHARED_CREDENTIALS_FILE", tpath("credentials"));
  o = topts(&e);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EPROTO);
  check_no_secret(err, "errbuf (file)");
  /* 7. partial env */
  tenv_free(&e);
  tenv_init(&e);
  tenv_set(&e, "AWS_SECRET_ACCESS_KEY", "ENVSECRET-9f8e7d6c5b4a");
  o = topts(&e);
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EINVAL);
  check_no_secret(err, "errbuf (partial env)");
  tenv_free(&e);

  fflush(stderr);
  CHECK(dup2(saved, 2) == 2);
  cap_saved = -1;
  close(saved);
  size_t len = 0;
  char *logged = tl_read_file(cap_path, &len);
  CHECK(logged != NULL);
  /* the capture worked: the refresh failure was logged, with its AWS code */
  CHECK(strstr(logged, "aws credentials refresh failed") != NULL);
  CHECK(strstr(logged, "InvalidIdentityToken") != NULL);
  check_no_secret(logged, "stderr");
  free(logged);
}

/* ------------------------------------------------------------ retry backoff */

/* A container endpoint whose answer the test switches: valid credentials,
 * credentials that expired an hour ago (a fixed instant, so the error text
 * stays the same from one attempt to the next), or HTTP 500. Each request's
 * arrival time is recorded. */
enum { FLAKY_VALID, FLAKY_EXPIRED, FLAKY_ERROR };
#define FLAKY_MAX 256

typedef struct {
  atomic_int mode;
  atomic_int calls;
  long long at_ms[FLAKY_MAX];
  char expired_at[64];
} flaky_script;

static void flaky_handler(const chd_request *rq, chd_response *rs, void *arg) {
  (void)rq;
  flaky_script *sc = arg;
  int n = atomic_load(&sc->calls);
  if (n < FLAKY_MAX) sc->at_ms[n] = now_ms();
  atomic_store(&sc->calls, n + 1); /* one server thread: no lost updates */
  snprintf(rs->content_type, sizeof rs->content_type, "application/json");
  int mode = atomic_load(&sc->mode);
  if (mode == FLAKY_ERROR) {
    chd_reply(rs, 500, "{\"message\":\"agent unavailable\"}");
    return;
  }
  char exp[64];
  if (mode == FLAKY_EXPIRED)
    snprintf(exp, sizeof exp, "%s", sc->expired_at);
  else
    iso8601(time(NULL) + 3600, exp, sizeof exp);
  chd_reply(rs, 200,
            "{\"AccessKeyId\":\"ASIAFLAKY%d\",\"SecretAccessKey\":\"flaky-secret\","
            "\"Token\":\"flaky-token\",\"Expiration\":\"%s\"}",
            n + 1, exp);
}

static void flaky_env(tenv *e, chd_server *s) {
  static char url[128];
  snprintf(url, sizeof url, "%s/creds", chd_url(s));
  tenv_init(e);
  tenv_set(e, "AWS_CONTAINER_CREDENTIALS_FULL_URI", url);
}

/* Waits until the endpoint has seen n requests (or ms passed), calling
 * creds_invalidate() every 2 ms when storm is set, as a drainer does while
 * AWS refuses every request. */
static void wait_calls(flaky_script *sc, creds_provider *p, int n, long ms, int storm) {
  long long t0 = now_ms();
  while (atomic_load(&sc->calls) < n && now_ms() - t0 < ms) {
    if (storm) creds_invalidate(p);
    sleep_ms(2);
  }
}

/* Stderr goes to a file between cap_begin() and cap_end() (which returns
 * what was written; the caller frees it). */
static int cap_begin(void) {
  snprintf(cap_path, sizeof cap_path, "%s/stderr.txt", tl_tmpdir);
  fflush(stderr);
  int saved = dup(2);
  cap_saved = saved;
  atexit(cap_restore_at_exit);
  int fd = open(cap_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(saved >= 0 && fd >= 0);
  CHECK(dup2(fd, 2) == 2);
  close(fd);
  return saved;
}

static char *cap_end(int saved) {
  fflush(stderr);
  CHECK(dup2(saved, 2) == 2);
  cap_saved = -1;
  close(saved);
  char *text = tl_read_file(cap_path, NULL);
  CHECK(text != NULL);
  return text;
}

static int count_lines(const char *text, const char *needle) {
  int n = 0;
  for (const char *l = text; l && *l;) {
    const char *nl = strchr(l, '\n');
    size_t len = nl ? (size_t)(nl - l) : strlen(l);
    const char *hit = strstr(l, needle);
    if (hit && hit < l + len) n++;
    l = nl ? nl + 1 : NULL;
  }
  return n;
}

/* Credentials that are already expired when they arrive (a stale metadata
 * endpoint, a clock ahead of AWS's) are an error with the reason, not a
 * "success" that is asked again every second. */
TEST(expired_credentials_are_refused) {
  flaky_script sc;
  memset(&sc, 0, sizeof sc);
  iso8601(time(NULL) - 3600, sc.expired_at, sizeof sc.expired_at);
  atomic_store(&sc.mode, FLAKY_EXPIRED);
  chd_server *s = chd_start(flaky_handler, &sc);
  tenv e;
  flaky_env(&e, s);
  creds_options o = topts(&e);
  creds_provider *p = (creds_provider *)&sc; /* must be reset to NULL */
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, -EACCES);
  CHECK(p == NULL);
  CHECK(strstr(err, "expired at") != NULL);
  CHECK(strstr(err, "system clock") != NULL);
  CHECK(strstr(err, "container") != NULL);
  check_no_secret(err, "errbuf (expired)");
  CHECK(strstr(err, "flaky-secret") == NULL && strstr(err, "flaky-token") == NULL);
  if (p) creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
}

/* A source that keeps failing, or keeps handing out expired credentials, is
 * asked again after ~base, 2*base, 4*base... up to the cap (+-20 % jitter),
 * not every second; auth errors from AWS (creds_invalidate) do not cut the
 * backoff short; one WARN per backoff step, not per attempt; the still
 * valid credentials stay in use; and a success resets the backoff. Times
 * are shrunk through creds_options (10 ms base, 80 ms cap). */
TEST(refresh_retries_back_off) {
  enum { BASE = 10, CAP = 80 };
  flaky_script sc;
  memset(&sc, 0, sizeof sc);
  iso8601(time(NULL) - 3600, sc.expired_at, sizeof sc.expired_at);
  chd_server *s = chd_start(flaky_handler, &sc);
  tenv e;
  flaky_env(&e, s);
  creds_options o = topts(&e);
  o.retry_base_ms = BASE;
  o.retry_max_ms = CAP;
  creds_provider *p = NULL;
  char err[512] = "";
  CHECK_INT(creds_provider_new(&p, &o, err, sizeof err), ==, 0);
  if (!p) {
    chd_stop(s);
    tenv_free(&e);
    return;
  }
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIAFLAKY1");

  /* Phase 1: the source turns stale; request 2 is the first failure. */
  int saved = cap_begin();
  atomic_store(&sc.mode, FLAKY_EXPIRED);
  creds_invalidate(p);
  long long t0 = now_ms();
  int bad_get = 0;
  while (atomic_load(&sc.calls) < 9 && now_ms() - t0 < 3000) {
    creds_invalidate(p);
    if (creds_get(p, &c, NULL, 0) != 0 || strcmp(c.access_key_id, "ASIAFLAKY1") != 0) bad_get++;
    sleep_ms(2);
  }
  char *logged = cap_end(saved);
  int calls = atomic_load(&sc.calls);
  CHECK_INT(calls, >=, 9);
  /* the expired credentials never replaced the valid ones */
  CHECK_INT(bad_get, ==, 0);
  /* gap before request i+1 follows failure i-1 (request i): nominal
   * min(CAP, BASE * 2^(i-2)), never less than 80 % of it */
  for (int i = 2; i < 8 && i + 1 < calls; i++) {
    long nominal = BASE << (i - 2);
    if (nominal > CAP) nominal = CAP;
    long long gap = sc.at_ms[i] - sc.at_ms[i - 1];
    if (gap < nominal * 4 / 5 - 2)
      tl_fail(__FILE__, __LINE__, "retry %d came after %lld ms, expected about %ld ms", i, gap,
              nominal);
  }
  /* the cap holds: uncapped, these two gaps would be 160 + 320 ms */
  CHECK_INT(sc.at_ms[8] - sc.at_ms[6], <, 400);
  /* one WARN per backoff step (10, 20, 40, 80 ms), the repeats at the cap
   * only at DEBUG, although 7+ attempts failed */
  CHECK_INT(count_lines(logged, "aws credentials refresh failed"), ==, 4);
  CHECK_INT(count_lines(logged, "\"warn\""), ==, 4);
  CHECK(strstr(logged, "expired at") != NULL);
  CHECK(strstr(logged, "retry_in_ms") != NULL);
  check_no_secret(logged, "stderr (backoff)");
  CHECK(strstr(logged, "flaky-secret") == NULL);
  free(logged);

  /* Phase 2: the source recovers; the next retry picks it up. */
  atomic_store(&sc.mode, FLAKY_VALID);
  t0 = now_ms();
  while (now_ms() - t0 < 2000 &&
         (creds_get(p, &c, NULL, 0) != 0 || strcmp(c.access_key_id, "ASIAFLAKY1") == 0))
    sleep_ms(2);
  CHECK(strcmp(c.access_key_id, "ASIAFLAKY1") != 0);
  sleep_ms(40); /* a refresh still owed to the last invalidation happens now */

  /* Phase 3: a new failure starts from the base again. */
  int n0 = atomic_load(&sc.calls);
  atomic_store(&sc.mode, FLAKY_ERROR);
  creds_invalidate(p);
  wait_calls(&sc, p, n0 + 3, 2000, 0);
  CHECK_INT(atomic_load(&sc.calls), >=, n0 + 3);
  /* failures 1 and 2 of the new run: about BASE apart, where an unreset
   * backoff would wait CAP (>= 64 ms) */
  CHECK_INT(sc.at_ms[n0 + 1] - sc.at_ms[n0], >=, BASE * 4 / 5 - 2);
  CHECK_INT(sc.at_ms[n0 + 1] - sc.at_ms[n0], <, CAP * 4 / 5);
  /* still valid credentials from phase 2 */
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  creds_provider_free(p);
  chd_stop(s);
  tenv_free(&e);
}
