/*
 * Coroutine-to-coroutine wake-ups and eventfd waits: semaphores hand units
 * over in FIFO order and never lose a post; wait queues wake n or all; an
 * eventfd keeps exactly one read armed, so kicks that arrive while its
 * task is busy are neither lost nor counted twice.
 */
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>

#include "tests/unit/async/async_test.h"

#define MS 1000000ull

static int order[32], norder;

struct semw {
	struct exec_sem *s;
	int id;
};

static int sem_taker(struct exec *ex, void *arg)
{
	struct semw *w = arg;
	int r = exec_sem_wait(ex, w->s);
	if (r)
		return r;
	order[norder++] = w->id;
	return 0;
}

static int sem_poster(struct exec *ex, void *arg)
{
	struct exec_sem *s = arg;
	for (int i = 0; i < 4; i++) {
		exec_sem_post(ex, s);
		exec_yield(ex);
	}
	return 0;
}

Test(async_sync, semaphore_fifo_handoff)
{
	struct exec *ex = test_exec(NULL);
	struct exec_sem s;
	struct semw w[4];
	exec_sem_init(&s, 0);
	norder = 0;
	for (int i = 0; i < 4; i++) {
		w[i] = (struct semw){&s, i};
		cr_assert_eq(exec_spawn(ex, sem_taker, &w[i], 0, NULL), 0);
	}
	cr_assert_eq(exec_spawn(ex, sem_poster, &s, 0, NULL), 0);
	cr_assert_eq(exec_run(ex), 0);
	cr_assert_eq(norder, 4);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(order[i], i, "FIFO: waiter %d woke at %d", order[i], i);
	cr_assert_eq(s.count, 0);
	exec_destroy(ex);
}

Test(async_sync, semaphore_counts_posts_without_waiters)
{
	struct exec *ex = test_exec(NULL);
	struct exec_sem s;
	struct semw w[3];
	exec_sem_init(&s, 0);
	for (int i = 0; i < 3; i++)
		exec_sem_post(ex, &s); /* from outside any task: must count */
	cr_assert_eq(s.count, 3);
	norder = 0;
	for (int i = 0; i < 3; i++) {
		w[i] = (struct semw){&s, i};
		cr_assert_eq(exec_spawn(ex, sem_taker, &w[i], 0, NULL), 0);
	}
	cr_assert_eq(exec_run(ex), 0);
	cr_assert_eq(norder, 3);
	cr_assert_eq(s.count, 0);
	exec_destroy(ex);
}

static int wq_waiter(struct exec *ex, void *arg)
{
	int r = exec_waitq_wait(ex, arg);
	if (r == 0)
		norder++;
	return r;
}

static int wq_waker(struct exec *ex, void *arg)
{
	struct exec_waitq *q = arg;
	exec_yield(ex); /* let all five park */
	cr_assert_eq(exec_waitq_wake(ex, q, 2), 2);
	exec_yield(ex);
	cr_assert_eq(norder, 2);
	cr_assert_eq(exec_waitq_wake(ex, q, ~0u), 3);
	cr_assert_eq(exec_waitq_wake(ex, q, 1), 0, "queue is empty now");
	return 0;
}

Test(async_sync, waitq_wake_n_and_all)
{
	struct exec *ex = test_exec(NULL);
	struct exec_waitq q;
	exec_waitq_init(&q);
	norder = 0;
	for (int i = 0; i < 5; i++)
		cr_assert_eq(exec_spawn(ex, wq_waiter, &q, 0, NULL), 0);
	cr_assert_eq(exec_spawn(ex, wq_waker, &q, 0, NULL), 0);
	cr_assert_eq(exec_run(ex), 0);
	cr_assert_eq(norder, 5);
	exec_destroy(ex);
}

struct kick {
	int efd;
	struct exec_eventfd e;
	int64_t got[16];
	int n;
	int64_t total;
	int phase;
	int64_t closed;
};

/* The queue worker: waits, then is "busy" (sleeps) while kicks arrive. */
static int kick_worker(struct exec *ex, void *arg)
{
	struct kick *k = arg;
	exec_eventfd_init(&k->e, k->efd);
	while (k->total < 10) {
		int64_t v = exec_eventfd_wait(ex, &k->e);
		if (v < 0)
			return (int)v;
		k->got[k->n++] = v;
		k->total += v;
		if (k->n == 1) {
			/* busy: kicks now must land in the armed read or the counter */
			cr_assert(k->e.armed, "read re-armed before returning");
			int r = exec_sleep(ex, 20 * MS);
			if (r)
				return r;
		}
	}
	/* nothing pending: a wait must block (bounded here by cancellation) */
	k->phase = 1;
	int64_t v = exec_eventfd_wait(ex, &k->e);
	k->phase = 2;
	k->closed = exec_eventfd_close(ex, &k->e);
	return (int)v;
}

static int kicker(struct exec *ex, void *arg)
{
	struct kick *k = ((void **)arg)[0];
	struct exec_task *w = ((void **)arg)[1];
	uint64_t one = 1;
	cr_assert_eq(write(k->efd, &one, 8), 8); /* first kick: wakes the waiter */
	if (exec_sleep(ex, 5 * MS))
		return -1;
	/* worker is busy now: 9 more kicks, from "the guest" */
	for (int i = 0; i < 9; i++) {
		cr_assert_eq(write(k->efd, &one, 8), 8);
		if (i == 4 && exec_sleep(ex, 2 * MS))
			return -1;
	}
	while (k->phase != 1)
		if (exec_sleep(ex, 1 * MS))
			return -1;
	if (exec_sleep(ex, 10 * MS))
		return -1;
	cr_assert_eq(k->phase, 1, "wait returned with no kick pending");
	return exec_task_cancel(ex, w);
}

Test(async_sync, eventfd_kicks_not_lost_not_double_counted)
{
	struct exec *ex = test_exec(NULL);
	struct kick k = {0};
	struct exec_task *w, *kt;
	k.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	cr_assert_eq(exec_spawn(ex, kick_worker, &k, 0, &w), 0);
	void *args[2] = {&k, w};
	cr_assert_eq(exec_spawn(ex, kicker, args, 0, &kt), 0);
	cr_assert_eq(exec_join(ex, kt), 0);
	cr_assert_eq(exec_join(ex, w), -ECANCELED);
	cr_assert_eq(k.total, 10, "sum of values = number of kicks");
	cr_assert_eq(k.got[0], 1);
	cr_assert_leq(k.n, 4, "busy-time kicks are coalesced, not one wake each (n=%d)", k.n);
	cr_assert_eq(k.closed, 0, "close found no further kick");
	cr_assert_not(k.e.armed);
	struct exec_stats st;
	exec_stats(ex, &st);
	cr_assert_eq(st.inflight, 0, "close reaped the armed read");
	/* the counter is really empty: nothing was left behind */
	uint64_t v;
	cr_assert_eq(read(k.efd, &v, 8), -1);
	cr_assert_eq(errno, EAGAIN);
	close(k.efd);
	exec_destroy(ex);
}

static int armed_probe(struct exec *ex, void *arg)
{
	struct kick *k = arg;
	uint64_t one = 1;
	exec_eventfd_init(&k->e, k->efd);
	for (int i = 0; i < 50; i++) {
		cr_assert_eq(write(k->efd, &one, 8), 8);
		int64_t v = exec_eventfd_wait(ex, &k->e);
		cr_assert_eq(v, 1, "round %d", i);
		struct exec_stats st;
		exec_stats(ex, &st);
		/* exactly one read armed: the only thing this executor has in flight */
		cr_assert_eq(st.inflight, 1, "round %d: %u in flight", i, st.inflight);
	}
	cr_assert_eq(exec_eventfd_close(ex, &k->e), 0);
	return 0;
}

Test(async_sync, eventfd_exactly_one_read_armed)
{
	struct exec *ex = test_exec(NULL);
	struct kick k = {0};
	struct exec_task *t;
	k.efd = eventfd(0, EFD_CLOEXEC);
	cr_assert_eq(exec_spawn(ex, armed_probe, &k, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	close(k.efd);
	exec_destroy(ex);
}

/* Two "queues" of one device: queue 0 completes requests and signals queue
 * 1's coroutine through a semaphore, the pattern for multi-queue devices. */
struct mq {
	struct exec_sem sem;
	int handled;
};

static int mq_producer(struct exec *ex, void *arg)
{
	struct mq *m = arg;
	for (int i = 0; i < 1000; i++) {
		if (exec_nop(ex))
			return -1;
		exec_sem_post(ex, &m->sem);
	}
	return 0;
}

static int mq_consumer(struct exec *ex, void *arg)
{
	struct mq *m = arg;
	for (int i = 0; i < 1000; i++) {
		if (exec_sem_wait(ex, &m->sem))
			return -1;
		m->handled++;
	}
	return 0;
}

Test(async_sync, semaphore_between_queue_coroutines)
{
	struct exec *ex = test_exec(NULL);
	struct mq m = {0};
	struct exec_task *p, *c;
	exec_sem_init(&m.sem, 0);
	cr_assert_eq(exec_spawn(ex, mq_consumer, &m, 0, &c), 0);
	cr_assert_eq(exec_spawn(ex, mq_producer, &m, 0, &p), 0);
	cr_assert_eq(exec_join(ex, p), 0);
	cr_assert_eq(exec_join(ex, c), 0);
	cr_assert_eq(m.handled, 1000);
	exec_destroy(ex);
}
