/*
 * virtio-net, the pure half: `--net` option parsing, TX header checks and
 * control-command parsing. No I/O: every guest-controlled value reaches
 * these functions as a copy, and they only decide.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "devices/virtio/net.h"
#include "devices/virtio/opts.h"

static int bad(char *err, size_t errlen, const char *what, const char *v, size_t vlen)
{
	snprintf(err, errlen, "--net: %s '%.*s'", what, (int)(vlen > 64 ? 64 : vlen), v);
	return -EINVAL;
}

/* Decimal without sign or spaces, at most max. */
static int parse_uint(const char *s, size_t n, unsigned max, unsigned *out)
{
	unsigned long v = 0;
	if (!n || n > 10)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -ERANGE;
	*out = (unsigned)v;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int parse_mac(const char *s, size_t n, uint8_t mac[6])
{
	if (n != 17)
		return -EINVAL;
	for (unsigned i = 0; i < 6; i++) {
		int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);
		if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
			return -EINVAL;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int net_parse_opts(const char *opts, struct net_opts *o, char *err, size_t errlen)
{
	bool have_tap = false, have_fd = false;
	memset(o, 0, sizeof(*o));
	o->tap_fd = -1;
	o->queues = 1;
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
		if (opt_eq(p, klen, "tap")) {
			if (have_tap || have_fd)
				return bad(err, errlen, "only one of tap= and tap-fd=, got", p, n);
			if (!vlen || vlen >= sizeof(o->tap) || memchr(v, '/', vlen))
				return bad(err, errlen,
				           "tap must be an interface name of 1..15 bytes, not", v,
				           vlen);
			memcpy(o->tap, v, vlen);
			o->tap[vlen] = 0;
			have_tap = true;
		} else if (opt_eq(p, klen, "tap-fd")) {
			unsigned fd;
			if (have_tap || have_fd)
				return bad(err, errlen, "only one of tap= and tap-fd=, got", p, n);
			if (parse_uint(v, vlen, 1u << 20, &fd) < 0 || fd < 3)
				return bad(err, errlen,
				           "tap-fd must be a descriptor number >= 3, not", v, vlen);
			o->tap_fd = (int)fd;
			have_fd = true;
		} else if (opt_eq(p, klen, "mac")) {
			if (parse_mac(v, vlen, o->mac) < 0)
				return bad(err, errlen, "mac must be XX:XX:XX:XX:XX:XX, not", v,
				           vlen);
			if (o->mac[0] & 1)
				return bad(err, errlen, "mac must be a unicast address, not", v,
				           vlen);
			o->mac_set = true;
		} else if (opt_eq(p, klen, "queues")) {
			if (parse_uint(v, vlen, NET_MAX_PAIRS, &o->queues) < 0 || !o->queues)
				return bad(err, errlen, "queues must be 1..4 (queue pairs), not", v,
				           vlen);
		} else if (opt_eq(p, klen, "mtu")) {
			if (parse_uint(v, vlen, NET_MAX_MTU, &o->mtu) < 0 || o->mtu < NET_MIN_MTU)
				return bad(err, errlen, "mtu must be 68..65535, not", v, vlen);
		} else {
			return bad(err, errlen, "unknown option", p, klen);
		}
	}
	if (!have_tap && !have_fd) {
		snprintf(err, errlen, "--net: needs tap=NAME or tap-fd=FD");
		return -EINVAL;
	}
	if (have_fd && o->queues > 1) {
		snprintf(err, errlen,
		         "--net: tap-fd= gives one queue pair; queues=N needs tap=NAME");
		return -EINVAL;
	}
	return 0;
}

void net_hdr_from_le(struct virtio_net_hdr *h)
{
	h->hdr_len = le16toh(h->hdr_len);
	h->gso_size = le16toh(h->gso_size);
	h->csum_start = le16toh(h->csum_start);
	h->csum_offset = le16toh(h->csum_offset);
	h->num_buffers = le16toh(h->num_buffers);
}

void net_hdr_to_le(struct virtio_net_hdr *h)
{
	h->hdr_len = htole16(h->hdr_len);
	h->gso_size = htole16(h->gso_size);
	h->csum_start = htole16(h->csum_start);
	h->csum_offset = htole16(h->csum_offset);
	h->num_buffers = htole16(h->num_buffers);
}

enum net_tx_verdict net_tx_check(const struct virtio_net_hdr *h, uint32_t frame_len,
                                 const struct net_tx_limits *l)
{
	if (frame_len < NET_ETH_HLEN)
		return NET_TX_SHORT;
	if (frame_len > l->max_frame)
		return NET_TX_LONG;
	if (h->flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM)
		return NET_TX_FLAGS; /* DATA_VALID and the rest are RX-only or unknown */
	bool needs_csum = h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
	if (needs_csum && !l->csum)
		return NET_TX_FLAGS;
	if (needs_csum && (uint32_t)h->csum_start + h->csum_offset + 2u > frame_len)
		return NET_TX_CSUM_RANGE;
	uint8_t gso = h->gso_type & ~VIRTIO_NET_HDR_GSO_ECN;
	bool ecn = h->gso_type & VIRTIO_NET_HDR_GSO_ECN;
	switch (gso) {
	case VIRTIO_NET_HDR_GSO_NONE:
		if (ecn)
			return NET_TX_GSO_TYPE;
		return NET_TX_OK;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		if (!l->tso4)
			return NET_TX_GSO_TYPE;
		break;
	case VIRTIO_NET_HDR_GSO_TCPV6:
		if (!l->tso6)
			return NET_TX_GSO_TYPE;
		break;
	case VIRTIO_NET_HDR_GSO_UDP:
		if (!l->ufo)
			return NET_TX_GSO_TYPE;
		break;
	default:
		return NET_TX_GSO_TYPE;
	}
	if (ecn && !l->ecn)
		return NET_TX_GSO_TYPE;
	/* A segmented frame needs a segment size, a checksum to fill per
	 * segment and headers that end inside the frame. */
	if (!h->gso_size || !needs_csum || h->hdr_len > frame_len)
		return NET_TX_GSO_FIELDS;
	return NET_TX_OK;
}

void net_ctrl_parse(const uint8_t *buf, size_t len, const struct net_ctrl_caps *caps,
                    struct net_ctrl_cmd *c)
{
	memset(c, 0, sizeof(*c));
	c->ack = VIRTIO_NET_ERR;
	if (len < 2)
		return;
	c->cls = buf[0];
	c->cmd = buf[1];
	const uint8_t *d = buf + 2;
	size_t n = len - 2;
	switch (c->cls) {
	case VIRTIO_NET_CTRL_RX:
		if (!caps->rx || n != 1)
			return;
		if (c->cmd != VIRTIO_NET_CTRL_RX_PROMISC && c->cmd != VIRTIO_NET_CTRL_RX_ALLMULTI)
			return;
		if (d[0] > 1)
			return;
		c->on = d[0];
		c->ack = VIRTIO_NET_OK;
		return;
	case VIRTIO_NET_CTRL_MAC: {
		if (!caps->rx || c->cmd != VIRTIO_NET_CTRL_MAC_TABLE_SET)
			return;
		/* Two tables (unicast, multicast): le32 entries, then 6 bytes each. */
		size_t off = 0;
		for (int t = 0; t < 2; t++) {
			uint32_t entries;
			if (n - off < 4)
				return;
			memcpy(&entries, d + off, 4);
			entries = le32toh(entries);
			off += 4;
			if (entries > NET_MAC_TABLE_MAX || n - off < 6ull * entries)
				return;
			off += 6ull * entries;
		}
		if (off != n)
			return;
		c->ack = VIRTIO_NET_OK;
		return;
	}
	case VIRTIO_NET_CTRL_MQ: {
		uint16_t pairs;
		if (!caps->mq || c->cmd != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET || n != 2)
			return;
		memcpy(&pairs, d, 2);
		pairs = le16toh(pairs);
		if (pairs < 1 || pairs > caps->max_pairs)
			return;
		c->pairs = pairs;
		c->ack = VIRTIO_NET_OK;
		return;
	}
	}
}
