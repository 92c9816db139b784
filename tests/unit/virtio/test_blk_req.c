/*
 * virtio-blk's pure half: `--block` option parsing and the request checker
 * (hostile inputs 12 and 13), table-driven on hand-built chains: no device
 * process, no guest memory.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <string.h>

#include "devices/virtio/blk.h"
#include "devices/virtio/virtio_device.h"

/* ---- options ---- */

Test(virtio_blk_req, options_table)
{
	static const struct {
		const char *opts;
		unsigned ncpus;
		int rc;
		const char *path;
		enum disk_format format;
		bool ro, direct, discard;
		unsigned queues, qsize;
		const char *id;
	} cases[] = {
	    {"path=/a/b.img", 1, 0, "/a/b.img", DISK_FORMAT_AUTO, 0, 0, 1, 1, 256, "b.img"},
	    {"/a/b.img,ro", 4, 0, "/a/b.img", DISK_FORMAT_AUTO, 1, 0, 1, 4, 256, "b.img"},
	    {"path=x,format=raw,direct,id=abc,queues=3,queue-size=64,discard=off", 2, 0, "x",
	     DISK_FORMAT_RAW, 0, 1, 0, 3, 64, "abc"},
	    {"path=x,format=qcow2", 1, 0, "x", DISK_FORMAT_QCOW2, 0, 0, 1, 1, 256, "x"},
	    {"path=x,ro=off,direct=on", 1, 0, "x", DISK_FORMAT_AUTO, 0, 1, 1, 1, 256, "x"},
	    {"path=/d/a-very-long-file-name-indeed.raw", 64, 0, "/d/a-very-long-file-name-indeed.raw",
	     DISK_FORMAT_AUTO, 0, 0, 1, VIRTIO_MAX_QUEUES, 256, "a-very-long-file-nam"},
	    {"path=x,id=12345678901234567890", 1, 0, "x", DISK_FORMAT_AUTO, 0, 0, 1, 1, 256,
	     "12345678901234567890"},
	    {"", 1, -EINVAL},
	    {"ro", 1, -EINVAL},
	    {"path=", 1, -EINVAL},
	    {"path=a,path=b", 1, -EINVAL},
	    {"path=a,", 1, 0, "a", DISK_FORMAT_AUTO, 0, 0, 1, 1, 256, "a"},
	    {"path=a,,ro", 1, -EINVAL},
	    {"path=a,format=", 1, -EINVAL},
	    {"path=a,format=vmdk", 1, -EINVAL},
	    {"path=a,queues=0", 1, -EINVAL},
	    {"path=a,queues=17", 1, -EINVAL},
	    {"path=a,queues=-1", 1, -EINVAL},
	    {"path=a,queues=99999999999", 1, -EINVAL},
	    {"path=a,queue-size=1", 1, -EINVAL},
	    {"path=a,queue-size=96", 1, -EINVAL},
	    {"path=a,queue-size=512", 1, -EINVAL},
	    {"path=a,id=", 1, -EINVAL},
	    {"path=a,id=123456789012345678901", 1, -EINVAL},
	    {"path=a,id=has space", 1, -EINVAL},
	    {"path=a,discard=yes", 1, -EINVAL},
	    {"path=a,ro=maybe", 1, -EINVAL},
	    {"path=a,sparse", 1, -EINVAL},
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct blk_opts o;
		char err[256] = "";
		int rc = blk_parse_opts(cases[i].opts, cases[i].ncpus, &o, err, sizeof(err));
		cr_expect_eq(rc, cases[i].rc, "case %u '%s': %d (%s)", i, cases[i].opts, rc, err);
		if (rc < 0) {
			cr_expect_eq(strncmp(err, "--block: ", 9), 0, "case %u: message '%s'", i, err);
			continue;
		}
		cr_expect_str_eq(o.path, cases[i].path, "case %u", i);
		cr_expect_eq(o.format, cases[i].format, "case %u", i);
		cr_expect_eq(o.read_only, cases[i].ro, "case %u", i);
		cr_expect_eq(o.direct, cases[i].direct, "case %u", i);
		cr_expect_eq(o.discard, cases[i].discard, "case %u", i);
		cr_expect_eq(o.queues, cases[i].queues, "case %u", i);
		cr_expect_eq(o.queue_size, cases[i].qsize, "case %u", i);
		cr_expect_str_eq(o.id, cases[i].id, "case %u", i);
	}
}

Test(virtio_blk_req, default_id)
{
	char id[BLK_ID_BYTES + 1];
	blk_default_id("/var/lib/img/root.raw", id);
	cr_expect_str_eq(id, "root.raw");
	blk_default_id("disk", id);
	cr_expect_str_eq(id, "disk");
	blk_default_id("/dev/dir/", id);
	cr_expect_str_eq(id, "dir");
}

/* ---- requests ---- */

#define CAP 2048 /* sectors: a 1 MiB disk */

struct chain_spec {
	uint32_t hdr_len;  /* readable header bytes (16 normally) */
	bool split_hdr;    /* header in two descriptors of 8 */
	uint32_t type;
	uint64_t sector;
	uint32_t rdata;    /* readable data after the header (segments for DISCARD/WZ) */
	uint32_t wdata;    /* writable data before the status */
	bool no_status;    /* no writable byte at all */
	unsigned nseg;     /* DISCARD/WZ: segments written into the readable data */
	struct blk_dz_seg seg[BLK_MAX_SEG + 1];
};

static uint8_t hdr[32], rbuf[4096], wbuf[4096];

static void build(const struct chain_spec *s, struct virtq_chain *c)
{
	memset(c, 0, sizeof(*c));
	uint32_t ty = htole32(s->type);
	uint64_t se = htole64(s->sector);
	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, &ty, 4);
	memcpy(hdr + 8, &se, 8);
	unsigned n = 0;
	if (s->split_hdr) {
		c->seg[n++] = (struct iovec){hdr, 8};
		c->seg[n++] = (struct iovec){hdr + 8, s->hdr_len - 8};
	} else if (s->hdr_len) {
		c->seg[n++] = (struct iovec){hdr, s->hdr_len};
	}
	for (unsigned i = 0; i < s->nseg && 16 * (i + 1) <= sizeof(rbuf); i++) {
		uint64_t sec = htole64(s->seg[i].sector);
		uint32_t num = htole32(s->seg[i].num_sectors), fl = htole32(s->seg[i].flags);
		memcpy(rbuf + 16 * i, &sec, 8);
		memcpy(rbuf + 16 * i + 8, &num, 4);
		memcpy(rbuf + 16 * i + 12, &fl, 4);
	}
	if (s->rdata)
		c->seg[n++] = (struct iovec){rbuf, s->rdata};
	c->nread = (uint16_t)n;
	c->read_len = s->hdr_len + s->rdata;
	if (s->wdata)
		c->seg[n++] = (struct iovec){wbuf, s->wdata};
	if (!s->no_status)
		c->seg[n++] = (struct iovec){wbuf + s->wdata, 1};
	c->nwrite = (uint16_t)(n - c->nread);
	c->write_len = s->wdata + (s->no_status ? 0 : 1);
}

#define S_OK     VIRTIO_BLK_S_OK
#define S_IOERR  VIRTIO_BLK_S_IOERR
#define S_UNSUPP VIRTIO_BLK_S_UNSUPP
#define T_IN     VIRTIO_BLK_T_IN
#define T_OUT    VIRTIO_BLK_T_OUT
#define T_FLUSH  VIRTIO_BLK_T_FLUSH
#define T_ID     VIRTIO_BLK_T_GET_ID
#define T_DIS    VIRTIO_BLK_T_DISCARD
#define T_WZ     VIRTIO_BLK_T_WRITE_ZEROES
#define SEG(s, n, f) {.sector = (s), .num_sectors = (n), .flags = (f)}

Test(virtio_blk_req, request_table)
{
	static const struct blk_geom rw = {.capacity = CAP, .discard = true, .write_zeroes = true,
	                                   .may_unmap = true};
	static const struct blk_geom ro = {.capacity = CAP, .read_only = true};
	static const struct blk_geom nodis = {.capacity = CAP, .write_zeroes = true};
	static const struct {
		const char *what;
		const struct blk_geom *g;
		struct chain_spec s;
		uint8_t want;
		bool no_status;
	} cases[] = {
	    /* The chain's shape. */
	    {"no writable byte", &rw, {16, 0, T_IN, 0, 512, 0, .no_status = true}, S_IOERR, true},
	    {"no status, no data", &rw, {16, 0, T_FLUSH, .no_status = true}, S_IOERR, true},
	    {"header 15 bytes", &rw, {15, 0, T_IN, 0, 0, 512}, S_IOERR},
	    {"no header at all", &rw, {0, 0, T_IN, 0, 0, 512}, S_IOERR},
	    {"header in two pieces", &rw, {16, 1, T_IN, 0, 0, 512}, S_OK},
	    /* IN / OUT: sizes and ranges (hostile 12). */
	    {"read 512", &rw, {16, 0, T_IN, 5, 0, 512}, S_OK},
	    {"read 0 bytes", &rw, {16, 0, T_IN, 5, 0, 0}, S_OK},
	    {"read 0 bytes at the end", &rw, {16, 0, T_IN, CAP, 0, 0}, S_OK},
	    {"read 0 bytes past the end", &rw, {16, 0, T_IN, CAP + 1, 0, 0}, S_IOERR},
	    {"read 511", &rw, {16, 0, T_IN, 0, 0, 511}, S_IOERR},
	    {"read 1000", &rw, {16, 0, T_IN, 0, 0, 1000}, S_IOERR},
	    {"read the last sector", &rw, {16, 0, T_IN, CAP - 1, 0, 512}, S_OK},
	    {"read across the end", &rw, {16, 0, T_IN, CAP - 1, 0, 1024}, S_IOERR},
	    {"read past the end", &rw, {16, 0, T_IN, CAP, 0, 512}, S_IOERR},
	    {"sector UINT64_MAX", &rw, {16, 0, T_IN, UINT64_MAX, 0, 512}, S_IOERR},
	    {"sector·512 overflows", &rw, {16, 0, T_IN, 1ull << 55, 0, 512}, S_IOERR},
	    {"sector + count overflows", &rw, {16, 0, T_IN, UINT64_MAX - 1, 0, 4096}, S_IOERR},
	    {"write 512", &rw, {16, 0, T_OUT, 7, 512, 0}, S_OK},
	    {"write 100", &rw, {16, 0, T_OUT, 7, 100, 0}, S_IOERR},
	    {"write past the end", &rw, {16, 0, T_OUT, CAP, 512, 0}, S_IOERR},
	    {"write on read-only", &ro, {16, 0, T_OUT, 7, 512, 0}, S_IOERR},
	    {"read on read-only", &ro, {16, 0, T_IN, 7, 0, 512}, S_OK},
	    /* FLUSH: no data allowed. */
	    {"flush", &rw, {16, 0, T_FLUSH, 0, 0, 0}, S_OK},
	    {"flush ignores sector", &rw, {16, 0, T_FLUSH, 12345, 0, 0}, S_OK},
	    {"flush with readable data", &rw, {16, 0, T_FLUSH, 0, 512, 0}, S_IOERR},
	    {"flush with writable data", &rw, {16, 0, T_FLUSH, 0, 0, 512}, S_IOERR},
	    {"flush on read-only", &ro, {16, 0, T_FLUSH, 0, 0, 0}, S_OK},
	    /* GET_ID. */
	    {"get_id 20", &rw, {16, 0, T_ID, 0, 0, 20}, S_OK},
	    {"get_id 512", &rw, {16, 0, T_ID, 0, 0, 512}, S_OK},
	    {"get_id short", &rw, {16, 0, T_ID, 0, 0, 19}, S_IOERR},
	    {"get_id none", &rw, {16, 0, T_ID, 0, 0, 0}, S_IOERR},
	    /* Unknown types. */
	    {"type 2", &rw, {16, 0, 2, 0, 0, 0}, S_UNSUPP},
	    {"type 10 (lifetime)", &rw, {16, 0, 10, 0, 0, 48}, S_UNSUPP},
	    {"type 14 (secure erase)", &rw, {16, 0, 14, 0, 16, 0}, S_UNSUPP},
	    {"type ~0", &rw, {16, 0, 0xffffffffu, 0, 0, 0}, S_UNSUPP},
	    /* DISCARD / WRITE_ZEROES (hostile 13). */
	    {"discard", &rw, {16, 0, T_DIS, 0, 32, 0, .nseg = 2, .seg = {SEG(0, 8, 0), SEG(100, 1, 0)}},
	     S_OK},
	    {"discard up to the end", &rw, {16, 0, T_DIS, 0, 16, 0, .nseg = 1, .seg = {SEG(CAP - 8, 8, 0)}},
	     S_OK},
	    {"discard no segment", &rw, {16, 0, T_DIS, 0, 0, 0}, S_IOERR},
	    {"discard partial segment", &rw, {16, 0, T_DIS, 0, 15, 0}, S_IOERR},
	    {"discard 24 bytes", &rw, {16, 0, T_DIS, 0, 24, 0}, S_IOERR},
	    {"discard too many segments", &rw, {16, 0, T_DIS, 0, 16 * (BLK_MAX_SEG + 1), 0}, S_IOERR},
	    {"discard huge segment count", &rw, {16, 0, T_DIS, 0, 4096, 0}, S_IOERR},
	    {"discard flags", &rw, {16, 0, T_DIS, 0, 16, 0, .nseg = 1, .seg = {SEG(0, 8, 1)}}, S_UNSUPP},
	    {"discard past the end", &rw, {16, 0, T_DIS, 0, 16, 0, .nseg = 1, .seg = {SEG(CAP - 1, 2, 0)}},
	     S_IOERR},
	    {"discard overflow", &rw,
	     {16, 0, T_DIS, 0, 16, 0, .nseg = 1, .seg = {SEG(UINT64_MAX - 1, 4, 0)}}, S_IOERR},
	    {"discard above max sectors", &rw,
	     {16, 0, T_DIS, 0, 16, 0, .nseg = 1, .seg = {SEG(0, BLK_MAX_DZ_SECTORS + 1, 0)}}, S_IOERR},
	    {"discard second segment bad", &rw,
	     {16, 0, T_DIS, 0, 32, 0, .nseg = 2, .seg = {SEG(0, 8, 0), SEG(CAP, 1, 0)}}, S_IOERR},
	    {"discard not offered", &nodis, {16, 0, T_DIS, 0, 16, 0, .nseg = 1, .seg = {SEG(0, 8, 0)}},
	     S_UNSUPP},
	    {"discard on read-only", &ro, {16, 0, T_DIS, 0, 16, 0, .nseg = 1, .seg = {SEG(0, 8, 0)}},
	     S_IOERR},
	    {"write zeroes", &rw, {16, 0, T_WZ, 0, 16, 0, .nseg = 1, .seg = {SEG(0, 8, 0)}}, S_OK},
	    {"write zeroes unmap", &rw, {16, 0, T_WZ, 0, 16, 0, .nseg = 1, .seg = {SEG(0, 8, 1)}}, S_OK},
	    {"write zeroes bad flag", &rw, {16, 0, T_WZ, 0, 16, 0, .nseg = 1, .seg = {SEG(0, 8, 2)}},
	     S_UNSUPP},
	    {"write zeroes past the end", &rw,
	     {16, 0, T_WZ, 0, 16, 0, .nseg = 1, .seg = {SEG(CAP, 1, 0)}}, S_IOERR},
	    {"write zeroes on read-only", &ro, {16, 0, T_WZ, 0, 16, 0, .nseg = 1, .seg = {SEG(0, 8, 0)}},
	     S_IOERR},
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct virtq_chain c;
		struct blk_req_desc r;
		build(&cases[i].s, &c);
		memset(&r, 0x5a, sizeof(r));
		blk_req_check(cases[i].g, &c, &r);
		cr_expect_eq(r.no_status, cases[i].no_status, "case %u (%s)", i, cases[i].what);
		if (!cases[i].no_status)
			cr_expect_eq(r.status, cases[i].want, "case %u (%s): status %u", i,
			             cases[i].what, r.status);
	}
}

Test(virtio_blk_req, checked_values_are_copies)
{
	const struct blk_geom rw = {.capacity = CAP, .discard = true, .write_zeroes = true};
	struct chain_spec s = {16, 0, T_OUT, 9, 1024, 0};
	struct virtq_chain c;
	struct blk_req_desc r;
	build(&s, &c);
	blk_req_check(&rw, &c, &r);
	cr_assert_eq(r.status, S_OK);
	cr_expect_eq(r.off, 9 * 512);
	cr_expect_eq(r.len, 1024);
	/* The guest rewrites the header afterwards: the description does not change. */
	memset(hdr, 0xff, sizeof(hdr));
	cr_expect_eq(r.off, 9 * 512);

	struct chain_spec d = {16, 0, T_DIS, 0, 32, 0, .nseg = 2, .seg = {SEG(3, 5, 0), SEG(77, 9, 0)}};
	build(&d, &c);
	blk_req_check(&rw, &c, &r);
	cr_assert_eq(r.status, S_OK);
	memset(rbuf, 0xff, 32);
	cr_expect_eq(r.nseg, 2);
	cr_expect(r.seg[0].sector == 3 && r.seg[0].num_sectors == 5 && r.seg[1].sector == 77 &&
	          r.seg[1].num_sectors == 9);
}
