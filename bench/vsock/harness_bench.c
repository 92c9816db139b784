/*
 * Device-only virtio-vsock benchmark: the real (jailed) vsock device process
 * driven by the host-side harness (tests/harness/vdriver), which plays the
 * guest from this thread — no KVM, no guest — against host peers on Unix
 * sockets, next to the reference: the same test client (64 KiB writes by
 * one thread, 64 KiB reads by another) on a plain host socketpair, in the
 * same run. Measures:
 *   h2g  host client → CONNECT → guest: MB/s the guest receives
 *   g2h  guest → PATH_<port> → host listener: MB/s the host reads (the
 *        guest sends 32 KiB packets: half the device's 64 KiB credit)
 *   setup host connects per second (connect, CONNECT line, guest RESPONSE,
 *        "OK" read, close), reference: connect/accept/"OK"/close on a
 *        plain listener.
 * Prints one JSON object.
 *
 *   bench-vsock-harness [--seconds N] [--no-sandbox]
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <dirent.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio/vsock.h"
#include "tests/harness/vdriver.h"

#define F(b) (1ull << (b))
#define FEATURES (F(VIRTIO_F_VERSION_1) | F(VIRTIO_F_EVENT_IDX) | F(VIRTIO_F_INDIRECT_DESC))
#define RAM      (64ull << 20)
#define CID      3
#define CHUNK    (64u * 1024)
#define HDR      ((uint32_t)sizeof(struct vsock_hdr))
#define NRX      64
#define NTX      32
#define SLOT     0x11000ull /* 68 KiB: a header and 64 KiB */
#define RX_GPA(i) (VDRIVER_DATA_BASE + SLOT * (i))
#define TX_GPA(i) (VDRIVER_DATA_BASE + SLOT * (NRX + (i)))
#define GUEST_ALLOC (4u << 20) /* what the "guest" advertises */
#define G2H_PKT  (32u * 1024) /* guest → host packet payload (≤ VSOCK_MAX_PKT, ≤ a TX slot) */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int r)
{
	fprintf(stderr, "bench-vsock-harness: %s: %s\n", what, strerror(r < 0 ? -r : r));
	exit(1);
}

/* ---- the test client: one writer thread, one reader thread ---- */

struct peer {
	int fd;
	double secs;     /* writer: write for this long, then close */
	uint64_t bytes;  /* reader: bytes read until EOF */
	uint64_t t0, t1; /* reader: first byte, EOF */
	uint64_t cpu_ns; /* the thread's CPU time */
	pthread_t th;
};

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time of every thread of process pid so far (schedstat, ns). */
static uint64_t proc_cpu_ns(pid_t pid)
{
	char path[64];
	uint64_t sum = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return 0;
	for (struct dirent *e; (e = readdir(d));) {
		char p2[320];
		unsigned long long ns;
		if (e->d_name[0] == '.')
			continue;
		if (snprintf(p2, sizeof(p2), "%.60s/%.200s/schedstat", path, e->d_name) >= (int)sizeof(p2))
			continue;
		FILE *f = fopen(p2, "re");
		if (f && fscanf(f, "%llu", &ns) == 1)
			sum += ns;
		if (f)
			fclose(f);
	}
	closedir(d);
	return sum;
}

static void *writer(void *arg)
{
	struct peer *p = arg;
	static _Thread_local uint8_t buf[CHUNK];
	memset(buf, 0x5a, sizeof(buf));
	uint64_t end = now_ns() + (uint64_t)(p->secs * 1e9);
	while (now_ns() < end)
		if (write(p->fd, buf, sizeof(buf)) < 0 && errno != EINTR)
			break;
	shutdown(p->fd, SHUT_WR);
	p->cpu_ns = thread_cpu_ns();
	return NULL;
}

static void *reader(void *arg)
{
	struct peer *p = arg;
	static _Thread_local uint8_t buf[CHUNK];
	for (;;) {
		ssize_t n = read(p->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (!p->bytes)
			p->t0 = now_ns();
		p->bytes += (uint64_t)n;
	}
	p->t1 = now_ns();
	p->cpu_ns = thread_cpu_ns();
	return NULL;
}

static double mbps(const struct peer *p)
{
	return p->t1 > p->t0 ? (double)p->bytes / 1e6 / ((double)(p->t1 - p->t0) / 1e9) : 0;
}

/* MB/s of the pair; *ns_kib: the writer's and reader's CPU per KiB moved. */
static double ref_stream(double secs, double *ns_kib)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair", errno);
	struct peer w = {.fd = sv[0], .secs = secs}, r = {.fd = sv[1]};
	pthread_create(&r.th, NULL, reader, &r);
	pthread_create(&w.th, NULL, writer, &w);
	pthread_join(w.th, NULL);
	pthread_join(r.th, NULL);
	close(sv[0]);
	close(sv[1]);
	*ns_kib = r.bytes ? (double)(w.cpu_ns + r.cpu_ns) / ((double)r.bytes / 1024) : 0;
	return mbps(&r);
}

/* ---- the "guest" ---- */

struct guest {
	struct vdriver v;
	char uds[108];
	uint64_t rx_gpa[VIRTQ_MAX_SIZE];
	int tx_slot_of[VIRTQ_MAX_SIZE];
	int free_tx[NTX];
	unsigned nfree_tx;
	uint32_t fwd_cnt, fwd_told; /* consumed, last reported */
	uint16_t tx_kicked, rx_kicked; /* avail idx at the last kick decision */
	uint64_t got;               /* RW payload received */
	bool rst, shut;
};

/*
 * Kick queue q as a Linux driver does with EVENT_IDX: only if the device's
 * avail_event lies in the entries published since the last kick.
 */
static void kick(struct guest *g, uint16_t q, uint16_t *kicked_at)
{
	struct vring *r = &g->v.ring[q];
	uint16_t now = r->avail_idx, old = *kicked_at;
	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* avail idx store before the avail_event load */
	uint16_t ev = vring_avail_event(r);
	*kicked_at = now;
	if ((uint16_t)(now - ev - 1) < (uint16_t)(now - old))
		(void)vdriver_kick(&g->v, q);
}

static void rx_post(struct guest *g, unsigned slot)
{
	struct vring_buf b = {.gpa = RX_GPA(slot), .len = HDR + CHUNK, .write = true};
	int head = vring_add(&g->v.ring[VSOCK_QUEUE_RX], &b, 1);
	if (head < 0)
		die("rx_post", head);
	g->rx_gpa[head] = RX_GPA(slot);
}

static void tx_reclaim(struct guest *g)
{
	uint32_t id, len;
	while (vring_get_used(&g->v.ring[VSOCK_QUEUE_TX], &id, &len) == 1)
		g->free_tx[g->nfree_tx++] = g->tx_slot_of[id];
}

/* Queue one packet (header in host order + n payload bytes of 0xa5) and kick. */
static void tx(struct guest *g, struct vsock_hdr h, uint32_t n)
{
	while (!g->nfree_tx) {
		tx_reclaim(g);
		if (!g->nfree_tx && vdriver_wait_used(&g->v, VSOCK_QUEUE_TX, 5000) < 0)
			die("TX queue stuck", ETIMEDOUT);
	}
	int slot = g->free_tx[--g->nfree_tx];
	uint8_t *p = guest_mem_ptr(&g->v.mem, TX_GPA(slot), HDR + n);
	h.len = n;
	h.src_cid = CID;
	h.dst_cid = VSOCK_HOST_CID;
	h.type = VSOCK_TYPE_STREAM;
	h.buf_alloc = GUEST_ALLOC;
	h.fwd_cnt = g->fwd_cnt;
	g->fwd_told = g->fwd_cnt;
	vsock_hdr_to_le(&h);
	memcpy(p, &h, HDR);
	struct vring_buf b = {.gpa = TX_GPA(slot), .len = HDR + n};
	int head = vring_add(&g->v.ring[VSOCK_QUEUE_TX], &b, 1);
	if (head < 0)
		die("tx", head);
	g->tx_slot_of[head] = slot;
	kick(g, VSOCK_QUEUE_TX, &g->tx_kicked);
}

/*
 * Take every used RX packet: count RW payload (consumed at once), note
 * RST/SHUTDOWN, hand the last header to *last; repost and kick once.
 * Returns the packets taken.
 */
static unsigned rx_drain(struct guest *g, struct vsock_hdr *last)
{
	struct vring *rx = &g->v.ring[VSOCK_QUEUE_RX];
	uint32_t id, len;
	unsigned n = 0;
	while (vring_get_used(rx, &id, &len) == 1) {
		struct vsock_hdr h;
		memcpy(&h, guest_mem_ptr(&g->v.mem, g->rx_gpa[id], HDR), HDR);
		vsock_hdr_from_le(&h);
		if (h.op == VSOCK_OP_RW) {
			g->got += h.len;
			g->fwd_cnt += h.len;
		}
		g->rst |= h.op == VSOCK_OP_RST;
		g->shut |= h.op == VSOCK_OP_SHUTDOWN;
		if (last)
			*last = h;
		rx_post(g, (unsigned)((g->rx_gpa[id] - VDRIVER_DATA_BASE) / SLOT));
		n++;
	}
	if (n)
		kick(g, VSOCK_QUEUE_RX, &g->rx_kicked);
	return n;
}

/* Wait for the next RX packet(s); 0 or -ETIMEDOUT. */
static int rx_wait(struct guest *g, struct vsock_hdr *last, int timeout_ms)
{
	if (rx_drain(g, last))
		return 0;
	int r = vdriver_wait_used(&g->v, VSOCK_QUEUE_RX, timeout_ms);
	if (r < 0)
		return r;
	rx_drain(g, last);
	return 0;
}

static void guest_start(struct guest *g, bool sandbox, const char *dir)
{
	char opts[200];
	memset(g, 0, sizeof(*g));
	snprintf(g->uds, sizeof(g->uds), "%s/v.sock", dir);
	snprintf(opts, sizeof(opts), "cid=%u,uds=%s", CID, g->uds);
	struct vdriver_params p = {.device = "vsock", .opts = opts, .ram_size = RAM, .sandbox = sandbox};
	int r = vdriver_spawn(&g->v, &p);
	if (r < 0)
		die("vdriver_spawn", r);
	if ((r = vdriver_setup(&g->v, FEATURES, 256)) < 0)
		die("vdriver_setup", r);
	for (unsigned i = 0; i < NRX; i++)
		rx_post(g, i);
	(void)vdriver_kick(&g->v, VSOCK_QUEUE_RX);
	g->rx_kicked = g->v.ring[VSOCK_QUEUE_RX].avail_idx;
	for (int i = 0; i < NTX; i++)
		g->free_tx[g->nfree_tx++] = i;
}

static int connect_to(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	memcpy(a.sun_path, path, strlen(path) < sizeof(a.sun_path) ? strlen(path) + 1 : 0);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect", errno);
	return fd;
}

/* A host client's CONNECT, accepted by the guest; the client fd after "OK". */
static int host_conn(struct guest *g, uint32_t port, uint32_t *hport)
{
	char line[32], ok[32];
	int fd = connect_to(g->uds);
	int n = snprintf(line, sizeof(line), "CONNECT %u\n", port);
	if (write(fd, line, (size_t)n) != n)
		die("write CONNECT", errno);
	struct vsock_hdr h = {0};
	while (h.op != VSOCK_OP_REQUEST)
		if (rx_wait(g, &h, 5000) < 0)
			die("no REQUEST", ETIMEDOUT);
	*hport = h.src_port;
	g->fwd_cnt = g->fwd_told = 0; /* per connection: this one starts at 0 */
	tx(g, (struct vsock_hdr){.op = VSOCK_OP_RESPONSE, .src_port = port, .dst_port = h.src_port}, 0);
	size_t got = 0;
	while (got == 0 || ok[got - 1] != '\n') {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 5000) != 1)
			die("no OK", ETIMEDOUT);
		ssize_t k = read(fd, ok + got, sizeof(ok) - got);
		if (k <= 0 || got + (size_t)k >= sizeof(ok))
			die("client closed", EPIPE);
		got += (size_t)k;
	}
	return fd;
}

static double h2g(struct guest *g, double secs, double *dev_ns_kib)
{
	uint32_t hport;
	int fd = host_conn(g, 5000, &hport);
	uint64_t c0 = proc_cpu_ns(g->v.pid);
	struct peer w = {.fd = fd, .secs = secs};
	g->got = 0;
	g->rst = g->shut = false;
	uint64_t t0 = 0, t1 = 0;
	pthread_create(&w.th, NULL, writer, &w);
	while (!g->shut && !g->rst) {
		if (rx_wait(g, NULL, 5000) < 0)
			die("h2g stalled", ETIMEDOUT);
		if (!t0 && g->got)
			t0 = now_ns();
		t1 = now_ns();
		if (g->fwd_cnt - g->fwd_told >= GUEST_ALLOC / 4)
			tx(g, (struct vsock_hdr){.op = VSOCK_OP_CREDIT_UPDATE, .src_port = 5000,
			                         .dst_port = hport}, 0);
		tx_reclaim(g);
	}
	pthread_join(w.th, NULL);
	*dev_ns_kib = g->got ? (double)(proc_cpu_ns(g->v.pid) - c0) / ((double)g->got / 1024) : 0;
	tx(g, (struct vsock_hdr){.op = VSOCK_OP_SHUTDOWN, .flags = VSOCK_SHUTDOWN_BOTH,
	                         .src_port = 5000, .dst_port = hport}, 0);
	close(fd);
	while (!g->rst && rx_wait(g, NULL, 1000) == 0)
		;
	return t1 > t0 ? (double)g->got / 1e6 / ((double)(t1 - t0) / 1e9) : 0;
}

static double g2h(struct guest *g, double secs, const char *dir, double *dev_ns_kib)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/v.sock_5001", dir);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	memcpy(a.sun_path, path, strlen(path) + 1);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 4) < 0)
		die("listen", errno);
	uint32_t gport = 777;
	g->fwd_cnt = g->fwd_told = 0;
	tx(g, (struct vsock_hdr){.op = VSOCK_OP_REQUEST, .src_port = gport, .dst_port = 5001}, 0);
	struct vsock_hdr h = {0};
	while (h.op != VSOCK_OP_RESPONSE)
		if (rx_wait(g, &h, 5000) < 0)
			die("no RESPONSE", ETIMEDOUT);
	struct peer r = {.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)};
	if (r.fd < 0)
		die("accept", errno);
	pthread_create(&r.th, NULL, reader, &r);
	uint64_t c0 = proc_cpu_ns(g->v.pid);
	uint32_t dev_alloc = h.buf_alloc, dev_fwd = h.fwd_cnt, sent = 0;
	uint64_t waits = 0, wait_ns = 0, wait_max = 0, pkts = 0;
	uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
	while (now_ns() < end) {
		uint32_t credit = vsock_peer_credit(dev_alloc, dev_fwd, sent);
		/* Half-window packets: one is forwarded while the next is on its way. */
		if (credit >= G2H_PKT && g->nfree_tx) {
			uint32_t n = G2H_PKT;
			tx(g, (struct vsock_hdr){.op = VSOCK_OP_RW, .src_port = gport, .dst_port = 5001}, n);
			sent += n;
			pkts++;
			tx_reclaim(g);
			continue;
		}
		h.op = 0;
		uint64_t w0 = now_ns();
		if (rx_wait(g, &h, 5000) < 0)
			die("g2h stalled", ETIMEDOUT);
		w0 = now_ns() - w0;
		waits++;
		wait_ns += w0;
		if (w0 > wait_max)
			wait_max = w0;
		if (h.op) {
			dev_alloc = h.buf_alloc;
			dev_fwd = h.fwd_cnt;
		}
		tx_reclaim(g);
	}
	if (getenv("VSOCK_BENCH_DEBUG"))
		fprintf(stderr, "g2h: %" PRIu64 " packets, %" PRIu64 " credit waits, %.0f us total, "
		        "max %.0f us\n", pkts, waits, wait_ns / 1e3, wait_max / 1e3);
	tx(g, (struct vsock_hdr){.op = VSOCK_OP_SHUTDOWN, .flags = VSOCK_SHUTDOWN_BOTH,
	                         .src_port = gport, .dst_port = 5001}, 0);
	pthread_join(r.th, NULL);
	*dev_ns_kib = r.bytes ? (double)(proc_cpu_ns(g->v.pid) - c0) / ((double)r.bytes / 1024) : 0;
	g->rst = false;
	while (!g->rst && rx_wait(g, NULL, 1000) == 0)
		;
	close(r.fd);
	close(lfd);
	unlink(path);
	return mbps(&r);
}

static double setup_rate(struct guest *g, double secs)
{
	uint64_t end = now_ns() + (uint64_t)(secs * 1e9), t0 = now_ns();
	unsigned n = 0;
	while (now_ns() < end) {
		uint32_t hport;
		uint64_t a = now_ns();
		int fd = host_conn(g, 6000, &hport);
		uint64_t b = now_ns();
		close(fd);
		g->rst = false;
		while (!g->rst)
			if (rx_wait(g, NULL, 5000) < 0)
				die("no RST after close", ETIMEDOUT);
		if (getenv("VSOCK_BENCH_DEBUG"))
			fprintf(stderr, "setup: connect..OK %.0f us, close..RST %.0f us\n", (b - a) / 1e3,
			        (now_ns() - b) / 1e3);
		n++;
	}
	return n / ((double)(now_ns() - t0) / 1e9);
}

static double ref_setup_rate(double secs, const char *dir)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/ref.sock", dir);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	memcpy(a.sun_path, path, strlen(path) + 1);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 4) < 0)
		die("listen", errno);
	uint64_t end = now_ns() + (uint64_t)(secs * 1e9), t0 = now_ns();
	unsigned n = 0;
	while (now_ns() < end) {
		char buf[32];
		int c = connect_to(path), s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (s < 0 || write(c, "CONNECT 6000\n", 13) != 13 || read(s, buf, sizeof(buf)) <= 0 ||
		    write(s, "OK 1\n", 5) != 5 || read(c, buf, sizeof(buf)) <= 0)
			die("reference setup", errno);
		close(c);
		close(s);
		n++;
	}
	close(lfd);
	unlink(path);
	return n / ((double)(now_ns() - t0) / 1e9);
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
			fprintf(stderr, "usage: bench-vsock-harness [--seconds N] [--no-sandbox]\n");
			return 2;
		}
	}
	char dir[] = "/tmp/rvbvsock.XXXXXX";
	if (!mkdtemp(dir))
		die("mkdtemp", errno);
	struct guest *g = calloc(1, sizeof(*g));
	guest_start(g, sandbox, dir);
	double ref_cpu, ref_cpu2, a_cpu, b_cpu;
	double ref = ref_stream(secs, &ref_cpu);
	double a = h2g(g, secs, &a_cpu);
	double b = g2h(g, secs, dir, &b_cpu);
	double ref2 = ref_stream(secs, &ref_cpu2);
	double s = setup_rate(g, secs);
	double rs = ref_setup_rate(secs, dir);
	struct ipc_metrics m;
	int mr = vdriver_metrics(&g->v, &m);
	int st = vdriver_shutdown(&g->v);
	vdriver_destroy(&g->v);
	rmdir(dir);
	double refm = (ref + ref2) / 2;
	printf("{\"sandbox\": %s, \"seconds\": %.1f, \"write_size\": %u,\n"
	       " \"h2g_mb_s\": %.0f, \"g2h_mb_s\": %.0f, \"ref_pair_mb_s\": %.0f,"
	       " \"ref_pair_runs\": [%.0f, %.0f],\n"
	       " \"h2g_ratio\": %.2f, \"g2h_ratio\": %.2f,\n"
	       " \"h2g_device_cpu_ns_per_kib\": %.0f, \"g2h_device_cpu_ns_per_kib\": %.0f,"
	       " \"ref_pair_cpu_ns_per_kib\": %.0f,\n"
	       " \"setup_per_s\": %.0f, \"ref_setup_per_s\": %.0f, \"setup_ratio\": %.2f,\n"
	       " \"device_interrupts\": %" PRIu64 ", \"device_notifications\": %" PRIu64
	       ", \"device_errors\": %" PRIu64 ", \"device_exit_ok\": %s}\n",
	       sandbox ? "true" : "false", secs, CHUNK, a, b, refm, ref, ref2, refm ? a / refm : 0,
	       refm ? b / refm : 0, a_cpu, b_cpu, (ref_cpu + ref_cpu2) / 2, s, rs, rs ? s / rs : 0, mr ? 0 : m.interrupts,
	       mr ? 0 : m.notifications, mr ? 0 : m.errors,
	       WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "true" : "false");
	free(g);
	return 0;
}
