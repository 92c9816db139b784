/*
 * virtio-vsock connections in the device process: the table (hashed by
 * host port and guest port), the accept coroutine on the listening socket,
 * and one coroutine per connection that reads a host client's CONNECT line,
 * asks the main process to connect a guest's REQUEST, and then waits on its
 * socket for what it needs right now (input when the guest has credit,
 * output when bytes are buffered) — or parks when it needs nothing. Input
 * is read by the RX coroutine (vsock.c) straight into guest buffers; output
 * goes straight from guest RAM and only the part the socket did not take is
 * buffered (at most the VSOCK_TX_BUF credit the guest was given).
 *
 * Changing what a polling coroutine waits for means cancelling its poll:
 * that is an awaited io_uring operation, so a separate waker coroutine does
 * it from a ring of descriptors, and callers never park (a connection must
 * not be freed under a caller that still uses it). A stale descriptor in
 * that ring only costs another connection one spurious wake-up.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "devices/virtio/vsock_priv.h"

#if defined(__SANITIZE_ADDRESS__)
#define CONN_STACK 0 /* the executor's (larger) default */
#else
#define CONN_STACK (32u * 1024)
#endif

static unsigned hash_of(uint32_t local, uint32_t peer)
{
	return (local * 0x9e3779b1u ^ peer * 0x85ebca6bu) & (VSOCK_HASH - 1);
}

struct vsock_conn *vsock_conn_find(struct vsock *vs, uint32_t local, uint32_t peer)
{
	for (struct vsock_conn *c = vs->hash[hash_of(local, peer)]; c; c = c->hnext)
		if (c->local_port == local && c->peer_port == peer)
			return c;
	return NULL;
}

static void hash_add(struct vsock_conn *c)
{
	unsigned h = hash_of(c->local_port, c->peer_port);
	c->hnext = c->vs->hash[h];
	c->vs->hash[h] = c;
	c->hashed = true;
}

static void hash_del(struct vsock_conn *c)
{
	if (!c->hashed)
		return;
	struct vsock_conn **pp = &c->vs->hash[hash_of(c->local_port, c->peer_port)];
	while (*pp && *pp != c)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = c->hnext;
	c->hashed = false;
}

/* ---- waking a connection's coroutine ---- */

static int waker_task(struct exec *ex, void *arg)
{
	struct vsock *vs = arg;
	while (!exec_cancelled(ex)) {
		if (!vs->wake_len) {
			vs->waker_parked = true;
			int r = exec_waitq_wait(ex, &vs->waker_q);
			vs->waker_parked = false;
			if (r < 0)
				break;
			continue;
		}
		int fd = vs->wake_fds[vs->wake_first];
		vs->wake_first = (vs->wake_first + 1) % VSOCK_WAKE_RING;
		vs->wake_len--;
		int r = exec_cancel_fd(ex, fd); /* the poll returns -ECANCELED: it re-evaluates */
		(void)r;
	}
	return 0;
}

void vsock_conn_wake(struct vsock_conn *c)
{
	struct vsock *vs = c->vs;
	if (c->parked) {
		exec_waitq_wake(vs->vdev.ex, &c->wake, 1);
		return;
	}
	if (!c->polling || c->wake_queued || c->fd < 0 || vs->slow_wake)
		return; /* running (it looks at its state before waiting again), or ticking */
	if (vs->wake_len == VSOCK_WAKE_RING) {
		vs->st.wakes_dropped++;
		return;
	}
	vs->wake_fds[(vs->wake_first + vs->wake_len++) % VSOCK_WAKE_RING] = c->fd;
	c->wake_queued = true;
	vs->st.wakes++;
	if (vs->waker_parked)
		exec_waitq_wake(vs->vdev.ex, &vs->waker_q, 1);
}

/* ---- closing ---- */

void vsock_conn_close(struct vsock_conn *c, bool rst)
{
	if (c->closing)
		return;
	/* The guest knows of the connection unless it is still a CONNECT line
	 * or a REQUEST not yet sent. */
	bool known = c->st != VSOCK_C_LINE && !(c->st == VSOCK_C_REQ_SENT && (c->pend & VSOCK_P_REQUEST));
	c->closing = true;
	hash_del(c);
	vsock_rxq_del(c);
	if (rst && known)
		vsock_rst(c->vs, c->local_port, c->peer_port);
	/* A connecting coroutine waits for the main process's reply and must
	 * not be cancelled there (see virtio_vmctl_call); it sees closing after. */
	if (c->task && c->st != VSOCK_C_CONNECTING) {
		int r = exec_task_cancel(c->vs->vdev.ex, c->task);
		(void)r;
	}
	else if (c->parked)
		exec_waitq_wake(c->vs->vdev.ex, &c->wake, 1);
}

static void conn_free(struct vsock_conn *c)
{
	struct vsock *vs = c->vs;
	if (!c->closing)
		vsock_conn_close(c, true);
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	if (c->aprev)
		c->aprev->anext = c->anext;
	else
		vs->all = c->anext;
	if (c->anext)
		c->anext->aprev = c->aprev;
	free(c);
	if (--vs->nconns == 0)
		exec_waitq_wake(vs->vdev.ex, &vs->drained, UINT32_MAX);
}

/* ---- guest → host bytes ---- */

void vsock_conn_credit(struct vsock_conn *c)
{
	if (c->fwd_cnt - c->fwd_sent >= VSOCK_CREDIT_THRESHOLD) {
		c->pend |= VSOCK_P_CREDIT;
		vsock_rxq_add(c);
	}
}

static void after_flush(struct vsock_conn *c)
{
	if (c->buf_len)
		return;
	if (c->linger) {
		vsock_conn_close(c, true);
		return;
	}
	if ((c->peer_shut & VSOCK_SHUTDOWN_SEND) && !c->wr_shut) {
		(void)shutdown(c->fd, SHUT_WR);
		c->wr_shut = true;
	}
}

/* Write what is buffered; false when the connection was closed. */
static bool flush(struct vsock_conn *c)
{
	while (c->buf_len) {
		uint32_t first = VSOCK_TX_BUF - c->buf_head;
		struct iovec iov[2] = {{c->buf + c->buf_head, first < c->buf_len ? first : c->buf_len},
		                       {c->buf, first < c->buf_len ? c->buf_len - first : 0}};
		ssize_t w;
		do
			w = writev(c->fd, iov, iov[1].iov_len ? 2 : 1);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno == EAGAIN)
			break;
		if (w <= 0) {
			vsock_conn_close(c, true); /* the host peer is gone */
			return false;
		}
		c->buf_head = (c->buf_head + (uint32_t)w) % VSOCK_TX_BUF;
		c->buf_len -= (uint32_t)w;
		c->fwd_cnt += (uint32_t)w;
	}
	vsock_conn_credit(c);
	after_flush(c);
	return !c->closing;
}

int vsock_conn_send(struct vsock_conn *c, const struct iovec *iov, unsigned cnt, uint32_t len)
{
	size_t skip = 0;
	c->rx_cnt += len;
	if (!c->buf_len && len) {
		ssize_t w;
		do
			w = writev(c->fd, iov, (int)cnt);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN) {
			vsock_conn_close(c, true);
			return -EPIPE;
		}
		skip = w > 0 ? (size_t)w : 0;
		c->fwd_cnt += (uint32_t)skip;
	}
	if (skip < len) {
		/* The socket is full: keep the rest (the credit check bounds it). */
		if (!c->buf && !(c->buf = malloc(VSOCK_TX_BUF))) {
			vsock_conn_close(c, true);
			return -ENOMEM;
		}
		for (unsigned i = 0; i < cnt; i++) {
			const uint8_t *p = iov[i].iov_base;
			size_t n = iov[i].iov_len;
			if (skip >= n) {
				skip -= n;
				continue;
			}
			p += skip, n -= skip, skip = 0;
			while (n) {
				uint32_t tail = (c->buf_head + c->buf_len) % VSOCK_TX_BUF;
				uint32_t room = VSOCK_TX_BUF - c->buf_len;
				if (room > VSOCK_TX_BUF - tail)
					room = VSOCK_TX_BUF - tail; /* contiguous part */
				if (!room)
					return 0; /* cannot happen: vsock_fits_credit came first */
				size_t k = n < room ? n : room;
				memcpy(c->buf + tail, p, k);
				c->buf_len += (uint32_t)k;
				p += k, n -= k;
			}
		}
		vsock_conn_wake(c);
	}
	vsock_conn_credit(c);
	return 0;
}

void vsock_conn_shutdown(struct vsock_conn *c, uint32_t flags)
{
	c->peer_shut |= flags & VSOCK_SHUTDOWN_BOTH;
	if (c->st != VSOCK_C_OPEN) {
		if (c->peer_shut == VSOCK_SHUTDOWN_BOTH)
			vsock_conn_close(c, true);
		return;
	}
	if (c->peer_shut == VSOCK_SHUTDOWN_BOTH) {
		/* A clean close: what the guest sent before still reaches the host. */
		c->linger = true;
		after_flush(c);
	} else {
		after_flush(c);
	}
	if (!c->closing)
		vsock_conn_wake(c);
}

void vsock_conn_established(struct vsock_conn *c)
{
	char ok[24];
	int n = snprintf(ok, sizeof(ok), "OK %u\n", c->local_port);
	if (write(c->fd, ok, (size_t)n) != n) {
		vsock_conn_close(c, true);
		return;
	}
	c->st = VSOCK_C_OPEN;
	c->deadline = 0;
	if (vsock_conn_rx_wanted(c))
		vsock_rxq_add(c);
	vsock_conn_wake(c);
}

/* ---- the connection's coroutine ---- */

static uint32_t alloc_port(struct vsock *vs, uint32_t peer)
{
	for (;;) {
		uint32_t p = vs->next_port++;
		if (vs->next_port < VSOCK_EPHEMERAL_BASE || vs->next_port == UINT32_MAX)
			vs->next_port = VSOCK_EPHEMERAL_BASE;
		if (!vsock_conn_find(vs, p, peer))
			return p;
	}
}

static void read_line(struct vsock_conn *c)
{
	struct vsock *vs = c->vs;
	char tmp[VSOCK_LINE_MAX];
	uint32_t port;
	ssize_t n;
	do
		n = read(c->fd, tmp, VSOCK_LINE_MAX - c->line.len);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) {
		vsock_conn_close(c, false);
		return;
	}
	int r = vsock_line_feed(&c->line, tmp, (size_t)n, &port);
	if (r < 0) {
		vs->st.lines_bad++;
		vsock_conn_close(c, false);
		return;
	}
	if (r == 0)
		return;
	c->pre_len = (uint8_t)(n - r);
	memcpy(c->pre, tmp + r, c->pre_len);
	c->peer_port = port;
	c->local_port = alloc_port(vs, port);
	hash_add(c);
	c->st = VSOCK_C_REQ_SENT;
	c->deadline = exec_now() + VSOCK_REPLY_NS;
	c->pend |= VSOCK_P_REQUEST;
	c->peer_buf_alloc = 0; /* no data before the guest's RESPONSE says how much */
	vs->st.conns_host++;
	vsock_rxq_add(c);
}

static void guest_connect(struct vsock_conn *c)
{
	struct vsock *vs = c->vs;
	struct ipc_ctl_req req = {.op = IPC_CTL_VSOCK_CONNECT, .port = c->local_port};
	int fd = -1;
	int r = virtio_vmctl_call(&vs->vdev, &req, &fd);
	if (c->closing) {
		if (fd >= 0)
			close(fd);
		return;
	}
	if (r < 0 || fd < 0) {
		vs->st.refused++;
		vsock_conn_close(c, true);
		return;
	}
	c->fd = fd;
	c->st = VSOCK_C_OPEN;
	c->pend |= VSOCK_P_RESPONSE;
	vs->st.conns_guest++;
	vsock_rxq_add(c);
}

/* What to poll for now, or -1 to park until woken. */
static int conn_want(const struct vsock_conn *c)
{
	switch (c->st) {
	case VSOCK_C_LINE:
		return POLLIN;
	case VSOCK_C_REQ_SENT:
		return POLLRDHUP; /* only the client vanishing matters until the guest answers */
	case VSOCK_C_CONNECTING:
		return -1;
	case VSOCK_C_OPEN:
		break;
	}
	int w = 0;
	if (c->buf_len)
		w |= POLLOUT;
	if (!c->rx_ready && !c->host_eof && !(c->peer_shut & VSOCK_SHUTDOWN_RCV) &&
	    c->pre_off == c->pre_len &&
	    vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt))
		w |= POLLIN;
	return w ? w : -1;
}

static void on_events(struct vsock_conn *c, unsigned rev)
{
	switch (c->st) {
	case VSOCK_C_LINE:
		read_line(c);
		return;
	case VSOCK_C_REQ_SENT:
		if (rev & (POLLRDHUP | POLLHUP | POLLERR))
			vsock_conn_close(c, true);
		return;
	case VSOCK_C_CONNECTING:
		return;
	case VSOCK_C_OPEN:
		break;
	}
	if (c->buf_len && (rev & (POLLOUT | POLLERR | POLLHUP)) && !flush(c))
		return;
	if ((rev & (POLLIN | POLLHUP | POLLERR)) && !c->rx_ready && !c->host_eof) {
		c->rx_ready = true;
		if (vsock_conn_rx_wanted(c))
			vsock_rxq_add(c);
	}
}

static int conn_task(struct exec *ex, void *arg)
{
	struct vsock_conn *c = arg;
	c->task = exec_self(ex);
	if (c->st == VSOCK_C_CONNECTING && !c->closing)
		guest_connect(c);
	while (!c->closing && !exec_cancelled(ex)) {
		int want = conn_want(c);
		if (want < 0) {
			c->parked = true;
			int r = exec_waitq_wait(ex, &c->wake);
			c->parked = false;
			if (r < 0)
				break;
			continue;
		}
		uint64_t dl = c->deadline;
		if (c->vs->slow_wake) {
			uint64_t soon = exec_now() + VSOCK_SLOW_WAKE_NS;
			dl = dl && dl < soon ? dl : soon;
		}
		(void)exec_set_deadline(ex, dl);
		c->polling = true;
		int r = exec_poll(ex, c->fd, (unsigned)want);
		c->polling = false;
		c->wake_queued = false;
		(void)exec_set_deadline(ex, 0);
		if (r == -ECANCELED)
			continue; /* woken (or cancelled: the loop condition says) */
		if (r == -ETIMEDOUT && (!c->deadline || exec_now() < c->deadline))
			continue; /* only the slow-wake tick */
		if (r == -ETIMEDOUT) {
			c->vs->st.timeouts++;
			vsock_conn_close(c, true);
			break;
		}
		if (r < 0) {
			vsock_conn_close(c, true);
			break;
		}
		on_events(c, (unsigned)r);
	}
	conn_free(c);
	return 0;
}

struct vsock_conn *vsock_conn_new(struct vsock *vs, int fd, enum vsock_conn_state st,
                                  uint32_t local, uint32_t peer)
{
	struct vsock_conn *c = NULL;
	if (vs->nconns >= VSOCK_MAX_CONNS || !vs->active || !(c = calloc(1, sizeof(*c)))) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	c->vs = vs;
	c->fd = fd;
	c->st = st;
	c->local_port = local;
	c->peer_port = peer;
	exec_waitq_init(&c->wake);
	if (st == VSOCK_C_LINE)
		c->deadline = exec_now() + VSOCK_LINE_NS;
	else
		hash_add(c);
	if (exec_spawn(vs->vdev.ex, conn_task, c, CONN_STACK, NULL) < 0) {
		hash_del(c);
		if (fd >= 0)
			close(fd);
		free(c);
		return NULL;
	}
	c->anext = vs->all;
	if (vs->all)
		vs->all->aprev = c;
	vs->all = c;
	vs->nconns++;
	return c;
}

/* ---- accepting host clients ---- */

static int accept_task(struct exec *ex, void *arg)
{
	struct vsock *vs = arg;
	while (!exec_cancelled(ex)) {
		int r = exec_poll(ex, vs->listen_fd, POLLIN);
		if (r < 0)
			break;
		for (;;) {
			int fd = accept4(vs->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd < 0) {
				if (errno == EINTR || errno == ECONNABORTED)
					continue;
				if (errno == EMFILE || errno == ENFILE) {
					vs->st.refused++;
					/* Out of descriptors: let connections go first. */
					if (exec_sleep(ex, 10 * 1000000ull) < 0)
						return 0;
				}
				break;
			}
			if (!vsock_conn_new(vs, fd, VSOCK_C_LINE, 0, 0))
				vs->st.refused++; /* full: the client sees EOF */
		}
	}
	return 0;
}

int vsock_accept_start(struct vsock *vs)
{
	struct exec *ex = vs->vdev.ex;
	exec_waitq_init(&vs->waker_q);
	vs->wake_first = vs->wake_len = 0;
	vs->all = NULL;
	vs->slow_wake = !(exec_features(ex) & EXEC_FEAT_CANCEL_ANY);
	int r = exec_spawn(ex, waker_task, vs, 0, &vs->waker_task);
	if (r < 0) {
		vs->waker_task = NULL;
		return r;
	}
	r = exec_spawn(ex, accept_task, vs, 0, &vs->accept_task);
	if (r < 0)
		vs->accept_task = NULL;
	return r;
}

static void stop_task(struct exec *ex, struct exec_task **t)
{
	if (!*t)
		return;
	int r = exec_task_cancel(ex, *t);
	r = exec_join(ex, *t);
	(void)r;
	*t = NULL;
}

void vsock_conns_stop(struct vsock *vs)
{
	struct exec *ex = vs->vdev.ex;
	stop_task(ex, &vs->accept_task);
	for (struct vsock_conn *c = vs->all; c; c = c->anext)
		vsock_conn_close(c, false); /* the driver reset: the guest forgot them */
	while (vs->nconns)
		if (exec_waitq_wait(ex, &vs->drained) < 0)
			break;
	stop_task(ex, &vs->waker_task);
	vs->wake_len = 0;
	vs->rxq_head = vs->rxq_tail = NULL;
}
