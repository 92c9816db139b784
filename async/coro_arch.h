/*
 * The per-architecture half of coro.c: building a fresh context on a stack
 * and swapping two contexts. Implemented by coro_x86_64.S (+ the frame
 * layout in coro.c) or by coro_ucontext.c. Private to async/.
 */
#ifndef RINGVM_ASYNC_CORO_ARCH_H
#define RINGVM_ASYNC_CORO_ARCH_H

#include "async/coro.h"

/* Called on the new stack by the backend; runs c->fn and never returns. */
__attribute__((noreturn)) void coro_arch_entry(struct coro *c);

/* Make c start in coro_arch_entry(c) at the top of its stack. */
void coro_arch_prepare(struct coro *c);

#endif
