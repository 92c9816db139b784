/*
 * virtio-net device state shared by net.c (configuration, control queue,
 * activate/reset, registry entry) and net_io.c (the TX and RX hot paths).
 * Private to those two files.
 */
#ifndef RINGVM_DEVICES_VIRTIO_NET_PRIV_H
#define RINGVM_DEVICES_VIRTIO_NET_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "async/exec.h"
#include "devices/virtio/net.h"
#include "devices/virtio/registry.h"

/* RX: chains held per pair (with MRG_RXBUF enough for a 64 KiB frame in
 * 1.5 KiB buffers), reads per pass (one frame each), iovecs per pass,
 * frames per batch before signalling. */
#define NET_RX_HOLD  64
#define NET_RX_SLOTS 32
#define NET_RX_IOV   1024
#define NET_RX_BATCH 64
/* TX: frames per submission (and per signal: lets a flooding guest refill),
 * and the iovecs they share (headers included). */
#define NET_TX_BATCH 64
#define NET_TX_IOV   1024

struct net;

/* Counters, per direction (IPC_METRICS carries a summary, see net_metrics). */
struct net_stats {
	uint64_t tx_packets, tx_bytes, tx_drops, tx_errors, tx_irqs;
	uint64_t rx_packets, rx_bytes, rx_drops, rx_irqs, rx_bad_chains;
	uint64_t ctrl_cmds, ctrl_errs;
	uint64_t tx_drop_reason[8]; /* by enum net_tx_verdict */
};

/* One RX read of a pass: consecutive held chains (from position first) that
 * can take one frame, as iovecs [iov_at, iov_at + iov_cnt) ending in the spare byte. */
struct net_rx_slot {
	unsigned first, nchains, iov_at, iov_cnt;
	uint32_t cap; /* bytes the chains' iovecs cover */
};

/* The receive side of one queue pair: its coroutine and the chains it holds. */
struct net_rx {
	struct net *n;
	unsigned pair;
	struct exec_task *task;
	struct exec_sem kick;    /* posted on RX queue kicks and pair changes */
	bool active;             /* pair < the pairs in use (MQ) */
	struct virtq_chain *chains; /* NET_RX_HOLD chains' storage */
	/* Held chains in the order popped (indices into chains), and the free
	 * storage (a stack of NET_RX_HOLD - nheld indices): frames take chains
	 * from anywhere in the hold, and a 4 KiB chain is never moved. */
	uint8_t order[NET_RX_HOLD], free_idx[NET_RX_HOLD];
	unsigned nheld;
	unsigned want; /* reads per pass: follows the TAP's backlog */
	struct iovec iov[NET_RX_IOV + NET_RX_SLOTS]; /* + a spare byte per read */
	uint8_t spare;
	uint32_t cover[NET_RX_HOLD]; /* bytes of each held chain (by position) a read covers */
	bool taken[NET_RX_HOLD];     /* by position: handed to the guest in this pass */
	struct net_rx_slot slot[NET_RX_SLOTS];
	struct exec_batch_op op[NET_RX_SLOTS];
};

/* The transmit side of one queue pair: the frames of one submission. */
struct net_tx {
	uint16_t head[NET_TX_BATCH];
	uint32_t len[NET_TX_BATCH];
	uint16_t iov_at[NET_TX_BATCH], iov_cnt[NET_TX_BATCH];
	struct virtio_net_hdr hdr[NET_TX_BATCH]; /* checked copies, sent instead of the guest's */
	struct exec_batch_op op[NET_TX_BATCH];
	struct iovec iov[NET_TX_IOV];
};

struct net {
	struct virtio_dev vdev;       /* first: what the transport sees */
	struct virtio_device_ops ops; /* net_ops with this device's queues and features */
	struct net_opts opts;
	struct net_backend be;
	struct virtio_net_config cfg; /* little-endian, as the driver reads it */
	unsigned npairs;              /* configured queue pairs */
	/* From the negotiated features (activate). */
	unsigned curr_pairs;
	uint16_t ctrl_index; /* the control queue: 2·max pairs with MQ, else 2 */
	bool mrg, guest_csum;
	bool ring_io; /* frames through the ring (the backend's ring_io, until refused) */
	uint32_t rx_want; /* bytes (header included) one frame may need */
	struct net_tx_limits txl;
	bool promisc, allmulti;
	struct net_rx rx[NET_MAX_PAIRS];
	struct virtq_chain tx_chain[NET_MAX_PAIRS];
	struct net_tx tx[NET_MAX_PAIRS];
	struct virtq_chain ctrl_chain;
	struct net_stats st;
};

/*
 * The device on a backend the caller already opened (fuzzers and tests
 * bring their own ops): o->queues pairs, be taken over (closed by
 * net_entry.destroy). NULL when out of memory.
 */
struct net *net_create_on(const struct net_opts *o, const struct net_backend *be);

/* TX queue kick: send every available frame (net_io.c). */
int net_tx_kick(struct net *n, struct virtio_queue *q, unsigned pair);

/* RX: start / stop the coroutine of a pair (net_io.c). 0 or -errno. */
int net_rx_start(struct net *n, unsigned pair);
void net_rx_stop(struct net *n, unsigned pair);

/* Signal q and add the interrupts it raised to *irqs. */
void net_signal(struct net *n, struct virtio_queue *q, uint64_t *irqs);

#endif
