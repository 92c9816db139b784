/*
 * Minimal ACPI for kernels built without MP-table support (Debian's cloud
 * kernel has CONFIG_X86_MPPARSE off, so without a MADT it sees one CPU and no
 * IOAPIC): RSDP v2 → XSDT → FADT (hardware-reduced) → empty DSDT, and a MADT
 * with the LAPICs, the IOAPIC, the IRQ 0 override and the LINT1 NMI.
 */
#include <errno.h>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/x86_priv.h"

/* Table offsets inside the ACPI area; each 16-byte aligned, sizes asserted below. */
#define RSDP_OFF 0x000
#define XSDT_OFF 0x040
#define FADT_OFF 0x080
#define DSDT_OFF 0x200
#define MADT_OFF 0x240

#define HDR_SIZE        36
#define RSDP_SIZE       36
#define XSDT_SIZE       (HDR_SIZE + 2 * 8)
#define FADT_SIZE       276 /* ACPI 6.3 */
#define DSDT_SIZE       HDR_SIZE
#define MADT_FIXED      (HDR_SIZE + 8)
#define MADT_LAPIC_SIZE 8
#define MADT_TAIL       (12 + 10 + 6) /* IOAPIC, interrupt source override, LAPIC NMI */

_Static_assert(XSDT_OFF + XSDT_SIZE <= FADT_OFF, "XSDT overlaps FADT");
_Static_assert(FADT_OFF + FADT_SIZE <= DSDT_OFF, "FADT overlaps DSDT");
_Static_assert(DSDT_OFF + DSDT_SIZE <= MADT_OFF, "DSDT overlaps MADT");
_Static_assert(X86_ACPI_ADDR + MADT_OFF + MADT_FIXED + X86_MAX_CPUS * MADT_LAPIC_SIZE + MADT_TAIL <=
                   X86_BIOS_TABLES_ADDR,
               "MADT runs into the MP table");

/* FADT fields (ACPI 6.3, table 5-33). */
#define FADT_DSDT                40
#define FADT_IAPC_BOOT_ARCH      109
#define FADT_FLAGS               112
#define FADT_MINOR_VERSION       131
#define FADT_X_DSDT              140
#define FADT_HYPERVISOR_ID       268
#define BOOT_ARCH_LEGACY_DEVICES 0x1       /* ISA devices (UART, RTC) behind fixed ports */
#define BOOT_ARCH_8042           0x2       /* Linux probes the i8042 only with this */
#define FLAG_PWR_BUTTON          (1u << 4) /* no fixed-feature power button */
#define FLAG_SLP_BUTTON          (1u << 5)
#define FLAG_HW_REDUCED          (1u << 20) /* no PM1/GPE blocks, no SCI: nothing to emulate */

#define MADT_PCAT_COMPAT 0x1 /* dual 8259s present: the OS masks them */
enum { MADT_LAPIC = 0, MADT_IOAPIC = 1, MADT_ISO = 2, MADT_LAPIC_NMI = 4 };

static void header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	x86_put32(t + 4, len);
	t[8] = rev;
	memcpy(t + 10, "RINGVM", 6);
	memcpy(t + 16, "RINGVMTB", 8);
	x86_put32(t + 24, 1);
	memcpy(t + 28, "RVMM", 4);
	x86_put32(t + 32, 1);
}

static void checksum(uint8_t *t, size_t len, size_t at)
{
	t[at] = 0;
	t[at] = (uint8_t)-x86_sum8(t, len);
}

static void write_madt(uint8_t *t, unsigned ncpus, uint32_t len)
{
	header(t, "APIC", len, 5);
	x86_put32(t + 36, (uint32_t)X86_LAPIC_ADDR);
	x86_put32(t + 40, MADT_PCAT_COMPAT);
	uint8_t *p = t + MADT_FIXED;
	for (unsigned i = 0; i < ncpus; i++, p += MADT_LAPIC_SIZE) {
		p[0] = MADT_LAPIC;
		p[1] = MADT_LAPIC_SIZE;
		p[2] = (uint8_t)i;   /* processor UID */
		p[3] = (uint8_t)i;   /* APIC id */
		x86_put32(p + 4, 1); /* enabled */
	}
	p[0] = MADT_IOAPIC;
	p[1] = 12;
	p[2] = (uint8_t)ncpus; /* same id as in the MP table */
	x86_put32(p + 4, (uint32_t)X86_IOAPIC_ADDR);
	x86_put32(p + 8, 0); /* GSI base */
	p += 12;
	p[0] = MADT_ISO;
	p[1] = 10;
	p[2] = 0;                              /* ISA */
	p[3] = 0;                              /* IRQ 0 ... */
	x86_put32(p + 4, X86_IRQ0_IOAPIC_PIN); /* ... is GSI 2, as on every PC */
	x86_put16(p + 8, 0);                   /* conforms to the bus: edge, active high */
	p += 10;
	p[0] = MADT_LAPIC_NMI;
	p[1] = 6;
	p[2] = 0xff; /* all processors */
	x86_put16(p + 3, 0);
	p[5] = 1; /* LINT1 */
	checksum(t, len, 9);
}

int x86_acpi_write(struct guest_mem *mem, unsigned ncpus)
{
	if (ncpus < 1 || ncpus > X86_MAX_CPUS)
		return -EINVAL;
	uint32_t madt_len = MADT_FIXED + ncpus * MADT_LAPIC_SIZE + MADT_TAIL;
	uint8_t *a = guest_mem_ptr(mem, X86_ACPI_ADDR, MADT_OFF + madt_len);
	if (!a)
		return -ENOMEM;
	memset(a, 0, MADT_OFF + madt_len);

	uint8_t *dsdt = a + DSDT_OFF;
	header(dsdt, "DSDT", DSDT_SIZE, 2); /* no AML: nothing to describe */
	checksum(dsdt, DSDT_SIZE, 9);

	uint8_t *fadt = a + FADT_OFF;
	header(fadt, "FACP", FADT_SIZE, 6);
	x86_put32(fadt + FADT_DSDT, (uint32_t)(X86_ACPI_ADDR + DSDT_OFF));
	x86_put16(fadt + FADT_IAPC_BOOT_ARCH, BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042);
	x86_put32(fadt + FADT_FLAGS, FLAG_HW_REDUCED | FLAG_PWR_BUTTON | FLAG_SLP_BUTTON);
	fadt[FADT_MINOR_VERSION] = 3;
	x86_put64(fadt + FADT_X_DSDT, X86_ACPI_ADDR + DSDT_OFF);
	memcpy(fadt + FADT_HYPERVISOR_ID, "RINGVM\0\0", 8);
	checksum(fadt, FADT_SIZE, 9);

	write_madt(a + MADT_OFF, ncpus, madt_len);

	uint8_t *xsdt = a + XSDT_OFF;
	header(xsdt, "XSDT", XSDT_SIZE, 1);
	x86_put64(xsdt + HDR_SIZE, X86_ACPI_ADDR + FADT_OFF);
	x86_put64(xsdt + HDR_SIZE + 8, X86_ACPI_ADDR + MADT_OFF);
	checksum(xsdt, XSDT_SIZE, 9);

	uint8_t *rsdp = a + RSDP_OFF;
	memcpy(rsdp, "RSD PTR ", 8);
	memcpy(rsdp + 9, "RINGVM", 6);
	rsdp[15] = 2; /* ACPI 2.0+: use the XSDT (the RSDT address stays 0) */
	x86_put32(rsdp + 20, RSDP_SIZE);
	x86_put64(rsdp + 24, X86_ACPI_ADDR + XSDT_OFF);
	checksum(rsdp, 20, 8);         /* ACPI 1.0 checksum: first 20 bytes */
	checksum(rsdp, RSDP_SIZE, 32); /* extended checksum: all of it */
	return 0;
}
