/*
 * `hostile.vq`: every virtqueue abuse of /work/shared/hostile-inputs.md cases
 * 1-11 that a guest can produce, sent on purpose to virtio-rng's request
 * queue. Each case starts from a freshly reset device, does its damage, waits
 * a bounded time (hostile.wait_ms) and records what the device did; then the
 * device must serve a well-formed request — on the same queue, or after a
 * reset when it set DEVICE_NEEDS_RESET or the case left the queue unusable
 * by design. See tests/guest/README.md for the table of cases.
 */
#include "virtio.h"

#define H_RECONFIG 1 /* the case leaves queue/device state unusable: restart before the check */
#define H_CUSTOM   2 /* the case brings the device up itself */
#define H_NO_INDIR 4 /* negotiate without VIRTIO_F_INDIRECT_DESC */
#define NO_LIMIT   0xffffffffffffffffull

struct hctx {
	struct virtio_dev *d;
	struct virtq vq;
	uint64_t feats;        /* features for this case */
	uint64_t buf;          /* a good 4 KiB DMA buffer */
	uint64_t ram_top;      /* end of RAM */
	uint64_t max_len;      /* a completion longer than this is a device bug */
	const char *result;    /* set by a case that classifies itself */
	const char *why;       /* set by a custom bring-up that failed */
	uint8_t expect_status; /* what the driver last wrote (NEEDS_RESET aside) */
	bool restore_avail;    /* the case moved avail->idx; the check republishes from saved_idx */
	uint16_t saved_idx;
	const char *note_key[3];
	uint64_t note_val[3];
	unsigned nnotes;
};

typedef void hcase_fn(struct hctx *c);

struct hcase {
	const char *name;
	unsigned group; /* the case number in hostile-inputs.md */
	unsigned flags;
	hcase_fn *run;
};

/* Records k=v for the case's result line (up to 3). */
static void note(struct hctx *c, const char *k, uint64_t v)
{
	if (c->nnotes < 3) {
		c->note_key[c->nnotes] = k;
		c->note_val[c->nnotes++] = v;
	}
}

/* Publishes head and notifies unconditionally (a hostile driver ignores suppression). */
static void submit(struct hctx *c, uint16_t head)
{
	virtq_push(&c->vq, head);
	virtq_publish(&c->vq);
	virtq_notify(&c->vq);
}

static void one(struct hctx *c, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	virtq_desc_set(c->vq.desc, 0, addr, len, flags, next);
	c->max_len = (flags & VIRTQ_DESC_F_WRITE) ? len : 0;
	submit(c, 0);
}

/* ---- 1: loops ---- */
static void loop_self(struct hctx *c)
{
	one(c, c->buf, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
	c->max_len = NO_LIMIT; /* a device may cut the loop and complete what it wrote */
}
static void loop_2cycle(struct hctx *c)
{
	virtq_desc_set(c->vq.desc, 1, c->buf + 64, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
	one(c, c->buf, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	c->max_len = NO_LIMIT;
}
static void loop_late(struct hctx *c)
{
	/* 0 → 1 → 2 → 3 → 2 ...: the first descriptors are fine. */
	unsigned last = c->vq.size >= 4 ? 3 : c->vq.size - 1;
	for (unsigned i = 0; i <= last; i++)
		virtq_desc_set(c->vq.desc, i, c->buf + 64 * i, 64,
		               VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
		               (uint16_t)(i == last ? (last >= 2 ? 2 : 0) : i + 1));
	c->max_len = NO_LIMIT;
	submit(c, 0);
}

/* ---- 2: indices out of range ---- */
static void next_oob(struct hctx *c)
{
	one(c, c->buf, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, c->vq.size);
	c->max_len = 64;
}
static void head_oob(struct hctx *c)
{
	c->max_len = 0;
	submit(c, c->vq.size);
}

/* ---- 3: buffer addresses and ring placement ---- */
static void addr_wrap(struct hctx *c)
{
	one(c, 0xfffffffffffffff0ull, 32, VIRTQ_DESC_F_WRITE, 0);
}
static void addr_cross_ram_end(struct hctx *c)
{
	one(c, c->ram_top - 32, 64, VIRTQ_DESC_F_WRITE, 0);
	note(c, "addr", c->ram_top - 32);
}
static void addr_past_ram(struct hctx *c)
{
	one(c, c->ram_top + 0x100000, 64, VIRTQ_DESC_F_WRITE, 0);
	note(c, "addr", c->ram_top + 0x100000);
}
static void addr_pci_hole(struct hctx *c)
{
	one(c, 0xe0000000ull, 64, VIRTQ_DESC_F_WRITE, 0);
}
static void addr_own_bar(struct hctx *c)
{
	/* The device's own common config: random bytes written there would be MMIO writes. */
	one(c, c->d->common, 64, VIRTQ_DESC_F_WRITE, 0);
	note(c, "addr", c->d->common);
}

/* Brings the device up to just before queue_enable; false (c->why set) on failure. */
static bool bringup(struct hctx *c)
{
	if (!virtio_negotiate(c->d, c->feats)) {
		c->why = "features-refused";
		return false;
	}
	c->why = virtq_setup(c->d, &c->vq, 0, 0, c->feats, false);
	return !c->why;
}

static void enable_and_go(struct hctx *c)
{
	virtio_c_write16(c->d, VIRTIO_C_Q_ENABLE, 1);
	virtio_set_status(c->d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK |
	                            VIRTIO_S_DRIVER_OK);
	one(c, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
}

static void ring_at(struct hctx *c, unsigned reg, uint64_t addr)
{
	if (!bringup(c))
		return;
	virtio_c_write32(c->d, reg, (uint32_t)addr);
	virtio_c_write32(c->d, reg + 4, (uint32_t)(addr >> 32));
	note(c, "ring", addr);
	enable_and_go(c);
}
static void ring_desc_past_ram(struct hctx *c)
{
	ring_at(c, VIRTIO_C_Q_DESCLO, c->ram_top + 0x100000);
}
static void ring_avail_past_ram(struct hctx *c)
{
	ring_at(c, VIRTIO_C_Q_AVAILLO, c->ram_top + 0x100000);
}
static void ring_used_past_ram(struct hctx *c)
{
	ring_at(c, VIRTIO_C_Q_USEDLO, c->ram_top + 0x100000);
}
static void ring_misaligned(struct hctx *c)
{
	/* Descriptor table 8 bytes off its 16-byte alignment; the descriptor is written there too.
	 */
	if (!bringup(c))
		return;
	uint64_t a = (uint64_t)c->vq.desc + 8;
	virtio_c_write32(c->d, VIRTIO_C_Q_DESCLO, (uint32_t)a);
	virtio_c_write32(c->d, VIRTIO_C_Q_DESCHI, (uint32_t)(a >> 32));
	virtio_c_write16(c->d, VIRTIO_C_Q_ENABLE, 1);
	virtio_set_status(c->d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK |
	                            VIRTIO_S_DRIVER_OK);
	virtq_desc_set((struct virtq_desc *)a, 0, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
	c->max_len = 64;
	submit(c, 0);
}

/* ---- 4: total length beyond 2^32 ---- */
static void len_4g(struct hctx *c)
{
	unsigned n = c->vq.size;
	for (unsigned i = 0; i < n; i++)
		virtq_desc_set(c->vq.desc, i, c->buf, 0xffffffffu,
		               (uint16_t)(VIRTQ_DESC_F_WRITE | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
		               (uint16_t)(i + 1));
	c->max_len = NO_LIMIT;
	note(c, "descs", n);
	submit(c, 0);
}

/* ---- 5: zero lengths ---- */
static void zero_len_desc(struct hctx *c)
{
	virtq_desc_set(c->vq.desc, 1, c->buf + 64, 64, VIRTQ_DESC_F_WRITE, 0);
	one(c, c->buf, 0, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	c->max_len = 64;
}
static void zero_len_only(struct hctx *c)
{
	virtq_desc_set(c->vq.desc, 1, c->buf + 64, 0, VIRTQ_DESC_F_WRITE, 0);
	one(c, c->buf, 0, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	c->max_len = 0;
}

/* ---- 6: direction ---- */
static void readable_only(struct hctx *c)
{
	one(c, c->buf, 64, 0, 0);
	c->max_len = 0;
}
static void read_after_write(struct hctx *c)
{
	virtq_desc_set(c->vq.desc, 1, c->buf + 64, 64, 0, 0);
	one(c, c->buf, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	c->max_len = 64;
}

/* ---- 7: indirect tables ---- */
static void indirect(struct hctx *c, uint32_t table_len, uint16_t flags, uint16_t next)
{
	virtq_desc_set(c->vq.desc, 0, (uint64_t)c->vq.indirect, table_len,
	               (uint16_t)(VIRTQ_DESC_F_INDIRECT | flags), next);
	submit(c, 0);
}
static void indirect_not_negotiated(struct hctx *c)
{
	virtq_desc_set(c->vq.indirect, 0, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
	c->max_len = 64;
	indirect(c, 16, 0, 0);
}
static void indirect_with_next(struct hctx *c)
{
	virtq_desc_set(c->vq.indirect, 0, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
	virtq_desc_set(c->vq.desc, 1, c->buf + 64, 64, VIRTQ_DESC_F_WRITE, 0);
	c->max_len = 128;
	indirect(c, 16, VIRTQ_DESC_F_NEXT, 1);
}
static void indirect_nested(struct hctx *c)
{
	struct virtq_desc *inner = c->vq.indirect + 8;
	virtq_desc_set(inner, 0, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
	virtq_desc_set(c->vq.indirect, 0, (uint64_t)inner, 16, VIRTQ_DESC_F_INDIRECT, 0);
	c->max_len = 64;
	indirect(c, 16, 0, 0);
}
static void indirect_len_odd(struct hctx *c)
{
	virtq_desc_set(c->vq.indirect, 0, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
	virtq_desc_set(c->vq.indirect, 1, c->buf + 64, 64, VIRTQ_DESC_F_WRITE, 0);
	c->max_len = 128;
	indirect(c, 24, 0, 0);
}
static void indirect_len_huge(struct hctx *c)
{
	/* 1 MiB claimed (65536 entries), one real entry: a device must cap, not allocate. */
	virtq_desc_set(c->vq.indirect, 0, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
	c->max_len = 64;
	indirect(c, 0x100000, 0, 0);
}
static void indirect_len_zero(struct hctx *c)
{
	c->max_len = 0;
	indirect(c, 0, 0, 0);
}
static void indirect_chain_too_long(struct hctx *c)
{
	/* queue size + 1 chained entries (spills into the next queue's memory: ours). */
	unsigned n = c->vq.size + 1u;
	for (unsigned i = 0; i < n; i++)
		virtq_desc_set(c->vq.indirect, i, c->buf + 8 * (i % 256), 8,
		               (uint16_t)(VIRTQ_DESC_F_WRITE | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
		               (uint16_t)(i + 1));
	c->max_len = 8ull * n;
	indirect(c, 16 * n, 0, 0);
}

/* ---- 8: queue size and notifications ---- */
static void qsize(struct hctx *c, uint16_t size)
{
	if (!bringup(c))
		return;
	virtio_c_write16(c->d, VIRTIO_C_Q_SIZE, size);
	note(c, "wrote", size);
	note(c, "readback", virtio_c_read16(c->d, VIRTIO_C_Q_SIZE));
	c->max_len = 64;
	enable_and_go(c); /* ring slot 0 and used entry 0 sit where any size puts them */
}
static void qsize_zero(struct hctx *c)
{
	qsize(c, 0);
}
static void qsize_npot(struct hctx *c)
{
	uint16_t m = c->d->qmax[0];
	qsize(c, (uint16_t)(m > 2 ? m - 1 : 3));
}
static void qsize_too_big(struct hctx *c)
{
	uint16_t m = c->d->qmax[0];
	qsize(c, (uint16_t)(m < 0x8000 ? m * 2 : 0xffff));
}
static void notify_bad_queue(struct hctx *c)
{
	struct virtio_dev *d = c->d;
	mmio_write16(c->vq.notify_addr, d->num_queues);
	mmio_write16(c->vq.notify_addr, 0xffff);
	/* Where queue num_queues' notify address would be, if that is still in the region. */
	uint64_t off = (uint64_t)d->num_queues * d->notify_mult;
	if (off + 2 <= d->notify_len && off != c->vq.notify_addr - d->notify)
		mmio_write16(d->notify + off, d->num_queues);
	c->max_len = 0;
}
static void notify_disabled_queue(struct hctx *c)
{
	if (!bringup(c))
		return;
	virtio_set_status(c->d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK |
	                            VIRTIO_S_DRIVER_OK);
	one(c, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
}

/* ---- 9: avail index games ---- */
static void avail_jump(struct hctx *c)
{
	c->saved_idx = c->vq.avail_idx;
	c->restore_avail = true;
	virtq_desc_set(c->vq.desc, 0, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
	virtq_push(&c->vq, 0);
	c->vq.avail_idx = (uint16_t)(c->saved_idx + c->vq.size + 1);
	virtq_publish(&c->vq);
	virtq_notify(&c->vq);
	c->max_len = 64;
}
static void head_twice(struct hctx *c)
{
	virtq_desc_set(c->vq.desc, 0, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
	virtq_push(&c->vq, 0);
	c->max_len = 64;
	submit(c, 0);
}

/* ---- 10: descriptor rewritten under the device ---- */
static void rewrite_after_kick(struct hctx *c)
{
	/* Good when kicked, then a self-loop past RAM: a device that re-reads after checking loops.
	 */
	one(c, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
	virtq_desc_set(c->vq.desc, 0, c->ram_top + 0x100000, 64,
	               VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
	c->max_len = 64;
}

/* ---- 11: status and feature order ---- */
static void driver_ok_before_features_ok(struct hctx *c)
{
	struct virtio_dev *d = c->d;
	if (!virtio_reset(d)) {
		c->why = "reset-stuck";
		return;
	}
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE);
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
	virtio_c_write16(d, VIRTIO_C_MSIX, 0);
	virtio_write_features(d, c->feats);
	c->why = virtq_setup(d, &c->vq, 0, 0, c->feats, true);
	if (c->why)
		return;
	c->expect_status = VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_DRIVER_OK;
	virtio_set_status(d, c->expect_status);
	note(c, "status_readback", virtio_get_status(d));
	one(c, c->buf, 64, VIRTQ_DESC_F_WRITE, 0);
}
static void features_after_features_ok(struct hctx *c)
{
	if (!bringup(c))
		return;
	/* Drop EVENT_IDX and VERSION_1, add everything else offered. */
	uint64_t other =
	    c->d->offered & ~(VIRTIO_BIT(VIRTIO_F_EVENT_IDX) | VIRTIO_BIT(VIRTIO_F_VERSION_1));
	virtio_write_features(c->d, other);
	note(c, "readback", virtio_read_driver_features(c->d));
	enable_and_go(c);
}
static void reset_inflight(struct hctx *c)
{
	one(c, c->buf, 4096, VIRTQ_DESC_F_WRITE, 0);
	bool ok = virtio_reset(c->d);
	c->result = ok ? "reset-status0" : "reset-stuck";
	c->max_len = 4096;
}

static const struct hcase cases[] = {
    {"loop-self", 1, 0, loop_self},
    {"loop-2cycle", 1, 0, loop_2cycle},
    {"loop-late", 1, 0, loop_late},
    {"next-oob", 2, 0, next_oob},
    {"head-oob", 2, 0, head_oob},
    {"addr-wrap", 3, 0, addr_wrap},
    {"addr-cross-ram-end", 3, 0, addr_cross_ram_end},
    {"addr-past-ram", 3, 0, addr_past_ram},
    {"addr-pci-hole", 3, 0, addr_pci_hole},
    {"addr-own-bar", 3, 0, addr_own_bar},
    {"ring-desc-past-ram", 3, H_CUSTOM | H_RECONFIG, ring_desc_past_ram},
    {"ring-avail-past-ram", 3, H_CUSTOM | H_RECONFIG, ring_avail_past_ram},
    {"ring-used-past-ram", 3, H_CUSTOM | H_RECONFIG, ring_used_past_ram},
    {"ring-misaligned", 3, H_CUSTOM | H_RECONFIG, ring_misaligned},
    {"len-4g", 4, 0, len_4g},
    {"zero-len-desc", 5, 0, zero_len_desc},
    {"zero-len-only", 5, 0, zero_len_only},
    {"readable-only", 6, 0, readable_only},
    {"read-after-write", 6, 0, read_after_write},
    {"indirect-not-negotiated", 7, H_NO_INDIR, indirect_not_negotiated},
    {"indirect-with-next", 7, 0, indirect_with_next},
    {"indirect-nested", 7, 0, indirect_nested},
    {"indirect-len-odd", 7, 0, indirect_len_odd},
    {"indirect-len-huge", 7, 0, indirect_len_huge},
    {"indirect-len-zero", 7, 0, indirect_len_zero},
    {"indirect-chain-too-long", 7, 0, indirect_chain_too_long},
    {"qsize-zero", 8, H_CUSTOM | H_RECONFIG, qsize_zero},
    {"qsize-npot", 8, H_CUSTOM | H_RECONFIG, qsize_npot},
    {"qsize-too-big", 8, H_CUSTOM | H_RECONFIG, qsize_too_big},
    {"notify-bad-queue", 8, 0, notify_bad_queue},
    {"notify-disabled-queue", 8, H_CUSTOM | H_RECONFIG, notify_disabled_queue},
    {"avail-jump", 9, 0, avail_jump},
    {"head-twice", 9, 0, head_twice},
    {"rewrite-after-kick", 10, 0, rewrite_after_kick},
    {"driver-ok-before-features-ok", 11, H_CUSTOM | H_RECONFIG, driver_ok_before_features_ok},
    {"features-after-features-ok", 11, H_CUSTOM, features_after_features_ok},
    {"reset-inflight", 11, H_RECONFIG, reset_inflight},
};

/* Is name in the comma-separated list? */
static bool listed(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; *p;) {
		size_t len = 0;
		while (p[len] && p[len] != ',')
			len++;
		if (len == n && !strncmp(p, name, n))
			return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

/* The result word, except for a completion: NULL, printed as used-len<N>. */
static const char *result_word(uint8_t status, uint8_t expect, unsigned used)
{
	if ((status & ~VIRTIO_S_NEEDS_RESET) != expect)
		return "status-changed";
	if (status & VIRTIO_S_NEEDS_RESET)
		return "needs-reset";
	return used ? NULL : "no-completion";
}

/* Runs one case; true when it passed. */
static bool run_case(const struct hcase *hc, struct hctx *c, uint64_t base_feats, uint64_t wait_us,
                     uint64_t good_us)
{
	struct virtio_dev *d = c->d;
	uint64_t t0 = rdtsc();
	c->nnotes = 0;
	c->result = c->why = NULL;
	c->restore_avail = false;
	c->expect_status =
	    VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK;
	c->max_len = NO_LIMIT;
	c->feats = base_feats;
	if (hc->flags & H_NO_INDIR)
		c->feats &= ~VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
	probe_printf("PROBE hostile.vq.start case=%s\n", hc->name);

	if (!(hc->flags & H_CUSTOM))
		c->why = virtio_start(d, &c->vq, c->feats, 0);
	uint32_t q0 = virtio_irqs(virtq_vector(&c->vq)), cfg0 = virtio_irqs(virtio_cfg_vector(d));
	if (!c->why)
		hc->run(c);
	if (c->why) {
		probe_printf(
		    "PROBE hostile.vq case=%s group=%u result=setup-failed why=%s pass=0\n",
		    hc->name, hc->group, c->why);
		return false;
	}

	/* What the device did: wait for a completion, NEEDS_RESET or the deadline. */
	if (!c->result)
		(void)virtq_wait(&c->vq, wait_us);
	uint8_t status = virtio_get_status(d);
	uint32_t irqs = virtio_irqs(virtq_vector(&c->vq)) - q0;
	uint32_t cfg_irqs = virtio_irqs(virtio_cfg_vector(d)) - cfg0;
	unsigned used = (uint16_t)(c->vq.used->idx - c->vq.last_used);
	uint32_t id = 0, len = 0;
	if (used) {
		volatile struct virtq_used_elem *e =
		    &c->vq.used->ring[c->vq.last_used % c->vq.size];
		id = e->id;
		len = e->len;
	}
	const char *result = c->result ? c->result : result_word(status, c->expect_status, used);
	bool len_bad = false;
	for (unsigned i = 0; i < used && i < c->vq.size; i++)
		if (c->vq.used->ring[(c->vq.last_used + i) % c->vq.size].len > c->max_len)
			len_bad = true;

	/* The device must still serve a good request. */
	const char *after = NULL;
	bool restart = (status & VIRTIO_S_NEEDS_RESET) || (hc->flags & H_RECONFIG) ||
	               !(status & VIRTIO_S_DRIVER_OK);
	bool same_queue = !restart;
	c->vq.always_notify = true; /* the device's avail_event may be anything by now */
	if (same_queue) {
		virtq_drain_used(&c->vq);
		if (c->restore_avail) {
			c->vq.avail_idx = c->saved_idx;
			c->vq.avail->idx = c->saved_idx;
		}
		after = virtio_rng_read_ok(&c->vq, (uint16_t)(c->vq.size - 1), good_us);
	}
	const char *after_reset = NULL;
	if (restart || after) {
		const char *r = virtio_start(d, &c->vq, c->feats, 0);
		c->vq.always_notify = true;
		after_reset =
		    r ? r : virtio_rng_read_ok(&c->vq, (uint16_t)(c->vq.size - 1), good_us);
	}
	/*
	 * Served afterwards: on the same queue unless a reset was due — or after
	 * a reset when the device raised NEEDS_RESET only once the next request
	 * made it look at the bad chain again.
	 */
	bool served;
	if (same_queue && !after)
		served = true;
	else if (same_queue)
		served = !strncmp(after, "needs-reset", 12) && !after_reset;
	else
		served = !after_reset;
	bool pass = served && !len_bad;

	probe_printf("PROBE hostile.vq case=%s group=%u result=", hc->name, hc->group);
	if (result)
		probe_printf("%s", result);
	else
		probe_printf("used-len%u", len);
	probe_printf(" used=%u id=%u len=%u status=0x%x irqs=%u cfg_irqs=%u after=", used, id, len,
	             status, irqs, cfg_irqs);
	if (same_queue && !after)
		probe_printf("ok");
	else if (same_queue)
		probe_printf("%s,then-reset-%s", after, after_reset ? after_reset : "ok");
	else
		probe_printf("%s", after_reset ? after_reset : "ok-after-reset");
	for (unsigned i = 0; i < c->nnotes; i++)
		probe_printf(" %s=0x%lx", c->note_key[i], c->note_val[i]);
	probe_printf("%s pass=%u us=%lu\n", len_bad ? " len_exceeds_chain=1" : "", pass,
	             probe_us_since(t0));
	return pass;
}

const char *test_hostile_vq(void)
{
	const char *why;
	struct hctx c = {0};
	c.d = virtio_open(VIRTIO_ID_RNG, &why);
	if (!c.d) {
		probe_printf("PROBE hostile.vq error=%s\n", why);
		return why;
	}
	char skip[512] = "", only[512] = "";
	probe_opt("hostile.skip", skip, sizeof(skip));
	bool have_only = probe_opt("hostile.only", only, sizeof(only));
	uint64_t wait_us = probe_opt_u64("hostile.wait_ms", 100) * 1000;
	uint64_t good_us = probe_opt_u64("hostile.good_ms", 500) * 1000;
	uint64_t feats =
	    VIRTIO_BIT(VIRTIO_F_VERSION_1) | (c.d->offered & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC));
	if (probe_opt_u64("hostile.event_idx", 1))
		feats |= c.d->offered & VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	c.buf = (uint64_t)virtio_dma;
	c.ram_top = virtio_ram_top();
	if (!c.ram_top)
		c.ram_top = 0x10000000; /* no memory map: assume 256 MiB */

	unsigned passed = 0, failed = 0, skipped = 0;
	const char *first_fail = NULL;
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct hcase *hc = &cases[i];
		if (have_only && !listed(only, hc->name))
			continue;
		if (listed(skip, hc->name)) {
			probe_printf("PROBE hostile.vq case=%s group=%u result=skipped\n", hc->name,
			             hc->group);
			skipped++;
			continue;
		}
		if (run_case(hc, &c, feats, wait_us, good_us)) {
			passed++;
		} else {
			failed++;
			if (!first_fail)
				first_fail = hc->name;
		}
	}
	bool reset_ok = virtio_reset(c.d);
	probe_printf("PROBE hostile.vq passed=%u failed=%u skipped=%u first_failed=%s ms=%lu\n",
	             passed, failed, skipped, first_fail ? first_fail : "-",
	             probe_us_since(t0) / 1000);
	if (failed)
		return "hostile-case-failed";
	return reset_ok ? NULL : "reset-stuck";
}
