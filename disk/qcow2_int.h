/*
 * qcow2 internals shared by disk/qcow2_*.c: the in-memory image state, the
 * table caches (L2 tables, refcount blocks), the metadata I/O helpers and
 * the allocator. Nothing here is for users of disk/: see disk/qcow2.h.
 */
#ifndef RINGVM_DISK_QCOW2_INT_H
#define RINGVM_DISK_QCOW2_INT_H

#include <endian.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "async/exec.h"
#include "disk/disk.h"
#include "disk/qcow2.h"

#define QCOW2_WUR __attribute__((warn_unused_result))

/* L1/L2 entry bits. */
#define QC_COPIED     (1ULL << 63)
#define QC_COMPRESSED (1ULL << 62)
#define QC_ZERO       1ULL
#define QC_OFF_MASK   0x00fffffffffffe00ULL /* bits 9..55 */
#define QC_L1_RESERVED 0x7f000000000001ffULL
#define QC_L2_RESERVED 0x3f000000000001feULL
#define QC_RT_RESERVED 0x1ffULL

/* Header feature bits. */
#define QC_INCOMPAT_DIRTY    (1ULL << 0)
#define QC_INCOMPAT_CORRUPT  (1ULL << 1)
#define QC_INCOMPAT_DATAFILE (1ULL << 2)
#define QC_INCOMPAT_COMPRESS (1ULL << 3)
#define QC_INCOMPAT_EXTL2    (1ULL << 4)
#define QC_COMPAT_LAZY       (1ULL << 0)

/* Header extension magics. */
#define QC_EXT_END        0x00000000u
#define QC_EXT_BACKING_FMT 0xe2792acau
#define QC_EXT_FEATURES   0x6803f857u
#define QC_EXT_BITMAPS    0x23852875u

/* Implementation caps (hostile images must not make us allocate more). */
#define QC_MAX_L1_BYTES   (32u << 20)
#define QC_MAX_RT_BYTES   (8u << 20)
#define QC_MAX_VSIZE      (1ULL << 56)

/* One cached table (an L2 table or a refcount block: one cluster). */
struct qc_ent {
	uint64_t off; /* host offset of the table; 0 = slot unused */
	uint8_t *buf; /* the table as on disk (big endian), cluster-sized, aligned */
	unsigned pins;
	bool loading;
	int err;                  /* load result for tasks that waited on it */
	struct exec_waitq loaded; /* tasks waiting for the load */
	struct qc_ent *hnext;     /* hash chain */
	struct qc_ent *prev, *next; /* LRU: head is the most recently used */
};

/* An LRU cache of cluster-sized tables keyed by host offset (write-through:
 * every change is persisted by its owner before it is relied upon, so an
 * entry is never dirty and eviction never writes). */
struct qc_cache {
	unsigned cap, n;
	struct qc_ent *ents;
	struct qc_ent **hash;
	unsigned hmask;
	struct qc_ent *head, *tail;
	struct exec_waitq room; /* tasks waiting for an unpinned slot */
	struct qcow2_cache_stats st;
};

/* A lock on one key (a guest cluster, or an L1 index), held by one task. */
struct qc_lock {
	uint64_t key;
	struct exec_waitq q;
	struct qc_lock *next;
};

/* An in-place data write in flight to host cluster `host` (write_seg): the
 * cluster must not be freed (and so reallocated) until the write is done. */
struct qc_inflight {
	uint64_t host;
	struct qc_inflight *prev, *next;
};

struct qcow2 {
	int fd;             /* what operations pass to the ring (disk->io_fd) */
	uint32_t version;
	uint32_t cluster_bits;
	uint64_t cs;        /* cluster size */
	uint32_t l2_bits;   /* log2 entries per L2 table */
	uint64_t size;      /* virtual size */
	uint64_t *l1;       /* big endian, l1_alloc entries (zero past l1_size) */
	uint32_t l1_size;
	uint64_t l1_alloc;  /* entries the buffer holds (the table's clusters) */
	uint64_t l1_off;
	uint64_t *rt;       /* refcount table, big endian */
	uint64_t rt_entries;
	uint64_t rt_off;
	uint32_t rt_clusters;
	uint32_t refcount_order;
	uint32_t rb_bits;   /* log2 refcounts per block */
	uint64_t rc_max;    /* largest refcount value */
	uint64_t incompat, compat, autoclear;
	uint32_t hdr_len;
	uint32_t comp_type; /* 0 zlib, 1 zstd */
	uint32_t nb_snapshots;
	bool read_only;
	bool has_backing;
	bool no_zero_range; /* the file system refused FALLOC_FL_ZERO_RANGE */
	bool no_zero_fill;  /* ... and punch hole / allocate too: bounce buffers */
	char backing_name[1024]; /* as stored in the header */
	char backing_fmt[64];    /* from the extension, or "" */
	uint64_t file_end;  /* bytes: the file is at least this long */
	uint64_t free_hint; /* first cluster index that may be free */
	uint64_t pack_at, pack_end; /* compressed writes: free tail of the last cluster */
	unsigned unit;      /* metadata write granularity (<= 4096, divides cs) */
	struct qc_cache l2c, rbc;
	struct qc_lock *locks;
	struct exec_sem alloc_lock;
	struct qc_inflight *inflight; /* in-place data writes in flight */
	unsigned drain_waiters;       /* tasks waiting in release() for one to finish */
	struct exec_waitq drained;
	bool hold_inplace;            /* test hook: park in-place writes until released */
	struct exec_waitq held;
	/* test hook: the fail_at-th write step from now fails with fail_err */
	uint64_t writes, fail_at;
	int fail_err;
};

static inline uint64_t qc_get64(const void *tbl, uint64_t i)
{
	return be64toh(((const uint64_t *)tbl)[i]);
}
static inline void qc_set64(void *tbl, uint64_t i, uint64_t v)
{
	((uint64_t *)tbl)[i] = htobe64(v);
}

static inline struct qcow2 *qc_of(const struct disk *d)
{
	return d->priv;
}

/* ---- metadata and data I/O (qcow2_meta.c) ---- */
/* Read/write len bytes at off through the executor (readv/writev, one iovec:
 * the blk device's ring allows only READV/WRITEV/FSYNC/FALLOCATE). A read
 * that ends at EOF zero-fills; writes count as write steps (test hook). */
int qc_pread(struct qcow2 *q, struct exec *ex, void *buf, size_t len, uint64_t off) QCOW2_WUR;
/* The same for iovecs (consumed as they fill); past the end of the file reads zeros. */
int qc_preadv(struct qcow2 *q, struct exec *ex, struct iovec *iov, unsigned n, uint64_t off) QCOW2_WUR;
int qc_pwrite(struct qcow2 *q, struct exec *ex, const void *buf, size_t len,
              uint64_t off) QCOW2_WUR;
int qc_pwritev(struct qcow2 *q, struct exec *ex, struct iovec *iov, unsigned n,
               uint64_t off) QCOW2_WUR;
/* Make [off, off+len) of a newly allocated cluster read as zeros without
 * writing them (fallocate: ZERO_RANGE, or punch hole + allocate where the
 * file system lacks it); the file grows to cover it. A write step. */
int qc_zero(struct qcow2 *q, struct exec *ex, uint64_t off, uint64_t len) QCOW2_WUR;
/* Write the metadata unit of table tbl (at host off) holding byte pos. */
int qc_persist(struct qcow2 *q, struct exec *ex, const void *tbl, uint64_t off,
               uint64_t pos) QCOW2_WUR;
void *qc_alloc_buf(size_t len);

/* ---- caches ---- */
int qc_cache_init(struct qc_cache *c, unsigned cap, uint64_t cs) QCOW2_WUR;
void qc_cache_free(struct qc_cache *c);
/* Pin the table at host off, loading it (load) or zero-filling it (!load). */
int qc_cache_get(struct qcow2 *q, struct exec *ex, struct qc_cache *c, uint64_t off, bool load,
                 struct qc_ent **out) QCOW2_WUR;
void qc_cache_put(struct exec *ex, struct qc_cache *c, struct qc_ent *e);
/* The loaded table at off if cached (counted as a hit), else NULL: for a
 * lookup that reads it at once, without yielding (no pin needed). */
const uint8_t *qc_cache_peek(struct qc_cache *c, uint64_t off);
/* Drop the table at off if cached and unpinned (it was freed). */
void qc_cache_forget(struct qc_cache *c, uint64_t off);
bool qc_cache_has(const struct qc_cache *c, uint64_t off);

/* ---- locks ---- */
int qc_lock(struct exec *ex, struct qcow2 *q, struct qc_lock *l, uint64_t key) QCOW2_WUR;
void qc_unlock(struct exec *ex, struct qcow2 *q, struct qc_lock *l);

/* ---- refcounts and allocation ---- */
int qc_refcount(struct qcow2 *q, struct exec *ex, uint64_t cluster, uint64_t *out) QCOW2_WUR;
/* Allocate n contiguous clusters (refcount 1, persisted): host offset or -errno. */
int64_t qc_alloc(struct qcow2 *q, struct exec *ex, uint64_t n) QCOW2_WUR;
/* Add delta (+1/-1) to the refcount of every cluster touching [off, off+len). */
int qc_ref_range(struct qcow2 *q, struct exec *ex, uint64_t off, uint64_t len,
                 int delta) QCOW2_WUR;
/* Set one refcount (check -r). */
int qc_set_refcount(struct qcow2 *q, struct exec *ex, uint64_t cluster, uint64_t v) QCOW2_WUR;
/* Whether [off, off+len) overlaps metadata we know of (header, L1, refcount
 * table, cached L2 tables and refcount blocks). */
bool qc_overlaps_meta(const struct qcow2 *q, uint64_t off, uint64_t len);
/* Write header bytes [pos, pos+len) from hdr (a copy of cluster 0's first unit). */
int qc_write_header_field(struct qcow2 *q, struct exec *ex, uint64_t pos, const void *val,
                          size_t len) QCOW2_WUR;

/* ---- iovec helpers ---- */
static inline size_t qc_iov_total(const struct iovec *iov, unsigned n)
{
	size_t t = 0;
	for (unsigned i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

/* dst = the bytes [skip, skip+len) of src; returns the count. dst holds n entries. */
static inline unsigned qc_iov_slice(const struct iovec *src, unsigned n, size_t skip, size_t len,
                          struct iovec *dst)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n && len; i++) {
		size_t l = src[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		size_t take = l - skip < len ? l - skip : len;
		dst[k++] = (struct iovec){(char *)src[i].iov_base + skip, take};
		len -= take;
		skip = 0;
	}
	return k;
}

static inline void qc_iov_zero(const struct iovec *iov, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		memset(iov[i].iov_base, 0, iov[i].iov_len);
}

static inline void qc_iov_to_buf(const struct iovec *iov, unsigned n, uint8_t *buf)
{
	for (unsigned i = 0; i < n; i++) {
		memcpy(buf, iov[i].iov_base, iov[i].iov_len);
		buf += iov[i].iov_len;
	}
}

static inline void qc_buf_to_iov(const uint8_t *buf, const struct iovec *iov, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		memcpy(iov[i].iov_base, buf, iov[i].iov_len);
		buf += iov[i].iov_len;
	}
}

#define QC_SMALL_IOV 18 /* per-request iovec slices on the stack up to this many */

/* ---- mapping (qcow2_io.c) ---- */
/* The L2 entry of guest cluster g (0 if its L2 table is absent). */
int qc_l2_entry(struct qcow2 *q, struct exec *ex, uint64_t g, uint64_t *out) QCOW2_WUR;
/* The L2 table offset of L1 index l1i (0: none; -EIO: a hostile entry). */
int qc_l1_table(struct qcow2 *q, uint64_t l1i, uint64_t *l2off) QCOW2_WUR;
/* Pin the L2 table of l1 index l1i, allocating it if absent (L2, then L1). */
int qc_l2_ensure(struct qcow2 *q, struct exec *ex, uint64_t l1i, struct qc_ent **out) QCOW2_WUR;
/* Point guest cluster g at ne in its pinned table t, persist it, and (free_old)
 * release what the old entry held. */
int qc_set_entry(struct qcow2 *q, struct exec *ex, struct qc_ent *t, uint64_t g, uint64_t ne,
                 bool free_old) QCOW2_WUR;
/* Deallocate guest cluster g (its entry becomes 0, its clusters freed). */
int qc_dealloc(struct disk *d, struct exec *ex, uint64_t g) QCOW2_WUR;
/* Decompress the cluster of compressed entry e into out (one cluster). */
int qc_decompress(struct qcow2 *q, struct exec *ex, uint64_t e, uint8_t *out) QCOW2_WUR;
/* Compressed entry → host byte offset and the sector-rounded span. */
void qc_compressed_span(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len);

/* What an L2 entry maps to. */
static inline enum qcow2_kind qc_kind(const struct qcow2 *q, uint64_t e)
{
	if (e & QC_COMPRESSED)
		return QCOW2_COMPRESSED;
	if (q->version >= 3 && (e & QC_ZERO))
		return QCOW2_ZERO;
	return (e & QC_OFF_MASK) ? QCOW2_NORMAL : QCOW2_UNALLOC;
}

/* A standard entry's host cluster, checked: 0 if none, -EIO if hostile. */
static inline int64_t qc_host(const struct qcow2 *q, uint64_t e)
{
	if (e & QC_L2_RESERVED || (q->version < 3 && (e & QC_ZERO)))
		return -EIO;
	uint64_t h = e & QC_OFF_MASK;
	if (h & (q->cs - 1))
		return -EIO;
	return (int64_t)h;
}

/* ---- reads (qcow2_read.c) ---- */
/* Read [in, in+len) of guest cluster g, whose entry is e, into iov (n). */
int qc_read_seg(struct disk *d, struct exec *ex, uint64_t g, uint64_t e, uint64_t in,
                struct iovec *iov, unsigned n, uint64_t len) QCOW2_WUR;
int64_t qc_readv(struct disk *d, struct exec *ex, struct iovec *iov, unsigned n,
                 uint64_t off) QCOW2_WUR;

/* ---- open (qcow2_open.c) ---- */
void qc_destroy(struct qcow2 *q);

#endif
