/*
 * virtio-net (virtio 1.2 §5.1): the wire format, the `--net` option parser,
 * the TX header checker and the control-queue command parser, shared by the
 * device (net.c, net_io.c) and its tests. Everything here is pure: no I/O,
 * no executor, so every malformed frame, command and option is checked from
 * a table.
 */
#ifndef RINGVM_DEVICES_VIRTIO_NET_H
#define RINGVM_DEVICES_VIRTIO_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/virtio/virtq.h"
#include "net/net.h"

/* Feature bits (§5.1.3). */
#define VIRTIO_NET_F_CSUM       0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MTU        3
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN  9
#define VIRTIO_NET_F_GUEST_UFO  10
#define VIRTIO_NET_F_HOST_TSO4  11
#define VIRTIO_NET_F_HOST_TSO6  12
#define VIRTIO_NET_F_HOST_ECN   13
#define VIRTIO_NET_F_HOST_UFO   14
#define VIRTIO_NET_F_MRG_RXBUF  15
#define VIRTIO_NET_F_STATUS     16
#define VIRTIO_NET_F_CTRL_VQ    17
#define VIRTIO_NET_F_CTRL_RX    18
#define VIRTIO_NET_F_MQ         22

/* Header flags and GSO types (§5.1.6). */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE     0
#define VIRTIO_NET_HDR_GSO_TCPV4    1
#define VIRTIO_NET_HDR_GSO_UDP      3
#define VIRTIO_NET_HDR_GSO_TCPV6    4
#define VIRTIO_NET_HDR_GSO_ECN      0x80

#define VIRTIO_NET_S_LINK_UP 1

/* Control queue (§5.1.6.5). */
#define VIRTIO_NET_OK  0
#define VIRTIO_NET_ERR 1
#define VIRTIO_NET_CTRL_RX               0
#define VIRTIO_NET_CTRL_RX_PROMISC       0
#define VIRTIO_NET_CTRL_RX_ALLMULTI      1
#define VIRTIO_NET_CTRL_MAC              1
#define VIRTIO_NET_CTRL_MAC_TABLE_SET    0
#define VIRTIO_NET_CTRL_MQ               4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET  0

#define NET_HDR_LEN       NET_VNET_HDR_LEN /* 12: VERSION_1 always has num_buffers */
#define NET_ETH_HLEN      14
#define NET_VLAN_HLEN     4
#define NET_MAX_FRAME     (65535 + NET_ETH_HLEN + NET_VLAN_HLEN) /* a GSO frame at most */
#define NET_DEFAULT_MTU   1500
#define NET_MIN_MTU       68
#define NET_MAX_MTU       65535
#define NET_QUEUE_SIZE    256
#define NET_MAX_PAIRS     NET_MAX_QUEUES /* one backend descriptor per pair */
#define NET_CTRL_MAX      4096 /* readable bytes of one control command at most */
#define NET_MAC_TABLE_MAX 64   /* entries per MAC filter table at most */

/* The header in front of every frame (little-endian on the wire). */
struct virtio_net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_net_hdr) == NET_HDR_LEN, "virtio_net_hdr layout");

/* Device configuration (§5.1.4) up to mtu, little-endian. */
struct virtio_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_net_config) == 12, "virtio_net_config layout");

/* What `--net` asked for (net_parse_opts). */
struct net_opts {
	char tap[16];  /* interface name, or "" with tap_fd */
	int tap_fd;    /* -1 unless tap-fd= */
	bool mac_set;
	uint8_t mac[6];
	unsigned queues; /* queue pairs, 1..NET_MAX_PAIRS (default 1) */
	unsigned mtu;    /* 0: the interface's; else NET_MIN_MTU..NET_MAX_MTU */
};

/*
 * Parse `tap=NAME|tap-fd=FD[,mac=XX:XX:XX:XX:XX:XX][,queues=N][,mtu=N]`.
 * 0, or -EINVAL with one line in err.
 */
int net_parse_opts(const char *opts, struct net_opts *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* What the TX checker needs from the negotiated features. */
struct net_tx_limits {
	bool csum;        /* VIRTIO_NET_F_CSUM */
	bool tso4, tso6;  /* HOST_TSO4/6 */
	bool ecn;         /* HOST_ECN */
	bool ufo;         /* HOST_UFO */
	uint32_t max_frame; /* bytes after the header */
};

/* Why a TX frame was refused (NET_TX_OK: send it). */
enum net_tx_verdict {
	NET_TX_OK = 0,
	NET_TX_SHORT,      /* shorter than header + Ethernet header */
	NET_TX_LONG,       /* frame above max_frame */
	NET_TX_FLAGS,      /* unknown flags, or NEEDS_CSUM without CSUM */
	NET_TX_GSO_TYPE,   /* unknown GSO type, or one not negotiated */
	NET_TX_GSO_FIELDS, /* gso_size 0, hdr_len past the frame, GSO without NEEDS_CSUM */
	NET_TX_CSUM_RANGE, /* csum_start + csum_offset + 2 past the frame */
};

/*
 * Check a TX header (already copied out of guest RAM, host byte order)
 * against a frame of frame_len bytes (what follows the header) and the
 * negotiated limits. Only a header that passes goes to the backend, and it
 * is that copy which is written, with num_buffers cleared.
 */
enum net_tx_verdict net_tx_check(const struct virtio_net_hdr *h, uint32_t frame_len,
                                 const struct net_tx_limits *l);

/* Host-order copy of a little-endian header. */
void net_hdr_from_le(struct virtio_net_hdr *h);
void net_hdr_to_le(struct virtio_net_hdr *h);

/* A parsed control command (net_ctrl_parse). */
struct net_ctrl_cmd {
	uint8_t cls, cmd;
	uint8_t ack;    /* VIRTIO_NET_OK: apply it; VIRTIO_NET_ERR: refuse */
	bool on;        /* RX_PROMISC / RX_ALLMULTI */
	uint16_t pairs; /* MQ_VQ_PAIRS_SET */
};

/* Which command classes the features allow (net_ctrl_parse). */
struct net_ctrl_caps {
	bool rx;  /* CTRL_RX */
	bool mq;  /* MQ */
	uint16_t max_pairs;
};

/*
 * Parse the readable bytes of a control command (class, command, data;
 * copied out of guest RAM by the caller, at most NET_CTRL_MAX) against what
 * was negotiated: RX PROMISC/ALLMULTI (one byte), MAC TABLE_SET (two
 * tables whose sizes must add up exactly, each ≤ NET_MAC_TABLE_MAX), MQ
 * VQ_PAIRS_SET (1..max_pairs). Anything else, short or trailing data:
 * ack = VIRTIO_NET_ERR.
 */
void net_ctrl_parse(const uint8_t *buf, size_t len, const struct net_ctrl_caps *caps,
                    struct net_ctrl_cmd *c);

#endif
