/*
 * Executor core: spawn order, thousands of tasks, join, nested spawns,
 * yield, deadlock detection, feature probing and fallbacks, the bound on
 * operations in flight, and a 1M-NOP stress run that must leak nothing.
 */
#include <errno.h>
#include <malloc.h>
#include <string.h>

#include <liburing.h>

#include "async/coro.h"
#include "tests/unit/async/async_test.h"

static int log_buf[64];
static int log_n;

static int log_id(struct exec *ex, void *arg)
{
	(void)ex;
	log_buf[log_n++] = (int)(intptr_t)arg;
	return (int)(intptr_t)arg * 2;
}

Test(async_exec, tasks_run_in_spawn_order)
{
	struct exec *ex = test_exec(NULL);
	log_n = 0;
	for (int i = 0; i < 10; i++)
		cr_assert_eq(exec_spawn(ex, log_id, (void *)(intptr_t)i, 0, NULL), 0);
	cr_assert_eq(log_n, 0, "spawn must not run the task synchronously");
	cr_assert_eq(exec_run(ex), 0);
	cr_assert_eq(log_n, 10);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(log_buf[i], i);
	exec_destroy(ex);
}

Test(async_exec, join_returns_result)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;
	log_n = 0;
	cr_assert_eq(exec_spawn(ex, log_id, (void *)(intptr_t)21, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 42);
	cr_assert_eq(log_n, 1);
	exec_destroy(ex);
}

static int yielder(struct exec *ex, void *arg)
{
	int id = (int)(intptr_t)arg;
	for (int i = 0; i < 3; i++) {
		log_buf[log_n++] = id * 10 + i;
		exec_yield(ex);
	}
	return 0;
}

Test(async_exec, yield_round_robins)
{
	struct exec *ex = test_exec(NULL);
	log_n = 0;
	cr_assert_eq(exec_spawn(ex, yielder, (void *)1, 0, NULL), 0);
	cr_assert_eq(exec_spawn(ex, yielder, (void *)2, 0, NULL), 0);
	cr_assert_eq(exec_run(ex), 0);
	int want[] = {10, 20, 11, 21, 12, 22};
	cr_assert_eq(log_n, 6);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(log_buf[i], want[i], "at %d: %d", i, log_buf[i]);
	exec_destroy(ex);
}

/* Each level spawns two children and joins them: sum of leaves. */
static int tree(struct exec *ex, void *arg)
{
	intptr_t depth = (intptr_t)arg;
	struct exec_task *a, *b;
	if (depth == 0)
		return 1;
	cr_assert_eq(exec_spawn(ex, tree, (void *)(depth - 1), 0, &a), 0);
	cr_assert_eq(exec_spawn(ex, tree, (void *)(depth - 1), 0, &b), 0);
	int ra = exec_join(ex, a);
	int rb = exec_join(ex, b);
	return ra + rb;
}

Test(async_exec, nested_spawns_and_joins)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *root;
	cr_assert_eq(exec_spawn(ex, tree, (void *)8, 0, &root), 0);
	cr_assert_eq(exec_join(ex, root), 256);
	struct exec_stats st;
	exec_stats(ex, &st);
	cr_assert_eq(st.tasks, 0);
	exec_destroy(ex);
}

static int counter;
static int nop_then_count(struct exec *ex, void *arg)
{
	int n = (int)(intptr_t)arg;
	for (int i = 0; i < n; i++)
		cr_assert_eq(exec_nop(ex), 0);
	counter++;
	return 0;
}

Test(async_exec, ten_thousand_coroutines)
{
	struct exec *ex = test_exec(NULL);
	counter = 0;
	for (int i = 0; i < 10000; i++)
		cr_assert_eq(exec_spawn(ex, nop_then_count, (void *)3, 16 * 1024, NULL), 0);
	cr_assert_eq(exec_run(ex), 0);
	cr_assert_eq(counter, 10000);
	struct exec_stats st;
	exec_stats(ex, &st);
	cr_assert_eq(st.cqes, 30000);
	cr_assert_leq(st.max_inflight, st.cq_entries);
	exec_destroy(ex);
}

/* With a tiny ring, 500 tasks all submitting at once must be throttled to
 * the CQ size (never overflowing it) and still all complete. */
Test(async_exec, inflight_bounded_by_cq)
{
	struct exec_params p = {.sq_entries = 4, .cq_entries = 8};
	struct exec *ex = test_exec(&p);
	struct exec_stats st;
	counter = 0;
	for (int i = 0; i < 500; i++)
		cr_assert_eq(exec_spawn(ex, nop_then_count, (void *)4, 0, NULL), 0);
	cr_assert_eq(exec_run(ex), 0);
	cr_assert_eq(counter, 500);
	exec_stats(ex, &st);
	cr_assert_eq(st.cq_entries, 8);
	cr_assert_eq(st.max_inflight, 8, "hwm %u", st.max_inflight);
	cr_assert_eq(st.inflight, 0);
	cr_assert_eq(st.cqes, 2000);
	exec_destroy(ex);
}

static int waits_forever(struct exec *ex, void *arg)
{
	return exec_waitq_wait(ex, arg);
}

Test(async_exec, deadlock_is_reported)
{
	struct exec *ex = test_exec(NULL);
	struct exec_waitq q;
	exec_waitq_init(&q);
	cr_assert_eq(exec_spawn(ex, waits_forever, &q, 0, NULL), 0);
	cr_assert_eq(exec_run(ex), -EDEADLK);
	exec_destroy(ex); /* discards the parked task */
}

Test(async_exec, ops_outside_tasks_are_eperm)
{
	struct exec *ex = test_exec(NULL);
	char b;
	cr_assert_eq(exec_nop(ex), -EPERM);
	cr_assert_eq(exec_read(ex, 0, &b, 1, 0), -EPERM);
	cr_assert_null(exec_self(ex));
	exec_destroy(ex);
}

static int join_self(struct exec *ex, void *arg)
{
	(void)arg;
	return exec_join(ex, exec_self(ex));
}

Test(async_exec, join_misuse)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;
	cr_assert_eq(exec_spawn(ex, join_self, NULL, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), -EDEADLK);
	cr_assert_eq(exec_join(ex, NULL), -EINVAL);
	exec_destroy(ex);
}

static int stack_user(struct exec *ex, void *arg)
{
	size_t n = (size_t)arg;
	volatile char buf[200 * 1024];
	(void)ex;
	buf[0] = 1;
	buf[n - 1] = 2;
	return buf[0] + buf[n - 1];
}

Test(async_exec, stack_size_per_task)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t;
	cr_assert_eq(exec_spawn(ex, stack_user, (void *)(200 * 1024), 1024 * 1024, &t), 0);
	cr_assert_eq(exec_join(ex, t), 3);
	exec_destroy(ex);
}

static uintptr_t frame_addr[32];

static int small_stack_user(struct exec *ex, void *arg)
{
	volatile char buf[10 * 1024];
	size_t i = (size_t)arg;

	buf[0] = 1;
	buf[sizeof(buf) - 1] = 2;
	frame_addr[i % 32] = (uintptr_t)&buf[0];
	if (exec_nop(ex))
		return -1;
	return buf[0] + buf[sizeof(buf) - 1];
}

/* Each task's frames start a task-specific number of cache lines below its
 * stack top (so dozens of tasks' hot frames do not fight over the same L1
 * sets), but the colouring takes at most 1/16 of the stack: the smallest
 * stacks stay usable. */
Test(async_exec, stack_colouring)
{
	struct exec *ex = test_exec(NULL);
	struct exec_task *t[40];
	unsigned distinct = 0;

	for (size_t i = 0; i < 40; i++)
		cr_assert_eq(exec_spawn(ex, small_stack_user, (void *)i, CORO_STACK_MIN, &t[i]), 0);
	for (size_t i = 0; i < 40; i++)
		cr_assert_eq(exec_join(ex, t[i]), 3);
	for (size_t i = 0; i < 32; i++) {
		size_t j;
		for (j = 0; j < i; j++)
			if ((frame_addr[j] & 4095) == (frame_addr[i] & 4095))
				break;
		distinct += j == i;
	}
	cr_assert_geq(distinct, 8, "only %u distinct stack colours", distinct);
	exec_destroy(ex);
}

Test(async_exec, features_probed)
{
	struct exec *ex = test_exec(NULL);
	unsigned f = exec_features(ex);
	/* This project's machines run Linux 6.18: everything must be found. */
	cr_assert(f & EXEC_FEAT_SINGLE_ISSUER, "features %#x", f);
	cr_assert(f & EXEC_FEAT_DEFER_TASKRUN, "features %#x", f);
	cr_assert(f & EXEC_FEAT_SUBMIT_ALL, "features %#x", f);
	cr_assert(f & EXEC_FEAT_RING_FD, "features %#x", f);
	cr_assert(exec_op_supported(ex, IORING_OP_READ));
	cr_assert(exec_op_supported(ex, IORING_OP_LINK_TIMEOUT));
	cr_assert_not(exec_op_supported(ex, 255));
	exec_destroy(ex);
}

static int sleeper_ops(struct exec *ex, void *arg)
{
	(void)arg;
	cr_assert_eq(exec_nop(ex), 0);
	cr_assert_eq(exec_sleep(ex, 1000000), 0);
	exec_set_deadline(ex, exec_now() + 1000000000ull);
	cr_assert_eq(exec_nop(ex), 0);
	return 7;
}

/* Older kernels are simulated by forbidding features: each rung of the
 * ladder must give a working executor. */
Test(async_exec, feature_fallbacks_work)
{
	const unsigned masks[] = {
	    EXEC_FEAT_DEFER_TASKRUN,                                              /* 5.19/6.0 */
	    EXEC_FEAT_DEFER_TASKRUN | EXEC_FEAT_SINGLE_ISSUER,                    /* 5.19 */
	    EXEC_FEAT_DEFER_TASKRUN | EXEC_FEAT_COOP_TASKRUN | EXEC_FEAT_RING_FD, /* 5.18 */
	    EXEC_FEAT_DEFER_TASKRUN | EXEC_FEAT_COOP_TASKRUN | EXEC_FEAT_SUBMIT_ALL |
	        EXEC_FEAT_RING_FD | EXEC_FEAT_CANCEL_ANY, /* 5.15 */
	};
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		struct exec_params p = {.no_features = masks[i]};
		struct exec *ex = test_exec(&p);
		struct exec_task *t;
		cr_assert_eq(exec_features(ex) & masks[i], 0, "rung %zu used a forbidden feature",
		             i);
		cr_assert_eq(exec_spawn(ex, sleeper_ops, NULL, 0, &t), 0);
		cr_assert_eq(exec_join(ex, t), 7, "rung %zu", i);
		exec_destroy(ex);
	}
}

static int nop_loop(struct exec *ex, void *arg)
{
	long n = (long)arg;
	for (long i = 0; i < n; i++)
		if (exec_nop(ex) != 0)
			return -1;
	return 0;
}

static int spawn_churn(struct exec *ex, void *arg)
{
	(void)arg;
	for (int i = 0; i < 2000; i++) {
		struct exec_task *t;
		if (exec_spawn(ex, nop_loop, (void *)1, 0, &t) || exec_join(ex, t))
			return -1;
	}
	return 0;
}

/* 1M NOPs through 64 tasks plus spawn/join churn: every completion is
 * accounted for, and after teardown no fd, mapping or heap byte is left. */
Test(async_exec, stress_1m_nops_no_leaks, .timeout = 120)
{
	NEED_IO_URING();
	int fds0 = test_count_fds(), maps0 = test_count_maps();
	struct mallinfo2 m0 = mallinfo2();
	for (int round = 0; round < 2; round++) {
		struct exec *ex = test_exec(NULL);
		struct exec_task *t[64], *churn;
		for (int i = 0; i < 64; i++)
			cr_assert_eq(
			    exec_spawn(ex, nop_loop, (void *)(1000000L / 64 / 2), 0, &t[i]), 0);
		cr_assert_eq(exec_spawn(ex, spawn_churn, NULL, 0, &churn), 0);
		for (int i = 0; i < 64; i++)
			cr_assert_eq(exec_join(ex, t[i]), 0);
		cr_assert_eq(exec_join(ex, churn), 0);
		struct exec_stats st;
		exec_stats(ex, &st);
		cr_assert_eq(st.cqes, 64 * (1000000 / 64 / 2) + 2000);
		cr_assert_eq(st.inflight, 0);
		cr_assert_eq(st.tasks, 0);
		exec_destroy(ex);
	}
	struct mallinfo2 m1 = mallinfo2();
	cr_assert_eq(test_count_fds(), fds0, "fd leak");
	cr_assert_eq(test_count_maps(), maps0, "mapping leak (coroutine stacks?)");
	cr_assert_leq(m1.uordblks, m0.uordblks + 4096, "heap grew %zu -> %zu", m0.uordblks,
	              m1.uordblks);
}

static int linked_needs_two(struct exec *ex, void *arg)
{
	(void)arg;
	cr_assert_eq(exec_nop(ex), 0, "a single SQE fits");
	exec_set_deadline(ex, exec_now() + 1000000000ull);
	/* an op plus its linked timeout can never fit a 1-entry SQ */
	cr_assert_eq(exec_nop(ex), -EBUSY);
	exec_set_deadline(ex, 0);
	cr_assert_eq(exec_nop(ex), 0, "the executor is still usable");
	return 0;
}

/* When no SQE can be had even after flushing the SQ, the operation fails
 * with a clear -EBUSY instead of hanging or submitting half a link. */
Test(async_exec, no_sqe_is_a_clear_error)
{
	struct exec_params p = {.sq_entries = 1, .cq_entries = 4};
	struct exec *ex = test_exec(&p);
	struct exec_task *t;
	struct exec_stats st;
	cr_assert_eq(exec_spawn(ex, linked_needs_two, NULL, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	exec_stats(ex, &st);
	cr_assert_eq(st.inflight, 0, "the failed op gave its CQ room back");
	exec_destroy(ex);
}
