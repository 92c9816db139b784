/*
 * Private network namespace helpers for TAP tests and benchmarks (see
 * netns.h). Everything happens inside the namespace the caller entered.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>

#include "tests/unit/net/netns.h"

static void write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return; /* no IPv6 here: nothing to quieten */
	ssize_t n = write(fd, s, strlen(s));
	(void)n;
	close(fd);
}

int netns_enter(void)
{
	if (unshare(CLONE_NEWNET) < 0)
		return -errno;
	write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
	write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
	return netns_if_up("lo");
}

int netns_tap_create(const char *name, bool vnet_hdr)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int netns_if_up(const char *name)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	struct ifreq ifr = {0};
	int r = 0;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		r = -errno;
	} else {
		ifr.ifr_flags |= IFF_UP | IFF_NOARP;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			r = -errno;
	}
	close(s);
	return r;
}

int netns_pkt_open(const char *name)
{
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
	if (s < 0)
		return -errno;
	struct sockaddr_ll sll = {.sll_family = AF_PACKET,
	                          .sll_protocol = htons(ETH_P_ALL),
	                          .sll_ifindex = (int)if_nametoindex(name)};
	int big = 8 << 20;
	(void)setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	(void)setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
	if (!sll.sll_ifindex || bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		int e = sll.sll_ifindex ? errno : ENODEV;
		close(s);
		return -e;
	}
	return s;
}

int netns_pkt_send(int fd, const void *frame, size_t len)
{
	for (;;) {
		ssize_t n = send(fd, frame, len, 0);
		if (n == (ssize_t)len)
			return 0;
		if (n >= 0)
			return -EIO;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != ENOBUFS)
			return -errno;
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		(void)poll(&p, 1, 10);
	}
}

ssize_t netns_pkt_recv(int fd, void *buf, size_t len, int timeout_ms)
{
	for (;;) {
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, buf, len, MSG_TRUNC, (struct sockaddr *)&from, &fl);
		if (n >= 0) {
			if (from.sll_pkttype == PACKET_OUTGOING)
				continue;
			return n;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, timeout_ms);
		if (r == 0)
			return -ETIMEDOUT;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

void netns_frame(void *buf, size_t len, unsigned seq)
{
	uint8_t *f = buf;
	static const uint8_t hdr[14] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00,
	                                0x00, 0x00, 0x00, 0x01, 0x88, 0xb5};
	memcpy(f, hdr, 14);
	for (size_t i = 14; i < len; i++)
		f[i] = (uint8_t)(seq * 31u + i * 7u);
	if (len >= 18)
		memcpy(f + 14, &seq, 4);
}
