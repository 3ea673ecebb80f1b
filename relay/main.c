/* relayd: wires the modules together and owns start-up and shutdown.
 *
 * Start-up: configuration (a bad value stops here with one line naming the
 * key), logging, the queue (opened, then verified: undecodable records are
 * quarantined before anything is served), the group committer, the
 * publishing side (credentials, SNS client, drainer), the webhook listener
 * and the admin listener.
 *
 * Shutdown on SIGTERM/SIGINT (and SIGHUP: relayd reads its configuration
 * only at start-up, and a hangup must not kill it mid-commit), in dependency
 * order:
 *   ingest stops accepting and reading; requests already submitted are
 *   committed and answered (the committer keeps running meanwhile)
 *   -> drainer (in-flight publishes finish or are abandoned; leases released,
 *      settle commits answered) -> SNS client -> committer (commits whatever
 *   is queued) -> admin -> queue closed -> exit 0.
 * A second signal during shutdown exits at once with status 1: every event
 * that was answered 2xx is already on disk, so this loses nothing acked.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "admin.h"
#include "commit.h"
#include "config.h"
#include "creds.h"
#include "drain.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "rq.h"
#include "sns.h"

#define SHUTDOWN_GRACE_MS 10000
#define CREDS_RETRY_MS 30000

typedef struct relayd {
  uv_loop_t loop;
  relay_config cfg;
  rq_env *env;
  committer *commit;
  ingest *ing;
  admin *adm;
  creds_provider *creds;
  sns_client *sns;
  drain *drn;
  uv_signal_t sigterm, sigint, sighup;
  uv_timer_t creds_timer;
  uv_work_t creds_work;
  int creds_work_busy;
  creds_provider *creds_pending;
  int creds_rc;
  char creds_err[512];
  char creds_last_err[512];
  int stopping;
  int failed; /* exit 1: start-up could not complete */
  char publish_err[300]; /* why start_publishing() failed, for stats */
} relayd;

/* ---- observers: metrics and the drainer's wake-up ----------------------- */

static void on_ingest_outcome(void *arg, int status, const char *reason) {
  relayd *r = arg;
  if (status == 200) {
    metrics_event_received();
    if (reason) metrics_event_rejected(reason); /* "duplicate", "too_large" */
  } else {
    metrics_event_rejected(reason ? reason : "other");
  }
  /* Readiness follows whether new events can be stored: a failed commit
   * (disk full, EIO, a map full before the watermark) makes /readyz 503
   * until an event is stored again or, without traffic, for a while (see
   * admin_set_commit_failing). Duplicates prove nothing either way. */
  if (r->adm) {
    if (status == 503 && reason && strcmp(reason, "commit_failed") == 0)
      admin_set_commit_failing(r->adm, 1);
    else if (status == 200 && (!reason || strcmp(reason, "too_large") == 0))
      admin_set_commit_failing(r->adm, 0);
  }
}

static void on_ingest_stored(void *arg) {
  relayd *r = arg;
  if (r->drn) drain_kick(r->drn);
}

static void on_commit_observed(void *arg, unsigned ops, double seconds, double sync_seconds,
                               int result) {
  (void)arg;
  metrics_commit(ops, seconds, sync_seconds, result);
}

/* ---- publishing side ----------------------------------------------------- */

static void fill_creds_options(const relayd *r, creds_options *co) {
  memset(co, 0, sizeof *co);
  co->role_arn = r->cfg.sns_role_arn;
  co->external_id = r->cfg.sns_external_id;
  co->region = r->cfg.sns_region;
}

/* Drainer start point: creates the SNS client and the drainer on top of the
 * credentials and starts publishing. */
static int start_publishing(relayd *r) {
  sns_client_options so = {
      .topic_arn = r->cfg.sns_topic_arn,
      .region = r->cfg.sns_region,
      .endpoint = r->cfg.sns_endpoint,
      .creds = r->creds,
      /* One connection per request the drainer may have in flight. */
      .max_connections = (int)r->cfg.publish_concurrency,
  };
  int rc = sns_client_new(&r->sns, &r->loop, &so);
  if (rc < 0) {
    /* -EINVAL: the client refused the endpoint, topic or region; name the
     * setting it took the endpoint from (config.c vets the RELAY_* ones,
     * the AWS_ENDPOINT_URL* variables are read by the client alone). */
    const char *key = "RELAY_SNS_TOPIC_ARN";
    const char *sns_url = getenv("AWS_ENDPOINT_URL_SNS"), *any_url = getenv("AWS_ENDPOINT_URL");
    if (r->cfg.sns_endpoint)
      key = "RELAY_SNS_ENDPOINT";
    else if (sns_url && *sns_url)
      key = "AWS_ENDPOINT_URL_SNS";
    else if (any_url && *any_url)
      key = "AWS_ENDPOINT_URL";
    if (rc != -EINVAL) key = "";
    snprintf(r->publish_err, sizeof r->publish_err, "cannot create the SNS client%s%s: %s",
             *key ? ", check " : "", key, strerror(-rc));
    rlog(LOG_ERROR, "cannot create the SNS client", "key", key, "error", strerror(-rc), NULL);
    return rc;
  }
  rc = drain_new(&r->drn, &r->loop, &r->cfg, r->env, r->commit, r->sns);
  if (rc < 0) {
    snprintf(r->publish_err, sizeof r->publish_err, "cannot create the drainer: %s",
             strerror(-rc));
    rlog(LOG_ERROR, "cannot create the drainer", "error", strerror(-rc), NULL);
    sns_client_close(r->sns, NULL, NULL);
    r->sns = NULL;
    return rc;
  }
  drain_set_creds(r->drn, r->creds);
  rc = drain_start(r->drn);
  if (rc < 0) {
    snprintf(r->publish_err, sizeof r->publish_err, "cannot start the drainer: %s",
             strerror(-rc));
    rlog(LOG_ERROR, "cannot start the drainer", "error", strerror(-rc), NULL);
    return rc;
  }
  if (r->adm) admin_set_drain(r->adm, r->drn);
  rlog(LOG_INFO, "publishing", "endpoint", sns_client_endpoint(r->sns), "#fifo",
       r->cfg.fifo ? "true" : "false", NULL);
  return 0;
}

static void begin_shutdown(relayd *r);

/* At start-up, the publishing side could not be built (an endpoint the SNS
 * client refuses, no memory): like a bad setting, this stops relayd with
 * status 1 before it takes traffic. */
static void publishing_failed(relayd *r) {
  rlog(LOG_ERROR, "cannot publish: stopping", NULL);
  r->failed = 1;
  if (!r->stopping) begin_shutdown(r);
}

/* No credentials at start-up: ingest runs anyway (events are stored and
 * wait), and the credential chain is retried off the loop thread, since it
 * may block on metadata endpoints. */
static void creds_work_cb(uv_work_t *w) {
  relayd *r = w->data;
  creds_options co;
  fill_creds_options(r, &co);
  r->creds_rc = creds_provider_new(&r->creds_pending, &co, r->creds_err, sizeof r->creds_err);
}

static void creds_timer_cb(uv_timer_t *t);

static void creds_after_cb(uv_work_t *w, int status) {
  relayd *r = w->data;
  r->creds_work_busy = 0;
  if (r->stopping || status < 0) {
    if (r->creds_pending) creds_provider_free(r->creds_pending);
    r->creds_pending = NULL;
    return;
  }
  if (r->creds_rc == 0) {
    r->creds = r->creds_pending;
    r->creds_pending = NULL;
    rlog(LOG_INFO, "AWS credentials found", NULL);
    if (start_publishing(r) == 0) return;
    /* Late, relayd stays up: stopping would take the webhook endpoint
     * down while Stream retries for 15 s at most, and lose those events.
     * Events are stored and wait, as without credentials; stats show the
     * drainer "blocked" with the reason until a restart with a fixed
     * setting. */
    rlog(LOG_ERROR, "cannot publish; events stay queued until relayd restarts with a fixed setting",
         "error", r->publish_err, NULL);
    if (r->adm) admin_set_blocked(r->adm, "InvalidConfiguration", r->publish_err);
    return;
  } else if (strcmp(r->creds_err, r->creds_last_err) != 0) {
    rlog(LOG_WARN, "still no AWS credentials; events stay queued", "error", r->creds_err, NULL);
    snprintf(r->creds_last_err, sizeof r->creds_last_err, "%s", r->creds_err);
  }
  if (r->adm && !r->drn) admin_set_blocked_reason(r->adm, r->creds_last_err);
  if (!r->creds) uv_timer_start(&r->creds_timer, creds_timer_cb, CREDS_RETRY_MS, 0);
}

static void creds_timer_cb(uv_timer_t *t) {
  relayd *r = t->data;
  if (r->stopping || r->creds_work_busy) return;
  r->creds_work.data = r;
  if (uv_queue_work(&r->loop, &r->creds_work, creds_work_cb, creds_after_cb) == 0)
    r->creds_work_busy = 1;
}

/* 0, or negative when publishing cannot start (the caller stops). */
static int setup_publishing(relayd *r) {
  creds_options co;
  fill_creds_options(r, &co);
  char err[512] = "";
  int rc = creds_provider_new(&r->creds, &co, err, sizeof err);
  if (rc < 0) {
    r->creds = NULL;
    rlog(LOG_ERROR, "no AWS credentials; ingest continues, publishing waits (retry every 30 s)",
         "error", err, NULL);
    snprintf(r->creds_last_err, sizeof r->creds_last_err, "%s", err);
    uv_timer_start(&r->creds_timer, creds_timer_cb, CREDS_RETRY_MS, 0);
    return 0;
  }
  return start_publishing(r);
}

/* ---- shutdown ------------------------------------------------------------ */

static void on_signal_closed(uv_handle_t *h) {
  (void)h;
}

static void close_signals(relayd *r) {
  uv_close((uv_handle_t *)&r->sigterm, on_signal_closed);
  uv_close((uv_handle_t *)&r->sigint, on_signal_closed);
  uv_close((uv_handle_t *)&r->sighup, on_signal_closed);
}

static void on_admin_closed(void *arg) {
  relayd *r = arg;
  r->adm = NULL;
  close_signals(r);
  uv_close((uv_handle_t *)&r->creds_timer, NULL);
}

static void on_committer_closed(void *arg) {
  relayd *r = arg;
  r->commit = NULL;
  if (r->adm) admin_close(r->adm, on_admin_closed, r);
  else on_admin_closed(r);
}

static void on_sns_closed(void *arg) {
  relayd *r = arg;
  r->sns = NULL;
  commit_stats cs;
  committer_get_stats(r->commit, &cs);
  char commits[32], failed[32], ops[32];
  snprintf(commits, sizeof commits, "%llu", (unsigned long long)cs.commits);
  snprintf(failed, sizeof failed, "%llu", (unsigned long long)cs.failed_commits);
  snprintf(ops, sizeof ops, "%llu", (unsigned long long)cs.ops);
  rlog(LOG_INFO, "closing the committer", "#commits", commits, "#failed_commits", failed,
       "#ops", ops, NULL);
  committer_close(r->commit, on_committer_closed, r);
}

static void on_drain_closed(void *arg) {
  relayd *r = arg;
  r->drn = NULL;
  /* The drainer is freed; the admin API answers until it closes last. */
  if (r->adm) {
    admin_set_blocked(r->adm, "ShuttingDown", "relayd is shutting down");
    admin_set_drain(r->adm, NULL);
  }
  if (r->sns) sns_client_close(r->sns, on_sns_closed, r);
  else on_sns_closed(r);
}

static void on_ingest_closed(void *arg) {
  relayd *r = arg;
  r->ing = NULL;
  /* Drainer stop point. */
  if (r->drn) drain_close(r->drn, on_drain_closed, r);
  else on_drain_closed(r);
}

static void begin_shutdown(relayd *r) {
  r->stopping = 1;
  uv_timer_stop(&r->creds_timer);
  /* Ingest stops accepting now, but finishing may take seconds (SNS
   * requests in flight): a load balancer must stop sending meanwhile. */
  if (r->adm) admin_set_stopping(r->adm);
  if (r->ing) {
    ingest_stats st;
    ingest_get_stats(r->ing, &st);
    char inflight[32];
    snprintf(inflight, sizeof inflight, "%llu", (unsigned long long)st.in_flight);
    rlog(LOG_INFO, "ingest stops accepting; answering requests in flight", "#in_flight", inflight,
         NULL);
    ingest_close(r->ing, SHUTDOWN_GRACE_MS, on_ingest_closed, r);
  } else {
    on_ingest_closed(r);
  }
}

static void on_signal(uv_signal_t *s, int signum) {
  relayd *r = s->data;
  if (r->stopping) {
    rlog(LOG_WARN, "second signal: exiting now", "signal", strsignal(signum), NULL);
    _exit(1);
  }
  rlog(LOG_INFO, "shutting down", "signal", strsignal(signum), NULL);
  begin_shutdown(r);
}

/* ---- start-up -------------------------------------------------------------- */

static int open_queue(relayd *r) {
  if (mkdir(r->cfg.data_dir, 0700) < 0 && errno != EEXIST) {
    int e = errno;
    rlog(LOG_ERROR, "cannot create the data directory", "key", "RELAY_DATA_DIR", "path",
         r->cfg.data_dir, "error", strerror(e), NULL);
    return -e;
  }
  rq_options ro = {.map_size = r->cfg.queue_max_bytes, .dedup_window_s = r->cfg.dedup_window_s};
  int rc = rq_env_open(&r->env, r->cfg.data_dir, &ro);
  if (rc < 0) {
    rlog(LOG_ERROR,
         rc == -EAGAIN ? "the queue is in use by another relayd" : "cannot open the queue",
         "key", "RELAY_DATA_DIR", "path", r->cfg.data_dir, "error", rq_strerror(rc), NULL);
    return rc;
  }
  rq_verify_report rep;
  memset(&rep, 0, sizeof rep);
  rc = rq_verify(r->env, &rep);
  if (rc < 0) {
    rlog(LOG_ERROR, "queue verification failed", "error", rq_strerror(rc), NULL);
    return rc;
  }
  rq_stats st;
  memset(&st, 0, sizeof st);
  rq_stat(r->env, &st);
  char records[32], corrupt[32], order[32], ready[32], dlq[32];
  snprintf(records, sizeof records, "%llu", (unsigned long long)rep.records);
  snprintf(corrupt, sizeof corrupt, "%llu", (unsigned long long)rep.corrupt);
  snprintf(order, sizeof order, "%llu", (unsigned long long)rep.order_errors);
  snprintf(ready, sizeof ready, "%llu", (unsigned long long)st.ready);
  snprintf(dlq, sizeof dlq, "%llu", (unsigned long long)st.dlq);
  rlog(rep.corrupt || rep.order_errors ? LOG_WARN : LOG_INFO, "queue opened", "path",
       r->cfg.data_dir, "#records", records, "#quarantined_corrupt", corrupt, "#order_errors",
       order, "#ready", ready, "#dlq", dlq, NULL);
  return 0;
}

/* Started with stdin, stdout or stderr closed (`relayd <&- >&- 2>&-`, a
 * supervisor that closes them), the first descriptors opened would take
 * those numbers: libuv's signal pipe became fd 2, log lines filled it and
 * the next one blocked the loop for good. /dev/null holds the places, so
 * log lines go nowhere instead. 0, or -errno when they cannot be held. */
static int hold_std_fds(void) {
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    int nfd = open("/dev/null", O_RDWR);
    if (nfd < 0) return -errno;
    if (nfd != fd) { /* lowest free number: only if another thread raced */
      close(nfd);
      return -EBADF;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  static relayd r;
  char err[512] = "";
  if (hold_std_fds() < 0) return 1; /* nowhere to say why: stderr is what is missing */
  signal(SIGPIPE, SIG_IGN);
  int rc = cfg_load(&r.cfg, argc, argv, NULL, NULL, err, sizeof err);
  if (rc == 1) return 0;
  if (rc < 0) {
    fprintf(stderr, "relayd: %s\n", err);
    return 2;
  }
  if (log_configure(r.cfg.log_level, r.cfg.log_format) < 0) {
    fprintf(stderr, "relayd: RELAY_LOG_LEVEL/RELAY_LOG_FORMAT: unknown value\n");
    cfg_free(&r.cfg);
    return 2;
  }
  if (admin_check_config(&r.cfg, err, sizeof err) < 0) {
    fprintf(stderr, "relayd: %s\n", err);
    cfg_free(&r.cfg);
    return 2;
  }
  rlog(LOG_INFO, "relayd starting", "version", RELAY_VERSION, "listen", r.cfg.listen,
       "admin_listen", r.cfg.admin_listen, "data_dir", r.cfg.data_dir, "topic",
       r.cfg.sns_topic_arn, NULL);
  if (r.cfg.nsecrets == 0)
    rlog(LOG_WARN, "RELAY_INSECURE_NO_SIGNATURE=1: webhook signatures are NOT verified", NULL);

  int exit_code = 1;
  uv_loop_init(&r.loop);
  uv_timer_init(&r.loop, &r.creds_timer);
  r.creds_timer.data = &r;
  uv_signal_init(&r.loop, &r.sigterm);
  uv_signal_init(&r.loop, &r.sigint);
  uv_signal_init(&r.loop, &r.sighup);
  r.sigterm.data = r.sigint.data = r.sighup.data = &r;
  if (open_queue(&r) < 0) {
    uv_close((uv_handle_t *)&r.creds_timer, NULL);
    close_signals(&r);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    goto out;
  }
  rc = committer_new(&r.commit, &r.loop, r.env, 0);
  if (rc < 0) {
    rlog(LOG_ERROR, "cannot start the committer", "error", strerror(-rc), NULL);
    uv_close((uv_handle_t *)&r.creds_timer, NULL);
    close_signals(&r);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    goto out;
  }
  committer_set_observer(r.commit, on_commit_observed, &r);

  ingest_options io = {.cfg = &r.cfg, .env = r.env, .commit = r.commit,
                       .on_stored = on_ingest_stored, .on_outcome = on_ingest_outcome,
                       .arg = &r};
  rc = ingest_new(&r.ing, &r.loop, &io);
  if (rc < 0) {
    r.ing = NULL;
    r.failed = 1;
    begin_shutdown(&r); /* unwinds what exists; the loop finishes it */
    uv_run(&r.loop, UV_RUN_DEFAULT);
    goto out;
  }

  /* Drainer start point. Credentials are looked up once here (blocking but
   * bounded by the chain's timeouts) while the webhook port is already
   * bound; connections wait in the backlog meanwhile. */
  if (setup_publishing(&r) < 0) {
    publishing_failed(&r);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    goto out;
  }

  admin_options ao = {.listen = r.cfg.admin_listen, .token = r.cfg.admin_token,
                      .env = r.env, .drain = r.drn};
  rc = admin_new(&r.adm, &r.loop, &ao);
  if (rc == 0 && !r.drn) admin_set_blocked_reason(r.adm, r.creds_last_err);
  if (rc < 0) {
    r.adm = NULL;
    r.failed = 1;
    rlog(LOG_ERROR, "cannot start the admin listener", "key", "RELAY_ADMIN_LISTEN", "addr",
         r.cfg.admin_listen, "error", uv_strerror(rc), NULL);
    /* Without health endpoints an orchestrator cannot see us: stop. */
    begin_shutdown(&r);
  } else {
    uv_signal_start(&r.sigterm, on_signal, SIGTERM);
    uv_signal_start(&r.sigint, on_signal, SIGINT);
    uv_signal_start(&r.sighup, on_signal, SIGHUP);
    rlog(LOG_INFO, "relayd ready", NULL);
  }

  uv_run(&r.loop, UV_RUN_DEFAULT);
  exit_code = r.failed ? 1 : 0;

out:
  rlog(exit_code ? LOG_ERROR : LOG_INFO, "relayd stopped", "#exit", exit_code ? "1" : "0", NULL);
  if (r.env) rq_env_close(r.env);
  if (r.creds) creds_provider_free(r.creds);
  if (uv_loop_close(&r.loop) != 0) rlog(LOG_WARN, "loop closed with handles still open", NULL);
  cfg_free(&r.cfg);
  return exit_code;
}
