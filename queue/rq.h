/* rq: the durable event queue of relay (LMDB + msgpack-c).
 *
 * This header is the manual. The on-disk format is documented in
 * queue/FORMAT.md and owned by this library alone.
 *
 * Model
 * -----
 * An event is appended as a record with a sequence number (seq), strictly
 * increasing over the life of the environment. Records wait in the ready
 * queue until a publisher leases them, then are acked (removed), nacked
 * (attempts+1, retried later) or dead-lettered (moved to the DLQ with a
 * reason). The DLQ keeps the original body and can be replayed.
 *
 * Durability
 * ----------
 * Writes happen in a write batch (rq_txn): any mix of appends, acks, nacks
 * and dead-letters, committed with ONE LMDB commit. rq_txn_commit() returns
 * only after the data is on disk: LMDB's full durability is kept (no
 * MDB_NOSYNC, no MDB_NOMETASYNC, no MDB_WRITEMAP). This is the "fsync before
 * 2xx" of relayd: its group commit calls it once per batch of requests.
 *
 * Threads and processes
 * ---------------------
 * One writer at a time per environment (LMDB's rule): rq_txn_* calls belong
 * to one thread at a time. Reads (lease, stats, DLQ listing) may run on any
 * thread concurrently with the writer and never keep a read transaction
 * open after they return. Another process may open the same directory with
 * RQ_OPEN_READONLY (relayctl) while relayd writes. Leases are in-memory
 * state of the opening process: after a crash, every record is ready again
 * (at-least-once).
 *
 * Errors
 * ------
 * 0 on success; a negative errno (-ENOMEM, -EIO, -ENOSPC, -EACCES, ...) for
 * system errors; RQ_E* codes below for queue conditions. rq_strerror() names
 * any of them. Some errors of rq_txn_* calls only refuse that one call and
 * leave the batch usable: RQ_DUPLICATE, RQ_NOTFOUND, RQ_TOO_BIG, -EINVAL, and
 * RQ_MAP_FULL from the append cap (see Capacity). Any other error poisons the
 * batch: later calls return RQ_BAD_TXN, rq_txn_commit() returns the first
 * error and stores nothing. rq_txn_status() tells which case you are in;
 * aborting after any error is always correct.
 *
 * Capacity
 * --------
 * Appends (and DLQ replays) are refused with RQ_MAP_FULL once live data
 * would pass map_size minus a reserve (map_size/32, at least 256 KiB, at
 * most a quarter). The reserve keeps acks and nacks working in a full
 * queue: they need a few fresh pages (copy-on-write) even though they free
 * space, so a full queue can always drain. A dead-letter copies its whole
 * body into the DLQ, and the ready copy's pages are reusable only two
 * commits later: in a small full map large ones may not fit (RQ_MAP_FULL)
 * until acks have freed space; relay/commit.c then takes them out of the
 * batch so that the acks commit. LMDB itself may still
 * run out of pages (fragmentation, readers pinning old pages): that also
 * returns RQ_MAP_FULL, poisons the batch, and leaves committed data and the
 * environment intact. A map_size below the data already stored (a limit
 * lowered under a backlog) maps that data plus the reserve, so the backlog
 * still drains; appends are refused until live data is back under the
 * cap. data.mdb grows ahead of LMDB in zero-filled steps
 * (map_size/64, 256 KiB to 8 MiB) so that commits rarely extend the file;
 * it never grows past map_size (but for that reserve above a larger
 * backlog), and under steady append+ack it stops growing
 * because freed pages are reused.
 *
 * Caveats
 * -------
 * - A write batch holds LMDB's writer lock from rq_txn_begin() until its
 *   commit/abort. rq_dlq_replay(), rq_dlq_purge() and rq_verify() run their
 *   own batch: from another thread they wait for the current one; from the
 *   thread that has a batch open they deadlock.
 * - Do not open the same directory twice in one process (LMDB's rule), not
 *   even read-only. After fork(), the child must not use the parent's env.
 * - A reader that keeps an old snapshot (a stuck process with a read
 *   transaction open) stops LMDB from reusing the pages freed since: the
 *   map can fill although little data is live. Reader slots of dead
 *   processes are cleared at open and every 1024 commits.
 * - Only the writing process knows its leases; relayctl's inflight is 0.
 */
#ifndef RQ_H
#define RQ_H

#include <stddef.h>
#include <stdint.h>

/* Library error codes: one reserved negative range, one string table. */
#define RQ_ERRNO_MAP(X)                                                     \
  X(RQ_MAP_FULL, -30900, "queue map is full (RELAY_QUEUE_MAX_BYTES)")      \
  X(RQ_NOTFOUND, -30901, "no such record")                                 \
  X(RQ_DUPLICATE, -30902, "webhook id already seen within the dedup window") \
  X(RQ_CORRUPT, -30903, "record could not be decoded")                     \
  X(RQ_VERSION, -30904, "queue was written by a newer, unknown format")    \
  X(RQ_READONLY, -30905, "environment is open read-only")                  \
  X(RQ_TOO_BIG, -30906, "record larger than the queue can hold")           \
  X(RQ_BAD_TXN, -30907, "batch already failed; it can only be aborted")

enum {
#define RQ_X(name, code, msg) name = code,
  RQ_ERRNO_MAP(RQ_X)
#undef RQ_X
};

/* Returns a static string for any return code of this library. */
const char *rq_strerror(int err);

/* ---- Records --------------------------------------------------------- */

/* One event. On append the caller fills it with borrowed pointers; records
 * returned by the library (lease, DLQ get/list) own their memory and are
 * released with rq_record_free(). String fields are NUL-terminated; NULL or
 * "" means absent. In returned records the body is followed by a NUL byte
 * too (not counted in body_len), so it can be handed to a C JSON parser. */
typedef struct rq_record {
  uint64_t seq;            /* assigned by rq_txn_append() */
  int64_t received_ms;     /* wall clock, ms since epoch */
  const uint8_t *body;     /* exact raw event bytes (after gzip inflation) */
  size_t body_len;
  const char *webhook_id;      /* X-Webhook-Id */
  const char *webhook_attempt; /* X-Webhook-Attempt */
  const char *api_key;         /* X-Api-Key */
  const char *type, *cid, *channel_type, *channel_id, *user_id;
  /* Retry state. */
  uint32_t attempts;
  int64_t next_attempt_ms;     /* 0 = due now */
  int64_t first_attempt_ms;    /* 0 = never attempted */
  int64_t last_attempt_ms;
  const char *last_error;
  /* DLQ state (records from the DLQ only). */
  const char *dlq_reason;      /* "too_large", "rejected", "expired", "corrupt" */
  const char *dlq_code;        /* AWS error code, e.g. "InvalidParameter" */
  const char *dlq_message;
  int64_t dlq_time_ms;
  /* When rq_dlq_replay() last put it back in the ready queue; 0 = never.
   * Kept through later dead-lettering. A retry budget measured from
   * received_ms (RELAY_RETRY_MAX_AGE) starts again here, or a replayed
   * "expired" event would expire again at its first failure. */
  int64_t replayed_ms;
  void *owned_;                /* library-owned storage; do not touch */
} rq_record;

void rq_record_free(rq_record *r);            /* frees owned storage of r */
void rq_records_free(rq_record *rs, size_t n); /* frees each, then the array */

/* ---- Environment ----------------------------------------------------- */

typedef struct rq_env rq_env;

#define RQ_OPEN_READONLY 0x1 /* relayctl: read stats and the DLQ only */

typedef struct {
  uint64_t map_size;        /* bytes; 0 = 4 GiB. Also the hard size cap. */
  uint32_t dedup_window_s;  /* 0 = 600 */
  uint32_t high_watermark_pct; /* 0 = 90: rq_over_watermark() threshold */
  unsigned flags;           /* RQ_OPEN_* */
} rq_options;

/* Opens (creating if needed, unless read-only) the environment in directory
 * `dir`, which must exist. Clears stale reader slots of dead processes.
 * A writable open reads every ready record's header to rebuild the dedup
 * table: for a backlog of 500,000 records, about 0.1 s with the file in the
 * page cache, about 1 s without.
 * Errors: -ENOENT (no dir, or read-only and no queue there), -EACCES,
 * RQ_VERSION, -EAGAIN (another relayd holds the writer lock: a second
 * writer process refuses to start), others from LMDB as -errno. */
int rq_env_open(rq_env **out, const char *dir, const rq_options *opts);
/* Closes the environment. No call on it may be running. */
void rq_env_close(rq_env *env);

/* ---- Write batches (one LMDB commit, one fsync) ---------------------- */

typedef struct rq_txn rq_txn;

/* Starts a write batch. Also prunes a bounded number of expired dedup
 * entries, so the index stays small without a separate job. */
int rq_txn_begin(rq_env *env, rq_txn **out);

/* Appends `rec` (seq is assigned and written to *seq_out when non-NULL).
 * If rec->webhook_id is set and was seen within the dedup window (in this
 * batch too), nothing is stored and RQ_DUPLICATE is returned; the batch
 * stays usable. The dedup clock is rec->received_ms (0: the wall clock,
 * which is then stored as the record's received_ms).
 * The caller's retry/DLQ fields are ignored: a record enters fresh.
 * Errors: RQ_MAP_FULL (append cap reached: this record refused, batch
 * usable; or LMDB full: batch poisoned, see rq_txn_status()), RQ_TOO_BIG
 * (body over half the append cap; batch usable), -EINVAL. */
int rq_txn_append(rq_txn *t, const rq_record *rec, uint64_t *seq_out);

/* Appends `rec` straight into the DLQ with `reason` (e.g. "too_large").
 * Dedup applies as for rq_txn_append(). */
int rq_txn_append_dead(rq_txn *t, const rq_record *rec, const char *reason,
                       const char *code, const char *message, uint64_t *seq_out);

/* Removes a ready record (SNS accepted it) and releases its lease.
 * RQ_NOTFOUND if it is not in the ready queue (already acked): harmless. */
int rq_txn_ack(rq_txn *t, uint64_t seq);

/* Records a failed attempt: attempts+1, first/last attempt times,
 * next_attempt_ms, last_error; releases the lease. RQ_NOTFOUND as above. */
int rq_txn_nack(rq_txn *t, uint64_t seq, int64_t now_ms, int64_t next_attempt_ms,
                const char *error);

/* Moves a ready record to the DLQ with reason/code/message (counting this
 * attempt) and releases its lease. RQ_NOTFOUND as above. */
int rq_txn_dead(rq_txn *t, uint64_t seq, int64_t now_ms, const char *reason,
                const char *code, const char *message);

/* Commits the batch durably; returns only when it is on disk. On any error
 * (RQ_MAP_FULL, -ENOSPC, -EIO, ...) nothing of the batch is stored, and the
 * environment stays usable for the next batch. A poisoned batch is not
 * committed: its first error is returned. The handle is freed either way.
 * Leases of the records acked/nacked/dead-lettered in the batch are
 * released after the commit, whether it succeeded or not (on failure those
 * records are ready again: at-least-once). */
int rq_txn_commit(rq_txn *t);
/* Seconds the last successful rq_txn_commit() in this process spent inside
 * LMDB's durable commit: writing the dirty pages, fdatasync, then writing
 * and syncing the meta page. The rest of a batch's time is building it.
 * Meant for the thread that has just committed (the relay's group
 * committer, for its fsync histogram); 0 before the first commit. */
double rq_last_commit_sync_seconds(const rq_env *env);
/* 0 while the batch is usable, else the error that poisoned it. */
int rq_txn_status(const rq_txn *t);
/* Drops the batch; nothing of it is stored. Frees the handle. */
void rq_txn_abort(rq_txn *t);

/* Test seam (SQLite-style I/O fault injection): when set, called just before
 * each commit; a non-zero return (e.g. -ENOSPC, -EIO) aborts the batch and is
 * returned by rq_txn_commit() as if the sync had failed. NULL to clear. */
typedef int (*rq_commit_hook)(void *arg);
void rq_set_commit_hook(rq_env *env, rq_commit_hook hook, void *arg);

/* ---- Reading the ready queue ------------------------------------------ */

#define RQ_LEASE_FIFO 0x1 /* at most one record per group (cid, else type)
                             in flight, and only the oldest of its group */

/* Leases up to `max` ready records that are due (next_attempt_ms <= now_ms)
 * and not already leased by this process, oldest seq first. A nacked
 * record whose last failed attempt lies more than 2 s after now_ms is due
 * too: the wall clock was stepped back, and its next_attempt_ms belongs to
 * the old timeline (waiting for it would stall it by the size of the step).
 * With
 * RQ_LEASE_FIFO, a group whose oldest record is leased or not yet due yields
 * nothing, so a group is published strictly in seq order. Returns the number
 * leased (0..max) and an array in *out (free with rq_records_free()), or a
 * negative error. No read transaction stays open after return. Records that
 * do not decode are skipped (rq_verify() quarantines them). A lease ends
 * with rq_release() or when a batch acking/nacking/dead-lettering it ends
 * (commit or abort): a concurrent lease never hands out a record that a
 * just-committed ack removed. Cost without RQ_LEASE_FIFO: a walk from the
 * first ready record that is neither leased nor backed off, O(max) records
 * in steady draining. With RQ_LEASE_FIFO: an in-memory index of the ready
 * records by group (8-16 bytes per record plus about 80 per group), built by
 * one walk of the queue at the first FIFO lease and kept up to date after
 * that, so O(max log groups) per call whatever the backlog. A lease without
 * RQ_LEASE_FIFO, an ack/nack of a record this process did not lease with
 * it, and rq_verify() drop the index (the next FIFO lease rebuilds it). */
int rq_lease(rq_env *env, int64_t now_ms, size_t max, unsigned flags, rq_record **out);
/* Releases a lease without changing the record (e.g. on shutdown). */
void rq_release(rq_env *env, uint64_t seq);
/* Number of records currently leased by this process. */
size_t rq_leased_count(rq_env *env);
/* Earliest next_attempt_ms among ready, unleased records (0 if one is due
 * now, INT64_MAX if none): lets the drainer sleep until then. */
int64_t rq_next_due_ms(rq_env *env);
/* Same with lease flags: with RQ_LEASE_FIFO, only the oldest record of each
 * group counts, and a group whose oldest record is leased counts as not due
 * (it becomes due when that lease is acked, nacked or released). */
int64_t rq_next_due_ms_flags(rq_env *env, unsigned flags);

/* Is the webhook id in the dedup window? 1 yes, 0 no, <0 error. Needs a
 * writable env (RQ_READONLY): the index is in the writer's memory. */
int rq_dedup_seen(rq_env *env, const char *webhook_id, int64_t now_ms);

/* ---- Stats and capacity ------------------------------------------------ */

typedef struct {
  uint64_t ready, ready_bytes;      /* bytes = stored body bytes */
  uint64_t inflight;                /* leased by this process */
  uint64_t dlq, dlq_bytes;
  int64_t oldest_ready_ms;          /* received_ms of the oldest ready, 0 none */
  uint64_t appended_total, acked_total, dead_lettered_total; /* across restarts */
  uint64_t duplicates_total;
  uint64_t map_used, map_size;      /* bytes in live pages / configured map */
  /* Sightings in the dedup log: ids of records that left `ready` inside
   * the window (a ready record holds its own id). */
  uint64_t dedup_entries;
} rq_stats;

int rq_stat(rq_env *env, rq_stats *out);
/* 1 when live data is at or above the high watermark (ingest answers 503),
 * 0 below, <0 error. Cheap: safe to call per request batch. */
int rq_over_watermark(rq_env *env);
/* The largest body an append can ever take in this environment (a bigger
 * one gets RQ_TOO_BIG however empty the queue is). */
uint64_t rq_max_body_bytes(rq_env *env);

/* ---- Dead-letter queue ------------------------------------------------ */

typedef struct {
  const char *reason;   /* NULL = any */
  const char *type;     /* NULL = any */
  uint64_t after_seq;   /* paging: only ids > after_seq */
  size_t limit;         /* 0 = no limit */
} rq_dlq_filter;

/* Lists DLQ records matching `f` (bodies included), in id order. Returns
 * the count and the array in *out (rq_records_free()), or an error. */
int rq_dlq_list(rq_env *env, const rq_dlq_filter *f, rq_record **out);
/* Same without copying the bodies: each record's body is NULL and body_len
 * the size of its stored body. For listings and counts: a page of large
 * (too_large) entries would otherwise be copied whole into memory. */
int rq_dlq_list_meta(rq_env *env, const rq_dlq_filter *f, rq_record **out);
/* Gets one DLQ record by id (its seq). RQ_NOTFOUND if absent. */
int rq_dlq_get(rq_env *env, uint64_t id, rq_record *out);
/* Moves DLQ records back to the ready queue (attempts reset, new seq so
 * they go to the tail), in one durable batch per call. ids==NULL means all
 * records matching `f` (f==NULL: all; f->limit and f->after_seq page through
 * a large DLQ, a few thousand records per call keeps each batch small and
 * lets a caller show progress). *moved (may be NULL) gets the count.
 * Given ids obey f's reason and type too (not its limit and after_seq): an
 * id that does not match is left alone and counted in neither count.
 * Missing ids are skipped (counted in *missing when non-NULL). Replayed
 * records count against the append cap (RQ_MAP_FULL, nothing moved);
 * they are not checked against the dedup index. Needs a writable env
 * (RQ_READONLY). */
int rq_dlq_replay(rq_env *env, const uint64_t *ids, size_t nids, const rq_dlq_filter *f,
                  size_t *moved, size_t *missing);
/* Deletes DLQ records, same selection rules as replay. */
int rq_dlq_purge(rq_env *env, const uint64_t *ids, size_t nids, const rq_dlq_filter *f,
                 size_t *purged, size_t *missing);

/* ---- Maintenance ------------------------------------------------------ */

typedef struct {
  uint64_t records;      /* ready + DLQ records walked */
  uint64_t corrupt;      /* undecodable records moved to the DLQ as "corrupt" */
  uint64_t order_errors; /* keys out of order or seq >= next seq */
  uint64_t orphan_bodies; /* stored bodies without a ready record, removed */
} rq_verify_report;

/* Walks every record, decodes it and checks ordering. Undecodable ready
 * records (a record whose stored body is missing counts) are quarantined
 * to the DLQ (reason "corrupt", raw bytes kept as the body; a record whose
 * header is damaged but whose body is stored apart keeps that body) instead
 * of failing. Problems go to `report`; returns 0 unless the
 * walk itself failed. Needs a writable environment to quarantine. */
int rq_verify(rq_env *env, rq_verify_report *report);

/* Clears reader slots left by dead processes; returns how many. */
int rq_reader_check(rq_env *env);

#endif
