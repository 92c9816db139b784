/*
 * Host-side virtio driver (see vdriver.h): forks a real device process and
 * plays the main process (bus socket requests, VM-control service) and the
 * guest driver (config writes, rings in guest RAM, kicks, interrupts).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/harness/vdriver.h"

/* Common cfg offsets, as a driver knows them from virtio 1.2 §4.1.4.3. */
#define CC_DFSELECT    0x00
#define CC_DF          0x04
#define CC_GFSELECT    0x08
#define CC_GF          0x0c
#define CC_MSIX_CONFIG 0x10
#define CC_NUM_QUEUES  0x12
#define CC_STATUS      0x14
#define CC_Q_SELECT    0x16
#define CC_Q_SIZE      0x18
#define CC_Q_MSIX      0x1a
#define CC_Q_ENABLE    0x1c
#define CC_Q_DESC      0x20
#define CC_Q_DRIVER    0x28
#define CC_Q_DEVICE    0x30

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline)
{
	int64_t l = deadline - now_ms();
	return l < 0 ? 0 : (int)l;
}

/* One VM-control request, answered as the main process's proxy would. */
static int serve_one(struct vdriver *v)
{
	struct ipc_ctl_req q;
	int fds[IPC_MAX_FDS];
	unsigned nfds = 0;
	int r = ipc_recv(v->ctl, &q, sizeof(q), fds, 1, &nfds);
	if (r < 0)
		return r;
	int fd = nfds ? fds[0] : -1, res = 0, out_fd = -1;
	v->ctl_requests++;
	if (v->ctl_fail) {
		res = v->ctl_fail;
	} else if (q.op == IPC_CTL_MSI_ROUTE) {
		if (q.vector >= VDRIVER_MAX_VECTORS) {
			res = -EINVAL;
		} else {
			typeof(v->vec[0]) *e = &v->vec[q.vector];
			if (fd >= 0) {
				if (e->irqfd >= 0)
					close(e->irqfd);
				e->irqfd = fd;
				fd = -1;
			}
			if (e->irqfd < 0) {
				res = -EINVAL;
			} else {
				e->addr = q.msi_addr;
				e->data = q.msi_data;
				e->masked = q.masked;
				e->routes++;
			}
		}
	} else if (q.op == IPC_CTL_IOEVENTFD) {
		uint32_t idx = (q.off - VIRTIO_PCI_NOTIFY_OFF) / VIRTIO_PCI_NOTIFY_MULT;
		if (q.bar != VIRTIO_PCI_BAR || q.off < VIRTIO_PCI_NOTIFY_OFF ||
		    (q.off - VIRTIO_PCI_NOTIFY_OFF) % VIRTIO_PCI_NOTIFY_MULT ||
		    idx >= VIRTIO_MAX_QUEUES) {
			res = -EINVAL;
		} else if (q.assign) {
			if (fd < 0 || v->kick[idx] >= 0) {
				res = -EEXIST;
			} else {
				v->kick[idx] = fd;
				fd = -1;
			}
		} else if (v->kick[idx] < 0) {
			res = -ENOENT;
		} else {
			close(v->kick[idx]);
			v->kick[idx] = -1;
		}
	} else if (v->entry->vmctl) {
		/* Device-specific (vsock connects): served as the main process does. */
		res = v->entry->vmctl(v->dev_state, &q, &out_fd);
	} else {
		res = -EOPNOTSUPP;
	}
	if (fd >= 0)
		close(fd);
	struct ipc_ctl_resp resp = {.op = q.op, .seq = q.seq, .result = res};
	r = ipc_send(v->ctl, &resp, sizeof(resp), &out_fd, res == 0 && out_fd >= 0 ? 1 : 0);
	if (out_fd >= 0)
		close(out_fd);
	return r;
}

int vdriver_serve_ctl(struct vdriver *v, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	for (;;) {
		struct pollfd pfd = {.fd = v->ctl, .events = POLLIN};
		int n = poll(&pfd, 1, left_ms(deadline));
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0) {
			if (!(pfd.revents & POLLIN))
				return -EPIPE;
			int r = serve_one(v);
			if (r < 0)
				return r;
			continue;
		}
		if (left_ms(deadline) == 0)
			return 0;
	}
}

int vdriver_bus_raw(struct vdriver *v, const struct ipc_bus_req *req, bool want_reply,
                    struct ipc_bus_resp *resp)
{
	int r = ipc_send(v->bus, req, sizeof(*req), NULL, 0);
	if (r < 0 || !want_reply)
		return r;
	int64_t deadline = now_ms() + VDRIVER_TIMEOUT_MS;
	bool ctl_open = true;
	for (;;) {
		struct pollfd pfd[2] = {{.fd = v->bus, .events = POLLIN},
		                        {.fd = ctl_open ? v->ctl : -1, .events = POLLIN}};
		int n = poll(pfd, 2, left_ms(deadline));
		if (n < 0 && errno != EINTR)
			return -errno;
		/* A device that replies and exits (SHUTDOWN) closes the control
		 * socket too: EOF there must not hide the reply on the bus. */
		if (n > 0 && (pfd[1].revents & (POLLIN | POLLHUP))) {
			r = serve_one(v);
			if (r == -EPIPE)
				ctl_open = false;
			else if (r < 0)
				return r;
		}
		if (n > 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))) {
			r = ipc_recv(v->bus, resp, sizeof(*resp), NULL, 0, NULL);
			if (r < 0)
				return r;
			if (resp->seq != req->seq || resp->op != req->op)
				return -EBADMSG;
			return 0;
		}
		if (n == 0 && left_ms(deadline) == 0)
			return -ETIMEDOUT;
	}
}

static int bus_call(struct vdriver *v, uint32_t op, uint8_t bar, uint32_t off, unsigned len,
                    uint64_t data, uint64_t *out)
{
	struct ipc_bus_req req = {
	    .op = op, .seq = ++v->seq, .bar = bar, .len = (uint8_t)len, .off = off, .data = data};
	struct ipc_bus_resp resp;
	bool reply = op == IPC_BAR_READ || op == IPC_CFG_READ;
	int r = vdriver_bus_raw(v, &req, reply, &resp);
	if (r < 0 || !reply)
		return r;
	if (resp.result < 0)
		return resp.result;
	*out = resp.data;
	return 0;
}

int vdriver_bar_read(struct vdriver *v, uint32_t off, unsigned len, uint64_t *val)
{
	return bus_call(v, IPC_BAR_READ, VIRTIO_PCI_BAR, off, len, 0, val);
}

int vdriver_bar_write(struct vdriver *v, uint32_t off, unsigned len, uint64_t val)
{
	return bus_call(v, IPC_BAR_WRITE, VIRTIO_PCI_BAR, off, len, val, NULL);
}

int vdriver_cfg_read(struct vdriver *v, uint32_t reg, unsigned len, uint32_t *val)
{
	uint64_t d = 0;
	int r = bus_call(v, IPC_CFG_READ, 0, reg, len, 0, &d);
	*val = (uint32_t)d;
	return r;
}

int vdriver_cfg_write(struct vdriver *v, uint32_t reg, unsigned len, uint32_t val)
{
	return bus_call(v, IPC_CFG_WRITE, 0, reg, len, val, NULL);
}

int vdriver_status(struct vdriver *v, uint8_t *status)
{
	uint64_t s = 0;
	int r = vdriver_bar_read(v, CC_STATUS, 1, &s);
	*status = (uint8_t)s;
	return r;
}

int vdriver_set_status(struct vdriver *v, uint8_t status)
{
	return vdriver_bar_write(v, CC_STATUS, 1, status);
}

static int hello(struct vdriver *v)
{
	struct ipc_bus_req req = {
	    .op = IPC_HELLO, .seq = ++v->seq, .version = IPC_VERSION, .magic = IPC_MAGIC};
	struct ipc_bus_resp resp;
	int r = vdriver_bus_raw(v, &req, true, &resp);
	if (r < 0)
		return r;
	if (resp.result || resp.version != IPC_VERSION || resp.magic != IPC_MAGIC ||
	    resp.bars[0].kind != IPC_BAR_MEM64 || resp.bars[0].size != VIRTIO_PCI_BAR_SIZE)
		return -EPROTO;
	return 0;
}

int vdriver_spawn(struct vdriver *v, const struct vdriver_params *p)
{
	int bus_sv[2], ctl_sv[2], r;

	memset(v, 0, sizeof(*v));
	v->bus = v->ctl = -1;
	v->pid = -1;
	for (unsigned i = 0; i < VDRIVER_MAX_VECTORS; i++)
		v->vec[i].irqfd = -1;
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
		v->kick[i] = -1;
	v->entry = registry_find(p->device);
	if (!v->entry)
		return -ENOENT;
	r = guest_mem_create(&v->mem, p->ram_size ? p->ram_size : 16ull << 20);
	if (r < 0)
		return r;
	struct registry_ctx ctx = {.ncpus = p->ncpus ? p->ncpus : 1};
	r = v->entry->create(&ctx, p->opts ? p->opts : "", &v->dev_state);
	if (r < 0)
		return r;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, bus_sv) < 0)
		return -errno;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl_sv) < 0) {
		r = -errno;
		close(bus_sv[0]);
		close(bus_sv[1]);
		return r;
	}
	v->args = (struct devproc_args){.bus_sock = bus_sv[1],
	                                .ctl_sock = ctl_sv[1],
	                                .memfd = v->mem.memfd,
	                                .dev = v->entry,
	                                .dev_state = v->dev_state};
	if (p->sandbox) {
		struct jail_syscall_rule rules[64];
		size_t n = devproc_jail_rules(v->entry, rules, 64);
		int keep[4 + REGISTRY_MAX_KEEP_FDS] = {bus_sv[1], ctl_sv[1], v->mem.memfd,
		                                       STDERR_FILENO};
		unsigned nkeep = 4;
		if (v->entry->keep_fds) /* the device's own descriptors, as devmgr keeps them */
			nkeep += v->entry->keep_fds(v->dev_state, keep + 4, REGISTRY_MAX_KEEP_FDS);
		struct jail_config cfg = {.sandbox = true,
		                          .keep_fds = keep,
		                          .n_keep_fds = nkeep,
		                          .max_file_size = v->entry->max_file_size,
		                          .max_procs = v->entry->max_procs,
		                          .max_fds = v->entry->max_fds,
		                          .rules = rules,
		                          .n_rules = n,
		                          .pre_seccomp = devproc_pre_seccomp,
		                          .pre_seccomp_arg = &v->args};
		r = n > 64 ? -E2BIG : jail_spawn(&cfg, devproc_main, &v->args, &v->child);
		if (r == 0) {
			v->sandboxed = true;
			v->pid = v->child.pid;
		}
	} else {
		v->pid = fork();
		if (v->pid == 0) {
			close(bus_sv[0]);
			close(ctl_sv[0]);
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			_exit(devproc_main(&v->args)); /* _exit: no atexit/LSan in the child */
		}
		r = v->pid < 0 ? -errno : 0;
	}
	close(bus_sv[1]);
	close(ctl_sv[1]);
	v->bus = bus_sv[0];
	v->ctl = ctl_sv[0];
	if (r < 0)
		return r;
	return hello(v);
}

static int find_msix(struct vdriver *v)
{
	uint32_t ptr, id;
	int r = vdriver_cfg_read(v, 0x34, 1, &ptr);
	for (unsigned hops = 0; r == 0 && ptr && hops < 48; hops++) {
		r = vdriver_cfg_read(v, ptr, 1, &id);
		if (r == 0 && id == 0x11) {
			v->msix_cap = (uint16_t)ptr;
			return 0;
		}
		if (r == 0)
			r = vdriver_cfg_read(v, ptr + 1, 1, &ptr);
	}
	return r < 0 ? r : -ENOENT;
}

#define TRY(x)                                                                                     \
	do {                                                                                       \
		int r_ = (x);                                                                      \
		if (r_ < 0)                                                                        \
			return r_;                                                                 \
	} while (0)

int vdriver_setup(struct vdriver *v, uint64_t want_features, uint16_t qsize)
{
	uint32_t ctl;
	uint64_t lo, hi, nq, max;
	uint8_t st;

	TRY(vdriver_cfg_write(v, 0x04, 2, 0x0006)); /* memory space, bus master */
	TRY(find_msix(v));
	TRY(vdriver_cfg_read(v, v->msix_cap + 2u, 2, &ctl));
	TRY(vdriver_cfg_write(v, v->msix_cap + 2u, 2, (ctl & 0x3fff) | 0x8000));
	unsigned nvec = (ctl & 0x7ff) + 1;
	for (unsigned i = 0; i < nvec && i < VDRIVER_MAX_VECTORS; i++) {
		uint32_t e = VIRTIO_PCI_MSIX_TABLE_OFF + 16 * i;
		TRY(vdriver_bar_write(v, e, 4, 0xfee00000));
		TRY(vdriver_bar_write(v, e + 4, 4, 0));
		TRY(vdriver_bar_write(v, e + 8, 4, 0x30 + i));
		TRY(vdriver_bar_write(v, e + 12, 4, 0)); /* unmask: the device routes it */
	}
	TRY(vdriver_set_status(v, 0));
	TRY(vdriver_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE));
	TRY(vdriver_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER));
	TRY(vdriver_bar_write(v, CC_DFSELECT, 4, 0));
	TRY(vdriver_bar_read(v, CC_DF, 4, &lo));
	TRY(vdriver_bar_write(v, CC_DFSELECT, 4, 1));
	TRY(vdriver_bar_read(v, CC_DF, 4, &hi));
	v->features = (lo | hi << 32) & want_features;
	TRY(vdriver_bar_write(v, CC_GFSELECT, 4, 0));
	TRY(vdriver_bar_write(v, CC_GF, 4, (uint32_t)v->features));
	TRY(vdriver_bar_write(v, CC_GFSELECT, 4, 1));
	TRY(vdriver_bar_write(v, CC_GF, 4, v->features >> 32));
	TRY(vdriver_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	                              VIRTIO_STATUS_FEATURES_OK));
	TRY(vdriver_status(v, &st));
	if (!(st & VIRTIO_STATUS_FEATURES_OK))
		return -EPROTO;
	TRY(vdriver_bar_write(v, CC_MSIX_CONFIG, 2, 0));
	TRY(vdriver_bar_read(v, CC_NUM_QUEUES, 2, &nq));
	v->nqueues = (uint16_t)(nq < VIRTIO_MAX_QUEUES ? nq : VIRTIO_MAX_QUEUES);
	for (uint16_t q = 0; q < v->nqueues; q++) {
		TRY(vdriver_bar_write(v, CC_Q_SELECT, 2, q));
		TRY(vdriver_bar_read(v, CC_Q_SIZE, 2, &max));
		uint16_t size = qsize < max ? qsize : (uint16_t)max;
		TRY(vdriver_bar_write(v, CC_Q_SIZE, 2, size));
		TRY(vdriver_bar_write(v, CC_Q_MSIX, 2, q + 1u));
		TRY(vring_init(&v->ring[q], &v->mem, size, VDRIVER_RING_BASE + 0x10000ull * q));
		TRY(vdriver_bar_write(v, CC_Q_DESC, 8, v->ring[q].desc_gpa));
		TRY(vdriver_bar_write(v, CC_Q_DRIVER, 8, v->ring[q].avail_gpa));
		TRY(vdriver_bar_write(v, CC_Q_DEVICE, 8, v->ring[q].used_gpa));
		TRY(vdriver_bar_write(v, CC_Q_ENABLE, 2, 1));
	}
	TRY(vdriver_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	                              VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK));
	TRY(vdriver_status(v, &st)); /* also waits for the ioeventfd registrations */
	return (st & VIRTIO_STATUS_DRIVER_OK) ? 0 : -EPROTO;
}

int vdriver_kick(struct vdriver *v, uint16_t q)
{
	if (q < VIRTIO_MAX_QUEUES && v->kick[q] >= 0) {
		uint64_t one = 1;
		return write(v->kick[q], &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
	}
	return vdriver_bar_write(v, virtio_pci_notify_off(q), 2, q);
}

int vdriver_wait_irq(struct vdriver *v, uint16_t vector, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	if (vector >= VDRIVER_MAX_VECTORS)
		return -EINVAL;
	for (;;) {
		struct pollfd pfd[2] = {{.fd = v->ctl, .events = POLLIN},
		                        {.fd = v->vec[vector].irqfd, .events = POLLIN}};
		int n = poll(pfd, 2, left_ms(deadline));
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0 && (pfd[1].revents & POLLIN)) {
			uint64_t cnt;
			if (read(v->vec[vector].irqfd, &cnt, sizeof(cnt)) == sizeof(cnt))
				return (int)cnt;
		}
		if (n > 0 && (pfd[0].revents & POLLIN)) {
			int r = serve_one(v);
			if (r < 0)
				return r;
		} else if (n > 0 && (pfd[0].revents & (POLLHUP | POLLERR))) {
			return -EPIPE;
		}
		if (n == 0 && left_ms(deadline) == 0)
			return -ETIMEDOUT;
	}
}

int vdriver_wait_used(struct vdriver *v, uint16_t q, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	while (!vring_used_pending(&v->ring[q])) {
		int r = vdriver_wait_irq(v, q + 1u, left_ms(deadline));
		if (r == -ETIMEDOUT)
			return vring_used_pending(&v->ring[q]) ? 0 : -ETIMEDOUT;
		if (r < 0)
			return r;
	}
	return 0;
}

static int reap(struct vdriver *v, int timeout_ms)
{
	if (v->reaped)
		return v->status;
	if (v->pid <= 0)
		return -ECHILD;
	if (v->sandboxed) {
		int r = jail_child_wait(&v->child, &v->status, timeout_ms);
		if (r < 0)
			return r;
	} else {
		int64_t deadline = now_ms() + timeout_ms;
		for (;;) {
			pid_t w = waitpid(v->pid, &v->status, WNOHANG);
			if (w == v->pid)
				break;
			if (w < 0)
				return -errno;
			if (left_ms(deadline) == 0)
				return -ETIMEDOUT;
			usleep(1000);
		}
	}
	v->reaped = true;
	return v->status;
}

bool vdriver_alive(struct vdriver *v)
{
	return reap(v, 0) == -ETIMEDOUT;
}

int vdriver_wait_exit(struct vdriver *v, int timeout_ms)
{
	return reap(v, timeout_ms);
}

int vdriver_metrics(struct vdriver *v, struct ipc_metrics *out)
{
	struct ipc_bus_req req = {.op = IPC_METRICS, .seq = ++v->seq};
	int r = ipc_send(v->bus, &req, sizeof(req), NULL, 0);
	if (r < 0)
		return r;
	struct pollfd pfd = {.fd = v->bus, .events = POLLIN};
	int n = poll(&pfd, 1, VDRIVER_TIMEOUT_MS);
	if (n <= 0)
		return n == 0 ? -ETIMEDOUT : -errno;
	r = ipc_recv(v->bus, out, sizeof(*out), NULL, 0, NULL);
	if (r < 0)
		return r;
	if (out->op != IPC_METRICS || out->seq != req.seq)
		return -EBADMSG;
	return out->result;
}

int vdriver_shutdown(struct vdriver *v)
{
	struct ipc_bus_req req = {.op = IPC_SHUTDOWN, .seq = ++v->seq};
	struct ipc_bus_resp resp;
	int r = vdriver_bus_raw(v, &req, true, &resp);
	if (r < 0)
		return r;
	return reap(v, VDRIVER_TIMEOUT_MS);
}

void vdriver_destroy(struct vdriver *v)
{
	if (v->pid > 0 && !v->reaped) {
		if (v->sandboxed) {
			jail_child_close(&v->child);
			v->reaped = true;
		} else {
			kill(v->pid, SIGKILL);
			(void)reap(v, VDRIVER_TIMEOUT_MS);
		}
	} else if (v->sandboxed) {
		jail_child_close(&v->child);
	}
	if (v->bus >= 0)
		close(v->bus);
	if (v->ctl >= 0)
		close(v->ctl);
	for (unsigned i = 0; i < VDRIVER_MAX_VECTORS; i++)
		if (v->vec[i].irqfd >= 0)
			close(v->vec[i].irqfd);
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
		if (v->kick[i] >= 0)
			close(v->kick[i]);
	if (v->entry && v->dev_state)
		v->entry->destroy(v->dev_state);
	guest_mem_destroy(&v->mem);
	memset(v, 0, sizeof(*v));
	v->bus = v->ctl = -1;
}
