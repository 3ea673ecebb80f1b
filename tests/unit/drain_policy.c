/* Pure drain policy (relay/backoff.c): delays, jitter, AIMD, packing and the
 * outcome -> action table. */
#include <math.h>

#include "backoff.h"
#include "testlib.h"

TEST(retry_delay_bounds) {
  backoff_rng r;
  backoff_rng_seed(&r, 42);
  for (uint32_t a = 0; a < 80; a++) {
    uint64_t ceil = 200;
    for (uint32_t i = 0; i <= a && ceil < 60000; i++) ceil *= 2;
    if (ceil > 60000) ceil = 60000;
    for (int k = 0; k < 200; k++) {
      uint64_t v = backoff_retry_delay(&r, 200, 60000, a);
      CHECK_INT(v, >=, 200);
      CHECK_INT(v, <=, ceil);
    }
  }
  /* Huge attempt counts must not overflow into tiny or zero delays. */
  CHECK_INT(backoff_retry_delay(&r, 200, 60000, UINT32_MAX), >=, 200);
  CHECK_INT(backoff_retry_delay(&r, 200, 60000, UINT32_MAX), <=, 60000);
  /* cap below base: base wins, no jitter below the floor. */
  CHECK_INT(backoff_retry_delay(&r, 500, 100, 3), ==, 500);
  /* The first retry already has jitter: [base, 2*base]. */
  int saw_above = 0;
  for (int k = 0; k < 100; k++) {
    uint64_t v = backoff_retry_delay(&r, 200, 60000, 0);
    CHECK_INT(v, <=, 400);
    if (v > 250) saw_above = 1;
  }
  CHECK(saw_above);
}

/* The delays of events that failed together must spread evenly over the
 * window (uniform), or they would retry as a herd. */
TEST(retry_delay_jitter_is_uniform) {
  backoff_rng r;
  backoff_rng_seed(&r, 7);
  enum { N = 20000, B = 10 };
  unsigned hist[B] = {0};
  double sum = 0;
  for (int k = 0; k < N; k++) {
    uint64_t v = backoff_retry_delay(&r, 200, 60000, 3); /* [200, 3200] */
    sum += (double)v;
    unsigned b = (unsigned)((v - 200) * B / 3001);
    CHECK_INT(b, <, B);
    hist[b]++;
  }
  double mean = sum / N;
  CHECK(fabs(mean - 1700.0) < 1700.0 * 0.03);
  for (int b = 0; b < B; b++) {
    CHECK_INT(hist[b], >, N / B * 85 / 100);
    CHECK_INT(hist[b], <, N / B * 115 / 100);
  }
}

TEST(decorrelated_bounds_and_growth) {
  backoff_rng r;
  backoff_rng_seed(&r, 99);
  uint64_t prev = 0, max_seen = 0;
  for (int k = 0; k < 2000; k++) {
    uint64_t v = backoff_decorrelated(&r, 200, 30000, prev);
    CHECK_INT(v, >=, 200);
    CHECK_INT(v, <=, 30000);
    CHECK_INT(v, <=, (prev < 200 ? 200 : prev) * 3);
    if (v > max_seen) max_seen = v;
    prev = v;
  }
  /* It grows toward the cap while the outage lasts. */
  CHECK_INT(max_seen, >, 20000);
  /* Different seeds give different sequences (no lockstep across relays). */
  backoff_rng a, b;
  backoff_rng_seed(&a, 1);
  backoff_rng_seed(&b, 2);
  int differ = 0;
  for (int k = 0; k < 10; k++)
    if (backoff_decorrelated(&a, 200, 30000, 1000) != backoff_decorrelated(&b, 200, 30000, 1000))
      differ = 1;
  CHECK(differ);
}

TEST(probe_delay_jitter) {
  backoff_rng r;
  backoff_rng_seed(&r, 3);
  uint64_t lo = UINT64_MAX, hi = 0;
  for (int k = 0; k < 5000; k++) {
    uint64_t v = backoff_probe_delay(&r, 30000);
    CHECK_INT(v, >=, 24000);
    CHECK_INT(v, <=, 36000);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  CHECK_INT(lo, <, 25000);
  CHECK_INT(hi, >, 35000);
}

TEST(aimd_halves_once_per_generation) {
  backoff_aimd a;
  backoff_aimd_init(&a, 16);
  CHECK_INT(a.cur, ==, 16);
  uint64_t g = a.generation;
  CHECK(backoff_aimd_throttled(&a, g));
  CHECK_INT(a.cur, ==, 8);
  /* More throttled answers to requests sent before the cut: no new cut. */
  CHECK(!backoff_aimd_throttled(&a, g));
  CHECK(!backoff_aimd_throttled(&a, g));
  CHECK_INT(a.cur, ==, 8);
  /* A request sent after the cut and throttled again cuts again. */
  CHECK(backoff_aimd_throttled(&a, a.generation));
  CHECK_INT(a.cur, ==, 4);
  backoff_aimd_throttled(&a, a.generation);
  backoff_aimd_throttled(&a, a.generation);
  CHECK_INT(a.cur, ==, 1);
  CHECK(!backoff_aimd_throttled(&a, a.generation)); /* floor: 1 */
  CHECK_INT(a.cur, ==, 1);
}

TEST(aimd_additive_increase) {
  backoff_aimd a;
  backoff_aimd_init(&a, 16);
  backoff_aimd_throttled(&a, 0); /* 8 */
  /* +1 after cur successes. */
  for (int k = 0; k < 7; k++) CHECK(!backoff_aimd_success(&a));
  CHECK(backoff_aimd_success(&a));
  CHECK_INT(a.cur, ==, 9);
  unsigned steps = 0;
  for (int k = 0; k < 10000; k++) steps += (unsigned)backoff_aimd_success(&a);
  CHECK_INT(a.cur, ==, 16); /* never above max */
  CHECK_INT(steps, ==, 7);
  /* A throttle resets the success count. */
  backoff_aimd_throttled(&a, a.generation); /* 8 */
  for (int k = 0; k < 5; k++) backoff_aimd_success(&a);
  backoff_aimd_throttled(&a, a.generation); /* 4 */
  for (int k = 0; k < 3; k++) CHECK(!backoff_aimd_success(&a));
  CHECK(backoff_aimd_success(&a));
  CHECK_INT(a.cur, ==, 5);
  backoff_aimd_init(&a, 0); /* 0 means at least one */
  CHECK_INT(a.cur, ==, 1);
}

TEST(pack_entry_limit) {
  size_t s[15];
  for (int i = 0; i < 15; i++) s[i] = 1000;
  CHECK_INT(backoff_pack(s, 15, 10, 262144), ==, 10);
  CHECK_INT(backoff_pack(s + 10, 5, 10, 262144), ==, 5);
  CHECK_INT(backoff_pack(s, 15, 1, 262144), ==, 1);
  CHECK_INT(backoff_pack(s, 0, 10, 262144), ==, 0);
  CHECK_INT(backoff_pack(s, 10, 10, 262144), ==, 10);
  CHECK_INT(backoff_pack(s, 9, 10, 262144), ==, 9);
}

TEST(pack_byte_limit_edges) {
  const size_t L = 262144;
  /* Exactly 256 KiB over 4 entries fits; one byte more does not. */
  size_t s[4] = {65536, 65536, 65536, 65536};
  CHECK_INT(backoff_pack(s, 4, 10, L), ==, 4);
  s[3] = 65537;
  CHECK_INT(backoff_pack(s, 4, 10, L), ==, 3);
  /* A ~200 KiB event followed by small ones: it goes alone-ish. */
  size_t t[5] = {204800, 60000, 100, 100, 100};
  CHECK_INT(backoff_pack(t, 5, 10, L), ==, 1);
  CHECK_INT(backoff_pack(t + 1, 4, 10, L), ==, 4);
  /* Order is kept: no skipping ahead to fill the request. */
  size_t u[3] = {200000, 70000, 10};
  CHECK_INT(backoff_pack(u, 3, 10, L), ==, 1);
  /* A single record over the limit still packs alone (the caller DLQs it
   * before; packing must not loop forever on it). */
  size_t v[2] = {L + 1, 10};
  CHECK_INT(backoff_pack(v, 2, 10, L), ==, 1);
  CHECK_INT(backoff_pack(v + 1, 1, 10, L), ==, 1);
  /* Ten entries of exactly L/10 rounded down: all ten. */
  size_t w[11];
  for (int i = 0; i < 11; i++) w[i] = L / 10;
  CHECK_INT(backoff_pack(w, 11, 10, L), ==, 10);
  /* The whole queue, packed request by request, keeps every record once. */
  size_t q[1000], total = 0, reqs = 0;
  for (int i = 0; i < 1000; i++) q[i] = (size_t)(i * 7919 % 90000) + 1;
  for (size_t off = 0; off < 1000;) {
    size_t k = backoff_pack(q + off, 1000 - off, 10, L);
    CHECK_INT(k, >=, 1);
    CHECK_INT(k, <=, 10);
    size_t sum = 0;
    for (size_t i = off; i < off + k; i++) sum += q[i];
    CHECK_INT(sum, <=, L);
    if (off + k < 1000 && k < 10) CHECK_INT(sum + q[off + k], >, L); /* greedy: was full */
    off += k;
    total += k;
    reqs++;
  }
  CHECK_INT(total, ==, 1000);
  CHECK_INT(reqs, >=, 100);
}

TEST(outcome_to_action) {
  const int64_t now = 1700000000000, day = 86400000;
  int64_t fresh = now - 1000, old = now - day - 1;
  CHECK_INT(backoff_decide(SNS_OK, fresh, now, day), ==, BACKOFF_ACK);
  CHECK_INT(backoff_decide(SNS_OK, old, now, day), ==, BACKOFF_ACK);
  CHECK_INT(backoff_decide(SNS_RETRY, fresh, now, day), ==, BACKOFF_RETRY);
  CHECK_INT(backoff_decide(SNS_RETRY, old, now, day), ==, BACKOFF_DEAD_EXPIRED);
  CHECK_INT(backoff_decide(SNS_THROTTLED, fresh, now, day), ==, BACKOFF_RETRY_SHORT);
  CHECK_INT(backoff_decide(SNS_THROTTLED, old, now, day), ==, BACKOFF_DEAD_EXPIRED);
  CHECK_INT(backoff_decide(SNS_UNREACHABLE, fresh, now, day), ==, BACKOFF_RELEASE);
  CHECK_INT(backoff_decide(SNS_UNREACHABLE, old, now, day), ==, BACKOFF_DEAD_EXPIRED);
  CHECK_INT(backoff_decide(SNS_PERMANENT, fresh, now, day), ==, BACKOFF_DEAD_REJECTED);
  CHECK_INT(backoff_decide(SNS_PERMANENT, old, now, day), ==, BACKOFF_DEAD_REJECTED);
  /* Configuration errors never dead-letter, however old the event. */
  CHECK_INT(backoff_decide(SNS_CONFIG, fresh, now, day), ==, BACKOFF_RELEASE);
  CHECK_INT(backoff_decide(SNS_CONFIG, old, now, day), ==, BACKOFF_RELEASE);
  CHECK_INT(backoff_decide(SNS_CONFIG, 1, now, day), ==, BACKOFF_RELEASE);
  /* Exactly at the age limit is not yet expired. */
  CHECK_INT(backoff_decide(SNS_RETRY, now - day, now, day), ==, BACKOFF_RETRY);
  /* Unknown receive time (0) never expires. */
  CHECK_INT(backoff_decide(SNS_RETRY, 0, now, day), ==, BACKOFF_RETRY);
  CHECK_STR(backoff_action_name(BACKOFF_DEAD_EXPIRED), "dead_expired");
}

TEST(expiry_rule) {
  const int64_t now = 1700000000000, day = 86400000;
  CHECK_INT(backoff_expired(now - day - 1, now, day), ==, 1);
  CHECK_INT(backoff_expired(now - day, now, day), ==, 0); /* the limit itself is not expired */
  CHECK_INT(backoff_expired(now - 1000, now, day), ==, 0);
  CHECK_INT(backoff_expired(0, now, day), ==, 0);           /* unknown receive time */
  CHECK_INT(backoff_expired(now - 3 * day, now, 0), ==, 0); /* no age limit */
  /* backoff_decide() uses the same rule. */
  for (int64_t age = day - 2; age <= day + 2; age++)
    CHECK_INT(backoff_decide(SNS_RETRY, now - age, now, day) == BACKOFF_DEAD_EXPIRED, ==,
              backoff_expired(now - age, now, day));
}

/* Only whole-request transient failures back the whole drainer off; a 200
 * (even with Failed entries), a refused message or a configuration error
 * do not. */
TEST(whole_drainer_backoff_outcomes) {
  CHECK_INT(backoff_whole_drainer(SNS_UNREACHABLE), ==, 1);
  CHECK_INT(backoff_whole_drainer(SNS_RETRY), ==, 1);
  CHECK_INT(backoff_whole_drainer(SNS_THROTTLED), ==, 1);
  CHECK_INT(backoff_whole_drainer(SNS_OK), ==, 0);
  CHECK_INT(backoff_whole_drainer(SNS_PERMANENT), ==, 0);
  CHECK_INT(backoff_whole_drainer(SNS_CONFIG), ==, 0);
}

/* Wall-clock steps (backoff_clock): a forward step is credited to budgets
 * that started before it, so a clock fix does not age the backlog. */
TEST(clock_forward_step_is_credited) {
  const int64_t day = 86400000, T = 1700000000000LL;
  backoff_clock c = {0};
  CHECK_INT(backoff_clock_observe(&c, T, 5000), ==, 0);
  /* Ordinary progress and slewing are not steps. */
  CHECK_INT(backoff_clock_observe(&c, T + 1000, 6000), ==, 0);
  CHECK_INT(backoff_clock_observe(&c, T + 2500, 7000), ==, 0); /* +500 ms */
  CHECK_INT(c.n, ==, 0);
  /* Event received at T; the clock jumps 2 days ahead. */
  CHECK_INT(backoff_clock_observe(&c, T + 2 * day + 8000, 8000), ==, 2 * day + 4500);
  int64_t now = T + 2 * day + 9000;
  int64_t start = T + backoff_clock_credit(&c, T);
  CHECK_INT(backoff_expired(T, now, day), ==, 1); /* raw: expired */
  CHECK_INT(backoff_expired(start, now, day), ==, 0);
  CHECK_INT(backoff_decide(SNS_RETRY, start, now, day), ==, BACKOFF_RETRY);
  /* Still expires once it has really failed for a day. */
  CHECK_INT(backoff_expired(start, now + day, day), ==, 1);
  /* An event received after the step gets no credit. */
  CHECK_INT(backoff_clock_credit(&c, T + 2 * day + 8500), ==, 0);
  CHECK_INT(backoff_clock_credit(&c, 0), ==, 0); /* unknown start */
  /* A step back is reported, not credited. */
  CHECK_INT(backoff_clock_observe(&c, T + 10000, 10000), <, 0);
  CHECK_INT(c.n, ==, 1);
}

/* More steps than slots: merged so that credit never shrinks for an old
 * budget (expiry only ever later than the truth, never sooner). */
TEST(clock_many_steps_merge_safely) {
  const int64_t T = 1700000000000LL, H = 3600000;
  backoff_clock c = {0};
  int64_t wall = T, mono = 0;
  backoff_clock_observe(&c, wall, mono);
  int64_t starts[12];
  for (int i = 0; i < 12; i++) {
    starts[i] = wall;
    wall += 1000 + H; /* one hour forward per step */
    mono += 1000;
    CHECK_INT(backoff_clock_observe(&c, wall, mono), ==, H);
  }
  CHECK_INT(c.n, ==, BACKOFF_CLOCK_MAX_STEPS);
  /* The oldest budget saw all 12 steps. */
  CHECK_INT(backoff_clock_credit(&c, starts[0]), ==, 12 * H);
  for (int i = 0; i < 12; i++) CHECK_INT(backoff_clock_credit(&c, starts[i]), >=, (12 - i) * H);
  /* The newest saw exactly one. */
  CHECK_INT(backoff_clock_credit(&c, starts[11]), ==, H);
  CHECK_INT(backoff_clock_credit(&c, wall), ==, 0);
}
