/*
 * The probe's virtio-blk driver layer on top of the virtio core: reads the
 * device config, negotiates features, sets up one or more request queues
 * (one MSI-X vector each) and keeps many requests in flight per queue.
 *
 * Memory: each open disk owns a static pool entry in probe memory (rings,
 * per-request header + status byte + indirect table). Data buffers come from
 * guest RAM above the probe image (blk_ram_alloc), found in the PVH memory
 * map: large requests (blk.copy's 1 MiB chunks) are never copied or touched
 * by the guest. All guest-side work is kept tiny: every instruction costs
 * about a microsecond on the project's hosts.
 */
#ifndef PROBE_BLK_H
#define PROBE_BLK_H

#include "virtio.h"

/* virtio-blk feature bits. */
#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_GEOMETRY     4
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_CONFIG_WCE   11
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status values. */
#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_GET_LIFETIME 10
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_T_SECURE_ERASE 14
#define VIRTIO_BLK_S_OK           0
#define VIRTIO_BLK_S_IOERR        1
#define VIRTIO_BLK_S_UNSUPP       2
#define VIRTIO_BLK_ID_BYTES       20
#define VIRTIO_BLK_WZ_F_UNMAP     1

/* Status byte value the driver stores before submitting: still there = never written. */
#define BLK_STATUS_UNTOUCHED 0xee

#define BLK_SECTOR      512u
#define BLK_MAX_QUEUES  VIRTIO_MAX_QUEUES
#define BLK_MAX_SLOTS   128 /* requests in flight per queue */
#define BLK_MAX_SEGS    30  /* data segments per request (indirect table of 32) */
#define BLK_MAX_OPEN    2   /* disks open at once (blk.copy: source and target) */
#define BLK_SLOT_NONE   0xffff

struct blk_req_hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};

/* DISCARD / WRITE_ZEROES segment. */
struct blk_dwz_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

/* The device config as read at open (fields of features not offered read as 0). */
struct blk_config {
	uint64_t capacity; /* 512-byte sectors */
	uint32_t size_max, seg_max, blk_size;
	uint16_t num_queues;
	uint8_t writeback;
	uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
	uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
};

/* Per-request memory the device reads or writes, in probe memory. */
struct blk_slot_mem {
	struct blk_req_hdr hdr;
	uint8_t status;
	uint8_t pad[15];
};

struct blk_slot {
	uint64_t user;     /* caller's cookie */
	uint64_t t_submit; /* TSC at submit */
	bool busy;
	bool tmpl; /* the slot's descriptors hold a one-segment chain: only data is rewritten */
};

struct blk_dev;

struct blk_queue {
	struct virtq vq;
	struct blk_dev *dev;
	unsigned index;
	uint16_t nslots;          /* requests that fit in flight */
	uint16_t qmask;           /* size - 1 when the size is a power of two, else 0 */
	uint16_t per_slot;        /* ring descriptors reserved per slot (1 with indirect) */
	uint16_t inflight;
	uint16_t free[BLK_MAX_SLOTS]; /* stack of free slot numbers */
	uint16_t nfree;
	struct blk_slot slot[BLK_MAX_SLOTS];
	struct blk_slot_mem *mem;    /* [BLK_MAX_SLOTS] */
	struct virtq_desc *tables;   /* [BLK_MAX_SLOTS][BLK_MAX_SEGS + 2] indirect tables */
	uint32_t irqs_seen;          /* queue interrupts accounted for by blk_wait() */
	uint32_t missed_irqs;        /* completions blk_wait() found only through its timer */
	uint32_t foreign;            /* used entries that matched no busy slot */
	uint64_t kicks;              /* notifications sent */
};

struct blk_dev {
	struct virtio_dev *vd;
	unsigned disk;   /* n-th virtio-blk function on the bus */
	unsigned pool;   /* static memory pool entry */
	uint64_t feats;  /* negotiated */
	struct blk_config cfg;
	bool indirect;   /* requests use indirect tables */
	unsigned max_segs;
	unsigned nq;
	struct blk_queue q[BLK_MAX_QUEUES];
};

/* Options for blk_open(); zero means "the default". */
struct blk_open_opts {
	unsigned queues;    /* queues to set up (default 1; capped to what the device has) */
	unsigned max_slots; /* in flight per queue (default and cap BLK_MAX_SLOTS) */
	unsigned max_segs;  /* data segments per request (default 4, cap BLK_MAX_SEGS) */
	bool no_indirect;   /* do not negotiate INDIRECT_DESC */
	bool no_event_idx;  /* do not negotiate EVENT_IDX */
	uint16_t qsize;     /* queue size asked for (default the device's, ≤ 256) */
};

/* Number of virtio-blk functions on bus 0. */
unsigned blk_count(void);
/*
 * Opens disk `disk` (n-th virtio-blk function): reads the config, negotiates
 * VERSION_1 plus whatever of EVENT_IDX, INDIRECT_DESC, FLUSH, RO, MQ, DISCARD,
 * WRITE_ZEROES, BLK_SIZE, SEG_MAX, SIZE_MAX the device offers, sets up the
 * queues and sets DRIVER_OK. NULL with *why set (one word) on failure.
 */
struct blk_dev *blk_open(unsigned disk, const struct blk_open_opts *o, const char **why);
/* Resets the device and releases its pool entry. */
void blk_close(struct blk_dev *b);
/* Reset + the same negotiation and queues again (after NEEDS_RESET). NULL or a reason. */
const char *blk_restart(struct blk_dev *b);
/* The config as the driver sees it now (features decide which fields are valid). */
void blk_read_config(struct blk_dev *b, struct blk_config *c);
/* Prints `PROBE <test>.dev disk=N dev=.. offered=.. features=.. capacity=.. ...`. */
void blk_print_dev(const char *test, const struct blk_dev *b);

static inline bool blk_has(const struct blk_dev *b, unsigned feature)
{
	return b->feats & VIRTIO_BIT(feature);
}
/* Largest data length of one request: seg_max × size_max (each when negotiated), ≤ 4 GiB − 512. */
uint64_t blk_max_transfer(const struct blk_dev *b);

struct blk_seg {
	uint64_t addr;
	uint32_t len;
};

/*
 * Cuts the contiguous buffer [addr, addr + len) into segments of at most
 * size_max bytes (when negotiated; else one segment). Returns how many, or 0
 * when more than max would be needed (or the open's max_segs / seg_max).
 */
unsigned blk_split(const struct blk_dev *b, uint64_t addr, uint64_t len, struct blk_seg *segs,
                   unsigned max);

/*
 * Queues one request: header (type, sector), nseg data buffers (device-
 * writable when dev_writes, e.g. IN and GET_ID) and the status byte (set to
 * BLK_STATUS_UNTOUCHED first). The chain is made visible to the device but
 * not kicked. Returns the slot, or -1 when the queue is full or nseg is over
 * the open's max_segs.
 */
int blk_submit(struct blk_queue *q, uint32_t type, uint64_t sector, const struct blk_seg *segs,
               unsigned nseg, bool dev_writes, uint64_t user);
/* Notifies the device if it asked for it (EVENT_IDX / NO_NOTIFY). */
void blk_kick(struct blk_queue *q);

struct blk_done {
	int slot;
	uint64_t user;
	uint8_t status;
	uint32_t len;      /* used length */
	uint64_t t_submit; /* TSC */
};
/*
 * Takes one completion off the used ring: true with *d filled (the slot is
 * free again), false when there is none. Used entries that match no busy
 * slot are skipped and counted in q->foreign.
 */
bool blk_reap(struct blk_queue *q, struct blk_done *d);

/*
 * Waits until one of the n queues has a completion pending: VQ_USED; or
 * VQ_NEEDS_RESET (a config interrupt with DEVICE_NEEDS_RESET, or the status
 * has it at the deadline); or VQ_TIMEOUT at TSC deadline. With poll, spins on
 * the used indexes; otherwise HLTs, woken by the queues' MSI-X interrupts and
 * a LAPIC one-shot (≤ 10 ms, re-armed as needed; blk_timer_stop() ends it).
 */
int blk_wait(struct blk_queue *const *qs, unsigned n, uint64_t deadline, bool poll);
void blk_timer_stop(void);

/*
 * One request, waited for: submit + kick + wait for that slot (other
 * completions on the queue are dropped: use on an idle queue). VQ_USED with
 * *status and *len (may be NULL), VQ_TIMEOUT or VQ_NEEDS_RESET.
 */
int blk_sync(struct blk_queue *q, uint32_t type, uint64_t sector, const struct blk_seg *segs,
             unsigned nseg, bool dev_writes, uint64_t timeout_us, uint8_t *status,
             uint32_t *len);

/* ---- guest RAM above the probe for data buffers ---- */
/*
 * The RAM range used for data: from 8 MiB (the probe image stays below it)
 * to the end of the memory-map RAM entry holding 8 MiB. Size 0 when there is
 * no such entry.
 */
uint64_t blk_ram_base(void);
uint64_t blk_ram_size(void);
/* Bump allocation in that range (aligned); 0 when it does not fit. */
uint64_t blk_ram_alloc(uint64_t size, uint64_t align);
/* Frees everything blk_ram_alloc() handed out (each test starts with this). */
void blk_ram_reset(void);

/* Fills n 8-byte words at p with v (rep stosq: ~68 ms per MiB here). */
static inline void blk_fill64(void *p, uint64_t v, size_t n)
{
	__asm__ volatile("rep stosq" : "+D"(p), "+c"(n) : "a"(v) : "memory");
}

/* A tiny PRNG (xorshift64*): state must not be 0. */
static inline uint64_t blk_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* A status byte as a word: ok, ioerr, unsupp, untouched, or NULL for another value. */
const char *blk_status_word(uint8_t s);

/* Is name in the comma-separated list? */
bool blk_listed(const char *list, const char *name);

/* The interrupts taken on q's vector once pending and in-flight ones have had
 * up to 200 ms to arrive (returns early when at least want were taken). */
uint32_t blk_irqs_settled(struct blk_queue *q, uint32_t want);

#endif
