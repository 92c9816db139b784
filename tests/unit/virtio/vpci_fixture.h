/*
 * Fixture for the in-process virtio-pci transport tests: a small test
 * device (2 queues, 6 bytes of config, optional slow requests), guest RAM,
 * an executor, and a coroutine playing the main process on the VM-control
 * socket (keeps irqfds and ioeventfds, counts requests, can refuse
 * ioeventfds). Test bodies run as tasks via run(); inside them only
 * cr_expect is used (it does not unwind the coroutine's stack).
 */
#ifndef RINGVM_TESTS_UNIT_VIRTIO_VPCI_FIXTURE_H
#define RINGVM_TESTS_UNIT_VIRTIO_VPCI_FIXTURE_H

#include <criterion/criterion.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/common/facility.h"
#include "tests/harness/vring.h"
#include "devices/virtio/virtio_pci.h"

#define CC_DFSELECT     0x00
#define CC_DF           0x04
#define CC_GFSELECT     0x08
#define CC_GF           0x0c
#define CC_MSIX_CONFIG  0x10
#define CC_NUM_QUEUES   0x12
#define CC_STATUS       0x14
#define CC_GENERATION   0x15
#define CC_Q_SELECT     0x16
#define CC_Q_SIZE       0x18
#define CC_Q_MSIX       0x1a
#define CC_Q_ENABLE     0x1c
#define CC_Q_NOTIFY_OFF 0x1e
#define CC_Q_DESC       0x20
#define CC_Q_DRIVER     0x28
#define CC_Q_DEVICE     0x30
#define ST_ACK          VIRTIO_STATUS_ACKNOWLEDGE
#define ST_DRV          VIRTIO_STATUS_DRIVER
#define ST_FOK          VIRTIO_STATUS_FEATURES_OK
#define ST_DOK          VIRTIO_STATUS_DRIVER_OK
#define V1              (1ull << VIRTIO_F_VERSION_1)
#define EVIDX           (1ull << VIRTIO_F_EVENT_IDX)
#define RING            0x10000ull
#define DATA            0x40000ull

/* ---- a test device ---- */

struct tdev {
	struct virtio_dev vdev;
	uint8_t cfg[6];
	int activate_ret;
	uint64_t sleep_ns; /* per request: a slow backend */
	unsigned activates, resets, completed, kicks;
	struct virtq_chain chain;
};

static inline void t_cfg_read(struct virtio_dev *d, uint32_t off, void *buf, uint32_t len)
{
	memcpy(buf, ((struct tdev *)d)->cfg + off, len);
}

static inline void t_cfg_write(struct virtio_dev *d, uint32_t off, const void *buf, uint32_t len)
{
	memcpy(((struct tdev *)d)->cfg + off, buf, len);
}

static inline int t_activate(struct virtio_dev *d)
{
	((struct tdev *)d)->activates++;
	return ((struct tdev *)d)->activate_ret;
}

static inline int t_kick(struct virtio_dev *d, struct virtio_queue *q)
{
	struct tdev *t = (struct tdev *)d;
	int r;
	t->kicks++;
	while ((r = virtq_pop(&q->vq, &t->chain)) > 0) {
		if (t->sleep_ns && exec_sleep(d->ex, t->sleep_ns) < 0)
			cr_expect_fail("slow request interrupted");
		struct virtq_writer w;
		virtq_writer_init(&w, &t->chain);
		uint8_t x = 0x5a;
		virtq_writer_write(&w, &x, 1);
		r = virtq_push(&q->vq, &t->chain, (uint32_t)virtq_writer_written(&w));
		t->completed++;
		if (r < 0)
			return r;
	}
	return r;
}

static inline void t_reset(struct virtio_dev *d)
{
	((struct tdev *)d)->resets++;
}

static const struct virtio_device_ops tops = {
    .name = "virtio-test",
    .device_id = 42,
    .pci_class = 0xff,
    .num_queues = 2,
    .queue_max_size = 64,
    .features = 1ull << 0 | 1ull << 5,
    .config_size = 6,
    .config_read = t_cfg_read,
    .config_write = t_cfg_write,
    .activate = t_activate,
    .queue_kick = t_kick,
    .reset = t_reset,
};

/* ---- fixture: transport + peer ---- */

static struct {
	struct guest_mem mem;
	struct exec *ex;
	int sv[2]; /* [0] the peer's end, [1] the device's */
	struct virtio_pci p;
	struct tdev dev;
	struct exec_task *peer;
	int irqfd[VIRTIO_PCI_MSIX_VECTORS];
	int kick[VIRTIO_MAX_QUEUES];
	unsigned routes[VIRTIO_PCI_MSIX_VECTORS];
	bool masked[VIRTIO_PCI_MSIX_VECTORS];
	unsigned ioev_assign, ioev_deassign;
	int fail_ioeventfd;
} fx;

static inline void setup(void)
{
	memset(&fx, 0, sizeof(fx));
	for (unsigned i = 0; i < VIRTIO_PCI_MSIX_VECTORS; i++)
		fx.irqfd[i] = -1;
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
		fx.kick[i] = -1;
	REQUIRE_FACILITY(facility_io_uring(), "io_uring_setup unavailable");
	cr_assert_eq(guest_mem_create(&fx.mem, 16 << 20), 0);
	cr_assert_eq(exec_create(&fx.ex, NULL), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fx.sv), 0);
	fx.dev.vdev.ops = &tops;
	cr_assert_eq(virtio_pci_init(&fx.p, &fx.dev.vdev, fx.ex, &fx.mem, fx.sv[1]), 0);
}

static inline void teardown(void)
{
	for (unsigned i = 0; i < VIRTIO_PCI_MSIX_VECTORS; i++)
		if (fx.irqfd[i] >= 0)
			close(fx.irqfd[i]);
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
		if (fx.kick[i] >= 0)
			close(fx.kick[i]);
	if (fx.ex)
		exec_destroy(fx.ex);
	close(fx.sv[0]);
	close(fx.sv[1]);
	guest_mem_destroy(&fx.mem);
}

/* The main process's side of the VM-control socket. */
static inline int peer_task(struct exec *ex, void *arg)
{
	(void)arg;
	for (;;) {
		if (exec_poll(ex, fx.sv[0], POLLIN) < 0)
			return 0; /* cancelled at the end of the test */
		struct ipc_ctl_req q;
		int fds[IPC_MAX_FDS];
		unsigned nfds = 0;
		if (ipc_recv(fx.sv[0], &q, sizeof(q), fds, 1, &nfds) < 0)
			return -1;
		int fd = nfds ? fds[0] : -1, res = 0;
		if (q.op == IPC_CTL_MSI_ROUTE && q.vector < VIRTIO_PCI_MSIX_VECTORS) {
			if (fd >= 0) {
				cr_expect_lt(fx.irqfd[q.vector], 0, "irqfd sent twice");
				fx.irqfd[q.vector] = fd;
				fd = -1;
			}
			cr_expect_geq(fx.irqfd[q.vector], 0, "first route without irqfd");
			fx.routes[q.vector]++;
			fx.masked[q.vector] = q.masked;
		} else if (q.op == IPC_CTL_IOEVENTFD) {
			unsigned i = (q.off - VIRTIO_PCI_NOTIFY_OFF) / VIRTIO_PCI_NOTIFY_MULT;
			cr_expect_eq(q.off, virtio_pci_notify_off(i));
			cr_expect_eq(q.bar, VIRTIO_PCI_BAR);
			if (fx.fail_ioeventfd) {
				res = fx.fail_ioeventfd;
			} else if (q.assign) {
				cr_expect_geq(fd, 0);
				fx.kick[i] = fd;
				fd = -1;
				fx.ioev_assign++;
			} else {
				cr_expect_geq(fx.kick[i], 0);
				close(fx.kick[i]);
				fx.kick[i] = -1;
				fx.ioev_deassign++;
			}
		} else {
			res = -EINVAL;
		}
		if (fd >= 0)
			close(fd);
		struct ipc_ctl_resp resp = {.op = q.op, .seq = q.seq, .result = res};
		if (ipc_send(fx.sv[0], &resp, sizeof(resp), NULL, 0) < 0)
			return -1;
	}
}

/* Run body as a task next to the peer, then stop everything it started. */
static inline int body_wrapper(struct exec *ex, void *arg)
{
	void (*body)(void) = (void (*)(void))arg;
	body();
	virtio_pci_shutdown(&fx.p); /* leaves no queue coroutine behind */
	if (exec_task_cancel(ex, fx.peer) == 0) {
		int r = exec_join(ex, fx.peer);
		(void)r;
	}
	return 0;
}

static inline void run(void (*body)(void))
{
	struct exec_task *t;
	cr_assert_eq(exec_spawn(fx.ex, peer_task, NULL, 0, &fx.peer), 0);
	cr_assert_eq(exec_spawn(fx.ex, body_wrapper, (void *)body, 0, &t), 0);
	cr_assert_eq(exec_join(fx.ex, t), 0);
}

static inline uint64_t rd(uint32_t off, unsigned len)
{
	return virtio_pci_bar_read(&fx.p, off, len);
}

static inline void wr(uint32_t off, unsigned len, uint64_t v)
{
	virtio_pci_bar_write(&fx.p, off, len, v);
}

static inline uint32_t crd(unsigned reg, unsigned len)
{
	return virtio_pci_cfg_read(&fx.p, reg, len);
}

static inline void cwr(unsigned reg, unsigned len, uint32_t v)
{
	virtio_pci_cfg_write(&fx.p, reg, len, v);
}

static inline uint8_t status(void)
{
	return (uint8_t)rd(CC_STATUS, 1);
}

static inline void negotiate(uint64_t f)
{
	wr(CC_STATUS, 1, 0);
	wr(CC_STATUS, 1, ST_ACK | ST_DRV);
	wr(CC_GFSELECT, 4, 0);
	wr(CC_GF, 4, (uint32_t)f);
	wr(CC_GFSELECT, 4, 1);
	wr(CC_GF, 4, f >> 32);
	wr(CC_STATUS, 1, ST_ACK | ST_DRV | ST_FOK);
}

/* Capability of the given vendor cfg_type (or PCI cap id when type is 0). */
static inline unsigned find_cap(uint8_t id, uint8_t type)
{
	unsigned hops = 0;
	for (unsigned c = crd(0x34, 1); c && hops < 48; c = crd(c + 1, 1), hops++)
		if (crd(c, 1) == id && (!type || crd(c + 3, 1) == type))
			return c;
	return 0;
}

static inline void msix_enable(void)
{
	unsigned m = find_cap(0x11, 0);
	cwr(m + 2, 2, 0x8000);
}

static inline void program_vector(unsigned v, bool unmask)
{
	uint32_t e = VIRTIO_PCI_MSIX_TABLE_OFF + 16 * v;
	wr(e, 4, 0xfee00000);
	wr(e + 4, 4, 0);
	wr(e + 8, 4, 0x40 + v);
	wr(e + 12, 4, unmask ? 0 : 1);
}

/* Interrupts delivered on vector v since the last call (reads the irqfd). */
static inline uint64_t irqs(unsigned v)
{
	uint64_t n = 0;
	/* From a task, interrupts leave with the executor's next submit
	 * (exec_post_write): hand them to the kernel first. */
	cr_assert_eq(exec_flush(fx.ex), 0);
	if (fx.irqfd[v] < 0 || read(fx.irqfd[v], &n, sizeof(n)) != sizeof(n))
		return 0;
	return n;
}

static struct vring ring;

/* Queue 0 at RING with 16 entries, enabled, vector 1. */
static inline void setup_queue0(void)
{
	cr_expect_eq(vring_init(&ring, &fx.mem, 16, RING), 0);
	wr(CC_Q_SELECT, 2, 0);
	wr(CC_Q_SIZE, 2, 16);
	wr(CC_Q_MSIX, 2, 1);
	wr(CC_Q_DESC, 8, ring.desc_gpa);
	wr(CC_Q_DRIVER, 8, ring.avail_gpa);
	wr(CC_Q_DEVICE, 8, ring.used_gpa);
	wr(CC_Q_ENABLE, 2, 1);
}

/* Let the device's coroutines run until cond or ~1 s. */
#define WAIT_FOR(cond)                                                                             \
	do {                                                                                       \
		for (int w_ = 0; w_ < 1000 && !(cond); w_++)                                       \
			if (exec_sleep(fx.ex, 1000000) < 0)                                        \
				break;                                                             \
	} while (0)

#endif
