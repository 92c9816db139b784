/*
 * virtio-net hot paths. TX runs in the transport's coroutine of each TX
 * queue: every chain is checked (header copied once, net_tx_check) and
 * written to the backend straight from guest RAM behind the checked header
 * copy. RX has one coroutine per queue pair: it holds enough popped chains
 * for one frame, reads the frame straight into them (spanning several with
 * MRG_RXBUF), and parks on the RX queue's kicks when the guest has no
 * buffers — frames then wait in the TAP's queue, never in ours — or on the
 * TAP's readiness (IORING_OP_POLL_ADD) when nothing is queued. The TAP is
 * non-blocking, so readv/writev complete inline: a burst is drained with
 * one syscall per frame and one interrupt per batch.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtio/net_priv.h"
#include "devices/virtio/virtio_pci.h"

void net_signal(struct net *n, struct virtio_queue *q, uint64_t *irqs)
{
	uint64_t before = n->vdev.pci->irqs;
	virtio_queue_signal(&n->vdev, q);
	*irqs += n->vdev.pci->irqs - before;
}

/* ---- TX ---- */

static void tx_drop(struct net *n, enum net_tx_verdict why)
{
	n->st.tx_drops++;
	n->st.tx_drop_reason[why & 7]++;
}

/* Send one chain's frame, or drop it. Returns -ECANCELED when the task is being stopped. */
static int tx_one(struct net *n, unsigned pair, const struct virtq_chain *c)
{
	struct exec *ex = n->vdev.ex;
	struct virtio_net_hdr h;
	struct virtq_reader rd;

	if (c->read_len < NET_HDR_LEN) {
		tx_drop(n, NET_TX_SHORT);
		return 0;
	}
	virtq_reader_init(&rd, c);
	/* The header is copied once; only the copy is checked and sent, so the
	 * guest rewriting it meanwhile changes nothing. */
	if (virtq_reader_read(&rd, &h, sizeof(h)) != sizeof(h)) {
		tx_drop(n, NET_TX_SHORT);
		return 0;
	}
	net_hdr_from_le(&h);
	uint32_t frame_len = c->read_len - NET_HDR_LEN;
	enum net_tx_verdict v = net_tx_check(&h, frame_len, &n->txl);
	if (v != NET_TX_OK) {
		tx_drop(n, v);
		return 0;
	}
	h.num_buffers = 0;
	net_hdr_to_le(&h);
	struct iovec *iov = n->tx_iov;
	size_t bytes;
	iov[0] = (struct iovec){.iov_base = &h, .iov_len = sizeof(h)};
	unsigned cnt = 1 + virtq_reader_iov(&rd, iov + 1, VIRTQ_MAX_SIZE, frame_len, &bytes);
	if (bytes != frame_len) {
		tx_drop(n, NET_TX_SHORT);
		return 0;
	}
	for (;;) {
		ssize_t r = n->be.ops->writev(&n->be, pair, iov, cnt);
		if (r >= 0) {
			n->st.tx_packets++;
			n->st.tx_bytes += frame_len;
			return 0;
		}
		if (r == -EINTR)
			continue;
		if (r != -EAGAIN) {
			/* The kernel refused the frame (its own checks of the
			 * headers): the guest's problem, counted, never the VM's. */
			n->st.tx_errors++;
			n->st.tx_drops++;
			return 0;
		}
		int pr = exec_poll(ex, n->be.fd[pair], POLLOUT);
		if (pr == -ECANCELED)
			return pr;
	}
}

int net_tx_kick(struct net *n, struct virtio_queue *q, unsigned pair)
{
	struct virtq_chain *c = &n->tx_chain[pair];
	unsigned batch = 0;
	int r;
	while ((r = virtq_pop(&q->vq, c)) > 0) {
		int sr = tx_one(n, pair, c);
		r = virtq_push(&q->vq, c, 0);
		if (r < 0)
			return r;
		if (sr < 0)
			return 0; /* stopping: the transport leaves the rest for after reset */
		if (++batch == NET_TX_BATCH) {
			net_signal(n, q, &n->st.tx_irqs);
			batch = 0;
		}
	}
	/* Signal here rather than in the transport so interrupts are counted per direction. */
	net_signal(n, q, &n->st.tx_irqs);
	return r;
}

/* ---- RX ---- */

static struct virtq_chain *held(struct net_rx *rx, unsigned i)
{
	return &rx->held[(rx->first + i) % rx->hold_max];
}

static uint32_t held_bytes(struct net_rx *rx)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < rx->nheld; i++)
		sum += held(rx, i)->write_len;
	return sum > UINT32_MAX ? UINT32_MAX : (uint32_t)sum;
}

/*
 * Pop chains until they can take the largest frame the guest may get, the
 * hold is full or the ring is empty. Chains that cannot even take a header
 * go back at once with length 0. 0, or virtq_pop's fatal error.
 */
static int rx_fill(struct net *n, struct net_rx *rx, struct virtio_queue *q)
{
	uint32_t have = held_bytes(rx);
	while (rx->nheld < rx->hold_max && have < n->rx_want) {
		struct virtq_chain *c = held(rx, rx->nheld);
		int r = virtq_pop(&q->vq, c);
		if (r <= 0)
			return r;
		if (c->write_len < NET_HDR_LEN || c->nread) {
			/* A guest bug: readable parts or too short for a header. */
			n->st.rx_bad_chains++;
			if ((r = virtq_push(&q->vq, c, 0)) < 0)
				return r;
			continue;
		}
		rx->nheld++;
		have += c->write_len;
	}
	return 0;
}

/* Whether a read can go ahead with what is held. */
static bool rx_ready(struct net *n, struct net_rx *rx, struct virtio_queue *q)
{
	if (!rx->nheld)
		return false;
	if (rx->nheld == rx->hold_max || held_bytes(rx) >= n->rx_want)
		return true;
	/* Every descriptor is already ours: no more can come, so use what there is. */
	return virtq_inflight(&q->vq) == q->vq.size;
}

/* iovecs over the held chains, at most rx_want bytes; returns the count and *cap bytes. */
static unsigned rx_iov(struct net *n, struct net_rx *rx, uint32_t *cap)
{
	unsigned cnt = 0;
	uint32_t total = 0;
	for (unsigned i = 0; i < rx->nheld; i++)
		rx->cover[i] = 0;
	for (unsigned i = 0; i < rx->nheld && cnt < NET_RX_IOV && total < n->rx_want; i++) {
		struct virtq_writer w;
		size_t bytes;
		virtq_writer_init(&w, held(rx, i));
		cnt += virtq_writer_iov(&w, rx->iov + cnt, NET_RX_IOV - cnt, n->rx_want - total,
		                        &bytes);
		rx->cover[i] = (uint32_t)bytes;
		total += (uint32_t)bytes;
	}
	*cap = total;
	return cnt;
}

/* Rewrite the header at the start of chain c (the device's until pushed). */
static void rx_fix_header(struct net *n, const struct virtq_chain *c, uint16_t nbufs)
{
	struct virtq_writer w;
	struct iovec iov[NET_HDR_LEN];
	size_t bytes, off = 0;
	struct virtio_net_hdr h;
	virtq_writer_init(&w, c);
	unsigned cnt = virtq_writer_iov(&w, iov, NET_HDR_LEN, NET_HDR_LEN, &bytes);
	memset(&h, 0, sizeof(h));
	for (unsigned i = 0; i < cnt; i++) {
		memcpy((uint8_t *)&h + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	if (!n->guest_csum) {
		/* Without GUEST_CSUM the flags must be zero (the TAP may say DATA_VALID). */
		h.flags = 0;
		h.csum_start = h.csum_offset = 0;
	}
	h.num_buffers = htole16(nbufs);
	(void)virtq_writer_write(&w, &h, sizeof(h));
}

/* A frame of got bytes (header included) landed in the held chains: hand them over. */
static int rx_deliver(struct net *n, struct net_rx *rx, struct virtio_queue *q, uint32_t got)
{
	unsigned k = 0;
	uint32_t left = got;
	while (left && k < rx->nheld) {
		uint32_t take = left < rx->cover[k] ? left : rx->cover[k];
		left -= take;
		rx->cover[k] = take;
		k++;
	}
	rx_fix_header(n, held(rx, 0), (uint16_t)k);
	for (unsigned i = 0; i < k; i++) {
		int r = virtq_push(&q->vq, held(rx, i), rx->cover[i]);
		if (r < 0)
			return r;
	}
	rx->first = (rx->first + k) % rx->hold_max;
	rx->nheld -= k;
	n->st.rx_packets++;
	n->st.rx_bytes += got - NET_HDR_LEN;
	return 0;
}

static int rx_task(struct exec *ex, void *arg)
{
	struct net_rx *rx = arg;
	struct net *n = rx->n;
	struct virtio_queue *q = &n->vdev.queues[2 * rx->pair];
	unsigned batch = 0;
	int fd = n->be.fd[rx->pair];

	while (!exec_cancelled(ex)) {
		int r;
		if (!rx->active || !q->enabled || virtq_broken(&q->vq)) {
			if (batch)
				net_signal(n, q, &n->st.rx_irqs), batch = 0;
			if (exec_sem_wait(ex, &rx->kick) < 0)
				break;
			continue;
		}
		if ((r = rx_fill(n, rx, q)) < 0) {
			virtio_needs_reset(&n->vdev, "malformed RX virtqueue");
			continue; /* broken now: parks above until reset */
		}
		if (!rx_ready(n, rx, q)) {
			/* No room: leave the frames in the TAP until the guest refills. */
			if (batch)
				net_signal(n, q, &n->st.rx_irqs), batch = 0;
			if (exec_sem_wait(ex, &rx->kick) < 0)
				break;
			continue;
		}
		uint32_t cap;
		unsigned cnt = rx_iov(n, rx, &cap);
		/* The TAP truncates a frame to the buffers silently: a spare byte
		 * past them tells a frame that did not fit from one that just did. */
		rx->iov[cnt++] = (struct iovec){.iov_base = &rx->spare, .iov_len = 1};
		ssize_t got = n->be.ops->readv(&n->be, rx->pair, rx->iov, cnt);
		if (got == -EAGAIN) {
			if (batch)
				net_signal(n, q, &n->st.rx_irqs), batch = 0;
			r = exec_poll(ex, fd, POLLIN);
			if (r == -ECANCELED)
				break;
			continue;
		}
		if (got == -EINTR)
			continue;
		if (got < 0) {
			/* EBADFD: the queue was detached meanwhile (MQ change). */
			n->st.rx_drops++;
			if (exec_sem_wait(ex, &rx->kick) < 0)
				break;
			continue;
		}
		if ((uint64_t)got > cap || got < NET_HDR_LEN + NET_ETH_HLEN) {
			/* Truncated (larger than the buffers, or than negotiated) or a
			 * runt: dropped; the chains stay ours for the next frame. */
			n->st.rx_drops++;
			continue;
		}
		if (rx_deliver(n, rx, q, (uint32_t)got) < 0) {
			virtio_needs_reset(&n->vdev, "RX virtqueue broke");
			continue;
		}
		if (++batch == NET_RX_BATCH) {
			net_signal(n, q, &n->st.rx_irqs);
			batch = 0;
			exec_yield(ex); /* let TX and the bus run during a flood */
		}
	}
	if (batch)
		net_signal(n, q, &n->st.rx_irqs);
	return 0;
}

int net_rx_start(struct net *n, unsigned pair)
{
	struct net_rx *rx = &n->rx[pair];
	rx->n = n;
	rx->pair = pair;
	rx->hold_max = n->mrg ? NET_RX_HOLD : 1;
	rx->first = rx->nheld = 0;
	exec_sem_init(&rx->kick, 0);
	rx->held = calloc(rx->hold_max, sizeof(*rx->held));
	if (!rx->held)
		return -ENOMEM;
	int r = exec_spawn(n->vdev.ex, rx_task, rx, 0, &rx->task);
	if (r < 0) {
		rx->task = NULL;
		free(rx->held);
		rx->held = NULL;
	}
	return r;
}

void net_rx_stop(struct net *n, unsigned pair)
{
	struct net_rx *rx = &n->rx[pair];
	struct virtio_queue *q = &n->vdev.queues[2 * pair];
	if (rx->task) {
		int r = exec_task_cancel(n->vdev.ex, rx->task);
		r = exec_join(n->vdev.ex, rx->task);
		(void)r;
		rx->task = NULL;
	}
	/* Chains popped for frames that never came are finished, empty. */
	for (unsigned i = 0; i < rx->nheld; i++)
		(void)virtq_push(&q->vq, held(rx, i), 0);
	rx->nheld = 0;
	free(rx->held);
	rx->held = NULL;
}
