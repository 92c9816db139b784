/*
 * Fuzz target "virtq": virtq_init/virtq_pop/virtq_push/virtq_should_signal
 * and the reader/writer cursors over a guest RAM image and ring state the
 * input chooses (hostile inputs 1-10). Input: an 8-byte header, then the
 * RAM image (region 0 first, then region 1).
 *   [0] queue size: 1 << (v % 9) (so 1..256), or v itself when bit 7 is set
 *   [1] bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bits 2-3 ring placement
 *   [2..7] one byte per round: bit 0 push at once, bits 1-7 push length
 * Every chain virtq_pop returns must lie inside RAM with the counts it
 * claims; every popped head is pushed back before the end.
 */
#define FUZZ_TARGET virtq
#include "tests/fuzz/fuzz.h"

#include <string.h>

#include "devices/virtio/virtq.h"

#define HDR 8

static struct guest_mem mem;
static struct virtq q;
static struct virtq_chain chains[VIRTQ_MAX_SIZE];
static uint8_t scratch[1u << 16];

static void check_chain(const struct virtq_chain *c)
{
	uint64_t rlen = 0, wlen = 0;
	FUZZ_CHECK(c->head < q.size, "head %u >= size %u", c->head, q.size);
	FUZZ_CHECK(c->nread + c->nwrite <= q.size, "%u+%u segments > size %u", c->nread, c->nwrite,
	           q.size);
	for (unsigned i = 0; i < (unsigned)c->nread + c->nwrite; i++) {
		FUZZ_CHECK(c->seg[i].iov_len > 0, "empty segment %u", i);
		FUZZ_CHECK(fuzz_ram_contains(&mem, c->seg[i].iov_base, c->seg[i].iov_len),
		           "segment %u outside RAM", i);
		if (i < c->nread)
			rlen += c->seg[i].iov_len;
		else
			wlen += c->seg[i].iov_len;
	}
	FUZZ_CHECK(rlen == c->read_len && wlen == c->write_len, "lengths %llu/%llu vs %u/%u",
	           (unsigned long long)rlen, (unsigned long long)wlen, c->read_len, c->write_len);
	FUZZ_CHECK(rlen + wlen <= UINT32_MAX, "total length overflows");
}

/* Use the cursors the way devices do: read all, describe and write all. */
static void use_chain(const struct virtq_chain *c)
{
	struct virtq_reader r;
	struct virtq_writer w;
	struct iovec iov[8];
	size_t bytes, got = 0;
	virtq_reader_init(&r, c);
	(void)virtq_reader_iov(&r, iov, 8, 4096, &bytes);
	while (virtq_reader_remaining(&r)) {
		size_t n = virtq_reader_read(&r, scratch, sizeof(scratch));
		FUZZ_CHECK(n > 0, "reader stuck");
		got += n;
	}
	FUZZ_CHECK(got == c->read_len, "read %zu of %u", got, c->read_len);
	virtq_writer_init(&w, c);
	unsigned n = virtq_writer_iov(&w, iov, 8, 100, &bytes);
	FUZZ_CHECK(n <= 8 && bytes <= 100, "writer_iov %u %zu", n, bytes);
	(void)virtq_writer_advance(&w, 7);
	memset(scratch, 0xa5, sizeof(scratch));
	while (virtq_writer_remaining(&w))
		FUZZ_CHECK(virtq_writer_write(&w, scratch, sizeof(scratch)) > 0, "writer stuck");
	FUZZ_CHECK(virtq_writer_written(&w) == c->write_len, "wrote %zu of %u",
	           virtq_writer_written(&w), c->write_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HDR)
		return 0;
	fuzz_ram_init(&mem, data + HDR, size - HDR);

	uint16_t qsize = data[0] & 0x80 ? data[0] & 0x7f : (uint16_t)(1u << (data[0] % 9));
	uint64_t features = 0;
	if (data[1] & 1)
		features |= 1ull << VIRTIO_F_EVENT_IDX;
	if (data[1] & 2)
		features |= 1ull << VIRTIO_F_INDIRECT_DESC;
	/* Normally rings at 0 / 0x1000 / 0x2000; otherwise misaligned, in the hole, or at the end. */
	static const uint64_t place[4][3] = {{0, 0x1000, 0x2000},
	                                     {0x8, 0x1001, 0x2002},
	                                     {0x10000, 0x1000, 0x2000},
	                                     {0x23000, 0x23ff0, 0x20000}};
	const uint64_t *pl = place[(data[1] >> 2) & 3];
	if (virtq_init(&q, &mem, qsize, pl[0], pl[1], pl[2], features) < 0)
		return 0;

	unsigned held[VIRTQ_MAX_SIZE], nheld = 0;
	for (unsigned round = 0; round < 2u * q.size + 4; round++) {
		uint8_t op = data[2 + round % 6];
		struct virtq_chain *c = &chains[nheld];
		int r = virtq_pop(&q, c);
		if (r <= 0) {
			FUZZ_CHECK(r == 0 || virtq_broken(&q), "error %d without a broken queue", r);
			break;
		}
		check_chain(c);
		use_chain(c);
		if (op & 1) {
			FUZZ_CHECK(virtq_push(&q, c, (uint32_t)(op >> 1) * 97u) == 0, "push failed");
			FUZZ_IGNORE(virtq_should_signal(&q));
		} else {
			held[nheld] = nheld;
			nheld++;
		}
		FUZZ_CHECK(virtq_inflight(&q) == nheld, "inflight %u, held %u", virtq_inflight(&q),
		           nheld);
	}
	for (unsigned i = 0; i < nheld; i++) {
		int r = virtq_push(&q, &chains[held[i]], chains[held[i]].write_len);
		FUZZ_CHECK(r == 0 || (r == -EIO && virtq_broken(&q)), "push of a held chain: %d", r);
	}
	FUZZ_CHECK(virtq_inflight(&q) == 0, "%u still in flight", virtq_inflight(&q));
	FUZZ_IGNORE(virtq_should_signal(&q));
	/* A double push is a device bug the queue must refuse, not corrupt itself over. */
	if (nheld)
		FUZZ_CHECK(virtq_push(&q, &chains[0], 0) < 0, "double push accepted");
	return 0;
}
