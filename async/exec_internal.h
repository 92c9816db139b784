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
	OP_TAG_MASK = 3,
};
/* user_data 0: an internal fire-and-forget SQE; only inflight is owed. */

/* What a parked task waits for, so exec_task_cancel knows how to end it. */
enum park {
	PARK_NONE,
	PARK_OP,      /* park_obj: struct exec_op on its stack */
	PARK_SLOT,    /* on ex->slot_waiters: waiting for CQ room */
	PARK_WAITQ,   /* park_obj: struct exec_waitq */
	PARK_EVENTFD, /* park_obj: struct exec_eventfd */
	PARK_JOIN,    /* park_obj: the task being joined */
	PARK_YIELD,   /* queued on the run queue */
};

struct exec_task {
	struct coro coro;
	struct exec *ex;
	exec_fn *fn;
	void *arg;
	int result;
	bool done, detached, cancelled;
	enum park park;
	void *park_obj;
	int wake_res;                 /* what a non-op wait returns */
	uint64_t deadline;            /* 0: none */
	struct exec_task *next;       /* run queue, a wait queue, or the free list */
	struct exec_task *cancel_next; /* ex->cancel_head list */
	struct exec_task *joiner;
	struct exec_task *all_prev, *all_next; /* every live task, for teardown */
};

struct exec {
	struct io_uring ring;
	struct coro sched; /* the thread context running the loop */
	struct exec_task *current;
	struct exec_task *run_head, *run_tail;
	struct exec_task *cancel_head; /* tasks whose op still needs an ASYNC_CANCEL */
	struct exec_waitq slot_waiters;
	struct exec_task *all;
	struct exec_task *free_tasks; /* finished tasks with default-size stacks */
	struct exec_task *zombie;     /* just exited, its stack freed after the switch */
	unsigned nfree;
	unsigned inflight, max_inflight;
	unsigned ntasks;
	unsigned features;
	unsigned max_workers[2];
	size_t stack_size;
	uint64_t enters, cqes;
	unsigned inflight_hwm;
	uint8_t probe[256 / 8];
	bool in_loop;
};

/* ring setup (exec_ring.c) */
EXEC_WUR int ring_setup(struct exec *ex, const struct exec_params *p, bool disabled);

/* tasks (exec.c) */
void task_make_runnable(struct exec *ex, struct exec_task *t);
/* Park the current task until something makes it runnable again. */
void task_park(struct exec *ex, enum park why, void *obj);
EXEC_WUR int reap_and_submit(struct exec *ex, bool wait);

/* operations (exec_ops.c) */
/* Reserve n CQ slots for the current task, parking while the CQ is full. */
EXEC_WUR int slots_reserve(struct exec *ex, unsigned n);
/* Get n consecutive SQEs (slots already reserved), flushing a full SQ. */
EXEC_WUR int sqes_get(struct exec *ex, struct io_uring_sqe **sqes, unsigned n);
void slots_release(struct exec *ex, unsigned n);
void op_complete(struct exec *ex, struct io_uring_cqe *cqe);
/* Queue/submit an ASYNC_CANCEL for op, owed to op itself (pending++). */
EXEC_WUR int op_cancel_submit(struct exec *ex, struct exec_op *op);
void cancels_submit(struct exec *ex);

static inline uint64_t op_ud(struct exec_op *op, unsigned tag)
{
	return (uint64_t)(uintptr_t)op | tag;
}

#endif
