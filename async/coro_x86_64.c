/*
 * x86-64 context switch: saves only the SysV callee-saved state (rbx, rbp,
 * r12-r15, the MXCSR and x87 control words) on the outgoing stack and swaps
 * stack pointers; MXCSR/x87 CW are reloaded only when the incoming context's
 * differ from the outgoing one's (the common case is a compare, not a
 * microcoded load). No signal-mask syscall, unlike swapcontext. Also builds
 * the first frame of a fresh coroutine so the swap "returns" into it.
 */
#include <stdint.h>

#include "async/coro_arch.h"

#ifdef CORO_BACKEND_X86_64

_Static_assert(__builtin_offsetof(struct coro, sp) == 0, "asm below expects sp first");

/*
 * coro_arch_swap(from=rdi, to=rsi). The frame it leaves on the outgoing
 * stack, from low to high addresses: mxcsr(4) fpucw(2) pad(2), r15, r14,
 * r13, r12, rbx, rbp, return address. coro_arch_prepare builds the same
 * frame by hand, with the return address pointing at the trampoline.
 *
 * The trampoline gets the coroutine in r12; it clears rbp and marks rip
 * undefined so debuggers and unwinders stop there instead of walking off
 * the top of the stack.
 */
__asm__(".text\n"
        ".globl coro_arch_swap\n"
        ".type coro_arch_swap,@function\n"
        ".p2align 4\n"
        "coro_arch_swap:\n"
        "	.cfi_startproc\n"
        "	pushq %rbp\n"
        "	pushq %rbx\n"
        "	pushq %r12\n"
        "	pushq %r13\n"
        "	pushq %r14\n"
        "	pushq %r15\n"
        "	subq $8, %rsp\n"
        "	stmxcsr (%rsp)\n"
        "	fnstcw 4(%rsp)\n"
        "	movl (%rsp), %eax\n"
        "	movzwl 4(%rsp), %ecx\n"
        "	movq %rsp, (%rdi)\n"
        "	movq (%rsi), %rsp\n"
        "	cmpl (%rsp), %eax\n"
        "	jne 1f\n"
        "	cmpw 4(%rsp), %cx\n"
        "	jne 2f\n"
        "3:\n"
        "	addq $8, %rsp\n"
        "	popq %r15\n"
        "	popq %r14\n"
        "	popq %r13\n"
        "	popq %r12\n"
        "	popq %rbx\n"
        "	popq %rbp\n"
        "	ret\n"
        /* Loading MXCSR/the x87 control word is far slower than comparing
         * them (fldcw is microcoded): only when they differ. */
        "1:\n"
        "	ldmxcsr (%rsp)\n"
        "	cmpw 4(%rsp), %cx\n"
        "	je 3b\n"
        "2:\n"
        "	fldcw 4(%rsp)\n"
        "	jmp 3b\n"
        "	.cfi_endproc\n"
        ".size coro_arch_swap, .-coro_arch_swap\n"
        "\n"
        ".type coro_x86_64_trampoline,@function\n"
        ".p2align 4\n"
        "coro_x86_64_trampoline:\n"
        "	.cfi_startproc\n"
        "	.cfi_undefined rip\n"
        "	xorl %ebp, %ebp\n"
        "	movq %r12, %rdi\n"
        "	call coro_arch_entry\n"
        "	ud2\n"
        "	.cfi_endproc\n"
        ".size coro_x86_64_trampoline, .-coro_x86_64_trampoline\n");

void coro_x86_64_trampoline(void);

void coro_arch_prepare(struct coro *c)
{
	/* The trampoline's `call` needs rsp 16-byte aligned once the swap has
	 * popped the whole frame, i.e. at `top`. */
	uintptr_t top = ((uintptr_t)c->stack + c->stack_size) & ~(uintptr_t)15;
	uint64_t *f = (uint64_t *)top - 8;
	uint32_t mxcsr;
	uint16_t fpucw;

	/* A new coroutine inherits the creator's rounding and exception masks. */
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	__asm__ volatile("fnstcw %0" : "=m"(fpucw));
	f[0] = (uint64_t)mxcsr | (uint64_t)fpucw << 32;
	f[1] = 0;                                           /* r15 */
	f[2] = 0;                                           /* r14 */
	f[3] = 0;                                           /* r13 */
	f[4] = (uint64_t)(uintptr_t)c;                      /* r12: trampoline's argument */
	f[5] = 0;                                           /* rbx */
	f[6] = 0;                                           /* rbp */
	f[7] = (uint64_t)(uintptr_t)coro_x86_64_trampoline; /* return address */
	c->sp = f;
}

#endif
