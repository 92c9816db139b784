/*
 * Timeouts and cancellation: sleeps and deadlines fire (and do not fire
 * when the op finishes first); a cancelled or timed-out task returns only
 * after the kernel has let go of its buffer — proven by poisoning the
 * buffer and checking that data written afterwards never lands in it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>

#include "tests/unit/async/async_test.h"

#define MS     1000000ull
#define POISON 0xA5

struct reader {
	int fd;
	int wfd; /* the pipe's write end, for writer_after */
	int res;
	bool returned;
	unsigned char buf[256];
	uint64_t t0, t1;
	uint64_t deadline_ms; /* 0: none */
};

/* Reads into a poisoned buffer on this task's own stack, then copies it out
 * so the test can check that nothing landed after the read returned. */
static int stack_reader(struct exec *ex, void *arg)
{
	struct reader *r = arg;
	unsigned char local[256];
	memset(local, POISON, sizeof(local));
	if (r->deadline_ms)
		exec_set_deadline(ex, exec_now() + r->deadline_ms * MS);
	r->t0 = exec_now();
	r->res = exec_read(ex, r->fd, local, sizeof(local), 0);
	r->t1 = exec_now();
	r->returned = true;
	/* Give a late kernel write (which would be a bug) a chance to land. */
	exec_set_deadline(ex, 0);
	int s = exec_sleep(ex, 20 * MS);
	if (s != 0 && s != -ECANCELED)
		return s;
	memcpy(r->buf, local, sizeof(local));
	return 0;
}

static int writer_after(struct exec *ex, void *arg)
{
	struct reader *r = arg;
	/* Write once the reader has returned: if the kernel still owned its
	 * read, this data would be consumed into the poisoned buffer. */
	while (!r->returned)
		if (exec_sleep(ex, 1 * MS))
			return -1;
	return (int)write(r->wfd, "DATA", 4);
}

static void assert_poisoned(const unsigned char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(buf[i], POISON, "buffer touched at %zu after return", i);
}

static void assert_pipe_still_has(int rfd, const char *want)
{
	char got[16] = {0};
	int fl = fcntl(rfd, F_GETFL);
	fcntl(rfd, F_SETFL, fl | O_NONBLOCK);
	cr_assert_eq(read(rfd, got, sizeof(got)), (ssize_t)strlen(want),
	             "data was consumed by a read that should be gone");
	cr_assert_str_eq(got, want);
}

static void make_pipe(int p[2])
{
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
}

Test(async_cancel, deadline_fires_and_buffer_is_returned)
{
	struct exec *ex = test_exec(NULL);
	struct reader r = {.deadline_ms = 30};
	struct exec_task *rt, *wt;
	int p[2];
	make_pipe(p);
	r.fd = p[0];
	r.wfd = p[1];
	cr_assert_eq(exec_spawn(ex, stack_reader, &r, 0, &rt), 0);
	cr_assert_eq(exec_spawn(ex, writer_after, &r, 0, &wt), 0);
	cr_assert_eq(exec_join(ex, rt), 0);
	cr_assert_eq(exec_join(ex, wt), 4);
	cr_assert_eq(r.res, -ETIMEDOUT);
	cr_assert_geq(r.t1 - r.t0, 29 * MS, "fired early: %llu ns",
	              (unsigned long long)(r.t1 - r.t0));
	cr_assert_lt(r.t1 - r.t0, 1000 * MS, "fired late");
	assert_poisoned(r.buf, sizeof(r.buf));
	assert_pipe_still_has(p[0], "DATA");
	close(p[0]);
	close(p[1]);
	exec_destroy(ex);
}

static int late_writer(struct exec *ex, void *arg)
{
	int fd = *(int *)arg;
	if (exec_sleep(ex, 5 * MS))
		return -1;
	return (int)write(fd, "ok", 2);
}

Test(async_cancel, deadline_does_not_fire_when_op_completes)
{
	struct exec *ex = test_exec(NULL);
	struct reader r = {.deadline_ms = 2000};
	struct exec_task *rt, *wt;
	int p[2];
	make_pipe(p);
	r.fd = p[0];
	r.wfd = p[1];
	cr_assert_eq(exec_spawn(ex, stack_reader, &r, 0, &rt), 0);
	cr_assert_eq(exec_spawn(ex, late_writer, &p[1], 0, &wt), 0);
	cr_assert_eq(exec_join(ex, rt), 0);
	cr_assert_eq(exec_join(ex, wt), 2);
	cr_assert_eq(r.res, 2);
	cr_assert_arr_eq(r.buf, "ok", 2);
	cr_assert_lt(r.t1 - r.t0, 1000 * MS);
	close(p[0]);
	close(p[1]);
	exec_destroy(ex);
}

struct canceller {
	struct exec_task *victim;
	struct reader *r;
	int res;
};

static int cancel_after(struct exec *ex, void *arg)
{
	struct canceller *c = arg;
	if (exec_sleep(ex, 10 * MS))
		return -1;
	cr_assert_not(c->r->returned, "reader must still be parked in its read");
	c->res = exec_task_cancel(ex, c->victim);
	/* then feed the pipe: the cancelled read must not take it */
	while (!c->r->returned)
		if (exec_sleep(ex, 1 * MS))
			return -1;
	return (int)write(c->r->wfd, "DATA", 4);
}

Test(async_cancel, cancel_while_in_flight_leaves_buffer_alone)
{
	struct exec *ex = test_exec(NULL);
	struct reader r = {0};
	struct canceller c = {.r = &r};
	struct exec_task *rt, *ct;
	int p[2];
	make_pipe(p);
	r.fd = p[0];
	r.wfd = p[1];
	cr_assert_eq(exec_spawn(ex, stack_reader, &r, 0, &rt), 0);
	c.victim = rt;
	cr_assert_eq(exec_spawn(ex, cancel_after, &c, 0, &ct), 0);
	cr_assert_eq(exec_join(ex, ct), 4);
	cr_assert_eq(exec_join(ex, rt), 0);
	cr_assert_eq(c.res, 0);
	cr_assert_eq(r.res, -ECANCELED);
	assert_poisoned(r.buf, sizeof(r.buf));
	assert_pipe_still_has(p[0], "DATA");
	struct exec_stats st;
	exec_stats(ex, &st);
	cr_assert_eq(st.inflight, 0);
	close(p[0]);
	close(p[1]);
	exec_destroy(ex);
}

static int after_cancel_ops(struct exec *ex, void *arg)
{
	(void)arg;
	while (!exec_cancelled(ex))
		exec_yield(ex);
	/* sticky: nothing is submitted any more */
	char b;
	struct exec_sem s;
	exec_sem_init(&s, 5);
	struct exec_stats before, after;
	exec_stats(ex, &before);
	cr_assert_eq(exec_nop(ex), -ECANCELED);
	cr_assert_eq(exec_read(ex, 0, &b, 1, 0), -ECANCELED);
	cr_assert_eq(exec_sleep(ex, MS), -ECANCELED);
	cr_assert_eq(exec_sem_wait(ex, &s), -ECANCELED);
	exec_stats(ex, &after);
	cr_assert_eq(after.cqes, before.cqes);
	cr_assert_eq(after.inflight, 0);
	return 11;
}

Test(async_cancel, cancellation_is_sticky)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;
	cr_assert_eq(exec_spawn(ex, after_cancel_ops, NULL, 0, &t), 0);
	cr_assert_eq(exec_task_cancel(ex, t), 0);
	cr_assert_eq(exec_join(ex, t), 11);
	exec_destroy(ex);
}

static int sleeper(struct exec *ex, void *arg)
{
	uint64_t *elapsed = arg;
	uint64_t t0 = exec_now();
	int r = exec_sleep(ex, 10000 * MS);
	*elapsed = exec_now() - t0;
	return r;
}

static int sem_waiter(struct exec *ex, void *arg)
{
	return exec_sem_wait(ex, arg);
}

static int joiner(struct exec *ex, void *arg)
{
	return exec_join(ex, arg);
}

static int cancel_all(struct exec *ex, void *arg)
{
	struct exec_task **v = arg;
	if (exec_sleep(ex, 5 * MS))
		return -1;
	for (int i = 0; i < 3; i++)
		cr_assert_eq(exec_task_cancel(ex, v[i]), 0);
	return 0;
}

static int quick(struct exec *ex, void *arg)
{
	(void)ex;
	(void)arg;
	return 9;
}

static int yield_twice(struct exec *ex, void *arg)
{
	(void)arg;
	exec_yield(ex);
	exec_yield(ex);
	return 0;
}

Test(async_cancel, cancel_sleep_semaphore_and_join)
{
	struct exec *ex = test_exec(NULL);
	struct exec_sem s;
	uint64_t elapsed = 0;
	struct exec_task *v[3], *c, *sleep_t;
	exec_sem_init(&s, 0);
	cr_assert_eq(exec_spawn(ex, sleeper, &elapsed, 0, &sleep_t), 0);
	v[0] = sleep_t;
	cr_assert_eq(exec_spawn(ex, sem_waiter, &s, 0, &v[1]), 0);
	cr_assert_eq(exec_spawn(ex, joiner, v[1], 0, &v[2]), 0);
	cr_assert_eq(exec_spawn(ex, cancel_all, v, 0, &c), 0);
	cr_assert_eq(exec_join(ex, c), 0);
	cr_assert_eq(exec_join(ex, v[0]), -ECANCELED);
	cr_assert_lt(elapsed, 1000 * MS);
	cr_assert_eq(exec_join(ex, v[2]), -ECANCELED, "the joiner was cancelled");
	cr_assert_eq(exec_join(ex, v[1]), -ECANCELED, "the semaphore waiter was cancelled");

	/* a task that has finished but is not yet joined cannot be cancelled */
	struct exec_task *d, *e;
	cr_assert_eq(exec_spawn(ex, quick, NULL, 0, &d), 0);
	cr_assert_eq(exec_spawn(ex, yield_twice, NULL, 0, &e), 0);
	cr_assert_eq(exec_join(ex, e), 0);
	cr_assert_eq(exec_task_cancel(ex, d), -ESRCH);
	cr_assert_eq(exec_join(ex, d), 9);
	exec_destroy(ex);
}

static int sleep_and_log(struct exec *ex, void *arg)
{
	static int n;
	intptr_t ms = (intptr_t)arg;
	if (ms == 0) {
		n = 0;
		return 0;
	}
	uint64_t t0 = exec_now();
	cr_assert_eq(exec_sleep(ex, (uint64_t)ms * MS), 0);
	uint64_t dt = exec_now() - t0;
	cr_assert_geq(dt, (uint64_t)ms * MS, "woke early");
	return ++n;
}

Test(async_cancel, sleeps_fire_in_deadline_order)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *a, *b, *c;
	cr_assert_eq(exec_spawn(ex, sleep_and_log, (void *)0, 0, NULL), 0);
	cr_assert_eq(exec_spawn(ex, sleep_and_log, (void *)30, 0, &a), 0);
	cr_assert_eq(exec_spawn(ex, sleep_and_log, (void *)10, 0, &b), 0);
	cr_assert_eq(exec_spawn(ex, sleep_and_log, (void *)20, 0, &c), 0);
	cr_assert_eq(exec_join(ex, a), 3);
	cr_assert_eq(exec_join(ex, b), 1);
	cr_assert_eq(exec_join(ex, c), 2);
	exec_destroy(ex);
}

static int until(struct exec *ex, void *arg)
{
	(void)arg;
	uint64_t dl = exec_now() + 15 * MS;
	cr_assert_eq(exec_sleep_until(ex, dl), 0);
	cr_assert_geq(exec_now(), dl);
	/* a deadline already past returns at once */
	uint64_t t0 = exec_now();
	cr_assert_eq(exec_sleep_until(ex, t0 - 5 * MS), 0);
	cr_assert_lt(exec_now() - t0, 100 * MS);
	return 0;
}

Test(async_cancel, sleep_until_monotonic_deadline)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;
	cr_assert_eq(exec_spawn(ex, until, NULL, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	exec_destroy(ex);
}

struct fdc {
	int fd;
	int res[3];
	int n;
};

static int poll_forever(struct exec *ex, void *arg)
{
	struct fdc *f = arg;
	int r = exec_poll(ex, f->fd, POLLIN);
	f->res[f->n++] = r;
	return r;
}

static int cancel_by_fd(struct exec *ex, void *arg)
{
	struct fdc *f = arg;
	if (exec_sleep(ex, 5 * MS))
		return -1;
	return exec_cancel_fd(ex, f->fd);
}

Test(async_cancel, cancel_fd_ends_every_op_on_it)
{
	struct exec *ex = test_exec(NULL);
	struct fdc f = {0};
	struct exec_task *a, *b, *c;
	int p[2];
	make_pipe(p);
	f.fd = p[0];
	cr_assert_eq(exec_spawn(ex, poll_forever, &f, 0, &a), 0);
	cr_assert_eq(exec_spawn(ex, poll_forever, &f, 0, &b), 0);
	cr_assert_eq(exec_spawn(ex, cancel_by_fd, &f, 0, &c), 0);
	cr_assert_eq(exec_join(ex, c), 2, "two polls found");
	cr_assert_eq(exec_join(ex, a), -ECANCELED);
	cr_assert_eq(exec_join(ex, b), -ECANCELED);
	close(p[0]);
	close(p[1]);
	exec_destroy(ex);
}

static int blocked_reader(struct exec *ex, void *arg)
{
	int fd = *(int *)arg;
	char buf[64];
	memset(buf, POISON, sizeof(buf));
	return exec_read(ex, fd, buf, sizeof(buf), 0);
}

static int short_task(struct exec *ex, void *arg)
{
	(void)arg;
	return exec_sleep(ex, 5 * MS);
}

/* Tearing down an executor whose task is parked in a read must cancel the
 * read and reap it before unmapping that task's stack: afterwards data
 * written to the pipe is still there, not swallowed into freed memory. */
Test(async_cancel, destroy_with_op_in_flight)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;
	int p[2];
	make_pipe(p);
	cr_assert_eq(exec_spawn(ex, blocked_reader, &p[0], 0, NULL), 0);
	cr_assert_eq(exec_spawn(ex, short_task, NULL, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	struct exec_stats st;
	exec_stats(ex, &st);
	cr_assert_eq(st.inflight, 1, "the reader's op is in flight");
	exec_destroy(ex);
	cr_assert_eq(write(p[1], "DATA", 4), 4);
	assert_pipe_still_has(p[0], "DATA");
	close(p[0]);
	close(p[1]);
}

/* Deadline scopes nest: the previous value comes back. */
static int scoped(struct exec *ex, void *arg)
{
	(void)arg;
	cr_assert_eq(exec_set_deadline(ex, 123), 0);
	cr_assert_eq(exec_set_deadline(ex, 0), 123);
	/* a deadline far away costs a linked timeout but changes no result */
	exec_set_deadline(ex, exec_now() + 5000 * MS);
	for (int i = 0; i < 100; i++)
		cr_assert_eq(exec_nop(ex), 0);
	return 0;
}

Test(async_cancel, deadline_scope)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;
	cr_assert_eq(exec_spawn(ex, scoped, NULL, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	struct exec_stats st;
	exec_stats(ex, &st);
	cr_assert_eq(st.cqes, 200, "each op plus its linked timeout");
	exec_destroy(ex);
}
