/*
 * The IDT shared by all CPUs: exceptions end the run with a report, other
 * vectors go to handlers registered by tests. Gates are installed lazily (the
 * 32 exceptions at boot, interrupts on registration): each IDT write is a few
 * emulated microseconds.
 */
#include "probe.h"

/* Matches the push order of isr_common in start.S. */
struct trap_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss;
};

struct idt_gate {
	uint16_t off_lo;
	uint16_t sel;
	uint8_t ist;
	uint8_t type;
	uint16_t off_mid;
	uint32_t off_hi;
	uint32_t zero;
} __attribute__((packed));

extern const char isr_stubs[];

static struct idt_gate idt[256] __attribute__((aligned(16)));
static irq_handler_fn *handlers[256];

static void idt_set(unsigned vec)
{
	uint64_t addr = (uint64_t)(isr_stubs + 16 * vec);
	idt[vec] = (struct idt_gate){
	    .off_lo = (uint16_t)addr,
	    .sel = 0x10,
	    .type = 0x8e, /* present, DPL0, 64-bit interrupt gate */
	    .off_mid = (uint16_t)(addr >> 16),
	    .off_hi = (uint32_t)(addr >> 32),
	};
}

void trap_load_idt(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) ptr = {sizeof(idt) - 1, (uint64_t)idt};
	__asm__ volatile("lidt %0" : : "m"(ptr));
}

void trap_init(void)
{
	for (unsigned v = 0; v < 32; v++)
		idt_set(v);
	idt_set(LAPIC_SPURIOUS_VECTOR);
	trap_load_idt();
}

void irq_register(unsigned vector, irq_handler_fn *handler)
{
	handlers[vector] = handler;
	idt_set(vector);
}

void trap_dispatch(struct trap_frame *f);

void trap_dispatch(struct trap_frame *f)
{
	unsigned v = (unsigned)f->vector;
	if (v >= 32 && handlers[v]) {
		handlers[v](v);
		return;
	}
	if (v == LAPIC_SPURIOUS_VECTOR)
		return; /* spurious: no EOI */
	uint64_t cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	probe_printf("PROBE trap vector=%u error=0x%lx rip=0x%lx cr2=0x%lx rsp=0x%lx apic_id=%u\n",
	             v, f->error, f->rip, cr2, f->rsp, lapic_id());
	probe_fail(v < 32 ? "exception" : "unexpected-interrupt");
}
