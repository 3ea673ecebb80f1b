/* AWS Signature Version 4, as pure functions (OpenSSL only).
 *
 * Nothing here reads the clock or the environment: time, credentials, region,
 * service and body are inputs, so every step can be tested byte for byte
 * against AWS's published vectors.
 *
 * Errors: 0 on success; -EINVAL for a malformed request (missing method,
 * path, region, service or credentials; no "host" header; a header name that
 * is empty or not a token; CR or LF in a header value; a caller-supplied
 * X-Amz-Date, or X-Amz-Security-Token / x-amz-content-sha256 that the signer
 * would add itself; a time before year 0 or after 9999); -ENOMEM when an
 * allocation fails; -EIO when libcrypto fails.
 *
 * Canonical form, as the AWS vectors and SDKs do it for every service but S3:
 * header names lowercased and sorted (stable), values trimmed with inner runs
 * of blanks collapsed to one space, repeated headers joined with ',' in the
 * order given; the path has dot segments and empty segments removed and is
 * then percent-encoded as given (so "%20" on the wire is signed as "%2520",
 * like botocore and aws-c-auth); the query is decoded and re-encoded and
 * sorted. No S3 mode (no path normalisation opt-out, no UNSIGNED-PAYLOAD).
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
  /* Only from sigv4_presign(): the query string to send (without '?'): the
   * request's own query, then X-Amz-Algorithm, -Credential, -Date,
   * -SignedHeaders, -Expires, -Security-Token and -Signature. NULL otherwise;
   * presigning leaves `authorization` NULL and `nadd` 0. */
  char *presigned_query;
} sigv4_result;

/* Signs `req` with `creds`. `cache` may be NULL (the key is derived every
 * time). On success fills `out`, which the caller frees with
 * sigv4_result_free(); on failure `out` needs no freeing. */
int sigv4_sign(const sigv4_request *req, const sigv4_credentials *creds,
               sigv4_key_cache *cache, sigv4_result *out);
void sigv4_result_free(sigv4_result *r);

/* Query-string ("presigned URL") signing: the credentials, date and signed
 * header list travel as X-Amz-* query parameters and nothing is added to the
 * headers. `expires` is X-Amz-Expires in seconds (1..604800). The session
 * token is in the signed query when req->sign_session_token, else appended
 * after the signature; sign_body_header is ignored. The payload hash is the
 * body's SHA-256, as aws-c-auth's vectors expect. Same errors as sigv4_sign. */
int sigv4_presign(const sigv4_request *req, const sigv4_credentials *creds,
                  sigv4_key_cache *cache, long expires, sigv4_result *out);

/* Wipes a cache (the derived key is secret material) and marks it empty. */
void sigv4_key_cache_clear(sigv4_key_cache *cache);

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
