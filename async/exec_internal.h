/*
 * Executor internals shared by exec.c (tasks and the loop), exec_ring.c
 * (ring setup), exec_ops.c (awaitable operations) and exec_sync.c (wait
 * queues, semaphores, eventfds). Not part of the public API.
 */
#ifndef RINGVM_ASYNC_EXEC_INTERNAL_H
#define RINGVM_ASYNC_EXEC_INTERNAL_H

#include <liburing.h>

#include "async/coro.h"
#include "async/exec.h"

/* Low bits of user_data say which of an exec_op's CQEs this is. */
enum {
	OP_TAG_MAIN = 0,
	OP_TAG_TIMEOUT = 1, /* the linked timeout */
	OP_TAG_CANCEL = 2,  /* an ASYNC_CANCEL aimed at the op */
	OP_TAG_BATCH = 3,   /* user_data is a struct exec_batch_op */
	OP_TAG_MASK = 3,
};
/* user_data 0: an internal fire-and-forget SQE; only inflight is owed.
 * UD_POSTED: a posted write with IOSQE_CQE_SKIP_SUCCESS, never counted in
 * inflight; its CQE only comes when it failed. */
#define UD_POSTED 1ull

/* What a parked task waits for, so exec_task_cancel knows how to end it. */
enum park {
	PARK_NONE,
	PARK_OP,      /* park_obj: struct exec_op on its stack */
	PARK_SLOT,    /* on ex->slot_waiters: waiting for CQ room */
	PARK_WAITQ,   /* park_obj: struct exec_waitq */
	PARK_EVENTFD, /* park_obj: struct exec_eventfd */
	PARK_JOIN,    /* park_obj: the task being joined */
	PARK_YIELD,   /* queued on the run queue */
	PARK_BATCH,   /* park_obj: struct exec_batch; ends only when it has completed */
};

struct exec_task {
	struct coro coro;
	struct exec *ex;
	exec_fn *fn;
	void *arg;
	int result;
	bool done, detached, cancelled;
	bool op_slow;       /* cancelled || deadline: operations leave the fast path */
	bool cancel_listed; /* on ex->cancel_head */
	unsigned color;     /* bytes of stack skipped at entry (cache-set colouring) */
	unsigned slot_need; /* CQ slots asked for while PARK_SLOT */
	enum park park;
	void *park_obj;
	int wake_res;                  /* what a non-op wait returns */
	uint64_t deadline;             /* 0: none */
	struct exec_task *next;        /* run queue, a wait queue, or the free list */
	struct exec_task *cancel_next; /* ex->cancel_head list */
	struct exec_op *cancel_op;     /* the op that list entry is for */
	struct exec_op *cancel_sent;   /* op already given an ASYNC_CANCEL */
	struct exec_task *joiner;
	struct exec_task *all_prev, *all_next; /* every live task, for teardown */
};

struct exec {
	struct io_uring ring;
	struct coro sched; /* the thread context running the loop */
	struct exec_task *current;
	struct exec_task *run_head, *run_tail; /* runnable, for the next pass */
	struct exec_task *batch;               /* the rest of the current pass */
	struct exec_task *cancel_head;         /* tasks whose op still needs an ASYNC_CANCEL */
	struct exec_waitq slot_waiters;
	struct exec_task *all;
	struct exec_task *free_tasks; /* finished tasks with default-size stacks */
	struct exec_task *zombie;     /* just exited, its stack freed after the switch */
	unsigned nfree;
	struct exec_eventfd *efds; /* armed eventfd reads */
	unsigned inflight, max_inflight;
	unsigned slots_promised; /* CQ room handed to woken slot waiters */
	unsigned ntasks;
	unsigned features;
	unsigned max_workers[2];
	size_t stack_size;
	uint64_t enters, cqes;
	unsigned inflight_hwm; /* updated lazily: before inflight ever drops */
	unsigned spawn_seq;    /* picks each new task's stack colour */
	uint8_t probe[256 / 8];
	bool in_loop;
	bool sq_deferred; /* SQEs were left for the next pass once already */
	bool post_skip;   /* posted writes use IOSQE_CQE_SKIP_SUCCESS */
};

/* ring setup (exec_ring.c) */
EXEC_WUR int ring_setup(struct exec *ex, const struct exec_params *p, bool disabled);

/* tasks (exec.c) */
static inline void task_make_runnable(struct exec *ex, struct exec_task *t)
{
	t->park = PARK_NONE;
	t->park_obj = NULL;
	t->next = NULL;
	if (ex->run_tail)
		ex->run_tail->next = t;
	else
		ex->run_head = t;
	ex->run_tail = t;
}

/*
 * Park the current task until something makes it runnable again. If more
 * tasks are due in this pass, switch straight to the next one instead of
 * going through the loop's context: one switch per task per pass, not two.
 */
static inline void task_park(struct exec *ex, enum park why, void *obj)
{
	struct exec_task *t = ex->current, *next = ex->batch;

	t->park = why;
	t->park_obj = obj;
	t->wake_res = 0;
	if (next) {
		ex->batch = next->next;
		next->next = NULL;
		ex->current = next;
		coro_switch(&t->coro, &next->coro);
	} else {
		coro_switch(&t->coro, &ex->sched);
	}
}
static inline void hwm_update(struct exec *ex)
{
	if (ex->inflight > ex->inflight_hwm)
		ex->inflight_hwm = ex->inflight;
}

/* Submit queued SQEs (waiting for one completion if wait) and reap all
 * completions. 0, -EDEADLK (wait with nothing in flight) or -errno. */
EXEC_WUR int reap_and_submit(struct exec *ex, bool wait);
/* Ask (from the loop, when there is CQ room) that op, which task t awaits,
 * be cancelled. */
void op_cancel_queue(struct exec *ex, struct exec_task *t, struct exec_op *op);

/* wait queues (exec_sync.c) */
void waitq_push(struct exec_waitq *q, struct exec_task *t);
struct exec_task *waitq_pop(struct exec_waitq *q);
bool waitq_remove(struct exec_waitq *q, struct exec_task *t);

/* operations (exec_ops.c) */
/* Reserve n CQ slots for the current task, parking while the CQ is full
 * (-ECANCELED if cancelled meanwhile). */
EXEC_WUR int slots_reserve(struct exec *ex, unsigned n);
/* Wake slot waiters for the CQ room that completions have freed. */
void slots_kick(struct exec *ex);
/* Get n consecutive SQEs (slots already reserved), flushing a full SQ. */
EXEC_WUR int sqes_get(struct exec *ex, struct io_uring_sqe **sqes, unsigned n);
void slots_release(struct exec *ex, unsigned n);
/* Account for one reaped CQE and wake its op's task when nothing more is
 * owed (inline: the reap loop runs it once per completion). */
static inline void op_complete(struct exec *ex, const struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	struct exec_op *op;
	struct exec_task *t;

	if (__builtin_expect(ud == UD_POSTED, 0))
		return; /* a posted write failed; nothing waits for it */
	ex->inflight--;
	if (!ud)
		return;
	op = (struct exec_op *)(uintptr_t)(ud & ~(uint64_t)OP_TAG_MASK);
	switch (ud & OP_TAG_MASK) {
	case OP_TAG_MAIN:
		op->res = cqe->res;
		op->cqe_flags = cqe->flags;
		break;
	case OP_TAG_TIMEOUT:
		op->link_res = cqe->res;
		break;
	case OP_TAG_BATCH: {
		struct exec_batch_op *o = (struct exec_batch_op *)op;
		o->res = cqe->res;
		op = &o->batch->op;
		break;
	}
	default:
		break; /* the cancel's own result does not matter: the op's does */
	}
	if (--op->pending == 0 && (t = op->task)) {
		op->task = NULL;
		task_make_runnable(ex, t);
	}
}
/* Put an ASYNC_CANCEL for op in the SQ, its CQE owed to op (pending++).
 * Needs CQ room (not reserved here). 0 or -errno. */
EXEC_WUR int op_cancel_submit(struct exec *ex, struct exec_op *op);
/* Submit the cancels queued by op_cancel_queue, as CQ room allows. */
void cancels_submit(struct exec *ex);
/* Arm e's read (reserving CQ room). 0 or -errno. */
EXEC_WUR int efd_arm(struct exec *ex, struct exec_eventfd *e);
/* Cancel e's armed read and park until its CQE is reaped. 0 or -errno. */
EXEC_WUR int efd_cancel_await(struct exec *ex, struct exec_eventfd *e);

static inline uint64_t op_ud(struct exec_op *op, unsigned tag)
{
	return (uint64_t)(uintptr_t)op | tag;
}

#endif
