/* AWS Signature Version 4, as pure functions (OpenSSL only).
 *
 * Nothing here reads the clock or the environment: time, credentials, region,
 * service and body are inputs, so every step can be tested byte for byte
 * against AWS's published vectors.
 *
 * Errors: 0 on success; -EINVAL for a malformed request (missing method,
 * path, region, service or credentials; a header name that is empty);
 * -ENOMEM when an allocation fails.
 */
#ifndef RELAY_SIGV4_H
#define RELAY_SIGV4_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct {
  const char *access_key_id;
  const char *secret_access_key;
  const char *session_token; /* NULL or "" when none */
} sigv4_credentials;

typedef struct {
  const char *name; /* any case; canonicalised to lowercase */
  const char *value;
} sigv4_header;

typedef struct {
  const char *method;       /* "POST" */
  const char *path;         /* URI path as sent on the wire, e.g. "/" */
  const char *query;        /* raw query string without '?', or NULL */
  const sigv4_header *headers; /* must include "host" */
  size_t nheaders;
  const uint8_t *body;
  size_t body_len;
  const char *region;       /* "us-east-1" */
  const char *service;      /* "sns" */
  time_t when;              /* request time (UTC seconds) */
  /* When non-zero, x-amz-content-sha256 is added to the signed headers (S3
   * style); SNS does not need it. */
  int sign_body_header;
  /* When non-zero, the session token is added as a signed
   * X-Amz-Security-Token header (the usual choice); otherwise it is added
   * unsigned after signing, as some of the AWS vectors expect. */
  int sign_session_token;
} sigv4_request;

/* Signing-key cache: one derived key per (date, region, service, secret).
 * Zero-initialise; not thread-safe (one per thread or per client). */
typedef struct {
  char date[9];
  char region[32];
  char service[32];
  unsigned char secret_digest[32]; /* SHA-256 of the secret, never the secret */
  unsigned char key[32];
  int valid;
} sigv4_key_cache;

/* Everything a signature produces. Strings are NUL-terminated and owned by the
 * result; free with sigv4_result_free(). */
typedef struct {
  char amz_date[17];           /* "20150830T123600Z" */
  char payload_hash[65];       /* lowercase hex SHA-256 of the body */
  char signature[65];          /* lowercase hex */
  char *canonical_request;
  char *string_to_sign;
  char *signed_headers;        /* "content-type;host;x-amz-date" */
  char *authorization;         /* value of the Authorization header */
  /* Headers the caller must add to the request, in order: X-Amz-Date, then
   * X-Amz-Security-Token when there is a token, then x-amz-content-sha256
   * when sign_body_header was set. */
  sigv4_header add[3];
  size_t nadd;
  char *add_storage;
} sigv4_result;

/* Signs `req` with `creds`. `cache` may be NULL (the key is derived every
 * time). On success fills `out`, which the caller frees with
 * sigv4_result_free(); on failure `out` needs no freeing. */
int sigv4_sign(const sigv4_request *req, const sigv4_credentials *creds,
               sigv4_key_cache *cache, sigv4_result *out);
void sigv4_result_free(sigv4_result *r);

/* Building blocks, exposed for tests and fuzzing. Each returns a malloc'd
 * NUL-terminated string or NULL on allocation failure. */
/* RFC 3986 encoding as SigV4 wants: unreserved A-Z a-z 0-9 - _ . ~ kept,
 * everything else %XX uppercase; '/' kept when keep_slash. */
char *sigv4_uri_encode(const char *s, size_t len, int keep_slash);
/* Canonical query string: split on '&', decode then re-encode each name and
 * value, sort by name then value. */
char *sigv4_canonical_query(const char *query);
/* Canonical URI: remove dot segments, collapse "//" per the vectors, encode. */
char *sigv4_canonical_path(const char *path);

/* Lowercase hex SHA-256 of data into out[65]. */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

#endif
