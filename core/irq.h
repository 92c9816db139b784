/*
 * Legacy interrupt lines of main-process devices (UART, i8042): a GSI on the
 * in-kernel IOAPIC/PIC, driven with KVM_IRQ_LINE. Devices call irq_line_set()
 * with the level they want; edge-triggered ISA pins see the 0→1 transition.
 */
#ifndef RINGVM_CORE_IRQ_H
#define RINGVM_CORE_IRQ_H

#include <stdbool.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

struct irq_line {
	int vm_fd;    /* -1: a detached line (unit tests); set() only records */
	unsigned gsi;
	int level;    /* last level set, for tests and to skip redundant ioctls */
	unsigned raised; /* count of 0→1 transitions (tests, metrics) */
};

static inline void irq_line_init(struct irq_line *line, int vm_fd, unsigned gsi)
{
	line->vm_fd = vm_fd;
	line->gsi = gsi;
	line->level = 0;
	line->raised = 0;
}

/*
 * Drive the line to level (0 or 1). Redundant calls do no syscall. The caller
 * holds its device lock, so level changes of one line are ordered.
 */
static inline void irq_line_set(struct irq_line *line, int level)
{
	level = !!level;
	if (level == line->level)
		return;
	line->level = level;
	if (level)
		line->raised++;
	if (line->vm_fd < 0)
		return;
	struct kvm_irq_level irq = {.irq = line->gsi, .level = (unsigned)level};
	/* Fails only if the irqchip is gone (VM teardown); nothing useful to do then. */
	(void)ioctl(line->vm_fd, KVM_IRQ_LINE, &irq);
}

#endif
