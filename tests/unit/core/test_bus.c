/* bus: overlap rejection, lookup at range edges, zero-fill, moves. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "core/bus.h"

static unsigned reads, writes;
static uint64_t last_off;

static void rd(void *opaque, uint64_t off, uint8_t *data, unsigned len)
{
	reads++;
	last_off = off;
	memset(data, (int)(uintptr_t)opaque, len);
}

static void wr(void *opaque, uint64_t off, const uint8_t *data, unsigned len)
{
	(void)opaque, (void)data, (void)len;
	writes++;
	last_off = off;
}

static const struct bus_ops ops = {.name = "t", .read = rd, .write = wr};

static struct bus bus;

static void setup(void)
{
	reads = writes = 0;
	cr_assert_eq(bus_init(&bus, "test"), 0);
}

static void teardown(void)
{
	bus_destroy(&bus);
}

TestSuite(core_bus, .init = setup, .fini = teardown);

Test(core_bus, lookup_edges)
{
	cr_assert_eq(bus_add(&bus, 0x100, 0x10, &ops, (void *)1), 0);
	cr_assert_eq(bus_add(&bus, 0x200, 0x1, &ops, (void *)2), 0);
	cr_assert_null(bus_lookup(&bus, 0xff));
	cr_assert_not_null(bus_lookup(&bus, 0x100));
	cr_assert_not_null(bus_lookup(&bus, 0x10f));
	cr_assert_null(bus_lookup(&bus, 0x110));
	cr_assert_null(bus_lookup(&bus, 0x1ff));
	cr_assert_eq(bus_lookup(&bus, 0x200)->opaque, (void *)2);
	cr_assert_null(bus_lookup(&bus, 0x201));
	cr_assert_null(bus_lookup(&bus, 0));
	cr_assert_null(bus_lookup(&bus, UINT64_MAX));
}

struct overlap_case {
	uint64_t base, len;
	int expect;
};

Test(core_bus, overlap_rejected)
{
	static const struct overlap_case cases[] = {
		{0x100, 0x10, -EEXIST}, /* identical */
		{0x0f8, 0x10, -EEXIST}, /* covers start */
		{0x10f, 0x01, -EEXIST}, /* last byte */
		{0x0f0, 0x40, -EEXIST}, /* encloses */
		{0x104, 0x02, -EEXIST}, /* inside */
		{0x0f0, 0x10, 0},       /* ends right before */
		{0x110, 0x10, 0},       /* starts right after */
		{0x300, 0, -EINVAL},    /* empty */
		{UINT64_MAX - 1, 4, -EINVAL}, /* wraps */
	};
	cr_assert_eq(bus_add(&bus, 0x100, 0x10, &ops, NULL), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = bus_add(&bus, cases[i].base, cases[i].len, &ops, NULL);
		cr_expect_eq(r, cases[i].expect, "case %zu: got %d", i, r);
		if (r == 0)
			cr_assert_eq(bus_remove(&bus, cases[i].base), 0);
	}
}

Test(core_bus, unclaimed_reads_zero_and_counts)
{
	uint8_t buf[8];
	memset(buf, 0xaa, sizeof(buf));
	bus_read(&bus, 0x1234, buf, 8);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(buf[i], 0);
	bus_write(&bus, 0x1234, buf, 4);
	cr_assert_eq(atomic_load(&bus.unclaimed_reads), 1);
	cr_assert_eq(atomic_load(&bus.unclaimed_writes), 1);
	cr_assert_eq(reads + writes, 0);
}

Test(core_bus, dispatch_offsets)
{
	uint8_t buf[4] = {0};
	cr_assert_eq(bus_add(&bus, 0x3f8, 8, &ops, (void *)0x5a), 0);
	bus_read(&bus, 0x3fd, buf, 1);
	cr_assert_eq(buf[0], 0x5a);
	cr_assert_eq(last_off, 5);
	bus_write(&bus, 0x3f8, buf, 1);
	cr_assert_eq(last_off, 0);
	cr_assert_eq(writes, 1);
}

Test(core_bus, many_ranges_binary_search)
{
	for (uint64_t i = 0; i < 200; i++)
		cr_assert_eq(bus_add(&bus, (199 - i) * 0x1000, 0x800, &ops, (void *)(uintptr_t)i), 0);
	for (uint64_t i = 0; i < 200; i++) {
		const struct bus_range *r = bus_lookup(&bus, i * 0x1000 + 0x7ff);
		cr_assert_not_null(r);
		cr_assert_eq(r->base, i * 0x1000);
		cr_assert_null(bus_lookup(&bus, i * 0x1000 + 0x800));
	}
}

Test(core_bus, move_and_remove)
{
	cr_assert_eq(bus_add(&bus, 0xc0000000, 0x1000, &ops, NULL), 0);
	cr_assert_eq(bus_add(&bus, 0xc0002000, 0x1000, &ops, NULL), 0);
	const struct bus_range *old = bus_lookup(&bus, 0xc0000000);
	cr_assert_eq(bus_move(&bus, 0xc0000000, 0xc0001800), -EEXIST);
	cr_assert_eq(bus_move(&bus, 0xc0000000, 0xd0000000), 0);
	cr_assert_null(bus_lookup(&bus, 0xc0000000));
	cr_assert_not_null(bus_lookup(&bus, 0xd0000fff));
	/* A pointer from an older table stays readable until bus_destroy. */
	cr_assert_eq(old->base, 0xc0000000);
	cr_assert_eq(bus_move(&bus, 0x1, 0x2), -ENOENT);
	cr_assert_eq(bus_remove(&bus, 0xd0000000), 0);
	cr_assert_eq(bus_remove(&bus, 0xd0000000), -ENOENT);
}
