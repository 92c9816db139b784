/*
 * Device-process main: guest RAM mapping and the restricted ring (before
 * seccomp), then one coroutine serving the bus socket — validating every
 * message from the main process — next to the device's queue coroutines.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <time.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/io_uring.h>

#include "devices/virtio/devproc.h"
#include "devices/virtio/virtio_pci.h"

const struct jail_syscall_rule devproc_rules[] = {
    {.nr = __NR_eventfd2}, /* kick eventfds (DRIVER_OK) and irqfds (first MSI route) */
};
const size_t devproc_rules_len = sizeof(devproc_rules) / sizeof(devproc_rules[0]);

size_t devproc_jail_rules(const struct registry_entry *dev, struct jail_syscall_rule *out,
                          size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < devproc_rules_len; i++, n++)
		if (n < max)
			out[n] = devproc_rules[i];
	for (size_t i = 0; i < dev->n_rules; i++, n++)
		if (n < max)
			out[n] = dev->rules[i];
	return n;
}

int devproc_pre_seccomp(void *arg)
{
	struct devproc_args *a = arg;
	uint8_t ops[64];
	unsigned n = 0;

	if (a->prepared)
		return 0;
	if (!a->dev || !a->dev_state || a->dev->n_uring_ops > sizeof(ops) - 3)
		return -EINVAL;
	/* The executor polls the two sockets and reads kick eventfds. */
	ops[n++] = IORING_OP_POLL_ADD;
	ops[n++] = IORING_OP_READ;
	ops[n++] = IORING_OP_WRITE; /* irqfd signals (exec_post_write) */
	for (unsigned i = 0; i < a->dev->n_uring_ops; i++)
		ops[n++] = a->dev->uring_ops[i];
	int r = guest_mem_map_fd(&a->mem, a->memfd);
	if (r < 0)
		return r;
	/*
	 * The device's own descriptors (image files) are deliberately not
	 * registered as fixed files: the ring's teardown runs asynchronously
	 * after the process exits, and a registered image would stay open —
	 * and its flock held — for tens of milliseconds after ringvm is gone,
	 * so an immediate restart would find its own image "in use".
	 */
	struct exec_restrict_params rp = {
	    .ops = ops,
	    .n_ops = n,
	    .max_workers = {a->dev->uring_max_workers[0], a->dev->uring_max_workers[1]}};
	struct exec_params ep = {.sq_entries = a->dev->uring_sq_entries};
	r = exec_restrict(&a->ex, &ep, &rp);
	if (r < 0) {
		munmap(a->mem.map, a->mem.map_size);
		memset(&a->mem, 0, sizeof(a->mem));
		return r;
	}
	a->prepared = true;
	return 0;
}

struct devproc {
	struct devproc_args *a;
	struct virtio_pci pci;
	bool hello;
};

#define CONTINUE (-1)

static int bad(struct devproc *dp, const struct ipc_bus_req *req, const char *why)
{
	fprintf(stderr, "%s: bad bus message (op %u seq %u bar %u off %#x len %u): %s\n",
	        dp->a->dev->ops->name, req->op, req->seq, req->bar, req->off, req->len, why);
	return 1;
}

static int reply(struct devproc *dp, struct ipc_bus_resp *resp)
{
	int r = ipc_send(dp->a->bus_sock, resp, sizeof(*resp), NULL, 0);
	if (r < 0) {
		fprintf(stderr, "%s: bus reply: %s\n", dp->a->dev->ops->name, strerror(-r));
		return 1;
	}
	return CONTINUE;
}

static int hello(struct devproc *dp, const struct ipc_bus_req *req)
{
	struct ipc_bus_resp resp = {
	    .op = req->op, .seq = req->seq, .version = IPC_VERSION, .magic = IPC_MAGIC};
	if (dp->hello)
		return bad(dp, req, "second HELLO");
	if (req->version != IPC_VERSION || req->magic != IPC_MAGIC) {
		resp.result = -EPROTO;
		(void)reply(dp, &resp);
		return bad(dp, req, "wrong version or magic");
	}
	dp->hello = true;
	snprintf(resp.name, sizeof(resp.name), "%s", dp->a->dev->ops->name);
	virtio_pci_bars(&dp->pci, resp.bars);
	return reply(dp, &resp);
}

/* IPC_METRICS: the device's counters plus the transport's, in a struct ipc_metrics reply. */
static int metrics(struct devproc *dp, const struct ipc_bus_req *req)
{
	static struct ipc_metrics m; /* 2.5 KiB: kept off the coroutine stack */
	memset(&m, 0, sizeof(m));
	if (dp->a->dev->metrics) {
		dp->a->dev->metrics(dp->a->dev_state, &m);
	} else {
		const struct virtio_dev *d = dp->a->dev_state;
		for (unsigned i = 0; i < d->ops->num_queues && i < VIRTIO_MAX_QUEUES; i++)
			m.notifications += d->queues[i].kicks;
	}
	m.op = req->op;
	m.seq = req->seq;
	m.result = 0;
	m.version = IPC_METRICS_VERSION;
	snprintf(m.name, sizeof(m.name), "%s", dp->a->dev->ops->name);
	m.interrupts = dp->pci.irqs;
	int r = ipc_send(dp->a->bus_sock, &m, sizeof(m), NULL, 0);
	if (r < 0) {
		fprintf(stderr, "%s: metrics reply: %s\n", dp->a->dev->ops->name, strerror(-r));
		return 1;
	}
	return CONTINUE;
}

/* One validated message; CONTINUE, or the process's exit status. */
static int handle(struct devproc *dp, const struct ipc_bus_req *req)
{
	struct ipc_bus_resp resp = {.op = req->op, .seq = req->seq};
	unsigned len = req->len;
	bool bar_op = req->op == IPC_BAR_READ || req->op == IPC_BAR_WRITE;
	bool cfg_op = req->op == IPC_CFG_READ || req->op == IPC_CFG_WRITE;

	if (req->op == IPC_HELLO)
		return hello(dp, req);
	if (!dp->hello)
		return bad(dp, req, "no HELLO first");
	if (bar_op) {
		if (req->bar != VIRTIO_PCI_BAR)
			return bad(dp, req, "no such BAR");
		if (len != 1 && len != 2 && len != 4 && len != 8)
			return bad(dp, req, "access size");
		if ((uint64_t)req->off + len > VIRTIO_PCI_BAR_SIZE)
			return bad(dp, req, "past the end of the BAR");
	} else if (cfg_op) {
		if (len != 1 && len != 2 && len != 4)
			return bad(dp, req, "access size");
		if ((uint64_t)req->off + len > 256)
			return bad(dp, req, "past the end of config space");
	}
	switch (req->op) {
	case IPC_BAR_READ:
		resp.data = virtio_pci_bar_read(&dp->pci, req->off, len);
		return reply(dp, &resp);
	case IPC_BAR_WRITE:
		virtio_pci_bar_write(&dp->pci, req->off, len, req->data);
		return CONTINUE;
	case IPC_CFG_READ:
		resp.data = virtio_pci_cfg_read(&dp->pci, req->off, len);
		return reply(dp, &resp);
	case IPC_CFG_WRITE:
		virtio_pci_cfg_write(&dp->pci, req->off, len, (uint32_t)req->data);
		return CONTINUE;
	case IPC_METRICS:
		return metrics(dp, req);
	case IPC_RESIZE: {
		/* The device checks the size itself: the request is the main
		 * process's, but the device is the one that knows its disk. */
		uint64_t now = 0;
		resp.result = dp->a->dev->resize
		                  ? dp->a->dev->resize(dp->a->dev_state, dp->a->ex, req->data, &now)
		                  : -ENOTSUP;
		resp.data = now;
		return reply(dp, &resp);
	}
	case IPC_SHUTDOWN:
		virtio_pci_shutdown(&dp->pci);
		return reply(dp, &resp) == CONTINUE ? 0 : 1;
	}
	return bad(dp, req, "unknown op");
}

/*
 * Config accesses come in bursts and the vCPU that sent one is spinning for
 * the reply (core/proxy.c): waking a parked thread on another CPU costs tens
 * of µs here, so after each message look for the next one for a short while
 * before parking. Bounded, and only after a message: a device busy with I/O
 * and no config traffic never spins. poll and sched_yield are in the base
 * seccomp allowlist.
 */
#define DEVPROC_SPIN_NS 50000

static bool spin_for_message(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (poll(&pfd, 1, 0) > 0)
			return true;
		sched_yield();
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > DEVPROC_SPIN_NS)
			return false;
	}
}

static int serve(struct exec *ex, struct devproc *dp)
{
	int bus = dp->a->bus_sock;

	for (;;) {
		if (dp->pci.ctl_dead)
			return 1; /* logged where it failed */
		/* Park until a message is there: queue coroutines run meanwhile. */
		int r = spin_for_message(bus) ? POLLIN : exec_poll(ex, bus, POLLIN);
		if (r < 0) {
			fprintf(stderr, "%s: bus poll: %s\n", dp->a->dev->ops->name, strerror(-r));
			return 1;
		}
		struct ipc_bus_req req;
		r = ipc_recv(bus, &req, sizeof(req), NULL, 0, NULL);
		if (r == -EPIPE)
			return 0; /* the main process is gone: nothing left to serve */
		if (r == -EAGAIN || r == -EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "%s: bad bus message: %s\n", dp->a->dev->ops->name,
			        strerror(-r));
			return 1;
		}
		r = handle(dp, &req);
		if (r != CONTINUE)
			return r;
	}
}

static int bus_task(struct exec *ex, void *arg)
{
	struct devproc *dp = arg;
	int r = serve(ex, dp);
	/* Whatever ended the service (SHUTDOWN, EOF, a bad message), leave no
	 * queue coroutine with an operation in flight: the process exits with
	 * every popped request finished. Idempotent after SHUTDOWN. */
	virtio_pci_shutdown(&dp->pci);
	return r;
}

int devproc_main(void *arg)
{
	struct devproc_args *a = arg;
	static struct devproc dp; /* one per process; kept off the stack */
	struct exec_task *t;

	int r = devproc_pre_seccomp(a);
	if (r < 0) {
		fprintf(stderr, "device process setup: %s\n", strerror(-r));
		return 1;
	}
	memset(&dp, 0, sizeof(dp));
	dp.a = a;
	r = virtio_pci_init(&dp.pci, a->dev_state, a->ex, &a->mem, a->ctl_sock);
	if (r < 0) {
		fprintf(stderr, "%s: transport: %s\n", a->dev->ops->name, strerror(-r));
		return 1;
	}
	r = exec_spawn(a->ex, bus_task, &dp, 0, &t);
	if (r < 0) {
		fprintf(stderr, "%s: bus task: %s\n", a->dev->ops->name, strerror(-r));
		return 1;
	}
	r = exec_join(a->ex, t);
	if (r < 0 && r != 1)
		fprintf(stderr, "%s: executor: %s\n", a->dev->ops->name, strerror(-r));
	return r == 0 ? 0 : 1;
}
