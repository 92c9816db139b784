/*
 * End-to-end: the probe guest's virtio-net driver and stack against QEMU's
 * virtio-net-pci on a TAP in a private network namespace (the reference
 * device; vhost=off — these hosts have no vhost-net). Same scenarios as
 * ringvm (net_checks.h); QEMU's known leniency with bogus TX frames is
 * pinned here.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/net_checks.h"
#include "tests/e2e/netns.h"

/*
 * QEMU 7.2 hands these to the TAP as they are (the kernel accepts them):
 * frames over the MTU, even over 64 KiB, and UDP GSO (UFO) although the
 * guest did not negotiate HOST_UFO. ringvm must drop them.
 */
#define QEMU_PASSES_BAD "frame-over-mtu,frame-64k,gso-udp-unnegotiated"

static void qemu_argv(struct harness_argv *a, const struct netns *ns, const char *params,
                      const struct net_vmm_cfg *c, const void *ctx)
{
	(void)ctx;
	static const char *const none[] = {NULL};
	struct harness_qemu_cfg q = {.params = params, .extra = none};
	harness_qemu_probe_argv(a, &q);
	unsigned queues = c->queues > 1 ? c->queues : 1;
	harness_argv_add(a, "-netdev");
	if (queues > 1)
		harness_argv_add(a, "tap,id=n0,ifname=%s,script=no,downscript=no,vhost=off,queues=%u",
		                 ns->tap, queues);
	else
		harness_argv_add(a, "tap,id=n0,ifname=%s,script=no,downscript=no,vhost=off", ns->tap);
	harness_argv_add(a, "-device");
	char extra[96] = "";
	if (c->mtu)
		snprintf(extra, sizeof(extra), ",host_mtu=%u", c->mtu);
	if (queues > 1)
		snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), ",mq=on,vectors=%u",
		         2 * queues + 2);
	harness_argv_add(a, "virtio-net-pci,netdev=n0,disable-legacy=on,mac=" NETNS_GUEST_MAC "%s",
	                 extra);
}

static const struct net_vmm qemu = {.what = "QEMU", .argv = qemu_argv};

static void need(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm not usable");
	REQUIRE_FACILITY(facility_qemu(), "qemu-system-x86_64 not on PATH");
	REQUIRE_FACILITY(facility_qboot(), "/usr/share/qemu/qboot.rom missing");
	REQUIRE_FACILITY(harness_probe_exists(), "probe guest not built (tests/guest/probe.elf)");
	REQUIRE_FACILITY(facility_root() && netns_usable(), "needs root and iproute2 (ip)");
}

TestSuite(e2e_qemu_net, .timeout = 120, .fini = netns_destroy_all);

Test(e2e_qemu_net, ping_and_udp_echo)
{
	need();
	struct net_echo_cfg c = {.pings = 100,
	                         .ping_binary = true,
	                         .udp_count = 10000,
	                         .udp_min = 8,
	                         .udp_max = 1472,
	                         .window = 8};
	net_check_echo(&qemu, &c);
}

Test(e2e_qemu_net, mtu_9000)
{
	need();
	struct net_echo_cfg c = {.vmm = {.mtu = 9000},
	                         .pings = 20,
	                         .ping_payload = 8972,
	                         .udp_count = 1000,
	                         .udp_min = 1400,
	                         .udp_max = 8972,
	                         .window = 4};
	net_check_echo(&qemu, &c);
}

Test(e2e_qemu_net, two_queue_pairs)
{
	need();
	struct net_echo_cfg c = {.vmm = {.queues = 2},
	                         .pings = 20,
	                         .udp_count = 2000,
	                         .udp_min = 8,
	                         .udp_max = 1472,
	                         .window = 8};
	net_check_echo(&qemu, &c);
}

Test(e2e_qemu_net, bench_64)
{
	need();
	net_check_bench(&qemu, 64, 2);
}

Test(e2e_qemu_net, bench_1500)
{
	need();
	net_check_bench(&qemu, 1500, 2);
}

Test(e2e_qemu_net, hostile_tx)
{
	need();
	net_check_hostile(&qemu, QEMU_PASSES_BAD);
}
