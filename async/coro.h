/*
 * Raw coroutines: mmap'd stacks with a guard page and a stackful context
 * switch that saves only what the ABI says a callee must preserve (a
 * hand-written x86-64 switch; ucontext on other architectures). No
 * scheduling here: exec.h builds the executor on top of this layer.
 */
#ifndef RINGVM_ASYNC_CORO_H
#define RINGVM_ASYNC_CORO_H

#include <stddef.h>

#if defined(__x86_64__) && !defined(CORO_FORCE_UCONTEXT)
#define CORO_BACKEND_X86_64 1
#else
#define CORO_BACKEND_UCONTEXT 1
#include <ucontext.h>
#endif

#include "async/asan.h"

/* What a coroutine runs. It must never return: it leaves with coro_exit(). */
typedef void coro_fn(void *arg);

/*
 * One execution context: a coroutine with its own stack, or (after
 * coro_init_thread) the thread's original stack. Fields are private to
 * coro.c; the struct is public so callers can embed it without allocating.
 */
struct coro {
#ifdef CORO_BACKEND_X86_64
	void *sp; /* saved stack pointer while switched out */
#else
	ucontext_t uc;
#endif
	void *map; /* whole mapping, guard page included (NULL: thread stack) */
	size_t map_size;
	void *stack;       /* lowest usable byte, just above the guard page */
	size_t stack_size; /* usable bytes */
	coro_fn *fn;
	void *arg;
	/* AddressSanitizer fiber bookkeeping (unused without ASan). */
	void *asan_fake;
	const void *asan_bottom;
	size_t asan_size;
	/* valgrind's id for this stack (0 outside valgrind or on a thread stack). */
	unsigned vg_stack_id;
};

/* Smallest usable stack coro_stack_create accepts (smaller sizes are raised). */
#define CORO_STACK_MIN ((size_t)16 * 1024)

/*
 * Describe the calling thread's current stack as a context that coroutines
 * can switch back to. Never fails. Call once per thread before coro_switch.
 */
void coro_init_thread(struct coro *c);

/*
 * Map a stack of at least `size` usable bytes (rounded up to whole pages,
 * raised to CORO_STACK_MIN) with one PROT_NONE guard page below it, so an
 * overflow faults (SIGSEGV) instead of silently corrupting a neighbour.
 * Memory is MAP_NORESERVE: untouched stack costs no RAM.
 * Returns 0 or -errno (-ENOMEM, -EINVAL when size overflows).
 */
__attribute__((warn_unused_result)) int coro_stack_create(struct coro *c, size_t size);

/* The usable size coro_stack_create(size) gives (0 if size is too large). */
size_t coro_stack_round(size_t size);

/* Unmap the stack made by coro_stack_create. The coroutine must not be running. */
void coro_stack_destroy(struct coro *c);

/*
 * Prepare c (which has a stack) to run fn(arg) from the top of its stack on
 * the next coro_switch into it. May be called again on a stack whose
 * previous coroutine has exited (stack reuse without a new mmap).
 */
void coro_prepare(struct coro *c, coro_fn *fn, void *arg);

/* The backend's raw swap (coro_x86_64.c or coro_ucontext.c). */
void coro_arch_swap(struct coro *from, struct coro *to);

/*
 * Save the current context into `from` and resume `to`. Returns when some
 * context switches back to `from`. Costs no system call. `from` must be the
 * context currently running. Inline without ASan: one call less on the
 * hottest path (and one return-stack misprediction less).
 */
#if defined(RINGVM_ASAN)
void coro_switch(struct coro *from, struct coro *to);
#else
static inline void coro_switch(struct coro *from, struct coro *to)
{
	coro_arch_swap(from, to);
}
#endif

/*
 * Final switch of a coroutine that has finished: like coro_switch but
 * `from` is never resumed again (until coro_prepare reuses its stack), so
 * sanitizers may release what they kept for it.
 */
__attribute__((noreturn)) void coro_exit(struct coro *from, struct coro *to);

#endif
