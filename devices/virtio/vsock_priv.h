/*
 * virtio-vsock device state shared by vsock.c (queues, packets to and from
 * the guest, activate/reset, registry entry), vsock_conn.c (connections:
 * table, per-connection coroutine, host sockets) and vsock_host.c (the main
 * process's part: the listening socket and connects to PATH_<port>).
 * Private to those files.
 */
#ifndef RINGVM_DEVICES_VIRTIO_VSOCK_PRIV_H
#define RINGVM_DEVICES_VIRTIO_VSOCK_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio/registry.h"
#include "devices/virtio/vsock.h"

#define VSOCK_HASH      1024 /* buckets of the connection table (power of two) */
#define VSOCK_RST_RING  512  /* RSTs waiting for an RX buffer; more are dropped, counted */
#define VSOCK_RX_BATCH  32   /* packets to the guest between interrupts */
#define VSOCK_WAKE_RING 2048 /* descriptors whose poll the waker must cancel */
#define VSOCK_SLOW_WAKE_NS (10ull * 1000000)
#define VSOCK_LINE_NS   (5ull * 1000000000)  /* a client has this long for its CONNECT line */
#define VSOCK_REPLY_NS  (2ull * 1000000000)  /* the guest has this long to answer a REQUEST */
/* Tell the guest about forwarded bytes once this many are unreported. */
#define VSOCK_CREDIT_THRESHOLD (VSOCK_TX_BUF / 4)

/* Packets a connection owes the guest (vsock_conn.pend). */
enum {
	VSOCK_P_REQUEST = 1u << 0,
	VSOCK_P_RESPONSE = 1u << 1,
	VSOCK_P_SHUTDOWN = 1u << 2, /* with shut_send flags */
	VSOCK_P_CREDIT = 1u << 3,
};

enum vsock_conn_state {
	VSOCK_C_LINE,       /* host client: reading its CONNECT line */
	VSOCK_C_REQ_SENT,   /* host client: REQUEST owed/sent, waiting for RESPONSE */
	VSOCK_C_CONNECTING, /* guest REQUEST: the main process connects PATH_<port> */
	VSOCK_C_OPEN,
};

struct vsock;

struct vsock_conn {
	struct vsock *vs;
	struct vsock_conn *hnext; /* hash chain */
	struct vsock_conn *rnext; /* RX work FIFO */
	struct vsock_conn *anext, *aprev; /* every live connection */
	bool hashed, in_rxq;
	int fd;
	enum vsock_conn_state st;
	uint32_t local_port, peer_port; /* host side, guest side */
	unsigned pend;       /* VSOCK_P_* */
	uint32_t shut_send;  /* flags of the SHUTDOWN owed */
	bool rx_ready;       /* the socket was readable: the RX task reads it */
	bool host_eof;       /* read gave EOF */
	bool wr_shut;        /* shutdown(SHUT_WR) done */
	uint32_t peer_shut;  /* SHUTDOWN flags the guest sent */
	bool closing;        /* leaving: the coroutine frees it */
	bool linger;         /* the guest shut both ways: close once the buffer is flushed */
	/* Host → guest credit: what the guest told us, what we sent. */
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
	/* Guest → host credit we give: received, forwarded, last reported. */
	uint32_t rx_cnt, fwd_cnt, fwd_sent;
	uint8_t *buf; /* VSOCK_TX_BUF ring toward the host socket, while needed */
	uint32_t buf_head, buf_len;
	/* Stream bytes that followed the CONNECT line. */
	uint8_t pre_off, pre_len;
	char pre[VSOCK_LINE_MAX];
	struct vsock_line line;
	uint64_t deadline;
	/* The coroutine and how to wake it. */
	struct exec_task *task;
	struct exec_waitq wake; /* parked here when it wants nothing from the socket */
	bool polling, parked;
	bool wake_queued; /* its fd is in the waker's ring */
};

struct vsock_stats {
	uint64_t rx_pkts, rx_bytes, tx_pkts, tx_bytes;
	uint64_t conns_host, conns_guest, refused, lines_bad, timeouts;
	uint64_t rst_sent, rst_dropped, bad_chains, credit_violations, unknown_conn;
	uint64_t wakes, wakes_dropped;
	uint64_t drops[VSOCK_PKT_NVERDICTS];
};

struct vsock {
	struct virtio_dev vdev; /* first: what the transport sees */
	struct vsock_opts opts;
	struct vsock_config cfg; /* little-endian */
	int listen_fd;
	/* Main process only: the socket file we created (to remove it on exit). */
	uint64_t sock_dev, sock_ino;
	bool own_path;
	/* Device process, from activate to reset. */
	bool active;
	struct vsock_conn *hash[VSOCK_HASH];
	struct vsock_conn *all;
	unsigned nconns;     /* live (coroutine not yet finished) */
	uint32_t next_port;  /* next ephemeral host port */
	struct vsock_conn *rxq_head, *rxq_tail;
	struct { uint32_t local, peer; } rst[VSOCK_RST_RING];
	unsigned rst_first, rst_len;
	struct exec_task *rx_task, *accept_task, *waker_task;
	int wake_fds[VSOCK_WAKE_RING];
	unsigned wake_first, wake_len;
	struct exec_waitq waker_q;
	bool waker_parked;
	/* The kernel cannot cancel by descriptor (before 5.19): polls wake up
	 * every VSOCK_SLOW_WAKE_NS to look at their state instead. */
	bool slow_wake;
	struct exec_waitq rx_work, rx_kick, drained;
	bool rx_parked;
	struct virtq_chain rx_chain, tx_chain;
	struct iovec iov[VIRTQ_MAX_SIZE + 2];
	struct vsock_stats st;
};

/* vsock_conn.c */
struct vsock_conn *vsock_conn_find(struct vsock *vs, uint32_t local, uint32_t peer);
/* A new connection on fd (host client, st LINE) or for a guest REQUEST (fd -1,
 * st CONNECTING); its coroutine started. NULL (fd closed) when full or out of memory. */
struct vsock_conn *vsock_conn_new(struct vsock *vs, int fd, enum vsock_conn_state st,
                                  uint32_t local, uint32_t peer);
/* Close: leaves the table at once (a RST to the guest first if rst); the coroutine frees it. */
void vsock_conn_close(struct vsock_conn *c, bool rst);
/* Something c may want changed (credit, buffer, state): re-evaluate what it waits for. */
void vsock_conn_wake(struct vsock_conn *c);
/* Guest → host payload of an RW packet (iov over guest RAM, len bytes). 0 or -errno (close + RST). */
int vsock_conn_send(struct vsock_conn *c, const struct iovec *iov, unsigned cnt, uint32_t len);
/* The guest shut down (flags): act on it. */
void vsock_conn_shutdown(struct vsock_conn *c, uint32_t flags);
/* The guest accepted a host client's connection: tell the client "OK <port>". */
void vsock_conn_established(struct vsock_conn *c);
/* Forwarded bytes not yet reported: queue a CREDIT_UPDATE when enough. */
void vsock_conn_credit(struct vsock_conn *c);
int vsock_accept_start(struct vsock *vs);
/* Stop accepting, close every connection and wait until all are gone. */
void vsock_conns_stop(struct vsock *vs);

/* vsock.c */
/* Queue c for the RX task (it owes the guest packets or has data). */
void vsock_rxq_add(struct vsock_conn *c);
void vsock_rxq_del(struct vsock_conn *c);
/* Queue a RST to the guest for (local, peer). */
void vsock_rst(struct vsock *vs, uint32_t local, uint32_t peer);
/* Whether c has data for the guest and the credit to send it. */
bool vsock_conn_rx_wanted(const struct vsock_conn *c);

/* vsock_host.c (main process) */
extern const struct registry_entry vsock_entry;

#endif
