/* relayd configuration (SPEC "Configuration").
 *
 * Sources, strongest first: command-line flags (RELAY_LISTEN is --listen,
 * RELAY_SNS_TOPIC_ARN is --sns-topic-arn), environment, `--config FILE`
 * (KEY=VALUE lines, '#' comments), defaults. Unknown keys and bad values
 * stop start-up with one line naming the key. Secrets are never printed.
 *
 * Details: `--key=value` and `--key value` both work; a boolean flag alone
 * (`--insecure-no-signature`) means 1. An empty value at any level means
 * "unset" (the default applies). File lines may be `export KEY=VALUE`, and
 * values may be quoted; an unquoted " #" starts a comment. Sizes take
 * K/KiB, M/MiB, G/GiB, T/TiB (binary; "GB" is refused as ambiguous).
 * RELAY_* environment variables that are not relayd settings but come from
 * Kubernetes service links (RELAY_SERVICE_*, RELAY_PORT*, and those of any
 * other Service named relay-*, e.g. RELAY_ADMIN_SERVICE_HOST, recognised
 * by their suffix when the Service's _SERVICE_HOST is present too) or the
 * project's test harness (RELAY_BIN_DIR, RELAY_SHARED_DIR, RELAY_SOURCE_DIR,
 * RELAY_SANITIZE, RELAY_TEST_*) are ignored; any other unknown one stops
 * start-up. RELAY_SNS_ENDPOINT must be http(s)://HOST[:PORT][/PATH]
 * (HOST a name, IPv4 or [IPv6]; no user info, query or fragment).
 *
 * Keys beyond SPEC (tunables an operator may need; documented in README):
 *   RELAY_HTTP_MAX_CONNECTIONS (1024), RELAY_HTTP_HEADER_TIMEOUT_MS (10000),
 *   RELAY_HTTP_BODY_TIMEOUT_MS (30000), RELAY_HTTP_IDLE_TIMEOUT_MS (60000),
 *   RELAY_HTTP_MAX_HEADER_BYTES (16384).
 */
#ifndef RELAY_CONFIG_H
#define RELAY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct {
  char *api_key;
  char *secret;
} cfg_app_secret;

typedef struct relay_config {
  char *listen;              /* "127.0.0.1:8080" */
  char *admin_listen;        /* "127.0.0.1:8081" */
  char *admin_token;         /* NULL = none */
  char *data_dir;            /* "./relay-data" */
  uint64_t queue_max_bytes;  /* 4 GiB */
  cfg_app_secret *secrets;   /* from RELAY_STREAM_API_KEY/SECRET and RELAY_STREAM_SECRETS */
  size_t nsecrets;
  int insecure_no_signature;
  char *sns_topic_arn;       /* required */
  char *sns_region;          /* from the ARN when unset */
  char *sns_endpoint;        /* NULL = https://sns.REGION.amazonaws.com */
  char *sns_role_arn, *sns_external_id;
  int fifo;                  /* topic ARN ends in ".fifo" */
  uint64_t max_message_bytes;   /* 262144 */
  uint64_t max_body_bytes;      /* 4194304 */
  unsigned publish_batch;       /* 10 (1..10) */
  unsigned publish_concurrency; /* 16 (1..1024) */
  unsigned retry_base_ms, retry_max_ms; /* 200 / 60000 */
  unsigned retry_max_age_s;     /* 86400 */
  unsigned dedup_window_s;      /* 600 */
  char *log_format, *log_level; /* "json" / "info" */
  unsigned http_max_connections, http_header_timeout_ms, http_body_timeout_ms,
      http_idle_timeout_ms, http_max_header_bytes;
} relay_config;

/* Fills `c` from flags, environment and config file. getenv_fn NULL = getenv
 * (tests pass their own). Returns 0, 1 when --help/--version was handled
 * (already printed: exit 0), or -EINVAL with one line in err naming the key.
 * On error `c` is freed. */
int cfg_load(relay_config *c, int argc, char **argv,
             const char *(*getenv_fn)(const char *name, void *arg), void *arg,
             char *err, size_t errlen);
void cfg_free(relay_config *c);
/* The secret for api_key after rotation: returns how many secrets exist for
 * it and points *out at the first (callers try each). */
size_t cfg_secrets_for(const relay_config *c, const char *api_key, const cfg_app_secret **first);

/* Parses sizes like "4GiB", "512MiB", "262144" into bytes. 0 or -EINVAL. */
int cfg_parse_bytes(const char *s, uint64_t *out);

/* Like cfg_load, but the environment is a NULL-terminated "KEY=VALUE" array
 * (envp NULL = none). cfg_load(getenv_fn = NULL) uses `environ` this way.
 * Only with an enumerable environment can unknown RELAY_* variables be
 * refused; with a getenv_fn, only the known keys are looked up. */
int cfg_load_envp(relay_config *c, int argc, char **argv, char *const *envp, char *err,
                  size_t errlen);

/* Parses a listen address as accepted in RELAY_LISTEN / RELAY_ADMIN_LISTEN:
 * "IPv4:port", "[IPv6]:port" or "localhost:port" (port 0..65535; 0 = any
 * free port). Fills *out (AF_INET or AF_INET6). 0 or -EINVAL. */
int cfg_parse_listen(const char *s, struct sockaddr_storage *out);
/* 1 when the address is a loopback one (127/8, ::1). */
int cfg_listen_is_loopback(const struct sockaddr_storage *a);

#endif
