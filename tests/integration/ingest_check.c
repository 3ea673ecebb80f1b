/* ingest_check DIR: lists every record in the queue at DIR (relayd must not
 * be running), one line each: "ready|dlq <webhook_id> <sha256 hex of body>
 * <type>", so tests can check that every id that got a 2xx is there, with
 * the exact body. Exit 0, or 1 when the queue cannot be read. */
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rq.h"

static void print(const char *where, const rq_record *r) {
  unsigned char md[32];
  unsigned int ml = 0;
  EVP_Digest(r->body, r->body_len, md, &ml, EVP_sha256(), NULL);
  char hex[65];
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  printf("%s %s %s %s\n", where, r->webhook_id && *r->webhook_id ? r->webhook_id : "-", hex,
         r->type && *r->type ? r->type : "-");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: ingest_check DIR\n");
    return 2;
  }
  rq_env *env;
  rq_options o = {0};
  int rc = rq_env_open(&env, argv[1], &o);
  if (rc < 0) {
    fprintf(stderr, "ingest_check: %s: %s\n", argv[1], rq_strerror(rc));
    return 1;
  }
  rq_record *recs = NULL;
  int n;
  /* Leases are in-memory only: leasing everything is a read, in pages. */
  while ((n = rq_lease(env, INT64_MAX, 10000, 0, &recs)) > 0) {
    for (int i = 0; i < n; i++) print("ready", &recs[i]);
    rq_records_free(recs, (size_t)n);
  }
  if (n < 0) {
    fprintf(stderr, "ingest_check: lease: %s\n", rq_strerror(n));
    rq_env_close(env);
    return 1;
  }
  n = rq_dlq_list(env, NULL, &recs);
  if (n < 0) {
    fprintf(stderr, "ingest_check: dlq: %s\n", rq_strerror(n));
    rq_env_close(env);
    return 1;
  }
  for (int i = 0; i < n; i++) print("dlq", &recs[i]);
  rq_records_free(recs, (size_t)n);
  rq_env_close(env);
  return 0;
}
