/*
 * virtio-net end to end through the host-side harness: a real device
 * process (jailed with the device's allowlist, or forked) on a TAP it got
 * from the factory, in a private network namespace of this test's worker
 * process. Frames the device sends are read on the TAP's interface with an
 * AF_PACKET socket; frames for the guest are sent into the TAP the same way.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devices/virtio/net.h"
#include "tests/common/facility.h"
#include "tests/harness/vdriver.h"
#include "tests/unit/net/netns.h"

#define F(b) (1ull << (b))
#define BASE_FEATURES                                                                              \
	(F(VIRTIO_F_VERSION_1) | F(VIRTIO_F_EVENT_IDX) | F(VIRTIO_F_INDIRECT_DESC) |               \
	 F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_STATUS) | F(VIRTIO_NET_F_MTU) |                     \
	 F(VIRTIO_NET_F_CTRL_VQ) | F(VIRTIO_NET_F_CTRL_RX) | F(VIRTIO_NET_F_CSUM) |                \
	 F(VIRTIO_NET_F_GUEST_CSUM))
#define IFNAME  "rvnet0"
#define RAM     (64ull << 20)
#define BUF_GPA(q, i) (VDRIVER_DATA_BASE + 0x100000ull * (q) + 0x1000ull * (i)) /* 4 KiB slots */
#define BIG_GPA (VDRIVER_DATA_BASE + 0x1000000ull)                              /* 128 KiB */
#define CTRL_GPA (VDRIVER_DATA_BASE + 0x1800000ull)

struct nt {
	struct vdriver v;
	int pkt;
	uint64_t gpa[VIRTIO_MAX_QUEUES][VIRTQ_MAX_SIZE]; /* buffer of each head */
	unsigned slot[VIRTIO_MAX_QUEUES];
};

static void *host(struct nt *t, uint64_t gpa, uint64_t len)
{
	void *p = guest_mem_ptr(&t->v.mem, gpa, len);
	cr_assert_not_null(p);
	return p;
}

static void start(struct nt *t, const char *extra, uint64_t features, bool sandbox)
{
	char opts[160];
	REQUIRE_FACILITY(facility_root(), "needs root to create a TAP in a private network namespace");
	memset(t, 0, sizeof(*t));
	int r = netns_enter();
	cr_assert_eq(r, 0, "netns: %s", strerror(-r));
	snprintf(opts, sizeof(opts), "tap=" IFNAME "%s%s", extra && *extra ? "," : "",
	         extra ? extra : "");
	struct vdriver_params p = {.device = "net", .opts = opts, .ram_size = RAM, .sandbox = sandbox};
	r = vdriver_spawn(&t->v, &p);
	if (sandbox && (r == -EPERM || r == -ENOSPC))
		REQUIRE_FACILITY(false, "cannot create the jail's namespaces here");
	cr_assert_eq(r, 0, "vdriver_spawn: %s", strerror(-r));
	cr_assert_eq(netns_if_up(IFNAME), 0);
	t->pkt = netns_pkt_open(IFNAME);
	cr_assert_geq(t->pkt, 0, "AF_PACKET: %s", strerror(-t->pkt));
	r = vdriver_setup(&t->v, features, 256);
	cr_assert_eq(r, 0, "vdriver_setup: %d", r);
}

static void stop(struct nt *t)
{
	cr_assert(vdriver_alive(&t->v), "the device process died");
	int st = vdriver_shutdown(&t->v);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "device exit status %#x", st);
	vdriver_destroy(&t->v);
	close(t->pkt);
}

static struct ipc_metrics metrics(struct nt *t)
{
	static struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t->v, &m), 0);
	return m;
}

/* Post n receive chains of len bytes each (one buffer each) on queue q and kick. */
static void rx_post(struct nt *t, uint16_t q, unsigned n, uint32_t len)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t gpa = BUF_GPA(q, t->slot[q]++ % 256);
		struct vring_buf b = {.gpa = gpa, .len = len, .write = true};
		int head = vring_add(&t->v.ring[q], &b, 1);
		cr_assert_geq(head, 0);
		t->gpa[q][head] = gpa;
	}
	cr_assert_eq(vdriver_kick(&t->v, q), 0);
}

/* Take the next used RX entry of q, waiting for it: its buffer and length. */
static uint8_t *rx_take(struct nt *t, uint16_t q, uint32_t *len, int timeout_ms)
{
	uint32_t id;
	if (!vring_used_pending(&t->v.ring[q]) && vdriver_wait_used(&t->v, q, timeout_ms) < 0)
		return NULL;
	cr_assert_eq(vring_get_used(&t->v.ring[q], &id, len), 1);
	return host(t, t->gpa[q][id], 4096);
}

/* Send header + frame on TX queue q as one readable buffer; wait until it is used. */
static void tx_send(struct nt *t, uint16_t q, const struct virtio_net_hdr *h, const void *frame,
                    uint32_t len)
{
	uint64_t gpa = len + NET_HDR_LEN > 4096 ? BIG_GPA : BUF_GPA(q, t->slot[q]++ % 256);
	uint8_t *p = host(t, gpa, NET_HDR_LEN + len);
	struct virtio_net_hdr le = *h;
	net_hdr_to_le(&le);
	memcpy(p, &le, NET_HDR_LEN);
	memcpy(p + NET_HDR_LEN, frame, len);
	struct vring_buf b = {.gpa = gpa, .len = NET_HDR_LEN + len};
	cr_assert_geq(vring_add(&t->v.ring[q], &b, 1), 0);
	cr_assert_eq(vdriver_kick(&t->v, q), 0);
	cr_assert_eq(vdriver_wait_used(&t->v, q, VDRIVER_TIMEOUT_MS), 0, "TX not completed");
	uint32_t id, ulen;
	cr_assert_eq(vring_get_used(&t->v.ring[q], &id, &ulen), 1);
	cr_assert_eq(ulen, 0, "TX chains come back with length 0");
}

static void expect_on_wire(struct nt *t, const void *frame, uint32_t len)
{
	static uint8_t got[70000];
	ssize_t n = netns_pkt_recv(t->pkt, got, sizeof(got), 2000);
	cr_assert_eq(n, (ssize_t)len, "got %zd bytes, want %u", n, len);
	cr_assert_arr_eq(got, frame, len);
}

static void expect_nothing_on_wire(struct nt *t)
{
	static uint8_t got[70000];
	ssize_t n = netns_pkt_recv(t->pkt, got, sizeof(got), 100);
	cr_assert_eq(n, -ETIMEDOUT, "unexpected %zd-byte frame on the wire", n);
}

static void cfg_read(struct nt *t, uint32_t off, unsigned len, uint64_t *v)
{
	cr_assert_eq(vdriver_bar_read(&t->v, 0x1000 + off, len, v), 0);
}

Test(virtio_net, features_and_config)
{
	struct nt t;
	start(&t, "mac=52:54:00:12:34:56,mtu=1400", BASE_FEATURES | F(VIRTIO_NET_F_MRG_RXBUF), true);
	uint64_t v;
	cr_assert(t.v.features & F(VIRTIO_NET_F_MAC));
	cr_assert(t.v.features & F(VIRTIO_NET_F_CTRL_VQ));
	cr_assert(t.v.features & F(VIRTIO_NET_F_MRG_RXBUF));
	cr_assert(t.v.features & F(VIRTIO_NET_F_GUEST_CSUM), "the TAP takes checksum offload");
	cr_assert_eq(t.v.nqueues, 3, "RX, TX, control");
	uint8_t mac[6];
	for (unsigned i = 0; i < 6; i++) {
		cfg_read(&t, i, 1, &v);
		mac[i] = (uint8_t)v;
	}
	static const uint8_t want[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
	cr_assert_arr_eq(mac, want, 6);
	cfg_read(&t, 6, 2, &v);
	cr_assert_eq(v, VIRTIO_NET_S_LINK_UP);
	cfg_read(&t, 8, 2, &v);
	cr_assert_eq(v, 1, "max_virtqueue_pairs");
	cfg_read(&t, 10, 2, &v);
	cr_assert_eq(v, 1400, "mtu");
	stop(&t);
}

static void tx_frames(bool sandbox)
{
	struct nt t;
	start(&t, NULL, BASE_FEATURES, sandbox);
	static uint8_t frame[1514];
	struct virtio_net_hdr h = {0};
	const uint32_t lens[] = {60, 1514, 14, 333};
	uint64_t bytes = 0;
	for (unsigned i = 0; i < 4; i++) {
		netns_frame(frame, lens[i], i);
		tx_send(&t, 1, &h, frame, lens[i]);
		expect_on_wire(&t, frame, lens[i]);
		bytes += lens[i];
	}
	struct ipc_metrics m = metrics(&t);
	cr_assert_eq(m.writes, 4);
	cr_assert_eq(m.bytes_written, bytes);
	cr_assert_eq(m.errors, 0);
	cr_assert_geq(m.notifications, 4);
	stop(&t);
}

Test(virtio_net, tx_frames_jailed) { tx_frames(true); }
Test(virtio_net, tx_frames_unjailed) { tx_frames(false); }

static void check_rx(struct nt *t, uint16_t q, const uint8_t *frame, uint32_t len)
{
	uint32_t ulen;
	uint8_t *p = rx_take(t, q, &ulen, VDRIVER_TIMEOUT_MS);
	cr_assert_not_null(p, "no frame arrived on queue %u", q);
	cr_assert_eq(ulen, NET_HDR_LEN + len);
	struct virtio_net_hdr h;
	memcpy(&h, p, sizeof(h));
	net_hdr_from_le(&h);
	cr_assert_eq(h.num_buffers, 1);
	cr_assert_eq(h.gso_type, VIRTIO_NET_HDR_GSO_NONE);
	cr_assert_eq(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
	cr_assert_arr_eq(p + NET_HDR_LEN, frame, len);
}

static void rx_frames(bool sandbox)
{
	struct nt t;
	start(&t, NULL, BASE_FEATURES, sandbox);
	rx_post(&t, 0, 16, 2048);
	static uint8_t frame[1514];
	const uint32_t lens[] = {60, 1514, 14};
	for (unsigned i = 0; i < 3; i++) {
		netns_frame(frame, lens[i], 100 + i);
		cr_assert_eq(netns_pkt_send(t.pkt, frame, lens[i]), 0);
		check_rx(&t, 0, frame, lens[i]);
	}
	struct ipc_metrics m = metrics(&t);
	cr_assert_eq(m.reads, 3);
	cr_assert_eq(m.bytes_read, 60 + 1514 + 14);
	cr_assert_eq(m.errors, 0);
	cr_assert_geq(m.interrupts, 1);
	stop(&t);
}

Test(virtio_net, rx_frames_jailed) { rx_frames(true); }
Test(virtio_net, rx_frames_unjailed) { rx_frames(false); }

Test(virtio_net, rx_mergeable_spans_chains)
{
	struct nt t;
	start(&t, NULL, BASE_FEATURES | F(VIRTIO_NET_F_MRG_RXBUF), true);
	cr_assert(t.v.features & F(VIRTIO_NET_F_MRG_RXBUF));
	rx_post(&t, 0, 8, 512);
	static uint8_t frame[1400];
	netns_frame(frame, sizeof(frame), 42);
	cr_assert_eq(netns_pkt_send(t.pkt, frame, sizeof(frame)), 0);
	/* 12 + 1400 bytes over 512-byte chains: 512 + 512 + 388, num_buffers 3. */
	static uint8_t got[2048];
	uint32_t lens[3], total = 0;
	for (unsigned i = 0; i < 3; i++) {
		uint8_t *p = rx_take(&t, 0, &lens[i], VDRIVER_TIMEOUT_MS);
		cr_assert_not_null(p, "chain %u missing", i);
		memcpy(got + total, p, lens[i]);
		total += lens[i];
	}
	cr_assert_eq(lens[0], 512);
	cr_assert_eq(lens[1], 512);
	cr_assert_eq(lens[2], 388);
	struct virtio_net_hdr h;
	memcpy(&h, got, sizeof(h));
	cr_assert_eq(le16toh(h.num_buffers), 3);
	cr_assert_arr_eq(got + NET_HDR_LEN, frame, sizeof(frame));
	/* A small frame after it takes one chain, num_buffers 1. */
	netns_frame(frame, 60, 43);
	cr_assert_eq(netns_pkt_send(t.pkt, frame, 60), 0);
	check_rx(&t, 0, frame, 60);
	stop(&t);
}

Test(virtio_net, rx_waits_for_buffers)
{
	struct nt t;
	start(&t, NULL, BASE_FEATURES, true);
	static uint8_t frame[5][200];
	for (unsigned i = 0; i < 5; i++) {
		netns_frame(frame[i], 200, 500 + i);
		cr_assert_eq(netns_pkt_send(t.pkt, frame[i], 200), 0);
	}
	usleep(200 * 1000);
	cr_assert_eq(vring_used_pending(&t.v.ring[0]), 0, "no buffers: nothing can be used");
	cr_assert_eq(metrics(&t).errors, 0, "and nothing was dropped");
	rx_post(&t, 0, 2, 2048);
	for (unsigned i = 0; i < 2; i++)
		check_rx(&t, 0, frame[i], 200);
	usleep(100 * 1000);
	cr_assert_eq(vring_used_pending(&t.v.ring[0]), 0);
	rx_post(&t, 0, 8, 2048);
	for (unsigned i = 2; i < 5; i++)
		check_rx(&t, 0, frame[i], 200);
	struct ipc_metrics m = metrics(&t);
	cr_assert_eq(m.reads, 5);
	cr_assert_eq(m.errors, 0);
	stop(&t);
}

/*
 * Bursts: 100 TX chains behind one kick (more than one submission of
 * NET_TX_BATCH) reach the wire in order; 40 frames queued in the TAP before
 * any buffer reach the guest in order once buffers come (several reads per
 * pass), with and without MRG_RXBUF.
 */
static void bursts(uint64_t features)
{
	struct nt t;
	enum { NTX = 100, NRX = 40 };
	start(&t, NULL, features, true);
	static uint8_t frame[NTX][128];
	for (unsigned i = 0; i < NTX; i++) {
		uint64_t gpa = BUF_GPA(1, i);
		uint32_t len = 60 + i % 60;
		netns_frame(frame[i], len, 700 + i);
		uint8_t *p = host(&t, gpa, NET_HDR_LEN + len);
		memset(p, 0, NET_HDR_LEN);
		memcpy(p + NET_HDR_LEN, frame[i], len);
		struct vring_buf b = {.gpa = gpa, .len = NET_HDR_LEN + len};
		cr_assert_geq(vring_add(&t.v.ring[1], &b, 1), 0);
	}
	cr_assert_eq(vdriver_kick(&t.v, 1), 0);
	for (unsigned i = 0; i < NTX; i++)
		expect_on_wire(&t, frame[i], 60 + i % 60);
	unsigned used = 0;
	uint32_t id, ulen;
	while (used < NTX && vdriver_wait_used(&t.v, 1, VDRIVER_TIMEOUT_MS) == 0)
		while (vring_get_used(&t.v.ring[1], &id, &ulen) == 1)
			used++;
	cr_assert_eq(used, NTX);
	for (unsigned i = 0; i < NRX; i++)
		cr_assert_eq(netns_pkt_send(t.pkt, frame[i], 60 + i % 60), 0);
	usleep(100 * 1000);
	rx_post(&t, 0, NRX + 8, 2048);
	for (unsigned i = 0; i < NRX; i++)
		check_rx(&t, 0, frame[i], 60 + i % 60);
	struct ipc_metrics m = metrics(&t);
	cr_assert_eq(m.writes, NTX);
	cr_assert_eq(m.reads, NRX);
	cr_assert_eq(m.errors, 0);
	stop(&t);
}

Test(virtio_net, bursts_in_order) { bursts(BASE_FEATURES); }
Test(virtio_net, bursts_in_order_mergeable) { bursts(BASE_FEATURES | F(VIRTIO_NET_F_MRG_RXBUF)); }

/* CPU time (utime + stime) of pid in ms, and its VmRSS in KiB. */
static void proc_usage(pid_t pid, uint64_t *cpu_ms, uint64_t *rss_kib)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	unsigned long ut = 0, st = 0;
	const char *p = strrchr(buf, ')'); /* comm may hold spaces */
	cr_assert(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
	                      &st) == 2);
	*cpu_ms = (uint64_t)(ut + st) * 1000 / (uint64_t)sysconf(_SC_CLK_TCK);
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	*rss_kib = 0;
	while (fgets(buf, sizeof(buf), f))
		if (sscanf(buf, "VmRSS: %lu", (unsigned long *)rss_kib) == 1)
			break;
	fclose(f);
}

/*
 * Hostile case 19, RX starvation while the TAP floods: with no receive
 * buffers the device must neither spin on the TAP's readiness nor buffer
 * frames itself (the TAP's own queue is the only backlog, and the kernel
 * drops past it), and receiving must resume once the guest posts buffers.
 * The CPU bound is loose (a spinning device would use the whole second);
 * on a loaded machine a spinner may get less, so this can miss a spin
 * there, never report one that is not.
 */
Test(virtio_net, rx_starved_while_tap_floods, .timeout = 60)
{
	struct nt t;
	start(&t, NULL, BASE_FEATURES, true);
	uint64_t cpu0, rss0, cpu1, rss1;
	proc_usage(t.v.pid, &cpu0, &rss0);
	static uint8_t frame[1514];
	unsigned sent = 0;
	for (unsigned i = 0; i < 20000; i++) {
		netns_frame(frame, sizeof(frame), 1000 + i);
		if (netns_pkt_send(t.pkt, frame, sizeof(frame)) == 0)
			sent++;
	}
	usleep(1000 * 1000);
	proc_usage(t.v.pid, &cpu1, &rss1);
	cr_log_info("flood: %u frames sent, device cpu %llu ms, rss %llu -> %llu KiB", sent,
	            (unsigned long long)(cpu1 - cpu0), (unsigned long long)rss0,
	            (unsigned long long)rss1);
	cr_assert_gt(sent, 1000, "the flood did not happen");
	cr_expect_lt(cpu1 - cpu0, 500, "the starved device used %llu ms of CPU in about 1 s",
	             (unsigned long long)(cpu1 - cpu0));
	cr_expect_lt(rss1, rss0 + 1024, "the device's memory grew with the flood: %llu -> %llu KiB",
	             (unsigned long long)rss0, (unsigned long long)rss1);
	struct ipc_metrics m = metrics(&t);
	cr_expect_eq(m.reads, 0, "frames were taken without buffers");
	cr_expect_eq(m.errors, 0);
	/* Buffers now: frames from the backlog arrive, and more keep coming. */
	unsigned got = 0;
	for (unsigned round = 0; round < 4; round++) {
		rx_post(&t, 0, 64, 2048);
		uint32_t len;
		while (got < 64 * (round + 1) && rx_take(&t, 0, &len, 5000))
			got++;
	}
	cr_expect_eq(got, 256, "only %u of 256 posted buffers were filled from the backlog", got);
	cr_expect_eq(metrics(&t).reads, got);
	stop(&t);
}

/* Hostile case 19, TX side: every bad frame is dropped and counted; the device goes on. */
Test(virtio_net, tx_bad_frames_dropped)
{
	struct nt t;
	/* MTU negotiated, no segmentation offload: 1500 + 18 bytes at most. */
	start(&t, NULL, BASE_FEATURES, true);
	static uint8_t frame[70000];
	netns_frame(frame, sizeof(frame), 9);
	static const struct {
		struct virtio_net_hdr h;
		uint32_t len;
	} bad[] = {
	    {{0}, 13},                                   /* shorter than an Ethernet header */
	    {{0}, 1519},                                 /* above the negotiated maximum */
	    {{0}, 65600},                                /* far above */
	    {{.gso_type = 9}, 60},                       /* unknown GSO type */
	    {{.flags = 1, .gso_type = VIRTIO_NET_HDR_GSO_TCPV4, .gso_size = 1448, .hdr_len = 54,
	      .csum_start = 34, .csum_offset = 16}, 1000}, /* TSO4 not negotiated */
	    {{.gso_type = VIRTIO_NET_HDR_GSO_ECN}, 60},  /* ECN bit alone */
	    {{.flags = 1, .csum_start = 50, .csum_offset = 9}, 60}, /* checksum past the end */
	    {{.flags = 1, .csum_start = 0xffff, .csum_offset = 0xffff}, 60},
	    {{.flags = VIRTIO_NET_HDR_F_DATA_VALID}, 60}, /* RX-only flag */
	    {{.flags = 0x40}, 60},                        /* unknown flag */
	};
	unsigned nbad = sizeof(bad) / sizeof(bad[0]);
	for (unsigned i = 0; i < nbad; i++)
		tx_send(&t, 1, &bad[i].h, frame, bad[i].len);
	/* Shorter than a vnet header: 5 bytes in all. */
	uint8_t *p = host(&t, BUF_GPA(1, 200), 5);
	memset(p, 0, 5);
	struct vring_buf b = {.gpa = BUF_GPA(1, 200), .len = 5};
	cr_assert_geq(vring_add(&t.v.ring[1], &b, 1), 0);
	cr_assert_eq(vdriver_kick(&t.v, 1), 0);
	cr_assert_eq(vdriver_wait_used(&t.v, 1, VDRIVER_TIMEOUT_MS), 0);
	uint32_t id, len;
	cr_assert_eq(vring_get_used(&t.v.ring[1], &id, &len), 1);
	expect_nothing_on_wire(&t);
	struct ipc_metrics m = metrics(&t);
	cr_assert_eq(m.errors, nbad + 1);
	cr_assert_eq(m.writes, 0);
	/* Still working: a good frame, and one with a valid checksum request. */
	struct virtio_net_hdr ok = {0};
	netns_frame(frame, 60, 10);
	tx_send(&t, 1, &ok, frame, 60);
	expect_on_wire(&t, frame, 60);
	uint8_t st;
	cr_assert_eq(vdriver_status(&t.v, &st), 0);
	cr_assert_eq(st & VIRTIO_STATUS_NEEDS_RESET, 0, "bad frames are not a broken queue");
	stop(&t);
}

/* Hostile case 19, RX side: frames larger than the buffers, chains too small for a header. */
Test(virtio_net, rx_bad_buffers_dropped)
{
	struct nt t;
	start(&t, NULL, BASE_FEATURES, true);
	rx_post(&t, 0, 1, 8);   /* cannot even hold a header: returned with length 0 */
	rx_post(&t, 0, 1, 300); /* too small for the 1000-byte frame below */
	uint32_t len;
	uint8_t *p = rx_take(&t, 0, &len, VDRIVER_TIMEOUT_MS);
	cr_assert_not_null(p);
	cr_assert_eq(len, 0);
	static uint8_t frame[1000];
	netns_frame(frame, sizeof(frame), 77);
	cr_assert_eq(netns_pkt_send(t.pkt, frame, sizeof(frame)), 0);
	usleep(100 * 1000);
	cr_assert_eq(vring_used_pending(&t.v.ring[0]), 0, "a truncated frame is never delivered");
	netns_frame(frame, 100, 78);
	cr_assert_eq(netns_pkt_send(t.pkt, frame, 100), 0);
	check_rx(&t, 0, frame, 100);
	struct ipc_metrics m = metrics(&t);
	cr_assert_eq(m.errors, 2, "one bad chain, one oversized frame");
	cr_assert_eq(m.reads, 1);
	stop(&t);
}

/* One control command: returns the ack byte. */
static uint8_t ctrl(struct nt *t, uint16_t q, const void *cmd, uint32_t len)
{
	uint8_t *p = host(t, CTRL_GPA, 4096);
	memcpy(p, cmd, len);
	p[2048] = 0xee;
	struct vring_buf b[2] = {{.gpa = CTRL_GPA, .len = len}, {.gpa = CTRL_GPA + 2048, .len = 1, .write = true}};
	cr_assert_geq(vring_add(&t->v.ring[q], b, 2), 0);
	cr_assert_eq(vdriver_kick(&t->v, q), 0);
	cr_assert_eq(vdriver_wait_used(&t->v, q, VDRIVER_TIMEOUT_MS), 0, "control command not completed");
	uint32_t id, ulen;
	cr_assert_eq(vring_get_used(&t->v.ring[q], &id, &ulen), 1);
	cr_assert_eq(ulen, 1);
	return p[2048];
}

Test(virtio_net, ctrl_commands)
{
	struct nt t;
	start(&t, NULL, BASE_FEATURES, true);
	static const uint8_t promisc_on[] = {0, 0, 1}, allmulti_off[] = {0, 1, 0},
	                     mq2[] = {4, 0, 2, 0}, junk[] = {0x77, 3}, mac_tables[] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	cr_assert_eq(ctrl(&t, 2, promisc_on, sizeof(promisc_on)), VIRTIO_NET_OK);
	cr_assert_eq(ctrl(&t, 2, allmulti_off, sizeof(allmulti_off)), VIRTIO_NET_OK);
	cr_assert_eq(ctrl(&t, 2, mac_tables, sizeof(mac_tables)), VIRTIO_NET_OK);
	cr_assert_eq(ctrl(&t, 2, mq2, sizeof(mq2)), VIRTIO_NET_ERR, "MQ not offered with one pair");
	cr_assert_eq(ctrl(&t, 2, junk, sizeof(junk)), VIRTIO_NET_ERR);
	cr_assert_eq(ctrl(&t, 2, junk, 1), VIRTIO_NET_ERR);
	struct ipc_metrics m = metrics(&t);
	cr_assert_eq(m.other, 6, "control commands");
	/* The data path is unaffected. */
	rx_post(&t, 0, 4, 2048);
	static uint8_t frame[64];
	netns_frame(frame, sizeof(frame), 1);
	cr_assert_eq(netns_pkt_send(t.pkt, frame, sizeof(frame)), 0);
	check_rx(&t, 0, frame, sizeof(frame));
	stop(&t);
}

/* An IPv4/UDP frame whose source port varies, so the TAP spreads flows over its queues. */
static void udp_frame(uint8_t *f, size_t len, unsigned port)
{
	memset(f, 0, len);
	memset(f, 0xff, 6);
	f[6] = 0x02, f[11] = 0x01;
	f[12] = 0x08, f[13] = 0x00;
	uint8_t *ip = f + 14;
	ip[0] = 0x45;
	ip[2] = (uint8_t)((len - 14) >> 8), ip[3] = (uint8_t)(len - 14);
	ip[8] = 64, ip[9] = 17;
	ip[12] = 10, ip[15] = 1, ip[16] = 10, ip[19] = 2;
	uint8_t *udp = ip + 20;
	udp[0] = (uint8_t)(port >> 8), udp[1] = (uint8_t)port;
	udp[2] = 0x30, udp[3] = 0x39;
	udp[4] = (uint8_t)((len - 34) >> 8), udp[5] = (uint8_t)(len - 34);
}

Test(virtio_net, multiqueue_two_pairs)
{
	struct nt t;
	start(&t, "queues=2", BASE_FEATURES | F(VIRTIO_NET_F_MQ), true);
	cr_assert(t.v.features & F(VIRTIO_NET_F_MQ));
	cr_assert_eq(t.v.nqueues, 5);
	uint64_t v;
	cfg_read(&t, 8, 2, &v);
	cr_assert_eq(v, 2, "max_virtqueue_pairs");
	static const uint8_t mq2[] = {4, 0, 2, 0}, mq3[] = {4, 0, 3, 0};
	cr_assert_eq(ctrl(&t, 4, mq3, sizeof(mq3)), VIRTIO_NET_ERR);
	cr_assert_eq(ctrl(&t, 4, mq2, sizeof(mq2)), VIRTIO_NET_OK);
	/* TX on both pairs. */
	static uint8_t frame[128];
	struct virtio_net_hdr h = {0};
	for (uint16_t q = 1; q <= 3; q += 2) {
		netns_frame(frame, sizeof(frame), q);
		tx_send(&t, q, &h, frame, sizeof(frame));
		expect_on_wire(&t, frame, sizeof(frame));
	}
	/* RX: 64 flows over both queues; every frame arrives exactly once. */
	rx_post(&t, 0, 128, 2048);
	rx_post(&t, 2, 128, 2048);
	const unsigned nflows = 64;
	for (unsigned i = 0; i < nflows; i++) {
		udp_frame(frame, 100, 1000 + i);
		cr_assert_eq(netns_pkt_send(t.pkt, frame, 100), 0);
	}
	unsigned got[2] = {0, 0};
	for (int tries = 0; got[0] + got[1] < nflows && tries < 200; tries++) {
		for (unsigned k = 0; k < 2; k++) {
			uint32_t len;
			while (vring_used_pending(&t.v.ring[2 * k]) &&
			       rx_take(&t, (uint16_t)(2 * k), &len, 0)) {
				cr_assert_eq(len, NET_HDR_LEN + 100);
				got[k]++;
			}
		}
		usleep(10 * 1000);
	}
	cr_assert_eq(got[0] + got[1], nflows, "got %u + %u", got[0], got[1]);
	cr_assert_gt(got[0], 0, "queue pair 0 received nothing");
	cr_assert_gt(got[1], 0, "queue pair 1 received nothing");
	/* Back to one pair: everything lands on pair 0. */
	static const uint8_t mq1[] = {4, 0, 1, 0};
	cr_assert_eq(ctrl(&t, 4, mq1, sizeof(mq1)), VIRTIO_NET_OK);
	for (unsigned i = 0; i < 8; i++) {
		udp_frame(frame, 100, 3000 + i);
		cr_assert_eq(netns_pkt_send(t.pkt, frame, 100), 0);
		uint32_t len;
		cr_assert_not_null(rx_take(&t, 0, &len, VDRIVER_TIMEOUT_MS), "frame %u", i);
	}
	cr_assert_eq(vring_used_pending(&t.v.ring[2]), 0);
	stop(&t);
}

Test(virtio_net, bad_options_refused)
{
	struct vdriver v;
	memset(&v, 0, sizeof(v));
	struct vdriver_params p = {.device = "net", .opts = "tap=x,queues=9"};
	cr_assert_eq(vdriver_spawn(&v, &p), -EINVAL);
	p.opts = "tap-fd=99999";
	cr_assert_lt(vdriver_spawn(&v, &p), 0);
}
