/*
 * The x86-64 guest physical address map ringvm builds, and where the boot
 * loaders put their structures. One place so the e820 map, the MP table, the
 * PCI BAR allocator and guest_mem agree.
 */
#ifndef RINGVM_ARCH_X86_64_LAYOUT_H
#define RINGVM_ARCH_X86_64_LAYOUT_H

#include <stdint.h>

/* RAM runs from 0 up to the 32-bit PCI hole; the rest of RAM starts at 4 GiB. */
#define X86_MMIO_HOLE_START 0xC0000000ull  /* 3 GiB */
#define X86_MMIO_HOLE_END   0x100000000ull /* 4 GiB */
#define X86_HIGH_RAM_START  0x100000000ull

/* Where PCI BARs are allocated (32-bit window), below the IOAPIC. */
#define X86_PCI_MMIO_START 0xC0000000ull
#define X86_PCI_MMIO_END   0xFEC00000ull
#define X86_IOAPIC_ADDR    0xFEC00000ull
#define X86_LAPIC_ADDR     0xFEE00000ull

/* The legacy hole below 1 MiB: BIOS data/EBDA area and ROM shadow are not RAM in e820. */
#define X86_EBDA_START     0x9FC00ull
#define X86_BIOS_START     0xA0000ull
#define X86_HIGH_MEM_START 0x100000ull /* 1 MiB */

/*
 * Boot data the loaders write below 1 MiB. Everything stays inside
 * [0x1000, 0x8000), [0x9000, X86_EBDA_START) and the BIOS area, because the
 * probe guest copies its AP trampoline to [0x8000, 0x9000) (SIPI vector 8):
 * nothing of ours may live there. Page 0 (real-mode IVT/BDA) stays zero.
 */
#define X86_GDT_ADDR         0x1000ull /* boot GDT (x86_bsp_regs), 4 entries */
#define X86_PVH_INFO_ADDR    0x2000ull /* hvm_start_info */
#define X86_PVH_MODLIST_ADDR 0x2040ull /* hvm_modlist_entry[1]: the initrd */
#define X86_PVH_MEMMAP_ADDR  0x2100ull /* hvm_memmap_table_entry[], to 0x3000 */
#define X86_BOOT_STACK_TOP   0x7000ull /* LINUX64 RSP; stack grows down from the zero page */
#define X86_ZERO_PAGE_ADDR   0x7000ull /* Linux boot_params, one page */
#define X86_TRAMPOLINE_START 0x8000ull /* [0x8000, 0x9000) kept free for the guest */
#define X86_TRAMPOLINE_END   0x9000ull
#define X86_PML4_ADDR        0x9000ull /* identity map: PML4, PDPT, 4 PDs → 0xF000 */
#define X86_PDPT_ADDR        0xA000ull
#define X86_PD_ADDR          0xB000ull
#define X86_PAGE_TABLES_END  0xF000ull
#define X86_CMDLINE_ADDR     0x20000ull /* kernel command line, NUL included */
#define X86_CMDLINE_MAX      0x10000ull /* 64 KiB with the NUL: longest command line is 65535 */
#define X86_ACPI_ADDR        0xE0000ull /* RSDP (Linux scans 0xE0000-0xFFFFF), XSDT, FADT, DSDT, MADT */
#define X86_BIOS_TABLES_ADDR 0xF0000ull  /* MP floating pointer + config table */
#define X86_BIOS_TABLES_END  0x100000ull /* [X86_ACPI_ADDR, here) is e820-reserved */

/*
 * IOAPIC pin of ISA IRQ 0 (the PIT) in the MP table and the MADT's interrupt
 * source override, as on every PC and under QEMU. core's GSI routing must send
 * GSI 0 to IOAPIC pin 2 to match (KVM's default routing sends it to pin 0).
 */
#define X86_IRQ0_IOAPIC_PIN 2

/* MP table entries carry 8-bit APIC ids and the IOAPIC takes id ncpus. */
#define X86_MAX_CPUS 254

#endif
