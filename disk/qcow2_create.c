/*
 * Creating an empty qcow2 image (qcow-tool create): header, extensions
 * (backing format), the backing file name, one refcount table, the refcount
 * blocks covering the metadata and a zeroed L1 table. Blocking pwrite: only
 * tools call it, on a file nothing else has open.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/qcow2_int.h"

static void put32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}

static int write_all(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)r;
	}
	return 0;
}

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

int qcow2_create(int fd, const struct qcow2_create_opts *o, char *err, size_t errlen)
{
	unsigned cb = o->cluster_bits ? o->cluster_bits : 16;
	unsigned ver = o->version ? o->version : 3;
	unsigned ro = o->version == 2 ? 4 : o->refcount_order;
	if (!o->version && !o->refcount_order)
		ro = 4;
	if (cb < 9 || cb > 21) {
		snprintf(err, errlen, "cluster size must be a power of two between 512 and 2M");
		return -EINVAL;
	}
	if (ver != 2 && ver != 3) {
		snprintf(err, errlen, "compat must be 0.10 or 1.1");
		return -EINVAL;
	}
	if (ro > 6 || (ver == 2 && ro != 4)) {
		snprintf(err, errlen, ver == 2 ? "compat=0.10 only supports refcount_bits=16"
		                               : "refcount_bits must be a power of two up to 64");
		return -EINVAL;
	}
	if (ver == 2 && o->zstd) {
		snprintf(err, errlen, "compression_type=zstd needs compat=1.1");
		return -EINVAL;
	}
	if (ver == 2 && o->lazy_refcounts) {
		snprintf(err, errlen, "lazy_refcounts=on needs compat=1.1");
		return -EINVAL;
	}
	if (o->size > QC_MAX_VSIZE) {
		snprintf(err, errlen, "image size too large");
		return -EFBIG;
	}
	uint64_t cs = 1ULL << cb, per_l1 = 1ULL << (cb + cb - 3);
	uint64_t l1 = div_up(o->size, per_l1), l1c = div_up(l1 * 8, cs);
	if (l1 * 8 > QC_MAX_L1_BYTES) {
		snprintf(err, errlen, "image size too large for this cluster size");
		return -EFBIG;
	}
	uint64_t epb = (cs * 8) >> ro, nrb = 1, rtc = 1;
	for (;;) { /* refcount blocks and table covering all metadata */
		uint64_t total = 1 + rtc + nrb + l1c;
		uint64_t nb = div_up(total, epb), nt = div_up(nb * 8, cs);
		if (nb == nrb && nt == rtc)
			break;
		nrb = nb;
		rtc = nt;
	}
	if (rtc * cs > QC_MAX_RT_BYTES) {
		snprintf(err, errlen, "image size too large for this cluster size");
		return -EFBIG;
	}
	uint64_t rt_off = cs, rb_off = rt_off + rtc * cs, l1_off = rb_off + nrb * cs;
	uint64_t total = 1 + rtc + nrb + l1c;
	uint8_t *h = calloc(1, cs);
	uint8_t *buf = calloc(1, (rtc + nrb) * cs);
	int r = -ENOMEM;
	if (!h || !buf)
		goto out;
	memcpy(h, DISK_QCOW2_MAGIC, 4);
	put32(h + 4, ver);
	put32(h + 20, cb);
	put64(h + 24, o->size);
	put32(h + 36, (uint32_t)l1);
	put64(h + 40, l1_off);
	put64(h + 48, rt_off);
	put32(h + 56, (uint32_t)rtc);
	uint64_t pos = 72;
	if (ver == 3) {
		put64(h + 80, o->lazy_refcounts ? QC_COMPAT_LAZY : 0);
		put32(h + 96, ro);
		put32(h + 100, 112);
		if (o->zstd) {
			put64(h + 72, QC_INCOMPAT_COMPRESS);
			h[104] = 1;
		}
		pos = 112;
	}
	if (o->backing_fmt) {
		size_t fl = strlen(o->backing_fmt);
		put32(h + pos, QC_EXT_BACKING_FMT);
		put32(h + pos + 4, (uint32_t)fl);
		memcpy(h + pos + 8, o->backing_fmt, fl);
		pos += 8 + ((fl + 7) & ~7ULL);
	}
	pos += 8; /* end of extensions */
	if (o->backing) {
		size_t bl = strlen(o->backing);
		if (bl == 0 || bl > 1023 || pos + bl > cs) {
			snprintf(err, errlen, "backing file name too long");
			r = -ENAMETOOLONG;
			goto out;
		}
		memcpy(h + pos, o->backing, bl);
		put64(h + 8, pos);
		put32(h + 16, (uint32_t)bl);
	}
	/* Refcount table, then blocks: every metadata cluster has refcount 1. */
	for (uint64_t i = 0; i < nrb; i++)
		put64(buf + i * 8, rb_off + i * cs);
	uint8_t *rb = buf + rtc * cs;
	for (uint64_t c = 0; c < total; c++) {
		switch (ro) {
		case 0: case 1: case 2: {
			unsigned bits = 1u << ro, per = 8 / bits;
			rb[c / per] |= (uint8_t)(1u << ((c % per) * bits));
			break;
		}
		case 3: rb[c] = 1; break;
		case 4: rb[c * 2 + 1] = 1; break;
		case 5: put32(rb + c * 4, 1); break;
		default: put64(rb + c * 8, 1); break;
		}
	}
	if ((r = write_all(fd, h, cs, 0)) < 0 || (r = write_all(fd, buf, (rtc + nrb) * cs, rt_off)) < 0)
		goto fail;
	if (ftruncate(fd, (off_t)(l1_off + l1c * cs)) < 0) {
		r = -errno;
		goto fail;
	}
	r = 0;
	goto out;
fail:
	snprintf(err, errlen, "write failed: %s", strerror(-r));
out:
	free(h);
	free(buf);
	return r;
}
