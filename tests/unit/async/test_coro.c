/*
 * Raw coroutine layer: switching, per-context FP control state, stack
 * sizing and the guard page (an overflow is a SIGSEGV, not corruption).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "async/coro.h"

static struct coro main_ctx, co;
static int trace[16], ntrace;

static void pinger(void *arg)
{
	int rounds = *(int *)arg;
	for (int i = 0; i < rounds; i++) {
		trace[ntrace++ % 16] = i;
		coro_switch(&co, &main_ctx);
	}
	coro_exit(&co, &main_ctx);
}

Test(async_coro, ping_pong)
{
	int rounds = 1000;
	coro_init_thread(&main_ctx);
	cr_assert_eq(coro_stack_create(&co, 0), 0);
	coro_prepare(&co, pinger, &rounds);
	ntrace = 0;
	for (int i = 0; i < rounds; i++) {
		coro_switch(&main_ctx, &co);
		cr_assert_eq(ntrace, i + 1);
		cr_assert_eq(trace[i % 16], i);
	}
	coro_switch(&main_ctx, &co); /* lets it exit */
	cr_assert_eq(ntrace, rounds);
	coro_stack_destroy(&co);
}

/* Locals live across switches must survive (they sit in callee-saved
 * registers or on the coroutine's own stack). */
static volatile uint64_t sink;
static void mixer(void *arg)
{
	uint64_t a = 1, b = 2, c = 3, d = 5, e = 7, f = 11;
	(void)arg;
	for (int i = 0; i < 100; i++) {
		a = a * 31 + b;
		b ^= c << 3;
		c += d * e;
		d = d * 7 + f;
		e ^= a >> 5;
		f += e;
		coro_switch(&co, &main_ctx);
	}
	sink = a ^ b ^ c ^ d ^ e ^ f;
	coro_exit(&co, &main_ctx);
}

static uint64_t mixer_reference(void)
{
	uint64_t a = 1, b = 2, c = 3, d = 5, e = 7, f = 11;
	for (int i = 0; i < 100; i++) {
		a = a * 31 + b;
		b ^= c << 3;
		c += d * e;
		d = d * 7 + f;
		e ^= a >> 5;
		f += e;
	}
	return a ^ b ^ c ^ d ^ e ^ f;
}

Test(async_coro, registers_survive_switches)
{
	uint64_t x = 0x1234, y = 0x9876;
	coro_init_thread(&main_ctx);
	cr_assert_eq(coro_stack_create(&co, 0), 0);
	coro_prepare(&co, mixer, NULL);
	for (int i = 0; i <= 100; i++) {
		x = x * 3 + (uint64_t)i;
		y ^= x;
		coro_switch(&main_ctx, &co);
	}
	cr_assert_eq(sink, mixer_reference());
	uint64_t rx = 0x1234, ry = 0x9876;
	for (int i = 0; i <= 100; i++) {
		rx = rx * 3 + (uint64_t)i;
		ry ^= rx;
	}
	cr_assert_eq(x, rx);
	cr_assert_eq(y, ry);
	coro_stack_destroy(&co);
}

#if defined(__x86_64__)
static unsigned get_mxcsr(void)
{
	unsigned v;
	__asm__ volatile("stmxcsr %0" : "=m"(v));
	return v;
}
static void set_mxcsr(unsigned v)
{
	__asm__ volatile("ldmxcsr %0" : : "m"(v));
}
static unsigned seen_mxcsr;
static void rounder(void *arg)
{
	(void)arg;
	set_mxcsr((get_mxcsr() & ~0x6000u) | 0x6000u); /* round toward zero */
	coro_switch(&co, &main_ctx);
	seen_mxcsr = get_mxcsr(); /* our own mode must come back with us */
	coro_exit(&co, &main_ctx);
}

/* MXCSR control bits are callee-saved in the SysV ABI: each context keeps
 * its own rounding mode. */
Test(async_coro, fp_control_is_per_context)
{
	unsigned before = get_mxcsr();
	coro_init_thread(&main_ctx);
	cr_assert_eq(coro_stack_create(&co, 0), 0);
	coro_prepare(&co, rounder, NULL);
	coro_switch(&main_ctx, &co);
	cr_assert_eq(get_mxcsr(), before, "coroutine's rounding mode leaked out");
	coro_switch(&main_ctx, &co);
	cr_assert_eq(seen_mxcsr & 0x6000u, 0x6000u, "coroutine lost its rounding mode");
	cr_assert_eq(get_mxcsr(), before);
	coro_stack_destroy(&co);
}

static unsigned short get_fpucw(void)
{
	unsigned short v;
	__asm__ volatile("fnstcw %0" : "=m"(v));
	return v;
}
static void set_fpucw(unsigned short v)
{
	__asm__ volatile("fldcw %0" : : "m"(v));
}
static unsigned short seen_fpucw;
static unsigned seen_mxcsr2;
static void x87_rounder(void *arg)
{
	(void)arg;
	set_fpucw((unsigned short)((get_fpucw() & ~0x0c00u) | 0x0c00u)); /* x87: toward zero */
	coro_switch(&co, &main_ctx);
	seen_fpucw = get_fpucw();
	seen_mxcsr2 = get_mxcsr();
	coro_exit(&co, &main_ctx);
}

/* The switch only reloads MXCSR / the x87 control word when they differ
 * between the two contexts: a context that changes only the x87 word (and
 * leaves MXCSR alone) must still get its own back, and so must the other. */
Test(async_coro, x87_control_word_is_per_context)
{
	unsigned short before = get_fpucw();
	unsigned mx = get_mxcsr();
	coro_init_thread(&main_ctx);
	cr_assert_eq(coro_stack_create(&co, 0), 0);
	coro_prepare(&co, x87_rounder, NULL);
	coro_switch(&main_ctx, &co);
	cr_assert_eq(get_fpucw(), before, "coroutine's x87 control word leaked out");
	cr_assert_eq(get_mxcsr() & 0xffc0u, mx & 0xffc0u);
	coro_switch(&main_ctx, &co);
	cr_assert_eq(seen_fpucw & 0x0c00u, 0x0c00u, "coroutine lost its x87 control word");
	cr_assert_eq(seen_mxcsr2 & 0xffc0u, mx & 0xffc0u);
	cr_assert_eq(get_fpucw(), before);
	coro_stack_destroy(&co);
}
#endif

/* Permissions of the /proc/self/maps line whose range starts at addr. */
static const char *map_perms(void *addr)
{
	static char perms[5];
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	perms[0] = 0;
	cr_assert(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char p[5];
		if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && lo == (unsigned long)addr) {
			memcpy(perms, p, sizeof(perms));
			break;
		}
	}
	fclose(f);
	return perms;
}

Test(async_coro, stack_size_rounding_and_guard)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct coro c;

	cr_assert_eq(coro_stack_create(&c, 1), 0);
	cr_assert_eq(c.stack_size, CORO_STACK_MIN);
	coro_stack_destroy(&c);

	cr_assert_eq(coro_stack_create(&c, 100 * 1024 + 1), 0);
	cr_assert_eq(c.stack_size, 100 * 1024 + page);
	cr_assert_eq((char *)c.stack, (char *)c.map + page, "guard page sits below the stack");
	/* The kernel's own view: the guard page is mapped with no access. */
	cr_assert_str_eq(map_perms(c.map), "---p");
	cr_assert_str_eq(map_perms(c.stack), "rw-p");
	memset(c.stack, 0x5a, c.stack_size); /* the whole usable stack is writable */
	coro_stack_destroy(&c);
	cr_assert_null(c.map);

	cr_assert_eq(coro_stack_create(&c, SIZE_MAX), -EINVAL);
}

static volatile char *deep_probe;
static int depth_reached;
static void burner(void *arg)
{
	/* Use most of a 64 KiB stack without touching the guard. */
	char buf[48 * 1024];
	(void)arg;
	memset(buf, 1, sizeof(buf));
	deep_probe = buf;
	depth_reached = buf[100] + buf[sizeof(buf) - 1];
	coro_exit(&co, &main_ctx);
}

Test(async_coro, most_of_the_stack_is_usable)
{
	coro_init_thread(&main_ctx);
	cr_assert_eq(coro_stack_create(&co, 64 * 1024), 0);
	coro_prepare(&co, burner, NULL);
	coro_switch(&main_ctx, &co);
	cr_assert_eq(depth_reached, 2);
	coro_stack_destroy(&co);
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

static int recurse(volatile char *prev, int n)
{
	volatile char frame[512];
	if (n > recurse_limit) /* never true: keeps the compiler from calling it infinite */
		return 0;
	frame[0] = (char)n;
	frame[511] = prev ? prev[0] : 0;
	/* Not a tail call: the frame must stay live below the next one. */
	return recurse(frame, n + 1) + frame[511];
}

static void overflower(void *arg)
{
	(void)arg;
	recurse(NULL, 0);
	coro_exit(&co, &main_ctx);
}

/* A runaway recursion on a coroutine stack must hit the guard page and die
 * with SIGSEGV. The default disposition is restored first so that ASan's
 * own SEGV handler (which exits with status 1) does not mask the signal. */
Test(async_coro, guard_page_overflow_is_sigsegv, .signal = SIGSEGV)
{
	segv_default();
	coro_init_thread(&main_ctx);
	cr_assert_eq(coro_stack_create(&co, 32 * 1024), 0);
	coro_prepare(&co, overflower, NULL);
	coro_switch(&main_ctx, &co);
	cr_assert_fail("overflow did not fault");
}

/* Writing just below the usable stack (the guard page) faults at once. */
static void guard_writer(void *arg)
{
	(void)arg;
	volatile char *below = (volatile char *)co.stack - 1;
	*below = 1;
	coro_exit(&co, &main_ctx);
}

Test(async_coro, guard_page_write_is_sigsegv, .signal = SIGSEGV)
{
	segv_default();
	coro_init_thread(&main_ctx);
	cr_assert_eq(coro_stack_create(&co, 0), 0);
	coro_prepare(&co, guard_writer, NULL);
	coro_switch(&main_ctx, &co);
	cr_assert_fail("guard page write did not fault");
}

Test(async_coro, stack_reuse_after_exit)
{
	int rounds = 3;
	coro_init_thread(&main_ctx);
	cr_assert_eq(coro_stack_create(&co, 0), 0);
	for (int k = 0; k < 5; k++) {
		ntrace = 0;
		coro_prepare(&co, pinger, &rounds);
		for (int i = 0; i <= rounds; i++)
			coro_switch(&main_ctx, &co);
		cr_assert_eq(ntrace, rounds);
	}
	coro_stack_destroy(&co);
}
