/*
 * virtio-vsock through the host-side harness (vsock_fixture.h): the real
 * device process with its listening socket, a host client speaking the
 * CONNECT protocol, guest connects to PATH_<port> made by the "main
 * process" (the harness serves IPC_CTL_VSOCK_CONNECT through the registry
 * hook as ringvm does), hostile packets, credit in both directions and
 * the connection limit.
 */
#include <fcntl.h>
#include <sys/resource.h>

#include "tests/unit/virtio/vsock_fixture.h"

/* A host client connects with a CONNECT line sent in pieces; the "guest" accepts. */
static int host_connect(struct vt *t, uint32_t port, const char *line, struct vsock_hdr *req)
{
	int fd = vt_connect_path(t->uds);
	for (size_t i = 0; line[i]; i++) /* one byte at a time: the device assembles it */
		cr_assert_eq(write(fd, line + i, 1), 1);
	*req = vt_expect(t, VSOCK_OP_REQUEST, VDRIVER_TIMEOUT_MS);
	cr_assert_eq(req->dst_port, port);
	cr_assert_geq(req->src_port, VSOCK_EPHEMERAL_BASE, "an ephemeral host port");
	return fd;
}

static void accept_host(struct vt *t, int fd, const struct vsock_hdr *req)
{
	char ok[32] = {0}, want[32];
	struct vsock_hdr h = vt_hdr(t, VSOCK_OP_RESPONSE, req->dst_port, req->src_port, 0);
	vt_send(t, &h, NULL, 0);
	int n = snprintf(want, sizeof(want), "OK %u\n", req->src_port);
	cr_assert_eq(vt_read_n(t, fd, ok, (size_t)n, VDRIVER_TIMEOUT_MS), n);
	cr_assert_str_eq(ok, want);
}

static void host_echo(bool sandbox)
{
	struct vt t;
	struct vsock_hdr req, h;
	uint8_t data[4096];
	vt_start(&t, sandbox);
	int fd = host_connect(&t, 5000, "connect 5000\nearly", &req);
	accept_host(&t, fd, &req);
	/* Bytes after the newline are stream data. */
	cr_assert_eq(vt_recv(&t, &h, data, VDRIVER_TIMEOUT_MS), 0);
	cr_assert_eq(h.op, VSOCK_OP_RW);
	cr_assert_eq(h.len, 5);
	cr_assert_eq(memcmp(data, "early", 5), 0);
	/* Host → guest. */
	cr_assert_eq(write(fd, "hello host", 10), 10);
	cr_assert_eq(vt_recv(&t, &h, data, VDRIVER_TIMEOUT_MS), 0);
	cr_assert_eq(h.op, VSOCK_OP_RW);
	cr_assert_eq(h.len, 10);
	cr_assert_eq(memcmp(data, "hello host", 10), 0);
	cr_assert_eq(h.src_port, req.src_port);
	cr_assert_eq(h.dst_port, 5000);
	/* Guest → host. */
	h = vt_hdr(&t, VSOCK_OP_RW, 5000, req.src_port, 11);
	vt_send(&t, &h, "hello guest", 11);
	char got[16] = {0};
	cr_assert_eq(vt_read_n(&t, fd, got, 11, VDRIVER_TIMEOUT_MS), 11);
	cr_assert_str_eq(got, "hello guest");
	/* Guest half-close: the host reads EOF but can still send. */
	h = vt_hdr(&t, VSOCK_OP_SHUTDOWN, 5000, req.src_port, 0);
	h.flags = VSOCK_SHUTDOWN_SEND;
	vt_send(&t, &h, NULL, 0);
	cr_assert(vt_eof(&t, fd, VDRIVER_TIMEOUT_MS), "host sees EOF after SHUTDOWN(SEND)");
	cr_assert_eq(write(fd, "more", 4), 4);
	cr_assert_eq(vt_recv(&t, &h, data, VDRIVER_TIMEOUT_MS), 0);
	cr_assert_eq(h.op, VSOCK_OP_RW);
	cr_assert_eq(memcmp(data, "more", 4), 0);
	/* Host half-close: the guest gets SHUTDOWN(SEND); then the guest closes: RST. */
	cr_assert_eq(shutdown(fd, SHUT_WR), 0);
	h = vt_expect(&t, VSOCK_OP_SHUTDOWN, VDRIVER_TIMEOUT_MS);
	cr_assert_eq(h.flags, VSOCK_SHUTDOWN_SEND);
	h = vt_hdr(&t, VSOCK_OP_SHUTDOWN, 5000, req.src_port, 0);
	h.flags = VSOCK_SHUTDOWN_BOTH;
	vt_send(&t, &h, NULL, 0);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	close(fd);
	struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t.v, &m), 0);
	cr_assert_eq(m.other, 1, "one connection");
	cr_assert_eq(m.bytes_written, 11);
	cr_assert_eq(m.bytes_read, 5 + 10 + 4);
	cr_assert_eq(m.errors, 0);
	vt_stop(&t);
}

Test(virtio_vsock, host_connect_echo_jailed) { host_echo(true); }
Test(virtio_vsock, host_connect_echo_unjailed) { host_echo(false); }

Test(virtio_vsock, config_and_ids)
{
	struct vt t;
	uint64_t v;
	uint32_t id;
	vt_start(&t, true);
	cr_assert_eq(vdriver_bar_read(&t.v, VIRTIO_PCI_DEVCFG_OFF, 8, &v), 0);
	cr_assert_eq(v, VT_CID, "guest_cid");
	cr_assert_eq(vdriver_cfg_read(&t.v, 0, 4, &id), 0);
	cr_assert_eq(id, 0x1af4u | 0x1053u << 16, "virtio-vsock is PCI 1af4:1053");
	cr_assert_eq(t.v.nqueues, 3);
	cr_assert(t.v.features & VT_F(VIRTIO_F_VERSION_1));
	cr_assert(t.v.features & VT_F(VIRTIO_F_EVENT_IDX));
	cr_assert(t.v.features & VT_F(VIRTIO_F_INDIRECT_DESC));
	vt_stop(&t);
}

Test(virtio_vsock, host_connect_refused_or_unanswered)
{
	struct vt t;
	struct vsock_hdr req, h;
	vt_start(&t, false);
	/* The guest refuses: the client is closed. */
	int fd = host_connect(&t, 5001, "CONNECT 5001\n", &req);
	h = vt_hdr(&t, VSOCK_OP_RST, 5001, req.src_port, 0);
	vt_send(&t, &h, NULL, 0);
	cr_assert(vt_eof(&t, fd, VDRIVER_TIMEOUT_MS), "refused: the client is closed");
	close(fd);
	/* No answer: closed after 2 s (bound generous for loaded machines). */
	fd = host_connect(&t, 5002, "CONNECT 5002\n", &req);
	cr_assert(vt_eof(&t, fd, 15000), "unanswered: the client is closed");
	close(fd);
	/* The guest's late answer is refused with RST. */
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	vt_stop(&t);
}

Test(virtio_vsock, bad_connect_lines)
{
	struct vt t;
	vt_start(&t, true);
	static const char *bad[] = {"garbage\n", "CONNECT x\n", "CONNECT 99999999999999999999999999\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd = vt_connect_path(t.uds);
		(void)!write(fd, bad[i], strlen(bad[i]));
		cr_assert(vt_eof(&t, fd, VDRIVER_TIMEOUT_MS), "'%s' closes the client", bad[i]);
		close(fd);
	}
	vt_expect_none(&t, 200);
	/* Other clients are unaffected. */
	struct vsock_hdr req;
	int fd = host_connect(&t, 7, "CONNECT 7\n", &req);
	accept_host(&t, fd, &req);
	close(fd);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS); /* the host peer vanished */
	vt_stop(&t);
}

static void guest_connect(bool sandbox)
{
	struct vt t;
	struct vsock_hdr h;
	uint8_t data[4096];
	vt_start(&t, sandbox);
	int lfd = vt_listen_port(&t, 5003);
	h = vt_hdr(&t, VSOCK_OP_REQUEST, 1234, 5003, 0);
	vt_send(&t, &h, NULL, 0);
	h = vt_expect(&t, VSOCK_OP_RESPONSE, VDRIVER_TIMEOUT_MS);
	cr_assert_eq(h.src_port, 5003);
	cr_assert_eq(h.dst_port, 1234);
	cr_assert_eq(h.buf_alloc, VSOCK_TX_BUF);
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(fd, 0);
	h = vt_hdr(&t, VSOCK_OP_RW, 1234, 5003, 3);
	vt_send(&t, &h, "abc", 3);
	char got[4] = {0};
	cr_assert_eq(vt_read_n(&t, fd, got, 3, VDRIVER_TIMEOUT_MS), 3);
	cr_assert_str_eq(got, "abc");
	cr_assert_eq(write(fd, "xyz", 3), 3);
	cr_assert_eq(vt_recv(&t, &h, data, VDRIVER_TIMEOUT_MS), 0);
	cr_assert_eq(h.op, VSOCK_OP_RW);
	cr_assert_eq(memcmp(data, "xyz", 3), 0);
	/* The host peer goes away altogether: the guest gets RST. */
	close(fd);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	/* Nothing listening at PATH_<port>: RST. */
	h = vt_hdr(&t, VSOCK_OP_REQUEST, 1235, 5009, 0);
	vt_send(&t, &h, NULL, 0);
	h = vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	cr_assert_eq(h.src_port, 5009);
	cr_assert_eq(h.dst_port, 1235);
	close(lfd);
	vt_stop(&t);
}

Test(virtio_vsock, guest_connect_jailed) { guest_connect(true); }
Test(virtio_vsock, guest_connect_unjailed) { guest_connect(false); }

/* An open guest-initiated connection on port 5004 with its host end. */
static int open_guest_conn(struct vt *t, int *lfd, uint32_t gport)
{
	*lfd = vt_listen_port(t, 5004);
	struct vsock_hdr h = vt_hdr(t, VSOCK_OP_REQUEST, gport, 5004, 0);
	vt_send(t, &h, NULL, 0);
	vt_expect(t, VSOCK_OP_RESPONSE, VDRIVER_TIMEOUT_MS);
	int fd = accept4(*lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(fd, 0);
	return fd;
}

Test(virtio_vsock, hostile_packets)
{
	struct vt t;
	struct vsock_hdr h;
	static uint8_t big[VSOCK_MAX_PKT + 8];
	vt_start(&t, true);
	/* Wrong source CID: dropped without an answer. */
	h = vt_hdr(&t, VSOCK_OP_REQUEST, 1, 5004, 0);
	h.src_cid = 99;
	vt_send(&t, &h, NULL, 0);
	vt_expect_none(&t, 200);
	/* Wrong destination CID, unknown type, unknown op, data on a control op,
	 * a packet for no connection: RST each. */
	h = vt_hdr(&t, VSOCK_OP_REQUEST, 1, 5004, 0);
	h.dst_cid = 77;
	vt_send(&t, &h, NULL, 0);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	h = vt_hdr(&t, VSOCK_OP_REQUEST, 1, 5004, 0);
	h.type = 2;
	vt_send(&t, &h, NULL, 0);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	h = vt_hdr(&t, 42, 1, 5004, 0);
	vt_send(&t, &h, NULL, 0);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	h = vt_hdr(&t, VSOCK_OP_CREDIT_UPDATE, 1, 5004, 4);
	vt_send(&t, &h, "abcd", 4);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	h = vt_hdr(&t, VSOCK_OP_RW, 1, 5004, 4);
	vt_send(&t, &h, "abcd", 4);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	/* A RST for nothing: ignored (never answered). */
	h = vt_hdr(&t, VSOCK_OP_RST, 1, 5004, 0);
	vt_send(&t, &h, NULL, 0);
	vt_expect_none(&t, 200);
	/* A header claiming more than the chain carries, or more than 64 KiB. */
	int lfd, fd = open_guest_conn(&t, &lfd, 10);
	h = vt_hdr(&t, VSOCK_OP_RW, 10, 5004, 100);
	vt_send(&t, &h, "short", 5);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	cr_assert(vt_eof(&t, fd, VDRIVER_TIMEOUT_MS), "the connection is closed");
	close(fd);
	close(lfd);
	char p[200];
	snprintf(p, sizeof(p), "%s_5004", t.uds);
	unlink(p);
	fd = open_guest_conn(&t, &lfd, 11);
	h = vt_hdr(&t, VSOCK_OP_RW, 11, 5004, VSOCK_MAX_PKT + 1);
	vt_send(&t, &h, big, VSOCK_MAX_PKT + 1);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	cr_assert(vt_eof(&t, fd, VDRIVER_TIMEOUT_MS));
	close(fd);
	close(lfd);
	unlink(p);
	/* Lying credit: more than the 64 KiB the device gave, with the host not reading. */
	fd = open_guest_conn(&t, &lfd, 12);
	int sz = 4096;
	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)), 0);
	bool rst = false;
	for (unsigned i = 0; i < 40 && !rst; i++) {
		h = vt_hdr(&t, VSOCK_OP_RW, 12, 5004, 16384);
		vt_send(&t, &h, big, 16384);
		struct vsock_hdr r;
		while (!rst && vt_recv(&t, &r, NULL, 50) == 0)
			rst = r.op == VSOCK_OP_RST;
	}
	cr_assert(rst, "sending past the credit resets the connection");
	close(fd);
	close(lfd);
	struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t.v, &m), 0);
	cr_assert_geq(m.errors, 8, "refused packets are counted (%lu)", (unsigned long)m.errors);
	cr_assert(vdriver_alive(&t.v));
	vt_stop(&t);
}

Test(virtio_vsock, host_to_guest_respects_credit)
{
	struct vt t;
	struct vsock_hdr req, h;
	static uint8_t data[4096], blob[10000];
	vt_start(&t, false);
	t.buf_alloc = 1000; /* the guest can hold 1000 bytes */
	int fd = host_connect(&t, 5005, "CONNECT 5005\n", &req);
	accept_host(&t, fd, &req);
	for (unsigned i = 0; i < sizeof(blob); i++)
		blob[i] = (uint8_t)(i * 7);
	cr_assert_eq(write(fd, blob, sizeof(blob)), (ssize_t)sizeof(blob));
	uint32_t got = 0;
	while (vt_recv(&t, &h, data, 300) == 0) {
		cr_assert_eq(h.op, VSOCK_OP_RW);
		cr_assert_eq(memcmp(data, blob + got, h.len), 0, "in order, not lost");
		got += h.len;
	}
	cr_assert_eq(got, 1000, "exactly the credit, no more (%u)", got);
	/* The guest consumed it all and says so: the rest flows. */
	while (got < sizeof(blob)) {
		h = vt_hdr(&t, VSOCK_OP_CREDIT_UPDATE, 5005, req.src_port, 0);
		vt_send(&t, &h, NULL, 0);
		uint32_t round = 0;
		while (round < 1000 && vt_recv(&t, &h, data, VDRIVER_TIMEOUT_MS) == 0) {
			cr_assert_eq(h.op, VSOCK_OP_RW);
			cr_assert_eq(memcmp(data, blob + got, h.len), 0);
			got += h.len;
			round += h.len;
		}
		cr_assert_leq(round, 1000);
	}
	/* The host closes: the guest learns it once it has room to read the EOF. */
	close(fd);
	vt_expect_none(&t, 200);
	h = vt_hdr(&t, VSOCK_OP_CREDIT_UPDATE, 5005, req.src_port, 0);
	vt_send(&t, &h, NULL, 0);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	vt_stop(&t);
}

Test(virtio_vsock, guest_to_host_credit_updates)
{
	struct vt t;
	struct vsock_hdr h;
	static uint8_t blob[4096];
	vt_start(&t, false);
	int lfd, fd = open_guest_conn(&t, &lfd, 20);
	/* 256 KiB in 4 KiB packets, staying inside the credit the device reports. */
	uint32_t sent = 0, dev_fwd = 0, dev_alloc = VSOCK_TX_BUF, read_total = 0;
	static uint8_t sink[65536];
	while (sent < 256 * 1024) {
		if (sent - dev_fwd + sizeof(blob) <= dev_alloc) {
			for (unsigned i = 0; i < sizeof(blob); i++)
				blob[i] = (uint8_t)(sent + i);
			h = vt_hdr(&t, VSOCK_OP_RW, 20, 5004, sizeof(blob));
			vt_send(&t, &h, blob, sizeof(blob));
			sent += sizeof(blob);
		}
		ssize_t k = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		for (ssize_t i = 0; i < k; i++)
			cr_assert_eq(sink[i], (uint8_t)(read_total + i), "byte %u", read_total);
		if (k > 0)
			read_total += (uint32_t)k;
		struct vsock_hdr r;
		while (vt_recv(&t, &r, NULL, 0) == 0) {
			cr_assert_eq(r.op, VSOCK_OP_CREDIT_UPDATE);
			dev_fwd = r.fwd_cnt;
			dev_alloc = r.buf_alloc;
		}
		if (sent - dev_fwd + sizeof(blob) > dev_alloc && vt_recv(&t, &r, NULL, 100) == 0) {
			cr_assert_eq(r.op, VSOCK_OP_CREDIT_UPDATE);
			dev_fwd = r.fwd_cnt;
			dev_alloc = r.buf_alloc;
		}
	}
	while (read_total < sent) {
		ssize_t k = vt_read_n(&t, fd, sink, sent - read_total < sizeof(sink) ? sent - read_total
		                                                                      : sizeof(sink),
		                      VDRIVER_TIMEOUT_MS);
		cr_assert_gt(k, 0);
		for (ssize_t i = 0; i < k; i++)
			cr_assert_eq(sink[i], (uint8_t)(read_total + i));
		read_total += (uint32_t)k;
	}
	cr_assert_eq(read_total, 256 * 1024);
	close(fd);
	close(lfd);
	vt_stop(&t);
}

Test(virtio_vsock, connection_limit, .timeout = 120)
{
	struct vt t;
	static int fds[VSOCK_MAX_CONNS + 8];
	struct rlimit rl;
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2200) {
		rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	REQUIRE_FACILITY(rl.rlim_cur >= 2200, "needs RLIMIT_NOFILE >= 2200");
	vt_start(&t, true);
	unsigned n = VSOCK_MAX_CONNS + 8, requests = 0, eofs = 0;
	struct vsock_hdr h;
	for (unsigned i = 0; i < n; i++) {
		fds[i] = vt_connect_path(t.uds);
		char line[32];
		int k = snprintf(line, sizeof(line), "CONNECT %u\n", 100 + i);
		/* Past the limit the device may have closed it already: no SIGPIPE. */
		(void)!send(fds[i], line, (size_t)k, MSG_NOSIGNAL);
		if (i % 64 == 63 || i == n - 1) {
			/* Accept what arrived (so nothing times out meanwhile). */
			while (vt_recv(&t, &h, NULL, i == n - 1 ? 1000 : 50) == 0) {
				cr_assert_eq(h.op, VSOCK_OP_REQUEST, "op %u ports %u %u after %u", h.op, h.src_port, h.dst_port, requests);
				requests++;
				struct vsock_hdr a = vt_hdr(&t, VSOCK_OP_RESPONSE, h.dst_port, h.src_port, 0);
				vt_send(&t, &a, NULL, 0);
			}
		}
	}
	for (unsigned i = 0; i < n; i++) {
		char ok[32];
		ssize_t k = read(fds[i], ok, sizeof(ok));
		if (k <= 0)
			eofs++; /* EOF, or ECONNRESET: closed with its line unread */
		else
			cr_assert(k > 3 && memcmp(ok, "OK ", 3) == 0);
	}
	struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t.v, &m), 0);
	cr_assert_eq(m.inflight, VSOCK_MAX_CONNS, "live connections (%lu)", (unsigned long)m.inflight);
	cr_assert_eq(requests, VSOCK_MAX_CONNS, "one REQUEST per connection up to the limit (%u)",
	             requests);
	cr_assert_eq(eofs, n - VSOCK_MAX_CONNS, "the rest are closed (%u)", eofs);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	cr_assert(vdriver_alive(&t.v));
	vt_stop(&t);
}

Test(virtio_vsock, stale_socket_replaced_other_file_refused)
{
	char dir[] = "/tmp/rvvsock.XXXXXX", path[128], opts[200];
	const struct registry_entry *e = registry_find("vsock");
	struct registry_ctx ctx = {.ncpus = 1};
	void *st = NULL;
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/v.sock", dir);
	snprintf(opts, sizeof(opts), "cid=3,uds=%s", path);
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(e->create(&ctx, opts, &st), -EEXIST, "a regular file is not replaced");
	unlink(path);
	/* A stale socket (nobody listening) is replaced. */
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	memcpy(a.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	close(fd);
	cr_assert_eq(e->create(&ctx, opts, &st), 0);
	/* A live one is refused. */
	void *st2 = NULL;
	cr_assert_eq(e->create(&ctx, opts, &st2), -EADDRINUSE);
	e->destroy(st);
	cr_assert_eq(access(path, F_OK), -1, "removed on destroy");
	rmdir(dir);
}

Test(virtio_vsock, rst_storm_is_bounded)
{
	struct vt t;
	struct vsock_hdr h;
	vt_start(&t, true);
	/* 128 RX buffers are posted; 2000 packets for no connection each want a
	 * RST: the device keeps a bounded number and drops (counts) the rest. */
	for (unsigned i = 0; i < 2000; i++) {
		h = vt_hdr(&t, VSOCK_OP_RW, 40000 + i, 6000, 1);
		vt_send(&t, &h, "x", 1);
	}
	unsigned rsts = 0;
	struct vring *rx = &t.v.ring[VSOCK_QUEUE_RX];
	uint32_t id, len;
	(void)vdriver_wait_used(&t.v, VSOCK_QUEUE_RX, 1000);
	while (vring_get_used(rx, &id, &len) == 1)
		rsts++;
	cr_assert_gt(rsts, 0, "the guest gets RSTs while it has buffers");
	struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t.v, &m), 0);
	cr_assert_geq(m.errors, 2000, "every unknown-connection packet is counted (%lu)",
	              (unsigned long)m.errors);
	cr_assert(vdriver_alive(&t.v));
	/* Buffers again: the queued RSTs drain, at most the ring's worth. */
	for (unsigned i = 0; i < rsts; i++)
		vt_rx_post(&t, 1);
	unsigned more = 0;
	while (vt_recv(&t, &h, NULL, 300) == 0) {
		cr_assert_eq(h.op, VSOCK_OP_RST);
		more++;
	}
	cr_assert_leq(rsts + more, 128 + 512 + 128, "bounded: %u", rsts + more);
	vt_stop(&t);
}

Test(virtio_vsock, driver_reset_closes_connections)
{
	struct vt t;
	struct vsock_hdr req;
	vt_start(&t, true);
	int fd = host_connect(&t, 5006, "CONNECT 5006\n", &req);
	accept_host(&t, fd, &req);
	int lfd, gfd = open_guest_conn(&t, &lfd, 30);
	int pending = vt_connect_path(t.uds); /* still in its CONNECT line */
	cr_assert_eq(vdriver_set_status(&t.v, 0), 0);
	uint8_t st = 0xff;
	cr_assert_eq(vdriver_status(&t.v, &st), 0);
	cr_assert_eq(st, 0, "reset completes");
	cr_assert(vt_eof(&t, fd, VDRIVER_TIMEOUT_MS), "host client closed by the reset");
	cr_assert(vt_eof(&t, gfd, VDRIVER_TIMEOUT_MS), "guest connection closed by the reset");
	cr_assert(vt_eof(&t, pending, VDRIVER_TIMEOUT_MS), "half-open client closed too");
	close(fd);
	close(gfd);
	close(pending);
	close(lfd);
	/* The driver comes back: new connections work. */
	memset(t.v.ring, 0, sizeof(t.v.ring));
	cr_assert_eq(vdriver_setup(&t.v, VT_FEATURES, 256), 0);
	t.rx_slot = 0;
	vt_rx_post(&t, 64);
	fd = host_connect(&t, 5007, "CONNECT 5007\n", &req);
	accept_host(&t, fd, &req);
	close(fd);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	vt_stop(&t);
}

/* Random headers (mostly the right CIDs, so they get past the first checks)
 * mixed into live connections: the device survives, the connections keep
 * working or are reset, and nothing is buffered without bound. */
Test(virtio_vsock, random_packets_survived, .timeout = 120)
{
	struct vt t;
	struct vsock_hdr h, r;
	static uint8_t junk[8192];
	vt_start(&t, true);
	int lfd = vt_listen_port(&t, 5008);
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	for (unsigned i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(seed >>= 1, seed ^= seed << 7, seed);
	for (unsigned i = 0; i < 3000; i++) {
		seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
		uint32_t len = (uint32_t)(seed % 9) == 0 ? (uint32_t)(seed >> 8) : (uint32_t)(seed >> 20) % 600;
		h = vt_hdr(&t, (uint16_t)((seed >> 3) % 9), 100 + (uint32_t)(seed >> 40) % 8,
		           (seed >> 12) % 3 ? 5008 : (uint32_t)(seed >> 28), len);
		if (!((seed >> 5) % 16))
			h.src_cid = seed >> 16;
		if (!((seed >> 6) % 16))
			h.dst_cid = seed >> 24;
		if (!((seed >> 7) % 16))
			h.type = (uint16_t)(seed >> 33);
		if (h.op != VSOCK_OP_RW && (seed >> 11) % 4)
			h.len = len = 0; /* mostly well-formed control packets */
		h.flags = (uint32_t)(seed >> 30);
		h.buf_alloc = (seed >> 9) % 2 ? (uint32_t)(seed >> 36) : 65536;
		h.fwd_cnt = (uint32_t)(seed >> 14);
		/* The chain carries at most what the junk buffer has; len may claim more. */
		uint32_t carry = len < sizeof(junk) ? len : (uint32_t)(seed >> 50) % sizeof(junk);
		vt_send(&t, &h, junk, carry);
		while (vt_recv(&t, &r, NULL, 0) == 0)
			;
		struct pollfd pf = {.fd = lfd, .events = POLLIN};
		while (poll(&pf, 1, 0) == 1) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0) {
				(void)!send(fd, junk, 3000, MSG_NOSIGNAL | MSG_DONTWAIT);
				close(fd); /* host peers that say something and go */
			}
		}
		if (i % 500 == 0)
			cr_assert(vdriver_alive(&t.v), "device died after %u packets", i);
	}
	while (vt_recv(&t, &r, NULL, 200) == 0)
		;
	struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t.v, &m), 0);
	cr_log_info("random packets: %lu refused/counted, %lu RW to the guest, %lu connections",
	            (unsigned long)m.errors, (unsigned long)m.reads, (unsigned long)m.other);
	cr_assert_gt(m.errors, 0, "hostile packets are counted");
	cr_assert_leq(m.inflight, 8, "connections are bounded by the guest ports used (%lu)",
	              (unsigned long)m.inflight);
	/* Still serving: a clean connection works (its own credit counters). */
	t.fwd_cnt = 0;
	struct vsock_hdr req;
	int fd = host_connect(&t, 5100, "CONNECT 5100\n", &req);
	accept_host(&t, fd, &req);
	close(fd);
	vt_expect(&t, VSOCK_OP_RST, VDRIVER_TIMEOUT_MS);
	close(lfd);
	vt_stop(&t);
}
