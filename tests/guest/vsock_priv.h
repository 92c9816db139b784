/*
 * Shared between the probe's vsock driver (vsock.c) and its connection
 * engine (vsock_conn.c); nothing else includes it.
 */
#ifndef PROBE_VSOCK_PRIV_H
#define PROBE_VSOCK_PRIV_H

#include "vsock.h"

#define NO_CONN VS_MAX_CONNS /* a TX record that belongs to no connection */

static inline uint8_t *slot_ptr(const struct vs_dev *v, unsigned s)
{
	return (uint8_t *)(v->rx_base + (uint64_t)s * v->rxbuf);
}
static inline unsigned conn_idx(const struct vs_dev *v, const struct vs_conn *c)
{
	return (unsigned)(c - v->conns);
}

/* ---- vsock.c ---- */
/* Gives RX slot s back to the device (visible at the next vs_flush()). */
void vs_repost(struct vs_dev *v, uint16_t s);
/*
 * One packet of c: header (op, flags, our credit) and len bytes at data;
 * rec_slot is reposted and credit accounted when it completes. False when
 * every TX slot is busy.
 */
bool vs_tx_conn(struct vs_dev *v, struct vs_conn *c, uint16_t op, uint32_t flags, uint64_t data,
                uint32_t len, uint16_t rec_slot, uint32_t credit);
/* A RST from local to the host's port peer, kept in a backlog while TX is full. */
void vs_send_rst(struct vs_dev *v, uint32_t local, uint32_t peer);

/* ---- vsock_conn.c ---- */
/* A packet from the device in RX slot s (header h, copied); *keep: the slot is held. */
void vs_conn_rx(struct vs_dev *v, uint16_t s, const struct vs_hdr *h, bool *keep);
/* TRANSPORT_RESET: every connection ends. */
void vs_conn_reset_all(struct vs_dev *v);
/* Sends what c may send now. */
void vs_conn_pump(struct vs_dev *v, struct vs_conn *c);
/* A TX packet of c completed. */
void vs_conn_tx_done(struct vs_dev *v, struct vs_conn *c, const struct vs_tx_rec *r);

#endif
