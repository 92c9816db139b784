/*
 * virtio-pci driver core (see virtio.h): bus-0 discovery, capability and
 * MSI-X setup, status/feature negotiation, split-ring queues in probe memory
 * and interrupt-driven completion. Config space is read once per device and
 * cached; the hot path is ring stores, one notify write and one HLT.
 */
#include "virtio.h"

#define PCI_CMD_MEM        0x0002
#define PCI_CMD_MASTER     0x0004
#define PCI_CMD_INTX_OFF   0x0400
#define PCI_STATUS_CAPS    0x10
#define PCI_CAP_VENDOR     0x09
#define PCI_CAP_MSIX       0x11
#define MSIX_ENABLE        0x8000
#define MSIX_FUNCTION_MASK 0x4000
#define MAX_DEVS           8
#define MAX_CAPS           48

/* Rings and a spare indirect table per queue, 4 KiB each (VIRTQ_MAX entries). */
struct virtq_mem {
	struct virtq_desc desc[VIRTQ_MAX];
	uint8_t avail[4096];
	uint8_t used[4096];
	struct virtq_desc indirect[VIRTQ_MAX];
};
_Static_assert(sizeof(struct virtq_desc) == 16, "descriptor layout");
_Static_assert(sizeof(struct virtq_mem) == VIRTQ_MEM_SIZE, "ring layout");

static struct virtq_mem ring_mem[VIRTIO_MAX_QUEUES]
    __attribute__((section(".bss.noinit.virtio_rings"), aligned(4096)));
uint8_t virtio_dma[VIRTIO_DMA_SIZE]
    __attribute__((section(".bss.noinit.virtio_dma"), aligned(4096)));

static struct virtio_dev devs[MAX_DEVS];
static unsigned ndevs;
static bool scanned;
static volatile uint32_t irq_count[256];

static void virtio_irq(unsigned vector)
{
	irq_count[vector]++;
	lapic_eoi();
}

uint32_t virtio_irqs(unsigned vector)
{
	return irq_count[vector & 0xff];
}

uint64_t virtio_ram_top(void)
{
	uint64_t top = 0;
	for (unsigned i = 0; i < probe_memmap_entries; i++)
		if (probe_memmap[i].type == 1 && probe_memmap[i].addr + probe_memmap[i].size > top)
			top = probe_memmap[i].addr + probe_memmap[i].size;
	return top;
}

/* Function 0 of every slot, the others of multi-function devices; keeps virtio ones. */
static void scan(void)
{
	scanned = true;
	for (unsigned slot = 0; slot < 32; slot++) {
		unsigned nfn = 1;
		for (unsigned fn = 0; fn < nfn; fn++) {
			uint32_t id = pci_cfg_read32(0, slot, fn, 0x00);
			if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0)
				continue;
			if (fn == 0 && (pci_cfg_read32(0, slot, 0, 0x0c) >> 16) & 0x80)
				nfn = 8;
			uint16_t pid = (uint16_t)(id >> 16);
			if ((id & 0xffff) != VIRTIO_PCI_VENDOR || pid < 0x1040 || pid > 0x107f ||
			    ndevs == MAX_DEVS)
				continue;
			devs[ndevs] = (struct virtio_dev){
			    .slot = slot,
			    .fn = fn,
			    .device_id = (uint16_t)(pid - 0x1040),
			    .vec_base = VIRTIO_VEC_CONFIG + VIRTIO_VEC_STRIDE * ndevs};
			ndevs++;
		}
	}
}

static void parse_caps(struct virtio_dev *d, unsigned *bar_of, uint32_t *off_of)
{
	unsigned s = d->slot, f = d->fn;
	if (!((pci_cfg_read32(0, s, f, 0x04) >> 16) & PCI_STATUS_CAPS))
		return;
	unsigned ptr = pci_cfg_read32(0, s, f, 0x34) & 0xfc;
	for (unsigned n = 0; ptr >= 0x40 && n < MAX_CAPS; n++) {
		uint32_t h = pci_cfg_read32(0, s, f, ptr);
		unsigned type = h >> 24;
		if ((h & 0xff) == PCI_CAP_VENDOR && type >= 1 && type <= 4 && bar_of[type] > 5) {
			unsigned bar = pci_cfg_read32(0, s, f, ptr + 4) & 0xff;
			if (bar <= 5) {
				bar_of[type] = bar;
				off_of[type] = pci_cfg_read32(0, s, f, ptr + 8);
				uint32_t len = pci_cfg_read32(0, s, f, ptr + 12);
				if (type == 1)
					d->common_len = len;
				else if (type == 2)
					d->notify_len = len;
				else if (type == 3)
					d->isr_len = len;
				else
					d->device_len = len;
				if (type == 2)
					d->notify_mult = pci_cfg_read32(0, s, f, ptr + 16);
				d->bars_used |= 1u << bar;
			}
		} else if ((h & 0xff) == PCI_CAP_MSIX && !d->msix_cap) {
			uint32_t t = pci_cfg_read32(0, s, f, ptr + 4);
			d->msix_cap = ptr;
			d->msix_size = ((h >> 16) & 0x7ff) + 1;
			bar_of[0] = t & 7; /* slot 0 of bar_of is unused by virtio: the MSI-X BIR */
			off_of[0] = t & ~7u;
			if ((t & 7) <= 5)
				d->bars_used |= 1u << (t & 7);
		}
		ptr = (h >> 8) & 0xfc;
	}
}

static void msix_entry_set(struct virtio_dev *d, unsigned e, unsigned vector, unsigned apic)
{
	uint64_t a = d->msix_table + 16ull * e;
	mmio_write32(a + 0, 0xFEE00000u | apic << 12);
	mmio_write32(a + 4, 0);
	mmio_write32(a + 8, vector);
	mmio_write32(a + 12, 0); /* unmasked */
}

static const char *ready(struct virtio_dev *d)
{
	unsigned bar_of[5] = {6, 6, 6, 6, 6};
	uint32_t off_of[5] = {0};
	unsigned s = d->slot, f = d->fn;

	parse_caps(d, bar_of, off_of);
	if (bar_of[1] > 5 || bar_of[2] > 5)
		return "no-common-or-notify-cap";
	if (!d->msix_cap || bar_of[0] > 5)
		return "no-msix";
	for (unsigned b = 0; b < 6; b++) {
		if (!(d->bars_used & (1u << b)))
			continue;
		d->bar_addr[b] = pci_bar_assign(0, s, f, b);
		if (!d->bar_addr[b])
			return "bar-unassigned";
		if (d->bar_addr[b] >= 0x100000000ull) /* start.S maps 0-4 GiB only */
			return "bar-above-4g";
	}
	uint32_t cmd = pci_cfg_read32(0, s, f, 0x04) & 0xffff;
	uint32_t want = cmd | PCI_CMD_MEM | PCI_CMD_MASTER | PCI_CMD_INTX_OFF;
	if (want != cmd)
		pci_cfg_write32(0, s, f, 0x04, want);

	d->common = d->bar_addr[bar_of[1]] + off_of[1];
	d->notify = d->bar_addr[bar_of[2]] + off_of[2];
	if (bar_of[3] <= 5)
		d->isr = d->bar_addr[bar_of[3]] + off_of[3];
	if (bar_of[4] <= 5)
		d->device = d->bar_addr[bar_of[4]] + off_of[4];
	d->msix_table = d->bar_addr[bar_of[0]] + off_of[0];

	d->num_queues = virtio_c_read16(d, VIRTIO_C_NUMQ);
	virtio_c_write32(d, VIRTIO_C_DFSELECT, 0);
	d->offered = virtio_c_read32(d, VIRTIO_C_DF);
	virtio_c_write32(d, VIRTIO_C_DFSELECT, 1);
	d->offered |= (uint64_t)virtio_c_read32(d, VIRTIO_C_DF) << 32;
	for (unsigned q = 0; q < d->num_queues && q < VIRTIO_MAX_QUEUES; q++) {
		virtio_c_write16(d, VIRTIO_C_Q_SELECT, (uint16_t)q);
		d->qmax[q] = virtio_c_read16(d, VIRTIO_C_Q_SIZE);
		d->qnotify_off[q] = virtio_c_read16(d, VIRTIO_C_Q_NOFF);
	}

	/* Entry 0: config changes; entry 1 + q: queue q (all on entry 0 if the table is small). */
	lapic_enable();
	unsigned apic = lapic_id();
	unsigned n = d->msix_size < 1u + VIRTIO_MAX_QUEUES ? d->msix_size : 1u + VIRTIO_MAX_QUEUES;
	for (unsigned e = 0; e < n; e++) {
		irq_register(d->vec_base + e, virtio_irq);
		msix_entry_set(d, e, d->vec_base + e, apic);
	}
	uint32_t h = pci_cfg_read32(0, s, f, d->msix_cap);
	uint32_t ctl = ((h >> 16) | MSIX_ENABLE) & ~(uint32_t)MSIX_FUNCTION_MASK;
	pci_cfg_write32(0, s, f, d->msix_cap, (h & 0xffff) | ctl << 16);
	d->ready = true;
	return NULL;
}

struct virtio_dev *virtio_open(uint16_t device_id, const char **why)
{
	return virtio_open_nth(device_id, 0, why);
}

unsigned virtio_count(uint16_t device_id)
{
	if (!scanned)
		scan();
	unsigned n = 0;
	for (unsigned i = 0; i < ndevs; i++)
		n += devs[i].device_id == device_id;
	return n;
}

struct virtio_dev *virtio_open_nth(uint16_t device_id, unsigned nth, const char **why)
{
	if (!scanned)
		scan();
	for (unsigned i = 0; i < ndevs; i++) {
		struct virtio_dev *d = &devs[i];
		if (d->device_id != device_id || nth--)
			continue;
		if (!d->ready) {
			const char *r = ready(d);
			if (r) {
				*why = r;
				return NULL;
			}
		}
		return d;
	}
	*why = "no-device";
	return NULL;
}

bool virtio_reset(struct virtio_dev *d)
{
	virtio_set_status(d, 0);
	uint64_t t0 = rdtsc(), limit = probe_tsc_khz() * 100;
	while (virtio_get_status(d) != 0)
		if (rdtsc() - t0 > limit)
			return false;
	return true;
}

void virtio_write_features(struct virtio_dev *d, uint64_t features)
{
	virtio_c_write32(d, VIRTIO_C_GFSELECT, 0);
	virtio_c_write32(d, VIRTIO_C_GF, (uint32_t)features);
	virtio_c_write32(d, VIRTIO_C_GFSELECT, 1);
	virtio_c_write32(d, VIRTIO_C_GF, (uint32_t)(features >> 32));
}

uint64_t virtio_read_driver_features(struct virtio_dev *d)
{
	virtio_c_write32(d, VIRTIO_C_GFSELECT, 0);
	uint64_t f = virtio_c_read32(d, VIRTIO_C_GF);
	virtio_c_write32(d, VIRTIO_C_GFSELECT, 1);
	return f | (uint64_t)virtio_c_read32(d, VIRTIO_C_GF) << 32;
}

bool virtio_negotiate(struct virtio_dev *d, uint64_t features)
{
	if (!virtio_reset(d))
		return false;
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE);
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
	/* Before FEATURES_OK, so a device that objects can already say so (NEEDS_RESET). */
	virtio_c_write16(d, VIRTIO_C_MSIX, 0);
	virtio_write_features(d, features);
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
	return virtio_get_status(d) & VIRTIO_S_FEATURES_OK;
}

const char *virtq_setup(struct virtio_dev *d, struct virtq *vq, uint16_t index, uint16_t size,
                        uint64_t features, bool enable)
{
	if (index >= VIRTIO_MAX_QUEUES)
		return "no-queue";
	return virtq_setup_mem(d, vq, index, size, features, enable, &ring_mem[index]);
}

const char *virtq_setup_mem(struct virtio_dev *d, struct virtq *vq, uint16_t index, uint16_t size,
                            uint64_t features, bool enable, void *mem)
{
	if (index >= d->num_queues || index >= VIRTIO_MAX_QUEUES || !d->qmax[index])
		return "no-queue";
	uint16_t max = d->qmax[index];
	if (!size)
		size = max < VIRTQ_MAX ? max : VIRTQ_MAX;
	if (size > VIRTQ_MAX)
		return "queue-too-big";
	uint64_t noff = (uint64_t)d->qnotify_off[index] * d->notify_mult;
	if (noff + 2 > d->notify_len)
		return "notify-off-outside-cap";

	struct virtq_mem *m = mem;
	*vq = (struct virtq){
	    .dev = d,
	    .index = index,
	    .size = size,
	    .desc = m->desc,
	    .avail = (volatile struct virtq_avail *)m->avail,
	    .used = (volatile struct virtq_used *)m->used,
	    .indirect = m->indirect,
	    .msix_entry = (uint16_t)(d->msix_size > 1u + index ? 1 + index : 0),
	    .event_idx = features & VIRTIO_BIT(VIRTIO_F_EVENT_IDX),
	    .notify_addr = d->notify + noff,
	};
	/* Only what the device reads before we write it: the headers and the event words. */
	vq->avail->flags = 0;
	vq->avail->idx = 0;
	*virtq_used_event(vq) = 0;
	vq->used->flags = 0;
	vq->used->idx = 0;
	*virtq_avail_event(vq) = 0;
	vq->cfg_irqs_seen = virtio_irqs(virtio_cfg_vector(d));
	vq->irqs_seen = virtio_irqs(virtq_vector(vq));

	virtio_c_write16(d, VIRTIO_C_Q_SELECT, index);
	if (size != max)
		virtio_c_write16(d, VIRTIO_C_Q_SIZE, size);
	virtio_c_write16(d, VIRTIO_C_Q_MSIX, vq->msix_entry);
	if (virtio_c_read16(d, VIRTIO_C_Q_MSIX) != vq->msix_entry)
		return "msix-vector-refused";
	uint64_t da = (uint64_t)m->desc, aa = (uint64_t)m->avail, ua = (uint64_t)m->used;
	virtio_c_write32(d, VIRTIO_C_Q_DESCLO, (uint32_t)da);
	virtio_c_write32(d, VIRTIO_C_Q_DESCHI, (uint32_t)(da >> 32));
	virtio_c_write32(d, VIRTIO_C_Q_AVAILLO, (uint32_t)aa);
	virtio_c_write32(d, VIRTIO_C_Q_AVAILHI, (uint32_t)(aa >> 32));
	virtio_c_write32(d, VIRTIO_C_Q_USEDLO, (uint32_t)ua);
	virtio_c_write32(d, VIRTIO_C_Q_USEDHI, (uint32_t)(ua >> 32));
	if (enable)
		virtio_c_write16(d, VIRTIO_C_Q_ENABLE, 1);
	return NULL;
}

const char *virtio_start(struct virtio_dev *d, struct virtq *vq, uint64_t features, uint16_t qsize)
{
	if (!virtio_negotiate(d, features))
		return "features-refused";
	const char *r = virtq_setup(d, vq, 0, qsize, features, true);
	if (r)
		return r;
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK |
	                         VIRTIO_S_DRIVER_OK);
	return NULL;
}

void virtq_push(struct virtq *vq, uint16_t head)
{
	vq->avail->ring[vq->avail_idx % vq->size] = head;
	vq->avail_idx++;
}

void virtq_publish(struct virtq *vq)
{
	if (vq->event_idx)
		*virtq_used_event(vq) = vq->last_used;
	barrier(); /* x86 keeps stores in order; the compiler must too */
	vq->avail->idx = vq->avail_idx;
	vq->cfg_irqs_seen = virtio_irqs(virtio_cfg_vector(vq->dev));
	vq->irqs_seen = virtio_irqs(virtq_vector(vq));
}

void virtq_notify(struct virtq *vq)
{
	mmio_write16(vq->notify_addr, vq->index);
}

bool virtq_kick(struct virtq *vq)
{
	uint16_t old = vq->kicked_idx, cur = vq->avail_idx;
	vq->kicked_idx = cur;
	virtio_mb(); /* the device must see avail->idx before we read its suppression word */
	bool need;
	if (vq->event_idx) {
		uint16_t ev = *virtq_avail_event(vq);
		need = (uint16_t)(cur - ev - 1) < (uint16_t)(cur - old);
	} else {
		need = !(vq->used->flags & VIRTQ_USED_F_NO_NOTIFY);
	}
	if (need || vq->always_notify)
		virtq_notify(vq);
	return need;
}

int virtq_wait(struct virtq *vq, uint64_t timeout_us)
{
	uint64_t khz = probe_tsc_khz();
	uint64_t deadline = rdtsc() + timeout_us * khz / 1000;
	unsigned vec = virtq_vector(vq);
	int ret = VQ_TIMEOUT;
	bool armed = false;
	bool pre_completed = false;

	if (vq->event_idx) {
		*virtq_used_event(vq) = vq->last_used;
		virtio_mb(); /* publish used_event before looking at used->idx once more */
		/*
		 * A completion the device published before it could see this
		 * used_event may owe no interrupt (the device checked the old
		 * value). Wait for its interrupt only briefly, and do not count
		 * it as missed: only completions after this point must be signalled.
		 */
		if (vq->used->idx != vq->last_used) {
			pre_completed = true;
			uint64_t soon = rdtsc() + 50000 * khz / 1000; /* 50 ms */
			if (soon < deadline)
				deadline = soon;
		}
	}
	for (;;) {
		/*
		 * Done when the used index moved and the queue's interrupt came. A
		 * completion seen before its MSI is waited for: the MSI is pending in
		 * the LAPIC and ends the HLT below at once (sti's shadow covers hlt).
		 */
		bool used = vq->used->idx != vq->last_used;
		if (used && virtio_irqs(vec) != vq->irqs_seen) {
			vq->irqs_seen = virtio_irqs(vec);
			ret = VQ_USED;
			break;
		}
		if (virtio_irqs(virtio_cfg_vector(vq->dev)) != vq->cfg_irqs_seen) {
			vq->cfg_irqs_seen = virtio_irqs(virtio_cfg_vector(vq->dev));
			if (virtio_get_status(vq->dev) & VIRTIO_S_NEEDS_RESET) {
				ret = VQ_NEEDS_RESET;
				break;
			}
		}
		uint64_t now = rdtsc();
		if (now >= deadline) {
			if (used) { /* completed, but no interrupt: counted, not hidden */
				if (!pre_completed)
					vq->missed_irqs++;
				ret = VQ_USED;
			} else if (virtio_get_status(vq->dev) & VIRTIO_S_NEEDS_RESET) {
				ret = VQ_NEEDS_RESET; /* without the config interrupt it owes us */
			}
			break;
		}
		/* One-shot timer for what is left (re-armed if it fired early), then sleep. */
		uint64_t ticks = lapic_timer_ticks;
		if (!armed) {
			lapic_timer_oneshot_us((deadline - now) * 1000 / khz + 1);
			armed = true;
		}
		probe_wait_irq();
		if (lapic_timer_ticks != ticks)
			armed = false;
	}
	if (armed)
		lapic_timer_stop();
	return ret;
}

bool virtq_pop_used(struct virtq *vq, uint32_t *id, uint32_t *len)
{
	if (vq->used->idx == vq->last_used)
		return false;
	barrier();
	volatile struct virtq_used_elem *e = &vq->used->ring[vq->last_used % vq->size];
	*id = e->id;
	*len = e->len;
	vq->last_used++;
	return true;
}

unsigned virtq_drain_used(struct virtq *vq)
{
	uint16_t idx = vq->used->idx;
	unsigned n = (uint16_t)(idx - vq->last_used);
	vq->last_used = idx;
	return n;
}

int virtq_request(struct virtq *vq, uint16_t first, const struct virtq_buf *b, unsigned n,
                  bool indirect, uint64_t timeout_us, uint32_t *len)
{
	struct virtq_desc *t = indirect ? vq->indirect : vq->desc;
	unsigned base = indirect ? 0 : first;
	for (unsigned i = 0; i < n; i++) {
		uint16_t flags = (uint16_t)((b[i].write ? VIRTQ_DESC_F_WRITE : 0) |
		                            (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		virtq_desc_set(t, base + i, b[i].addr, b[i].len, flags, (uint16_t)(base + i + 1));
	}
	if (indirect)
		virtq_desc_set(vq->desc, first, (uint64_t)vq->indirect, 16 * n,
		               VIRTQ_DESC_F_INDIRECT, 0);
	virtq_push(vq, first);
	virtq_publish(vq);
	virtq_kick(vq);

	uint64_t t0 = rdtsc(), khz = probe_tsc_khz();
	for (;;) {
		uint64_t spent = (rdtsc() - t0) * 1000 / khz;
		if (spent >= timeout_us)
			return VQ_TIMEOUT;
		int r = virtq_wait(vq, timeout_us - spent);
		if (r != VQ_USED)
			return r;
		uint32_t id, l;
		while (virtq_pop_used(vq, &id, &l)) {
			if (id == first) {
				*len = l;
				return VQ_USED;
			}
			vq->foreign++;
		}
	}
}

const char *virtio_rng_read_ok(struct virtq *vq, uint16_t first, uint64_t timeout_us)
{
	/* The last 64 bytes of the DMA area: hostile cases never aim there. */
	uint64_t *buf = (uint64_t *)(virtio_dma + VIRTIO_DMA_SIZE - 64);
	for (unsigned i = 0; i < 8; i++)
		buf[i] = 0;
	struct virtq_buf b = {(uint64_t)buf, 64, true};
	uint32_t len = 0;
	int r = virtq_request(vq, first, &b, 1, false, timeout_us, &len);
	if (r == VQ_TIMEOUT)
		return "timeout";
	if (r == VQ_NEEDS_RESET)
		return "needs-reset";
	if (len == 0 || len > 64)
		return len ? "len-too-big" : "len0";
	uint64_t any = 0;
	for (unsigned i = 0; i < 8; i++)
		any |= buf[i];
	return any ? NULL : "zero-bytes"; /* 64 random zero bytes: p = 2^-512 */
}
