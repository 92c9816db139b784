/*
 * x86-64 boot: loads a kernel (PVH ELF, ELF vmlinux or Linux bzImage) with its
 * initrd and command line into guest RAM, writes the tables a guest needs
 * (e820 / PVH memmap, MP table, ACPI), and describes the boot vCPU's initial
 * register state. Pure functions over guest memory: no KVM file descriptors,
 * so every piece is unit-testable. core/ applies the results with ioctls.
 */
#ifndef RINGVM_ARCH_X86_64_BOOT_H
#define RINGVM_ARCH_X86_64_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

#include "core/guest_mem.h"

struct x86_boot_config {
	const char *kernel_path;
	const char *initrd_path; /* NULL: no initrd */
	const char *cmdline;     /* never NULL; "" for none */
	unsigned ncpus;          /* ≥ 1 */
	/*
	 * True when guest RAM is known to be all zeros (a freshly created memfd):
	 * the loader then skips clearing its boot-data area below 1 MiB, which
	 * would fault in ~256 pages for nothing (start-up time is a feature).
	 */
	bool mem_is_zero;
};

enum x86_entry_kind {
	X86_ENTRY_PVH,     /* 32-bit protected mode, paging off, EBX = hvm_start_info */
	X86_ENTRY_LINUX64, /* 64-bit long mode, identity map, RSI = boot_params */
};

struct x86_boot_info {
	enum x86_entry_kind kind;
	uint64_t entry;    /* guest-physical address of the first instruction */
	uint64_t boot_arg; /* PVH: hvm_start_info gpa; LINUX64: boot_params (zero page) gpa */
	uint64_t kernel_start, kernel_end;  /* loaded image extent */
	uint64_t initrd_start, initrd_size; /* 0, 0 without an initrd */
	const char *format;                 /* "pvh-elf", "elf64", "bzImage" (static string) */
};

/*
 * Load the kernel named in cfg (format detected from its contents), the
 * initrd and command line, the memory map, MP table and ACPI tables.
 * Returns 0, or -errno with a one-line message in err (never truncated past
 * errlen): missing file, truncated or bad image, protocol too old, kernel or
 * initrd not fitting in RAM, command line too long, overlapping segments.
 */
int x86_load(struct guest_mem *mem, const struct x86_boot_config *cfg, struct x86_boot_info *out,
             char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Initial register state of the boot vCPU for info. sregs must hold what
 * KVM_GET_SREGS returned (fields not set here are kept). For LINUX64 this also
 * writes the GDT and identity-mapped page tables into guest RAM.
 * Returns 0 or -errno.
 */
int x86_bsp_regs(struct guest_mem *mem, const struct x86_boot_info *info, struct kvm_regs *regs,
                 struct kvm_sregs *sregs) __attribute__((warn_unused_result));

/*
 * Adjust KVM_GET_SUPPORTED_CPUID's answer for vCPU cpu of ncpus: initial and
 * x2APIC ids, topology leaves, hypervisor bit, KVM signature leaf.
 */
void x86_cpuid_setup(struct kvm_cpuid2 *cpuid, unsigned cpu, unsigned ncpus);

/*
 * (Addition.) KVM_GET_SUPPORTED_CPUID lists only the topology subleaves the
 * host has; on a host with one level (as here) leaf 0xB has subleaf 0 alone,
 * and a guest would see each vCPU as its own package. Call this before
 * x86_cpuid_setup: it appends subleaves 0–2 of 0xB and 0x1F where those leaves
 * exist but the subleaf is missing. capacity is the number of entries the
 * kvm_cpuid2 buffer holds (so allocate 6 spare). Returns 0 or -ENOSPC.
 */
int x86_cpuid_add_topology(struct kvm_cpuid2 *cpuid, unsigned capacity)
    __attribute__((warn_unused_result));

/* MSRs every vCPU starts with (SYSENTER, STAR/LSTAR, TSC, MISC_ENABLE, ...). Returns the count. */
unsigned x86_boot_msrs(struct kvm_msr_entry *entries, unsigned max);

/* FPU state Linux expects at entry (FCW 0x37f, MXCSR 0x1f80). */
void x86_boot_fpu(struct kvm_fpu *fpu);

/* LAPIC LINT0 as ExtINT and LINT1 as NMI, in the state KVM_GET_LAPIC returned. */
void x86_lapic_setup(struct kvm_lapic_state *lapic);

/*
 * Additions beyond the loader contract, used by x86_load and exposed so the
 * tables can be unit-tested (and, later, reused by snapshot/restore).
 */

/* e820 / PVH memmap types (the PVH memmap uses the same numbers). */
#define X86_E820_RAM      1
#define X86_E820_RESERVED 2

struct x86_e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};

/* The most entries x86_e820_build can produce for any guest_mem. */
#define X86_E820_MAX (GUEST_MEM_MAX_REGIONS + 4)

/*
 * The guest's memory map, sorted by address: RAM [0, EBDA), the EBDA and the
 * firmware table area [X86_ACPI_ADDR, 1 MiB) reserved, then every RAM
 * region above 1 MiB as RAM. Returns the count (≤ max) or -ENOSPC when max is
 * too small, -EINVAL when RAM does not start at 0 or covers less than 1 MiB.
 */
int x86_e820_build(const struct guest_mem *mem, struct x86_e820_entry *e, unsigned max)
    __attribute__((warn_unused_result));

/*
 * Write the Intel MP table (floating pointer at X86_BIOS_TABLES_ADDR, config
 * table right after it) for ncpus CPUs with APIC ids 0..ncpus-1 (CPU 0 the
 * BSP), one ISA bus and the IOAPIC (id ncpus) at X86_IOAPIC_ADDR: ISA IRQ 0 →
 * pin X86_IRQ0_IOAPIC_PIN, IRQ 1, 3..15 → the same pin (IRQ 2, the cascade,
 * has no entry as pin 2 is IRQ 0's), ExtINT on LINT0 and NMI on LINT1 of every
 * LAPIC. Returns 0, -EINVAL for ncpus outside 1..X86_MAX_CPUS, or -ENOMEM when
 * RAM does not cover the table area.
 */
int x86_mptable_write(struct guest_mem *mem, unsigned ncpus) __attribute__((warn_unused_result));

/*
 * Write ACPI tables at X86_ACPI_ADDR: RSDP v2 (its address is the RSDP a
 * kernel is handed), XSDT, a hardware-reduced FADT (i8042 and legacy ISA
 * devices announced), an empty DSDT and a MADT with LAPICs 0..ncpus-1, the
 * IOAPIC (id ncpus, GSI base 0), an override ISA IRQ 0 → GSI
 * X86_IRQ0_IOAPIC_PIN, and NMI on LINT1. Every table checksummed. The MP
 * table stays for kernels without ACPI. Returns 0, -EINVAL for ncpus outside
 * 1..X86_MAX_CPUS, or -ENOMEM when RAM does not cover the area.
 */
int x86_acpi_write(struct guest_mem *mem, unsigned ncpus) __attribute__((warn_unused_result));

#endif
