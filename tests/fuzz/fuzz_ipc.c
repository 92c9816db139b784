/*
 * Fuzz target "ipc": what a compromised device process can send the main
 * process (core/proxy.c, core/ipc.h; hostile input 21), plus the guest's
 * config and BAR accesses the proxy tracks. A real proxy is set up by
 * proxy_init against socketpairs this target holds the other ends of: the
 * HELLO reply (BAR list) comes from the input, then records:
 *   0 ctl: 40-byte ipc_ctl_req + fd count (0-3 eventfds) → proxy_handle_ctl
 *   1 cfg: reg, len, value → the guest writes PCI config space (BARs, command)
 *   2 mmio: offset, len, value → the guest writes into the first BAR
 *   3 reply: 144 bytes queued as the device's answer, then a guest BAR read
 *   4 metrics: an ipc_metrics reply's histogram → percentiles
 * With /dev/kvm the routes and ioeventfds reach a real VM (irqchip made).
 * Invariant: no descriptor is leaked or lost, whatever the device sends.
 */
#define FUZZ_TARGET ipc
#include "tests/fuzz/fuzz.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "core/ipc.h"
#include "core/pci.h"
#include "core/proxy.h"
#include "core/vm.h"

#define SLOT 3

static struct vm vm;
static struct irqroute routes;
static bool ready;

static int open_vm(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return -1;
	int fd = ioctl(kvm, KVM_CREATE_VM, 0);
	close(kvm);
	if (fd < 0)
		return -1;
	if (ioctl(fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Which descriptors are open (the first 1024), so a leak can be named. */
static void open_fds(uint8_t set[1024])
{
	memset(set, 0, 1024);
	DIR *d = opendir("/proc/self/fd");
	FUZZ_CHECK(d, "/proc/self/fd");
	struct dirent *e;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd != dirfd(d) && fd < 1024)
			set[fd] = 1;
	}
	closedir(d);
}

static void check_fds(const uint8_t before[1024])
{
	uint8_t after[1024];
	open_fds(after);
	for (int fd = 0; fd < 1024; fd++) {
		if (before[fd] == after[fd])
			continue;
		char link[64], target[256] = "?";
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = 0;
		FUZZ_CHECK(0, "descriptor %d %s (%s)", fd, after[fd] ? "leaked" : "closed by someone else",
		           target);
	}
}

static void drain(int fd)
{
	char buf[256];
	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

struct rd {
	const uint8_t *p;
	size_t left;
};

static bool take(struct rd *r, void *out, size_t n)
{
	if (r->left < n)
		return false;
	memcpy(out, r->p, n);
	r->p += n;
	r->left -= n;
	return true;
}

static void ctl_record(struct proxy *p, int peer, struct rd *r)
{
	struct ipc_ctl_req q;
	uint8_t nfds;
	if (!take(r, &q, sizeof(q)) || !take(r, &nfds, 1))
		return;
	int fds[3];
	unsigned k = nfds & 3;
	for (unsigned i = 0; i < k; i++)
		fds[i] = eventfd(0, EFD_CLOEXEC);
	/* ipc_send refuses more than IPC_MAX_FDS: three go by hand */
	struct iovec iov = {.iov_base = &q, .iov_len = (nfds & 4) ? sizeof(q) - 8 : sizeof(q)};
	union {
		char buf[CMSG_SPACE(sizeof(int) * 3)];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (k) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * k);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * k);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * k);
	}
	FUZZ_CHECK(sendmsg(peer, &mh, MSG_NOSIGNAL) >= 0, "sendmsg: %s", strerror(errno));
	for (unsigned i = 0; i < k; i++)
		close(fds[i]); /* the proxy has its own copies now */
	int r2 = proxy_handle_ctl(p);
	(void)r2;
	drain(peer);
}

static uint64_t bar0_addr(const struct proxy *p)
{
	for (unsigned i = 0; i < IPC_MAX_BARS; i++)
		if (p->bars[i].mapped)
			return p->bars[i].mapped_at;
	return 0x80000000ull;
}

static void records(struct proxy *p, int bus_peer, int ctl_peer, struct rd *r)
{
	uint8_t op;
	for (unsigned n = 0; n < 64 && take(r, &op, 1); n++) {
		switch (op % 5) {
		case 0:
			ctl_record(p, ctl_peer, r);
			break;
		case 1: {
			uint8_t reg, len;
			uint32_t val;
			if (!take(r, &reg, 1) || !take(r, &len, 1) || !take(r, &val, 4))
				return;
			static const unsigned lens[4] = {1, 2, 4, 4};
			unsigned l = lens[len & 3];
			pci_root_cfg_write(&vm.pci, SLOT, 0, reg & ~(l - 1) & 0xff, l, val);
			drain(bus_peer);
			break;
		}
		case 2: {
			uint32_t off;
			uint8_t len;
			uint64_t val;
			if (!take(r, &off, 4) || !take(r, &len, 1) || !take(r, &val, 8))
				return;
			bus_write(&vm.mmio, bar0_addr(p) + (off & 0xfffff), (const uint8_t *)&val,
			          1u << (len & 3));
			drain(bus_peer);
			break;
		}
		case 3: {
			struct ipc_bus_resp resp;
			uint8_t how;
			if (!take(r, &how, 1) || !take(r, &resp, sizeof(resp)))
				return;
			if (how & 1) {
				resp.seq = p->seq + 1; /* the next request's: a matching reply */
				resp.op = IPC_BAR_READ;
			}
			size_t len = (how & 2) ? sizeof(resp) - 1 : sizeof(resp);
			FUZZ_CHECK(send(bus_peer, &resp, len, MSG_NOSIGNAL) >= 0, "send");
			uint8_t v[8];
			bus_read(&vm.mmio, bar0_addr(p) + (resp.data & 0xffc), v, 4);
			drain(bus_peer);
			break;
		}
		case 4: {
			struct ipc_metrics m;
			if (!take(r, &m, sizeof(m)))
				return;
			uint64_t p50 = ipc_metrics_percentile(&m, 50);
			uint64_t p999 = ipc_metrics_percentile(&m, 99.9);
			(void)p50, (void)p999;
			for (unsigned b = 0; b < IPC_METRICS_BUCKETS; b += 37)
				(void)ipc_metrics_bucket_lo(b);
			break;
		}
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipc_bus_resp hello;
	if (size < sizeof(hello))
		return 0;
	if (!ready) {
		vm.vm_fd = open_vm();
		vm.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		FUZZ_CHECK(irqroute_init(&routes, vm.vm_fd) == 0 || vm.vm_fd < 0, "irqroute_init");
		ready = true;
	}
	uint8_t fds_before[1024];
	open_fds(fds_before);
	FUZZ_CHECK(bus_init(&vm.mmio, "mmio") == 0 && pci_root_init(&vm.pci) == 0, "bus/pci");
	atomic_store(&vm.stopping, false);

	int bus[2], ctl[2];
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, bus) == 0 &&
	               socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) == 0,
	           "socketpair");
	struct rd r = {data, size};
	FUZZ_CHECK(take(&r, &hello, sizeof(hello)), "hello");
	if (hello.op & 0x100) { /* mostly a well-formed reply, the BARs from the input */
		hello.op = IPC_HELLO;
		hello.seq = 1;
		hello.version = IPC_VERSION;
		hello.magic = IPC_MAGIC;
		hello.result = 0;
	}
	FUZZ_CHECK(send(bus[1], &hello, sizeof(hello), MSG_NOSIGNAL) >= 0, "send hello");

	struct proxy *p = calloc(1, sizeof(*p));
	FUZZ_CHECK(p, "calloc");
	struct jail_child child = {.pid = -1, .pidfd = -1};
	uint64_t mmio_next = 0xc0000000ull;
	int r0 = proxy_init(p, &vm, &routes, "fuzz", SLOT, bus[0], ctl[0], &child, &mmio_next);
	drain(bus[1]);
	if (r0 == 0) {
		p->reply_timeout_ms = 0; /* an unanswered read declares the device dead at once */
		records(p, bus[1], ctl[1], &r);
	}
	proxy_destroy(p);
	free(p);
	close(bus[1]);
	close(ctl[1]);
	pci_root_destroy(&vm.pci);
	bus_destroy(&vm.mmio);
	uint64_t v;
	while (read(vm.stop_fd, &v, sizeof(v)) > 0)
		;
	check_fds(fds_before);
	return 0;
}
