/*
 * virtio-vsock, the pure half: `--vsock` parsing, the CONNECT line
 * assembler, packet checks and credit arithmetic. Every guest- or
 * client-controlled value reaches these functions as a copy; they only
 * decide.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "devices/virtio/vsock.h"
#include "devices/virtio/opts.h"

void vsock_hdr_from_le(struct vsock_hdr *h)
{
	h->src_cid = le64toh(h->src_cid);
	h->dst_cid = le64toh(h->dst_cid);
	h->src_port = le32toh(h->src_port);
	h->dst_port = le32toh(h->dst_port);
	h->len = le32toh(h->len);
	h->type = le16toh(h->type);
	h->op = le16toh(h->op);
	h->flags = le32toh(h->flags);
	h->buf_alloc = le32toh(h->buf_alloc);
	h->fwd_cnt = le32toh(h->fwd_cnt);
}

void vsock_hdr_to_le(struct vsock_hdr *h)
{
	h->src_cid = htole64(h->src_cid);
	h->dst_cid = htole64(h->dst_cid);
	h->src_port = htole32(h->src_port);
	h->dst_port = htole32(h->dst_port);
	h->len = htole32(h->len);
	h->type = htole16(h->type);
	h->op = htole16(h->op);
	h->flags = htole32(h->flags);
	h->buf_alloc = htole32(h->buf_alloc);
	h->fwd_cnt = htole32(h->fwd_cnt);
}

/* Decimal without sign or spaces, at most max. */
static int parse_u32(const char *s, size_t n, uint32_t max, uint32_t *out)
{
	uint64_t v = 0;
	if (!n || n > 10)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -ERANGE;
	*out = (uint32_t)v;
	return 0;
}

static int bad(char *err, size_t errlen, const char *what, const char *v, size_t vlen)
{
	snprintf(err, errlen, "--vsock: %s '%.*s'", what, (int)(vlen > 64 ? 64 : vlen), v);
	return -EINVAL;
}

int vsock_parse_opts(const char *opts, struct vsock_opts *o, char *err, size_t errlen)
{
	bool have_cid = false, have_uds = false;
	memset(o, 0, sizeof(*o));
	if (!opts)
		opts = "";
	struct opt_item it;
	for (const char *cur = opts; opt_next(&cur, &it);) {
		const char *p = it.item, *v = it.val ? it.val : "", *eqs = it.val;
		size_t n = it.n, klen = it.klen, vlen = it.vlen;
		if (!n)
			return bad(err, errlen, "empty item in", opts, strlen(opts));
		if (!eqs)
			return bad(err, errlen, "expected KEY=VALUE, got", p, n);
		if (opt_eq(p, klen, "cid")) {
			if (have_cid)
				return bad(err, errlen, "cid given twice:", p, n);
			if (parse_u32(v, vlen, VSOCK_MAX_CID, &o->cid) < 0 ||
			    o->cid < VSOCK_MIN_CID)
				return bad(err, errlen, "cid must be 3..4294967294, not", v, vlen);
			have_cid = true;
		} else if (opt_eq(p, klen, "uds")) {
			/* PATH_<port> must fit too: "_" and up to 10 digits. */
			if (have_uds)
				return bad(err, errlen, "uds given twice:", p, n);
			if (!vlen || vlen + 11 >= sizeof(o->uds))
				return bad(err, errlen, "uds must be a path of 1..96 bytes, not", v,
				           vlen);
			memcpy(o->uds, v, vlen);
			o->uds[vlen] = 0;
			have_uds = true;
		} else {
			return bad(err, errlen, "unknown option", p, klen);
		}
	}
	if (!have_cid || !have_uds) {
		snprintf(err, errlen, "--vsock: needs cid=N,uds=PATH");
		return -EINVAL;
	}
	return 0;
}

/* "CONNECT" then spaces then decimal digits: the whole line without its newline. */
static int parse_line(const char *s, size_t n, uint32_t *port)
{
	if (n < 8 || strncasecmp(s, "connect", 7) != 0 || s[7] != ' ')
		return -EINVAL;
	size_t i = 7;
	while (i < n && s[i] == ' ')
		i++;
	return parse_u32(s + i, n - i, UINT32_MAX, port) < 0 ? -EINVAL : 0;
}

int vsock_line_feed(struct vsock_line *l, const char *buf, size_t n, uint32_t *port)
{
	for (size_t i = 0; i < n; i++) {
		if (l->len == VSOCK_LINE_MAX)
			return -EMSGSIZE;
		l->buf[l->len++] = buf[i];
		if (buf[i] != '\n')
			continue;
		size_t len = l->len - 1u;
		if (len && l->buf[len - 1] == '\r')
			len--; /* tolerate a telnet-style CRLF */
		int r = parse_line(l->buf, len, port);
		return r < 0 ? r : (int)(i + 1);
	}
	return l->len == VSOCK_LINE_MAX ? -EMSGSIZE : 0;
}

enum vsock_verdict vsock_check(const struct vsock_hdr *h, uint32_t payload_room, uint32_t guest_cid)
{
	if (h->len > VSOCK_MAX_PKT || h->len > payload_room)
		return VSOCK_PKT_LEN;
	if (h->src_cid != guest_cid)
		return VSOCK_PKT_SRC_CID;
	if (h->dst_cid != VSOCK_HOST_CID)
		return VSOCK_PKT_DST_CID;
	if (h->type != VSOCK_TYPE_STREAM)
		return VSOCK_PKT_TYPE;
	if (h->op == VSOCK_OP_INVALID || h->op > VSOCK_OP_CREDIT_REQUEST)
		return VSOCK_PKT_OP;
	if (h->op != VSOCK_OP_RW && h->len)
		return VSOCK_PKT_OP;
	return VSOCK_PKT_OK;
}

bool vsock_verdict_rst(enum vsock_verdict v, const struct vsock_hdr *h)
{
	/* A wrong source CID is not the guest speaking for itself: drop it.
	 * Never answer a RST with a RST (two devices could ping-pong). */
	return v != VSOCK_PKT_OK && v != VSOCK_PKT_SHORT && v != VSOCK_PKT_SRC_CID &&
	       h->op != VSOCK_OP_RST;
}

uint32_t vsock_peer_credit(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t sent)
{
	uint32_t inflight = sent - fwd_cnt;
	return inflight > buf_alloc ? 0 : buf_alloc - inflight;
}

bool vsock_fits_credit(uint32_t buf_alloc, uint32_t rx_cnt, uint32_t fwd_cnt, uint32_t len)
{
	uint64_t held = (uint32_t)(rx_cnt - fwd_cnt);
	return held + len <= buf_alloc;
}
