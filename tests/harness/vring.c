/*
 * Driver-side split ring for the host-side harness (see vring.h). Plays by
 * the driver's rules of virtio 1.2 §2.7.13: descriptors and the avail entry
 * before the index (release), used entries read after the used index
 * (acquire).
 */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "tests/harness/vring.h"

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

uint64_t vring_bytes(uint16_t size)
{
	uint64_t avail = 16ull * size;
	uint64_t used = align_up(avail + 6 + 2ull * size, 4);
	return align_up(used + 6 + 8ull * size, 4096);
}

int vring_init(struct vring *r, const struct guest_mem *mem, uint16_t size, uint64_t base_gpa)
{
	memset(r, 0, sizeof(*r));
	if (size == 0 || size > VIRTQ_MAX_SIZE)
		return -EINVAL;
	uint8_t *base = guest_mem_ptr(mem, base_gpa, vring_bytes(size));
	if (!base)
		return -EFAULT;
	memset(base, 0, vring_bytes(size));
	r->mem = mem;
	r->size = size;
	r->desc_gpa = base_gpa;
	r->avail_gpa = base_gpa + 16ull * size;
	r->used_gpa = align_up(r->avail_gpa + 6 + 2ull * size, 4);
	r->desc = base;
	r->avail = base + (r->avail_gpa - base_gpa);
	r->used = base + (r->used_gpa - base_gpa);
	for (uint16_t i = 0; i < size; i++)
		r->next_free[i] = (uint16_t)(i + 1);
	r->free_head = 0;
	r->nfree = size;
	return 0;
}

static void put_desc(uint8_t *p, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	struct virtq_desc d = {.addr = htole64(addr),
	                       .len = htole32(len),
	                       .flags = htole16(flags),
	                       .next = htole16(next)};
	memcpy(p, &d, sizeof(d));
}

void vring_write_desc(struct vring *r, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                      uint16_t next)
{
	put_desc(r->desc + 16u * (i % r->size), addr, len, flags, next);
}

void vring_write_table(const struct guest_mem *mem, uint64_t table_gpa, uint16_t i, uint64_t addr,
                       uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *p = guest_mem_ptr(mem, table_gpa + 16ull * i, 16);
	if (p)
		put_desc(p, addr, len, flags, next);
}

void vring_set_avail_idx(struct vring *r, uint16_t idx)
{
	/* Release: descriptors and ring entries before the index (the driver's side of §2.7.13). */
	__atomic_store_n((uint16_t *)(void *)(r->avail + 2), htole16(idx), __ATOMIC_RELEASE);
	r->avail_idx = idx;
}

void vring_publish_raw(struct vring *r, uint16_t head)
{
	uint16_t slot = r->avail_idx & (r->size - 1);
	uint16_t le = htole16(head);
	memcpy(r->avail + 4 + 2u * slot, &le, 2);
	vring_set_avail_idx(r, (uint16_t)(r->avail_idx + 1));
}

static int alloc_chain(struct vring *r, unsigned n, uint16_t *ids)
{
	if (n == 0 || n > r->nfree)
		return -ENOSPC;
	for (unsigned i = 0; i < n; i++) {
		ids[i] = r->free_head;
		r->free_head = r->next_free[r->free_head];
	}
	r->nfree = (uint16_t)(r->nfree - n);
	for (unsigned i = 0; i + 1 < n; i++)
		r->chain_next[ids[i]] = ids[i + 1];
	r->chain_len[ids[0]] = (uint16_t)n;
	return ids[0];
}

int vring_add(struct vring *r, const struct vring_buf *bufs, unsigned n)
{
	uint16_t ids[VIRTQ_MAX_SIZE];
	if (n > VIRTQ_MAX_SIZE)
		return -EINVAL;
	int head = alloc_chain(r, n, ids);
	if (head < 0)
		return head;
	for (unsigned i = 0; i < n; i++) {
		uint16_t flags =
		    (bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
		vring_write_desc(r, ids[i], bufs[i].gpa, bufs[i].len, flags,
		                 i + 1 < n ? ids[i + 1] : 0);
	}
	vring_publish_raw(r, (uint16_t)head);
	return head;
}

int vring_add_indirect(struct vring *r, const struct vring_buf *bufs, unsigned n,
                       uint64_t table_gpa)
{
	uint16_t id;
	if (!guest_mem_ptr(r->mem, table_gpa, 16ull * n))
		return -EFAULT;
	int head = alloc_chain(r, 1, &id);
	if (head < 0)
		return head;
	for (unsigned i = 0; i < n; i++) {
		uint16_t flags =
		    (bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
		vring_write_table(r->mem, table_gpa, (uint16_t)i, bufs[i].gpa, bufs[i].len, flags,
		                  (uint16_t)(i + 1 < n ? i + 1 : 0));
	}
	vring_write_desc(r, id, table_gpa, (uint32_t)(16 * n), VIRTQ_DESC_F_INDIRECT, 0);
	vring_publish_raw(r, id);
	return head;
}

uint16_t vring_used_idx(const struct vring *r)
{
	/* Acquire: the used entries (and buffer contents) before the index. */
	return le16toh(
	    __atomic_load_n((const uint16_t *)(const void *)(r->used + 2), __ATOMIC_ACQUIRE));
}

uint16_t vring_used_pending(const struct vring *r)
{
	return (uint16_t)(vring_used_idx(r) - r->last_used);
}

int vring_get_used(struct vring *r, uint32_t *id, uint32_t *len)
{
	if (vring_used_idx(r) == r->last_used)
		return 0;
	uint8_t *e = r->used + 4 + 8u * (r->last_used & (r->size - 1));
	uint32_t v[2];
	memcpy(v, e, sizeof(v));
	*id = le32toh(v[0]);
	*len = le32toh(v[1]);
	r->last_used++;
	/* Ask for an interrupt at the next entry (EVENT_IDX drivers). */
	vring_set_used_event(r, r->last_used);
	uint16_t head = (uint16_t)*id;
	if (head < r->size && r->chain_len[head]) {
		uint16_t n = r->chain_len[head], d = head;
		r->chain_len[head] = 0;
		for (uint16_t i = 0; i < n; i++) {
			uint16_t next = r->chain_next[d];
			r->next_free[d] = r->free_head;
			r->free_head = d;
			d = next;
		}
		r->nfree = (uint16_t)(r->nfree + n);
	}
	return 1;
}

void vring_set_avail_flags(struct vring *r, uint16_t flags)
{
	__atomic_store_n((uint16_t *)(void *)r->avail, htole16(flags), __ATOMIC_RELAXED);
}

void vring_set_used_event(struct vring *r, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)(r->avail + 4 + 2u * r->size), htole16(v),
	                 __ATOMIC_RELAXED);
	/* Full fence: the driver's used_event store before its next used->idx load. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

uint16_t vring_avail_event(const struct vring *r)
{
	return le16toh(__atomic_load_n((const uint16_t *)(const void *)(r->used + 4 + 8u * r->size),
	                               __ATOMIC_ACQUIRE));
}
