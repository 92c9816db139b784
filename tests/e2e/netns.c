/* Network namespaces and host-side traffic for the virtio-net e2e tests (see netns.h). */
#include "tests/e2e/netns.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIVE 8

static struct netns *live[MAX_LIVE];
static unsigned counter;
static bool atexit_done;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool on_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[4096];
	if (!path)
		path = "/usr/sbin:/usr/bin:/sbin:/bin";
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, ":");
		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, prog);
		if (access(buf, X_OK) == 0)
			return true;
		p += n;
		if (*p == ':')
			p++;
	}
	return access("/usr/sbin/ip", X_OK) == 0 && strcmp(prog, "ip") == 0;
}

bool netns_usable(void)
{
	return geteuid() == 0 && on_path("ip");
}

bool netns_have_ping(void)
{
	return on_path("ping");
}

/* Runs argv (NULL-terminated) quietly; returns the exit code or -1. */
static int run(const char *const *argv, double timeout_s, char **out)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = timeout_s};
	struct harness_result r;
	harness_argv_init(&a);
	harness_argv_addv(&a, argv);
	if (harness_run(&a, &o, &r) != 0)
		return -1;
	int rc = r.exited ? r.exit_code : -1;
	if (out) {
		size_t n = strlen(r.out) + strlen(r.err) + 2;
		*out = malloc(n);
		if (*out)
			snprintf(*out, n, "%s%s", r.out, r.err);
	}
	harness_result_free(&r);
	return rc;
}

static void reap_stale(void)
{
	DIR *d = opendir("/run/netns");
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		unsigned pid, n;
		if (sscanf(e->d_name, "ringvm-test-%u-%u", &pid, &n) != 2)
			continue;
		if (pid == (unsigned)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		const char *del[] = {"ip", "netns", "del", e->d_name, NULL};
		run(del, 10, NULL);
	}
	closedir(d);
}

static void untrack(struct netns *ns)
{
	for (unsigned i = 0; i < MAX_LIVE; i++)
		if (live[i] == ns)
			live[i] = NULL;
}

void netns_destroy(struct netns *ns)
{
	if (!ns || !ns->created)
		return;
	const char *dl[] = {"ip", "-n", ns->name, "link", "del", ns->tap, NULL};
	run(dl, 10, NULL);
	const char *dn[] = {"ip", "netns", "del", ns->name, NULL};
	run(dn, 10, NULL);
	ns->created = false;
	untrack(ns);
}

void netns_destroy_all(void)
{
	for (unsigned i = 0; i < MAX_LIVE; i++)
		if (live[i])
			netns_destroy(live[i]);
}

int netns_create(struct netns *ns, unsigned mtu, bool multi_queue, char *err, size_t errlen)
{
	netns_destroy_all(); /* one at a time: a previous test in this process may have left one */
	memset(ns, 0, sizeof(*ns));
	reap_stale();
	if (!atexit_done) {
		atexit(netns_destroy_all);
		atexit_done = true;
	}
	snprintf(ns->name, sizeof(ns->name), "ringvm-test-%d-%u", (int)getpid(), counter++);
	snprintf(ns->tap, sizeof(ns->tap), "rvtap%d", (int)getpid() % 10000000);
	char mtus[16];
	snprintf(mtus, sizeof(mtus), "%u", mtu ? mtu : 1500);
	const char *add[] = {"ip", "netns", "add", ns->name, NULL};
	char *out = NULL;
	if (run(add, 10, &out) != 0) {
		snprintf(err, errlen, "ip netns add %s: %s", ns->name, out ? out : "?");
		free(out);
		return -1;
	}
	free(out);
	ns->created = true;
	for (unsigned i = 0; i < MAX_LIVE; i++)
		if (!live[i]) {
			live[i] = ns;
			break;
		}
	const char *steps[][12] = {
	    {"ip", "-n", ns->name, "link", "set", "lo", "up", NULL},
	    {"ip", "-n", ns->name, "tuntap", "add", "dev", ns->tap, "mode", "tap",
	     multi_queue ? "multi_queue" : NULL, NULL},
	    {"ip", "-n", ns->name, "addr", "add", NETNS_HOST_IP "/24", "dev", ns->tap, NULL},
	    {"ip", "-n", ns->name, "link", "set", ns->tap, "mtu", mtus, "up", NULL},
	};
	for (unsigned i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		if (run(steps[i], 10, &out) != 0) {
			snprintf(err, errlen, "%s %s %s %s %s: %s", steps[i][0], steps[i][1],
			         steps[i][2], steps[i][3], steps[i][4], out ? out : "?");
			free(out);
			netns_destroy(ns);
			return -1;
		}
		free(out);
		out = NULL;
	}
	return 0;
}

int netns_exec(const struct netns *ns, const char *const *argv, double timeout_s, char **out)
{
	const char *full[HARNESS_MAX_ARGS + 1];
	unsigned n = 0;
	full[n++] = "ip";
	full[n++] = "netns";
	full[n++] = "exec";
	full[n++] = ns->name;
	for (unsigned i = 0; argv[i] && n < HARNESS_MAX_ARGS; i++)
		full[n++] = argv[i];
	full[n] = NULL;
	return run(full, timeout_s, out);
}

int netns_socket(const struct netns *ns, int domain, int type, int proto)
{
	char path[128];
	snprintf(path, sizeof(path), "/run/netns/%s", ns->name);
	int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	int target = open(path, O_RDONLY | O_CLOEXEC);
	int fd = -1, e = 0;
	if (self < 0 || target < 0) {
		e = errno;
	} else if (setns(target, CLONE_NEWNET) != 0) {
		e = errno;
	} else {
		fd = socket(domain, type | SOCK_CLOEXEC, proto);
		e = errno;
		if (setns(self, CLONE_NEWNET) != 0)
			abort(); /* never leave this thread in the test namespace */
	}
	if (self >= 0)
		close(self);
	if (target >= 0)
		close(target);
	errno = e;
	return fd;
}

/* ---- VMM thread ---- */

static void *vm_thread(void *arg)
{
	struct netns_vm *vm = arg;
	vm->ret = harness_run(&vm->full, &vm->opts, &vm->res);
	vm->done = true;
	return NULL;
}

int netns_vm_start(const struct netns *ns, struct netns_vm *vm)
{
	harness_argv_init(&vm->full);
	harness_argv_add(&vm->full, "ip");
	harness_argv_add(&vm->full, "netns");
	harness_argv_add(&vm->full, "exec");
	harness_argv_add(&vm->full, "%s", ns->name);
	for (int i = 0; i < vm->argv.argc; i++)
		harness_argv_add(&vm->full, "%s", vm->argv.argv[i]);
	vm->done = false;
	int e = pthread_create(&vm->thread, NULL, vm_thread, vm);
	if (e)
		return -e;
	vm->started = true;
	return 0;
}

int netns_vm_join(struct netns_vm *vm)
{
	if (vm->started) {
		pthread_join(vm->thread, NULL);
		vm->started = false;
	}
	return vm->ret;
}

/* ---- ICMP ---- */

static uint16_t csum16(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t s = 0;
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(b[i] << 8 | b[i + 1]);
	if (n & 1)
		s += (uint32_t)b[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* Waits up to ms for fd to be readable. */
static bool readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, ms) > 0;
}

static int ping_once(int fd, const struct sockaddr_in *to, uint16_t id, uint16_t seq,
                     unsigned payload, unsigned wait_ms, double *rtt_ms, bool *bad)
{
	uint8_t pkt[65536], buf[65536 + 60];
	if (payload > 65000)
		payload = 65000;
	struct icmphdr *h = (struct icmphdr *)pkt;
	memset(h, 0, sizeof(*h));
	h->type = ICMP_ECHO;
	h->un.echo.id = htons(id);
	h->un.echo.sequence = htons(seq);
	for (unsigned i = 0; i < payload; i++)
		pkt[8 + i] = (uint8_t)(seq * 31 + i * 7);
	/* csum16 sums big-endian words: store its result high byte first. */
	uint16_t c = csum16(pkt, 8 + payload);
	pkt[2] = (uint8_t)(c >> 8);
	pkt[3] = (uint8_t)c;
	double t0 = now_s();
	if (sendto(fd, pkt, 8 + payload, 0, (const struct sockaddr *)to, sizeof(*to)) < 0)
		return -errno;
	for (;;) {
		double left = wait_ms - (now_s() - t0) * 1000;
		if (left <= 0 || !readable(fd, (int)left + 1))
			return 0; /* lost */
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 20)
			continue;
		unsigned ihl = (buf[0] & 15) * 4u;
		if ((size_t)n < ihl + 8)
			continue;
		const uint8_t *r = buf + ihl;
		size_t rl = (size_t)n - ihl;
		if (r[0] != ICMP_ECHOREPLY)
			continue; /* our own request looped back, or something else */
		if (((r[4] << 8) | r[5]) != id)
			continue;
		if (((r[6] << 8) | r[7]) != seq) {
			*bad = true;
			continue;
		}
		*rtt_ms = (now_s() - t0) * 1000;
		if (rl != 8 + payload || memcmp(r + 8, pkt + 8, payload) != 0 || csum16(r, rl) != 0)
			*bad = true;
		return 1;
	}
}

int netns_ping(const struct netns *ns, const char *dst, unsigned count, unsigned payload,
               unsigned interval_ms, unsigned wait_ms, struct netns_ping_stats *st)
{
	memset(st, 0, sizeof(*st));
	int fd = netns_socket(ns, AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (fd < 0)
		return -errno;
	struct sockaddr_in to = {.sin_family = AF_INET};
	inet_pton(AF_INET, dst, &to.sin_addr);
	uint16_t id = (uint16_t)(getpid() ^ (counter << 12));
	double sum = 0;
	for (unsigned i = 0; i < count; i++) {
		double t0 = now_s(), rtt = 0;
		bool bad = false;
		int r = ping_once(fd, &to, id, (uint16_t)i, payload, wait_ms, &rtt, &bad);
		if (r < 0) {
			close(fd);
			return r;
		}
		st->sent++;
		if (r == 1) {
			st->received++;
			if (bad)
				st->bad++;
			sum += rtt;
			if (st->received == 1 || rtt < st->rtt_min_ms)
				st->rtt_min_ms = rtt;
			if (rtt > st->rtt_max_ms)
				st->rtt_max_ms = rtt;
		}
		double spent = (now_s() - t0) * 1000;
		if (i + 1 < count && spent < interval_ms)
			usleep((useconds_t)((interval_ms - spent) * 1000));
	}
	st->rtt_avg_ms = st->received ? sum / st->received : 0;
	close(fd);
	return 0;
}

bool netns_wait_guest(const struct netns *ns, const struct netns_vm *vm, double timeout_s)
{
	int fd = netns_socket(ns, AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (fd < 0)
		return false;
	struct sockaddr_in to = {.sin_family = AF_INET};
	inet_pton(AF_INET, NETNS_GUEST_IP, &to.sin_addr);
	double end = now_s() + timeout_s;
	bool up = false;
	for (uint16_t seq = 0; !up && now_s() < end && !vm->done; seq++) {
		double rtt;
		bool bad = false;
		up = ping_once(fd, &to, 0x7777, seq, 8, 100, &rtt, &bad) == 1;
	}
	close(fd);
	return up;
}

/* ---- UDP echo ---- */

static unsigned dgram_size(unsigned seq, unsigned lo, unsigned hi)
{
	return lo + (unsigned)((seq * 2654435761u) % (hi - lo + 1));
}

static void dgram_fill(uint8_t *p, unsigned seq, unsigned len)
{
	memcpy(p, &seq, 4);
	for (unsigned i = 4; i < len; i++)
		p[i] = (uint8_t)(seq ^ (i * 13) ^ (i >> 8));
}

int netns_udp_echo(const struct netns *ns, const char *dst, uint16_t port, unsigned count,
                   unsigned min_size, unsigned max_size, unsigned window, bool quit,
                   struct netns_udp_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (min_size < 4)
		min_size = 4;
	if (max_size < min_size)
		max_size = min_size;
	if (window < 1)
		window = 1;
	int fd = netns_socket(ns, AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return -errno;
	int big = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, dst, &to.sin_addr);
	if (connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	uint8_t *tx = malloc(65536), *rx = malloc(65536);
	unsigned *out = calloc(count ? count : 1, sizeof(unsigned)); /* 1: outstanding */
	double t0 = now_s();
	unsigned next = 0, answered = 0, quiet = 0;
	while (answered < count) {
		while (next < count && next - answered < window) {
			unsigned len = dgram_size(next, min_size, max_size);
			dgram_fill(tx, next, len);
			if (send(fd, tx, len, 0) < 0)
				break;
			out[next] = 1;
			st->sent++;
			next++;
		}
		if (!readable(fd, 500)) {
			if (++quiet > 6) {
				st->lost = count - answered;
				break;
			}
			for (unsigned i = 0; i < next; i++) {
				if (!out[i])
					continue;
				unsigned len = dgram_size(i, min_size, max_size);
				dgram_fill(tx, i, len);
				if (send(fd, tx, len, 0) == (ssize_t)len)
					st->resent++;
			}
			continue;
		}
		quiet = 0;
		ssize_t n = recv(fd, rx, 65536, 0);
		if (n < 4) {
			st->bad++;
			answered++;
			continue;
		}
		unsigned seq;
		memcpy(&seq, rx, 4);
		if (seq >= next) {
			st->bad++;
			continue; /* garbage: answers nothing */
		}
		if (!out[seq]) {
			st->dups++; /* the reply to a retransmitted datagram */
			continue;
		}
		out[seq] = 0;
		answered++;
		unsigned len = dgram_size(seq, min_size, max_size);
		dgram_fill(tx, seq, len);
		if ((size_t)n == len && memcmp(rx, tx, len) == 0) {
			st->ok++;
			st->bytes += len;
		} else {
			st->bad++;
		}
	}
	st->secs = now_s() - t0;
	if (quit)
		(void)send(fd, "ringvm-net-quit", 15, 0);
	free(tx);
	free(rx);
	free(out);
	close(fd);
	return 0;
}

/* ---- bench ---- */

int netns_bench_open(const struct netns *ns, uint16_t dport)
{
	int fd = netns_socket(ns, AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return -errno;
	int big = 16 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(dport)};
	inet_pton(AF_INET, NETNS_HOST_IP, &a.sin_addr);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

void netns_bench_run(const struct netns *ns, int rx_fd, const struct netns_vm *vm,
                     unsigned payload, uint16_t blast_port, struct netns_bench_host *h)
{
	memset(h, 0, sizeof(*h));
	int bfd = netns_socket(ns, AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(blast_port)};
	inet_pton(AF_INET, NETNS_GUEST_IP, &to.sin_addr);
	if (bfd >= 0)
		(void)connect(bfd, (struct sockaddr *)&to, sizeof(to));
	static uint8_t buf[65536], pay[65536];
	memset(pay, 'b', sizeof(pay));
	if (payload > sizeof(pay))
		payload = sizeof(pay);
	struct mmsghdr msgs[32];
	struct iovec iov[32];
	for (unsigned i = 0; i < 32; i++) {
		iov[i] = (struct iovec){pay, payload};
		msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
	}
	while (!vm->done) {
		if (h->saw_start && !h->saw_end && bfd >= 0) {
			int n = sendmmsg(bfd, msgs, 32, 0);
			if (n > 0)
				h->blasted += (unsigned)n;
			else
				usleep(50);
		}
		int wait = h->saw_start && !h->saw_end ? 0 : 100;
		while (readable(rx_fd, wait)) {
			ssize_t n = recv(rx_fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n < 0)
				break;
			wait = 0;
			if (n >= 25 && !memcmp(buf, "ringvm-net-bench rx-start", 25))
				h->saw_start = true;
			else if (n >= 23 && !memcmp(buf, "ringvm-net-bench rx-end", 23))
				h->saw_end = true;
			else if (!h->saw_start) {
				h->tx_phase_datagrams++;
				h->tx_phase_bytes += (uint64_t)n;
			}
		}
	}
	if (bfd >= 0)
		close(bfd);
}

/* ---- capture ---- */

int netns_capture_open(const struct netns *ns)
{
	int fd = netns_socket(ns, AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (fd < 0)
		return -errno;
	int big = 32 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ns->tap);
	if (ioctl(fd, SIOCGIFINDEX, &ifr) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	struct sockaddr_ll sll = {.sll_family = AF_PACKET,
	                          .sll_protocol = htons(ETH_P_ALL),
	                          .sll_ifindex = ifr.ifr_ifindex};
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

void netns_capture_drain(int fd, void (*fn)(const uint8_t *frame, size_t len, void *ctx),
                         void *ctx)
{
	static uint8_t buf[256 * 1024];
	for (;;) {
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC,
		                     (struct sockaddr *)&from, &fl);
		if (n < 0)
			break;
		if (from.sll_pkttype == PACKET_OUTGOING)
			continue;
		fn(buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf), ctx);
	}
}
