/* rq: dead-letter queue access and verification. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rq_internal.h"

static bool str_eq(const rq_view *v, int f, const char *s) {
  size_t n = strlen(s);
  return rq_view_has(v, f) && v->len[f] == n && memcmp(v->ptr[f], s, n) == 0;
}

static bool matches(const rq_view *v, const rq_dlq_filter *f) {
  if (!f) return true;
  if (f->reason && *f->reason && !str_eq(v, RQ_F_DLQ_REASON, f->reason)) return false;
  if (f->type && *f->type && !str_eq(v, RQ_F_TYPE, f->type)) return false;
  return true;
}

/* DLQ values that do not decode are shown as "corrupt" with their raw
 * bytes, never hidden and never fatal. */
static void dlq_view(uint64_t seq, const MDB_val *val, rq_view *v) {
  if (rq_decode(val->mv_data, val->mv_size, v, true) != 0)
    rq_view_corrupt(v, seq, val->mv_data, val->mv_size, 0);
}

/* Calls fn for each DLQ entry matching f, in id order, up to f->limit.
 * fn returns 0 to go on or an error to stop with. Returns 0 or the first
 * error (from fn or LMDB). */
typedef int (*dlq_visit_fn)(uint64_t seq, const rq_view *view, void *arg);

static int dlq_scan(MDB_txn *txn, MDB_dbi dbi, const rq_dlq_filter *f, dlq_visit_fn fn, void *arg) {
  MDB_cursor *cur;
  int rc = mdb_cursor_open(txn, dbi, &cur);
  if (rc) return rq_mdb_err(rc);
  size_t n = 0, limit = f && f->limit ? f->limit : SIZE_MAX;
  uint8_t kb[8];
  /* after_seq = UINT64_MAX leaves nothing to list. */
  bool any = !(f && f->after_seq == UINT64_MAX);
  rq_put_be64(kb, f && any ? f->after_seq + 1 : 0);
  MDB_val k = {8, kb}, v;
  int out = 0;
  for (rc = any ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : MDB_NOTFOUND; rc == 0 && n < limit;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) continue;
    uint64_t seq = rq_get_be64(k.mv_data);
    rq_view view;
    dlq_view(seq, &v, &view);
    if (!matches(&view, f)) continue;
    if ((out = fn(seq, &view, arg)) != 0) break;
    n++;
  }
  if (!out && rc && rc != MDB_NOTFOUND) out = rq_mdb_err(rc);
  mdb_cursor_close(cur);
  return out;
}

typedef struct {
  rq_record *arr;
  size_t n, cap;
} record_list;

static int collect_record(uint64_t seq, const rq_view *view, void *arg) {
  record_list *l = arg;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    rq_record *na = realloc(l->arr, cap * sizeof *na);
    if (!na) return -ENOMEM;
    l->arr = na;
    l->cap = cap;
  }
  int rc = rq_materialize(view, &l->arr[l->n]);
  if (rc) return rc;
  l->arr[l->n++].seq = seq;
  return 0;
}

/* The record without a copy of its body: body NULL, body_len its size. */
static int collect_meta(uint64_t seq, const rq_view *view, void *arg) {
  rq_view v = *view;
  size_t body = rq_view_has(view, RQ_F_BODY) ? view->len[RQ_F_BODY] : 0;
  rq_view_clear(&v, RQ_F_BODY);
  int rc = collect_record(seq, &v, arg);
  if (rc) return rc;
  record_list *l = arg;
  l->arr[l->n - 1].body = NULL;
  l->arr[l->n - 1].body_len = body;
  return 0;
}

static int dlq_list(rq_env *env, const rq_dlq_filter *f, rq_record **out, dlq_visit_fn collect) {
  if (!env || !out) return -EINVAL;
  *out = NULL;
  MDB_txn *txn;
  int rc = rq_read_begin(env, &txn);
  if (rc) return rc;
  record_list l = {0};
  rc = dlq_scan(txn, env->db_dlq, f, collect, &l);
  rq_read_end(env, txn);
  if (rc) {
    rq_records_free(l.arr, l.n);
    return rc;
  }
  if (l.n > (size_t)INT32_MAX) { /* the count is returned as an int */
    rq_records_free(l.arr, l.n);
    return -EOVERFLOW;
  }
  *out = l.arr;
  return (int)l.n;
}

int rq_dlq_list(rq_env *env, const rq_dlq_filter *f, rq_record **out) {
  return dlq_list(env, f, out, collect_record);
}

int rq_dlq_list_meta(rq_env *env, const rq_dlq_filter *f, rq_record **out) {
  return dlq_list(env, f, out, collect_meta);
}

int rq_dlq_get(rq_env *env, uint64_t id, rq_record *out) {
  if (!env || !out) return -EINVAL;
  memset(out, 0, sizeof *out);
  MDB_txn *txn;
  int rc = rq_read_begin(env, &txn);
  if (rc) return rc;
  uint8_t kb[8];
  rq_put_be64(kb, id);
  MDB_val k = {8, kb}, v;
  rc = mdb_get(txn, env->db_dlq, &k, &v);
  if (rc == 0) {
    rq_view view;
    dlq_view(id, &v, &view);
    rc = rq_materialize(&view, out);
    if (!rc) out->seq = id;
  } else {
    rc = rq_mdb_err(rc);
  }
  rq_read_end(env, txn);
  return rc;
}

typedef struct {
  uint64_t *ids;
  size_t n, cap;
} id_list;

static int collect_id(uint64_t seq, const rq_view *view, void *arg) {
  (void)view;
  id_list *l = arg;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    uint64_t *ns = realloc(l->ids, cap * sizeof *ns);
    if (!ns) return -ENOMEM;
    l->ids = ns;
    l->cap = cap;
  }
  l->ids[l->n++] = seq;
  return 0;
}

/* Selected DLQ ids for replay/purge: the given ones, or every match of f. */
static int select_ids(rq_txn *t, const uint64_t *ids, size_t nids, const rq_dlq_filter *f,
                      uint64_t **sel, size_t *nsel) {
  *sel = NULL;
  *nsel = 0;
  if (ids) {
    uint64_t *s = malloc((nids ? nids : 1) * sizeof *s);
    if (!s) return -ENOMEM;
    memcpy(s, ids, nids * sizeof *s);
    *sel = s;
    *nsel = nids;
    return 0;
  }
  id_list l = {0};
  int rc = dlq_scan(t->txn, t->env->db_dlq, f, collect_id, &l);
  if (rc) {
    free(l.ids);
    return rc;
  }
  *sel = l.ids;
  *nsel = l.n;
  return 0;
}

static int dlq_move(rq_env *env, const uint64_t *ids, size_t nids, const rq_dlq_filter *f,
                    size_t *done, size_t *missing, bool replay) {
  if (done) *done = 0;
  if (missing) *missing = 0;
  if (!env || (nids && !ids)) return -EINVAL;
  if (env->readonly) return RQ_READONLY;
  rq_txn *t;
  int rc = rq_txn_begin_internal(env, &t);
  if (rc) return rc;
  uint64_t *sel;
  size_t nsel, ndone = 0, nmiss = 0;
  int64_t now_ms = rq_now_ms();
  if ((rc = select_ids(t, ids, nids, f, &sel, &nsel))) {
    rq_txn_abort(t);
    return rc;
  }
  for (size_t i = 0; i < nsel && !rc; i++) {
    uint8_t kb[8];
    rq_put_be64(kb, sel[i]);
    MDB_val k = {8, kb}, v;
    rc = mdb_get(t->txn, env->db_dlq, &k, &v);
    if (rc == MDB_NOTFOUND) {
      nmiss++;
      rc = 0;
      continue;
    }
    if (rc) {
      rc = rq_mdb_err(rc);
      break;
    }
    rq_view view;
    dlq_view(sel[i], &v, &view);
    /* Given ids still obey the reason/type filter: a purge of ids "with
     * reason rejected" must not delete an entry of another reason. Such
     * ids are left alone and counted neither as done nor as missing. */
    if (ids && !matches(&view, f)) continue;
    size_t body = view.len[RQ_F_BODY];
    if (replay) {
      /* Back to the tail with a fresh retry history. */
      if ((rc = rq_txn_cap_check(t, body + 256))) break;
      uint64_t seq = t->c.next_seq;
      rq_view_set_num(&view, RQ_F_SEQ, (int64_t)seq);
      static const int clear[] = {RQ_F_ATTEMPTS,     RQ_F_NEXT_ATTEMPT, RQ_F_FIRST_ATTEMPT,
                                  RQ_F_LAST_ATTEMPT, RQ_F_LAST_ERROR,   RQ_F_DLQ_REASON,
                                  RQ_F_DLQ_CODE,     RQ_F_DLQ_MESSAGE,  RQ_F_DLQ_TIME};
      for (size_t j = 0; j < sizeof clear / sizeof clear[0]; j++) rq_view_clear(&view, clear[j]);
      /* The retry budget (RELAY_RETRY_MAX_AGE) restarts now: measured from
       * received_ms, a replayed "expired" event would go straight back to
       * the DLQ at its first failure. */
      rq_view_set_num(&view, RQ_F_REPLAYED, now_ms);
      if ((rc = rq_ready_put(t, seq, &view))) break;
      t->c.next_seq++;
      t->c.ready_count++;
      t->c.ready_bytes += body;
    }
    if ((rc = mdb_del(t->txn, env->db_dlq, &k, NULL))) {
      rc = rq_mdb_err(rc);
      break;
    }
    t->c.dlq_count = t->c.dlq_count ? t->c.dlq_count - 1 : 0;
    t->c.dlq_bytes = t->c.dlq_bytes > body ? t->c.dlq_bytes - body : 0;
    t->dirty = true;
    ndone++;
  }
  free(sel);
  if (rc) {
    rq_txn_abort(t);
    return rc;
  }
  if ((rc = rq_txn_commit(t))) return rc;
  if (done) *done = ndone;
  if (missing) *missing = nmiss;
  return 0;
}

int rq_dlq_replay(rq_env *env, const uint64_t *ids, size_t nids, const rq_dlq_filter *f,
                  size_t *moved, size_t *missing) {
  return dlq_move(env, ids, nids, f, moved, missing, true);
}

int rq_dlq_purge(rq_env *env, const uint64_t *ids, size_t nids, const rq_dlq_filter *f,
                 size_t *purged, size_t *missing) {
  return dlq_move(env, ids, nids, f, purged, missing, false);
}

/* ---- verify --------------------------------------------------------------- */

typedef struct {
  uint64_t *v;
  size_t n, cap;
} u64vec;

static int vec_push(u64vec *a, uint64_t x) {
  if (a->n == a->cap) {
    size_t ncap = a->cap ? a->cap * 2 : 64;
    uint64_t *nv = realloc(a->v, ncap * sizeof *nv);
    if (!nv) return -ENOMEM;
    a->v = nv;
    a->cap = ncap;
  }
  a->v[a->n++] = x;
  return 0;
}

/* Walks one DB of full records: counts, checks order, collects bad keys. */
static int walk(rq_env *env, MDB_txn *txn, MDB_dbi dbi, uint64_t next_seq, rq_verify_report *rep,
                u64vec *bad, uint64_t *count, uint64_t *bytes) {
  MDB_cursor *cur;
  int rc = mdb_cursor_open(txn, dbi, &cur);
  if (rc) return rq_mdb_err(rc);
  MDB_val k, v;
  uint64_t prev = 0;
  int out = 0;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    rep->records++;
    if (k.mv_size != 8) {
      rep->order_errors++;
      continue;
    }
    uint64_t seq = rq_get_be64(k.mv_data);
    if (seq <= prev || seq >= next_seq) rep->order_errors++;
    prev = seq;
    rq_view view;
    int bad_rec = dbi == env->db_ready ? rq_ready_view(txn, env, seq, &v, &view)
                                       : rq_decode(v.mv_data, v.mv_size, &view, true);
    if (bad_rec || (uint64_t)view.num[RQ_F_SEQ] != seq) {
      if ((out = vec_push(bad, seq))) break;
      continue;
    }
    (*count)++;
    *bytes += view.len[RQ_F_BODY];
  }
  if (!out && rc && rc != MDB_NOTFOUND) out = rq_mdb_err(rc);
  mdb_cursor_close(cur);
  return out;
}

int rq_verify(rq_env *env, rq_verify_report *report) {
  rq_verify_report dummy;
  if (!report) report = &dummy;
  memset(report, 0, sizeof *report);
  if (!env) return -EINVAL;
  MDB_txn *txn;
  rq_txn *t = NULL;
  int rc;
  rq_counters c;
  if (env->readonly) {
    if ((rc = rq_read_begin(env, &txn))) return rc;
    if ((rc = rq_counters_load(env, txn, &c))) {
      rq_read_end(env, txn);
      return rc;
    }
  } else {
    if ((rc = rq_txn_begin_internal(env, &t))) return rc;
    txn = t->txn;
    c = t->c;
  }
  u64vec bad_ready = {0}, bad_dlq = {0};
  uint64_t rcount = 0, rbytes = 0, dcount = 0, dbytes = 0;
  rc = walk(env, txn, env->db_ready, c.next_seq, report, &bad_ready, &rcount, &rbytes);
  if (!rc) rc = walk(env, txn, env->db_dlq, c.next_seq, report, &bad_dlq, &dcount, &dbytes);
  report->corrupt = bad_ready.n + bad_dlq.n;
  if (rc || env->readonly) goto out;

  int64_t now = rq_now_ms();
  /* Quarantine: the raw bytes become the body of a "corrupt" DLQ entry. */
  for (int pass = 0; pass < 2 && !rc; pass++) {
    u64vec *bad = pass ? &bad_dlq : &bad_ready;
    MDB_dbi from = pass ? env->db_dlq : env->db_ready;
    for (size_t i = 0; i < bad->n && !rc; i++) {
      uint8_t kb[8];
      rq_put_be64(kb, bad->v[i]);
      MDB_val k = {8, kb}, v;
      if ((rc = mdb_get(txn, from, &k, &v))) {
        rc = rq_mdb_err(rc);
        break;
      }
      /* A header that does not decode may still have its body intact in
       * `bodies`: those are the event's exact bytes, which the DLQ entry
       * must keep (and a replay publish). The header's bytes say less and
       * are dropped; without a stored body they are all there is. */
      bool kept_body = false;
      if (!pass && !env->no_bodies) {
        MDB_val b;
        int r2 = mdb_get(txn, env->db_bodies, &k, &b);
        if (r2 == 0) {
          v = b;
          kept_body = true;
        } else if (r2 != MDB_NOTFOUND) {
          rc = rq_mdb_err(r2);
          break;
        }
      }
      /* Copy first: the put below may move the page v points into. */
      void *raw = malloc(v.mv_size ? v.mv_size : 1);
      if (!raw) {
        rc = -ENOMEM;
        break;
      }
      size_t rawn = v.mv_size;
      memcpy(raw, v.mv_data, rawn);
      rq_view view;
      rq_view_corrupt(&view, bad->v[i], raw, rawn, now);
      if (kept_body) {
        static const char kmsg[] = "record header could not be decoded; body kept";
        rq_view_set_str(&view, RQ_F_DLQ_MESSAGE, kmsg, sizeof kmsg - 1);
      }
      if (!pass && (rc = mdb_del(txn, env->db_ready, &k, NULL))) rc = rq_mdb_err(rc);
      if (!pass) mdb_del(txn, env->db_bodies, &k, NULL); /* may be inline (format 1) */
      if (!rc) {
        mdb_del(txn, env->db_state, &k, NULL);
        rc = rq_txn_put_view(t, env->db_dlq, bad->v[i], &view, 0, false);
      }
      free(raw);
      dcount++;
      dbytes += rawn;
      if (!pass) t->c.dead++;
    }
  }
  if (rc) goto out;
  /* Retry state and bodies of records that are no longer ready are dead
   * weight (no commit leaves them; a damaged file might). */
  for (int pass = 0; pass < 2; pass++) {
    if (pass && env->no_bodies) break;
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, pass ? env->db_bodies : env->db_state, &cur))) {
      rc = rq_mdb_err(rc);
      goto out;
    }
    MDB_val k, v, rv;
    int r2;
    for (r2 = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r2 == 0;) {
      if (mdb_get(txn, env->db_ready, &k, &rv) == MDB_NOTFOUND) {
        if ((r2 = mdb_cursor_del(cur, 0))) break;
        if (pass) report->orphan_bodies++;
      }
      r2 = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (r2 && r2 != MDB_NOTFOUND) {
      rc = rq_mdb_err(r2);
      goto out;
    }
  }
  /* The gauges are derived data: rebuild them from what is really there. */
  t->c.ready_count = rcount;
  t->c.ready_bytes = rbytes;
  t->c.dlq_count = dcount;
  t->c.dlq_bytes = dbytes;
  t->dirty = true;
out:
  free(bad_ready.v);
  free(bad_dlq.v);
  if (env->readonly) {
    rq_read_end(env, txn);
    return rc;
  }
  if (rc) {
    rq_txn_abort(t);
    return rc;
  }
  rc = rq_txn_commit(t);
  /* Quarantine may have taken records the FIFO index holds. */
  pthread_mutex_lock(&env->mu);
  rq_fifo_drop(env);
  pthread_mutex_unlock(&env->mu);
  return rc;
}
