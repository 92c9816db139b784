/*
 * Awaitable io_uring operations. Each keeps its state (struct op_ctx) on
 * the awaiting task's stack, so an operation costs no allocation; the CQ
 * room it needs is reserved first so completions can never overflow the
 * CQ, and it returns only once every CQE it caused has been reaped.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>

#include "async/exec_internal.h"

#define NSEC_PER_SEC 1000000000ull

enum {
	OPF_NO_DEADLINE = 1u << 0, /* sleeps carry their own timeout */
	OPF_CLEANUP = 1u << 1,     /* still allowed once the task is cancelled */
};

/* One operation in flight: lives in the awaiting function's frame. */
struct op_ctx {
	struct exec_op op;
	struct __kernel_timespec ts; /* read by the kernel at submit time */
	struct io_uring_sqe *sqe[2]; /* the op, then its linked timeout */
	unsigned n;
};

/* The common case: CQ room is there, take it. (The high-water mark is
 * taken when inflight next drops: at the reap, or in slots_release.) */
static inline bool slots_fast(struct exec *ex, unsigned n)
{
	if (ex->inflight + ex->slots_promised + n > ex->max_inflight)
		return false;
	ex->inflight += n;
	return true;
}

/* Out of line: only reached when the CQ is (nearly) full. */
static __attribute__((noinline)) int slots_wait(struct exec *ex, unsigned n)
{
	struct exec_task *t = ex->current;

	if (n > ex->max_inflight)
		return -EINVAL;
	while (ex->inflight + ex->slots_promised + n > ex->max_inflight) {
		t->slot_need = n;
		waitq_push(&ex->slot_waiters, t);
		task_park(ex, PARK_SLOT, NULL);
		if (t->wake_res)
			return t->wake_res; /* cancelled: taken off the queue, nothing promised */
		ex->slots_promised -= n;
	}
	ex->inflight += n;
	return 0;
}

int slots_reserve(struct exec *ex, unsigned n)
{
	return slots_fast(ex, n) ? 0 : slots_wait(ex, n);
}

void slots_release(struct exec *ex, unsigned n)
{
	hwm_update(ex);
	ex->inflight -= n;
}

void slots_kick(struct exec *ex)
{
	struct exec_task *t;

	/* FIFO hand-off: room freed now is promised to the oldest waiters so a
	 * task that never had to wait cannot overtake them. */
	while ((t = ex->slot_waiters.head) &&
	       ex->inflight + ex->slots_promised + t->slot_need <= ex->max_inflight) {
		waitq_pop(&ex->slot_waiters);
		ex->slots_promised += t->slot_need;
		task_make_runnable(ex, t);
	}
}

/* A full SQ only means this pass queued a lot: submit early. Both SQEs of a
 * linked pair must go in the same submission, hence the room check for n. */
static __attribute__((noinline)) int sq_flush(struct exec *ex, unsigned n)
{
	struct io_uring *ring = &ex->ring;
	int ret;

	do
		ret = io_uring_submit(ring);
	while (ret == -EINTR);
	ex->enters++;
	if (ret < 0 && ret != -EAGAIN && ret != -EBUSY)
		return ret;
	if (io_uring_sq_space_left(ring) < n)
		return -EBUSY; /* the kernel took nothing: no SQE to be had */
	return 0;
}

static inline __attribute__((always_inline)) int sqes_take(struct exec *ex,
                                                           struct io_uring_sqe **sqes, unsigned n)
{
	struct io_uring *ring = &ex->ring;
	unsigned i;

	if (io_uring_sq_space_left(ring) < n) {
		int ret = sq_flush(ex, n);
		if (ret)
			return ret;
	}
	/* Room is known to be there: take the entries without liburing's
	 * out-of-line io_uring_get_sqe (a PLT call and a second head load). */
	for (i = 0; i < n; i++) {
		unsigned tail = ring->sq.sqe_tail;
		sqes[i] = &ring->sq.sqes[tail & ring->sq.ring_mask];
		ring->sq.sqe_tail = tail + 1;
	}
	return 0;
}

int sqes_get(struct exec *ex, struct io_uring_sqe **sqes, unsigned n)
{
	return sqes_take(ex, sqes, n);
}

int op_cancel_submit(struct exec *ex, struct exec_op *op)
{
	struct io_uring_sqe *sqe;
	int ret = sqes_get(ex, &sqe, 1);

	if (ret)
		return ret;
	io_uring_prep_cancel64(sqe, op_ud(op, OP_TAG_MAIN), 0);
	io_uring_sqe_set_data64(sqe, op_ud(op, OP_TAG_CANCEL));
	op->pending++;
	ex->inflight++;
	return 0;
}

void cancels_submit(struct exec *ex)
{
	struct exec_task *t;

	while ((t = ex->cancel_head)) {
		struct exec_op *op = t->cancel_op;

		if (t->park == PARK_OP && t->park_obj == op && op->pending) {
			if (ex->inflight + ex->slots_promised + 1 > ex->max_inflight)
				return; /* retried after the next reap frees room */
			if (op_cancel_submit(ex, op))
				return;
			t->cancel_sent = op;
		}
		ex->cancel_head = t->cancel_next;
		t->cancel_listed = false;
	}
}

/* Everything op_begin's fast path leaves out: no task, a cancelled task,
 * a deadline (a linked timeout: two SQEs), a full CQ, a full SQ. */
static __attribute__((noinline)) int op_begin_slow(struct exec *ex, struct op_ctx *c,
                                                   unsigned flags)
{
	struct exec_task *t = ex->current;
	int ret;

	if (!t)
		return -EPERM;
	if (t->cancelled && !(flags & OPF_CLEANUP))
		return -ECANCELED;
	c->n = t->deadline && !(flags & OPF_NO_DEADLINE) ? 2 : 1;
	if (!slots_fast(ex, c->n)) {
		ret = slots_wait(ex, c->n);
		if (ret)
			return ret;
	}
	ret = sqes_take(ex, c->sqe, c->n);
	if (ret)
		goto err_release;
	return 0;

err_release:
	slots_release(ex, c->n);
	slots_kick(ex);
	return ret;
}

/* Inlined into every operation: this and op_await are the per-op hot path.
 * The fast path is one SQE, CQ room and SQ room at hand: a handful of
 * loads and compares, no loop. */
static inline __attribute__((always_inline)) int op_begin(struct exec *ex, struct op_ctx *c,
                                                          unsigned flags)
{
	struct exec_task *t = ex->current;
	struct io_uring_sq *sq = &ex->ring.sq;
	unsigned tail;

	if (__builtin_expect(!t || t->op_slow, 0) ||
	    __builtin_expect(ex->inflight + ex->slots_promised >= ex->max_inflight, 0) ||
	    __builtin_expect(io_uring_sq_space_left(&ex->ring) == 0, 0))
		return op_begin_slow(ex, c, flags);
	ex->inflight++;
	c->n = 1;
	tail = sq->sqe_tail;
	c->sqe[0] = &sq->sqes[tail & sq->ring_mask];
	sq->sqe_tail = tail + 1;
	return 0;
}

/* fd < -1 is EXEC_FIXED(index). */
static void sqe_fd(struct io_uring_sqe *sqe, int fd)
{
	if (fd < -1) {
		sqe->fd = fd & INT_MAX;
		sqe->flags |= IOSQE_FIXED_FILE;
	}
}

static inline __attribute__((always_inline)) int op_await(struct exec *ex, struct op_ctx *c)
{
	struct exec_task *t = ex->current;
	int res;

	c->op.task = t;
	c->op.res = 0;
	c->op.cqe_flags = 0;
	c->op.link_res = 0;
	c->op.pending = (unsigned short)c->n;
	io_uring_sqe_set_data64(c->sqe[0], op_ud(&c->op, OP_TAG_MAIN));
	if (c->n == 2) {
		c->sqe[0]->flags |= IOSQE_IO_LINK;
		c->ts.tv_sec = (long long)(t->deadline / NSEC_PER_SEC);
		c->ts.tv_nsec = (long long)(t->deadline % NSEC_PER_SEC);
		io_uring_prep_link_timeout(c->sqe[1], &c->ts, IORING_TIMEOUT_ABS);
		io_uring_sqe_set_data64(c->sqe[1], op_ud(&c->op, OP_TAG_TIMEOUT));
	}
	/* Only the last CQE owed to this op wakes us: returning earlier would
	 * hand the buffers (and this frame) back while the kernel holds them. */
	do
		task_park(ex, PARK_OP, &c->op);
	while (c->op.pending);

	res = c->op.res;
	if (res == -ECANCELED || res == -EINTR) {
		if (c->op.link_res == -ETIME)
			res = -ETIMEDOUT;
		else if (c->op.link_res < 0 && c->op.link_res != -ECANCELED &&
		         c->op.link_res != -EALREADY && c->op.link_res != -ENOENT)
			res = c->op.link_res; /* e.g. -EACCES: the timeout itself was refused */
	}
	return res;
}

#define OP(ex, flags, prep)                                                                        \
	do {                                                                                       \
		struct op_ctx c;                                                                   \
		struct io_uring_sqe *sqe;                                                          \
		int ret_ = op_begin((ex), &c, (flags));                                            \
		if (ret_)                                                                          \
			return ret_;                                                               \
		sqe = c.sqe[0];                                                                    \
		prep;                                                                              \
		return op_await((ex), &c);                                                         \
	} while (0)

int exec_nop(struct exec *ex)
{
	OP(ex, 0, io_uring_prep_nop(sqe));
}

int exec_read(struct exec *ex, int fd, void *buf, unsigned len, uint64_t off)
{
	OP(ex, 0, (io_uring_prep_read(sqe, fd, buf, len, off), sqe_fd(sqe, fd)));
}

int exec_write(struct exec *ex, int fd, const void *buf, unsigned len, uint64_t off)
{
	OP(ex, 0, (io_uring_prep_write(sqe, fd, buf, len, off), sqe_fd(sqe, fd)));
}

int exec_readv(struct exec *ex, int fd, const struct iovec *iov, unsigned n, uint64_t off)
{
	OP(ex, 0, (io_uring_prep_readv(sqe, fd, iov, n, off), sqe_fd(sqe, fd)));
}

int exec_writev(struct exec *ex, int fd, const struct iovec *iov, unsigned n, uint64_t off)
{
	OP(ex, 0, (io_uring_prep_writev(sqe, fd, iov, n, off), sqe_fd(sqe, fd)));
}

int exec_fsync(struct exec *ex, int fd)
{
	OP(ex, 0, (io_uring_prep_fsync(sqe, fd, 0), sqe_fd(sqe, fd)));
}

int exec_fdatasync(struct exec *ex, int fd)
{
	OP(ex, 0, (io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC), sqe_fd(sqe, fd)));
}

int exec_fallocate(struct exec *ex, int fd, int mode, uint64_t off, uint64_t len)
{
	OP(ex, 0,
	   (io_uring_prep_fallocate(sqe, fd, mode, (off_t)off, (off_t)len), sqe_fd(sqe, fd)));
}

int exec_punch_hole(struct exec *ex, int fd, uint64_t off, uint64_t len)
{
	return exec_fallocate(ex, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
}

int exec_zero_range(struct exec *ex, int fd, uint64_t off, uint64_t len)
{
	return exec_fallocate(ex, fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
}

int exec_poll(struct exec *ex, int fd, unsigned events)
{
	OP(ex, 0, (io_uring_prep_poll_add(sqe, fd, events), sqe_fd(sqe, fd)));
}

int exec_recvmsg(struct exec *ex, int fd, struct msghdr *msg, unsigned flags)
{
	OP(ex, 0, (io_uring_prep_recvmsg(sqe, fd, msg, flags), sqe_fd(sqe, fd)));
}

int exec_sendmsg(struct exec *ex, int fd, const struct msghdr *msg, unsigned flags)
{
	OP(ex, 0, (io_uring_prep_sendmsg(sqe, fd, msg, flags), sqe_fd(sqe, fd)));
}

int exec_accept(struct exec *ex, int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	OP(ex, 0, (io_uring_prep_accept(sqe, fd, addr, addrlen, flags), sqe_fd(sqe, fd)));
}

int exec_connect(struct exec *ex, int fd, const struct sockaddr *addr, socklen_t addrlen)
{
	OP(ex, 0, (io_uring_prep_connect(sqe, fd, addr, addrlen), sqe_fd(sqe, fd)));
}

int exec_sleep_until(struct exec *ex, uint64_t deadline_ns)
{
	struct op_ctx c;
	int ret = op_begin(ex, &c, OPF_NO_DEADLINE);

	if (ret)
		return ret;
	c.ts.tv_sec = (long long)(deadline_ns / NSEC_PER_SEC);
	c.ts.tv_nsec = (long long)(deadline_ns % NSEC_PER_SEC);
	io_uring_prep_timeout(c.sqe[0], &c.ts, 0, IORING_TIMEOUT_ABS);
	ret = op_await(ex, &c);
	return ret == -ETIME ? 0 : ret;
}

int exec_sleep(struct exec *ex, uint64_t ns)
{
	return exec_sleep_until(ex, exec_now() + ns);
}

int exec_cancel_fd(struct exec *ex, int fd)
{
	struct op_ctx c;
	int ret = op_begin(ex, &c, 0);

	if (ret)
		return ret;
	io_uring_prep_cancel_fd(c.sqe[0], fd & INT_MAX, IORING_ASYNC_CANCEL_ALL);
	/* A fixed file is named by a cancel flag, not by IOSQE_FIXED_FILE. */
	if (fd < -1)
		c.sqe[0]->cancel_flags |= IORING_ASYNC_CANCEL_FD_FIXED;
	return op_await(ex, &c);
}

/* ---- eventfd reads (used by exec_sync.c) ---- */

int efd_arm(struct exec *ex, struct exec_eventfd *e)
{
	struct io_uring_sqe *sqe;
	int ret = slots_reserve(ex, 1);

	if (ret)
		return ret;
	ret = sqes_get(ex, &sqe, 1);
	if (ret)
		goto err_release;
	io_uring_prep_read(sqe, e->fd, &e->value, sizeof(e->value), 0);
	sqe_fd(sqe, e->fd);
	io_uring_sqe_set_data64(sqe, op_ud(&e->op, OP_TAG_MAIN));
	e->op.task = NULL;
	e->op.res = 0;
	e->op.link_res = 0;
	e->op.pending = 1;
	e->armed = true;
	e->prev = NULL;
	e->next = ex->efds;
	if (ex->efds)
		ex->efds->prev = e;
	ex->efds = e;
	return 0;

err_release:
	slots_release(ex, 1);
	slots_kick(ex);
	return ret;
}

/* Ask for the armed read back and await it (the read's CQE is the proof
 * the kernel no longer holds e->value). Runs even for cancelled tasks. */
int efd_cancel_await(struct exec *ex, struct exec_eventfd *e)
{
	int ret;

	if (e->op.pending) {
		ret = slots_reserve(ex, 1);
		if (ret)
			return ret;
		slots_release(ex, 1); /* op_cancel_submit accounts for it itself */
		ret = op_cancel_submit(ex, &e->op);
		if (ret)
			return ret;
		e->op.task = ex->current;
		do
			task_park(ex, PARK_OP, &e->op);
		while (e->op.pending);
	}
	return 0;
}

/* ---- batches (exec.h): one park for many operations ---- */

void exec_batch_init(struct exec_batch *b)
{
	memset(b, 0, sizeof(*b));
}

/* One SQE for o in b: the CQ slot is reserved, the SQE tagged so its CQE
 * lands in o and counts down b. NULL with *err set when nothing is queued. */
static inline __attribute__((always_inline)) struct io_uring_sqe *
batch_sqe(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o, int *err)
{
	struct exec_task *t = ex->current;
	struct io_uring_sq *sq = &ex->ring.sq;
	struct io_uring_sqe *sqe;

	if (__builtin_expect(t && !t->op_slow, 1) &&
	    __builtin_expect(ex->inflight + ex->slots_promised < ex->max_inflight, 1) &&
	    __builtin_expect(io_uring_sq_space_left(&ex->ring) != 0, 1)) {
		/* The common case, as op_begin's: CQ and SQ room at hand. */
		unsigned tail = sq->sqe_tail;
		ex->inflight++;
		sqe = &sq->sqes[tail & sq->ring_mask];
		sq->sqe_tail = tail + 1;
	} else {
		if (!t) {
			*err = -EPERM;
			return NULL;
		}
		if (t->cancelled) {
			*err = -ECANCELED;
			return NULL;
		}
		if (!slots_fast(ex, 1) && (*err = slots_wait(ex, 1)))
			return NULL;
		if ((*err = sqes_take(ex, &sqe, 1))) {
			slots_release(ex, 1);
			slots_kick(ex);
			return NULL;
		}
	}
	o->res = 0;
	o->batch = b;
	b->op.pending++;
	b->added++;
	return sqe;
}

#define BATCH_OP(ex, b, o, prep)                                                                   \
	do {                                                                                       \
		int err_ = 0;                                                                      \
		struct io_uring_sqe *sqe = batch_sqe((ex), (b), (o), &err_);                       \
		if (!sqe)                                                                          \
			return err_;                                                               \
		prep;                                                                              \
		io_uring_sqe_set_data64(sqe, op_ud((struct exec_op *)(o), OP_TAG_BATCH));          \
		return 0;                                                                          \
	} while (0)

int exec_batch_nop(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o)
{
	BATCH_OP(ex, b, o, io_uring_prep_nop(sqe));
}

int exec_batch_readv(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o, int fd,
                     const struct iovec *iov, unsigned n, uint64_t off)
{
	BATCH_OP(ex, b, o, (io_uring_prep_readv(sqe, fd, iov, n, off), sqe_fd(sqe, fd)));
}

int exec_batch_writev(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o, int fd,
                      const struct iovec *iov, unsigned n, uint64_t off)
{
	BATCH_OP(ex, b, o, (io_uring_prep_writev(sqe, fd, iov, n, off), sqe_fd(sqe, fd)));
}

int exec_batch_readv_flags(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o, int fd,
                           const struct iovec *iov, unsigned n, uint64_t off, int rw_flags)
{
	BATCH_OP(ex, b, o,
	         (io_uring_prep_readv2(sqe, fd, iov, n, off, rw_flags), sqe_fd(sqe, fd)));
}

int exec_batch_writev_flags(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o,
                            int fd, const struct iovec *iov, unsigned n, uint64_t off,
                            int rw_flags)
{
	BATCH_OP(ex, b, o,
	         (io_uring_prep_writev2(sqe, fd, iov, n, off, rw_flags), sqe_fd(sqe, fd)));
}

int exec_batch_wait(struct exec *ex, struct exec_batch *b)
{
	struct exec_task *t = ex->current;
	int n;

	if (!t)
		return -EPERM;
	/* Only the last completion wakes us; cancelling t does not (the
	 * operations' buffers are the kernel's until then). */
	while (b->op.pending) {
		b->op.task = t;
		task_park(ex, PARK_BATCH, b);
	}
	b->op.task = NULL;
	n = (int)b->added;
	b->added = 0;
	return t->cancelled ? -ECANCELED : n;
}

int exec_post_write(struct exec *ex, int fd, const void *buf, unsigned len)
{
	struct io_uring_sqe *sqe;

	if (!ex->current)
		return -EPERM;
	if (ex->post_skip) {
		/*
		 * No CQE when it succeeds: otherwise its own completion would end
		 * the loop's next wait at once and cost an extra enter. A failure's
		 * CQE (rare: eventfd overflow) fits in the CQ's slack or the
		 * kernel's overflow list, and is dropped when reaped.
		 */
		if (io_uring_sq_space_left(&ex->ring) == 0)
			return -EBUSY;
		if (sqes_take(ex, &sqe, 1))
			return -EBUSY;
		io_uring_prep_write(sqe, fd, buf, len, (uint64_t)-1);
		sqe_fd(sqe, fd);
		sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
		io_uring_sqe_set_data64(sqe, UD_POSTED);
		return 0;
	}
	if (!slots_fast(ex, 1))
		return -EBUSY;
	if (io_uring_sq_space_left(&ex->ring) == 0 || sqes_take(ex, &sqe, 1)) {
		slots_release(ex, 1);
		return -EBUSY;
	}
	/* Offset -1: the file position, the only valid one for a stream. */
	io_uring_prep_write(sqe, fd, buf, len, (uint64_t)-1);
	sqe_fd(sqe, fd);
	io_uring_sqe_set_data64(sqe, 0); /* fire and forget: only inflight is owed */
	return 0;
}

int exec_flush(struct exec *ex)
{
	int ret;

	if (!io_uring_sq_ready(&ex->ring))
		return 0;
	ex->enters++;
	do
		ret = io_uring_submit(&ex->ring);
	while (ret == -EINTR);
	return ret < 0 ? ret : 0;
}
