/*
 * The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI
 * finds its CPUs, the IOAPIC and the ISA interrupt wiring. Floating pointer
 * at X86_BIOS_TABLES_ADDR (Linux scans 0xF0000–0xFFFFF for "_MP_"), the
 * configuration table right after it; both checksummed.
 */
#include <errno.h>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/x86_priv.h"

#define MPF_SIZE        16
#define MPC_HEADER_SIZE 44
#define MPC_CPU_SIZE    20
#define MPC_SMALL_SIZE  8 /* bus, IOAPIC, I/O and local interrupt entries */

enum { MP_PROCESSOR, MP_BUS, MP_IOAPIC, MP_INTSRC, MP_LINTSRC };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

#define MP_SPEC_REV    4    /* 1.4 */
#define LAPIC_VERSION  0x14 /* integrated APIC, as KVM's LAPIC reports */
#define IOAPIC_VERSION 0x11 /* KVM's in-kernel IOAPIC */
#define CPU_ENABLED    0x1
#define CPU_BOOTPROC   0x2
#define CPU_SIGNATURE  0x600 /* family 6: the specification only needs "some" */
#define CPU_FEATURES   0x201 /* FPU | APIC */
#define ISA_IRQS       16
_Static_assert(X86_IRQ0_IOAPIC_PIN == 2, "IRQ 2 is skipped because IRQ 0 takes its pin");

static uint8_t *cpu_entry(uint8_t *p, unsigned id)
{
	p[0] = MP_PROCESSOR;
	p[1] = (uint8_t)id;
	p[2] = LAPIC_VERSION;
	p[3] = CPU_ENABLED | (id == 0 ? CPU_BOOTPROC : 0);
	x86_put32(p + 4, CPU_SIGNATURE);
	x86_put32(p + 8, CPU_FEATURES);
	return p + MPC_CPU_SIZE;
}

/* I/O (MP_INTSRC) or local (MP_LINTSRC) interrupt entry; flags 0 = conforms to the bus. */
static uint8_t *int_entry(uint8_t *p, uint8_t type, uint8_t irqtype, uint8_t srcirq,
                          uint8_t dstapic, uint8_t dstpin)
{
	p[0] = type;
	p[1] = irqtype;
	x86_put16(p + 2, 0);
	p[4] = 0; /* source bus: ISA (bus 0) */
	p[5] = srcirq;
	p[6] = dstapic;
	p[7] = dstpin;
	return p + MPC_SMALL_SIZE;
}

int x86_mptable_write(struct guest_mem *mem, unsigned ncpus)
{
	if (ncpus < 1 || ncpus > X86_MAX_CPUS)
		return -EINVAL;
	uint64_t len = MPC_HEADER_SIZE + (uint64_t)ncpus * MPC_CPU_SIZE +
	               (2 + (ISA_IRQS - 1) + 2) * MPC_SMALL_SIZE;
	_Static_assert(MPF_SIZE + MPC_HEADER_SIZE + X86_MAX_CPUS * MPC_CPU_SIZE +
	                       19 * MPC_SMALL_SIZE <=
	                   X86_BIOS_TABLES_END - X86_BIOS_TABLES_ADDR,
	               "MP table does not fit its area");
	uint8_t *mpf = guest_mem_ptr(mem, X86_BIOS_TABLES_ADDR, MPF_SIZE + len);
	if (!mpf)
		return -ENOMEM;
	memset(mpf, 0, MPF_SIZE + len);
	uint8_t *mpc = mpf + MPF_SIZE;
	uint8_t ioapic_id = (uint8_t)ncpus;

	memcpy(mpf, "_MP_", 4);
	x86_put32(mpf + 4, (uint32_t)(X86_BIOS_TABLES_ADDR + MPF_SIZE));
	mpf[8] = 1; /* length in 16-byte units */
	mpf[9] = MP_SPEC_REV;
	/* feature bytes 11..15 stay 0: a configuration table is present, no IMCR. */
	mpf[10] = (uint8_t)-x86_sum8(mpf, MPF_SIZE);

	uint8_t *p = mpc + MPC_HEADER_SIZE;
	for (unsigned i = 0; i < ncpus; i++)
		p = cpu_entry(p, i);
	p[0] = MP_BUS;
	p[1] = 0;
	memcpy(p + 2, "ISA   ", 6);
	p += MPC_SMALL_SIZE;
	p[0] = MP_IOAPIC;
	p[1] = ioapic_id;
	p[2] = IOAPIC_VERSION;
	p[3] = 1; /* enabled */
	x86_put32(p + 4, (uint32_t)X86_IOAPIC_ADDR);
	p += MPC_SMALL_SIZE;
	for (unsigned irq = 0; irq < ISA_IRQS; irq++) {
		if (irq == X86_IRQ0_IOAPIC_PIN)
			continue; /* the cascade IRQ: its pin carries IRQ 0 */
		uint8_t pin = irq == 0 ? X86_IRQ0_IOAPIC_PIN : (uint8_t)irq;
		p = int_entry(p, MP_INTSRC, MP_INT, (uint8_t)irq, ioapic_id, pin);
	}
	/* Destination 0xff: every LAPIC, LINT0 as the 8259's virtual wire, LINT1 as NMI. */
	p = int_entry(p, MP_LINTSRC, MP_EXTINT, 0, 0xff, 0);
	p = int_entry(p, MP_LINTSRC, MP_NMI, 0, 0xff, 1);

	memcpy(mpc, "PCMP", 4);
	x86_put16(mpc + 4, (uint16_t)(p - mpc));
	mpc[6] = MP_SPEC_REV;
	memcpy(mpc + 8, "RINGVM  ", 8);
	memcpy(mpc + 16, "RINGVM      ", 12);
	x86_put16(mpc + 34, (uint16_t)(ncpus + 2 + (ISA_IRQS - 1) + 2)); /* entry count */
	x86_put32(mpc + 36, (uint32_t)X86_LAPIC_ADDR);
	mpc[7] = (uint8_t)-x86_sum8(mpc, (size_t)(p - mpc));
	return 0;
}
