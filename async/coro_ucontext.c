/*
 * Portable context switch on ucontext (getcontext/makecontext/swapcontext)
 * for architectures without a hand-written switch. Slower: swapcontext
 * makes a sigprocmask syscall on every switch. Kept compiling on x86-64 by
 * tests/unit/async/test_coro_ucontext.c, which builds and runs it.
 */
#include <stdint.h>
#include <stdlib.h>

#include "async/coro_arch.h"

#ifdef CORO_BACKEND_UCONTEXT

/* makecontext passes int arguments only: split the pointer in two halves. */
static void ucontext_entry(unsigned int lo, unsigned int hi)
{
	uintptr_t p = (uintptr_t)lo;
#if UINTPTR_MAX > 0xffffffffu
	p |= (uintptr_t)hi << 32;
#else
	(void)hi;
#endif
	coro_arch_entry((struct coro *)p);
}

void coro_arch_prepare(struct coro *c)
{
	uintptr_t p = (uintptr_t)c;

	if (getcontext(&c->uc) != 0)
		abort(); /* cannot fail for a valid pointer; nothing sane to return */
	c->uc.uc_stack.ss_sp = c->stack;
	c->uc.uc_stack.ss_size = c->stack_size;
	c->uc.uc_link = NULL;
#if UINTPTR_MAX > 0xffffffffu
	makecontext(&c->uc, (void (*)(void))ucontext_entry, 2, (unsigned int)p,
	            (unsigned int)(p >> 32));
#else
	makecontext(&c->uc, (void (*)(void))ucontext_entry, 2, (unsigned int)p, 0u);
#endif
}

void coro_arch_swap(struct coro *from, struct coro *to)
{
	if (swapcontext(&from->uc, &to->uc) != 0)
		abort();
}

#endif
