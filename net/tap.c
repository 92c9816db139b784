/*
 * The TAP backend: opens (or adopts) a TAP with a 12-byte vnet header, one
 * descriptor per queue, probes which offloads the kernel accepts, and moves
 * frames with plain non-blocking readv/writev. Runs its setup in the main
 * process; the device process only calls readv/writev and the two ioctls
 * (TUNSETOFFLOAD, TUNSETQUEUE) its seccomp allowlist lets through.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/if_tun.h>

#include "net/net.h"

static ssize_t tap_readv(struct net_backend *b, unsigned q, const struct iovec *iov, unsigned n)
{
	if (q >= b->nqueues)
		return -EINVAL;
	ssize_t r = readv(b->fd[q], iov, (int)n);
	return r < 0 ? -errno : r;
}

static ssize_t tap_writev(struct net_backend *b, unsigned q, const struct iovec *iov, unsigned n)
{
	if (q >= b->nqueues)
		return -EINVAL;
	ssize_t r = writev(b->fd[q], iov, (int)n);
	return r < 0 ? -errno : r;
}

static int tap_set_offload(struct net_backend *b, unsigned off)
{
	if (off & ~b->offloads)
		return -EINVAL;
	/* The offloads belong to the interface: queue 0 is never detached. */
	if (ioctl(b->fd[0], TUNSETOFFLOAD, (unsigned long)off) < 0)
		return -errno;
	return 0;
}

static int tap_set_queue(struct net_backend *b, unsigned q, bool attached)
{
	if (q >= b->nqueues)
		return -EINVAL;
	if (b->nqueues == 1)
		return 0; /* not a multiqueue TAP: nothing to steer */
	struct ifreq ifr = {0};
	ifr.ifr_flags = attached ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
	if (ioctl(b->fd[q], TUNSETQUEUE, &ifr) < 0 && errno != EINVAL)
		return -errno; /* EINVAL: already in that state */
	return 0;
}

void net_backend_close(struct net_backend *b)
{
	for (unsigned i = 0; i < NET_MAX_QUEUES; i++) {
		if (b->fd[i] >= 0)
			close(b->fd[i]);
		b->fd[i] = -1;
	}
}

static const struct net_backend_ops tap_ops = {
    .kind = "tap",
    .readv = tap_readv,
    .writev = tap_writev,
    .set_offload = tap_set_offload,
    .set_queue = tap_set_queue,
    .close = net_backend_close,
    .ring_io = true,
};

static int open_queue(const char *name, short flags, char *ifname, char *err, size_t errlen)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "tap=%s: cannot open /dev/net/tun: %s", name, strerror(e));
		return -e;
	}
	unsigned int features = 0;
	if (ioctl(fd, TUNGETFEATURES, &features) < 0 || !(features & IFF_VNET_HDR) ||
	    ((flags & IFF_MULTI_QUEUE) && !(features & IFF_MULTI_QUEUE))) {
		snprintf(err, errlen, "tap=%s: the kernel's TUN driver lacks %s", name,
		         (flags & IFF_MULTI_QUEUE) ? "vnet headers or multiqueue" : "vnet headers");
		close(fd);
		return -EOPNOTSUPP;
	}
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = flags;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;
		if (e == EINVAL)
			snprintf(err, errlen,
			         "tap=%s: exists with other flags (not a TAP, or %s multiqueue)", name,
			         (flags & IFF_MULTI_QUEUE) ? "not" : "");
		else if (e == EBUSY)
			snprintf(err, errlen, "tap=%s: in use by another process", name);
		else
			snprintf(err, errlen, "tap=%s: TUNSETIFF: %s", name, strerror(e));
		close(fd);
		return -e;
	}
	memcpy(ifname, ifr.ifr_name, IFNAMSIZ);
	ifname[IFNAMSIZ - 1] = 0;
	return fd;
}

static int adopt_fd(int fd, char *ifname, char *err, size_t errlen)
{
	struct ifreq ifr = {0};
	if (fcntl(fd, F_GETFD) < 0) {
		snprintf(err, errlen, "tap-fd=%d: not an open descriptor", fd);
		return -EBADF;
	}
	if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
		snprintf(err, errlen, "tap-fd=%d: not a TAP (TUNGETIFF: %s)", fd, strerror(errno));
		return -EINVAL;
	}
	if (!(ifr.ifr_flags & IFF_TAP) || !(ifr.ifr_flags & IFF_VNET_HDR) ||
	    !(ifr.ifr_flags & IFF_NO_PI)) {
		snprintf(err, errlen, "tap-fd=%d: %s needs IFF_TAP, IFF_NO_PI and IFF_VNET_HDR", fd,
		         ifr.ifr_name);
		return -EINVAL;
	}
	int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (dup < 0) {
		int e = errno;
		snprintf(err, errlen, "tap-fd=%d: dup: %s", fd, strerror(e));
		return -e;
	}
	/* The open file is shared with the caller: non-blocking is what we need. */
	int fl = fcntl(dup, F_GETFL);
	if (fl < 0 || fcntl(dup, F_SETFL, fl | O_NONBLOCK) < 0) {
		int e = errno;
		snprintf(err, errlen, "tap-fd=%d: O_NONBLOCK: %s", fd, strerror(e));
		close(dup);
		return -e;
	}
	memcpy(ifname, ifr.ifr_name, IFNAMSIZ);
	ifname[IFNAMSIZ - 1] = 0;
	return dup;
}

/* Which offloads the kernel accepts for the reader; left all off afterwards. */
static void probe_offloads(struct net_backend *b)
{
	int fd = b->fd[0];
	b->offloads = 0;
	if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)TUN_F_CSUM) == 0)
		b->offloads |= NET_OFF_CSUM;
	if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)) == 0)
		b->offloads |= NET_OFF_TSO4 | NET_OFF_TSO6;
	if (ioctl(fd, TUNSETOFFLOAD,
	          (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)) == 0)
		b->offloads |= NET_OFF_TSO_ECN;
	/* Kernels since 4.14 accept UFO datagrams written by a guest and take
	 * TUN_F_UFO without producing any; older ones refuse the flag. */
	if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_UFO)) == 0) {
		b->offloads |= NET_OFF_UFO;
		b->host_ufo = true;
	}
	if (ioctl(fd, TUNSETOFFLOAD, 0ul) < 0)
		b->offloads = 0; /* cannot even turn them off: offer none */
}

static int mtu_ctl(const char *ifname, unsigned set, unsigned *out, char *err, size_t errlen)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: socket for the MTU: %s", ifname, strerror(e));
		return -e;
	}
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	int r = 0;
	if (set) {
		ifr.ifr_mtu = (int)set;
		if (ioctl(s, SIOCSIFMTU, &ifr) < 0) {
			r = -errno;
			snprintf(err, errlen, "%s: cannot set MTU %u: %s", ifname, set, strerror(-r));
		}
	}
	if (r == 0) {
		if (ioctl(s, SIOCGIFMTU, &ifr) < 0) {
			r = -errno;
			snprintf(err, errlen, "%s: cannot read the MTU: %s", ifname, strerror(-r));
		} else {
			*out = (unsigned)ifr.ifr_mtu;
		}
	}
	close(s);
	return r;
}

int tap_open(struct net_backend *b, const struct tap_params *p, char *err, size_t errlen)
{
	int r;
	memset(b, 0, sizeof(*b));
	for (unsigned i = 0; i < NET_MAX_QUEUES; i++)
		b->fd[i] = -1;
	b->ops = &tap_ops;
	if (p->queues < 1 || p->queues > NET_MAX_QUEUES) {
		snprintf(err, errlen, "queues=%u: must be 1..%d", p->queues, NET_MAX_QUEUES);
		return -EINVAL;
	}
	if ((p->name == NULL) == (p->fd < 0)) {
		snprintf(err, errlen, "give exactly one of tap=NAME and tap-fd=FD");
		return -EINVAL;
	}
	if (p->fd >= 0 && p->queues > 1) {
		snprintf(err, errlen, "tap-fd=%d: one descriptor gives one queue pair (queues=1)",
		         p->fd);
		return -EINVAL;
	}
	if (p->name && (!*p->name || strlen(p->name) >= IFNAMSIZ || strchr(p->name, '/'))) {
		snprintf(err, errlen, "tap=%s: not an interface name (1..%d bytes)", p->name,
		         IFNAMSIZ - 1);
		return -EINVAL;
	}
	b->nqueues = p->queues;
	if (p->name) {
		short flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
		if (p->queues > 1)
			flags |= IFF_MULTI_QUEUE;
		for (unsigned i = 0; i < p->queues; i++) {
			r = open_queue(p->name, flags, b->ifname, err, errlen);
			if (r < 0)
				goto fail;
			b->fd[i] = r;
		}
	} else {
		r = adopt_fd(p->fd, b->ifname, err, errlen);
		if (r < 0)
			goto fail;
		b->fd[0] = r;
	}
	int sz = NET_VNET_HDR_LEN;
	for (unsigned i = 0; i < b->nqueues; i++) {
		if (ioctl(b->fd[i], TUNSETVNETHDRSZ, &sz) < 0) {
			r = -errno;
			snprintf(err, errlen, "%s: TUNSETVNETHDRSZ: %s", b->ifname, strerror(-r));
			goto fail;
		}
	}
	probe_offloads(b);
	r = mtu_ctl(b->ifname, p->mtu, &b->mtu, err, errlen);
	if (r < 0)
		goto fail;
	return 0;
fail:
	net_backend_close(b);
	return r;
}
