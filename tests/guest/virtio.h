/*
 * The probe's virtio-pci (modern, virtio 1.x) driver core: finds a device on
 * bus 0, maps its vendor capabilities and MSI-X table, negotiates features,
 * sets up split virtqueues in probe memory and completes requests through a
 * per-queue MSI-X vector. Deliberately low level — the hostile tests build
 * malformed rings with the same calls — and cheap: every config-space value
 * that is read once is cached (a config access costs ~30 µs on PVM hosts).
 */
#ifndef PROBE_VIRTIO_H
#define PROBE_VIRTIO_H

#include "probe.h"

#define VIRTIO_PCI_VENDOR    0x1af4
#define VIRTIO_PCI_DEVICE(x) (0x1040 + (x)) /* modern (non-transitional) device ids */
#define VIRTIO_ID_BLOCK      2
#define VIRTIO_ID_RNG        4

/* Feature bits. */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1     32
#define VIRTIO_F_RING_PACKED   34
#define VIRTIO_BIT(b)          (1ull << (b))

/* Device status bits. */
#define VIRTIO_S_ACKNOWLEDGE 0x01
#define VIRTIO_S_DRIVER      0x02
#define VIRTIO_S_DRIVER_OK   0x04
#define VIRTIO_S_FEATURES_OK 0x08
#define VIRTIO_S_NEEDS_RESET 0x40
#define VIRTIO_S_FAILED      0x80

/* struct virtio_pci_common_cfg, field offsets. */
#define VIRTIO_C_DFSELECT    0x00 /* le32 device_feature_select */
#define VIRTIO_C_DF          0x04 /* le32 device_feature */
#define VIRTIO_C_GFSELECT    0x08 /* le32 driver_feature_select */
#define VIRTIO_C_GF          0x0c /* le32 driver_feature */
#define VIRTIO_C_MSIX        0x10 /* le16 config_msix_vector */
#define VIRTIO_C_NUMQ        0x12 /* le16 num_queues */
#define VIRTIO_C_STATUS      0x14 /* u8 device_status */
#define VIRTIO_C_CFGGEN      0x15 /* u8 config_generation */
#define VIRTIO_C_Q_SELECT    0x16 /* le16 queue_select */
#define VIRTIO_C_Q_SIZE      0x18 /* le16 queue_size */
#define VIRTIO_C_Q_MSIX      0x1a /* le16 queue_msix_vector */
#define VIRTIO_C_Q_ENABLE    0x1c /* le16 queue_enable */
#define VIRTIO_C_Q_NOFF      0x1e /* le16 queue_notify_off */
#define VIRTIO_C_Q_DESCLO    0x20 /* le64 queue_desc, as two le32 */
#define VIRTIO_C_Q_DESCHI    0x24
#define VIRTIO_C_Q_AVAILLO   0x28 /* le64 queue_driver */
#define VIRTIO_C_Q_AVAILHI   0x2c
#define VIRTIO_C_Q_USEDLO    0x30 /* le64 queue_device */
#define VIRTIO_C_Q_USEDHI    0x34
#define VIRTIO_C_SIZE        0x38 /* virtio 1.1 layout; 1.2 adds two le16 fields */
#define VIRTIO_MSI_NO_VECTOR 0xffff

/* Split-ring descriptor flags. */
#define VIRTQ_DESC_F_NEXT      1
#define VIRTQ_DESC_F_WRITE     2
#define VIRTQ_DESC_F_INDIRECT  4
#define VIRTQ_USED_F_NO_NOTIFY 1

/* Largest queue the probe drives (bigger devices are asked for this size). */
#define VIRTQ_MAX         256
#define VIRTIO_MAX_QUEUES 4

/*
 * IDT vectors: the n-th virtio function found on the bus (scan order) gets
 * VIRTIO_VEC_STRIDE vectors from VIRTIO_VEC_CONFIG + n * VIRTIO_VEC_STRIDE:
 * MSI-X entry 0 (config changes) on the first, entry 1 + q (queue q) on the
 * next. The constants below are those of the first function.
 */
#define VIRTIO_VEC_CONFIG 0x50
#define VIRTIO_VEC_QUEUE0 0x51
#define VIRTIO_VEC_STRIDE 8
_Static_assert(1 + VIRTIO_MAX_QUEUES <= VIRTIO_VEC_STRIDE, "vectors per function");

/* Ring memory of one queue (descriptors, avail, used, spare indirect table), 4 KiB aligned. */
#define VIRTQ_MEM_SIZE 16384

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[]; /* ring[size] is used_event (EVENT_IDX) */
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[]; /* followed by le16 avail_event (EVENT_IDX) */
};

/* One virtio-pci function, its regions (MMIO addresses, 0 when absent) and cached facts. */
struct virtio_dev {
	unsigned slot, fn; /* on bus 0 */
	uint16_t device_id;
	bool ready; /* capabilities parsed, BARs live, MSI-X programmed */
	unsigned vec_base; /* IDT vector of MSI-X entry 0; entry e is vec_base + e */
	uint64_t common, notify, isr, device;
	uint32_t common_len, notify_len, isr_len, device_len;
	uint32_t notify_mult;
	unsigned msix_cap;   /* config offset of the MSI-X capability */
	unsigned msix_size;  /* table entries */
	uint64_t msix_table; /* MMIO address */
	unsigned bars_used;  /* bitmask of BARs the capabilities point into */
	uint64_t bar_addr[6];
	uint64_t offered; /* device features */
	uint16_t num_queues;
	uint16_t qmax[VIRTIO_MAX_QUEUES]; /* queue_size as the device offers it */
	uint16_t qnotify_off[VIRTIO_MAX_QUEUES];
};

struct virtq {
	struct virtio_dev *dev;
	uint16_t index, size;
	struct virtq_desc *desc;
	volatile struct virtq_avail *avail;
	volatile struct virtq_used *used;
	struct virtq_desc *indirect; /* a spare VIRTQ_MAX-entry table for indirect chains */
	uint16_t avail_idx;          /* next avail index (published or not) */
	uint16_t kicked_idx;         /* avail index at the last notification decision */
	uint16_t last_used;          /* used entries consumed */
	uint16_t msix_entry;
	bool event_idx;
	bool always_notify; /* virtq_kick() ignores the device's suppression (hostile follow-ups) */
	uint64_t notify_addr;
	uint32_t foreign;       /* used entries virtq_request() skipped (not its head) */
	uint32_t cfg_irqs_seen; /* config interrupts already looked at (NEEDS_RESET check) */
	uint32_t irqs_seen;     /* queue interrupts already accounted to a completion */
	uint32_t missed_irqs;   /* completions virtq_wait() saw without their interrupt */
};

struct virtq_buf {
	uint64_t addr;
	uint32_t len;
	bool write; /* device-writable */
};

/* The EVENT_IDX words: used_event (driver → device) and avail_event (device → driver). */
static inline volatile uint16_t *virtq_used_event(const struct virtq *vq)
{
	return (volatile uint16_t *)((volatile uint8_t *)vq->avail + 4 + 2u * vq->size);
}
static inline volatile uint16_t *virtq_avail_event(const struct virtq *vq)
{
	return (volatile uint16_t *)((volatile uint8_t *)vq->used + 4 + 8u * vq->size);
}

/* virtq_wait()/virtq_request() results. */
#define VQ_USED        0
#define VQ_TIMEOUT     1
#define VQ_NEEDS_RESET 2

/* ---- device access ---- */
static inline uint8_t virtio_c_read8(const struct virtio_dev *d, unsigned off)
{
	return mmio_read8(d->common + off);
}
static inline uint16_t virtio_c_read16(const struct virtio_dev *d, unsigned off)
{
	return mmio_read16(d->common + off);
}
static inline uint32_t virtio_c_read32(const struct virtio_dev *d, unsigned off)
{
	return mmio_read32(d->common + off);
}
static inline void virtio_c_write8(const struct virtio_dev *d, unsigned off, uint8_t v)
{
	mmio_write8(d->common + off, v);
}
static inline void virtio_c_write16(const struct virtio_dev *d, unsigned off, uint16_t v)
{
	mmio_write16(d->common + off, v);
}
static inline void virtio_c_write32(const struct virtio_dev *d, unsigned off, uint32_t v)
{
	mmio_write32(d->common + off, v);
}
static inline uint8_t virtio_get_status(const struct virtio_dev *d)
{
	return virtio_c_read8(d, VIRTIO_C_STATUS);
}
static inline void virtio_set_status(const struct virtio_dev *d, uint8_t s)
{
	virtio_c_write8(d, VIRTIO_C_STATUS, s);
}
/* A full fence (store→load order for EVENT_IDX); mfence is SSE2, lock add is not. */
static inline void virtio_mb(void)
{
	__asm__ volatile("lock addl $0, (%%rsp)" ::: "memory", "cc");
}

/*
 * Finds the first modern virtio-pci function on bus 0 for device_id (scanned
 * once, cached) and readies it: capabilities parsed, BARs used as programmed
 * (assigned only where 0), memory decoding + bus mastering on, INTx off, the
 * MSI-X table pointed at this CPU's LAPIC with vectors VIRTIO_VEC_* and MSI-X
 * enabled, offered features and queue limits cached. Returns NULL with *why
 * set (one word) when there is no such device or it cannot be driven.
 */
struct virtio_dev *virtio_open(uint16_t device_id, const char **why);
/* The same for the n-th (0-based, bus order) function of device_id: "no-device" past the last. */
struct virtio_dev *virtio_open_nth(uint16_t device_id, unsigned n, const char **why);
/* How many modern functions of device_id are on bus 0 (scans once, readies none). */
unsigned virtio_count(uint16_t device_id);

/* Writes status 0 and polls (bounded, 100 ms) until it reads 0. */
bool virtio_reset(struct virtio_dev *d) __attribute__((warn_unused_result));
/* Writes the 64-bit driver_feature (select 0 then 1). */
void virtio_write_features(struct virtio_dev *d, uint64_t features);
uint64_t virtio_read_driver_features(struct virtio_dev *d);
/*
 * reset → ACKNOWLEDGE → DRIVER (config vector = MSI-X entry 0) → features
 * exactly as given (even unoffered ones) → FEATURES_OK. True when FEATURES_OK
 * reads back set.
 */
bool virtio_negotiate(struct virtio_dev *d, uint64_t features) __attribute__((warn_unused_result));
/*
 * Configures queue `index`: size (0 = the device's, capped to VIRTQ_MAX),
 * the rings in probe memory (headers zeroed), its MSI-X entry (checked to
 * stick), and queue_enable when enable. vq->event_idx follows `features`.
 * Returns NULL or a one-word reason.
 */
const char *virtq_setup(struct virtio_dev *d, struct virtq *vq, uint16_t index, uint16_t size,
                        uint64_t features, bool enable) __attribute__((warn_unused_result));
/*
 * virtq_setup() with the rings in mem (VIRTQ_MEM_SIZE bytes, 4 KiB aligned,
 * owned by the caller) instead of the core's per-index ring memory: for
 * drivers that keep queues of several devices live at once (blk.copy).
 */
const char *virtq_setup_mem(struct virtio_dev *d, struct virtq *vq, uint16_t index, uint16_t size,
                            uint64_t features, bool enable, void *mem)
    __attribute__((warn_unused_result));
/* negotiate(features) + virtq_setup(queue 0, qsize, enabled) + DRIVER_OK. NULL or a reason. */
const char *virtio_start(struct virtio_dev *d, struct virtq *vq, uint64_t features, uint16_t qsize)
    __attribute__((warn_unused_result));

/* ---- split ring ---- */
static inline void virtq_desc_set(struct virtq_desc *t, unsigned i, uint64_t addr, uint32_t len,
                                  uint16_t flags, uint16_t next)
{
	t[i] = (struct virtq_desc){addr, len, flags, next};
}
/* Puts head in the next avail slot (not yet visible to the device). */
void virtq_push(struct virtq *vq, uint16_t head);
/* Makes the pushed heads visible: used_event (EVENT_IDX), then avail->idx. */
void virtq_publish(struct virtq *vq);
/* Notifies when the device asked for it (avail_event or NO_NOTIFY); true if it did. */
bool virtq_kick(struct virtq *vq);
/* Notifies unconditionally (write of the queue index to its notify address). */
void virtq_notify(struct virtq *vq);
/*
 * Waits (HLT, woken by the queue's MSI-X vector, bounded by a LAPIC one-shot
 * timer) until the used index moved past what was consumed and a queue
 * interrupt arrived since the last publish/completion: VQ_USED; VQ_TIMEOUT;
 * or VQ_NEEDS_RESET when a config interrupt came and the status has
 * DEVICE_NEEDS_RESET. A completion whose interrupt never came is returned as
 * VQ_USED at the deadline and counted in vq->missed_irqs.
 */
int virtq_wait(struct virtq *vq, uint64_t timeout_us);
/* Consumes one used entry; false when there is none. */
bool virtq_pop_used(struct virtq *vq, uint32_t *id, uint32_t *len);
/* Marks every used entry the device published as consumed; returns how many. */
unsigned virtq_drain_used(struct virtq *vq);
/*
 * Submits one chain of n buffers starting at descriptor `first` (direct:
 * descriptors first..first+n-1; indirect: one descriptor at first pointing at
 * vq->indirect), kicks, and waits for that head's completion (used entries
 * for other heads are skipped and counted in vq->foreign). Returns VQ_USED
 * with *len set, or VQ_TIMEOUT / VQ_NEEDS_RESET.
 */
int virtq_request(struct virtq *vq, uint16_t first, const struct virtq_buf *b, unsigned n,
                  bool indirect, uint64_t timeout_us, uint32_t *len);

/*
 * One well-formed virtio-rng request: 64 device-writable bytes at descriptor
 * `first`, completed within timeout_us with 0 < len <= 64 and not all zero.
 * NULL when it was, else what went wrong: timeout, needs-reset, len0,
 * len-too-big, zero-bytes.
 */
const char *virtio_rng_read_ok(struct virtq *vq, uint16_t first, uint64_t timeout_us);

/* Interrupts taken on an IDT vector since boot. */
uint32_t virtio_irqs(unsigned vector);
static inline unsigned virtq_vector(const struct virtq *vq)
{
	/* A queue never set up (dev NULL) reads as the first function's. */
	return (vq->dev ? vq->dev->vec_base : VIRTIO_VEC_CONFIG) + vq->msix_entry;
}
/* The IDT vector of a function's config-change interrupt (MSI-X entry 0). */
static inline unsigned virtio_cfg_vector(const struct virtio_dev *d)
{
	return d->vec_base;
}

/* Probe memory for DMA buffers: 64 KiB, page aligned, never zeroed as a whole. */
#define VIRTIO_DMA_SIZE 65536
extern uint8_t virtio_dma[VIRTIO_DMA_SIZE];
/* The end of the highest RAM range in the memory map. */
uint64_t virtio_ram_top(void);

#endif
