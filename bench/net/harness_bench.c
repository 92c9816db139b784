/*
 * Device-only virtio-net benchmark: drives the real (jailed) net device
 * process through the host-side harness (tests/harness/vdriver) — no guest,
 * no KVM — against a host packet source/sink (an AF_PACKET socket on the
 * TAP) in a private network namespace, for 64- and 1500-byte frames both
 * ways; next to it, in the same run, a plain host loop on a second TAP
 * (writev into the TAP / readv out of it) with the same source/sink.
 * Prints one JSON object per run: packets/s and Gbit/s as counted at the
 * receiving end, and the device's interrupts per frame.
 *
 *   bench-net-harness [--seconds N] [--no-sandbox]     (needs root)
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio/net.h"
#include "tests/harness/vdriver.h"
#include "tests/unit/net/netns.h"

#define F(b) (1ull << (b))
#define FEATURES                                                                                   \
	(F(VIRTIO_F_VERSION_1) | F(VIRTIO_F_EVENT_IDX) | F(VIRTIO_NET_F_MTU) |                     \
	 F(VIRTIO_NET_F_STATUS) | F(VIRTIO_NET_F_CTRL_VQ) | F(VIRTIO_NET_F_MRG_RXBUF))
#define RAM     (64ull << 20)
#define QSIZE   256
#define BUF(q, i) (VDRIVER_DATA_BASE + 0x100000ull * (q) + 0x1000ull * (i))

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The host end: a thread that sends frames into the TAP or counts frames out of it. */
struct peer {
	int sock;
	size_t len;
	bool send;
	atomic_bool stop;
	atomic_uint_fast64_t count;
	pthread_t th;
};

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	static _Thread_local uint8_t buf[2048];
	netns_frame(buf, p->len, 1);
	while (!atomic_load(&p->stop)) {
		if (p->send) {
			if (send(p->sock, buf, p->len, 0) == (ssize_t)p->len)
				atomic_fetch_add(&p->count, 1);
			else if (errno == EAGAIN || errno == ENOBUFS) {
				struct pollfd pf = {.fd = p->sock, .events = POLLOUT};
				(void)poll(&pf, 1, 1);
			}
		} else {
			ssize_t n = recv(p->sock, buf, sizeof(buf), MSG_TRUNC);
			if (n == (ssize_t)p->len)
				atomic_fetch_add(&p->count, 1);
			else if (n < 0) {
				struct pollfd pf = {.fd = p->sock, .events = POLLIN};
				(void)poll(&pf, 1, 10);
			}
		}
	}
	return NULL;
}

static void peer_start(struct peer *p, int sock, size_t len, bool send_frames)
{
	memset(p, 0, sizeof(*p));
	p->sock = sock;
	p->len = len;
	p->send = send_frames;
	if (pthread_create(&p->th, NULL, peer_main, p)) {
		fprintf(stderr, "pthread_create failed\n");
		exit(1);
	}
}

static uint64_t peer_stop(struct peer *p)
{
	atomic_store(&p->stop, true);
	pthread_join(p->th, NULL);
	return atomic_load(&p->count);
}

static void report(const char *who, const char *dir, size_t len, uint64_t frames, uint64_t ns,
                   uint64_t irqs)
{
	double s = (double)ns / 1e9, pps = (double)frames / s;
	printf("{\"path\": \"%s\", \"dir\": \"%s\", \"frame\": %zu, \"packets\": %" PRIu64
	       ", \"pps\": %.0f, \"gbit_s\": %.3f",
	       who, dir, len, frames, pps, pps * (double)len * 8 / 1e9);
	if (irqs != UINT64_MAX)
		printf(", \"irqs_per_frame\": %.3f", frames ? (double)irqs / (double)frames : 0.0);
	printf("}\n");
	fflush(stdout);
}

/* Guest → device → TAP → sink. */
static void dev_tx(struct vdriver *v, int sock, size_t len, double secs)
{
	struct peer sink;
	struct ipc_metrics m0, m1;
	uint8_t frame[2048];
	netns_frame(frame, len, 1);
	for (unsigned i = 0; i < QSIZE; i++) {
		uint8_t *p = guest_mem_ptr(&v->mem, BUF(1, i), NET_HDR_LEN + len);
		memset(p, 0, NET_HDR_LEN);
		memcpy(p + NET_HDR_LEN, frame, len);
	}
	(void)vdriver_metrics(v, &m0);
	peer_start(&sink, sock, len, false);
	struct vring *r = &v->ring[1];
	unsigned next = 0;
	uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9);
	while (now_ns() < end) {
		unsigned added = 0;
		for (;;) {
			struct vring_buf b = {.gpa = BUF(1, next % QSIZE), .len = NET_HDR_LEN + (uint32_t)len};
			if (vring_add(r, &b, 1) < 0)
				break;
			next++, added++;
		}
		if (added)
			(void)vdriver_kick(v, 1);
		uint32_t id, ulen;
		unsigned got = 0;
		while (vring_get_used(r, &id, &ulen) == 1)
			got++;
		if (!got)
			(void)vdriver_wait_irq(v, 2, 10);
	}
	uint64_t ns = now_ns() - t0;
	usleep(50 * 1000);
	uint64_t n = peer_stop(&sink);
	(void)vdriver_wait_used(v, 1, 100);
	uint32_t id, ulen;
	while (vring_get_used(r, &id, &ulen) == 1)
		;
	(void)vdriver_metrics(v, &m1);
	report("device", "tx", len, n, ns, m1.interrupts - m0.interrupts);
	if (m1.errors != m0.errors)
		fprintf(stderr, "device dropped %" PRIu64 " TX frames\n", m1.errors - m0.errors);
}

/* Source → TAP → device → guest buffers. */
static void dev_rx(struct vdriver *v, int sock, size_t len, double secs)
{
	struct peer src;
	struct ipc_metrics m0, m1;
	struct vring *r = &v->ring[0];
	uint64_t gpa_of[QSIZE];
	for (unsigned i = 0; i < QSIZE; i++) {
		struct vring_buf b = {.gpa = BUF(0, i), .len = 2048, .write = true};
		int head = vring_add(r, &b, 1);
		if (head >= 0)
			gpa_of[head] = b.gpa;
	}
	(void)vdriver_kick(v, 0);
	(void)vdriver_metrics(v, &m0);
	peer_start(&src, sock, len, true);
	uint64_t frames = 0, t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9);
	while (now_ns() < end) {
		uint32_t id, ulen;
		unsigned got = 0;
		while (vring_get_used(r, &id, &ulen) == 1) {
			struct vring_buf b = {.gpa = gpa_of[id], .len = 2048, .write = true};
			int head = vring_add(r, &b, 1);
			if (head >= 0)
				gpa_of[head] = b.gpa;
			if (ulen == NET_HDR_LEN + len)
				frames++;
			got++;
		}
		if (got)
			(void)vdriver_kick(v, 0);
		else
			(void)vdriver_wait_irq(v, 1, 10);
	}
	uint64_t ns = now_ns() - t0;
	uint64_t sent = peer_stop(&src);
	(void)vdriver_metrics(v, &m1);
	report("device", "rx", len, frames, ns, m1.interrupts - m0.interrupts);
	fprintf(stderr, "  (rx %zu: source sent %" PRIu64 ", the TAP queue dropped the rest)\n", len,
	        sent);
	/* Drain what is left so the next run starts clean. */
	usleep(50 * 1000);
	uint32_t id, ulen;
	while (vring_get_used(r, &id, &ulen) == 1) {
		struct vring_buf b = {.gpa = gpa_of[id], .len = 2048, .write = true};
		int head = vring_add(r, &b, 1);
		if (head >= 0)
			gpa_of[head] = b.gpa;
	}
	(void)vdriver_kick(v, 0);
}

/* The same traffic through a plain host loop on a second TAP. */
static void host_tx(struct net_backend *b, int sock, size_t len, double secs)
{
	struct peer sink;
	uint8_t hdr[NET_HDR_LEN] = {0}, frame[2048];
	netns_frame(frame, len, 1);
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {frame, len}};
	peer_start(&sink, sock, len, false);
	uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9);
	while (now_ns() < end)
		for (int i = 0; i < 64; i++)
			if (b->ops->writev(b, 0, iov, 2) == -EAGAIN)
				break;
	uint64_t ns = now_ns() - t0;
	usleep(50 * 1000);
	report("host-loop", "tx", len, peer_stop(&sink), ns, UINT64_MAX);
}

static void host_rx(struct net_backend *b, int sock, size_t len, double secs)
{
	struct peer src;
	uint8_t buf[2048 + NET_HDR_LEN];
	struct iovec iov = {buf, sizeof(buf)};
	uint64_t frames = 0;
	peer_start(&src, sock, len, true);
	uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9);
	while (now_ns() < end) {
		ssize_t n = b->ops->readv(b, 0, &iov, 1);
		if (n == (ssize_t)(NET_HDR_LEN + len))
			frames++;
		else if (n == -EAGAIN) {
			struct pollfd pf = {.fd = b->fd[0], .events = POLLIN};
			(void)poll(&pf, 1, 10);
		}
	}
	uint64_t ns = now_ns() - t0;
	(void)peer_stop(&src);
	report("host-loop", "rx", len, frames, ns, UINT64_MAX);
	while (b->ops->readv(b, 0, &iov, 1) > 0)
		;
}

int main(int argc, char **argv)
{
	double secs = 2;
	bool sandbox = true;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			secs = atof(argv[++i]);
		else if (!strcmp(argv[i], "--no-sandbox"))
			sandbox = false;
		else {
			fprintf(stderr, "usage: %s [--seconds N] [--no-sandbox]  (needs root)\n", argv[0]);
			return 2;
		}
	}
	int r = netns_enter();
	if (r < 0) {
		fprintf(stderr, "cannot make a private network namespace: %s (needs root)\n",
		        strerror(-r));
		return 1;
	}
	/* Spawn the device before any thread exists (jail_spawn's contract). */
	struct vdriver v;
	memset(&v, 0, sizeof(v));
	struct vdriver_params p = {.device = "net", .opts = "tap=rvb0", .ram_size = RAM,
	                           .sandbox = sandbox};
	if ((r = vdriver_spawn(&v, &p)) < 0 || netns_if_up("rvb0") < 0 ||
	    (r = vdriver_setup(&v, FEATURES, QSIZE)) < 0) {
		fprintf(stderr, "device setup: %s\n", strerror(-r));
		return 1;
	}
	struct net_backend hb;
	char err[256];
	struct tap_params tp = {.name = "rvb1", .fd = -1, .queues = 1};
	if (tap_open(&hb, &tp, err, sizeof(err)) < 0 || netns_if_up("rvb1") < 0) {
		fprintf(stderr, "host TAP: %s\n", err);
		return 1;
	}
	int dsock = netns_pkt_open("rvb0"), hsock = netns_pkt_open("rvb1");
	if (dsock < 0 || hsock < 0) {
		fprintf(stderr, "AF_PACKET: %s\n", strerror(-(dsock < 0 ? dsock : hsock)));
		return 1;
	}
	static const size_t lens[] = {64, 1500};
	for (unsigned i = 0; i < 2; i++) {
		dev_tx(&v, dsock, lens[i], secs);
		host_tx(&hb, hsock, lens[i], secs);
		dev_rx(&v, dsock, lens[i], secs);
		host_rx(&hb, hsock, lens[i], secs);
	}
	int st = vdriver_shutdown(&v);
	vdriver_destroy(&v);
	net_backend_close(&hb);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
