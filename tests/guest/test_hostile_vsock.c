/*
 * `hostile.vsock`: malformed and abusive packets from the guest
 * (hostile-inputs.md case 20): short and split headers, lengths that lie,
 * wrong source/destination CIDs, unknown types and ops, packets for
 * connections that do not exist, lying credit (overrunning the host's
 * buf_alloc, fwd_cnt ahead of what was sent, buf_alloc 0 then raised), RST
 * storms, REQUEST and connection floods, a device-writable TX descriptor.
 *
 * Each case sends its packets raw (on the TX descriptors the driver keeps for
 * that), waits for the device to consume them, watches what comes back for
 * its ports (hostile.wait_ms, default 100) and then checks the device is
 * still usable: a normal connection to the host echo listener at
 * hostile.vsock.port (default 5000) must carry 4 KiB there and back. A device
 * that flags DEVICE_NEEDS_RESET or stops consuming TX is reset and brought up
 * again (reported), and the check runs after that. The raw connections use
 * local ports 0x70000000 + n; everything addressed to them is counted here
 * and dropped.
 */
#include "vsock.h"

#define HPORT 0x70000000u

struct seen {
	unsigned resp, rst, rw, shut, credit, other;
	uint64_t rw_bytes;
	uint32_t buf_alloc; /* from the last RESPONSE */
};

static struct seen seen;
static uint32_t echo_port, wait_ms;
static struct vs_dev *dev;
static bool restarted, tx_stuck;

static bool hook(struct vs_dev *v, const struct vs_hdr *h, const uint8_t *data)
{
	(void)v;
	(void)data;
	if ((h->dst_port & 0xff000000u) != HPORT)
		return false;
	switch (h->op) {
	case VS_OP_RESPONSE:
		seen.resp++;
		seen.buf_alloc = h->buf_alloc;
		break;
	case VS_OP_RST:
		seen.rst++;
		break;
	case VS_OP_RW:
		seen.rw++;
		seen.rw_bytes += h->len;
		break;
	case VS_OP_SHUTDOWN:
		seen.shut++;
		break;
	case VS_OP_CREDIT_UPDATE:
	case VS_OP_CREDIT_REQUEST:
		seen.credit++;
		break;
	default:
		seen.other++;
	}
	return true;
}

static bool raw_done(struct vs_dev *v, void *arg)
{
	(void)arg;
	return !v->raw_inflight;
}

static uint64_t ms_from_now(uint64_t ms)
{
	return rdtsc() + ms * probe_tsc_khz();
}

/* Sends a raw chain and waits (1 s) for the device to consume it. */
static bool send_chain(const struct virtq_buf *b, unsigned nb)
{
	if (tx_stuck)
		return false;
	if (dev->raw_inflight && !vs_run_until(dev, ms_from_now(1000), raw_done, NULL)) {
		tx_stuck = true;
		return false;
	}
	vs_tx_raw(dev, b, nb);
	vs_flush(dev);
	if (!vs_run_until(dev, ms_from_now(1000), raw_done, NULL)) {
		tx_stuck = true;
		return false;
	}
	return true;
}

static struct vs_hdr *hdr(uint32_t lport, uint32_t peer, uint16_t op, uint32_t len)
{
	struct vs_hdr *h = (struct vs_hdr *)vs_raw_buf(dev);
	*h = (struct vs_hdr){.src_cid = dev->cid,
	                     .dst_cid = VS_HOST_CID,
	                     .src_port = lport,
	                     .dst_port = peer,
	                     .len = len,
	                     .type = VS_TYPE_STREAM,
	                     .op = op,
	                     .buf_alloc = 1u << 20,
	                     .fwd_cnt = 0};
	return h;
}

/* Sends the header in raw_buf, with len payload bytes after it in the same buffer. */
static bool send_hdr(uint32_t payload)
{
	struct virtq_buf b = {(uint64_t)vs_raw_buf(dev), VS_HDR_LEN + payload, false};
	return send_chain(&b, 1);
}

static bool pkt(uint32_t lport, uint32_t peer, uint16_t op)
{
	hdr(lport, peer, op, 0);
	return send_hdr(0);
}

static void settle(uint64_t ms)
{
	vs_run_until(dev, ms_from_now(ms), NULL, NULL);
}

static bool got_answer(struct vs_dev *v, void *arg)
{
	(void)v;
	(void)arg;
	return seen.resp || seen.rst;
}

/* A raw connection from lport to the echo listener: true once the host answered RESPONSE. */
static bool raw_open(uint32_t lport, uint32_t buf_alloc)
{
	struct vs_hdr *h = hdr(lport, echo_port, VS_OP_REQUEST, 0);
	h->buf_alloc = buf_alloc;
	if (!send_hdr(0))
		return false;
	vs_run_until(dev, ms_from_now(3000), got_answer, NULL);
	return seen.resp > 0;
}

/* ---- cases ---- */

static void hdr_short(unsigned n)
{
	hdr(HPORT + n, echo_port, VS_OP_REQUEST, 0);
	struct virtq_buf b = {(uint64_t)vs_raw_buf(dev), 20, false};
	send_chain(&b, 1);
}

static void hdr_split(unsigned n)
{
	hdr(HPORT + n, echo_port, VS_OP_REQUEST, 0);
	uint64_t a = (uint64_t)vs_raw_buf(dev);
	struct virtq_buf b[3] = {{a, 16, false}, {a + 16, 16, false}, {a + 32, 12, false}};
	send_chain(b, 3);
	settle(wait_ms * 3);
	pkt(HPORT + n, echo_port, VS_OP_RST);
}

/* A connection, then one RW whose header says len but whose chain carries 64 bytes. */
static void rw_len(unsigned n, uint32_t len, uint32_t carried)
{
	if (!raw_open(HPORT + n, 1u << 20))
		return;
	hdr(HPORT + n, echo_port, VS_OP_RW, len);
	memset(vs_raw_buf(dev) + VS_HDR_LEN, 'h', carried);
	send_hdr(carried);
	settle(wait_ms);
	pkt(HPORT + n, echo_port, VS_OP_RST);
}

static void len_huge(unsigned n)
{
	rw_len(n, 0x40000000u, 64);
}
static void len_past_chain(unsigned n)
{
	rw_len(n, 1000, 64);
}
static void len_short_of_chain(unsigned n)
{
	rw_len(n, 10, 64);
}
static void rw_zero_len(unsigned n)
{
	rw_len(n, 0, 0);
}

static void field_case(unsigned n, uint64_t src, uint64_t dst, uint16_t type, uint16_t op,
                       uint32_t len)
{
	struct vs_hdr *h = hdr(HPORT + n, echo_port, op, len);
	h->src_cid = src;
	h->dst_cid = dst;
	h->type = type;
	memset(vs_raw_buf(dev) + VS_HDR_LEN, 'q', len);
	send_hdr(len);
	settle(wait_ms);
	if (seen.resp)
		pkt(HPORT + n, echo_port, VS_OP_RST);
}

static void src_cid_wrong(unsigned n)
{
	field_case(n, 77, VS_HOST_CID, VS_TYPE_STREAM, VS_OP_REQUEST, 0);
}
static void src_cid_host(unsigned n)
{
	field_case(n, VS_HOST_CID, VS_HOST_CID, VS_TYPE_STREAM, VS_OP_REQUEST, 0);
}
static void dst_cid_wrong(unsigned n)
{
	field_case(n, dev->cid, 1234, VS_TYPE_STREAM, VS_OP_REQUEST, 0);
}
static void dst_cid_self(unsigned n)
{
	field_case(n, dev->cid, dev->cid, VS_TYPE_STREAM, VS_OP_REQUEST, 0);
}
static void type_unknown(unsigned n)
{
	field_case(n, dev->cid, VS_HOST_CID, 0x55, VS_OP_REQUEST, 0);
}
static void type_seqpacket(unsigned n)
{
	field_case(n, dev->cid, VS_HOST_CID, 2, VS_OP_REQUEST, 0);
}
static void op_zero(unsigned n)
{
	field_case(n, dev->cid, VS_HOST_CID, VS_TYPE_STREAM, 0, 0);
}
static void op_unknown(unsigned n)
{
	field_case(n, dev->cid, VS_HOST_CID, VS_TYPE_STREAM, 99, 0);
}
static void request_payload(unsigned n)
{
	field_case(n, dev->cid, VS_HOST_CID, VS_TYPE_STREAM, VS_OP_REQUEST, 100);
}
static void rw_unknown_conn(unsigned n)
{
	field_case(n, dev->cid, VS_HOST_CID, VS_TYPE_STREAM, VS_OP_RW, 64);
}
static void shutdown_unknown_conn(unsigned n)
{
	field_case(n, dev->cid, VS_HOST_CID, VS_TYPE_STREAM, VS_OP_SHUTDOWN, 0);
}
static void credit_unknown_conn(unsigned n)
{
	field_case(n, dev->cid, VS_HOST_CID, VS_TYPE_STREAM, VS_OP_CREDIT_UPDATE, 0);
}
static void response_unsolicited(unsigned n)
{
	field_case(n, dev->cid, VS_HOST_CID, VS_TYPE_STREAM, VS_OP_RESPONSE, 0);
}

static void request_dup(unsigned n)
{
	if (!raw_open(HPORT + n, 1u << 20))
		return;
	pkt(HPORT + n, echo_port, VS_OP_REQUEST);
	settle(wait_ms);
	pkt(HPORT + n, echo_port, VS_OP_RST);
}

/*
 * Sends 2 × the host's buf_alloc (at most 8 MiB) without waiting for credit,
 * to hostile.vsock.stall_port when given: a host peer that never reads, so
 * the device's buffer for it fills and the excess must be refused (RST or
 * dropped) without holding up anybody else.
 */
static uint32_t stall_port;
static void credit_overrun(unsigned n)
{
	uint32_t keep = echo_port;
	if (stall_port)
		echo_port = stall_port;
	bool open = raw_open(HPORT + n, 1u << 30);
	echo_port = keep;
	if (!open)
		return;
	uint32_t peer = stall_port ? stall_port : echo_port;
	uint64_t want = 2ull * seen.buf_alloc + 65536;
	if (want > (8u << 20))
		want = 8u << 20;
	for (uint64_t sent = 0; sent < want && !tx_stuck;) {
		uint32_t k = want - sent > 65536 ? 65536 : (uint32_t)(want - sent);
		struct vs_hdr *h = hdr(HPORT + n, peer, VS_OP_RW, k);
		h->buf_alloc = 1u << 30;
		struct virtq_buf b[2] = {{(uint64_t)h, VS_HDR_LEN, false},
		                         {(uint64_t)vs_pattern(dev, 0, 0), k, false}};
		if (!send_chain(b, 2))
			break;
		sent += k;
	}
	settle(wait_ms * 2);
	pkt(HPORT + n, peer, VS_OP_RST);
}

static void credit_fwd_ahead(unsigned n)
{
	if (!raw_open(HPORT + n, 1u << 20))
		return;
	struct vs_hdr *h = hdr(HPORT + n, echo_port, VS_OP_CREDIT_UPDATE, 0);
	h->buf_alloc = 0xffffffffu;
	h->fwd_cnt = 0xfffffff0u; /* far more than the host ever sent us */
	send_hdr(0);
	h = hdr(HPORT + n, echo_port, VS_OP_RW, 256);
	h->buf_alloc = 0xffffffffu;
	h->fwd_cnt = 0xfffffff0u;
	memset(vs_raw_buf(dev) + VS_HDR_LEN, 'c', 256);
	send_hdr(256);
	settle(wait_ms * 2);
	pkt(HPORT + n, echo_port, VS_OP_RST);
}

/* buf_alloc 0: the echo must wait; raised by CREDIT_UPDATE it must come. */
static unsigned zero_rw_before;
static void credit_zero(unsigned n)
{
	if (!raw_open(HPORT + n, 0))
		return;
	struct vs_hdr *h = hdr(HPORT + n, echo_port, VS_OP_RW, 512);
	h->buf_alloc = 0;
	memset(vs_raw_buf(dev) + VS_HDR_LEN, 'z', 512);
	send_hdr(512);
	settle(wait_ms * 3);
	zero_rw_before = seen.rw;
	h = hdr(HPORT + n, echo_port, VS_OP_CREDIT_UPDATE, 0);
	h->buf_alloc = 65536;
	send_hdr(0);
	vs_run_until(dev, ms_from_now(2000), NULL, NULL);
	pkt(HPORT + n, echo_port, VS_OP_RST);
}

static void rst_storm(unsigned n)
{
	for (unsigned i = 0; i < 200 && !tx_stuck; i++)
		pkt(HPORT + n + (i << 12), echo_port + (i & 1) * 77, VS_OP_RST);
	settle(wait_ms);
}

static void request_flood(unsigned n)
{
	/* Port 1 of the host: nothing listens there, every REQUEST must fail. */
	for (unsigned i = 0; i < 200 && !tx_stuck; i++)
		pkt(HPORT + n + (i << 12), 1, VS_OP_REQUEST);
	settle(wait_ms * 10);
}

static void conn_flood(unsigned n)
{
	unsigned count = (unsigned)probe_opt_u64("hostile.vsock.flood", 300);
	for (unsigned i = 0; i < count && !tx_stuck; i++)
		pkt(HPORT + n + (i << 12), echo_port, VS_OP_REQUEST);
	settle(wait_ms * 20);
	for (unsigned i = 0; i < count && !tx_stuck; i++)
		pkt(HPORT + n + (i << 12), echo_port, VS_OP_RST);
	settle(wait_ms);
}

static void tx_writable(unsigned n)
{
	hdr(HPORT + n, echo_port, VS_OP_REQUEST, 0);
	struct virtq_buf b = {(uint64_t)vs_raw_buf(dev), VS_HDR_LEN, true};
	send_chain(&b, 1);
	settle(wait_ms);
	if (seen.resp)
		pkt(HPORT + n, echo_port, VS_OP_RST);
}

/* What a case may get back: any, or never a RESPONSE (must not connect). */
enum { ANY, NO_CONNECT, MUST_CONNECT, ZERO_CREDIT };

struct hv_case {
	const char *name;
	void (*run)(unsigned n);
	int rule;
};

static const struct hv_case cases[] = {
    {"hdr-short", hdr_short, NO_CONNECT},
    {"hdr-split", hdr_split, MUST_CONNECT},
    {"len-huge", len_huge, ANY},
    {"len-past-chain", len_past_chain, ANY},
    {"len-short-of-chain", len_short_of_chain, ANY},
    {"rw-zero-len", rw_zero_len, ANY},
    {"src-cid-wrong", src_cid_wrong, NO_CONNECT},
    {"src-cid-host", src_cid_host, NO_CONNECT},
    {"dst-cid-wrong", dst_cid_wrong, NO_CONNECT},
    {"dst-cid-self", dst_cid_self, NO_CONNECT},
    {"type-unknown", type_unknown, NO_CONNECT},
    {"type-seqpacket", type_seqpacket, NO_CONNECT},
    {"op-zero", op_zero, NO_CONNECT},
    {"op-unknown", op_unknown, NO_CONNECT},
    {"request-payload", request_payload, ANY},
    {"rw-unknown-conn", rw_unknown_conn, NO_CONNECT},
    {"shutdown-unknown-conn", shutdown_unknown_conn, NO_CONNECT},
    {"credit-unknown-conn", credit_unknown_conn, NO_CONNECT},
    {"response-unsolicited", response_unsolicited, NO_CONNECT},
    {"request-dup", request_dup, ANY},
    {"credit-overrun", credit_overrun, ANY},
    {"credit-fwd-ahead", credit_fwd_ahead, ANY},
    {"credit-zero", credit_zero, ZERO_CREDIT},
    {"rst-storm", rst_storm, NO_CONNECT},
    {"request-flood", request_flood, NO_CONNECT},
    {"conn-flood", conn_flood, ANY},
    {"tx-writable", tx_writable, NO_CONNECT},
};

static bool gone(struct vs_dev *v, void *arg)
{
	(void)v;
	struct vs_conn *c = arg;
	return c->state == VS_DONE || c->state == VS_FREE;
}

/* A normal 4 KiB echo round trip; the connection's end (VS_END_OK when it worked). */
static unsigned alive(void)
{
	struct vs_conn *c = vs_connect(dev, echo_port, VS_CHECK, 4096, false);
	if (!c)
		return VS_END_TIMEOUT;
	vs_flush(dev);
	if (!vs_run_until(dev, ms_from_now(5000), gone, c))
		vs_abort(dev, c);
	vs_reap(dev);
	return c->end;
}

static const char *restart(void)
{
	const char *why;
	vs_close(dev);
	uint32_t rxbuf = dev->rxbuf;
	dev = vs_open(rxbuf, true, &why);
	if (!dev)
		return why;
	dev->hook = hook;
	restarted = true;
	return NULL;
}

static bool name_in(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; *p;) {
		size_t l = 0;
		while (p[l] && p[l] != ',')
			l++;
		if (l == n && !strncmp(p, name, n))
			return true;
		p += l;
		if (*p)
			p++;
	}
	return false;
}

const char *test_hostile_vsock(void)
{
	static const char *const end_names[8] = {"none", "ok", "refused", "reset",
	                                         "bad", "timeout", "transport", "?"};
	echo_port = (uint32_t)probe_opt_u64("hostile.vsock.port", 5000);
	wait_ms = (uint32_t)probe_opt_u64("hostile.wait_ms", 100);
	stall_port = (uint32_t)probe_opt_u64("hostile.vsock.stall_port", 0);
	char skip[256] = "";
	probe_opt("hostile.skip", skip, sizeof(skip));
	const char *why;
	dev = vs_open((uint32_t)probe_opt_u64("vsock.rxbuf", VS_RXBUF_DEF), true, &why);
	if (!dev) {
		probe_printf("PROBE hostile.vsock error=%s\n", why);
		return why;
	}
	vs_print_dev("hostile.vsock", dev);
	dev->hook = hook;
	unsigned first = alive();
	probe_printf("PROBE hostile.vsock.before alive=%s\n", end_names[first & 7]);
	if (first != VS_END_OK) {
		vs_close(dev);
		return "vsock-not-alive";
	}
	unsigned passed = 0, failed = 0, skipped = 0;
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct hv_case *k = &cases[i];
		if (name_in(skip, k->name)) {
			probe_printf("PROBE hostile.vsock.case name=%s result=skipped\n", k->name);
			skipped++;
			continue;
		}
		memset(&seen, 0, sizeof(seen));
		restarted = tx_stuck = false;
		zero_rw_before = 0;
		uint64_t c0 = rdtsc();
		k->run(i + 1);
		bool stuck = tx_stuck;
		uint8_t status = virtio_get_status(dev->vd);
		bool nr = status & VIRTIO_S_NEEDS_RESET;
		const char *rerr = NULL;
		if (stuck || nr)
			rerr = restart();
		unsigned end = rerr ? VS_END_NONE : alive();
		bool pass = end == VS_END_OK && !rerr;
		if (k->rule == NO_CONNECT && seen.resp)
			pass = false;
		if (k->rule == MUST_CONNECT && !seen.resp)
			pass = false;
		if (k->rule == ZERO_CREDIT && (!seen.resp || zero_rw_before || !seen.rw))
			pass = false;
		probe_printf("PROBE hostile.vsock.case name=%s tx=%s needs_reset=%u restart=%s "
		             "resp=%u rst=%u rw=%u rw_bytes=%lu shut=%u credit=%u other=%u",
		             k->name, stuck ? "stuck" : "ok", nr, rerr ? rerr : (restarted ? "ok" : "-"),
		             seen.resp, seen.rst, seen.rw, seen.rw_bytes, seen.shut, seen.credit,
		             seen.other);
		if (k->rule == ZERO_CREDIT)
			probe_printf(" rw_before_credit=%u", zero_rw_before);
		probe_printf(" alive=%s us=%lu pass=%u\n", end_names[end & 7], probe_us_since(c0),
		             pass);
		if (rerr) {
			probe_printf("PROBE hostile.vsock passed=%u failed=%u skipped=%u\n", passed,
			             failed + 1, skipped);
			return "restart-failed";
		}
		pass ? passed++ : failed++;
	}
	probe_printf("PROBE hostile.vsock passed=%u failed=%u skipped=%u stray=%lu bad_pkt=%lu "
	             "ms=%lu\n",
	             passed, failed, skipped, dev->st.stray, dev->st.bad_pkt, probe_us_since(t0) / 1000);
	vs_close(dev);
	return failed ? "hostile-vsock-failed" : NULL;
}
