/*
 * `hostile.net`: malformed TX from the guest (hostile-inputs.md case 19):
 * frames shorter than a virtio-net header, runts, frames over the MTU or
 * over 64 KiB, bogus offload fields (unknown gso_type, GSO without
 * HOST_TSO4, gso_size 0, csum_start/csum_offset outside the frame) and odd
 * but legal layouts. Each case sends its chain, then a good frame (UDP
 * "hostile-good <case>" to the peer's hostile.port, default 9), and waits
 * (hostile.wait_ms, 200) for both to complete. A device that flags
 * DEVICE_NEEDS_RESET or stops completing is reset and brought up again, and
 * the good frame sent once more. The guest checks the device stays usable;
 * the host checks what reached the TAP: every frame a case sends carries a
 * UDP payload "hostile-<class> <case>" where it has room — class `bad` must
 * never arrive, `valid` must, `maybe` may. CSUM is negotiated when offered
 * (so NEEDS_CSUM means something), HOST_TSO4 never (so any GSO is bogus).
 */
#include "net.h"

struct hn {
	struct net_dev *n;
	uint16_t port;
	const char *name;
	const char *cls;
	bool sent;
};

typedef void hn_fn(struct hn *c);

struct hn_case {
	const char *name;
	const char *cls; /* bad, valid, maybe */
	hn_fn *run;
};

/* A pool buffer holding header + a labelled UDP frame of payload bytes; NULL when none. */
static uint8_t *frame(struct hn *c, unsigned *idx, uint32_t payload, uint32_t *flen)
{
	uint8_t *b = net_pool_get(c->n, idx);
	if (!b)
		return NULL;
	if (payload < 48)
		payload = 48;
	*flen = net_build_udp(c->n, b + NET_HDR_LEN, 9000, c->port, payload);
	char *l = (char *)b + NET_HDR_LEN + 42;
	size_t a = strlen("hostile-"), k = strlen(c->cls), m = strlen(c->name);
	memcpy(l, "hostile-", a);
	memcpy(l + a, c->cls, k);
	l[a + k] = ' ';
	memcpy(l + a + k + 1, c->name, m);
	memset(l + a + k + 1 + m, '.', 48 - (a + k + 1 + m));
	return b;
}

static void send(struct hn *c, const struct virtq_buf *b, unsigned nb, unsigned idx)
{
	if (net_tx_chain(c->n, 0, b, nb, idx + 1)) {
		c->sent = true;
		net_flush(c->n);
	} else {
		net_pool_put(c->n, idx);
	}
}

static struct net_hdr *hdr(uint8_t *b)
{
	return (struct net_hdr *)b;
}

/* The frame in one descriptor after the header set up by the caller. */
static void plain(struct hn *c, uint8_t *b, unsigned idx, uint32_t flen)
{
	struct virtq_buf v[2] = {{(uint64_t)b, NET_HDR_LEN, false},
	                         {(uint64_t)b + NET_HDR_LEN, flen, false}};
	send(c, v, 2, idx);
}

static void hdr_short(struct hn *c)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 64, &fl);
	if (!b)
		return;
	struct virtq_buf v = {(uint64_t)b, 6, false};
	send(c, &v, 1, idx);
}

static void hdr_only(struct hn *c)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 64, &fl);
	if (!b)
		return;
	struct virtq_buf v = {(uint64_t)b, NET_HDR_LEN, false};
	send(c, &v, 1, idx);
}

static void hdr_split(struct hn *c)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 64, &fl);
	if (!b)
		return;
	struct virtq_buf v[4] = {{(uint64_t)b, 4, false},
	                         {(uint64_t)b + 4, 4, false},
	                         {(uint64_t)b + 8, 4, false},
	                         {(uint64_t)b + 12, fl, false}};
	send(c, v, 4, idx);
}

static void frame_runt(struct hn *c)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 64, &fl);
	if (b)
		plain(c, b, idx, 8);
}

static void frame_over_mtu(struct hn *c)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, c->n->mtu + 14u + 100u - 42u, &fl);
	if (b)
		plain(c, b, idx, fl);
}

static void frame_64k(struct hn *c)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 65535 - 28, &fl); /* IP total length 65535 */
	if (!b)
		return;
	fl += 1000; /* and past it */
	struct virtq_buf v[16];
	unsigned nb = 0;
	uint32_t per = NET_TX_BUF - NET_HDR_LEN;
	v[nb++] = (struct virtq_buf){(uint64_t)b, NET_HDR_LEN, false};
	for (uint32_t off = 0; off < fl && nb < 16; off += per) {
		uint32_t l = fl - off < per ? fl - off : per;
		v[nb++] = (struct virtq_buf){(uint64_t)b + NET_HDR_LEN, l, false};
	}
	send(c, v, nb, idx);
}

static void gso(struct hn *c, uint8_t type, uint16_t size, uint16_t hlen, uint32_t payload)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, payload, &fl);
	if (!b)
		return;
	struct net_hdr *h = hdr(b);
	h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h->gso_type = type;
	h->gso_size = size;
	h->hdr_len = hlen;
	h->csum_start = 34;
	h->csum_offset = 6;
	plain(c, b, idx, fl);
}

static void gso_unknown(struct hn *c)
{
	gso(c, 0x55, 1000, 42, 3000);
}
static void gso_tcpv4_unnegotiated(struct hn *c)
{
	gso(c, VIRTIO_NET_HDR_GSO_TCPV4, 536, 54, 3000);
}
static void gso_size_zero(struct hn *c)
{
	gso(c, VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, 0, 54, 3000);
}
static void gso_udp_unnegotiated(struct hn *c)
{
	gso(c, VIRTIO_NET_HDR_GSO_UDP, 1000, 42, 3000);
}

static void csum(struct hn *c, int start_from_end, uint16_t start, uint16_t offset)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 100, &fl);
	if (!b)
		return;
	struct net_hdr *h = hdr(b);
	h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h->csum_start = start_from_end ? (uint16_t)(fl + (uint32_t)start_from_end) : start;
	h->csum_offset = offset;
	plain(c, b, idx, fl);
}

static void csum_start_past_end(struct hn *c)
{
	csum(c, 10, 0, 6);
}
static void csum_offset_past_end(struct hn *c)
{
	csum(c, 0, 34, 0xfff0);
}
static void csum_field_straddles_end(struct hn *c)
{
	csum(c, -1, 0, 0);
}

static void hdr_field(struct hn *c, unsigned which)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 64, &fl);
	if (!b)
		return;
	struct net_hdr *h = hdr(b);
	if (which == 0)
		h->flags = 0x80;
	else if (which == 1)
		h->num_buffers = 0xffff;
	else
		h->hdr_len = 0xffff;
	plain(c, b, idx, fl);
}
static void flags_unknown(struct hn *c)
{
	hdr_field(c, 0);
}
static void num_buffers_set(struct hn *c)
{
	hdr_field(c, 1);
}
static void hdr_len_huge(struct hn *c)
{
	hdr_field(c, 2);
}

static void zero_len_desc(struct hn *c)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 64, &fl);
	if (!b)
		return;
	struct virtq_buf v[3] = {{(uint64_t)b, NET_HDR_LEN, false},
	                         {(uint64_t)b + NET_HDR_LEN, 0, false},
	                         {(uint64_t)b + NET_HDR_LEN, fl, false}};
	send(c, v, 3, idx);
}

static void many_descs(struct hn *c)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 64, &fl);
	if (!b)
		return;
	struct virtq_buf v[64];
	unsigned nb = 0;
	v[nb++] = (struct virtq_buf){(uint64_t)b, NET_HDR_LEN, false};
	uint32_t off = 0;
	while (off < fl && nb < 64) {
		uint32_t l = nb < 63 ? 1 : fl - off;
		v[nb++] = (struct virtq_buf){(uint64_t)b + NET_HDR_LEN + off, l, false};
		off += l;
	}
	send(c, v, nb, idx);
}

static void writable_desc(struct hn *c)
{
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(c, &idx, 64, &fl);
	if (!b)
		return;
	struct virtq_buf v[2] = {{(uint64_t)b, NET_HDR_LEN + fl, false},
	                         {(uint64_t)b + 4096, 64, true}};
	send(c, v, 2, idx);
}

static const struct hn_case cases[] = {
    {"hdr-short", "bad", hdr_short},
    {"hdr-only", "bad", hdr_only},
    {"hdr-split", "valid", hdr_split},
    {"frame-runt", "bad", frame_runt},
    {"frame-over-mtu", "bad", frame_over_mtu},
    {"frame-64k", "bad", frame_64k},
    {"gso-unknown", "bad", gso_unknown},
    {"gso-tcpv4-unnegotiated", "bad", gso_tcpv4_unnegotiated},
    {"gso-udp-unnegotiated", "bad", gso_udp_unnegotiated},
    {"gso-size-zero", "bad", gso_size_zero},
    {"csum-start-past-end", "bad", csum_start_past_end},
    {"csum-offset-past-end", "bad", csum_offset_past_end},
    {"csum-field-straddles-end", "bad", csum_field_straddles_end},
    {"flags-unknown", "maybe", flags_unknown},
    {"num-buffers-set", "maybe", num_buffers_set},
    {"hdr-len-huge", "maybe", hdr_len_huge},
    {"zero-len-desc", "maybe", zero_len_desc},
    {"many-descs", "valid", many_descs},
    {"writable-desc", "maybe", writable_desc},
};

static bool listed(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; *p;) {
		size_t len = 0;
		while (p[len] && p[len] != ',')
			len++;
		if (len == n && !strncmp(p, name, n))
			return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

/* The good frame after a case; NULL when it completed within wait_us. */
static const char *good(struct hn *c, uint64_t wait_us)
{
	struct hn g = *c;
	g.cls = "good";
	unsigned idx;
	uint32_t fl;
	uint8_t *b = frame(&g, &idx, 48, &fl);
	if (!b)
		return "no-tx-buffer";
	if (!net_tx_pool(c->n, 0, idx, fl)) {
		net_pool_put(c->n, idx);
		return "tx-full";
	}
	net_flush(c->n);
	if (!net_drain_tx(c->n, wait_us))
		return "good-stuck";
	if (virtio_get_status(c->n->vd) & VIRTIO_S_NEEDS_RESET)
		return "needs-reset";
	return NULL;
}

const char *test_hostile_net(void)
{
	const char *why;
	struct net_open_opts o = {.csum = probe_opt_u64("hostile.csum", 1)};
	struct net_dev *n = net_open(&o, &why);
	if (!n) {
		probe_printf("PROBE hostile.net error=%s\n", why);
		return why;
	}
	why = net_config(n);
	if (why)
		return why;
	net_print_dev("hostile.net.dev", n);
	if (!net_resolve_peer(n, 3000000)) {
		net_close(n);
		return "arp-timeout";
	}
	char skip[512] = "", only[512] = "";
	probe_opt("hostile.skip", skip, sizeof(skip));
	bool have_only = probe_opt("hostile.only", only, sizeof(only));
	uint64_t wait_us = probe_opt_u64("hostile.wait_ms", 200) * 1000;
	uint64_t port = probe_opt_u64("hostile.port", 9);
	struct hn c = {.n = n, .port = (uint16_t)port};

	unsigned passed = 0, failed = 0, skipped = 0;
	const char *first_fail = NULL;
	uint64_t t_all = rdtsc();
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct hn_case *hc = &cases[i];
		if (have_only && !listed(only, hc->name))
			continue;
		if (listed(skip, hc->name)) {
			probe_printf("PROBE hostile.net case=%s class=%s result=skipped\n", hc->name,
			             hc->cls);
			skipped++;
			continue;
		}
		probe_printf("PROBE hostile.net.start case=%s\n", hc->name);
		uint64_t t0 = rdtsc();
		uint32_t cfg0 = virtio_irqs(virtio_cfg_vector(n->vd));
		c.name = hc->name;
		c.cls = hc->cls;
		c.sent = false;
		hc->run(&c);
		bool drained = net_drain_tx(n, wait_us);
		uint8_t status = virtio_get_status(n->vd);
		const char *result = !c.sent                          ? "not-sent"
		                     : (status & VIRTIO_S_NEEDS_RESET) ? "needs-reset"
		                     : drained                         ? "completed"
		                                                       : "no-completion";
		const char *after = NULL, *after_reset = NULL;
		bool restart = !drained || (status & VIRTIO_S_NEEDS_RESET);
		if (!restart)
			after = good(&c, wait_us + 300000);
		if (restart || after) {
			const char *r = net_restart(n);
			after_reset = r ? r : good(&c, wait_us + 300000);
		}
		uint32_t cfg_irqs = virtio_irqs(virtio_cfg_vector(n->vd)) - cfg0;
		bool pass = c.sent && ((!restart && !after) || ((restart || after) && !after_reset));
		probe_printf("PROBE hostile.net case=%s class=%s result=%s status=0x%x cfg_irqs=%u "
		             "after=",
		             hc->name, hc->cls, result, status, cfg_irqs);
		if (!restart && !after)
			probe_printf("ok");
		else if (!restart)
			probe_printf("%s,then-reset-%s", after, after_reset ? after_reset : "ok");
		else
			probe_printf("%s", after_reset ? after_reset : "ok-after-reset");
		probe_printf(" pass=%u us=%lu\n", pass, probe_us_since(t0));
		if (pass) {
			passed++;
		} else {
			failed++;
			if (!first_fail)
				first_fail = hc->name;
		}
	}
	/* RX must still work: resolve the peer again. */
	n->peer_known = false;
	bool arp_ok = net_resolve_peer(n, 1500000);
	net_timer_stop(n);
	probe_printf("PROBE hostile.net passed=%u failed=%u skipped=%u first_failed=%s arp_after=%s "
	             "tx=%lu bad_frame=%lu ms=%lu\n",
	             passed, failed, skipped, first_fail ? first_fail : "-",
	             arp_ok ? "ok" : "timeout", n->st.tx, n->st.bad_frame,
	             probe_us_since(t_all) / 1000);
	net_close(n);
	if (failed)
		return "hostile-case-failed";
	return arp_ok ? NULL : "arp-after-failed";
}
