/*
 * `net`: brings up the first virtio-net function through the net layer,
 * resolves the peer by ARP, then for net.secs seconds answers ARP requests
 * for net.ip, ICMP echo requests and UDP datagrams to net.port (echoed
 * back) — the host drives the traffic. A UDP datagram whose payload starts
 * with "ringvm-net-quit" (echoed like any other) ends the loop early. Prints
 * the device, then the counters.
 */
#include "net.h"

static bool rx_short(const struct net_dev *n)
{
	for (unsigned p = 0; p < n->pairs; p++)
		if (n->rx[p].posted < n->rx[p].nslots / 2 || n->tx[p].nfree < 32)
			return true;
	return false;
}

const char *test_net(void)
{
	const char *why;
	uint64_t secs = probe_opt_u64("net.secs", 10);
	struct net_open_opts o = {
	    .pairs = (unsigned)probe_opt_u64("net.queues", 1),
	    .no_event_idx = !probe_opt_u64("net.event_idx", 1),
	    .no_mrg = !probe_opt_u64("net.mrg", 1),
	    .csum = probe_opt_u64("net.csum", 0),
	    .qsize = (uint16_t)probe_opt_u64("net.qsize", 0),
	};
	if (secs < 1 || secs > 3600 || o.pairs < 1 || o.pairs > NET_MAX_PAIRS)
		return "bad-options";
	struct net_dev *n = net_open(&o, &why);
	if (!n) {
		probe_printf("PROBE net error=%s\n", why);
		return why;
	}
	why = net_config(n);
	if (why)
		return why;
	net_print_dev("net", n);
	if (o.pairs > 1 && n->pairs != o.pairs) {
		net_close(n);
		return "too-few-pairs";
	}

	uint64_t khz = probe_tsc_khz(), t0 = rdtsc();
	bool resolved = net_resolve_peer(n, 3000000);
	const uint8_t *pm = n->peer_mac;
	probe_printf("PROBE net.peer resolved=%u mac=%02x:%02x:%02x:%02x:%02x:%02x us=%lu\n",
	             resolved, pm[0], pm[1], pm[2], pm[3], pm[4], pm[5], probe_us_since(t0));
	if (!resolved) {
		net_close(n);
		return "arp-timeout";
	}

	uint32_t irq0[NET_MAX_PAIRS], tirq0[NET_MAX_PAIRS];
	for (unsigned p = 0; p < n->pairs; p++) {
		irq0[p] = virtio_irqs(virtq_vector(&n->rx[p].vq));
		tirq0[p] = virtio_irqs(virtq_vector(&n->tx[p].vq));
	}
	probe_printf("PROBE net ready secs=%lu\n", secs);
	n->echo = true;
	t0 = rdtsc();
	uint64_t deadline = t0 + secs * 1000 * khz;
	while (!n->quit && rdtsc() < deadline) {
		unsigned work = net_poll(n);
		net_flush(n);
		if (!work)
			net_sleep(n, deadline, rx_short(n));
	}
	uint64_t us = probe_us_since(t0);
	bool drained = net_drain_tx(n, 1000000);
	net_timer_stop(n);
	uint32_t irqs = 0, tx_irqs = 0;
	for (unsigned p = 0; p < n->pairs; p++) {
		irqs += virtio_irqs(virtq_vector(&n->rx[p].vq)) - irq0[p];
		tx_irqs += virtio_irqs(virtq_vector(&n->tx[p].vq)) - tirq0[p];
	}
	uint8_t status = virtio_get_status(n->vd);
	const struct net_stats *s = &n->st;
	probe_printf("PROBE net rx=%lu tx=%lu arp=%lu icmp=%lu udp=%lu dropped=%lu bad_csum=%lu "
	             "bad_frame=%lu tx_full=%lu rx_bytes=%lu tx_bytes=%lu arp_replies=%lu kicks=%lu "
	             "rx_irqs=%u tx_irqs=%u quit=%u drained=%u dev_status=0x%x ms=%lu\n",
	             s->rx, s->tx, s->arp, s->icmp, s->udp, s->dropped, s->bad_csum, s->bad_frame,
	             s->tx_full, s->rx_bytes, s->tx_bytes, s->arp_replies, s->kicks, irqs, tx_irqs,
	             n->quit, drained, status, us / 1000);
	probe_printf("PROBE net.pairs rx=");
	for (unsigned p = 0; p < n->pairs; p++)
		probe_printf("%s%lu", p ? "," : "", s->rx_pair[p]);
	probe_printf("\n");
	net_close(n);
	if (status & VIRTIO_S_NEEDS_RESET)
		return "needs-reset";
	if (!drained)
		return "tx-stuck";
	if (s->bad_frame)
		return "bad-frame";
	return NULL;
}
