/*
 * virtio-vsock: the pure half from tables (options, CONNECT lines, packet
 * checks, credit), then the real device process (jailed or forked) driven
 * by the host-side harness playing the guest, against Unix sockets in a
 * temporary directory: host clients connecting with CONNECT lines, guest
 * connects to PATH_<port>, hostile packets, credit and connection limits.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio/vsock.h"
#include "tests/common/facility.h"
#include "tests/harness/vdriver.h"

/* ---- the pure half ---- */

Test(virtio_vsock, options)
{
	struct vsock_opts o;
	char err[256];
	cr_assert_eq(vsock_parse_opts("cid=3,uds=/tmp/v.sock", &o, err, sizeof(err)), 0);
	cr_assert_eq(o.cid, 3);
	cr_assert_str_eq(o.uds, "/tmp/v.sock");
	cr_assert_eq(vsock_parse_opts("uds=/x,cid=4294967294", &o, err, sizeof(err)), 0);
	static const char *bad[] = {
	    "",  "cid=3", "uds=/x", "cid=2,uds=/x", "cid=0,uds=/x", "cid=4294967295,uds=/x",
	    "cid=-3,uds=/x", "cid=3,uds=", "cid=3,uds=/x,cid=4", "cid=3,uds=/x,foo=1", "cid=3,,uds=/x",
	    "cid=3,uds=/x,uds=/y", "cid=3x,uds=/x", "cid=3,uds",
	    "cid=3,uds=/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		cr_assert_eq(vsock_parse_opts(bad[i], &o, err, sizeof(err)), -EINVAL, "%s", bad[i]);
		cr_assert(strncmp(err, "--vsock: ", 9) == 0, "one clear line: %s", err);
	}
}

static int feed_all(const char *s, size_t n, size_t piece, uint32_t *port)
{
	struct vsock_line l = {0};
	for (size_t off = 0; off < n; off += piece) {
		size_t k = n - off < piece ? n - off : piece;
		int r = vsock_line_feed(&l, s + off, k, port);
		if (r != 0)
			return r < 0 ? r : (int)off + r;
	}
	return 0;
}

Test(virtio_vsock, connect_line_pieces_and_case)
{
	static const struct {
		const char *line;
		int want; /* bytes of the line, or -errno, or 0: incomplete */
		uint32_t port;
	} cases[] = {
	    {"CONNECT 1234\n", 13, 1234},
	    {"connect 52\n", 11, 52},
	    {"CoNnEcT   7\r\n", 13, 7},
	    {"CONNECT 4294967295\n", 19, 4294967295u},
	    {"CONNECT 1234\nhello", 13, 1234},
	    {"CONNECT 12", 0, 0},
	    {"CONNECT\n", -EINVAL, 0},
	    {"CONNECT \n", -EINVAL, 0},
	    {"CONNECT 4294967296\n", -EINVAL, 0},
	    {"CONNECT -1\n", -EINVAL, 0},
	    {"CONNECT 12a\n", -EINVAL, 0},
	    {"CONNECT1234\n", -EINVAL, 0},
	    {"GET / HTTP/1.0\n", -EINVAL, 0},
	    {"\n", -EINVAL, 0},
	    {"CONNECT 00000000000000000000000001\n", -EMSGSIZE, 0},
	    {"CONNECT 0000000000000000000000001", -EMSGSIZE, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = strlen(cases[i].line);
		for (size_t piece = 1; piece <= n; piece++) {
			uint32_t port = 0;
			int r = feed_all(cases[i].line, n, piece, &port);
			cr_assert_eq(r, cases[i].want, "'%s' in pieces of %zu: %d", cases[i].line, piece, r);
			if (r > 0)
				cr_assert_eq(port, cases[i].port);
		}
	}
}

static struct vsock_hdr good_hdr(uint16_t op, uint32_t len)
{
	return (struct vsock_hdr){.src_cid = 3, .dst_cid = 2, .src_port = 9, .dst_port = 10,
	                          .len = len, .type = VSOCK_TYPE_STREAM, .op = op};
}

Test(virtio_vsock, packet_checks)
{
	struct vsock_hdr h;
	static const struct {
		uint16_t op;
		uint32_t len, room;
		uint64_t src, dst;
		uint16_t type;
		enum vsock_verdict want;
		bool rst;
	} cases[] = {
	    {VSOCK_OP_RW, 100, 100, 3, 2, 1, VSOCK_PKT_OK, false},
	    {VSOCK_OP_REQUEST, 0, 0, 3, 2, 1, VSOCK_PKT_OK, false},
	    {VSOCK_OP_RW, 101, 100, 3, 2, 1, VSOCK_PKT_LEN, true},
	    {VSOCK_OP_RW, VSOCK_MAX_PKT + 1, UINT32_MAX, 3, 2, 1, VSOCK_PKT_LEN, true},
	    {VSOCK_OP_RW, UINT32_MAX, UINT32_MAX, 3, 2, 1, VSOCK_PKT_LEN, true},
	    {VSOCK_OP_RW, 1, 1, 4, 2, 1, VSOCK_PKT_SRC_CID, false},
	    {VSOCK_OP_RW, 1, 1, 3 | (1ull << 32), 2, 1, VSOCK_PKT_SRC_CID, false},
	    {VSOCK_OP_REQUEST, 0, 0, 3, 5, 1, VSOCK_PKT_DST_CID, true},
	    {VSOCK_OP_REQUEST, 0, 0, 3, 3, 1, VSOCK_PKT_DST_CID, true},
	    {VSOCK_OP_REQUEST, 0, 0, 3, 2, 2, VSOCK_PKT_TYPE, true},
	    {VSOCK_OP_RST, 0, 0, 3, 2, 7, VSOCK_PKT_TYPE, false},
	    {0, 0, 0, 3, 2, 1, VSOCK_PKT_OP, true},
	    {8, 0, 0, 3, 2, 1, VSOCK_PKT_OP, true},
	    {0xffff, 0, 0, 3, 2, 1, VSOCK_PKT_OP, true},
	    {VSOCK_OP_CREDIT_UPDATE, 4, 4, 3, 2, 1, VSOCK_PKT_OP, true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		h = good_hdr(cases[i].op, cases[i].len);
		h.src_cid = cases[i].src;
		h.dst_cid = cases[i].dst;
		h.type = cases[i].type;
		enum vsock_verdict v = vsock_check(&h, cases[i].room, 3);
		cr_assert_eq(v, cases[i].want, "case %zu: %d", i, v);
		cr_assert_eq(vsock_verdict_rst(v, &h), cases[i].rst, "case %zu", i);
	}
	/* Byte order: the header is little-endian in guest RAM. */
	h = good_hdr(VSOCK_OP_RW, 0x01020304);
	struct vsock_hdr le = h;
	vsock_hdr_to_le(&le);
	cr_assert_eq(((uint8_t *)&le)[24], 0x04, "len at offset 24, little-endian");
	vsock_hdr_from_le(&le);
	cr_assert_eq(memcmp(&le, &h, sizeof(h)), 0);
}

Test(virtio_vsock, credit_arithmetic)
{
	cr_assert_eq(vsock_peer_credit(1000, 0, 0), 1000);
	cr_assert_eq(vsock_peer_credit(1000, 200, 700), 500);
	cr_assert_eq(vsock_peer_credit(1000, 0, 1000), 0);
	cr_assert_eq(vsock_peer_credit(1000, 800, 700), 0, "fwd_cnt ahead of what was sent: a lie");
	cr_assert_eq(vsock_peer_credit(1000, 0, 5000), 0, "more in flight than its buffer");
	cr_assert_eq(vsock_peer_credit(100, UINT32_MAX - 9, 40), 50, "counters wrap");
	cr_assert(vsock_fits_credit(65536, 0, 0, 65536));
	cr_assert_not(vsock_fits_credit(65536, 0, 0, 65537));
	cr_assert_not(vsock_fits_credit(65536, 70000, 10000, 8000));
	cr_assert(vsock_fits_credit(65536, 5, UINT32_MAX - 10, 65536 - 16), "counters wrap");
	cr_assert_not(vsock_fits_credit(65536, 5, UINT32_MAX - 10, 65536 - 15));
}
