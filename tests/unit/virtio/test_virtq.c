/*
 * virtq: every hostile virtqueue case (hostile-inputs.md 1–10) on a fake
 * guest — real guest_mem with the 3–4 GiB hole, the driver-side ring
 * builder, no process and no executor. Each fatal case checks the error,
 * that the queue is then broken (the transport sets NEEDS_RESET), and that
 * after a reset a well-formed request works again.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "tests/harness/vring.h"

#define QSIZE       16
#define RING        0x1000ull
#define DATA        0x10000ull
#define TABLE       0x20000ull
#define LOW_END     0xC0000000ull /* arch layout: low RAM ends at the PCI hole */
#define HIGH        0x100000000ull
#define HIGH_SIZE   (1ull << 20)
#define W           VIRTQ_DESC_F_WRITE
#define N           VIRTQ_DESC_F_NEXT
#define I           VIRTQ_DESC_F_INDIRECT
#define F_INDIRECT  (1ull << VIRTIO_F_INDIRECT_DESC)
#define F_EVENT_IDX (1ull << VIRTIO_F_EVENT_IDX)

static struct guest_mem mem;
static struct vring r;
static struct virtq q;
static struct virtq_chain c;

static void fixture(uint64_t features)
{
	cr_assert_eq(guest_mem_create(&mem, LOW_END + HIGH_SIZE), 0);
	cr_assert_eq(mem.nregions, 2);
	cr_assert_eq(vring_init(&r, &mem, QSIZE, RING), 0);
	cr_assert_eq(virtq_init(&q, &mem, QSIZE, r.desc_gpa, r.avail_gpa, r.used_gpa, features), 0);
}

static volatile bool racing;
static pthread_t racer;

static void teardown(void)
{
	if (racing) {
		racing = false; /* also after a failed assertion: stop writing before unmapping */
		pthread_join(racer, NULL);
	}
	guest_mem_destroy(&mem);
}

/* What a reset does to the ring: the driver starts over, the device re-inits. */
static void reset_and_check_good_request(uint64_t features, const char *name)
{
	cr_assert_eq(vring_init(&r, &mem, QSIZE, RING), 0);
	cr_assert_eq(virtq_init(&q, &mem, QSIZE, r.desc_gpa, r.avail_gpa, r.used_gpa, features), 0);
	struct vring_buf b[2] = {{DATA, 8, false}, {DATA + 64, 16, true}};
	int head = vring_add(&r, b, 2);
	cr_assert_eq(virtq_pop(&q, &c), 1, "%s: good request after reset", name);
	cr_expect_eq(c.head, head);
	cr_expect_eq(c.read_len, 8);
	cr_expect_eq(c.write_len, 16);
	cr_expect_eq(virtq_push(&q, &c, 16), 0);
}

/* ---- the table ---- */

static void b_self_loop(void)
{
	vring_write_desc(&r, 0, DATA, 16, W | N, 0);
	vring_publish_raw(&r, 0);
}
static void b_two_cycle(void)
{
	vring_write_desc(&r, 0, DATA, 16, W | N, 1);
	vring_write_desc(&r, 1, DATA, 16, W | N, 0);
	vring_publish_raw(&r, 0);
}
static void b_late_loop(void)
{
	for (uint16_t i = 0; i < 4; i++)
		vring_write_desc(&r, i, DATA + 16u * i, 16, W | N, (uint16_t)(i + 1));
	vring_write_desc(&r, 4, DATA, 16, W | N, 2);
	vring_publish_raw(&r, 0);
}
static void b_next_oob(void)
{
	vring_write_desc(&r, 0, DATA, 16, N, QSIZE);
	vring_publish_raw(&r, 0);
}
static void b_head_oob(void)
{
	vring_publish_raw(&r, QSIZE);
}
static void b_head_ffff(void)
{
	vring_publish_raw(&r, 0xffff);
}
static void one(uint64_t addr, uint32_t len, uint16_t flags)
{
	vring_write_desc(&r, 0, addr, len, flags, 0);
	vring_publish_raw(&r, 0);
}
static void b_addr_wrap(void)
{
	one(UINT64_MAX - 7, 16, W);
}
static void b_len_wrap(void)
{
	one(DATA, UINT32_MAX, W);
}
static void b_past_ram_end(void)
{
	one(HIGH + HIGH_SIZE - 8, 16, W);
}
static void b_into_hole(void)
{
	one(LOW_END - 8, 16, W);
}
static void b_in_hole(void)
{
	one(0xD0000000ull, 4, 0);
}
static void b_device_mmio(void)
{
	one(0xFEE00000ull, 4, W);
}
static void b_total_over_4g(void)
{
	vring_write_desc(&r, 0, 0, 0x60000000, N, 1);
	vring_write_desc(&r, 1, 0, 0x60000000, W | N, 2);
	vring_write_desc(&r, 2, 0, 0x60000000, W, 0);
	vring_publish_raw(&r, 0);
}
static void b_read_after_write(void)
{
	vring_write_desc(&r, 0, DATA, 16, W | N, 1);
	vring_write_desc(&r, 1, DATA + 16, 16, N, 2);
	vring_write_desc(&r, 2, DATA + 32, 16, W, 0);
	vring_publish_raw(&r, 0);
}
static void b_zero_read_after_write(void)
{
	vring_write_desc(&r, 0, DATA, 16, W | N, 1);
	vring_write_desc(&r, 1, DATA, 0, 0, 0);
	vring_publish_raw(&r, 0);
}
static void table(uint16_t n)
{
	for (uint16_t i = 0; i < n; i++)
		vring_write_table(&mem, TABLE, i, DATA + 16u * i, 16, (i + 1 < n ? N : 0) | W,
		                  (uint16_t)(i + 1));
}
static void b_indirect(void)
{
	table(2);
	one(TABLE, 32, I);
}
static void b_indirect_next(void)
{
	table(2);
	vring_write_desc(&r, 0, TABLE, 32, I | N, 1);
	vring_write_desc(&r, 1, DATA, 16, W, 0);
	vring_publish_raw(&r, 0);
}
static void b_indirect_nested(void)
{
	table(2);
	vring_write_table(&mem, TABLE, 1, TABLE, 32, I, 0);
	one(TABLE, 32, I);
}
static void b_indirect_len24(void)
{
	table(2);
	one(TABLE, 24, I);
}
static void b_indirect_len0(void)
{
	one(TABLE, 0, I);
}
static void b_indirect_too_big(void)
{
	table(QSIZE + 1);
	one(TABLE, 16 * (QSIZE + 1), I);
}
static void b_indirect_outside(void)
{
	one(0xD0000000ull, 32, I);
}
static void b_indirect_loop(void)
{
	vring_write_table(&mem, TABLE, 0, DATA, 16, W | N, 1);
	vring_write_table(&mem, TABLE, 1, DATA, 16, W | N, 0);
	one(TABLE, 32, I);
}
static void b_indirect_next_oob(void)
{
	vring_write_table(&mem, TABLE, 0, DATA, 16, W | N, 2); /* 2-entry table */
	one(TABLE, 32, I);
}
static void b_indirect_chain_too_long(void)
{
	table(QSIZE); /* QSIZE entries + one direct buffer = QSIZE + 1 */
	vring_write_desc(&r, 0, DATA, 16, N, 1);
	vring_write_desc(&r, 1, TABLE, 16 * QSIZE, I, 0);
	vring_publish_raw(&r, 0);
}
static void b_avail_jump(void)
{
	vring_write_desc(&r, 0, DATA, 16, W, 0);
	vring_set_avail_idx(&r, QSIZE + 1);
}
static void b_dup_head(void)
{
	vring_write_desc(&r, 0, DATA, 16, W, 0);
	vring_publish_raw(&r, 0);
	vring_publish_raw(&r, 0);
}

static const struct {
	const char *name;
	void (*build)(void);
	uint64_t features;
	int pops_ok; /* good pops before the bad one */
	int expect;
} fatal[] = {
    {"self loop", b_self_loop, 0, 0, -ELOOP},
    {"two-descriptor cycle", b_two_cycle, 0, 0, -ELOOP},
    {"loop starting late", b_late_loop, 0, 0, -ELOOP},
    {"next >= size", b_next_oob, 0, 0, -ERANGE},
    {"head == size", b_head_oob, 0, 0, -ERANGE},
    {"head 0xffff", b_head_ffff, 0, 0, -ERANGE},
    {"addr + len wraps", b_addr_wrap, 0, 0, -EFAULT},
    {"len 4 GiB - 1", b_len_wrap, 0, 0, -EFAULT},
    {"crosses end of RAM", b_past_ram_end, 0, 0, -EFAULT},
    {"crosses into the 3-4 GiB hole", b_into_hole, 0, 0, -EFAULT},
    {"inside the hole", b_in_hole, 0, 0, -EFAULT},
    {"device MMIO (LAPIC)", b_device_mmio, 0, 0, -EFAULT},
    {"total length > 2^32", b_total_over_4g, 0, 0, -EOVERFLOW},
    {"readable after writable", b_read_after_write, 0, 0, -EINVAL},
    {"zero-length readable after writable", b_zero_read_after_write, 0, 0, -EINVAL},
    {"indirect not negotiated", b_indirect, 0, 0, -EINVAL},
    {"indirect with NEXT", b_indirect_next, F_INDIRECT, 0, -EINVAL},
    {"indirect nested", b_indirect_nested, F_INDIRECT, 0, -EINVAL},
    {"indirect len not multiple of 16", b_indirect_len24, F_INDIRECT, 0, -EINVAL},
    {"indirect len 0", b_indirect_len0, F_INDIRECT, 0, -EINVAL},
    {"indirect table > queue size", b_indirect_too_big, F_INDIRECT, 0, -EINVAL},
    {"indirect table outside RAM", b_indirect_outside, F_INDIRECT, 0, -EFAULT},
    {"loop inside indirect table", b_indirect_loop, F_INDIRECT, 0, -ELOOP},
    {"indirect next >= table entries", b_indirect_next_oob, F_INDIRECT, 0, -ERANGE},
    {"chain > size counting indirect", b_indirect_chain_too_long, F_INDIRECT, 0, -ELOOP},
    {"avail idx jumps > size", b_avail_jump, 0, 0, -EPROTO},
    {"same head resubmitted in flight", b_dup_head, 0, 1, -EALREADY},
};

Test(virtio_virtq, hostile_chains_are_fatal, .fini = teardown)
{
	for (unsigned i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
		if (i == 0)
			fixture(fatal[i].features);
		else
			cr_assert_eq(virtq_init(&q, &mem, QSIZE, r.desc_gpa, r.avail_gpa,
			                        r.used_gpa, fatal[i].features),
			             0);
		cr_assert_eq(vring_init(&r, &mem, QSIZE, RING), 0);
		fatal[i].build();
		for (int k = 0; k < fatal[i].pops_ok; k++)
			cr_expect_eq(virtq_pop(&q, &c), 1, "%s: good pop %d", fatal[i].name, k);
		int ret = virtq_pop(&q, &c);
		cr_expect_eq(ret, fatal[i].expect, "%s: got %d, want %d", fatal[i].name, ret,
		             fatal[i].expect);
		cr_expect(virtq_broken(&q), "%s: queue not marked broken", fatal[i].name);
		cr_expect_eq(virtq_pop(&q, &c), -EIO, "%s: broken queue still pops", fatal[i].name);
		cr_expect_not(virtq_should_signal(&q), "%s", fatal[i].name);
		reset_and_check_good_request(fatal[i].features, fatal[i].name);
	}
}

Test(virtio_virtq, zero_length_descriptors_are_valid, .fini = teardown)
{
	fixture(0);
	struct vring_buf b[3] = {{DATA, 0, false}, {DATA + 16, 16, true}, {0xD0000000ull, 0, true}};
	vring_add(&r, b, 3);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq(c.nread, 0);
	cr_expect_eq(c.nwrite, 1);
	cr_expect_eq(c.write_len, 16);
	cr_expect_eq(virtq_push(&q, &c, 16), 0);
	struct vring_buf z[2] = {{DATA, 0, false}, {DATA, 0, true}};
	vring_add(&r, z, 2);
	cr_assert_eq(virtq_pop(&q, &c), 1, "a chain of only zero-length descriptors");
	cr_expect_eq(c.read_len + c.write_len, 0);
	cr_expect_eq(c.nread + c.nwrite, 0);
	cr_expect_eq(virtq_push(&q, &c, 100), 0);
	uint32_t id, len;
	vring_get_used(&r, &id, &len);
	cr_assert_eq(vring_get_used(&r, &id, &len), 1);
	cr_expect_eq(len, 0, "used length clamped to what the chain can hold");
	cr_expect_not(virtq_broken(&q));
}

Test(virtio_virtq, good_chains, .fini = teardown)
{
	fixture(F_INDIRECT);
	/* High RAM, total exactly 2^32 - 1, a chain of exactly size descriptors, indirect. */
	struct vring_buf hi = {HIGH + 0x100, 64, true};
	vring_add(&r, &hi, 1);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq(c.seg[0].iov_base, guest_mem_ptr(&mem, HIGH + 0x100, 64));
	cr_expect_eq(virtq_push(&q, &c, 0), 0);

	struct vring_buf big[3] = {
	    {0, 0x60000000, false}, {0, 0x60000000, true}, {0, 0x3fffffff, true}};
	vring_add(&r, big, 3);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq((uint64_t)c.read_len + c.write_len, UINT32_MAX);
	cr_expect_eq(virtq_push(&q, &c, 0), 0);

	uint32_t id, len;
	while (vring_get_used(&r, &id, &len) == 1)
		; /* give the descriptors back to the driver */
	struct vring_buf full[QSIZE];
	for (unsigned i = 0; i < QSIZE; i++)
		full[i] = (struct vring_buf){DATA + 16 * i, 16, i >= 4};
	cr_assert_geq(vring_add(&r, full, QSIZE), 0);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq(c.nread, 4);
	cr_expect_eq(c.nwrite, QSIZE - 4);
	cr_expect_eq(virtq_push(&q, &c, 0), 0);
	while (vring_get_used(&r, &id, &len) == 1)
		;

	struct vring_buf ind[3] = {{DATA, 4, false}, {DATA + 16, 8, true}, {DATA + 32, 8, true}};
	int head = vring_add_indirect(&r, ind, 3, TABLE);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq(c.head, head);
	cr_expect_eq(c.read_len, 4);
	cr_expect_eq(c.write_len, 16);
	cr_expect_eq(virtq_push(&q, &c, 16), 0);
	cr_expect_eq(virtq_pop(&q, &c), 0);
	cr_expect_eq(virtq_inflight(&q), 0);
}

Test(virtio_virtq, init_refuses_bad_rings, .fini = teardown)
{
	fixture(0);
	struct virtq t;
	static const uint16_t bad_sizes[] = {0, 3, 100, 512, VIRTQ_MAX_SIZE * 2};
	for (unsigned i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++)
		cr_expect_eq(
		    virtq_init(&t, &mem, bad_sizes[i], RING, RING + 0x800, RING + 0x1000, 0),
		    -EINVAL, "size %u", bad_sizes[i]);
	cr_expect_eq(virtq_init(&t, &mem, 16, RING + 8, RING + 0x800, RING + 0x1000, 0), -EINVAL);
	cr_expect_eq(virtq_init(&t, &mem, 16, RING, RING + 0x801, RING + 0x1000, 0), -EINVAL);
	cr_expect_eq(virtq_init(&t, &mem, 16, RING, RING + 0x800, RING + 0x1002, 0), -EINVAL);
	cr_expect_eq(virtq_init(&t, &mem, 16, 0xD0000000ull, RING + 0x800, RING + 0x1000, 0),
	             -EFAULT);
	cr_expect_eq(virtq_init(&t, &mem, 16, RING, LOW_END - 8, RING + 0x1000, 0), -EFAULT);
	cr_expect_eq(virtq_init(&t, &mem, 16, RING, RING + 0x800, HIGH + HIGH_SIZE - 8, 0),
	             -EFAULT);
	cr_expect_eq(virtq_init(&t, &mem, 16, UINT64_MAX & ~15ull, RING + 0x800, RING + 0x1000, 0),
	             -EFAULT);
	cr_expect_eq(virtq_pop(&t, &c), -EIO, "a refused queue pops nothing");
	cr_expect_eq(virtq_init(&t, &mem, 16, HIGH, HIGH + 0x800, HIGH + 0x1000, 0), 0);
}

Test(virtio_virtq, copy_once_rewrite_after_pop, .fini = teardown)
{
	fixture(0);
	vring_write_desc(&r, 0, DATA, 16, W, 0);
	vring_publish_raw(&r, 0);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	/* The guest rewrites the descriptor to point elsewhere (or outside RAM). */
	vring_write_desc(&r, 0, UINT64_MAX - 7, 0xffffffff, W, 0);
	cr_expect_eq(c.seg[0].iov_base, guest_mem_ptr(&mem, DATA, 16));
	cr_expect_eq(c.seg[0].iov_len, 16);
	struct virtq_writer w;
	virtq_writer_init(&w, &c);
	uint8_t buf[64];
	memset(buf, 0xab, sizeof(buf));
	cr_expect_eq(virtq_writer_write(&w, buf, sizeof(buf)), 16, "bounded by the checked length");
	cr_expect_eq(virtq_push(&q, &c, 16), 0);
}

static void *flipper(void *arg)
{
	(void)arg;
	for (unsigned n = 0; racing; n++) {
		if (n & 1)
			vring_write_desc(&r, 0, DATA, 16, W, 0);
		else
			vring_write_desc(&r, 0, (n & 2) ? UINT64_MAX - 7 : DATA, 0xfffffff0,
			                 W | ((n & 4) ? N : 0), 0);
	}
	return NULL;
}

/* Hostile case 10: another vCPU rewrites descriptors while the device walks them. */
Test(virtio_virtq, copy_once_concurrent_rewrites, .fini = teardown)
{
	fixture(0);
	vring_write_desc(&r, 0, DATA, 16, W, 0);
	racing = true;
	cr_assert_eq(pthread_create(&racer, NULL, flipper, NULL), 0);
	unsigned good = 0, bad = 0;
	for (unsigned i = 0; i < 20000; i++) {
		vring_publish_raw(&r, 0);
		int ret = virtq_pop(&q, &c);
		if (ret == 1) {
			/* Whatever was used passed the checks made on that very copy:
			 * torn descriptors may chain, but only (DATA, 16) is valid. */
			cr_assert(c.nwrite >= 1 && c.nwrite <= QSIZE && c.nread == 0,
			          "nread %u nwrite %u", c.nread, c.nwrite);
			for (unsigned k = 0; k < c.nwrite; k++) {
				cr_assert_eq(c.seg[k].iov_len, 16);
				cr_assert_eq(c.seg[k].iov_base, guest_mem_ptr(&mem, DATA, 16));
			}
			cr_assert_eq(virtq_push(&q, &c, 16), 0);
			good++;
		} else {
			cr_assert(ret == -EFAULT || ret == -ELOOP, "ret %d", ret);
			bad++;
			uint16_t idx = r.avail_idx;
			cr_assert_eq(
			    virtq_init(&q, &mem, QSIZE, r.desc_gpa, r.avail_gpa, r.used_gpa, 0), 0);
			q.last_avail = idx; /* resume where the driver is */
		}
	}
	racing = false;
	pthread_join(racer, NULL);
	cr_log_info("copy-once race: %u accepted, %u refused", good, bad);
}

/* ---- used ring, notification suppression ---- */

Test(virtio_virtq, push_publishes_and_checks_heads, .fini = teardown)
{
	fixture(0);
	struct vring_buf b = {DATA, 32, true};
	int head = vring_add(&r, &b, 1);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq(virtq_inflight(&q), 1);
	cr_expect_eq(virtq_push(&q, &c, 1000), 0);
	uint32_t id, len;
	cr_assert_eq(vring_get_used(&r, &id, &len), 1);
	cr_expect_eq(id, (uint32_t)head);
	cr_expect_eq(len, 32, "clamped to write_len");
	cr_expect_eq(virtq_push(&q, &c, 0), -EINVAL, "pushed twice");
	struct virtq_chain fake = {.head = QSIZE};
	cr_expect_eq(virtq_push(&q, &fake, 0), -EINVAL, "head out of range");
	fake.head = 3;
	cr_expect_eq(virtq_push(&q, &fake, 0), -EINVAL, "head never popped");
	cr_expect_eq(vring_used_idx(&r), 1);
	/* By head alone (TX): length 0, the same checks. */
	struct vring_buf rb = {DATA, 16, false};
	head = vring_add(&r, &rb, 1);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq(virtq_push_read(&q, c.head), 0);
	cr_assert_eq(vring_get_used(&r, &id, &len), 1);
	cr_expect_eq(id, (uint32_t)head);
	cr_expect_eq(len, 0);
	cr_expect_eq(virtq_push_read(&q, c.head), -EINVAL, "pushed twice");
	cr_expect_eq(virtq_push_read(&q, QSIZE), -EINVAL, "head out of range");
	cr_expect_eq(vring_used_idx(&r), 2);
}

Test(virtio_virtq, signal_without_event_idx, .fini = teardown)
{
	fixture(0);
	struct vring_buf b = {DATA, 8, true};
	cr_expect_not(virtq_should_signal(&q), "nothing pushed");
	vring_add(&r, &b, 1);
	vring_add(&r, &b, 1);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq(virtq_push(&q, &c, 8), 0);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq(virtq_push(&q, &c, 8), 0);
	cr_expect(virtq_should_signal(&q), "one signal for the batch");
	cr_expect_not(virtq_should_signal(&q), "not twice");
	vring_set_avail_flags(&r, VIRTQ_AVAIL_F_NO_INTERRUPT);
	vring_add(&r, &b, 1);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_expect_eq(virtq_push(&q, &c, 8), 0);
	cr_expect_not(virtq_should_signal(&q), "driver asked for no interrupts");
}

Test(virtio_virtq, event_idx_both_ways, .fini = teardown)
{
	fixture(F_EVENT_IDX);
	struct vring_buf b = {DATA, 8, true};
	for (int i = 0; i < 3; i++)
		vring_add(&r, &b, 1);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(virtq_pop(&q, &c), 1);
		cr_expect_eq(virtq_push(&q, &c, 8), 0);
	}
	cr_expect_eq(virtq_pop(&q, &c), 0);
	cr_expect_eq(vring_avail_event(&r), 3, "device asks for a kick at the next entry");
	cr_expect(virtq_should_signal(&q), "used_event 0 lies in [0, 3)");
	vring_set_used_event(&r, 5);
	for (int i = 0; i < 3; i++) {
		vring_add(&r, &b, 1);
		cr_assert_eq(virtq_pop(&q, &c), 1);
		cr_expect_eq(virtq_push(&q, &c, 8), 0);
		/* used idx goes 4, 5, 6: only publishing entry 5 crosses used_event. */
		cr_expect_eq(virtq_should_signal(&q), i == 2, "after used idx %d", 4 + i);
	}
	cr_expect_eq(virtq_pop(&q, &c), 0);
	cr_expect_eq(vring_avail_event(&r), 6);
}

Test(virtio_virtq, readers_and_writers, .fini = teardown)
{
	fixture(0);
	uint8_t *g = guest_mem_ptr(&mem, DATA, 64);
	for (int i = 0; i < 8; i++)
		g[i] = (uint8_t)i;
	struct vring_buf b[4] = {
	    {DATA, 3, false}, {DATA + 3, 5, false}, {DATA + 16, 4, true}, {DATA + 32, 4, true}};
	vring_add(&r, b, 4);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	struct virtq_reader rd;
	virtq_reader_init(&rd, &c);
	uint8_t out[16];
	cr_expect_eq(virtq_reader_remaining(&rd), 8);
	cr_expect_eq(virtq_reader_read(&rd, out, 2), 2);
	cr_expect_eq(virtq_reader_read(&rd, out + 2, 16), 6, "across segments, bounded");
	for (int i = 0; i < 8; i++)
		cr_expect_eq(out[i], i);
	cr_expect_eq(virtq_reader_read(&rd, out, 1), 0);

	struct virtq_writer w;
	virtq_writer_init(&w, &c);
	static const uint8_t in[6] = {9, 8, 7, 6, 5, 4};
	cr_expect_eq(virtq_writer_write(&w, in, 6), 6);
	cr_expect_eq(virtq_writer_written(&w), 6);
	cr_expect_eq(virtq_writer_remaining(&w), 2);
	cr_expect_eq(memcmp(g + 16, in, 4), 0);
	cr_expect_eq(memcmp(g + 32, in + 4, 2), 0);
	struct iovec iov[4];
	size_t n;
	cr_expect_eq(virtq_writer_iov(&w, iov, 4, 100, &n), 1);
	cr_expect_eq(n, 2);
	cr_expect_eq(iov[0].iov_base, g + 34);
	cr_expect_eq(virtq_writer_advance(&w, 100), 2);
	cr_expect_eq(virtq_writer_written(&w), 8);
	cr_expect_eq(virtq_writer_write(&w, in, 1), 0);

	virtq_reader_init(&rd, &c);
	cr_expect_eq(virtq_reader_iov(&rd, iov, 1, 100, &n), 1, "max iovecs honoured");
	cr_expect_eq(n, 3);
	cr_expect_eq(virtq_reader_iov(&rd, iov, 4, 4, &n), 2);
	cr_expect_eq(n, 4);
	cr_expect_eq(virtq_reader_advance(&rd, 4), 4);
	cr_expect_eq(virtq_reader_remaining(&rd), 4);
	cr_expect_eq(virtq_push(&q, &c, (uint32_t)virtq_writer_written(&w)), 0);
}

/* Property test: rings full of random bytes never yield a chain that reaches outside RAM. */
Test(virtio_virtq, random_rings_stay_inside_ram, .fini = teardown)
{
	fixture(F_INDIRECT | F_EVENT_IDX);
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	unsigned popped = 0, refused = 0;
	for (unsigned round = 0; round < 2000; round++) {
		uint8_t *desc = r.desc;
		for (unsigned i = 0; i < 16 * QSIZE; i += 8) {
			seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
			uint64_t v = seed;
			if (i % 16 == 0 && (v & 3)) /* mostly plausible addresses */
				v = (v & 1 ? DATA : TABLE) + (v >> 40);
			if (i % 16 == 8) /* len: small; flags: random; next: mostly in range */
				v = (v & 0x3ff) | (v & 0x7ull << 32) |
				    ((v >> 48) % (QSIZE + 2)) << 48;
			memcpy(desc + i, &v, 8);
		}
		memcpy(guest_mem_ptr(&mem, TABLE, 16 * QSIZE), desc, 16 * QSIZE);
		cr_assert_eq(virtq_init(&q, &mem, QSIZE, r.desc_gpa, r.avail_gpa, r.used_gpa,
		                        F_INDIRECT | F_EVENT_IDX),
		             0);
		vring_publish_raw(&r, (uint16_t)(seed % (QSIZE + 1)));
		q.last_avail = (uint16_t)(r.avail_idx - 1);
		int ret = virtq_pop(&q, &c);
		if (ret != 1) {
			cr_assert_lt(ret, 0);
			refused++;
			continue;
		}
		popped++;
		cr_assert_leq(c.nread + c.nwrite, QSIZE);
		uint64_t total = 0;
		for (unsigned k = 0; k < (unsigned)(c.nread + c.nwrite); k++) {
			const uint8_t *b = c.seg[k].iov_base;
			const struct guest_region *lo = &mem.regions[0], *hi = &mem.regions[1];
			bool in_lo = b >= lo->host && b + c.seg[k].iov_len <= lo->host + lo->size;
			bool in_hi = b >= hi->host && b + c.seg[k].iov_len <= hi->host + hi->size;
			cr_assert(in_lo || in_hi, "segment %u outside RAM", k);
			total += c.seg[k].iov_len;
		}
		cr_assert_eq(total, (uint64_t)c.read_len + c.write_len);
		cr_assert_eq(virtq_push(&q, &c, c.write_len), 0);
	}
	cr_log_info("random rings: %u chains accepted, %u refused", popped, refused);
	cr_expect_gt(popped, 0, "the generator should produce some valid chains");
}
