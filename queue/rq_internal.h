/* Internals shared by the rq source files. Not installed, not for users. */
#ifndef RQ_INTERNAL_H
#define RQ_INTERNAL_H

#include <lmdb.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "rq.h"

/* Version of the on-disk layout (meta "format") and of each record ("v").
 * See queue/FORMAT.md before changing anything here. */
#define RQ_FORMAT_VERSION 2
#define RQ_RECORD_VERSION 1
/* Ready records up to this many encoded bytes keep their body inline: they
 * fit an LMDB leaf node (4 KiB pages: values up to about 2,020 bytes). */
#define RQ_INLINE_MAX 2000
/* Largest zero fill grow_ahead() (rq.c) writes at once. */
#define RQ_ZERO_STEP (1u << 20)

/* Record field keys (msgpack map keys, positive fixints). Never renumber. */
enum {
  RQ_F_V = 0,
  RQ_F_SEQ = 1,
  RQ_F_RECEIVED = 2,
  RQ_F_BODY = 3,
  RQ_F_WEBHOOK_ID = 4,
  RQ_F_WEBHOOK_ATTEMPT = 5,
  RQ_F_API_KEY = 6,
  RQ_F_TYPE = 7,
  RQ_F_CID = 8,
  RQ_F_CHANNEL_TYPE = 9,
  RQ_F_CHANNEL_ID = 10,
  RQ_F_USER_ID = 11,
  RQ_F_ATTEMPTS = 12,
  RQ_F_NEXT_ATTEMPT = 13,
  RQ_F_FIRST_ATTEMPT = 14,
  RQ_F_LAST_ATTEMPT = 15,
  RQ_F_LAST_ERROR = 16,
  RQ_F_DLQ_REASON = 17,
  RQ_F_DLQ_CODE = 18,
  RQ_F_DLQ_MESSAGE = 19,
  RQ_F_DLQ_TIME = 20,
  RQ_F_REPLAYED = 21,
  RQ_F_COUNT = 22
};

/* A decoded record whose strings and body point into the encoded bytes
 * (usually LMDB's map, so only valid inside the read transaction).
 * Integer fields live in num[], string/bin fields in ptr[]/len[];
 * `present` has bit k set when field k was stored. */
typedef struct {
  uint32_t present;
  int64_t num[RQ_F_COUNT];
  const uint8_t *ptr[RQ_F_COUNT];
  size_t len[RQ_F_COUNT];
} rq_view;

static inline bool rq_view_has(const rq_view *v, int f) {
  return (v->present >> f) & 1u;
}
void rq_view_set_num(rq_view *v, int f, int64_t x);
void rq_view_set_str(rq_view *v, int f, const void *p, size_t n);
void rq_view_clear(rq_view *v, int f);
/* Fills a view from a caller's record (borrowed pointers). */
void rq_view_from_record(rq_view *v, const rq_record *r);
/* Copies state fields (attempts ... last_error) of `st` over `v`. */
void rq_view_overlay_state(rq_view *v, const rq_view *st);

/* Decodes `len` bytes. Full records need v, seq and body; state records
 * only v. Returns 0, RQ_CORRUPT or RQ_VERSION. Never allocates. */
int rq_decode(const void *buf, size_t len, rq_view *out, bool full);
/* Appends the msgpack encoding of every present field to pk. */
int rq_encode(msgpack_packer *pk, const rq_view *v);
/* Encodes only the retry-state fields (the `state` DB value). */
int rq_encode_state(msgpack_packer *pk, const rq_view *v);
/* Copies a view into an owned rq_record (one allocation). -ENOMEM. */
int rq_materialize(const rq_view *v, rq_record *out);
/* A stand-in for bytes that do not decode: raw bytes as body, reason
 * "corrupt". Used by verify and by DLQ reads. */
void rq_view_corrupt(rq_view *v, uint64_t seq, const void *raw, size_t len, int64_t now_ms);

/* Minimal bounds-checked msgpack reader, also used for the meta values. */
typedef struct {
  const uint8_t *p, *end;
} rq_rd;
int rq_rd_array(rq_rd *r, uint32_t *n);
int rq_rd_uint(rq_rd *r, uint64_t *out);

/* Persistent counters (meta key "counters"). */
typedef struct {
  uint64_t next_seq, appended, acked, dead, duplicates;
  uint64_t ready_count, ready_bytes, dlq_count, dlq_bytes;
} rq_counters;

/* Dedup table (rq_dedup.c): 64-bit id hash -> (seen ms, seq of the ready
 * record that holds the sighting, 0 when the log does); h 0 = empty, 1 =
 * removed. While it grows, `old` is the previous table being moved over.
 * `sweep`: where the expiry sweep over `slots` goes on. */
typedef struct {
  uint64_t h;
  int64_t t;
  uint64_t seq;
} rq_dedup_slot;
/* A table entry rekey_future (rq_dedup.c) moved from time `from` to `to`
 * inside a batch: put back if the batch does not commit. */
typedef struct {
  uint64_t h;
  int64_t from, to;
} rq_dedup_move;
typedef struct {
  rq_dedup_slot *slots, *old;
  size_t cap, n, old_cap, old_n, mig;
  size_t sweep;
} rq_dedup_table;

/* Set of seqs, or map seq -> pointer when vals is set (open addressing,
 * linear probing, seq 0 = empty slot). */
typedef struct {
  uint64_t *slots;
  void **vals; /* NULL until a non-NULL value is put */
  size_t cap, n;
} rq_seqset;
bool rq_seqset_has(const rq_seqset *s, uint64_t seq);
void *rq_seqset_get(const rq_seqset *s, uint64_t seq);
int rq_seqset_put(rq_seqset *s, uint64_t seq, void *val); /* 0 or -ENOMEM */
void rq_seqset_del(rq_seqset *s, uint64_t seq);
void rq_seqset_free(rq_seqset *s);

typedef struct rq_fifo rq_fifo;

struct rq_env {
  /* A failed meta page write makes LMDB refuse every later transaction
   * (MDB_PANIC) until the environment is closed and opened again. open_lk is
   * held shared for the life of every transaction (and any other use of
   * mdb), exclusively while env_reopen() (rq.c) replaces mdb; `opens` counts
   * the replacements, so concurrent callers that saw the same failure
   * reopen once. mdb is NULL when a reopen failed (the next use retries). */
  pthread_rwlock_t open_lk;
  uint64_t opens;
  char *dir; /* of data.mdb, for the reopen */
  MDB_env *mdb;
  MDB_dbi db_ready, db_bodies, db_state, db_dlq, db_dedup_time, db_meta;
  bool readonly;
  bool no_bodies; /* read-only open of a format 1 queue: db_bodies unset */
  int lock_fd;
  uint64_t map_size;
  uint64_t psize;      /* LMDB page size */
  uint64_t append_cap; /* live bytes above which appends are refused */
  uint64_t file_end;   /* known size of data.mdb (writer only) */
  uint64_t grow_chunk; /* allocation step, see grow_ahead(); 0 = off */
  int zero_fd;         /* data.mdb opened O_DIRECT for grow_ahead(), or -1 */
  void *zero_buf;      /* RQ_ZERO_STEP zero bytes, 4 KiB aligned */
  int64_t dedup_window_ms;
  uint32_t watermark_pct;
  pthread_mutex_t mu; /* guards leased, hook */
  rq_seqset leased;
  rq_commit_hook hook;
  void *hook_arg;
  _Atomic uint64_t used_bytes; /* live pages after the last commit */
  _Atomic uint64_t commits;
  rq_txn *spare;         /* reused batch handle; only touched under LMDB's writer lock */
  pthread_mutex_t dmu;   /* guards dedup */
  rq_dedup_table dedup;  /* writable envs only (rq_dedup.c) */
  uint64_t last_appends; /* of the last committed batch; LMDB's writer lock */
  _Atomic uint64_t last_sync_ns; /* mdb_txn_commit of the last good commit */
  rq_fifo *fifo;         /* FIFO lease index (rq_fifo.c), guarded by mu; NULL: not built */
  /* Lease scan start (see scan_start in rq.c), guarded by mu. */
  uint64_t scan_from;
  int64_t scan_due;
  int64_t scan_now; /* latest lease clock since scan_from was last reset */
  int64_t fifo_now; /* latest FIFO lease clock since the index was built */
};

/* A lease the batch ends: `due` is the record's next attempt if it stays
 * ready (nack), RQ_DUE_GONE if the commit removes it (ack, dead-letter). */
#define RQ_DUE_GONE INT64_MIN
typedef struct {
  uint64_t seq;
  int64_t due;
} rq_release_ent;

struct rq_txn {
  rq_env *env;
  MDB_txn *txn;
  int failed; /* first poisoning error, 0 while usable */
  bool dirty;
  uint64_t used_est; /* live bytes: exact at begin, plus what we added */
  rq_counters c;
  uint64_t appended0; /* c.appended at begin */
  msgpack_sbuffer sb;
  msgpack_packer pk;
  rq_release_ent *release; /* leases to release after commit/abort */
  size_t nrelease, caprelease;
  rq_dedup_move *moved; /* dedup table entries to put back unless committed */
  size_t nmoved, capmoved;
};

int rq_mdb_err(int rc);
/* A read transaction under open_lk (see rq_env), reopening the environment
 * first if LMDB declared it unusable. rq_read_end aborts it and drops the
 * lock. Callers must not hold env->mu (rq.c has a variant for that). */
int rq_read_begin(rq_env *env, MDB_txn **txn);
void rq_read_end(rq_env *env, MDB_txn *txn);
int64_t rq_now_ms(void);
void rq_put_be64(uint8_t out[8], uint64_t x);
uint64_t rq_get_be64(const void *p);
/* 64-bit FNV-1a of n bytes: dedup keys, the dedup table, FIFO groups. */
static inline uint64_t rq_fnv1a(const void *p, size_t n) {
  const uint8_t *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
int rq_counters_load(rq_env *env, MDB_txn *txn, rq_counters *c);
int rq_counters_store(MDB_txn *txn, const rq_counters *c);
/* Begins a batch for library-internal maintenance (replay, purge, verify). */
int rq_txn_begin_internal(rq_env *env, rq_txn **out);
/* Puts an encoded view into dbi under seq (flags: MDB_APPEND, ...). */
int rq_txn_put_view(rq_txn *t, MDB_dbi dbi, uint64_t seq, const rq_view *v, unsigned flags,
                    bool state_only);
int rq_txn_fail(rq_txn *t, int err);
/* Ready records (see "Ready records" in FORMAT.md): the header in `ready`,
 * the body in `bodies`, both under seq. rq_ready_put writes a view that has
 * its body (MDB_APPEND: seq must be above every ready key). rq_ready_header
 * decodes a `ready` value without its body and checks it belongs to seq;
 * rq_ready_body then attaches the body (inline in format 1 records, else
 * from `bodies`); rq_ready_view does both. The view points into the map.
 * rq_ready_del removes header, body and retry state. */
int rq_ready_put(rq_txn *t, uint64_t seq, const rq_view *v);
int rq_ready_header(const MDB_val *raw, uint64_t seq, rq_view *v);
int rq_ready_body(MDB_txn *txn, rq_env *env, uint64_t seq, rq_view *v);
int rq_ready_view(MDB_txn *txn, rq_env *env, uint64_t seq, const MDB_val *raw, rq_view *v);
int rq_ready_del(rq_txn *t, uint64_t seq);
/* The retry state of a ready record (its `state` value, decoded into *st):
 * 0, RQ_NOTFOUND when it was never nacked (or the value does not decode),
 * or an LMDB error. */
int rq_state_get(MDB_txn *txn, rq_env *env, uint64_t seq, rq_view *st);
/* Dedup index (rq_dedup.c). load: fills the table from the log and the
 * ready records (writable open). check: 1 when id was seen less than the
 * window before now_ms (as seen from txn), 0 if not, <0 error (RQ_READONLY
 * on a read-only env). record: notes the sighting of id at now_ms, held by
 * the ready record seq, or logs it when seq is 0 (a record stored
 * elsewhere). leave: ready record seq, decoded in *v, is leaving `ready`:
 * its sighting, if still the id's latest and inside the window, goes into
 * the log. prune: removes a bite of expired entries (the table entries it
 * moves are noted in t->moved). */
int rq_dedup_load(rq_env *env, MDB_txn *txn);
void rq_dedup_free(rq_env *env);
int rq_dedup_check(rq_env *env, MDB_txn *txn, const char *id, int64_t now_ms);
int rq_dedup_record(rq_txn *t, const char *id, int64_t now_ms, uint64_t seq);
int rq_dedup_leave(rq_txn *t, uint64_t seq, const rq_view *v);
int rq_dedup_prune(rq_txn *t);
/* Puts back the table entries a batch that did not commit moved (its
 * `moved` list, taken out of the handle), newest first. */
void rq_dedup_revert(rq_env *env, const rq_dedup_move *m, size_t n);
/* FIFO lease index (rq_fifo.c); all under env->mu. lease: leases up to max
 * group heads, oldest first, through take(arg, seq, raw header, txn), which
 * returns 0 (leased), 1 (not leasable now) or <0 (error, returned). next_due:
 * as rq_next_due_ms_flags(RQ_LEASE_FIFO). note: a lease ended (gone: the
 * record left the queue; else due: its next attempt, 0 if unchanged). drop:
 * forgets the index (rebuilt by the next FIFO lease). */
typedef int (*rq_fifo_take_fn)(void *arg, uint64_t seq, const MDB_val *raw, MDB_txn *txn);
int rq_fifo_lease(rq_env *env, MDB_txn *txn, int64_t now, rq_fifo_take_fn take, void *arg,
                  size_t max);
int64_t rq_fifo_next_due(rq_env *env, MDB_txn *txn);
void rq_fifo_note(rq_env *env, uint64_t seq, bool gone, int64_t due);
void rq_fifo_drop(rq_env *env);
/* When a nacked record (next attempt, last failed attempt) may be leased at
 * `now`: see item_due in rq.c. */
int64_t rq_due_at(int64_t next, int64_t last, int64_t now);
/* RQ_MAP_FULL when adding about `add` bytes would cross env->append_cap. */
int rq_txn_cap_check(rq_txn *t, size_t add);
uint64_t rq_used_bytes_in(rq_env *env, MDB_txn *txn);

#endif
