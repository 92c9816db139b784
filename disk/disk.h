/*
 * Disk images behind one small ops table: raw files and qcow2. A disk
 * is opened in the main process (disk_open: permissions, O_DIRECT, the
 * image lock, format detection) and then used from a device process, where
 * every operation is an awaitable io_uring operation on the executor of the
 * calling coroutine. Knows nothing of virtio: offsets and lengths are bytes
 * of the virtual disk, already checked against disk->size by the caller.
 */
#ifndef RINGVM_DISK_DISK_H
#define RINGVM_DISK_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "async/exec.h"

#define DISK_WUR __attribute__((warn_unused_result))

/* The on-disk format: what was asked for, and what disk_open found. */
enum disk_format {
	DISK_FORMAT_AUTO = 0, /* detect: qcow2 magic → qcow2, anything else → raw */
	DISK_FORMAT_RAW,
	DISK_FORMAT_QCOW2,
};

/* The first four bytes of a qcow2 image ("QFI\xfb"). */
#define DISK_QCOW2_MAGIC "QFI\xfb"

struct disk;

/*
 * What a format implements. Every operation runs in a task of ex and parks
 * it until the I/O completes; several tasks may have operations in flight
 * on the same disk at once. Results: >= 0 on success, -errno otherwise
 * (-EIO, -ENOSPC, ... as the host reported them). off and len are bytes
 * inside [0, disk->size); the caller checked them.
 */
struct disk_ops {
	const char *name; /* "raw", "qcow2" */
	/*
	 * Fill the iovecs (n of them, total len bytes) from off. Returns len:
	 * short transfers are continued, and whatever lies past the end of the
	 * backing file reads as zeros. iov is the caller's scratch: it may be
	 * modified (consumed) — the data itself is never copied.
	 */
	int64_t (*readv)(struct disk *d, struct exec *ex, struct iovec *iov, unsigned n,
	                 uint64_t off) DISK_WUR;
	/* Write the iovecs at off (same rules; never past disk->size). Returns len. */
	int64_t (*writev)(struct disk *d, struct exec *ex, struct iovec *iov, unsigned n,
	                  uint64_t off) DISK_WUR;
	/* Make every completed write durable (fdatasync). 0 or -errno. */
	int (*flush)(struct disk *d, struct exec *ex) DISK_WUR;
	/* Let the host reclaim [off, off+len) (contents then undefined; raw: zeros). */
	int (*discard)(struct disk *d, struct exec *ex, uint64_t off, uint64_t len) DISK_WUR;
	/* Make [off, off+len) read as zeros; unmap: deallocating is allowed too. */
	int (*write_zeroes)(struct disk *d, struct exec *ex, uint64_t off, uint64_t len,
	                    bool unmap) DISK_WUR;
	/* Virtual size in bytes (what the guest sees). */
	uint64_t (*size)(const struct disk *d);
	/* Free format state (the fd is closed by disk_close). May be NULL. */
	void (*close)(struct disk *d);
};

struct disk {
	const struct disk_ops *ops;
	int fd;        /* the image file, owned */
	int io_fd;     /* what operations pass to the ring: fd, or EXEC_FIXED(i) */
	uint64_t size; /* virtual size in bytes */
	enum disk_format format;
	bool auto_detected; /* format was "auto": a raw image may never become qcow2 */
	bool read_only;
	bool direct;   /* O_DIRECT: buffers, offsets and lengths must be aligned */
	char path[256]; /* for messages (truncated) */
	void *priv;     /* format state */
	struct disk *backing; /* qcow2: the backing image, opened by disk_open (owned), or NULL */
};

/* How to open an image. */
struct disk_open_params {
	const char *path;
	enum disk_format format; /* DISK_FORMAT_AUTO: detect */
	bool read_only;          /* O_RDONLY and a shared lock; else O_RDWR and an exclusive one */
	bool direct;             /* O_DIRECT */
	uint64_t l2_cache_bytes; /* qcow2 L2 cache (0: cover the image, up to 32 MiB) */
};

/* Backing chains: at most this many images below the top one. */
#define DISK_MAX_CHAIN 16

/* The files of a chain being opened (loops are refused by inode). */
struct disk_chain {
	unsigned depth;
	uint64_t dev[DISK_MAX_CHAIN + 1], ino[DISK_MAX_CHAIN + 1];
};

/*
 * Open p->path in the calling (main) process: O_CLOEXEC, O_RDONLY or
 * O_RDWR, O_DIRECT if asked; flock LOCK_SH (read-only) or LOCK_EX
 * (read-write), non-blocking, so two VMs can never write one image; the
 * format detected or checked. On failure one line naming the path and the
 * reason goes to err (errlen bytes) and -errno is returned:
 *  -EBUSY      another process holds a conflicting lock on the image
 *  -ENOTSUP    an unsupported qcow2 feature (named in err), or format=raw
 *              asked for on a file that starts with the qcow2 magic
 *  -EINVAL     not a regular file or block device, or empty; a malformed
 *              qcow2 image (the field is named in err)
 *  -EUCLEAN    a dirty qcow2 image (lazy refcounts) opened read-write whose
 *              refcounts could not be rebuilt (a rebuildable one is repaired)
 *  -ELOOP      a backing chain that refers back to itself; -EMLINK: deeper
 *              than DISK_MAX_CHAIN
 *  other       what open/fstat/flock/pread said (-ENOENT, -EACCES, ...)
 * On success *d is ready (io_fd == fd) and owns the descriptor, and (qcow2)
 * its backing chain, opened read-only with shared locks: the device process
 * must keep every fd disk_fds lists. A qcow2 image with the corrupt bit is
 * opened read-only (d->read_only set even if read-write was asked for).
 */
int disk_open(struct disk *d, const struct disk_open_params *p, char *err, size_t errlen) DISK_WUR;

/* disk_open for a member of a backing chain (qcow2 uses it for its backing file). */
int disk_open_chain(struct disk *d, const struct disk_open_params *p, struct disk_chain *chain,
                    char *err, size_t errlen) DISK_WUR;

/*
 * The descriptors d's operations use: the image's, then its backing
 * chain's, top first. Stores at most max and returns how many there are
 * (a device process keeps all of them across its jail).
 */
unsigned disk_fds(const struct disk *d, int *fds, unsigned max);

/* Close the image (and release its lock). Idempotent; a zeroed disk with fd -1 is fine. */
void disk_close(struct disk *d);

/*
 * Whether writing len bytes at off from the iovecs would put a qcow2 magic
 * into the first bytes of an auto-detected raw image (which a later
 * auto-detecting open would then take for qcow2: the guest could make the
 * host read any file as a backing file). Only the bytes landing in
 * [0, 4) are looked at.
 */
bool disk_write_is_format_probe(const struct disk *d, const struct iovec *iov, unsigned n,
                                uint64_t off);

/*
 * Drop the first n bytes of iov[i..cnt) after a short transfer and return
 * the new start index, past any empty entries (so a resubmission never
 * starts with one). Shared by the raw and qcow2 retry loops.
 */
static inline unsigned disk_iov_consume(struct iovec *iov, unsigned cnt, unsigned i, size_t n)
{
	while (n && i < cnt) {
		if (n < iov[i].iov_len) {
			iov[i].iov_base = (char *)iov[i].iov_base + n;
			iov[i].iov_len -= n;
			break;
		}
		n -= iov[i].iov_len;
		i++;
	}
	while (i < cnt && !iov[i].iov_len)
		i++;
	return i;
}

/* The raw format (disk/raw.c). */
extern const struct disk_ops disk_raw_ops;
/* The qcow2 format (disk/qcow2*.c, disk/qcow2.h). */
extern const struct disk_ops disk_qcow2_ops;

#endif
