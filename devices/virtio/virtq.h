/*
 * The split virtqueue (virtio 1.2 §2.7), device side. Owns every check on
 * guest-controlled ring contents: virtq_pop validates a whole descriptor
 * chain (copied once from guest RAM) before a device sees it, and devices
 * only ever get reader/writer cursors over the validated segments. Also
 * used-ring publication, EVENT_IDX notification suppression both ways, and
 * in-flight tracking of heads. Not thread-safe: one queue, one coroutine.
 */
#ifndef RINGVM_DEVICES_VIRTIO_VIRTQ_H
#define RINGVM_DEVICES_VIRTIO_VIRTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/guest_mem.h"

/* Largest queue any ringvm device offers; also the most segments one chain can have. */
#define VIRTQ_MAX_SIZE 256

/* Descriptor flags, ring flags and the ring feature bits (virtio 1.2 §2.7, §6). */
#define VIRTQ_DESC_F_NEXT          1
#define VIRTQ_DESC_F_WRITE         2
#define VIRTQ_DESC_F_INDIRECT      4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY     1
#define VIRTIO_F_INDIRECT_DESC     28
#define VIRTIO_F_EVENT_IDX         29

/* The guest's descriptor layout (little-endian in guest RAM). */
struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc layout");

/*
 * A validated chain: host pointers into guest RAM, device-readable segments
 * first ([0, nread)), then device-writable ones ([nread, nread + nwrite)).
 * Zero-length descriptors are validated for order but not stored.
 */
struct virtq_chain {
	uint16_t head;      /* what virtq_push gives back to the driver */
	uint16_t nread;     /* readable segments */
	uint16_t nwrite;    /* writable segments */
	uint32_t read_len;  /* bytes readable (sum; ≤ UINT32_MAX with write_len) */
	uint32_t write_len; /* bytes writable */
	struct iovec seg[VIRTQ_MAX_SIZE];
};

struct virtq {
	const struct guest_mem *mem;
	uint16_t size;  /* entries; 0 while not initialised */
	bool event_idx; /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;  /* VIRTIO_F_INDIRECT_DESC negotiated */
	bool broken;    /* a fatal error was seen: nothing more is popped or published */
	uint8_t *desc;  /* host pointers to the three rings, validated at init */
	uint8_t *avail;
	uint8_t *used;
	uint16_t last_avail; /* free-running index of the next avail entry to pop */
	uint16_t used_idx;   /* free-running used index (the device's copy of used->idx) */
	uint16_t signalled;  /* used_idx when the driver was last notified (or init) */
	uint16_t inflight;   /* popped, not yet pushed */
	uint64_t inflight_map[VIRTQ_MAX_SIZE / 64]; /* heads popped and not yet pushed */
};

/*
 * Validate and set up a queue the driver has just enabled: size a power of
 * two in [1, VIRTQ_MAX_SIZE]; descriptor table (16-byte aligned, 16·size
 * bytes), avail ring (2-aligned, 6 + 2·size) and used ring (4-aligned,
 * 6 + 8·size) each entirely inside one RAM region. features is the
 * negotiated feature set (EVENT_IDX and INDIRECT_DESC are looked at).
 * Indices start at 0. 0, or -EINVAL (size, alignment) / -EFAULT (not in RAM)
 * leaving q unusable (size 0).
 */
int virtq_init(struct virtq *q, const struct guest_mem *mem, uint16_t size, uint64_t desc_gpa,
               uint64_t avail_gpa, uint64_t used_gpa, uint64_t features)
    __attribute__((warn_unused_result));

/*
 * Take the next available chain into *c, fully validated. Returns 1 with a
 * chain, 0 when the ring is empty (with EVENT_IDX, avail_event has then been
 * set so the driver kicks for the next entry, and the ring re-checked), or a
 * fatal error that also marks the queue broken (the caller sets
 * DEVICE_NEEDS_RESET); every later call returns -EIO:
 *  -EPROTO    avail->idx more than size entries ahead of the last popped one
 *  -ERANGE    a head or a `next` outside its table
 *  -EALREADY  a head that is already in flight
 *  -ELOOP     more than size buffer descriptors (loops end here)
 *  -EFAULT    a buffer or an indirect table not entirely inside RAM
 *  -EOVERFLOW the chain's total length exceeds UINT32_MAX
 *  -EINVAL    readable after writable, or an indirect descriptor that is not
 *             negotiated, has NEXT, is nested, is empty, not a multiple of 16
 *             or has more than size entries
 * Every descriptor is copied from guest RAM once; checks and the chain use
 * only that copy.
 */
int virtq_pop(struct virtq *q, struct virtq_chain *c) __attribute__((warn_unused_result));

/*
 * Give chain c back to the driver with len bytes written (clamped to
 * c->write_len) and publish the used index. Data written to the chain's
 * buffers before this call is visible to the driver before the entry is.
 * 0, -EINVAL if c->head is not in flight (a device bug), -EIO on a broken
 * queue (the head is released but nothing is published).
 */
int virtq_push(struct virtq *q, const struct virtq_chain *c, uint32_t len);

/*
 * virtq_push with 0 bytes written, by head alone: for a chain the device
 * only read (TX), so the 4 KiB chain need not be kept while its I/O runs.
 * Same results as virtq_push.
 */
int virtq_push_read(struct virtq *q, uint16_t head);

/*
 * Whether the driver wants an interrupt for what was pushed since the last
 * time this returned true: used_event with EVENT_IDX, otherwise the avail
 * ring's NO_INTERRUPT flag. Call once per batch of pushes.
 */
bool virtq_should_signal(struct virtq *q) __attribute__((warn_unused_result));

/* Chains popped and not yet pushed. */
static inline unsigned virtq_inflight(const struct virtq *q)
{
	return q->inflight;
}

/* Whether a fatal error has been seen (the device must be reset). */
static inline bool virtq_broken(const struct virtq *q)
{
	return q->broken;
}

/* ---- cursors: the only way devices touch a chain's buffers ---- */

struct virtq_cursor {
	const struct iovec *seg; /* the chain's segments of one direction */
	unsigned nseg;
	unsigned i;  /* current segment */
	size_t off;  /* offset in it */
	size_t left; /* bytes left in the whole direction */
	size_t done; /* bytes consumed so far */
};
struct virtq_reader {
	struct virtq_cursor cur;
};
struct virtq_writer {
	struct virtq_cursor cur;
};

/* Cursors over the readable / writable part of c (c must outlive them). */
void virtq_reader_init(struct virtq_reader *r, const struct virtq_chain *c);
void virtq_writer_init(struct virtq_writer *w, const struct virtq_chain *c);

/* Copy up to n bytes out of the chain / into it; returns the bytes copied. */
size_t virtq_reader_read(struct virtq_reader *r, void *buf, size_t n);
size_t virtq_writer_write(struct virtq_writer *w, const void *buf, size_t n);

/* Bytes not yet consumed. */
static inline size_t virtq_reader_remaining(const struct virtq_reader *r)
{
	return r->cur.left;
}
static inline size_t virtq_writer_remaining(const struct virtq_writer *w)
{
	return w->cur.left;
}
/* Bytes written so far (what virtq_push should report). */
static inline size_t virtq_writer_written(const struct virtq_writer *w)
{
	return w->cur.done;
}

/*
 * Describe the next (at most) n bytes as at most max iovecs for readv/writev
 * without consuming them; returns the iovec count and the bytes in *bytes.
 * After the I/O, consume what it really transferred with *_advance.
 */
unsigned virtq_reader_iov(const struct virtq_reader *r, struct iovec *iov, unsigned max, size_t n,
                          size_t *bytes);
unsigned virtq_writer_iov(const struct virtq_writer *w, struct iovec *iov, unsigned max, size_t n,
                          size_t *bytes);
/* Consume n bytes (clamped to what remains); returns the bytes consumed. */
size_t virtq_reader_advance(struct virtq_reader *r, size_t n);
size_t virtq_writer_advance(struct virtq_writer *w, size_t n);

#endif
