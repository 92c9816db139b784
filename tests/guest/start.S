/*
 * The probe's machine-level entry: the PVH ELF note, the 32-bit PVH entry,
 * the switch to long mode (shared with APs), the GDT, static identity page
 * tables for 0-4 GiB, the 256 interrupt stubs and the AP real-mode trampoline
 * (copied to 0x8000 at run time by test_smp.c). Everything static that can
 * be built by the assembler is, because every instruction run is emulated.
 */

#define CODE32 0x08
#define CODE64 0x10
#define DATA   0x18

#define PTE_P   0x001
#define PTE_RW  0x002
#define PTE_PWT 0x008
#define PTE_PCD 0x010
#define PTE_PS  0x080
#define PTE_LARGE (PTE_P | PTE_RW | PTE_PS)
#define PTE_UC    (PTE_PWT | PTE_PCD)

#define MSR_EFER 0xC0000080
#define EFER_LME 0x100
#define CR4_PAE  0x20

/* ---- PVH: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", 32-bit entry ---- */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4
	.long 4
	.long 18
	.asciz "Xen"
	.long _start

/* ---- 32-bit entry: EBX = hvm_start_info, paging off, IF clear ---- */
	.section .text.boot, "ax", @progbits
	.code32
	.globl _start
_start:
	cli
	cld
	movl %ebx, %esi			/* start_info survives cpuid below */
	xorl %ebp, %ebp			/* 0: boot CPU */
	lgdt gdt_ptr
	ljmp $CODE32, $1f
1:	movl $DATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss

/* Common to BSP and APs: ESI = start_info (BSP), EBP = 0 BSP / 1 AP. */
enter_long:
	movl $0x80000001, %eax
	cpuid
	movl $pml4_2m, %eax
	btl $26, %edx			/* 1 GiB pages? */
	jnc 2f
	movl $pml4_1g, %eax
2:	movl %eax, %cr3
	movl %cr4, %eax
	orl $CR4_PAE, %eax
	movl %eax, %cr4
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr
	movl %cr0, %eax
	andl $0x9fffffff, %eax		/* clear CD/NW (set after INIT on APs) */
	orl $0x80000001, %eax		/* PG | PE */
	movl %eax, %cr0
	ljmp $CODE64, $long64

/* An AP arrives here from the trampoline, in 32-bit protected mode. */
	.globl ap_entry32
ap_entry32:
	movl $DATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl $1, %ebp
	xorl %esi, %esi
	jmp enter_long

	.code64
long64:
	movl $DATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	testl %ebp, %ebp
	jnz ap64
	movq $bsp_stack_top, %rsp
	movl $__bss_start, %edi		/* BSS is 8-aligned and small (linker script) */
	movl $__bss_end, %ecx
	subl %edi, %ecx
	shrl $3, %ecx
	xorl %eax, %eax
	rep stosq
	movl %esi, %edi
	call probe_main
3:	cli
	hlt
	jmp 3b

ap64:
	movq ap_stack_top(%rip), %rsp
	call ap_main
4:	cli
	hlt
	jmp 4b

/* ---- interrupt stubs: 16 bytes each, vector v at isr_stubs + 16 * v (trap.c) ---- */
	.section .text, "ax", @progbits
	.balign 16
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.rept 256
	.set errcode, (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17)
	.set errcode, errcode || (vec == 21) || (vec == 29) || (vec == 30)
	.if errcode
	/* the CPU pushed an error code */
	.else
	pushq $0
	.endif
	pushq $vec
	jmp isr_common
	/* pads to the next stub; fails to assemble if a stub outgrew 16 bytes */
	.org isr_stubs + 16 * (vec + 1), 0xcc
	.set vec, vec + 1
	.endr

/* Frame layout must match struct trap_frame in trap.c. */
isr_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, %rdi
	call trap_dispatch
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	addq $16, %rsp			/* vector and error code */
	iretq

/*
 * ---- AP trampoline: copied to AP_TRAMPOLINE (0x8000) and entered by SIPI
 * vector 0x08 in real mode (CS=0x0800, IP=0). Position-dependent on that
 * address; it only gets to 32-bit mode and jumps into the image.
 */
#define AP_TRAMPOLINE 0x8000
	.section .rodata.trampoline, "a", @progbits
	.code16
	.globl ap_trampoline, ap_trampoline_end
ap_trampoline:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	lgdtl AP_TRAMPOLINE + (ap_gdt_ptr - ap_trampoline)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $CODE32, $ap_entry32
	.balign 4
ap_gdt_ptr:
	.word gdt_end - gdt - 1
	.long gdt
ap_trampoline_end:
	.code64

/* ---- GDT ---- */
	.section .rodata, "a", @progbits
	.balign 16
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff		/* 0x08: 32-bit code */
	.quad 0x00af9a000000ffff		/* 0x10: 64-bit code */
	.quad 0x00cf92000000ffff		/* 0x18: data */
gdt_end:
	.balign 8
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

/*
 * ---- identity map of 0-4 GiB, built by the assembler. 3-4 GiB (MMIO:
 * PCI BARs, IOAPIC, LAPIC) is uncached. pml4_1g uses 1 GiB pages; pml4_2m
 * (for CPUs without pdpe1gb) uses 2 MiB pages.
 */
	.section .data.pagetables, "aw", @progbits
	.balign 4096
pml4_1g:
	.quad pdpt_1g + (PTE_P | PTE_RW)
	.fill 511, 8, 0
pdpt_1g:
	.quad 0x00000000 + PTE_LARGE
	.quad 0x40000000 + PTE_LARGE
	.quad 0x80000000 + PTE_LARGE
	.quad 0xC0000000 + PTE_LARGE + PTE_UC
	.fill 508, 8, 0
pml4_2m:
	.quad pdpt_2m + (PTE_P | PTE_RW)
	.fill 511, 8, 0
pdpt_2m:
	.quad pd_2m + 0x0000 + (PTE_P | PTE_RW)
	.quad pd_2m + 0x1000 + (PTE_P | PTE_RW)
	.quad pd_2m + 0x2000 + (PTE_P | PTE_RW)
	.quad pd_2m + 0x3000 + (PTE_P | PTE_RW)
	.fill 508, 8, 0
pd_2m:
	.set pg, 0
	.rept 1536
	.quad (pg << 21) + PTE_LARGE
	.set pg, pg + 1
	.endr
	.rept 512
	.quad (pg << 21) + PTE_LARGE + PTE_UC
	.set pg, pg + 1
	.endr

/* ---- boot CPU stack (not zeroed) ---- */
	.section .bss.noinit.bsp_stack, "aw", @nobits
	.balign 16
bsp_stack:
	.skip 16384
bsp_stack_top:
