/*
 * The wire format between the main process and a device process. Two
 * SOCK_SEQPACKET sockets per device:
 *  - the bus socket (main → device requests, device → main replies): what a
 *    vCPU does to the device — BAR reads/writes and PCI config reads/writes —
 *    plus HELLO, SHUTDOWN and the control socket's METRICS and RESIZE;
 *  - the VM-control socket (device → main requests, main → device replies):
 *    the only VM-global changes a device may ask for — an MSI route for one of
 *    its vectors (with the irqfd) and an ioeventfd for one of its notify
 *    addresses (with the eventfd) — plus device-specific requests the
 *    device's registry entry serves in the main process (vsock connects).
 * Every message is one fixed-size struct; sizes are _Static_asserted so both
 * sides agree byte for byte. Every received message is validated (size, op,
 * fd count) before use: the other side may be compromised.
 * Header-only (static inline) because both sides link it: core/ for the main
 * process, devices/ for the device process.
 */
#ifndef RINGVM_CORE_IPC_H
#define RINGVM_CORE_IPC_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define IPC_VERSION 1
#define IPC_MAGIC   0x52564d31u /* "RVM1" */
#define IPC_MAX_FDS 2           /* descriptors per message, never more */
#define IPC_MAX_BARS 6

/* ---- bus socket ---- */

enum ipc_bus_op {
	IPC_HELLO = 1,     /* main → device: first message; reply carries the device's BARs */
	IPC_BAR_READ,      /* reply carries data */
	IPC_BAR_WRITE,     /* posted: no reply, but ordered with everything else */
	IPC_CFG_READ,      /* reply carries data */
	IPC_CFG_WRITE,     /* posted */
	IPC_SHUTDOWN,      /* device finishes in-flight requests, replies, exits 0 */
	IPC_METRICS,       /* reply is a struct ipc_metrics (not an ipc_bus_resp) */
	IPC_RESIZE,        /* data = new size in bytes; reply result 0 or -errno, data = size now */
};

struct ipc_bus_req {
	uint32_t op;     /* enum ipc_bus_op */
	uint32_t seq;    /* echoed in the reply */
	uint8_t bar;     /* BAR index for BAR_* */
	uint8_t len;     /* 1, 2, 4 or 8 (config: 1, 2, 4) */
	uint16_t pad;
	uint32_t off;    /* offset in the BAR, or config register */
	uint64_t data;   /* write value (little-endian in the low len bytes); RESIZE: bytes */
	uint32_t version; /* HELLO: IPC_VERSION */
	uint32_t magic;   /* HELLO: IPC_MAGIC */
};
_Static_assert(sizeof(struct ipc_bus_req) == 32, "ipc_bus_req layout");

enum ipc_bar_kind { IPC_BAR_NONE = 0, IPC_BAR_MEM32, IPC_BAR_MEM64 };

struct ipc_bar_info {
	uint64_t size;  /* power of two ≥ 4096, or 0 when unused */
	uint32_t kind;  /* enum ipc_bar_kind; a MEM64 BAR takes this index and the next */
	uint32_t pad;
};
_Static_assert(sizeof(struct ipc_bar_info) == 16, "ipc_bar_info layout");

struct ipc_bus_resp {
	uint32_t op;     /* the request's op */
	uint32_t seq;    /* the request's seq */
	int32_t result;  /* 0 or -errno */
	uint32_t pad;
	uint64_t data;   /* read value */
	/* HELLO only: */
	uint32_t version, magic;
	char name[16];   /* device kind, NUL-terminated, e.g. "virtio-rng" */
	struct ipc_bar_info bars[IPC_MAX_BARS];
};
_Static_assert(sizeof(struct ipc_bus_resp) == 144, "ipc_bus_resp layout");

/*
 * IPC_METRICS reply: the device's counters since it started. Requests and
 * bytes are filled by devices that keep them (virtio-blk); the transport
 * counters (notifications, interrupts) by every device. Service time is the
 * time from taking a request off the avail ring to publishing its used
 * entry, kept as a log-linear histogram: values below 8 ns have their own
 * bucket; above, each power of two is split into 8 equal sub-buckets (at
 * most 12.5% relative error). See ipc_metrics_bucket()/_percentile().
 */
#define IPC_METRICS_VERSION     1
#define IPC_METRICS_SUB_BITS    3
#define IPC_METRICS_MAX_BITS    40 /* values ≥ 2^40 ns (18 min) land in the last bucket */
#define IPC_METRICS_BUCKETS     ((IPC_METRICS_MAX_BITS - IPC_METRICS_SUB_BITS + 1) << IPC_METRICS_SUB_BITS)

struct ipc_metrics {
	uint32_t op;      /* IPC_METRICS */
	uint32_t seq;     /* the request's seq */
	int32_t result;   /* 0 or -errno */
	uint32_t version; /* IPC_METRICS_VERSION */
	char name[16];    /* device kind, NUL-terminated */
	uint64_t requests;      /* requests completed (any status) */
	uint64_t reads, writes; /* completed requests by kind ... */
	uint64_t flushes, discards, write_zeroes, get_ids, other;
	uint64_t bytes_read, bytes_written; /* data moved for completed requests */
	uint64_t errors;        /* completed with an error status (I/O error, unsupported, bad request) */
	uint64_t inflight;      /* taken from the avail ring, not yet completed (now) */
	uint64_t max_inflight;  /* high-water mark of inflight */
	uint64_t notifications; /* queue kicks the device consumed (ioeventfd reads / notify writes) */
	uint64_t interrupts;    /* interrupts raised (irqfd writes) */
	uint64_t svc_count;     /* requests in the histogram */
	uint64_t svc_sum_ns, svc_max_ns;
	uint64_t svc_hist[IPC_METRICS_BUCKETS];
};
_Static_assert(sizeof(struct ipc_metrics) == 176 + 8 * IPC_METRICS_BUCKETS, "ipc_metrics layout");

/* Histogram bucket of a value in ns. */
static inline unsigned ipc_metrics_bucket(uint64_t ns)
{
	const unsigned sub = IPC_METRICS_SUB_BITS;
	if (ns >= (1ull << IPC_METRICS_MAX_BITS))
		return IPC_METRICS_BUCKETS - 1;
	if (ns < (1ull << sub))
		return (unsigned)ns;
	unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
	return ((msb - sub + 1) << sub) | (unsigned)((ns >> (msb - sub)) & ((1u << sub) - 1));
}

/* Lowest value (ns) of bucket b; b + 1 gives its end. */
static inline uint64_t ipc_metrics_bucket_lo(unsigned b)
{
	const unsigned sub = IPC_METRICS_SUB_BITS;
	if (b < (1u << sub))
		return b;
	unsigned msb = (b >> sub) + sub - 1;
	return ((1ull << sub) | (b & ((1u << sub) - 1))) << (msb - sub);
}

/* The p-th percentile (0 < p ≤ 100) of the service times: the middle of its bucket; 0 if none. */
static inline uint64_t ipc_metrics_percentile(const struct ipc_metrics *m, double p)
{
	uint64_t n = 0, want;
	for (unsigned b = 0; b < IPC_METRICS_BUCKETS; b++)
		n += m->svc_hist[b];
	if (!n)
		return 0;
	want = (uint64_t)(p / 100.0 * (double)n + 0.5);
	if (want < 1)
		want = 1;
	if (want > n)
		want = n;
	uint64_t seen = 0;
	for (unsigned b = 0; b < IPC_METRICS_BUCKETS; b++) {
		seen += m->svc_hist[b];
		if (seen >= want) {
			uint64_t lo = ipc_metrics_bucket_lo(b);
			uint64_t hi = b + 1 < IPC_METRICS_BUCKETS ? ipc_metrics_bucket_lo(b + 1) : lo + 1;
			uint64_t mid = lo + (hi - lo) / 2;
			return mid < m->svc_max_ns || !m->svc_max_ns ? mid : m->svc_max_ns;
		}
	}
	return m->svc_max_ns;
}

/* ---- VM-control socket ---- */

enum ipc_ctl_op {
	IPC_CTL_MSI_ROUTE = 1, /* route vector → (addr, data); fd[0] = irqfd on first use of a vector */
	IPC_CTL_IOEVENTFD,     /* notify address (bar, off) → eventfd fd[0]; zero-length MMIO match */
	IPC_CTL_VSOCK_CONNECT, /* vsock: connect to the host's <uds>_<port>; reply carries the
	                          connected socket (fd[0]) when result is 0 */
};

struct ipc_ctl_req {
	uint32_t op;      /* enum ipc_ctl_op */
	uint32_t seq;
	uint32_t vector;  /* MSI_ROUTE: MSI-X table index */
	uint32_t masked;  /* MSI_ROUTE: 1 = vector masked (route removed, irqfd kept) */
	uint64_t msi_addr;
	uint32_t msi_data;
	uint8_t bar;      /* IOEVENTFD */
	uint8_t assign;   /* IOEVENTFD: 1 assign, 0 deassign */
	uint16_t pad;
	uint32_t off;     /* IOEVENTFD: offset in the BAR */
	uint32_t port;    /* VSOCK_CONNECT: the host port (the device names a port, never a path) */
};
_Static_assert(sizeof(struct ipc_ctl_req) == 40, "ipc_ctl_req layout");

struct ipc_ctl_resp {
	uint32_t op;
	uint32_t seq;
	int32_t result; /* 0 or -errno */
	uint32_t pad;
};
_Static_assert(sizeof(struct ipc_ctl_resp) == 16, "ipc_ctl_resp layout");

/*
 * Send one message with up to IPC_MAX_FDS descriptors. Returns 0, -EMSGSIZE
 * for a short send, or -errno. MSG_NOSIGNAL: a dead peer is an error, not SIGPIPE.
 */
static inline int ipc_send(int sock, const void *msg, size_t len, const int *fds, unsigned nfds)
{
	struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
	union {
		char buf[CMSG_SPACE(sizeof(int) * IPC_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds > IPC_MAX_FDS)
		return -EINVAL;
	if (nfds) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	ssize_t n;
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EMSGSIZE;
}

/*
 * Receive one message of exactly len bytes. Descriptors (at most max_fds,
 * received O_CLOEXEC) go to fds and their count to *nfds. Anything else is
 * refused and every received descriptor closed: a wrong size (-EBADMSG), a
 * truncated message or control data (-EBADMSG), more descriptors than
 * max_fds (-EBADMSG). Returns 0, -EPIPE at EOF, or -errno.
 */
static inline int ipc_recv(int sock, void *msg, size_t len, int *fds, unsigned max_fds,
			   unsigned *nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * IPC_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = msg, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf)};
	ssize_t n;
	unsigned got = 0;
	int tmp[IPC_MAX_FDS];
	if (nfds)
		*nfds = 0;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (got < IPC_MAX_FDS)
				tmp[got++] = fd;
			else
				close(fd);
		}
	}
	int r = 0;
	if ((size_t)n != len || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || got > max_fds)
		r = -EBADMSG;
	if (r < 0) {
		for (unsigned i = 0; i < got; i++)
			close(tmp[i]);
		return r;
	}
	for (unsigned i = 0; i < got; i++)
		fds[i] = tmp[i];
	if (nfds)
		*nfds = got;
	return 0;
}

#endif
