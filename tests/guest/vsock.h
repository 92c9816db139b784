/*
 * The probe's virtio-vsock driver (device id 19; queues in vsock.c, the
 * connection engine in vsock_conn.c): stream connections to the host (CID 2)
 * with credit-based flow control, driven by a polled event loop.
 * A connection is one of three kinds of consumer: ECHO (every byte received
 * goes back out of the same RX buffer, no copy), CHECK (sends a pattern and
 * compares what comes back with it) and SINK (counts and drops).
 *
 * Queues: rx 0, tx 1, event 2, each on its own MSI-X vector. RX slot s is
 * descriptor s, one device-writable buffer of VS_HDR_LEN + payload, fixed for
 * the whole run. A TX packet is always two descriptors, 2i (header, from this
 * layer's header pool) and 2i + 1 (payload: an RX slot being echoed, or the
 * pattern), so a header never has to sit in front of its payload.
 */
#ifndef PROBE_VSOCK_H
#define PROBE_VSOCK_H

#include "virtio.h"

#define VIRTIO_ID_VSOCK 19
#define VS_HOST_CID     2

/* Packet ops, type, shutdown flags and the one event the spec defines. */
#define VS_OP_REQUEST        1
#define VS_OP_RESPONSE       2
#define VS_OP_RST            3
#define VS_OP_SHUTDOWN       4
#define VS_OP_RW             5
#define VS_OP_CREDIT_UPDATE  6
#define VS_OP_CREDIT_REQUEST 7
#define VS_TYPE_STREAM       1
#define VS_SHUT_RCV          1
#define VS_SHUT_SEND         2
#define VS_EVENT_RESET       0

/* struct virtio_vsock_hdr: 44 bytes, little endian, packed. */
struct vs_hdr {
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
#define VS_HDR_LEN 44
_Static_assert(sizeof(struct vs_hdr) == VS_HDR_LEN, "virtio_vsock_hdr layout");

#define VS_MAX_CONNS  256
#define VS_MAX_RX     128    /* RX slots (capped by the queue size) */
#define VS_RXBUF_DEF  65536  /* RX slot bytes, header included */
#define VS_BUF_ALLOC  262144 /* what each connection tells the host it may buffer */
#define VS_PLEN       65521  /* pattern period (prime: streams never line up) */
#define VS_EVQ_BUFS   8
#define VS_NO_SLOT    0xffff
#define VS_RST_BACKLOG 256

enum vs_kind { VS_ECHO = 1, VS_CHECK, VS_SINK };
enum vs_state { VS_FREE = 0, VS_CONNECTING, VS_OPEN, VS_CLOSING, VS_DONE };

/* How a connection ended (vs_conn.end). */
enum vs_end {
	VS_END_NONE = 0,
	VS_END_OK,      /* CHECK: everything came back and matched; ECHO/SINK: orderly close */
	VS_END_REFUSED, /* RST in answer to our REQUEST */
	VS_END_RESET,   /* RST after the connection was open, before it was done */
	VS_END_BAD,     /* CHECK: a byte came back wrong or too many came */
	VS_END_TIMEOUT,
	VS_END_TRANSPORT, /* the device's TRANSPORT_RESET event */
};

struct vs_conn {
	uint8_t state, kind, end;
	bool in_bucket;
	bool want_tx;     /* on the pump list */
	bool got_rst;     /* the peer sent RST */
	uint8_t shut_tx;  /* SHUTDOWN flags we sent */
	uint8_t shut_want; /* SHUTDOWN flags we mean to send (retried when TX was full) */
	bool half;        /* CHECK: SHUTDOWN(SEND) once everything is sent */
	uint8_t peer_shut; /* SHUTDOWN flags the peer sent */
	uint16_t next;    /* hash chain */
	uint32_t local_port, peer_port;
	/* credit: ours (rx side) and the peer's */
	uint32_t rx_cnt, fwd_cnt, fwd_sent;
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
	uint32_t over_credit; /* bytes the peer sent beyond our credit */
	uint32_t credit_updates; /* CREDIT_UPDATEs we sent */
	/* ECHO: RX slots waiting to go back, a FIFO linked through vs_dev.slot_next */
	uint16_t pend_head, pend_tail;
	uint32_t pend_off; /* bytes of the head slot already sent back */
	/* CHECK/SINK */
	uint64_t to_send, sent;   /* pattern bytes */
	uint64_t received;        /* bytes that came in */
	uint64_t mismatch_at;     /* first stream offset that differed, + 1 */
	uint32_t pat_start;       /* this stream's phase in the pattern */
	uint64_t tx_done;         /* pattern bytes whose TX completed */
	uint16_t tx_inflight;     /* TX packets of this connection in flight */
	uint64_t t_open, t_first, t_last, t_close; /* TSC */
};

struct vs_stats {
	uint64_t rx_pkts, tx_pkts, rx_bytes, tx_bytes;
	uint64_t rst_rx, rst_tx, credit_req_rx, credit_upd_rx, credit_upd_tx;
	uint64_t events, transport_resets;
	uint64_t bad_pkt;      /* used entries or headers that made no sense */
	uint64_t stray;        /* packets for no connection (answered with RST) */
	uint64_t over_credit;  /* bytes received beyond our credit */
	uint64_t refused_in;   /* REQUESTs refused (no listener, table full) */
	uint64_t tx_full;      /* times a send waited for a TX slot */
	uint64_t kicks;
	uint64_t rst_dropped; /* RSTs lost: TX full and the backlog too */
};

struct vs_tx_rec {
	uint16_t conn;   /* VS_MAX_CONNS: none */
	uint16_t slot;   /* RX slot to repost on completion, VS_NO_SLOT: none */
	uint32_t credit; /* bytes to add to conn's fwd_cnt on completion */
};

struct vs_dev {
	struct virtio_dev *vd;
	uint64_t feats, cid;
	struct virtq rxq, txq, evq;
	uint64_t rx_base, pat, hdr_pool, ev_base, raw_buf;
	uint32_t rxbuf;
	uint16_t nrx, posted, ntx;
	bool rx_dirty, tx_dirty;
	bool raw_inflight; /* the raw chain (descriptors from 2 * ntx on) is with the device */
	uint16_t tx_free[VIRTQ_MAX / 2];
	uint16_t ntx_free;
	struct vs_tx_rec tx_rec[VIRTQ_MAX / 2];
	uint16_t slot_next[VS_MAX_RX];
	struct vs_conn conns[VS_MAX_CONNS];
	uint16_t bucket[256];
	uint16_t pump[VS_MAX_CONNS];
	uint16_t npump;
	uint32_t rst_local[VS_RST_BACKLOG], rst_peer[VS_RST_BACKLOG]; /* RSTs waiting for TX */
	uint16_t nrst;
	uint16_t done[VS_MAX_CONNS]; /* ended connections waiting for vs_reap() */
	uint16_t ndone;
	uint32_t listen_port; /* 0: refuse every REQUEST */
	uint16_t nactive, max_active;
	uint32_t next_port;
	uint64_t accepted, closed_in; /* host-initiated connections accepted / finished */
	uint64_t closed_out;          /* guest-initiated connections finished */
	uint32_t ends_in[8], ends_out[8]; /* connections by how they ended (enum vs_end) */
	uint32_t rst_out;                 /* guest-initiated connections that got a RST */
	uint64_t last_sweep;
	struct vs_stats st;
	uint32_t timer_ticks;
	bool timer_armed;
	/* hostile.vsock: a hook sees every RX packet first; true: it consumed it */
	bool (*hook)(struct vs_dev *v, const struct vs_hdr *h, const uint8_t *data);
};

/*
 * Opens the first virtio-vsock function: VERSION_1 (+ EVENT_IDX when offered
 * and event_idx), reads guest_cid, sets up the three queues, posts every RX
 * and event buffer (rxbuf bytes per RX slot, 4 KiB..64 KiB), fills the
 * pattern, DRIVER_OK. NULL with *why set on failure.
 */
struct vs_dev *vs_open(uint32_t rxbuf, bool event_idx, const char **why);
void vs_close(struct vs_dev *v);
/* `PROBE <test> dev=.. cid=.. ...` */
void vs_print_dev(const char *test, const struct vs_dev *v);

/* Starts a guest-initiated connection to (CID 2, port) of kind; NULL when the table is full. */
struct vs_conn *vs_connect(struct vs_dev *v, uint32_t port, enum vs_kind kind, uint64_t bytes,
                           bool half);
/* Processes everything the device completed and pushes pending sends; returns work done. */
unsigned vs_poll(struct vs_dev *v);
/* Publishes and kicks queues with new entries. */
void vs_flush(struct vs_dev *v);
/* HLT until a queue has used entries or the TSC deadline (a LAPIC one-shot of ≤ 10 ms). */
void vs_sleep(struct vs_dev *v, uint64_t deadline);
void vs_timer_stop(struct vs_dev *v);
/* poll + flush until cond(v, arg) or the deadline; true when cond held. */
bool vs_run_until(struct vs_dev *v, uint64_t deadline, bool (*cond)(struct vs_dev *, void *),
                  void *arg);

/* Sends one header-only control packet (op, flags) for c. False when no TX slot is free. */
bool vs_send_ctl(struct vs_dev *v, struct vs_conn *c, uint16_t op, uint32_t flags);
/* Sends SHUTDOWN with flags (added to those already sent); both flags: c is closing. */
void vs_shutdown(struct vs_dev *v, struct vs_conn *c, uint32_t flags);
/* Ends c at once: RST (unless it never opened), counted as timed out. */
void vs_abort(struct vs_dev *v, struct vs_conn *c);
/* Frees every connection that ended (state VS_DONE). */
void vs_reap(struct vs_dev *v);
/* RSTs connections that sent their last SHUTDOWN more than 2 s ago and got no RST back. */
void vs_sweep(struct vs_dev *v);

/*
 * Raw TX for hostile.vsock: the chain b[0..nb) (nb ≤ VS_RAW_DESCS) as one
 * packet on the descriptors reserved for it, bypassing every check. False
 * while the previous raw chain is still with the device.
 */
#define VS_RAW_DESCS 8
bool vs_tx_raw(struct vs_dev *v, const struct virtq_buf *b, unsigned nb);
/* 4 KiB of scratch memory for raw packets (headers and payloads). */
static inline uint8_t *vs_raw_buf(struct vs_dev *v)
{
	return (uint8_t *)v->raw_buf;
}
/* TX slots in flight. */
static inline unsigned vs_tx_inflight(const struct vs_dev *v)
{
	return v->ntx - v->ntx_free;
}
/* The pattern byte at stream offset off of a stream with phase start. */
static inline const uint8_t *vs_pattern(const struct vs_dev *v, uint32_t start, uint64_t off)
{
	return (const uint8_t *)v->pat + (start + off) % VS_PLEN;
}

#endif
