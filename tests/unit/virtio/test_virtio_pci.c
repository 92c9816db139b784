/*
 * virtio-pci transport in-process, configuration side: config space and
 * BAR sizing, feature negotiation, the status state machine out of order
 * (hostile case 11), odd-sized and out-of-range accesses, queue setup
 * checks. Fixture: vpci_fixture.h.
 */
#include "tests/unit/virtio/vpci_fixture.h"

/* ---- config space ---- */

Test(virtio_pci, config_header_and_capabilities, .init = setup, .fini = teardown)
{
	cr_expect_eq(crd(0x00, 2), VIRTIO_PCI_VENDOR);
	cr_expect_eq(crd(0x02, 2), 0x1040 + 42);
	cr_expect_geq(crd(0x08, 1), 1, "revision ≥ 1 (modern only)");
	cr_expect_eq(crd(0x0b, 1), 0xff);
	cr_expect_eq(crd(0x2c, 2), VIRTIO_PCI_VENDOR);
	cr_expect_geq(crd(0x2e, 2), 0x40);
	cr_expect(crd(0x06, 2) & 0x10, "capability list");
	cr_expect_eq(crd(0x3d, 1), 0, "no INTx pin");
	static const struct {
		uint8_t type;
		uint32_t off;
	} want[] = {{1, VIRTIO_PCI_COMMON_OFF},
	            {2, VIRTIO_PCI_NOTIFY_OFF},
	            {3, VIRTIO_PCI_ISR_OFF},
	            {4, VIRTIO_PCI_DEVCFG_OFF},
	            {5, 0}};
	for (unsigned i = 0; i < 5; i++) {
		unsigned c = find_cap(0x09, want[i].type);
		cr_assert_neq(c, 0, "virtio cap type %u", want[i].type);
		cr_expect_eq(crd(c + 4, 1), 0, "BAR 0");
		if (want[i].type != 5)
			cr_expect_eq(crd(c + 8, 4), want[i].off);
	}
	unsigned n = find_cap(0x09, 2);
	cr_expect_eq(crd(n + 2, 1), 20);
	cr_expect_eq(crd(n + 16, 4), 4, "notify_off_multiplier");
	cr_expect_eq(crd(find_cap(0x09, 4) + 12, 4), 6, "device cfg length");
	unsigned m = find_cap(0x11, 0);
	cr_assert_neq(m, 0);
	cr_expect_eq(crd(m + 2, 2), 2, "3 vectors: table size - 1, disabled");
	cr_expect_eq(crd(m + 4, 4), VIRTIO_PCI_MSIX_TABLE_OFF);
	cr_expect_eq(crd(m + 8, 4), VIRTIO_PCI_MSIX_PBA_OFF);
	/* Read-only registers ignore writes. */
	cwr(0x00, 4, 0xdeadbeef);
	cwr(m + 4, 4, 0x1234);
	cr_expect_eq(crd(0x00, 2), VIRTIO_PCI_VENDOR);
	cr_expect_eq(crd(m + 4, 4), VIRTIO_PCI_MSIX_TABLE_OFF);
	cr_expect_eq(crd(0xff, 1), 0, "last byte readable");
}

Test(virtio_pci, bar_sizing, .init = setup, .fini = teardown)
{
	cr_expect_eq(crd(0x10, 4), 0x4, "64-bit memory BAR, address 0");
	cwr(0x10, 4, 0xffffffff);
	cwr(0x14, 4, 0xffffffff);
	cr_expect_eq(crd(0x10, 4), (uint32_t) ~(VIRTIO_PCI_BAR_SIZE - 1) | 0x4);
	cr_expect_eq(crd(0x14, 4), 0xffffffff);
	for (unsigned b = 0x18; b <= 0x24; b += 4) {
		cwr(b, 4, 0xffffffff);
		cr_expect_eq(crd(b, 4), 0, "BAR at %#x not implemented", b);
	}
	cwr(0x30, 4, 0xffffffff);
	cr_expect_eq(crd(0x30, 4), 0, "no expansion ROM");
	cwr(0x10, 4, 0xfebc1234); /* low bits below the size are not address bits */
	cwr(0x14, 4, 0x1);
	cr_expect_eq(crd(0x10, 4), 0xfebc0004);
	cr_expect_eq(crd(0x14, 4), 1);
	cwr(0x12, 2, 0xabcd); /* odd-sized write into the BAR */
	cr_expect_eq(crd(0x10, 4), 0xabcd0004);
	cr_expect_eq(crd(0x10, 1), 0x04);
}

/* ---- features and status (hostile case 11) ---- */

Test(virtio_pci, feature_negotiation, .init = setup, .fini = teardown)
{
	wr(CC_DFSELECT, 4, 0);
	uint64_t lo = rd(CC_DF, 4);
	wr(CC_DFSELECT, 4, 1);
	uint64_t hi = rd(CC_DF, 4);
	wr(CC_DFSELECT, 4, 7);
	cr_expect_eq(rd(CC_DF, 4), 0, "no feature bits past 64");
	uint64_t offered = lo | hi << 32;
	cr_expect_eq(offered, tops.features | V1 | EVIDX | (1ull << VIRTIO_F_INDIRECT_DESC));

	negotiate(V1 | EVIDX | 1);
	cr_expect(status() & ST_FOK);
	cr_expect_eq(fx.dev.vdev.features, V1 | EVIDX | 1);
	/* Features changed after FEATURES_OK are ignored. */
	wr(CC_GFSELECT, 4, 0);
	wr(CC_GF, 4, 0);
	cr_expect_eq(rd(CC_GF, 4), (uint32_t)(EVIDX | 1));
	cr_expect_eq(fx.dev.vdev.features, V1 | EVIDX | 1);

	negotiate(V1 | 1ull << 7); /* not offered */
	cr_expect_not(status() & ST_FOK, "FEATURES_OK must not stick");
	negotiate(1); /* no VERSION_1 */
	cr_expect_not(status() & ST_FOK);
	negotiate(V1);
	wr(CC_STATUS, 1, 0);
	wr(CC_STATUS, 1, ST_ACK | ST_DRV);
	wr(CC_GFSELECT, 4, 2);
	wr(CC_GF, 4, 1); /* a bit in a window we never offer */
	wr(CC_GFSELECT, 4, 1);
	wr(CC_GF, 4, 1);
	wr(CC_STATUS, 1, ST_ACK | ST_DRV | ST_FOK);
	cr_expect_not(status() & ST_FOK);
}

static void status_out_of_order(void)
{
	wr(CC_STATUS, 1, ST_ACK | ST_DRV | ST_DOK); /* DRIVER_OK before FEATURES_OK */
	cr_expect_eq(status(), ST_ACK | ST_DRV);
	cr_expect_eq(fx.dev.activates, 0);
	wr(CC_STATUS, 1, ST_ACK); /* bits are only cleared by a reset */
	cr_expect_eq(status(), ST_ACK | ST_DRV);
	wr(CC_STATUS, 1, VIRTIO_STATUS_NEEDS_RESET);
	cr_expect_not(status() & VIRTIO_STATUS_NEEDS_RESET, "the driver cannot set it");
	setup_queue0(); /* before FEATURES_OK */
	cr_expect(status() & VIRTIO_STATUS_NEEDS_RESET);
	cr_expect_eq(rd(CC_Q_ENABLE, 2), 0);
	wr(CC_STATUS, 1, 0);
	cr_expect_eq(status(), 0);
	cr_expect_eq(fx.dev.resets, 1);
	negotiate(V1);
	wr(CC_STATUS, 1, ST_ACK | ST_DRV | ST_FOK | ST_DOK);
	cr_expect(status() & ST_DOK);
	cr_expect_eq(fx.dev.activates, 1);
	wr(CC_STATUS, 1, ST_ACK | ST_DRV | ST_FOK | ST_DOK); /* again: no second activation */
	cr_expect_eq(fx.dev.activates, 1);
	fx.dev.activate_ret = -EIO;
	negotiate(V1);
	wr(CC_STATUS, 1, ST_ACK | ST_DRV | ST_FOK | ST_DOK);
	cr_expect(status() & VIRTIO_STATUS_NEEDS_RESET, "failed activation");
}

Test(virtio_pci, status_state_machine, .init = setup, .fini = teardown)
{
	run(status_out_of_order);
}

/* ---- odd accesses ---- */

Test(virtio_pci, odd_sized_and_out_of_range_accesses, .init = setup, .fini = teardown)
{
	memcpy(fx.dev.cfg, "\x01\x02\x03\x04\x05\x06", 6);
	cr_expect_eq(rd(VIRTIO_PCI_DEVCFG_OFF, 8), 0x060504030201ull, "bytes past the end read 0");
	cr_expect_eq(rd(VIRTIO_PCI_DEVCFG_OFF + 5, 4), 0x06);
	cr_expect_eq(rd(VIRTIO_PCI_DEVCFG_OFF + 6, 4), 0);
	cr_expect_eq(rd(VIRTIO_PCI_DEVCFG_OFF + 0xffc, 4), 0);
	wr(VIRTIO_PCI_DEVCFG_OFF + 4, 8, 0xffffffffffffffffull);
	cr_expect_eq(memcmp(fx.dev.cfg, "\x01\x02\x03\x04\xff\xff", 6), 0);
	/* Common cfg: byte-wise reads of wider fields, 8-byte and split 4-byte addresses. */
	cr_expect_eq(rd(CC_NUM_QUEUES, 1), 2);
	cr_expect_eq(rd(CC_NUM_QUEUES + 1, 1), 0);
	wr(CC_Q_SELECT, 2, 1);
	cr_expect_eq(rd(CC_Q_SIZE, 2), 64);
	cr_expect_eq(rd(CC_Q_NOTIFY_OFF, 2), 1);
	wr(CC_Q_DESC, 8, 0x1122334455667788ull);
	cr_expect_eq(rd(CC_Q_DESC, 8), 0x1122334455667788ull);
	wr(CC_Q_DESC + 4, 4, 0);
	cr_expect_eq(rd(CC_Q_DESC, 4), 0x55667788);
	cr_expect_eq(rd(CC_Q_DESC + 4, 4), 0);
	wr(CC_Q_DRIVER + 1, 1, 0xab);
	cr_expect_eq(rd(CC_Q_DRIVER, 8), 0xab00);
	cr_expect_eq(rd(0x3a, 8), 0, "straddles the end of common cfg");
	cr_expect_eq(rd(0x100, 4), 0);
	cr_expect_eq(rd(VIRTIO_PCI_BAR_SIZE - 8, 8), 0);
	wr(VIRTIO_PCI_BAR_SIZE - 8, 8, ~0ull);
	cr_expect_eq(rd(VIRTIO_PCI_NOTIFY_OFF, 4), 0);
	/* Queue registers of a queue that does not exist. */
	wr(CC_Q_SELECT, 2, 2);
	cr_expect_eq(rd(CC_Q_SIZE, 2), 0);
	cr_expect_eq(rd(CC_Q_MSIX, 2), VIRTIO_NO_VECTOR);
	wr(CC_Q_SIZE, 2, 8);
	wr(CC_Q_ENABLE, 2, 1);
	cr_expect_eq(rd(CC_Q_ENABLE, 2), 0);
	wr(CC_Q_SELECT, 2, 0xffff);
	cr_expect_eq(rd(CC_Q_SIZE, 2), 0);
	/* Vectors out of range read back NO_VECTOR. */
	wr(CC_MSIX_CONFIG, 2, 3);
	cr_expect_eq(rd(CC_MSIX_CONFIG, 2), VIRTIO_NO_VECTOR);
	wr(CC_MSIX_CONFIG, 2, 2);
	cr_expect_eq(rd(CC_MSIX_CONFIG, 2), 2);
	/* Config space: an access window through the PCI_CFG capability. */
	unsigned w = find_cap(0x09, 5);
	cwr(w + 4, 1, 0);
	cwr(w + 8, 4, CC_NUM_QUEUES);
	cwr(w + 12, 4, 2);
	cr_expect_eq(crd(w + 16, 4), 2, "num_queues through the window");
	cwr(w + 8, 4, 0x3fff); /* len 2 at an odd offset: refused */
	cr_expect_eq(crd(w + 16, 4), 0);
}

static void bad_queue_setups(void)
{
	negotiate(V1);
	static const struct {
		uint16_t size;
		uint64_t desc;
	} bad[] = {
	    {3, RING},                           /* not a power of two */
	    {128, RING},                         /* above the maximum */
	    {0, RING},      {16, 0xD0000000ull}, /* outside RAM */
	    {16, RING + 8},                      /* misaligned */
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		negotiate(V1);
		wr(CC_Q_SELECT, 2, 0);
		wr(CC_Q_SIZE, 2, bad[i].size);
		wr(CC_Q_DESC, 8, bad[i].desc);
		wr(CC_Q_DRIVER, 8, RING + 0x1000);
		wr(CC_Q_DEVICE, 8, RING + 0x2000);
		wr(CC_Q_ENABLE, 2, 1);
		cr_expect_eq(rd(CC_Q_ENABLE, 2), 0, "case %u enabled", i);
		cr_expect(status() & VIRTIO_STATUS_NEEDS_RESET, "case %u", i);
	}
	negotiate(V1);
	setup_queue0();
	cr_expect_eq(rd(CC_Q_ENABLE, 2), 1);
	wr(CC_Q_SIZE, 2, 8); /* frozen once enabled */
	wr(CC_Q_DESC, 8, 0);
	cr_expect_eq(rd(CC_Q_SIZE, 2), 16);
	cr_expect_eq(rd(CC_Q_DESC, 8), ring.desc_gpa);
	wr(CC_Q_MSIX, 2, 99);
	cr_expect_eq(rd(CC_Q_MSIX, 2), VIRTIO_NO_VECTOR);
	cr_expect_not(status() & VIRTIO_STATUS_NEEDS_RESET);
}

Test(virtio_pci, queue_setup_checks, .init = setup, .fini = teardown)
{
	run(bad_queue_setups);
}
