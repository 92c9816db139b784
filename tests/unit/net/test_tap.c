/*
 * net/tap.c: the TAP backend, in a private network namespace per test (the
 * Criterion worker unshares its own; the host's networking is never
 * touched and every TAP disappears with the worker).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "net/net.h"
#include "tests/common/facility.h"
#include "tests/unit/net/netns.h"

static void enter(void)
{
	REQUIRE_FACILITY(facility_root(), "needs root to create a TAP in a private network namespace");
	int r = netns_enter();
	cr_assert_eq(r, 0, "netns: %s", strerror(-r));
}

static int open_named(struct net_backend *b, const char *name, unsigned queues, unsigned mtu,
                      char *err, size_t errlen)
{
	struct tap_params p = {.name = name, .fd = -1, .queues = queues, .mtu = mtu};
	return tap_open(b, &p, err, errlen);
}

Test(net_tap, open_by_name_creates)
{
	struct net_backend b;
	char err[256] = "";
	enter();
	int r = open_named(&b, "rvt0", 1, 0, err, sizeof(err));
	cr_assert_eq(r, 0, "%s", err);
	cr_assert_str_eq(b.ifname, "rvt0");
	cr_assert_eq(b.nqueues, 1);
	cr_assert_geq(b.fd[0], 0);
	cr_assert_eq(b.fd[1], -1);
	cr_assert(fcntl(b.fd[0], F_GETFL) & O_NONBLOCK);
	cr_assert(fcntl(b.fd[0], F_GETFD) & FD_CLOEXEC);
	cr_assert_eq(b.mtu, 1500);
	cr_assert(b.offloads & NET_OFF_CSUM, "this kernel's TAP takes checksum offload");
	cr_assert(b.offloads & NET_OFF_TSO4);
	cr_assert_eq(b.ops->set_offload(&b, b.offloads), 0);
	cr_assert_eq(b.ops->set_offload(&b, 0), 0);
	cr_assert_eq(b.ops->set_offload(&b, 0x80), -EINVAL);
	struct iovec iov = {.iov_base = err, .iov_len = sizeof(err)};
	cr_assert_eq(b.ops->readv(&b, 0, &iov, 1), -EAGAIN, "nothing queued: no blocking");
	cr_assert_eq(b.ops->readv(&b, 3, &iov, 1), -EINVAL);
	b.ops->close(&b);
	cr_assert_eq(b.fd[0], -1);
	net_backend_close(&b); /* idempotent */
}

Test(net_tap, mtu_is_set)
{
	struct net_backend b;
	char err[256] = "";
	enter();
	cr_assert_eq(open_named(&b, "rvt0", 1, 9000, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(b.mtu, 9000);
	net_backend_close(&b);
}

Test(net_tap, multiqueue_attach_detach)
{
	struct net_backend b;
	char err[256] = "";
	enter();
	cr_assert_eq(open_named(&b, "rvt0", 4, 0, err, sizeof(err)), 0, "%s", err);
	for (unsigned i = 0; i < 4; i++)
		cr_assert_geq(b.fd[i], 0);
	cr_assert_eq(b.ops->set_queue(&b, 3, false), 0);
	cr_assert_eq(b.ops->set_queue(&b, 3, false), 0, "twice is fine");
	cr_assert_eq(b.ops->set_queue(&b, 3, true), 0);
	cr_assert_eq(b.ops->set_queue(&b, 4, true), -EINVAL);
	/* A second, single-queue open of the same multiqueue TAP is refused clearly. */
	struct net_backend b2;
	cr_assert_eq(open_named(&b2, "rvt0", 1, 0, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "rvt0"), "%s", err);
	net_backend_close(&b);
}

Test(net_tap, frames_both_ways)
{
	struct net_backend b;
	char err[256] = "";
	enter();
	cr_assert_eq(open_named(&b, "rvt0", 1, 0, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(netns_if_up("rvt0"), 0);
	int pkt = netns_pkt_open("rvt0");
	cr_assert_geq(pkt, 0, "%s", strerror(-pkt));

	/* Backend → interface: header + frame, the header all zeros. */
	uint8_t hdr[NET_VNET_HDR_LEN] = {0}, frame[100], got[2048];
	netns_frame(frame, sizeof(frame), 7);
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {frame, sizeof(frame)}};
	cr_assert_eq(b.ops->writev(&b, 0, iov, 2), (ssize_t)(sizeof(hdr) + sizeof(frame)));
	ssize_t n = netns_pkt_recv(pkt, got, sizeof(got), 2000);
	cr_assert_eq(n, (ssize_t)sizeof(frame));
	cr_assert_arr_eq(got, frame, sizeof(frame));

	/* Interface → backend: the kernel writes a header in front. */
	netns_frame(frame, sizeof(frame), 8);
	cr_assert_eq(netns_pkt_send(pkt, frame, sizeof(frame)), 0);
	struct iovec in[1] = {{got, sizeof(got)}};
	for (int i = 0; i < 200 && (n = b.ops->readv(&b, 0, in, 1)) == -EAGAIN; i++)
		usleep(10000);
	cr_assert_eq(n, (ssize_t)(NET_VNET_HDR_LEN + sizeof(frame)));
	cr_assert_arr_eq(got + NET_VNET_HDR_LEN, frame, sizeof(frame));
	cr_assert_eq(got[1], 0, "no GSO without offloads");
	close(pkt);
	net_backend_close(&b);
}

Test(net_tap, adopt_fd)
{
	struct net_backend b;
	char err[256] = "";
	enter();
	int fd = netns_tap_create("rvt1", true);
	cr_assert_geq(fd, 0, "%s", strerror(-fd));
	struct tap_params p = {.fd = fd, .queues = 1};
	cr_assert_eq(tap_open(&b, &p, err, sizeof(err)), 0, "%s", err);
	cr_assert_neq(b.fd[0], fd, "a duplicate: the caller keeps its own");
	cr_assert_str_eq(b.ifname, "rvt1");
	net_backend_close(&b);
	cr_assert_geq(fcntl(fd, F_GETFD), 0, "the caller's descriptor stays open");
	close(fd);

	int plain = netns_tap_create("rvt2", false);
	cr_assert_geq(plain, 0);
	p.fd = plain;
	cr_assert_eq(tap_open(&b, &p, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "IFF_VNET_HDR"), "%s", err);
	close(plain);

	int notap = open("/dev/null", O_RDWR | O_CLOEXEC);
	p.fd = notap;
	cr_assert_eq(tap_open(&b, &p, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "not a TAP"), "%s", err);
	close(notap);
}

/* Refused before anything is opened: no root needed. */
Test(net_tap, bad_params)
{
	static const struct {
		const char *name;
		int fd;
		unsigned queues;
		const char *msg;
	} cases[] = {
	    {"rvt0", -1, 0, "queues=0"},
	    {"rvt0", -1, 5, "queues=5"},
	    {NULL, -1, 1, "exactly one"},
	    {"rvt0", 5, 1, "exactly one"},
	    {NULL, 5, 2, "queues=1"},
	    {"0123456789abcdef", -1, 1, "interface name"},
	    {"", -1, 1, "interface name"},
	    {"a/b", -1, 1, "interface name"},
	    {NULL, 999, 1, "not an open descriptor"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct net_backend b;
		char err[256] = "";
		struct tap_params p = {.name = cases[i].name, .fd = cases[i].fd, .queues = cases[i].queues};
		int r = tap_open(&b, &p, err, sizeof(err));
		cr_assert_lt(r, 0, "case %zu", i);
		cr_assert(strstr(err, cases[i].msg), "case %zu: %s", i, err);
		cr_assert_eq(b.fd[0], -1, "case %zu", i);
	}
}
