/*
 * Split virtqueue, device side: ring validation at enable, chain validation
 * in virtq_pop (the one place guest descriptors are trusted into host
 * pointers), used-ring publication and EVENT_IDX in both directions. Every
 * guest-written value is loaded once into a local before it is checked.
 */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "devices/virtio/virtq.h"

/* Ring layout offsets (virtio 1.2 §2.7.6, §2.7.8). */
#define AVAIL_IDX  2
#define AVAIL_RING 4
#define USED_IDX   2
#define USED_RING  4

/*
 * Guest RAM is shared with a driver that may change it at any time, so every
 * ring field is read or written with a single atomic access: the compiler may
 * neither tear it nor read it twice. Ring fields are naturally aligned
 * (checked in virtq_init).
 */
static inline uint16_t load16(const uint8_t *p)
{
	return le16toh(__atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_RELAXED));
}

static inline void store16(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)p, htole16(v), __ATOMIC_RELAXED);
}

static inline void store32(uint8_t *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)(void *)p, htole32(v), __ATOMIC_RELAXED);
}

/*
 * Copy one descriptor out of guest RAM. Indirect tables carry no alignment
 * guarantee, so this is a memcpy; the compiler barrier after it forbids the
 * compiler from re-reading guest RAM in place of the local copy (the guest
 * may have changed it since: hostile case 10).
 */
static inline void desc_load(struct virtq_desc *d, const uint8_t *p)
{
	memcpy(d, p, sizeof(*d));
	__asm__ __volatile__("" ::: "memory");
	d->addr = le64toh(d->addr);
	d->len = le32toh(d->len);
	d->flags = le16toh(d->flags);
	d->next = le16toh(d->next);
}

static uint8_t *used_event_ptr(const struct virtq *q)
{
	return q->avail + AVAIL_RING + 2u * q->size; /* avail->used_event */
}

static uint8_t *avail_event_ptr(const struct virtq *q)
{
	return q->used + USED_RING + 8u * q->size; /* used->avail_event */
}

int virtq_init(struct virtq *q, const struct guest_mem *mem, uint16_t size, uint64_t desc_gpa,
               uint64_t avail_gpa, uint64_t used_gpa, uint64_t features)
{
	memset(q, 0, sizeof(*q));
	if (size == 0 || size > VIRTQ_MAX_SIZE || (size & (size - 1)))
		return -EINVAL;
	if ((desc_gpa & 15) || (avail_gpa & 1) || (used_gpa & 3))
		return -EINVAL;
	uint8_t *desc = guest_mem_ptr(mem, desc_gpa, 16ull * size);
	uint8_t *avail = guest_mem_ptr(mem, avail_gpa, 6ull + 2ull * size);
	uint8_t *used = guest_mem_ptr(mem, used_gpa, 6ull + 8ull * size);
	if (!desc || !avail || !used)
		return -EFAULT;
	q->mem = mem;
	q->desc = desc;
	q->avail = avail;
	q->used = used;
	q->event_idx = features & (1ull << VIRTIO_F_EVENT_IDX);
	q->indirect = features & (1ull << VIRTIO_F_INDIRECT_DESC);
	q->size = size;
	return 0;
}

static int fail(struct virtq *q, int err)
{
	q->broken = true;
	return err;
}

/* Walk the chain starting at head from one-time copies of its descriptors. */
static int walk(struct virtq *q, uint16_t head, struct virtq_chain *c)
{
	const uint8_t *table = q->desc;
	uint32_t table_size = q->size;
	bool in_indirect = false, seen_write = false;
	unsigned nbuf = 0, nseg = 0;
	uint64_t total = 0;
	uint32_t idx = head;
	struct virtq_desc d;

	c->head = head;
	c->nread = c->nwrite = 0;
	c->read_len = c->write_len = 0;
	for (;;) {
		desc_load(&d, table + 16u * idx);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!q->indirect || in_indirect || (d.flags & VIRTQ_DESC_F_NEXT))
				return -EINVAL;
			if (d.len == 0 || (d.len & 15) || d.len / 16 > q->size)
				return -EINVAL;
			table = guest_mem_ptr(q->mem, d.addr, d.len);
			if (!table)
				return -EFAULT;
			table_size = d.len / 16;
			in_indirect = true;
			idx = 0;
			continue; /* no NEXT: the table is the rest of the chain */
		}
		/* Bounds a chain (and so any loop) by the queue size, indirect entries included. */
		if (++nbuf > q->size)
			return -ELOOP;
		bool write = d.flags & VIRTQ_DESC_F_WRITE;
		if (!write && seen_write)
			return -EINVAL;
		seen_write |= write;
		if (d.len) {
			void *p = guest_mem_ptr(q->mem, d.addr, d.len);
			if (!p)
				return -EFAULT;
			total += d.len;
			if (total > UINT32_MAX)
				return -EOVERFLOW;
			c->seg[nseg].iov_base = p;
			c->seg[nseg].iov_len = d.len;
			nseg++;
			if (write) {
				c->nwrite++;
				c->write_len += d.len;
			} else {
				c->nread++;
				c->read_len += d.len;
			}
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (d.next >= table_size)
			return -ERANGE;
		idx = d.next;
	}
}

int virtq_pop(struct virtq *q, struct virtq_chain *c)
{
	if (q->broken || !q->size)
		return -EIO;
	/* Acquire: the ring entry and the descriptors it names were written
	 * before the driver published this index; read them after it. */
	uint16_t avail_idx =
	    le16toh(__atomic_load_n((uint16_t *)(void *)(q->avail + AVAIL_IDX), __ATOMIC_ACQUIRE));
	uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
	if (pending == 0 && q->event_idx) {
		/* Ask for a kick when the driver adds the next entry, then look
		 * again: one added between our load and this store would
		 * otherwise wait for a kick the driver never sends. The full
		 * fence orders our avail_event store before the re-load (the
		 * driver does the mirror image: idx store, fence, load). */
		store16(avail_event_ptr(q), q->last_avail);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		avail_idx = le16toh(
		    __atomic_load_n((uint16_t *)(void *)(q->avail + AVAIL_IDX), __ATOMIC_ACQUIRE));
		pending = (uint16_t)(avail_idx - q->last_avail);
	}
	if (pending == 0)
		return 0;
	if (pending > q->size)
		return fail(q, -EPROTO);
	uint16_t head = load16(q->avail + AVAIL_RING + 2u * (q->last_avail & (q->size - 1)));
	if (head >= q->size)
		return fail(q, -ERANGE);
	if (q->inflight_map[head / 64] & (1ull << (head % 64)))
		return fail(q, -EALREADY);
	int r = walk(q, head, c);
	if (r < 0)
		return fail(q, r);
	q->inflight_map[head / 64] |= 1ull << (head % 64);
	q->inflight++;
	q->last_avail++;
	return 1;
}

static int publish(struct virtq *q, uint16_t head, uint32_t len)
{
	if (head >= q->size || !(q->inflight_map[head / 64] & (1ull << (head % 64))))
		return -EINVAL;
	q->inflight_map[head / 64] &= ~(1ull << (head % 64));
	q->inflight--;
	if (q->broken)
		return -EIO;
	uint8_t *elem = q->used + USED_RING + 8u * (q->used_idx & (q->size - 1));
	store32(elem, head);
	store32(elem + 4, len);
	q->used_idx++;
	/* Release: the buffer contents and the used element are visible to the
	 * driver before the index that hands them over. */
	__atomic_store_n((uint16_t *)(void *)(q->used + USED_IDX), htole16(q->used_idx),
	                 __ATOMIC_RELEASE);
	return 0;
}

int virtq_push(struct virtq *q, const struct virtq_chain *c, uint32_t len)
{
	return publish(q, c->head, len > c->write_len ? c->write_len : len);
}

int virtq_push_read(struct virtq *q, uint16_t head)
{
	return publish(q, head, 0);
}

bool virtq_should_signal(struct virtq *q)
{
	if (q->broken || !q->size)
		return false;
	/* Full fence: our used->idx store must be globally visible before we
	 * read the driver's used_event / flags. Otherwise a driver that has just
	 * re-enabled interrupts and then checked used->idx (its mirror image)
	 * and we could both miss each other, and it would sleep forever. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint16_t old = q->signalled, new = q->used_idx;
	if (old == new)
		return false;
	q->signalled = new;
	if (!q->event_idx)
		return !(load16(q->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	uint16_t event = load16(used_event_ptr(q));
	/* Signal iff used_event lies in [old, new): the driver asked to hear
	 * about the entry at used_event and we have just published it. */
	return (uint16_t)(new - event - 1) < (uint16_t)(new - old);
}

/* ---- cursors ---- */

static void cursor_init(struct virtq_cursor *cur, const struct iovec *seg, unsigned nseg,
                        size_t len)
{
	cur->seg = seg;
	cur->nseg = nseg;
	cur->i = 0;
	cur->off = 0;
	cur->left = len;
	cur->done = 0;
}

void virtq_reader_init(struct virtq_reader *r, const struct virtq_chain *c)
{
	cursor_init(&r->cur, c->seg, c->nread, c->read_len);
}

void virtq_writer_init(struct virtq_writer *w, const struct virtq_chain *c)
{
	cursor_init(&w->cur, c->seg + c->nread, c->nwrite, c->write_len);
}

/* Copy up to n bytes between buf and the cursor's segments, consuming them. */
static size_t cursor_copy(struct virtq_cursor *cur, void *buf, size_t n, bool to_chain)
{
	size_t copied = 0;
	while (copied < n && cur->i < cur->nseg) {
		const struct iovec *s = &cur->seg[cur->i];
		size_t k = s->iov_len - cur->off;
		if (k > n - copied)
			k = n - copied;
		uint8_t *g = (uint8_t *)s->iov_base + cur->off;
		if (to_chain)
			memcpy(g, (const uint8_t *)buf + copied, k);
		else
			memcpy((uint8_t *)buf + copied, g, k);
		copied += k;
		cur->off += k;
		if (cur->off == s->iov_len) {
			cur->i++;
			cur->off = 0;
		}
	}
	cur->left -= copied;
	cur->done += copied;
	return copied;
}

static unsigned cursor_iov(const struct virtq_cursor *cur, struct iovec *iov, unsigned max,
                           size_t n, size_t *bytes)
{
	unsigned k = 0, i = cur->i;
	size_t off = cur->off, total = 0;
	while (k < max && total < n && i < cur->nseg) {
		size_t len = cur->seg[i].iov_len - off;
		if (len > n - total)
			len = n - total;
		iov[k].iov_base = (uint8_t *)cur->seg[i].iov_base + off;
		iov[k].iov_len = len;
		k++;
		total += len;
		i++;
		off = 0;
	}
	if (bytes)
		*bytes = total;
	return k;
}

static size_t cursor_advance(struct virtq_cursor *cur, size_t n)
{
	size_t moved = 0;
	while (moved < n && cur->i < cur->nseg) {
		size_t k = cur->seg[cur->i].iov_len - cur->off;
		if (k > n - moved)
			k = n - moved;
		moved += k;
		cur->off += k;
		if (cur->off == cur->seg[cur->i].iov_len) {
			cur->i++;
			cur->off = 0;
		}
	}
	cur->left -= moved;
	cur->done += moved;
	return moved;
}

size_t virtq_reader_read(struct virtq_reader *r, void *buf, size_t n)
{
	return cursor_copy(&r->cur, buf, n, false);
}

size_t virtq_writer_write(struct virtq_writer *w, const void *buf, size_t n)
{
	return cursor_copy(&w->cur, (void *)buf, n, true);
}

unsigned virtq_reader_iov(const struct virtq_reader *r, struct iovec *iov, unsigned max, size_t n,
                          size_t *bytes)
{
	return cursor_iov(&r->cur, iov, max, n, bytes);
}

unsigned virtq_writer_iov(const struct virtq_writer *w, struct iovec *iov, unsigned max, size_t n,
                          size_t *bytes)
{
	return cursor_iov(&w->cur, iov, max, n, bytes);
}

size_t virtq_reader_advance(struct virtq_reader *r, size_t n)
{
	return cursor_advance(&r->cur, n);
}

size_t virtq_writer_advance(struct virtq_writer *w, size_t n)
{
	return cursor_advance(&w->cur, n);
}
