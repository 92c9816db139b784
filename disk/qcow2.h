/*
 * The qcow2 format (versions 2 and 3) behind disk_ops: opened and validated
 * in the main process by disk_open (header, L1 and refcount tables, the
 * backing chain), then driven from a device process entirely through the
 * executor. Also what qcow-tool needs: create, grow, check, map, stats.
 */
#ifndef RINGVM_DISK_QCOW2_H
#define RINGVM_DISK_QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "async/exec.h"

struct disk;
struct disk_open_params;
struct disk_chain;

#define QCOW2_DEFAULT_L2_CACHE_CAP (32u << 20) /* bytes: QEMU's default cap */

/*
 * Called by disk_open on an fd whose first bytes are the qcow2 magic (or
 * with format=qcow2): reads and validates the header and tables with
 * pread (main process), opens the backing chain through disk_open_chain.
 * d->fd/path/read_only are set; on success d->ops/priv/size/backing are.
 * Errors (one line in err): -EINVAL malformed, -ENOTSUP unsupported feature
 * (naming it), -EUCLEAN dirty image whose refcounts could not be rebuilt,
 * -ELOOP/-EMLINK backing loops/too deep, -ENOENT missing backing file, -EIO
 * short reads. The corrupt bit opens the image read-only (d->read_only set).
 * A dirty image (lazy refcounts, not closed cleanly) opened read-write has
 * its refcounts rebuilt (check -r all on a private executor) and its dirty
 * bit cleared before this returns; read-only opens leave it as it is.
 */
int qcow2_open(struct disk *d, const struct disk_open_params *p, struct disk_chain *chain,
               char *err, size_t errlen) __attribute__((warn_unused_result));

/* Grow the virtual size to new_size (relocating the L1 table if needed). From a task. */
int qcow2_grow(struct disk *d, struct exec *ex, uint64_t new_size)
    __attribute__((warn_unused_result));

/*
 * Shrink to new_size over unallocated space only: -ENOTEMPTY (and the guest
 * offset of the first allocated cluster in *busy) if data or a compressed
 * cluster lies past it. Zero clusters past it are freed, L2 tables wholly
 * past it too, and the L1 table shrinks (its freed clusters go). From a task.
 */
int qcow2_shrink(struct disk *d, struct exec *ex, uint64_t new_size, uint64_t *busy)
    __attribute__((warn_unused_result));

/* Cache counters (tests, benchmarks). */
struct qcow2_cache_stats {
	uint64_t hits, misses, evictions;
};
void qcow2_stats(const struct disk *d, struct qcow2_cache_stats *l2,
                 struct qcow2_cache_stats *refblocks);

/* L2 cache size in tables (the default covers the image up to 32 MiB). */
unsigned qcow2_l2_cache_tables(const struct disk *d);

/* Test hook: the n-th write step from now (1 = the next) fails with err. 0 disarms. */
void qcow2_fail_write(struct disk *d, uint64_t n, int err);

/* Test hook: while hold is set, in-place data writes park after looking up
 * their cluster (so a test can interleave a discard with one in flight). */
void qcow2_hold_writes(struct disk *d, struct exec *ex, bool hold);

/* Header facts for info. */
struct qcow2_info {
	uint32_t version, cluster_bits, refcount_order, compression_type;
	uint64_t size, incompat, compat, autoclear;
	uint32_t nb_snapshots;
	bool read_only;
	uint64_t file_end;      /* bytes the image file uses */
	char backing[1024];     /* backing file name as stored ("" if none) */
	char backing_fmt[64];   /* backing format extension ("" if none) */
};
void qcow2_get_info(const struct disk *d, struct qcow2_info *out);

/* Allocation status of guest cluster g for map: kind and host offset. */
enum qcow2_kind { QCOW2_UNALLOC, QCOW2_ZERO, QCOW2_NORMAL, QCOW2_COMPRESSED };
int qcow2_map_cluster(struct disk *d, struct exec *ex, uint64_t g, enum qcow2_kind *kind,
                      uint64_t *host) __attribute__((warn_unused_result));

/* Consistency check (like qemu-img check). */
struct qcow2_check {
	uint64_t corruptions, leaks, fixed_leaks, fixed_corruptions;
	uint64_t allocated, total, fragmented, compressed;
	uint64_t image_end;
	uint64_t unfixable; /* corruptions repair cannot fix (bad entries, refs past EOF) */
	char first_error[200];
};
enum { QCOW2_REPAIR_LEAKS = 1, QCOW2_REPAIR_ALL = 2 };
/* Walks every table from a task. 0 when the check completed (see counts), -errno if not. */
int qcow2_check(struct disk *d, struct exec *ex, unsigned repair, struct qcow2_check *out)
    __attribute__((warn_unused_result));
/* The same, calling progress(arg, done, total) as the walk advances (tables
 * walked of all there are; done == total at the end). */
typedef void qcow2_progress_fn(void *arg, uint64_t done, uint64_t total);
int qcow2_check_progress(struct disk *d, struct exec *ex, unsigned repair,
                         struct qcow2_check *out, qcow2_progress_fn *progress, void *arg)
    __attribute__((warn_unused_result));

/* Options of qcow2_create. */
struct qcow2_create_opts {
	uint64_t size;
	unsigned cluster_bits; /* 0: 16 */
	unsigned version;      /* 2 or 3 (0: 3) */
	unsigned refcount_order; /* 0: 4 */
	bool lazy_refcounts;
	bool zstd;               /* compression_type=zstd (version 3 only) */
	const char *backing;     /* as stored in the header (may be relative) */
	const char *backing_fmt; /* "raw" / "qcow2" / NULL */
};
/* Write a new empty image to fd (which must be empty). Blocking (tools). */
int qcow2_create(int fd, const struct qcow2_create_opts *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Write guest cluster g compressed (convert -c); data is one cluster. From a task. */
int qcow2_write_compressed(struct disk *d, struct exec *ex, uint64_t g, const void *data)
    __attribute__((warn_unused_result));

/* Allocate (metadata preallocation) every cluster of the image. From a task. */
int qcow2_preallocate(struct disk *d, struct exec *ex) __attribute__((warn_unused_result));

#endif
