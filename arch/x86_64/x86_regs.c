/*
 * The boot vCPU's initial registers: PVH's flat 32-bit protected mode, or the
 * Linux 64-bit boot protocol's long mode, for which this also writes the boot
 * GDT and identity-mapped page tables (4 GiB of 2 MiB pages) into guest RAM.
 */
#include <errno.h>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/x86_priv.h"

#define CR0_PE   (1ull << 0)
#define CR0_ET   (1ull << 4)
#define CR0_PG   (1ull << 31)
#define CR4_PAE  (1ull << 5)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

#define PTE_P        (1ull << 0)
#define PTE_RW       (1ull << 1)
#define PTE_PS       (1ull << 7)
#define IDENTITY_GIB 4

/*
 * Selectors: PVH wants flat CS/DS and leaves their values free (0x8/0x10 as
 * Xen's own); Linux's 64-bit protocol names __BOOT_CS 0x10 and __BOOT_DS 0x18.
 */
#define PVH_CS      0x08
#define PVH_DS      0x10
#define LINUX_CS    0x10
#define LINUX_DS    0x18
#define GDT_ENTRIES 4

/* A flat descriptor: base 0, limit 0xfffff pages; access/flags from the kvm_segment. */
static uint64_t gdt_entry(const struct kvm_segment *s)
{
	uint64_t access =
	    s->type | (uint64_t)s->s << 4 | (uint64_t)s->dpl << 5 | (uint64_t)s->present << 7;
	uint64_t flags =
	    (uint64_t)s->avl | (uint64_t)s->l << 1 | (uint64_t)s->db << 2 | (uint64_t)s->g << 3;
	return 0xffffull | access << 40 | 0xfull << 48 | flags << 52;
}

static struct kvm_segment flat_segment(uint16_t selector, uint8_t type, int long_mode)
{
	return (struct kvm_segment){
	    .base = 0,
	    .limit = 0xffffffff,
	    .selector = selector,
	    .type = type,
	    .present = 1,
	    .dpl = 0,
	    .db = long_mode ? 0 : 1, /* D must be 0 when L is 1 */
	    .s = 1,
	    .l = long_mode ? 1 : 0,
	    .g = 1,
	};
}

static int write_gdt(struct guest_mem *mem, const struct kvm_segment *cs,
                     const struct kvm_segment *ds, struct kvm_sregs *sregs)
{
	uint64_t *gdt = guest_mem_ptr(mem, X86_GDT_ADDR, GDT_ENTRIES * sizeof(uint64_t));
	if (!gdt)
		return -ENOMEM;
	memset(gdt, 0, GDT_ENTRIES * sizeof(uint64_t));
	gdt[cs->selector >> 3] = gdt_entry(cs);
	gdt[ds->selector >> 3] = gdt_entry(ds);
	sregs->gdt.base = X86_GDT_ADDR;
	sregs->gdt.limit = GDT_ENTRIES * sizeof(uint64_t) - 1;
	/* No IDT until the kernel loads one: a fault before then shuts the VM down cleanly. */
	sregs->idt.base = 0;
	sregs->idt.limit = 0;
	return 0;
}

static int write_page_tables(struct guest_mem *mem)
{
	uint64_t *pml4 = guest_mem_ptr(mem, X86_PML4_ADDR, 0x1000);
	uint64_t *pdpt = guest_mem_ptr(mem, X86_PDPT_ADDR, 0x1000);
	uint64_t *pd = guest_mem_ptr(mem, X86_PD_ADDR, IDENTITY_GIB * 0x1000);
	_Static_assert(X86_PD_ADDR + IDENTITY_GIB * 0x1000 == X86_PAGE_TABLES_END, "PD pages");
	if (!pml4 || !pdpt || !pd)
		return -ENOMEM;
	memset(pml4, 0, 0x1000);
	memset(pdpt, 0, 0x1000);
	pml4[0] = X86_PDPT_ADDR | PTE_P | PTE_RW;
	for (uint64_t g = 0; g < IDENTITY_GIB; g++) {
		pdpt[g] = (X86_PD_ADDR + g * 0x1000) | PTE_P | PTE_RW;
		for (uint64_t i = 0; i < 512; i++)
			pd[g * 512 + i] = ((g << 30) | (i << 21)) | PTE_P | PTE_RW | PTE_PS;
	}
	return 0;
}

static void set_data_segments(struct kvm_sregs *sregs, const struct kvm_segment *ds)
{
	sregs->ds = *ds;
	sregs->es = *ds;
	sregs->fs = *ds;
	sregs->gs = *ds;
	sregs->ss = *ds;
}

int x86_bsp_regs(struct guest_mem *mem, const struct x86_boot_info *info, struct kvm_regs *regs,
                 struct kvm_sregs *sregs)
{
	struct kvm_segment cs, ds;
	int ret;
	memset(regs, 0, sizeof(*regs));
	regs->rflags = 0x2; /* bit 1 is reserved-as-1; interrupts off */
	regs->rip = info->entry;

	switch (info->kind) {
	case X86_ENTRY_PVH:
		if (info->boot_arg >= X86_MMIO_HOLE_END || info->entry >= X86_MMIO_HOLE_END)
			return -EINVAL;
		cs = flat_segment(PVH_CS, 0xb, 0); /* execute/read, accessed */
		ds = flat_segment(PVH_DS, 0x3, 0); /* read/write, accessed */
		ret = write_gdt(mem, &cs, &ds, sregs);
		if (ret < 0)
			return ret;
		regs->rbx = info->boot_arg;
		sregs->cs = cs;
		set_data_segments(sregs, &ds);
		/* PVH: PE set, every other writable bit clear (so caching on: CD/NW off). */
		sregs->cr0 = CR0_PE | CR0_ET;
		sregs->cr3 = 0;
		sregs->cr4 = 0;
		sregs->efer = 0;
		return 0;
	case X86_ENTRY_LINUX64:
		cs = flat_segment(LINUX_CS, 0xb, 1);
		ds = flat_segment(LINUX_DS, 0x3, 0);
		ret = write_gdt(mem, &cs, &ds, sregs);
		if (ret < 0)
			return ret;
		ret = write_page_tables(mem);
		if (ret < 0)
			return ret;
		regs->rsi = info->boot_arg;
		regs->rsp = X86_BOOT_STACK_TOP;
		regs->rbp = X86_BOOT_STACK_TOP;
		sregs->cs = cs;
		set_data_segments(sregs, &ds);
		sregs->cr3 = X86_PML4_ADDR;
		sregs->cr4 = CR4_PAE;
		sregs->efer = EFER_LME | EFER_LMA;
		/* Exactly these: KVM's reset CR0 has CD|NW set, which would run the kernel
		 * uncached. */
		sregs->cr0 = CR0_PE | CR0_ET | CR0_PG;
		return 0;
	}
	return -EINVAL;
}
