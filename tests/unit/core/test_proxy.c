/*
 * Proxy stub over a socketpair with a fake device thread: handshake, config
 * forwarding, BAR placement and relocation on the MMIO bus, posted writes in
 * order, VM-control validation, and a device that stops answering or lies.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/proxy.h"

enum fake_mode { FAKE_GOOD, FAKE_SILENT, FAKE_BAD_SEQ };

struct fake {
	int sock;
	enum fake_mode mode;
	pthread_t thread;
	uint32_t cfg[64];
	_Atomic unsigned writes;
	uint64_t last_write_off, last_write_data;
	atomic_bool reads_seen;
};

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	for (;;) {
		struct ipc_bus_req q;
		if (ipc_recv(f->sock, &q, sizeof(q), NULL, 0, NULL) < 0)
			return NULL;
		struct ipc_bus_resp r = {.op = q.op, .seq = q.seq};
		switch (q.op) {
		case IPC_HELLO:
			r.version = IPC_VERSION;
			r.magic = IPC_MAGIC;
			strcpy(r.name, "fake");
			r.bars[0] = (struct ipc_bar_info){.size = 0x4000, .kind = IPC_BAR_MEM64};
			break;
		case IPC_CFG_READ:
			r.data = q.off == 0 ? 0x10441af4 : f->cfg[(q.off / 4) % 64];
			break;
		case IPC_CFG_WRITE:
			f->cfg[(q.off / 4) % 64] = (uint32_t)q.data;
			continue;
		case IPC_BAR_READ:
			atomic_store(&f->reads_seen, true);
			if (f->mode == FAKE_SILENT)
				continue;
			r.data = 0xab00 + q.off;
			if (f->mode == FAKE_BAD_SEQ)
				r.seq++;
			break;
		case IPC_BAR_WRITE:
			f->last_write_off = q.off;
			f->last_write_data = q.data;
			atomic_fetch_add(&f->writes, 1);
			continue;
		case IPC_SHUTDOWN:
			(void)ipc_send(f->sock, &r, sizeof(r), NULL, 0);
			return NULL;
		}
		if (ipc_send(f->sock, &r, sizeof(r), NULL, 0) < 0)
			return NULL;
	}
}

static struct vm vm;
static struct proxy px;
static struct fake fk;
static int ctl_dev; /* the fake device's end of the control socket */

static void start(enum fake_mode mode)
{
	memset(&vm, 0, sizeof(vm));
	vm.vm_fd = -1; /* no KVM: ioeventfd/irqfd ioctls fail and are reported */
	vm.stop_fd = eventfd(0, EFD_CLOEXEC);
	cr_assert_eq(bus_init(&vm.mmio, "mmio"), 0);
	cr_assert_eq(pci_root_init(&vm.pci), 0);
	int bus[2], ctl[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, bus), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl), 0);
	memset(&fk, 0, sizeof(fk));
	fk.sock = bus[1];
	fk.mode = mode;
	ctl_dev = ctl[1];
	cr_assert_eq(pthread_create(&fk.thread, NULL, fake_main, &fk), 0);
	struct jail_child none = {.pid = -1, .pidfd = -1};
	uint64_t next = 0xc0000000;
	cr_assert_eq(proxy_init(&px, &vm, NULL, "fake", 3, bus[0], ctl[0], &none, &next), 0);
	px.reply_timeout_ms = 300;
	cr_assert_eq(next, 0xc0004000);
}

static void stop(void)
{
	(void)proxy_shutdown(&px, 100);
	proxy_destroy(&px); /* closes our end: a fake that got no SHUTDOWN sees EOF */
	pthread_join(fk.thread, NULL);
	close(fk.sock);
	close(ctl_dev);
	pci_root_destroy(&vm.pci);
	bus_destroy(&vm.mmio);
	close(vm.stop_fd);
}

static void enable_memory(void)
{
	pci_root_cfg_write(&vm.pci, 3, 0, 0x04, 2, 0x6);
}

Test(core_proxy, handshake_places_bars, .timeout = 30)
{
	start(FAKE_GOOD);
	/* The main process programmed BAR0/1 (64-bit) at the window's start. */
	cr_assert_eq(pci_root_cfg_read(&vm.pci, 3, 0, 0, 4), 0x10441af4);
	cr_assert_eq(pci_root_cfg_read(&vm.pci, 3, 0, 0x10, 4), 0xc0000004);
	cr_assert_eq(pci_root_cfg_read(&vm.pci, 3, 0, 0x14, 4), 0);
	/* Not on the bus until the guest enables memory decoding. */
	cr_assert_null(bus_lookup(&vm.mmio, 0xc0000000));
	enable_memory();
	const struct bus_range *r = bus_lookup(&vm.mmio, 0xc0003fff);
	cr_assert_not_null(r);
	cr_assert_eq(r->base, 0xc0000000);
	cr_assert_eq(r->len, 0x4000);
	stop();
}

Test(core_proxy, bar_accesses_forwarded_in_order, .timeout = 30)
{
	start(FAKE_GOOD);
	enable_memory();
	uint8_t d[4];
	bus_read(&vm.mmio, 0xc0000010, d, 4);
	cr_assert_eq(d[0] | d[1] << 8, 0xab10);
	for (uint32_t i = 0; i < 100; i++) {
		uint8_t w[4] = {(uint8_t)i, 0, 0, 0};
		bus_write(&vm.mmio, 0xc0002000 + 4 * (i % 4), w, 4);
	}
	/* A read after posted writes returns only after they were all handled. */
	bus_read(&vm.mmio, 0xc0000000, d, 1);
	cr_assert_eq(atomic_load(&fk.writes), 100);
	cr_assert_eq(fk.last_write_data, 99);
	cr_assert_eq(fk.last_write_off, 0x2000 + 4 * 3);
	stop();
}

Test(core_proxy, guest_moves_bar, .timeout = 30)
{
	start(FAKE_GOOD);
	enable_memory();
	pci_root_cfg_write(&vm.pci, 3, 0, 0x10, 4, 0xd0000004);
	cr_assert_null(bus_lookup(&vm.mmio, 0xc0000000));
	cr_assert_not_null(bus_lookup(&vm.mmio, 0xd0000000));
	/* The sizing probe (all ones) takes it off the bus instead of mapping garbage. */
	pci_root_cfg_write(&vm.pci, 3, 0, 0x10, 4, 0xffffffff);
	pci_root_cfg_write(&vm.pci, 3, 0, 0x14, 4, 0xffffffff);
	cr_assert_null(bus_lookup(&vm.mmio, 0xd0000000));
	pci_root_cfg_write(&vm.pci, 3, 0, 0x10, 4, 0xe0000004);
	pci_root_cfg_write(&vm.pci, 3, 0, 0x14, 4, 0);
	cr_assert_not_null(bus_lookup(&vm.mmio, 0xe0000000));
	/* Memory decoding off: gone. */
	pci_root_cfg_write(&vm.pci, 3, 0, 0x04, 2, 0);
	cr_assert_null(bus_lookup(&vm.mmio, 0xe0000000));
	stop();
}

Test(core_proxy, silent_device_declared_dead, .timeout = 30)
{
	start(FAKE_SILENT);
	enable_memory();
	uint8_t d[4] = {0};
	bus_read(&vm.mmio, 0xc0000000, d, 4);
	cr_assert_eq(d[0] & d[1] & d[2] & d[3], 0xff, "a dead device reads as all-ones");
	cr_assert(atomic_load(&px.dead));
	cr_assert_eq(atomic_load(&vm.exit_code), VM_EXIT_DEVICE);
	cr_assert(atomic_load(&vm.stopping));
	stop();
}

Test(core_proxy, lying_device_declared_dead, .timeout = 30)
{
	start(FAKE_BAD_SEQ);
	enable_memory();
	uint8_t d[4];
	bus_read(&vm.mmio, 0xc0000000, d, 4);
	cr_assert(atomic_load(&px.dead));
	cr_assert_eq(atomic_load(&vm.exit_code), VM_EXIT_DEVICE);
	stop();
}

static int ctl_call(struct ipc_ctl_req *q, int fd)
{
	cr_assert_eq(ipc_send(ctl_dev, q, sizeof(*q), fd >= 0 ? &fd : NULL, fd >= 0), 0);
	int r = proxy_handle_ctl(&px);
	if (r < 0)
		return r;
	struct ipc_ctl_resp resp;
	cr_assert_eq(ipc_recv(ctl_dev, &resp, sizeof(resp), NULL, 0, NULL), 0);
	cr_assert_eq(resp.seq, q->seq);
	return resp.result;
}

Test(core_proxy, vm_control_validation, .timeout = 30)
{
	start(FAKE_GOOD);
	struct ipc_ctl_req q = {.op = IPC_CTL_MSI_ROUTE, .seq = 1, .vector = PROXY_MAX_VECTORS};
	cr_assert_eq(ctl_call(&q, -1), -EINVAL, "vector out of range");
	q = (struct ipc_ctl_req){.op = IPC_CTL_MSI_ROUTE, .seq = 2, .msi_addr = 0x1000};
	cr_assert_eq(ctl_call(&q, eventfd(0, EFD_CLOEXEC)), -EINVAL, "MSI outside the LAPIC window");
	q = (struct ipc_ctl_req){.op = IPC_CTL_MSI_ROUTE, .seq = 3, .msi_addr = 0xfee00000};
	cr_assert_eq(ctl_call(&q, -1), -EINVAL, "first route without an irqfd");
	q = (struct ipc_ctl_req){.op = IPC_CTL_IOEVENTFD, .seq = 4, .bar = 1, .assign = 1};
	cr_assert_eq(ctl_call(&q, eventfd(0, EFD_CLOEXEC)), -EINVAL, "BAR that does not exist");
	q = (struct ipc_ctl_req){.op = IPC_CTL_IOEVENTFD, .seq = 5, .off = 0x4000, .assign = 1};
	cr_assert_eq(ctl_call(&q, eventfd(0, EFD_CLOEXEC)), -EINVAL, "offset past the BAR");
	q = (struct ipc_ctl_req){.op = IPC_CTL_IOEVENTFD, .seq = 6, .off = 0x2002, .assign = 1};
	cr_assert_eq(ctl_call(&q, eventfd(0, EFD_CLOEXEC)), -EINVAL, "unaligned notify address");
	q = (struct ipc_ctl_req){.op = IPC_CTL_IOEVENTFD, .seq = 7, .off = 0x2000, .assign = 1};
	cr_assert_eq(ctl_call(&q, eventfd(0, EFD_CLOEXEC)), 0, "a good one is kept");
	q.seq = 8;
	cr_assert_eq(ctl_call(&q, eventfd(0, EFD_CLOEXEC)), -EEXIST, "the same address twice");
	q = (struct ipc_ctl_req){.op = IPC_CTL_IOEVENTFD, .seq = 9, .off = 0x2000, .assign = 0};
	cr_assert_eq(ctl_call(&q, -1), 0, "deassign");
	q = (struct ipc_ctl_req){.op = 99, .seq = 10};
	cr_assert_eq(ctl_call(&q, eventfd(0, EFD_CLOEXEC)), -EOPNOTSUPP, "unknown request");
	/* A wrong-sized request breaks the protocol: the caller kills the device. */
	char junk[7] = {0};
	cr_assert_eq(send(ctl_dev, junk, sizeof(junk), 0), 7);
	cr_assert_eq(proxy_handle_ctl(&px), -EBADMSG);
	stop();
}

static unsigned open_fds(void)
{
	unsigned n = 0;
	for (int fd = 0; fd < 1024; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

/* Send q with a fresh eventfd (our copy closed at once) and return the result. */
static int ctl_call_fd(struct ipc_ctl_req *q)
{
	int fd = eventfd(0, EFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ipc_send(ctl_dev, q, sizeof(*q), &fd, 1), 0);
	close(fd);
	int r = proxy_handle_ctl(&px);
	struct ipc_ctl_resp resp;
	cr_assert_eq(ipc_recv(ctl_dev, &resp, sizeof(resp), NULL, 0, NULL), 0);
	return r < 0 ? r : resp.result;
}

/* Found by the ipc fuzz target: a refused ioeventfd request kept its descriptor open. */
Test(core_proxy, refused_requests_close_their_descriptors, .timeout = 30)
{
	start(FAKE_GOOD);
	unsigned before = open_fds();
	static const struct ipc_ctl_req bad[] = {
	    {.op = IPC_CTL_IOEVENTFD, .bar = 1, .assign = 1},              /* no such BAR */
	    {.op = IPC_CTL_IOEVENTFD, .bar = 9, .assign = 1},              /* past the BAR list */
	    {.op = IPC_CTL_IOEVENTFD, .off = 0x4000, .assign = 1},         /* past the BAR's end */
	    {.op = IPC_CTL_IOEVENTFD, .off = 0x2002, .assign = 1},         /* unaligned */
	    {.op = IPC_CTL_IOEVENTFD, .off = 0x2000, .assign = 0},         /* nothing to remove */
	    {.op = IPC_CTL_MSI_ROUTE, .vector = PROXY_MAX_VECTORS},        /* no such vector */
	    {.op = IPC_CTL_MSI_ROUTE, .msi_addr = 0x1000},                 /* outside the LAPIC */
	    {.op = 99},                                                    /* unknown */
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ipc_ctl_req q = bad[i];
		q.seq = i + 1;
		cr_assert_lt(ctl_call_fd(&q), 0, "case %u accepted", i);
		cr_assert_eq(open_fds(), before, "case %u left a descriptor open in the main process", i);
	}
	stop();
}

