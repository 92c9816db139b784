/*
 * Batches (exec_batch_*): many operations, one park. Results land in each
 * exec_batch_op, the task parks once per batch, a batch bigger than the CQ
 * still completes, and cancelling the waiter never ends the wait before the
 * kernel has given every buffer back.
 */
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>

#include "tests/unit/async/async_test.h"

#define NOPS 100

struct nops {
	int ret, parks_checked;
	struct exec_batch_op o[NOPS];
};

static int nop_batch_body(struct exec *ex, void *arg)
{
	struct nops *n = arg;
	struct exec_batch b;
	struct exec_stats before, after;

	exec_batch_init(&b);
	cr_assert_eq(exec_batch_wait(ex, &b), 0, "an empty batch completes at once");
	for (int i = 0; i < NOPS; i++) {
		n->o[i].res = -1;
		cr_assert_eq(exec_batch_nop(ex, &b, &n->o[i]), 0);
	}
	exec_stats(ex, &before);
	cr_assert_eq(before.inflight, NOPS, "every added op owes a completion");
	n->ret = exec_batch_wait(ex, &b);
	exec_stats(ex, &after);
	cr_assert_eq(after.inflight, 0);
	cr_assert_eq(after.cqes - before.cqes, NOPS);
	for (int i = 0; i < NOPS; i++)
		cr_assert_eq(n->o[i].res, 0, "nop %d: %d", i, n->o[i].res);
	return 0;
}

Test(async_batch, nops_complete_with_one_wait)
{
	struct exec *ex = test_exec(NULL);
	struct nops n = {0};
	struct exec_task *t;

	cr_assert_eq(exec_spawn(ex, nop_batch_body, &n, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	cr_assert_eq(n.ret, NOPS);
	exec_destroy(ex);
}

/* Reads and writes at different offsets in one batch; results are per op. */
static int rw_body(struct exec *ex, void *arg)
{
	int fd = test_tmpfile();
	static char out[8][4096], in[8][4096];
	struct iovec wv[8], rv[8];
	struct exec_batch_op o[8];
	struct exec_batch b;
	(void)arg;

	exec_batch_init(&b);
	for (int i = 0; i < 8; i++) {
		memset(out[i], 'a' + i, sizeof(out[i]));
		wv[i] = (struct iovec){out[i], sizeof(out[i])};
		cr_assert_eq(exec_batch_writev(ex, &b, &o[i], fd, &wv[i], 1, (uint64_t)i * 8192),
		             0);
	}
	cr_assert_eq(exec_batch_wait(ex, &b), 8);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(o[i].res, 4096);
	/* read back in the reverse order, plus one read past EOF and one bad fd */
	for (int i = 0; i < 8; i++) {
		rv[i] = (struct iovec){in[i], sizeof(in[i])};
		cr_assert_eq(
		    exec_batch_readv(ex, &b, &o[i], fd, &rv[i], 1, (uint64_t)(7 - i) * 8192), 0);
	}
	struct exec_batch_op eof, bad;
	struct iovec ev = {in[0], 16};
	cr_assert_eq(exec_batch_readv(ex, &b, &eof, fd, &ev, 1, 1 << 20), 0);
	cr_assert_eq(exec_batch_readv(ex, &b, &bad, 12345, &ev, 1, 0), 0);
	cr_assert_eq(exec_batch_wait(ex, &b), 10);
	for (int i = 0; i < 8; i++) {
		cr_assert_eq(o[i].res, 4096);
		cr_assert_eq(in[i][0], 'a' + 7 - i);
		cr_assert_eq(in[i][4095], 'a' + 7 - i);
	}
	cr_assert_eq(eof.res, 0);
	cr_assert_eq(bad.res, -EBADF);
	close(fd);
	return 0;
}

Test(async_batch, readv_writev_results_per_op)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;

	cr_assert_eq(exec_spawn(ex, rw_body, NULL, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	exec_destroy(ex);
}

/* A batch bigger than the CQ: adding parks for room, nothing overflows. */
#define BIG 200
static int big_body(struct exec *ex, void *arg)
{
	static struct exec_batch_op o[BIG];
	struct exec_batch b;
	(void)arg;

	exec_batch_init(&b);
	for (int i = 0; i < BIG; i++)
		cr_assert_eq(exec_batch_nop(ex, &b, &o[i]), 0);
	cr_assert_eq(exec_batch_wait(ex, &b), BIG);
	for (int i = 0; i < BIG; i++)
		cr_assert_eq(o[i].res, 0);
	return 0;
}

Test(async_batch, larger_than_the_cq)
{
	struct exec_params p = {.sq_entries = 16, .cq_entries = 32};
	struct exec *ex = test_exec(&p);
	struct exec_task *t;
	struct exec_stats st;

	cr_assert_eq(exec_spawn(ex, big_body, NULL, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	exec_stats(ex, &st);
	cr_assert_leq(st.max_inflight, st.cq_entries);
	exec_destroy(ex);
}

/* Cancelling the waiter: the wait still ends only after every read has
 * completed (the buffers were the kernel's), then reports -ECANCELED, and
 * later adds are refused. The read waits on a pipe the canceller fills. */
struct cancel_ctx {
	int pfd[2];
	struct exec_task *waiter;
	char buf[4];
	struct exec_batch_op o[2];
	int wait_ret, add_after, done_before_write;
	bool woke_early;
};

static int cancel_waiter(struct exec *ex, void *arg)
{
	struct cancel_ctx *c = arg;
	struct exec_batch b;
	struct iovec v = {c->buf, sizeof(c->buf)};

	exec_batch_init(&b);
	cr_assert_eq(exec_batch_nop(ex, &b, &c->o[0]), 0);
	cr_assert_eq(exec_batch_readv(ex, &b, &c->o[1], c->pfd[0], &v, 1, (uint64_t)-1), 0);
	c->wait_ret = exec_batch_wait(ex, &b);
	c->add_after = exec_batch_nop(ex, &b, &c->o[0]);
	return 0;
}

static int cancel_canceller(struct exec *ex, void *arg)
{
	struct cancel_ctx *c = arg;

	cr_assert_eq(exec_sleep(ex, 20 * 1000 * 1000), 0);
	cr_assert_eq(exec_task_cancel(ex, c->waiter), 0);
	/* give the loop passes in which a wrong wake-up would happen */
	for (int i = 0; i < 5; i++)
		exec_yield(ex);
	cr_assert_eq(exec_sleep(ex, 5 * 1000 * 1000), 0);
	c->done_before_write = c->wait_ret;
	cr_assert_eq(write(c->pfd[1], "wxyz", 4), 4);
	return 0;
}

Test(async_batch, cancel_waits_for_every_completion)
{
	struct exec *ex = test_exec(NULL);
	struct cancel_ctx c = {.wait_ret = 12345, .done_before_write = 12345};
	struct exec_task *w, *k;

	cr_assert_eq(pipe(c.pfd), 0);
	cr_assert_eq(exec_spawn(ex, cancel_waiter, &c, 0, &w), 0);
	c.waiter = w;
	cr_assert_eq(exec_spawn(ex, cancel_canceller, &c, 0, &k), 0);
	cr_assert_eq(exec_join(ex, k), 0);
	cr_assert_eq(exec_join(ex, w), 0);
	cr_assert_eq(c.done_before_write, 12345, "the wait returned while a read was in flight");
	cr_assert_eq(c.wait_ret, -ECANCELED);
	cr_assert_eq(c.o[1].res, 4, "the read's result is still reported");
	cr_assert_eq(memcmp(c.buf, "wxyz", 4), 0);
	cr_assert_eq(c.add_after, -ECANCELED, "cancellation is sticky");
	close(c.pfd[0]);
	close(c.pfd[1]);
	exec_destroy(ex);
}

/* exec_post_write: no wait, no syscall of its own; the write happens with
 * the next submit (exec_flush, or the loop's own). */
static int post_body(struct exec *ex, void *arg)
{
	static const uint64_t one = 1;
	int efd = *(int *)arg;
	uint64_t v = 0;

	cr_assert_eq(exec_post_write(ex, efd, &one, sizeof(one)), 0);
	cr_assert_eq(exec_flush(ex), 0);
	cr_assert_eq(read(efd, &v, sizeof(v)), (ssize_t)sizeof(v), "flushed: written");
	cr_assert_eq(v, 1);
	cr_assert_eq(exec_post_write(ex, efd, &one, sizeof(one)), 0);
	cr_assert_eq(exec_post_write(ex, efd, &one, sizeof(one)), 0);
	cr_assert_eq(exec_nop(ex), 0); /* the loop's submit carries them */
	cr_assert_eq(read(efd, &v, sizeof(v)), (ssize_t)sizeof(v));
	cr_assert_eq(v, 2);
	/* A failed posted write (bad fd) is dropped without upsetting the count. */
	cr_assert_eq(exec_post_write(ex, 9999, &one, sizeof(one)), 0);
	cr_assert_eq(exec_nop(ex), 0);
	cr_assert_eq(exec_nop(ex), 0);
	struct exec_stats st;
	exec_stats(ex, &st);
	cr_assert_eq(st.inflight, 0, "inflight %u", st.inflight);
	return 0;
}

Test(async_batch, post_write_goes_with_the_next_submit)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;
	struct exec_stats st;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	static const uint64_t one = 1;

	cr_assert_geq(efd, 0);
	cr_assert_eq(exec_post_write(ex, efd, &one, sizeof(one)), -EPERM, "outside a task");
	cr_assert_eq(exec_spawn(ex, post_body, &efd, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	exec_stats(ex, &st);
	cr_assert_eq(st.inflight, 0, "fire-and-forget writes are reaped too");
	close(efd);
	exec_destroy(ex);
}

/*
 * RWF_NOWAIT through the _flags variants: a read of an empty pipe and a
 * write to a full one complete at once with -EAGAIN (without it io_uring
 * would wait for readiness and hold the batch), while a read of a pipe
 * with data in the same batch still gets it.
 */
static int nowait_body(struct exec *ex, void *arg)
{
	int empty[2], full[2], data[2];
	static char big[65536], buf[16];
	struct iovec rv[2] = {{buf, 8}, {buf + 8, 8}}, wv = {big, sizeof(big)};
	struct exec_batch_op o[3];
	struct exec_batch b;
	(void)arg;

	cr_assert_eq(pipe2(empty, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(full, O_CLOEXEC | O_NONBLOCK), 0);
	cr_assert_eq(pipe2(data, O_CLOEXEC), 0);
	while (write(full[1], big, sizeof(big)) > 0)
		;
	cr_assert_eq(write(data[1], "0123456789", 10), 10);
	exec_batch_init(&b);
	cr_assert_eq(exec_batch_readv_flags(ex, &b, &o[0], empty[0], &rv[0], 1, 0, RWF_NOWAIT), 0);
	cr_assert_eq(exec_batch_writev_flags(ex, &b, &o[1], full[1], &wv, 1, 0, RWF_NOWAIT), 0);
	cr_assert_eq(exec_batch_readv_flags(ex, &b, &o[2], data[0], rv, 2, 0, RWF_NOWAIT), 0);
	cr_assert_eq(exec_batch_wait(ex, &b), 3);
	cr_assert_eq(o[0].res, -EAGAIN, "empty pipe: %d", o[0].res);
	cr_assert_eq(o[1].res, -EAGAIN, "full pipe: %d", o[1].res);
	cr_assert_eq(o[2].res, 10, "pipe with data: %d", o[2].res);
	cr_assert_arr_eq(buf, "0123456789", 10);
	for (int i = 0; i < 2; i++)
		close(empty[i]), close(full[i]), close(data[i]);
	return 0;
}

Test(async_batch, nowait_flags_answer_eagain)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;

	cr_assert_eq(exec_spawn(ex, nowait_body, NULL, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	exec_destroy(ex);
}
