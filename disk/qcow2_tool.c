/*
 * qcow2 operations qcow-tool runs on an image no guest uses: growing the
 * virtual size (relocating the L1 table when it must grow), shrinking it
 * over unallocated space (the L1 table shrinks too) and metadata
 * preallocation.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "disk/qcow2_int.h"

int qcow2_grow(struct disk *d, struct exec *ex, uint64_t new_size)
{
	struct qcow2 *q = qc_of(d);
	if (q->read_only)
		return -EROFS;
	if (new_size < q->size)
		return -EINVAL;
	if (new_size > QC_MAX_VSIZE)
		return -EFBIG;
	uint64_t per_l1 = 1ULL << (q->cluster_bits + q->l2_bits);
	uint64_t need = (new_size + per_l1 - 1) / per_l1, l1_off = q->l1_off;
	if (need * 8 > QC_MAX_L1_BYTES)
		return -EFBIG;
	uint64_t old_off = q->l1_off, old_alloc = q->l1_alloc;
	uint64_t *nl1 = NULL;
	int r;
	if (need > q->l1_alloc) {
		uint64_t nc = (need * 8 + q->cs - 1) / q->cs;
		nl1 = qc_alloc_buf(nc * q->cs);
		if (!nl1)
			return -ENOMEM;
		memcpy(nl1, q->l1, q->l1_size * 8);
		int64_t a = qc_alloc(q, ex, nc);
		if (a < 0) {
			free(nl1);
			return (int)a;
		}
		r = qc_pwrite(q, ex, nl1, nc * q->cs, (uint64_t)a);
		if (r == 0)
			r = exec_fdatasync(ex, q->fd);
		if (r < 0) {
			free(nl1);
			return r;
		}
		l1_off = (uint64_t)a;
		old_alloc = nc * q->cs / 8;
	}
	/* size, crypt_method, l1_size, l1_table_offset: one write. */
	uint8_t f[24] = {0};
	uint64_t v64 = htobe64(new_size);
	uint32_t v32 = htobe32((uint32_t)(need > q->l1_size ? need : q->l1_size));
	memcpy(f, &v64, 8);
	memcpy(f + 12, &v32, 4);
	v64 = htobe64(l1_off);
	memcpy(f + 16, &v64, 8);
	r = qc_write_header_field(q, ex, 24, f, sizeof(f));
	if (r < 0) {
		free(nl1);
		return r;
	}
	if (nl1) {
		uint64_t old_bytes = q->l1_alloc * 8;
		free(q->l1);
		q->l1 = nl1;
		q->l1_off = l1_off;
		q->l1_alloc = old_alloc;
		r = qc_ref_range(q, ex, old_off, old_bytes, -1);
	}
	if (need > q->l1_size)
		q->l1_size = (uint32_t)need;
	q->size = new_size;
	d->size = new_size;
	return r;
}

int qcow2_shrink(struct disk *d, struct exec *ex, uint64_t new_size, uint64_t *busy)
{
	struct qcow2 *q = qc_of(d);
	if (q->read_only)
		return -EROFS;
	if (new_size > q->size)
		return -EINVAL;
	uint64_t first = (new_size + q->cs - 1) >> q->cluster_bits;
	uint64_t end = (q->size + q->cs - 1) >> q->cluster_bits, per = 1ULL << q->l2_bits;
	int r;
	/* Refuse before changing anything if guest data lies past the new end. */
	for (uint64_t g = first; g < end;) {
		uint64_t l2off, e;
		if ((r = qc_l1_table(q, g >> q->l2_bits, &l2off)) < 0)
			return r;
		if (!l2off) {
			g = (g | (per - 1)) + 1;
			continue;
		}
		if ((r = qc_l2_entry(q, ex, g, &e)) < 0)
			return r;
		if ((e & QC_COMPRESSED) || ((e & QC_OFF_MASK) && !(q->version >= 3 && (e & QC_ZERO)))) {
			*busy = g << q->cluster_bits;
			return -ENOTEMPTY;
		}
		g++;
	}
	/* Zero clusters may still own a host cluster: free those. */
	for (uint64_t g = first; g < end; g++) {
		uint64_t l2off;
		if ((r = qc_l1_table(q, g >> q->l2_bits, &l2off)) < 0)
			return r;
		if (!l2off)
			g |= per - 1;
		else if ((r = qc_dealloc(d, ex, g)) < 0)
			return r;
	}
	/* L2 tables wholly past the end go, and so do the L1 entries for them. */
	uint64_t per_l1 = 1ULL << (q->cluster_bits + q->l2_bits);
	uint64_t need = (new_size + per_l1 - 1) / per_l1;
	if (need == 0)
		need = 1; /* an L1 table of at least one entry, as qemu-img makes */
	for (uint64_t i = need; i < q->l1_size; i++) {
		uint64_t l2off;
		if ((r = qc_l1_table(q, i, &l2off)) < 0)
			return r;
		if (!l2off)
			continue;
		qc_set64(q->l1, i, 0);
		if ((r = qc_persist(q, ex, q->l1, q->l1_off, i * 8)) < 0 ||
		    (r = qc_ref_range(q, ex, l2off, q->cs, -1)) < 0)
			return r;
	}
	/* size and l1_size in one header write; then the L1 table's clusters
	 * past its new length are freed (a crash in between only leaks them). */
	uint32_t l1n = need < q->l1_size ? (uint32_t)need : q->l1_size;
	uint8_t f[16] = {0};
	uint64_t v64 = htobe64(new_size);
	uint32_t v32 = htobe32(l1n);
	memcpy(f, &v64, 8);
	/* f + 8: crypt_method, 0 (encrypted images are refused at open) */
	memcpy(f + 12, &v32, 4);
	if ((r = qc_write_header_field(q, ex, 24, f, sizeof(f))) < 0)
		return r;
	q->size = d->size = new_size;
	uint64_t keep = ((uint64_t)l1n * 8 + q->cs - 1) >> q->cluster_bits;
	uint64_t had = (q->l1_alloc * 8) >> q->cluster_bits;
	q->l1_size = l1n;
	if (keep && keep < had) {
		q->l1_alloc = keep << (q->cluster_bits - 3);
		r = qc_ref_range(q, ex, q->l1_off + (keep << q->cluster_bits),
		                 (had - keep) << q->cluster_bits, -1);
	}
	return r;
}

int qcow2_preallocate(struct disk *d, struct exec *ex)
{
	struct qcow2 *q = qc_of(d);
	uint64_t end = (q->size + q->cs - 1) >> q->cluster_bits, per = 1ULL << q->l2_bits;
	for (uint64_t g0 = 0; g0 < end; g0 += per) {
		struct qc_ent *t;
		int r = qc_l2_ensure(q, ex, g0 >> q->l2_bits, &t);
		if (r < 0)
			return r;
		uint64_t n = end - g0 < per ? end - g0 : per;
		int64_t a = qc_alloc(q, ex, n);
		if (a < 0) {
			qc_cache_put(ex, &q->l2c, t);
			return (int)a;
		}
		for (uint64_t i = 0; i < n; i++)
			if (!(qc_get64(t->buf, i) & QC_OFF_MASK))
				qc_set64(t->buf, i, ((uint64_t)a + (i << q->cluster_bits)) | QC_COPIED);
		r = qc_pwrite(q, ex, t->buf, q->cs, t->off);
		qc_cache_put(ex, &q->l2c, t);
		if (r < 0)
			return r;
		if ((uint64_t)a + (n << q->cluster_bits) > q->file_end)
			q->file_end = (uint64_t)a + (n << q->cluster_bits);
	}
	return 0;
}
