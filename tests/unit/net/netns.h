/*
 * A private network namespace for TAP tests and benchmarks: the calling
 * thread (a Criterion worker: one process per test) moves into a new netns,
 * so TAPs it creates never touch the host's networking and vanish with the
 * process. Host-side frame source/sink: an AF_PACKET socket on the TAP.
 */
#ifndef RINGVM_TESTS_UNIT_NET_NETNS_H
#define RINGVM_TESTS_UNIT_NET_NETNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* unshare(CLONE_NEWNET), IPv6 off for new interfaces (no router
 * solicitations or MLD frames of its own), lo up. 0 or -errno. */
int netns_enter(void);

/* Create a TAP (IFF_TAP|IFF_NO_PI[|IFF_VNET_HDR]) named name and return its fd (or -errno). */
int netns_tap_create(const char *name, bool vnet_hdr);

/* Set the interface up (with IFF_NOARP). 0 or -errno. */
int netns_if_up(const char *name);

/* An AF_PACKET socket bound to name for all protocols, non-blocking; fd or -errno. */
int netns_pkt_open(const char *name);

/* Send one Ethernet frame out of the interface (into the TAP's queue). 0 or -errno. */
int netns_pkt_send(int fd, const void *frame, size_t len);

/*
 * Receive one frame the interface received (written into the TAP), skipping
 * our own outgoing ones; waits up to timeout_ms. Its length or -ETIMEDOUT.
 */
ssize_t netns_pkt_recv(int fd, void *buf, size_t len, int timeout_ms);

/* Fill an Ethernet frame of len bytes (len ≥ 14): broadcast dst, local src, EtherType 0x88b5, payload seq-derived. */
void netns_frame(void *buf, size_t len, unsigned seq);

#endif
