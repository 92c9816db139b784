/*
 * End-to-end: the probe guest's virtio-net tests against ringvm's
 * virtio-net device (`--net tap=NAME,mac=..[,queues=N][,mtu=N]`) on a TAP
 * in a private network namespace, held to the same scenarios as QEMU
 * (net_checks.h) but stricter: no bogus TX frame may reach the TAP. Each
 * test runs with the sandbox and, when ringvm offers it, without
 * (--disable-sandbox). Until `ringvm run --help` lists NET_OPT the tests
 * skip and say so.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/net_checks.h"
#include "tests/e2e/netns.h"

#define RINGVM  BUILD_PATH("core/ringvm")
#define NET_OPT "--net" /* the CLI option that adds a virtio-net device */

static void ringvm_argv(struct harness_argv *a, const struct netns *ns, const char *params,
                        const struct net_vmm_cfg *c, const void *ctx)
{
	bool sandbox = *(const bool *)ctx;
	harness_argv_add(a, "%s", RINGVM);
	harness_argv_add(a, "run");
	harness_argv_add(a, "-m");
	harness_argv_add(a, "256");
	harness_argv_add(a, "-p");
	harness_argv_add(a, "%s", params);
	char opt[160];
	int n = snprintf(opt, sizeof(opt), "tap=%s,mac=" NETNS_GUEST_MAC, ns->tap);
	if (c->queues > 1)
		n += snprintf(opt + n, sizeof(opt) - (size_t)n, ",queues=%u", c->queues);
	if (c->mtu)
		snprintf(opt + n, sizeof(opt) - (size_t)n, ",mtu=%u", c->mtu);
	harness_argv_add(a, NET_OPT);
	harness_argv_add(a, "%s", opt);
	if (!sandbox)
		harness_argv_add(a, "--disable-sandbox");
	harness_argv_add(a, "%s", harness_probe_path());
}

static const bool yes = true, no = false;
static const struct net_vmm sandboxed = {.what = "ringvm", .argv = ringvm_argv, .ctx = &yes};
static const struct net_vmm unsandboxed = {
    .what = "ringvm --disable-sandbox", .argv = ringvm_argv, .ctx = &no};

static void need_net(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	REQUIRE_FACILITY(facility_root() && netns_usable(), "needs root and iproute2 (ip)");
	REQUIRE_FACILITY(harness_ringvm_has_option(NET_OPT),
	                 "ringvm run --help lists no such option");
}

/*
 * Runs fn with the sandbox and, when ringvm can turn it off, without. Each
 * scenario makes its own namespace; the previous one goes first.
 */
#define BOTH_WAYS(fn)                                                                              \
	do {                                                                                       \
		need_net();                                                                        \
		fn(&sandboxed);                                                                    \
		netns_destroy_all();                                                               \
		fn(&unsandboxed);                                                                  \
	} while (0)

TestSuite(e2e_ringvm_net, .timeout = 240, .fini = netns_destroy_all);

static void echo(const struct net_vmm *v)
{
	struct net_echo_cfg c = {.pings = 100,
	                         .ping_binary = true,
	                         .udp_count = 10000,
	                         .udp_min = 8,
	                         .udp_max = 1472,
	                         .window = 8};
	net_check_echo(v, &c);
}

Test(e2e_ringvm_net, ping_and_udp_echo)
{
	BOTH_WAYS(echo);
}

static void mtu9000(const struct net_vmm *v)
{
	struct net_echo_cfg c = {.vmm = {.mtu = 9000},
	                         .pings = 20,
	                         .ping_payload = 8972,
	                         .udp_count = 1000,
	                         .udp_min = 1400,
	                         .udp_max = 8972,
	                         .window = 4};
	net_check_echo(v, &c);
}

Test(e2e_ringvm_net, mtu_9000)
{
	BOTH_WAYS(mtu9000);
}

static void two_pairs(const struct net_vmm *v)
{
	struct net_echo_cfg c = {.vmm = {.queues = 2},
	                         .pings = 20,
	                         .udp_count = 2000,
	                         .udp_min = 8,
	                         .udp_max = 1472,
	                         .window = 8};
	net_check_echo(v, &c);
}

Test(e2e_ringvm_net, two_queue_pairs)
{
	BOTH_WAYS(two_pairs);
}

static void bench64(const struct net_vmm *v)
{
	net_check_bench(v, 64, 2);
}

Test(e2e_ringvm_net, bench_64)
{
	BOTH_WAYS(bench64);
}

static void bench1500(const struct net_vmm *v)
{
	net_check_bench(v, 1500, 2);
}

Test(e2e_ringvm_net, bench_1500)
{
	BOTH_WAYS(bench1500);
}

static void hostile(const struct net_vmm *v)
{
	net_check_hostile(v, "");
}

Test(e2e_ringvm_net, hostile_tx_nothing_bogus_reaches_tap)
{
	BOTH_WAYS(hostile);
}
