/* metrics.c: counters, histograms, rates and a Prometheus exposition that
 * promtool accepts. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "testlib.h"

static char *render(const metrics_scrape *s) {
  char *out = NULL;
  size_t len = 0;
  CHECK_INT(metrics_render(s, &out, &len), ==, 0);
  CHECK(out != NULL);
  CHECK_INT(strlen(out), ==, len);
  return out;
}

/* The value of the sample line that starts with `series ` exactly. */
static double sample(const char *text, const char *series) {
  size_t n = strlen(series);
  const char *p = text;
  while ((p = strstr(p, series)) != NULL) {
    if ((p == text || p[-1] == '\n') && p[n] == ' ') return strtod(p + n + 1, NULL);
    p += n;
  }
  tl_fail(__FILE__, __LINE__, "series %s not found", series);
}

static metrics_scrape full_scrape(void) {
  metrics_scrape s;
  memset(&s, 0, sizeof s);
  s.have_queue = 1;
  s.queue_depth = 12;
  s.queue_bytes = 34567;
  s.inflight = 3;
  s.dlq_depth = 2;
  s.dlq_bytes = 999;
  s.oldest_age_s = 4.5;
  s.appended_total = 100;
  s.acked_total = 86;
  s.dead_lettered_total = 2;
  s.map_used = 1 << 20;
  s.map_size = 1ull << 32;
  s.ready = 1;
  s.drainer_state = "backoff";
  s.concurrency = 4;
  s.concurrency_max = 16;
  s.requests_in_flight = 2;
  return s;
}

TEST(counters_and_labels) {
  metrics_reset();
  for (int i = 0; i < 5; i++) metrics_event_received();
  metrics_event_rejected("bad_signature");
  metrics_event_rejected("bad_signature");
  metrics_event_rejected("overloaded");
  metrics_event_rejected("weird reason\"\n{}"); /* sanitised, never breaks the format */
  char *t = render(NULL);
  CHECK_INT(sample(t, "relay_events_received_total"), ==, 5);
  CHECK_INT(sample(t, "relay_events_rejected_total{reason=\"bad_signature\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_events_rejected_total{reason=\"overloaded\"}"), ==, 1);
  CHECK_INT(sample(t, "relay_events_rejected_total{reason=\"too_large\"}"), ==, 0);
  CHECK_INT(sample(t, "relay_events_rejected_total{reason=\"weird_reason____\"}"), ==, 1);
  CHECK(strstr(t, "# TYPE relay_events_rejected_total counter\n") != NULL);
  /* No queue or drainer values given: those series are left out. */
  CHECK(strstr(t, "relay_queue_depth") == NULL);
  CHECK(strstr(t, "relay_drainer_state") == NULL);
  metrics_totals tot;
  metrics_get_totals(&tot);
  CHECK_INT(tot.received, ==, 5);
  CHECK_INT(tot.rejected, ==, 4);
  free(t);
}

TEST(label_set_is_bounded) {
  metrics_reset();
  char name[32];
  for (int i = 0; i < 200; i++) {
    snprintf(name, sizeof name, "r%d", i);
    metrics_event_rejected(name);
  }
  char *t = render(NULL);
  int lines = 0;
  for (const char *p = t; (p = strstr(p, "\nrelay_events_rejected_total{")) != NULL; p++) lines++;
  CHECK_INT(lines, <=, 32);
  /* 8 known reasons pre-registered, 23 new ones get a slot, the rest is "other". */
  CHECK_INT(sample(t, "relay_events_rejected_total{reason=\"other\"}"), ==, 200 - 23);
  free(t);
}

TEST(histograms_are_cumulative) {
  metrics_reset();
  metrics_commit(1, 0.0004, 0.0003, 0); /* <= 0.0005 */
  metrics_commit(7, 0.003, 0.002, 0);    /* <= 0.005; fsync <= 0.0025 */
  metrics_commit(300, 7.0, 0, -5);       /* +Inf, failed: no fsync sample */
  metrics_publish("ok", 10, 0.02);
  metrics_publish("ok", 3, 0.2);
  metrics_publish("throttled", 10, 0.01);
  char *t = render(NULL);
  CHECK_INT(sample(t, "relay_commit_duration_seconds_bucket{le=\"0.0005\"}"), ==, 1);
  CHECK_INT(sample(t, "relay_commit_duration_seconds_bucket{le=\"0.005\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_commit_duration_seconds_bucket{le=\"2.5\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_commit_duration_seconds_bucket{le=\"+Inf\"}"), ==, 3);
  CHECK_INT(sample(t, "relay_commit_duration_seconds_count"), ==, 3);
  CHECK_INT(sample(t, "relay_commit_fsync_duration_seconds_bucket{le=\"0.0005\"}"), ==, 1);
  CHECK_INT(sample(t, "relay_commit_fsync_duration_seconds_bucket{le=\"0.001\"}"), ==, 1);
  CHECK_INT(sample(t, "relay_commit_fsync_duration_seconds_bucket{le=\"0.0025\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_commit_fsync_duration_seconds_bucket{le=\"+Inf\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_commit_fsync_duration_seconds_count"), ==, 2);
  double sum = sample(t, "relay_commit_duration_seconds_sum");
  CHECK(sum > 7.0033 && sum < 7.0035);
  CHECK_INT(sample(t, "relay_commit_batch_size_bucket{le=\"1\"}"), ==, 1);
  CHECK_INT(sample(t, "relay_commit_batch_size_bucket{le=\"8\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_commit_batch_size_bucket{le=\"256\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_commit_batch_size_bucket{le=\"512\"}"), ==, 3);
  CHECK_INT(sample(t, "relay_commits_total{result=\"ok\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_commits_total{result=\"error\"}"), ==, 1);
  CHECK_INT(sample(t, "relay_commit_ops_total"), ==, 308);
  CHECK_INT(sample(t, "relay_sns_publish_total{result=\"ok\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_sns_publish_total{result=\"throttled\"}"), ==, 1);
  CHECK_INT(sample(t, "relay_sns_publish_total{result=\"config\"}"), ==, 0);
  CHECK_INT(sample(t, "relay_sns_messages_total{result=\"ok\"}"), ==, 13);
  CHECK_INT(sample(t, "relay_sns_publish_duration_seconds_bucket{le=\"0.01\"}"), ==, 1);
  CHECK_INT(sample(t, "relay_sns_publish_duration_seconds_bucket{le=\"0.025\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_sns_publish_duration_seconds_bucket{le=\"+Inf\"}"), ==, 3);
  /* `le` in its canonical (shortest) form, as rules and dashboards match it
   * by string: 0.1, never 0.10000000000000001. */
  CHECK_INT(sample(t, "relay_commit_duration_seconds_bucket{le=\"0.1\"}"), ==, 2);
  CHECK_INT(sample(t, "relay_sns_publish_duration_seconds_bucket{le=\"0.05\"}"), ==, 2);
  for (const char *p = t; (p = strstr(p, "le=\"")) != NULL; p += 4)
    CHECK(strcspn(p + 4, "\"") <= 6);
  metrics_totals tot;
  metrics_get_totals(&tot);
  CHECK_INT(tot.published_ok_messages, ==, 13);
  CHECK_INT(tot.publish_requests, ==, 3);
  CHECK_INT(tot.commits, ==, 3);
  CHECK_INT(tot.failed_commits, ==, 1);
  free(t);
}

TEST(scrape_gauges) {
  metrics_reset();
  metrics_scrape s = full_scrape();
  char *t = render(&s);
  CHECK_INT(sample(t, "relay_queue_depth"), ==, 12);
  CHECK_INT(sample(t, "relay_queue_bytes"), ==, 34567);
  CHECK(sample(t, "relay_queue_oldest_age_seconds") == 4.5);
  CHECK_INT(sample(t, "relay_dlq_depth"), ==, 2);
  CHECK_INT(sample(t, "relay_queue_map_size_bytes"), ==, 1ll << 32);
  CHECK_INT(sample(t, "relay_queue_acked_total"), ==, 86);
  CHECK_INT(sample(t, "relay_ready"), ==, 1);
  CHECK_INT(sample(t, "relay_drainer_state{state=\"backoff\"}"), ==, 1);
  CHECK_INT(sample(t, "relay_drainer_state{state=\"running\"}"), ==, 0);
  CHECK_INT(sample(t, "relay_drainer_state{state=\"paused\"}"), ==, 0);
  CHECK_INT(sample(t, "relay_drainer_state{state=\"blocked\"}"), ==, 0);
  CHECK_INT(sample(t, "relay_drainer_concurrency"), ==, 4);
  CHECK_INT(sample(t, "relay_drainer_concurrency_max"), ==, 16);
  CHECK_INT(sample(t, "relay_sns_requests_in_flight"), ==, 2);
  free(t);
}

/* promtool (Debian package "prometheus", installed by tools/deps.sh) is the
 * independent judge of the format and of naming conventions. */
TEST(promtool_accepts_exposition) {
  metrics_reset();
  metrics_event_received();
  metrics_event_rejected("duplicate");
  metrics_commit(4, 0.002, 0.0015, 0);
  metrics_publish("ok", 10, 0.05);
  metrics_publish("permanent", 1, 0.05);
  metrics_scrape s = full_scrape();
  char *t = render(&s);
  char path[4096], cmd[8400];
  snprintf(path, sizeof path, "%s/metrics.txt", tl_tmpdir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  CHECK_INT(fwrite(t, 1, strlen(t), f), ==, strlen(t));
  CHECK_INT(fclose(f), ==, 0);
  snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' > '%s.out' 2>&1", path, path);
  int rc = system(cmd);
  snprintf(cmd, sizeof cmd, "%s.out", path);
  char *msg = tl_read_file(cmd, NULL);
  if (rc != 0) {
    fprintf(stderr, "promtool (rc %d) said:\n%s\n---\n%s", rc, msg ? msg : "(nothing)", t);
    if (rc == -1 || (WIFEXITED(rc) && WEXITSTATUS(rc) == 127))
      fprintf(stderr, "promtool missing: run tools/deps.sh (package prometheus)\n");
  }
  CHECK_INT(rc, ==, 0);
  free(msg);
  free(t);
}

TEST(rates_need_completed_seconds) {
  metrics_reset();
  metrics_publish("ok", 50, 0.01);
  metrics_event_received();
  /* Only completed seconds count: a fresh burst is not yet a rate. */
  CHECK(metrics_publish_rate(10) <= 5.0);
  CHECK(metrics_publish_rate(10) >= 0.0);
  CHECK(metrics_receive_rate(0) >= 0.0);
  metrics_publish("retry", 50, 0.01); /* not accepted: not in the rate */
  struct timespec ts = {1, 100000000};
  nanosleep(&ts, NULL);
  double r = metrics_publish_rate(10);
  CHECK(r == 5.0); /* 50 messages over a 10 s window */
  CHECK(metrics_publish_rate(1) == 50.0 || metrics_publish_rate(2) == 25.0);
  CHECK(metrics_receive_rate(10) == 0.1);
}
