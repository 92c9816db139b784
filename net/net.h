/*
 * Network backends behind one small ops table. A backend is opened in the
 * main process (which may need privileges for it) and its queue descriptors
 * cross into the device process, which only moves frames (each with a
 * 12-byte virtio-net header in front) and changes what the backend already
 * allows: offloads and which queues are attached. Knows nothing of virtio.
 */
#ifndef RINGVM_NET_NET_H
#define RINGVM_NET_NET_H

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NET_WUR __attribute__((warn_unused_result))

/* Most queue pairs (and so backend descriptors) of one backend. */
#define NET_MAX_QUEUES 4
/* The header every frame carries, both ways (virtio_net_hdr_mrg_rxbuf). */
#define NET_VNET_HDR_LEN 12

/* Offloads the reader (the guest's RX path) accepts: TUN_F_* values. */
#define NET_OFF_CSUM    0x01
#define NET_OFF_TSO4    0x02
#define NET_OFF_TSO6    0x04
#define NET_OFF_TSO_ECN 0x08
#define NET_OFF_UFO     0x10

struct net_backend;

struct net_backend_ops {
	const char *kind; /* "tap" */
	/*
	 * Move one frame (header first) to/from queue q without blocking:
	 * bytes moved, -EAGAIN when nothing is queued / no room, or -errno.
	 * A frame longer than the read's buffers is cut to them and the rest
	 * is lost; a caller that must know passes a spare byte at the end
	 * (filled only when the frame did not fit).
	 */
	ssize_t (*readv)(struct net_backend *b, unsigned q, const struct iovec *iov, unsigned n);
	ssize_t (*writev)(struct net_backend *b, unsigned q, const struct iovec *iov, unsigned n);
	/* Offloads the reader accepts now (NET_OFF_*, a subset of b->offloads). 0 or -errno. */
	int (*set_offload)(struct net_backend *b, unsigned off);
	/* Let queue q receive frames or not (a multiqueue TAP steers only to attached ones). */
	int (*set_queue)(struct net_backend *b, unsigned q, bool attached);
	void (*close)(struct net_backend *b);
	/* readv/writev are plain readv(2)/writev(2) on fd[q] (non-blocking), so
	 * a caller may issue them as io_uring READV/WRITEV instead, many frames
	 * per submission; false (fakes): only through the two functions. */
	bool ring_io;
};

struct net_backend {
	const struct net_backend_ops *ops;
	unsigned nqueues;          /* 1..NET_MAX_QUEUES */
	int fd[NET_MAX_QUEUES];    /* non-blocking, close-on-exec; -1 when closed */
	unsigned offloads;         /* NET_OFF_* the backend can do for the reader */
	bool host_ufo;             /* UDP fragmentation offload accepted on writes */
	char ifname[IFNAMSIZ];     /* the interface, for messages */
	unsigned mtu;              /* the interface's MTU when opened */
};

/* How to get a TAP: by name (opened, created if missing) or an fd the caller opened. */
struct tap_params {
	const char *name; /* interface name (< IFNAMSIZ), or NULL when fd >= 0 */
	int fd;           /* an open TAP (IFF_TAP|IFF_VNET_HDR), -1 when name is used */
	unsigned queues;  /* 1..NET_MAX_QUEUES; > 1 needs a name (IFF_MULTI_QUEUE) */
	unsigned mtu;     /* 0: leave the interface's MTU; else set it (68..65535) */
};

/*
 * Open a TAP backend into *b: with a name, open /dev/net/tun `queues` times
 * with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (IFF_MULTI_QUEUE when queues > 1),
 * creating the interface if it does not exist (needs CAP_NET_ADMIN); with
 * an fd, check it is a TAP with a vnet header and take a duplicate (the
 * caller keeps its own). Then: vnet header size 12, non-blocking, offloads
 * probed and left off (b->offloads says what set_offload may turn on), the
 * MTU set when asked. 0, or -errno with one line in err naming the problem.
 */
NET_WUR int tap_open(struct net_backend *b, const struct tap_params *p, char *err, size_t errlen);

/* Close every descriptor b holds (b->ops->close does the same). Idempotent. */
void net_backend_close(struct net_backend *b);

#endif
