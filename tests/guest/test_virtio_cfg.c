/*
 * `virtio-cfg`: the virtio-pci transport's configuration behaviour, on the
 * device chosen by virtio-cfg.device (default 4, virtio-rng): feature
 * negotiation (offered set, VERSION_1, a valid subset sticks, an unoffered
 * feature must not), a reset in the middle of I/O, and 1/2/4-byte and
 * past-the-end accesses to the common and device config — after which the
 * device must still be live and serve a request. Requests are rng reads, so
 * the device must be an rng for the request checks.
 */
#include "virtio.h"

#define TIMEOUT_US 1000000

/* A bit the device does not offer: transport bits first (RING_PACKED...), then any. */
static int unoffered_bit(uint64_t offered)
{
	for (int b = VIRTIO_F_RING_PACKED; b < 64; b++)
		if (!(offered & VIRTIO_BIT(b)))
			return b;
	for (int b = 0; b < 64; b++)
		if (!(offered & VIRTIO_BIT(b)))
			return b;
	return -1;
}

static const char *features(struct virtio_dev *d)
{
	uint64_t v1 = VIRTIO_BIT(VIRTIO_F_VERSION_1);
	bool valid_ok = virtio_negotiate(d, v1);
	uint64_t readback = virtio_read_driver_features(d);
	int bit = unoffered_bit(d->offered);
	bool bad_ok = bit >= 0 && virtio_negotiate(d, v1 | VIRTIO_BIT(bit));
	uint64_t bad_readback = virtio_read_driver_features(d);
	uint8_t bad_status = virtio_get_status(d);
	/* A modern-only device may refuse a driver that does not accept VERSION_1. */
	bool none_ok = virtio_negotiate(d, 0);
	probe_printf("PROBE virtio-cfg.features offered=0x%lx version_1=%u valid_features_ok=%u "
	             "readback=0x%lx unoffered_bit=%d unoffered_features_ok=%u "
	             "unoffered_readback=0x%lx unoffered_status=0x%x no_version_1_features_ok=%u\n",
	             d->offered, (d->offered & v1) ? 1 : 0, valid_ok, readback, bit, bad_ok,
	             bad_readback, bad_status, none_ok);
	if (!(d->offered & v1))
		return "no-version-1";
	if (!valid_ok)
		return "valid-features-refused";
	if (bad_ok && probe_opt_u64("virtio-cfg.strict", 1))
		return "unoffered-feature-accepted";
	return NULL;
}

static const char *reset_mid_io(struct virtio_dev *d, uint64_t feats)
{
	struct virtq vq;
	const char *r = virtio_start(d, &vq, feats, 0);
	if (r)
		return r;
	const char *before = virtio_rng_read_ok(&vq, 0, TIMEOUT_US);

	/* A request in flight (published and kicked, never waited for), then reset. */
	struct virtq_buf b = {(uint64_t)virtio_dma, 4096, true};
	virtq_desc_set(vq.desc, 1, b.addr, b.len, VIRTQ_DESC_F_WRITE, 0);
	virtq_push(&vq, 1);
	virtq_publish(&vq);
	virtq_notify(&vq);
	uint64_t t0 = rdtsc();
	bool reset_ok = virtio_reset(d);
	uint64_t reset_us = probe_us_since(t0);
	uint8_t status = virtio_get_status(d);
	virtio_c_write16(d, VIRTIO_C_Q_SELECT, 0);
	uint16_t qen = virtio_c_read16(d, VIRTIO_C_Q_ENABLE);
	uint16_t qmsix = virtio_c_read16(d, VIRTIO_C_Q_MSIX);
	uint16_t cmsix = virtio_c_read16(d, VIRTIO_C_MSIX);

	r = virtio_start(d, &vq, feats, 0);
	const char *after = r ? r : virtio_rng_read_ok(&vq, 0, TIMEOUT_US);
	probe_printf("PROBE virtio-cfg.reset before=%s status_after=0x%x reset_us=%lu "
	             "queue_enable=%u queue_msix=0x%x config_msix=0x%x after=%s\n",
	             before ? before : "ok", status, reset_us, qen, qmsix, cmsix,
	             after ? after : "ok");
	if (before)
		return "request-failed";
	if (!reset_ok || status != 0)
		return "reset-not-zero";
	if (qen != 0)
		return "queue-enabled-after-reset";
	if (after)
		return "no-request-after-reset";
	return NULL;
}

static const char *odd_access(struct virtio_dev *d, uint64_t feats)
{
	struct virtq vq;
	const char *r = virtio_start(d, &vq, feats, 0);
	if (r)
		return r;
	uint16_t numq16 = virtio_c_read16(d, VIRTIO_C_NUMQ);
	uint8_t numq_lo = virtio_c_read8(d, VIRTIO_C_NUMQ), numq_hi = virtio_c_read8(d, 0x13);
	uint32_t msix_numq32 = virtio_c_read32(d, VIRTIO_C_MSIX);
	virtio_c_write32(d, VIRTIO_C_DFSELECT, 0);
	uint32_t df32 = virtio_c_read32(d, VIRTIO_C_DF);
	uint16_t df16a = virtio_c_read16(d, 0x04), df16b = virtio_c_read16(d, 0x06);
	uint8_t df8[4];
	for (unsigned i = 0; i < 4; i++)
		df8[i] = virtio_c_read8(d, 0x04 + i);
	uint8_t st8 = virtio_c_read8(d, VIRTIO_C_STATUS), gen8 = virtio_c_read8(d, VIRTIO_C_CFGGEN);
	uint16_t st_gen16 = virtio_c_read16(d, VIRTIO_C_STATUS);
	virtio_c_write16(d, VIRTIO_C_Q_SELECT, 0);
	uint16_t qsize16 = virtio_c_read16(d, VIRTIO_C_Q_SIZE);
	uint32_t qsize32 = virtio_c_read32(d, VIRTIO_C_Q_SIZE);
	uint32_t unaligned32 = virtio_c_read32(d, VIRTIO_C_Q_SELECT); /* 0x16: not 4-aligned */
	uint64_t qdesc = virtio_c_read32(d, VIRTIO_C_Q_DESCLO) |
	                 (uint64_t)virtio_c_read32(d, VIRTIO_C_Q_DESCHI) << 32;
	uint32_t common_past =
	    virtio_c_read32(d, d->common_len >= 4 ? d->common_len : VIRTIO_C_SIZE);
	uint8_t isr = d->isr ? mmio_read8(d->isr) : 0;

	probe_printf("PROBE virtio-cfg.access num_queues16=%u num_queues8=%u,%u msix_numq32=0x%x "
	             "df32=0x%x df16=0x%x,0x%x df8=0x%x,0x%x,0x%x,0x%x status8=0x%x gen8=%u "
	             "status_gen16=0x%x qsize16=%u qsize32=0x%x unaligned32=0x%x qdesc=0x%lx "
	             "common_past_end=0x%x isr=0x%x\n",
	             numq16, numq_lo, numq_hi, msix_numq32, df32, df16a, df16b, df8[0], df8[1],
	             df8[2], df8[3], st8, gen8, st_gen16, qsize16, qsize32, unaligned32, qdesc,
	             common_past, isr);

	/* Device config: each width at 0, then straddling and past its end. */
	if (d->device && d->device_len) {
		uint64_t a = d->device, n = d->device_len;
		uint8_t b0 = mmio_read8(a);
		uint16_t w0 = n >= 2 ? mmio_read16(a) : 0;
		uint32_t l0 = n >= 4 ? mmio_read32(a) : 0;
		uint32_t straddle = mmio_read32(a + (n >= 2 ? n - 2 : 0));
		uint32_t past = mmio_read32(a + n);
		uint8_t past8 = mmio_read8(a + n + 1);
		probe_printf("PROBE virtio-cfg.devcfg len=%lu read8=0x%x read16=0x%x read32=0x%x "
		             "straddle32=0x%x past32=0x%x past8=0x%x\n",
		             n, b0, w0, l0, straddle, past, past8);
	} else {
		probe_printf("PROBE virtio-cfg.devcfg len=0\n");
	}

	uint8_t st_after = virtio_get_status(d);
	const char *req = virtio_rng_read_ok(&vq, 0, TIMEOUT_US);
	uint8_t gen_after = virtio_c_read8(d, VIRTIO_C_CFGGEN);
	probe_printf("PROBE virtio-cfg.after status=0x%x generation=%u request=%s\n", st_after,
	             gen_after, req ? req : "ok");
	if (numq16 != d->num_queues || numq16 == 0)
		return "num-queues-changed";
	if (qsize16 != vq.size)
		return "queue-size-mismatch";
	if (qdesc != (uint64_t)vq.desc)
		return "queue-desc-mismatch";
	if (df32 != (uint32_t)d->offered)
		return "device-feature-mismatch";
	if ((st_after & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED)) ||
	    !(st_after & VIRTIO_S_DRIVER_OK))
		return "status-changed";
	if (req)
		return "no-request-after-access";
	return NULL;
}

const char *test_virtio_cfg(void)
{
	const char *why;
	uint16_t id = (uint16_t)probe_opt_u64("virtio-cfg.device", VIRTIO_ID_RNG);
	struct virtio_dev *d = virtio_open(id, &why);
	if (!d) {
		probe_printf("PROBE virtio-cfg error=%s\n", why);
		return why;
	}
	probe_printf("PROBE virtio-cfg dev=00:%02x.%u device_id=%u offered=0x%lx num_queues=%u "
	             "queue_max=%u msix_entries=%u notify_mult=%u common_len=%u notify_len=%u "
	             "isr_len=%u device_len=%u\n",
	             d->slot, d->fn, d->device_id, d->offered, d->num_queues, d->qmax[0],
	             d->msix_size, d->notify_mult, d->common_len, d->notify_len, d->isr_len,
	             d->device_len);
	uint64_t t0 = rdtsc();
	const char *fail = features(d);
	uint64_t feats =
	    VIRTIO_BIT(VIRTIO_F_VERSION_1) | (d->offered & VIRTIO_BIT(VIRTIO_F_EVENT_IDX));
	if (!fail)
		fail = reset_mid_io(d, feats);
	if (!fail)
		fail = odd_access(d, feats);
	if (!virtio_reset(d) && !fail)
		fail = "reset-stuck";
	probe_printf("PROBE virtio-cfg result=%s us=%lu\n", fail ? fail : "ok", probe_us_since(t0));
	return fail;
}
