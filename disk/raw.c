/*
 * The raw format: the virtual disk is the file, byte for byte. Reads and
 * writes go to the ring as one readv/writev straight on the caller's
 * iovecs (guest memory: no copy); flush is fdatasync, discard a punched
 * hole and write-zeroes a zeroed range, all through io_uring.
 */
#include <errno.h>
#include <string.h>

#include "disk/disk.h"

/* Retries of a transfer that makes no progress (EINTR/EAGAIN) before giving up. */
#define RAW_MAX_RETRIES 8

static size_t iov_total(const struct iovec *iov, unsigned n)
{
	size_t t = 0;
	for (unsigned i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

static int64_t raw_xfer(struct disk *d, struct exec *ex, struct iovec *iov, unsigned n,
                        uint64_t off, bool write)
{
	size_t len = iov_total(iov, n), done = 0;
	unsigned i = disk_iov_consume(iov, n, 0, 0), retries = 0;

	/* The common case is one operation; the loop only continues short ones
	 * (signals, a file that ends before the disk does). */
	while (i < n) {
		/* The kernel caps one transfer at UIO_MAXIOV iovecs; chains never exceed 256. */
		unsigned cnt = n - i;
		int r = write ? exec_writev(ex, d->io_fd, iov + i, cnt, off + done)
		              : exec_readv(ex, d->io_fd, iov + i, cnt, off + done);
		if (r == -EINTR || r == -EAGAIN) {
			if (++retries > RAW_MAX_RETRIES)
				return -EIO;
			continue;
		}
		if (r < 0)
			return r;
		if (r == 0) {
			if (write)
				return -EIO; /* no progress and no error: never loop on it */
			/* Past the end of the file: the rest reads as zeros. */
			for (; i < n; i++)
				memset(iov[i].iov_base, 0, iov[i].iov_len);
			return (int64_t)len;
		}
		done += (size_t)r;
		i = disk_iov_consume(iov, n, i, (size_t)r);
	}
	return (int64_t)done;
}

static int64_t raw_readv(struct disk *d, struct exec *ex, struct iovec *iov, unsigned n,
                         uint64_t off)
{
	return raw_xfer(d, ex, iov, n, off, false);
}

static int64_t raw_writev(struct disk *d, struct exec *ex, struct iovec *iov, unsigned n,
                          uint64_t off)
{
	if (d->read_only)
		return -EROFS;
	return raw_xfer(d, ex, iov, n, off, true);
}

static int raw_flush(struct disk *d, struct exec *ex)
{
	if (d->read_only)
		return 0; /* nothing of ours can be dirty */
	return exec_fdatasync(ex, d->io_fd);
}

static int raw_discard(struct disk *d, struct exec *ex, uint64_t off, uint64_t len)
{
	if (d->read_only)
		return -EROFS;
	int r = exec_punch_hole(ex, d->io_fd, off, len);
	/* A discard is a hint: a filesystem that cannot punch holes loses nothing. */
	return r == -EOPNOTSUPP ? 0 : r;
}

static int raw_write_zeroes(struct disk *d, struct exec *ex, uint64_t off, uint64_t len,
                            bool unmap)
{
	if (d->read_only)
		return -EROFS;
	int r;
	/* A punched hole reads as zeros in a raw file: with unmap it is the cheaper way. */
	if (unmap) {
		r = exec_punch_hole(ex, d->io_fd, off, len);
		if (r != -EOPNOTSUPP)
			return r;
	}
	r = exec_zero_range(ex, d->io_fd, off, len);
	if (r == -EOPNOTSUPP) /* e.g. tmpfs before 6.x, some network filesystems */
		r = exec_punch_hole(ex, d->io_fd, off, len);
	return r;
}

static uint64_t raw_size(const struct disk *d)
{
	return d->size;
}

const struct disk_ops disk_raw_ops = {
    .name = "raw",
    .readv = raw_readv,
    .writev = raw_writev,
    .flush = raw_flush,
    .discard = raw_discard,
    .write_zeroes = raw_write_zeroes,
    .size = raw_size,
    .close = NULL,
};
