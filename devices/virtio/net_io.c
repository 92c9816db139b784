/*
 * virtio-net hot paths. TX runs in the transport's coroutine of each TX
 * queue: every chain is checked (header copied once, net_tx_check) and its
 * frame staged — the checked header copy, then guest RAM in place — and up
 * to NET_TX_BATCH staged frames go to the TAP as one io_uring submission of
 * WRITEVs, issued in order by the same io_uring_enter that then reaps them,
 * instead of one writev(2) each (no per-frame syscall entry, seccomp filter
 * or libc wrapper). RX has one coroutine per queue pair: it holds up to
 * NET_RX_HOLD popped chains and reads several frames per pass straight into
 * them, one READV per frame in one submission (spanning several chains with
 * MRG_RXBUF); it parks on the RX queue's kicks when the guest has no
 * buffers — frames then wait in the TAP's queue, never in ours — or on the
 * TAP's readiness (IORING_OP_POLL_ADD) when nothing is queued. The TAP is
 * non-blocking, so a read of an empty TAP or a write to a full one completes
 * at once with -EAGAIN instead of waiting in the kernel. A backend without
 * ring_io (test fakes) gets the same batches one readv/writev call at a time.
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

/*
 * Check chain c and stage its frame in slot i of t: the header copy, then
 * iovecs over the rest of the chain from *iov_used on. false: dropped (the
 * caller gives the chain back at once).
 */
static bool tx_stage(struct net *n, struct net_tx *t, const struct virtq_chain *c, unsigned i,
                     unsigned *iov_used)
{
	struct virtio_net_hdr *h = &t->hdr[i];
	struct virtq_reader rd;

	if (c->read_len < NET_HDR_LEN) {
		tx_drop(n, NET_TX_SHORT);
		return false;
	}
	virtq_reader_init(&rd, c);
	/* The header is copied once; only the copy is checked and sent, so the
	 * guest rewriting it meanwhile changes nothing. */
	if (virtq_reader_read(&rd, h, sizeof(*h)) != sizeof(*h)) {
		tx_drop(n, NET_TX_SHORT);
		return false;
	}
	net_hdr_from_le(h);
	uint32_t frame_len = c->read_len - NET_HDR_LEN;
	enum net_tx_verdict v = net_tx_check(h, frame_len, &n->txl);
	if (v != NET_TX_OK) {
		tx_drop(n, v);
		return false;
	}
	h->num_buffers = 0;
	net_hdr_to_le(h);
	struct iovec *iov = t->iov + *iov_used;
	size_t bytes;
	iov[0] = (struct iovec){.iov_base = h, .iov_len = sizeof(*h)};
	unsigned cnt = 1 + virtq_reader_iov(&rd, iov + 1, VIRTQ_MAX_SIZE, frame_len, &bytes);
	if (bytes != frame_len) {
		tx_drop(n, NET_TX_SHORT);
		return false;
	}
	t->head[i] = c->head;
	t->len[i] = frame_len;
	t->iov_at[i] = (uint16_t)*iov_used;
	t->iov_cnt[i] = (uint16_t)cnt;
	*iov_used += cnt;
	return true;
}

/* Count slot i's outcome, first retrying a full TAP (after POLLOUT) or an interrupted write. */
static void tx_finish(struct net *n, unsigned pair, struct net_tx *t, unsigned i, ssize_t r,
                      bool *stopping)
{
	const struct iovec *iov = t->iov + t->iov_at[i];
	if (r == -EOPNOTSUPP && n->ring_io) {
		n->ring_io = false; /* no RWF_NOWAIT on this kernel: plain writev from now on */
		r = -EINTR;
	}
	while (r == -EAGAIN || r == -EINTR) {
		if (*stopping) {
			n->st.tx_drops++; /* reset: the rest is given back unsent */
			return;
		}
		if (r == -EAGAIN && exec_poll(n->vdev.ex, n->be.fd[pair], POLLOUT) == -ECANCELED) {
			*stopping = true;
			continue;
		}
		r = n->be.ops->writev(&n->be, pair, iov, t->iov_cnt[i]);
	}
	if (r >= 0) {
		n->st.tx_packets++;
		n->st.tx_bytes += t->len[i];
	} else {
		/* The kernel refused the frame (its own checks of the headers):
		 * the guest's problem, counted, never the VM's. */
		n->st.tx_errors++;
		n->st.tx_drops++;
	}
}

/* Write the frames staged in slots [0, cnt), in order. */
static void tx_send(struct net *n, unsigned pair, struct net_tx *t, unsigned cnt, bool *stopping)
{
	struct exec *ex = n->vdev.ex;
	bool ring = n->ring_io;
	if (ring) {
		struct exec_batch b;
		exec_batch_init(&b);
		for (unsigned i = 0; i < cnt; i++) {
			/* Offset 0: the TAP has no file position. NOWAIT: a full
			 * TAP answers -EAGAIN (retried after POLLOUT below). */
			int r = exec_batch_writev_flags(ex, &b, &t->op[i], n->be.fd[pair],
			                                t->iov + t->iov_at[i], t->iov_cnt[i], 0,
			                                RWF_NOWAIT);
			if (r < 0)
				t->op[i].res = r == -ECANCELED ? -EAGAIN : r;
		}
		/* Returns once all completed, cancelled or not: the results stand. */
		int wr = exec_batch_wait(ex, &b);
		(void)wr;
	}
	for (unsigned i = 0; i < cnt; i++) {
		ssize_t r = ring ? t->op[i].res
		                 : n->be.ops->writev(&n->be, pair, t->iov + t->iov_at[i], t->iov_cnt[i]);
		tx_finish(n, pair, t, i, r, stopping);
	}
}

int net_tx_kick(struct net *n, struct virtio_queue *q, unsigned pair)
{
	struct virtq_chain *c = &n->tx_chain[pair];
	struct net_tx *t = &n->tx[pair];
	bool stopping = false;

	for (;;) {
		unsigned cnt = 0, iov_used = 0;
		int r = 1;
		/* Stage until the batch or its iovecs are full or the ring is empty. */
		while (cnt < NET_TX_BATCH && iov_used + VIRTQ_MAX_SIZE + 1 <= NET_TX_IOV) {
			if ((r = virtq_pop(&q->vq, c)) <= 0)
				break;
			if (tx_stage(n, t, c, cnt, &iov_used))
				cnt++;
			else if ((r = virtq_push_read(&q->vq, c->head)) < 0)
				break;
		}
		if (cnt) {
			tx_send(n, pair, t, cnt, &stopping);
			for (unsigned i = 0; i < cnt; i++) {
				int pr = virtq_push_read(&q->vq, t->head[i]);
				if (pr < 0 && r >= 0)
					r = pr;
			}
			/* Here, not in the transport: interrupts are counted per direction. */
			net_signal(n, q, &n->st.tx_irqs);
		}
		if (r < 0)
			return r;
		if (stopping || r == 0)
			return 0; /* stopping: the transport leaves the rest for after reset */
	}
}

/* ---- RX ---- */

static struct virtq_chain *held(struct net_rx *rx, unsigned pos)
{
	return &rx->chains[rx->order[pos]];
}

/*
 * Pop chains until the hold is full or the ring is empty. Chains that
 * cannot even take a header go back at once with length 0. 0, or
 * virtq_pop's fatal error.
 */
static int rx_fill(struct net *n, struct net_rx *rx, struct virtio_queue *q)
{
	while (rx->nheld < NET_RX_HOLD) {
		uint8_t idx = rx->free_idx[NET_RX_HOLD - rx->nheld - 1];
		struct virtq_chain *c = &rx->chains[idx];
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
		rx->order[rx->nheld++] = idx;
	}
	return 0;
}

/*
 * Plan up to max reads over the held chains, oldest first: each covers
 * rx_want bytes, in one chain without MRG_RXBUF (a frame may not span
 * chains then), over as many consecutive chains as that takes with it.
 * A read short of rx_want goes ahead only as the first one, and only when
 * no more buffers can come (the hold is full, or every descriptor is
 * already ours). Returns the number of reads.
 */
static unsigned rx_plan(struct net *n, struct net_rx *rx, struct virtio_queue *q, unsigned max)
{
	unsigned ns = 0, iv = 0, pos = 0;
	while (ns < max && pos < rx->nheld) {
		unsigned at = iv, k = pos;
		uint32_t total = 0;
		while (k < rx->nheld && total < n->rx_want && iv < NET_RX_IOV) {
			struct virtq_writer w;
			size_t bytes;
			virtq_writer_init(&w, held(rx, k));
			iv += virtq_writer_iov(&w, rx->iov + iv, NET_RX_IOV - iv, n->rx_want - total,
			                       &bytes);
			rx->cover[k++] = (uint32_t)bytes;
			total += (uint32_t)bytes;
			if (!n->mrg)
				break;
		}
		if (n->mrg && total < n->rx_want &&
		    (ns || (rx->nheld < NET_RX_HOLD && virtq_inflight(&q->vq) < q->vq.size)))
			break;
		/* The TAP truncates a frame to the buffers silently: a spare byte
		 * past them tells a frame that did not fit from one that just did. */
		rx->iov[iv++] = (struct iovec){.iov_base = &rx->spare, .iov_len = 1};
		rx->slot[ns++] = (struct net_rx_slot){
		    .first = pos, .nchains = k - pos, .iov_at = at, .iov_cnt = iv - at, .cap = total};
		pos = k;
	}
	return ns;
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

/* A frame of got bytes (header included) landed in slot s's chains: hand over those it used. */
static int rx_deliver(struct net *n, struct net_rx *rx, struct virtio_queue *q,
                      const struct net_rx_slot *s, uint32_t got)
{
	unsigned k = 0;
	uint32_t left = got;
	while (left && k < s->nchains) {
		uint32_t *cov = &rx->cover[s->first + k];
		*cov = left < *cov ? left : *cov;
		left -= *cov;
		k++;
	}
	rx_fix_header(n, held(rx, s->first), (uint16_t)k);
	for (unsigned i = 0; i < k; i++) {
		unsigned pos = s->first + i;
		rx->taken[pos] = true;
		int r = virtq_push(&q->vq, held(rx, pos), rx->cover[pos]);
		if (r < 0)
			return r;
	}
	n->st.rx_packets++;
	n->st.rx_bytes += got - NET_HDR_LEN;
	return 0;
}

/* Drop the chains handed over in this pass from the hold, keeping the others' order. */
static void rx_compact(struct net_rx *rx)
{
	unsigned keep = 0, nfree = NET_RX_HOLD - rx->nheld;
	for (unsigned pos = 0; pos < rx->nheld; pos++) {
		if (rx->taken[pos]) {
			rx->taken[pos] = false;
			rx->free_idx[nfree++] = rx->order[pos];
		} else {
			rx->order[keep++] = rx->order[pos];
		}
	}
	rx->nheld = keep;
}

/* What a pass saw besides frames. */
struct rx_pass {
	unsigned frames;
	bool empty;    /* a read found the TAP empty */
	bool detached; /* a read failed (the queue was detached: MQ change) */
	bool broken;   /* the RX virtqueue broke while handing frames over */
};

/* Issue the planned reads (one submission with ring_io) and hand over what they got, in order. */
static void rx_pass(struct net *n, struct net_rx *rx, struct virtio_queue *q, unsigned ns,
                    struct rx_pass *out)
{
	struct exec *ex = n->vdev.ex;
	bool ring = n->ring_io;
	if (ring) {
		struct exec_batch b;
		exec_batch_init(&b);
		for (unsigned i = 0; i < ns; i++) {
			const struct net_rx_slot *s = &rx->slot[i];
			/* NOWAIT: an empty TAP answers -EAGAIN at once rather than
			 * holding the batch until a frame comes. */
			int r = exec_batch_readv_flags(ex, &b, &rx->op[i], n->be.fd[rx->pair],
			                               rx->iov + s->iov_at, s->iov_cnt, 0, RWF_NOWAIT);
			if (r < 0)
				rx->op[i].res = -EINTR; /* not issued: the chains stay held */
		}
		int wr = exec_batch_wait(ex, &b); /* all completed, cancelled or not */
		(void)wr;
	}
	*out = (struct rx_pass){0};
	for (unsigned i = 0; i < ns; i++) {
		const struct net_rx_slot *s = &rx->slot[i];
		ssize_t got;
		if (ring)
			got = rx->op[i].res;
		else if (out->empty)
			break; /* read one at a time: the first -EAGAIN ends the pass */
		else
			got = n->be.ops->readv(&n->be, rx->pair, rx->iov + s->iov_at, s->iov_cnt);
		if (got == -EOPNOTSUPP && ring) {
			n->ring_io = false; /* no RWF_NOWAIT here: plain readv from the next pass on */
			continue;
		}
		if (got == -EAGAIN) {
			out->empty = true;
		} else if (got == -EINTR) {
			continue;
		} else if (got < 0) {
			n->st.rx_drops++;
			out->detached = true;
		} else if ((uint64_t)got > s->cap || got < NET_HDR_LEN + NET_ETH_HLEN) {
			/* Truncated (larger than the buffers, or than negotiated) or a
			 * runt: dropped; the chains stay ours for the next frame. */
			n->st.rx_drops++;
		} else if (!out->broken) {
			if (rx_deliver(n, rx, q, s, (uint32_t)got) < 0)
				out->broken = true;
			else
				out->frames++;
		}
	}
	rx_compact(rx);
}

static int rx_task(struct exec *ex, void *arg)
{
	struct net_rx *rx = arg;
	struct net *n = rx->n;
	struct virtio_queue *q = &n->vdev.queues[2 * rx->pair];
	unsigned batch = 0;
	int fd = n->be.fd[rx->pair];

	while (!exec_cancelled(ex)) {
		if (!rx->active || !q->enabled || virtq_broken(&q->vq)) {
			if (batch)
				net_signal(n, q, &n->st.rx_irqs), batch = 0;
			if (exec_sem_wait(ex, &rx->kick) < 0)
				break;
			continue;
		}
		if (rx_fill(n, rx, q) < 0) {
			virtio_needs_reset(&n->vdev, "malformed RX virtqueue");
			continue; /* broken now: parks above until reset */
		}
		unsigned ns = rx_plan(n, rx, q, rx->want);
		if (!ns) {
			/* No room: leave the frames in the TAP until the guest refills. */
			if (batch)
				net_signal(n, q, &n->st.rx_irqs), batch = 0;
			if (exec_sem_wait(ex, &rx->kick) < 0)
				break;
			continue;
		}
		struct rx_pass p;
		rx_pass(n, rx, q, ns, &p);
		batch += p.frames;
		if (p.broken) {
			virtio_needs_reset(&n->vdev, "RX virtqueue broke");
			continue;
		}
		/* Read as many next time as this pass found, doubling while the
		 * TAP keeps up: reads of an empty TAP are wasted work. */
		if (p.empty)
			rx->want = p.frames ? p.frames : 1;
		else if (ns == rx->want)
			rx->want = 2 * ns < NET_RX_SLOTS ? 2 * ns : NET_RX_SLOTS;
		if (p.detached) {
			if (batch)
				net_signal(n, q, &n->st.rx_irqs), batch = 0;
			if (exec_sem_wait(ex, &rx->kick) < 0)
				break;
			continue;
		}
		if (p.empty) {
			if (batch)
				net_signal(n, q, &n->st.rx_irqs), batch = 0;
			if (exec_poll(ex, fd, POLLIN) == -ECANCELED)
				break;
			continue;
		}
		if (batch >= NET_RX_BATCH) {
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
	rx->nheld = 0;
	rx->want = 1;
	for (unsigned i = 0; i < NET_RX_HOLD; i++) {
		rx->free_idx[i] = (uint8_t)i;
		rx->taken[i] = false;
	}
	exec_sem_init(&rx->kick, 0);
	/* Once per activation, never per frame: 64 chains of 4 KiB. */
	rx->chains = calloc(NET_RX_HOLD, sizeof(*rx->chains));
	if (!rx->chains)
		return -ENOMEM;
	int r = exec_spawn(n->vdev.ex, rx_task, rx, 0, &rx->task);
	if (r < 0) {
		rx->task = NULL;
		free(rx->chains);
		rx->chains = NULL;
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
	free(rx->chains);
	rx->chains = NULL;
}
