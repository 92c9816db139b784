/*
 * Boot vCPU state: registers, segments, GDT and page tables for PVH and the
 * Linux 64-bit entry; CPUID adjustment on a synthetic KVM answer; the boot
 * MSR list, FPU words and LAPIC LINT wiring.
 */
#include <errno.h>
#include <stdlib.h>

#include "tests/unit/arch/arch_fixture.h"

/* What KVM_GET_SREGS returns at reset, roughly: real mode, CD|NW|ET. */
static struct kvm_sregs reset_sregs(void)
{
	struct kvm_sregs s;
	memset(&s, 0, sizeof(s));
	s.cr0 = 0x60000010;
	s.cs.selector = 0xf000;
	s.cs.base = 0xffff0000;
	s.tr.type = 11;
	s.tr.present = 1;
	s.tr.limit = 0xffff;
	return s;
}

Test(arch_cpu, pvh_regs)
{
	struct guest_mem m;
	struct kvm_regs regs;
	struct kvm_sregs sregs = reset_sregs();
	arch_mem_init(&m, 16 * MIB);
	arch_mark_trampoline(&m);
	struct x86_boot_info info = {
	    .kind = X86_ENTRY_PVH, .entry = 0x100020, .boot_arg = X86_PVH_INFO_ADDR};
	cr_assert_eq(x86_bsp_regs(&m, &info, &regs, &sregs), 0);
	cr_assert_eq(regs.rip, 0x100020);
	cr_assert_eq(regs.rbx, X86_PVH_INFO_ADDR);
	cr_assert_eq(regs.rflags, 2);
	cr_assert_eq(sregs.cr0, 0x11, "PE|ET only, paging and CD/NW off");
	cr_assert_eq(sregs.cr4, 0);
	cr_assert_eq(sregs.efer, 0);
	cr_assert_eq(sregs.cs.selector, 0x8);
	cr_assert_eq(sregs.cs.type, 0xb);
	cr_assert_eq(sregs.cs.db, 1);
	cr_assert_eq(sregs.cs.l, 0);
	cr_assert_eq(sregs.cs.g, 1);
	cr_assert_eq(sregs.cs.base, 0);
	cr_assert_eq(sregs.cs.limit, 0xffffffff);
	const struct kvm_segment *data[] = {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss};
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(data[i]->selector, 0x10);
		cr_assert_eq(data[i]->type, 0x3);
		cr_assert_eq(data[i]->db, 1);
		cr_assert_eq(data[i]->limit, 0xffffffff);
		cr_assert_eq(data[i]->present, 1);
	}
	cr_assert_eq(sregs.tr.type, 11, "TR kept from KVM");
	cr_assert_eq(sregs.gdt.base, X86_GDT_ADDR);
	const uint8_t *gdt = arch_gpa(&m, X86_GDT_ADDR, 32);
	cr_assert_eq(arch_le64(gdt + 8), 0x00cf9b000000ffffull, "flat 32-bit code");
	cr_assert_eq(arch_le64(gdt + 16), 0x00cf93000000ffffull, "flat data");
	arch_assert_trampoline(&m);
	arch_mem_fini(&m);
}

Test(arch_cpu, linux64_regs_and_page_tables)
{
	struct guest_mem m;
	struct kvm_regs regs;
	struct kvm_sregs sregs = reset_sregs();
	arch_mem_init(&m, 16 * MIB);
	arch_mark_trampoline(&m);
	struct x86_boot_info info = {
	    .kind = X86_ENTRY_LINUX64, .entry = 0x1000200, .boot_arg = X86_ZERO_PAGE_ADDR};
	cr_assert_eq(x86_bsp_regs(&m, &info, &regs, &sregs), 0);
	cr_assert_eq(regs.rip, 0x1000200);
	cr_assert_eq(regs.rsi, X86_ZERO_PAGE_ADDR);
	cr_assert_eq(regs.rflags, 2);
	cr_assert(regs.rsp > X86_GDT_ADDR && regs.rsp <= X86_TRAMPOLINE_START);
	cr_assert_eq(regs.rsp % 16, 0);
	cr_assert_eq(sregs.cr0, 0x80000011ull, "PE|ET|PG");
	cr_assert_eq(sregs.cr4, 0x20, "PAE");
	cr_assert_eq(sregs.efer, 0x500, "LME|LMA");
	cr_assert_eq(sregs.cr3, X86_PML4_ADDR);
	cr_assert_eq(sregs.cs.selector, 0x10, "__BOOT_CS");
	cr_assert_eq(sregs.cs.l, 1);
	cr_assert_eq(sregs.cs.db, 0);
	cr_assert_eq(sregs.ds.selector, 0x18, "__BOOT_DS");
	cr_assert_eq(sregs.ss.selector, 0x18);
	const uint8_t *gdt = arch_gpa(&m, X86_GDT_ADDR, 32);
	cr_assert_eq(arch_le64(gdt), 0);
	cr_assert_eq(arch_le64(gdt + 0x10), 0x00af9b000000ffffull, "64-bit code");
	cr_assert_eq(arch_le64(gdt + 0x18), 0x00cf93000000ffffull, "flat data");
	cr_assert_eq(sregs.gdt.limit, 31);

	const uint64_t *pml4 = arch_gpa(&m, X86_PML4_ADDR, 0x1000);
	const uint64_t *pdpt = arch_gpa(&m, X86_PDPT_ADDR, 0x1000);
	const uint64_t *pd = arch_gpa(&m, X86_PD_ADDR, 4 * 0x1000);
	cr_assert_eq(pml4[0], X86_PDPT_ADDR | 3);
	cr_assert_eq(pml4[1], 0);
	for (int g = 0; g < 4; g++)
		cr_assert_eq(pdpt[g], (X86_PD_ADDR + g * 0x1000ull) | 3);
	cr_assert_eq(pdpt[4], 0);
	/* Every 2 MiB page of the first 4 GiB maps to itself. */
	for (uint64_t i = 0; i < 2048; i++)
		cr_assert_eq(pd[i], (i << 21) | 0x83, "PD entry %llu", (unsigned long long)i);
	cr_assert_leq(X86_PAGE_TABLES_END, 0x20000, "tables below the command line");
	arch_assert_trampoline(&m);
	arch_mem_fini(&m);
}

Test(arch_cpu, bsp_regs_errors)
{
	struct guest_mem m;
	struct kvm_regs regs;
	struct kvm_sregs sregs = reset_sregs();
	arch_mem_init(&m, 16 * MIB);
	struct x86_boot_info info = {.kind = (enum x86_entry_kind)7};
	cr_assert_eq(x86_bsp_regs(&m, &info, &regs, &sregs), -EINVAL);
	info = (struct x86_boot_info){.kind = X86_ENTRY_PVH, .entry = 0x100000000ull};
	cr_assert_eq(x86_bsp_regs(&m, &info, &regs, &sregs), -EINVAL, "PVH entry is 32-bit");
	struct guest_mem none = {.memfd = -1};
	info = (struct x86_boot_info){.kind = X86_ENTRY_LINUX64, .entry = 0x1000000};
	cr_assert_eq(x86_bsp_regs(&none, &info, &regs, &sregs), -ENOMEM);
	arch_mem_fini(&m);
}

/* A KVM_GET_SUPPORTED_CPUID answer like this host's: one topology subleaf only. */
static struct kvm_cpuid2 *fake_cpuid(int amd, unsigned spare)
{
	struct kvm_cpuid_entry2 ents[] = {
	    {.function = 0, .eax = 0x1f},
	    {.function = 1,
	     .eax = 0xc06f2,
	     .ebx = 0x01020800,
	     .ecx = 0x01202000,
	     .edx = 0x0f8bfbff | (1u << 28)},
	    {.function = 4, .index = 0, .flags = 1, .eax = 0x04000121},
	    {.function = 4, .index = 3, .flags = 1, .eax = 0x04004163},
	    {.function = 4, .index = 4, .flags = 1, .eax = 0},
	    {.function = 0xb, .index = 0, .flags = 1, .edx = 1},
	    {.function = 0x40000000, .eax = 0x40000001},
	    {.function = 0x80000008, .eax = 0x3030, .ecx = 0x7001},
	    {.function = 0x8000001e, .eax = 9, .ebx = 9, .ecx = 9},
	};
	unsigned n = sizeof(ents) / sizeof(ents[0]);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (n + spare) * sizeof(ents[0]));
	cr_assert(c);
	c->nent = n;
	memcpy(c->entries, ents, sizeof(ents));
	if (amd) {
		memcpy(&c->entries[0].ebx, "Auth", 4);
		memcpy(&c->entries[0].edx, "enti", 4);
		memcpy(&c->entries[0].ecx, "cAMD", 4);
	} else {
		memcpy(&c->entries[0].ebx, "Genu", 4);
		memcpy(&c->entries[0].edx, "ineI", 4);
		memcpy(&c->entries[0].ecx, "ntel", 4);
	}
	return c;
}

static struct kvm_cpuid_entry2 *find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == idx)
			return &c->entries[i];
	cr_assert_fail("no cpuid leaf 0x%x.%u", fn, idx);
	return NULL;
}

Test(arch_cpu, cpuid_topology_and_ids)
{
	struct kvm_cpuid2 *c = fake_cpuid(0, 6);
	cr_assert_eq(x86_cpuid_add_topology(c, c->nent + 6), 0);
	cr_assert_eq(c->nent, 9 + 2, "0xB subleaves 1 and 2 added; no 0x1F invented");
	x86_cpuid_setup(c, 3, 6);

	struct kvm_cpuid_entry2 *e = find(c, 1, 0);
	cr_assert_eq(e->ebx >> 24, 3, "initial APIC id");
	cr_assert_eq((e->ebx >> 16) & 0xff, 6, "logical processor count");
	cr_assert_eq(e->ebx & 0xffff, 0x0800, "CLFLUSH size and brand kept");
	cr_assert(e->ecx & (1u << 31), "hypervisor bit");
	cr_assert_eq(e->ecx & ~(1u << 31), 0x01202000, "no other feature added");
	cr_assert(e->edx & (1u << 28), "HTT with 6 CPUs");

	e = find(c, 4, 0);
	cr_assert_eq(e->eax >> 26, 5, "cores per package - 1");
	cr_assert_eq((e->eax >> 14) & 0xfff, 0, "L1 not shared");
	cr_assert_eq(e->eax & 0x3fff, 0x121, "cache type/level kept");
	e = find(c, 4, 3);
	cr_assert_eq((e->eax >> 14) & 0xfff, 5, "L3 shared by all");
	cr_assert_eq(find(c, 4, 4)->eax, 0, "terminator untouched");

	e = find(c, 0xb, 0);
	cr_assert_eq(e->eax, 0);
	cr_assert_eq(e->ebx, 1);
	cr_assert_eq(e->ecx, 0x100, "SMT level");
	cr_assert_eq(e->edx, 3, "x2APIC id");
	e = find(c, 0xb, 1);
	cr_assert_eq(e->eax, 3, "shift: 6 CPUs need 3 bits");
	cr_assert_eq(e->ebx, 6);
	cr_assert_eq(e->ecx, 0x201, "core level");
	cr_assert_eq(e->edx, 3);
	cr_assert(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
	e = find(c, 0xb, 2);
	cr_assert_eq(e->ecx, 2, "invalid level ends the list");
	cr_assert_eq(e->ebx, 0);

	e = find(c, 0x40000000, 0);
	cr_assert_eq(e->eax, 0x40000001, "max hypervisor leaf kept");
	char sig[13] = {0};
	memcpy(sig, &e->ebx, 4);
	memcpy(sig + 4, &e->ecx, 4);
	memcpy(sig + 8, &e->edx, 4);
	cr_assert_str_eq(sig, "KVMKVMKVM");
	cr_assert_eq(find(c, 0x80000008, 0)->ecx, 0x7001, "AMD-only leaf untouched on Intel");
	free(c);
}

Test(arch_cpu, cpuid_single_cpu_and_amd)
{
	struct kvm_cpuid2 *c = fake_cpuid(1, 0);
	x86_cpuid_setup(c, 0, 1);
	struct kvm_cpuid_entry2 *e = find(c, 1, 0);
	cr_assert_eq(e->edx & (1u << 28), 0, "no HTT with one CPU");
	cr_assert_eq((e->ebx >> 16) & 0xff, 1);
	cr_assert_eq(e->ebx >> 24, 0);
	cr_assert_eq(find(c, 0x80000008, 0)->ecx & 0xf0ff, 0, "NC 0, ApicIdSize 0");
	free(c);

	c = fake_cpuid(1, 0);
	x86_cpuid_setup(c, 5, 8);
	cr_assert_eq(find(c, 0x80000008, 0)->ecx & 0xf0ff, 0x3007, "NC 7, 3 id bits");
	e = find(c, 0x8000001e, 0);
	cr_assert_eq(e->eax, 5);
	cr_assert_eq(e->ebx, 5);
	cr_assert_eq(e->ecx, 0);
	free(c);
}

Test(arch_cpu, cpuid_add_topology_needs_room)
{
	struct kvm_cpuid2 *c = fake_cpuid(0, 1);
	cr_assert_eq(x86_cpuid_add_topology(c, c->nent + 1), -ENOSPC);
	free(c);
}

Test(arch_cpu, boot_msrs)
{
	struct kvm_msr_entry e[32];
	unsigned n = x86_boot_msrs(e, 32);
	cr_assert_geq(n, 10);
	static const uint32_t want[] = {0x174,      0x175,      0x176,      0xc0000081, 0xc0000082,
	                                0xc0000083, 0xc0000084, 0xc0000102, 0x10,       0x1a0};
	for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
		unsigned i;
		for (i = 0; i < n && e[i].index != want[w]; i++)
			;
		cr_assert_lt(i, n, "MSR 0x%x missing", want[w]);
		cr_assert_eq(e[i].data, want[w] == 0x1a0 ? 1 : 0, "MSR 0x%x", want[w]);
	}
	cr_assert_eq(x86_boot_msrs(e, 3), 3, "never more than max");
}

Test(arch_cpu, fpu_and_lapic)
{
	struct kvm_fpu fpu;
	memset(&fpu, 0xff, sizeof(fpu));
	x86_boot_fpu(&fpu);
	cr_assert_eq(fpu.fcw, 0x37f);
	cr_assert_eq(fpu.mxcsr, 0x1f80);
	cr_assert_eq(fpu.fsw, 0);

	struct kvm_lapic_state lapic;
	memset(&lapic, 0, sizeof(lapic));
	uint32_t masked = 0x10000 | 0x500; /* masked, some other delivery mode */
	memcpy(lapic.regs + 0x350, &masked, 4);
	memcpy(lapic.regs + 0x360, &masked, 4);
	x86_lapic_setup(&lapic);
	cr_assert_eq(arch_le32(lapic.regs + 0x350), 0x10700, "LINT0 ExtINT, mask kept");
	cr_assert_eq(arch_le32(lapic.regs + 0x360), 0x10400, "LINT1 NMI, mask kept");
}
