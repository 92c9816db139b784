/*
 * The virtio-net end-to-end scenarios, shared by the QEMU and ringvm tests
 * so both VMMs' devices are held to the same expectations. Each scenario
 * makes its own network namespace + TAP (netns.h), boots the probe guest
 * under the VMM inside it, drives traffic from the namespace, waits for the
 * VMM to exit and only then asserts (so a failure never leaves the VMM
 * running); the namespace goes in the suite's .fini (netns_destroy_all).
 * Measured numbers are printed to stderr as `net-e2e: ...` lines.
 */
#ifndef RINGVM_TESTS_E2E_NET_CHECKS_H
#define RINGVM_TESTS_E2E_NET_CHECKS_H

#include <stdbool.h>

#include "tests/e2e/harness.h"
#include "tests/e2e/netns.h"

struct net_vmm_cfg {
	unsigned mtu;    /* 0: 1500 (and no MTU option given to the VMM) */
	unsigned queues; /* 0/1: one queue pair */
};

/* How to boot the probe with params under one VMM, attached to ns->tap. */
struct net_vmm {
	const char *what; /* for messages: "QEMU", "ringvm", "ringvm --disable-sandbox" */
	void (*argv)(struct harness_argv *a, const struct netns *ns, const char *params,
	             const struct net_vmm_cfg *cfg, const void *ctx);
	const void *ctx;
};

struct net_echo_cfg {
	struct net_vmm_cfg vmm;
	unsigned pings;        /* raw-socket pings, 10 ms apart */
	unsigned ping_payload; /* bytes (default 56) */
	bool ping_binary;      /* also run `ping -c 100 -i 0.01` when it is installed */
	unsigned udp_count;
	unsigned udp_min, udp_max; /* payload sizes */
	unsigned window;           /* UDP datagrams outstanding */
};

/*
 * `net`: the device is up (mac 52:54:00:12:34:56, the MTU asked for, link
 * up), resolved the host by ARP; every ping is answered with the same
 * payload and a good checksum (0% loss); every UDP datagram comes back
 * unchanged; the guest's counters agree (icmp/udp at least what was sent,
 * no bad frames, no checksum errors, no TX drops) and the run ended ok.
 */
void net_check_echo(const struct net_vmm *v, const struct net_echo_cfg *c);

/*
 * `net.bench` with frames of size bytes for secs per phase: both phases
 * report frames and rates; the host saw the guest's datagrams (no more than
 * the guest sent) and blasted back.
 */
void net_check_bench(const struct net_vmm *v, unsigned size, unsigned secs);

/*
 * `hostile.net`: every case passed in the guest (the device stayed usable,
 * after a reset where it asked for one) and ARP still works afterwards; on
 * the TAP: a good frame after every case, every `valid` case's frame, and no
 * `bad` one except those in allowed_bad (comma-separated case names: a
 * reference VMM's known leniency), and nothing unidentified from the guest.
 */
void net_check_hostile(const struct net_vmm *v, const char *allowed_bad);

/* The guest's hostile.net cases in order, with their class (bad, valid, maybe). */
extern const char *const hostile_net_cases[][2];
extern const unsigned hostile_net_ncases;

#endif
