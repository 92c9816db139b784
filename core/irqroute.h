/*
 * The VM's GSI routing table. KVM_SET_GSI_ROUTING replaces the whole table,
 * so the legacy routes (GSI 0-15 to the PIC and IOAPIC, 16-23 to the IOAPIC)
 * are kept here next to the MSI routes devices ask for, and the table is
 * pushed whole after every change. GSIs from 24 up are handed out for MSIs.
 */
#ifndef RINGVM_CORE_IRQROUTE_H
#define RINGVM_CORE_IRQROUTE_H

#include <pthread.h>
#include <stdint.h>
#include <linux/kvm.h>

#define IRQROUTE_MAX_MSI 512
#define IRQROUTE_FIRST_MSI_GSI 24

struct irqroute {
	int vm_fd;
	pthread_mutex_t lock;
	unsigned nmsi; /* GSIs handed out: IRQROUTE_FIRST_MSI_GSI .. + nmsi - 1 */
	struct {
		uint64_t addr;
		uint32_t data;
		int active; /* 0: allocated but no route (masked) */
	} msi[IRQROUTE_MAX_MSI];
	struct kvm_irq_routing *table; /* room for every route, so a push never allocates */
};

/* Install the legacy routes. 0 or -errno. */
int irqroute_init(struct irqroute *r, int vm_fd) __attribute__((warn_unused_result));

/* A fresh GSI for an MSI, or -ENOSPC. */
int irqroute_alloc_msi(struct irqroute *r) __attribute__((warn_unused_result));

/* Point gsi at (addr, data), or remove its route when active is 0; pushes the table. */
int irqroute_set_msi(struct irqroute *r, unsigned gsi, uint64_t addr, uint32_t data, int active)
	__attribute__((warn_unused_result));

/* Idempotent; fine on a zeroed struct. */
void irqroute_destroy(struct irqroute *r);

#endif
