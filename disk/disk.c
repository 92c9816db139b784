/*
 * Opening an image (main process): flags, the image lock, size and format
 * detection; plus the format-independent checks every backend shares. The
 * device process receives the open descriptor and never opens anything.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#include "disk/disk.h"
#include "disk/qcow2.h"

static void drop_page_cache(int fd, bool writable);

/*
 * flock without blocking, but with a short grace period: when the VM that
 * last used an image has just exited, the kernel may still hold its file
 * for a moment (an io_uring ring is torn down asynchronously), and an
 * immediate restart on the same image must not be refused for that. A
 * real owner holds the lock far longer than LOCK_GRACE_MS. Returns 0 or -1
 * with errno (EWOULDBLOCK when it stays locked).
 */
#define LOCK_GRACE_MS 500

static int lock_image(int fd, int how)
{
	for (int waited = 0;; waited += 20) {
		if (flock(fd, how | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK || waited >= LOCK_GRACE_MS)
			return -1;
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

static int fail(char *err, size_t errlen, int e, const char *path, const char *what)
{
	snprintf(err, errlen, "%s: %s", path, what ? what : strerror(-e));
	return e;
}

/* Bytes of the image (regular file or block device). */
static int image_size(int fd, const struct stat *st, uint64_t *out)
{
	if (S_ISREG(st->st_mode)) {
		*out = (uint64_t)st->st_size;
		return 0;
	}
	if (S_ISBLK(st->st_mode)) {
		uint64_t sz;
		if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
			return -errno;
		*out = sz;
		return 0;
	}
	return -EINVAL;
}

int disk_open(struct disk *d, const struct disk_open_params *p, char *err, size_t errlen)
{
	struct disk_chain chain = {0};
	return disk_open_chain(d, p, &chain, err, errlen);
}

int disk_open_chain(struct disk *d, const struct disk_open_params *p, struct disk_chain *chain,
                    char *err, size_t errlen)
{
	struct stat st;
	int r;

	memset(d, 0, sizeof(*d));
	d->fd = d->io_fd = -1;
	if (!p->path || !*p->path)
		return fail(err, errlen, -EINVAL, "(none)", "no image path");
	snprintf(d->path, sizeof(d->path), "%s", p->path);
	if (chain->depth > DISK_MAX_CHAIN)
		return fail(err, errlen, -EMLINK, p->path, "backing chain is too deep");

	/*
	 * A backing file name comes from the (untrusted) image: never open
	 * what is not an image. Opening a FIFO would block forever and a
	 * character device may act on open (a watchdog arms itself). The stat
	 * refuses them without opening; O_NONBLOCK covers a swap between the
	 * stat and the open, and is cleared once the type is checked.
	 */
	if (stat(p->path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return fail(err, errlen, -EINVAL, p->path, "not a regular file or block device");
	int flags = (p->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	if (p->direct)
		flags |= O_DIRECT;
	d->fd = open(p->path, flags);
	if (d->fd < 0) {
		r = -errno;
		if (r == -EINVAL && p->direct)
			return fail(err, errlen, r, p->path,
			            "cannot open with O_DIRECT (the filesystem does not support it)");
		return fail(err, errlen, r, p->path, NULL);
	}
	/*
	 * The lock belongs to this open file description, which the device
	 * process inherits: it is held until the last of the two copies closes.
	 */
	if (lock_image(d->fd, p->read_only ? LOCK_SH : LOCK_EX) < 0) {
		r = -errno;
		if (r == -EWOULDBLOCK)
			r = fail(err, errlen, -EBUSY, p->path,
			         p->read_only ? "image is locked for writing by another process"
			                      : "image is in use by another process (locked)");
		else
			r = fail(err, errlen, r, p->path, NULL);
		goto err;
	}
	if (fstat(d->fd, &st) < 0) {
		r = fail(err, errlen, -errno, p->path, NULL);
		goto err;
	}
	for (unsigned i = 0; i < chain->depth; i++)
		if (chain->dev[i] == (uint64_t)st.st_dev && chain->ino[i] == (uint64_t)st.st_ino) {
			r = fail(err, errlen, -ELOOP, p->path, "backing chain refers back to itself");
			goto err;
		}
	chain->dev[chain->depth] = (uint64_t)st.st_dev;
	chain->ino[chain->depth] = (uint64_t)st.st_ino;
	chain->depth++;
	r = image_size(d->fd, &st, &d->size);
	if (r < 0) {
		fail(err, errlen, r, p->path,
		     r == -EINVAL ? "not a regular file or block device" : NULL);
		goto err;
	}
	/* io_uring would return EAGAIN on a file left O_NONBLOCK instead of waiting. */
	int fl = fcntl(d->fd, F_GETFL);
	if (fl < 0 || fcntl(d->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		r = fail(err, errlen, -errno, p->path, NULL);
		goto err;
	}
	/* Detect the format from the first bytes (a short image is raw). */
	char magic[4] = {0};
	ssize_t got;
	if (p->direct) {
		/* O_DIRECT needs an aligned buffer and length; one page is enough. */
		void *block = NULL;
		if (posix_memalign(&block, 4096, 4096)) {
			r = fail(err, errlen, -ENOMEM, p->path, NULL);
			goto err;
		}
		got = pread(d->fd, block, 4096, 0);
		int saved = errno;
		if (got >= 4)
			memcpy(magic, block, 4);
		free(block);
		errno = saved;
	} else {
		got = pread(d->fd, magic, sizeof(magic), 0);
	}
	if (got < 0) {
		r = fail(err, errlen, -errno, p->path, NULL);
		goto err;
	}
	bool is_qcow2 = got >= 4 && memcmp(magic, DISK_QCOW2_MAGIC, 4) == 0;
	if (is_qcow2 && p->format == DISK_FORMAT_RAW) {
		/* format=raw on a qcow2 file is allowed by QEMU, but it would let
		 * the guest see and rewrite the metadata of an image the user
		 * thinks is qcow2. */
		r = fail(err, errlen, -ENOTSUP, p->path,
		         "looks like qcow2 but format=raw was asked for (use format=qcow2)");
		goto err;
	}
	if (!is_qcow2 && p->format == DISK_FORMAT_QCOW2) {
		r = fail(err, errlen, -EINVAL, p->path, "not a qcow2 image (bad magic)");
		goto err;
	}
	if (is_qcow2) {
		d->auto_detected = p->format == DISK_FORMAT_AUTO;
		d->read_only = p->read_only;
		d->direct = p->direct;
		d->io_fd = d->fd;
		r = qcow2_open(d, p, chain, err, errlen);
		if (r < 0)
			goto err;
		return 0;
	}
	if (d->size < 512) {
		r = fail(err, errlen, -EINVAL, p->path, "image is smaller than one 512-byte sector");
		goto err;
	}
	if (p->direct)
		drop_page_cache(d->fd, !p->read_only);
	d->format = DISK_FORMAT_RAW;
	d->auto_detected = p->format == DISK_FORMAT_AUTO;
	d->read_only = p->read_only;
	d->direct = p->direct;
	d->ops = &disk_raw_ops;
	d->io_fd = d->fd;
	return 0;
err:
	close(d->fd);
	d->fd = d->io_fd = -1;
	return r;
}

/*
 * With O_DIRECT, pages of the image still in the page cache make io_uring
 * hand every write to its io-wq workers, where writes to one file run one
 * at a time (bench/blk.sh: 269 against 8986 IOPS at QD32 randwrite on the
 * same file). Write them back and drop them once, here, before the device
 * starts; a failure only costs speed.
 */
static void drop_page_cache(int fd, bool writable)
{
	if (writable)
		(void)fdatasync(fd);
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

void disk_close(struct disk *d)
{
	if (d->ops && d->ops->close)
		d->ops->close(d);
	d->ops = NULL;
	if (d->fd >= 0)
		close(d->fd);
	d->fd = d->io_fd = -1;
	if (d->backing) {
		disk_close(d->backing);
		free(d->backing);
		d->backing = NULL;
	}
}

unsigned disk_fds(const struct disk *d, int *fds, unsigned max)
{
	unsigned n = 0;
	for (; d && d->fd >= 0; d = d->backing, n++)
		if (n < max)
			fds[n] = d->fd;
	return n;
}

bool disk_write_is_format_probe(const struct disk *d, const struct iovec *iov, unsigned n,
                                uint64_t off)
{
	uint8_t head[4];
	unsigned have = 0;

	if (!d->auto_detected || d->format != DISK_FORMAT_RAW || off >= sizeof(head))
		return false;
	/* The bytes this write puts at [off, 4); the rest of head keeps what
	 * sector 0 holds now — unknown here, so a write that covers only part
	 * of the magic is judged by the part it writes. */
	for (unsigned i = 0; i < n && off + have < sizeof(head); i++) {
		const uint8_t *b = iov[i].iov_base;
		for (size_t k = 0; k < iov[i].iov_len && off + have < sizeof(head); k++)
			head[off + have++] = b[k];
	}
	if (!have)
		return false;
	for (unsigned i = 0; i < have; i++)
		if (head[off + i] != (uint8_t)DISK_QCOW2_MAGIC[off + i])
			return false;
	return true;
}
