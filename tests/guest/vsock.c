/*
 * virtio-vsock driver (see vsock.h): bring-up, the three queues, TX slots and
 * the header pool, RX buffers, the event queue, and the poll/sleep loop that
 * hands packets to the connection engine (vsock_conn.c).
 *
 * Every instruction costs about a microsecond on the project's hosts, so the
 * per-packet path is short: echoed bytes go back out of the RX buffer they
 * arrived in, pattern bytes are sent from one prebuilt buffer, and only the
 * header of a packet is copied.
 */
#include "vsock_priv.h"

#define RAM_BASE     0x1000000ull /* 16 MiB: above the probe image */
#define TIMER_MAX_US 10000
#define PAT_BYTES    (VS_PLEN + 65536)

static struct vs_dev the_dev __attribute__((section(".bss.noinit.vsock_dev")));

static uint64_t find_ram(uint64_t need)
{
	for (unsigned i = 0; i < probe_memmap_entries; i++) {
		const struct probe_mem_entry *e = &probe_memmap[i];
		if (e->type != 1)
			continue;
		uint64_t start = e->addr < RAM_BASE ? RAM_BASE : e->addr;
		start = (start + 4095) & ~4095ull;
		if (start + need <= e->addr + e->size && start + need <= 0x100000000ull)
			return start;
	}
	return 0;
}

void vs_repost(struct vs_dev *v, uint16_t s)
{
	virtq_push(&v->rxq, s);
	v->posted++;
	v->rx_dirty = true;
}

/* ---- TX ---- */

static int tx_slot(struct vs_dev *v)
{
	if (!v->ntx_free) {
		v->st.tx_full++;
		return -1;
	}
	return v->tx_free[--v->ntx_free];
}

static void tx_fill_hdr(struct vs_dev *v, struct vs_hdr *h, uint32_t sport, uint32_t dport,
                        uint16_t op, uint32_t flags, uint32_t len, uint32_t fwd)
{
	h->src_cid = v->cid;
	h->dst_cid = VS_HOST_CID;
	h->src_port = sport;
	h->dst_port = dport;
	h->len = len;
	h->type = VS_TYPE_STREAM;
	h->op = op;
	h->flags = flags;
	h->buf_alloc = VS_BUF_ALLOC;
	h->fwd_cnt = fwd;
}

/* Queues slot i's header (and data when len > 0) as one packet. */
static void tx_push(struct vs_dev *v, unsigned i, uint64_t data, uint32_t len)
{
	uint16_t d = (uint16_t)(2 * i);
	uint64_t h = v->hdr_pool + 64ull * i;
	if (len) {
		virtq_desc_set(v->txq.desc, d, h, VS_HDR_LEN, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1));
		virtq_desc_set(v->txq.desc, d + 1u, data, len, 0, 0);
	} else {
		virtq_desc_set(v->txq.desc, d, h, VS_HDR_LEN, 0, 0);
	}
	virtq_push(&v->txq, d);
	v->tx_dirty = true;
	v->st.tx_pkts++;
	v->st.tx_bytes += len;
}

/* A packet for c; rec_slot/credit say what its completion gives back. False: no TX slot. */
bool vs_tx_conn(struct vs_dev *v, struct vs_conn *c, uint16_t op, uint32_t flags,
                    uint64_t data, uint32_t len, uint16_t rec_slot, uint32_t credit)
{
	int i = tx_slot(v);
	if (i < 0)
		return false;
	tx_fill_hdr(v, (struct vs_hdr *)(v->hdr_pool + 64ull * (unsigned)i), c->local_port,
	            c->peer_port, op, flags, len, c->fwd_cnt);
	c->fwd_sent = c->fwd_cnt;
	v->tx_rec[i] = (struct vs_tx_rec){(uint16_t)conn_idx(v, c), rec_slot, credit};
	c->tx_inflight++;
	if (op == VS_OP_RW)
		c->tx_cnt += len;
	else if (op == VS_OP_RST)
		v->st.rst_tx++;
	else if (op == VS_OP_CREDIT_UPDATE)
		v->st.credit_upd_tx++;
	tx_push(v, (unsigned)i, data, len);
	return true;
}

bool vs_send_ctl(struct vs_dev *v, struct vs_conn *c, uint16_t op, uint32_t flags)
{
	return vs_tx_conn(v, c, op, flags, 0, 0, VS_NO_SLOT, 0);
}

/* RST in answer to a packet that belongs to no connection (never to a RST). */
static void tx_rst_reply(struct vs_dev *v, const struct vs_hdr *in)
{
	int i = tx_slot(v);
	if (i < 0)
		return;
	tx_fill_hdr(v, (struct vs_hdr *)(v->hdr_pool + 64ull * (unsigned)i), in->dst_port,
	            in->src_port, VS_OP_RST, 0, 0, 0);
	v->tx_rec[i] = (struct vs_tx_rec){NO_CONN, VS_NO_SLOT, 0};
	v->st.rst_tx++;
	tx_push(v, (unsigned)i, 0, 0);
}

/* A RST from local to the host's peer port; kept in a backlog while TX slots are out. */
void vs_send_rst(struct vs_dev *v, uint32_t local, uint32_t peer)
{
	if (v->nrst == 0 && v->ntx_free) {
		struct vs_hdr in = {.src_port = peer, .dst_port = local};
		tx_rst_reply(v, &in);
		return;
	}
	if (v->nrst < VS_RST_BACKLOG) {
		v->rst_local[v->nrst] = local;
		v->rst_peer[v->nrst++] = peer;
	} else {
		v->st.rst_dropped++;
	}
}

static void rst_backlog(struct vs_dev *v)
{
	unsigned k = 0;
	for (; k < v->nrst && v->ntx_free; k++) {
		struct vs_hdr in = {.src_port = v->rst_peer[k], .dst_port = v->rst_local[k]};
		tx_rst_reply(v, &in);
	}
	for (unsigned j = k; j < v->nrst; j++) {
		v->rst_local[j - k] = v->rst_local[j];
		v->rst_peer[j - k] = v->rst_peer[j];
	}
	v->nrst = (uint16_t)(v->nrst - k);
}

bool vs_tx_raw(struct vs_dev *v, const struct virtq_buf *b, unsigned nb)
{
	if (v->raw_inflight || nb == 0 || nb > VS_RAW_DESCS)
		return false;
	uint16_t d0 = (uint16_t)(2 * v->ntx);
	for (unsigned k = 0; k < nb; k++)
		virtq_desc_set(v->txq.desc, d0 + k, b[k].addr, b[k].len,
		               (uint16_t)((b[k].write ? VIRTQ_DESC_F_WRITE : 0) |
		                          (k + 1 < nb ? VIRTQ_DESC_F_NEXT : 0)),
		               (uint16_t)(d0 + k + 1));
	virtq_push(&v->txq, d0);
	v->raw_inflight = true;
	v->tx_dirty = true;
	return true;
}

static void tx_reap(struct vs_dev *v)
{
	uint32_t id, len;
	while (virtq_pop_used(&v->txq, &id, &len)) {
		if (id == 2u * v->ntx && v->raw_inflight) {
			v->raw_inflight = false;
			continue;
		}
		unsigned i = id / 2;
		if ((id & 1) || i >= v->ntx) {
			v->st.bad_pkt++;
			continue;
		}
		struct vs_tx_rec r = v->tx_rec[i];
		v->tx_rec[i] = (struct vs_tx_rec){NO_CONN, VS_NO_SLOT, 0};
		if (v->ntx_free < v->ntx)
			v->tx_free[v->ntx_free++] = (uint16_t)i;
		if (r.slot != VS_NO_SLOT)
			vs_repost(v, r.slot);
		if (r.conn == NO_CONN)
			continue;
		vs_conn_tx_done(v, &v->conns[r.conn], &r);
	}
}

static unsigned rx_poll(struct vs_dev *v)
{
	unsigned n = 0;
	uint32_t id, len;
	while (virtq_pop_used(&v->rxq, &id, &len)) {
		n++;
		v->posted--;
		if (id >= v->nrx) {
			v->st.bad_pkt++;
			continue;
		}
		uint16_t s = (uint16_t)id;
		/* The device wrote the header; take our own copy before looking at it. */
		struct vs_hdr h = *(const struct vs_hdr *)slot_ptr(v, s);
		bool keep = false;
		if (len < VS_HDR_LEN || len > v->rxbuf || h.len != len - VS_HDR_LEN ||
		    (h.op != VS_OP_RW && h.len)) {
			v->st.bad_pkt++;
		} else {
			v->st.rx_pkts++;
			v->st.rx_bytes += h.len;
			if (!v->hook || !v->hook(v, &h, slot_ptr(v, s) + VS_HDR_LEN))
				vs_conn_rx(v, s, &h, &keep);
		}
		if (!keep)
			vs_repost(v, s);
	}
	return n;
}

static unsigned ev_poll(struct vs_dev *v)
{
	unsigned n = 0;
	uint32_t id, len;
	while (virtq_pop_used(&v->evq, &id, &len)) {
		n++;
		v->st.events++;
		if (id >= VS_EVQ_BUFS)
			continue;
		uint32_t ev = *(volatile uint32_t *)(v->ev_base + 8ull * id);
		if (len >= 4 && ev == VS_EVENT_RESET) {
			/* The spec: drop every connection, read the CID again. */
			v->st.transport_resets++;
			vs_conn_reset_all(v);
			struct virtio_dev *d = v->vd;
			v->cid = mmio_read32(d->device) | (uint64_t)mmio_read32(d->device + 4) << 32;
		}
		*(volatile uint32_t *)(v->ev_base + 8ull * id) = 0xffffffffu;
		virtq_push(&v->evq, (uint16_t)id);
		virtq_publish(&v->evq);
		virtq_kick(&v->evq);
	}
	return n;
}

unsigned vs_poll(struct vs_dev *v)
{
	unsigned work = rx_poll(v) + ev_poll(v);
	unsigned before = v->ntx_free;
	tx_reap(v);
	work += v->ntx_free != before;
	if (v->nrst)
		rst_backlog(v);
	unsigned n = v->npump;
	for (unsigned k = 0; k < n; k++) {
		struct vs_conn *c = &v->conns[v->pump[k]];
		c->want_tx = false;
		vs_conn_pump(v, c);
	}
	/* Keep what was re-queued (TX slots ran out) or added meanwhile. */
	unsigned rest = v->npump - n;
	for (unsigned k = 0; k < rest; k++)
		v->pump[k] = v->pump[n + k];
	v->npump = (uint16_t)rest;
	return work;
}

void vs_flush(struct vs_dev *v)
{
	if (v->rx_dirty) {
		v->rx_dirty = false;
		virtq_publish(&v->rxq);
		v->st.kicks += virtq_kick(&v->rxq);
	}
	if (v->tx_dirty) {
		v->tx_dirty = false;
		virtq_publish(&v->txq);
		v->st.kicks += virtq_kick(&v->txq);
	}
}

void vs_sleep(struct vs_dev *v, uint64_t deadline)
{
	struct virtq *q[3] = {&v->rxq, &v->txq, &v->evq};
	for (unsigned i = 0; i < 3; i++) {
		if (q[i]->event_idx)
			*virtq_used_event(q[i]) = q[i]->last_used;
		else
			q[i]->avail->flags = 0;
	}
	virtio_mb();
	for (unsigned i = 0; i < 3; i++)
		if (q[i]->used->idx != q[i]->last_used)
			return;
	uint64_t now = rdtsc();
	if (now >= deadline)
		return;
	if (!v->timer_armed || lapic_timer_ticks != v->timer_ticks) {
		uint64_t us = (deadline - now) * 1000 / probe_tsc_khz() + 1;
		lapic_timer_oneshot_us(us < TIMER_MAX_US ? us : TIMER_MAX_US);
		v->timer_armed = true;
		v->timer_ticks = (uint32_t)lapic_timer_ticks;
	}
	probe_wait_irq();
}

void vs_timer_stop(struct vs_dev *v)
{
	if (v->timer_armed)
		lapic_timer_stop();
	v->timer_armed = false;
}

bool vs_run_until(struct vs_dev *v, uint64_t deadline, bool (*cond)(struct vs_dev *, void *),
                  void *arg)
{
	for (;;) {
		unsigned work = vs_poll(v);
		vs_flush(v);
		vs_reap(v);
		if (cond && cond(v, arg))
			return true;
		uint64_t now = rdtsc();
		if (now >= deadline)
			return false;
		if (now - v->last_sweep > 100 * probe_tsc_khz())
			vs_sweep(v);
		if (!work)
			vs_sleep(v, deadline);
	}
}

/* ---- bring-up ---- */

struct vs_dev *vs_open(uint32_t rxbuf, bool event_idx, const char **why)
{
	struct virtio_dev *d = virtio_open(VIRTIO_ID_VSOCK, why);
	if (!d)
		return NULL;
	if (!(d->offered & VIRTIO_BIT(VIRTIO_F_VERSION_1))) {
		*why = "no-version-1";
		return NULL;
	}
	if (rxbuf < 4096 || rxbuf > 65536) {
		*why = "bad-rxbuf";
		return NULL;
	}
	struct vs_dev *v = &the_dev;
	memset(v, 0, sizeof(*v));
	v->vd = d;
	v->rxbuf = rxbuf;
	v->feats = VIRTIO_BIT(VIRTIO_F_VERSION_1);
	if (event_idx)
		v->feats |= d->offered & VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	for (unsigned i = 0; i < 256; i++)
		v->bucket[i] = NO_CONN;
	const char *r = NULL;
	if (!virtio_negotiate(d, v->feats))
		r = "features-refused";
	else if (d->num_queues < 3)
		r = "too-few-queues";
	else if (!d->device || d->device_len < 8)
		r = "no-device-config";
	if (!r)
		r = virtq_setup(d, &v->rxq, 0, 0, v->feats, true);
	if (!r)
		r = virtq_setup(d, &v->txq, 1, 0, v->feats, true);
	if (!r)
		r = virtq_setup(d, &v->evq, 2, 0, v->feats, true);
	if (!r && (v->txq.size < 2 * VS_RAW_DESCS || v->evq.size < VS_EVQ_BUFS))
		r = "queue-too-small";
	if (r) {
		*why = r;
		if (!virtio_reset(d))
			*why = "setup-failed-reset-stuck";
		return NULL;
	}
	v->cid = mmio_read32(d->device) | (uint64_t)mmio_read32(d->device + 4) << 32;
	v->nrx = v->rxq.size < VS_MAX_RX ? v->rxq.size : VS_MAX_RX;
	v->ntx = (uint16_t)((v->txq.size - VS_RAW_DESCS) / 2);
	uint64_t need = (uint64_t)v->nrx * rxbuf + PAT_BYTES + 4096 + 64ull * VIRTQ_MAX / 2 +
	                4096 + 4096;
	uint64_t ram = find_ram(need);
	if (!ram) {
		*why = "no-ram";
		return NULL;
	}
	v->rx_base = ram;
	v->pat = ram + (uint64_t)v->nrx * rxbuf;
	v->hdr_pool = (v->pat + PAT_BYTES + 4095) & ~4095ull;
	v->ev_base = v->hdr_pool + 64ull * VIRTQ_MAX / 2;
	v->raw_buf = v->ev_base + 4096;

	/* The pattern: xorshift64 words, then its first 64 KiB again so any phase is contiguous. */
	uint64_t x = 0x9e3779b97f4a7c15ull, *pw = (uint64_t *)v->pat;
	for (unsigned i = 0; i < (VS_PLEN + 7) / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		pw[i] = x;
	}
	memcpy((uint8_t *)v->pat + VS_PLEN, (uint8_t *)v->pat, 65536);

	for (unsigned s = 0; s < v->nrx; s++) {
		virtq_desc_set(v->rxq.desc, s, (uint64_t)slot_ptr(v, s), rxbuf, VIRTQ_DESC_F_WRITE, 0);
		vs_repost(v, (uint16_t)s);
	}
	virtq_publish(&v->rxq);
	v->rx_dirty = false;
	for (unsigned e = 0; e < VS_EVQ_BUFS; e++) {
		*(volatile uint32_t *)(v->ev_base + 8ull * e) = 0xffffffffu;
		virtq_desc_set(v->evq.desc, e, v->ev_base + 8ull * e, 8, VIRTQ_DESC_F_WRITE, 0);
		virtq_push(&v->evq, (uint16_t)e);
	}
	virtq_publish(&v->evq);
	for (unsigned i = v->ntx; i-- > 0;) {
		v->tx_free[v->ntx_free++] = (uint16_t)i;
		v->tx_rec[i] = (struct vs_tx_rec){NO_CONN, VS_NO_SLOT, 0};
	}
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK |
	                         VIRTIO_S_DRIVER_OK);
	virtq_notify(&v->rxq);
	virtq_notify(&v->evq);
	if (virtio_get_status(d) & VIRTIO_S_NEEDS_RESET) {
		*why = "needs-reset";
		return NULL;
	}
	return v;
}

void vs_close(struct vs_dev *v)
{
	vs_timer_stop(v);
	if (!virtio_reset(v->vd))
		probe_printf("PROBE vsock.close reset=stuck\n");
}

void vs_print_dev(const char *test, const struct vs_dev *v)
{
	probe_printf("PROBE %s dev=00:%02x.%u cid=%lu offered=0x%lx features=0x%lx rxq=%u txq=%u "
	             "evq=%u rx_bufs=%u buf=%u tx_slots=%u event_idx=%u\n",
	             test, v->vd->slot, v->vd->fn, v->cid, v->vd->offered, v->feats, v->rxq.size,
	             v->txq.size, v->evq.size, v->nrx, v->rxbuf, v->ntx,
	             (v->feats & VIRTIO_BIT(VIRTIO_F_EVENT_IDX)) ? 1 : 0);
}
