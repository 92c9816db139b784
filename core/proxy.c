/*
 * Proxy stub: forwards a device process's bus accesses and serves its
 * VM-control requests (see proxy.h). Everything received from the device is
 * validated: it may be compromised.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <linux/kvm.h>

#include "arch/x86_64/layout.h"
#include "core/log.h"
#include "core/proxy.h"

#define PCI_COMMAND     0x04
#define PCI_COMMAND_MEM 0x2
#define PCI_BAR0        0x10
#define MSI_ADDR_BASE   0xfee00000ull
#define MSI_ADDR_MASK   0xfff00000ull

static void mark_dead(struct proxy *p, const char *why)
{
	if (atomic_exchange(&p->dead, true))
		return;
	char msg[160];
	snprintf(msg, sizeof(msg), "device %s (pid %d) %s", p->name, (int)p->pid, why);
	vm_request_stop(p->vm, VM_EXIT_DEVICE, msg);
}

/*
 * A reply usually comes within a few µs of work in the device, but waking a
 * thread that slept on another CPU costs tens of µs on these hosts (an idle
 * CPU halts into the outer hypervisor): bench/proxy.sh measured 64 µs per
 * proxied read split across CPUs, 14 µs with a short spin. So spin briefly
 * before sleeping; sched_yield() keeps a device on the same CPU running.
 * Returns 1 when the reply is there, 0 when the caller should block.
 */
#define PROXY_SPIN_NS 50000

static int spin_for_reply(struct pollfd *pfd)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (poll(pfd, 1, 0) > 0)
			return 1;
		sched_yield();
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > PROXY_SPIN_NS)
			return 0;
	}
}

static int await_reply(struct proxy *p, const struct ipc_bus_req *req, struct ipc_bus_resp *resp);

/* Send req and, when resp is non-NULL, wait for the matching reply. Caller holds p->lock. */
static int request(struct proxy *p, struct ipc_bus_req *req, struct ipc_bus_resp *resp)
{
	if (atomic_load(&p->dead))
		return -EPIPE;
	req->seq = ++p->seq;
	int r = ipc_send(p->bus_sock, req, sizeof(*req), NULL, 0);
	if (r < 0) {
		mark_dead(p, "closed its bus socket");
		return r;
	}
	return resp ? await_reply(p, req, resp) : 0;
}

/* Wait for the reply to req, already sent. Caller holds p->lock. */
static int await_reply(struct proxy *p, const struct ipc_bus_req *req, struct ipc_bus_resp *resp)
{
	struct pollfd pfd = {.fd = p->bus_sock, .events = POLLIN};
	int n = spin_for_reply(&pfd);
	while (n <= 0) {
		n = poll(&pfd, 1, p->reply_timeout_ms);
		if (n >= 0 || errno != EINTR)
			break;
	}
	if (n == 0) {
		mark_dead(p, "stopped answering (no reply in time)");
		return -ETIMEDOUT;
	}
	int r = ipc_recv(p->bus_sock, resp, sizeof(*resp), NULL, 0, NULL);
	if (r < 0 || resp->seq != req->seq || resp->op != req->op) {
		mark_dead(p, r == -EPIPE ? "closed its bus socket" : "sent a malformed reply");
		return r < 0 ? r : -EBADMSG;
	}
	return 0;
}

/* ---- BAR tracking: the main process decides where a BAR is on the bus ---- */

static uint64_t bar_addr(const struct proxy_bar *b)
{
	uint64_t a = b->reg_lo & ~0xfull;
	if (b->info.kind == IPC_BAR_MEM64)
		a |= (uint64_t)b->reg_hi << 32;
	return a & ~(b->info.size - 1);
}

static void ioev_set(struct proxy *p, unsigned i, bool on)
{
	struct proxy_bar *b = &p->bars[p->ioev[i].bar];
	if (on == p->ioev[i].registered || (on && !b->mapped))
		return;
	struct kvm_ioeventfd io = {
		.addr = b->mapped_at + p->ioev[i].off,
		.len = 0, /* zero-length MMIO: any write of any size kicks, no decode in KVM */
		.fd = p->ioev[i].fd,
		.flags = on ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
	};
	if (ioctl(p->vm->vm_fd, KVM_IOEVENTFD, &io) < 0)
		log_warn("%s: KVM_IOEVENTFD %s at 0x%llx: %s", p->name, on ? "assign" : "deassign",
			 (unsigned long long)io.addr, strerror(errno));
	else
		p->ioev[i].registered = on;
}

static void remap_bar(struct proxy *p, struct proxy_bar *b);

static void bar_read(void *opaque, uint64_t off, uint8_t *data, unsigned len)
{
	struct proxy_bar *b = opaque;
	struct proxy *p = b->proxy;
	struct ipc_bus_req req = {.op = IPC_BAR_READ, .bar = (uint8_t)b->index, .len = (uint8_t)len,
				  .off = (uint32_t)off};
	struct ipc_bus_resp resp;
	uint64_t v = ~0ull;
	pthread_mutex_lock(&p->lock);
	if (request(p, &req, &resp) == 0)
		v = resp.data;
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < len; i++)
		data[i] = (uint8_t)(v >> (8 * i));
}

static void bar_write(void *opaque, uint64_t off, const uint8_t *data, unsigned len)
{
	struct proxy_bar *b = opaque;
	struct proxy *p = b->proxy;
	struct ipc_bus_req req = {.op = IPC_BAR_WRITE, .bar = (uint8_t)b->index, .len = (uint8_t)len,
				  .off = (uint32_t)off};
	for (unsigned i = 0; i < len; i++)
		req.data |= (uint64_t)data[i] << (8 * i);
	pthread_mutex_lock(&p->lock);
	(void)request(p, &req, NULL);
	pthread_mutex_unlock(&p->lock);
}

static const struct bus_ops bar_ops = {.name = "proxy-bar", .read = bar_read, .write = bar_write};

/* Put b on the MMIO bus where the guest programmed it, or take it off. Caller holds state_lock. */
static void remap_bar(struct proxy *p, struct proxy_bar *b)
{
	uint64_t want = bar_addr(b);
	bool on = (p->command & PCI_COMMAND_MEM) && want != 0 && want + b->info.size > want;
	if (b->mapped && (!on || want != b->mapped_at)) {
		for (unsigned i = 0; i < p->nioev; i++)
			if (p->ioev[i].bar == b->index)
				ioev_set(p, i, false);
		if (bus_remove(&p->vm->mmio, b->mapped_at) < 0)
			log_warn("%s: BAR%u was not on the bus", p->name, b->index);
		b->mapped = false;
	}
	if (on && !b->mapped) {
		int r = bus_add(&p->vm->mmio, want, b->info.size, &bar_ops, b);
		if (r < 0) {
			/* Overlaps another device: leave it off the bus, as a real bus would conflict. */
			log_warn("%s: BAR%u at 0x%llx overlaps another device; left unmapped", p->name,
				 b->index, (unsigned long long)want);
			return;
		}
		b->mapped = true;
		b->mapped_at = want;
		for (unsigned i = 0; i < p->nioev; i++)
			if (p->ioev[i].bar == b->index)
				ioev_set(p, i, true);
	}
}

static void track_cfg_write(struct proxy *p, unsigned reg, unsigned len, uint32_t val)
{
	/* Merge the written bytes into a dword view of the register they hit. */
	unsigned base = reg & ~3u, shift = 8 * (reg & 3);
	uint32_t mask = len == 4 ? ~0u : ((1u << (8 * len)) - 1) << shift;
	if (base == PCI_COMMAND) {
		uint32_t cur = p->command;
		cur = (cur & ~mask) | ((val << shift) & mask);
		p->command = (uint16_t)cur;
	} else if (base >= PCI_BAR0 && base < PCI_BAR0 + 4 * IPC_MAX_BARS) {
		unsigned idx = (base - PCI_BAR0) / 4;
		struct proxy_bar *b = NULL;
		uint32_t *regp = NULL;
		if (p->bars[idx].info.kind != IPC_BAR_NONE) {
			b = &p->bars[idx];
			regp = &b->reg_lo;
		} else if (idx > 0 && p->bars[idx - 1].info.kind == IPC_BAR_MEM64) {
			b = &p->bars[idx - 1];
			regp = &b->reg_hi;
		}
		if (!b)
			return;
		*regp = (*regp & ~mask) | ((val << shift) & mask);
	} else {
		return;
	}
	for (unsigned i = 0; i < IPC_MAX_BARS; i++)
		if (p->bars[i].info.kind != IPC_BAR_NONE)
			remap_bar(p, &p->bars[i]);
}

static uint32_t cfg_read(void *opaque, unsigned reg, unsigned len)
{
	struct proxy *p = opaque;
	struct ipc_bus_req req = {.op = IPC_CFG_READ, .len = (uint8_t)len, .off = reg};
	struct ipc_bus_resp resp;
	uint32_t v = len == 4 ? ~0u : (1u << (8 * len)) - 1;
	pthread_mutex_lock(&p->lock);
	if (request(p, &req, &resp) == 0)
		v = (uint32_t)resp.data;
	pthread_mutex_unlock(&p->lock);
	return v;
}

static void cfg_write(void *opaque, unsigned reg, unsigned len, uint32_t val)
{
	struct proxy *p = opaque;
	struct ipc_bus_req req = {.op = IPC_CFG_WRITE, .len = (uint8_t)len, .off = reg, .data = val};
	pthread_mutex_lock(&p->lock);
	(void)request(p, &req, NULL);
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_lock(&p->state_lock);
	track_cfg_write(p, reg, len, val);
	pthread_mutex_unlock(&p->state_lock);
}

static const struct pci_dev_ops proxy_pci_ops = {.name = "proxy", .cfg_read = cfg_read,
						 .cfg_write = cfg_write};

static int check_bars(struct proxy *p, const struct ipc_bus_resp *h)
{
	for (unsigned i = 0; i < IPC_MAX_BARS; i++) {
		const struct ipc_bar_info *bi = &h->bars[i];
		struct proxy_bar *b = &p->bars[i];
		b->proxy = p;
		b->index = i;
		if (bi->kind == IPC_BAR_NONE)
			continue;
		bool pow2 = bi->size && !(bi->size & (bi->size - 1));
		if ((bi->kind != IPC_BAR_MEM32 && bi->kind != IPC_BAR_MEM64) || !pow2 ||
		    bi->size < 4096 || bi->size > (1ull << 30) ||
		    (bi->kind == IPC_BAR_MEM64 && (i == IPC_MAX_BARS - 1 ||
						   h->bars[i + 1].kind != IPC_BAR_NONE)))
			return -EBADMSG;
		b->info = *bi;
		if (bi->kind == IPC_BAR_MEM64)
			i++; /* the high half's slot stays NONE */
	}
	return 0;
}

/* Program the initial BAR addresses (no firmware runs) from the 32-bit PCI window. */
static int place_bars(struct proxy *p, uint64_t *next)
{
	for (unsigned i = 0; i < IPC_MAX_BARS; i++) {
		struct proxy_bar *b = &p->bars[i];
		if (b->info.kind == IPC_BAR_NONE)
			continue;
		uint64_t a = (*next + b->info.size - 1) & ~(b->info.size - 1);
		if (a + b->info.size > X86_PCI_MMIO_END)
			return -ENOSPC;
		*next = a + b->info.size;
		uint32_t flags = b->info.kind == IPC_BAR_MEM64 ? 0x4 : 0x0;
		cfg_write(p, PCI_BAR0 + 4 * i, 4, (uint32_t)a | flags);
		if (b->info.kind == IPC_BAR_MEM64)
			cfg_write(p, PCI_BAR0 + 4 * (i + 1), 4, (uint32_t)(a >> 32));
	}
	return 0;
}

int proxy_start(struct proxy *p, struct vm *vm, struct irqroute *routes, const char *name,
		unsigned slot, int bus_sock, int ctl_sock, const struct jail_child *child)
{
	memset(p, 0, sizeof(*p));
	p->vm = vm;
	p->routes = routes;
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->slot = slot;
	p->bus_sock = bus_sock;
	p->ctl_sock = ctl_sock;
	p->reply_timeout_ms = PROXY_REPLY_TIMEOUT_MS;
	p->child = *child;
	p->pid = child->pid;
	for (unsigned i = 0; i < PROXY_MAX_VECTORS; i++)
		p->vec[i].irqfd = -1;
	int r = pthread_mutex_init(&p->lock, NULL);
	if (r == 0)
		r = pthread_mutex_init(&p->state_lock, NULL);
	if (r == 0)
		r = pthread_mutex_init(&p->reap_lock, NULL);
	if (r)
		return -r;
	/* Posted: the device answers once its jail is up, which proxy_connect waits for. */
	p->hello = (struct ipc_bus_req){.op = IPC_HELLO, .version = IPC_VERSION, .magic = IPC_MAGIC};
	pthread_mutex_lock(&p->lock);
	r = request(p, &p->hello, NULL);
	pthread_mutex_unlock(&p->lock);
	if (r < 0)
		log_error("device %s: cannot send HELLO: %s", name, strerror(-r));
	return r;
}

int proxy_connect(struct proxy *p, uint64_t *mmio_next)
{
	struct ipc_bus_resp resp;
	pthread_mutex_lock(&p->lock);
	int r = await_reply(p, &p->hello, &resp);
	pthread_mutex_unlock(&p->lock);
	if (r < 0) {
		log_error("device %s: no HELLO reply: %s", p->name, strerror(-r));
		return r;
	}
	if (resp.version != IPC_VERSION || resp.magic != IPC_MAGIC || resp.result != 0 ||
	    check_bars(p, &resp) < 0) {
		log_error("device %s: bad HELLO reply (version %u)", p->name, resp.version);
		return -EPROTO;
	}
	resp.name[sizeof(resp.name) - 1] = 0;
	log_debug("device %s is %s, pid %d", p->name, resp.name, (int)p->pid);
	r = place_bars(p, mmio_next);
	if (r < 0) {
		log_error("device %s: no room for its BARs in the PCI window", p->name);
		return r;
	}
	r = pci_root_add(&p->vm->pci, p->slot, &proxy_pci_ops, p);
	if (r < 0)
		log_error("device %s: PCI slot %u: %s", p->name, p->slot, strerror(-r));
	return r;
}

int proxy_init(struct proxy *p, struct vm *vm, struct irqroute *routes, const char *name,
	       unsigned slot, int bus_sock, int ctl_sock, const struct jail_child *child,
	       uint64_t *mmio_next)
{
	int r = proxy_start(p, vm, routes, name, slot, bus_sock, ctl_sock, child);
	return r < 0 ? r : proxy_connect(p, mmio_next);
}

/* ---- VM-control requests from the device ---- */

static int ctl_msi(struct proxy *p, const struct ipc_ctl_req *q, int fd)
{
	if (q->vector >= PROXY_MAX_VECTORS)
		return -EINVAL;
	if (!q->masked && (q->msi_addr & MSI_ADDR_MASK) != MSI_ADDR_BASE)
		return -EINVAL; /* only the LAPIC MSI window is a valid target */
	if (p->vec[q->vector].irqfd < 0) {
		if (fd < 0)
			return -EINVAL; /* the first route of a vector brings its irqfd */
		int gsi = irqroute_alloc_msi(p->routes);
		if (gsi < 0)
			return gsi;
		struct kvm_irqfd irqfd = {.fd = (uint32_t)fd, .gsi = (uint32_t)gsi};
		if (ioctl(p->vm->vm_fd, KVM_IRQFD, &irqfd) < 0)
			return -errno;
		p->vec[q->vector].irqfd = fd;
		p->vec[q->vector].gsi = gsi;
	}
	/* A second irqfd for a vector is not needed: the caller closes what was not kept. */
	return irqroute_set_msi(p->routes, (unsigned)p->vec[q->vector].gsi, q->msi_addr,
				q->msi_data, !q->masked);
}

static int ctl_ioeventfd(struct proxy *p, const struct ipc_ctl_req *q, int fd)
{
	if (q->bar >= IPC_MAX_BARS || p->bars[q->bar].info.kind == IPC_BAR_NONE ||
	    q->off >= p->bars[q->bar].info.size || (q->off & 3)) {
		if (fd >= 0)
			close(fd); /* refused: a device must not make us hoard its descriptors */
		return -EINVAL;
	}
	pthread_mutex_lock(&p->state_lock);
	int r = 0;
	unsigned i;
	for (i = 0; i < p->nioev; i++)
		if (p->ioev[i].bar == q->bar && p->ioev[i].off == q->off)
			break;
	if (q->assign) {
		if (i < p->nioev || fd < 0) {
			r = -EEXIST;
		} else if (p->nioev == PROXY_MAX_IOEVENTFDS) {
			r = -ENOSPC;
		} else {
			p->ioev[i].fd = fd;
			p->ioev[i].bar = q->bar;
			p->ioev[i].off = q->off;
			p->ioev[i].registered = false;
			p->nioev++;
			fd = -1;
			ioev_set(p, i, true);
		}
	} else if (i == p->nioev) {
		r = -ENOENT;
	} else {
		ioev_set(p, i, false);
		close(p->ioev[i].fd);
		p->ioev[i] = p->ioev[--p->nioev];
	}
	pthread_mutex_unlock(&p->state_lock);
	if (fd >= 0)
		close(fd);
	return r;
}

int proxy_handle_ctl(struct proxy *p)
{
	struct ipc_ctl_req q;
	int fds[IPC_MAX_FDS];
	unsigned nfds = 0;
	int r = ipc_recv(p->ctl_sock, &q, sizeof(q), fds, 1, &nfds);
	if (r < 0)
		return r;
	int fd = nfds ? fds[0] : -1, out_fd = -1;
	switch (q.op) {
	case IPC_CTL_MSI_ROUTE:
		r = ctl_msi(p, &q, fd);
		/* Closed here, once, whatever the outcome, unless the vector kept it. */
		if (fd >= 0 && p->vec[q.vector < PROXY_MAX_VECTORS ? q.vector : 0].irqfd != fd)
			close(fd);
		break;
	case IPC_CTL_IOEVENTFD:
		r = ctl_ioeventfd(p, &q, fd);
		break;
	default:
		if (fd >= 0)
			close(fd); /* no device-specific request carries a descriptor in */
		if (p->dev_vmctl) {
			r = p->dev_vmctl(p->dev_state, &q, &out_fd);
			break;
		}
		log_warn("device %s: unknown VM-control request %u", p->name, q.op);
		r = -EOPNOTSUPP;
	}
	struct ipc_ctl_resp resp = {.op = q.op, .seq = q.seq, .result = r};
	r = ipc_send(p->ctl_sock, &resp, sizeof(resp), &out_fd, r == 0 && out_fd >= 0 ? 1 : 0);
	if (out_fd >= 0)
		close(out_fd); /* the device has its own copy now */
	return r;
}

/* ---- shutdown ---- */

const char *proxy_describe_exit(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d (%s)%s", WTERMSIG(status),
			 strsignal(WTERMSIG(status)),
			 WTERMSIG(status) == SIGSYS ? " - a seccomp violation" : "");
	else
		snprintf(buf, len, "ended with wait status 0x%x", status);
	return buf;
}

int proxy_reap(struct proxy *p, int *status, int timeout_ms)
{
	pthread_mutex_lock(&p->reap_lock);
	int r = jail_child_wait(&p->child, status, timeout_ms);
	pthread_mutex_unlock(&p->reap_lock);
	return r;
}

int proxy_shutdown(struct proxy *p, int timeout_ms)
{
	int st = 0;
	atomic_store(&p->shutting_down, true);
	if (!atomic_load(&p->dead)) {
		struct ipc_bus_req req = {.op = IPC_SHUTDOWN};
		struct ipc_bus_resp resp;
		pthread_mutex_lock(&p->lock);
		atomic_store(&p->dead, true); /* from now on vCPUs get all-ones, not a wait */
		req.seq = ++p->seq;
		if (ipc_send(p->bus_sock, &req, sizeof(req), NULL, 0) == 0) {
			struct pollfd pfd = {.fd = p->bus_sock, .events = POLLIN};
			if (poll(&pfd, 1, timeout_ms) > 0)
				(void)ipc_recv(p->bus_sock, &resp, sizeof(resp), NULL, 0, NULL);
		}
		pthread_mutex_unlock(&p->lock);
	}
	int r = proxy_reap(p, &st, timeout_ms);
	if (r == -ETIMEDOUT) {
		log_warn("device %s (pid %d) did not exit; killing it", p->name, (int)p->pid);
		if (jail_child_kill(&p->child) < 0)
			log_warn("device %s: SIGKILL failed", p->name);
		r = proxy_reap(p, &st, -1);
	}
	return r < 0 ? r : st;
}

void proxy_destroy(struct proxy *p)
{
	for (unsigned i = 0; i < PROXY_MAX_VECTORS; i++)
		if (p->vec[i].irqfd >= 0) {
			struct kvm_irqfd irqfd = {.fd = (uint32_t)p->vec[i].irqfd,
						  .gsi = (uint32_t)p->vec[i].gsi,
						  .flags = KVM_IRQFD_FLAG_DEASSIGN};
			(void)ioctl(p->vm->vm_fd, KVM_IRQFD, &irqfd);
			close(p->vec[i].irqfd);
			p->vec[i].irqfd = -1;
		}
	for (unsigned i = 0; i < p->nioev; i++) {
		ioev_set(p, i, false);
		close(p->ioev[i].fd);
	}
	p->nioev = 0;
	jail_child_close(&p->child); /* kills and reaps if still there: no zombie */
	if (p->bus_sock >= 0)
		close(p->bus_sock);
	if (p->ctl_sock >= 0)
		close(p->ctl_sock);
	p->bus_sock = p->ctl_sock = -1;
	pthread_mutex_destroy(&p->reap_lock);
	pthread_mutex_destroy(&p->state_lock);
	pthread_mutex_destroy(&p->lock);
}
