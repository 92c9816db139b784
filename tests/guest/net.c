/*
 * virtio-net driver layer and minimal IPv4 stack (see net.h).
 *
 * Queues: RX of pair p is queue 2p, TX 2p + 1 (rings in the core's memory,
 * each on its own MSI-X vector); the control queue (index 2, or
 * 2 * max_virtqueue_pairs with MQ) is set up here with rings in this file's
 * memory and no interrupt: its few commands are polled.
 *
 * RX slot s of a queue is descriptor s, fixed for the whole run (one
 * device-writable buffer of slot_size bytes), so reposting is one avail
 * store. TX descriptors come from a free stack; each head's record says what
 * to give back when it completes (RX slots of an in-place reply, or a pool
 * buffer).
 */
#include "net.h"

#define RAM_BASE     0x1000000ull /* 16 MiB: above the probe image */
#define TIMER_MAX_US 10000

/* Control queue rings (same layout as the core's) and its command buffer. */
struct cvq_mem {
	struct virtq_desc desc[VIRTQ_MAX];
	uint8_t avail[4096];
	uint8_t used[4096];
	uint8_t cmd[4096];
};
_Static_assert(sizeof(struct cvq_mem) == VIRTQ_MEM_SIZE, "control queue layout");
static struct cvq_mem cvq_mem __attribute__((section(".bss.noinit.net_cvq"), aligned(4096)));
static struct net_dev the_dev __attribute__((section(".bss.noinit.net_dev")));

/* ---- helpers ---- */

uint16_t net_csum_fold(uint64_t s)
{
	s = (s & 0xffffffffull) + (s >> 32);
	s = (s & 0xffffffffull) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

uint16_t net_ip_csum(const uint8_t *ip, unsigned words)
{
	uint64_t s = 0;
	for (unsigned i = 0; i < words; i++)
		s += net_ld32(ip + 4 * i);
	return (uint16_t)~net_csum_fold(s);
}

void net_print_fixed2(const char *key, uint64_t hundredths)
{
	probe_printf(" %s=%lu.%02lu", key, hundredths / 100, hundredths % 100);
}

bool net_parse_ip(const char *s, uint32_t *ip)
{
	uint32_t v = 0;
	for (unsigned part = 0; part < 4; part++) {
		unsigned x = 0, digits = 0;
		while (*s >= '0' && *s <= '9' && digits < 4) {
			x = x * 10 + (unsigned)(*s++ - '0');
			digits++;
		}
		if (!digits || x > 255)
			return false;
		v |= x << (8 * part);
		if (part < 3 && *s++ != '.')
			return false;
	}
	if (*s)
		return false;
	*ip = v;
	return true;
}

const char *net_config(struct net_dev *n)
{
	char buf[32];
	if (!probe_opt("net.ip", buf, sizeof(buf)))
		memcpy(buf, "10.0.2.15", 10);
	if (!net_parse_ip(buf, &n->ip))
		return "bad-net-ip";
	if (!probe_opt("net.peer", buf, sizeof(buf)))
		memcpy(buf, "10.0.2.2", 9);
	if (!net_parse_ip(buf, &n->peer_ip))
		return "bad-net-peer";
	uint64_t port = probe_opt_u64("net.port", 7);
	if (!port || port > 65535)
		return "bad-net-port";
	n->port = net_bswap16((uint16_t)port);
	return NULL;
}

/* A RAM range of need bytes from RAM_BASE up, below 4 GiB (the identity map), or 0. */
static uint64_t find_ram(uint64_t need)
{
	for (unsigned i = 0; i < probe_memmap_entries; i++) {
		const struct probe_mem_entry *e = &probe_memmap[i];
		if (e->type != 1)
			continue;
		uint64_t start = e->addr < RAM_BASE ? RAM_BASE : e->addr;
		start = (start + 4095) & ~4095ull;
		uint64_t end = e->addr + e->size;
		if (start + need <= end && start + need <= 0x100000000ull)
			return start;
	}
	return 0;
}

/* ---- control queue ---- */

static const char *cvq_setup(struct net_dev *n)
{
	struct virtio_dev *d = n->vd;
	uint16_t idx = n->cvq_index;
	virtio_c_write16(d, VIRTIO_C_Q_SELECT, idx);
	uint16_t max = virtio_c_read16(d, VIRTIO_C_Q_SIZE);
	if (!max)
		return "no-ctrl-queue";
	uint16_t size = max < VIRTQ_MAX ? max : VIRTQ_MAX;
	uint64_t noff = (uint64_t)virtio_c_read16(d, VIRTIO_C_Q_NOFF) * d->notify_mult;
	if (noff + 2 > d->notify_len)
		return "notify-off-outside-cap";
	struct cvq_mem *m = &cvq_mem;
	struct virtq *vq = &n->cvq;
	*vq = (struct virtq){
	    .dev = d,
	    .index = idx,
	    .size = size,
	    .desc = m->desc,
	    .avail = (volatile struct virtq_avail *)m->avail,
	    .used = (volatile struct virtq_used *)m->used,
	    .event_idx = n->feats & VIRTIO_BIT(VIRTIO_F_EVENT_IDX),
	    .notify_addr = d->notify + noff,
	};
	vq->avail->flags = 1; /* no interrupts: polled */
	vq->avail->idx = 0;
	*virtq_used_event(vq) = 0xffff;
	vq->used->flags = 0;
	vq->used->idx = 0;
	*virtq_avail_event(vq) = 0;
	if (size != max)
		virtio_c_write16(d, VIRTIO_C_Q_SIZE, size);
	virtio_c_write16(d, VIRTIO_C_Q_MSIX, VIRTIO_MSI_NO_VECTOR);
	uint64_t da = (uint64_t)m->desc, aa = (uint64_t)m->avail, ua = (uint64_t)m->used;
	virtio_c_write32(d, VIRTIO_C_Q_DESCLO, (uint32_t)da);
	virtio_c_write32(d, VIRTIO_C_Q_DESCHI, (uint32_t)(da >> 32));
	virtio_c_write32(d, VIRTIO_C_Q_AVAILLO, (uint32_t)aa);
	virtio_c_write32(d, VIRTIO_C_Q_AVAILHI, (uint32_t)(aa >> 32));
	virtio_c_write32(d, VIRTIO_C_Q_USEDLO, (uint32_t)ua);
	virtio_c_write32(d, VIRTIO_C_Q_USEDHI, (uint32_t)(ua >> 32));
	virtio_c_write16(d, VIRTIO_C_Q_ENABLE, 1);
	return NULL;
}

/* One control command (class, cmd, data), polled for up to 1 s. NULL or a reason. */
static const char *cvq_cmd(struct net_dev *n, uint8_t cls, uint8_t cmd, const void *data,
                           uint32_t len)
{
	struct virtq *vq = &n->cvq;
	uint8_t *c = cvq_mem.cmd;
	c[0] = cls;
	c[1] = cmd;
	memcpy(c + 16, data, len);
	c[15] = 0xee; /* ack: VIRTIO_NET_OK (0) or ERR (1) when the device wrote it */
	virtq_desc_set(vq->desc, 0, (uint64_t)c, 2, VIRTQ_DESC_F_NEXT, 1);
	virtq_desc_set(vq->desc, 1, (uint64_t)(c + 16), len, VIRTQ_DESC_F_NEXT, 2);
	virtq_desc_set(vq->desc, 2, (uint64_t)(c + 15), 1, VIRTQ_DESC_F_WRITE, 0);
	virtq_push(vq, 0);
	virtq_publish(vq);
	virtq_notify(vq);
	uint64_t t0 = rdtsc(), lim = probe_tsc_khz() * 1000;
	while (vq->used->idx == vq->last_used) {
		if (rdtsc() - t0 > lim)
			return "ctrl-timeout";
		cpu_relax();
	}
	uint32_t id, l;
	virtq_pop_used(vq, &id, &l);
	barrier();
	return c[15] == VIRTIO_NET_OK ? NULL : "ctrl-refused";
}

/* ---- bring-up ---- */

static uint64_t wanted(const struct net_dev *n)
{
	const struct net_open_opts *o = &n->opts;
	uint64_t off = n->vd->offered;
	uint64_t w = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_NET_F_MAC) |
	             VIRTIO_BIT(VIRTIO_NET_F_STATUS) | VIRTIO_BIT(VIRTIO_NET_F_MTU);
	if (!o->no_mrg)
		w |= VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF);
	if (!o->no_ctrl)
		w |= VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ);
	if (!o->no_event_idx)
		w |= VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	if (o->pairs > 1 && !o->no_ctrl)
		w |= VIRTIO_BIT(VIRTIO_NET_F_MQ);
	uint64_t cs = VIRTIO_BIT(VIRTIO_NET_F_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM);
	if (o->csum && (off & cs) == cs)
		w |= cs;
	if (o->host_tso && (off & VIRTIO_BIT(VIRTIO_NET_F_CSUM)))
		w |= VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4) | VIRTIO_BIT(VIRTIO_NET_F_CSUM);
	w &= off;
	/* MQ is only meaningful with the control queue that sets the pairs. */
	if (!(w & VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ)))
		w &= ~VIRTIO_BIT(VIRTIO_NET_F_MQ);
	return w;
}

static void read_config(struct net_dev *n)
{
	struct virtio_dev *d = n->vd;
	static const uint8_t def_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
	memcpy(n->mac, def_mac, 6);
	n->status = VIRTIO_NET_S_LINK_UP;
	n->max_pairs = 1;
	n->mtu = 1500;
	if (!d->device)
		return;
	if (net_has(n, VIRTIO_NET_F_MAC) && d->device_len >= 6)
		for (unsigned i = 0; i < 6; i++)
			n->mac[i] = mmio_read8(d->device + i);
	if (net_has(n, VIRTIO_NET_F_STATUS) && d->device_len >= 8)
		n->status = mmio_read16(d->device + 6);
	if (net_has(n, VIRTIO_NET_F_MQ) && d->device_len >= 10)
		n->max_pairs = mmio_read16(d->device + 8);
	if (net_has(n, VIRTIO_NET_F_MTU) && d->device_len >= 12)
		n->mtu = mmio_read16(d->device + 10);
}

static inline uint64_t slot_addr(const struct net_rxq *r, unsigned s)
{
	return r->base + (uint64_t)s * r->slot_size;
}

static void repost(struct net_rxq *r, uint16_t slot)
{
	virtq_push(&r->vq, slot);
	r->posted++;
	r->dirty = true;
}

static void tx_reinit(struct net_txq *t)
{
	t->nfree = 0;
	for (unsigned i = t->vq.size; i-- > 0;) {
		t->free[t->nfree++] = (uint16_t)i;
		t->rec[i].ndesc = 0;
	}
	t->inflight = 0;
	t->dirty = false;
}

void net_tx_reinit(struct net_dev *n, unsigned q)
{
	tx_reinit(&n->tx[q]);
}

static const char *bringup(struct net_dev *n)
{
	struct virtio_dev *d = n->vd;
	if (!virtio_negotiate(d, n->feats))
		return "features-refused";
	/*
	 * The core cached num_queues and queue sizes before negotiation; a
	 * device may add queues once MQ is accepted (QEMU does): read them again.
	 */
	d->num_queues = virtio_c_read16(d, VIRTIO_C_NUMQ);
	for (unsigned q = 0; q < d->num_queues && q < VIRTIO_MAX_QUEUES; q++) {
		virtio_c_write16(d, VIRTIO_C_Q_SELECT, (uint16_t)q);
		d->qmax[q] = virtio_c_read16(d, VIRTIO_C_Q_SIZE);
		d->qnotify_off[q] = virtio_c_read16(d, VIRTIO_C_Q_NOFF);
	}
	read_config(n);
	n->mrg = net_has(n, VIRTIO_NET_F_MRG_RXBUF);
	n->csum = net_has(n, VIRTIO_NET_F_CSUM) && net_has(n, VIRTIO_NET_F_GUEST_CSUM);
	n->ctrl = net_has(n, VIRTIO_NET_F_CTRL_VQ);
	if (n->mtu < 68 || n->mtu > NET_MAX_MTU)
		return "mtu-out-of-range";
	unsigned pairs = n->opts.pairs ? n->opts.pairs : 1;
	if (!net_has(n, VIRTIO_NET_F_MQ))
		pairs = 1;
	if (pairs > n->max_pairs)
		pairs = n->max_pairs ? n->max_pairs : 1;
	if (pairs > NET_MAX_PAIRS)
		pairs = NET_MAX_PAIRS;
	n->pairs = pairs;
	n->cvq_index = (uint16_t)(net_has(n, VIRTIO_NET_F_MQ) ? 2u * n->max_pairs : 2u);
	if (d->num_queues < 2 * pairs + (n->ctrl ? 1 : 0) || n->cvq_index >= d->num_queues) {
		probe_printf("PROBE net.error num_queues=%u max_pairs=%u pairs=%u cvq=%u\n",
		             d->num_queues, n->max_pairs, pairs, n->cvq_index);
		return "too-few-queues";
	}

	uint32_t slot_size = NET_BUF;
	if (!n->mrg) /* one buffer must hold the largest frame */
		slot_size = (NET_HDR_LEN + NET_ETH_HLEN + 4 + n->mtu + NET_BUF - 1) & ~(NET_BUF - 1u);
	uint64_t need = (uint64_t)NET_MAX_PAIRS * VIRTQ_MAX * slot_size +
	                (uint64_t)NET_TX_POOL * NET_TX_BUF;
	uint64_t ram = find_ram(need);
	if (!ram)
		return "no-ram";
	n->pool_base = ram;
	n->npool = 0;
	for (unsigned i = NET_TX_POOL; i-- > 0;)
		n->pool_free[n->npool++] = (uint16_t)i;
	uint64_t rxbase = ram + (uint64_t)NET_TX_POOL * NET_TX_BUF;

	for (unsigned p = 0; p < pairs; p++) {
		struct net_rxq *r = &n->rx[p];
		struct net_txq *t = &n->tx[p];
		const char *why =
		    virtq_setup(d, &r->vq, (uint16_t)(2 * p), n->opts.qsize, n->feats, true);
		if (!why)
			why = virtq_setup(d, &t->vq, (uint16_t)(2 * p + 1), n->opts.qsize, n->feats,
			                  true);
		if (why)
			return why;
		r->slot_size = slot_size;
		r->nslots = r->vq.size;
		r->base = rxbase + (uint64_t)p * VIRTQ_MAX * slot_size;
		r->posted = 0;
		for (unsigned s = 0; s < r->nslots; s++) {
			virtq_desc_set(r->vq.desc, s, slot_addr(r, s), slot_size, VIRTQ_DESC_F_WRITE, 0);
			repost(r, (uint16_t)s);
		}
		virtq_publish(&r->vq);
		r->dirty = false;
		tx_reinit(t);
		/* TX interrupts only when net_sleep() asks for them. */
		if (t->vq.event_idx)
			*virtq_used_event(&t->vq) = (uint16_t)(t->vq.last_used - 1);
		else
			t->vq.avail->flags = 1;
	}
	if (n->ctrl) {
		const char *why = cvq_setup(n);
		if (why)
			return why;
	}
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK |
	                         VIRTIO_S_DRIVER_OK);
	for (unsigned p = 0; p < pairs; p++)
		virtq_notify(&n->rx[p].vq);
	if (net_has(n, VIRTIO_NET_F_MQ) && pairs > 1) {
		uint16_t np = (uint16_t)pairs;
		const char *why = cvq_cmd(n, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
		                          &np, 2);
		if (why)
			return why;
	}
	if (virtio_get_status(d) & VIRTIO_S_NEEDS_RESET)
		return "needs-reset";
	return NULL;
}

struct net_dev *net_open(const struct net_open_opts *o, const char **why)
{
	struct virtio_dev *vd = virtio_open(VIRTIO_ID_NET, why);
	if (!vd)
		return NULL;
	if (!(vd->offered & VIRTIO_BIT(VIRTIO_F_VERSION_1))) {
		*why = "no-version-1";
		return NULL;
	}
	struct net_dev *n = &the_dev;
	memset(n, 0, sizeof(*n));
	n->vd = vd;
	if (o)
		n->opts = *o;
	n->feats = wanted(n);
	const char *r = bringup(n);
	if (r) {
		*why = r;
		if (!virtio_reset(vd))
			*why = "setup-failed-reset-stuck";
		return NULL;
	}
	return n;
}

const char *net_restart(struct net_dev *n)
{
	if (!virtio_reset(n->vd))
		return "reset-stuck";
	return bringup(n);
}

void net_close(struct net_dev *n)
{
	net_timer_stop(n);
	if (!virtio_reset(n->vd))
		probe_printf("PROBE net.close reset=stuck\n");
}

void net_print_dev(const char *test, const struct net_dev *n)
{
	const uint8_t *m = n->mac, *ip = (const uint8_t *)&n->ip, *pe = (const uint8_t *)&n->peer_ip;
	probe_printf("PROBE %s mac=%02x:%02x:%02x:%02x:%02x:%02x mtu=%u status=0x%x dev=00:%02x.%u "
	             "offered=0x%lx features=0x%lx pairs=%u max_pairs=%u qsize=%u mrg=%u csum=%u "
	             "ctrl=%u event_idx=%u rx_bufs=%u buf=%u ip=%u.%u.%u.%u peer=%u.%u.%u.%u "
	             "port=%u\n",
	             test, m[0], m[1], m[2], m[3], m[4], m[5], n->mtu, n->status, n->vd->slot,
	             n->vd->fn, n->vd->offered, n->feats, n->pairs, n->max_pairs, n->rx[0].vq.size,
	             n->mrg, n->csum, n->ctrl, net_has(n, VIRTIO_F_EVENT_IDX) ? 1 : 0,
	             n->rx[0].nslots, n->rx[0].slot_size, ip[0], ip[1], ip[2], ip[3], pe[0], pe[1],
	             pe[2], pe[3], net_bswap16(n->port));
}

/* ---- TX ---- */

uint8_t *net_pool_get(struct net_dev *n, unsigned *idx)
{
	if (!n->npool)
		return NULL;
	unsigned i = n->pool_free[--n->npool];
	uint8_t *p = (uint8_t *)(n->pool_base + (uint64_t)i * NET_TX_BUF);
	*(uint64_t *)p = 0;
	net_st32(p + 8, 0);
	*idx = i;
	return p;
}

void net_pool_put(struct net_dev *n, unsigned idx)
{
	if (n->npool < NET_TX_POOL)
		n->pool_free[n->npool++] = (uint16_t)idx;
}

/* Builds and pushes a chain; returns its head or -1 when the queue lacks descriptors. */
static int tx_push(struct net_dev *n, unsigned q, const struct virtq_buf *b, unsigned nb)
{
	struct net_txq *t = &n->tx[q];
	if (nb == 0 || nb > t->nfree || nb > 255)
		return -1;
	uint16_t idx[256];
	for (unsigned i = 0; i < nb; i++)
		idx[i] = t->free[--t->nfree];
	for (unsigned i = 0; i < nb; i++)
		virtq_desc_set(t->vq.desc, idx[i], b[i].addr, b[i].len,
		               (uint16_t)((b[i].write ? VIRTQ_DESC_F_WRITE : 0) |
		                          (i + 1 < nb ? VIRTQ_DESC_F_NEXT : 0)),
		               i + 1 < nb ? idx[i + 1] : 0);
	struct net_tx_rec *rec = &t->rec[idx[0]];
	rec->ndesc = (uint8_t)nb;
	rec->nrx = 0;
	rec->pool = 0;
	virtq_push(&t->vq, idx[0]);
	t->inflight++;
	t->dirty = true;
	return idx[0];
}

bool net_tx_chain(struct net_dev *n, unsigned q, const struct virtq_buf *b, unsigned nb,
                  unsigned pool_plus1)
{
	int h = tx_push(n, q, b, nb);
	if (h < 0)
		return false;
	n->tx[q].rec[h].pool = (uint8_t)pool_plus1;
	uint64_t bytes = 0;
	for (unsigned i = 0; i < nb; i++)
		bytes += b[i].len;
	n->st.tx_bytes += bytes > NET_HDR_LEN ? bytes - NET_HDR_LEN : 0;
	return true;
}

bool net_tx_pool(struct net_dev *n, unsigned q, unsigned idx, uint32_t len)
{
	struct virtq_buf b = {n->pool_base + (uint64_t)idx * NET_TX_BUF, NET_HDR_LEN + len, false};
	return net_tx_chain(n, q, &b, 1, idx + 1);
}

void net_flush(struct net_dev *n)
{
	for (unsigned p = 0; p < n->pairs; p++) {
		struct net_rxq *r = &n->rx[p];
		struct net_txq *t = &n->tx[p];
		if (r->dirty) {
			r->dirty = false;
			virtq_publish(&r->vq);
			n->st.kicks += virtq_kick(&r->vq);
		}
		if (t->dirty) {
			t->dirty = false;
			uint16_t ev = *virtq_used_event(&t->vq);
			virtq_publish(&t->vq);
			if (t->vq.event_idx) /* keep net_sleep()'s choice, not publish's */
				*virtq_used_event(&t->vq) = ev;
			n->st.kicks += virtq_kick(&t->vq);
		}
	}
}

unsigned net_reap_tx(struct net_dev *n, unsigned q)
{
	struct net_txq *t = &n->tx[q];
	unsigned done = 0;
	uint32_t id, len;
	while (virtq_pop_used(&t->vq, &id, &len)) {
		done++;
		struct net_tx_rec *rec = id < t->vq.size ? &t->rec[id] : NULL;
		if (!rec || !rec->ndesc) {
			n->st.bad_frame++;
			continue;
		}
		uint16_t d = (uint16_t)id;
		for (unsigned k = 0; k < rec->ndesc && t->nfree < t->vq.size; k++) {
			t->free[t->nfree++] = d;
			d = t->vq.desc[d].next;
		}
		rec->ndesc = 0;
		if (rec->pool)
			net_pool_put(n, rec->pool - 1u);
		for (unsigned k = 0; k < rec->nrx; k++)
			repost(&n->rx[rec->rxq], rec->rx_slot[k]);
		t->inflight--;
		n->st.tx++;
	}
	return done;
}

/* ---- the stack ---- */

static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static inline bool mac_eq(const uint8_t *a, const uint8_t *b)
{
	return net_ld32(a) == net_ld32(b) && net_ld16(a + 4) == net_ld16(b + 4);
}
static inline void mac_cpy(uint8_t *d, const uint8_t *s)
{
	net_st32(d, net_ld32(s));
	net_st16(d + 4, net_ld16(s + 4));
}

/* Turns the Ethernet header around: to the sender, from us. */
static inline void eth_reply(struct net_dev *n, uint8_t *f)
{
	mac_cpy(f, f + 6);
	mac_cpy(f + 6, n->mac);
}

/* Sends the received frame (already turned around) back from its RX slots. */
static bool reply_in_place(struct net_dev *n, unsigned q, const uint16_t *slot,
                           const uint32_t *len, unsigned nbuf)
{
	struct net_rxq *r = &n->rx[q];
	uint8_t *h = (uint8_t *)slot_addr(r, slot[0]);
	uint8_t flags = n->csum ? (uint8_t)(h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) : 0;
	net_st16(h, flags); /* flags, gso_type NONE */
	net_st16(h + 10, 0); /* num_buffers: 0 on TX */
	struct virtq_buf b[NET_MAX_FRAGS];
	uint64_t bytes = 0;
	for (unsigned i = 0; i < nbuf; i++) {
		b[i] = (struct virtq_buf){slot_addr(r, slot[i]), len[i], false};
		bytes += len[i];
	}
	int head = tx_push(n, q, b, nbuf);
	if (head < 0) {
		n->st.tx_full++;
		return false;
	}
	n->st.tx_bytes += bytes - NET_HDR_LEN;
	struct net_tx_rec *rec = &n->tx[q].rec[head];
	rec->nrx = (uint8_t)nbuf;
	rec->rxq = (uint8_t)q;
	for (unsigned i = 0; i < nbuf; i++)
		rec->rx_slot[i] = slot[i];
	return true;
}

/* ARP; true when the frame went out as a reply (its buffers are in flight). */
static bool arp_in(struct net_dev *n, uint8_t *f, uint32_t len, unsigned q, const uint16_t *slot,
                   const uint32_t *lens, unsigned nbuf, bool *consumed)
{
	/* htype 1, ptype 0x0800, hlen 6, plen 4 */
	if (len < 42 || net_ld32(f + 14) != 0x00080100u || net_ld16(f + 18) != 0x0406)
		return false;
	uint16_t op = net_be16(f + 20);
	uint32_t spa = net_ld32(f + 28), tpa = net_ld32(f + 38);
	if (spa == n->peer_ip && (op == 1 || op == 2)) {
		mac_cpy(n->peer_mac, f + 22);
		n->peer_known = true;
		if (op == 2) {
			n->st.arp_replies++;
			*consumed = true;
		}
	}
	if (op != 1 || tpa != n->ip)
		return false;
	eth_reply(n, f);
	f[21] = 2; /* op: reply */
	mac_cpy(f + 32, f + 22);
	net_st32(f + 38, spa);
	mac_cpy(f + 22, n->mac);
	net_st32(f + 28, n->ip);
	if (!reply_in_place(n, q, slot, lens, nbuf))
		return false;
	n->st.arp++;
	return true;
}

static const char quit_word[] = "ringvm-net-quit";

static bool ipv4_in(struct net_dev *n, uint8_t *f, uint32_t len, unsigned q, const uint16_t *slot,
                    const uint32_t *lens, unsigned nbuf)
{
	if (len < 14 + 20 + 8)
		return false;
	uint8_t *ip = f + 14;
	unsigned ihl = ip[0] & 15;
	if ((ip[0] >> 4) != 4 || ihl < 5 || 14 + 4 * ihl + 8 > len)
		return false;
	if (net_ld32(ip + 16) != n->ip)
		return false;
	if (net_ld16(ip + 6) & net_bswap16(0x3fff)) /* MF or a fragment offset */
		return false;
	if (net_ip_csum(ip, ihl) != 0) {
		n->st.bad_csum++;
		return false;
	}
	uint8_t *l4 = ip + 4 * ihl;
	if (ip[9] == IPPROTO_ICMP) {
		if (l4[0] != 8 || l4[1] != 0)
			return false;
		/* type 8 → 0: HC' = ~(~HC + ~m + m') (RFC 1624), m = the type/code word. */
		uint16_t m = net_ld16(l4), hc = net_ld16(l4 + 2);
		uint64_t s = (uint16_t)~hc + (uint64_t)(uint16_t)~m + 0;
		l4[0] = 0;
		net_st16(l4 + 2, (uint16_t)~net_csum_fold(s));
		n->st.icmp++;
	} else if (ip[9] == IPPROTO_UDP) {
		if (net_ld16(l4 + 2) != n->port)
			return false;
		uint16_t sp = net_ld16(l4);
		net_st16(l4, n->port);
		net_st16(l4 + 2, sp);
		/* Checksum unchanged: the pseudo-header and ports are only swapped. */
		uint32_t ulen = net_be16(l4 + 4);
		if (ulen >= 8 + sizeof(quit_word) - 1 && 14 + 4 * ihl + 8 + 8 <= len &&
		    *(const uint64_t __attribute__((may_alias, aligned(1))) *)(l4 + 8) ==
		        *(const uint64_t __attribute__((may_alias, aligned(1))) *)quit_word &&
		    !memcmp(l4 + 16, quit_word + 8, sizeof(quit_word) - 9))
			n->quit = true;
		n->st.udp++;
	} else {
		return false;
	}
	uint32_t src = net_ld32(ip + 12);
	net_st32(ip + 12, n->ip);
	net_st32(ip + 16, src); /* header checksum unchanged: two words swapped */
	eth_reply(n, f);
	if (!reply_in_place(n, q, slot, lens, nbuf)) {
		if (ip[9] == IPPROTO_ICMP)
			n->st.icmp--;
		else
			n->st.udp--;
		return false;
	}
	return true;
}

/* One received frame in nbuf RX slots; true when its buffers went out as a reply. */
static bool frame_in(struct net_dev *n, unsigned q, const uint16_t *slot, const uint32_t *lens,
                     unsigned nbuf, uint32_t total)
{
	uint8_t *f = (uint8_t *)slot_addr(&n->rx[q], slot[0]) + NET_HDR_LEN;
	uint32_t len0 = lens[0] - NET_HDR_LEN; /* headers must be in the first buffer */
	if (n->hook && n->hook(n, q, f, total))
		return false;
	if (len0 < NET_ETH_HLEN || (!mac_eq(f, n->mac) && !mac_eq(f, bcast)))
		goto drop;
	uint16_t type = net_be16(f + 12);
	if (type == ETH_P_ARP) {
		bool consumed = false;
		if (arp_in(n, f, len0, q, slot, lens, nbuf, &consumed))
			return true;
		if (consumed)
			return false;
	} else if (type == ETH_P_IP && n->echo) {
		if (ipv4_in(n, f, len0, q, slot, lens, nbuf))
			return true;
	}
drop:
	n->st.dropped++;
	return false;
}

static unsigned rx_poll(struct net_dev *n, unsigned q)
{
	struct net_rxq *r = &n->rx[q];
	struct virtq *vq = &r->vq;
	unsigned handled = 0;
	uint32_t id, len;
	while (virtq_pop_used(vq, &id, &len)) {
		handled++;
		r->posted--;
		if (id >= r->nslots) {
			n->st.bad_frame++;
			continue;
		}
		uint16_t slot[NET_MAX_FRAGS];
		uint32_t lens[NET_MAX_FRAGS];
		slot[0] = (uint16_t)id;
		lens[0] = len;
		unsigned nbuf = 1, want = 1;
		bool bad = len < NET_HDR_LEN || len > r->slot_size;
		if (n->mrg && !bad) {
			want = ((struct net_hdr *)slot_addr(r, id))->num_buffers;
			bad = want == 0;
		}
		uint32_t total = len - NET_HDR_LEN;
		while (nbuf < want) {
			if (!virtq_pop_used(vq, &id, &len)) {
				bad = true; /* the device published a frame's buffers separately */
				break;
			}
			handled++;
			r->posted--;
			if (id >= r->nslots || len > r->slot_size) {
				n->st.bad_frame++;
				bad = true;
				want--; /* lost this one; keep taking the rest */
				continue;
			}
			if (nbuf < NET_MAX_FRAGS) {
				slot[nbuf] = (uint16_t)id;
				lens[nbuf] = len;
				total += len;
			} else {
				repost(r, (uint16_t)id);
				bad = true;
			}
			nbuf++;
		}
		if (nbuf > NET_MAX_FRAGS)
			nbuf = NET_MAX_FRAGS;
		if (bad) {
			n->st.bad_frame++;
		} else {
			n->st.rx++;
			n->st.rx_pair[q]++;
			n->st.rx_bytes += total;
			if (frame_in(n, q, slot, lens, nbuf, total))
				continue;
		}
		for (unsigned i = 0; i < nbuf; i++)
			repost(r, slot[i]);
	}
	return handled;
}

unsigned net_poll(struct net_dev *n)
{
	unsigned work = 0;
	for (unsigned p = 0; p < n->pairs; p++) {
		work += rx_poll(n, p);
		work += net_reap_tx(n, p);
	}
	return work;
}

void net_sleep(struct net_dev *n, uint64_t deadline, bool want_tx)
{
	for (unsigned p = 0; p < n->pairs; p++) {
		struct virtq *r = &n->rx[p].vq, *t = &n->tx[p].vq;
		if (r->event_idx)
			*virtq_used_event(r) = r->last_used;
		else
			r->avail->flags = 0;
		if (t->event_idx)
			*virtq_used_event(t) = (uint16_t)(want_tx ? t->last_used : t->last_used - 1);
		else
			t->avail->flags = want_tx ? 0 : 1;
	}
	virtio_mb();
	for (unsigned p = 0; p < n->pairs; p++) {
		if (n->rx[p].vq.used->idx != n->rx[p].vq.last_used)
			return;
		if (want_tx && n->tx[p].vq.used->idx != n->tx[p].vq.last_used)
			return;
	}
	uint64_t now = rdtsc();
	if (now >= deadline)
		return;
	if (!n->timer_armed || lapic_timer_ticks != n->timer_ticks) {
		uint64_t us = (deadline - now) * 1000 / probe_tsc_khz() + 1;
		lapic_timer_oneshot_us(us < TIMER_MAX_US ? us : TIMER_MAX_US);
		n->timer_armed = true;
		n->timer_ticks = (uint32_t)lapic_timer_ticks;
	}
	probe_wait_irq();
}

void net_timer_stop(struct net_dev *n)
{
	if (n->timer_armed)
		lapic_timer_stop();
	n->timer_armed = false;
}

bool net_drain_tx(struct net_dev *n, uint64_t timeout_us)
{
	uint64_t deadline = rdtsc() + timeout_us * probe_tsc_khz() / 1000;
	for (;;) {
		net_flush(n);
		net_poll(n);
		net_flush(n);
		bool busy = false;
		for (unsigned p = 0; p < n->pairs; p++)
			busy |= n->tx[p].inflight != 0;
		if (!busy)
			return true;
		if (rdtsc() >= deadline)
			return false;
		net_sleep(n, deadline, true);
	}
}

uint32_t net_build_udp(struct net_dev *n, uint8_t *f, uint16_t sport, uint16_t dport,
                       uint32_t payload)
{
	mac_cpy(f, n->peer_mac);
	mac_cpy(f + 6, n->mac);
	net_st16(f + 12, net_bswap16(ETH_P_IP));
	uint8_t *ip = f + 14;
	net_st32(ip, 0x45u | (uint32_t)net_bswap16((uint16_t)(28 + payload)) << 16);
	net_st32(ip + 4, (uint32_t)net_bswap16(0x4000) << 16); /* id 0, DF */
	net_st32(ip + 8, 64u | IPPROTO_UDP << 8);             /* ttl, proto, checksum 0 */
	net_st32(ip + 12, n->ip);
	net_st32(ip + 16, n->peer_ip);
	net_st16(ip + 10, net_ip_csum(ip, 5));
	uint8_t *u = ip + 20;
	net_st32(u, (uint32_t)net_bswap16(sport) | (uint32_t)net_bswap16(dport) << 16);
	net_st32(u + 4, net_bswap16((uint16_t)(8 + payload))); /* length, checksum 0 */
	uint32_t len = 42 + payload;
	if (len < 60) {
		memset(f + len, 0, 60 - len);
		len = 60;
	}
	return len;
}

bool net_resolve_peer(struct net_dev *n, uint64_t timeout_us)
{
	uint64_t khz = probe_tsc_khz(), t0 = rdtsc();
	for (unsigned attempt = 0; attempt < 3 && !n->peer_known; attempt++) {
		unsigned idx;
		uint8_t *b = net_pool_get(n, &idx);
		if (b) {
			uint8_t *f = b + NET_HDR_LEN;
			memset(f, 0, 60);
			mac_cpy(f, bcast);
			mac_cpy(f + 6, n->mac);
			net_st16(f + 12, net_bswap16(ETH_P_ARP));
			net_st32(f + 14, 0x00080100u);
			net_st16(f + 18, 0x0406);
			f[21] = 1;
			mac_cpy(f + 22, n->mac);
			net_st32(f + 28, n->ip);
			net_st32(f + 38, n->peer_ip);
			if (!net_tx_pool(n, 0, idx, 60))
				net_pool_put(n, idx);
			net_flush(n);
		}
		uint64_t end = t0 + (attempt + 1) * timeout_us / 3 * khz / 1000;
		while (!n->peer_known && rdtsc() < end) {
			unsigned w = net_poll(n);
			net_flush(n);
			if (!w)
				net_sleep(n, end, true);
		}
	}
	return n->peer_known;
}
