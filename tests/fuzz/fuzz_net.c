/*
 * Fuzz target "net": virtio-net frame handling (devices/virtio/net*.c,
 * hostile input 19) in this process: the real device on a fake backend
 * (no TAP), with RX, TX and control queues in a guest RAM image the input
 * gives. TX frames go through net_tx_check to the backend, control
 * commands through net_ctrl_parse, and up to three host frames are
 * delivered into the RX chains (mergeable buffers or not).
 *   [0] queue size 1 << (v % 9); [1..2] feature bits (see feat[]);
 *   [3] MTU choice; [4..6] RX frame lengths; [7] bit 0 backend write errors
 *   then the RAM image: queue i's rings at i * 0x3000 (+0x1000, +0x2000).
 * Every TX buffer the backend sees lies in RAM; after reset nothing is in flight.
 */
#define FUZZ_TARGET net
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/virtio/net_priv.h"
#include "devices/virtio/virtio_pci.h"

#define HDR 8

static struct guest_mem mem;
static struct exec *ex;
static struct virtio_pci pci;
static struct net *n;
static const uint8_t *in; /* the current input's header */
static unsigned frames_left, tx_calls;
static uint8_t frame[70000];

static ssize_t fake_readv(struct net_backend *b, unsigned q, const struct iovec *iov, unsigned cnt)
{
	(void)b, (void)q;
	if (!frames_left)
		return -EAGAIN; /* the eventfd is never readable: the RX task parks */
	size_t len = NET_HDR_LEN + 14 + (size_t)in[4 + --frames_left] * 271u;
	size_t done = 0;
	for (unsigned i = 0; i < cnt && done < len; i++) {
		size_t k = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
		memcpy(iov[i].iov_base, frame + done, k);
		done += k;
	}
	return (ssize_t)done;
}

static ssize_t fake_writev(struct net_backend *b, unsigned q, const struct iovec *iov, unsigned cnt)
{
	(void)b, (void)q;
	size_t total = 0;
	for (unsigned i = 0; i < cnt; i++) {
		/* iov[0] is the device's copy of the header; the rest must be guest RAM */
		FUZZ_CHECK(i == 0 || fuzz_ram_contains(&mem, iov[i].iov_base, iov[i].iov_len),
		           "TX buffer %u outside guest RAM", i);
		total += iov[i].iov_len;
	}
	FUZZ_CHECK(total >= NET_HDR_LEN + 14, "runt frame of %zu bytes sent", total);
	if ((in[7] & 1) && (++tx_calls % 3) == 0)
		return -EINVAL; /* the kernel refusing a frame */
	return (ssize_t)total;
}

static int fake_set_offload(struct net_backend *b, unsigned off)
{
	(void)b, (void)off;
	return 0;
}

static int fake_set_queue(struct net_backend *b, unsigned q, bool attached)
{
	(void)b, (void)q, (void)attached;
	return 0;
}

static void fake_close(struct net_backend *b)
{
	(void)b;
}

static const struct net_backend_ops fake_ops = {
    .kind = "fuzz",
    .readv = fake_readv,
    .writev = fake_writev,
    .set_offload = fake_set_offload,
    .set_queue = fake_set_queue,
    .close = fake_close,
};

static const unsigned feat[16] = {
    VIRTIO_NET_F_CSUM,       VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_ECN,
    VIRTIO_NET_F_GUEST_UFO,  VIRTIO_NET_F_HOST_TSO4,  VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_HOST_ECN,   VIRTIO_NET_F_HOST_UFO,   VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_CTRL_VQ,    VIRTIO_NET_F_CTRL_RX,    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC,
};

static void setup(void)
{
	FUZZ_CHECK(exec_create(&ex, NULL) == 0, "exec_create (io_uring unavailable?)");
	struct net_backend be = {.ops = &fake_ops, .nqueues = 1, .mtu = 1500,
	                         .offloads = NET_OFF_CSUM | NET_OFF_TSO4 | NET_OFF_TSO6 |
	                                     NET_OFF_TSO_ECN | NET_OFF_UFO,
	                         .host_ufo = true};
	for (unsigned i = 0; i < NET_MAX_QUEUES; i++)
		be.fd[i] = -1;
	be.fd[0] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	FUZZ_CHECK(be.fd[0] >= 0, "eventfd");
	struct net_opts o = {.tap_fd = -1, .queues = 1};
	n = net_create_on(&o, &be);
	FUZZ_CHECK(n, "net_create_on");
	FUZZ_CHECK(virtio_pci_init(&pci, &n->vdev, ex, &mem, -1) == 0, "virtio_pci_init");
	for (size_t i = 0; i < sizeof(frame); i++)
		frame[i] = (uint8_t)(i * 7);
}

static int run(struct exec *e, void *arg)
{
	struct virtio_dev *d = arg;
	if (d->ops->activate(d) < 0)
		return 0;
	(void)d->ops->queue_kick(d, &d->queues[1]); /* TX */
	if (virtio_has_feature(d, VIRTIO_NET_F_CTRL_VQ))
		(void)d->ops->queue_kick(d, &d->queues[2]);
	(void)d->ops->queue_kick(d, &d->queues[0]); /* RX: wakes the pair's task */
	for (int i = 0; i < 8; i++)
		exec_yield(e);
	d->ops->reset(d);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HDR)
		return 0;
	if (!ex)
		setup();
	fuzz_ram_init(&mem, data + HDR, size - HDR);
	in = data;
	frames_left = 3;
	tx_calls = 0;

	struct virtio_dev *d = &n->vdev;
	uint16_t fbits = (uint16_t)(data[1] | data[2] << 8);
	uint64_t features = 1ull << VIRTIO_F_VERSION_1;
	for (unsigned i = 0; i < 16; i++)
		if (fbits & (1u << i))
			features |= 1ull << feat[i];
	d->features = features & (d->ops->features | (1ull << VIRTIO_F_VERSION_1) |
	                          (1ull << VIRTIO_F_EVENT_IDX) | (1ull << VIRTIO_F_INDIRECT_DESC));
	static const unsigned mtus[4] = {0, 68, 1500, 9000};
	n->opts.mtu = mtus[data[3] & 3];
	uint16_t qsize = (uint16_t)(1u << (data[0] % 9));
	for (unsigned i = 0; i < 3; i++) {
		struct virtio_queue *q = &d->queues[i];
		uint64_t base = 0x3000ull * i;
		q->enabled = virtq_init(&q->vq, &mem, qsize, base, base + 0x1000, base + 0x2000,
		                        d->features) == 0;
	}
	struct exec_task *t;
	FUZZ_CHECK(exec_spawn(ex, run, d, 0, &t) == 0, "exec_spawn");
	FUZZ_CHECK(exec_join(ex, t) == 0, "task");
	for (unsigned i = 0; i < 3; i++) {
		struct virtio_queue *q = &d->queues[i];
		if (q->enabled)
			FUZZ_CHECK(virtq_inflight(&q->vq) == 0, "queue %u: %u chains left in flight", i,
			           virtq_inflight(&q->vq));
		q->enabled = false;
	}
	return 0;
}
