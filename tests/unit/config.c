/* relay/config.c: sources, precedence, validation, secrets, help. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include "testlib.h"

#define TOPIC "arn:aws:sns:eu-west-1:123456789012:events"
#define MAXV 64

/* The injected environment: NULL-terminated "NAME=VALUE" strings. */
static const char *fenv(const char *name, void *arg) {
  const char **env = arg;
  size_t nl = strlen(name);
  for (; env && *env; env++)
    if (strncmp(*env, name, nl) == 0 && (*env)[nl] == '=') return *env + nl + 1;
  return NULL;
}

static char err[512];

/* argv: flags after the program name, NULL-terminated. */
static int load(relay_config *c, const char **args, const char **env) {
  char *argv[MAXV];
  int argc = 0;
  argv[argc++] = "relayd";
  for (; args && *args; args++) argv[argc++] = (char *)*args;
  argv[argc] = NULL;
  memset(err, 0, sizeof err);
  return cfg_load(c, argc, argv, fenv, (void *)env, err, sizeof err);
}

static void write_file(const char *name, const char *text, char *path, size_t len) {
  snprintf(path, len, "%s/%s", tl_tmpdir, name);
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  CHECK(fwrite(text, 1, strlen(text), f) == strlen(text));
  CHECK(fclose(f) == 0);
}

/* An error is one line that names `key` and never contains `secret`. */
static void check_err(int rc, const char *key, const char *secret) {
  CHECK_INT(rc, ==, -EINVAL);
  if (!strstr(err, key)) tl_fail(__FILE__, __LINE__, "error \"%s\" does not name %s", err, key);
  CHECK(strchr(err, '\n') == NULL);
  CHECK(strlen(err) > strlen(key));
  if (secret && strstr(err, secret))
    tl_fail(__FILE__, __LINE__, "error \"%s\" leaks the secret", err);
}

static const char *base_env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_STREAM_API_KEY=key1",
                                 "RELAY_STREAM_API_SECRET=s3cr3t-one", NULL};

TEST(defaults) {
  relay_config c;
  CHECK_INT(load(&c, NULL, base_env), ==, 0);
  CHECK_STR(c.listen, "127.0.0.1:8080");
  CHECK_STR(c.admin_listen, "127.0.0.1:8081");
  CHECK(c.admin_token == NULL);
  CHECK_STR(c.data_dir, "./relay-data");
  CHECK(c.queue_max_bytes == 4ull << 30);
  CHECK_INT(c.nsecrets, ==, 1);
  CHECK_STR(c.secrets[0].api_key, "key1");
  CHECK_STR(c.secrets[0].secret, "s3cr3t-one");
  CHECK_INT(c.insecure_no_signature, ==, 0);
  CHECK_STR(c.sns_topic_arn, TOPIC);
  CHECK_STR(c.sns_region, "eu-west-1");
  CHECK(c.sns_endpoint == NULL);
  CHECK(c.sns_role_arn == NULL && c.sns_external_id == NULL);
  CHECK_INT(c.fifo, ==, 0);
  CHECK(c.max_message_bytes == 262144);
  CHECK(c.max_body_bytes == 4194304);
  CHECK_INT(c.publish_batch, ==, 10);
  CHECK_INT(c.publish_concurrency, ==, 16);
  CHECK_INT(c.retry_base_ms, ==, 200);
  CHECK_INT(c.retry_max_ms, ==, 60000);
  CHECK_INT(c.retry_max_age_s, ==, 86400);
  CHECK_INT(c.dedup_window_s, ==, 600);
  CHECK_STR(c.log_format, "json");
  CHECK_STR(c.log_level, "info");
  CHECK_INT(c.http_max_connections, ==, 1024);
  CHECK_INT(c.http_header_timeout_ms, ==, 10000);
  CHECK_INT(c.http_body_timeout_ms, ==, 30000);
  CHECK_INT(c.http_idle_timeout_ms, ==, 60000);
  CHECK_INT(c.http_max_header_bytes, ==, 16384);
  cfg_free(&c);
  CHECK(c.listen == NULL && c.secrets == NULL);
}

TEST(every_key_from_env) {
  const char *env[] = {"RELAY_LISTEN=0.0.0.0:9000",
                       "RELAY_ADMIN_LISTEN=[::1]:9001",
                       "RELAY_ADMIN_TOKEN=tok",
                       "RELAY_DATA_DIR=/var/lib/relay",
                       "RELAY_QUEUE_MAX_BYTES=512MiB",
                       "RELAY_STREAM_SECRETS=a:1,b:2",
                       "RELAY_INSECURE_NO_SIGNATURE=true",
                       "RELAY_SNS_TOPIC_ARN=arn:aws-cn:sns:cn-north-1:123456789012:t.fifo",
                       "RELAY_SNS_REGION=us-east-2",
                       "RELAY_SNS_ENDPOINT=http://127.0.0.1:4566",
                       "RELAY_SNS_ROLE_ARN=arn:aws:iam::123456789012:role/path/relay-pub",
                       "RELAY_SNS_EXTERNAL_ID=ext-1",
                       "RELAY_MAX_MESSAGE_BYTES=128k",
                       "RELAY_MAX_BODY_BYTES=1MiB",
                       "RELAY_PUBLISH_BATCH=1",
                       "RELAY_PUBLISH_CONCURRENCY=1024",
                       "RELAY_RETRY_BASE_MS=50",
                       "RELAY_RETRY_MAX_MS=50",
                       "RELAY_RETRY_MAX_AGE=60",
                       "RELAY_DEDUP_WINDOW=1",
                       "RELAY_LOG_FORMAT=text",
                       "RELAY_LOG_LEVEL=debug",
                       "RELAY_HTTP_MAX_CONNECTIONS=7",
                       "RELAY_HTTP_HEADER_TIMEOUT_MS=100",
                       "RELAY_HTTP_BODY_TIMEOUT_MS=200",
                       "RELAY_HTTP_IDLE_TIMEOUT_MS=300",
                       "RELAY_HTTP_MAX_HEADER_BYTES=2KiB",
                       NULL};
  relay_config c;
  CHECK_INT(load(&c, NULL, env), ==, 0);
  CHECK_STR(c.listen, "0.0.0.0:9000");
  CHECK_STR(c.admin_listen, "[::1]:9001");
  CHECK_STR(c.admin_token, "tok");
  CHECK_STR(c.data_dir, "/var/lib/relay");
  CHECK(c.queue_max_bytes == 512ull << 20);
  CHECK_INT(c.nsecrets, ==, 2);
  CHECK_INT(c.insecure_no_signature, ==, 1);
  CHECK_INT(c.fifo, ==, 1);
  CHECK_STR(c.sns_region, "us-east-2"); /* explicit beats the ARN's */
  CHECK_STR(c.sns_endpoint, "http://127.0.0.1:4566");
  CHECK_STR(c.sns_role_arn, "arn:aws:iam::123456789012:role/path/relay-pub");
  CHECK_STR(c.sns_external_id, "ext-1");
  CHECK(c.max_message_bytes == 131072);
  CHECK(c.max_body_bytes == 1048576);
  CHECK_INT(c.publish_batch, ==, 1);
  CHECK_INT(c.publish_concurrency, ==, 1024);
  CHECK_INT(c.retry_base_ms, ==, 50);
  CHECK_INT(c.retry_max_ms, ==, 50);
  CHECK_INT(c.retry_max_age_s, ==, 60);
  CHECK_INT(c.dedup_window_s, ==, 1);
  CHECK_STR(c.log_format, "text");
  CHECK_STR(c.log_level, "debug");
  CHECK_INT(c.http_max_connections, ==, 7);
  CHECK_INT(c.http_header_timeout_ms, ==, 100);
  CHECK_INT(c.http_body_timeout_ms, ==, 200);
  CHECK_INT(c.http_idle_timeout_ms, ==, 300);
  CHECK_INT(c.http_max_header_bytes, ==, 2048);
  cfg_free(&c);
}

TEST(flag_forms) {
  const char *args[] = {"--listen=127.0.0.1:1",
                        "--admin-listen",
                        "127.0.0.1:0",
                        "--sns-topic-arn",
                        TOPIC,
                        "--insecure-no-signature",
                        "--publish-batch=3",
                        "--data-dir",
                        "dir with space",
                        "--queue-max-bytes",
                        "1 GiB",
                        NULL};
  relay_config c;
  CHECK_INT(load(&c, args, NULL), ==, 0);
  CHECK_STR(c.listen, "127.0.0.1:1");
  CHECK_STR(c.admin_listen, "127.0.0.1:0");
  CHECK_STR(c.sns_topic_arn, TOPIC);
  CHECK_INT(c.insecure_no_signature, ==, 1);
  CHECK_INT(c.publish_batch, ==, 3);
  CHECK_STR(c.data_dir, "dir with space");
  CHECK(c.queue_max_bytes == 1ull << 30);
  cfg_free(&c);

  /* A bool flag takes a following 0/1 as its value, and nothing else. */
  const char *args2[] = {"--insecure-no-signature", "0", "--sns-topic-arn=" TOPIC, NULL};
  CHECK_INT(load(&c, args2, base_env), ==, 0);
  CHECK_INT(c.insecure_no_signature, ==, 0);
  cfg_free(&c);
  const char *args3[] = {"--insecure-no-signature", "--sns-topic-arn=" TOPIC, NULL};
  CHECK_INT(load(&c, args3, NULL), ==, 0);
  CHECK_INT(c.insecure_no_signature, ==, 1);
  cfg_free(&c);
}

TEST(precedence_flag_env_file_default) {
  char path[1024];
  write_file("relay.conf",
             "RELAY_PUBLISH_BATCH=2\n"
             "RELAY_PUBLISH_CONCURRENCY=3\n"
             "RELAY_RETRY_BASE_MS=4\n",
             path, sizeof path);
  const char *env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=1",
                       "RELAY_PUBLISH_BATCH=5", "RELAY_PUBLISH_CONCURRENCY=6", NULL};
  const char *args[] = {"--config", path, "--publish-batch", "7", NULL};
  relay_config c;
  CHECK_INT(load(&c, args, env), ==, 0);
  CHECK_INT(c.publish_batch, ==, 7);       /* flag beats env and file */
  CHECK_INT(c.publish_concurrency, ==, 6); /* env beats file */
  CHECK_INT(c.retry_base_ms, ==, 4);       /* file beats default */
  CHECK_INT(c.retry_max_ms, ==, 60000);    /* default */
  cfg_free(&c);

  /* --config=FILE form, and the flag may come after the others. */
  const char *args2[] = {"--publish-batch", "8", NULL, NULL};
  char opt[1100];
  snprintf(opt, sizeof opt, "--config=%s", path);
  args2[2] = opt;
  CHECK_INT(load(&c, args2, env), ==, 0);
  CHECK_INT(c.publish_batch, ==, 8);
  CHECK_INT(c.retry_base_ms, ==, 4);
  cfg_free(&c);

  /* An empty value means unset at that level: the default comes back. */
  const char *env2[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=1",
                        "RELAY_RETRY_BASE_MS=", NULL};
  const char *args3[] = {"--config", path, NULL};
  CHECK_INT(load(&c, args3, env2), ==, 0);
  CHECK_INT(c.retry_base_ms, ==, 200);
  cfg_free(&c);
}

TEST(config_file_syntax) {
  char path[1024];
  write_file("relay.conf",
             "# relayd settings\n"
             "\n"
             "   \n"
             "RELAY_SNS_TOPIC_ARN = " TOPIC
             "\r\n"
             "export RELAY_STREAM_API_KEY=key1\n"
             "RELAY_STREAM_API_SECRET=\"my hidden value\"\n"
             "RELAY_DATA_DIR='/tmp/a dir'  # trailing comment\n"
             "RELAY_ADMIN_TOKEN=ab#cd\n"
             "  RELAY_LOG_LEVEL=warn # comment after an unquoted value\n"
             "RELAY_LOG_FORMAT=\"text\"\n"
             "RELAY_PUBLISH_BATCH=4\n"
             "RELAY_PUBLISH_BATCH=5\n",
             path, sizeof path);
  const char *args[] = {"--config", path, NULL};
  relay_config c;
  /* Secrets are tokens: spaces are refused even when quoted. */
  int rc = load(&c, args, NULL);
  check_err(rc, "RELAY_STREAM_API_SECRET", "hidden");

  write_file("relay.conf",
             "# relayd settings\n"
             "\n"
             "   \n"
             "RELAY_SNS_TOPIC_ARN = " TOPIC
             "\r\n"
             "export RELAY_STREAM_API_KEY=key1\n"
             "RELAY_STREAM_API_SECRET=\"se#cr=et\"\n"
             "RELAY_DATA_DIR='/tmp/a dir'  # trailing comment\n"
             "RELAY_ADMIN_TOKEN=ab#cd\n"
             "  RELAY_LOG_LEVEL=warn # comment after an unquoted value\n"
             "RELAY_LOG_FORMAT=\"text\"\n"
             "RELAY_PUBLISH_BATCH=4\n"
             "RELAY_PUBLISH_BATCH=5",
             path, sizeof path);
  CHECK_INT(load(&c, args, NULL), ==, 0);
  CHECK_STR(c.sns_topic_arn, TOPIC);
  CHECK_STR(c.secrets[0].api_key, "key1");
  CHECK_STR(c.secrets[0].secret, "se#cr=et");
  CHECK_STR(c.data_dir, "/tmp/a dir");
  CHECK_STR(c.admin_token, "ab#cd");
  CHECK_STR(c.log_level, "warn");
  CHECK_STR(c.log_format, "text");
  CHECK_INT(c.publish_batch, ==, 5); /* last line wins */
  cfg_free(&c);
}

TEST(config_file_errors) {
  char path[1024];
  relay_config c;
  const char *args[] = {"--config", path, NULL};

  write_file("a.conf", "RELAY_SNS_TOPIC_ARN=" TOPIC "\nRELAY_LISTN=127.0.0.1:1\n", path,
             sizeof path);
  check_err(load(&c, args, base_env), "RELAY_LISTN", NULL);
  CHECK(strstr(err, ":2:") != NULL); /* the line number */
  CHECK(strstr(err, "a.conf") != NULL);

  /* A line without '=' might be a pasted secret: it is not echoed. */
  write_file("b.conf", "RELAY_SNS_TOPIC_ARN=" TOPIC "\nhunter2-secret\n", path, sizeof path);
  check_err(load(&c, args, base_env), "b.conf:2", "hunter2");

  write_file("c.conf", "RELAY_ADMIN_TOKEN=\"unterminated-secret\n", path, sizeof path);
  check_err(load(&c, args, base_env), "RELAY_ADMIN_TOKEN", "unterminated-secret");

  write_file("d.conf", "RELAY_PUBLISH_BATCH=\"3\" extra\n", path, sizeof path);
  check_err(load(&c, args, base_env), "RELAY_PUBLISH_BATCH", NULL);

  /* A bad value from the file names the key and where it came from. */
  write_file("e.conf", "\nRELAY_PUBLISH_BATCH=11\n", path, sizeof path);
  check_err(load(&c, args, base_env), "RELAY_PUBLISH_BATCH", NULL);
  CHECK(strstr(err, "e.conf:2") != NULL);

  /* Unknown non-RELAY keys are refused too: the file is relayd's alone. */
  write_file("f.conf", "AWS_REGION=us-east-1\n", path, sizeof path);
  check_err(load(&c, args, base_env), "AWS_REGION", NULL);

  snprintf(path, sizeof path, "%s/missing.conf", tl_tmpdir);
  check_err(load(&c, args, base_env), "missing.conf", NULL);
  CHECK(strstr(err, "No such file") != NULL);
}

TEST(unknown_keys) {
  relay_config c;
  const char *args[] = {"--publish-batches", "3", NULL};
  check_err(load(&c, args, base_env), "--publish-batches", NULL);
  const char *args2[] = {"--admin-tokn=topsecret", NULL};
  check_err(load(&c, args2, base_env), "--admin-tokn", "topsecret");
  const char *args3[] = {"stray", NULL};
  CHECK_INT(load(&c, args3, base_env), ==, -EINVAL);
  CHECK(strstr(err, "argument") != NULL);
  const char *args4[] = {"--listen", NULL};
  check_err(load(&c, args4, base_env), "--listen", NULL);
  CHECK(strstr(err, "missing value") != NULL);

  /* Environment: unknown RELAY_* refused; others and known foreign ones not. */
  char *argv[] = {"relayd", NULL};
  char *env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC,
                 "RELAY_INSECURE_NO_SIGNATURE=1",
                 "PATH=/usr/bin",
                 "RELAYX=1",
                 "RELAY_SERVICE_HOST=10.0.0.1",
                 "RELAY_PORT_8080_TCP_ADDR=10.0.0.1",
                 "RELAY_PORT=tcp://10.0.0.1:8080",
                 "RELAY_BIN_DIR=/x",
                 "RELAY_TEST_TMP=/y",
                 NULL,
                 NULL};
  CHECK_INT(cfg_load_envp(&c, 1, argv, env, err, sizeof err), ==, 0);
  CHECK_STR(c.sns_topic_arn, TOPIC);
  CHECK_INT(c.insecure_no_signature, ==, 1);
  cfg_free(&c);
  env[9] = "RELAY_PUBLISH_BATCHES=3";
  check_err(cfg_load_envp(&c, 1, argv, env, err, sizeof err), "RELAY_PUBLISH_BATCHES", NULL);
}

static void bad_env(const char *kv, const char *key, const char *secret) {
  const char *env[] = {kv, "RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=1", NULL};
  relay_config c;
  memset(&c, 0xff, sizeof c); /* cfg_load must not read it */
  int rc = load(&c, NULL, env);
  if (rc != -EINVAL) tl_fail(__FILE__, __LINE__, "%s accepted", kv);
  check_err(rc, key, secret);
  CHECK(c.listen == NULL); /* freed and cleared on error */
}

TEST(bad_values) {
  bad_env("RELAY_PUBLISH_BATCH=0", "RELAY_PUBLISH_BATCH", NULL);
  bad_env("RELAY_PUBLISH_BATCH=11", "RELAY_PUBLISH_BATCH", NULL);
  bad_env("RELAY_PUBLISH_BATCH=ten", "RELAY_PUBLISH_BATCH", NULL);
  bad_env("RELAY_PUBLISH_BATCH=-1", "RELAY_PUBLISH_BATCH", NULL);
  bad_env("RELAY_PUBLISH_BATCH= 5", "RELAY_PUBLISH_BATCH", NULL);
  bad_env("RELAY_PUBLISH_BATCH=5x", "RELAY_PUBLISH_BATCH", NULL);
  bad_env("RELAY_PUBLISH_CONCURRENCY=1025", "RELAY_PUBLISH_CONCURRENCY", NULL);
  bad_env("RELAY_RETRY_BASE_MS=99999999999999999999999", "RELAY_RETRY_BASE_MS", NULL);
  bad_env("RELAY_DEDUP_WINDOW=0", "RELAY_DEDUP_WINDOW", NULL);
  bad_env("RELAY_QUEUE_MAX_BYTES=4GB", "RELAY_QUEUE_MAX_BYTES", NULL);
  bad_env("RELAY_QUEUE_MAX_BYTES=1k", "RELAY_QUEUE_MAX_BYTES", NULL);
  bad_env("RELAY_MAX_MESSAGE_BYTES=300k", "RELAY_MAX_MESSAGE_BYTES", NULL);
  bad_env("RELAY_MAX_BODY_BYTES=lots", "RELAY_MAX_BODY_BYTES", NULL);
  bad_env("RELAY_HTTP_MAX_HEADER_BYTES=2MiB", "RELAY_HTTP_MAX_HEADER_BYTES", NULL);
  bad_env("RELAY_LISTEN=127.0.0.1", "RELAY_LISTEN", NULL);
  bad_env("RELAY_LISTEN=127.0.0.1:65536", "RELAY_LISTEN", NULL);
  bad_env("RELAY_LISTEN=example.com:80", "RELAY_LISTEN", NULL);
  bad_env("RELAY_LISTEN=::1:80", "RELAY_LISTEN", NULL);
  bad_env("RELAY_LISTEN=127.1:80", "RELAY_LISTEN", NULL);
  bad_env("RELAY_ADMIN_LISTEN=[::1]80", "RELAY_ADMIN_LISTEN", NULL);
  bad_env("RELAY_LISTEN=127.0.0.1:80\nRELAY_X=1", "RELAY_LISTEN", NULL); /* still one line */
  bad_env("RELAY_DATA_DIR=/tmp/a\nb", "RELAY_DATA_DIR", NULL);
  bad_env("RELAY_SNS_TOPIC_ARN=arn:aws:sqs:us-east-1:123456789012:q", "RELAY_SNS_TOPIC_ARN", NULL);
  bad_env("RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:1234:t", "RELAY_SNS_TOPIC_ARN", NULL);
  bad_env("RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:123456789012:", "RELAY_SNS_TOPIC_ARN", NULL);
  bad_env("RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:123456789012:a:b", "RELAY_SNS_TOPIC_ARN",
          NULL);
  bad_env("RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:123456789012:a b", "RELAY_SNS_TOPIC_ARN",
          NULL);
  bad_env("RELAY_SNS_TOPIC_ARN=topic", "RELAY_SNS_TOPIC_ARN", NULL);
  bad_env("RELAY_SNS_REGION=US East", "RELAY_SNS_REGION", NULL);
  bad_env("RELAY_SNS_ENDPOINT=sns.local", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=http://", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ROLE_ARN=arn:aws:iam::123456789012:user/bob", "RELAY_SNS_ROLE_ARN", NULL);
  bad_env("RELAY_INSECURE_NO_SIGNATURE=maybe", "RELAY_INSECURE_NO_SIGNATURE", NULL);
  bad_env("RELAY_LOG_LEVEL=verbose", "RELAY_LOG_LEVEL", NULL);
  bad_env("RELAY_LOG_FORMAT=xml", "RELAY_LOG_FORMAT", NULL);
  bad_env("RELAY_RETRY_MAX_MS=100", "RELAY_RETRY_MAX_MS", NULL); /* below base (200) */
  bad_env("RELAY_ADMIN_TOKEN=has space secret", "RELAY_ADMIN_TOKEN", "secret");
  bad_env("RELAY_SNS_EXTERNAL_ID=ext\x01secret", "RELAY_SNS_EXTERNAL_ID", "secret");

  /* The source is named so the operator knows where to fix it. */
  relay_config c;
  const char *args[] = {"--publish-batch", "12", NULL};
  check_err(load(&c, args, base_env), "RELAY_PUBLISH_BATCH", NULL);
  CHECK(strstr(err, "--publish-batch") != NULL);
  CHECK(strstr(err, "12") != NULL);
}

TEST(topic_required_and_region) {
  relay_config c;
  const char *env[] = {"RELAY_INSECURE_NO_SIGNATURE=1", NULL};
  check_err(load(&c, NULL, env), "RELAY_SNS_TOPIC_ARN", NULL);

  const char *env2[] = {"RELAY_INSECURE_NO_SIGNATURE=1",
                        "RELAY_SNS_TOPIC_ARN=arn:aws-us-gov:sns:us-gov-west-1:000000000000:Or-"
                        "ders_1.fifo",
                        NULL};
  CHECK_INT(load(&c, NULL, env2), ==, 0);
  CHECK_STR(c.sns_region, "us-gov-west-1");
  CHECK_INT(c.fifo, ==, 1);
  cfg_free(&c);

  /* ".fifo" only counts as the suffix of the name. */
  const char *env3[] = {"RELAY_INSECURE_NO_SIGNATURE=1",
                        "RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:000000000000:fifo", NULL};
  CHECK_INT(load(&c, NULL, env3), ==, 0);
  CHECK_INT(c.fifo, ==, 0);
  CHECK_STR(c.sns_region, "us-east-1");
  cfg_free(&c);
}

TEST(secrets_merge_and_rotation) {
  const char *env[] = {
      "RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_STREAM_API_KEY=key1", "RELAY_STREAM_API_SECRET=one",
      "RELAY_STREAM_SECRETS= key2:two , key1:oneb,key1:one,key2:tw:o2,key3:3", NULL};
  relay_config c;
  CHECK_INT(load(&c, NULL, env), ==, 0);
  /* key1:one appears twice: kept once. Grouped by key, order kept. */
  CHECK_INT(c.nsecrets, ==, 5);
  const cfg_app_secret *s;
  CHECK_INT(cfg_secrets_for(&c, "key1", &s), ==, 2);
  CHECK_STR(s[0].api_key, "key1");
  CHECK_STR(s[0].secret, "one");
  CHECK_STR(s[1].secret, "oneb");
  CHECK_INT(cfg_secrets_for(&c, "key2", &s), ==, 2);
  CHECK_STR(s[0].secret, "two");
  CHECK_STR(s[1].secret, "tw:o2"); /* split at the first ':' */
  CHECK_INT(cfg_secrets_for(&c, "key3", &s), ==, 1);
  CHECK_STR(s[0].secret, "3");
  CHECK_INT(cfg_secrets_for(&c, "key4", &s), ==, 0);
  CHECK(s == NULL);
  CHECK_INT(cfg_secrets_for(&c, "key", &s), ==, 0);
  cfg_free(&c);

  /* Only the list, via a flag over the environment's. */
  const char *args[] = {"--stream-secrets", "k:v", NULL};
  const char *env2[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_STREAM_SECRETS=x:y", NULL};
  CHECK_INT(load(&c, args, env2), ==, 0);
  CHECK_INT(c.nsecrets, ==, 1);
  CHECK_INT(cfg_secrets_for(&c, "k", &s), ==, 1);
  CHECK_INT(cfg_secrets_for(&c, "x", &s), ==, 0);
  cfg_free(&c);
}

static void bad_secrets(const char *list, const char *secret) {
  char kv[256];
  snprintf(kv, sizeof kv, "RELAY_STREAM_SECRETS=%s", list);
  const char *env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, kv, NULL};
  relay_config c;
  check_err(load(&c, NULL, env), "RELAY_STREAM_SECRETS", secret);
}

TEST(secret_errors_do_not_leak) {
  bad_secrets("key1:topsecret,", "topsecret");
  bad_secrets("key1:topsecret,,key2:x", "topsecret");
  bad_secrets("topsecret", "topsecret");
  bad_secrets("key1:topsecret,:topsecret2", "topsecret");
  bad_secrets("key1:", "key1:");
  bad_secrets("key1:top secret", "secret");
  CHECK(strstr(err, "entry 1") != NULL);

  relay_config c;
  const char *env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_STREAM_API_SECRET=lonely-secret", NULL};
  check_err(load(&c, NULL, env), "RELAY_STREAM_API_KEY", "lonely-secret");
  const char *env2[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_STREAM_API_KEY=k", NULL};
  check_err(load(&c, NULL, env2), "RELAY_STREAM_API_SECRET", NULL);
}

TEST(refuses_without_secret) {
  relay_config c;
  const char *env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, NULL};
  check_err(load(&c, NULL, env), "RELAY_INSECURE_NO_SIGNATURE", NULL);
  const char *env2[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=0", NULL};
  check_err(load(&c, NULL, env2), "RELAY_STREAM_API_SECRET", NULL);
  const char *env3[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=1", NULL};
  CHECK_INT(load(&c, NULL, env3), ==, 0);
  CHECK_INT(c.nsecrets, ==, 0);
  CHECK_INT(c.insecure_no_signature, ==, 1);
  cfg_free(&c);
}

TEST(admin_token_off_loopback) {
  relay_config c;
  const char *env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=1",
                       "RELAY_ADMIN_LISTEN=0.0.0.0:8081", NULL};
  check_err(load(&c, NULL, env), "RELAY_ADMIN_TOKEN", NULL);
  const char *args[] = {"--admin-token", "tok", NULL};
  CHECK_INT(load(&c, args, env), ==, 0);
  CHECK_STR(c.admin_token, "tok");
  cfg_free(&c);
  const char *env2[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=1",
                        "RELAY_ADMIN_LISTEN=127.0.0.2:8081", NULL};
  CHECK_INT(load(&c, NULL, env2), ==, 0);
  cfg_free(&c);
}

TEST(parse_bytes) {
  static const struct {
    const char *in;
    uint64_t want;
  } ok[] = {{"0", 0},
            {"262144", 262144},
            {"1k", 1024},
            {"1K", 1024},
            {"2KiB", 2048},
            {"3kib", 3072},
            {"512MiB", 512ull << 20},
            {"4GiB", 4ull << 30},
            {"4 GiB", 4ull << 30},
            {"4G", 4ull << 30},
            {"1TiB", 1ull << 40},
            {"100B", 100},
            {"18446744073709551615", UINT64_MAX}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    uint64_t v = 1;
    if (cfg_parse_bytes(ok[i].in, &v) != 0) tl_fail(__FILE__, __LINE__, "refused %s", ok[i].in);
    if (v != ok[i].want)
      tl_fail(__FILE__, __LINE__, "%s gave %llu", ok[i].in, (unsigned long long)v);
  }
  static const char *const bad[] = {"",
                                    "GiB",
                                    "-1",
                                    "+1",
                                    "1.5GiB",
                                    "4GB",
                                    "4 ",
                                    " 4",
                                    "4 G B",
                                    "1x",
                                    "0x10",
                                    "4GiBs",
                                    "18446744073709551616",
                                    "17179869184GiB",
                                    "1e3"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v = 7;
    if (cfg_parse_bytes(bad[i], &v) != -EINVAL)
      tl_fail(__FILE__, __LINE__, "accepted \"%s\"", bad[i]);
    CHECK(v == 7);
  }
  CHECK_INT(cfg_parse_bytes(NULL, NULL), ==, -EINVAL);
}

TEST(parse_listen) {
  struct sockaddr_storage ss;
  CHECK_INT(cfg_parse_listen("127.0.0.1:8080", &ss), ==, 0);
  CHECK_INT(ss.ss_family, ==, AF_INET);
  CHECK_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), ==, 8080);
  CHECK(cfg_listen_is_loopback(&ss));
  CHECK_INT(cfg_parse_listen("localhost:0", &ss), ==, 0);
  CHECK(cfg_listen_is_loopback(&ss));
  CHECK_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), ==, 0);
  CHECK_INT(cfg_parse_listen("0.0.0.0:65535", &ss), ==, 0);
  CHECK(!cfg_listen_is_loopback(&ss));
  CHECK_INT(cfg_parse_listen("[::1]:443", &ss), ==, 0);
  CHECK_INT(ss.ss_family, ==, AF_INET6);
  CHECK_INT(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), ==, 443);
  CHECK(cfg_listen_is_loopback(&ss));
  CHECK_INT(cfg_parse_listen("[::]:1", &ss), ==, 0);
  CHECK(!cfg_listen_is_loopback(&ss));
  static const char *const bad[] = {"",        ":80",          "127.0.0.1:", "127.0.0.1:x",
                                    "[::1:80", "[]:80",        "1.2.3:4",    "1.2.3.4:-1",
                                    "host:80", "[1.2.3.4]:80", "1.2.3.4:80 "};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (cfg_parse_listen(bad[i], &ss) != -EINVAL)
      tl_fail(__FILE__, __LINE__, "accepted \"%s\"", bad[i]);
}

/* "localhost:PORT" is accepted and kept as written: the listeners parse
 * it with the same cfg_parse_listen() (ingest.listen tests bind it). */
TEST(listen_localhost_kept_as_written) {
  const char *args[] = {"--admin-listen", "localhost:9001", NULL};
  const char *env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_STREAM_API_KEY=key1",
                       "RELAY_STREAM_API_SECRET=s3cr3t-one", "RELAY_LISTEN=localhost:0080", NULL};
  relay_config c;
  CHECK_INT(load(&c, args, env), ==, 0);
  CHECK_STR(c.listen, "localhost:0080");
  CHECK_STR(c.admin_listen, "localhost:9001");
  struct sockaddr_storage ss;
  CHECK_INT(cfg_parse_listen(c.listen, &ss), ==, 0);
  const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
  CHECK_INT(in->sin_family, ==, AF_INET);
  CHECK_INT(ntohl(in->sin_addr.s_addr), ==, INADDR_LOOPBACK);
  CHECK_INT(ntohs(in->sin_port), ==, 80);
  cfg_free(&c);
}

/* Runs cfg_load with stdout redirected to a file; returns what it printed. */
static char *capture(const char **args, int *rc) {
  char path[1024];
  snprintf(path, sizeof path, "%s/stdout", tl_tmpdir);
  fflush(stdout);
  int saved = dup(1);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(saved >= 0 && fd >= 0);
  CHECK(dup2(fd, 1) == 1);
  close(fd);
  relay_config c;
  /* Even a broken environment does not stop --help. */
  const char *env[] = {"RELAY_PUBLISH_BATCH=99", NULL};
  *rc = load(&c, args, env);
  fflush(stdout);
  CHECK(dup2(saved, 1) == 1);
  close(saved);
  return tl_read_file(path, NULL);
}

TEST(help_and_version) {
  int rc;
  const char *args[] = {"--help", NULL};
  char *out = capture(args, &rc);
  CHECK_INT(rc, ==, 1);
  CHECK(out != NULL);
  static const char *const want[] = {"RELAY_LISTEN",
                                     "--listen",
                                     "127.0.0.1:8080",
                                     "RELAY_ADMIN_LISTEN",
                                     "127.0.0.1:8081",
                                     "RELAY_ADMIN_TOKEN",
                                     "RELAY_DATA_DIR",
                                     "./relay-data",
                                     "RELAY_QUEUE_MAX_BYTES",
                                     "4GiB",
                                     "RELAY_STREAM_API_KEY",
                                     "RELAY_STREAM_API_SECRET",
                                     "RELAY_STREAM_SECRETS",
                                     "RELAY_INSECURE_NO_SIGNATURE",
                                     "RELAY_SNS_TOPIC_ARN",
                                     "--sns-topic-arn",
                                     "RELAY_SNS_REGION",
                                     "RELAY_SNS_ENDPOINT",
                                     "RELAY_SNS_ROLE_ARN",
                                     "RELAY_SNS_EXTERNAL_ID",
                                     "RELAY_MAX_MESSAGE_BYTES",
                                     "262144",
                                     "RELAY_MAX_BODY_BYTES",
                                     "4194304",
                                     "RELAY_PUBLISH_BATCH",
                                     "RELAY_PUBLISH_CONCURRENCY",
                                     "RELAY_RETRY_BASE_MS",
                                     "200",
                                     "RELAY_RETRY_MAX_MS",
                                     "60000",
                                     "RELAY_RETRY_MAX_AGE",
                                     "86400",
                                     "RELAY_DEDUP_WINDOW",
                                     "600",
                                     "RELAY_LOG_FORMAT",
                                     "json",
                                     "RELAY_LOG_LEVEL",
                                     "info",
                                     "RELAY_HTTP_MAX_CONNECTIONS",
                                     "RELAY_HTTP_HEADER_TIMEOUT_MS",
                                     "RELAY_HTTP_BODY_TIMEOUT_MS",
                                     "RELAY_HTTP_IDLE_TIMEOUT_MS",
                                     "RELAY_HTTP_MAX_HEADER_BYTES",
                                     "16384",
                                     "--config"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!strstr(out, want[i])) tl_fail(__FILE__, __LINE__, "--help lacks %s", want[i]);
  free(out);

  const char *args2[] = {"--version", NULL};
  out = capture(args2, &rc);
  CHECK_INT(rc, ==, 1);
  CHECK(strncmp(out, "relayd ", 7) == 0);
  CHECK(strchr(out, '\n') != NULL);
  free(out);
}

/* RELAY_SNS_ENDPOINT: whatever the SNS client cannot use must stop start-up
 * here, naming the key. Accepted before, a bad port or a query made relayd
 * start, say "ready" and never publish ("cannot create the SNS client"). */
TEST(sns_endpoint_values) {
  bad_env("RELAY_SNS_ENDPOINT=http://127.0.0.1:99999", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=http://127.0.0.1:0/", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=https://host:port/", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=http://localhost:4566/?Action=Publish", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=http://localhost:4566#frag", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=http://[::1", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=http://[::g]:4566", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=http://[::1]x/", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=http://user:pw@host/", "RELAY_SNS_ENDPOINT", "pw");
  bad_env("RELAY_SNS_ENDPOINT=http://ho%st/", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=http://host:/", "RELAY_SNS_ENDPOINT", NULL);
  bad_env("RELAY_SNS_ENDPOINT=ftp://host/", "RELAY_SNS_ENDPOINT", NULL);

  static const char *const good[] = {
      "http://127.0.0.1:4566",
      "http://localhost:4566/",
      "http://fauxqs:4566",
      "http://sns_emulator:4566/sns/",
      "http://[::1]:4566/",
      "http://[2001:db8::5]",
      "https://vpce-0a1b-xyz.sns.us-east-1.vpce.amazonaws.com",
      "https://sns.us-east-1.amazonaws.com:443/",
      "HTTPS://SNS.US-EAST-1.AMAZONAWS.COM/",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char kv[256];
    snprintf(kv, sizeof kv, "RELAY_SNS_ENDPOINT=%s", good[i]);
    const char *env[] = {kv, "RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=1", NULL};
    relay_config c;
    if (load(&c, NULL, env) != 0) tl_fail(__FILE__, __LINE__, "%s refused: %s", good[i], err);
    CHECK_STR(c.sns_endpoint, good[i]);
    cfg_free(&c);
  }
}

/* Kubernetes injects <SERVICE>_SERVICE_HOST, <SERVICE>_PORT_... for every
 * Service in the namespace: a Service named relay-admin or relay-metrics
 * (the usual way to scrape /metrics) gives RELAY_ADMIN_SERVICE_HOST and
 * friends, which must not stop start-up. A look-alike without its
 * SERVICE_HOST sibling is still an unknown setting (a typo is not hidden). */
TEST(kubernetes_service_links) {
  char *argv[] = {"relayd", NULL};
  relay_config c;
  char *env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC,
                 "RELAY_INSECURE_NO_SIGNATURE=1",
                 "RELAY_ADMIN_SERVICE_HOST=10.0.0.7",
                 "RELAY_ADMIN_SERVICE_PORT=8081",
                 "RELAY_ADMIN_SERVICE_PORT_ADMIN=8081",
                 "RELAY_ADMIN_PORT=tcp://10.0.0.7:8081",
                 "RELAY_ADMIN_PORT_8081_TCP=tcp://10.0.0.7:8081",
                 "RELAY_ADMIN_PORT_8081_TCP_PROTO=tcp",
                 "RELAY_ADMIN_PORT_8081_TCP_PORT=8081",
                 "RELAY_ADMIN_PORT_8081_TCP_ADDR=10.0.0.7",
                 "RELAY_WEBHOOK_PUBLIC_SERVICE_HOST=10.0.0.8",
                 "RELAY_WEBHOOK_PUBLIC_PORT_443_UDP_ADDR=10.0.0.8",
                 "RELAY_WEBHOOK_PUBLIC_SERVICE_PORT_HTTPS_ALT=443",
                 NULL,
                 NULL};
  if (cfg_load_envp(&c, 1, argv, env, err, sizeof err) != 0)
    tl_fail(__FILE__, __LINE__, "refused: %s", err);
  CHECK_STR(c.admin_listen, "127.0.0.1:8081");
  cfg_free(&c);

  static const char *const still_unknown[] = {
      "RELAY_METRICS_PORT=9090",             /* no RELAY_METRICS_SERVICE_HOST */
      "RELAY_ADMIN_PORT_8081_TCP_HOST=x",    /* not a Kubernetes suffix */
      "RELAY_ADMIN_PORT_80X1_TCP=tcp://x:1", /* port not a number */
      "RELAY_ADMIN_SERVICE_HOSTS=10.0.0.7",
      "RELAY_ADMIN_LISTEN_PORT=8081",
  };
  for (size_t i = 0; i < sizeof still_unknown / sizeof still_unknown[0]; i++) {
    env[13] = (char *)still_unknown[i];
    char name[64];
    size_t nl = strcspn(still_unknown[i], "=");
    snprintf(name, sizeof name, "%.*s", (int)nl, still_unknown[i]);
    check_err(cfg_load_envp(&c, 1, argv, env, err, sizeof err), name, NULL);
  }
}

/* A file saved by Windows tools (Notepad before 2019, PowerShell 5's
 * Set-Content -Encoding UTF8) starts with a UTF-8 byte order mark; the
 * first line must still be read as its key, not refused as "expected
 * KEY=VALUE" on a line that looks right. */
TEST(config_file_utf8_bom) {
  char path[1024];
  write_file("bom.conf",
             "\xef\xbb\xbfRELAY_SNS_TOPIC_ARN=" TOPIC "\r\nRELAY_INSECURE_NO_SIGNATURE=1\r\n", path,
             sizeof path);
  const char *args[] = {"--config", path, NULL};
  relay_config c;
  if (load(&c, args, NULL) != 0) tl_fail(__FILE__, __LINE__, "refused: %s", err);
  CHECK_STR(c.sns_topic_arn, TOPIC);
  CHECK_INT(c.insecure_no_signature, ==, 1);
  cfg_free(&c);

  /* Only at the very start: elsewhere it is still not a key. */
  write_file("bom2.conf",
             "RELAY_SNS_TOPIC_ARN=" TOPIC "\n\xef\xbb\xbfRELAY_INSECURE_NO_SIGNATURE=1\n", path,
             sizeof path);
  check_err(load(&c, args, NULL), "bom2.conf:2", NULL);
}

/* An external id is only ever sent with AssumeRole: set alone it was
 * dropped silently, while the operator believed it in force. */
TEST(external_id_needs_role_arn) {
  relay_config c;
  const char *env[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=1",
                       "RELAY_SNS_EXTERNAL_ID=ext-id-s3cret", NULL};
  check_err(load(&c, NULL, env), "RELAY_SNS_EXTERNAL_ID", "ext-id-s3cret");
  CHECK(strstr(err, "RELAY_SNS_ROLE_ARN") != NULL);
  const char *env2[] = {"RELAY_SNS_TOPIC_ARN=" TOPIC, "RELAY_INSECURE_NO_SIGNATURE=1",
                        "RELAY_SNS_EXTERNAL_ID=ext-id-s3cret",
                        "RELAY_SNS_ROLE_ARN=arn:aws:iam::123456789012:role/relay-pub", NULL};
  CHECK_INT(load(&c, NULL, env2), ==, 0);
  CHECK_STR(c.sns_external_id, "ext-id-s3cret");
  cfg_free(&c);
}
