/* Credentials against a wall clock that
 * jumps ahead of the monotonic one.
 *
 * Temporary credentials expire at a wall-clock time, but the refresh was
 * scheduled on CLOCK_MONOTONIC alone. After the wall clock steps forward
 * (NTP fixing a clock that was behind, a VM snapshot restored, a host
 * resumed from hibernation: CLOCK_MONOTONIC does not count the time spent
 * suspended), the credentials are expired for AWS and for creds_get(), yet
 * the refresh stays due at its old monotonic time, up to the credentials'
 * whole lifetime later, and publishing stops meanwhile.
 *
 * The step is simulated by interposing time(): creds.c is linked into this
 * binary, so its time() calls resolve to the definition below, which adds
 * `wall_offset` to the real clock. CLOCK_MONOTONIC is left alone, exactly
 * as in a real step.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "creds.h"
#include "creds_httpd.h"
#include "testlib.h"

static atomic_long wall_offset;

time_t time(time_t *out) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  time_t t = ts.tv_sec + (time_t)atomic_load(&wall_offset);
  if (out) *out = t;
  return t;
}

static void iso8601(time_t t, char *out, size_t cap) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A container credentials endpoint: every answer is a new key that lives
 * one hour from the (simulated) wall-clock now. */
static atomic_int calls;

static void container(const chd_request *rq, chd_response *rs, void *arg) {
  (void)rq, (void)arg;
  int n = atomic_fetch_add(&calls, 1) + 1;
  char exp[64];
  iso8601(time(NULL) + 3600, exp, sizeof exp);
  snprintf(rs->content_type, sizeof rs->content_type, "application/json");
  chd_reply(rs, 200,
            "{\"AccessKeyId\":\"ASIASTEP%d\",\"SecretAccessKey\":\"step-secret-%d\","
            "\"Token\":\"step-token-%d\",\"Expiration\":\"%s\"}",
            n, n, n, exp);
}

typedef struct {
  char url[256];
} fake_env;

static const char *fake_getenv(const char *name, void *arg) {
  fake_env *e = arg;
  if (strcmp(name, "AWS_CONTAINER_CREDENTIALS_FULL_URI") == 0) return e->url;
  if (strcmp(name, "AWS_EC2_METADATA_DISABLED") == 0) return "true";
  return NULL;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static creds_provider *start(chd_server **srv, fake_env *e) {
  atomic_store(&calls, 0);
  atomic_store(&wall_offset, 0);
  *srv = chd_start(container, NULL);
  CHECK(*srv != NULL);
  snprintf(e->url, sizeof e->url, "%s/creds", chd_url(*srv));
  creds_options o;
  memset(&o, 0, sizeof o);
  o.getenv_fn = fake_getenv;
  o.getenv_arg = e;
  o.timeout_ms = 2000;
  o.retry_base_ms = 100;
  o.retry_max_ms = 400;
  creds_provider *p = NULL;
  char err[512] = "";
  int rc = creds_provider_new(&p, &o, err, sizeof err);
  if (rc != 0) fprintf(stderr, "creds_provider_new: %d %s\n", rc, err);
  CHECK_INT(rc, ==, 0);
  aws_creds c;
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_STR(c.access_key_id, "ASIASTEP1");
  CHECK_INT(atomic_load(&calls), ==, 1);
  return p;
}

/* Polls creds_get() (as the drainer does on every publish) for up to 3 s
 * until it hands out `want`; returns how many calls failed meanwhile, or
 * -1 when `want` never came. */
static int wait_for_key(creds_provider *p, const char *want) {
  long long t0 = now_ms();
  int failed = 0;
  while (now_ms() - t0 < 3000) {
    aws_creds c;
    char err[256] = "";
    if (creds_get(p, &c, err, sizeof err) != 0)
      failed++;
    else if (strcmp(c.access_key_id, want) == 0)
      return failed;
    usleep(20 * 1000);
  }
  return -1;
}

/* The wall clock jumps past the expiry (a host resumed after two hours):
 * the expired credentials are replaced at once, not an hour later. */
TEST(wall_clock_step_past_expiry_refreshes) {
  chd_server *srv;
  fake_env e;
  creds_provider *p = start(&srv, &e);
  atomic_store(&wall_offset, 2 * 3600);
  aws_creds c;
  char err[256] = "";
  CHECK_INT(creds_get(p, &c, err, sizeof err), ==, -EAGAIN); /* expired: never handed out */
  int failed = wait_for_key(p, "ASIASTEP2");
  CHECK_INT(failed, >=, 0);
  CHECK_INT(atomic_load(&calls), ==, 2);
  CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
  CHECK_INT(c.expiration, >, time(NULL));
  creds_provider_free(p);
  chd_stop(srv);
}

/* The wall clock jumps into the last minutes of the lifetime: the
 * credentials are refreshed before they expire, with no gap at all. */
TEST(wall_clock_step_into_refresh_margin_refreshes_before_expiry) {
  chd_server *srv;
  fake_env e;
  creds_provider *p = start(&srv, &e);
  atomic_store(&wall_offset, 3600 - 120);
  int failed = wait_for_key(p, "ASIASTEP2");
  CHECK_INT(failed, ==, 0);
  CHECK_INT(atomic_load(&calls), ==, 2);
  /* Refreshed once, not once per creds_get(). */
  usleep(500 * 1000);
  CHECK_INT(atomic_load(&calls), ==, 2);
  creds_provider_free(p);
  chd_stop(srv);
}

/* Without a step nothing changes: no early fetches. */
TEST(no_step_no_extra_refresh) {
  chd_server *srv;
  fake_env e;
  creds_provider *p = start(&srv, &e);
  for (int i = 0; i < 50; i++) {
    aws_creds c;
    CHECK_INT(creds_get(p, &c, NULL, 0), ==, 0);
    CHECK_STR(c.access_key_id, "ASIASTEP1");
    usleep(10 * 1000);
  }
  CHECK_INT(atomic_load(&calls), ==, 1);
  creds_provider_free(p);
  chd_stop(srv);
}
