/*
 * virtio-vsock driver and connection engine (see vsock.h).
 *
 * Every instruction costs about a microsecond on the project's hosts, so the
 * per-packet path is short: connections are found through a 256-bucket hash
 * of (local port, peer port), work is driven from a list of connections that
 * have something to send (never a scan of the table), echoed bytes go back
 * out of the RX buffer they arrived in, and pattern bytes are sent from one
 * prebuilt buffer. Only CHECK connections read payload bytes.
 */
#include "vsock.h"

#define RAM_BASE     0x1000000ull /* 16 MiB: above the probe image */
#define TIMER_MAX_US 10000
#define PAT_BYTES    (VS_PLEN + 65536)
#define NO_CONN      VS_MAX_CONNS

static struct vs_dev the_dev __attribute__((section(".bss.noinit.vsock_dev")));

static void send_rst(struct vs_dev *v, uint32_t local, uint32_t peer);

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

static inline uint8_t *slot_ptr(const struct vs_dev *v, unsigned s)
{
	return (uint8_t *)(v->rx_base + (uint64_t)s * v->rxbuf);
}

static void repost(struct vs_dev *v, uint16_t s)
{
	virtq_push(&v->rxq, s);
	v->posted++;
	v->rx_dirty = true;
}

static inline unsigned conn_idx(const struct vs_dev *v, const struct vs_conn *c)
{
	return (unsigned)(c - v->conns);
}

static inline unsigned bucket_of(uint32_t local, uint32_t peer)
{
	return (local * 31u + peer) & 255u;
}

static struct vs_conn *lookup(struct vs_dev *v, uint32_t local, uint32_t peer)
{
	for (uint16_t i = v->bucket[bucket_of(local, peer)]; i != NO_CONN; i = v->conns[i].next) {
		struct vs_conn *c = &v->conns[i];
		if (c->local_port == local && c->peer_port == peer)
			return c;
	}
	return NULL;
}

static struct vs_conn *conn_new(struct vs_dev *v, uint32_t local, uint32_t peer, uint8_t kind)
{
	/* Free entries are found by a scan, but only when a connection starts. */
	for (unsigned i = 0; i < VS_MAX_CONNS; i++) {
		struct vs_conn *c = &v->conns[i];
		if (c->state != VS_FREE)
			continue;
		memset(c, 0, sizeof(*c));
		c->kind = kind;
		c->local_port = local;
		c->peer_port = peer;
		c->pend_head = c->pend_tail = VS_NO_SLOT;
		unsigned b = bucket_of(local, peer);
		c->next = v->bucket[b];
		v->bucket[b] = (uint16_t)i;
		c->in_bucket = true;
		c->pat_start = (uint32_t)((i * 4099u + v->next_port * 7u) % VS_PLEN);
		v->nactive++;
		if (v->nactive > v->max_active)
			v->max_active = v->nactive;
		return c;
	}
	return NULL;
}

static void mark_pump(struct vs_dev *v, struct vs_conn *c)
{
	if (c->want_tx || c->state == VS_DONE)
		return;
	c->want_tx = true;
	v->pump[v->npump++] = (uint16_t)conn_idx(v, c);
}

static void release_pending(struct vs_dev *v, struct vs_conn *c)
{
	for (uint16_t s = c->pend_head; s != VS_NO_SLOT; s = v->slot_next[s])
		repost(v, s);
	c->pend_head = c->pend_tail = VS_NO_SLOT;
	c->pend_off = 0;
}

static void conn_end(struct vs_dev *v, struct vs_conn *c, uint8_t end)
{
	if (c->state == VS_DONE)
		return;
	if (!c->end)
		c->end = end;
	release_pending(v, c);
	c->state = VS_DONE;
	c->t_close = rdtsc();
	v->done[v->ndone++] = (uint16_t)conn_idx(v, c);
	if (c->local_port == v->listen_port) {
		v->closed_in++;
		v->ends_in[c->end & 7]++;
	} else {
		v->closed_out++;
		v->ends_out[c->end & 7]++;
		v->rst_out += c->got_rst;
	}
}

void vs_sweep(struct vs_dev *v)
{
	uint64_t now = rdtsc(), lim = 2000 * probe_tsc_khz();
	v->last_sweep = now;
	for (unsigned i = 0; i < VS_MAX_CONNS; i++) {
		struct vs_conn *c = &v->conns[i];
		if (c->state != VS_CLOSING || now - c->t_close < lim)
			continue;
		send_rst(v, c->local_port, c->peer_port);
		bool ok = c->kind == VS_CHECK ? c->received == c->to_send
		                              : c->pend_head == VS_NO_SLOT;
		conn_end(v, c, ok ? VS_END_OK : VS_END_TIMEOUT);
	}
}

void vs_reap(struct vs_dev *v)
{
	unsigned keep = 0;
	for (unsigned k = 0; k < v->ndone; k++) {
		uint16_t i = v->done[k];
		struct vs_conn *c = &v->conns[i];
		if (c->tx_inflight) { /* its TX completions still name it */
			v->done[keep++] = i;
			continue;
		}
		uint16_t *pp = &v->bucket[bucket_of(c->local_port, c->peer_port)];
		while (*pp != NO_CONN && *pp != i)
			pp = &v->conns[*pp].next;
		if (*pp == i)
			*pp = c->next;
		c->state = VS_FREE;
		v->nactive--;
	}
	v->ndone = (uint16_t)keep;
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
static bool tx_conn(struct vs_dev *v, struct vs_conn *c, uint16_t op, uint32_t flags,
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
	return tx_conn(v, c, op, flags, 0, 0, VS_NO_SLOT, 0);
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
static void send_rst(struct vs_dev *v, uint32_t local, uint32_t peer)
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

/* The peer's free space for us; a peer claiming more consumed than we sent gives none. */
static uint32_t peer_credit(const struct vs_conn *c)
{
	uint32_t used = c->tx_cnt - c->peer_fwd_cnt;
	return used > c->peer_buf_alloc ? 0 : c->peer_buf_alloc - used;
}

/* Tells the peer about freed space once its view of ours is down to half. */
static void maybe_credit_update(struct vs_dev *v, struct vs_conn *c)
{
	if (c->state == VS_OPEN && c->fwd_cnt - c->fwd_sent >= VS_BUF_ALLOC / 2)
		vs_send_ctl(v, c, VS_OP_CREDIT_UPDATE, 0);
}

void vs_shutdown(struct vs_dev *v, struct vs_conn *c, uint32_t flags)
{
	flags |= c->shut_tx | c->shut_want;
	c->shut_want = (uint8_t)flags;
	if (flags == c->shut_tx)
		return;
	if (!vs_send_ctl(v, c, VS_OP_SHUTDOWN, flags)) {
		mark_pump(v, c); /* no TX slot now: pump() sends it later */
		return;
	}
	c->shut_tx = (uint8_t)flags;
	if (c->state == VS_OPEN && flags == (VS_SHUT_RCV | VS_SHUT_SEND))
		c->state = VS_CLOSING;
	c->t_close = rdtsc();
}

/* Sends what c may send now; re-queued when TX slots ran out. */
static void pump(struct vs_dev *v, struct vs_conn *c)
{
	if (c->state != VS_OPEN && c->state != VS_CLOSING)
		return;
	if (c->shut_want != c->shut_tx) {
		vs_shutdown(v, c, c->shut_want);
		if (c->shut_want != c->shut_tx)
			return;
	}
	if (c->kind == VS_ECHO) {
		while (c->pend_head != VS_NO_SLOT) {
			uint32_t credit = peer_credit(c);
			if (!credit)
				return; /* the peer's CREDIT_UPDATE brings us back */
			uint16_t s = c->pend_head;
			uint32_t slen = ((struct vs_hdr *)slot_ptr(v, s))->len;
			uint32_t k = slen - c->pend_off;
			if (k > credit)
				k = credit;
			bool last = c->pend_off + k == slen;
			uint64_t data = (uint64_t)slot_ptr(v, s) + VS_HDR_LEN + c->pend_off;
			if (!tx_conn(v, c, VS_OP_RW, 0, data, k, last ? s : VS_NO_SLOT, k)) {
				mark_pump(v, c);
				return;
			}
			c->pend_off += k;
			if (last) {
				c->pend_head = v->slot_next[s];
				if (c->pend_head == VS_NO_SLOT)
					c->pend_tail = VS_NO_SLOT;
				c->pend_off = 0;
			}
		}
		if (c->peer_shut & VS_SHUT_SEND) {
			vs_shutdown(v, c, VS_SHUT_RCV | VS_SHUT_SEND);
			if (c->peer_shut == 3 && c->shut_tx == 3) { /* we saw both last: we reset */
				send_rst(v, c->local_port, c->peer_port);
				conn_end(v, c, VS_END_OK);
			}
		}
		return;
	}
	while (c->sent < c->to_send) {
		uint32_t credit = peer_credit(c);
		if (!credit)
			return;
		uint64_t k = c->to_send - c->sent;
		if (k > 65536)
			k = 65536;
		if (k > credit)
			k = credit;
		uint64_t data = (uint64_t)vs_pattern(v, c->pat_start, c->sent);
		if (!tx_conn(v, c, VS_OP_RW, 0, data, (uint32_t)k, VS_NO_SLOT, (uint32_t)k)) {
			mark_pump(v, c);
			return;
		}
		c->sent += k;
	}
	if (c->half && c->to_send)
		vs_shutdown(v, c, VS_SHUT_SEND);
}

void vs_abort(struct vs_dev *v, struct vs_conn *c)
{
	if (c->state == VS_FREE || c->state == VS_DONE)
		return;
	if (c->state != VS_CONNECTING)
		send_rst(v, c->local_port, c->peer_port);
	conn_end(v, c, VS_END_TIMEOUT);
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
			repost(v, r.slot);
		if (r.conn == NO_CONN)
			continue;
		struct vs_conn *c = &v->conns[r.conn];
		if (c->tx_inflight)
			c->tx_inflight--;
		if (c->kind == VS_ECHO) {
			c->fwd_cnt += r.credit; /* the echoed bytes left our buffer */
			maybe_credit_update(v, c);
		} else if (r.credit) {
			c->tx_done += r.credit;
			if (c->tx_done == c->to_send)
				c->t_last = rdtsc();
		}
	}
}

/* ---- RX ---- */

static bool check_bytes(struct vs_dev *v, struct vs_conn *c, const uint8_t *d, uint32_t len)
{
	const uint8_t *p = vs_pattern(v, c->pat_start, c->received);
	uint32_t i = 0;
	for (; i + 8 <= len; i += 8)
		if (*(const uint64_t __attribute__((may_alias, aligned(1))) *)(d + i) !=
		    *(const uint64_t __attribute__((may_alias, aligned(1))) *)(p + i))
			break;
	for (; i < len; i++)
		if (d[i] != p[i]) {
			c->mismatch_at = c->received + i + 1;
			return false;
		}
	return true;
}

/* Is c finished (CHECK: all echoed and checked; SINK: all sent and all expected received)? */
static bool conn_complete(const struct vs_conn *c)
{
	if (c->kind == VS_CHECK)
		return c->to_send && c->received == c->to_send;
	return false;
}

static void accept_conn(struct vs_dev *v, const struct vs_hdr *h)
{
	struct vs_conn *c = conn_new(v, h->dst_port, h->src_port, VS_ECHO);
	if (!c) {
		v->st.refused_in++;
		send_rst(v, h->dst_port, h->src_port);
		return;
	}
	c->state = VS_OPEN;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->t_open = rdtsc();
	v->accepted++;
	if (!vs_send_ctl(v, c, VS_OP_RESPONSE, 0)) {
		v->st.refused_in++;
		conn_end(v, c, VS_END_RESET);
	}
}

static void rx_data(struct vs_dev *v, struct vs_conn *c, uint16_t s, const struct vs_hdr *h,
                    bool *keep)
{
	uint32_t len = h->len;
	if (!len)
		return;
	c->rx_cnt += len;
	uint32_t held = c->rx_cnt - c->fwd_cnt;
	if (held > VS_BUF_ALLOC) {
		uint32_t over = held - VS_BUF_ALLOC;
		if (over > len)
			over = len;
		c->over_credit += over;
		v->st.over_credit += over;
	}
	if (!c->t_first)
		c->t_first = rdtsc();
	c->received += len;
	if (c->kind == VS_ECHO && !(c->peer_shut & VS_SHUT_RCV)) {
		v->slot_next[s] = VS_NO_SLOT;
		if (c->pend_tail == VS_NO_SLOT)
			c->pend_head = s;
		else
			v->slot_next[c->pend_tail] = s;
		c->pend_tail = s;
		*keep = true;
		mark_pump(v, c);
		return;
	}
	if (c->kind == VS_CHECK) {
		c->received -= len;
		if (c->received + len > c->to_send ||
		    !check_bytes(v, c, slot_ptr(v, s) + VS_HDR_LEN, len)) {
			if (!c->mismatch_at)
				c->mismatch_at = c->received + 1;
			c->received += len;
			send_rst(v, c->local_port, c->peer_port);
			conn_end(v, c, VS_END_BAD);
			return;
		}
		c->received += len;
	}
	c->t_last = rdtsc();
	c->fwd_cnt += len; /* consumed at once */
	maybe_credit_update(v, c);
	if (conn_complete(c))
		vs_shutdown(v, c, VS_SHUT_RCV | VS_SHUT_SEND);
}

static void rx_packet(struct vs_dev *v, uint16_t s, const struct vs_hdr *h, bool *keep)
{
	if (h->type != VS_TYPE_STREAM || h->src_cid != VS_HOST_CID || h->dst_cid != v->cid) {
		v->st.bad_pkt++;
		return;
	}
	struct vs_conn *c = lookup(v, h->dst_port, h->src_port);
	if (!c || c->state == VS_DONE) {
		if (h->op == VS_OP_REQUEST && v->listen_port && h->dst_port == v->listen_port && !c) {
			accept_conn(v, h);
			return;
		}
		if (h->op == VS_OP_REQUEST)
			v->st.refused_in++;
		else
			v->st.stray++;
		if (h->op != VS_OP_RST)
			send_rst(v, h->dst_port, h->src_port);
		return;
	}
	uint32_t before = peer_credit(c);
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case VS_OP_RESPONSE:
		if (c->state == VS_CONNECTING) {
			c->state = VS_OPEN;
			c->t_open = rdtsc();
			mark_pump(v, c);
		}
		break;
	case VS_OP_RST:
		v->st.rst_rx++;
		c->got_rst = true;
		if (c->state == VS_CONNECTING)
			conn_end(v, c, VS_END_REFUSED);
		else if (conn_complete(c) ||
		         (c->kind == VS_ECHO && c->shut_tx && c->pend_head == VS_NO_SLOT) ||
		         (c->kind == VS_SINK && c->sent == c->to_send)) /* a peer that left */
			conn_end(v, c, VS_END_OK);
		else
			conn_end(v, c, VS_END_RESET);
		break;
	case VS_OP_SHUTDOWN:
		c->peer_shut |= (uint8_t)(h->flags & 3);
		if (c->peer_shut == 3 && c->shut_tx == 3 &&
		    (c->kind != VS_ECHO || c->pend_head == VS_NO_SLOT)) {
			/* Both sides are done: the one that sees it last resets. */
			send_rst(v, c->local_port, c->peer_port);
			conn_end(v, c, c->kind == VS_CHECK && !conn_complete(c) ? VS_END_RESET
			                                                         : VS_END_OK);
		} else if (c->kind == VS_CHECK && (c->peer_shut & VS_SHUT_SEND) &&
		           !conn_complete(c)) {
			/* The peer will send no more, but the echo is short. */
			send_rst(v, c->local_port, c->peer_port);
			conn_end(v, c, VS_END_RESET);
		} else if (c->kind != VS_ECHO && (c->peer_shut & VS_SHUT_SEND) &&
		           c->sent == c->to_send) {
			vs_shutdown(v, c, VS_SHUT_RCV | VS_SHUT_SEND);
			if (c->peer_shut == 3) {
				send_rst(v, c->local_port, c->peer_port);
				conn_end(v, c, VS_END_OK);
			}
		} else {
			mark_pump(v, c);
		}
		break;
	case VS_OP_RW:
		if (c->state == VS_CONNECTING) {
			send_rst(v, c->local_port, c->peer_port);
			conn_end(v, c, VS_END_RESET);
			break;
		}
		rx_data(v, c, s, h, keep);
		break;
	case VS_OP_CREDIT_REQUEST:
		v->st.credit_req_rx++;
		vs_send_ctl(v, c, VS_OP_CREDIT_UPDATE, 0);
		break;
	case VS_OP_CREDIT_UPDATE:
		v->st.credit_upd_rx++;
		break;
	default:
		v->st.bad_pkt++;
		break;
	}
	if (c->state != VS_DONE && peer_credit(c) > before)
		mark_pump(v, c);
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
				rx_packet(v, s, &h, &keep);
		}
		if (!keep)
			repost(v, s);
	}
	return n;
}

static void all_reset(struct vs_dev *v)
{
	for (unsigned i = 0; i < VS_MAX_CONNS; i++) {
		struct vs_conn *c = &v->conns[i];
		if (c->state != VS_FREE && c->state != VS_DONE)
			conn_end(v, c, VS_END_TRANSPORT);
	}
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
			all_reset(v);
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
		pump(v, c);
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

struct vs_conn *vs_connect(struct vs_dev *v, uint32_t port, enum vs_kind kind, uint64_t bytes,
                           bool half)
{
	uint32_t local = 0x40000000u + v->next_port++;
	struct vs_conn *c = conn_new(v, local, port, (uint8_t)kind);
	if (!c)
		return NULL;
	c->to_send = bytes;
	c->half = half;
	c->state = VS_CONNECTING;
	c->t_open = rdtsc();
	if (!vs_send_ctl(v, c, VS_OP_REQUEST, 0)) {
		conn_end(v, c, VS_END_TIMEOUT);
		return NULL;
	}
	return c;
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
		repost(v, (uint16_t)s);
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
