/* Shared virtio-net end-to-end scenarios (see net_checks.h). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/e2e/net_checks.h"

#define GUEST_SECS 30 /* the guest's own limit; a quit datagram ends it earlier */
#define VM_TIMEOUT 50
#define BENCH_DPORT 9
#define BENCH_BLAST_PORT 5001

/* Keep in the order of cases[] in tests/guest/test_hostile_net.c. */
const char *const hostile_net_cases[][2] = {
    {"hdr-short", "bad"},
    {"hdr-only", "bad"},
    {"hdr-split", "valid"},
    {"frame-runt", "bad"},
    {"frame-over-mtu", "bad"},
    {"frame-64k", "bad"},
    {"gso-unknown", "bad"},
    {"gso-tcpv4-unnegotiated", "bad"},
    {"gso-udp-unnegotiated", "bad"},
    {"gso-size-zero", "bad"},
    {"csum-start-past-end", "bad"},
    {"csum-offset-past-end", "bad"},
    {"csum-field-straddles-end", "bad"},
    {"flags-unknown", "maybe"},
    {"num-buffers-set", "maybe"},
    {"hdr-len-huge", "maybe"},
    {"zero-len-desc", "maybe"},
    {"many-descs", "valid"},
    {"writable-desc", "maybe"},
};
const unsigned hostile_net_ncases = sizeof(hostile_net_cases) / sizeof(hostile_net_cases[0]);

static struct netns ns; /* one per test process; destroyed by netns_destroy_all() */
static struct netns_vm vm;

static const char *ctx_of(const struct netns_vm *m)
{
	static char buf[65536];
	char cmd[2048], how[128];
	snprintf(buf, sizeof(buf), "\n--- %s\n--- %s\n--- stdout:\n%s--- stderr:\n%s",
	         harness_argv_str(&m->full, cmd, sizeof(cmd)),
	         harness_result_str(&m->res, how, sizeof(how)), m->res.out ? m->res.out : "",
	         m->res.err ? m->res.err : "");
	return buf;
}

#define check(cond, fmt, ...) cr_assert(cond, fmt "%s", ##__VA_ARGS__, ctx_of(&vm))

static void setup(const struct net_vmm_cfg *c)
{
	cr_assert(netns_usable(), "needs root and iproute2");
	char err[1024];
	cr_assert_eq(netns_create(&ns, c->mtu, c->queues > 1, err, sizeof(err)), 0, "%s", err);
}

static void start(const struct net_vmm *v, const char *params, const struct net_vmm_cfg *c)
{
	harness_result_free(&vm.res); /* the previous run's (BOTH_WAYS runs two per process) */
	memset(&vm, 0, sizeof(vm));
	harness_argv_init(&vm.argv);
	v->argv(&vm.argv, &ns, params, c, v->ctx);
	vm.opts.timeout_s = VM_TIMEOUT;
	cr_assert_eq(netns_vm_start(&ns, &vm), 0, "cannot start the VMM thread");
}

static void finish(const struct net_vmm *v)
{
	int ret = netns_vm_join(&vm);
	check(ret == 0, "harness_run: %d", ret);
	check(!vm.res.timed_out, "%s did not finish in %d s", v->what, VM_TIMEOUT);
	check(vm.res.exited && vm.res.exit_code == 0, "%s did not exit with status 0", v->what);
	check(probe_end_ok(vm.res.out), "%s: no single PROBE-END status=ok", v->what);
}

static const char *line_with(const char *test, const char *key)
{
	char tmp[256];
	const char *l;
	for (unsigned i = 0; (l = probe_line(vm.res.out, test, i)); i++)
		if (probe_get(l, key, tmp, sizeof(tmp)))
			return l;
	check(false, "no `PROBE %s ... %s=` line", test, key);
	return NULL;
}

static uint64_t u64(const char *l, const char *key)
{
	uint64_t v = 0;
	check(probe_get_u64(l, key, &v), "no numeric %s= in: %.300s", key, l);
	return v;
}

static void expect(const char *l, const char *key, const char *want)
{
	char buf[256];
	check(probe_get(l, key, buf, sizeof(buf)), "no %s= in: %.300s", key, l);
	check(strcmp(buf, want) == 0, "%s=%s, expected %s in: %.300s", key, buf, want, l);
}

/* `ping -c 100 -i 0.01 -W 5 -q` inside the namespace: received count, or -1. */
static int ping_binary(unsigned count, char *summary, size_t len)
{
	char c[16];
	snprintf(c, sizeof(c), "%u", count);
	const char *argv[] = {"ping", "-c", c, "-i", "0.01", "-W", "5", "-q", NETNS_GUEST_IP, NULL};
	char *out = NULL;
	netns_exec(&ns, argv, 30, &out);
	int received = -1;
	const char *p = out ? strstr(out, "packets transmitted, ") : NULL;
	if (p)
		received = atoi(p + strlen("packets transmitted, "));
	const char *rtt = out ? strstr(out, "rtt ") : NULL;
	snprintf(summary, len, "%.120s", rtt ? rtt : (out ? out : "no output"));
	char *nl = strchr(summary, '\n');
	if (nl)
		*nl = '\0';
	free(out);
	return received;
}

void net_check_echo(const struct net_vmm *v, const struct net_echo_cfg *c)
{
	setup(&c->vmm);
	char params[256];
	int n = snprintf(params, sizeof(params), "probe=net net.secs=%u", GUEST_SECS);
	if (c->vmm.queues > 1)
		snprintf(params + n, sizeof(params) - (size_t)n, " net.queues=%u", c->vmm.queues);
	start(v, params, &c->vmm);

	bool up = netns_wait_guest(&ns, &vm, 20);
	struct netns_ping_stats ps = {0};
	struct netns_udp_stats us = {0};
	int pr = 0, ur = 0, bin = -2;
	char bin_summary[128] = "";
	if (up) {
		pr = netns_ping(&ns, NETNS_GUEST_IP, c->pings,
		                c->ping_payload ? c->ping_payload : 56, 10, 5000, &ps);
		if (c->ping_binary && netns_have_ping())
			bin = ping_binary(100, bin_summary, sizeof(bin_summary));
		ur = netns_udp_echo(&ns, NETNS_GUEST_IP, 7, c->udp_count, c->udp_min, c->udp_max,
		                    c->window ? c->window : 8, true, &us);
	}
	finish(v);
	check(up, "%s: the guest never answered a ping", v->what);
	check(pr == 0 && ur == 0, "traffic sockets failed: ping %d udp %d", pr, ur);

	const char *d = line_with("net", "mac");
	expect(d, "mac", NETNS_GUEST_MAC);
	expect(d, "status", "0x1");
	check(u64(d, "mtu") == (c->vmm.mtu ? c->vmm.mtu : 1500), "MTU: %.300s", d);
	check(u64(d, "pairs") == (c->vmm.queues > 1 ? c->vmm.queues : 1), "pairs: %.300s", d);
	expect(line_with("net.peer", "resolved"), "resolved", "1");

	check(ps.received == c->pings && ps.bad == 0, "ping: %u sent, %u received, %u bad", ps.sent,
	      ps.received, ps.bad);
	if (bin != -2)
		check(bin == 100, "ping(8): %d of 100 received (%s)", bin, bin_summary);
	check(us.ok == c->udp_count && us.bad == 0 && us.lost == 0,
	      "udp echo: %u sent, %u ok, %u bad, %u lost, %u resent", us.sent, us.ok, us.bad,
	      us.lost, us.resent);

	const char *s = line_with("net", "icmp");
	unsigned want_icmp = c->pings + (bin > 0 ? (unsigned)bin : 0);
	check(u64(s, "icmp") >= want_icmp, "guest answered fewer pings: %.300s", s);
	check(u64(s, "udp") >= c->udp_count + 1, "guest echoed fewer datagrams: %.300s", s);
	expect(s, "bad_frame", "0");
	expect(s, "bad_csum", "0");
	expect(s, "tx_full", "0");
	expect(s, "quit", "1");
	expect(s, "drained", "1");

	fprintf(stderr,
	        "net-e2e: %s mtu=%u queues=%u ping n=%u rtt min/avg/max %.3f/%.3f/%.3f ms%s%s; "
	        "udp echo n=%u size %u..%u window %u: %.2f s, %.0f round trips/s\n",
	        v->what, c->vmm.mtu ? c->vmm.mtu : 1500, c->vmm.queues ? c->vmm.queues : 1,
	        ps.received, ps.rtt_min_ms, ps.rtt_avg_ms, ps.rtt_max_ms,
	        bin_summary[0] ? "; ping(8) " : "", bin_summary, us.ok, c->udp_min, c->udp_max,
	        c->window ? c->window : 8, us.secs, us.secs > 0 ? us.ok / us.secs : 0);
}

void net_check_bench(const struct net_vmm *v, unsigned size, unsigned secs)
{
	struct net_vmm_cfg cfg = {0};
	setup(&cfg);
	int rx = netns_bench_open(&ns, BENCH_DPORT);
	cr_assert_geq(rx, 0, "bench socket: %s", strerror(-rx));
	char params[256];
	snprintf(params, sizeof(params), "probe=net.bench net.secs=%u net.size=%u net.dport=%u", secs,
	         size, BENCH_DPORT);
	start(v, params, &cfg);
	struct netns_bench_host h;
	netns_bench_run(&ns, rx, &vm, size > 42 ? size - 42 : 18, BENCH_BLAST_PORT, &h);
	close(rx);
	finish(v);

	const char *t = line_with("net.bench.tx", "frames");
	const char *r = line_with("net.bench.rx", "frames");
	expect(t, "result", "ok");
	expect(r, "result", "ok");
	expect(line_with("net.bench", "result"), "result", "ok");
	uint64_t tx_frames = u64(t, "frames"), rx_frames = u64(r, "frames");
	check(tx_frames > 0 && u64(t, "pps") > 0, "no TX frames: %.300s", t);
	check(h.saw_start && h.saw_end, "host never saw the guest's rx-start/rx-end markers");
	check(h.tx_phase_datagrams > 0 && h.tx_phase_datagrams <= tx_frames + 64 + 1,
	      "host received %lu datagrams, guest sent %lu", (unsigned long)h.tx_phase_datagrams,
	      (unsigned long)tx_frames);
	check(h.blasted > 0 && rx_frames > 0, "RX phase: host blasted %lu, guest got %lu",
	      (unsigned long)h.blasted, (unsigned long)rx_frames);
	check(rx_frames <= h.blasted + 64, "guest counted %lu frames of %lu blasted",
	      (unsigned long)rx_frames, (unsigned long)h.blasted);
	char tg[32] = "", rg[32] = "";
	probe_get(t, "gbps", tg, sizeof(tg));
	probe_get(r, "gbps", rg, sizeof(rg));
	fprintf(stderr,
	        "net-e2e: %s bench size=%u: guest TX %lu pps (%s Gbit/s), host got %lu of %lu; "
	        "guest RX %lu pps (%s Gbit/s), %lu of %lu blasted\n",
	        v->what, size, (unsigned long)u64(t, "pps"), tg,
	        (unsigned long)h.tx_phase_datagrams, (unsigned long)tx_frames,
	        (unsigned long)u64(r, "pps"), rg, (unsigned long)rx_frames,
	        (unsigned long)h.blasted);
}

/* ---- hostile ---- */

struct seen {
	unsigned good[32], valid[32], maybe[32], bad[32];
	unsigned arp, unknown, total;
	char unknown_desc[512];
};

static int case_index(const char *name, size_t len)
{
	for (unsigned i = 0; i < hostile_net_ncases; i++)
		if (strlen(hostile_net_cases[i][0]) == len &&
		    !strncmp(hostile_net_cases[i][0], name, len))
			return (int)i;
	return -1;
}

static void classify(const uint8_t *f, size_t len, void *ctx)
{
	struct seen *s = ctx;
	s->total++;
	if (len >= 14 && f[12] == 0x08 && f[13] == 0x06) {
		s->arp++;
		return;
	}
	/* "hostile-<class> <case>" anywhere in the first 128 bytes */
	const uint8_t *p = NULL;
	for (size_t i = 0; i + 8 < len && i < 128; i++)
		if (!memcmp(f + i, "hostile-", 8)) {
			p = f + i + 8;
			break;
		}
	if (p) {
		size_t rest = len - (size_t)(p - f);
		const char *cls = (const char *)p;
		const char *sp = memchr(cls, ' ', rest < 16 ? rest : 16);
		if (sp) {
			const char *name = sp + 1;
			size_t nl = 0;
			while (name + nl < (const char *)f + len && name[nl] != '.' && nl < 40)
				nl++;
			int ci = case_index(name, nl);
			size_t cl = (size_t)(sp - cls);
			if (ci >= 0) {
				if (cl == 4 && !memcmp(cls, "good", 4))
					s->good[ci]++;
				else if (cl == 5 && !memcmp(cls, "valid", 5))
					s->valid[ci]++;
				else if (cl == 5 && !memcmp(cls, "maybe", 5))
					s->maybe[ci]++;
				else
					s->bad[ci]++;
				return;
			}
		}
	}
	s->unknown++;
	size_t u = strlen(s->unknown_desc);
	if (u < sizeof(s->unknown_desc) - 64)
		snprintf(s->unknown_desc + u, sizeof(s->unknown_desc) - u, " [len=%zu type=%02x%02x]",
		         len, len >= 14 ? f[12] : 0, len >= 14 ? f[13] : 0);
}

static bool listed(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; p && *p;) {
		size_t len = strcspn(p, ",");
		if (len == n && !strncmp(p, name, n))
			return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

void net_check_hostile(const struct net_vmm *v, const char *allowed_bad)
{
	struct net_vmm_cfg cfg = {0};
	setup(&cfg);
	int cap = netns_capture_open(&ns);
	cr_assert_geq(cap, 0, "capture socket: %s", strerror(-cap));
	int sink = netns_bench_open(&ns, 9); /* so the host does not answer port-unreachable */
	start(v, "probe=hostile.net", &cfg);
	netns_vm_join(&vm);
	struct seen s;
	memset(&s, 0, sizeof(s));
	netns_capture_drain(cap, classify, &s);
	close(cap);
	if (sink >= 0)
		close(sink);
	finish(v);

	char res[64];
	for (unsigned i = 0; i < hostile_net_ncases; i++) {
		const char *name = hostile_net_cases[i][0];
		const char *l = probe_line_with(vm.res.out, "hostile.net", "case", name);
		check(l != NULL, "no result line for hostile.net case %s", name);
		expect(l, "class", hostile_net_cases[i][1]);
		expect(l, "pass", "1");
		check(probe_get(l, "result", res, sizeof(res)), "no result in %.300s", l);
		if (!strcmp(res, "needs-reset"))
			check(u64(l, "cfg_irqs") >= 1, "NEEDS_RESET without a config interrupt: %.300s",
			      l);
		check(s.good[i] >= 1, "%s: the good frame after case %s never reached the TAP",
		      v->what, name);
		if (!strcmp(hostile_net_cases[i][1], "valid"))
			check(s.valid[i] == 1, "%s: valid case %s reached the TAP %u times", v->what,
			      name, s.valid[i]);
		if (!strcmp(hostile_net_cases[i][1], "bad") && !listed(allowed_bad, name))
			check(s.bad[i] == 0, "%s: bogus frame of case %s reached the TAP", v->what,
			      name);
		if (listed(allowed_bad, name))
			fprintf(stderr, "net-e2e: %s hostile %s: %u bogus frame(s) reached the TAP "
			                "(known)\n",
			        v->what, name, s.bad[i]);
	}
	check(s.unknown == 0, "%s: %u unidentified frame(s) from the guest reached the TAP:%s",
	      v->what, s.unknown, s.unknown_desc);
	const char *sum = line_with("hostile.net", "passed");
	expect(sum, "failed", "0");
	expect(sum, "arp_after", "ok");
	check(u64(sum, "passed") == hostile_net_ncases, "summary: %.300s", sum);
	check(probe_count(vm.res.out, "hostile.net") == hostile_net_ncases + 1,
	      "expected %u case lines and a summary", hostile_net_ncases);
}
