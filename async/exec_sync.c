/*
 * Waiting for other tasks and for eventfds: FIFO wait queues, counting
 * semaphores, and eventfd waits with exactly one read armed at a time.
 * None of these allocate: waiters are linked through their task.
 */
#include <errno.h>
#include <string.h>

#include "async/exec_internal.h"

void exec_waitq_init(struct exec_waitq *q)
{
	q->head = q->tail = NULL;
}

void waitq_push(struct exec_waitq *q, struct exec_task *t)
{
	t->next = NULL;
	if (q->tail)
		q->tail->next = t;
	else
		q->head = t;
	q->tail = t;
}

struct exec_task *waitq_pop(struct exec_waitq *q)
{
	struct exec_task *t = q->head;

	if (t) {
		q->head = t->next;
		if (!q->head)
			q->tail = NULL;
		t->next = NULL;
	}
	return t;
}

bool waitq_remove(struct exec_waitq *q, struct exec_task *t)
{
	struct exec_task *prev = NULL, *cur;

	for (cur = q->head; cur; prev = cur, cur = cur->next) {
		if (cur != t)
			continue;
		if (prev)
			prev->next = cur->next;
		else
			q->head = cur->next;
		if (q->tail == cur)
			q->tail = prev;
		cur->next = NULL;
		return true;
	}
	return false;
}

int exec_waitq_wait(struct exec *ex, struct exec_waitq *q)
{
	struct exec_task *t = ex->current;

	if (!t)
		return -EPERM;
	if (t->cancelled)
		return -ECANCELED;
	waitq_push(q, t);
	task_park(ex, PARK_WAITQ, q);
	return t->wake_res;
}

unsigned exec_waitq_wake(struct exec *ex, struct exec_waitq *q, unsigned n)
{
	unsigned woken = 0;
	struct exec_task *t;

	while (woken < n && (t = waitq_pop(q))) {
		task_make_runnable(ex, t);
		woken++;
	}
	return woken;
}

void exec_sem_init(struct exec_sem *s, uint64_t count)
{
	s->count = count;
	exec_waitq_init(&s->q);
}

int exec_sem_wait(struct exec *ex, struct exec_sem *s)
{
	if (!ex->current)
		return -EPERM;
	if (ex->current->cancelled)
		return -ECANCELED;
	if (s->count) {
		s->count--;
		return 0;
	}
	/* A post hands its unit straight to us (the count is not raised), so
	 * a task arriving later cannot steal it between the wake and our run. */
	return exec_waitq_wait(ex, &s->q);
}

void exec_sem_post(struct exec *ex, struct exec_sem *s)
{
	if (!exec_waitq_wake(ex, &s->q, 1))
		s->count++;
}

void exec_eventfd_init(struct exec_eventfd *e, int fd)
{
	memset(e, 0, sizeof(*e));
	e->fd = fd;
}

static void efd_unlink(struct exec *ex, struct exec_eventfd *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		ex->efds = e->next;
	if (e->next)
		e->next->prev = e->prev;
	e->prev = e->next = NULL;
	e->armed = false;
}

int64_t exec_eventfd_wait(struct exec *ex, struct exec_eventfd *e)
{
	struct exec_task *t = ex->current;
	uint64_t value;
	int ret, res;

	if (!t)
		return -EPERM;
	if (e->waiter)
		return -EBUSY;
	if (t->cancelled)
		return -ECANCELED;
	if (!e->armed) {
		ret = efd_arm(ex, e);
		if (ret)
			return ret;
	}
	if (e->op.pending) {
		e->waiter = t;
		e->op.task = t;
		task_park(ex, PARK_EVENTFD, e);
		e->waiter = NULL;
		if (t->wake_res)
			return t->wake_res; /* cancelled; the read stays armed for later */
	}
	res = e->op.res;
	value = e->value;
	efd_unlink(ex, e);
	/* Re-arm at once: a kick that arrives while the caller works completes
	 * this read and is what the next wait returns. If re-arming fails the
	 * next wait retries; the value read now is returned either way. */
	ret = efd_arm(ex, e);
	(void)ret;
	if (res < 0)
		return res;
	if (res != (int)sizeof(value))
		return -EIO;
	return (int64_t)value;
}

int64_t exec_eventfd_close(struct exec *ex, struct exec_eventfd *e)
{
	int ret, res;

	if (!ex->current)
		return -EPERM;
	if (e->waiter)
		return -EBUSY;
	if (!e->armed)
		return 0;
	ret = efd_cancel_await(ex, e);
	if (ret)
		return ret;
	res = e->op.res;
	efd_unlink(ex, e);
	if (res == (int)sizeof(e->value))
		return (int64_t)e->value; /* the read won the race: report the kick */
	return res == -ECANCELED ? 0 : res;
}
