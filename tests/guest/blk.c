/*
 * virtio-blk driver layer (see blk.h): config, negotiation, N queues with a
 * fixed set of request slots each, submission without copies, completion by
 * MSI-X (HLT) or polling, bounded by the TSC.
 *
 * Slots and descriptors: with INDIRECT_DESC a slot owns one ring descriptor
 * (its index) pointing at the slot's indirect table; without, a slot owns
 * per_slot = max_segs + 2 consecutive ring descriptors. Either way a used
 * entry's id names its slot without a lookup table.
 */
#include "blk.h"

#define RAM_BASE      0x800000ull /* probe.ld keeps the image below 8 MiB */
#define RAM_MARGIN    0x100000ull /* left alone at the end of the RAM entry */
#define TIMER_MAX_US  10000       /* blk_wait()'s LAPIC one-shot: at most 10 ms */
#define TABLE_ENTRIES (BLK_MAX_SEGS + 2)

/* One 8-byte access to two adjacent fields (each load or store costs here). */
typedef uint64_t __attribute__((may_alias)) u64_alias;

/* Static memory of one open disk; .bss.noinit: not loaded, not zeroed at boot. */
struct blk_pool {
	uint8_t rings[BLK_MAX_QUEUES][VIRTQ_MEM_SIZE];
	struct virtq_desc tables[BLK_MAX_QUEUES][BLK_MAX_SLOTS * TABLE_ENTRIES];
	struct blk_slot_mem mem[BLK_MAX_QUEUES][BLK_MAX_SLOTS];
};
_Static_assert(sizeof(struct blk_slot_mem) == 32, "slot memory layout");

static struct blk_pool pools[BLK_MAX_OPEN]
    __attribute__((section(".bss.noinit.blk_pools"), aligned(4096)));
static struct blk_dev devs[BLK_MAX_OPEN] __attribute__((section(".bss.noinit.blk_devs")));
static bool pool_used[BLK_MAX_OPEN];

/* ---- RAM for data ---- */

static uint64_t ram_end, ram_next;
static bool ram_found;

static void ram_find(void)
{
	if (ram_found)
		return;
	ram_found = true;
	for (unsigned i = 0; i < probe_memmap_entries; i++) {
		const struct probe_mem_entry *e = &probe_memmap[i];
		if (e->type == 1 && e->addr <= RAM_BASE &&
		    e->addr + e->size > RAM_BASE + RAM_MARGIN) {
			ram_end = e->addr + e->size - RAM_MARGIN;
			break;
		}
	}
	ram_next = RAM_BASE;
}

uint64_t blk_ram_base(void)
{
	ram_find();
	return ram_end ? RAM_BASE : 0;
}

uint64_t blk_ram_size(void)
{
	ram_find();
	return ram_end ? ram_end - RAM_BASE : 0;
}

uint64_t blk_ram_alloc(uint64_t size, uint64_t align)
{
	ram_find();
	if (!ram_end || !align)
		return 0;
	uint64_t a = (ram_next + align - 1) & ~(align - 1);
	if (a < ram_next || a + size > ram_end || a + size < a)
		return 0;
	ram_next = a + size;
	return a;
}

void blk_ram_reset(void)
{
	ram_find();
	ram_next = RAM_BASE;
}

/* ---- misc ---- */

const char *blk_status_word(uint8_t s)
{
	switch (s) {
	case VIRTIO_BLK_S_OK:
		return "ok";
	case VIRTIO_BLK_S_IOERR:
		return "ioerr";
	case VIRTIO_BLK_S_UNSUPP:
		return "unsupp";
	case BLK_STATUS_UNTOUCHED:
		return "untouched";
	default:
		return NULL;
	}
}

bool blk_listed(const char *list, const char *name)
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

unsigned blk_count(void)
{
	return virtio_count(VIRTIO_ID_BLOCK);
}

/* ---- config and negotiation ---- */

static uint32_t cfg32(const struct blk_dev *b, unsigned off)
{
	return mmio_read32(b->vd->device + off);
}

void blk_read_config(struct blk_dev *b, struct blk_config *c)
{
	*c = (struct blk_config){0};
	if (!b->vd->device || b->vd->device_len < 8)
		return;
	uint64_t f = b->feats ? b->feats : b->vd->offered;
	c->capacity = cfg32(b, 0x00) | (uint64_t)cfg32(b, 0x04) << 32;
	uint32_t len = b->vd->device_len;
	if ((f & VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX)) && len >= 0x0c)
		c->size_max = cfg32(b, 0x08);
	if ((f & VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX)) && len >= 0x10)
		c->seg_max = cfg32(b, 0x0c);
	if ((f & VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE)) && len >= 0x18)
		c->blk_size = cfg32(b, 0x14);
	if (len >= 0x24) {
		uint32_t w = cfg32(b, 0x20);
		if (f & VIRTIO_BIT(VIRTIO_BLK_F_CONFIG_WCE))
			c->writeback = (uint8_t)w;
		if (f & VIRTIO_BIT(VIRTIO_BLK_F_MQ))
			c->num_queues = (uint16_t)(w >> 16);
	}
	if ((f & VIRTIO_BIT(VIRTIO_BLK_F_DISCARD)) && len >= 0x30) {
		c->max_discard_sectors = cfg32(b, 0x24);
		c->max_discard_seg = cfg32(b, 0x28);
		c->discard_sector_alignment = cfg32(b, 0x2c);
	}
	if ((f & VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES)) && len >= 0x3c) {
		c->max_write_zeroes_sectors = cfg32(b, 0x30);
		c->max_write_zeroes_seg = cfg32(b, 0x34);
		c->write_zeroes_may_unmap = (uint8_t)cfg32(b, 0x38);
	}
}

uint64_t blk_max_transfer(const struct blk_dev *b)
{
	uint64_t segs = b->max_segs;
	if (blk_has(b, VIRTIO_BLK_F_SEG_MAX) && b->cfg.seg_max && b->cfg.seg_max < segs)
		segs = b->cfg.seg_max;
	uint64_t per = 0xfffff000ull;
	if (blk_has(b, VIRTIO_BLK_F_SIZE_MAX) && b->cfg.size_max)
		per = b->cfg.size_max;
	uint64_t t = segs * per;
	if (t > 0xfffffe00ull)
		t = 0xfffffe00ull;
	return t & ~(uint64_t)(BLK_SECTOR - 1);
}

unsigned blk_split(const struct blk_dev *b, uint64_t addr, uint64_t len, struct blk_seg *segs,
                   unsigned max)
{
	uint64_t per = 0xfffff000ull;
	if (blk_has(b, VIRTIO_BLK_F_SIZE_MAX) && b->cfg.size_max)
		per = b->cfg.size_max;
	if (max > b->max_segs)
		max = b->max_segs;
	if (blk_has(b, VIRTIO_BLK_F_SEG_MAX) && b->cfg.seg_max && b->cfg.seg_max < max)
		max = b->cfg.seg_max;
	unsigned n = 0;
	while (len) {
		if (n == max)
			return 0;
		uint64_t l = len < per ? len : per;
		segs[n++] = (struct blk_seg){addr, (uint32_t)l};
		addr += l;
		len -= l;
	}
	return n;
}

static uint64_t wanted_features(const struct blk_dev *b, const struct blk_open_opts *o)
{
	uint64_t want = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) |
	                VIRTIO_BIT(VIRTIO_BLK_F_RO) | VIRTIO_BIT(VIRTIO_BLK_F_MQ) |
	                VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) | VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES) |
	                VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) | VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) |
	                VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX);
	if (!o->no_indirect)
		want |= VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
	if (!o->no_event_idx)
		want |= VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	return want & b->vd->offered;
}

/* Queues, slots and DRIVER_OK for the negotiated features; the device is past FEATURES_OK. */
static const char *setup_queues(struct blk_dev *b, unsigned want_q, unsigned max_slots,
                                uint16_t qsize)
{
	struct blk_pool *p = &pools[b->pool];
	unsigned nq = 1;
	if (blk_has(b, VIRTIO_BLK_F_MQ) && b->cfg.num_queues > 1)
		nq = b->cfg.num_queues;
	if (nq > b->vd->num_queues)
		nq = b->vd->num_queues;
	if (want_q < nq)
		nq = want_q;
	if (nq > BLK_MAX_QUEUES)
		nq = BLK_MAX_QUEUES;
	if (nq == 0)
		return "no-queue";
	b->nq = nq;
	for (unsigned i = 0; i < nq; i++) {
		struct blk_queue *q = &b->q[i];
		const char *r =
		    virtq_setup_mem(b->vd, &q->vq, (uint16_t)i, qsize, b->feats, true, p->rings[i]);
		if (r)
			return r;
		q->dev = b;
		q->index = i;
		q->mem = p->mem[i];
		q->tables = p->tables[i];
		q->per_slot = (uint16_t)(b->indirect ? 1 : b->max_segs + 2);
		unsigned n = q->vq.size / q->per_slot;
		if (n > max_slots)
			n = max_slots;
		if (n == 0)
			return "queue-too-small";
		q->nslots = (uint16_t)n;
		q->inflight = 0;
		q->nfree = 0;
		for (unsigned s = n; s-- > 0;)
			q->free[q->nfree++] = (uint16_t)s;
		for (unsigned s = 0; s < n; s++)
			q->slot[s].busy = q->slot[s].tmpl = false;
		q->qmask = (q->vq.size & (q->vq.size - 1)) ? 0 : (uint16_t)(q->vq.size - 1);
		q->irqs_seen = virtio_irqs(virtq_vector(&q->vq));
		q->missed_irqs = q->foreign = 0;
		q->kicks = 0;
	}
	virtio_set_status(b->vd, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK |
	                             VIRTIO_S_DRIVER_OK);
	return NULL;
}

/* The options of the last open per pool entry, for blk_restart(). */
static struct blk_open_opts open_opts[BLK_MAX_OPEN];

struct blk_dev *blk_open(unsigned disk, const struct blk_open_opts *oin, const char **why)
{
	struct blk_open_opts o = oin ? *oin : (struct blk_open_opts){0};
	if (!o.queues)
		o.queues = 1;
	if (!o.max_slots || o.max_slots > BLK_MAX_SLOTS)
		o.max_slots = BLK_MAX_SLOTS;
	if (!o.max_segs)
		o.max_segs = 4;
	if (o.max_segs > BLK_MAX_SEGS)
		o.max_segs = BLK_MAX_SEGS;

	unsigned pool = BLK_MAX_OPEN;
	for (unsigned i = 0; i < BLK_MAX_OPEN; i++)
		if (!pool_used[i]) {
			pool = i;
			break;
		}
	if (pool == BLK_MAX_OPEN) {
		*why = "too-many-open-disks";
		return NULL;
	}
	struct virtio_dev *vd = virtio_open_nth(VIRTIO_ID_BLOCK, disk, why);
	if (!vd)
		return NULL;
	if (!(vd->offered & VIRTIO_BIT(VIRTIO_F_VERSION_1))) {
		*why = "no-version-1";
		return NULL;
	}
	if (!vd->device) {
		*why = "no-device-config";
		return NULL;
	}
	struct blk_dev *b = &devs[pool];
	memset(b, 0, sizeof(*b));
	b->vd = vd;
	b->disk = disk;
	b->pool = pool;
	b->max_segs = o.max_segs;
	b->feats = wanted_features(b, &o);
	b->indirect = b->feats & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
	open_opts[pool] = o;
	if (!virtio_negotiate(vd, b->feats)) {
		*why = "features-refused";
		if (!virtio_reset(vd))
			*why = "features-refused-reset-stuck";
		return NULL;
	}
	blk_read_config(b, &b->cfg);
	const char *r = setup_queues(b, o.queues, o.max_slots, o.qsize);
	if (r) {
		*why = r;
		if (!virtio_reset(vd))
			*why = "setup-failed-reset-stuck";
		return NULL;
	}
	pool_used[pool] = true;
	return b;
}

const char *blk_restart(struct blk_dev *b)
{
	const struct blk_open_opts *o = &open_opts[b->pool];
	if (!virtio_negotiate(b->vd, b->feats))
		return "features-refused";
	blk_read_config(b, &b->cfg);
	return setup_queues(b, o->queues, o->max_slots, o->qsize);
}

void blk_close(struct blk_dev *b)
{
	if (!b)
		return;
	blk_timer_stop();
	if (!virtio_reset(b->vd))
		probe_printf("PROBE blk.close disk=%u reset=stuck\n", b->disk);
	pool_used[b->pool] = false;
}

void blk_print_dev(const char *test, const struct blk_dev *b)
{
	const struct blk_config *c = &b->cfg;
	probe_printf("PROBE %s.dev disk=%u dev=00:%02x.%u offered=0x%lx features=0x%lx "
	             "capacity=%lu size_max=%u seg_max=%u blk_size=%u num_queues=%u queues=%u "
	             "qsize=%u slots=%u indirect=%u max_discard_sectors=%u max_discard_seg=%u "
	             "discard_align=%u max_write_zeroes_sectors=%u max_write_zeroes_seg=%u "
	             "write_zeroes_may_unmap=%u\n",
	             test, b->disk, b->vd->slot, b->vd->fn, b->vd->offered, b->feats, c->capacity,
	             c->size_max, c->seg_max, c->blk_size, c->num_queues, b->nq, b->q[0].vq.size,
	             b->q[0].nslots, b->indirect, c->max_discard_sectors, c->max_discard_seg,
	             c->discard_sector_alignment, c->max_write_zeroes_sectors,
	             c->max_write_zeroes_seg, c->write_zeroes_may_unmap);
}

/* ---- requests ---- */

/*
 * Every load and store costs microseconds here, so the common case — one
 * data segment into a slot whose descriptors already hold a one-segment
 * chain — rewrites only the header, the status byte and the data descriptor.
 */
int blk_submit(struct blk_queue *q, uint32_t type, uint64_t sector, const struct blk_seg *segs,
               unsigned nseg, bool dev_writes, uint64_t user)
{
	struct blk_dev *b = q->dev;
	if (!q->nfree || nseg > b->max_segs)
		return -1;
	uint16_t s = q->free[--q->nfree];
	struct blk_slot_mem *m = &q->mem[s];
	struct blk_slot *sl = &q->slot[s];
	*(volatile u64_alias *)&m->hdr = type; /* type, ioprio 0 */
	m->hdr.sector = sector;
	m->status = BLK_STATUS_UNTOUCHED;

	bool indirect = b->indirect;
	unsigned base = indirect ? 0 : (unsigned)s * q->per_slot;
	struct virtq_desc *t = indirect ? q->tables + (unsigned)s * TABLE_ENTRIES : q->vq.desc;
	uint16_t dflags = (uint16_t)(VIRTQ_DESC_F_NEXT | (dev_writes ? VIRTQ_DESC_F_WRITE : 0));
	if (nseg == 1 && sl->tmpl) {
		struct virtq_desc *dd = &t[base + 1];
		dd->addr = segs[0].addr;
		/* len, flags and next in one store */
		*(volatile u64_alias *)&dd->len =
		    segs[0].len | (uint64_t)dflags << 32 | (uint64_t)(base + 2) << 48;
	} else {
		unsigned n = 0;
		virtq_desc_set(t, base, (uint64_t)&m->hdr, sizeof(m->hdr), VIRTQ_DESC_F_NEXT,
		               (uint16_t)(base + 1));
		n++;
		for (unsigned i = 0; i < nseg; i++, n++)
			virtq_desc_set(t, base + n, segs[i].addr, segs[i].len, dflags,
			               (uint16_t)(base + n + 1));
		virtq_desc_set(t, base + n, (uint64_t)&m->status, 1, VIRTQ_DESC_F_WRITE, 0);
		n++;
		if (indirect)
			virtq_desc_set(q->vq.desc, s, (uint64_t)t, 16 * n, VIRTQ_DESC_F_INDIRECT,
			               0);
		sl->tmpl = nseg == 1;
	}
	sl->user = user;
	sl->busy = true;
	sl->t_submit = rdtsc();

	/* virtq_push + virtq_publish, without their bookkeeping. */
	struct virtq *vq = &q->vq;
	uint16_t ai = vq->avail_idx;
	uint16_t slotpos = q->qmask ? (uint16_t)(ai & q->qmask) : (uint16_t)(ai % vq->size);
	vq->avail->ring[slotpos] = (uint16_t)(indirect ? s : base);
	ai++;
	vq->avail_idx = ai;
	if (vq->event_idx)
		*virtq_used_event(vq) = vq->last_used;
	barrier();
	vq->avail->idx = ai;
	q->inflight++;
	return s;
}

void blk_kick(struct blk_queue *q)
{
	if (virtq_kick(&q->vq))
		q->kicks++;
}

bool blk_reap(struct blk_queue *q, struct blk_done *d)
{
	struct virtq *vq = &q->vq;
	for (;;) {
		uint16_t lu = vq->last_used;
		if (vq->used->idx == lu)
			return false;
		barrier();
		uint64_t e = *(volatile u64_alias *)&vq->used
		                  ->ring[q->qmask ? lu & q->qmask : lu % vq->size];
		vq->last_used = (uint16_t)(lu + 1);
		uint32_t id = (uint32_t)e, len = (uint32_t)(e >> 32);
		unsigned s = q->per_slot == 1 ? id : id / q->per_slot;
		if (s * q->per_slot != id || s >= q->nslots || !q->slot[s].busy) {
			q->foreign++;
			continue;
		}
		struct blk_slot *sl = &q->slot[s];
		d->slot = (int)s;
		d->user = sl->user;
		d->status = q->mem[s].status;
		d->len = len;
		d->t_submit = sl->t_submit;
		sl->busy = false;
		q->free[q->nfree++] = (uint16_t)s;
		q->inflight--;
		return true;
	}
}

/* ---- waiting ---- */

static bool timer_armed;
static uint64_t timer_ticks, timer_until;

void blk_timer_stop(void)
{
	if (timer_armed)
		lapic_timer_stop();
	timer_armed = false;
}

static bool pending(const struct blk_queue *q)
{
	return q->vq.used->idx != q->vq.last_used;
}

static bool needs_reset(struct blk_queue *const *qs, unsigned n, bool check_all)
{
	for (unsigned i = 0; i < n; i++) {
		struct virtq *vq = &qs[i]->vq;
		uint32_t c = virtio_irqs(virtio_cfg_vector(vq->dev));
		if (c != vq->cfg_irqs_seen || check_all) {
			vq->cfg_irqs_seen = c;
			if (virtio_get_status(vq->dev) & VIRTIO_S_NEEDS_RESET)
				return true;
		}
	}
	return false;
}

/* Bounds the next HLT: a one-shot for min(time left, 10 ms), unless one already covers it. */
static void arm(uint64_t now, uint64_t deadline, uint64_t khz)
{
	if (timer_armed && lapic_timer_ticks == timer_ticks && timer_until <= deadline)
		return;
	uint64_t left_us = (deadline - now) * 1000 / khz + 1;
	if (left_us > TIMER_MAX_US)
		left_us = TIMER_MAX_US;
	lapic_timer_oneshot_us(left_us);
	timer_armed = true;
	timer_ticks = lapic_timer_ticks;
	timer_until = now + left_us * khz / 1000;
}

int blk_wait(struct blk_queue *const *qs, unsigned n, uint64_t deadline, bool poll)
{
	uint64_t khz = probe_tsc_khz();
	if (!poll) {
		/* EVENT_IDX: interrupt at the next completion; then look once more. */
		for (unsigned i = 0; i < n; i++)
			if (qs[i]->vq.event_idx)
				*virtq_used_event(&qs[i]->vq) = qs[i]->vq.last_used;
		virtio_mb();
	}
	bool slept = false;
	for (;;) {
		for (unsigned i = 0; i < n; i++) {
			struct blk_queue *q = qs[i];
			if (!pending(q))
				continue;
			if (poll || !slept) {
				q->irqs_seen = virtio_irqs(virtq_vector(&q->vq));
				return VQ_USED;
			}
			/*
			 * Found after sleeping: its interrupt should have come. It may
			 * still be in flight (irqfd injection is asynchronous, and the
			 * host may be busy), so give it up to 10 ms before calling it
			 * missed.
			 */
			unsigned vec = virtq_vector(&q->vq);
			uint64_t t0 = rdtsc(), lim = t0 + 10 * khz;
			while (virtio_irqs(vec) == q->irqs_seen) {
				uint64_t now = rdtsc();
				if (now >= lim) {
					q->missed_irqs++;
					break;
				}
				arm(now, lim, khz);
				probe_wait_irq();
			}
			q->irqs_seen = virtio_irqs(vec);
			return VQ_USED;
		}
		if (needs_reset(qs, n, false))
			return VQ_NEEDS_RESET;
		uint64_t now = rdtsc();
		if (now >= deadline)
			return needs_reset(qs, n, true) ? VQ_NEEDS_RESET : VQ_TIMEOUT;
		if (poll) {
			cpu_relax();
			continue;
		}
		if (!slept)
			for (unsigned i = 0; i < n; i++)
				qs[i]->irqs_seen = virtio_irqs(virtq_vector(&qs[i]->vq));
		arm(now, deadline, khz);
		probe_wait_irq();
		slept = true;
	}
}

int blk_sync(struct blk_queue *q, uint32_t type, uint64_t sector, const struct blk_seg *segs,
             unsigned nseg, bool dev_writes, uint64_t timeout_us, uint8_t *status, uint32_t *len)
{
	int s = blk_submit(q, type, sector, segs, nseg, dev_writes, 0);
	if (s < 0)
		return VQ_TIMEOUT;
	blk_kick(q);
	uint64_t deadline = rdtsc() + timeout_us * probe_tsc_khz() / 1000;
	struct blk_queue *qs[1] = {q};
	for (;;) {
		int r = blk_wait(qs, 1, deadline, false);
		if (r != VQ_USED)
			return r;
		struct blk_done d;
		while (blk_reap(q, &d)) {
			if (d.slot == s) {
				if (status)
					*status = d.status;
				if (len)
					*len = d.len;
				return VQ_USED;
			}
		}
	}
}

uint32_t blk_irqs_settled(struct blk_queue *q, uint32_t want)
{
	unsigned vec = virtq_vector(&q->vq);
	uint64_t khz = probe_tsc_khz(), t0 = rdtsc(), lim = t0 + 200 * khz;

	/* A completion found by polling leaves its interrupt pending (taken at
	 * the next STI) or still on its way from the host: give it 200 ms. */
	probe_irq_window();
	while (virtio_irqs(vec) < want) {
		uint64_t now = rdtsc();
		if (now >= lim)
			break;
		arm(now, lim, khz);
		probe_wait_irq();
	}
	return virtio_irqs(vec);
}
