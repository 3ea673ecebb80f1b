/* rq: the webhook-id dedup index.
 *
 * A sighting of an id (seen time, id) is kept on disk by one of two things:
 * - the ready record that carries the id, while it is in `ready`;
 * - an entry in the log, `dedup_time`, keyed by seen time (u64 BE) + id.
 * The log gets the entry when the record leaves `ready` (ack, dead-letter),
 * in the same transaction, so some holder is always committed. An append
 * therefore writes nothing for dedup: a log keyed by time still put one or
 * two more pages into every commit, a quarter of what a one-record batch
 * writes. The drainer's acks come in batches, so there the log's pages are
 * shared by many entries. The log is in time order: entries land on its
 * right edge and expiry deletes from its left edge. (An index keyed by id
 * put every new, random id on a random leaf: about one more page per event.)
 *
 * Look-ups by id use a table in memory (64-bit hash of the id -> seen time
 * and the seq of the ready record holding the sighting, 0 when the log
 * holds it), built from the log and the ready records when a writable
 * environment opens and kept in step by the writer. The table only
 * proposes: a hit is confirmed by the exact (time, id) key in the log or by
 * the id in the ready record, inside the caller's transaction, so an entry
 * of an aborted batch, or two ids sharing a hash, never makes a new event a
 * duplicate (a shared hash can at worst miss a duplicate, which
 * at-least-once delivery allows; losing an event it would not). Expired
 * sightings leave the table with their log entries, or, for those held by
 * ready records, through a sweep over the table that each batch continues.
 * Memory: 24 bytes per id in the window, up to twice that with the table's
 * slack.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rq_internal.h"

#define DEDUP_KEY_MAX 400      /* id bytes in a key; LMDB keys are limited to 511 */
#define DEDUP_PRUNE_MIN 256    /* expired entries removed per batch, at least */
#define DEDUP_FUTURE_MIN 60000 /* ms ahead of the clock an entry may be (rekey_future) */

/* Key bytes of an id: the id itself, or for very long ids a prefix plus a
 * 64-bit FNV-1a hash of the whole id. */
static size_t id_key(const void *id, size_t n, uint8_t *buf) {
  if (n <= DEDUP_KEY_MAX) {
    memcpy(buf, id, n);
    return n;
  }
  memcpy(buf, id, DEDUP_KEY_MAX - 8);
  rq_put_be64(buf + DEDUP_KEY_MAX - 8, rq_fnv1a(id, n));
  return DEDUP_KEY_MAX;
}

/* Table hash of key bytes: FNV-1a, then a mixer so that the low bits used
 * for the slot are well spread. Never 0 or 1 (empty and removed slots). */
static uint64_t id_hash(const uint8_t *p, size_t n) {
  uint64_t h = rq_fnv1a(p, n);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h > 1 ? h : h + 2;
}

/* ---- the table (open addressing, linear probing); callers hold dmu ----
 *
 * Growing is incremental: a full rehash of a few hundred thousand ids took
 * about 30 ms, on the writer thread, inside a commit. When the table fills
 * up, it becomes `old` (read-only but for tombstones) and a table twice the
 * size takes the inserts; every insert then moves a few of old's slots over,
 * so old is empty well before the new one fills. An id is in exactly one of
 * them. Only old ever holds tombstones (a removed slot must not end the probe
 * of entries behind it); the current table deletes by backward shift. */

#define SLOT_EMPTY 0
#define SLOT_TOMB 1       /* removed from old */
#define MIGRATE_PER_PUT 4 /* old slots moved per insert while growing */

static bool live(uint64_t h) {
  return h > SLOT_TOMB;
}

/* Slot of h in t, or the empty slot ending its probe (t has room). */
static size_t probe(const rq_dedup_slot *t, size_t cap, uint64_t h) {
  size_t i = (size_t)h & (cap - 1);
  while (t[i].h != SLOT_EMPTY && t[i].h != h) i = (i + 1) & (cap - 1);
  return i;
}

static void insert_new(rq_dedup_table *d, rq_dedup_slot e) {
  size_t i = probe(d->slots, d->cap, e.h);
  if (d->slots[i].h == SLOT_EMPTY) d->n++;
  d->slots[i] = e;
}

static void migrate(rq_dedup_table *d, size_t count) {
  while (d->old && count--) {
    rq_dedup_slot *s = &d->old[d->mig];
    if (live(s->h)) {
      insert_new(d, *s);
      s->h = SLOT_TOMB;
      d->old_n--;
    }
    if (++d->mig == d->old_cap || d->old_n == 0) {
      free(d->old);
      d->old = NULL;
      d->old_cap = d->old_n = d->mig = 0;
    }
  }
}

static int table_put(rq_dedup_table *d, uint64_t h, int64_t t, uint64_t seq) {
  if (d->old) { /* the id may still be in old: it moves with this update */
    size_t i = probe(d->old, d->old_cap, h);
    if (d->old[i].h == h) {
      d->old[i].h = SLOT_TOMB;
      d->old_n--;
    }
  } else if ((d->n + 1) * 10 > d->cap * 7) {
    size_t ncap = d->cap ? d->cap * 2 : 1024;
    rq_dedup_slot *fresh = calloc(ncap, sizeof *fresh);
    if (!fresh) return -ENOMEM;
    d->old = d->slots;
    d->old_cap = d->cap;
    d->old_n = d->n;
    d->mig = 0;
    d->slots = fresh;
    d->cap = ncap;
    d->n = 0;
  }
  insert_new(d, (rq_dedup_slot){h, t, seq});
  migrate(d, MIGRATE_PER_PUT);
  return 0;
}

/* The slot of h in either table, or NULL. */
static rq_dedup_slot *table_find(const rq_dedup_table *d, uint64_t h) {
  if (d->cap) {
    size_t i = probe(d->slots, d->cap, h);
    if (d->slots[i].h == h) return &d->slots[i];
  }
  if (d->old) {
    size_t i = probe(d->old, d->old_cap, h);
    if (d->old[i].h == h) return &d->old[i];
  }
  return NULL;
}

static bool table_get(const rq_dedup_table *d, uint64_t h, rq_dedup_slot *out) {
  const rq_dedup_slot *s = table_find(d, h);
  if (s) *out = *s;
  return s != NULL;
}

/* Empties slot i of the current table by backward shift: each later entry
 * of the run moves back into the hole unless its home slot lies cyclically
 * in (hole, its slot]. */
static void slot_del(rq_dedup_table *d, size_t i) {
  size_t mask = d->cap - 1;
  for (size_t j = (i + 1) & mask; d->slots[j].h != SLOT_EMPTY; j = (j + 1) & mask) {
    size_t home = (size_t)d->slots[j].h & mask;
    if (((j - home) & mask) >= ((j - i) & mask)) {
      d->slots[i] = d->slots[j];
      i = j;
    }
  }
  d->slots[i].h = SLOT_EMPTY;
  d->n--;
}

/* Removes h if it still maps to t (a later sighting keeps it). */
static void table_del_if(rq_dedup_table *d, uint64_t h, int64_t t) {
  if (d->old) {
    size_t i = probe(d->old, d->old_cap, h);
    if (d->old[i].h == h) {
      if (d->old[i].t == t) {
        d->old[i].h = SLOT_TOMB;
        d->old_n--;
      }
      return;
    }
  }
  if (!d->cap) return;
  size_t i = probe(d->slots, d->cap, h);
  if (d->slots[i].h == h && d->slots[i].t == t) slot_del(d, i);
}

/* ---- the log ------------------------------------------------------------ */

/* Slack for sightings ahead of the clock; see rekey_future. */
static int64_t future_slack(const rq_env *env) {
  return env->dedup_window_ms > DEDUP_FUTURE_MIN ? env->dedup_window_ms : DEDUP_FUTURE_MIN;
}

/* The table from the log's entries inside the window, then from the ready
 * records' ids (a ready record's sighting wins over an older log entry). */
int rq_dedup_load(rq_env *env, MDB_txn *txn) {
  int64_t now = rq_now_ms(), cutoff = now - env->dedup_window_ms;
  rq_dedup_table *d = &env->dedup;
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, env->db_dedup_time, &c);
  if (rc) return rq_mdb_err(rc);
  uint8_t from[8];
  rq_put_be64(from, cutoff > 0 ? (uint64_t)cutoff : 0);
  MDB_val k = {8, from}, v;
  pthread_mutex_lock(&env->dmu);
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size < 8) continue;
    int r2 = table_put(d, id_hash((const uint8_t *)k.mv_data + 8, k.mv_size - 8),
                       (int64_t)rq_get_be64(k.mv_data), 0);
    if (r2) {
      rc = r2;
      break;
    }
  }
  mdb_cursor_close(c);
  if (rc == MDB_NOTFOUND && (rc = mdb_cursor_open(txn, env->db_ready, &c)) == 0) {
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      rq_view rv;
      if (k.mv_size != 8 || rq_ready_header(&v, rq_get_be64(k.mv_data), &rv)) continue;
      size_t n = rv.len[RQ_F_WEBHOOK_ID];
      int64_t t = rv.num[RQ_F_RECEIVED];
      if (!rq_view_has(&rv, RQ_F_WEBHOOK_ID) || !n || t < cutoff) continue;
      uint8_t kb[DEDUP_KEY_MAX];
      uint64_t h = id_hash(kb, id_key(rv.ptr[RQ_F_WEBHOOK_ID], n, kb));
      /* Seen while the clock was ahead: a new window from now (table_sweep). */
      if (t > now + future_slack(env)) t = now;
      rq_dedup_slot cur;
      int r2 = 0;
      if (!table_get(d, h, &cur) || cur.t <= t) r2 = table_put(d, h, t, rq_get_be64(k.mv_data));
      if (r2) {
        rc = r2;
        break;
      }
    }
    mdb_cursor_close(c);
  }
  pthread_mutex_unlock(&env->dmu);
  if (rc == MDB_NOTFOUND || rc == 0) return 0;
  return rc == -ENOMEM ? rc : rq_mdb_err(rc);
}

void rq_dedup_free(rq_env *env) {
  free(env->dedup.slots);
  free(env->dedup.old);
  env->dedup = (rq_dedup_table){0};
}

/* Is the ready record `seq` (as seen from txn) the one carrying id? */
static int ready_holds(rq_env *env, MDB_txn *txn, uint64_t seq, const char *id, size_t n) {
  uint8_t kb[8];
  rq_put_be64(kb, seq);
  MDB_val k = {8, kb}, v;
  int rc = mdb_get(txn, env->db_ready, &k, &v);
  if (rc == MDB_NOTFOUND) return 0; /* left (then the log holds it) or never committed */
  if (rc) return rq_mdb_err(rc);
  rq_view rv;
  if (rq_ready_header(&v, seq, &rv) || !rq_view_has(&rv, RQ_F_WEBHOOK_ID)) return 0;
  return rv.len[RQ_F_WEBHOOK_ID] == n && memcmp(rv.ptr[RQ_F_WEBHOOK_ID], id, n) == 0;
}

int rq_dedup_check(rq_env *env, MDB_txn *txn, const char *id, int64_t now_ms) {
  if (env->readonly) return RQ_READONLY; /* the table is the writer's */
  uint8_t kb[8 + DEDUP_KEY_MAX];
  size_t n = strlen(id), kn = id_key(id, n, kb + 8);
  rq_dedup_slot e;
  pthread_mutex_lock(&env->dmu);
  bool hit = table_get(&env->dedup, id_hash(kb + 8, kn), &e);
  pthread_mutex_unlock(&env->dmu);
  if (!hit || now_ms - e.t >= env->dedup_window_ms) return 0;
  rq_put_be64(kb, (uint64_t)e.t);
  MDB_val k = {8 + kn, kb}, v;
  int rc = mdb_get(txn, env->db_dedup_time, &k, &v);
  if (rc == 0) return 1;
  if (rc != MDB_NOTFOUND) return rq_mdb_err(rc);
  /* Not in the log: held by its ready record, or not committed, or another
   * id's hash. */
  return e.seq ? ready_holds(env, txn, e.seq, id, n) : 0;
}

/* Logs the sighting (seen, id): kb holds the id's key bytes from kb + 8. */
static int log_put(rq_txn *t, uint8_t *kb, size_t kn, int64_t seen) {
  rq_put_be64(kb, (uint64_t)seen);
  MDB_val k = {8 + kn, kb}, empty = {0, ""};
  int rc = mdb_put(t->txn, t->env->db_dedup_time, &k, &empty, 0);
  return rc ? rq_txn_fail(t, rq_mdb_err(rc)) : 0;
}

int rq_dedup_record(rq_txn *t, const char *id, int64_t now_ms, uint64_t seq) {
  rq_env *env = t->env;
  uint8_t kb[8 + DEDUP_KEY_MAX];
  size_t kn = id_key(id, strlen(id), kb + 8);
  int rc;
  if (!seq && (rc = log_put(t, kb, kn, now_ms))) return rc;
  pthread_mutex_lock(&env->dmu);
  rc = table_put(&env->dedup, id_hash(kb + 8, kn), now_ms, seq);
  pthread_mutex_unlock(&env->dmu);
  return rc ? rq_txn_fail(t, rc) : 0;
}

int rq_dedup_leave(rq_txn *t, uint64_t seq, const rq_view *v) {
  rq_env *env = t->env;
  size_t n = v->len[RQ_F_WEBHOOK_ID];
  if (!rq_view_has(v, RQ_F_WEBHOOK_ID) || !n) return 0;
  uint8_t kb[8 + DEDUP_KEY_MAX];
  size_t kn = id_key(v->ptr[RQ_F_WEBHOOK_ID], n, kb + 8); /* a copy: v points into the map */
  rq_dedup_slot e;
  pthread_mutex_lock(&env->dmu);
  bool hit = table_get(&env->dedup, id_hash(kb + 8, kn), &e);
  pthread_mutex_unlock(&env->dmu);
  /* A later sighting of the id, or none inside the window: nothing to keep.
   * The table's time, not the record's: table_sweep may have moved it. */
  if (!hit || e.seq != seq || e.t < rq_now_ms() - env->dedup_window_ms) return 0;
  return log_put(t, kb, kn, e.t);
}

/* Sets *held when the log (cursor c) has a key at time `at` whose id
 * hashes to h. Returns 0 or an LMDB code. */
static int log_holds(MDB_cursor *c, int64_t at, uint64_t h, bool *held) {
  uint8_t kb[8];
  rq_put_be64(kb, (uint64_t)at);
  MDB_val k = {8, kb}, v;
  *held = false;
  int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  while (rc == 0 && k.mv_size >= 8 && rq_get_be64(k.mv_data) == (uint64_t)at) {
    if (id_hash((const uint8_t *)k.mv_data + 8, k.mv_size - 8) == h) {
      *held = true;
      return 0;
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Walks up to `budget` slots of the table from where the last sweep
 * stopped. Expired sightings leave it (those held by ready records have no
 * log entry to take them out). A ready record's sighting far ahead of `now`
 * was stamped while the clock was ahead (see rekey_future): it starts a new
 * window at `now`, and an ack logs it at that time. If the record is gone,
 * the log's entry moves (rekey_future) and the table with it; with no log
 * entry either (an append that never committed), nothing holds it and it
 * would wait, never expiring, for the clock to catch up: it goes now.
 * c: a cursor on the log. Called with dmu held. */
static int table_sweep(rq_txn *t, MDB_cursor *c, int64_t cutoff, int64_t now, uint64_t budget) {
  rq_dedup_table *d = &t->env->dedup;
  int64_t ahead = now + future_slack(t->env);
  migrate(d, budget / 16); /* the old table is not swept: empty it faster */
  for (; d->cap && budget; budget--) {
    size_t i = d->sweep & (d->cap - 1);
    rq_dedup_slot *s = &d->slots[i];
    if (live(s->h) && s->t < cutoff) {
      slot_del(d, i); /* slot i again: a later entry may have moved in */
      continue;
    }
    if (live(s->h) && s->seq && s->t > ahead) {
      uint8_t kb[8];
      rq_put_be64(kb, s->seq);
      MDB_val k = {8, kb}, v;
      int rc = mdb_get(t->txn, t->env->db_ready, &k, &v);
      bool held = true;
      if (rc == 0)
        s->t = now;
      else if (rc != MDB_NOTFOUND || (rc = log_holds(c, s->t, s->h, &held)))
        return rc;
      if (!held) {
        slot_del(d, i);
        continue;
      }
    }
    d->sweep = i + 1;
  }
  return 0;
}

/* Entries well after `now` (see below) were logged while the clock was
 * ahead of today's (a bad RTC before NTP fixed it, a VM restored from a
 * snapshot then stepped back). Left alone they would stay in the log and
 * the table, and their ids be duplicates, until the clock catches up:
 * hours, or years. Deleting them would let a Stream retry that arrives
 * just after the step be stored twice. So each moves to `now`: still a
 * duplicate for one full window in the new timeline, then pruned as usual.
 * Normal entries are never ahead of the prune clock (they were stamped
 * before this batch began), so the tail check costs one cursor step. An
 * entry less than max(window, DEDUP_FUTURE_MIN) ahead is left alone: it
 * expires within that plus a window. Called with dmu held; returns 0, an
 * LMDB code or -ENOMEM. */
static int rekey_future(rq_txn *t, MDB_cursor *c, int64_t now, uint64_t budget) {
  rq_env *env = t->env;
  uint8_t kb[8 + DEDUP_KEY_MAX];
  MDB_val k, v;
  int rc = 0;
  int64_t slack = future_slack(env);
  for (uint64_t n = 0; n < budget; n++) {
    if ((rc = mdb_cursor_get(c, &k, &v, MDB_LAST))) break;
    if (k.mv_size < 8 || k.mv_size > sizeof kb) break;
    int64_t seen = (int64_t)rq_get_be64(k.mv_data);
    if (seen - now <= slack) break;
    size_t kn = k.mv_size - 8;
    memcpy(kb + 8, (const uint8_t *)k.mv_data + 8, kn); /* k points into the page */
    if ((rc = mdb_cursor_del(c, 0))) break;
    rq_put_be64(kb, (uint64_t)now);
    MDB_val nk = {8 + kn, kb}, empty = {0, ""};
    if ((rc = mdb_put(t->txn, env->db_dedup_time, &nk, &empty, 0))) break;
    uint64_t h = id_hash(kb + 8, kn);
    rq_dedup_slot cur;
    /* The table follows unless a later sighting of the id owns it. If the
     * batch does not commit, the log keeps `seen`, and so must the table:
     * else it names a key that is not there, and the next batch, moving
     * the entry to a later now, no longer finds `seen` in the table. */
    if (table_get(&env->dedup, h, &cur) && cur.t == seen) {
      if (t->nmoved == t->capmoved) {
        size_t ncap = t->capmoved ? 2 * t->capmoved : 16;
        rq_dedup_move *m = realloc(t->moved, ncap * sizeof *m);
        if (!m) {
          rc = -ENOMEM;
          break;
        }
        t->moved = m;
        t->capmoved = ncap;
      }
      if ((rc = table_put(&env->dedup, h, now, cur.seq))) break;
      t->moved[t->nmoved++] = (rq_dedup_move){h, seen, now};
    }
  }
  return rc == MDB_NOTFOUND ? 0 : rc;
}

void rq_dedup_revert(rq_env *env, const rq_dedup_move *m, size_t n) {
  pthread_mutex_lock(&env->dmu);
  while (n--) {
    rq_dedup_slot *s = table_find(&env->dedup, m[n].h);
    if (s && s->t == m[n].to) s->t = m[n].from;
  }
  pthread_mutex_unlock(&env->dmu);
}

/* Expired entries go from the head of the log in bites at the start of
 * each batch, a few more than the last batch added, so expiry keeps pace
 * without a background job or a long write. An id seen again later keeps
 * its table entry (table_del_if). */
int rq_dedup_prune(rq_txn *t) {
  rq_env *env = t->env;
  int64_t now = rq_now_ms(), cutoff = now - env->dedup_window_ms;
  uint64_t budget = DEDUP_PRUNE_MIN + 2 * env->last_appends;
  MDB_cursor *c;
  int rc = mdb_cursor_open(t->txn, env->db_dedup_time, &c);
  if (rc) return rq_mdb_err(rc);
  MDB_val k, v;
  uint64_t n = 0;
  pthread_mutex_lock(&env->dmu); /* once per bite, not per entry */
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && n < budget; n++) {
    if (k.mv_size < 8) break;
    int64_t seen = (int64_t)rq_get_be64(k.mv_data);
    if (seen >= cutoff) break;
    uint64_t h = id_hash((const uint8_t *)k.mv_data + 8, k.mv_size - 8);
    if ((rc = mdb_cursor_del(c, 0))) break;
    table_del_if(&env->dedup, h, seen);
    /* After a delete, MDB_NEXT gives the entry that took the deleted one's place. */
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (rc == 0 || rc == MDB_NOTFOUND) rc = rekey_future(t, c, now, budget);
  /* Sweeping a slot costs far less than deleting a key. */
  if (rc == 0 || rc == MDB_NOTFOUND) rc = table_sweep(t, c, cutoff, now, 16 * budget);
  pthread_mutex_unlock(&env->dmu);
  mdb_cursor_close(c);
  if (rc == 0 || rc == MDB_NOTFOUND) return 0;
  rq_dedup_revert(env, t->moved, t->nmoved); /* the batch will not begin */
  t->nmoved = 0;
  return rc == -ENOMEM ? rc : rq_mdb_err(rc);
}
