/*
 * `net.bench`: virtio-net frame rates as the guest sees them, TSC-timed.
 *
 * TX phase (net.secs seconds): UDP frames of net.size bytes (Ethernet frame
 * length without FCS, 60 .. MTU + 14) to the peer's net.dport (default 9,
 * discard), net.depth (64) frames in flight on TX queue 0. Every descriptor
 * points at the same prebuilt frame, so a frame costs a used-ring read, an
 * avail store and, now and then, a kick; completions are batched (EVENT_IDX:
 * an interrupt once half the frames in flight are done).
 *
 * RX phase (net.secs seconds): sends a UDP datagram "ringvm-net-bench
 * rx-start" to the peer's net.dport — the host's cue to blast UDP at us —
 * counts every non-ARP frame received (ARP is still answered) and reposts
 * its buffers, then sends "ringvm-net-bench rx-end". Rates count from the
 * first frame received to the end of the phase.
 *
 * net.phases=tx|rx|tx,rx (default tx,rx). Lines: `PROBE net.bench.dev ...`,
 * `PROBE net.bench.tx size= frames= us= pps= gbps= depth= kicks= irqs=`,
 * `PROBE net.bench.rx frames= bytes= us= pps= gbps= irqs= kicks= bad_frame=`,
 * `PROBE net.bench size= tx_pps= tx_gbps= rx_pps= rx_gbps= result=ok`.
 */
#include "net.h"

static uint64_t rx_frames, rx_bytes, rx_first;

static bool count_hook(struct net_dev *n, unsigned q, uint8_t *f, uint32_t len)
{
	(void)n;
	(void)q;
	if (len >= 14 && net_ld16(f + 12) == net_bswap16(ETH_P_ARP))
		return false; /* the stack answers it */
	if (!rx_frames++)
		rx_first = rdtsc();
	rx_bytes += len;
	return true;
}

static const char *send_marker(struct net_dev *n, uint16_t dport, const char *word)
{
	unsigned idx;
	uint8_t *b = net_pool_get(n, &idx);
	if (!b)
		return "no-tx-buffer";
	size_t wl = strlen(word);
	uint32_t len = net_build_udp(n, b + NET_HDR_LEN, 9000, dport, (uint32_t)wl);
	memcpy(b + NET_HDR_LEN + 42, word, wl);
	if (!net_tx_pool(n, 0, idx, len)) {
		net_pool_put(n, idx);
		return "tx-full";
	}
	net_flush(n);
	return NULL;
}

/* hundredths of Gbit/s for bytes in us */
static uint64_t gbps100(uint64_t bytes, uint64_t us)
{
	return us ? bytes * 8 / (us * 10) : 0;
}

struct tx_result {
	uint64_t frames, us, kicks, irqs, bad;
};

static const char *tx_phase(struct net_dev *n, uint32_t size, uint16_t dport, unsigned depth,
                            uint64_t secs, struct tx_result *res)
{
	struct virtq *vq = &n->tx[0].vq;
	unsigned idx;
	uint8_t *b = net_pool_get(n, &idx);
	if (!b)
		return "no-tx-buffer";
	uint32_t flen = net_build_udp(n, b + NET_HDR_LEN, 9000, dport, size - 42);
	memcpy(b + NET_HDR_LEN + 42, "ringvm-bench-tx", 15);
	if (depth > vq->size)
		depth = vq->size;
	if (n->tx[0].inflight)
		return "tx-busy";
	for (unsigned i = 0; i < depth; i++) {
		virtq_desc_set(vq->desc, i, (uint64_t)b, NET_HDR_LEN + flen, 0, 0);
		virtq_push(vq, (uint16_t)i);
	}
	uint64_t khz = probe_tsc_khz();
	unsigned vec = virtq_vector(vq);
	uint32_t irq0 = virtio_irqs(vec);
	uint64_t t0 = rdtsc(), end = t0 + secs * 1000 * khz, now;
	virtq_publish(vq);
	res->kicks += virtq_kick(vq);
	bool armed = false;
	uint64_t ticks = 0;
	while ((now = rdtsc()) < end) {
		uint32_t id, len;
		unsigned k = 0;
		while (virtq_pop_used(vq, &id, &len)) {
			if (id < depth) {
				virtq_push(vq, (uint16_t)id);
				k++;
			} else {
				res->bad++;
			}
		}
		if (k) {
			res->frames += k;
			virtq_publish(vq);
			res->kicks += virtq_kick(vq);
			continue;
		}
		/* Everything in flight: an interrupt once half of it is done. */
		if (vq->event_idx)
			*virtq_used_event(vq) = (uint16_t)(vq->last_used + depth / 2 - 1);
		else
			vq->avail->flags = 0;
		virtio_mb();
		if (vq->used->idx != vq->last_used)
			continue;
		if (!armed || lapic_timer_ticks != ticks) {
			uint64_t us = (end - now) * 1000 / khz + 1;
			lapic_timer_oneshot_us(us < 10000 ? us : 10000);
			armed = true;
			ticks = lapic_timer_ticks;
		}
		probe_wait_irq();
	}
	res->us = (now - t0) * 1000 / khz;
	res->irqs = virtio_irqs(vec) - irq0;
	if (armed)
		lapic_timer_stop();
	/* Wait for what is still in flight, then hand the queue back to the layer. */
	uint64_t lim = rdtsc() + 1000 * khz;
	uint16_t target = (uint16_t)(vq->avail_idx);
	while (vq->used->idx != target && rdtsc() < lim)
		cpu_relax();
	bool drained = vq->used->idx == target;
	vq->last_used = vq->used->idx;
	if (vq->event_idx)
		*virtq_used_event(vq) = (uint16_t)(vq->last_used - 1);
	else
		vq->avail->flags = 1;
	net_pool_put(n, idx);
	net_tx_reinit(n, 0);
	return drained ? NULL : "tx-stuck";
}

const char *test_net_bench(void)
{
	const char *why;
	uint64_t secs = probe_opt_u64("net.secs", 2);
	uint64_t size = probe_opt_u64("net.size", 64);
	uint64_t dport = probe_opt_u64("net.dport", 9);
	uint64_t depth = probe_opt_u64("net.depth", 64);
	char phases[32];
	if (!probe_opt("net.phases", phases, sizeof(phases)))
		memcpy(phases, "tx,rx", 6);
	bool do_tx = false, do_rx = false;
	for (const char *p = phases; *p;) {
		if (!strncmp(p, "tx", 2))
			do_tx = true;
		else if (!strncmp(p, "rx", 2))
			do_rx = true;
		else
			return "bad-options";
		p += 2;
		if (*p == ',')
			p++;
		else if (*p)
			return "bad-options";
	}
	struct net_open_opts o = {
	    .no_event_idx = !probe_opt_u64("net.event_idx", 1),
	    .no_mrg = !probe_opt_u64("net.mrg", 1),
	    .qsize = (uint16_t)probe_opt_u64("net.qsize", 0),
	};
	if (secs < 1 || secs > 600 || size < 60 || !dport || dport > 65535 || depth < 2 ||
	    depth > VIRTQ_MAX)
		return "bad-options";
	struct net_dev *n = net_open(&o, &why);
	if (!n) {
		probe_printf("PROBE net.bench error=%s\n", why);
		return why;
	}
	why = net_config(n);
	if (why)
		return why;
	net_print_dev("net.bench.dev", n);
	if (size > n->mtu + 14u || size + NET_HDR_LEN > NET_TX_BUF) {
		net_close(n);
		return "size-too-big";
	}
	if (!net_resolve_peer(n, 3000000)) {
		net_close(n);
		return "arp-timeout";
	}
	probe_printf("PROBE net.bench.start size=%lu secs=%lu phases=%s depth=%lu\n", size, secs,
	             phases, depth);

	struct tx_result tx = {0};
	uint64_t tx_pps = 0, tx_g = 0, rx_pps = 0, rx_g = 0;
	const char *fail = NULL;
	if (do_tx) {
		fail = tx_phase(n, (uint32_t)size, (uint16_t)dport, (unsigned)depth, secs, &tx);
		tx_pps = tx.us ? tx.frames * 1000000 / tx.us : 0;
		tx_g = gbps100(tx.frames * size, tx.us);
		probe_printf("PROBE net.bench.tx size=%lu frames=%lu us=%lu pps=%lu", size, tx.frames,
		             tx.us, tx_pps);
		net_print_fixed2("gbps", tx_g);
		probe_printf(" depth=%lu kicks=%lu irqs=%lu bad=%lu result=%s\n", depth, tx.kicks,
		             tx.irqs, tx.bad, fail ? fail : "ok");
	}
	if (do_rx && !fail) {
		uint64_t khz = probe_tsc_khz();
		unsigned vec = virtq_vector(&n->rx[0].vq);
		uint32_t irq0 = virtio_irqs(vec);
		uint64_t kicks0 = n->st.kicks;
		rx_frames = rx_bytes = rx_first = 0;
		n->hook = count_hook;
		fail = send_marker(n, (uint16_t)dport, "ringvm-net-bench rx-start");
		uint64_t t0 = rdtsc(), end = t0 + secs * 1000 * khz;
		while (!fail && rdtsc() < end) {
			unsigned work = net_poll(n);
			net_flush(n);
			if (!work)
				net_sleep(n, end, n->rx[0].posted < n->rx[0].nslots / 2);
		}
		uint64_t first = rx_first ? rx_first : end;
		uint64_t us = (end - first) * 1000 / khz;
		n->hook = NULL;
		if (!fail)
			fail = send_marker(n, (uint16_t)dport, "ringvm-net-bench rx-end");
		if (!net_drain_tx(n, 1000000) && !fail)
			fail = "tx-stuck";
		net_timer_stop(n);
		rx_pps = us ? rx_frames * 1000000 / us : 0;
		rx_g = gbps100(rx_bytes, us);
		probe_printf("PROBE net.bench.rx frames=%lu bytes=%lu us=%lu pps=%lu", rx_frames,
		             rx_bytes, us, rx_pps);
		net_print_fixed2("gbps", rx_g);
		probe_printf(" irqs=%u kicks=%lu bad_frame=%lu result=%s\n", virtio_irqs(vec) - irq0,
		             n->st.kicks - kicks0, n->st.bad_frame, fail ? fail : "ok");
	}
	uint8_t status = virtio_get_status(n->vd);
	if (!fail && (status & VIRTIO_S_NEEDS_RESET))
		fail = "needs-reset";
	probe_printf("PROBE net.bench size=%lu tx_pps=%lu", size, tx_pps);
	net_print_fixed2("tx_gbps", tx_g);
	probe_printf(" rx_pps=%lu", rx_pps);
	net_print_fixed2("rx_gbps", rx_g);
	probe_printf(" result=%s\n", fail ? fail : "ok");
	net_close(n);
	return fail;
}
