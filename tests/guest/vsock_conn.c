/*
 * The probe's vsock connection engine (see vsock.h): the connection table
 * (a 256-bucket hash of local port, peer port), the state machine for every
 * packet the host sends, credit accounting both ways, and the list of
 * connections that have something to send — driven from vs_poll(), never by
 * a scan of the table (sweeps of closing connections excepted, every 100 ms).
 */
#include "vsock_priv.h"

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
		vs_repost(v, s);
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
		vs_send_rst(v, c->local_port, c->peer_port);
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
void vs_conn_pump(struct vs_dev *v, struct vs_conn *c)
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
			if (!vs_tx_conn(v, c, VS_OP_RW, 0, data, k, last ? s : VS_NO_SLOT, k)) {
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
				vs_send_rst(v, c->local_port, c->peer_port);
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
		if (!vs_tx_conn(v, c, VS_OP_RW, 0, data, (uint32_t)k, VS_NO_SLOT, (uint32_t)k)) {
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
		vs_send_rst(v, c->local_port, c->peer_port);
	conn_end(v, c, VS_END_TIMEOUT);
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
		vs_send_rst(v, h->dst_port, h->src_port);
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
			vs_send_rst(v, c->local_port, c->peer_port);
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

void vs_conn_rx(struct vs_dev *v, uint16_t s, const struct vs_hdr *h, bool *keep)
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
			vs_send_rst(v, h->dst_port, h->src_port);
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
			vs_send_rst(v, c->local_port, c->peer_port);
			conn_end(v, c, c->kind == VS_CHECK && !conn_complete(c) ? VS_END_RESET
			                                                         : VS_END_OK);
		} else if (c->kind == VS_CHECK && (c->peer_shut & VS_SHUT_SEND) &&
		           !conn_complete(c)) {
			/* The peer will send no more, but the echo is short. */
			vs_send_rst(v, c->local_port, c->peer_port);
			conn_end(v, c, VS_END_RESET);
		} else if (c->kind != VS_ECHO && (c->peer_shut & VS_SHUT_SEND) &&
		           c->sent == c->to_send) {
			vs_shutdown(v, c, VS_SHUT_RCV | VS_SHUT_SEND);
			if (c->peer_shut == 3) {
				vs_send_rst(v, c->local_port, c->peer_port);
				conn_end(v, c, VS_END_OK);
			}
		} else {
			mark_pump(v, c);
		}
		break;
	case VS_OP_RW:
		if (c->state == VS_CONNECTING) {
			vs_send_rst(v, c->local_port, c->peer_port);
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

void vs_conn_reset_all(struct vs_dev *v)
{
	for (unsigned i = 0; i < VS_MAX_CONNS; i++) {
		struct vs_conn *c = &v->conns[i];
		if (c->state != VS_FREE && c->state != VS_DONE)
			conn_end(v, c, VS_END_TRANSPORT);
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

/* A TX packet of c completed: what it carried left guest memory. */
void vs_conn_tx_done(struct vs_dev *v, struct vs_conn *c, const struct vs_tx_rec *r)
{
	if (c->tx_inflight)
		c->tx_inflight--;
	if (c->kind == VS_ECHO) {
		c->fwd_cnt += r->credit; /* the echoed bytes left our buffer */
		maybe_credit_update(v, c);
	} else if (r->credit) {
		c->tx_done += r->credit;
		if (c->tx_done == c->to_send)
			c->t_last = rdtsc();
	}
}
