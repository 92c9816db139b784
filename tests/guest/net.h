/*
 * The probe's virtio-net driver layer on top of the virtio core, and the
 * smallest IPv4 stack that lets a host talk to it: Ethernet, ARP (answers
 * requests for our address, resolves the peer), IPv4 (header checksum
 * checked), ICMP echo reply and UDP echo on one port.
 *
 * Every instruction costs about a microsecond on the project's hosts, so
 * replies are built IN PLACE: the received buffer (virtio-net header
 * included) is turned around — addresses swapped, ICMP type changed with an
 * incremental checksum update — and handed to the TX queue as it is; the RX
 * buffer goes back to the RX queue when that TX completes. No payload is
 * copied or summed by the guest.
 *
 * Memory: RX buffers and a small pool of TX buffers live in guest RAM from
 * 16 MiB up (found in the PVH memory map), rings in the core's ring memory
 * (queues 0-3) and, for the control queue, in this layer's own.
 */
#ifndef PROBE_NET_H
#define PROBE_NET_H

#include "virtio.h"

#define VIRTIO_ID_NET 1

/* virtio-net feature bits. */
#define VIRTIO_NET_F_CSUM          0
#define VIRTIO_NET_F_GUEST_CSUM    1
#define VIRTIO_NET_F_MTU           3
#define VIRTIO_NET_F_MAC           5
#define VIRTIO_NET_F_GUEST_TSO4    7
#define VIRTIO_NET_F_HOST_TSO4     11
#define VIRTIO_NET_F_HOST_UFO      14
#define VIRTIO_NET_F_MRG_RXBUF     15
#define VIRTIO_NET_F_STATUS        16
#define VIRTIO_NET_F_CTRL_VQ       17
#define VIRTIO_NET_F_MQ            22

/* Header flags and GSO types. */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE     0
#define VIRTIO_NET_HDR_GSO_TCPV4    1
#define VIRTIO_NET_HDR_GSO_UDP      3
#define VIRTIO_NET_HDR_GSO_TCPV6    4
#define VIRTIO_NET_HDR_GSO_ECN      0x80

/* Control queue. */
#define VIRTIO_NET_CTRL_MQ              4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0
#define VIRTIO_NET_OK                   0

#define VIRTIO_NET_S_LINK_UP 1

/* struct virtio_net_hdr as VERSION_1 has it (num_buffers always present): 12 bytes. */
struct net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
} __attribute__((packed));
#define NET_HDR_LEN 12
_Static_assert(sizeof(struct net_hdr) == NET_HDR_LEN, "virtio_net_hdr layout");

#define NET_ETH_HLEN   14
#define NET_MAX_PAIRS  2    /* queue pairs driven (queues 0..3: the core's ring memory) */
#define NET_MAX_FRAGS  8    /* RX buffers of one merged frame we accept */
#define NET_TX_POOL    32   /* TX buffers for frames the guest builds */
#define NET_BUF        2048 /* RX buffer with MRG_RXBUF; TX pool buffers are NET_TX_BUF */
#define NET_TX_BUF     10240
#define NET_MAX_MTU    9600

/* Ethernet types, IP protocols (host order). */
#define ETH_P_IP  0x0800
#define ETH_P_ARP 0x0806
#define IPPROTO_ICMP 1
#define IPPROTO_UDP  17

struct net_rxq {
	struct virtq vq;
	uint64_t base;      /* slot s: base + s * slot_size, descriptor s */
	uint32_t slot_size; /* bytes per buffer, virtio-net header included */
	uint16_t nslots;
	uint16_t posted;    /* buffers the device holds */
	bool dirty;         /* reposted since the last publish */
};

/* What a TX head carries: RX slots to give back, or a pool buffer. */
struct net_tx_rec {
	uint8_t ndesc;
	uint8_t nrx;   /* RX slots (an in-place reply) */
	uint8_t rxq;
	uint8_t pool;  /* pool buffer + 1, 0 when none */
	uint16_t rx_slot[NET_MAX_FRAGS];
};

struct net_txq {
	struct virtq vq;
	uint16_t free[VIRTQ_MAX]; /* stack of free descriptors */
	uint16_t nfree;
	uint16_t inflight;        /* heads */
	bool dirty;
	struct net_tx_rec rec[VIRTQ_MAX];
};

struct net_stats {
	uint64_t rx, rx_bytes;   /* frames and frame bytes received (headers excluded) */
	uint64_t tx, tx_bytes;   /* frames whose TX completed, bytes queued */
	uint64_t arp;            /* ARP requests for our address answered */
	uint64_t arp_replies;    /* ARP replies seen (peer resolution) */
	uint64_t icmp, udp;      /* echo replies sent */
	uint64_t dropped;        /* frames not handled */
	uint64_t bad_csum;       /* IPv4 header checksum wrong (counted in dropped too) */
	uint64_t bad_frame;      /* used entries the driver could not make sense of */
	uint64_t tx_full;        /* replies dropped for lack of TX descriptors */
	uint64_t kicks;
	uint64_t rx_pair[NET_MAX_PAIRS]; /* frames per queue pair */
};

/* Options for net_open(); zero means the default. */
struct net_open_opts {
	unsigned pairs;    /* queue pairs (default 1; > 1 needs MQ + CTRL_VQ) */
	bool no_event_idx;
	bool no_mrg;       /* do not negotiate MRG_RXBUF */
	bool csum;         /* negotiate CSUM + GUEST_CSUM (both or neither) */
	bool no_ctrl;      /* do not negotiate CTRL_VQ */
	bool host_tso;     /* negotiate HOST_TSO4 (hostile.net, so GSO fields mean something) */
	uint16_t qsize;    /* queue size asked for (default the device's, ≤ 256) */
};

struct net_dev;
/* Optional RX hook: true when it consumed the frame (its buffers are reposted). */
typedef bool net_rx_hook(struct net_dev *n, unsigned q, uint8_t *frame, uint32_t len);

struct net_dev {
	struct virtio_dev *vd;
	struct net_open_opts opts;
	uint64_t feats;
	uint8_t mac[6];
	uint16_t status, mtu, max_pairs;
	unsigned pairs;
	bool mrg, csum, ctrl;
	struct net_rxq rx[NET_MAX_PAIRS];
	struct net_txq tx[NET_MAX_PAIRS];
	struct virtq cvq;
	uint16_t cvq_index;
	uint64_t pool_base;
	uint16_t pool_free[NET_TX_POOL];
	unsigned npool;
	/* the stack */
	uint32_t ip, peer_ip; /* network order, as in a packet */
	uint16_t port;        /* UDP echo port, network order */
	uint8_t peer_mac[6];
	bool peer_known;
	bool quit;            /* a UDP "ringvm-net-quit" datagram arrived on the echo port */
	bool echo;            /* answer ARP/ICMP/UDP (the serve loop); false: ARP only */
	net_rx_hook *hook;
	struct net_stats st;
	uint32_t timer_ticks; /* LAPIC timer state of net_sleep() */
	bool timer_armed;
};

/* Reads net.ip, net.peer and net.port (defaults 10.0.2.15, 10.0.2.2, 7). NULL or a reason. */
const char *net_config(struct net_dev *n);
/* Parses a dotted quad into network order; false when malformed. */
bool net_parse_ip(const char *s, uint32_t *ip);

/*
 * Opens the first virtio-net function: negotiates VERSION_1 plus MAC, STATUS,
 * MTU, MRG_RXBUF, CTRL_VQ, EVENT_IDX, MQ (with pairs > 1) and CSUM/GUEST_CSUM
 * (with opts.csum) as offered, reads the config, sets up the queues, posts
 * every RX buffer, sets DRIVER_OK and (MQ) the number of pairs through the
 * control queue. NULL with *why set on failure.
 */
struct net_dev *net_open(const struct net_open_opts *o, const char **why);
/* Reset and the same bring-up again (after NEEDS_RESET); counters are kept. NULL or a reason. */
const char *net_restart(struct net_dev *n);
void net_close(struct net_dev *n);
/* `PROBE <test> mac=.. mtu=.. status=.. ...`: the device as negotiated. */
void net_print_dev(const char *test, const struct net_dev *n);

/* ---- TX ---- */
/* A free pool buffer (virtio-net header at its start, zeroed), or NULL; *idx names it. */
uint8_t *net_pool_get(struct net_dev *n, unsigned *idx);
void net_pool_put(struct net_dev *n, unsigned idx);
/*
 * Queues a chain of nb buffers on TX queue q (made visible at the next
 * net_flush()); pool + 1 when a pool buffer goes back on completion, else 0.
 * False when the queue has too few free descriptors.
 */
bool net_tx_chain(struct net_dev *n, unsigned q, const struct virtq_buf *b, unsigned nb,
                  unsigned pool_plus1);
/* Sends pool buffer idx: header + len frame bytes, on queue q. False when the queue is full. */
bool net_tx_pool(struct net_dev *n, unsigned q, unsigned idx, uint32_t len);
/* Forgets TX queue q's heads (all descriptors free): after a caller drove it directly. */
void net_tx_reinit(struct net_dev *n, unsigned q);
/* Publishes and kicks (when the device asks for it) every queue with new entries. */
void net_flush(struct net_dev *n);

/* ---- the loop ---- */
/* Receives and answers what arrived and reaps TX completions; returns entries handled. */
unsigned net_poll(struct net_dev *n);
/* Takes TX completions of queue q; returns how many. */
unsigned net_reap_tx(struct net_dev *n, unsigned q);
/*
 * Sleeps until an RX queue (and, with want_tx, a TX queue) has used entries,
 * or the TSC deadline (HLT, MSI-X, a LAPIC one-shot of ≤ 10 ms).
 */
void net_sleep(struct net_dev *n, uint64_t deadline, bool want_tx);
/* Stops the LAPIC timer net_sleep() left armed. */
void net_timer_stop(struct net_dev *n);
/* Polls until every TX head completed or timeout_us passed; true when all did. */
bool net_drain_tx(struct net_dev *n, uint64_t timeout_us);
/* ARP for the peer (up to 3 requests, timeout_us in all); true when its MAC is known. */
bool net_resolve_peer(struct net_dev *n, uint64_t timeout_us);

/* ---- frame building ---- */
/*
 * Writes Ethernet + IPv4 + UDP headers for a datagram of payload bytes from
 * our address:sport to the peer:dport at frame (after the virtio-net header);
 * UDP checksum 0. Returns the frame length (≥ 60: short frames are padded).
 */
uint32_t net_build_udp(struct net_dev *n, uint8_t *frame, uint16_t sport, uint16_t dport,
                       uint32_t payload);
/* One's complement sum helpers. */
uint16_t net_csum_fold(uint64_t sum);
uint16_t net_ip_csum(const uint8_t *ip, unsigned ihl_words);

static inline uint16_t net_bswap16(uint16_t v)
{
	return (uint16_t)(v << 8 | v >> 8);
}
static inline uint16_t net_ld16(const uint8_t *p)
{
	return *(const uint16_t __attribute__((may_alias, aligned(1))) *)p;
}
static inline uint32_t net_ld32(const uint8_t *p)
{
	return *(const uint32_t __attribute__((may_alias, aligned(1))) *)p;
}
static inline void net_st16(uint8_t *p, uint16_t v)
{
	*(uint16_t __attribute__((may_alias, aligned(1))) *)p = v;
}
static inline void net_st32(uint8_t *p, uint32_t v)
{
	*(uint32_t __attribute__((may_alias, aligned(1))) *)p = v;
}
/* Network-order 16-bit field as a host number. */
static inline uint16_t net_be16(const uint8_t *p)
{
	return net_bswap16(net_ld16(p));
}
static inline bool net_has(const struct net_dev *n, unsigned f)
{
	return n->feats & VIRTIO_BIT(f);
}

/* Prints v/100 as N.NN after " key=". */
void net_print_fixed2(const char *key, uint64_t hundredths);

#endif
