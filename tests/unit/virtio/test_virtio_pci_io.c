/*
 * virtio-pci transport in-process, runtime side: MSI-X table, PBA and
 * masking with routes through the VM-control socket, I/O through the
 * ioeventfd, fatal queue errors (DEVICE_NEEDS_RESET + config interrupt),
 * reset in the middle of I/O, and the BAR-notify fallback. Fixture:
 * vpci_fixture.h.
 */
#include "tests/unit/virtio/vpci_fixture.h"

/* ---- MSI-X ---- */

static void msix_masking(void)
{
	uint32_t pba = VIRTIO_PCI_MSIX_PBA_OFF;
	negotiate(V1);
	wr(CC_MSIX_CONFIG, 2, 0);
	program_vector(0, false);
	cr_expect_eq(rd(VIRTIO_PCI_MSIX_TABLE_OFF + 8, 4), 0x40);
	cr_expect_eq(rd(VIRTIO_PCI_MSIX_TABLE_OFF + 12, 4), 1, "masked");
	virtio_config_changed(&fx.dev.vdev); /* MSI-X still disabled: nothing pends */
	cr_expect_eq(rd(pba, 8), 0);
	msix_enable();
	virtio_config_changed(&fx.dev.vdev); /* masked: pending */
	cr_expect_eq(rd(pba, 8), 1);
	cr_expect_eq(fx.routes[0], 0, "no route for a masked vector");
	wr(pba, 8, 0); /* the PBA is read-only */
	cr_expect_eq(rd(pba, 8), 1);
	wr(VIRTIO_PCI_MSIX_TABLE_OFF + 12, 4, 0xfffffffe); /* unmask; reserved bits stay 0 */
	cr_expect_eq(rd(VIRTIO_PCI_MSIX_TABLE_OFF + 12, 4), 0);
	cr_expect_eq(fx.routes[0], 1, "unmask routes the vector, with its irqfd");
	cr_expect_geq(fx.irqfd[0], 0);
	cr_expect_eq(irqs(0), 1, "the pending interrupt is delivered on unmask");
	cr_expect_eq(rd(pba, 8), 0);
	virtio_config_changed(&fx.dev.vdev);
	cr_expect_eq(irqs(0), 1);
	cr_expect_eq(rd(CC_GENERATION, 1), 3);
	cr_expect_eq(rd(VIRTIO_PCI_ISR_OFF, 1), 2, "config ISR bit");
	cr_expect_eq(rd(VIRTIO_PCI_ISR_OFF, 1), 0, "ISR clears on read");
	/* Function mask. */
	unsigned m = find_cap(0x11, 0);
	cwr(m + 2, 2, 0xc000);
	cr_expect(fx.masked[0], "route withdrawn while masked");
	virtio_config_changed(&fx.dev.vdev);
	cr_expect_eq(irqs(0), 0);
	cr_expect_eq(rd(pba, 8), 1);
	cwr(m + 2, 2, 0x8000);
	cr_expect_eq(irqs(0), 1);
	cr_expect_eq(fx.routes[0], 3);
	/* A new address while unmasked is routed again; the irqfd is not sent twice. */
	wr(VIRTIO_PCI_MSIX_TABLE_OFF + 8, 4, 0x41);
	cr_expect_eq(fx.routes[0], 4);
	wr(VIRTIO_PCI_MSIX_TABLE_OFF + 8, 4, 0x41); /* unchanged: no request */
	cr_expect_eq(fx.routes[0], 4);
	/* Table accesses out of range. */
	cr_expect_eq(rd(VIRTIO_PCI_MSIX_TABLE_OFF + 16 * 3, 4), 0, "vector 3 does not exist");
	wr(VIRTIO_PCI_MSIX_TABLE_OFF + 16 * 3 + 12, 4, 0);
	cr_expect_eq(fx.routes[3 % VIRTIO_PCI_MSIX_VECTORS], 0);
}

Test(virtio_pci, msix_table_pba_masking, .init = setup, .fini = teardown)
{
	run(msix_masking);
}

/* ---- I/O, fatal errors, reset ---- */

static void up(uint64_t features)
{
	msix_enable();
	program_vector(0, true);
	program_vector(1, true);
	negotiate(features);
	wr(CC_MSIX_CONFIG, 2, 0);
	setup_queue0();
	wr(CC_STATUS, 1, ST_ACK | ST_DRV | ST_FOK | ST_DOK);
}

static void io_and_reset(void)
{
	up(V1 | EVIDX);
	cr_expect_eq(fx.ioev_assign, 1, "one ioeventfd: only queue 0 is enabled");
	cr_expect_geq(fx.kick[0], 0);
	struct vring_buf b = {DATA, 4, true};
	vring_add(&ring, &b, 1);
	uint64_t one = 1;
	cr_expect_eq(write(fx.kick[0], &one, 8), 8);
	WAIT_FOR(vring_used_pending(&ring) == 1);
	cr_expect_eq(vring_used_pending(&ring), 1);
	WAIT_FOR(fx.irqfd[1] >= 0 && irqs(1) == 1);
	uint8_t *g = guest_mem_ptr(&fx.mem, DATA, 1);
	cr_expect_eq(*g, 0x5a);

	/* Reset in the middle of I/O: two slow requests popped, reset, both complete first. */
	fx.dev.sleep_ns = 20 * 1000000ull;
	vring_add(&ring, &b, 1);
	vring_add(&ring, &b, 1);
	cr_expect_eq(write(fx.kick[0], &one, 8), 8);
	WAIT_FOR(fx.dev.kicks == 3); /* start-up pass, first kick, this kick */
	cr_expect_eq(fx.dev.completed, 1, "inside the slow request");
	wr(CC_STATUS, 1, 0);
	cr_expect_eq(status(), 0);
	cr_expect_eq(fx.dev.completed, 3, "popped requests finished before the reset completed");
	cr_expect_eq(vring_used_idx(&ring), 3);
	cr_expect_eq(fx.ioev_deassign, 1);
	cr_expect_lt(fx.kick[0], 0);
	cr_expect_null(fx.dev.vdev.queues[0].task);
	cr_expect_eq(rd(CC_Q_ENABLE, 2), 0);
	/* And it comes back. */
	fx.dev.sleep_ns = 0;
	up(V1);
	vring_add(&ring, &b, 1);
	/* No ioeventfd this time: the notify write reaches the device as a BAR write. */
	fx.fail_ioeventfd = 0;
	wr(virtio_pci_notify_off(0), 2, 0);
	WAIT_FOR(vring_used_pending(&ring) == 1);
	cr_expect_eq(vring_used_pending(&ring), 1);
}

Test(virtio_pci, io_and_reset_mid_io, .init = setup, .fini = teardown)
{
	run(io_and_reset);
}

static void fatal_queue_error(void)
{
	up(V1);
	vring_write_desc(&ring, 0, DATA, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0);
	vring_publish_raw(&ring, 0);
	uint64_t one = 1;
	cr_expect_eq(write(fx.kick[0], &one, 8), 8);
	WAIT_FOR(status() & VIRTIO_STATUS_NEEDS_RESET);
	cr_expect(status() & VIRTIO_STATUS_NEEDS_RESET);
	cr_expect(status() & ST_DOK);
	cr_expect_eq(irqs(0), 1, "config interrupt");
	cr_expect_eq(rd(VIRTIO_PCI_ISR_OFF, 1) & 2, 2);
	cr_expect_eq(vring_used_pending(&ring), 0, "nothing completed from a broken ring");
	wr(CC_STATUS, 1, 0);
	cr_expect_eq(status(), 0);
	up(V1);
	struct vring_buf b = {DATA, 4, true};
	vring_add(&ring, &b, 1);
	cr_expect_eq(write(fx.kick[0], &one, 8), 8);
	WAIT_FOR(vring_used_pending(&ring) == 1);
	cr_expect_eq(vring_used_pending(&ring), 1, "served again after the reset");
}

Test(virtio_pci, fatal_queue_error_needs_reset, .init = setup, .fini = teardown)
{
	run(fatal_queue_error);
}

static void ioeventfd_refused(void)
{
	fx.fail_ioeventfd = -ENOSPC;
	up(V1);
	cr_expect(status() & ST_DOK, "a refused ioeventfd is not fatal");
	cr_expect_lt(fx.kick[0], 0);
	struct vring_buf b = {DATA, 4, true};
	vring_add(&ring, &b, 1);
	wr(virtio_pci_notify_off(0), 2, 0);
	WAIT_FOR(vring_used_pending(&ring) == 1);
	cr_expect_eq(vring_used_pending(&ring), 1);
	wr(virtio_pci_notify_off(1), 2, 1); /* a queue that is not enabled */
	wr(CC_STATUS, 1, 0);
	cr_expect_eq(fx.ioev_deassign, 0, "nothing to deassign");
}

Test(virtio_pci, ioeventfd_refused_falls_back_to_bar_notify, .init = setup, .fini = teardown)
{
	run(ioeventfd_refused);
}
