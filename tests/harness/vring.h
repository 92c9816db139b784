/*
 * Driver side of a split virtqueue, for tests, fuzzers and benchmarks: lays
 * out the three rings in guest RAM, builds direct and indirect chains, and
 * reads the used ring. Raw writers let a test build any malformed chain
 * (loops, bad indices, bad addresses, bad flags) the device must survive.
 */
#ifndef RINGVM_TESTS_HARNESS_VRING_H
#define RINGVM_TESTS_HARNESS_VRING_H

#include <stdbool.h>
#include <stdint.h>

#include "core/guest_mem.h"
#include "devices/virtio/virtq.h"

struct vring {
	const struct guest_mem *mem;
	uint16_t size;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint8_t *desc, *avail, *used; /* host pointers */
	uint16_t avail_idx;           /* next avail index the driver publishes */
	uint16_t last_used;           /* next used entry to consume */
	/* Descriptor allocation (driver bookkeeping, never read by the device). */
	uint16_t free_head, nfree;
	uint16_t next_free[VIRTQ_MAX_SIZE];
	uint16_t chain_len[VIRTQ_MAX_SIZE]; /* by head: descriptors to free */
	uint16_t chain_next[VIRTQ_MAX_SIZE];
};

/* One buffer of a chain. */
struct vring_buf {
	uint64_t gpa;
	uint32_t len;
	bool write; /* device-writable */
};

/* Bytes the three rings take at their natural alignment (desc, avail, used), page-rounded. */
uint64_t vring_bytes(uint16_t size);

/*
 * Lay out rings of size entries from base_gpa (4 KiB aligned: desc, then
 * avail, then used 4-aligned) and zero them. 0 or -EFAULT when not in RAM.
 */
int vring_init(struct vring *r, const struct guest_mem *mem, uint16_t size, uint64_t base_gpa);

/*
 * Build a direct chain from free descriptors and publish it. Returns the
 * head, or -ENOSPC.
 */
int vring_add(struct vring *r, const struct vring_buf *bufs, unsigned n);

/*
 * Build an indirect chain: the n buffers go into a table written at
 * table_gpa, one free descriptor points at it. Returns the head or -errno.
 */
int vring_add_indirect(struct vring *r, const struct vring_buf *bufs, unsigned n,
                       uint64_t table_gpa);

/* Take the next used entry: 1 with its id and len, 0 when none. Frees the chain's descriptors. */
int vring_get_used(struct vring *r, uint32_t *id, uint32_t *len);

/* Used entries not yet taken. */
uint16_t vring_used_pending(const struct vring *r);

/* ---- raw access for hostile tests ---- */

/* Write descriptor i of the ring's table (no bookkeeping). */
void vring_write_desc(struct vring *r, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                      uint16_t next);
/* Write entry i of a table anywhere in guest RAM (indirect tables). */
void vring_write_table(const struct guest_mem *mem, uint64_t table_gpa, uint16_t i, uint64_t addr,
                       uint32_t len, uint16_t flags, uint16_t next);
/* Put head into the next avail slot and publish avail_idx + 1 (no bookkeeping). */
void vring_publish_raw(struct vring *r, uint16_t head);
/* Store any avail index (e.g. a jump past size). */
void vring_set_avail_idx(struct vring *r, uint16_t idx);
/* avail->flags, avail->used_event, used->avail_event, used->idx. */
void vring_set_avail_flags(struct vring *r, uint16_t flags);
void vring_set_used_event(struct vring *r, uint16_t v);
uint16_t vring_avail_event(const struct vring *r);
uint16_t vring_used_idx(const struct vring *r);

/* Host pointer for a guest range (asserts nothing: NULL when outside RAM). */
static inline void *vring_host(const struct vring *r, uint64_t gpa, uint64_t len)
{
	return guest_mem_ptr(r->mem, gpa, len);
}

#endif
