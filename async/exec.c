/*
 * Tasks and the run loop: spawn, join, yield, cancel, the FIFO run queue,
 * and the loop that runs every ready task, submits everything they queued
 * with one io_uring submit, then reaps all completions in one batch.
 * Teardown that never frees a stack the kernel may still write to.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "async/exec_internal.h"

/* Finished tasks kept with their stacks so spawn needs no mmap. */
#define FREE_TASKS_MAX 128

uint64_t exec_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int exec_create(struct exec **out, const struct exec_params *p)
{
	struct exec *ex = calloc(1, sizeof(*ex));
	int ret;

	if (!ex)
		return -ENOMEM;
	coro_init_thread(&ex->sched);
	ret = ring_setup(ex, p, false);
	if (ret)
		goto err_free;
	*out = ex;
	return 0;

err_free:
	free(ex);
	return ret;
}

static void task_free(struct exec_task *t)
{
	coro_stack_destroy(&t->coro);
	free(t);
}

static void cancel_unlist(struct exec *ex, struct exec_task *t)
{
	struct exec_task **pp;

	for (pp = &ex->cancel_head; *pp; pp = &(*pp)->cancel_next)
		if (*pp == t) {
			*pp = t->cancel_next;
			break;
		}
	t->cancel_listed = false;
}

static void task_release(struct exec *ex, struct exec_task *t)
{
	/* The cancel list may still name t if its op ended before the cancel
	 * was submitted; t may be reused or freed now. */
	if (t->cancel_listed)
		cancel_unlist(ex, t);
	if (t->all_prev)
		t->all_prev->all_next = t->all_next;
	else
		ex->all = t->all_next;
	if (t->all_next)
		t->all_next->all_prev = t->all_prev;

	if (t->coro.stack_size == ex->stack_size && ex->nfree < FREE_TASKS_MAX) {
		t->next = ex->free_tasks;
		ex->free_tasks = t;
		ex->nfree++;
		return;
	}
	task_free(t);
}

static void task_main(void *arg)
{
	struct exec_task *t = arg;
	struct exec *ex = t->ex;
	/* Stacks are mapped at page-multiple distances, so every task's hot
	 * frames (this one, fn's, the awaiting op's, the switch's) would sit
	 * in the same few L1 sets and evict each other on every pass with a
	 * few dozen tasks. Skipping a per-task number of cache lines here
	 * spreads them over the sets. */
	volatile char *pad = __builtin_alloca(t->color + 1);

	pad[0] = 0;
	t->result = t->fn(ex, t->arg);
	t->done = true;
	ex->ntasks--;
	if (t->joiner) {
		struct exec_task *j = t->joiner;
		t->joiner = NULL;
		task_make_runnable(ex, j);
	}
	/* Our stack is still in use until the switch: the loop frees it. */
	ex->zombie = t;
	coro_exit(&t->coro, &ex->sched);
}

/* Returns once the loop's context is switched back to: by t, or by a later
 * task of the same pass that had nobody left to hand over to. */
static void task_resume(struct exec *ex, struct exec_task *t)
{
	ex->current = t;
	coro_switch(&ex->sched, &t->coro);
	ex->current = NULL;
	if (ex->zombie) {
		struct exec_task *z = ex->zombie;
		ex->zombie = NULL;
		if (z->detached)
			task_release(ex, z);
	}
}

int exec_spawn(struct exec *ex, exec_fn *fn, void *arg, size_t stack_size, struct exec_task **task)
{
	struct exec_task *t;
	int ret;

	if (!fn)
		return -EINVAL;
	if (!stack_size)
		stack_size = ex->stack_size;
	if (stack_size == ex->stack_size && ex->free_tasks) {
		t = ex->free_tasks;
		ex->free_tasks = t->next;
		ex->nfree--;
	} else {
		t = calloc(1, sizeof(*t));
		if (!t)
			return -ENOMEM;
		ret = coro_stack_create(&t->coro, stack_size);
		if (ret)
			goto err_free;
	}
	t->ex = ex;
	t->fn = fn;
	t->arg = arg;
	t->result = 0;
	t->done = false;
	t->detached = task == NULL;
	t->cancelled = false;
	t->op_slow = false;
	t->cancel_listed = false;
	/* Colour: 0..31 steps of 128 bytes (< 4 KiB), at most 1/16 of the stack. */
	t->color = ((ex->spawn_seq++ * 7u) & 31u) * 128u;
	while (t->color && t->color > t->coro.stack_size / 16)
		t->color /= 2;
	t->cancel_sent = NULL;
	t->deadline = 0;
	t->joiner = NULL;
	t->cancel_next = NULL;
	coro_prepare(&t->coro, task_main, t);

	t->all_prev = NULL;
	t->all_next = ex->all;
	if (ex->all)
		ex->all->all_prev = t;
	ex->all = t;
	ex->ntasks++;
	task_make_runnable(ex, t);
	if (task)
		*task = t;
	return 0;

err_free:
	free(t);
	return ret;
}

/* Run every task that was ready when the pass began, in FIFO order; tasks
 * woken meanwhile wait for the next pass, after the next submit/reap. */
static void run_ready(struct exec *ex)
{
	struct exec_task *t;

	ex->batch = ex->run_head;
	ex->run_head = ex->run_tail = NULL;
	while ((t = ex->batch)) {
		ex->batch = t->next;
		t->next = NULL;
		task_resume(ex, t);
	}
}

int reap_and_submit(struct exec *ex, bool wait)
{
	struct io_uring *ring = &ex->ring;
	unsigned head, tail, n = 0;
	int ret;

	if (ex->cancel_head)
		cancels_submit(ex);
	if (wait && ex->inflight == 0)
		return -EDEADLK;
	if (!wait && io_uring_sq_ready(&ex->ring) && !ex->sq_deferred) {
		/*
		 * Tasks are runnable: SQEs queued in this pass wait one more pass
		 * so they go in with the next pass's (typically the enter that
		 * also waits) — e.g. a re-armed kick read and the request it led
		 * to, one syscall instead of two. Never longer than one pass, so
		 * a task that yields while waiting for its own I/O still gets it.
		 */
		ex->sq_deferred = true;
		return 0;
	}
	ex->sq_deferred = false;
	if (wait || io_uring_sq_ready(&ex->ring))
		ex->enters++;
	do {
		/* One enter both submits the batch and (if idle) waits. */
		ret = wait ? io_uring_submit_and_wait(&ex->ring, 1) : io_uring_submit(&ex->ring);
	} while (ret == -EINTR);
	/* -EAGAIN/-EBUSY: the kernel wants completions reaped first. */
	if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME)
		return ret;

	/* inflight only grows between reaps: its high-water mark is now. */
	hwm_update(ex);
	/* One acquire of the tail for the whole batch (io_uring_for_each_cqe
	 * reloads it per CQE); what arrives meanwhile is reaped next time.
	 * The ring never uses IORING_SETUP_CQE32. */
	head = *ring->cq.khead;
	tail = io_uring_smp_load_acquire(ring->cq.ktail);
	for (; head != tail; head++, n++)
		op_complete(ex, &ring->cq.cqes[head & ring->cq.ring_mask]);
	if (n) {
		io_uring_smp_store_release(ring->cq.khead, head);
		ex->cqes += n;
	}
	if (ex->slot_waiters.head)
		slots_kick(ex);
	return 0;
}

/* One loop iteration on behalf of exec_join(until) or exec_run (until NULL):
 * never blocks once what the caller waits for has happened. */
static int loop_step(struct exec *ex, struct exec_task *until)
{
	run_ready(ex);
	if (until ? until->done : !ex->ntasks)
		return 0;
	if (!ex->run_head && !ex->inflight)
		return ex->ntasks ? -EDEADLK : 0; /* nothing left that could wake anyone */
	return reap_and_submit(ex, ex->run_head == NULL);
}

bool exec_others_runnable(const struct exec *ex)
{
	return ex->batch || ex->run_head;
}

int exec_run(struct exec *ex)
{
	int ret = 0;

	if (ex->current || ex->in_loop)
		return -EPERM;
	ex->in_loop = true;
	while (ex->ntasks) {
		ret = loop_step(ex, NULL);
		if (ret < 0)
			break;
	}
	ex->in_loop = false;
	return ret;
}

int exec_join(struct exec *ex, struct exec_task *t)
{
	struct exec_task *self = ex->current;
	int ret;

	if (!t || t->detached || t->ex != ex)
		return -EINVAL;
	if (self == t)
		return -EDEADLK;
	if (self && !t->done) {
		if (self->cancelled)
			return -ECANCELED;
		if (t->joiner)
			return -EBUSY;
		t->joiner = self;
		task_park(ex, PARK_JOIN, t);
		/* Cancelled: t may have finished meanwhile, but stays joinable. */
		if (self->wake_res)
			return self->wake_res;
	} else if (!self && !t->done) {
		if (ex->in_loop)
			return -EPERM;
		ex->in_loop = true;
		while (!t->done) {
			ret = loop_step(ex, t);
			if (ret < 0 && !t->done) {
				ex->in_loop = false;
				return ret;
			}
		}
		ex->in_loop = false;
	}
	ret = t->result;
	task_release(ex, t);
	return ret;
}

void exec_yield(struct exec *ex)
{
	struct exec_task *t = ex->current;

	if (!t)
		return;
	task_make_runnable(ex, t);
	task_park(ex, PARK_YIELD, NULL);
	t->park = PARK_NONE;
}

struct exec_task *exec_self(struct exec *ex)
{
	return ex->current;
}

bool exec_cancelled(struct exec *ex)
{
	return ex->current && ex->current->cancelled;
}

uint64_t exec_set_deadline(struct exec *ex, uint64_t deadline_ns)
{
	struct exec_task *t = ex->current;
	uint64_t old;

	if (!t)
		return 0;
	old = t->deadline;
	t->deadline = deadline_ns;
	t->op_slow = t->cancelled || deadline_ns;
	return old;
}

static void wake_cancelled(struct exec *ex, struct exec_task *t)
{
	task_make_runnable(ex, t);
	t->wake_res = -ECANCELED;
}

void op_cancel_queue(struct exec *ex, struct exec_task *t, struct exec_op *op)
{
	if (t->cancel_listed || t->cancel_sent == op)
		return;
	t->cancel_listed = true;
	t->cancel_op = op;
	t->cancel_next = ex->cancel_head;
	ex->cancel_head = t;
}

int exec_task_cancel(struct exec *ex, struct exec_task *t)
{
	if (!t || t->ex != ex)
		return -EINVAL;
	if (t->done)
		return -ESRCH;
	t->cancelled = true;
	t->op_slow = true;
	switch (t->park) {
	case PARK_OP:
		/* The op's memory is the kernel's: ask it back, resume on its CQE. */
		op_cancel_queue(ex, t, t->park_obj);
		break;
	case PARK_SLOT:
		waitq_remove(&ex->slot_waiters, t);
		wake_cancelled(ex, t);
		break;
	case PARK_WAITQ:
		waitq_remove(t->park_obj, t);
		wake_cancelled(ex, t);
		break;
	case PARK_EVENTFD: {
		/* The read stays armed (it belongs to the eventfd, not to t). */
		struct exec_eventfd *e = t->park_obj;
		e->waiter = NULL;
		e->op.task = NULL;
		wake_cancelled(ex, t);
		break;
	}
	case PARK_JOIN:
		((struct exec_task *)t->park_obj)->joiner = NULL;
		wake_cancelled(ex, t);
		break;
	case PARK_NONE:
	case PARK_YIELD:
		break; /* running or runnable: its next wait sees the flag */
	case PARK_BATCH:
		break; /* resumes when the batch has completed (exec.h) */
	}
	return 0;
}

void exec_stats(const struct exec *ex, struct exec_stats *out)
{
	out->enters = ex->enters;
	out->cqes = ex->cqes;
	out->inflight = ex->inflight;
	out->max_inflight = ex->inflight > ex->inflight_hwm ? ex->inflight : ex->inflight_hwm;
	out->cq_entries = ex->max_inflight;
	out->tasks = ex->ntasks;
}

/* Cancel everything still owed and reap until nothing is: only then may
 * stacks and eventfd buffers be freed. */
static void drain(struct exec *ex)
{
	struct exec_task *t;
	struct exec_eventfd *e;

	if (!ex->inflight)
		return;
	for (t = ex->all; t; t = t->all_next)
		if (t->park == PARK_OP)
			op_cancel_queue(ex, t, t->park_obj);
	for (e = ex->efds; e; e = e->next)
		if (e->op.pending && ex->inflight < ex->max_inflight) {
			int ret = op_cancel_submit(ex, &e->op);
			(void)ret; /* on failure the read still ends when the ring closes */
		}
	while (ex->inflight) {
		int ret = reap_and_submit(ex, true);
		if (ret < 0 && ret != -EDEADLK)
			break;
	}
}

void exec_destroy(struct exec *ex)
{
	struct exec_task *t;

	if (!ex)
		return;
	drain(ex);
	while ((t = ex->all)) {
		ex->all = t->all_next;
		task_free(t);
	}
	while ((t = ex->free_tasks)) {
		ex->free_tasks = t->next;
		task_free(t);
	}
	io_uring_queue_exit(&ex->ring);
	free(ex);
}
