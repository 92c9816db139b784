/*
 * Coroutine stacks (mmap + guard page) and the architecture-neutral half of
 * switching: AddressSanitizer fiber annotations around the backend's swap
 * and the entry point every new coroutine starts in. Under valgrind each
 * stack is registered, so memcheck sees a switch as a switch rather than
 * as a huge stack-pointer move (false invalid reads, "switching stacks?").
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "async/asan.h"
#include "async/coro_arch.h"

/* A header-only client request: a few no-op instructions outside valgrind. */
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define CORO_VG_REGISTER(lo, hi)  VALGRIND_STACK_REGISTER(lo, hi)
#define CORO_VG_DEREGISTER(id)    VALGRIND_STACK_DEREGISTER(id)
#else
#define CORO_VG_REGISTER(lo, hi)  0u
#define CORO_VG_DEREGISTER(id)    ((void)(id))
#endif

#if defined(RINGVM_ASAN)
#define CORO_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
/*
 * The context that switched to us: set just before every swap, read just
 * after it on the other side, so the resumed context can tell ASan which
 * stack it left (thread stacks' bounds are only learnt this way).
 */
static __thread struct coro *switching_from;
#endif

static size_t page_size(void)
{
	static size_t cached;
	if (!cached)
		cached = (size_t)sysconf(_SC_PAGESIZE);
	return cached;
}

void coro_init_thread(struct coro *c)
{
	memset(c, 0, sizeof(*c));
}

size_t coro_stack_round(size_t size)
{
	size_t page = page_size();

	if (size < CORO_STACK_MIN)
		size = CORO_STACK_MIN;
	if (size > SIZE_MAX / 2)
		return 0;
	return (size + page - 1) & ~(page - 1);
}

int coro_stack_create(struct coro *c, size_t size)
{
	size_t page = page_size();
	size_t usable = coro_stack_round(size), total;
	void *map;
	int err;

	memset(c, 0, sizeof(*c));
	if (!usable)
		return -EINVAL;
	total = usable + page;

	/* Map everything inaccessible, then open the stack part: the lowest
	 * page stays PROT_NONE and is where a downward overflow lands. */
	map = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
	           -1, 0);
	if (map == MAP_FAILED)
		return -errno;
	if (mprotect((char *)map + page, usable, PROT_READ | PROT_WRITE) != 0) {
		err = -errno;
		goto err_unmap;
	}
	c->map = map;
	c->map_size = total;
	c->stack = (char *)map + page;
	c->stack_size = usable;
	c->asan_bottom = c->stack;
	c->asan_size = usable;
	c->vg_stack_id = CORO_VG_REGISTER((char *)c->stack, (char *)c->stack + usable);
	return 0;

err_unmap:
	munmap(map, total);
	return err;
}

void coro_stack_destroy(struct coro *c)
{
	if (!c->map)
		return;
#ifdef CORO_ASAN
	/* Frames that never returned (the coroutine left by switching away)
	 * keep poisoned redzones in the shadow; clear them before the range
	 * can be mapped again for something else. */
	ASAN_UNPOISON_MEMORY_REGION(c->stack, c->stack_size);
#endif
	CORO_VG_DEREGISTER(c->vg_stack_id);
	munmap(c->map, c->map_size);
	c->map = NULL;
	c->stack = NULL;
}

void coro_prepare(struct coro *c, coro_fn *fn, void *arg)
{
#ifdef CORO_ASAN
	ASAN_UNPOISON_MEMORY_REGION(c->stack, c->stack_size);
	c->asan_fake = NULL;
#endif
	c->fn = fn;
	c->arg = arg;
	coro_arch_prepare(c);
}

void coro_arch_entry(struct coro *c)
{
#ifdef CORO_ASAN
	struct coro *prev = switching_from;
	__sanitizer_finish_switch_fiber(NULL, &prev->asan_bottom, &prev->asan_size);
#endif
	c->fn(c->arg);
	/* Returning would pop into the trampoline's ud2: make it explicit. */
	abort();
}

#ifdef CORO_ASAN
/* Out of line under ASan only (coro.h inlines the plain swap otherwise). */
void coro_switch(struct coro *from, struct coro *to)
{
	__sanitizer_start_switch_fiber(&from->asan_fake, to->asan_bottom, to->asan_size);
	switching_from = from;
	coro_arch_swap(from, to);
	struct coro *prev = switching_from;
	__sanitizer_finish_switch_fiber(from->asan_fake, &prev->asan_bottom, &prev->asan_size);
}
#endif

void coro_exit(struct coro *from, struct coro *to)
{
#ifdef CORO_ASAN
	/* NULL: this stack's fake frames may be freed, it is not coming back. */
	__sanitizer_start_switch_fiber(NULL, to->asan_bottom, to->asan_size);
	switching_from = from;
#endif
	coro_arch_swap(from, to);
	abort(); /* nobody resumes an exited coroutine without coro_prepare */
}
