/*
 * qcow2 compressed clusters: reading one (raw deflate via zlib, or zstd,
 * as the header's compression type says) and writing one for convert -c,
 * in the image's compression type, packed after the previous one.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "disk/qcow2_int.h"

int qc_decompress(struct qcow2 *q, struct exec *ex, uint64_t e, uint8_t *out)
{
	uint64_t off, len;
	qc_compressed_span(q, e, &off, &len);
	unsigned x = 62 - (q->cluster_bits - 8);
	uint64_t skip = (e & ((1ULL << x) - 1)) - off;
	if (len > 2 * q->cs + 512 || off + len < off)
		return -EIO;
	uint8_t *in = qc_alloc_buf(len);
	if (!in)
		return -ENOMEM;
	int r = qc_pread(q, ex, in, len, off);
	if (r < 0)
		goto out;
	r = -EIO;
	if (q->comp_type == 0) {
		z_stream z = {0};
		if (inflateInit2(&z, -15) != Z_OK)
			goto out;
		z.next_in = in + skip;
		z.avail_in = (uInt)(len - skip);
		z.next_out = out;
		z.avail_out = (uInt)q->cs;
		int zr = inflate(&z, Z_FINISH);
		if ((zr == Z_STREAM_END || zr == Z_BUF_ERROR || zr == Z_OK) && z.avail_out == 0)
			r = 0;
		inflateEnd(&z);
	} else {
		ZSTD_DCtx *z = ZSTD_createDCtx();
		if (!z)
			goto out;
		ZSTD_inBuffer ib = {in + skip, len - skip, 0};
		ZSTD_outBuffer ob = {out, q->cs, 0};
		while (ob.pos < ob.size) {
			size_t zr = ZSTD_decompressStream(z, &ob, &ib);
			if (ZSTD_isError(zr) || (zr && ib.pos == ib.size && ob.pos < ob.size) || !zr)
				break;
		}
		if (ob.pos == ob.size)
			r = 0;
		ZSTD_freeDCtx(z);
	}
out:
	free(in);
	return r;
}

int qcow2_write_compressed(struct disk *d, struct exec *ex, uint64_t g, const void *data)
{
	struct qcow2 *q = qc_of(d);
	uint8_t *out = qc_alloc_buf(q->cs);
	if (!out)
		return -ENOMEM;
	int r = -EIO;
	uint64_t clen = 0;
	bool fits;
	/* At most a cluster less a sector, or compressing gains nothing. */
	if (q->comp_type == 0) {
		z_stream z = {0};
		if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) !=
		    Z_OK)
			goto out;
		z.next_in = (Bytef *)data;
		z.avail_in = (uInt)q->cs;
		z.next_out = out;
		z.avail_out = (uInt)(q->cs - 512);
		fits = deflate(&z, Z_FINISH) == Z_STREAM_END;
		clen = q->cs - 512 - z.avail_out;
		deflateEnd(&z);
	} else {
		size_t n = ZSTD_compress(out, q->cs - 512, data, q->cs, ZSTD_CLEVEL_DEFAULT);
		fits = !ZSTD_isError(n);
		clen = fits ? n : 0;
	}
	if (!fits) { /* incompressible: store plainly */
		struct iovec v = {(void *)data, q->cs};
		free(out);
		int64_t w = d->ops->writev(d, ex, &v, 1, g << q->cluster_bits);
		return w < 0 ? (int)w : 0;
	}
	struct qc_ent *t;
	r = qc_l2_ensure(q, ex, g >> q->l2_bits, &t);
	if (r < 0)
		goto out;
	/* Pack into the tail of the last compressed cluster when it fits: each
	 * compressed cluster holds a reference to every host cluster it touches. */
	uint64_t cur;
	if (q->pack_at && q->pack_at + clen <= q->pack_end &&
	    (r = qc_ref_range(q, ex, q->pack_at, 1, +1)) == 0) {
		cur = q->pack_at;
	} else {
		int64_t a = qc_alloc(q, ex, 1);
		if (a < 0) {
			r = (int)a;
			qc_cache_put(ex, &q->l2c, t);
			goto out;
		}
		cur = (uint64_t)a;
		q->pack_end = cur + q->cs;
	}
	r = qc_pwrite(q, ex, out, clen, cur);
	if (r == 0) {
		unsigned x = 62 - (q->cluster_bits - 8);
		uint64_t extra = ((cur + clen - 1) >> 9) - (cur >> 9);
		r = qc_set_entry(q, ex, t, g, QC_COMPRESSED | (extra << x) | cur, true);
	}
	q->pack_at = cur + clen;
	qc_cache_put(ex, &q->l2c, t);
out:
	free(out);
	return r;
}
