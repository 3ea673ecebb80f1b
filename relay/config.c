/* relayd configuration: one table of keys, four sources, one error line.
 *
 * Every setting is described once in `keys` below (name, type, default,
 * range, field); flags, --help, validation and storage are all derived from
 * that table, so a key cannot exist in one place and be missing in another.
 * Values that are secrets are never copied into error lines or help output.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#ifndef RELAY_VERSION
#define RELAY_VERSION "0.0.0-dev"
#endif

extern char **environ;

typedef enum {
  K_STR,       /* free text (no control characters) */
  K_TOKEN,     /* api key / secret / token: printable, no spaces */
  K_PATH,      /* non-empty path */
  K_ADDR,      /* listen address */
  K_BYTES,     /* size with optional KiB/MiB/GiB suffix */
  K_UINT,      /* plain decimal integer */
  K_BOOL,      /* 0/1/true/false/yes/no/on/off */
  K_TOPIC_ARN, /* arn:aws:sns:REGION:ACCOUNT:NAME[.fifo] */
  K_ROLE_ARN,  /* arn:aws:iam::ACCOUNT:role/NAME */
  K_REGION,    /* us-east-1 */
  K_URL,       /* http(s)://host[:port][/path] */
  K_ENUM       /* one of `choices` */
} key_type;

typedef struct {
  const char *name;
  key_type type;
  const char *def; /* NULL = unset */
  uint64_t min, max;
  size_t off, size; /* field in relay_config; size 0 = no field (merged later) */
  int secret;
  const char *choices; /* K_ENUM: "a|b|c" */
  const char *meta;    /* placeholder in --help */
  const char *help;
} cfg_key;

#define FIELD(f) offsetof(relay_config, f), sizeof(((relay_config *)0)->f)
#define NOFIELD 0, 0
#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define TIB (1024ull * GIB)

static const cfg_key keys[] = {
    {"RELAY_LISTEN", K_ADDR, "127.0.0.1:8080", 0, 0, FIELD(listen), 0, NULL, "ADDR",
     "webhook listener (IPv4:port, [IPv6]:port, localhost:port)"},
    {"RELAY_ADMIN_LISTEN", K_ADDR, "127.0.0.1:8081", 0, 0, FIELD(admin_listen), 0, NULL, "ADDR",
     "admin API, metrics, health"},
    {"RELAY_ADMIN_TOKEN", K_TOKEN, NULL, 0, 0, FIELD(admin_token), 1, NULL, "TOKEN",
     "admin API bearer token; required when the admin listener is not on loopback"},
    {"RELAY_DATA_DIR", K_PATH, "./relay-data", 0, 0, FIELD(data_dir), 0, NULL, "DIR",
     "LMDB queue directory"},
    {"RELAY_QUEUE_MAX_BYTES", K_BYTES, "4GiB", 64 * KIB, 16 * TIB, FIELD(queue_max_bytes), 0, NULL,
     "SIZE", "queue map size; ingest answers 503 at 90 % of it"},
    {"RELAY_STREAM_API_KEY", K_TOKEN, NULL, 0, 0, NOFIELD, 0, NULL, "KEY",
     "Stream app api key (with RELAY_STREAM_API_SECRET)"},
    {"RELAY_STREAM_API_SECRET", K_TOKEN, NULL, 0, 0, NOFIELD, 1, NULL, "SECRET",
     "Stream app secret: verifies X-Signature"},
    {"RELAY_STREAM_SECRETS", K_STR, NULL, 0, 0, NOFIELD, 1, NULL, "LIST",
     "several apps or a rotation: key1:secret1,key1:secret1b,key2:secret2"},
    {"RELAY_INSECURE_NO_SIGNATURE", K_BOOL, "0", 0, 1, FIELD(insecure_no_signature), 0, NULL, "0|1",
     "1 = accept unsigned webhooks (start-up fails without a secret otherwise)"},
    {"RELAY_SNS_TOPIC_ARN", K_TOPIC_ARN, NULL, 0, 0, FIELD(sns_topic_arn), 0, NULL, "ARN",
     "target SNS topic (required); a .fifo suffix turns on FIFO mode"},
    {"RELAY_SNS_REGION", K_REGION, NULL, 0, 0, FIELD(sns_region), 0, NULL, "REGION", "SNS region"},
    {"RELAY_SNS_ENDPOINT", K_URL, NULL, 0, 0, FIELD(sns_endpoint), 0, NULL, "URL",
     "SNS endpoint override (emulators, VPC endpoints)"},
    {"RELAY_SNS_ROLE_ARN", K_ROLE_ARN, NULL, 0, 0, FIELD(sns_role_arn), 0, NULL, "ARN",
     "STS AssumeRole on top of the base AWS credentials"},
    {"RELAY_SNS_EXTERNAL_ID", K_STR, NULL, 0, 0, FIELD(sns_external_id), 1, NULL, "ID",
     "external id for AssumeRole"},
    {"RELAY_MAX_MESSAGE_BYTES", K_BYTES, "262144", 1 * KIB, 256 * KIB, FIELD(max_message_bytes), 0,
     NULL, "SIZE", "SNS message limit (body plus attributes); larger events go to the DLQ"},
    {"RELAY_MAX_BODY_BYTES", K_BYTES, "4194304", 1 * KIB, 1 * GIB, FIELD(max_body_bytes), 0, NULL,
     "SIZE", "request body cap, after gzip inflation too (413 above)"},
    {"RELAY_PUBLISH_BATCH", K_UINT, "10", 1, 10, FIELD(publish_batch), 0, NULL, "N",
     "1 = Publish, 2..10 = PublishBatch"},
    {"RELAY_PUBLISH_CONCURRENCY", K_UINT, "16", 1, 1024, FIELD(publish_concurrency), 0, NULL, "N",
     "SNS requests in flight"},
    {"RELAY_RETRY_BASE_MS", K_UINT, "200", 1, 3600000, FIELD(retry_base_ms), 0, NULL, "MS",
     "first retry delay (jittered exponential backoff)"},
    {"RELAY_RETRY_MAX_MS", K_UINT, "60000", 1, 86400000, FIELD(retry_max_ms), 0, NULL, "MS",
     "retry delay cap"},
    {"RELAY_RETRY_MAX_AGE", K_UINT, "86400", 1, 315360000, FIELD(retry_max_age_s), 0, NULL, "S",
     "seconds after which a transiently failing event goes to the DLQ"},
    {"RELAY_DEDUP_WINDOW", K_UINT, "600", 1, 604800, FIELD(dedup_window_s), 0, NULL, "S",
     "seconds an X-Webhook-Id is remembered"},
    {"RELAY_LOG_FORMAT", K_ENUM, "json", 0, 0, FIELD(log_format), 0, "json|text", "FORMAT",
     "json or text, on stderr"},
    {"RELAY_LOG_LEVEL", K_ENUM, "info", 0, 0, FIELD(log_level), 0, "debug|info|warn|warning|error",
     "LEVEL", "debug, info, warn or error"},
    {"RELAY_HTTP_MAX_CONNECTIONS", K_UINT, "1024", 1, 1000000, FIELD(http_max_connections), 0, NULL,
     "N", "webhook connections open at once"},
    {"RELAY_HTTP_HEADER_TIMEOUT_MS", K_UINT, "10000", 1, 3600000, FIELD(http_header_timeout_ms), 0,
     NULL, "MS", "time to receive a request's headers"},
    {"RELAY_HTTP_BODY_TIMEOUT_MS", K_UINT, "30000", 1, 3600000, FIELD(http_body_timeout_ms), 0,
     NULL, "MS", "time to receive a request's body"},
    {"RELAY_HTTP_IDLE_TIMEOUT_MS", K_UINT, "60000", 1, 3600000, FIELD(http_idle_timeout_ms), 0,
     NULL, "MS", "idle keep-alive connections are closed after this"},
    {"RELAY_HTTP_MAX_HEADER_BYTES", K_BYTES, "16384", 1 * KIB, 1 * MIB,
     FIELD(http_max_header_bytes), 0, NULL, "SIZE", "request header limit (431 above)"},
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* Environment variables that start with RELAY_ but are not relayd settings,
 * so they must not stop start-up: Kubernetes injects RELAY_SERVICE_HOST,
 * RELAY_PORT_8080_TCP... for a Service named "relay", and the project's own
 * test harness exports RELAY_BIN_DIR and friends to the processes it runs. */
static int env_is_foreign(const char *name, size_t len) {
  static const char *const exact[] = {"RELAY_PORT", "RELAY_BIN_DIR", "RELAY_SHARED_DIR",
                                      "RELAY_SOURCE_DIR", "RELAY_SANITIZE"};
  static const char *const prefix[] = {"RELAY_SERVICE_HOST", "RELAY_SERVICE_PORT", "RELAY_PORT_",
                                       "RELAY_TEST_"};
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    if (strlen(exact[i]) == len && memcmp(exact[i], name, len) == 0) return 1;
  for (size_t i = 0; i < sizeof prefix / sizeof prefix[0]; i++) {
    size_t pl = strlen(prefix[i]);
    if (len >= pl && memcmp(prefix[i], name, pl) == 0) return 1;
  }
  return 0;
}

enum { SRC_DEFAULT, SRC_FILE, SRC_ENV, SRC_FLAG };

typedef struct {
  const char *val; /* NULL = not set by this source */
  int src;
  int line; /* SRC_FILE */
} setting;

typedef struct {
  const char *(*getenv_fn)(const char *name, void *arg);
  void *arg;
  char *const *envp;
  char *err;
  size_t errlen;
  const char *file;       /* --config path */
  char *file_vals[NKEYS]; /* owned copies */
  int file_lines[NKEYS];
  const char *flag_vals[NKEYS];
} loader;

static int fail(loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(loader *L, const char *fmt, ...) {
  if (L->err && L->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->err, L->errlen, fmt, ap);
    va_end(ap);
  }
  return -EINVAL;
}

/* A value quoted in an error line: at most 80 bytes, control characters
 * shown as '?', so the error stays one line. */
static void printable(const char *v, size_t vlen, char *out, size_t outlen) {
  size_t n = 0;
  for (size_t j = 0; j < vlen && v[j] && n + 1 < outlen && n < 80; j++)
    out[n++] = (unsigned char)v[j] < ' ' || v[j] == 0x7f ? '?' : v[j];
  out[n] = '\0';
}

/* ---- small parsers ---------------------------------------------------- */

static int ascii_lower(int ch) {
  return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch;
}

static int is_space(int ch) {
  return ch == ' ' || ch == '\t';
}

static int is_digit(int ch) {
  return ch >= '0' && ch <= '9';
}

static int ieq(const char *a, const char *b) {
  for (; *a && *b; a++, b++)
    if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b)) return 0;
  return *a == *b;
}

/* Plain decimal, no sign, no spaces, no overflow. */
static int parse_u64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  if (!is_digit((unsigned char)*s)) return -EINVAL;
  for (; is_digit((unsigned char)*s); s++) {
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return -EINVAL;
    v = v * 10 + d;
  }
  if (*s) return -EINVAL;
  *out = v;
  return 0;
}

/* Binary suffixes only: "KB"/"MB" are refused rather than guessed, because
 * 1000 and 1024 would both be plausible readings. */
int cfg_parse_bytes(const char *s, uint64_t *out) {
  static const struct {
    const char *suffix;
    uint64_t mult;
  } units[] = {{"", 1},      {"b", 1},   {"k", KIB},   {"kib", KIB}, {"m", MIB},
               {"mib", MIB}, {"g", GIB}, {"gib", GIB}, {"t", TIB},   {"tib", TIB}};
  if (!s || !out) return -EINVAL;
  uint64_t v = 0;
  const char *p = s;
  if (!is_digit((unsigned char)*p)) return -EINVAL;
  for (; is_digit((unsigned char)*p); p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) return -EINVAL;
    v = v * 10 + d;
  }
  while (is_space((unsigned char)*p)) p++;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (!ieq(p, units[i].suffix)) continue;
    if (units[i].suffix[0] == '\0' && p != s && is_space((unsigned char)p[-1])) return -EINVAL;
    if (v > UINT64_MAX / units[i].mult) return -EINVAL;
    *out = v * units[i].mult;
    return 0;
  }
  return -EINVAL;
}

static int parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (ieq(s, yes[i])) {
      *out = 1;
      return 0;
    }
    if (ieq(s, no[i])) {
      *out = 0;
      return 0;
    }
  }
  return -EINVAL;
}

int cfg_parse_listen(const char *s, struct sockaddr_storage *out) {
  if (!s || !out) return -EINVAL;
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s) return -EINVAL;
  uint64_t port;
  if (parse_u64(colon + 1, &port) != 0 || port > 65535) return -EINVAL;
  char host[64];
  size_t hl = (size_t)(colon - s);
  int v6 = 0;
  if (s[0] == '[') {
    if (hl < 3 || s[hl - 1] != ']') return -EINVAL;
    s++;
    hl -= 2;
    v6 = 1;
  }
  if (hl == 0 || hl >= sizeof host) return -EINVAL;
  memcpy(host, s, hl);
  host[hl] = '\0';
  memset(out, 0, sizeof *out);
  if (v6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return -EINVAL;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    return 0;
  }
  struct sockaddr_in *a = (struct sockaddr_in *)out;
  /* inet_pton refuses the short forms ("127.1") that inet_aton would accept. */
  if (strcmp(host, "localhost") == 0) {
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  } else if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
    return -EINVAL;
  }
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  return 0;
}

int cfg_listen_is_loopback(const struct sockaddr_storage *a) {
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)a;
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
    return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
  }
  return 0;
}

/* Splits s at ':' into at most n parts (pointers into a copy in buf). */
static int split_colons(const char *s, char *buf, size_t buflen, char **parts, int n) {
  size_t l = strlen(s);
  if (l >= buflen) return -1;
  memcpy(buf, s, l + 1);
  int k = 0;
  char *p = buf;
  parts[k++] = p;
  for (; *p; p++) {
    if (*p != ':') continue;
    if (k == n) return -1;
    *p = '\0';
    parts[k++] = p + 1;
  }
  return k;
}

static int all_chars(const char *s, const char *extra, int allow_upper) {
  if (!*s) return 0;
  for (; *s; s++) {
    int ch = (unsigned char)*s;
    if ((ch >= 'a' && ch <= 'z') || is_digit(ch)) continue;
    if (allow_upper && ch >= 'A' && ch <= 'Z') continue;
    if (extra && strchr(extra, ch)) continue;
    return 0;
  }
  return 1;
}

static int valid_partition(const char *p) {
  return strncmp(p, "aws", 3) == 0 && (p[3] == '\0' || (p[3] == '-' && all_chars(p + 4, "-", 0)));
}

static int valid_region(const char *r) {
  return strlen(r) <= 32 && all_chars(r, "-", 0);
}

static int valid_account(const char *a) {
  if (strlen(a) != 12) return 0;
  for (; *a; a++)
    if (!is_digit((unsigned char)*a)) return 0;
  return 1;
}

/* arn:PARTITION:sns:REGION:ACCOUNT:NAME; on success *region_out points into
 * a fresh malloc'd copy of the region and *fifo says whether NAME ends .fifo. */
static int parse_topic_arn(const char *s, char **region_out, int *fifo) {
  char buf[512], *f[6];
  if (split_colons(s, buf, sizeof buf, f, 6) != 6) return -EINVAL;
  if (strcmp(f[0], "arn") != 0 || !valid_partition(f[1]) || strcmp(f[2], "sns") != 0 ||
      !valid_region(f[3]) || !valid_account(f[4]))
    return -EINVAL;
  size_t nl = strlen(f[5]);
  int is_fifo = nl > 5 && strcmp(f[5] + nl - 5, ".fifo") == 0;
  if (is_fifo) f[5][nl - 5] = '\0';
  if (strlen(f[5]) > 256 || !all_chars(f[5], "-_", 1)) return -EINVAL;
  if (region_out) {
    *region_out = strdup(f[3]);
    if (!*region_out) return -ENOMEM;
  }
  if (fifo) *fifo = is_fifo;
  return 0;
}

/* arn:PARTITION:iam::ACCOUNT:role/PATH/NAME */
static int valid_role_arn(const char *s) {
  char buf[2048], *f[6];
  if (split_colons(s, buf, sizeof buf, f, 6) != 6) return 0;
  return strcmp(f[0], "arn") == 0 && valid_partition(f[1]) && strcmp(f[2], "iam") == 0 &&
         f[3][0] == '\0' && valid_account(f[4]) && strncmp(f[5], "role/", 5) == 0 &&
         all_chars(f[5] + 5, "/+=,.@_-", 1);
}

/* http(s)://HOST[:PORT][/PATH], HOST a name, an IPv4 address or an [IPv6]
 * literal. Refused here, not later: the SNS client is only created once
 * AWS credentials are found, and a URL it cannot use would leave relayd
 * running, "ready", and never publishing. No user info (it would be a
 * secret in a non-secret setting), query or fragment (SigV4 signs the
 * path alone). */
static int valid_url(const char *s) {
  const char *h;
  if (strncasecmp(s, "http://", 7) == 0)
    h = s + 7;
  else if (strncasecmp(s, "https://", 8) == 0)
    h = s + 8;
  else
    return 0;
  if (strlen(s) > 900) return 0; /* the client's URL buffer holds 1023 */
  for (const char *p = s; *p; p++)
    if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '?' || *p == '#') return 0;
  size_t al = strcspn(h, "/");
  const char *port = NULL;
  if (*h == '[') {
    const char *close = memchr(h, ']', al);
    char v6[INET6_ADDRSTRLEN + 1];
    size_t vl = close ? (size_t)(close - h - 1) : 0;
    struct in6_addr a6;
    if (!close || vl == 0 || vl >= sizeof v6) return 0;
    memcpy(v6, h + 1, vl);
    v6[vl] = '\0';
    if (inet_pton(AF_INET6, v6, &a6) != 1) return 0;
    if (close + 1 < h + al) {
      if (close[1] != ':') return 0;
      port = close + 2;
    }
  } else {
    size_t hl = 0;
    for (; hl < al && h[hl] != ':'; hl++) {
      int ch = (unsigned char)h[hl];
      /* '_' for container names ("my_sns"), which curl accepts too. */
      if (!(ch == '-' || ch == '.' || ch == '_' || is_digit(ch) ||
            (ascii_lower(ch) >= 'a' && ascii_lower(ch) <= 'z')))
        return 0;
    }
    if (hl == 0 || hl > 253) return 0;
    if (hl < al) port = h + hl + 1;
  }
  if (port) {
    size_t pl = (size_t)(h + al - port);
    uint64_t pn = 0;
    char pb[8];
    if (pl == 0 || pl > 5) return 0;
    memcpy(pb, port, pl);
    pb[pl] = '\0';
    if (parse_u64(pb, &pn) != 0 || pn == 0 || pn > 65535) return 0;
  }
  return 1;
}

/* Printable ASCII without spaces: api keys, secrets, tokens. */
static int valid_token(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f) return 0;
  return 1;
}

static int valid_text(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < ' ' || *s == 0x7f) return 0;
  return 1;
}

static int valid_choice(const char *s, const char *choices) {
  size_t sl = strlen(s);
  for (const char *c = choices; *c;) {
    const char *bar = strchr(c, '|');
    size_t cl = bar ? (size_t)(bar - c) : strlen(c);
    if (cl == sl && memcmp(c, s, sl) == 0) return 1;
    if (!bar) break;
    c = bar + 1;
  }
  return 0;
}

/* ---- sources ---------------------------------------------------------- */

static int key_index(const char *name, size_t len) {
  for (size_t i = 0; i < NKEYS; i++)
    if (strlen(keys[i].name) == len && memcmp(keys[i].name, name, len) == 0) return (int)i;
  return -1;
}

/* RELAY_SNS_TOPIC_ARN <-> --sns-topic-arn */
static int flag_index(const char *flag, size_t len) {
  for (size_t i = 0; i < NKEYS; i++) {
    const char *k = keys[i].name + 6;
    if (strlen(k) != len) continue;
    size_t j = 0;
    for (; j < len; j++) {
      char want = k[j] == '_' ? '-' : (char)ascii_lower((unsigned char)k[j]);
      if (flag[j] != want) break;
    }
    if (j == len) return (int)i;
  }
  return -1;
}

static void flag_name(const cfg_key *k, char *buf, size_t len) {
  size_t n = 0;
  for (const char *p = k->name + 6; *p && n + 1 < len; p++)
    buf[n++] = *p == '_' ? '-' : (char)ascii_lower((unsigned char)*p);
  buf[n] = '\0';
}

static const char *env_lookup(loader *L, const char *name) {
  if (L->getenv_fn) return L->getenv_fn(name, L->arg);
  if (!L->envp) return NULL;
  size_t nl = strlen(name);
  for (char *const *e = L->envp; *e; e++)
    if (strncmp(*e, name, nl) == 0 && (*e)[nl] == '=') return *e + nl + 1;
  return NULL;
}

/* Whether s[0..len) is one of the suffixes Kubernetes gives a Service's
 * variables: _SERVICE_HOST, _SERVICE_PORT[_NAME], _PORT,
 * _PORT_<n>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]. */
static int service_link_suffix(const char *s, size_t len) {
#define SUFFIX_IS(lit) (len == sizeof(lit) - 1 && memcmp(s, lit, len) == 0)
  if (SUFFIX_IS("_SERVICE_HOST") || SUFFIX_IS("_SERVICE_PORT") || SUFFIX_IS("_PORT")) return 1;
  if (len > 14 && memcmp(s, "_SERVICE_PORT_", 14) == 0) return 1; /* a named port */
  if (len < 6 || memcmp(s, "_PORT_", 6) != 0) return 0;
  size_t i = 6;
  while (i < len && is_digit((unsigned char)s[i])) i++;
  if (i == 6 || i == len || s[i] != '_') return 0;
  s += i + 1;
  len -= i + 1;
  size_t pl = 0;
  while (pl < len && s[pl] != '_') pl++;
  if (!((pl == 3 && (memcmp(s, "TCP", 3) == 0 || memcmp(s, "UDP", 3) == 0)) ||
        (pl == 4 && memcmp(s, "SCTP", 4) == 0)))
    return 0;
  s += pl;
  len -= pl;
  return len == 0 || SUFFIX_IS("_PROTO") || SUFFIX_IS("_PORT") || SUFFIX_IS("_ADDR");
#undef SUFFIX_IS
}

/* A variable Kubernetes injected for another Service whose name starts with
 * "relay-" (relay-admin gives RELAY_ADMIN_SERVICE_HOST, RELAY_ADMIN_PORT,
 * ...). It only counts as one when its Service's _SERVICE_HOST is there
 * too, so a mistyped setting such as RELAY_METRICS_PORT is still refused. */
static int env_is_service_link(loader *L, const char *name, size_t len) {
  for (size_t p = 6; p < len; p++) {
    if (name[p] != '_' || !service_link_suffix(name + p, len - p)) continue;
    char host[256];
    if (p + sizeof "_SERVICE_HOST" > sizeof host) return 0;
    memcpy(host, name, p);
    memcpy(host + p, "_SERVICE_HOST", sizeof "_SERVICE_HOST");
    if (env_lookup(L, host)) return 1;
  }
  return 0;
}

static int check_env_unknown(loader *L) {
  if (L->getenv_fn || !L->envp) return 0;
  for (char *const *e = L->envp; *e; e++) {
    if (strncmp(*e, "RELAY_", 6) != 0) continue;
    const char *eq = strchr(*e, '=');
    size_t nl = eq ? (size_t)(eq - *e) : strlen(*e);
    if (key_index(*e, nl) >= 0 || env_is_foreign(*e, nl) || env_is_service_link(L, *e, nl))
      continue;
    char shown[84];
    printable(*e, nl, shown, sizeof shown);
    return fail(L, "%s: unknown setting in the environment (see relayd --help)", shown);
  }
  return 0;
}

static int is_bool_word(const char *s) {
  int b;
  return parse_bool(s, &b) == 0;
}

static int parse_flags(loader *L, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
      return fail(L, "unexpected argument #%d (settings are --flag VALUE; see --help)", i);
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t nl = eq ? (size_t)(eq - name) : strlen(name);
    const char *val = eq ? eq + 1 : NULL;
    int idx = -1;
    int is_config = nl == 6 && memcmp(name, "config", 6) == 0;
    if (!is_config) {
      idx = flag_index(name, nl);
      if (idx < 0) {
        char shown[84];
        printable(name, nl, shown, sizeof shown);
        return fail(L, "--%s: unknown flag (see relayd --help)", shown);
      }
    }
    if (!val) {
      if (idx >= 0 && keys[idx].type == K_BOOL) {
        /* "--insecure-no-signature" alone means 1; a following 0/1 is its value. */
        if (i + 1 < argc && is_bool_word(argv[i + 1]))
          val = argv[++i];
        else
          val = "1";
      } else if (i + 1 < argc) {
        val = argv[++i];
      } else {
        return fail(L, "--%s: missing value", name);
      }
    }
    if (is_config)
      L->file = val;
    else
      L->flag_vals[idx] = val;
  }
  return 0;
}

static char *trim(char *s) {
  while (is_space((unsigned char)*s)) s++;
  size_t l = strlen(s);
  while (l > 0 && (is_space((unsigned char)s[l - 1]) || s[l - 1] == '\r')) s[--l] = '\0';
  return s;
}

/* One KEY=VALUE line. Values are never echoed: the file holds secrets. */
static int parse_line(loader *L, char *line, int lineno) {
  char *s = trim(line);
  if (*s == '\0' || *s == '#') return 0;
  if (strncmp(s, "export", 6) == 0 && is_space((unsigned char)s[6])) s = trim(s + 6);
  char *eq = strchr(s, '=');
  if (!eq) return fail(L, "%s:%d: expected KEY=VALUE", L->file, lineno);
  *eq = '\0';
  char *key = trim(s);
  char *val = trim(eq + 1);
  int idx = key_index(key, strlen(key));
  if (idx < 0) {
    if (!all_chars(key, "_", 1)) return fail(L, "%s:%d: expected KEY=VALUE", L->file, lineno);
    return fail(L, "%s:%d: %.64s: unknown setting (see relayd --help)", L->file, lineno, key);
  }
  if (*val == '"' || *val == '\'') {
    char q = *val++;
    char *end = strchr(val, q);
    if (!end) return fail(L, "%s:%d: %s: unterminated quote", L->file, lineno, keys[idx].name);
    *end = '\0';
    char *rest = trim(end + 1);
    if (*rest && *rest != '#')
      return fail(L, "%s:%d: %s: text after the closing quote", L->file, lineno, keys[idx].name);
  } else {
    /* Unquoted: " #" starts a comment (a '#' inside a word is kept). */
    for (char *p = val; *p; p++) {
      if (*p == '#' && p > val && is_space((unsigned char)p[-1])) {
        *p = '\0';
        val = trim(val);
        break;
      }
    }
  }
  char *copy = strdup(val);
  if (!copy) return fail(L, "out of memory");
  free(L->file_vals[idx]);
  L->file_vals[idx] = copy;
  L->file_lines[idx] = lineno;
  return 0;
}

static int read_config_file(loader *L) {
  if (!L->file) return 0;
  FILE *f = fopen(L->file, "rb");
  if (!f) return fail(L, "--config %s: %s", L->file, strerror(errno));
  char *line = NULL;
  size_t cap = 0;
  ssize_t l;
  int lineno = 0, rc = 0;
  while (rc == 0 && (l = getline(&line, &cap, f)) >= 0) {
    lineno++;
    if (l > 0 && line[l - 1] == '\n') line[--l] = '\0';
    /* A UTF-8 byte order mark, as some Windows editors write. */
    size_t skip = lineno == 1 && l >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    if (strlen(line) != (size_t)l)
      rc = fail(L, "%s:%d: NUL byte in line", L->file, lineno);
    else
      rc = parse_line(L, line + skip, lineno);
  }
  if (rc == 0 && ferror(f)) rc = fail(L, "--config %s: read error", L->file);
  free(line);
  fclose(f);
  return rc;
}

/* ---- resolution ------------------------------------------------------- */

static setting resolve(loader *L, size_t i) {
  setting s = {NULL, SRC_DEFAULT, 0};
  if (L->flag_vals[i]) {
    s.val = L->flag_vals[i];
    s.src = SRC_FLAG;
  } else if ((s.val = env_lookup(L, keys[i].name)) != NULL) {
    s.src = SRC_ENV;
  } else if (L->file_vals[i]) {
    s.val = L->file_vals[i];
    s.src = SRC_FILE;
    s.line = L->file_lines[i];
  }
  /* An empty value means "not set" at any level, so `RELAY_ADMIN_TOKEN=`
   * in the environment can switch a file's token off. */
  if (s.val && *s.val == '\0') s.val = NULL;
  if (!s.val) s.val = keys[i].def;
  return s;
}

/* " (from --flag)" etc., so an operator knows which source to fix. */
static void describe_src(loader *L, size_t i, const setting *s, char *buf, size_t len) {
  char fl[64];
  switch (s->src) {
    case SRC_FLAG:
      flag_name(&keys[i], fl, sizeof fl);
      snprintf(buf, len, " (from --%s)", fl);
      break;
    case SRC_ENV:
      snprintf(buf, len, " (from the environment)");
      break;
    case SRC_FILE:
      snprintf(buf, len, " (from %s:%d)", L->file, s->line);
      break;
    default:
      snprintf(buf, len, " (default)");
      break;
  }
}

static int bad_value(loader *L, size_t i, const setting *s, const char *want) {
  char src[600], shown[84];
  describe_src(L, i, s, src, sizeof src);
  if (keys[i].secret) return fail(L, "%s: %s%s", keys[i].name, want, src);
  const char *at = keys[i].type == K_URL ? strchr(s->val, '@') : NULL;
  const char *sl = strstr(s->val, "://");
  if (at && sl && at > sl && !memchr(sl + 3, '/', (size_t)(at - sl - 3))) {
    /* user:password@ in a URL: show the URL without it. */
    char red[84];
    printable(s->val, (size_t)(sl + 3 - s->val), red, sizeof red);
    printable(at + 1, strlen(at + 1), shown, sizeof shown - strlen(red) - 4);
    return fail(L, "%s: %s, got \"%s***@%s\"%s", keys[i].name, want, red, shown, src);
  }
  printable(s->val, strlen(s->val), shown, sizeof shown);
  return fail(L, "%s: %s, got \"%s\"%s", keys[i].name, want, shown, src);
}

static void store_str(relay_config *c, size_t i, char *v) {
  char **field = (char **)((char *)c + keys[i].off);
  free(*field);
  *field = v;
}

static void store_uint(relay_config *c, size_t i, uint64_t v) {
  char *field = (char *)c + keys[i].off;
  if (keys[i].size == sizeof(uint64_t)) {
    memcpy(field, &v, sizeof v);
  } else if (keys[i].size == sizeof(unsigned)) {
    unsigned u = (unsigned)v;
    memcpy(field, &u, sizeof u);
  }
}

static int apply_key(loader *L, relay_config *c, size_t i, const setting *s) {
  const cfg_key *k = &keys[i];
  char want[160];
  uint64_t n = 0;
  switch (k->type) {
    case K_UINT:
      if (parse_u64(s->val, &n) != 0 || n < k->min || n > k->max) {
        snprintf(want, sizeof want, "must be an integer in %llu..%llu", (unsigned long long)k->min,
                 (unsigned long long)k->max);
        return bad_value(L, i, s, want);
      }
      store_uint(c, i, n);
      return 0;
    case K_BYTES:
      if (cfg_parse_bytes(s->val, &n) != 0)
        return bad_value(L, i, s, "must be a size in bytes, optionally with KiB/MiB/GiB");
      if (n < k->min || n > k->max) {
        snprintf(want, sizeof want, "must be between %llu and %llu bytes",
                 (unsigned long long)k->min, (unsigned long long)k->max);
        return bad_value(L, i, s, want);
      }
      store_uint(c, i, n);
      return 0;
    case K_BOOL: {
      int b;
      if (parse_bool(s->val, &b) != 0) return bad_value(L, i, s, "must be 0 or 1");
      memcpy((char *)c + k->off, &b, sizeof b);
      return 0;
    }
    case K_ADDR: {
      struct sockaddr_storage ss;
      if (cfg_parse_listen(s->val, &ss) != 0)
        return bad_value(L, i, s, "must be IPv4:port, [IPv6]:port or localhost:port");
      break;
    }
    case K_TOPIC_ARN:
      if (parse_topic_arn(s->val, NULL, NULL) != 0)
        return bad_value(L, i, s, "must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)");
      break;
    case K_ROLE_ARN:
      if (!valid_role_arn(s->val))
        return bad_value(L, i, s, "must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)");
      break;
    case K_REGION:
      if (!valid_region(s->val)) return bad_value(L, i, s, "must be a region like us-east-1");
      break;
    case K_URL:
      if (!valid_url(s->val)) return bad_value(L, i, s, "must be http(s)://HOST[:PORT][/PATH]");
      break;
    case K_ENUM:
      if (!valid_choice(s->val, k->choices)) {
        snprintf(want, sizeof want, "must be one of %s", k->choices);
        return bad_value(L, i, s, want);
      }
      break;
    case K_TOKEN:
      if (!valid_token(s->val)) return bad_value(L, i, s, "must be printable ASCII without spaces");
      break;
    case K_PATH:
    case K_STR:
      if (!valid_text(s->val)) return bad_value(L, i, s, "must not contain control characters");
      break;
  }
  if (k->size == 0) return 0; /* merged by the caller */
  char *copy = strdup(s->val);
  if (!copy) return fail(L, "out of memory");
  store_str(c, i, copy);
  return 0;
}

static int add_secret(relay_config *c, const char *key, size_t kl, const char *sec, size_t sl) {
  for (size_t i = 0; i < c->nsecrets; i++)
    if (strlen(c->secrets[i].api_key) == kl && memcmp(c->secrets[i].api_key, key, kl) == 0 &&
        strlen(c->secrets[i].secret) == sl && memcmp(c->secrets[i].secret, sec, sl) == 0)
      return 0;
  cfg_app_secret *ns = realloc(c->secrets, (c->nsecrets + 1) * sizeof *ns);
  if (!ns) return -ENOMEM;
  c->secrets = ns;
  cfg_app_secret *e = &ns[c->nsecrets];
  e->api_key = strndup(key, kl);
  e->secret = strndup(sec, sl);
  if (!e->api_key || !e->secret) {
    free(e->api_key);
    free(e->secret);
    return -ENOMEM;
  }
  c->nsecrets++;
  return 0;
}

/* Groups entries of one api key next to each other (first appearance
 * order, rotation order kept), which cfg_secrets_for() relies on. */
static int group_secrets(relay_config *c) {
  if (c->nsecrets < 2) return 0;
  cfg_app_secret *out = malloc(c->nsecrets * sizeof *out);
  char *taken = calloc(c->nsecrets, 1);
  if (!out || !taken) {
    free(out);
    free(taken);
    return -ENOMEM;
  }
  size_t n = 0;
  for (size_t i = 0; i < c->nsecrets; i++) {
    if (taken[i]) continue;
    for (size_t j = i; j < c->nsecrets; j++) {
      if (taken[j] || strcmp(c->secrets[i].api_key, c->secrets[j].api_key) != 0) continue;
      out[n++] = c->secrets[j];
      taken[j] = 1;
    }
  }
  free(taken);
  free(c->secrets);
  c->secrets = out;
  return 0;
}

/* key1:secret1,key1:secret1b,key2:secret2. Entries are named by position,
 * never by content: a malformed entry may well be a bare secret. */
static int parse_secret_list(loader *L, relay_config *c, const char *list) {
  const char *p = list;
  int entry = 0;
  for (;;) {
    entry++;
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    while (len > 0 && is_space((unsigned char)*p)) p++, len--;
    while (len > 0 && is_space((unsigned char)p[len - 1])) len--;
    if (len == 0) return fail(L, "RELAY_STREAM_SECRETS: entry %d is empty", entry);
    const char *colon = memchr(p, ':', len);
    if (!colon || colon == p || colon == p + len - 1)
      return fail(L, "RELAY_STREAM_SECRETS: entry %d is not key:secret", entry);
    size_t kl = (size_t)(colon - p), sl = len - kl - 1;
    for (size_t j = 0; j < len; j++) {
      unsigned char ch = (unsigned char)p[j];
      if (ch <= ' ' || ch >= 0x7f)
        return fail(L, "RELAY_STREAM_SECRETS: entry %d has a space or non-ASCII character", entry);
    }
    if (add_secret(c, p, kl, colon + 1, sl) != 0) return fail(L, "out of memory");
    if (!end) break;
    p = end + 1;
  }
  return 0;
}

static int finish(loader *L, relay_config *c, const setting *all) {
  /* Secrets: the single-app pair first, then the list. */
  static const char kn[] = "RELAY_STREAM_API_KEY", sn[] = "RELAY_STREAM_API_SECRET",
                    ln[] = "RELAY_STREAM_SECRETS";
  int ki = key_index(kn, sizeof kn - 1), si = key_index(sn, sizeof sn - 1),
      li = key_index(ln, sizeof ln - 1);
  const char *k = all[ki].val, *s = all[si].val;
  if (k && !s) return fail(L, "RELAY_STREAM_API_SECRET: must be set with RELAY_STREAM_API_KEY");
  if (s && !k) return fail(L, "RELAY_STREAM_API_KEY: must be set with RELAY_STREAM_API_SECRET");
  if (k && add_secret(c, k, strlen(k), s, strlen(s)) != 0) return fail(L, "out of memory");
  if (all[li].val && parse_secret_list(L, c, all[li].val) != 0) return -EINVAL;
  if (group_secrets(c) != 0) return fail(L, "out of memory");
  if (c->nsecrets == 0 && !c->insecure_no_signature)
    return fail(L,
                "RELAY_STREAM_API_SECRET: no Stream secret configured (set "
                "RELAY_STREAM_API_KEY and RELAY_STREAM_API_SECRET, or RELAY_STREAM_SECRETS; "
                "RELAY_INSECURE_NO_SIGNATURE=1 accepts unsigned webhooks)");

  if (!c->sns_topic_arn)
    return fail(L, "RELAY_SNS_TOPIC_ARN: required (the SNS topic to publish to)");
  char *region = NULL;
  int rc = parse_topic_arn(c->sns_topic_arn, &region, &c->fifo);
  if (rc != 0) return fail(L, "out of memory");
  if (!c->sns_region)
    c->sns_region = region;
  else
    free(region);

  /* The external id only travels with an AssumeRole: alone it would be
   * dropped without a word, and the operator believes it is in force. */
  if (c->sns_external_id && !c->sns_role_arn)
    return fail(L, "RELAY_SNS_EXTERNAL_ID: needs RELAY_SNS_ROLE_ARN (it is sent with AssumeRole)");

  if (c->retry_max_ms < c->retry_base_ms)
    return fail(L, "RELAY_RETRY_MAX_MS: must be at least RELAY_RETRY_BASE_MS (%u)",
                c->retry_base_ms);

  struct sockaddr_storage admin;
  if (cfg_parse_listen(c->admin_listen, &admin) == 0 && !cfg_listen_is_loopback(&admin) &&
      !c->admin_token)
    return fail(L,
                "RELAY_ADMIN_TOKEN: required when RELAY_ADMIN_LISTEN is not a loopback "
                "address");
  return 0;
}

static void print_help(void) {
  printf(
      "usage: relayd [--config FILE] [--FLAG VALUE | --FLAG=VALUE]...\n"
      "       relayd --help | --version\n\n"
      "Receives Stream Chat webhooks, stores each event durably (fsync) before answering 2xx,\n"
      "and publishes them to Amazon SNS.\n\n"
      "Every setting is an environment variable and a flag (RELAY_LISTEN is --listen).\n"
      "Precedence: flags, then environment, then the --config FILE (KEY=VALUE lines),\n"
      "then defaults. Sizes take KiB/MiB/GiB suffixes. AWS credentials come from the\n"
      "standard AWS_* chain.\n\n");
  for (size_t i = 0; i < NKEYS; i++) {
    char fl[64], left[128];
    flag_name(&keys[i], fl, sizeof fl);
    snprintf(left, sizeof left, "--%s %s", fl, keys[i].meta);
    printf("  %-38s %s\n", left, keys[i].name);
    const char *def = keys[i].def ? keys[i].def : "unset";
    if (strcmp(keys[i].name, "RELAY_SNS_TOPIC_ARN") == 0) def = "none, required";
    if (strcmp(keys[i].name, "RELAY_SNS_REGION") == 0) def = "from the topic ARN";
    if (strcmp(keys[i].name, "RELAY_SNS_ENDPOINT") == 0) def = "https://sns.REGION.amazonaws.com";
    printf("      %s (default: %s)\n", keys[i].help, def);
  }
}

static int load(relay_config *c, int argc, char **argv,
                const char *(*getenv_fn)(const char *, void *), void *arg, char *const *envp,
                char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  if (err && errlen) err[0] = '\0';
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      print_help();
      fflush(stdout);
      return 1;
    }
    if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
      printf("relayd %s\n", RELAY_VERSION);
      fflush(stdout);
      return 1;
    }
  }
  loader *L = calloc(1, sizeof *L);
  if (!L) {
    if (err && errlen) snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  L->getenv_fn = getenv_fn;
  L->arg = arg;
  L->envp = envp;
  L->err = err;
  L->errlen = errlen;
  setting all[NKEYS];
  int rc = parse_flags(L, argc, argv);
  if (rc == 0) rc = check_env_unknown(L);
  if (rc == 0) rc = read_config_file(L);
  for (size_t i = 0; rc == 0 && i < NKEYS; i++) {
    all[i] = resolve(L, i);
    if (all[i].val) rc = apply_key(L, c, i, &all[i]);
  }
  if (rc == 0) rc = finish(L, c, all);
  for (size_t i = 0; i < NKEYS; i++) free(L->file_vals[i]);
  free(L);
  if (rc != 0) {
    cfg_free(c);
    return -EINVAL;
  }
  return 0;
}

int cfg_load(relay_config *c, int argc, char **argv,
             const char *(*getenv_fn)(const char *name, void *arg), void *arg, char *err,
             size_t errlen) {
  return load(c, argc, argv, getenv_fn, arg, getenv_fn ? NULL : environ, err, errlen);
}

int cfg_load_envp(relay_config *c, int argc, char **argv, char *const *envp, char *err,
                  size_t errlen) {
  return load(c, argc, argv, NULL, NULL, envp, err, errlen);
}

void cfg_free(relay_config *c) {
  if (!c) return;
  for (size_t i = 0; i < NKEYS; i++) {
    if (keys[i].size == 0) continue;
    if (keys[i].type == K_UINT || keys[i].type == K_BYTES || keys[i].type == K_BOOL) continue;
    store_str(c, i, NULL);
  }
  for (size_t i = 0; i < c->nsecrets; i++) {
    /* Secrets should not linger in freed heap memory. */
    if (c->secrets[i].secret) {
      volatile char *p = c->secrets[i].secret;
      while (*p) *p++ = '\0';
    }
    free(c->secrets[i].api_key);
    free(c->secrets[i].secret);
  }
  free(c->secrets);
  memset(c, 0, sizeof *c);
}

size_t cfg_secrets_for(const relay_config *c, const char *api_key, const cfg_app_secret **first) {
  if (first) *first = NULL;
  if (!c || !api_key) return 0;
  for (size_t i = 0; i < c->nsecrets; i++) {
    if (strcmp(c->secrets[i].api_key, api_key) != 0) continue;
    size_t n = 1;
    while (i + n < c->nsecrets && strcmp(c->secrets[i + n].api_key, api_key) == 0) n++;
    if (first) *first = &c->secrets[i];
    return n;
  }
  return 0;
}
