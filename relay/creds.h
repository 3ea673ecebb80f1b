/* AWS credentials: the standard provider chain, refreshed in the background.
 *
 * Order (the first source that is configured wins; its errors are reported,
 * not skipped, so a broken IRSA setup does not silently fall back to IMDS):
 *   1. RELAY_AWS_* config / AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY
 *      (+ AWS_SESSION_TOKEN)
 *   2. web identity: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN
 *      (+ AWS_ROLE_SESSION_NAME) through STS AssumeRoleWithWebIdentity
 *   3. shared files: AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials),
 *      AWS_CONFIG_FILE (~/.aws/config), AWS_PROFILE (default "default"),
 *      role_arn + source_profile through STS AssumeRole
 *   4. container endpoint: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
 *      (http://169.254.170.2) or AWS_CONTAINER_CREDENTIALS_FULL_URI, with
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN or ..._TOKEN_FILE
 *   5. IMDSv2 (off with AWS_EC2_METADATA_DISABLED=true), endpoint override
 *      AWS_EC2_METADATA_SERVICE_ENDPOINT
 * then, when role_arn is configured (RELAY_SNS_ROLE_ARN), STS AssumeRole with
 * external_id on top. STS endpoint override: AWS_ENDPOINT_URL_STS.
 *
 * Temporary credentials are refreshed on a background thread well before
 * they expire (5 minutes, or half their lifetime if shorter), so
 * creds_get() never blocks on the network. Secrets never appear in logs or
 * error strings.
 */
#ifndef RELAY_CREDS_H
#define RELAY_CREDS_H

#include <stddef.h>
#include <time.h>

typedef struct {
  char access_key_id[128];
  char secret_access_key[128];
  char session_token[4096]; /* "" when none */
  time_t expiration;        /* 0 = does not expire */
  char source[32];          /* "env", "web_identity", "profile", "container", "imds", "assume_role" */
} aws_creds;

typedef struct creds_provider creds_provider;

typedef struct {
  /* Explicit keys from relay config; NULL to use the environment. */
  const char *access_key_id;
  const char *secret_access_key;
  const char *session_token;
  const char *role_arn;      /* RELAY_SNS_ROLE_ARN, or NULL */
  const char *external_id;   /* RELAY_SNS_EXTERNAL_ID, or NULL */
  const char *region;        /* for the regional STS endpoint */
  /* Environment lookup; NULL means getenv. Tests pass their own. */
  const char *(*getenv_fn)(const char *name, void *arg);
  void *getenv_arg;
  /* Per-request timeouts for the metadata/STS calls, milliseconds
   * (0 = defaults: 1000 for IMDS, 5000 for STS and container). */
  long timeout_ms;
  /* Background refresh retries after a failure (an error, or credentials
   * that are already expired): about retry_base_ms, doubling per failure in
   * a row up to retry_max_ms, +-20 % jitter, back to the base after a
   * success. retry_base_ms is also the shortest gap between fetches that
   * creds_invalidate() can cause. 0 = 1000 and 60000; tests shrink them. */
  long retry_base_ms;
  long retry_max_ms;
} creds_options;

/* Creates a provider, resolves credentials once (blocking, bounded by the
 * timeouts) and starts the refresh thread.
 * Returns 0; -ENOENT when no source in the chain is configured or gives
 * credentials (errbuf explains which sources were tried); -EACCES when a
 * source answered with an error (errbuf has the AWS code); -ETIMEDOUT,
 * -ECONNREFUSED for endpoints that did not answer; -EPROTO for garbage.
 * Credentials that are already expired when they arrive (a broken metadata
 * endpoint, a wrong system clock) are -EACCES too, never handed out.
 * Also: -EINVAL for an incomplete or contradictory setup (a key id without
 * its secret, a token file without AWS_ROLE_ARN, role_arn without a source,
 * a cyclic source_profile chain, plain-http FULL_URI off the host, a bad
 * region name); -ENOTSUP for profiles that use credential_process or SSO;
 * -EHOSTUNREACH, -EIO for other transport failures; -errno for unreadable
 * files.
 * On error *out is NULL and errbuf (may be NULL) holds one line.
 *
 * The environment (through getenv_fn) is read once, here; token files and
 * the shared files are re-read on every refresh, so rotated tokens work.
 * Profiles may use aws_access_key_id/aws_secret_access_key/aws_session_token
 * (or its legacy name aws_security_token, read when aws_session_token is
 * absent),
 * role_arn with source_profile or credential_source (Environment,
 * EcsContainer, Ec2InstanceMetadata) or web_identity_token_file, and
 * external_id, role_session_name, duration_seconds. */
int creds_provider_new(creds_provider **out, const creds_options *opts,
                       char *errbuf, size_t errlen);
/* Copies the current credentials (thread-safe, never blocks on I/O).
 * Returns 0, or -EAGAIN when the last refresh failed and the credentials
 * have expired (errbuf says why). */
int creds_get(creds_provider *p, aws_creds *out, char *errbuf, size_t errlen);
/* Asks for a refresh soon (after an auth error from AWS). Non-blocking.
 * While refreshes are failing it does not cut the backoff short. */
void creds_invalidate(creds_provider *p);
void creds_provider_free(creds_provider *p);

#endif
