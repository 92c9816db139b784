/*
 * virtio-vsock (virtio 1.2 §5.10) in its device process: the packets. TX
 * (guest → host) runs in the transport's TX-queue coroutine: every header
 * is copied once and checked (vsock_check), then dispatched to its
 * connection; RW payload goes from guest RAM straight to the host socket
 * (writev). RX (host → guest) is one coroutine: it takes RSTs and
 * connections that owe the guest something from a FIFO, pops one RX chain
 * per packet and reads host data straight into it, never more than the
 * guest's credit allows. The event queue is never used (the device does
 * not restart behind the driver's back). Connections: vsock_conn.c; the
 * main process's part and the registry entry: vsock_host.c.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devices/virtio/vsock_priv.h"

/* ---- RX work queue ---- */

static void rx_poke(struct vsock *vs)
{
	if (vs->rx_parked)
		exec_waitq_wake(vs->vdev.ex, &vs->rx_work, 1);
}

void vsock_rxq_add(struct vsock_conn *c)
{
	struct vsock *vs = c->vs;
	if (c->in_rxq || c->closing)
		return;
	c->in_rxq = true;
	c->rnext = NULL;
	if (vs->rxq_tail)
		vs->rxq_tail->rnext = c;
	else
		vs->rxq_head = c;
	vs->rxq_tail = c;
	rx_poke(vs);
}

void vsock_rxq_del(struct vsock_conn *c)
{
	struct vsock *vs = c->vs;
	if (!c->in_rxq)
		return;
	struct vsock_conn **pp = &vs->rxq_head, *prev = NULL;
	while (*pp && *pp != c)
		prev = *pp, pp = &(*pp)->rnext;
	if (*pp)
		*pp = c->rnext;
	if (vs->rxq_tail == c)
		vs->rxq_tail = prev;
	c->in_rxq = false;
	c->rnext = NULL;
}

void vsock_rst(struct vsock *vs, uint32_t local, uint32_t peer)
{
	if (vs->rst_len == VSOCK_RST_RING) {
		vs->st.rst_dropped++; /* an RST storm: the guest times out instead */
		return;
	}
	unsigned i = (vs->rst_first + vs->rst_len++) % VSOCK_RST_RING;
	vs->rst[i].local = local;
	vs->rst[i].peer = peer;
	rx_poke(vs);
}

bool vsock_conn_rx_wanted(const struct vsock_conn *c)
{
	if (c->st != VSOCK_C_OPEN || c->closing || (c->peer_shut & VSOCK_SHUTDOWN_RCV))
		return false;
	if (!vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt))
		return false;
	return c->pre_off < c->pre_len || c->rx_ready;
}

/* ---- RX: packets to the guest ---- */

static void hdr_for(const struct vsock *vs, struct vsock_hdr *h, uint32_t local, uint32_t peer,
                    uint16_t op)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = VSOCK_HOST_CID;
	h->dst_cid = vs->opts.cid;
	h->src_port = local;
	h->dst_port = peer;
	h->type = VSOCK_TYPE_STREAM;
	h->op = op;
	h->buf_alloc = VSOCK_TX_BUF;
}

/* Write header h (host order) at the start of the chain; bytes written. */
static uint32_t put_hdr(struct vsock *vs, struct vsock_hdr *h)
{
	struct virtq_writer w;
	vsock_hdr_to_le(h);
	virtq_writer_init(&w, &vs->rx_chain);
	return (uint32_t)virtq_writer_write(&w, h, sizeof(*h));
}

/*
 * Data for the guest from c into the held chain: the CONNECT line's
 * leftover first, then the socket. Returns the packet's length, or 0 when
 * nothing was produced (the socket was drained: c waits for it again).
 */
static uint32_t fill_data(struct vsock *vs, struct vsock_conn *c, struct vsock_hdr *h)
{
	struct virtq_writer w;
	uint32_t room = vs->rx_chain.write_len - (uint32_t)sizeof(*h);
	uint32_t credit = vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt);
	uint32_t want = room < credit ? room : credit;
	if (want > VSOCK_MAX_PKT)
		want = VSOCK_MAX_PKT;
	if (!room) {
		/* A header-only buffer: no data fits (a 0-byte read would look
		 * like EOF). Spend it on a credit update and wait for the next. */
		hdr_for(vs, h, c->local_port, c->peer_port, VSOCK_OP_CREDIT_UPDATE);
		return (uint32_t)sizeof(*h);
	}
	virtq_writer_init(&w, &vs->rx_chain);
	virtq_writer_advance(&w, sizeof(*h));
	ssize_t got;
	if (c->pre_off < c->pre_len) {
		uint32_t n = (uint32_t)(c->pre_len - c->pre_off);
		got = (ssize_t)virtq_writer_write(&w, c->pre + c->pre_off, n < want ? n : want);
		c->pre_off = (uint8_t)(c->pre_off + got);
	} else {
		size_t bytes;
		unsigned cnt = virtq_writer_iov(&w, vs->iov, VIRTQ_MAX_SIZE, want, &bytes);
		do
			got = readv(c->fd, vs->iov, (int)cnt);
		while (got < 0 && errno == EINTR);
		if (got < 0 && errno == EAGAIN) {
			c->rx_ready = false;
			vsock_conn_wake(c);
			return 0;
		}
		if (got < 0) {
			vsock_conn_close(c, true);
			return 0;
		}
		if (got == 0) {
			/* EOF. A peer that is gone altogether gets the guest a RST;
			 * one that only stopped writing, SHUTDOWN. POLLHUP means both
			 * directions are shut, which tells the two apart only while
			 * we have not shut our own writing side. */
			struct pollfd pf = {.fd = c->fd, .events = 0};
			c->rx_ready = false;
			c->host_eof = true;
			if (!c->wr_shut && poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLERR))) {
				vsock_conn_close(c, true);
				return 0;
			}
			c->shut_send |= VSOCK_SHUTDOWN_SEND;
			c->pend |= VSOCK_P_SHUTDOWN;
			return 0;
		}
		if ((size_t)got < bytes) {
			c->rx_ready = false; /* drained: poll again before the next read */
			vsock_conn_wake(c);
		}
	}
	hdr_for(vs, h, c->local_port, c->peer_port, VSOCK_OP_RW);
	h->len = (uint32_t)got;
	c->tx_cnt += (uint32_t)got;
	vs->st.rx_pkts++;
	vs->st.rx_bytes += (uint64_t)got;
	return (uint32_t)sizeof(*h) + (uint32_t)got;
}

/* One packet for c into the held chain: its length, or 0 if none was made. */
static uint32_t fill_conn(struct vsock *vs, struct vsock_conn *c)
{
	struct vsock_hdr h;
	uint32_t len = 0;
	if (c->pend & VSOCK_P_REQUEST) {
		c->pend &= ~VSOCK_P_REQUEST;
		hdr_for(vs, &h, c->local_port, c->peer_port, VSOCK_OP_REQUEST);
	} else if (c->pend & VSOCK_P_RESPONSE) {
		c->pend &= ~VSOCK_P_RESPONSE;
		hdr_for(vs, &h, c->local_port, c->peer_port, VSOCK_OP_RESPONSE);
	} else if (vsock_conn_rx_wanted(c)) {
		len = fill_data(vs, c, &h);
		if (!len)
			return 0;
	} else if (c->pend & VSOCK_P_SHUTDOWN) {
		c->pend &= ~VSOCK_P_SHUTDOWN;
		hdr_for(vs, &h, c->local_port, c->peer_port, VSOCK_OP_SHUTDOWN);
		h.flags = c->shut_send;
	} else if (c->pend & VSOCK_P_CREDIT) {
		hdr_for(vs, &h, c->local_port, c->peer_port, VSOCK_OP_CREDIT_UPDATE);
	} else {
		return 0;
	}
	/* Every packet reports what we forwarded: no separate update owed. */
	h.fwd_cnt = c->fwd_cnt;
	c->fwd_sent = c->fwd_cnt;
	c->pend &= ~VSOCK_P_CREDIT;
	uint32_t hl = put_hdr(vs, &h);
	return len ? len : hl;
}

static bool conn_has_work(const struct vsock_conn *c)
{
	return !c->closing && (c->pend || vsock_conn_rx_wanted(c));
}

static void rx_signal(struct vsock *vs, unsigned *batch)
{
	if (*batch)
		virtio_queue_signal(&vs->vdev, &vs->vdev.queues[VSOCK_QUEUE_RX]);
	*batch = 0;
}

static int rx_task(struct exec *ex, void *arg)
{
	struct vsock *vs = arg;
	struct virtio_queue *q = &vs->vdev.queues[VSOCK_QUEUE_RX];
	bool have = false;
	unsigned batch = 0;

	while (!exec_cancelled(ex)) {
		if (!vs->rst_len && !vs->rxq_head) {
			rx_signal(vs, &batch);
			vs->rx_parked = true;
			int r = exec_waitq_wait(ex, &vs->rx_work);
			vs->rx_parked = false;
			if (r < 0)
				break;
			continue;
		}
		if (!have) {
			if (!q->enabled || virtq_broken(&q->vq)) {
				if (exec_waitq_wait(ex, &vs->rx_kick) < 0)
					break;
				continue;
			}
			int r = virtq_pop(&q->vq, &vs->rx_chain);
			if (r < 0) {
				virtio_needs_reset(&vs->vdev, "malformed RX virtqueue");
				continue;
			}
			if (r == 0) {
				/* No buffers: everything waits in the host sockets. */
				rx_signal(vs, &batch);
				if (exec_waitq_wait(ex, &vs->rx_kick) < 0)
					break;
				continue;
			}
			if (vs->rx_chain.nread || vs->rx_chain.write_len < sizeof(struct vsock_hdr)) {
				vs->st.bad_chains++;
				(void)virtq_push(&q->vq, &vs->rx_chain, 0);
				batch++;
				continue;
			}
			have = true;
		}
		uint32_t len = 0;
		if (vs->rst_len) {
			struct vsock_hdr h;
			unsigned i = vs->rst_first;
			vs->rst_first = (i + 1) % VSOCK_RST_RING;
			vs->rst_len--;
			hdr_for(vs, &h, vs->rst[i].local, vs->rst[i].peer, VSOCK_OP_RST);
			len = put_hdr(vs, &h);
			vs->st.rst_sent++;
		} else {
			struct vsock_conn *c = vs->rxq_head;
			vsock_rxq_del(c);
			len = fill_conn(vs, c);
			if (conn_has_work(c))
				vsock_rxq_add(c); /* to the tail: connections take turns */
		}
		if (!len)
			continue;
		if (virtq_push(&q->vq, &vs->rx_chain, len) < 0)
			virtio_needs_reset(&vs->vdev, "RX virtqueue broke");
		have = false;
		if (++batch == VSOCK_RX_BATCH) {
			rx_signal(vs, &batch);
			exec_yield(ex); /* let TX and the bus run during a flood */
		}
	}
	if (have)
		(void)virtq_push(&q->vq, &vs->rx_chain, 0);
	rx_signal(vs, &batch);
	return 0;
}

/* ---- TX: packets from the guest ---- */

static void tx_refuse(struct vsock *vs, const struct vsock_hdr *h, enum vsock_verdict v)
{
	vs->st.drops[v]++;
	struct vsock_conn *c = vsock_conn_find(vs, h->dst_port, h->src_port);
	if (c && v != VSOCK_PKT_SRC_CID)
		vsock_conn_close(c, vsock_verdict_rst(v, h));
	else if (vsock_verdict_rst(v, h))
		vsock_rst(vs, h->dst_port, h->src_port);
}

static void tx_known(struct vsock *vs, struct vsock_conn *c, const struct vsock_hdr *h,
                     struct virtq_reader *rd)
{
	uint32_t old = vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt);
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case VSOCK_OP_REQUEST: /* a second REQUEST on a live connection: it is confused */
		vsock_conn_close(c, true);
		return;
	case VSOCK_OP_RESPONSE:
		if (c->st != VSOCK_C_REQ_SENT) {
			vsock_conn_close(c, true);
			return;
		}
		vsock_conn_established(c);
		return;
	case VSOCK_OP_RST:
		vsock_conn_close(c, false);
		return;
	case VSOCK_OP_SHUTDOWN:
		vsock_conn_shutdown(c, h->flags);
		return;
	case VSOCK_OP_CREDIT_REQUEST:
		c->pend |= VSOCK_P_CREDIT;
		vsock_rxq_add(c);
		break;
	case VSOCK_OP_RW: {
		if (c->st != VSOCK_C_OPEN || (c->peer_shut & VSOCK_SHUTDOWN_SEND)) {
			vsock_conn_close(c, true);
			return;
		}
		if (!vsock_fits_credit(VSOCK_TX_BUF, c->rx_cnt, c->fwd_cnt, h->len)) {
			vs->st.credit_violations++; /* more than we said we could hold */
			vsock_conn_close(c, true);
			return;
		}
		size_t bytes;
		unsigned cnt = virtq_reader_iov(rd, vs->iov, VIRTQ_MAX_SIZE, h->len, &bytes);
		vs->st.tx_pkts++;
		vs->st.tx_bytes += h->len;
		if (vsock_conn_send(c, vs->iov, cnt, (uint32_t)bytes) < 0)
			return;
		break;
	}
	default:
		break; /* CREDIT_UPDATE: the credit above is all */
	}
	uint32_t now = vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt);
	if (!old && now && c->st == VSOCK_C_OPEN) {
		if (c->pre_off < c->pre_len || c->rx_ready)
			vsock_rxq_add(c);
		vsock_conn_wake(c); /* it may have stopped polling for input */
	}
}

static void tx_one(struct vsock *vs, const struct virtq_chain *ch)
{
	struct vsock_hdr h;
	struct virtq_reader rd;
	if (ch->read_len < sizeof(h)) {
		vs->st.drops[VSOCK_PKT_SHORT]++;
		return;
	}
	virtq_reader_init(&rd, ch);
	/* Copied once: only the copy is checked and used. */
	(void)virtq_reader_read(&rd, &h, sizeof(h));
	vsock_hdr_from_le(&h);
	enum vsock_verdict v = vsock_check(&h, ch->read_len - (uint32_t)sizeof(h), vs->opts.cid);
	if (v != VSOCK_PKT_OK) {
		tx_refuse(vs, &h, v);
		return;
	}
	struct vsock_conn *c = vsock_conn_find(vs, h.dst_port, h.src_port);
	if (c) {
		tx_known(vs, c, &h, &rd);
		return;
	}
	if (h.op == VSOCK_OP_RST)
		return;
	if (h.op != VSOCK_OP_REQUEST) {
		vs->st.unknown_conn++;
		vsock_rst(vs, h.dst_port, h.src_port);
		return;
	}
	/* A guest connect to the host's port dst_port. */
	c = vsock_conn_new(vs, -1, VSOCK_C_CONNECTING, h.dst_port, h.src_port);
	if (!c) {
		vs->st.refused++;
		vsock_rst(vs, h.dst_port, h.src_port);
		return;
	}
	c->peer_buf_alloc = h.buf_alloc;
	c->peer_fwd_cnt = h.fwd_cnt;
}

static int vsock_kick(struct virtio_dev *d, struct virtio_queue *q)
{
	struct vsock *vs = (struct vsock *)d;
	int r;
	if (q->index == VSOCK_QUEUE_RX) {
		exec_waitq_wake(d->ex, &vs->rx_kick, 1);
		return 0;
	}
	if (q->index != VSOCK_QUEUE_TX)
		return 0; /* event buffers are kept for events that never come */
	while ((r = virtq_pop(&q->vq, &vs->tx_chain)) > 0) {
		if (vs->active)
			tx_one(vs, &vs->tx_chain);
		if ((r = virtq_push(&q->vq, &vs->tx_chain, 0)) < 0)
			return r;
	}
	return r;
}

/* ---- lifecycle ---- */

static void vsock_config_read(struct virtio_dev *d, uint32_t off, void *buf, uint32_t len)
{
	struct vsock *vs = (struct vsock *)d;
	memcpy(buf, (const uint8_t *)&vs->cfg + off, len);
}

static void vsock_config_write(struct virtio_dev *d, uint32_t off, const void *buf, uint32_t len)
{
	(void)d, (void)off, (void)buf, (void)len; /* guest_cid is read-only */
}

static int vsock_activate(struct virtio_dev *d)
{
	struct vsock *vs = (struct vsock *)d;
	exec_waitq_init(&vs->rx_work);
	exec_waitq_init(&vs->rx_kick);
	exec_waitq_init(&vs->drained);
	memset(vs->hash, 0, sizeof(vs->hash));
	vs->rxq_head = vs->rxq_tail = NULL;
	vs->rst_first = vs->rst_len = 0;
	vs->nconns = 0;
	if (!vs->next_port)
		vs->next_port = VSOCK_EPHEMERAL_BASE;
	vs->active = true;
	int r = exec_spawn(d->ex, rx_task, vs, 0, &vs->rx_task);
	if (r < 0) {
		vs->rx_task = NULL;
		return r;
	}
	return vsock_accept_start(vs);
}

static void vsock_reset(struct virtio_dev *d)
{
	struct vsock *vs = (struct vsock *)d;
	if (!vs->active)
		return;
	vs->active = false;
	vsock_conns_stop(vs);
	if (vs->rx_task) {
		int r = exec_task_cancel(d->ex, vs->rx_task);
		r = exec_join(d->ex, vs->rx_task);
		(void)r;
		vs->rx_task = NULL;
	}
	vs->rst_len = 0;
}

/*
 * IPC_METRICS: reads/bytes_read are packets and payload to the guest,
 * writes/bytes_written from it; errors are refused packets, RSTs that did
 * not fit and credit violations; other counts connections opened;
 * inflight is the live connections.
 */
void vsock_metrics(void *state, struct ipc_metrics *out)
{
	struct vsock *vs = state;
	const struct vsock_stats *s = &vs->st;
	memset(out, 0, sizeof(*out));
	out->reads = s->rx_pkts;
	out->bytes_read = s->rx_bytes;
	out->writes = s->tx_pkts;
	out->bytes_written = s->tx_bytes;
	out->requests = s->rx_pkts + s->tx_pkts;
	for (unsigned i = 1; i < VSOCK_PKT_NVERDICTS; i++)
		out->errors += s->drops[i];
	out->errors += s->rst_dropped + s->credit_violations + s->bad_chains + s->unknown_conn;
	out->other = s->conns_host + s->conns_guest;
	out->inflight = vs->nconns;
	for (unsigned i = 0; i < 3; i++)
		out->notifications += vs->vdev.queues[i].kicks;
}

const struct virtio_device_ops vsock_ops = {
    .name = "virtio-vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .pci_class = 0xff, /* "unassigned class", as other VMMs give vsock */
    .pci_subclass = 0x00,
    .num_queues = 3,
    .queue_max_size = VSOCK_QUEUE_SIZE,
    .features = 0, /* stream only: no SEQPACKET */
    .config_size = sizeof(struct vsock_config),
    .config_read = vsock_config_read,
    .config_write = vsock_config_write,
    .activate = vsock_activate,
    .queue_kick = vsock_kick,
    .reset = vsock_reset,
};
