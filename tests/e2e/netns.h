/*
 * Network namespaces and host-side traffic for the virtio-net end-to-end
 * tests. A test gets its own namespace `ringvm-test-<pid>-<n>` holding one
 * TAP (`rvtap<pid>`, 10.0.2.2/24), runs the VMM inside it (`ip netns exec`),
 * and talks to the guest (10.0.2.15) through sockets created inside the
 * namespace with setns() — the test process itself stays where it is.
 *
 * Cleanup: netns_destroy() deletes the TAP and the namespace; it is also
 * registered with atexit() and meant for a Criterion .fini, so an assertion
 * failure does not leak. A test killed outright (timeout) leaves its
 * namespace behind: netns_create() first deletes `ringvm-test-<pid>-*`
 * namespaces whose pid no longer exists.
 */
#ifndef RINGVM_TESTS_E2E_NETNS_H
#define RINGVM_TESTS_E2E_NETNS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tests/e2e/harness.h"

#define NETNS_HOST_IP  "10.0.2.2"
#define NETNS_GUEST_IP "10.0.2.15"
#define NETNS_GUEST_MAC "52:54:00:12:34:56"

struct netns {
	char name[64];
	char tap[16];
	bool created;
};

/* True when `ip` is on PATH (iproute2) and we are root. */
bool netns_usable(void);
/* True when `ping` is on PATH (iputils-ping); the tests have a raw-socket pinger anyway. */
bool netns_have_ping(void);

/*
 * Creates the namespace and a TAP in it (multi_queue when asked), lo up,
 * 10.0.2.2/24 on the TAP, MTU mtu (0: leave 1500), link up. 0 or -1 with
 * err (a message) filled.
 */
int netns_create(struct netns *ns, unsigned mtu, bool multi_queue, char *err, size_t errlen);
/* Deletes the TAP and the namespace (idempotent). */
void netns_destroy(struct netns *ns);
/* Destroys every namespace netns_create() made in this process and not yet destroyed. */
void netns_destroy_all(void);

/* Runs `ip netns exec NS argv...` to completion (timeout_s); returns its exit code or -1. */
int netns_exec(const struct netns *ns, const char *const *argv, double timeout_s, char **out);
/* A socket created inside the namespace, or -1 (errno set). */
int netns_socket(const struct netns *ns, int domain, int type, int proto);

/* ---- the VMM, run in a thread so the test can drive traffic meanwhile ---- */
struct netns_vm {
	struct harness_argv argv; /* filled by the caller: the VMM command (without ip netns exec) */
	struct harness_opts opts;
	struct harness_result res;
	struct harness_argv full; /* what actually ran */
	int ret;
	pthread_t thread;
	bool started;
	volatile bool done;
};
/* Starts `ip netns exec NS <vm->argv>` in a thread. */
int netns_vm_start(const struct netns *ns, struct netns_vm *vm);
/* Waits for the VMM to exit (it has its own deadline); returns harness_run's result. */
int netns_vm_join(struct netns_vm *vm);

/* ---- traffic ---- */
struct netns_ping_stats {
	unsigned sent, received, bad; /* bad: wrong id/seq/payload/checksum */
	double rtt_min_ms, rtt_avg_ms, rtt_max_ms;
};
/*
 * Raw-socket ICMP echo: count requests of payload bytes, interval_ms apart,
 * each waited for up to wait_ms; replies are checked (type 0, id, seq,
 * payload, ICMP checksum). 0, or -errno when the socket could not be made.
 */
int netns_ping(const struct netns *ns, const char *dst, unsigned count, unsigned payload,
               unsigned interval_ms, unsigned wait_ms, struct netns_ping_stats *st);
/* Pings every 100 ms until a reply (true) or timeout_s / the VMM exits (false). */
bool netns_wait_guest(const struct netns *ns, const struct netns_vm *vm, double timeout_s);

struct netns_udp_stats {
	unsigned sent, ok, bad, lost;
	unsigned resent, dups; /* retransmissions after a quiet 0.5 s, and their extra replies */
	uint64_t bytes;
	double secs;
};
/*
 * UDP echo client: count datagrams to dst:port, sizes cycling through
 * [min_size, max_size], up to window outstanding; each reply must equal
 * the datagram sent with its sequence number (the first 4 bytes). UDP may
 * drop on a loaded host (the TAP queue, the host stack), so after 0.5 s
 * without a reply the outstanding datagrams are sent again, up to 6 times;
 * a datagram still unanswered then counts as lost (and ends the run). The
 * retransmissions and duplicate replies are counted, not hidden. Then sends
 * one "ringvm-net-quit" datagram when quit. 0 or -errno.
 */
int netns_udp_echo(const struct netns *ns, const char *dst, uint16_t port, unsigned count,
                   unsigned min_size, unsigned max_size, unsigned window, bool quit,
                   struct netns_udp_stats *st);

struct netns_bench_host {
	uint64_t tx_phase_datagrams; /* guest → host datagrams seen before "rx-start" */
	uint64_t tx_phase_bytes;
	uint64_t blasted;            /* host → guest datagrams sent */
	bool saw_start, saw_end;
};
/*
 * The host side of net.bench: receives on 10.0.2.2:dport (socket made
 * before the VMM starts: netns_bench_open), and after the guest's
 * "ringvm-net-bench rx-start" blasts UDP datagrams of payload bytes at
 * dst:blast_port until "rx-end" or the VMM exits.
 */
int netns_bench_open(const struct netns *ns, uint16_t dport);
void netns_bench_run(const struct netns *ns, int rx_fd, const struct netns_vm *vm,
                     unsigned payload, uint16_t blast_port, struct netns_bench_host *h);

/* An AF_PACKET socket capturing everything on the TAP (large buffer), or -errno. */
int netns_capture_open(const struct netns *ns);
/*
 * Reads what was captured (non-blocking) and calls fn for every frame the
 * guest sent (frames the host sent to the guest are skipped).
 */
void netns_capture_drain(int fd, void (*fn)(const uint8_t *frame, size_t len, void *ctx),
                         void *ctx);

#endif
