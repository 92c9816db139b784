/*
 * virtio-vsock (virtio 1.2 §5.10) bridged to Unix sockets the way
 * Firecracker's hybrid vsock is: the wire format, the `--vsock` option
 * parser, the host client's `CONNECT <port>\n` line assembler, the packet
 * checker and the credit arithmetic. Everything here is pure (no I/O, no
 * executor) so every hostile packet and every bad line is checked from a
 * table; the device itself is vsock.c and vsock_conn.c.
 */
#ifndef RINGVM_DEVICES_VIRTIO_VSOCK_H
#define RINGVM_DEVICES_VIRTIO_VSOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VSOCK_HOST_CID  2u
#define VSOCK_MIN_CID   3u
#define VSOCK_MAX_CID   0xfffffffeu /* u32 CIDs: -1 is VMADDR_CID_ANY */
#define VSOCK_TYPE_STREAM 1

enum vsock_op {
	VSOCK_OP_INVALID = 0,
	VSOCK_OP_REQUEST,
	VSOCK_OP_RESPONSE,
	VSOCK_OP_RST,
	VSOCK_OP_SHUTDOWN,
	VSOCK_OP_RW,
	VSOCK_OP_CREDIT_UPDATE,
	VSOCK_OP_CREDIT_REQUEST,
};

#define VSOCK_SHUTDOWN_RCV  1u /* the sender will receive no more */
#define VSOCK_SHUTDOWN_SEND 2u /* the sender will send no more */
#define VSOCK_SHUTDOWN_BOTH 3u

#define VSOCK_QUEUE_RX    0
#define VSOCK_QUEUE_TX    1
#define VSOCK_QUEUE_EVENT 2
#define VSOCK_QUEUE_SIZE  256

#define VSOCK_EVENT_TRANSPORT_RESET 0

/*
 * Limits: live connections (Firecracker's number); bytes buffered toward one
 * host socket, which is also the credit (buf_alloc) the guest gets; payload
 * per packet. The buffer is Linux's default vsock buffer (256 KiB), not
 * Firecracker's 64 KiB: guest → host throughput is bounded by credit per
 * round trip, and on loaded hosts 64 KiB gave 0.00–0.21× of a host socket
 * pair where 256 KiB gave 0.13–0.67× in the same runs (bench/vsock.sh).
 * A connection allocates it the first time its host peer does not keep up
 * and keeps it until it closes: at most 1023 × 256 KiB if every host peer
 * stops reading. A build-time knob (-DVSOCK_TX_BUF=) for benchmarks.
 */
#define VSOCK_MAX_CONNS     1023
#ifndef VSOCK_TX_BUF
#define VSOCK_TX_BUF        (256u * 1024)
#endif
#define VSOCK_MAX_PKT       (64u * 1024)
#define VSOCK_LINE_MAX      32 /* "CONNECT <port>\n", newline included */
#define VSOCK_EPHEMERAL_BASE (1u << 30)

/* The header in front of every packet (little-endian in guest RAM). */
struct vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct vsock_hdr) == 44, "vsock_hdr layout");

struct vsock_config {
	uint64_t guest_cid; /* le64 */
} __attribute__((packed));

/* Host-order copy of a little-endian header and back. */
void vsock_hdr_from_le(struct vsock_hdr *h);
void vsock_hdr_to_le(struct vsock_hdr *h);

/* What `--vsock` asked for. */
struct vsock_opts {
	uint32_t cid;
	char uds[108]; /* sun_path; room is left for "_<port>" (11 bytes) */
};

/*
 * Parse `cid=N,uds=PATH` (both required, once each; CID 3..0xfffffffe;
 * PATH non-empty and short enough that PATH_4294967295 fits a sun_path).
 * 0, or -EINVAL with one line in err.
 */
int vsock_parse_opts(const char *opts, struct vsock_opts *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * The host client's first line, assembled from pieces as they arrive.
 * vsock_line_feed takes the next bytes read from the client and returns:
 *   n > 0  the line ended after n bytes of buf (the rest is stream data);
 *          *port is the requested guest port
 *   0      all of buf was taken, the line goes on
 *   -EINVAL  malformed (not "CONNECT <decimal port>", keyword case-
 *            insensitive, one or more spaces, port ≤ 0xffffffff)
 *   -EMSGSIZE  longer than VSOCK_LINE_MAX bytes without a newline
 * After a negative return the line is dead (close that client).
 */
struct vsock_line {
	uint8_t len;
	char buf[VSOCK_LINE_MAX];
};
int vsock_line_feed(struct vsock_line *l, const char *buf, size_t n, uint32_t *port);

/* Why a packet from the guest was refused (VSOCK_PKT_OK: handle it). */
enum vsock_verdict {
	VSOCK_PKT_OK = 0,
	VSOCK_PKT_SHORT,    /* fewer readable bytes than a header */
	VSOCK_PKT_LEN,      /* len above VSOCK_MAX_PKT or above what the chain carries */
	VSOCK_PKT_SRC_CID,  /* not the guest's own CID: dropped */
	VSOCK_PKT_DST_CID,  /* not the host: the guest gets RST */
	VSOCK_PKT_TYPE,     /* not a stream */
	VSOCK_PKT_OP,       /* unknown op, or data on a control op */
	VSOCK_PKT_NVERDICTS,
};

/*
 * Check a header (host order, already copied out of guest RAM) against the
 * readable bytes of its chain after the header and the guest's CID.
 */
enum vsock_verdict vsock_check(const struct vsock_hdr *h, uint32_t payload_room, uint32_t guest_cid);

/* Whether the guest should get a RST for a packet refused with v (never for a RST). */
bool vsock_verdict_rst(enum vsock_verdict v, const struct vsock_hdr *h);

/*
 * Bytes the peer can still take: buf_alloc − (sent − fwd_cnt), all u32
 * wrapping counters. A peer claiming it forwarded more than was sent
 * (a lying fwd_cnt) or an in-flight count above its buffer gets 0.
 */
uint32_t vsock_peer_credit(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t sent);

/*
 * Whether a packet of len bytes from the guest fits the credit we gave:
 * bytes received − bytes forwarded + len ≤ buf_alloc.
 */
bool vsock_fits_credit(uint32_t buf_alloc, uint32_t rx_cnt, uint32_t fwd_cnt, uint32_t len);

#endif
