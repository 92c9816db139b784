/*
 * Firmware-style tables: the e820 map for RAM sizes below, at and above the
 * PCI hole, and the MP table's structure, entries and checksums for several
 * vCPU counts.
 */
#include <errno.h>

#include "tests/unit/arch/arch_fixture.h"

struct e820_case {
	uint64_t ram;
	unsigned n;
	struct x86_e820_entry e[6];
};

#define LOW_FIXED                                                                                  \
	{0, X86_EBDA_START, X86_E820_RAM}, {X86_EBDA_START, 0x400, X86_E820_RESERVED},             \
	{                                                                                          \
		X86_ACPI_ADDR, 0x20000, X86_E820_RESERVED                                          \
	}

static const struct e820_case e820_cases[] = {
    {64 * MIB, 4, {LOW_FIXED, {MIB, 63 * MIB, X86_E820_RAM}}},
    {3 * GIB, 4, {LOW_FIXED, {MIB, 3 * GIB - MIB, X86_E820_RAM}}},
    {4 * GIB, 5, {LOW_FIXED, {MIB, 3 * GIB - MIB, X86_E820_RAM}, {4 * GIB, GIB, X86_E820_RAM}}},
    {8 * GIB, 5, {LOW_FIXED, {MIB, 3 * GIB - MIB, X86_E820_RAM}, {4 * GIB, 5 * GIB, X86_E820_RAM}}},
    {MIB, 3, {LOW_FIXED}},
};

Test(arch_tables, e820_for_ram_sizes)
{
	for (size_t i = 0; i < sizeof(e820_cases) / sizeof(e820_cases[0]); i++) {
		const struct e820_case *t = &e820_cases[i];
		struct guest_mem m;
		struct x86_e820_entry e[X86_E820_MAX];
		arch_mem_init(&m, t->ram);
		int n = x86_e820_build(&m, e, X86_E820_MAX);
		cr_assert_eq(n, (int)t->n, "%llu MiB: %d entries",
		             (unsigned long long)(t->ram / MIB), n);
		uint64_t ram = 0;
		for (unsigned j = 0; j < t->n; j++) {
			cr_expect_eq(e[j].addr, t->e[j].addr, "ram %llu entry %u",
			             (unsigned long long)t->ram, j);
			cr_expect_eq(e[j].size, t->e[j].size, "ram %llu entry %u",
			             (unsigned long long)t->ram, j);
			cr_expect_eq(e[j].type, t->e[j].type);
			if (j)
				cr_expect_geq(e[j].addr, e[j - 1].addr + e[j - 1].size, "sorted");
			if (e[j].type == X86_E820_RAM)
				ram += e[j].size;
		}
		/* Only the legacy hole [EBDA, 1 MiB) is held back from the guest. */
		cr_expect_eq(ram, t->ram - (X86_HIGH_MEM_START - X86_EBDA_START));
		arch_mem_fini(&m);
	}
}

Test(arch_tables, e820_errors)
{
	struct guest_mem m;
	struct x86_e820_entry e[X86_E820_MAX];
	arch_mem_init(&m, 8 * GIB);
	cr_assert_eq(x86_e820_build(&m, e, 4), -ENOSPC);
	arch_mem_fini(&m);
	arch_mem_init(&m, 256 * 1024);
	cr_assert_eq(x86_e820_build(&m, e, X86_E820_MAX), -EINVAL);
	arch_mem_fini(&m);
}

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static void check_mptable(unsigned ncpus)
{
	struct guest_mem m;
	arch_mem_init(&m, 64 * MIB);
	memset(arch_gpa(&m, X86_BIOS_TABLES_ADDR, 0x10000), 0xa5, 0x10000);
	cr_assert_eq(x86_mptable_write(&m, ncpus), 0);

	const uint8_t *mpf = arch_gpa(&m, X86_BIOS_TABLES_ADDR, 16);
	cr_assert_eq(memcmp(mpf, "_MP_", 4), 0);
	cr_assert_eq(mpf[8], 1, "length in paragraphs");
	cr_assert_eq(mpf[9], 4, "spec 1.4");
	cr_assert_eq(sum(mpf, 16), 0, "floating pointer checksum");
	cr_assert_eq(mpf[11], 0, "feature byte 1: a config table follows");
	uint32_t cfg = arch_le32(mpf + 4);
	cr_assert_eq(cfg % 16, 0);

	const uint8_t *mpc = arch_gpa(&m, cfg, 44);
	cr_assert_eq(memcmp(mpc, "PCMP", 4), 0);
	uint16_t len = arch_le16(mpc + 4);
	unsigned entries = ncpus + 2 + 15 + 2;
	cr_assert_eq(len, 44 + ncpus * 20 + (entries - ncpus) * 8);
	mpc = arch_gpa(&m, cfg, len);
	cr_assert_eq(sum(mpc, len), 0, "config table checksum");
	cr_assert_eq(arch_le16(mpc + 34), entries);
	cr_assert_eq(arch_le32(mpc + 36), X86_LAPIC_ADDR);

	const uint8_t *p = mpc + 44;
	for (unsigned i = 0; i < ncpus; i++, p += 20) {
		cr_assert_eq(p[0], 0, "processor entry");
		cr_assert_eq(p[1], i, "APIC id");
		cr_assert_eq(p[3], i == 0 ? 3 : 1, "enabled, BSP flag on CPU 0 only");
	}
	cr_assert_eq(p[0], 1, "bus entry");
	cr_assert_eq(memcmp(p + 2, "ISA   ", 6), 0);
	p += 8;
	cr_assert_eq(p[0], 2, "IOAPIC entry");
	cr_assert_eq(p[1], ncpus, "IOAPIC id follows the CPUs");
	cr_assert_eq(p[3] & 1, 1, "IOAPIC enabled");
	cr_assert_eq(arch_le32(p + 4), X86_IOAPIC_ADDR);
	p += 8;
	unsigned pin_used[24] = {0};
	for (unsigned irq = 0; irq < 16; irq++) {
		if (irq == 2)
			continue;
		cr_assert_eq(p[0], 3, "I/O interrupt entry for IRQ %u", irq);
		cr_assert_eq(p[1], 0, "INT");
		cr_assert_eq(p[4], 0, "ISA bus");
		cr_assert_eq(p[5], irq);
		cr_assert_eq(p[6], ncpus, "to the IOAPIC");
		cr_assert_eq(p[7], irq == 0 ? 2 : irq, "IRQ0 on pin 2, others identity");
		cr_assert_eq(pin_used[p[7]]++, 0, "pin %u used twice", p[7]);
		p += 8;
	}
	cr_assert_eq(p[0], 4);
	cr_assert_eq(p[1], 3, "ExtINT");
	cr_assert_eq(p[6], 0xff);
	cr_assert_eq(p[7], 0, "LINT0");
	cr_assert_eq(p[8], 4);
	cr_assert_eq(p[9], 1, "NMI");
	cr_assert_eq(p[14], 0xff);
	cr_assert_eq(p[15], 1, "LINT1");
	cr_assert_eq(p + 16, mpc + len, "length covers exactly the entries");
	arch_mem_fini(&m);
}

Test(arch_tables, mptable_1_cpu)
{
	check_mptable(1);
}

Test(arch_tables, mptable_4_cpus)
{
	check_mptable(4);
}

Test(arch_tables, mptable_254_cpus)
{
	check_mptable(X86_MAX_CPUS);
}

Test(arch_tables, mptable_rejects_bad_counts)
{
	struct guest_mem m;
	arch_mem_init(&m, 64 * MIB);
	cr_assert_eq(x86_mptable_write(&m, 0), -EINVAL);
	cr_assert_eq(x86_mptable_write(&m, X86_MAX_CPUS + 1), -EINVAL);
	arch_mem_fini(&m);
}

/* Check an ACPI table's signature and checksum; returns it. */
static const uint8_t *acpi_table(struct guest_mem *m, uint64_t gpa, const char *sig)
{
	const uint8_t *t = arch_gpa(m, gpa, 36);
	cr_assert_eq(memcmp(t, sig, 4), 0, "table at 0x%llx is not %s", (unsigned long long)gpa,
	             sig);
	uint32_t len = arch_le32(t + 4);
	cr_assert_geq(len, 36);
	t = arch_gpa(m, gpa, len);
	cr_assert_eq(sum(t, len), 0, "%s checksum", sig);
	return t;
}

static void check_acpi(unsigned ncpus)
{
	struct guest_mem m;
	arch_mem_init(&m, 64 * MIB);
	cr_assert_eq(x86_acpi_write(&m, ncpus), 0);
	cr_assert_eq(x86_mptable_write(&m, ncpus), 0);

	const uint8_t *rsdp = arch_gpa(&m, X86_ACPI_ADDR, 36);
	cr_assert_eq(memcmp(rsdp, "RSD PTR ", 8), 0);
	cr_assert_eq(X86_ACPI_ADDR % 16, 0, "RSDP on a 16-byte boundary for the scan");
	cr_assert_eq(sum(rsdp, 20), 0, "RSDP 1.0 checksum");
	cr_assert_eq(rsdp[15], 2, "revision 2");
	cr_assert_eq(arch_le32(rsdp + 20), 36);
	cr_assert_eq(sum(rsdp, 36), 0, "RSDP extended checksum");

	const uint8_t *xsdt = acpi_table(&m, arch_le64(rsdp + 24), "XSDT");
	cr_assert_eq(arch_le32(xsdt + 4), 36 + 16, "two entries");
	const uint8_t *fadt = acpi_table(&m, arch_le64(xsdt + 36), "FACP");
	const uint8_t *madt = acpi_table(&m, arch_le64(xsdt + 44), "APIC");

	cr_assert_eq(arch_le32(fadt + 4), 276);
	cr_assert_geq(fadt[8], 5, "HW-reduced needs FADT revision 5+");
	cr_assert(arch_le32(fadt + 112) & (1u << 20), "HW_REDUCED_ACPI");
	cr_assert_eq(arch_le16(fadt + 109) & 2, 2, "8042 present");
	cr_assert_eq(arch_le64(fadt + 140), arch_le32(fadt + 40), "X_DSDT == DSDT");
	acpi_table(&m, arch_le64(fadt + 140), "DSDT");

	uint32_t len = arch_le32(madt + 4);
	cr_assert_eq(arch_le32(madt + 36), X86_LAPIC_ADDR);
	cr_assert_eq(arch_le32(madt + 40) & 1, 1, "PCAT_COMPAT");
	unsigned lapics = 0, ioapics = 0, isos = 0, nmis = 0;
	for (uint32_t off = 44; off < len;) {
		const uint8_t *e = madt + off;
		cr_assert_geq(e[1], 2);
		switch (e[0]) {
		case 0:
			cr_assert_eq(e[1], 8);
			cr_assert_eq(e[3], lapics, "APIC ids in order");
			cr_assert_eq(arch_le32(e + 4), 1, "enabled");
			lapics++;
			break;
		case 1:
			cr_assert_eq(e[2], ncpus, "IOAPIC id as in the MP table");
			cr_assert_eq(arch_le32(e + 4), X86_IOAPIC_ADDR);
			cr_assert_eq(arch_le32(e + 8), 0, "GSI base");
			ioapics++;
			break;
		case 2:
			cr_assert_eq(e[3], 0, "IRQ 0");
			cr_assert_eq(arch_le32(e + 4), 2, "→ GSI 2");
			isos++;
			break;
		case 4:
			cr_assert_eq(e[2], 0xff);
			cr_assert_eq(e[5], 1, "LINT1");
			nmis++;
			break;
		default:
			cr_assert_fail("unexpected MADT entry type %u", e[0]);
		}
		off += e[1];
		cr_assert_leq(off, len);
	}
	cr_assert_eq(lapics, ncpus);
	cr_assert_eq(ioapics, 1);
	cr_assert_eq(isos, 1);
	cr_assert_eq(nmis, 1);
	/* The MP table written after ACPI is intact, and ACPI stayed below it. */
	cr_assert_eq(memcmp(arch_gpa(&m, X86_BIOS_TABLES_ADDR, 4), "_MP_", 4), 0);
	cr_assert_leq(arch_le64(xsdt + 44) + len, X86_BIOS_TABLES_ADDR);
	arch_mem_fini(&m);
}

Test(arch_tables, acpi_1_cpu)
{
	check_acpi(1);
}

Test(arch_tables, acpi_254_cpus)
{
	check_acpi(X86_MAX_CPUS);
}

Test(arch_tables, acpi_rejects_bad_counts)
{
	struct guest_mem m;
	arch_mem_init(&m, 64 * MIB);
	cr_assert_eq(x86_acpi_write(&m, 0), -EINVAL);
	cr_assert_eq(x86_acpi_write(&m, X86_MAX_CPUS + 1), -EINVAL);
	arch_mem_fini(&m);
}
