/* Crash safety of the queue: a child appends batches and is SIGKILLed at a
 * random moment, many times over. After each kill the parent reopens the
 * queue and checks: every batch whose commit had returned (the child says so
 * on a pipe, after rq_txn_commit returned) is there completely and decodes
 * byte-identical; no batch is there partially; verify finds nothing wrong.
 *
 * RQ_CRASH_SEED=<n> replays a run; RQ_CRASH_ROUNDS overrides the count. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rq.h"
#include "testlib.h"

#define MAX_BATCH 48
#define MAX_BATCHES 100000

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/* Records of batch b: how many, and the exact bytes of record i. */
static int batch_size(uint64_t b) {
  return 1 + (int)(mix(b * 2 + 1) % MAX_BATCH);
}

static size_t make_body(uint64_t b, int i, uint8_t *out, size_t cap) {
  uint64_t h = mix(b * 1000003 + (uint64_t)i);
  /* Mostly small, sometimes large enough for LMDB overflow pages. */
  size_t len = h % 16 == 0 ? 5000 + h % 30000 : 40 + h % 1500;
  if (len > cap) len = cap;
  int n = snprintf((char *)out, cap, "{\"batch\":%llu,\"i\":%d,\"of\":%d}", (unsigned long long)b,
                   i, batch_size(b));
  for (size_t k = (size_t)n; k < len; k++) out[k] = (uint8_t)mix(h + k);
  return len > (size_t)n ? len : (size_t)n;
}

static void child(int wfd, uint64_t first_batch) {
  rq_env *env;
  if (rq_env_open(&env, tl_tmpdir, NULL)) _exit(3);
  uint64_t opened = 0; /* batch ids start at 1: 0 means "queue open" */
  if (write(wfd, &opened, sizeof opened) != (ssize_t)sizeof opened) _exit(7);
  static uint8_t body[40000];
  for (uint64_t b = first_batch;; b++) {
    rq_txn *t;
    if (rq_txn_begin(env, &t)) _exit(4);
    int n = batch_size(b);
    for (int i = 0; i < n; i++) {
      char id[48], type[32];
      snprintf(id, sizeof id, "b%llu-%d", (unsigned long long)b, i);
      snprintf(type, sizeof type, "t%d", i % 3);
      rq_record r = {0};
      r.received_ms = 1700000000000LL + (int64_t)b;
      r.body = body;
      r.body_len = make_body(b, i, body, sizeof body);
      r.webhook_id = id;
      r.type = type;
      if (rq_txn_append(t, &r, NULL)) _exit(5);
    }
    if (rq_txn_commit(t)) _exit(6);
    if (write(wfd, &b, sizeof b) != (ssize_t)sizeof b) _exit(7);
  }
}

static int parse_batch(const rq_record *r, uint64_t *b, int *i, int *of) {
  unsigned long long bb;
  if (sscanf((const char *)r->body, "{\"batch\":%llu,\"i\":%d,\"of\":%d}", &bb, i, of) != 3)
    return -1;
  *b = bb;
  return 0;
}

TEST(sigkill_during_appends) {
  unsigned seed = (unsigned)time(NULL);
  const char *s = getenv("RQ_CRASH_SEED");
  if (s) seed = (unsigned)strtoul(s, NULL, 10);
  int rounds = 60;
  const char *rs = getenv("RQ_CRASH_ROUNDS");
  if (rs) rounds = (int)strtol(rs, NULL, 10);
  fprintf(stderr, "seed %u, %d rounds\n", seed, rounds);
  srand(seed);

  static uint8_t reported[MAX_BATCHES], present_count[MAX_BATCHES];
  static uint8_t expect[40000];
  uint64_t next_batch = 1;
  long total_reported = 0, total_seen = 0, unreported_complete = 0;
  for (int round = 0; round < rounds; round++) {
    int p[2];
    CHECK_INT(pipe(p), ==, 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      close(p[0]);
      child(p[1], next_batch);
    }
    close(p[1]);
    /* Mostly while batches are being committed; sometimes during open. */
    uint64_t b;
    bool early = rand() % 8 == 0;
    memset(reported, 0, sizeof reported);
    if (early) {
      usleep((useconds_t)(rand() % 3000));
    } else {
      /* Let a random number of batches commit (whatever the disk speed),
       * then kill at a random moment of the ones after. */
      CHECK_INT(read(p[0], &b, sizeof b), ==, sizeof b);
      CHECK_INT(b, ==, 0);
      for (int k = rand() % 40; k > 0; k--) {
        CHECK_INT(read(p[0], &b, sizeof b), ==, sizeof b);
        CHECK(b >= next_batch && b < MAX_BATCHES);
        reported[b] = 1;
        total_reported++;
      }
      usleep((useconds_t)(rand() % 4000));
    }
    CHECK_INT(kill(pid, SIGKILL), ==, 0);
    int status;
    CHECK_INT(waitpid(pid, &status, 0), ==, pid);
    if (WIFEXITED(status)) tl_fail(__FILE__, __LINE__, "child failed with %d", WEXITSTATUS(status));
    ssize_t got;
    while ((got = read(p[0], &b, sizeof b)) == (ssize_t)sizeof b) {
      if (b == 0) continue;
      CHECK(b >= next_batch && b < MAX_BATCHES);
      reported[b] = 1;
      total_reported++;
    }
    close(p[0]);

    rq_env *env;
    int rc = rq_env_open(&env, tl_tmpdir, NULL);
    if (rc) tl_fail(__FILE__, __LINE__, "reopen after kill: %s", rq_strerror(rc));
    rq_verify_report rep;
    CHECK_INT(rq_verify(env, &rep), ==, 0);
    CHECK_INT(rep.corrupt, ==, 0);
    CHECK_INT(rep.order_errors, ==, 0);
    rq_record *out;
    int n = rq_lease(env, 1LL << 62, 1000000, 0, &out);
    CHECK(n >= 0);
    memset(present_count, 0, sizeof present_count);
    uint64_t max_b = next_batch - 1;
    for (int k = 0; k < n; k++) {
      uint64_t bb;
      int i, of;
      if (parse_batch(&out[k], &bb, &i, &of))
        tl_fail(__FILE__, __LINE__, "record %llu does not parse", (unsigned long long)out[k].seq);
      CHECK(bb >= next_batch && bb < MAX_BATCHES);
      CHECK_INT(of, ==, batch_size(bb));
      size_t len = make_body(bb, i, expect, sizeof expect);
      CHECK_MEM(out[k].body, out[k].body_len, expect, len);
      char id[48];
      snprintf(id, sizeof id, "b%llu-%d", (unsigned long long)bb, i);
      CHECK_STR(out[k].webhook_id, id);
      CHECK_INT(out[k].received_ms, ==, 1700000000000LL + (int64_t)bb);
      present_count[bb]++;
      if (bb > max_b) max_b = bb;
    }
    for (uint64_t bb = next_batch; bb <= max_b || (bb < MAX_BATCHES && reported[bb]); bb++) {
      if (reported[bb] && present_count[bb] != batch_size(bb))
        tl_fail(__FILE__, __LINE__, "round %d: reported batch %llu has %d of %d records", round,
                (unsigned long long)bb, present_count[bb], batch_size(bb));
      if (present_count[bb] && present_count[bb] != batch_size(bb))
        tl_fail(__FILE__, __LINE__, "round %d: partial batch %llu (%d of %d)", round,
                (unsigned long long)bb, present_count[bb], batch_size(bb));
      if (present_count[bb] && !reported[bb]) unreported_complete++;
    }
    /* Clear the queue so each round starts small; acks are durable too. */
    rq_txn *t;
    CHECK_INT(rq_txn_begin(env, &t), ==, 0);
    for (int k = 0; k < n; k++) CHECK_INT(rq_txn_ack(t, out[k].seq), ==, 0);
    CHECK_INT(rq_txn_commit(t), ==, 0);
    rq_stats st;
    CHECK_INT(rq_stat(env, &st), ==, 0);
    CHECK_INT(st.ready, ==, 0);
    rq_records_free(out, (size_t)n);
    rq_env_close(env);
    total_seen += n;
    next_batch = max_b + 1;
    CHECK(next_batch < MAX_BATCHES - 1000);
  }
  fprintf(stderr, "%ld batches reported, %ld records checked, %ld committed-but-unreported\n",
          total_reported, total_seen, unreported_complete);
  CHECK(total_reported > 0);
}

/* The run's seed: RQ_CRASH_SEED, else the time mixed with `salt`. */
static unsigned crash_seed(unsigned salt) {
  const char *s = getenv("RQ_CRASH_SEED");
  unsigned seed = s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)time(NULL) ^ salt;
  fprintf(stderr, "seed %u\n", seed);
  srand(seed);
  return seed;
}

/* A writer child: commits batches first, first + 1, ... and writes each
 * one's number to wfd once its commit returned (after a 0 once open). */
typedef void (*writer_child)(int wfd, uint64_t first, unsigned seed);

/* Runs `child`, waits for its first 0 to 19 commits (random), then kills it
 * at a random moment within 3 ms. Every batch number it reported, those
 * still in the pipe included, goes to rep[*nrep] on (up to cap). */
static void kill_writer_child(writer_child child, uint64_t first, uint64_t *rep, size_t *nrep,
                              size_t cap) {
  int p[2];
  CHECK_INT(pipe(p), ==, 0);
  unsigned cseed = (unsigned)rand();
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    child(p[1], first, cseed);
  }
  close(p[1]);
  uint64_t b;
  CHECK_INT(read(p[0], &b, sizeof b), ==, sizeof b);
  CHECK_INT(b, ==, 0);
  for (int k = rand() % 20; k > 0; k--) {
    CHECK_INT(read(p[0], &b, sizeof b), ==, sizeof b);
    CHECK(*nrep < cap);
    rep[(*nrep)++] = b;
  }
  usleep((useconds_t)(rand() % 3000));
  CHECK_INT(kill(pid, SIGKILL), ==, 0);
  int status;
  CHECK_INT(waitpid(pid, &status, 0), ==, pid);
  if (WIFEXITED(status)) tl_fail(__FILE__, __LINE__, "child failed with %d", WEXITSTATUS(status));
  while (read(p[0], &b, sizeof b) == (ssize_t)sizeof b) {
    CHECK(*nrep < cap);
    rep[(*nrep)++] = b;
  }
  close(p[0]);
}

/* Mixed batches (appends, acks, nacks, dead-letters in one commit) killed at
 * random: the persistent counters move in the same transaction as the data,
 * so after any kill appended = ready + acked + dlq holds, the gauges match
 * what is stored, and rq_verify() finds nothing to repair. */
static void mixed_child(int wfd, uint64_t first, unsigned seed) {
  rq_env *env;
  if (rq_env_open(&env, tl_tmpdir, NULL)) _exit(3);
  uint64_t go = 0;
  if (write(wfd, &go, sizeof go) != (ssize_t)sizeof go) _exit(7);
  srand(seed);
  uint8_t body[3000];
  for (uint64_t b = first;; b++) {
    rq_record *held;
    int n = rq_lease(env, 1LL << 62, (size_t)(rand() % 24), 0, &held);
    if (n < 0) _exit(8);
    rq_txn *t;
    if (rq_txn_begin(env, &t)) _exit(4);
    for (int i = 0; i < n; i++) {
      int rc, what = rand() % 3;
      if (what == 0)
        rc = rq_txn_ack(t, held[i].seq);
      else if (what == 1)
        rc = rq_txn_nack(t, held[i].seq, 1, 0, "Throttling");
      else
        rc = rq_txn_dead(t, held[i].seq, 1, "rejected", "InvalidParameter", "no");
      if (rc) _exit(9);
    }
    int k = 1 + rand() % 32;
    for (int i = 0; i < k; i++) {
      size_t len = 10 + (size_t)rand() % (sizeof body - 10);
      memset(body, 'a' + i % 26, len);
      rq_record r = {0};
      r.received_ms = 1;
      r.body = body;
      r.body_len = len;
      r.type = "mixed";
      if (rq_txn_append(t, &r, NULL)) _exit(5);
    }
    if (rq_txn_commit(t)) _exit(6);
    rq_records_free(held, (size_t)n);
    if (write(wfd, &b, sizeof b) != (ssize_t)sizeof b) _exit(7);
  }
}

TEST(sigkill_during_mixed_batches) {
  crash_seed(0x5bd1e995u);
  static uint64_t rep[MAX_BATCHES];
  size_t commits = 0;
  for (int round = 0; round < 40; round++) {
    kill_writer_child(mixed_child, 1, rep, &commits, MAX_BATCHES); /* only counted */

    rq_env *env;
    CHECK_INT(rq_env_open(&env, tl_tmpdir, NULL), ==, 0);
    rq_stats st;
    CHECK_INT(rq_stat(env, &st), ==, 0);
    CHECK_INT(st.appended_total, ==, st.ready + st.acked_total + st.dlq);
    rq_record *out;
    int n = rq_lease(env, 1LL << 62, 1000000, 0, &out);
    CHECK_INT(n, ==, st.ready);
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) {
      bytes += out[i].body_len;
      CHECK_STR(out[i].type, "mixed");
      for (size_t j = 0; j < out[i].body_len; j++) CHECK(out[i].body[j] == out[i].body[0]);
      if (out[i].attempts) CHECK_STR(out[i].last_error, "Throttling");
    }
    CHECK_INT(bytes, ==, st.ready_bytes);
    rq_records_free(out, (size_t)n);
    int nd = rq_dlq_list(env, NULL, &out);
    CHECK_INT(nd, ==, st.dlq);
    bytes = 0;
    for (int i = 0; i < nd; i++) {
      bytes += out[i].body_len;
      CHECK_STR(out[i].dlq_reason, "rejected");
      CHECK(out[i].attempts >= 1);
    }
    CHECK_INT(bytes, ==, st.dlq_bytes);
    rq_records_free(out, (size_t)nd);
    rq_verify_report rep;
    CHECK_INT(rq_verify(env, &rep), ==, 0);
    CHECK_INT(rep.corrupt, ==, 0);
    CHECK_INT(rep.order_errors, ==, 0);
    rq_env_close(env);
  }
  fprintf(stderr, "%zu mixed commits observed\n", commits);
}

/* Dedup across kills: a committed id stays a duplicate whether its record
 * is still ready (the record holds the id), was acked or dead-lettered
 * (the log took the id over in the same commit), in whatever batch the
 * kill hit. The child appends batches of ids and, in the same commits,
 * acks or dead-letters records appended before. */
static int64_t wall_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dedup_id(char *buf, size_t n, uint64_t b, int i) {
  snprintf(buf, n, "d%llu-%d", (unsigned long long)b, i);
}

static void dedup_child(int wfd, uint64_t first, unsigned seed) {
  rq_env *env;
  if (rq_env_open(&env, tl_tmpdir, NULL)) _exit(3);
  uint64_t go = 0;
  if (write(wfd, &go, sizeof go) != (ssize_t)sizeof go) _exit(7);
  srand(seed);
  for (uint64_t b = first;; b++) {
    rq_record *held;
    int n = rq_lease(env, 1LL << 62, (size_t)(rand() % 40), 0, &held);
    if (n < 0) _exit(8);
    rq_txn *t;
    if (rq_txn_begin(env, &t)) _exit(4);
    for (int i = 0; i < n; i++) {
      int rc = rand() % 3 ? rq_txn_ack(t, held[i].seq)
                          : rq_txn_dead(t, held[i].seq, 1, "rejected", "InvalidParameter", "no");
      if (rc) _exit(9);
    }
    for (int i = 0; i < batch_size(b); i++) {
      char id[48];
      dedup_id(id, sizeof id, b, i);
      rq_record r = {0};
      r.received_ms = wall_now_ms();
      r.body = (const uint8_t *)id;
      r.body_len = strlen(id);
      r.webhook_id = id;
      r.type = "dedup";
      if (rq_txn_append(t, &r, NULL)) _exit(5);
    }
    if (rq_txn_commit(t)) _exit(6);
    rq_records_free(held, (size_t)n);
    if (write(wfd, &b, sizeof b) != (ssize_t)sizeof b) _exit(7);
  }
}

TEST(sigkill_dedup_across_acks) {
  crash_seed(0x9e3779b9u);
  static uint64_t reported[MAX_BATCHES];
  size_t nrep = 0;
  uint64_t next_batch = 1;
  long ids_checked = 0;
  for (int round = 0; round < 30; round++) {
    kill_writer_child(dedup_child, next_batch, reported, &nrep, MAX_BATCHES);
    rq_env *env;
    CHECK_INT(rq_env_open(&env, tl_tmpdir, NULL), ==, 0);
    rq_stats st;
    CHECK_INT(rq_stat(env, &st), ==, 0);
    /* Every batch the child saw committed, in this round and before. */
    int64_t now = wall_now_ms();
    for (size_t r = 0; r < nrep; r++) {
      for (int i = 0; i < batch_size(reported[r]); i++) {
        char id[48];
        dedup_id(id, sizeof id, reported[r], i);
        if (rq_dedup_seen(env, id, now) != 1)
          tl_fail(__FILE__, __LINE__,
                  "round %d: committed id %s is not a duplicate (ready %llu, "
                  "acked %llu, dlq %llu)",
                  round, id, (unsigned long long)st.ready, (unsigned long long)st.acked_total,
                  (unsigned long long)st.dlq);
        ids_checked++;
      }
    }
    CHECK_INT(rq_dedup_seen(env, "d0-never", now), ==, 0);
    /* The next child starts past any batch the killed one may have committed. */
    next_batch = (nrep ? reported[nrep - 1] : next_batch) + 1000;
    rq_env_close(env);
  }
  fprintf(stderr, "%zu batches reported, %ld id checks, all duplicates\n", nrep, ids_checked);
  CHECK(nrep > 0);
}
