/*
 * Fuzz target "vsock": the two parsers of untrusted vsock input that sit in
 * front of the device's connection state (hostile inputs 20).
 *   data[0] even: the host client's `CONNECT <port>\n` line assembler. The
 *     rest is the client's byte stream; data[1] seeds how it is cut into
 *     reads. Whatever the cut, the result (line end, port, error) must be
 *     the one a single read of the whole stream gives, a line is never
 *     longer than VSOCK_LINE_MAX, and an accepted line really is
 *     "CONNECT", spaces and the decimal port.
 *   data[0] odd: packet checks. A 44-byte little-endian header, then the
 *     readable room after it, the guest CID and three credit counters (le32
 *     each). A packet let through must be exactly what the device can
 *     handle; a RST is never answered with a RST; credit arithmetic never
 *     grants more than the peer's buffer.
 */
#define FUZZ_TARGET vsock
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "devices/virtio/vsock.h"

/* Feed stream[0..n) in reads cut by seed; the stream offset just past the
 * line (> 0), 0 when the stream ended first, or the error. */
static long feed(const uint8_t *stream, size_t n, unsigned seed, uint32_t *port)
{
	struct vsock_line l = {0};
	size_t off = 0;
	while (off < n) {
		size_t cut = seed ? 1 + (seed % 7) : n - off;
		seed = seed * 1103515245u + 12345u;
		if (cut > n - off)
			cut = n - off;
		int r = vsock_line_feed(&l, (const char *)stream + off, cut, port);
		FUZZ_CHECK(l.len <= VSOCK_LINE_MAX, "line buffer holds %u bytes", l.len);
		if (r < 0)
			return r;
		if (r > 0) {
			FUZZ_CHECK((size_t)r <= cut, "consumed %d of a %zu-byte read", r, cut);
			FUZZ_CHECK(stream[off + (size_t)r - 1] == '\n', "line does not end at a newline");
			return (long)(off + (size_t)r);
		}
		off += cut;
	}
	return 0;
}

static void line(const uint8_t *s, size_t n, unsigned seed)
{
	uint32_t port_all = 0, port_cut = 0;
	long all = feed(s, n, 0, &port_all);
	long cut = feed(s, n, seed | 1u, &port_cut);
	FUZZ_CHECK(all == cut, "one read gives %ld, cut reads give %ld", all, cut);
	if (all <= 0)
		return;
	FUZZ_CHECK(port_all == port_cut, "port %u vs %u", port_all, port_cut);
	FUZZ_CHECK(all <= VSOCK_LINE_MAX, "a %ld-byte line was accepted", all);
	/* Independently: CONNECT, one or more spaces, digits, [\r]\n. */
	size_t len = (size_t)all - 1;
	if (len && s[len - 1] == '\r')
		len--;
	FUZZ_CHECK(len > 8 && !strncasecmp((const char *)s, "connect ", 8), "keyword");
	size_t i = 7;
	while (i < len && s[i] == ' ')
		i++;
	uint64_t v = 0;
	FUZZ_CHECK(i < len, "no digits");
	for (; i < len; i++) {
		FUZZ_CHECK(s[i] >= '0' && s[i] <= '9', "non-digit 0x%02x in the port", s[i]);
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	FUZZ_CHECK(v == port_all, "port parsed as %u, line says %llu", port_all,
	           (unsigned long long)v);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void packet(const uint8_t *d, size_t n)
{
	struct vsock_hdr h;
	if (n < sizeof(h) + 20)
		return;
	memcpy(&h, d, sizeof(h));
	vsock_hdr_from_le(&h);
	d += sizeof(h);
	uint32_t room = le32(d), cid = le32(d + 4), buf_alloc = le32(d + 8), fwd = le32(d + 12),
	         cnt = le32(d + 16);

	enum vsock_verdict v = vsock_check(&h, room, cid);
	FUZZ_CHECK(v < VSOCK_PKT_NVERDICTS, "verdict %d", (int)v);
	if (v == VSOCK_PKT_OK) {
		FUZZ_CHECK(h.len <= VSOCK_MAX_PKT && h.len <= room, "len %u let through (room %u)",
		           h.len, room);
		FUZZ_CHECK(h.src_cid == cid && h.dst_cid == VSOCK_HOST_CID, "CIDs let through");
		FUZZ_CHECK(h.type == VSOCK_TYPE_STREAM, "type %u let through", h.type);
		FUZZ_CHECK(h.op >= VSOCK_OP_REQUEST && h.op <= VSOCK_OP_CREDIT_REQUEST, "op %u", h.op);
		FUZZ_CHECK(h.op == VSOCK_OP_RW || h.len == 0, "data on op %u", h.op);
	}
	if (vsock_verdict_rst(v, &h)) {
		FUZZ_CHECK(v != VSOCK_PKT_OK, "RST for a good packet");
		FUZZ_CHECK(h.op != VSOCK_OP_RST, "RST answered with RST");
		FUZZ_CHECK(v != VSOCK_PKT_SRC_CID, "RST to a CID that is not the guest's");
	}
	uint32_t credit = vsock_peer_credit(buf_alloc, fwd, cnt);
	FUZZ_CHECK(credit <= buf_alloc, "credit %u above buf_alloc %u", credit, buf_alloc);
	FUZZ_CHECK((uint64_t)credit + (uint32_t)(cnt - fwd) <= buf_alloc || credit == 0,
	           "credit %u + in flight %u above buf_alloc %u", credit, cnt - fwd, buf_alloc);
	bool fits = vsock_fits_credit(buf_alloc, cnt, fwd, h.len);
	FUZZ_CHECK(fits == ((uint64_t)(uint32_t)(cnt - fwd) + h.len <= buf_alloc),
	           "fits_credit %d for held %u + len %u vs %u", fits, cnt - fwd, h.len, buf_alloc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	if (data[0] & 1)
		packet(data + 1, size - 1);
	else
		line(data + 2, size - 2, data[1]);
	return 0;
}
