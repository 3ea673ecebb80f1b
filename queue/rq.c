/* rq: environment, write batches, leases, stats. See rq.h and FORMAT.md. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rq_internal.h"

#define RQ_DEFAULT_MAP (4ull << 30)
#define RQ_READER_CHECK_EVERY 1024 /* commits between stale-reader sweeps */

static const char META_FORMAT[] = "format";
static const char META_COUNTERS[] = "counters";
/* LMDB's main DB: dbi 1 in every environment (0 is its free-page DB). */
#define MAIN_DBI_ID ((MDB_dbi)1)

const char *rq_strerror(int err) {
  switch (err) {
#define RQ_X(name, code, msg) \
  case name:                  \
    return msg;
    RQ_ERRNO_MAP(RQ_X)
#undef RQ_X
    case 0:
      return "success";
    default:
      break;
  }
  if (err < 0 && err > -4096) return strerror(-err);
  return "unknown error";
}

int rq_mdb_err(int rc) {
  switch (rc) {
    case MDB_SUCCESS:
      return 0;
    case MDB_MAP_FULL:
      return RQ_MAP_FULL;
    case MDB_NOTFOUND:
      return RQ_NOTFOUND;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
      return RQ_CORRUPT;
    case MDB_VERSION_MISMATCH:
    case MDB_INVALID:
      return RQ_VERSION;
    case MDB_READERS_FULL:
      return -EBUSY;
    case MDB_TXN_FULL:
    case MDB_BAD_VALSIZE:
      return RQ_TOO_BIG;
    default:
      if (rc > 0) return -rc;
      return -EIO;
  }
}

int64_t rq_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rq_put_be64(uint8_t out[8], uint64_t x) {
  for (int i = 7; i >= 0; i--) {
    out[i] = (uint8_t)x;
    x >>= 8;
  }
}

uint64_t rq_get_be64(const void *p) {
  const uint8_t *b = p;
  uint64_t x = 0;
  for (int i = 0; i < 8; i++) x = (x << 8) | b[i];
  return x;
}

/* ---- seq sets and maps -------------------------------------------------- */

static size_t seq_hash(uint64_t s, size_t cap) {
  return (size_t)((s * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

/* Slot of seq, or of the empty slot where it would go. */
static size_t seqset_slot(const rq_seqset *s, uint64_t seq) {
  size_t i = seq_hash(seq, s->cap);
  while (s->slots[i] && s->slots[i] != seq) i = (i + 1) & (s->cap - 1);
  return i;
}

bool rq_seqset_has(const rq_seqset *s, uint64_t seq) {
  return s->n && s->slots[seqset_slot(s, seq)] == seq;
}

void *rq_seqset_get(const rq_seqset *s, uint64_t seq) {
  if (!s->n) return NULL;
  size_t i = seqset_slot(s, seq);
  return s->slots[i] == seq && s->vals ? s->vals[i] : NULL;
}

int rq_seqset_put(rq_seqset *s, uint64_t seq, void *val) {
  if ((s->n + 1) * 2 > s->cap) {
    size_t ncap = s->cap ? s->cap * 2 : 256;
    rq_seqset ns = {calloc(ncap, sizeof *ns.slots), NULL, ncap, s->n};
    if (!ns.slots) return -ENOMEM;
    if (s->vals || val) {
      if (!(ns.vals = calloc(ncap, sizeof *ns.vals))) {
        free(ns.slots);
        return -ENOMEM;
      }
    }
    for (size_t i = 0; i < s->cap; i++) {
      if (!s->slots[i]) continue;
      size_t j = seqset_slot(&ns, s->slots[i]);
      ns.slots[j] = s->slots[i];
      if (s->vals) ns.vals[j] = s->vals[i];
    }
    free(s->slots);
    free(s->vals);
    *s = ns;
  } else if (val && !s->vals) {
    if (!(s->vals = calloc(s->cap, sizeof *s->vals))) return -ENOMEM;
  }
  size_t i = seqset_slot(s, seq);
  if (!s->slots[i]) {
    s->slots[i] = seq;
    s->n++;
  }
  if (s->vals) s->vals[i] = val;
  return 0;
}

/* Deletion with backward shift keeps probe chains intact without tombstones. */
void rq_seqset_del(rq_seqset *s, uint64_t seq) {
  if (!s->n) return;
  size_t mask = s->cap - 1, i = seqset_slot(s, seq);
  if (s->slots[i] != seq) return;
  s->slots[i] = 0;
  s->n--;
  for (size_t j = (i + 1) & mask; s->slots[j]; j = (j + 1) & mask) {
    size_t h = seq_hash(s->slots[j], s->cap);
    /* Move j back to the hole when its home is not within (i, j]. */
    if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
      s->slots[i] = s->slots[j];
      s->slots[j] = 0;
      if (s->vals) s->vals[i] = s->vals[j];
      i = j;
    }
  }
}

void rq_seqset_free(rq_seqset *s) {
  free(s->slots);
  free(s->vals);
  *s = (rq_seqset){0};
}

/* ---- meta ---------------------------------------------------------------- */

/* The counters live in LMDB's main DB (the DB of DB names), not in `meta`:
 * every commit rewrites the main DB's leaf anyway (it holds the root of each
 * changed DB), so the counters ride on a page the commit writes regardless.
 * In `meta` they dirtied one more page per commit, which for small batches
 * is one more scattered page for fdatasync() to write. Queues from before
 * have them in `meta`; a writable open moves them (move_counters). */
int rq_counters_load(rq_env *env, MDB_txn *txn, rq_counters *c) {
  MDB_val k = {sizeof META_COUNTERS - 1, (void *)META_COUNTERS}, v;
  memset(c, 0, sizeof *c);
  int rc = mdb_get(txn, MAIN_DBI_ID, &k, &v);
  if (rc == MDB_NOTFOUND) rc = mdb_get(txn, env->db_meta, &k, &v); /* not moved yet */
  if (rc == MDB_NOTFOUND) {
    c->next_seq = 1;
    return 0;
  }
  if (rc) return rq_mdb_err(rc);
  rq_rd r = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size};
  uint32_t n;
  uint64_t ver;
  if (rq_rd_array(&r, &n) || n < 10 || rq_rd_uint(&r, &ver) || ver < 1) return RQ_CORRUPT;
  uint64_t *f[] = {&c->next_seq,    &c->appended,    &c->acked,     &c->dead,     &c->duplicates,
                   &c->ready_count, &c->ready_bytes, &c->dlq_count, &c->dlq_bytes};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    if (rq_rd_uint(&r, f[i])) return RQ_CORRUPT;
  if (c->next_seq == 0) c->next_seq = 1;
  return 0;
}

int rq_counters_store(MDB_txn *txn, const rq_counters *c) {
  uint8_t buf[10 * 9 + 1];
  /* Small fixed encoding by hand: array of 10 uint64 (0xcf + 8 bytes). */
  uint8_t *p = buf;
  *p++ = 0x9a;
  const uint64_t vals[10] = {1,
                             c->next_seq,
                             c->appended,
                             c->acked,
                             c->dead,
                             c->duplicates,
                             c->ready_count,
                             c->ready_bytes,
                             c->dlq_count,
                             c->dlq_bytes};
  for (int i = 0; i < 10; i++) {
    *p++ = 0xcf;
    rq_put_be64(p, vals[i]);
    p += 8;
  }
  MDB_val k = {sizeof META_COUNTERS - 1, (void *)META_COUNTERS}, v = {(size_t)(p - buf), buf};
  return rq_mdb_err(mdb_put(txn, MAIN_DBI_ID, &k, &v, 0));
}

static int move_counters(rq_env *env, MDB_txn *txn) {
  MDB_val k = {sizeof META_COUNTERS - 1, (void *)META_COUNTERS};
  int rc = mdb_del(txn, env->db_meta, &k, NULL);
  return rc == MDB_NOTFOUND ? 0 : rq_mdb_err(rc);
}

/* Live pages: everything reachable from the meta page. Reading the DB
 * records is O(1) per DB (no tree walk), so this is cheap enough to run
 * after every commit. */
uint64_t rq_used_bytes_in(rq_env *env, MDB_txn *txn) {
  MDB_dbi dbis[] = {0,
                    1,
                    env->db_ready,
                    env->db_state,
                    env->db_dlq,
                    env->db_dedup_time,
                    env->db_meta,
                    env->db_bodies};
  size_t ndbis = sizeof dbis / sizeof dbis[0] - (env->no_bodies ? 1 : 0);
  uint64_t pages = 2; /* the two meta pages */
  for (size_t i = 0; i < ndbis; i++) {
    MDB_stat st;
    if (mdb_stat(txn, dbis[i], &st) == 0)
      pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
  }
  return pages * env->psize;
}

/* ---- open/close ------------------------------------------------------------ */

static int open_dbis(rq_env *env, MDB_txn *txn, unsigned flags) {
  struct {
    const char *name;
    MDB_dbi *dbi;
  } dbs[] = {{"ready", &env->db_ready},           {"bodies", &env->db_bodies},
             {"state", &env->db_state},           {"dlq", &env->db_dlq},
             {"dedup_time", &env->db_dedup_time}, {"meta", &env->db_meta}};
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    int rc = mdb_dbi_open(txn, dbs[i].name, flags, dbs[i].dbi);
    /* A format 1 queue opened read-only has no `bodies` (all inline). */
    if (rc == MDB_NOTFOUND && dbs[i].dbi == &env->db_bodies) {
      env->no_bodies = true;
      continue;
    }
    if (rc == MDB_NOTFOUND) return -ENOENT;
    if (rc) return rq_mdb_err(rc);
  }
  return 0;
}

static int last_key(MDB_txn *txn, MDB_dbi dbi, uint64_t *out) {
  MDB_cursor *c;
  MDB_val k, v;
  *out = 0;
  int rc = mdb_cursor_open(txn, dbi, &c);
  if (rc) return rq_mdb_err(rc);
  rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
  if (rc == 0 && k.mv_size == 8) *out = rq_get_be64(k.mv_data);
  mdb_cursor_close(c);
  return rc == 0 || rc == MDB_NOTFOUND ? 0 : rq_mdb_err(rc);
}

/* Format 1 also had `dedup`, an index of the same ids keyed by id (format 2
 * looks ids up in memory, see rq_dedup.c), and kept the counters in `meta`
 * (moved in init_layout). Readers of either format need nothing. */
static int upgrade_from_1(MDB_txn *txn) {
  MDB_dbi dbi;
  int rc = mdb_dbi_open(txn, "dedup", 0, &dbi);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return rq_mdb_err(rc);
  return rq_mdb_err(mdb_drop(txn, dbi, 1));
}

/* Checks the layout version; on a writable env initialises a new queue or
 * upgrades an older one, and makes sure next_seq is above every stored key
 * (seqs are never reused). */
static int init_layout(rq_env *env, MDB_txn *txn) {
  MDB_val k = {sizeof META_FORMAT - 1, (void *)META_FORMAT}, v;
  uint64_t ver = 0; /* 0: a new queue */
  int rc = mdb_get(txn, env->db_meta, &k, &v);
  if (rc == 0) {
    rq_rd r = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size};
    if (rq_rd_uint(&r, &ver)) return RQ_CORRUPT;
    if (ver > RQ_FORMAT_VERSION) return RQ_VERSION;
  } else if (rc != MDB_NOTFOUND) {
    return rq_mdb_err(rc);
  }
  if (env->readonly) return 0;
  if (ver < RQ_FORMAT_VERSION && (rc = upgrade_from_1(txn))) return rc;
  if (ver != RQ_FORMAT_VERSION) {
    uint8_t b = RQ_FORMAT_VERSION; /* positive fixint */
    MDB_val fv = {1, &b};
    if ((rc = mdb_put(txn, env->db_meta, &k, &fv, 0))) return rq_mdb_err(rc);
  }
  rq_counters c;
  if ((rc = rq_counters_load(env, txn, &c)) || (rc = move_counters(env, txn))) return rc;
  uint64_t lr, ld;
  if ((rc = last_key(txn, env->db_ready, &lr)) || (rc = last_key(txn, env->db_dlq, &ld))) return rc;
  uint64_t need = (lr > ld ? lr : ld) + 1;
  if (c.next_seq < need) c.next_seq = need;
  return rq_counters_store(txn, &c);
}

/* LMDB sizes a new lock.mdb with ftruncate() and initialises it through a
 * shared mapping: on a full disk the first write to the mapping finds no
 * block and the process dies of SIGBUS, with no word of why. Allocating the
 * blocks first turns that into ENOSPC. The size is LMDB's own for 254
 * readers on 4 KiB-aligned, 64-byte reader slots (253 * 64 + 192), so the
 * file is the one LMDB would make. Other failures (a file system without
 * fallocate) are left to LMDB. Returns 0 or an errno (LMDB's convention). */
#define RQ_LOCK_FILE_BYTES 16384
static int reserve_lock_file(const rq_env *env) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/lock.mdb", env->dir) >= (int)sizeof path) return 0;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return 0; /* LMDB will say why */
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) == 0 && st.st_size < RQ_LOCK_FILE_BYTES) {
    rc = posix_fallocate(fd, 0, RQ_LOCK_FILE_BYTES);
    if (rc != ENOSPC && rc != EDQUOT) rc = 0;
  }
  close(fd);
  return rc;
}

/* Creates and opens env->mdb on env->dir (map size from env->map_size
 * unless read-only). */
static int mdb_open_dir(rq_env *env) {
  int rc;
  if (!env->readonly && (rc = reserve_lock_file(env))) return rc;
  if ((rc = mdb_env_create(&env->mdb))) return rc;
  if ((rc = mdb_env_set_maxdbs(env->mdb, 8))) return rc;
  if ((rc = mdb_env_set_maxreaders(env->mdb, 254))) return rc;
  if (!env->readonly && (rc = mdb_env_set_mapsize(env->mdb, env->map_size))) return rc;
  /* MDB_NOTLS: read transactions are not tied to a thread (lease on the
   * loop thread, stats from the admin thread). Full sync on purpose: no
   * MDB_NOSYNC, MDB_NOMETASYNC, MDB_WRITEMAP or MDB_MAPASYNC. */
  return mdb_env_open(env->mdb, env->dir, MDB_NOTLS | (env->readonly ? MDB_RDONLY : 0), 0600);
}

/* Bytes kept free above live data for acks, nacks and dead-letters (rq.h,
 * Capacity): map/32, at least 256 KiB, at most a quarter of the map. */
static uint64_t map_reserve(uint64_t map) {
  uint64_t r = map / 32;
  if (r < (256u << 10)) r = 256u << 10;
  if (r > map / 4) r = map / 4;
  return r;
}

/* LMDB maps no less than the data it holds: a map_size under that (a
 * RELAY_QUEUE_MAX_BYTES lowered below a backlog) becomes exactly the end of
 * the data, with no page left for the copy-on-write of an ack. Pages a
 * commit frees are reusable only two commits later, so once the few spare
 * pages are gone no ack batch commits again: the backlog never drains and
 * every leased event is published again and again. So when the data
 * ends past the map `asked` for, the map reaches the reserve past its end.
 * Appends and the watermark keep measuring against env->map_size, the map
 * as opened. Writable envs, before any transaction of this process
 * (LMDB's rule for resizing). */
static int keep_headroom(rq_env *env, uint64_t asked) {
  MDB_envinfo info;
  MDB_stat st;
  int rc = mdb_env_info(env->mdb, &info);
  if (!rc) rc = mdb_env_stat(env->mdb, &st);
  if (rc) return rc;
  uint64_t psize = st.ms_psize, end = ((uint64_t)info.me_last_pgno + 1) * psize;
  if (end <= asked) return 0; /* the reserve is inside the map asked for */
  uint64_t want = end + map_reserve(info.me_mapsize);
  want = (want + psize - 1) / psize * psize;
  if ((uint64_t)info.me_mapsize >= want) return 0;
  return mdb_env_set_mapsize(env->mdb, (size_t)want);
}

/* Replaces an environment LMDB declared unusable (MDB_PANIC: after a failed
 * meta page write it refuses every transaction, for good). Nothing of the
 * failed commit is left to undo: LMDB wrote the previous meta back, and the
 * new one picks the last durable commit, as a restart would. In-memory state
 * stays valid: leases and the FIFO index describe committed records, and
 * the dedup table only proposes (rq_dedup.c). `seen` is env->opens when the
 * caller met the failure: if another thread reopened since, nothing to do.
 * Takes open_lk exclusively: the caller holds neither it nor env->mu. */
static void env_reopen(rq_env *env, uint64_t seen) {
  pthread_rwlock_wrlock(&env->open_lk);
  if (env->opens == seen && !env->readonly) {
    env->opens++;
    /* The map as it was (keep_headroom may have raised it past map_size). */
    MDB_envinfo was = {0};
    if (env->mdb) {
      mdb_env_info(env->mdb, &was);
      mdb_env_close(env->mdb);
    }
    env->mdb = NULL;
    MDB_txn *txn = NULL;
    int rc = mdb_open_dir(env);
    if (!rc) rc = keep_headroom(env, env->map_size);
    MDB_envinfo now;
    if (!rc && !mdb_env_info(env->mdb, &now) && now.me_mapsize < was.me_mapsize)
      rc = mdb_env_set_mapsize(env->mdb, was.me_mapsize);
    /* The DB handles need a transaction; a read one writes nothing. */
    if (!rc) rc = mdb_txn_begin(env->mdb, NULL, MDB_RDONLY, &txn);
    if (!rc && (rc = open_dbis(env, txn, 0)) == 0) {
      atomic_store(&env->used_bytes, rq_used_bytes_in(env, txn));
      rc = mdb_txn_commit(txn);
      txn = NULL;
    }
    if (txn) mdb_txn_abort(txn);
    if (rc && env->mdb) {
      mdb_env_close(env->mdb);
      env->mdb = NULL;
    }
    env->file_end = 0; /* grow_ahead() looks again */
  }
  pthread_rwlock_unlock(&env->open_lk);
}

/* Takes open_lk shared and begins a transaction; 0 or an LMDB error (open_lk
 * dropped then, *seen set for env_reopen()). */
static int begin_shared(rq_env *env, unsigned flags, MDB_txn **txn, uint64_t *seen) {
  pthread_rwlock_rdlock(&env->open_lk);
  *seen = env->opens;
  int rc = env->mdb ? mdb_txn_begin(env->mdb, NULL, flags, txn) : MDB_PANIC;
  if (rc) pthread_rwlock_unlock(&env->open_lk);
  return rc;
}

/* begin_shared(), reopening the environment first if LMDB declared it
 * unusable. A caller holding env->mu passes it as `held`: env_reopen() must
 * not wait under it (a committer holds open_lk and then takes env->mu), so
 * it is dropped around the reopen. Returns an LMDB code. */
static int begin_reopening(rq_env *env, unsigned flags, MDB_txn **txn, pthread_mutex_t *held) {
  uint64_t seen;
  int rc = begin_shared(env, flags, txn, &seen);
  if (rc == MDB_PANIC && !env->readonly) {
    if (held) pthread_mutex_unlock(held);
    env_reopen(env, seen);
    if (held) pthread_mutex_lock(held);
    rc = begin_shared(env, flags, txn, &seen);
  }
  return rc;
}

int rq_read_begin(rq_env *env, MDB_txn **txn) {
  int rc = begin_reopening(env, MDB_RDONLY, txn, NULL);
  return rc ? rq_mdb_err(rc) : 0;
}

void rq_read_end(rq_env *env, MDB_txn *txn) {
  mdb_txn_abort(txn);
  pthread_rwlock_unlock(&env->open_lk);
}

int rq_env_open(rq_env **out, const char *dir, const rq_options *opts) {
  static const rq_options defaults;
  if (!out || !dir) return -EINVAL;
  *out = NULL;
  if (!opts) opts = &defaults;
  struct stat st;
  if (stat(dir, &st) != 0) return -errno;
  if (!S_ISDIR(st.st_mode)) return -ENOTDIR;

  rq_env *env = calloc(1, sizeof *env);
  if (!env) return -ENOMEM;
  env->lock_fd = -1;
  env->zero_fd = -1;
  env->readonly = (opts->flags & RQ_OPEN_READONLY) != 0;
  env->dedup_window_ms = (int64_t)(opts->dedup_window_s ? opts->dedup_window_s : 600) * 1000;
  env->watermark_pct = opts->high_watermark_pct ? opts->high_watermark_pct : 90;
  env->scan_due = INT64_MAX;
  env->scan_now = INT64_MIN;
  env->fifo_now = INT64_MIN;
  if (env->watermark_pct > 100) env->watermark_pct = 100;
  pthread_mutex_init(&env->mu, NULL);
  pthread_mutex_init(&env->dmu, NULL);
  /* Readers first (glibc's default, said here because it matters): a thread
   * holding env->mu may begin a read while env_reopen() waits for the
   * writer's transaction, whose commit then takes env->mu. */
  pthread_rwlockattr_t rwa;
  pthread_rwlockattr_init(&rwa);
  pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_READER_NP);
  pthread_rwlock_init(&env->open_lk, &rwa);
  pthread_rwlockattr_destroy(&rwa);
  env->dir = strdup(dir);
  if (!env->dir) {
    pthread_mutex_destroy(&env->mu);
    pthread_mutex_destroy(&env->dmu);
    pthread_rwlock_destroy(&env->open_lk);
    free(env);
    return -ENOMEM;
  }

  char path[PATH_MAX];
  int rc;
  if (!env->readonly) {
    /* LMDB lets two processes write in turn; relayd must not share its
     * queue with a second relayd, so the writer holds an exclusive flock.
     * Read-only openers (relayctl) do not take it. */
    if (snprintf(path, sizeof path, "%s/writer.lock", dir) >= (int)sizeof path) {
      rc = -ENAMETOOLONG;
      goto fail;
    }
    env->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (env->lock_fd < 0) {
      rc = -errno;
      goto fail;
    }
    if (flock(env->lock_fd, LOCK_EX | LOCK_NB) != 0) {
      rc = errno == EWOULDBLOCK ? -EAGAIN : -errno;
      goto fail;
    }
  } else {
    if (snprintf(path, sizeof path, "%s/data.mdb", dir) >= (int)sizeof path) {
      rc = -ENAMETOOLONG;
      goto fail;
    }
    if (access(path, F_OK) != 0) {
      rc = -ENOENT;
      goto fail;
    }
  }

  if (!env->readonly) env->map_size = opts->map_size ? opts->map_size : RQ_DEFAULT_MAP;
  uint64_t asked = env->map_size;
  if ((rc = mdb_open_dir(env))) goto fail_mdb;
  MDB_envinfo info;
  mdb_env_info(env->mdb, &info);
  env->map_size = info.me_mapsize;
  MDB_stat est;
  env->psize = mdb_env_stat(env->mdb, &est) == 0 ? est.ms_psize : 4096;
  /* Appends stop short of the map so that acks, nacks and dead-letters,
   * which need a few fresh pages to copy-on-write, can always commit:
   * a full map must never keep the drainer from freeing space. */
  env->append_cap = env->map_size - map_reserve(env->map_size);
  if (!env->readonly && (rc = keep_headroom(env, asked))) goto fail_mdb;
  env->grow_chunk = env->map_size / 64;
  if (env->grow_chunk < (256u << 10)) env->grow_chunk = 256u << 10;
  if (env->grow_chunk > (8u << 20)) env->grow_chunk = 8u << 20;
  if (!env->readonly && env->grow_chunk >= 2 * RQ_ZERO_STEP &&
      posix_memalign(&env->zero_buf, 4096, RQ_ZERO_STEP) == 0) {
    memset(env->zero_buf, 0, RQ_ZERO_STEP);
    char data[PATH_MAX];
    if (snprintf(data, sizeof data, "%s/data.mdb", dir) < (int)sizeof data)
      env->zero_fd = open(data, O_WRONLY | O_DIRECT | O_CLOEXEC);
  }
  int dead;
  mdb_reader_check(env->mdb, &dead);

  MDB_txn *txn;
  if ((rc = mdb_txn_begin(env->mdb, NULL, env->readonly ? MDB_RDONLY : 0, &txn))) goto fail_mdb;
  rc = open_dbis(env, txn, env->readonly ? 0 : MDB_CREATE);
  if (!rc) rc = init_layout(env, txn);
  if (!rc && !env->readonly) rc = rq_dedup_load(env, txn);
  if (rc) {
    mdb_txn_abort(txn);
    goto fail;
  }
  atomic_store(&env->used_bytes, rq_used_bytes_in(env, txn));
  /* Commit (also for the read-only txn) so the DB handles outlive it. */
  if ((rc = mdb_txn_commit(txn))) goto fail_mdb;
  *out = env;
  return 0;

fail_mdb:
  rc = rq_mdb_err(rc);
fail:
  rq_env_close(env); /* frees what was set up so far */
  return rc;
}

static void txn_free(rq_txn *t) {
  if (!t) return;
  msgpack_sbuffer_destroy(&t->sb);
  free(t->release);
  free(t->moved);
  free(t);
}

void rq_env_close(rq_env *env) {
  if (!env) return;
  txn_free(env->spare);
  if (env->mdb) mdb_env_close(env->mdb);
  if (env->lock_fd >= 0) close(env->lock_fd); /* drops the flock */
  if (env->zero_fd >= 0) close(env->zero_fd);
  free(env->zero_buf);
  pthread_mutex_destroy(&env->mu);
  pthread_mutex_destroy(&env->dmu);
  pthread_rwlock_destroy(&env->open_lk);
  free(env->dir);
  rq_dedup_free(env);
  rq_seqset_free(&env->leased);
  rq_fifo_drop(env);
  free(env);
}

int rq_reader_check(rq_env *env) {
  int dead = 0;
  pthread_rwlock_rdlock(&env->open_lk);
  int rc = env->mdb ? mdb_reader_check(env->mdb, &dead) : MDB_PANIC;
  pthread_rwlock_unlock(&env->open_lk);
  return rc ? rq_mdb_err(rc) : dead;
}

void rq_set_commit_hook(rq_env *env, rq_commit_hook hook, void *arg) {
  pthread_mutex_lock(&env->mu);
  env->hook = hook;
  env->hook_arg = arg;
  pthread_mutex_unlock(&env->mu);
}

/* ---- write batches ----------------------------------------------------------- */

int rq_txn_status(const rq_txn *t) {
  return t ? t->failed : -EINVAL;
}

int rq_txn_fail(rq_txn *t, int err) {
  if (!t->failed) t->failed = err;
  return err;
}

/* Keeps data.mdb a few MiB longer than LMDB's last page, in space that is
 * already written (with zeros). LMDB extends its file page by page as it
 * commits; a commit whose pages land in new space makes fdatasync() persist
 * the allocation too: an extra synchronous inode write per commit, which
 * made commits of 4 KiB events about 40 % slower than the same writes into
 * space written before (0.70 vs 0.50 ms per commit under
 * tools/bench-ingest.sh). fallocate() alone does not help: its extents are
 * "unwritten", and converting them is the same metadata write.
 *
 * The zeros go through a second descriptor opened with O_DIRECT: they do
 * not fill the page cache and are not left dirty for the next commit's
 * fdatasync() to write, which is what made a plain zero fill cost about
 * 2 ms per MiB here (O_DIRECT: 0.25-0.4 ms per MiB). At most RQ_ZERO_STEP
 * per call, so a commit waits at most about that long for it. The
 * allocation becomes durable with the next commit's fdatasync() (once per
 * step instead of once per commit); the zeros themselves never need to be
 * durable: LMDB never reads past its last page. Safe against LMDB's own
 * writes because it runs in txn_begin, under LMDB's writer lock, only
 * touches bytes past the current end of file, and no other writer process
 * can exist (flock). Any failure is harmless: LMDB grows the file itself.
 * Without O_DIRECT (tmpfs, ...), or for steps under 2 MiB (maps under
 * 128 MiB), we fall back to fallocate(), which at least reserves space. */
static void grow_ahead(rq_env *env) {
  if (!env->grow_chunk) return;
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(env->mdb, &info) || mdb_env_stat(env->mdb, &st)) return;
  uint64_t need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
  if (env->file_end >= need + env->grow_chunk / 2) return;
  int fd;
  struct stat fst;
  if (mdb_env_get_fd(env->mdb, &fd) || fstat(fd, &fst)) return;
  env->file_end = (uint64_t)fst.st_size;
  uint64_t target = need + env->grow_chunk;
  if (target > env->map_size) target = env->map_size;
  if (env->file_end >= target || env->file_end >= need + env->grow_chunk / 2) return;
  if (env->zero_fd >= 0 && env->file_end % 4096 == 0) {
    size_t n = target - env->file_end > RQ_ZERO_STEP ? RQ_ZERO_STEP : target - env->file_end;
    n &= ~(size_t)4095;
    if (!n) return;
    ssize_t w = pwrite(env->zero_fd, env->zero_buf, n, (off_t)env->file_end);
    if (w > 0) {
      env->file_end += (uint64_t)w;
      return;
    }
    if (w < 0 && errno != EINVAL) return; /* ENOSPC...: LMDB will say so */
    close(env->zero_fd);                  /* no O_DIRECT here after all */
    env->zero_fd = -1;
  }
  if (fallocate(fd, 0, (off_t)env->file_end, (off_t)(target - env->file_end)) != 0) {
    if (errno == EOPNOTSUPP || errno == ENOSYS) env->grow_chunk = 0;
    return;
  }
  if (fdatasync(fd) == 0) env->file_end = target;
}

static int txn_begin(rq_env *env, rq_txn **out, bool prune) {
  *out = NULL;
  if (env->readonly) return RQ_READONLY;
  MDB_txn *txn;
  int rc = begin_reopening(env, 0, &txn, NULL);
  if (rc) return rq_mdb_err(rc);
  /* From here on we hold open_lk (shared, until txn_end) and LMDB's writer
   * lock, which also guards env->spare. */
  if (atomic_load(&env->commits) % RQ_READER_CHECK_EVERY == RQ_READER_CHECK_EVERY - 1) {
    int dead;
    mdb_reader_check(env->mdb, &dead);
  }
  grow_ahead(env);
  rq_txn *t = env->spare;
  env->spare = NULL;
  if (!t) {
    t = calloc(1, sizeof *t);
    if (!t) {
      rq_read_end(env, txn); /* aborts the write txn, drops open_lk */
      return -ENOMEM;
    }
    msgpack_sbuffer_init(&t->sb);
    msgpack_packer_init(&t->pk, &t->sb, msgpack_sbuffer_write);
  }
  t->env = env;
  t->txn = txn;
  t->failed = 0;
  t->dirty = false;
  t->nrelease = 0;
  t->used_est = rq_used_bytes_in(env, txn);
  if ((rc = rq_counters_load(env, txn, &t->c)) || (prune && (rc = rq_dedup_prune(t)))) {
    env->spare = t; /* before the writer lock goes */
    rq_read_end(env, txn);
    return rc;
  }
  t->appended0 = t->c.appended;
  *out = t;
  return 0;
}

int rq_txn_begin(rq_env *env, rq_txn **out) {
  if (!env || !out) return -EINVAL;
  return txn_begin(env, out, true);
}

int rq_txn_begin_internal(rq_env *env, rq_txn **out) {
  return txn_begin(env, out, false);
}

static void lease_ended(rq_env *env, uint64_t seq, bool gone, int64_t due);

/* Ends the LMDB transaction. The handle is parked for reuse (or freed)
 * while we still hold LMDB's writer lock, since the next writer may take it
 * the moment the txn ends. Leases of acked/nacked/dead records are released
 * only after the commit: a lease scan holds env->mu across its snapshot, so
 * it either sees the record gone or still leased (see rq_lease). On failure
 * they are released too: the records are ready again (at-least-once). */
static int txn_end(rq_txn *t, bool commit) {
  rq_env *env = t->env;
  MDB_txn *txn = t->txn;
  rq_release_ent *rel = t->release;
  size_t nrel = t->nrelease;
  t->release = NULL;
  t->nrelease = t->caprelease = 0;
  /* Dedup table moves of this batch (rq_dedup_prune), undone unless it
   * commits: an abort undoes them still under LMDB's writer lock. */
  rq_dedup_move *moved = t->moved;
  size_t nmoved = t->nmoved;
  t->moved = NULL;
  t->nmoved = t->capmoved = 0;
  if (nmoved && !commit) rq_dedup_revert(env, moved, nmoved);
  t->txn = NULL;
  if (t->sb.alloc > (1u << 20)) { /* do not keep a huge buffer around */
    msgpack_sbuffer_destroy(&t->sb);
    msgpack_sbuffer_init(&t->sb);
  }
  if (!env->spare)
    env->spare = t;
  else
    txn_free(t);
  int rc = 0;
  if (commit) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    rc = mdb_txn_commit(txn);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (rc == 0)
      atomic_store(&env->last_sync_ns, (uint64_t)((b.tv_sec - a.tv_sec) * 1000000000LL +
                                                  (b.tv_nsec - a.tv_nsec)));
  } else {
    mdb_txn_abort(txn);
  }
  if (nmoved && commit && rc) rq_dedup_revert(env, moved, nmoved);
  free(moved);
  pthread_rwlock_unlock(&env->open_lk); /* before env->mu: see env_reopen() */
  if (nrel) {
    pthread_mutex_lock(&env->mu);
    for (size_t i = 0; i < nrel; i++) {
      if (!commit || rc) /* the batch did not happen: every record is ready now */
        lease_ended(env, rel[i].seq, false, 0);
      else
        lease_ended(env, rel[i].seq, rel[i].due == RQ_DUE_GONE, rel[i].due);
    }
    pthread_mutex_unlock(&env->mu);
  }
  free(rel);
  return rc;
}

void rq_txn_abort(rq_txn *t) {
  if (t) txn_end(t, false);
}

int rq_txn_commit(rq_txn *t) {
  if (!t) return -EINVAL;
  rq_env *env = t->env;
  int rc = t->failed;
  if (!rc && t->dirty) rc = rq_counters_store(t->txn, &t->c);
  if (!rc) {
    pthread_mutex_lock(&env->mu);
    rq_commit_hook hook = env->hook;
    void *arg = env->hook_arg;
    pthread_mutex_unlock(&env->mu);
    if (hook) rc = hook(arg);
  }
  if (rc) {
    txn_end(t, false);
    return rc;
  }
  uint64_t used = rq_used_bytes_in(env, t->txn);
  env->last_appends = t->c.appended - t->appended0; /* still under the writer lock */
  rc = txn_end(t, true);
  if (rc == 0) {
    atomic_store(&env->used_bytes, used);
    atomic_fetch_add(&env->commits, 1);
  }
  return rq_mdb_err(rc);
}

double rq_last_commit_sync_seconds(const rq_env *env) {
  return env ? (double)atomic_load(&env->last_sync_ns) / 1e9 : 0;
}

static int add_release(rq_txn *t, uint64_t seq, int64_t due) {
  if (t->nrelease == t->caprelease) {
    size_t ncap = t->caprelease ? t->caprelease * 2 : 64;
    rq_release_ent *n = realloc(t->release, ncap * sizeof *n);
    if (!n) return -ENOMEM;
    t->release = n;
    t->caprelease = ncap;
  }
  t->release[t->nrelease++] = (rq_release_ent){seq, due};
  return 0;
}

/* Puts `val` under seq (flags: MDB_APPEND, ...). */
static int put_seq(rq_txn *t, MDB_dbi dbi, uint64_t seq, MDB_val *val, unsigned flags) {
  uint8_t kb[8];
  rq_put_be64(kb, seq);
  MDB_val k = {8, kb};
  int rc = mdb_put(t->txn, dbi, &k, val, flags);
  if (rc == MDB_KEYEXIST && (flags & MDB_APPEND)) /* defensive: fall back to a plain put */
    rc = mdb_put(t->txn, dbi, &k, val, flags & ~(unsigned)MDB_APPEND);
  return rc ? rq_txn_fail(t, rq_mdb_err(rc)) : 0;
}

int rq_txn_put_view(rq_txn *t, MDB_dbi dbi, uint64_t seq, const rq_view *v, unsigned flags,
                    bool state_only) {
  msgpack_sbuffer_clear(&t->sb);
  int rc = state_only ? rq_encode_state(&t->pk, v) : rq_encode(&t->pk, v);
  if (rc) return rc;
  if (t->sb.size > t->env->map_size / 2) return RQ_TOO_BIG;
  MDB_val val = {t->sb.size, t->sb.data};
  return put_seq(t, dbi, seq, &val, flags);
}

/* ---- ready records: header in `ready`, body in `bodies` ------------------
 * With the body inline, a 4 KiB event plus its header needed two overflow
 * pages: 8 KiB written and synced per event. The body alone fits one
 * overflow page, and the few hundred bytes of header share a leaf with
 * other headers. A small record stays whole: it fits a leaf, and a second
 * DB would only add a B-tree path to every commit; a record whose header
 * does not push it over a page boundary stays whole too. */

/* LMDB's overflow pages for a value of n bytes (its OVPAGES). */
static uint64_t ov_pages(uint64_t n, uint64_t psize) {
  return (n + 16 - 1) / psize + 1;
}

int rq_ready_put(rq_txn *t, uint64_t seq, const rq_view *v) {
  rq_env *env = t->env;
  uint64_t body = v->len[RQ_F_BODY];
  if (body > env->map_size / 2) return RQ_TOO_BIG;
  rq_view h = *v;
  rq_view_clear(&h, RQ_F_BODY);
  msgpack_sbuffer_clear(&t->sb);
  int rc = rq_encode(&t->pk, &h);
  if (rc) return rc;
  /* The whole record: header + key byte + bin header (<= 5) + body. */
  uint64_t whole = t->sb.size + 1 + (body < 256 ? 2 : body < 65536 ? 3 : 5) + body;
  if (whole <= RQ_INLINE_MAX || ov_pages(whole, env->psize) == ov_pages(body, env->psize))
    return rq_txn_put_view(t, env->db_ready, seq, v, MDB_APPEND, false);
  /* v may point into the map (a replayed DLQ record): the body goes in
   * first, before any other write here could move what it points at; the
   * header is already a copy in t->sb. */
  MDB_val b = {body, v->ptr[RQ_F_BODY] ? (void *)v->ptr[RQ_F_BODY] : (void *)""},
          hv = {t->sb.size, t->sb.data};
  if ((rc = put_seq(t, env->db_bodies, seq, &b, MDB_APPEND))) return rc;
  return put_seq(t, env->db_ready, seq, &hv, MDB_APPEND);
}

int rq_ready_header(const MDB_val *raw, uint64_t seq, rq_view *v) {
  int rc = rq_decode(raw->mv_data, raw->mv_size, v, false);
  if (rc) return rc;
  if (!rq_view_has(v, RQ_F_SEQ) || (uint64_t)v->num[RQ_F_SEQ] != seq) return RQ_CORRUPT;
  return 0;
}

int rq_ready_body(MDB_txn *txn, rq_env *env, uint64_t seq, rq_view *v) {
  if (rq_view_has(v, RQ_F_BODY)) return 0; /* format 1: inline */
  if (env->no_bodies) return RQ_CORRUPT;
  uint8_t kb[8];
  rq_put_be64(kb, seq);
  MDB_val k = {8, kb}, b;
  int rc = mdb_get(txn, env->db_bodies, &k, &b);
  if (rc == MDB_NOTFOUND) return RQ_CORRUPT; /* a header without its body */
  if (rc) return rq_mdb_err(rc);
  rq_view_set_str(v, RQ_F_BODY, b.mv_data, b.mv_size);
  return 0;
}

int rq_ready_view(MDB_txn *txn, rq_env *env, uint64_t seq, const MDB_val *raw, rq_view *v) {
  int rc = rq_ready_header(raw, seq, v);
  return rc ? rc : rq_ready_body(txn, env, seq, v);
}

static int del_seq(rq_txn *t, MDB_dbi dbi, uint64_t seq, bool must);

int rq_ready_del(rq_txn *t, uint64_t seq) {
  int rc = del_seq(t, t->env->db_ready, seq, true);
  if (!rc) rc = del_seq(t, t->env->db_bodies, seq, false);
  if (!rc) rc = del_seq(t, t->env->db_state, seq, false);
  return rc;
}

int rq_txn_cap_check(rq_txn *t, size_t add) {
  /* Per record plus B-tree overhead; exact recount only near the cap. */
  uint64_t need = (uint64_t)add + 64;
  if (t->used_est + need > t->env->append_cap) {
    t->used_est = rq_used_bytes_in(t->env, t->txn);
    if (t->used_est + need > t->env->append_cap) return RQ_MAP_FULL;
  }
  t->used_est += need;
  return 0;
}

/* Shared by append and append_dead: checks dedup, assigns the seq. */
static int append_common(rq_txn *t, const rq_record *rec, uint64_t *seq, int64_t *now) {
  if (!t || !rec) return -EINVAL;
  if (t->failed) return RQ_BAD_TXN;
  if (!rec->body && rec->body_len) return -EINVAL;
  *now = rec->received_ms ? rec->received_ms : rq_now_ms();
  if (rec->webhook_id && *rec->webhook_id) {
    int rc = rq_dedup_check(t->env, t->txn, rec->webhook_id, *now);
    if (rc < 0) return rq_txn_fail(t, rc);
    if (rc == 1) {
      t->c.duplicates++;
      t->dirty = true;
      return RQ_DUPLICATE;
    }
  }
  if ((uint64_t)rec->body_len > t->env->append_cap / 2) return RQ_TOO_BIG;
  int rc = rq_txn_cap_check(t, rec->body_len + 256);
  if (rc) return rc; /* the batch stays usable */
  *seq = t->c.next_seq;
  return 0;
}

/* What every append does after its record is stored, wherever it went:
 * remember the webhook id (held by the record while it is ready, else
 * logged at once), take the seq, count it. */
static int append_finish(rq_txn *t, const rq_record *rec, uint64_t seq, int64_t now, bool ready,
                         uint64_t *seq_out) {
  int rc;
  if (rec->webhook_id && *rec->webhook_id &&
      (rc = rq_dedup_record(t, rec->webhook_id, now, ready ? seq : 0)))
    return rc;
  t->c.next_seq++;
  t->c.appended++;
  t->dirty = true;
  if (seq_out) *seq_out = seq;
  return 0;
}

int rq_txn_append(rq_txn *t, const rq_record *rec, uint64_t *seq_out) {
  uint64_t seq;
  int64_t now;
  int rc = append_common(t, rec, &seq, &now);
  if (rc) return rc;
  rq_view v;
  rq_view_from_record(&v, rec);
  rq_view_set_num(&v, RQ_F_SEQ, (int64_t)seq);
  /* The dedup clock: the time the record's id is remembered from. */
  rq_view_set_num(&v, RQ_F_RECEIVED, now);
  /* A record enters the queue fresh: retry and DLQ state belong to the
   * queue, not to the caller. */
  rq_view_clear(&v, RQ_F_ATTEMPTS);
  rq_view_clear(&v, RQ_F_NEXT_ATTEMPT);
  rq_view_clear(&v, RQ_F_FIRST_ATTEMPT);
  rq_view_clear(&v, RQ_F_LAST_ATTEMPT);
  rq_view_clear(&v, RQ_F_LAST_ERROR);
  rq_view_clear(&v, RQ_F_DLQ_REASON);
  rq_view_clear(&v, RQ_F_DLQ_CODE);
  rq_view_clear(&v, RQ_F_DLQ_MESSAGE);
  rq_view_clear(&v, RQ_F_DLQ_TIME);
  rq_view_clear(&v, RQ_F_REPLAYED);
  /* Seqs only grow, so MDB_APPEND: no search, pages filled completely. */
  if ((rc = rq_ready_put(t, seq, &v))) return rc;
  if ((rc = append_finish(t, rec, seq, now, true, seq_out))) return rc;
  t->c.ready_count++;
  t->c.ready_bytes += rec->body_len;
  return 0;
}

int rq_txn_append_dead(rq_txn *t, const rq_record *rec, const char *reason, const char *code,
                       const char *message, uint64_t *seq_out) {
  uint64_t seq;
  int64_t now;
  int rc = append_common(t, rec, &seq, &now);
  if (rc) return rc;
  rq_view v;
  rq_view_from_record(&v, rec);
  rq_view_set_num(&v, RQ_F_SEQ, (int64_t)seq);
  rq_view_set_num(&v, RQ_F_RECEIVED, now);
  rq_view_set_str(&v, RQ_F_DLQ_REASON, reason, reason ? strlen(reason) : 0);
  rq_view_set_str(&v, RQ_F_DLQ_CODE, code, code ? strlen(code) : 0);
  rq_view_set_str(&v, RQ_F_DLQ_MESSAGE, message, message ? strlen(message) : 0);
  rq_view_set_num(&v, RQ_F_DLQ_TIME, rq_now_ms());
  if ((rc = rq_txn_put_view(t, t->env->db_dlq, seq, &v, MDB_APPEND, false))) return rc;
  if ((rc = append_finish(t, rec, seq, now, false, seq_out))) return rc;
  t->c.dead++;
  t->c.dlq_count++;
  t->c.dlq_bytes += rec->body_len;
  return 0;
}

/* Looks up a ready record and its retry state (merged into *v). The view
 * points into the map: use it before the next write to the same DB. */
int rq_state_get(MDB_txn *txn, rq_env *env, uint64_t seq, rq_view *st) {
  uint8_t kb[8];
  rq_put_be64(kb, seq);
  MDB_val k = {8, kb}, val;
  int rc = mdb_get(txn, env->db_state, &k, &val);
  if (rc == MDB_NOTFOUND) return RQ_NOTFOUND;
  if (rc) return rq_mdb_err(rc);
  return rq_decode(val.mv_data, val.mv_size, st, false) == 0 ? 0 : RQ_NOTFOUND;
}

static int load_ready(MDB_txn *txn, rq_env *env, uint64_t seq, rq_view *v) {
  uint8_t kb[8];
  rq_put_be64(kb, seq);
  MDB_val k = {8, kb}, val;
  int rc = mdb_get(txn, env->db_ready, &k, &val);
  if (rc) return rq_mdb_err(rc);
  if ((rc = rq_ready_view(txn, env, seq, &val, v))) {
    /* Undecodable: still removable/dead-letterable, with its raw bytes. */
    rq_view_corrupt(v, seq, val.mv_data, val.mv_size, rq_now_ms());
    rq_view_clear(v, RQ_F_DLQ_REASON);
    rq_view_clear(v, RQ_F_DLQ_MESSAGE);
    rq_view_clear(v, RQ_F_DLQ_TIME);
  }
  rq_view st;
  rc = rq_state_get(txn, env, seq, &st);
  if (rc == 0) rq_view_overlay_state(v, &st);
  return rc == RQ_NOTFOUND ? 0 : rc;
}

static void sub_sat(uint64_t *x, uint64_t d) {
  *x = *x > d ? *x - d : 0;
}

static int del_seq(rq_txn *t, MDB_dbi dbi, uint64_t seq, bool must) {
  uint8_t kb[8];
  rq_put_be64(kb, seq);
  MDB_val k = {8, kb};
  int rc = mdb_del(t->txn, dbi, &k, NULL);
  if (rc == MDB_NOTFOUND && !must) return 0;
  return rc ? rq_txn_fail(t, rq_mdb_err(rc)) : 0;
}

int rq_txn_ack(rq_txn *t, uint64_t seq) {
  if (!t) return -EINVAL;
  if (t->failed) return RQ_BAD_TXN;
  int rc = add_release(t, seq, RQ_DUE_GONE);
  if (rc) return rq_txn_fail(t, rc);
  uint8_t kb[8];
  rq_put_be64(kb, seq);
  MDB_val k = {8, kb}, val;
  rc = mdb_get(t->txn, t->env->db_ready, &k, &val);
  if (rc == MDB_NOTFOUND) return RQ_NOTFOUND;
  if (rc) return rq_txn_fail(t, rq_mdb_err(rc));
  rq_view v;
  size_t body = val.mv_size;
  if (rq_ready_view(t->txn, t->env, seq, &val, &v) == 0) {
    body = v.len[RQ_F_BODY];
    /* The log takes over the id from the record (rq_dedup.c). */
    if ((rc = rq_dedup_leave(t, seq, &v))) return rc;
  }
  if ((rc = rq_ready_del(t, seq))) return rc;
  t->c.acked++;
  sub_sat(&t->c.ready_count, 1);
  sub_sat(&t->c.ready_bytes, body);
  t->dirty = true;
  return 0;
}

int rq_txn_nack(rq_txn *t, uint64_t seq, int64_t now_ms, int64_t next_attempt_ms,
                const char *error) {
  if (!t) return -EINVAL;
  if (t->failed) return RQ_BAD_TXN;
  int rc = add_release(t, seq, next_attempt_ms);
  if (rc) return rq_txn_fail(t, rc);
  rq_view v;
  if ((rc = load_ready(t->txn, t->env, seq, &v))) {
    return rc == RQ_NOTFOUND ? rc : rq_txn_fail(t, rc);
  }
  rq_view_set_num(&v, RQ_F_ATTEMPTS, v.num[RQ_F_ATTEMPTS] + 1);
  if (!v.num[RQ_F_FIRST_ATTEMPT]) rq_view_set_num(&v, RQ_F_FIRST_ATTEMPT, now_ms);
  rq_view_set_num(&v, RQ_F_LAST_ATTEMPT, now_ms);
  rq_view_set_num(&v, RQ_F_NEXT_ATTEMPT, next_attempt_ms);
  rq_view_set_str(&v, RQ_F_LAST_ERROR, error, error ? strlen(error) : 0);
  /* Only the small state value is rewritten, never the body. */
  return rq_txn_put_view(t, t->env->db_state, seq, &v, 0, true);
}

int rq_txn_dead(rq_txn *t, uint64_t seq, int64_t now_ms, const char *reason, const char *code,
                const char *message) {
  if (!t) return -EINVAL;
  if (t->failed) return RQ_BAD_TXN;
  int rc = add_release(t, seq, RQ_DUE_GONE);
  if (rc) return rq_txn_fail(t, rc);
  rq_view v;
  if ((rc = load_ready(t->txn, t->env, seq, &v)))
    return rc == RQ_NOTFOUND ? rc : rq_txn_fail(t, rc);
  size_t body = v.len[RQ_F_BODY];
  rq_view_set_num(&v, RQ_F_ATTEMPTS, v.num[RQ_F_ATTEMPTS] + 1);
  if (!v.num[RQ_F_FIRST_ATTEMPT]) rq_view_set_num(&v, RQ_F_FIRST_ATTEMPT, now_ms);
  rq_view_set_num(&v, RQ_F_LAST_ATTEMPT, now_ms);
  rq_view_clear(&v, RQ_F_NEXT_ATTEMPT);
  rq_view_set_str(&v, RQ_F_DLQ_REASON, reason, reason ? strlen(reason) : 0);
  rq_view_set_str(&v, RQ_F_DLQ_CODE, code, code ? strlen(code) : 0);
  rq_view_set_str(&v, RQ_F_DLQ_MESSAGE, message, message ? strlen(message) : 0);
  rq_view_set_num(&v, RQ_F_DLQ_TIME, now_ms);
  /* Encoded (copied) before anything is deleted: v points into the map. */
  if ((rc = rq_txn_put_view(t, t->env->db_dlq, seq, &v, 0, false))) return rc;
  /* The log takes over the id from the record (rq_dedup.c), read from the
   * encoded copy: after a write, v may point at pages LMDB moved. */
  rq_view dv;
  if (rq_decode(t->sb.data, t->sb.size, &dv, true) == 0 && (rc = rq_dedup_leave(t, seq, &dv)))
    return rc;
  if ((rc = rq_ready_del(t, seq))) return rc;
  sub_sat(&t->c.ready_count, 1);
  sub_sat(&t->c.ready_bytes, body);
  t->c.dlq_count++;
  t->c.dlq_bytes += body;
  t->c.dead++;
  t->dirty = true;
  return 0;
}

/* ---- reading the ready queue ---------------------------------------------- */

/* One ready record during a scan (not leased by this process): its raw
 * value and its retry state (if it was nacked). Decoding the record is left to
 * the callback, so records that are skipped (leased, not due) cost no more
 * than a cursor step and a look at their small state value. */
typedef struct {
  uint64_t seq;
  MDB_val raw;
  const rq_view *state; /* NULL: never nacked, due now */
} scan_item;

typedef int (*scan_fn)(void *arg, const scan_item *it);

/* Decodes the record with its retry state merged in. */
static int item_view(const scan_item *it, rq_view *v) {
  int rc = rq_ready_header(&it->raw, it->seq, v);
  if (rc) return rc;
  if (it->state) rq_view_overlay_state(v, it->state);
  return 0;
}

/* When a record may be leased at `now`: at its next attempt time, unless
 * the clock reads more than RQ_CLOCK_STEP_MS earlier than that failed
 * attempt itself. Then the wall clock was stepped back (a VM restored from
 * a snapshot, NTP fixing a bad RTC, an operator setting the date) and the
 * due time belongs to the old, later timeline: the remaining wait is longer
 * than the whole delay the nack asked for, by the size of the step, which
 * may be hours in which the event sits "ready" and nothing moves. No backoff
 * asks for that, so the record is due now (one early retry at worst; its
 * next nack stores times of the new timeline). Steps back under
 * RQ_CLOCK_STEP_MS only delay a retry by that much. */
#define RQ_CLOCK_STEP_MS 2000
int64_t rq_due_at(int64_t due, int64_t last, int64_t now) {
  if (due > now && last > now && last - now > RQ_CLOCK_STEP_MS) return 0;
  return due;
}

static int64_t item_due(const scan_item *it, int64_t now) {
  if (!it->state) return 0;
  return rq_due_at(it->state->num[RQ_F_NEXT_ATTEMPT], it->state->num[RQ_F_LAST_ATTEMPT], now);
}

/* Walks ready records in seq order from seq `from` on. `fn` returns 0 to
 * continue, 1 to stop, <0 on error. *last is the last seq looked at (leased
 * ones skipped here included), unchanged when there was none. */
static int scan_ready(rq_env *env, MDB_txn *txn, uint64_t from, scan_fn fn, void *arg,
                      uint64_t *last) {
  MDB_cursor *rcur, *scur;
  int rc = mdb_cursor_open(txn, env->db_ready, &rcur);
  if (rc) return rq_mdb_err(rc);
  if ((rc = mdb_cursor_open(txn, env->db_state, &scur))) {
    mdb_cursor_close(rcur);
    return rq_mdb_err(rc);
  }
  MDB_val k, v, sk, sv;
  uint8_t fb[8];
  rq_put_be64(fb, from);
  k.mv_size = 8;
  k.mv_data = fb;
  uint64_t skey = 0; /* key under the state cursor; UINT64_MAX at the end */
  int out = 0;
  for (rc = mdb_cursor_get(rcur, &k, &v, from ? MDB_SET_RANGE : MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(rcur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) continue;
    scan_item it = {.seq = rq_get_be64(k.mv_data), .raw = v};
    *last = it.seq;
    if (rq_seqset_has(&env->leased, it.seq)) continue;
    /* Merge-join with the state DB: both are keyed by seq. */
    if (skey < it.seq) {
      uint8_t kb[8];
      rq_put_be64(kb, it.seq);
      sk.mv_size = 8;
      sk.mv_data = kb;
      int r2 = mdb_cursor_get(scur, &sk, &sv, MDB_SET_RANGE);
      if (r2 == MDB_NOTFOUND) {
        skey = UINT64_MAX;
      } else if (r2) {
        out = rq_mdb_err(r2);
        break;
      } else {
        skey = sk.mv_size == 8 ? rq_get_be64(sk.mv_data) : UINT64_MAX;
      }
    }
    rq_view st;
    if (skey == it.seq && rq_decode(sv.mv_data, sv.mv_size, &st, false) == 0) it.state = &st;
    out = fn(arg, &it);
    if (out) break;
  }
  if (!out && rc != 0 && rc != MDB_NOTFOUND) out = rq_mdb_err(rc);
  mdb_cursor_close(scur);
  mdb_cursor_close(rcur);
  return out < 0 ? out : 0;
}

typedef struct {
  rq_env *env;
  MDB_txn *txn;
  int64_t now;
  size_t max, n, cap;
  rq_record *out;
  int64_t next_due;
  int64_t skipped_due; /* earliest next attempt among records skipped as not due */
} lease_ctx;

/* Leases one decoded record: 0, RQ_CORRUPT (no body: skip it), <0. */
static int lease_take(lease_ctx *c, uint64_t seq, rq_view *v) {
  if (c->n == c->cap) {
    size_t ncap = c->cap ? c->cap * 2 : 16;
    if (ncap > c->max) ncap = c->max;
    rq_record *n = realloc(c->out, ncap * sizeof *n);
    if (!n) return -ENOMEM;
    c->out = n;
    c->cap = ncap;
  }
  int rc = rq_ready_body(c->txn, c->env, seq, v);
  if (rc) return rc; /* RQ_CORRUPT: body missing, rq_verify's job */
  if ((rc = rq_materialize(v, &c->out[c->n]))) return rc;
  c->out[c->n].seq = seq;
  if ((rc = rq_seqset_put(&c->env->leased, seq, NULL))) {
    rq_record_free(&c->out[c->n]);
    return rc;
  }
  c->n++;
  return 0;
}

static int lease_one(void *arg, const scan_item *it) {
  lease_ctx *c = arg;
  int64_t due = item_due(it, c->now);
  if (due > c->now) {
    if (due < c->skipped_due) c->skipped_due = due;
    return 0;
  }
  rq_view v;
  if (item_view(it, &v)) return 0; /* undecodable: rq_verify's job */
  int rc = lease_take(c, it->seq, &v);
  if (rc) return rc == RQ_CORRUPT ? 0 : rc;
  return c->n == c->max ? 1 : 0;
}

/* rq_fifo_lease's take: a group head, with its retry state merged in. */
static int fifo_take(void *arg, uint64_t seq, const MDB_val *raw, MDB_txn *txn) {
  lease_ctx *c = arg;
  rq_view v, st;
  if (rq_ready_header(raw, seq, &v)) return 1;
  int rc = rq_state_get(txn, c->env, seq, &st);
  if (rc == 0)
    rq_view_overlay_state(&v, &st);
  else if (rc != RQ_NOTFOUND)
    return rc;
  rc = lease_take(c, seq, &v);
  return rc == RQ_CORRUPT ? 1 : rc;
}

/* Where a non-FIFO scan may start (env->mu held). Every ready record below
 * env->scan_from is leased by us, or not due before env->scan_due, or
 * undecodable; so unless scan_due has come, a scan can skip them all. Without
 * this, each lease walked past every leased and every backed-off record
 * from the head of the queue again: a few hundred cursor steps per call in
 * steady draining, the whole backlog per call during an outage. */
/* The records skipped were judged at a clock of at most env->scan_now; a
 * clock earlier than that (stepped back) can make them due (item_due), so
 * the scan starts over. */
static uint64_t scan_start(rq_env *env, int64_t now_ms) {
  if (now_ms < env->scan_due && now_ms >= env->scan_now) {
    env->scan_now = now_ms;
    return env->scan_from;
  }
  env->scan_from = 0;
  env->scan_due = INT64_MAX;
  env->scan_now = now_ms;
  return 0;
}

/* After a non-FIFO scan from `from` that looked at records up to `last`:
 * all of them are now leased, not due (earliest: skipped_due), or
 * undecodable. */
static void scan_advance(rq_env *env, uint64_t from, uint64_t last, int64_t skipped_due) {
  if (skipped_due < env->scan_due) env->scan_due = skipped_due;
  if (last + 1 > from) env->scan_from = last + 1;
}

/* A lease ended (env->mu held): the record left the queue (gone), or it
 * stays, due again at `due` (0: as stored). The lease scan and the FIFO
 * index learn where to look again. */
static void lease_ended(rq_env *env, uint64_t seq, bool gone, int64_t due) {
  rq_seqset_del(&env->leased, seq);
  rq_fifo_note(env, seq, gone, due);
  if (gone) return;
  if (due > rq_now_ms()) {
    if (due < env->scan_due) env->scan_due = due;
  } else if (seq < env->scan_from) {
    env->scan_from = seq;
  }
}

int rq_lease(rq_env *env, int64_t now_ms, size_t max, unsigned flags, rq_record **out) {
  if (!env || !out) return -EINVAL;
  *out = NULL;
  if (max == 0) return 0;
  if (max > INT_MAX) max = INT_MAX;
  bool fifo = (flags & RQ_LEASE_FIFO) != 0;
  lease_ctx c = {.env = env, .now = now_ms, .max = max, .skipped_due = INT64_MAX};
  /* env->mu is held from before the snapshot until the leases are
   * recorded, so a concurrent commit releasing a lease (after its
   * mdb_txn_commit) cannot make us lease a record it just removed. */
  pthread_mutex_lock(&env->mu);
  MDB_txn *txn;
  int rc = begin_reopening(env, MDB_RDONLY, &txn, &env->mu);
  if (rc) {
    pthread_mutex_unlock(&env->mu);
    return rq_mdb_err(rc);
  }
  c.txn = txn;
  if (fifo) {
    /* Heads wait in the index by their stored due time; after a step back
     * some are due by rq_due_at: rebuild (placement applies it). Smaller
     * steps change no due time worth a rebuild, which holds mu. */
    if (env->fifo_now != INT64_MIN && now_ms < env->fifo_now - RQ_CLOCK_STEP_MS)
      rq_fifo_drop(env);
    env->fifo_now = env->fifo ? (now_ms > env->fifo_now ? now_ms : env->fifo_now) : now_ms;
    rc = rq_fifo_lease(env, txn, now_ms, fifo_take, &c, max);
  } else {
    rq_fifo_drop(env); /* it cannot follow leases of non-head records */
    uint64_t from = scan_start(env, now_ms), last = 0;
    rc = scan_ready(env, txn, from, lease_one, &c, &last);
    if (rc >= 0) scan_advance(env, from, last, c.skipped_due);
  }
  rq_read_end(env, txn);
  if (rc < 0)
    for (size_t i = 0; i < c.n; i++) lease_ended(env, c.out[i].seq, false, 0);
  pthread_mutex_unlock(&env->mu);
  if (rc < 0) {
    rq_records_free(c.out, c.n);
    return rc;
  }
  *out = c.out;
  return (int)c.n;
}

void rq_release(rq_env *env, uint64_t seq) {
  pthread_mutex_lock(&env->mu);
  lease_ended(env, seq, false, 0);
  pthread_mutex_unlock(&env->mu);
}

size_t rq_leased_count(rq_env *env) {
  pthread_mutex_lock(&env->mu);
  size_t n = env->leased.n;
  pthread_mutex_unlock(&env->mu);
  return n;
}

static int due_one(void *arg, const scan_item *it) {
  lease_ctx *c = arg;
  int64_t due = item_due(it, c->now);
  if (due <= 0) {
    c->next_due = 0;
    return 1;
  }
  if (due < c->next_due) c->next_due = due;
  return 0;
}

int64_t rq_next_due_ms_flags(rq_env *env, unsigned flags) {
  int64_t next = INT64_MAX;
  pthread_mutex_lock(&env->mu);
  MDB_txn *txn;
  int rc = begin_reopening(env, MDB_RDONLY, &txn, &env->mu);
  if (rc == 0) {
    if (flags & RQ_LEASE_FIFO) {
      next = rq_fifo_next_due(env, txn);
    } else {
      /* Below scan_from nothing is due before scan_due (a lower bound),
       * unless the clock stepped back since (see scan_start). */
      int64_t now = rq_now_ms();
      bool back = now < env->scan_now;
      lease_ctx c = {.env = env, .now = now, .next_due = back ? INT64_MAX : env->scan_due};
      uint64_t last = 0;
      scan_ready(env, txn, back ? 0 : env->scan_from, due_one, &c, &last);
      next = c.next_due;
    }
    rq_read_end(env, txn);
  }
  pthread_mutex_unlock(&env->mu);
  return next;
}

int64_t rq_next_due_ms(rq_env *env) {
  return rq_next_due_ms_flags(env, 0);
}

int rq_dedup_seen(rq_env *env, const char *webhook_id, int64_t now_ms) {
  if (!env || !webhook_id) return -EINVAL;
  if (!*webhook_id) return 0;
  MDB_txn *txn;
  int rc = rq_read_begin(env, &txn);
  if (rc) return rc;
  rc = rq_dedup_check(env, txn, webhook_id, now_ms);
  rq_read_end(env, txn);
  return rc;
}

/* ---- stats ---------------------------------------------------------------- */

int rq_stat(rq_env *env, rq_stats *out) {
  if (!env || !out) return -EINVAL;
  memset(out, 0, sizeof *out);
  MDB_txn *txn;
  int rc = rq_read_begin(env, &txn);
  if (rc) return rc;
  rq_counters c;
  if ((rc = rq_counters_load(env, txn, &c))) {
    rq_read_end(env, txn);
    return rc;
  }
  out->ready = c.ready_count;
  out->ready_bytes = c.ready_bytes;
  out->dlq = c.dlq_count;
  out->dlq_bytes = c.dlq_bytes;
  out->appended_total = c.appended;
  out->acked_total = c.acked;
  out->dead_lettered_total = c.dead;
  out->duplicates_total = c.duplicates;
  MDB_cursor *cur;
  MDB_val k, v;
  if (mdb_cursor_open(txn, env->db_ready, &cur) == 0) {
    rq_view view;
    if (mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0 && k.mv_size == 8 &&
        rq_ready_header(&v, rq_get_be64(k.mv_data), &view) == 0)
      out->oldest_ready_ms = view.num[RQ_F_RECEIVED];
    mdb_cursor_close(cur);
  }
  MDB_stat st;
  if (mdb_stat(txn, env->db_dedup_time, &st) == 0) out->dedup_entries = st.ms_entries;
  out->map_used = rq_used_bytes_in(env, txn);
  MDB_envinfo info;
  mdb_env_info(env->mdb, &info);
  out->map_size = info.me_mapsize;
  rq_read_end(env, txn);
  out->inflight = rq_leased_count(env);
  return 0;
}

uint64_t rq_max_body_bytes(rq_env *env) {
  return env ? env->append_cap / 2 : 0; /* as rq_txn_append()'s check */
}

int rq_over_watermark(rq_env *env) {
  if (!env) return -EINVAL;
  uint64_t used, size = env->map_size;
  if (env->readonly) {
    MDB_txn *txn;
    int rc = rq_read_begin(env, &txn);
    if (rc) return rc;
    used = rq_used_bytes_in(env, txn);
    rq_read_end(env, txn);
  } else {
    /* Computed inside each write batch: no transaction needed here. */
    used = atomic_load(&env->used_bytes);
  }
  return used * 100 >= size * env->watermark_pct ? 1 : 0;
}
