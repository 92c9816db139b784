/*
 * virtio-blk end to end through the host-side harness: a real device
 * process (forked, or jailed with the device's allowlist) on a temporary
 * raw image, driven through the bus socket, kicked by ioeventfd and
 * completing by irqfd. Data is always checked on the host file.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devices/virtio/blk.h"
#include "tests/common/facility.h"
#include "tests/harness/vdriver.h"

#define FEATURES                                                                                   \
	((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_EVENT_IDX) |                             \
	 (1ull << VIRTIO_F_INDIRECT_DESC) | (1ull << VIRTIO_BLK_F_FLUSH) |                         \
	 (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES) |                    \
	 (1ull << VIRTIO_BLK_F_MQ) | (1ull << VIRTIO_BLK_F_SEG_MAX) |                              \
	 (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_RO) |                             \
	 (1ull << VIRTIO_BLK_F_SIZE_MAX))

#define RAM        (64ull << 20)
#define HDR_BASE   VDRIVER_DATA_BASE                 /* q·8 KiB + slot·32: header, status at +16 */
#define TABLE_BASE (VDRIVER_DATA_BASE + 0x40000ull)  /* q·16 KiB + slot·64: indirect tables */
#define DATA_BASE  (VDRIVER_DATA_BASE + 0x200000ull) /* q·1 MiB + slot·4 KiB: data */

struct bt {
	struct vdriver v;
	char path[64];
	int fd; /* the test's own descriptor on the image (unlocked) */
	uint64_t size;
};

static uint64_t hdr_gpa(uint16_t q, unsigned slot)
{
	return HDR_BASE + 0x2000ull * q + 32ull * slot;
}

static uint64_t data_gpa(uint16_t q, unsigned slot)
{
	return DATA_BASE + 0x100000ull * q + 4096ull * slot;
}

static void *host(struct bt *t, uint64_t gpa, uint64_t len)
{
	void *p = guest_mem_ptr(&t->v.mem, gpa, len);
	cr_assert_not_null(p);
	return p;
}

static void make_image(struct bt *t, uint64_t size, const char *dir)
{
	snprintf(t->path, sizeof(t->path), "%s/ringvm-blk-XXXXXX", dir ? dir : "/tmp");
	t->fd = mkstemp(t->path);
	cr_assert_geq(t->fd, 0, "mkstemp: %s", strerror(errno));
	cr_assert_eq(ftruncate(t->fd, (off_t)size), 0);
	t->size = size;
}

static int try_start(struct bt *t, const char *extra, bool sandbox, unsigned ncpus, uint16_t qsize)
{
	char opts[256];
	snprintf(opts, sizeof(opts), "path=%s%s%s", t->path, extra && *extra ? "," : "",
	         extra ? extra : "");
	struct vdriver_params p = {
	    .device = "block", .opts = opts, .ram_size = RAM, .sandbox = sandbox, .ncpus = ncpus};
	int r = vdriver_spawn(&t->v, &p);
	if (sandbox && r < 0 && (r == -EPERM || r == -ENOSPC))
		REQUIRE_FACILITY(false, "cannot create the jail's namespaces here");
	if (r < 0)
		return r;
	return vdriver_setup(&t->v, FEATURES, qsize);
}

static void start(struct bt *t, uint64_t size, const char *extra, bool sandbox)
{
	REQUIRE_FACILITY(facility_io_uring(), "io_uring_setup unavailable");
	make_image(t, size, NULL);
	int r = try_start(t, extra, sandbox, 1, 64);
	cr_assert_eq(r, 0, "spawn/setup: %d (%s)", r, strerror(-r));
}

static void stop(struct bt *t)
{
	int st = vdriver_shutdown(&t->v);
	cr_expect(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "device exit status %#x", st);
	vdriver_destroy(&t->v);
	close(t->fd);
	unlink(t->path);
}

/* Queue one request on queue q in slot `slot` (indirect: header, data, status). */
static int submit(struct bt *t, uint16_t q, unsigned slot, uint32_t type, uint64_t sector,
                  uint64_t dgpa, uint32_t dlen, bool dev_writes)
{
	uint8_t *h = host(t, hdr_gpa(q, slot), 17);
	uint32_t ty = htole32(type), prio = 0;
	uint64_t se = htole64(sector);
	memcpy(h, &ty, 4);
	memcpy(h + 4, &prio, 4);
	memcpy(h + 8, &se, 8);
	h[16] = 0xee; /* status: overwritten by the device */
	struct vring_buf b[3];
	unsigned n = 0;
	b[n++] = (struct vring_buf){hdr_gpa(q, slot), BLK_HDR_LEN, false};
	if (dlen)
		b[n++] = (struct vring_buf){dgpa, dlen, dev_writes};
	b[n++] = (struct vring_buf){hdr_gpa(q, slot) + 16, 1, true};
	int head = vring_add_indirect(&t->v.ring[q], b, n, TABLE_BASE + 0x4000ull * q + 64ull * slot);
	cr_assert_geq(head, 0);
	return head;
}

static uint8_t status_of(struct bt *t, uint16_t q, unsigned slot)
{
	return *(uint8_t *)host(t, hdr_gpa(q, slot) + 16, 1);
}

/* Wait for one used entry on q; returns its head. */
static uint32_t reap_one(struct bt *t, uint16_t q, uint32_t *len)
{
	uint32_t id, l;
	cr_assert_eq(vdriver_wait_used(&t->v, q, VDRIVER_TIMEOUT_MS), 0, "no completion on q%u", q);
	cr_assert_eq(vring_get_used(&t->v.ring[q], &id, &l), 1);
	if (len)
		*len = l;
	return id;
}

/* One request, synchronously; returns its status. */
static uint8_t rq(struct bt *t, uint32_t type, uint64_t sector, uint64_t dgpa, uint32_t dlen,
                  bool dev_writes)
{
	int head = submit(t, 0, 0, type, sector, dgpa, dlen, dev_writes);
	cr_assert_eq(vdriver_kick(&t->v, 0), 0);
	cr_assert_eq(reap_one(t, 0, NULL), (uint32_t)head);
	return status_of(t, 0, 0);
}

/* One discard / write-zeroes request with the given segments. */
static uint8_t rq_dz(struct bt *t, uint32_t type, const struct blk_dz_seg *segs, unsigned n)
{
	uint8_t *d = host(t, data_gpa(0, 0), 16ull * n);
	for (unsigned i = 0; i < n; i++) {
		uint64_t s = htole64(segs[i].sector);
		uint32_t c = htole32(segs[i].num_sectors), f = htole32(segs[i].flags);
		memcpy(d + 16 * i, &s, 8);
		memcpy(d + 16 * i + 8, &c, 4);
		memcpy(d + 16 * i + 12, &f, 4);
	}
	return rq(t, type, 0, data_gpa(0, 0), 16 * n, false);
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((seed * 2654435761u + i * 40503u) >> 7);
}

static uint64_t cfg64(struct bt *t, unsigned off, unsigned len)
{
	uint64_t v = 0;
	cr_assert_eq(vdriver_bar_read(&t->v, VIRTIO_PCI_DEVCFG_OFF + off, len, &v), 0);
	return v;
}

Test(virtio_blk, config_space_and_features)
{
	struct bt t;
	start(&t, 8 << 20, "queues=3,id=disk-one", false);
	cr_expect_eq(cfg64(&t, 0, 8), (8u << 20) / 512, "capacity");
	cr_expect_eq(cfg64(&t, 12, 4), 254, "seg_max = queue size - 2");
	cr_expect_eq(cfg64(&t, 20, 4), 512, "blk_size");
	cr_expect_eq(cfg64(&t, 34, 2), 3, "num_queues");
	cr_expect_eq(cfg64(&t, 40, 4), BLK_MAX_SEG, "max_discard_seg");
	cr_expect_eq(cfg64(&t, 56, 1), 1, "write_zeroes_may_unmap");
	cr_expect_eq(t.v.nqueues, 3);
	uint64_t f = t.v.features;
	cr_expect(f & (1ull << VIRTIO_BLK_F_FLUSH) && f & (1ull << VIRTIO_BLK_F_DISCARD) &&
	          f & (1ull << VIRTIO_BLK_F_WRITE_ZEROES) && f & (1ull << VIRTIO_BLK_F_MQ) &&
	          f & (1ull << VIRTIO_F_EVENT_IDX) && !(f & (1ull << VIRTIO_BLK_F_RO)),
	          "features %#llx", (unsigned long long)f);
	stop(&t);
}

Test(virtio_blk, read_only_config)
{
	struct bt t;
	start(&t, 1 << 20, "ro,discard=on", false);
	uint64_t f = t.v.features;
	cr_expect(f & (1ull << VIRTIO_BLK_F_RO));
	cr_expect_not(f & (1ull << VIRTIO_BLK_F_DISCARD));
	cr_expect_not(f & (1ull << VIRTIO_BLK_F_WRITE_ZEROES));
	cr_expect_eq(cfg64(&t, 34, 2), 1, "one queue for one vCPU");
	stop(&t);
}

static void rw_roundtrip(bool sandbox)
{
	struct bt t;
	start(&t, 4 << 20, NULL, sandbox);
	uint8_t *buf = host(&t, data_gpa(0, 1), 8192);
	/* OUT: the guest's bytes land in the file. */
	fill(buf, 8192, 7);
	cr_assert_eq(rq(&t, VIRTIO_BLK_T_OUT, 100, data_gpa(0, 1), 8192, false), VIRTIO_BLK_S_OK);
	uint8_t file[8192];
	cr_assert_eq(pread(t.fd, file, sizeof(file), 100 * 512), (ssize_t)sizeof(file));
	cr_expect_eq(memcmp(file, buf, sizeof(file)), 0, "write did not reach the file");
	/* IN: the file's bytes land in guest RAM. */
	fill(file, sizeof(file), 99);
	cr_assert_eq(pwrite(t.fd, file, sizeof(file), 2000 * 512), (ssize_t)sizeof(file));
	memset(buf, 0, 8192);
	cr_assert_eq(rq(&t, VIRTIO_BLK_T_IN, 2000, data_gpa(0, 1), 8192, true), VIRTIO_BLK_S_OK);
	cr_expect_eq(memcmp(file, buf, sizeof(file)), 0, "read returned other bytes");
	/* The last sector is readable; one past it is not. */
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_IN, (4 << 20) / 512 - 1, data_gpa(0, 1), 512, true),
	             VIRTIO_BLK_S_OK);
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_IN, (4 << 20) / 512, data_gpa(0, 1), 512, true),
	             VIRTIO_BLK_S_IOERR);
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_OK);
	stop(&t);
}

Test(virtio_blk, read_write_flush)
{
	rw_roundtrip(false);
}

Test(virtio_blk, read_write_flush_sandboxed)
{
	rw_roundtrip(true);
}

Test(virtio_blk, get_id)
{
	struct bt t;
	start(&t, 1 << 20, "id=serial-0123456789", false);
	char *id = host(&t, data_gpa(0, 0), 32);
	memset(id, 'x', 32);
	cr_assert_eq(rq(&t, VIRTIO_BLK_T_GET_ID, 0, data_gpa(0, 0), 20, true), VIRTIO_BLK_S_OK);
	cr_expect_eq(memcmp(id, "serial-0123456789\0\0\0", 20), 0, "id '%.20s'", id);
	cr_expect_eq(id[20], 'x', "wrote past the 20 bytes");
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_GET_ID, 0, data_gpa(0, 0), 19, true), VIRTIO_BLK_S_IOERR,
	             "short buffer");
	stop(&t);

	/* The default is derived from the path: the file name. */
	start(&t, 1 << 20, NULL, false);
	id = host(&t, data_gpa(0, 0), 32);
	cr_assert_eq(rq(&t, VIRTIO_BLK_T_GET_ID, 0, data_gpa(0, 0), 20, true), VIRTIO_BLK_S_OK);
	const char *base = strrchr(t.path, '/') + 1;
	cr_expect_eq(strncmp(id, base, 20), 0, "id '%.20s' vs '%s'", id, base);
	stop(&t);
}

static bool file_is_zero(int fd, uint64_t off, size_t len)
{
	uint8_t b[4096];
	while (len) {
		size_t n = len < sizeof(b) ? len : sizeof(b);
		cr_assert_eq(pread(fd, b, n, (off_t)off), (ssize_t)n);
		for (size_t i = 0; i < n; i++)
			if (b[i])
				return false;
		off += n;
		len -= n;
	}
	return true;
}

Test(virtio_blk, discard_and_write_zeroes_sandboxed)
{
	struct bt t;
	start(&t, 4 << 20, NULL, true); /* FALLOCATE through the restricted ring */
	static uint8_t ones[1 << 20];
	memset(ones, 0xa5, sizeof(ones));
	cr_assert_eq(pwrite(t.fd, ones, sizeof(ones), 0), (ssize_t)sizeof(ones));
	struct blk_dz_seg d[2] = {{.sector = 8, .num_sectors = 8}, {.sector = 64, .num_sectors = 16}};
	cr_assert_eq(rq_dz(&t, VIRTIO_BLK_T_DISCARD, d, 2), VIRTIO_BLK_S_OK);
	cr_expect(file_is_zero(t.fd, 8 * 512, 8 * 512), "discarded range not zero");
	cr_expect(file_is_zero(t.fd, 64 * 512, 16 * 512));
	cr_expect_not(file_is_zero(t.fd, 16 * 512, 512), "discard went too far");
	struct blk_dz_seg z = {.sector = 200, .num_sectors = 3};
	cr_assert_eq(rq_dz(&t, VIRTIO_BLK_T_WRITE_ZEROES, &z, 1), VIRTIO_BLK_S_OK);
	cr_expect(file_is_zero(t.fd, 200 * 512, 3 * 512));
	cr_expect_not(file_is_zero(t.fd, 203 * 512, 512));
	z = (struct blk_dz_seg){.sector = 300, .num_sectors = 8, .flags = VIRTIO_BLK_WZ_F_UNMAP};
	cr_assert_eq(rq_dz(&t, VIRTIO_BLK_T_WRITE_ZEROES, &z, 1), VIRTIO_BLK_S_OK);
	cr_expect(file_is_zero(t.fd, 300 * 512, 8 * 512));
	/* Hostile: bad flags, past the end, too many segments, a partial segment. */
	z = (struct blk_dz_seg){.sector = 0, .num_sectors = 1, .flags = 2};
	cr_expect_eq(rq_dz(&t, VIRTIO_BLK_T_WRITE_ZEROES, &z, 1), VIRTIO_BLK_S_UNSUPP);
	z = (struct blk_dz_seg){.sector = 0, .num_sectors = 1, .flags = VIRTIO_BLK_WZ_F_UNMAP};
	cr_expect_eq(rq_dz(&t, VIRTIO_BLK_T_DISCARD, &z, 1), VIRTIO_BLK_S_UNSUPP);
	z = (struct blk_dz_seg){.sector = (4 << 20) / 512 - 1, .num_sectors = 2};
	cr_expect_eq(rq_dz(&t, VIRTIO_BLK_T_DISCARD, &z, 1), VIRTIO_BLK_S_IOERR);
	z = (struct blk_dz_seg){.sector = UINT64_MAX - 1, .num_sectors = 4};
	cr_expect_eq(rq_dz(&t, VIRTIO_BLK_T_WRITE_ZEROES, &z, 1), VIRTIO_BLK_S_IOERR);
	static struct blk_dz_seg many[BLK_MAX_SEG + 1];
	for (unsigned i = 0; i <= BLK_MAX_SEG; i++)
		many[i] = (struct blk_dz_seg){.sector = i, .num_sectors = 1};
	cr_expect_eq(rq_dz(&t, VIRTIO_BLK_T_DISCARD, many, BLK_MAX_SEG + 1), VIRTIO_BLK_S_IOERR);
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_DISCARD, 0, data_gpa(0, 0), 8, false), VIRTIO_BLK_S_IOERR);
	cr_expect_not(file_is_zero(t.fd, 0, 512), "a refused request touched the file");
	stop(&t);
}

Test(virtio_blk, read_only_refuses_writes)
{
	struct bt t;
	start(&t, 1 << 20, "ro", false);
	uint8_t before[512], after[512];
	fill(before, sizeof(before), 3);
	cr_assert_eq(pwrite(t.fd, before, 512, 4096), 512);
	fill(host(&t, data_gpa(0, 0), 512), 512, 4);
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_OUT, 8, data_gpa(0, 0), 512, false), VIRTIO_BLK_S_IOERR);
	struct blk_dz_seg z = {.sector = 8, .num_sectors = 1};
	cr_expect_eq(rq_dz(&t, VIRTIO_BLK_T_DISCARD, &z, 1), VIRTIO_BLK_S_IOERR);
	cr_expect_eq(rq_dz(&t, VIRTIO_BLK_T_WRITE_ZEROES, &z, 1), VIRTIO_BLK_S_IOERR);
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_OK);
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_IN, 8, data_gpa(0, 0), 512, true), VIRTIO_BLK_S_OK);
	cr_assert_eq(pread(t.fd, after, 512, 4096), 512);
	cr_expect_eq(memcmp(before, after, 512), 0, "read-only image changed");
	cr_expect_eq(memcmp(host(&t, data_gpa(0, 0), 512), before, 512), 0);
	stop(&t);
}

Test(virtio_blk, qcow2_magic_in_sector0_refused)
{
	struct bt t;
	start(&t, 1 << 20, NULL, false); /* format auto → raw */
	uint8_t *buf = host(&t, data_gpa(0, 0), 4096);
	memset(buf, 0, 4096);
	memcpy(buf, DISK_QCOW2_MAGIC, 4);
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_OUT, 0, data_gpa(0, 0), 4096, false), VIRTIO_BLK_S_IOERR);
	cr_expect(file_is_zero(t.fd, 0, 4096), "the magic reached the image");
	/* Anywhere else it is just data, and sector 0 takes anything else. */
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_OUT, 1, data_gpa(0, 0), 4096, false), VIRTIO_BLK_S_OK);
	buf[0] = 'q';
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_OUT, 0, data_gpa(0, 0), 4096, false), VIRTIO_BLK_S_OK);
	uint8_t got[4096];
	cr_assert_eq(pread(t.fd, got, sizeof(got), 0), (ssize_t)sizeof(got));
	cr_expect_eq(memcmp(got, buf, sizeof(got)), 0, "a sector-0 write was not written whole");
	stop(&t);

	/* format=raw given explicitly: the user said what the file is. */
	start(&t, 1 << 20, "format=raw", false);
	buf = host(&t, data_gpa(0, 0), 512);
	memset(buf, 0, 512);
	memcpy(buf, DISK_QCOW2_MAGIC, 4);
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_OUT, 0, data_gpa(0, 0), 512, false), VIRTIO_BLK_S_OK);
	stop(&t);
}

/* Hostile headers (hostile inputs 12): every one gets a status, none kills the device. */
Test(virtio_blk, hostile_headers_through_the_process)
{
	struct bt t;
	start(&t, 1 << 20, NULL, false);
	enum { cap = (1 << 20) / 512 };
	static const struct {
		uint32_t type;
		uint64_t sector;
		uint32_t len;
		bool dev_writes;
		uint8_t want;
	} cases[] = {
	    {VIRTIO_BLK_T_IN, 0, 511, true, VIRTIO_BLK_S_IOERR},        /* not whole sectors */
	    {VIRTIO_BLK_T_OUT, 0, 513, false, VIRTIO_BLK_S_IOERR},
	    {VIRTIO_BLK_T_IN, UINT64_MAX, 512, true, VIRTIO_BLK_S_IOERR}, /* sector overflow */
	    {VIRTIO_BLK_T_IN, UINT64_MAX / 512 + 1, 512, true, VIRTIO_BLK_S_IOERR},
	    {VIRTIO_BLK_T_OUT, cap - 1, 1024, false, VIRTIO_BLK_S_IOERR}, /* past the end */
	    {VIRTIO_BLK_T_IN, cap, 0, true, VIRTIO_BLK_S_OK},              /* empty, at the end */
	    {VIRTIO_BLK_T_FLUSH, 0, 512, false, VIRTIO_BLK_S_IOERR},       /* flush with data */
	    {VIRTIO_BLK_T_FLUSH, 0, 512, true, VIRTIO_BLK_S_IOERR},
	    {7, 0, 512, true, VIRTIO_BLK_S_UNSUPP},                        /* unknown types */
	    {0xffffffffu, 0, 0, false, VIRTIO_BLK_S_UNSUPP},
	    {VIRTIO_BLK_T_GET_ID, 0, 8, true, VIRTIO_BLK_S_IOERR},         /* short id buffer */
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(rq(&t, cases[i].type, cases[i].sector, data_gpa(0, 0), cases[i].len,
		                cases[i].dev_writes),
		             cases[i].want, "case %u", i);
	/* Header in a writable descriptor / too short: IOERR. No status byte: length 0. */
	struct vring_buf b[2] = {{hdr_gpa(0, 0), 16, true}, {hdr_gpa(0, 0) + 16, 1, true}};
	uint8_t *st = host(&t, hdr_gpa(0, 0) + 16, 1);
	*st = 0xee;
	cr_assert_geq(vring_add(&t.v.ring[0], b, 2), 0);
	cr_assert_eq(vdriver_kick(&t.v, 0), 0);
	uint32_t len;
	reap_one(&t, 0, &len);
	cr_expect_eq(*st, VIRTIO_BLK_S_IOERR, "header not readable");
	struct vring_buf ro[1] = {{hdr_gpa(0, 0), 17, false}};
	cr_assert_geq(vring_add(&t.v.ring[0], ro, 1), 0);
	cr_assert_eq(vdriver_kick(&t.v, 0), 0);
	reap_one(&t, 0, &len);
	cr_expect_eq(len, 0, "no writable status byte: nothing written");
	/* Still serving, and every one of them was counted. */
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_IN, 0, data_gpa(0, 0), 512, true), VIRTIO_BLK_S_OK);
	struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t.v, &m), 0);
	cr_expect_eq(m.requests, sizeof(cases) / sizeof(cases[0]) + 3);
	cr_expect_eq(m.errors, sizeof(cases) / sizeof(cases[0]) - 1 + 2);
	stop(&t);
}

/*
 * Many requests in flight on several queues of a jailed device: random 4 KiB
 * writes of distinct contents, then reads of all of them; the file and the
 * reads must agree with what was written.
 */
static void many_in_flight(bool sandbox)
{
	struct bt t;
	REQUIRE_FACILITY(facility_io_uring(), "io_uring_setup unavailable");
	make_image(&t, 16 << 20, NULL);
	const uint16_t nq = 4;
	const unsigned depth = 64, rounds = 3;
	int r = try_start(&t, NULL, sandbox, nq, 128);
	cr_assert_eq(r, 0, "spawn/setup: %d", r);
	cr_assert_eq(t.v.nqueues, nq, "queues default to the vCPU count");
	static uint32_t sector_of[4][64];
	for (unsigned round = 0; round < rounds; round++) {
		bool reading = round == rounds - 1;
		for (uint16_t q = 0; q < nq; q++)
			for (unsigned s = 0; s < depth; s++) {
				if (!reading) {
					/* Distinct 4 KiB blocks per (q, slot): no two writes overlap. */
					sector_of[q][s] = 8u * (((round * 7 + s) % depth) * nq + q);
					fill(host(&t, data_gpa(q, s), 4096), 4096,
					     sector_of[q][s] * 31 + round);
				} else {
					memset(host(&t, data_gpa(q, s), 4096), 0, 4096);
				}
				submit(&t, q, s, reading ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT,
				       sector_of[q][s], data_gpa(q, s), 4096, reading);
			}
		for (uint16_t q = 0; q < nq; q++)
			cr_assert_eq(vdriver_kick(&t.v, q), 0);
		for (uint16_t q = 0; q < nq; q++)
			for (unsigned n = 0; n < depth; n++) {
				uint32_t len;
				reap_one(&t, q, &len);
			}
		for (uint16_t q = 0; q < nq; q++)
			for (unsigned s = 0; s < depth; s++) {
				cr_assert_eq(status_of(&t, q, s), VIRTIO_BLK_S_OK, "q%u slot %u", q, s);
				uint8_t want[4096], file[4096];
				fill(want, 4096, sector_of[q][s] * 31 + (reading ? round - 1 : round));
				cr_assert_eq(pread(t.fd, file, 4096, sector_of[q][s] * 512ll), 4096);
				cr_assert_eq(memcmp(file, want, 4096), 0, "file: q%u slot %u", q, s);
				if (reading)
					cr_assert_eq(memcmp(host(&t, data_gpa(q, s), 4096), want, 4096), 0,
					             "read: q%u slot %u", q, s);
			}
	}
	struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t.v, &m), 0);
	cr_expect_eq(m.requests, (uint64_t)nq * depth * rounds);
	cr_expect_eq(m.writes, (uint64_t)nq * depth * (rounds - 1));
	cr_expect_eq(m.bytes_read, (uint64_t)nq * depth * 4096);
	cr_expect_eq(m.errors, 0);
	cr_expect_eq(m.inflight, 0);
	cr_expect_geq(m.max_inflight, depth, "requests were served one at a time (max %llu)",
	              (unsigned long long)m.max_inflight);
	cr_expect_lt(m.interrupts, m.requests, "completions were not batched");
	stop(&t);
}

Test(virtio_blk, multiqueue_many_in_flight)
{
	many_in_flight(false);
}

Test(virtio_blk, multiqueue_many_in_flight_sandboxed)
{
	many_in_flight(true);
}

Test(virtio_blk, metrics_round_trip)
{
	struct bt t;
	start(&t, 1 << 20, NULL, false);
	for (unsigned i = 0; i < 10; i++)
		cr_assert_eq(rq(&t, VIRTIO_BLK_T_IN, i, data_gpa(0, 0), 1024, true), VIRTIO_BLK_S_OK);
	for (unsigned i = 0; i < 5; i++)
		cr_assert_eq(rq(&t, VIRTIO_BLK_T_OUT, i, data_gpa(0, 0), 512, false), VIRTIO_BLK_S_OK);
	cr_assert_eq(rq(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_OK);
	cr_assert_eq(rq(&t, 99, 0, 0, 0, false), VIRTIO_BLK_S_UNSUPP);
	struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t.v, &m), 0);
	cr_expect_eq(m.version, IPC_METRICS_VERSION);
	cr_expect_str_eq(m.name, "virtio-blk");
	cr_expect_eq(m.requests, 17);
	cr_expect_eq(m.reads, 10);
	cr_expect_eq(m.writes, 5);
	cr_expect_eq(m.flushes, 1);
	cr_expect_eq(m.other, 1);
	cr_expect_eq(m.errors, 1);
	cr_expect_eq(m.bytes_read, 10 * 1024);
	cr_expect_eq(m.bytes_written, 5 * 512);
	cr_expect_eq(m.svc_count, 17);
	cr_expect_geq(m.notifications, 17);
	cr_expect_geq(m.interrupts, 17, "one interrupt per synchronous request");
	uint64_t p50 = ipc_metrics_percentile(&m, 50), p99 = ipc_metrics_percentile(&m, 99);
	cr_expect(p50 > 0 && p50 <= p99 && p99 <= m.svc_max_ns * 9 / 8 + 1, "p50 %llu p99 %llu max %llu",
	          (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)m.svc_max_ns);
	uint64_t n = 0;
	for (unsigned b = 0; b < IPC_METRICS_BUCKETS; b++)
		n += m.svc_hist[b];
	cr_expect_eq(n, 17);
	cr_log_info("blk service time through the harness: p50 %.1f us, p99 %.1f us, max %.1f us",
	            p50 / 1e3, p99 / 1e3, m.svc_max_ns / 1e3);
	stop(&t);
}

/* A reset while requests are in flight: they finish, then the device serves again. */
Test(virtio_blk, reset_with_requests_in_flight)
{
	struct bt t;
	start(&t, 4 << 20, NULL, false);
	for (unsigned s = 0; s < 32; s++)
		submit(&t, 0, s, VIRTIO_BLK_T_OUT, 8ull * s, data_gpa(0, s), 4096, false);
	cr_assert_eq(vdriver_kick(&t.v, 0), 0);
	cr_assert_eq(vdriver_setup(&t.v, FEATURES, 64), 0);
	struct ipc_metrics m;
	cr_assert_eq(vdriver_metrics(&t.v, &m), 0);
	cr_expect_eq(m.inflight, 0, "reset left requests in flight");
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_IN, 0, data_gpa(0, 0), 4096, true), VIRTIO_BLK_S_OK);
	stop(&t);
}

/* ENOSPC from the host is the request's IOERR, and the device carries on (hostile inputs 25). */
Test(virtio_blk, host_enospc_is_ioerr)
{
	REQUIRE_FACILITY(facility_root(), "mounting a small tmpfs needs root");
	REQUIRE_FACILITY(facility_io_uring(), "io_uring_setup unavailable");
	char dir[] = "/tmp/ringvm-enospc-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	if (mount("ringvm-test", dir, "tmpfs", 0, "size=256k") < 0) {
		rmdir(dir);
		REQUIRE_FACILITY(false, "cannot mount tmpfs here");
	}
	struct bt t;
	make_image(&t, 4 << 20, dir); /* sparse: 4 MiB of disk on 256 KiB of space */
	cr_assert_eq(try_start(&t, NULL, true, 1, 64), 0);
	uint8_t *buf = host(&t, data_gpa(0, 0), 64 * 1024);
	fill(buf, 64 * 1024, 5);
	unsigned failed = 0;
	for (unsigned i = 0; i < 16 && !failed; i++) {
		uint8_t st = rq(&t, VIRTIO_BLK_T_OUT, 128ull * i, data_gpa(0, 0), 64 * 1024, false);
		cr_assert(st == VIRTIO_BLK_S_OK || st == VIRTIO_BLK_S_IOERR);
		failed += st == VIRTIO_BLK_S_IOERR;
	}
	cr_expect_gt(failed, 0, "1 MiB of writes fit into 256 KiB?");
	cr_expect(vdriver_alive(&t.v));
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_IN, 0, data_gpa(0, 0), 4096, true), VIRTIO_BLK_S_OK);
	cr_expect_eq(rq(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_OK);
	stop(&t);
	/* The ring's teardown (and its reference on the image) finishes
	 * asynchronously in the kernel after the device exits: retry. */
	int r = -1;
	for (int i = 0; i < 200 && (r = umount(dir)) < 0 && errno == EBUSY; i++)
		usleep(10000);
	cr_expect_eq(r, 0, "umount: %s", strerror(errno));
	if (r < 0)
		(void)umount2(dir, MNT_DETACH);
	rmdir(dir);
}
