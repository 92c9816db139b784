/*
 * The portable ucontext backend, built and run on x86-64 so it cannot rot:
 * this file compiles async/coro.c and async/coro_ucontext.c again with
 * CORO_FORCE_UCONTEXT and every coro_ symbol renamed (uc_coro_...), then
 * runs the same kind of switching the assembly backend gets.
 */
#define CORO_FORCE_UCONTEXT 1
#define coro_init_thread    uc_coro_init_thread
#define coro_stack_create   uc_coro_stack_create
#define coro_stack_round    uc_coro_stack_round
#define coro_stack_destroy  uc_coro_stack_destroy
#define coro_prepare        uc_coro_prepare
#define coro_switch         uc_coro_switch
#define coro_exit           uc_coro_exit
#define coro_arch_entry     uc_coro_arch_entry
#define coro_arch_prepare   uc_coro_arch_prepare
#define coro_arch_swap      uc_coro_arch_swap

#include "async/coro.c"
#include "async/coro_ucontext.c"

#include <criterion/criterion.h>
#include <signal.h>

#ifndef CORO_BACKEND_UCONTEXT
#error "CORO_FORCE_UCONTEXT did not select the ucontext backend"
#endif

static struct coro uc_main, uc_a, uc_b;
static int order[64], norder;

static void worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	struct coro *self = id == 1 ? &uc_a : &uc_b;
	for (int i = 0; i < 5; i++) {
		order[norder++] = id * 10 + i;
		coro_switch(self, &uc_main);
	}
	coro_exit(self, &uc_main);
}

Test(async_coro_ucontext, two_coroutines_interleave)
{
	coro_init_thread(&uc_main);
	cr_assert_eq(coro_stack_create(&uc_a, 0), 0);
	cr_assert_eq(coro_stack_create(&uc_b, 0), 0);
	coro_prepare(&uc_a, worker, (void *)(intptr_t)1);
	coro_prepare(&uc_b, worker, (void *)(intptr_t)2);
	norder = 0;
	for (int i = 0; i < 5; i++) {
		coro_switch(&uc_main, &uc_a);
		coro_switch(&uc_main, &uc_b);
	}
	coro_switch(&uc_main, &uc_a);
	coro_switch(&uc_main, &uc_b);
	cr_assert_eq(norder, 10);
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(order[2 * i], 10 + i);
		cr_assert_eq(order[2 * i + 1], 20 + i);
	}
	coro_stack_destroy(&uc_a);
	coro_stack_destroy(&uc_b);
}

/* Restore SIGSEGV's default action (ASan's handler would exit(1) instead). */
static void segv_default(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(SIGSEGV, &sa, NULL);
}

static volatile int recurse_limit = 1 << 30;

static int uc_recurse(volatile char *prev, int n)
{
	volatile char frame[512];
	if (n > recurse_limit) /* never true: keeps the compiler from calling it infinite */
		return 0;
	frame[0] = (char)n;
	frame[511] = prev ? prev[0] : 0;
	return uc_recurse(frame, n + 1) + frame[511];
}

static void uc_overflow(void *arg)
{
	(void)arg;
	uc_recurse(NULL, 0);
	coro_exit(&uc_a, &uc_main);
}

/* The guard page protects ucontext stacks just the same. */
Test(async_coro_ucontext, guard_page_overflow_is_sigsegv, .signal = SIGSEGV)
{
	segv_default();
	coro_init_thread(&uc_main);
	cr_assert_eq(coro_stack_create(&uc_a, 32 * 1024), 0);
	coro_prepare(&uc_a, uc_overflow, NULL);
	coro_switch(&uc_main, &uc_a);
	cr_assert_fail("overflow did not fault");
}
