/*
 * virtio-pci transport, part 1: the PCI config space (header, BAR 0/1 with
 * sizing, capability list), BAR 0 dispatch, the common configuration
 * structure, feature negotiation and the device status state machine.
 * Every access is bounded here; what the layout does not define reads as
 * zero and ignores writes.
 */
#include <errno.h>
#include <string.h>

#include "devices/virtio/virtio_pci_priv.h"

/* PCI config header offsets and bits. */
#define PCI_COMMAND         0x04
#define PCI_STATUS          0x06
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_BAR0            0x10
#define PCI_BAR_MEM64       0x04
#define PCI_CAP_PTR         0x34
#define PCI_CAP_ID_MSIX     0x11
#define PCI_CAP_ID_VNDR     0x09

/* virtio_pci_cap cfg_type values (virtio 1.2 §4.1.4). */
#define VIRTIO_PCI_CAP_COMMON  1
#define VIRTIO_PCI_CAP_NOTIFY  2
#define VIRTIO_PCI_CAP_ISR     3
#define VIRTIO_PCI_CAP_DEVICE  4
#define VIRTIO_PCI_CAP_PCI_CFG 5

/* Common cfg fields (virtio 1.2 §4.1.4.3). */
enum {
	CC_DFSELECT = 0x00,
	CC_DF = 0x04,
	CC_GFSELECT = 0x08,
	CC_GF = 0x0c,
	CC_MSIX_CONFIG = 0x10,
	CC_NUM_QUEUES = 0x12,
	CC_STATUS = 0x14,
	CC_GENERATION = 0x15,
	CC_Q_SELECT = 0x16,
	CC_Q_SIZE = 0x18,
	CC_Q_MSIX = 0x1a,
	CC_Q_ENABLE = 0x1c,
	CC_Q_NOTIFY_OFF = 0x1e,
	CC_Q_DESC = 0x20,
	CC_Q_DRIVER = 0x28,
	CC_Q_DEVICE = 0x30,
	CC_Q_NOTIFY_DATA = 0x38,
	CC_Q_RESET = 0x3a,
};
static const struct {
	uint8_t off, size;
} cc_fields[] = {
    {CC_DFSELECT, 4},      {CC_DF, 4},         {CC_GFSELECT, 4}, {CC_GF, 4},
    {CC_MSIX_CONFIG, 2},   {CC_NUM_QUEUES, 2}, {CC_STATUS, 1},   {CC_GENERATION, 1},
    {CC_Q_SELECT, 2},      {CC_Q_SIZE, 2},     {CC_Q_MSIX, 2},   {CC_Q_ENABLE, 2},
    {CC_Q_NOTIFY_OFF, 2},  {CC_Q_DESC, 8},     {CC_Q_DRIVER, 8}, {CC_Q_DEVICE, 8},
    {CC_Q_NOTIFY_DATA, 2}, {CC_Q_RESET, 2},
};

static void put_le(uint8_t *p, unsigned len, uint64_t v)
{
	for (unsigned i = 0; i < len; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, unsigned len)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < len; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Append a capability of len bytes to the list; returns its offset. */
static uint8_t add_cap(struct virtio_pci *p, uint8_t *next_free, uint8_t *last, uint8_t id,
                       uint8_t len)
{
	uint8_t off = *next_free;
	p->cfg[*last] = off; /* the previous capability's next pointer (or 0x34) */
	p->cfg[off] = id;
	p->cfg[off + 1] = 0;
	*last = off + 1;
	*next_free = (uint8_t)(off + ((len + 3) & ~3));
	return off;
}

static void add_virtio_cap(struct virtio_pci *p, uint8_t *next_free, uint8_t *last, uint8_t type,
                           uint32_t off, uint32_t len, uint8_t caplen)
{
	uint8_t c = add_cap(p, next_free, last, PCI_CAP_ID_VNDR, caplen);
	p->cfg[c + 2] = caplen;
	p->cfg[c + 3] = type;
	p->cfg[c + 4] = VIRTIO_PCI_BAR;
	put_le(&p->cfg[c + 8], 4, off);
	put_le(&p->cfg[c + 12], 4, len);
	if (type == VIRTIO_PCI_CAP_NOTIFY)
		put_le(&p->cfg[c + 16], 4, VIRTIO_PCI_NOTIFY_MULT);
	if (type == VIRTIO_PCI_CAP_PCI_CFG) {
		/* The driver chooses bar, offset, length and data of the window. */
		p->cap_pcicfg = c;
		p->wmask[c + 4] = 0xff;
		memset(&p->wmask[c + 8], 0xff, 12);
	}
}

static void build_config_space(struct virtio_pci *p)
{
	const struct virtio_device_ops *ops = p->dev->ops;
	uint8_t *cfg = p->cfg;

	put_le(&cfg[0x00], 2, VIRTIO_PCI_VENDOR);
	put_le(&cfg[0x02], 2, VIRTIO_PCI_DEVICE_BASE + ops->device_id);
	put_le(&p->wmask[PCI_COMMAND], 2, 0x0406); /* memory space, bus master, INTx disable */
	put_le(&cfg[PCI_STATUS], 2, PCI_STATUS_CAP_LIST);
	cfg[0x08] = 1; /* revision ≥ 1: a non-transitional (modern-only) device */
	cfg[0x0a] = ops->pci_subclass;
	cfg[0x0b] = ops->pci_class;
	/* BAR 0/1: a 64-bit memory BAR; bits below the size stay zero, which is
	 * exactly how all-ones sizing writes read back per the PCI spec. */
	cfg[PCI_BAR0] = PCI_BAR_MEM64;
	put_le(&p->wmask[PCI_BAR0], 4, ~(uint32_t)(VIRTIO_PCI_BAR_SIZE - 1));
	put_le(&p->wmask[PCI_BAR0 + 4], 4, 0xffffffffu);
	put_le(&cfg[0x2c], 2, VIRTIO_PCI_VENDOR);
	put_le(&cfg[0x2e], 2, VIRTIO_PCI_SUBSYS_ID);
	p->wmask[0x3c] = 0xff; /* interrupt line: scratch for the OS; no INTx pin */

	uint8_t next_free = 0x40, last = PCI_CAP_PTR;
	add_virtio_cap(p, &next_free, &last, VIRTIO_PCI_CAP_COMMON, VIRTIO_PCI_COMMON_OFF,
	               VIRTIO_PCI_COMMON_LEN, 16);
	add_virtio_cap(p, &next_free, &last, VIRTIO_PCI_CAP_NOTIFY, VIRTIO_PCI_NOTIFY_OFF,
	               VIRTIO_PCI_NOTIFY_MULT * ops->num_queues, 20);
	add_virtio_cap(p, &next_free, &last, VIRTIO_PCI_CAP_ISR, VIRTIO_PCI_ISR_OFF, 1, 16);
	if (ops->config_size)
		add_virtio_cap(p, &next_free, &last, VIRTIO_PCI_CAP_DEVICE, VIRTIO_PCI_DEVCFG_OFF,
		               ops->config_size, 16);
	add_virtio_cap(p, &next_free, &last, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 20);
	uint8_t m = add_cap(p, &next_free, &last, PCI_CAP_ID_MSIX, 12);
	p->cap_msix = m;
	put_le(&cfg[m + 2], 2, (uint16_t)(p->nvec - 1)); /* table size - 1; enable/mask clear */
	p->wmask[m + 3] = (MSIX_CTL_ENABLE | MSIX_CTL_FMASK) >> 8;
	put_le(&cfg[m + 4], 4, VIRTIO_PCI_MSIX_TABLE_OFF | VIRTIO_PCI_BAR);
	put_le(&cfg[m + 8], 4, VIRTIO_PCI_MSIX_PBA_OFF | VIRTIO_PCI_BAR);
}

static void reset_queue_regs(struct virtio_pci *p)
{
	struct virtio_dev *d = p->dev;
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		struct virtio_queue *q = &d->queues[i];
		memset(q, 0, sizeof(*q));
		q->dev = d;
		q->index = (uint16_t)i;
		q->size = i < d->ops->num_queues ? d->ops->queue_max_size : 0;
		q->vector = VIRTIO_NO_VECTOR;
		q->kick_fd = -1;
	}
}

int virtio_pci_init(struct virtio_pci *p, struct virtio_dev *d, struct exec *ex,
                    const struct guest_mem *mem, int ctl_sock)
{
	const struct virtio_device_ops *ops = d->ops;
	if (!ops || !ops->queue_kick || ops->num_queues == 0 ||
	    ops->num_queues > VIRTIO_MAX_QUEUES || ops->queue_max_size == 0 ||
	    ops->queue_max_size > VIRTQ_MAX_SIZE ||
	    (ops->queue_max_size & (ops->queue_max_size - 1)) || ops->config_size > 0x1000 ||
	    (ops->config_size && (!ops->config_read || !ops->config_write)))
		return -EINVAL;
	memset(p, 0, sizeof(*p));
	p->dev = d;
	p->ex = ex;
	p->ctl_sock = ctl_sock;
	exec_sem_init(&p->ctl_lock, 1);
	p->nvec = (uint16_t)(ops->num_queues + 1);
	for (unsigned i = 0; i < VIRTIO_PCI_MSIX_VECTORS; i++) {
		p->vec[i].irqfd = -1;
		p->vec[i].ctrl = MSIX_ENTRY_MASKED; /* PCI: vectors come up masked */
	}
	p->offered = ops->features | (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_EVENT_IDX) |
	             (1ull << VIRTIO_F_INDIRECT_DESC);
	p->config_vector = VIRTIO_NO_VECTOR;
	d->pci = p;
	d->ex = ex;
	d->mem = mem;
	d->features = 0;
	reset_queue_regs(p);
	build_config_space(p);
	return 0;
}

void virtio_pci_bars(const struct virtio_pci *p, struct ipc_bar_info bars[IPC_MAX_BARS])
{
	(void)p;
	memset(bars, 0, sizeof(struct ipc_bar_info) * IPC_MAX_BARS);
	bars[VIRTIO_PCI_BAR].size = VIRTIO_PCI_BAR_SIZE;
	bars[VIRTIO_PCI_BAR].kind = IPC_BAR_MEM64;
}

/* ---- status ---- */

static void device_reset(struct virtio_pci *p)
{
	struct virtio_dev *d = p->dev;
	/* Finish what was popped before the reset is visible: the driver polls
	 * status until it reads 0, and that read is ordered after this write. */
	vpci_queues_stop(p);
	if (d->ops->reset)
		d->ops->reset(d);
	reset_queue_regs(p);
	d->features = 0;
	p->driver_features = 0;
	p->features_beyond_64 = false;
	p->dfselect = p->gfselect = 0;
	p->queue_sel = 0;
	p->config_vector = VIRTIO_NO_VECTOR;
	p->isr = 0;
	p->pba = 0;
	p->status = 0;
}

static void status_write(struct virtio_pci *p, uint8_t val)
{
	struct virtio_dev *d = p->dev;
	if (val == 0) {
		device_reset(p);
		return;
	}
	/* Bits accumulate until a reset; NEEDS_RESET is the device's to set. */
	uint8_t next = (uint8_t)((p->status | val) & ~VIRTIO_STATUS_NEEDS_RESET);
	next |= p->status & VIRTIO_STATUS_NEEDS_RESET;
	uint8_t added = next & ~p->status;
	if (added & VIRTIO_STATUS_FEATURES_OK) {
		/* FEATURES_OK stays clear (the driver reads that back) when the
		 * driver asked for anything we did not offer, or not VERSION_1. */
		uint64_t f = p->driver_features;
		if ((f & ~p->offered) || p->features_beyond_64 ||
		    !(f & (1ull << VIRTIO_F_VERSION_1)))
			next &= ~VIRTIO_STATUS_FEATURES_OK;
		else
			d->features = f;
	}
	if ((added & VIRTIO_STATUS_DRIVER_OK) &&
	    (!(next & VIRTIO_STATUS_FEATURES_OK) || (p->status & VIRTIO_STATUS_NEEDS_RESET)))
		next &= ~VIRTIO_STATUS_DRIVER_OK; /* no DRIVER_OK before FEATURES_OK */
	added = next & ~p->status;
	p->status = next;
	if (added & VIRTIO_STATUS_DRIVER_OK) {
		int r = d->ops->activate ? d->ops->activate(d) : 0;
		if (r < 0) {
			virtio_needs_reset(d, "activation failed");
			return;
		}
		vpci_queues_start(p);
	}
}

/* ---- common cfg ---- */

static struct virtio_queue *selected(struct virtio_pci *p)
{
	if (p->queue_sel >= p->dev->ops->num_queues)
		return NULL;
	return &p->dev->queues[p->queue_sel];
}

static uint64_t cc_field_read(struct virtio_pci *p, unsigned off)
{
	struct virtio_queue *q = selected(p);
	switch (off) {
	case CC_DFSELECT:
		return p->dfselect;
	case CC_DF:
		return p->dfselect < 2 ? (uint32_t)(p->offered >> (32 * p->dfselect)) : 0;
	case CC_GFSELECT:
		return p->gfselect;
	case CC_GF:
		return p->gfselect < 2 ? (uint32_t)(p->driver_features >> (32 * p->gfselect)) : 0;
	case CC_MSIX_CONFIG:
		return p->config_vector;
	case CC_NUM_QUEUES:
		return p->dev->ops->num_queues;
	case CC_STATUS:
		return p->status;
	case CC_GENERATION:
		return p->generation;
	case CC_Q_SELECT:
		return p->queue_sel;
	}
	if (!q)
		return off == CC_Q_MSIX ? VIRTIO_NO_VECTOR : 0; /* queue_size 0: no such queue */
	switch (off) {
	case CC_Q_SIZE:
		return q->size;
	case CC_Q_MSIX:
		return q->vector;
	case CC_Q_ENABLE:
		return q->enabled;
	case CC_Q_NOTIFY_OFF:
		return q->index; /* × notify_off_multiplier */
	case CC_Q_DESC:
		return q->desc_gpa;
	case CC_Q_DRIVER:
		return q->avail_gpa;
	case CC_Q_DEVICE:
		return q->used_gpa;
	}
	return 0; /* queue_notify_data, queue_reset (RING_RESET not offered) */
}

static void cc_field_write(struct virtio_pci *p, unsigned off, uint64_t v)
{
	struct virtio_queue *q = selected(p);
	switch (off) {
	case CC_DFSELECT:
		p->dfselect = (uint32_t)v;
		return;
	case CC_GFSELECT:
		p->gfselect = (uint32_t)v;
		return;
	case CC_GF:
		/* Features are frozen once FEATURES_OK is set. */
		if (p->status & VIRTIO_STATUS_FEATURES_OK)
			return;
		if (p->gfselect < 2) {
			unsigned sh = 32 * p->gfselect;
			p->driver_features = (p->driver_features & ~(0xffffffffull << sh)) |
			                     ((v & 0xffffffffull) << sh);
		} else if (v) {
			p->features_beyond_64 = true; /* never offered: FEATURES_OK fails */
		}
		return;
	case CC_MSIX_CONFIG:
		p->config_vector = v < p->nvec ? (uint16_t)v : VIRTIO_NO_VECTOR;
		return;
	case CC_STATUS:
		status_write(p, (uint8_t)v);
		return;
	case CC_Q_SELECT:
		p->queue_sel = (uint16_t)v;
		return;
	}
	if (!q)
		return;
	if (off == CC_Q_MSIX) {
		q->vector = v < p->nvec ? (uint16_t)v : VIRTIO_NO_VECTOR;
		return;
	}
	if (q->enabled)
		return; /* queue layout is frozen once enabled (no RING_RESET) */
	switch (off) {
	case CC_Q_SIZE:
		q->size = (uint16_t)v;
		return;
	case CC_Q_ENABLE:
		if (v == 1)
			vpci_queue_enable(p, q);
		return;
	case CC_Q_DESC:
		q->desc_gpa = v;
		return;
	case CC_Q_DRIVER:
		q->avail_gpa = v;
		return;
	case CC_Q_DEVICE:
		q->used_gpa = v;
		return;
	}
}

/* Bytes [off, off+len) of the common cfg structure. */
static uint64_t cc_read(struct virtio_pci *p, uint32_t off, unsigned len)
{
	uint8_t buf[VIRTIO_PCI_COMMON_LEN + 8] = {0};
	for (unsigned i = 0; i < sizeof(cc_fields) / sizeof(cc_fields[0]); i++)
		put_le(&buf[cc_fields[i].off], cc_fields[i].size,
		       cc_field_read(p, cc_fields[i].off));
	return get_le(&buf[off], len);
}

/* Merge the written bytes into each field they touch, then write that field. */
static void cc_write(struct virtio_pci *p, uint32_t off, unsigned len, uint64_t val)
{
	for (unsigned i = 0; i < sizeof(cc_fields) / sizeof(cc_fields[0]); i++) {
		unsigned fo = cc_fields[i].off, fs = cc_fields[i].size;
		if (fo + fs <= off || fo >= off + len)
			continue;
		uint8_t b[8];
		put_le(b, fs, cc_field_read(p, fo));
		for (unsigned k = 0; k < fs; k++)
			if (fo + k >= off && fo + k < off + len)
				b[k] = (uint8_t)(val >> (8 * (fo + k - off)));
		cc_field_write(p, fo, get_le(b, fs));
	}
}

/* ---- BAR 0 ---- */

uint64_t virtio_pci_bar_read(struct virtio_pci *p, uint32_t off, unsigned len)
{
	const struct virtio_device_ops *ops = p->dev->ops;
	if (off < VIRTIO_PCI_COMMON_OFF + VIRTIO_PCI_COMMON_LEN)
		return cc_read(p, off - VIRTIO_PCI_COMMON_OFF, len); /* may run past: zeros */
	if (off == VIRTIO_PCI_ISR_OFF) {
		uint8_t isr = p->isr; /* reading acknowledges (clears) it */
		p->isr = 0;
		return isr;
	}
	if (off >= VIRTIO_PCI_DEVCFG_OFF && off < VIRTIO_PCI_DEVCFG_OFF + ops->config_size) {
		uint32_t o = off - VIRTIO_PCI_DEVCFG_OFF;
		uint8_t buf[8] = {0};
		uint32_t n = ops->config_size - o < len ? ops->config_size - o : len;
		ops->config_read(p->dev, o, buf, n); /* bytes past the end read as zero */
		return get_le(buf, len);
	}
	if (off >= VIRTIO_PCI_MSIX_TABLE_OFF)
		return vpci_msix_read(p, off, len);
	return 0;
}

void virtio_pci_bar_write(struct virtio_pci *p, uint32_t off, unsigned len, uint64_t val)
{
	const struct virtio_device_ops *ops = p->dev->ops;
	if (off < VIRTIO_PCI_COMMON_OFF + VIRTIO_PCI_COMMON_LEN) {
		cc_write(p, off - VIRTIO_PCI_COMMON_OFF, len, val);
	} else if (off >= VIRTIO_PCI_DEVCFG_OFF && off < VIRTIO_PCI_DEVCFG_OFF + ops->config_size) {
		uint32_t o = off - VIRTIO_PCI_DEVCFG_OFF;
		uint8_t buf[8];
		uint32_t n = ops->config_size - o < len ? ops->config_size - o : len;
		put_le(buf, len, val);
		ops->config_write(p->dev, o, buf, n);
	} else if (off >= VIRTIO_PCI_NOTIFY_OFF &&
	           off < VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * ops->num_queues) {
		vpci_queue_notify(
		    p, (uint16_t)((off - VIRTIO_PCI_NOTIFY_OFF) / VIRTIO_PCI_NOTIFY_MULT));
	} else if (off >= VIRTIO_PCI_MSIX_TABLE_OFF) {
		vpci_msix_write(p, off, len, val);
	}
}

/* ---- PCI config space ---- */

/* The PCI_CFG capability's window: a BAR access the driver described in the capability. */
static bool window(struct virtio_pci *p, uint32_t *off, unsigned *len)
{
	const uint8_t *c = &p->cfg[p->cap_pcicfg];
	*off = (uint32_t)get_le(&c[8], 4);
	*len = (unsigned)get_le(&c[12], 4);
	return c[4] == VIRTIO_PCI_BAR && (*len == 1 || *len == 2 || *len == 4) &&
	       !(*off & (*len - 1)) && *off <= (uint32_t)VIRTIO_PCI_BAR_SIZE - *len;
}

uint32_t virtio_pci_cfg_read(struct virtio_pci *p, unsigned reg, unsigned len)
{
	uint32_t woff;
	unsigned wlen;
	if (reg == p->cap_pcicfg + 16u)
		put_le(&p->cfg[reg], 4,
		       window(p, &woff, &wlen) ? virtio_pci_bar_read(p, woff, wlen) : 0);
	return (uint32_t)get_le(&p->cfg[reg], len);
}

void virtio_pci_cfg_write(struct virtio_pci *p, unsigned reg, unsigned len, uint32_t val)
{
	uint16_t old_ctl = vpci_msix_ctl(p);
	for (unsigned i = 0; i < len; i++) {
		uint8_t m = p->wmask[reg + i];
		p->cfg[reg + i] = (uint8_t)((p->cfg[reg + i] & ~m) | ((val >> (8 * i)) & m));
	}
	uint32_t woff;
	unsigned wlen;
	if (reg == p->cap_pcicfg + 16u && window(p, &woff, &wlen))
		virtio_pci_bar_write(p, woff, wlen, val);
	uint16_t ctl = vpci_msix_ctl(p);
	if (ctl != old_ctl)
		for (uint16_t v = 0; v < p->nvec; v++)
			vpci_msix_update(p, v); /* enable or function mask changed */
}

void virtio_pci_shutdown(struct virtio_pci *p)
{
	/* The main process tears the VM down and may no longer serve the
	 * control socket: its ioeventfds go with it, so ask for nothing. */
	p->shutdown = true;
	device_reset(p);
	vpci_msix_close(p);
}

/* ---- device-facing API (virtio_device.h) ---- */

void virtio_config_changed(struct virtio_dev *d)
{
	struct virtio_pci *p = d->pci;
	p->generation++;
	p->isr |= VIRTIO_ISR_CONFIG;
	if (p->config_vector != VIRTIO_NO_VECTOR)
		vpci_msix_raise(p, p->config_vector);
}

void virtio_needs_reset(struct virtio_dev *d, const char *why)
{
	struct virtio_pci *p = d->pci;
	if (p->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	vpci_log(p, "device needs reset: %s", why);
	p->status |= VIRTIO_STATUS_NEEDS_RESET;
	/* virtio 1.2 §2.1.2: after DRIVER_OK the driver learns it from a config interrupt. */
	if (p->status & VIRTIO_STATUS_DRIVER_OK) {
		p->isr |= VIRTIO_ISR_CONFIG;
		if (p->config_vector != VIRTIO_NO_VECTOR)
			vpci_msix_raise(p, p->config_vector);
	}
}

void virtio_queue_signal(struct virtio_dev *d, struct virtio_queue *q)
{
	struct virtio_pci *p = d->pci;
	if (!virtq_should_signal(&q->vq))
		return;
	p->isr |= VIRTIO_ISR_QUEUE;
	if (q->vector != VIRTIO_NO_VECTOR)
		vpci_msix_raise(p, q->vector);
}
