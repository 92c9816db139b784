/* PCI root: 0xCF8/0xCFC decoding, host bridge identity, absent functions. */
#include <criterion/criterion.h>
#include <errno.h>

#include "core/pci.h"

static struct bus pio;
static struct pci_root root;

static void setup(void)
{
	cr_assert_eq(bus_init(&pio, "pio"), 0);
	cr_assert_eq(pci_root_init(&root), 0);
	cr_assert_eq(pci_root_attach(&root, &pio), 0);
}

static void teardown(void)
{
	pci_root_destroy(&root);
	bus_destroy(&pio);
}

TestSuite(core_pci, .init = setup, .fini = teardown);

static uint32_t cfg_read(unsigned slot, unsigned fn, unsigned reg, unsigned len)
{
	uint32_t a = 0x80000000u | slot << 11 | fn << 8 | (reg & 0xfc);
	uint8_t d[4];
	for (int i = 0; i < 4; i++)
		d[i] = (uint8_t)(a >> (8 * i));
	bus_write(&pio, 0xcf8, d, 4);
	uint8_t out[4] = {0};
	bus_read(&pio, 0xcfc + (reg & 3), out, len);
	uint32_t v = 0;
	for (unsigned i = 0; i < len; i++)
		v |= (uint32_t)out[i] << (8 * i);
	return v;
}

Test(core_pci, host_bridge)
{
	cr_assert_eq(cfg_read(0, 0, 0, 4), 0x12378086);
	cr_assert_eq(cfg_read(0, 0, 2, 2), 0x1237);
	cr_assert_eq(cfg_read(0, 0, 0xb, 1), 0x06);
	cr_assert_eq(cfg_read(0, 0, 0x8, 4) >> 8, 0x060000);
}

Test(core_pci, absent_reads_all_ones)
{
	cr_assert_eq(cfg_read(5, 0, 0, 4), 0xffffffffu);
	cr_assert_eq(cfg_read(0, 1, 0, 2), 0xffffu);
	/* Config disabled (bit 31 clear) reads all-ones too. */
	uint8_t d[4] = {0, 0, 0, 0};
	bus_write(&pio, 0xcf8, d, 4);
	uint8_t out[4];
	bus_read(&pio, 0xcfc, out, 4);
	cr_assert_eq(out[0] & out[1] & out[2] & out[3], 0xff);
}

static uint32_t fake_last_val;
static unsigned fake_last_reg;
static uint32_t fake_read(void *o, unsigned reg, unsigned len)
{
	(void)o;
	return reg == 0 && len == 4 ? 0x10011af4 : 0;
}
static void fake_write(void *o, unsigned reg, unsigned len, uint32_t val)
{
	(void)o, (void)len;
	fake_last_reg = reg;
	fake_last_val = val;
}
static const struct pci_dev_ops fake_ops = {.name = "fake", .cfg_read = fake_read,
					    .cfg_write = fake_write};

Test(core_pci, slots_dispatch)
{
	cr_assert_eq(pci_root_add(&root, 0, &fake_ops, NULL), -EINVAL);
	cr_assert_eq(pci_root_add(&root, 32, &fake_ops, NULL), -EINVAL);
	cr_assert_eq(pci_root_add(&root, 3, &fake_ops, NULL), 0);
	cr_assert_eq(pci_root_add(&root, 3, &fake_ops, NULL), -EBUSY);
	cr_assert_eq(cfg_read(3, 0, 0, 4), 0x10011af4);
	pci_root_cfg_write(&root, 3, 0, 0x10, 4, 0xc0000000);
	cr_assert_eq(fake_last_reg, 0x10);
	cr_assert_eq(fake_last_val, 0xc0000000);
	/* Out-of-range register accesses never reach the device. */
	fake_last_reg = 0;
	pci_root_cfg_write(&root, 3, 0, 254, 4, 1);
	cr_assert_eq(fake_last_reg, 0);
}
