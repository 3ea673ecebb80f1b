/* The FIFO lease index: ready records by group, in memory.
 *
 * A FIFO lease may hand out only the oldest record of each group (cid, else
 * type), and only when that record is neither leased nor waiting for its
 * retry. Found by walking the ready queue, that meant stepping over every
 * record of every blocked group on every call: with one busy channel and a
 * backlog of 100,000 events, 24 ms per lease and 42 events/s. This index
 * keeps, per group, the seqs of its ready records in order, and three places
 * a group's oldest record (its head) can be:
 *   - `ready`: a min-heap by head seq of heads that are due now;
 *   - `wait`:  a min-heap by due time of heads waiting for their retry;
 *   - `check`: heads whose due time must be read from the queue first (new
 *     groups, released leases).
 * A leased head is in none of them; `leased` maps its seq to its group.
 * A lease then costs O(max log groups), whatever the backlog.
 *
 * The index is built from the ready DB on the first FIFO lease and extended
 * at each lease with the records appended since (seqs only grow). Anything it
 * cannot follow (a non-FIFO lease, an ack of a record it did not lease,
 * rq_verify) drops it, and the next FIFO lease rebuilds it with one walk of
 * the queue. Only the writer process leases (writer.lock), so no other
 * process changes the ready queue under it. Everything here runs under
 * env->mu. Memory: 8 to 16 bytes per ready record (arrays grow by
 * doubling and shrink as groups drain) plus about 80 per group. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rq_internal.h"

enum { FG_IDLE, FG_CHECK, FG_READY, FG_WAIT, FG_LEASED };

typedef struct fgroup {
  uint8_t *key; /* group bytes; for an ungrouped record, its seq */
  size_t klen;
  bool anon;     /* ungrouped: a group of one record, keyed by its seq */
  int where;     /* FG_* */
  int64_t due;   /* head's next attempt, while in `wait` */
  uint64_t *seq; /* seq[head .. head + n) ascending */
  size_t head, n, cap;
} fgroup;

/* A list of groups: the two heaps and the check list. */
typedef struct {
  fgroup **v;
  size_t n, cap;
} glist;

struct rq_fifo {
  uint64_t indexed_to; /* every ready seq up to here is indexed */
  fgroup **slots;      /* every group, by key, open addressing */
  size_t cap, ngroups, nidle;
  glist ready, wait, check;
  rq_seqset leased; /* head seq -> its group */
};

static void group_free(fgroup *g) {
  if (!g) return;
  free(g->key);
  free(g->seq);
  free(g);
}

static void fifo_free(rq_fifo *f) {
  for (size_t i = 0; i < f->cap; i++) group_free(f->slots[i]);
  free(f->slots);
  free(f->ready.v);
  free(f->wait.v);
  free(f->check.v);
  rq_seqset_free(&f->leased);
  free(f);
}

void rq_fifo_drop(rq_env *env) {
  if (!env->fifo) return;
  fifo_free(env->fifo);
  env->fifo = NULL;
}

/* ---- heaps --------------------------------------------------------------- */

static uint64_t head_seq(const fgroup *g) {
  return g->seq[g->head];
}

static bool before(const fgroup *a, const fgroup *b, bool by_due) {
  if (by_due && a->due != b->due) return a->due < b->due;
  return head_seq(a) < head_seq(b);
}

/* Room for one more in l: 0 or -ENOMEM. */
static int list_room(glist *l) {
  if (l->n < l->cap) return 0;
  size_t ncap = l->cap ? l->cap * 2 : 64;
  fgroup **nv = realloc(l->v, ncap * sizeof *nv);
  if (!nv) return -ENOMEM;
  l->v = nv;
  l->cap = ncap;
  return 0;
}

static int heap_push(glist *h, fgroup *g, bool by_due) {
  if (list_room(h)) return -ENOMEM;
  size_t i = h->n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!before(g, h->v[p], by_due)) break;
    h->v[i] = h->v[p];
    i = p;
  }
  h->v[i] = g;
  return 0;
}

static fgroup *heap_pop(glist *h, bool by_due) {
  if (!h->n) return NULL;
  fgroup *top = h->v[0], *last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && before(h->v[c + 1], h->v[c], by_due)) c++;
    if (!before(h->v[c], last, by_due)) break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n) h->v[i] = last;
  return top;
}

/* ---- groups -------------------------------------------------------------- */

static size_t slot_of(const rq_fifo *f, bool anon, const uint8_t *k, size_t n) {
  size_t i = rq_fnv1a(k, n) & (f->cap - 1);
  for (fgroup *g; (g = f->slots[i]); i = (i + 1) & (f->cap - 1))
    if (g->anon == anon && g->klen == n && memcmp(g->key, k, n) == 0) break;
  return i;
}

/* Rebuilds the table at `ncap` slots, freeing idle (empty) groups. */
static int table_resize(rq_fifo *f, size_t ncap) {
  fgroup **old = f->slots;
  size_t ocap = f->cap;
  fgroup **ns = calloc(ncap, sizeof *ns);
  if (!ns) return -ENOMEM;
  f->slots = ns;
  f->cap = ncap;
  f->ngroups = 0;
  for (size_t i = 0; i < ocap; i++) {
    fgroup *g = old[i];
    if (!g) continue;
    if (g->where == FG_IDLE) {
      group_free(g);
      continue;
    }
    f->slots[slot_of(f, g->anon, g->key, g->klen)] = g;
    f->ngroups++;
  }
  f->nidle = 0;
  free(old);
  return 0;
}

static int seq_push(fgroup *g, uint64_t seq) {
  if (g->head + g->n == g->cap) {
    if (g->head > 0 && g->head >= g->cap / 2) { /* reuse the consumed front */
      memmove(g->seq, g->seq + g->head, g->n * sizeof *g->seq);
      g->head = 0;
    } else {
      size_t ncap = g->cap ? g->cap * 2 : 4;
      uint64_t *ns = realloc(g->seq, ncap * sizeof *ns);
      if (!ns) return -ENOMEM;
      g->seq = ns;
      g->cap = ncap;
    }
  }
  g->seq[g->head + g->n++] = seq;
  return 0;
}

static int to_check(rq_fifo *f, fgroup *g) {
  if (list_room(&f->check)) return -ENOMEM;
  f->check.v[f->check.n++] = g;
  g->where = FG_CHECK;
  return 0;
}

/* Adds a ready record to its group's tail. */
static int index_record(rq_fifo *f, uint64_t seq, const rq_view *v) {
  int fld = rq_view_has(v, RQ_F_CID) ? RQ_F_CID : rq_view_has(v, RQ_F_TYPE) ? RQ_F_TYPE : -1;
  bool anon = fld < 0;
  uint8_t sk[8];
  const uint8_t *k = sk;
  size_t kn = 8;
  if (anon) {
    rq_put_be64(sk, seq);
  } else {
    k = v->ptr[fld];
    kn = v->len[fld];
  }
  if ((f->ngroups + 1) * 2 > f->cap) {
    int rc = table_resize(f, f->cap ? f->cap * 2 : 64);
    if (rc) return rc;
  }
  size_t slot = slot_of(f, anon, k, kn);
  fgroup *g = f->slots[slot];
  if (!g) {
    if (!(g = calloc(1, sizeof *g)) || !(g->key = malloc(kn ? kn : 1))) {
      group_free(g);
      return -ENOMEM;
    }
    memcpy(g->key, k, kn);
    g->klen = kn;
    g->anon = anon;
    g->where = FG_IDLE;
    f->slots[slot] = g;
    f->ngroups++;
    f->nidle++;
  }
  int rc = seq_push(g, seq);
  if (rc == 0 && g->where == FG_IDLE) {
    f->nidle--;
    if ((rc = to_check(f, g))) f->nidle++;
  }
  return rc;
}

/* ---- keeping up with the queue ------------------------------------------ */

/* Indexes the ready records above f->indexed_to. Records that do not
 * decode are left out, as the queue walk left them out: rq_verify's job. */
static int extend(rq_env *env, rq_fifo *f, MDB_txn *txn) {
  MDB_cursor *cur;
  int rc = mdb_cursor_open(txn, env->db_ready, &cur);
  if (rc) return rq_mdb_err(rc);
  uint8_t kb[8];
  rq_put_be64(kb, f->indexed_to + 1);
  MDB_val k = {8, kb}, v;
  int out = 0;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) continue;
    uint64_t seq = rq_get_be64(k.mv_data);
    rq_view view;
    if (rq_ready_header(&v, seq, &view) == 0 && (out = index_record(f, seq, &view))) break;
    f->indexed_to = seq;
  }
  if (!out && rc != 0 && rc != MDB_NOTFOUND) out = rq_mdb_err(rc);
  mdb_cursor_close(cur);
  return out;
}

/* Next attempt time of a ready record: 0 unless it was nacked. */
static int due_of(rq_env *env, MDB_txn *txn, uint64_t seq, int64_t now, int64_t *due) {
  rq_view st;
  int rc = rq_state_get(txn, env, seq, &st);
  *due = rc == 0 && rq_view_has(&st, RQ_F_NEXT_ATTEMPT) ? st.num[RQ_F_NEXT_ATTEMPT] : 0;
  /* After a clock step back it may be due now (rq_due_at); INT64_MIN: no clock yet. */
  if (rc == 0 && now != INT64_MIN) *due = rq_due_at(*due, st.num[RQ_F_LAST_ATTEMPT], now);
  return rc == RQ_NOTFOUND ? 0 : rc;
}

/* Places a group whose head's state is unknown; on failure the group is
 * where it was. */
static int place(rq_env *env, rq_fifo *f, MDB_txn *txn, fgroup *g, int64_t now) {
  uint64_t h = head_seq(g);
  int rc;
  if (rq_seqset_has(&env->leased, h)) { /* after a rebuild under live leases */
    if (!(rc = rq_seqset_put(&f->leased, h, g))) g->where = FG_LEASED;
    return rc;
  }
  if ((rc = due_of(env, txn, h, now, &g->due))) return rc;
  if (!(rc = heap_push(&f->wait, g, true))) g->where = FG_WAIT;
  return rc;
}

/* Brings the index up to date for a lease or due query at `now` (heads
 * due by then move to `ready`). */
static int sync_index(rq_env *env, MDB_txn *txn, int64_t now) {
  if (!env->fifo && !(env->fifo = calloc(1, sizeof *env->fifo))) return -ENOMEM;
  rq_fifo *f = env->fifo;
  int rc = extend(env, f, txn);
  /* A due query (INT64_MIN) places with the latest lease clock. */
  int64_t pnow = now == INT64_MIN ? env->fifo_now : now;
  while (!rc && f->check.n) {
    fgroup *g = f->check.v[--f->check.n];
    if ((rc = place(env, f, txn, g, pnow))) f->check.v[f->check.n++] = g; /* where it was */
  }
  while (!rc && f->wait.n && f->wait.v[0]->due <= now) {
    fgroup *g = heap_pop(&f->wait, true);
    if ((rc = heap_push(&f->ready, g, false)))
      (void)heap_push(&f->wait, g, true); /* cannot fail: it just left */
    else
      g->where = FG_READY;
  }
  if (f->nidle > 1024 && f->nidle * 2 > f->ngroups && !rc) rc = table_resize(f, f->cap);
  if (rc) rq_fifo_drop(env); /* rebuilt from the queue next time */
  return rc;
}

/* Takes the head seq off a group whose head left the queue; the group is
 * idle when nothing is left (freed by the next table_resize), else its new
 * head waits for a check. */
static void head_gone(rq_env *env, rq_fifo *f, fgroup *g) {
  g->head++;
  g->n--;
  if (g->n) {
    if (g->cap > 64 && g->n < g->cap / 4) { /* give back what a drained backlog took */
      memmove(g->seq, g->seq + g->head, g->n * sizeof *g->seq);
      g->head = 0;
      uint64_t *ns = realloc(g->seq, g->cap / 2 * sizeof *ns);
      if (ns) {
        g->seq = ns;
        g->cap /= 2;
      }
    }
    if (to_check(f, g)) rq_fifo_drop(env);
    return;
  }
  free(g->seq);
  g->seq = NULL;
  g->head = g->cap = 0;
  g->where = FG_IDLE;
  f->nidle++;
}

int rq_fifo_lease(rq_env *env, MDB_txn *txn, int64_t now, rq_fifo_take_fn take, void *arg,
                  size_t max) {
  int rc = sync_index(env, txn, now);
  size_t got = 0;
  while (!rc && got < max && env->fifo && env->fifo->ready.n) {
    rq_fifo *f = env->fifo;
    fgroup *g = heap_pop(&f->ready, false);
    uint64_t seq = head_seq(g);
    uint8_t kb[8];
    rq_put_be64(kb, seq);
    MDB_val k = {8, kb}, raw;
    int r = mdb_get(txn, env->db_ready, &k, &raw);
    rq_view v;
    if (r == MDB_NOTFOUND || (r == 0 && rq_ready_header(&raw, seq, &v) != 0)) {
      /* Not (or no longer) a readable record: cannot happen while only
       * this index's owner writes, but never block the group on it. */
      head_gone(env, f, g);
      continue;
    }
    if (r) {
      rc = rq_mdb_err(r);
      g->where = FG_READY;
      if (heap_push(&f->ready, g, false)) rq_fifo_drop(env);
      break;
    }
    if ((rc = rq_seqset_put(&f->leased, seq, g))) {
      rq_fifo_drop(env);
      break;
    }
    g->where = FG_LEASED;
    rc = take(arg, seq, &raw, txn);
    if (rc == 1) { /* not leasable now (no body): the group waits, as the walk did */
      rq_fifo_note(env, seq, false, 0);
      rc = 0;
      continue;
    }
    if (rc) {
      rq_fifo_note(env, seq, false, 0);
      break;
    }
    got++;
  }
  return rc;
}

int64_t rq_fifo_next_due(rq_env *env, MDB_txn *txn) {
  /* Heads already found due by a lease count as due now (0); waiting ones
   * report their own time, even if it has passed. */
  if (sync_index(env, txn, INT64_MIN) || !env->fifo) return 0; /* unknown: poll soon */
  rq_fifo *f = env->fifo;
  if (f->ready.n) return 0;
  return f->wait.n ? f->wait.v[0]->due : INT64_MAX;
}

void rq_fifo_note(rq_env *env, uint64_t seq, bool gone, int64_t due) {
  rq_fifo *f = env->fifo;
  if (!f) return;
  fgroup *g = rq_seqset_get(&f->leased, seq);
  if (!g) {
    /* Not a head we leased: an ack of a record leased without RQ_LEASE_FIFO
     * or not leased at all. If we indexed it, we can no longer vouch for
     * its group. */
    if (seq <= f->indexed_to) rq_fifo_drop(env);
    return;
  }
  rq_seqset_del(&f->leased, seq);
  if (head_seq(g) != seq) { /* cannot happen; rebuild rather than guess */
    rq_fifo_drop(env);
    return;
  }
  if (gone) {
    head_gone(env, f, g);
  } else if (due > 0) { /* nacked: wait for the retry */
    g->due = due;
    g->where = FG_WAIT;
    if (heap_push(&f->wait, g, true)) rq_fifo_drop(env);
  } else if (to_check(f, g)) { /* released: state as stored */
    rq_fifo_drop(env);
  }
}
