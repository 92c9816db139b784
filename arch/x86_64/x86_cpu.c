/*
 * Per-vCPU state a guest expects at power-on beyond the registers: CPUID
 * (APIC ids and a flat topology of ncpus single-thread cores in one package),
 * the boot MSRs, the FPU control words and the LAPIC's LINT0/LINT1 wiring.
 */
#include <errno.h>
#include <string.h>

#include "arch/x86_64/boot.h"

#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_EDX_HTT        (1u << 28)
#define TOPO_LEVEL_SMT         1
#define TOPO_LEVEL_CORE        2

#define MSR_IA32_TSC            0x10
#define MSR_IA32_SYSENTER_CS    0x174
#define MSR_IA32_SYSENTER_ESP   0x175
#define MSR_IA32_SYSENTER_EIP   0x176
#define MSR_IA32_MISC_ENABLE    0x1a0
#define MSR_MTRR_DEF_TYPE       0x2ff
#define MSR_STAR                0xc0000081
#define MSR_LSTAR               0xc0000082
#define MSR_CSTAR               0xc0000083
#define MSR_SYSCALL_MASK        0xc0000084
#define MSR_KERNEL_GS_BASE      0xc0000102
#define MISC_ENABLE_FAST_STRING 0x1
#define MTRR_ENABLE             (1u << 11)
#define MTRR_TYPE_WB            6

#define APIC_LVT_LINT0     0x350
#define APIC_LVT_LINT1     0x360
#define APIC_DELIVERY_MASK 0x700
#define APIC_DM_NMI        0x400
#define APIC_DM_EXTINT     0x700

/* Bits needed to number ncpus cores: the x2APIC id shift to the package level. */
static uint32_t core_shift(unsigned ncpus)
{
	uint32_t s = 0;
	while ((1u << s) < ncpus)
		s++;
	return s;
}

static int vendor_is_amd(const struct kvm_cpuid2 *cpuid)
{
	for (uint32_t i = 0; i < cpuid->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		if (e->function == 0)
			return (e->ebx == 0x68747541 && e->ecx == 0x444d4163 &&
			        e->edx == 0x69746e65) || /* AuthenticAMD */
			       (e->ebx == 0x6f677948 && e->ecx == 0x656e6975 &&
			        e->edx == 0x6e65476e); /* HygonGenuine */
	}
	return 0;
}

/* Leaves 0xB and 0x1F: level 0 SMT (one thread per core), level 1 the package's cores. */
static void topology_leaf(struct kvm_cpuid_entry2 *e, unsigned cpu, unsigned ncpus)
{
	uint32_t level = e->index;
	e->edx = cpu; /* x2APIC id == APIC id == cpu */
	if (level == 0) {
		e->eax = 0;
		e->ebx = 1;
		e->ecx = TOPO_LEVEL_SMT << 8 | level;
	} else if (level == 1) {
		e->eax = core_shift(ncpus);
		e->ebx = ncpus;
		e->ecx = TOPO_LEVEL_CORE << 8 | level;
	} else {
		e->eax = 0;
		e->ebx = 0;
		e->ecx = level & 0xff; /* level type 0: no more levels */
	}
}

int x86_cpuid_add_topology(struct kvm_cpuid2 *cpuid, unsigned capacity)
{
	for (uint32_t leaf = 0xb; leaf <= 0x1f; leaf += 0x1f - 0xb) {
		const struct kvm_cpuid_entry2 *first = NULL;
		int have[3] = {0, 0, 0};
		for (uint32_t i = 0; i < cpuid->nent; i++) {
			const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
			if (e->function != leaf)
				continue;
			first = first ? first : e;
			if (e->index < 3)
				have[e->index] = 1;
		}
		if (!first)
			continue; /* the leaf does not exist on this CPU: do not invent it */
		struct kvm_cpuid_entry2 tmpl = *first;
		for (uint32_t idx = 0; idx < 3; idx++) {
			if (have[idx])
				continue;
			if (cpuid->nent >= capacity)
				return -ENOSPC;
			tmpl.index = idx;
			tmpl.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
			cpuid->entries[cpuid->nent++] = tmpl;
		}
	}
	return 0;
}

void x86_cpuid_setup(struct kvm_cpuid2 *cpuid, unsigned cpu, unsigned ncpus)
{
	int amd = vendor_is_amd(cpuid);
	uint32_t shift = core_shift(ncpus);
	for (uint32_t i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0xffff) | (cpu & 0xff) << 24 | (ncpus & 0xff) << 16;
			/* Not a feature KVM offers but the standard "running under a hypervisor"
			 * flag. */
			e->ecx |= CPUID_1_ECX_HYPERVISOR;
			if (ncpus > 1)
				e->edx |= CPUID_1_EDX_HTT;
			else
				e->edx &= ~CPUID_1_EDX_HTT;
			break;
		case 4:
			if ((e->eax & 0x1f) == 0)
				break; /* no cache at this subleaf */
			{
				uint32_t level = (e->eax >> 5) & 0x7;
				uint32_t sharing = level >= 3 ? ncpus - 1 : 0;
				uint32_t cores = ncpus - 1 > 63 ? 63 : ncpus - 1;
				e->eax = (e->eax & 0x3fff) | (sharing & 0xfff) << 14 | cores << 26;
			}
			break;
		case 0xb:
		case 0x1f:
			topology_leaf(e, cpu, ncpus);
			break;
		case 0x40000000:
			/* Keep KVM's leaf, but make sure it names KVM: Linux looks for this. */
			memcpy(&e->ebx, "KVMK", 4);
			memcpy(&e->ecx, "VMKV", 4);
			memcpy(&e->edx, "M\0\0\0", 4);
			break;
		case 0x80000008:
			if (amd)
				e->ecx = (e->ecx & ~0xf0ffu) | shift << 12 | ((ncpus - 1) & 0xff);
			break;
		case 0x8000001e:
			if (amd) {
				e->eax = cpu;        /* extended APIC id */
				e->ebx = cpu & 0xff; /* core id, one thread per core */
				e->ecx = 0;          /* node 0, one node */
			}
			break;
		}
	}
}

unsigned x86_boot_msrs(struct kvm_msr_entry *entries, unsigned max)
{
	static const struct kvm_msr_entry msrs[] = {
	    {.index = MSR_IA32_SYSENTER_CS},
	    {.index = MSR_IA32_SYSENTER_ESP},
	    {.index = MSR_IA32_SYSENTER_EIP},
	    {.index = MSR_STAR},
	    {.index = MSR_CSTAR},
	    {.index = MSR_KERNEL_GS_BASE},
	    {.index = MSR_SYSCALL_MASK},
	    {.index = MSR_LSTAR},
	    {.index = MSR_IA32_TSC},
	    /* Linux expects firmware to have enabled fast strings (rep movs/stos). */
	    {.index = MSR_IA32_MISC_ENABLE, .data = MISC_ENABLE_FAST_STRING},
	    /* MTRRs on, default write-back: without this memory would default to uncached. */
	    {.index = MSR_MTRR_DEF_TYPE, .data = MTRR_ENABLE | MTRR_TYPE_WB},
	};
	unsigned n = sizeof(msrs) / sizeof(msrs[0]);
	if (n > max)
		n = max;
	memcpy(entries, msrs, n * sizeof(msrs[0]));
	return n;
}

void x86_boot_fpu(struct kvm_fpu *fpu)
{
	memset(fpu, 0, sizeof(*fpu));
	fpu->fcw = 0x37f;    /* all x87 exceptions masked, 64-bit precision */
	fpu->mxcsr = 0x1f80; /* all SSE exceptions masked */
}

static void set_delivery(struct kvm_lapic_state *lapic, unsigned reg, uint32_t mode)
{
	uint32_t v;
	memcpy(&v, lapic->regs + reg, sizeof(v));
	v = (v & ~APIC_DELIVERY_MASK) | mode;
	memcpy(lapic->regs + reg, &v, sizeof(v));
}

void x86_lapic_setup(struct kvm_lapic_state *lapic)
{
	/* The 8259 PIC reaches the CPU through LINT0 (virtual wire mode); NMI through LINT1. */
	set_delivery(lapic, APIC_LVT_LINT0, APIC_DM_EXTINT);
	set_delivery(lapic, APIC_LVT_LINT1, APIC_DM_NMI);
}
