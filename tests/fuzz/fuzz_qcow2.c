/*
 * Fuzz target "qcow2": open a mutated qcow2 image (disk_open with
 * format=qcow2, on a memfd reached through /proc/self/fd), then read,
 * write, discard, write-zeroes, flush and check it through the real
 * io_uring executor (hostile inputs 14-16). Input: 4 bytes, then the image.
 *   [0] bit 0 open read-only, bit 1 small L2 cache, bit 2 check with
 *       repair (leaks, then all), bit 3 grow by one cluster
 *   [1..3] seeds for the offsets of the I/O
 * Invariant: an image whose first check finds no corruption still has none
 * after the writes (leaks are allowed).
 */
#define FUZZ_TARGET qcow2
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <unistd.h>

#include "disk/disk.h"
#include "disk/qcow2.h"

#define HDR 4
#define BUF (64u * 1024u)

static struct exec *ex;
static uint8_t *buf;

struct job {
	struct disk *d;
	const uint8_t *op;
};

static uint64_t pick(const struct disk *d, uint8_t seed, unsigned k, uint64_t *len)
{
	uint64_t sectors = d->size / 512;
	if (!sectors) {
		*len = 0;
		return 0;
	}
	uint64_t s = ((uint64_t)seed * 2654435761u + k * 40503u) % sectors;
	if (seed & 1)
		s = sectors - 1 - s % 64; /* near the end, where tables are sparse */
	uint64_t n = 1 + (seed >> 3) % 16;
	if (n > sectors - s)
		n = sectors - s;
	*len = n * 512;
	return s * 512;
}

static int io(struct exec *e, void *arg)
{
	struct job *j = arg;
	struct disk *d = j->d;
	struct qcow2_check c1, c2;
	int r1 = qcow2_check(d, e, 0, &c1);
	for (unsigned k = 0; k < 6; k++) {
		uint8_t seed = j->op[1 + k % 3];
		uint64_t len, off = pick(d, (uint8_t)(seed + k * 37), k, &len);
		struct iovec iov = {buf, len};
		if (!len)
			break;
		int64_t r;
		switch ((seed + k) % 5) {
		case 0:
		case 1:
			r = d->ops->readv(d, e, &iov, 1, off);
			FUZZ_CHECK(r < 0 || (uint64_t)r == len, "short read %lld of %llu", (long long)r,
			           (unsigned long long)len);
			break;
		case 2:
			if (d->read_only)
				break;
			memset(buf, 0x5a ^ k, len);
			r = d->ops->writev(d, e, &iov, 1, off);
			FUZZ_CHECK(r < 0 || (uint64_t)r == len, "short write");
			break;
		case 3:
			if (!d->read_only)
				FUZZ_IGNORE(d->ops->discard(d, e, off, len));
			break;
		case 4:
			if (!d->read_only)
				FUZZ_IGNORE(d->ops->write_zeroes(d, e, off, len, seed & 2));
			break;
		}
	}
	if (!d->read_only) {
		FUZZ_IGNORE(d->ops->flush(d, e));
		if (j->op[0] & 8)
			FUZZ_IGNORE(qcow2_grow(d, e, d->size + 65536));
	}
	int r2 = qcow2_check(d, e, 0, &c2);
	if (r1 == 0 && r2 == 0 && c1.corruptions == 0)
		FUZZ_CHECK(c2.corruptions == 0, "the writes corrupted a clean image: %s",
		           c2.first_error);
	if (!d->read_only && (j->op[0] & 4)) {
		struct qcow2_check c3;
		FUZZ_IGNORE(qcow2_check(d, e, QCOW2_REPAIR_LEAKS, &c3));
		if (qcow2_check(d, e, QCOW2_REPAIR_LEAKS | QCOW2_REPAIR_ALL, &c3) == 0 &&
		    qcow2_check(d, e, 0, &c3) == 0)
			FUZZ_CHECK(c3.corruptions == 0 || c1.corruptions, "repair left corruptions: %s",
			           c3.first_error);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HDR)
		return 0;
	if (!ex) {
		FUZZ_CHECK(exec_create(&ex, NULL) == 0, "exec_create (io_uring unavailable?)");
		FUZZ_CHECK(posix_memalign((void **)&buf, 4096, BUF) == 0, "buffer");
	}
	int fd = fuzz_memfd("fuzz-qcow2", data + HDR, size - HDR);
	if (fd < 0)
		return 0;
	char path[64], err[512];
	struct disk d;
	struct disk_open_params p = {.path = fuzz_fd_path(fd, path, sizeof(path)),
	                             .format = DISK_FORMAT_QCOW2,
	                             .read_only = data[0] & 1,
	                             .l2_cache_bytes = data[0] & 2 ? 4096 : 0};
	if (disk_open(&d, &p, err, sizeof(err)) == 0) {
		FUZZ_CHECK(strlen(err) < sizeof(err), "err unterminated");
		struct job j = {&d, data};
		struct exec_task *t;
		FUZZ_CHECK(exec_spawn(ex, io, &j, 0, &t) == 0, "exec_spawn");
		FUZZ_CHECK(exec_join(ex, t) == 0, "task");
		disk_close(&d);
	}
	close(fd);
	return 0;
}
