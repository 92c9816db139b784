/* GSI routing table kept in userspace and pushed whole (see irqroute.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/irqroute.h"

#define LEGACY_ENTRIES (16 * 2 + 8) /* 0-15 on PIC + IOAPIC, 16-23 IOAPIC only */

#define MAX_ENTRIES (LEGACY_ENTRIES + IRQROUTE_MAX_MSI)

/* Rebuild the table in r->table and hand it to KVM. Allocates nothing. Caller holds r->lock. */
static int push(struct irqroute *r)
{
	struct kvm_irq_routing *t = r->table;
	memset(t, 0, sizeof(*t) + MAX_ENTRIES * sizeof(struct kvm_irq_routing_entry));
	unsigned n = 0;
	for (unsigned gsi = 0; gsi < 24; gsi++) {
		if (gsi < 16 && gsi != 2) {
			/* IRQ2 is the PIC cascade; everything else also goes to the PIC. */
			t->entries[n].gsi = gsi;
			t->entries[n].type = KVM_IRQ_ROUTING_IRQCHIP;
			t->entries[n].u.irqchip.irqchip =
				gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
			t->entries[n].u.irqchip.pin = gsi % 8;
			n++;
		}
		if (gsi == 2)
			continue; /* IOAPIC pin 2 belongs to GSI 0 */
		/*
		 * The ISA timer (GSI 0, the in-kernel PIT) is wired to IOAPIC pin 2, as
		 * the MP table and MADT interrupt source override tell the guest.
		 */
		t->entries[n].gsi = gsi;
		t->entries[n].type = KVM_IRQ_ROUTING_IRQCHIP;
		t->entries[n].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		t->entries[n].u.irqchip.pin = gsi == 0 ? 2 : gsi;
		n++;
	}
	for (unsigned i = 0; i < r->nmsi; i++) {
		if (!r->msi[i].active)
			continue;
		t->entries[n].gsi = IRQROUTE_FIRST_MSI_GSI + i;
		t->entries[n].type = KVM_IRQ_ROUTING_MSI;
		t->entries[n].u.msi.address_lo = (uint32_t)r->msi[i].addr;
		t->entries[n].u.msi.address_hi = (uint32_t)(r->msi[i].addr >> 32);
		t->entries[n].u.msi.data = r->msi[i].data;
		n++;
	}
	t->nr = n;
	return ioctl(r->vm_fd, KVM_SET_GSI_ROUTING, t) < 0 ? -errno : 0;
}

static int irqroute_prepare(struct irqroute *r, int vm_fd)
{
	memset(r, 0, sizeof(*r));
	r->vm_fd = vm_fd;
	r->table = calloc(1, sizeof(*r->table) + MAX_ENTRIES * sizeof(struct kvm_irq_routing_entry));
	if (!r->table)
		return -ENOMEM;
	int e = pthread_mutex_init(&r->lock, NULL);
	if (e) {
		free(r->table);
		r->table = NULL;
		return -e;
	}
	return 0;
}

static int irqroute_commit(struct irqroute *r)
{
	pthread_mutex_lock(&r->lock);
	int ret = push(r);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int irqroute_init(struct irqroute *r, int vm_fd)
{
	int e = irqroute_prepare(r, vm_fd);
	return e < 0 ? e : irqroute_commit(r);
}

int irqroute_alloc_msi(struct irqroute *r)
{
	pthread_mutex_lock(&r->lock);
	int gsi = r->nmsi < IRQROUTE_MAX_MSI ? (int)(IRQROUTE_FIRST_MSI_GSI + r->nmsi++) : -ENOSPC;
	pthread_mutex_unlock(&r->lock);
	return gsi;
}

int irqroute_set_msi(struct irqroute *r, unsigned gsi, uint64_t addr, uint32_t data, int active)
{
	if (gsi < IRQROUTE_FIRST_MSI_GSI)
		return -EINVAL;
	unsigned i = gsi - IRQROUTE_FIRST_MSI_GSI;
	pthread_mutex_lock(&r->lock);
	int ret = -EINVAL;
	if (i < r->nmsi) {
		r->msi[i].addr = addr;
		r->msi[i].data = data;
		r->msi[i].active = active;
		ret = push(r);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void irqroute_destroy(struct irqroute *r)
{
	if (!r->table)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r->table);
	r->table = NULL;
}
