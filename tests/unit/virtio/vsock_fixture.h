/*
 * Test fixture for virtio-vsock device tests: the real device process
 * (jailed or forked) behind tests/harness/vdriver, which plays the guest
 * here, with its Unix socket in a fresh temporary directory. Header-only
 * (static helpers) for test_vsock_dev.c.
 */
#ifndef RINGVM_TESTS_UNIT_VIRTIO_VSOCK_FIXTURE_H
#define RINGVM_TESTS_UNIT_VIRTIO_VSOCK_FIXTURE_H

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devices/virtio/vsock.h"
#include "tests/common/facility.h"
#include "tests/harness/vdriver.h"

#define VT_F(b) (1ull << (b))
#define VT_FEATURES (VT_F(VIRTIO_F_VERSION_1) | VT_F(VIRTIO_F_EVENT_IDX) | VT_F(VIRTIO_F_INDIRECT_DESC))
#define VT_CID   3
#define VT_RAM   (64ull << 20)
#define VT_RXBUF (sizeof(struct vsock_hdr) + 4096)
#define VT_RX_GPA(i) (VDRIVER_DATA_BASE + 0x2000ull * (i))              /* 256 × 8 KiB */
#define VT_TX_GPA    (VDRIVER_DATA_BASE + 0x400000ull)                   /* 128 KiB */

struct vt {
	struct vdriver v;
	char dir[64];
	char uds[128];
	uint64_t rx_gpa[VIRTQ_MAX_SIZE]; /* buffer of each RX head */
	unsigned rx_slot;
	uint32_t fwd_cnt;   /* what this "guest" consumed, reported in every packet */
	uint32_t buf_alloc; /* what it advertises */
};

static inline void vt_rx_post(struct vt *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t gpa = VT_RX_GPA(t->rx_slot++ % 256);
		struct vring_buf b = {.gpa = gpa, .len = VT_RXBUF, .write = true};
		int head = vring_add(&t->v.ring[VSOCK_QUEUE_RX], &b, 1);
		cr_assert_geq(head, 0);
		t->rx_gpa[head] = gpa;
	}
	cr_assert_eq(vdriver_kick(&t->v, VSOCK_QUEUE_RX), 0);
}

static inline void vt_start(struct vt *t, bool sandbox)
{
	char opts[200];
	memset(t, 0, sizeof(*t));
	t->buf_alloc = 256 * 1024;
	snprintf(t->dir, sizeof(t->dir), "/tmp/rvvsock.XXXXXX");
	cr_assert_not_null(mkdtemp(t->dir));
	snprintf(t->uds, sizeof(t->uds), "%s/v.sock", t->dir);
	snprintf(opts, sizeof(opts), "cid=%u,uds=%s", VT_CID, t->uds);
	struct vdriver_params p = {.device = "vsock", .opts = opts, .ram_size = VT_RAM,
	                           .sandbox = sandbox};
	int r = vdriver_spawn(&t->v, &p);
	if (sandbox && (r == -EPERM || r == -ENOSPC))
		REQUIRE_FACILITY(false, "cannot create the jail's namespaces here");
	cr_assert_eq(r, 0, "vdriver_spawn: %s", strerror(-r));
	r = vdriver_setup(&t->v, VT_FEATURES, 256);
	cr_assert_eq(r, 0, "vdriver_setup: %d", r);
	vt_rx_post(t, 128);
}

static inline void vt_stop(struct vt *t)
{
	char path[200];
	cr_assert(vdriver_alive(&t->v), "the device process died");
	int st = vdriver_shutdown(&t->v);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "device exit status %#x", st);
	vdriver_destroy(&t->v);
	cr_assert_eq(access(t->uds, F_OK), -1, "the socket file is removed on exit");
	for (unsigned p = 5000; p < 5010; p++) {
		snprintf(path, sizeof(path), "%s_%u", t->uds, p);
		unlink(path);
	}
	rmdir(t->dir);
}

static inline struct vsock_hdr vt_hdr(struct vt *t, uint16_t op, uint32_t src_port,
                                      uint32_t dst_port, uint32_t len)
{
	return (struct vsock_hdr){.src_cid = VT_CID, .dst_cid = VSOCK_HOST_CID, .src_port = src_port,
	                          .dst_port = dst_port, .len = len, .type = VSOCK_TYPE_STREAM,
	                          .op = op, .buf_alloc = t->buf_alloc, .fwd_cnt = t->fwd_cnt};
}

/* One TX chain: header (host order, converted here) then payload; waits until used. */
static inline void vt_send(struct vt *t, const struct vsock_hdr *h, const void *data, uint32_t n)
{
	uint8_t *p = guest_mem_ptr(&t->v.mem, VT_TX_GPA, sizeof(*h) + n);
	cr_assert_not_null(p);
	struct vsock_hdr le = *h;
	vsock_hdr_to_le(&le);
	memcpy(p, &le, sizeof(le));
	if (n)
		memcpy(p + sizeof(le), data, n);
	struct vring_buf b = {.gpa = VT_TX_GPA, .len = (uint32_t)sizeof(le) + n};
	cr_assert_geq(vring_add(&t->v.ring[VSOCK_QUEUE_TX], &b, 1), 0);
	cr_assert_eq(vdriver_kick(&t->v, VSOCK_QUEUE_TX), 0);
	cr_assert_eq(vdriver_wait_used(&t->v, VSOCK_QUEUE_TX, VDRIVER_TIMEOUT_MS), 0, "TX not used");
	uint32_t id, ulen;
	cr_assert_eq(vring_get_used(&t->v.ring[VSOCK_QUEUE_TX], &id, &ulen), 1);
}

/* The next packet for the guest: 0 with its header and payload (≤ 4096), or -ETIMEDOUT. */
static inline int vt_recv(struct vt *t, struct vsock_hdr *h, uint8_t *data, int timeout_ms)
{
	struct vring *rx = &t->v.ring[VSOCK_QUEUE_RX];
	uint32_t id, len;
	if (!vring_used_pending(rx) && vdriver_wait_used(&t->v, VSOCK_QUEUE_RX, timeout_ms) < 0)
		return -ETIMEDOUT;
	cr_assert_eq(vring_get_used(rx, &id, &len), 1);
	cr_assert_geq(len, sizeof(*h));
	const uint8_t *p = guest_mem_ptr(&t->v.mem, t->rx_gpa[id], VT_RXBUF);
	memcpy(h, p, sizeof(*h));
	vsock_hdr_from_le(h);
	cr_assert_eq(len, sizeof(*h) + h->len, "used length is header + payload");
	cr_assert_eq(h->src_cid, VSOCK_HOST_CID);
	cr_assert_eq(h->dst_cid, VT_CID);
	cr_assert_eq(h->type, VSOCK_TYPE_STREAM);
	if (data && h->len)
		memcpy(data, p + sizeof(*h), h->len);
	if (h->op == VSOCK_OP_RW)
		t->fwd_cnt += h->len; /* consumed at once */
	vt_rx_post(t, 1);
	return 0;
}

/* Expect the next packet to be op (within timeout_ms). */
static inline struct vsock_hdr vt_expect(struct vt *t, uint16_t op, int timeout_ms)
{
	struct vsock_hdr h;
	int r = vt_recv(t, &h, NULL, timeout_ms);
	cr_assert_eq(r, 0, "no packet (wanted op %u)", op);
	cr_assert_eq(h.op, op, "got op %u, wanted %u", h.op, op);
	return h;
}

static inline void vt_expect_none(struct vt *t, int timeout_ms)
{
	struct vsock_hdr h;
	int r = vt_recv(t, &h, NULL, timeout_ms);
	cr_assert_eq(r, -ETIMEDOUT, "unexpected packet op %u", h.op);
}

static inline int vt_connect_path(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	cr_assert_lt(strlen(path), sizeof(a.sun_path));
	memcpy(a.sun_path, path, strlen(path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect %s: %s", path,
	             strerror(errno));
	return fd;
}

static inline int vt_listen_port(struct vt *t, unsigned port)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	cr_assert_lt(strlen(t->uds) + 12, sizeof(a.sun_path));
	memcpy(a.sun_path, t->uds, strlen(t->uds));
	snprintf(a.sun_path + strlen(t->uds), 12, "_%u", port);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(fd, 1100), 0);
	return fd;
}

/* Read exactly n bytes from fd within timeout_ms (serving the device meanwhile). */
static inline int vt_read_n(struct vt *t, int fd, void *buf, size_t n, int timeout_ms)
{
	size_t got = 0;
	for (int waited = 0; got < n && waited < timeout_ms; waited += 10) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 0) == 1) {
			ssize_t k = read(fd, (uint8_t *)buf + got, n - got);
			if (k <= 0)
				return got ? (int)got : (int)k;
			got += (size_t)k;
			continue;
		}
		(void)vdriver_serve_ctl(&t->v, 10);
	}
	return (int)got;
}

/* Whether fd reaches EOF (or an error) within timeout_ms. */
static inline bool vt_eof(struct vt *t, int fd, int timeout_ms)
{
	char c;
	for (int waited = 0; waited < timeout_ms; waited += 10) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 0) == 1)
			return read(fd, &c, 1) <= 0;
		(void)vdriver_serve_ctl(&t->v, 10);
	}
	return false;
}

#endif
