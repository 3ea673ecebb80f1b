/* Fuzz target: the --config file parser of relay/config.c, through
 * cfg_load_envp(argv = relayd --config FILE).
 *
 * The input is the file's content, written to one temp file per process.
 * Each input is loaded twice: with an empty environment (the file must
 * supply everything) and with an environment that already holds the
 * required keys (so the file's other values get validated).
 * Properties: no crash or leak; the result is 0 with a sane config, or
 * -EINVAL with a non-empty, one-line, printable message that does not
 * echo a secret value from the file (checked by loading a copy whose
 * secret values have other letters and digits: same result, same line).
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define FAIL(...)                                   \
  do {                                              \
    fprintf(stderr, "fuzz_config: " __VA_ARGS__);   \
    fprintf(stderr, "\n");                          \
    abort();                                        \
  } while (0)

static char cfg_path[64];

static void remove_file(void) {
  if (cfg_path[0]) unlink(cfg_path);
}

static void write_input(const uint8_t *data, size_t size) {
  if (!cfg_path[0]) {
    snprintf(cfg_path, sizeof cfg_path, "/tmp/relay-fuzz-config-%ld.conf", (long)getpid());
    atexit(remove_file);
  }
  FILE *f = fopen(cfg_path, "wb");
  if (!f) FAIL("cannot write %s", cfg_path);
  if (size && fwrite(data, 1, size, f) != size) FAIL("short write");
  if (fclose(f) != 0) FAIL("close failed");
}

static void check_sane(const relay_config *c) {
  struct sockaddr_storage ss;
  if (!c->listen || cfg_parse_listen(c->listen, &ss) != 0) FAIL("accepted bad listen");
  if (!c->admin_listen || cfg_parse_listen(c->admin_listen, &ss) != 0)
    FAIL("accepted bad admin listen");
  if (!c->data_dir || !*c->data_dir) FAIL("no data dir");
  if (!c->sns_topic_arn || strncmp(c->sns_topic_arn, "arn:", 4) != 0) FAIL("bad topic arn");
  if (!c->sns_region || !*c->sns_region) FAIL("no region");
  if (c->nsecrets == 0 && !c->insecure_no_signature) FAIL("no secret and not insecure");
  for (size_t i = 0; i < c->nsecrets; i++)
    if (!c->secrets[i].api_key || !c->secrets[i].secret || !*c->secrets[i].secret)
      FAIL("empty secret %zu", i);
  if (c->publish_batch < 1 || c->publish_batch > 10) FAIL("publish_batch %u", c->publish_batch);
  if (c->publish_concurrency < 1 || c->publish_concurrency > 1024)
    FAIL("publish_concurrency %u", c->publish_concurrency);
  if (c->max_body_bytes == 0 || c->max_message_bytes == 0) FAIL("zero size limit");
  if (c->queue_max_bytes < 65536) FAIL("queue_max_bytes %llu", (unsigned long long)c->queue_max_bytes);
  if (c->retry_base_ms > c->retry_max_ms) FAIL("retry base over max");
  if (!c->log_format || !c->log_level) FAIL("no log settings");
  if (c->fifo != (strlen(c->sns_topic_arn) > 5 &&
                  strcmp(c->sns_topic_arn + strlen(c->sns_topic_arn) - 5, ".fifo") == 0))
    FAIL("fifo flag does not match the topic");
}

static int is_blank(uint8_t ch) {
  return ch == ' ' || ch == '\t';
}

/* A copy of the input in which every letter and digit of the values of
 * secret keys is replaced by another of its class ([export] KEY = VALUE
 * lines only). Validity does not change (same character classes, same
 * equalities), so the error line must not either: if it did, it showed
 * some of the secret. */
static uint8_t *rotate_secrets(const uint8_t *data, size_t size) {
  static const char *const keys[] = {"RELAY_STREAM_API_SECRET", "RELAY_ADMIN_TOKEN",
                                     "RELAY_STREAM_SECRETS"};
  uint8_t *out = malloc(size ? size : 1);
  if (!out) FAIL("oom");
  if (size) memcpy(out, data, size);
  size_t i = 0;
  while (i < size) {
    size_t eol = i;
    while (eol < size && data[eol] != '\n') eol++;
    size_t j = i;
    while (j < eol && is_blank(data[j])) j++;
    if (eol - j > 7 && memcmp(data + j, "export", 6) == 0 && is_blank(data[j + 6])) {
      j += 6;
      while (j < eol && is_blank(data[j])) j++;
    }
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
      size_t kl = strlen(keys[k]);
      if (eol - j <= kl || memcmp(data + j, keys[k], kl) != 0) continue;
      size_t v = j + kl;
      while (v < eol && is_blank(data[v])) v++;
      if (v >= eol || data[v] != '=') continue;
      for (; v < eol; v++) {
        uint8_t ch = data[v];
        if (ch >= 'a' && ch <= 'z') out[v] = (uint8_t)('a' + (ch - 'a' + 7) % 26);
        else if (ch >= 'A' && ch <= 'Z') out[v] = (uint8_t)('A' + (ch - 'A' + 7) % 26);
        else if (ch >= '0' && ch <= '9') out[v] = (uint8_t)('0' + (ch - '0' + 3) % 10);
      }
    }
    i = eol + 1;
  }
  return out;
}

/* Loads cfg_path; returns the result, the error line in err. */
static int load_once(char *const *envp, char *err, size_t errlen) {
  char *argv[] = {"relayd", "--config", cfg_path, NULL};
  relay_config c;
  memset(err, 'x', errlen);
  int rc = cfg_load_envp(&c, 3, argv, envp, err, errlen);
  if (rc == 0) {
    check_sane(&c);
    cfg_free(&c);
    return 0;
  }
  if (rc != -EINVAL) FAIL("unexpected result %d", rc);
  if (!memchr(err, 0, errlen)) FAIL("error not terminated");
  if (!err[0]) FAIL("-EINVAL without a message");
  for (const char *p = err; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) FAIL("control byte 0x%02x in error line", *p);
  /* c was freed by cfg_load_envp; freeing again must be harmless. */
  cfg_free(&c);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *empty[] = {NULL};
  char *required[] = {"RELAY_SNS_TOPIC_ARN=arn:aws:sns:us-east-1:000000000000:t",
                      "RELAY_STREAM_API_KEY=key", "RELAY_STREAM_API_SECRET=fuzzsecret",
                      "PATH=/usr/bin", NULL};
  char *const *envs[] = {empty, required};
  char err[2][512], err_rot[2][512];
  int rc[2], rc_rot[2];
  write_input(data, size);
  for (int e = 0; e < 2; e++) rc[e] = load_once(envs[e], err[e], sizeof err[e]);
  uint8_t *rot = rotate_secrets(data, size);
  write_input(rot, size);
  free(rot);
  for (int e = 0; e < 2; e++) {
    rc_rot[e] = load_once(envs[e], err_rot[e], sizeof err_rot[e]);
    if (rc_rot[e] != rc[e]) FAIL("result depends on the letters of a secret");
    if (rc[e] != 0 && strcmp(err[e], err_rot[e]) != 0)
      FAIL("error line shows a secret:\n  %s\n  %s", err[e], err_rot[e]);
  }
  return 0;
}
