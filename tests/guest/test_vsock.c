/*
 * `vsock` and `vsock.bench`: stream connections over virtio-vsock (vsock.h).
 *
 * `vsock` runs, in one event loop, an echo server (vsock.port=P: every byte
 * of every connection the host opens to port P goes back; a SHUTDOWN from the
 * host is answered by a half-close once everything was echoed) and a client
 * (vsock.connect=P: vsock.conns connections, at most vsock.parallel at a
 * time, to host port P; each sends vsock.bytes of a pattern, checks the echo
 * byte for byte and closes; vsock.half=1 half-closes after sending).
 * vsock.expect=echo|refused|reset says how the client connections must end.
 * The server ends after vsock.accept connections were served (0: at
 * vsock.secs, default 60, which also bounds the whole test).
 *
 * `vsock.bench` (host listeners at port P = vsock.bench.port, default 5000):
 * guest → host: vsock.bench.mib MiB (default 64) of pattern to port P in
 * 64 KiB packets, timed until the last TX completed; host → guest: a
 * connection to port P + 1, whose listener sends until it closes, counted
 * and dropped; then vsock.bench.conns (default 100) connections opened and
 * closed one after another on port P (setup rate).
 */
#include "vsock.h"

static const char *const end_names[8] = {"none", "ok", "refused", "reset",
                                         "bad", "timeout", "transport", "?"};

struct client {
	uint32_t port, conns, parallel;
	uint64_t bytes;
	bool half;
	uint32_t launched;
	uint64_t first_mismatch;
};

struct vsock_run {
	struct client cl;
	uint32_t accept; /* server: connections to serve, 0: until the deadline */
};

static bool step(struct vs_dev *v, void *arg)
{
	struct vsock_run *r = arg;
	struct client *cl = &r->cl;
	while (cl->port && cl->launched < cl->conns &&
	       cl->launched - v->closed_out < cl->parallel) {
		if (!vs_connect(v, cl->port, VS_CHECK, cl->bytes, cl->half))
			break;
		cl->launched++;
	}
	bool client_done = !cl->port || v->closed_out >= cl->conns;
	bool server_done = !r->accept || (v->closed_in >= r->accept);
	return client_done && server_done && (cl->port || r->accept);
}

static void print_ends(const uint32_t *e)
{
	for (unsigned i = 1; i < 7; i++)
		probe_printf(" %s=%u", end_names[i], e[i]);
}

static void print_stats(const char *test, const struct vs_dev *v)
{
	const struct vs_stats *s = &v->st;
	probe_printf("PROBE %s.stats rx_pkts=%lu tx_pkts=%lu rx_bytes=%lu tx_bytes=%lu rst_rx=%lu "
	             "rst_tx=%lu credit_upd_rx=%lu credit_upd_tx=%lu credit_req_rx=%lu events=%lu "
	             "transport_resets=%lu bad_pkt=%lu stray=%lu over_credit=%lu refused_in=%lu "
	             "tx_full=%lu kicks=%lu rst_dropped=%lu max_active=%u\n",
	             test, s->rx_pkts, s->tx_pkts, s->rx_bytes, s->tx_bytes, s->rst_rx, s->rst_tx,
	             s->credit_upd_rx, s->credit_upd_tx, s->credit_req_rx, s->events,
	             s->transport_resets, s->bad_pkt, s->stray, s->over_credit, s->refused_in,
	             s->tx_full, s->kicks, s->rst_dropped, v->max_active);
}

static struct vs_dev *open_dev(const char *test, const char **why)
{
	uint32_t rxbuf = (uint32_t)probe_opt_u64("vsock.rxbuf", VS_RXBUF_DEF);
	bool eidx = probe_opt_u64("vsock.event_idx", 1);
	struct vs_dev *v = vs_open(rxbuf, eidx, why);
	if (!v) {
		probe_printf("PROBE %s error=%s\n", test, *why);
		return NULL;
	}
	vs_print_dev(test, v);
	return v;
}

const char *test_vsock(void)
{
	uint64_t secs = probe_opt_u64("vsock.secs", 60);
	struct vsock_run r = {0};
	struct client *cl = &r.cl;
	uint64_t lport = probe_opt_u64("vsock.port", 0);
	cl->port = (uint32_t)probe_opt_u64("vsock.connect", 0);
	cl->conns = (uint32_t)probe_opt_u64("vsock.conns", 1);
	cl->parallel = (uint32_t)probe_opt_u64("vsock.parallel", cl->conns);
	cl->bytes = probe_opt_u64("vsock.bytes", 65536);
	cl->half = probe_opt_u64("vsock.half", 0);
	r.accept = (uint32_t)probe_opt_u64("vsock.accept", 0);
	char expect[16];
	if (!probe_opt("vsock.expect", expect, sizeof(expect)))
		memcpy(expect, "echo", 5);
	unsigned want_end = !strncmp(expect, "echo", 5)      ? VS_END_OK
	                    : !strncmp(expect, "refused", 8) ? VS_END_REFUSED
	                    : !strncmp(expect, "reset", 6)   ? VS_END_RESET
	                                                     : 0;
	if (!want_end || secs < 1 || secs > 3600 || lport > 0xffffffffull ||
	    cl->port > 0xffffffffu || !cl->conns || !cl->parallel || cl->parallel > 200 ||
	    (!lport && !cl->port))
		return "bad-options";
	if (cl->parallel > cl->conns)
		cl->parallel = cl->conns;
	const char *why;
	struct vs_dev *v = open_dev("vsock", &why);
	if (!v)
		return why;
	v->listen_port = (uint32_t)lport;
	if (lport)
		probe_printf("PROBE vsock ready port=%lu\n", lport);

	uint64_t khz = probe_tsc_khz(), t0 = rdtsc();
	bool done = vs_run_until(v, t0 + secs * 1000 * khz, step, &r);
	uint64_t ms = probe_us_since(t0) / 1000;
	/* Whatever is still open at the deadline counts as timed out. */
	for (unsigned i = 0; i < VS_MAX_CONNS; i++)
		vs_abort(v, &v->conns[i]);
	vs_run_until(v, rdtsc() + 100 * khz, NULL, NULL);
	vs_timer_stop(v);

	const char *res = NULL;
	if (cl->port) {
		probe_printf("PROBE vsock.client port=%u conns=%u launched=%u bytes=%lu half=%u "
		             "expect=%s",
		             cl->port, cl->conns, cl->launched, cl->bytes, cl->half, expect);
		print_ends(v->ends_out);
		probe_printf(" got_rst=%u ms=%lu\n", v->rst_out, ms);
		if (v->ends_out[want_end] != cl->conns)
			res = want_end == VS_END_OK && v->ends_out[VS_END_BAD] ? "vsock-mismatch"
			                                                       : "vsock-client-failed";
	}
	if (lport) {
		probe_printf("PROBE vsock.server port=%lu accepted=%lu closed=%lu", lport,
		             v->accepted, v->closed_in);
		print_ends(v->ends_in);
		probe_printf(" ms=%lu\n", ms);
		if (r.accept && (v->closed_in < r.accept || v->ends_in[VS_END_OK] < r.accept))
			res = res ? res : "vsock-server-failed";
	}
	print_stats("vsock", v);
	uint8_t status = virtio_get_status(v->vd);
	if (!res && (status & VIRTIO_S_NEEDS_RESET))
		res = "needs-reset";
	if (!res && v->st.bad_pkt)
		res = "bad-packet";
	if (!res && v->st.over_credit)
		res = "over-credit";
	if (!res && !done && r.accept)
		res = "timeout";
	probe_printf("PROBE vsock result=%s dev_status=0x%x ms=%lu\n", res ? res : "ok", status, ms);
	vs_close(v);
	return res;
}

/* ---- vsock.bench ---- */

static bool conn_gone(struct vs_dev *v, void *arg)
{
	(void)v;
	struct vs_conn *c = arg;
	return c->state == VS_FREE || c->state == VS_DONE;
}

static bool not_connecting(struct vs_dev *v, void *arg)
{
	(void)v;
	return ((struct vs_conn *)arg)->state != VS_CONNECTING;
}

static void print_rate(const char *key, uint64_t bytes, uint64_t us)
{
	/* MB/s with two decimals: bytes / us is MB/s. */
	uint64_t h = us ? bytes * 100 / us : 0;
	probe_printf(" %s=%lu.%02lu", key, h / 100, h % 100);
}

const char *test_vsock_bench(void)
{
	uint32_t port = (uint32_t)probe_opt_u64("vsock.bench.port", 5000);
	uint64_t mib = probe_opt_u64("vsock.bench.mib", 64);
	uint32_t nconns = (uint32_t)probe_opt_u64("vsock.bench.conns", 100);
	uint64_t secs = probe_opt_u64("vsock.secs", 120);
	if (!port || !mib || mib > 65536 || secs < 1 || secs > 3600)
		return "bad-options";
	const char *why;
	struct vs_dev *v = open_dev("vsock.bench", &why);
	if (!v)
		return why;
	uint64_t khz = probe_tsc_khz(), deadline = rdtsc() + secs * 1000 * khz;
	const char *res = NULL;

	/* guest → host */
	uint64_t tx_bytes = 0, tx_us = 0;
	struct vs_conn *c = vs_connect(v, port, VS_SINK, mib << 20, true);
	if (!c)
		res = "no-conn";
	if (c) {
		vs_run_until(v, deadline, conn_gone, c);
		if (c->end == VS_END_REFUSED)
			res = "refused";
		else if (c->tx_done != c->to_send)
			res = "tx-incomplete";
		tx_bytes = c->tx_done;
		tx_us = c->t_last > c->t_open ? (c->t_last - c->t_open) * 1000 / khz : 0;
		probe_printf("PROBE vsock.bench.tx bytes=%lu us=%lu end=%s", tx_bytes, tx_us,
		             end_names[c->end & 7]);
		print_rate("mbps", tx_bytes, tx_us);
		probe_printf("\n");
	}

	/* host → guest */
	uint64_t rx_bytes = 0, rx_us = 0;
	c = res ? NULL : vs_connect(v, port + 1, VS_SINK, 0, false);
	if (c) {
		vs_run_until(v, deadline, conn_gone, c);
		rx_bytes = c->received;
		rx_us = c->t_last > c->t_first ? (c->t_last - c->t_first) * 1000 / khz : 0;
		probe_printf("PROBE vsock.bench.rx bytes=%lu us=%lu end=%s credit_updates=%lu", rx_bytes,
		             rx_us, end_names[c->end & 7], v->st.credit_upd_tx);
		print_rate("mbps", rx_bytes, rx_us);
		probe_printf("\n");
		if (c->end == VS_END_REFUSED || !rx_bytes)
			res = "rx-failed";
	}

	/* connection setup: REQUEST → RESPONSE → SHUTDOWN → RST, one at a time */
	uint64_t t0 = rdtsc();
	uint32_t ok = 0;
	for (uint32_t i = 0; !res && i < nconns; i++) {
		c = vs_connect(v, port, VS_SINK, 0, false);
		if (!c)
			break;
		vs_run_until(v, deadline, not_connecting, c);
		if (c->state == VS_OPEN)
			vs_shutdown(v, c, VS_SHUT_RCV | VS_SHUT_SEND);
		vs_run_until(v, deadline, conn_gone, c);
		ok += c->end == VS_END_OK;
	}
	uint64_t conn_us = probe_us_since(t0);
	vs_timer_stop(v);
	probe_printf("PROBE vsock.bench.conn conns=%u ok=%u us=%lu rate=%lu\n", nconns, ok, conn_us,
	             conn_us ? (uint64_t)ok * 1000000 / conn_us : 0);
	probe_printf("PROBE vsock.bench");
	print_rate("tx_mbps", tx_bytes, tx_us);
	print_rate("rx_mbps", rx_bytes, rx_us);
	probe_printf(" conn_rate=%lu result=%s\n",
	             conn_us ? (uint64_t)ok * 1000000 / conn_us : 0, res ? res : "ok");
	print_stats("vsock.bench", v);
	vs_close(v);
	return res;
}
