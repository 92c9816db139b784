/*
 * Fuzz target "blk": virtio-blk request parsing and execution. A real blk
 * device (blk_entry's factory, devices/virtio/blk.c) on an in-memory disk
 * (a 1 MiB memfd, reached through /proc/self/fd) runs in this process on an
 * io_uring executor; the input is the guest RAM image with a split ring at
 * 0 / 0x1000 / 0x2000 and the chains to pop. Hostile inputs 12 and 13 go
 * through blk_req_check and, when accepted, real readv/writev/fallocate.
 *   [0] queue size 1 << (v % 9); [1] bit 0 EVENT_IDX, bit 1 INDIRECT_DESC,
 *   bit 2 the read-only disk; [2..7] unused; then the RAM image.
 * After the kick and a reset, nothing may be left in flight.
 */
#define FUZZ_TARGET blk
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <unistd.h>

#include "devices/virtio/blk.h"
#include "devices/virtio/registry.h"
#include "devices/virtio/virtio_pci.h"

#define HDR       8
#define DISK_SIZE (1u << 20)

static struct guest_mem mem;
static struct exec *ex;
static struct virtio_pci pci[2];
static struct virtio_dev *dev[2]; /* read-write, read-only */

static void *open_blk(const char *extra)
{
	static uint8_t zero[4096];
	char path[64], opts[128];
	int fd = fuzz_memfd("fuzz-blk", zero, sizeof(zero));
	FUZZ_CHECK(fd >= 0 && ftruncate(fd, DISK_SIZE) == 0, "disk memfd");
	snprintf(opts, sizeof(opts), "path=%s%s", fuzz_fd_path(fd, path, sizeof(path)), extra);
	struct registry_ctx ctx = {.ncpus = 1};
	void *state = NULL;
	FUZZ_CHECK(blk_entry.create(&ctx, opts, &state) == 0, "blk create '%s'", opts);
	/* the device opened its own descriptor through /proc; ours is not needed */
	close(fd);
	return state;
}

static void setup(void)
{
	FUZZ_CHECK(exec_create(&ex, NULL) == 0, "exec_create (io_uring unavailable?)");
	dev[0] = open_blk("");
	dev[1] = open_blk(",ro");
	for (int i = 0; i < 2; i++)
		FUZZ_CHECK(virtio_pci_init(&pci[i], dev[i], ex, &mem, -1) == 0, "virtio_pci_init");
}

static int run(struct exec *e, void *arg)
{
	(void)e;
	struct virtio_dev *d = arg;
	int r = d->ops->queue_kick(d, &d->queues[0]);
	d->ops->reset(d); /* finishes every request still in flight */
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HDR)
		return 0;
	if (!ex)
		setup();
	fuzz_ram_init(&mem, data + HDR, size - HDR);

	struct virtio_dev *d = dev[(data[1] >> 2) & 1];
	uint64_t features = d->ops->features | (1ull << VIRTIO_F_VERSION_1);
	if (data[1] & 1)
		features |= 1ull << VIRTIO_F_EVENT_IDX;
	if (data[1] & 2)
		features |= 1ull << VIRTIO_F_INDIRECT_DESC;
	d->features = features;
	struct virtio_queue *vq = &d->queues[0];
	uint16_t qsize = (uint16_t)(1u << (data[0] % 9));
	if (virtq_init(&vq->vq, &mem, qsize, 0, 0x1000, 0x2000, features) < 0)
		return 0;
	struct exec_task *t;
	FUZZ_CHECK(exec_spawn(ex, run, d, 0, &t) == 0, "exec_spawn");
	int r = exec_join(ex, t);
	FUZZ_CHECK(r == 0 || virtq_broken(&vq->vq), "kick failed (%d) on a healthy queue", r);
	FUZZ_CHECK(virtq_inflight(&vq->vq) == 0, "%u requests left in flight after reset",
	           virtq_inflight(&vq->vq));
	return 0;
}
