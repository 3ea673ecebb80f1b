#include "backoff.h"

#include <string.h>

void backoff_rng_seed(backoff_rng *r, uint64_t seed) {
  r->s = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

uint64_t backoff_rng_next(backoff_rng *r) {
  uint64_t x = r->s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

uint64_t backoff_rng_between(backoff_rng *r, uint64_t lo, uint64_t hi) {
  if (hi <= lo) return lo;
  uint64_t span = hi - lo;
  if (span == UINT64_MAX) return backoff_rng_next(r);
  /* Modulo bias is below 2^-40 for the spans used here (milliseconds). */
  return lo + backoff_rng_next(r) % (span + 1);
}

uint64_t backoff_retry_delay(backoff_rng *r, uint64_t base_ms, uint64_t cap_ms, uint32_t attempts) {
  if (cap_ms < base_ms) cap_ms = base_ms;
  uint64_t ceil = base_ms;
  /* Doubling stops at the cap; the loop also avoids shifting past 63 bits. */
  for (uint32_t i = 0; i <= attempts && ceil < cap_ms; i++) ceil = ceil ? ceil * 2 : 1;
  if (ceil > cap_ms) ceil = cap_ms;
  return backoff_rng_between(r, base_ms, ceil);
}

uint64_t backoff_decorrelated(backoff_rng *r, uint64_t base_ms, uint64_t cap_ms, uint64_t prev_ms) {
  if (cap_ms < base_ms) cap_ms = base_ms;
  if (prev_ms < base_ms) prev_ms = base_ms;
  uint64_t hi = prev_ms > cap_ms / 3 ? cap_ms : prev_ms * 3;
  uint64_t v = backoff_rng_between(r, base_ms, hi);
  return v > cap_ms ? cap_ms : v;
}

uint64_t backoff_probe_delay(backoff_rng *r, uint64_t interval_ms) {
  uint64_t j = interval_ms / 5;
  return backoff_rng_between(r, interval_ms - j, interval_ms + j);
}

void backoff_aimd_init(backoff_aimd *a, unsigned max) {
  a->max = max ? max : 1;
  a->min = 1;
  a->cur = a->max;
  a->successes = 0;
  a->generation = 0;
}

int backoff_aimd_throttled(backoff_aimd *a, uint64_t sent_gen) {
  if (sent_gen < a->generation) return 0;
  a->generation++;
  a->successes = 0;
  unsigned next = a->cur / 2;
  if (next < a->min) next = a->min;
  int changed = next != a->cur;
  a->cur = next;
  return changed;
}

int backoff_aimd_success(backoff_aimd *a) {
  if (a->cur >= a->max) {
    a->successes = 0;
    return 0;
  }
  if (++a->successes < a->cur) return 0;
  a->successes = 0;
  a->cur++;
  return 1;
}

size_t backoff_pack(const size_t *sizes, size_t n, size_t max_entries, size_t max_bytes) {
  if (n == 0) return 0;
  if (max_entries == 0) max_entries = 1;
  size_t k = 0, sum = 0;
  while (k < n && k < max_entries) {
    if (k > 0 && sizes[k] > max_bytes - sum) break;
    sum += sizes[k] > max_bytes ? max_bytes : sizes[k];
    k++;
  }
  return k;
}

const char *backoff_action_name(backoff_action a) {
  switch (a) {
    case BACKOFF_ACK:
      return "ack";
    case BACKOFF_RETRY:
      return "retry";
    case BACKOFF_RETRY_SHORT:
      return "retry_short";
    case BACKOFF_DEAD_REJECTED:
      return "dead_rejected";
    case BACKOFF_DEAD_EXPIRED:
      return "dead_expired";
    case BACKOFF_RELEASE:
      return "release";
  }
  return "unknown";
}

int backoff_expired(int64_t received_ms, int64_t now_ms, int64_t max_age_ms) {
  return max_age_ms > 0 && received_ms > 0 && now_ms - received_ms > max_age_ms;
}

int backoff_whole_drainer(sns_outcome overall) {
  return overall == SNS_UNREACHABLE || overall == SNS_RETRY || overall == SNS_THROTTLED;
}

backoff_action backoff_decide(sns_outcome outcome, int64_t received_ms, int64_t now_ms,
                              int64_t max_age_ms) {
  int expired = backoff_expired(received_ms, now_ms, max_age_ms);
  switch (outcome) {
    case SNS_OK:
      return BACKOFF_ACK;
    case SNS_PERMANENT:
      return BACKOFF_DEAD_REJECTED;
    case SNS_CONFIG:
      return BACKOFF_RELEASE;
    case SNS_RETRY:
      return expired ? BACKOFF_DEAD_EXPIRED : BACKOFF_RETRY;
    case SNS_THROTTLED:
      return expired ? BACKOFF_DEAD_EXPIRED : BACKOFF_RETRY_SHORT;
    case SNS_UNREACHABLE:
      return expired ? BACKOFF_DEAD_EXPIRED : BACKOFF_RELEASE;
  }
  /* An outcome this code does not know: keep the event and retry it. */
  return expired ? BACKOFF_DEAD_EXPIRED : BACKOFF_RETRY;
}

int64_t backoff_clock_observe(backoff_clock *c, int64_t wall_ms, int64_t mono_ms) {
  int64_t off = wall_ms - mono_ms;
  if (!c->started) {
    c->started = 1;
    c->offset = off;
    return 0;
  }
  int64_t d = off - c->offset;
  /* Slewing moves the offset slowly: following it at every reading keeps
   * it from ever adding up to a "step". */
  c->offset = off;
  if (d > -BACKOFF_CLOCK_STEP_MS && d < BACKOFF_CLOCK_STEP_MS) return 0;
  if (d < 0) return d;
  if (c->n == BACKOFF_CLOCK_MAX_STEPS) {
    /* Merge the two oldest: budgets between them get the older step's
     * credit too, so they expire later rather than sooner. */
    c->step[1].by_ms += c->step[0].by_ms;
    memmove(&c->step[0], &c->step[1], (c->n - 1) * sizeof c->step[0]);
    c->n--;
  }
  /* Anything stamped before the step reads at most wall_ms - d: the step
   * happened between the last reading and this one. */
  c->step[c->n].before_ms = wall_ms - d;
  c->step[c->n].by_ms = d;
  c->n++;
  return d;
}

int64_t backoff_clock_credit(const backoff_clock *c, int64_t start_ms) {
  if (start_ms <= 0) return 0;
  int64_t credit = 0;
  for (size_t i = 0; i < c->n; i++)
    if (start_ms <= c->step[i].before_ms) credit += c->step[i].by_ms;
  return credit;
}
