/*
 * End-to-end: ringvm's virtio-vsock (`--vsock cid=N,uds=PATH`, Firecracker's
 * hybrid Unix-socket design) against the probe guest's `vsock` and
 * `hostile.vsock` tests. Host clients connect to PATH with `CONNECT <port>\n`
 * and stream a pattern the guest echoes (checked here, byte for byte, 1 MiB
 * and 100 MiB); guest clients connect to CID 2 and reach listeners at
 * PATH_<port> (the guest checks the echo); 100 connections at once each way;
 * half-close both ways; a host peer killed mid-stream and a port nobody
 * listens on (the guest must see RST); a CONNECT line sent one byte at a
 * time; garbage instead of CONNECT (only that client is closed). Each test
 * runs sandboxed and with --disable-sandbox; the VMM always exits first and
 * only then does a test assert. Skips until `ringvm run --help` lists
 * --vsock.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/vsock_host.h"

#define RINGVM     BUILD_PATH("core/ringvm")
#define VSOCK_OPT  "--vsock"
#define GUEST_CID  3
#define ECHO_PORT  1234 /* the guest's echo server */
#define HOST_PORT  5000 /* host listeners */
#define VM_TIMEOUT 240

struct run {
	char dir[64];
	char uds[100];
	struct vh_vm vm;
	bool sandbox;
};

static char *ctx_of(const struct run *r)
{
	static char buf[32768];
	char cmd[2048], how[128];
	const struct harness_result *res = &r->vm.res;
	snprintf(buf, sizeof(buf), "\n--- %s\n--- %s\n--- stdout:\n%.12000s--- stderr:\n%.8000s",
	         harness_argv_str(&r->vm.argv, cmd, sizeof(cmd)),
	         harness_result_str(res, how, sizeof(how)), res->out ? res->out : "",
	         res->err ? res->err : "");
	return buf;
}

static void need_vsock(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	REQUIRE_FACILITY(harness_ringvm_has_option(VSOCK_OPT),
	                 "ringvm run --help lists no --vsock option");
}

static void prepare(struct run *r, bool sandbox)
{
	memset(r, 0, sizeof(*r));
	r->sandbox = sandbox;
	snprintf(r->dir, sizeof(r->dir), "/tmp/rvs-XXXXXX");
	cr_assert_not_null(mkdtemp(r->dir), "mkdtemp");
	snprintf(r->uds, sizeof(r->uds), "%s/v.sock", r->dir);
}

static void start(struct run *r, const char *params)
{
	struct harness_argv *a = &r->vm.argv;
	harness_argv_init(a);
	harness_argv_add(a, "%s", RINGVM);
	harness_argv_add(a, "run");
	harness_argv_add(a, "-m");
	harness_argv_add(a, "256");
	harness_argv_add(a, "-p");
	harness_argv_add(a, "%s", params);
	harness_argv_add(a, VSOCK_OPT);
	harness_argv_add(a, "cid=%u,uds=%s", GUEST_CID, r->uds);
	if (!r->sandbox)
		harness_argv_add(a, "--disable-sandbox");
	harness_argv_add(a, "%s", harness_probe_path());
	r->vm.opts.timeout_s = VM_TIMEOUT;
	cr_assert_eq(vh_vm_start(&r->vm), 0, "cannot start the VMM thread");
}

/*
 * The last run's output, owned here: freed when the next run finishes or in
 * the suite's .fini (a failed assert leaves the test function early).
 */
static struct harness_result kept;

static void free_kept(void)
{
	harness_result_free(&kept);
	memset(&kept, 0, sizeof(kept));
}

/* Waits for the VMM, then checks it ended well; removes the socket directory. */
static void finish(struct run *r)
{
	int ret = vh_vm_join(&r->vm);
	free_kept();
	if (ret == 0)
		kept = r->vm.res;
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", r->dir);
	if (system(cmd) != 0)
		cr_log_info("could not remove %s", r->dir);
	cr_assert_eq(ret, 0, "harness_run: %d", ret);
	cr_assert(!r->vm.res.timed_out, "ringvm did not finish in %d s%s", VM_TIMEOUT, ctx_of(r));
	cr_assert(r->vm.res.exited && r->vm.res.exit_code == 0, "ringvm did not exit 0%s",
	          ctx_of(r));
	cr_assert(probe_end_ok(r->vm.res.out), "no single PROBE-END status=ok%s", ctx_of(r));
}

static const char *line(struct run *r, const char *test)
{
	const char *l = probe_line(r->vm.res.out, test, 0);
	cr_assert_not_null(l, "no `PROBE %s` line%s", test, ctx_of(r));
	return l;
}

static uint64_t u64(struct run *r, const char *l, const char *key)
{
	uint64_t v = 0;
	cr_assert(probe_get_u64(l, key, &v), "no numeric %s= in: %.300s%s", key, l, ctx_of(r));
	return v;
}

static void expect_u64(struct run *r, const char *test, const char *key, uint64_t want)
{
	const char *l = line(r, test);
	uint64_t v = u64(r, l, key);
	cr_assert_eq(v, want, "%s %s=%llu, expected %llu: %.300s%s", test, key,
	             (unsigned long long)v, (unsigned long long)want, l, ctx_of(r));
}

static void check_clean(struct run *r)
{
	const char *s = line(r, "vsock.stats");
	cr_assert_eq(u64(r, s, "bad_pkt"), 0, "the guest saw malformed packets: %.400s", s);
	cr_assert_eq(u64(r, s, "over_credit"), 0, "the device overran the guest's credit: %.400s",
	             s);
	cr_assert_eq(u64(r, s, "transport_resets"), 0, "unexpected TRANSPORT_RESET: %.400s", s);
}

/* Connects n host clients of bytes each to the guest echo server and runs them. */
static unsigned host_clients(struct run *r, struct vh_client *c, unsigned n, uint64_t bytes,
                             double timeout_s)
{
	unsigned connected = 0;
	for (unsigned i = 0; i < n; i++) {
		c[i].port = ECHO_PORT;
		c[i].bytes = bytes;
		c[i].fd = -1;
		if (!r->vm.done && vh_client_connect(r->uds, &c[i], i ? 10 : 60))
			connected++;
	}
	unsigned ok = vh_clients_run(c, n, timeout_s);
	(void)connected;
	return ok;
}

static void report_fail(struct vh_client *c, unsigned n, char *buf, size_t len)
{
	buf[0] = '\0';
	for (unsigned i = 0; i < n; i++)
		if (c[i].why[0] || !c[i].eof) {
			snprintf(buf, len, "client %u (port %u): %s", i, c[i].port, c[i].why);
			return;
		}
}

#define BOTH_WAYS(fn)                                                                              \
	do {                                                                                       \
		need_vsock();                                                                      \
		fn(true);                                                                          \
		fn(false);                                                                         \
	} while (0)

TestSuite(e2e_ringvm_vsock, .timeout = 900, .fini = free_kept);

/* ---- host → guest echo ---- */

static void host_echo(bool sandbox, uint64_t bytes, double limit_s, const char *extra)
{
	struct run r;
	prepare(&r, sandbox);
	char params[200];
	snprintf(params, sizeof(params), "probe=vsock vsock.port=%u vsock.accept=1 vsock.secs=%u%s",
	         ECHO_PORT, (unsigned)limit_s + 30, extra);
	start(&r, params);
	struct vh_client c = {0};
	double t0 = vh_now();
	unsigned ok = host_clients(&r, &c, 1, bytes, limit_s);
	double secs = c.t_done > c.t_connect ? c.t_done - c.t_connect : vh_now() - t0;
	finish(&r);
	cr_assert_eq(ok, 1, "echo of %llu bytes failed: %s%s", (unsigned long long)bytes, c.why,
	             ctx_of(&r));
	expect_u64(&r, "vsock.server", "ok", 1);
	check_clean(&r);
	fprintf(stderr,
	        "vsock-e2e: %s host->guest echo %llu bytes%s in %.2f s (%.2f MB/s each way)\n",
	        sandbox ? "sandboxed" : "unsandboxed", (unsigned long long)bytes, extra, secs,
	        secs > 0 ? bytes / secs / 1e6 : 0);
}

static void echo_1m(bool sandbox)
{
	host_echo(sandbox, 1u << 20, 60, "");
}

Test(e2e_ringvm_vsock, host_echo_1mib)
{
	BOTH_WAYS(echo_1m);
}

static void echo_100m(bool sandbox)
{
	host_echo(sandbox, 100u << 20, 180, "");
}

Test(e2e_ringvm_vsock, host_echo_100mib)
{
	BOTH_WAYS(echo_100m);
}

/* 4 KiB RX buffers (the device splits every host write) and no EVENT_IDX. */
static void echo_small(bool sandbox)
{
	host_echo(sandbox, 4u << 20, 90, " vsock.rxbuf=4096 vsock.event_idx=0");
}

Test(e2e_ringvm_vsock, host_echo_4k_buffers_no_event_idx)
{
	BOTH_WAYS(echo_small);
}

/* ---- guest → host, 100 at once each way, half-close both ways ---- */

static void guest_client(bool sandbox)
{
	struct run r;
	prepare(&r, sandbox);
	struct vh_listener l = {0};
	cr_assert_eq(vh_listener_start(&l, r.uds, HOST_PORT, VH_ECHO), 0, "listener");
	start(&r, "probe=vsock vsock.connect=5000 vsock.conns=4 vsock.parallel=2 "
	          "vsock.bytes=262144 vsock.secs=60");
	finish(&r);
	vh_listener_stop(&l);
	expect_u64(&r, "vsock.client", "ok", 4);
	cr_assert_eq(l.accepted, 4, "host listener accepted %u connections, expected 4", l.accepted);
	cr_assert_eq(l.bytes_in, 4 * 262144, "host listener got %llu bytes",
	             (unsigned long long)l.bytes_in);
	check_clean(&r);
}

Test(e2e_ringvm_vsock, guest_to_host_listener)
{
	BOTH_WAYS(guest_client);
}

static void hundred(bool sandbox)
{
	enum { N = 100 };
	struct run r;
	prepare(&r, sandbox);
	struct vh_listener l = {0};
	cr_assert_eq(vh_listener_start(&l, r.uds, HOST_PORT, VH_ECHO), 0, "listener");
	char params[200];
	snprintf(params, sizeof(params),
	         "probe=vsock vsock.port=%u vsock.accept=%u vsock.connect=%u vsock.conns=%u "
	         "vsock.parallel=%u vsock.bytes=16384 vsock.secs=150",
	         ECHO_PORT, N, HOST_PORT, N, N);
	start(&r, params);
	static struct vh_client c[N];
	memset(c, 0, sizeof(c));
	unsigned ok = host_clients(&r, c, N, 16384, 120);
	char why[200];
	report_fail(c, N, why, sizeof(why));
	finish(&r);
	vh_listener_stop(&l);
	cr_assert_eq(ok, N, "%u of %u host clients echoed fine; %s%s", ok, N, why, ctx_of(&r));
	expect_u64(&r, "vsock.server", "ok", N);
	expect_u64(&r, "vsock.client", "ok", N);
	cr_assert_eq(l.accepted, N, "host listener accepted %u", l.accepted);
	const char *s = line(&r, "vsock.stats");
	fprintf(stderr, "vsock-e2e: 100+100 connections, guest max_active=%llu, host max_open=%u\n",
	        (unsigned long long)u64(&r, s, "max_active"), l.max_open);
	check_clean(&r);
}

Test(e2e_ringvm_vsock, hundred_connections_each_way)
{
	BOTH_WAYS(hundred);
}

static void half_close(bool sandbox)
{
	struct run r;
	prepare(&r, sandbox);
	/* The host listener writes back only after the guest's half-close (EOF). */
	struct vh_listener l = {0};
	cr_assert_eq(vh_listener_start(&l, r.uds, HOST_PORT, VH_DELAYED), 0, "listener");
	char params[200];
	snprintf(params, sizeof(params),
	         "probe=vsock vsock.port=%u vsock.accept=1 vsock.connect=%u vsock.half=1 "
	         "vsock.bytes=100000 vsock.secs=60",
	         ECHO_PORT, HOST_PORT);
	start(&r, params);
	/* Host side: everything written, SHUT_WR, then the whole echo and EOF must come. */
	struct vh_client c = {0};
	unsigned ok = host_clients(&r, &c, 1, 100000, 40);
	finish(&r);
	vh_listener_stop(&l);
	cr_assert_eq(ok, 1, "host half-close: %s%s", c.why, ctx_of(&r));
	expect_u64(&r, "vsock.server", "ok", 1);
	expect_u64(&r, "vsock.client", "ok", 1);
	cr_assert_eq(l.bytes_out, 100000, "host listener echoed %llu bytes after EOF",
	             (unsigned long long)l.bytes_out);
	check_clean(&r);
}

Test(e2e_ringvm_vsock, half_close_both_ways)
{
	BOTH_WAYS(half_close);
}

/* ---- resets ---- */

static void peer_killed(bool sandbox)
{
	struct run r;
	prepare(&r, sandbox);
	pid_t k = vh_killer_start(r.uds, HOST_PORT, 65536);
	cr_assert_gt(k, 0, "killer listener");
	start(&r, "probe=vsock vsock.connect=5000 vsock.bytes=16777216 vsock.expect=reset "
	          "vsock.secs=60");
	bool killed = vh_killer_wait(k, 90);
	finish(&r);
	cr_assert(killed, "the host peer was not killed mid-stream%s", ctx_of(&r));
	expect_u64(&r, "vsock.client", "reset", 1);
	expect_u64(&r, "vsock.client", "got_rst", 1);
}

Test(e2e_ringvm_vsock, host_peer_killed_guest_sees_rst)
{
	BOTH_WAYS(peer_killed);
}

static void nobody(bool sandbox)
{
	struct run r;
	prepare(&r, sandbox);
	start(&r, "probe=vsock vsock.connect=6000 vsock.conns=3 vsock.expect=refused "
	          "vsock.secs=30");
	finish(&r);
	expect_u64(&r, "vsock.client", "refused", 3);
	expect_u64(&r, "vsock.client", "got_rst", 3);
}

Test(e2e_ringvm_vsock, nothing_listening_guest_sees_rst)
{
	BOTH_WAYS(nobody);
}

/* ---- the CONNECT line ---- */

static void byte_by_byte(bool sandbox)
{
	struct run r;
	prepare(&r, sandbox);
	char params[160];
	snprintf(params, sizeof(params), "probe=vsock vsock.port=%u vsock.accept=2 vsock.secs=60",
	         ECHO_PORT);
	start(&r, params);
	struct vh_client c[2] = {{.port = ECHO_PORT, .bytes = 65536, .fd = -1},
	                         {.port = ECHO_PORT, .bytes = 65536, .fd = -1, .one_byte_line = true}};
	bool up = vh_client_connect(r.uds, &c[0], 60); /* the guest is listening */
	bool slow = up && vh_client_connect(r.uds, &c[1], 10);
	unsigned ok = vh_clients_run(c, 2, 30);
	finish(&r);
	cr_assert(up, "no connection at all: %s%s", c[0].why, ctx_of(&r));
	cr_assert(slow, "CONNECT sent one byte at a time got no OK: %s%s", c[1].why, ctx_of(&r));
	cr_assert_eq(ok, 2, "echo failed: %s / %s%s", c[0].why, c[1].why, ctx_of(&r));
	cr_assert_geq(c[1].host_port, 1, "OK carried no host port");
}

Test(e2e_ringvm_vsock, connect_line_one_byte_at_a_time)
{
	BOTH_WAYS(byte_by_byte);
}

static void garbage(bool sandbox)
{
	struct run r;
	prepare(&r, sandbox);
	char params[160];
	snprintf(params, sizeof(params), "probe=vsock vsock.port=%u vsock.accept=2 vsock.secs=60",
	         ECHO_PORT);
	start(&r, params);
	/* One good client opened before the garbage and used after it. */
	struct vh_client c[2] = {{.port = ECHO_PORT, .bytes = 65536, .fd = -1},
	                         {.port = ECHO_PORT, .bytes = 65536, .fd = -1}};
	bool up = vh_client_connect(r.uds, &c[0], 60);
	static const char *const junk[] = {
	    "GET / HTTP/1.0\r\n\r\n",
	    "CONNECT\n",
	    "CONNECT 12x4\n",
	    "CONNECT 99999999999999\n",
	    "CONNECT 1234 extra words that go on and on and on\n",
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	};
	bool closed[6];
	char why[6][96];
	for (unsigned i = 0; i < 6; i++) {
		why[i][0] = '\0';
		closed[i] = up && vh_garbage_closed(r.uds, junk[i], strlen(junk[i]), 8, why[i],
		                                    sizeof(why[i]));
	}
	bool second = up && vh_client_connect(r.uds, &c[1], 10);
	unsigned ok = vh_clients_run(c, 2, 30);
	finish(&r);
	cr_assert(up, "no connection at all: %s%s", c[0].why, ctx_of(&r));
	for (unsigned i = 0; i < 6; i++)
		cr_assert(closed[i], "garbage %u (\"%.30s\") was not closed: %s%s", i, junk[i], why[i],
		          ctx_of(&r));
	cr_assert(second, "a new client after the garbage got no OK: %s", c[1].why);
	cr_assert_eq(ok, 2, "the good clients' echo failed: %s / %s%s", c[0].why, c[1].why,
	             ctx_of(&r));
}

Test(e2e_ringvm_vsock, garbage_instead_of_connect)
{
	BOTH_WAYS(garbage);
}

/* ---- hostile.vsock ---- */

static void hostile(bool sandbox)
{
	struct run r;
	prepare(&r, sandbox);
	struct vh_listener l = {0};
	cr_assert_eq(vh_listener_start(&l, r.uds, HOST_PORT, VH_ECHO), 0, "listener");
	/* credit-overrun aims at a peer that never reads: the device's buffer fills. */
	struct vh_listener stall = {0};
	cr_assert_eq(vh_listener_start(&stall, r.uds, HOST_PORT + 2, VH_STALL), 0, "listener");
	start(&r, "probe=hostile.vsock hostile.vsock.port=5000 hostile.vsock.stall_port=5002");
	finish(&r);
	vh_listener_stop(&l);
	vh_listener_stop(&stall);
	cr_assert_eq(stall.accepted, 1, "the stalled listener accepted %u connections",
	             stall.accepted);
	const char *s = line(&r, "hostile.vsock");
	cr_assert(probe_line_with(r.vm.res.out, "hostile.vsock", "failed", "0"),
	          "hostile cases failed: %.300s%s", s, ctx_of(&r));
	cr_assert(probe_line_with(r.vm.res.out, "hostile.vsock", "bad_pkt", "0"),
	          "the device sent the guest malformed packets%s", ctx_of(&r));
	fprintf(stderr, "vsock-e2e: hostile.vsock %s: host listener accepted %u, max open %u\n",
	        sandbox ? "sandboxed" : "unsandboxed", l.accepted, l.max_open);
}

Test(e2e_ringvm_vsock, hostile_packets)
{
	BOTH_WAYS(hostile);
}
