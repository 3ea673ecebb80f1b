/* LD_PRELOAD shim for scenario 2: "no 2xx before the fsync that covers it".
 *
 * Every interesting event gets a number from one global counter:
 *   - a read() that returned bytes on an accepted socket: the request's bytes
 *     are in (numbered after the call returns);
 *   - a durability operation (fdatasync/fsync/msync, and a write to a file
 *     opened O_DSYNC/O_SYNC: LMDB's meta page write, its commit point): the
 *     start is numbered before the call, and when it returns successfully
 *     the largest start of any completed operation is remembered;
 *   - a write/writev/send of "HTTP/1.x 2.." on an ingest connection.
 * A 2xx is covered iff some durability operation that started after the
 * last read on that connection had completed before the send. With LMDB's
 * default (synchronous meta page) the commit point is the O_DSYNC write, so
 * once one was seen only those count ("strict"); fdatasync alone does not
 * make a commit durable.
 *
 * Counters are written to $RELAY_TEST_SYNC_SHIM_OUT (rewritten in place every 64
 * 2xx and at exit) as one line:
 *   ok=N bad=N syncs=N dsync_writes=N reads=N first_bad_fd=N
 * Ingest connections are those whose first request starts "POST /" (the
 * admin API is left out: its answers are not promises).
 *
 * Fault injection (scenario 3): when the file $RELAY_TEST_SHIM_FAIL_FILE
 * exists and holds "EIO N" or "ENOSPC N", the next N fdatasync/fsync calls
 * fail with that errno without syncing (the file is removed when N are
 * used up); counted as injected=N in the output line.
 *
 * Crash at the commit point (scenario 1): when $RELAY_TEST_SHIM_KILL_FILE
 * exists, the next O_DSYNC write (LMDB's meta page, which makes a commit
 * durable) completes, the file is removed and the process SIGKILLs itself:
 * the commit is on disk, none of its 2xx has been sent.
 *
 * Write faults (scenario 10): when $RELAY_TEST_SHIM_WFAIL_FILE exists and
 * holds "TARGET ERRNO N" (ERRNO: EIO or ENOSPC), the next N calls of that
 * kind on LMDB's data.mdb fail with ERRNO without writing anything (the
 * file is removed when N are used up). TARGET is
 *   pages      pwrite/pwritev/writev on the plain data.mdb fd (data pages)
 *   meta       pwrite/write on the O_DSYNC data.mdb fd (the meta page)
 *   zero       pwrite on the O_DIRECT data.mdb fd (grow-ahead zeros)
 *   fallocate  fallocate on data.mdb (grow-ahead fallback)
 *   ftruncate  ftruncate on data.mdb
 * Counted as winjected=N in the output line; wpages=, wmeta=, wzero=,
 * wfallocate= and wftruncate= count the calls of each kind seen, so that a
 * test can tell its target is reached at all. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <limits.h>
#include <unistd.h>

#define MAXFD 65536

enum { FD_NONE = 0, FD_ACCEPTED = 1, FD_INGEST = 2 };

static _Atomic uint64_t g_seq;
static _Atomic uint64_t g_max_done_any;   /* largest start of a completed sync op */
static _Atomic uint64_t g_max_done_dsync; /* same, O_DSYNC writes only */
static _Atomic uint64_t g_ok, g_bad, g_syncs, g_dsync, g_reads;
static _Atomic int g_first_bad_fd = -1;
static _Atomic uint64_t g_injected;
static pthread_mutex_t g_fail_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic unsigned char g_kind[MAXFD];
static _Atomic uint64_t g_last_read[MAXFD];
/* 0 unknown, 1 plain, 2 O_DSYNC/O_SYNC file */
static _Atomic unsigned char g_fileflag[MAXFD];
/* data.mdb descriptors for the write faults: 0 unknown, else a wf_target + 1
 * (WF_NONE + 1: not data.mdb) */
enum { WF_PAGES, WF_META, WF_ZERO, WF_FALLOCATE, WF_FTRUNCATE, WF_NONE };
static const char *const wf_names[] = {"pages", "meta", "zero", "fallocate", "ftruncate"};
static _Atomic unsigned char g_dbclass[MAXFD];
static _Atomic uint64_t g_winjected, g_wcalls[WF_NONE];

static ssize_t (*r_read)(int, void *, size_t);
static ssize_t (*r_write)(int, const void *, size_t);
static ssize_t (*r_writev)(int, const struct iovec *, int);
static ssize_t (*r_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*r_pwritev64)(int, const struct iovec *, int, off_t);
static int (*r_fallocate)(int, int, off_t, off_t);
static int (*r_fallocate64)(int, int, off_t, off_t);
static int (*r_ftruncate)(int, off_t);
static int (*r_ftruncate64)(int, off_t);
static ssize_t (*r_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*r_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*r_send)(int, const void *, size_t, int);
static ssize_t (*r_sendmsg)(int, const struct msghdr *, int);
static int (*r_accept)(int, struct sockaddr *, socklen_t *);
static int (*r_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*r_fsync)(int);
static int (*r_fdatasync)(int);
static int (*r_msync)(void *, size_t, int);
static int (*r_close)(int);

#define RESOLVE(f) do { if (!r_##f) r_##f = dlsym(RTLD_NEXT, #f); } while (0)

static void dump(void) {
  const char *p = getenv("RELAY_TEST_SYNC_SHIM_OUT");
  if (!p) return;
  char line[384];
  int n = snprintf(line, sizeof line, "ok=%llu bad=%llu syncs=%llu dsync_writes=%llu reads=%llu first_bad_fd=%d injected=%llu"
                   " winjected=%llu wpages=%llu wmeta=%llu wzero=%llu wfallocate=%llu wftruncate=%llu\n",
                   (unsigned long long)g_ok, (unsigned long long)g_bad, (unsigned long long)g_syncs,
                   (unsigned long long)g_dsync, (unsigned long long)g_reads, (int)g_first_bad_fd,
                   (unsigned long long)g_injected, (unsigned long long)g_winjected,
                   (unsigned long long)g_wcalls[WF_PAGES], (unsigned long long)g_wcalls[WF_META],
                   (unsigned long long)g_wcalls[WF_ZERO], (unsigned long long)g_wcalls[WF_FALLOCATE],
                   (unsigned long long)g_wcalls[WF_FTRUNCATE]);
  if (n <= 0) return;
  RESOLVE(pwrite);
  int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  (void)r_pwrite(fd, line, (size_t)n, 0);
  (void)ftruncate(fd, n);
  RESOLVE(close);
  r_close(fd);
}

__attribute__((destructor)) static void shim_fini(void) { dump(); }

static void max_store(_Atomic uint64_t *m, uint64_t v) {
  uint64_t cur = atomic_load(m);
  while (cur < v && !atomic_compare_exchange_weak(m, &cur, v)) {
  }
}

static void maybe_kill_at_commit(void) {
  const char *p = getenv("RELAY_TEST_SHIM_KILL_FILE");
  if (p && access(p, F_OK) == 0 && unlink(p) == 0) raise(SIGKILL);
}

static void sync_done(uint64_t start, int dsync) {
  atomic_fetch_add(&g_syncs, 1);
  max_store(&g_max_done_any, start);
  if (dsync) {
    atomic_fetch_add(&g_dsync, 1);
    max_store(&g_max_done_dsync, start);
  }
}

static void on_accept(int fd) {
  if (fd >= 0 && fd < MAXFD) {
    atomic_store(&g_kind[fd], FD_ACCEPTED);
    atomic_store(&g_last_read[fd], 0);
    atomic_store(&g_fileflag[fd], 0);
  }
}

static void on_read(int fd, const void *buf, ssize_t n) {
  if (n <= 0 || fd < 0 || fd >= MAXFD) return;
  unsigned char k = atomic_load(&g_kind[fd]);
  if (k == FD_NONE) return;
  if (k == FD_ACCEPTED && n >= 6 && memcmp(buf, "POST /", 6) == 0) {
    /* the admin API's POST routes all live under /v1/ */
    if (!(n >= 9 && memcmp(buf, "POST /v1/", 9) == 0)) atomic_store(&g_kind[fd], FD_INGEST);
  }
  atomic_fetch_add(&g_reads, 1);
  atomic_store(&g_last_read[fd], atomic_fetch_add(&g_seq, 1) + 1);
}

static void on_send(int fd, const void *buf, size_t n) {
  if (fd < 0 || fd >= MAXFD || atomic_load(&g_kind[fd]) != FD_INGEST) return;
  if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || ((const char *)buf)[9] != '2') return;
  uint64_t last = atomic_load(&g_last_read[fd]);
  uint64_t done = atomic_load(&g_dsync) ? atomic_load(&g_max_done_dsync) : atomic_load(&g_max_done_any);
  (void)atomic_fetch_add(&g_seq, 1);
  uint64_t total;
  if (done > last) {
    total = atomic_fetch_add(&g_ok, 1) + 1;
  } else {
    atomic_fetch_add(&g_bad, 1);
    int neg = -1;
    atomic_compare_exchange_strong(&g_first_bad_fd, &neg, fd);
    total = 0;
  }
  if (total % 64 == 0) dump();
}

static int is_dsync_file(int fd) {
  if (fd < 0 || fd >= MAXFD) return 0;
  unsigned char f = atomic_load(&g_fileflag[fd]);
  if (f == 0) {
    int fl = fcntl(fd, F_GETFL);
    struct stat st;
    int reg = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    f = (reg && fl >= 0 && (fl & (O_DSYNC | O_SYNC))) ? 2 : 1;
    atomic_store(&g_fileflag[fd], f);
  }
  return f == 2;
}

/* Which write-fault target a call on fd is, WF_NONE when fd is not
 * data.mdb (cached per fd until it is closed). */
static int db_class(int fd) {
  if (fd < 0 || fd >= MAXFD) return WF_NONE;
  unsigned char c = atomic_load(&g_dbclass[fd]);
  if (c) return c - 1;
  int cls = WF_NONE;
  char link[64], target[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof target - 1);
  if (n >= 9 && memcmp(target + n - 9, "/data.mdb", 9) == 0) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_DSYNC))
      cls = WF_META;
    else if (fl >= 0 && (fl & O_DIRECT))
      cls = WF_ZERO;
    else
      cls = WF_PAGES;
  }
  atomic_store(&g_dbclass[fd], (unsigned char)(cls + 1));
  return cls;
}

/* The errno to fail this call of `target` with, or 0 (see the header). */
static int write_fault(int target) {
  if (target < 0 || target >= WF_NONE) return 0;
  atomic_fetch_add(&g_wcalls[target], 1);
  const char *p = getenv("RELAY_TEST_SHIM_WFAIL_FILE");
  if (!p || access(p, F_OK) != 0) return 0;
  pthread_mutex_lock(&g_fail_mu);
  int err = 0;
  RESOLVE(read);
  RESOLVE(close);
  RESOLVE(pwrite);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[96] = {0};
    ssize_t n = r_read(fd, buf, sizeof buf - 1);
    r_close(fd);
    char what[16] = {0}, name[16] = {0};
    long left = 0;
    if (n > 0 && sscanf(buf, "%15s %15s %ld", what, name, &left) == 3 && left > 0 &&
        strcmp(what, wf_names[target]) == 0) {
      err = strcmp(name, "ENOSPC") == 0 ? ENOSPC : EIO;
      if (--left == 0) {
        unlink(p);
      } else {
        char out[96];
        int m = snprintf(out, sizeof out, "%s %s %ld\n", what, name, left);
        int w = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (w >= 0) {
          if (m > 0) (void)r_pwrite(w, out, (size_t)m, 0);
          r_close(w);
        }
      }
    }
  }
  pthread_mutex_unlock(&g_fail_mu);
  if (err) atomic_fetch_add(&g_winjected, 1);
  return err;
}

/* write_fault() for a write call on fd; sets errno. */
static int write_fault_fd(int fd) {
  int cls = db_class(fd);
  if (cls == WF_NONE) return 0;
  int err = write_fault(cls);
  if (err) errno = err;
  return err;
}

ssize_t read(int fd, void *buf, size_t n) {
  RESOLVE(read);
  ssize_t r = r_read(fd, buf, n);
  on_read(fd, buf, r);
  return r;
}

ssize_t write(int fd, const void *buf, size_t n) {
  RESOLVE(write);
  if (write_fault_fd(fd)) return -1;
  if (is_dsync_file(fd)) {
    uint64_t s = atomic_fetch_add(&g_seq, 1) + 1;
    ssize_t r = r_write(fd, buf, n);
    if (r >= 0) {
      sync_done(s, 1);
      maybe_kill_at_commit();
    }
    return r;
  }
  on_send(fd, buf, n);
  return r_write(fd, buf, n);
}

static ssize_t dsync_pwrite(ssize_t (*fn)(int, const void *, size_t, off_t), int fd, const void *buf,
                            size_t n, off_t off) {
  if (write_fault_fd(fd)) return -1;
  if (!is_dsync_file(fd)) return fn(fd, buf, n, off);
  uint64_t s = atomic_fetch_add(&g_seq, 1) + 1;
  ssize_t r = fn(fd, buf, n, off);
  if (r >= 0) {
    sync_done(s, 1);
    maybe_kill_at_commit();
  }
  return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  RESOLVE(pwrite);
  return dsync_pwrite(r_pwrite, fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
  RESOLVE(pwrite64);
  return dsync_pwrite(r_pwrite64, fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  RESOLVE(writev);
  if (write_fault_fd(fd)) return -1;
  if (cnt > 0) on_send(fd, iov[0].iov_base, iov[0].iov_len);
  return r_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
  RESOLVE(pwritev);
  if (write_fault_fd(fd)) return -1;
  return r_pwritev(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
  RESOLVE(pwritev64);
  if (write_fault_fd(fd)) return -1;
  return r_pwritev64(fd, iov, cnt, off);
}

/* fallocate/ftruncate on any data.mdb descriptor. */
static int size_fault(int fd, int target) {
  if (db_class(fd) == WF_NONE) return 0;
  int err = write_fault(target);
  if (err) errno = err;
  return err;
}

int fallocate(int fd, int mode, off_t off, off_t len) {
  RESOLVE(fallocate);
  if (size_fault(fd, WF_FALLOCATE)) return -1;
  return r_fallocate(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len) {
  RESOLVE(fallocate64);
  if (size_fault(fd, WF_FALLOCATE)) return -1;
  return r_fallocate64(fd, mode, off, len);
}

int ftruncate(int fd, off_t len) {
  RESOLVE(ftruncate);
  if (size_fault(fd, WF_FTRUNCATE)) return -1;
  return r_ftruncate(fd, len);
}

int ftruncate64(int fd, off_t len) {
  RESOLVE(ftruncate64);
  if (size_fault(fd, WF_FTRUNCATE)) return -1;
  return r_ftruncate64(fd, len);
}

ssize_t send(int fd, const void *buf, size_t n, int flags) {
  RESOLVE(send);
  on_send(fd, buf, n);
  return r_send(fd, buf, n, flags);
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags) {
  RESOLVE(sendmsg);
  if (m && m->msg_iovlen > 0) on_send(fd, m->msg_iov[0].iov_base, m->msg_iov[0].iov_len);
  return r_sendmsg(fd, m, flags);
}

int accept(int fd, struct sockaddr *a, socklen_t *l) {
  RESOLVE(accept);
  int r = r_accept(fd, a, l);
  on_accept(r);
  return r;
}

int accept4(int fd, struct sockaddr *a, socklen_t *l, int flags) {
  RESOLVE(accept4);
  int r = r_accept4(fd, a, l, flags);
  on_accept(r);
  return r;
}

int close(int fd) {
  RESOLVE(close);
  if (fd >= 0 && fd < MAXFD) {
    atomic_store(&g_kind[fd], FD_NONE);
    atomic_store(&g_fileflag[fd], 0);
    atomic_store(&g_dbclass[fd], 0);
  }
  return r_close(fd);
}

/* The errno to fail this sync with, or 0 (see the header). */
static int injected_failure(void) {
  const char *p = getenv("RELAY_TEST_SHIM_FAIL_FILE");
  if (!p || access(p, F_OK) != 0) return 0;
  pthread_mutex_lock(&g_fail_mu);
  int err = 0;
  RESOLVE(read);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[64] = {0};
    ssize_t n = r_read(fd, buf, sizeof buf - 1);
    RESOLVE(close);
    r_close(fd);
    char name[16] = {0};
    long left = 0;
    if (n > 0 && sscanf(buf, "%15s %ld", name, &left) == 2 && left > 0) {
      err = strcmp(name, "ENOSPC") == 0 ? ENOSPC : EIO;
      left--;
      if (left == 0) {
        unlink(p);
      } else {
        char out[64];
        int m = snprintf(out, sizeof out, "%s %ld\n", name, left);
        RESOLVE(pwrite);
        int w = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (w >= 0) {
          if (m > 0) (void)r_pwrite(w, out, (size_t)m, 0);
          r_close(w);
        }
      }
    }
  }
  pthread_mutex_unlock(&g_fail_mu);
  if (err) atomic_fetch_add(&g_injected, 1);
  return err;
}

int fsync(int fd) {
  RESOLVE(fsync);
  int inj = injected_failure();
  if (inj) {
    errno = inj;
    return -1;
  }
  uint64_t s = atomic_fetch_add(&g_seq, 1) + 1;
  int r = r_fsync(fd);
  if (r == 0) sync_done(s, 0);
  return r;
}

int fdatasync(int fd) {
  RESOLVE(fdatasync);
  int inj = injected_failure();
  if (inj) {
    errno = inj;
    return -1;
  }
  uint64_t s = atomic_fetch_add(&g_seq, 1) + 1;
  int r = r_fdatasync(fd);
  if (r == 0) sync_done(s, 0);
  return r;
}

int msync(void *a, size_t n, int flags) {
  RESOLVE(msync);
  uint64_t s = atomic_fetch_add(&g_seq, 1) + 1;
  int r = r_msync(a, n, flags);
  if (r == 0 && (flags & MS_SYNC)) sync_done(s, 0);
  return r;
}
