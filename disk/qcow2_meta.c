/*
 * qcow2 metadata plumbing: I/O helpers over the executor, refcounts and
 * the cluster allocator (refcount blocks created self-describing, the
 * refcount table grown by relocation).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>

#include "disk/qcow2_int.h"

void *qc_alloc_buf(size_t len)
{
	void *p = NULL;
	if (posix_memalign(&p, 4096, len ? len : 1))
		return NULL;
	memset(p, 0, len);
	return p;
}

static int step(struct qcow2 *q)
{
	q->writes++;
	if (q->fail_at && q->writes == q->fail_at) {
		q->fail_at = 0;
		return q->fail_err;
	}
	return 0;
}

int qc_preadv(struct qcow2 *q, struct exec *ex, struct iovec *iov, unsigned n, uint64_t off)
{
	unsigned i = 0, spins = 0;
	while (i < n && !iov[i].iov_len)
		i++;
	while (i < n) {
		int r = exec_readv(ex, q->fd, iov + i, n - i, off);
		if (r == -EINTR || r == -EAGAIN) {
			if (++spins > 8)
				return -EIO;
			continue;
		}
		if (r < 0)
			return r;
		if (r == 0) {
			qc_iov_zero(iov + i, n - i);
			return 0;
		}
		off += (uint64_t)r;
		i = disk_iov_consume(iov, n, i, (size_t)r);
	}
	return 0;
}

int qc_pread(struct qcow2 *q, struct exec *ex, void *buf, size_t len, uint64_t off)
{
	struct iovec v = {buf, len};
	return qc_preadv(q, ex, &v, 1, off);
}

int qc_pwritev(struct qcow2 *q, struct exec *ex, struct iovec *iov, unsigned n, uint64_t off)
{
	int r = step(q);
	if (r < 0)
		return r;
	unsigned i = 0, spins = 0;
	uint64_t done = 0, total = 0;
	for (unsigned k = 0; k < n; k++)
		total += iov[k].iov_len;
	/* The common case: one operation writes it all. */
	if (total && (r = exec_writev(ex, q->fd, iov, n, off)) >= 0 && (uint64_t)r == total) {
		done = total;
		goto out;
	}
	if (r == 0 && total)
		return -EIO;
	if (r > 0) /* short: continue after what was written */
		done = (uint64_t)r;
	else if (r < 0 && r != -EINTR && r != -EAGAIN)
		return r;
	i = disk_iov_consume(iov, n, 0, r > 0 ? (size_t)r : 0);
	while (i < n) {
		r = exec_writev(ex, q->fd, iov + i, n - i, off + done);
		if (r == -EINTR || r == -EAGAIN) {
			if (++spins > 8)
				return -EIO;
			continue;
		}
		if (r < 0)
			return r;
		if (r == 0)
			return -EIO;
		done += (uint64_t)r;
		i = disk_iov_consume(iov, n, i, (size_t)r);
	}
out:
	if (off + done > q->file_end)
		q->file_end = off + done;
	return 0;
}

int qc_pwrite(struct qcow2 *q, struct exec *ex, const void *buf, size_t len, uint64_t off)
{
	struct iovec v = {(void *)buf, len};
	return qc_pwritev(q, ex, &v, 1, off);
}

int qc_zero(struct qcow2 *q, struct exec *ex, uint64_t off, uint64_t len)
{
	uint64_t end = off + len, in = q->file_end > off ? q->file_end - off : 0;
	int r = step(q);
	if (r < 0)
		return r;
	if (!q->no_zero_range) {
		/* ZERO_RANGE without KEEP_SIZE: zeros, and the file grows to cover them. */
		r = exec_fallocate(ex, q->fd, FALLOC_FL_ZERO_RANGE, off, len);
		if (r != -EOPNOTSUPP && r != -EINVAL)
			goto out;
		q->no_zero_range = true; /* tmpfs: never ask again */
	}
	/* Freed clusters inside the file hold old data: punch it out. Past the
	 * end of the file everything reads as zeros; allocating extends the
	 * file over it (so the image never ends inside a data cluster). */
	r = in ? exec_punch_hole(ex, q->fd, off, in < len ? in : len) : 0;
	if (r == 0 && in < len)
		r = exec_fallocate(ex, q->fd, 0, off + in, len - in);
out:
	if (r == 0 && end > q->file_end)
		q->file_end = end;
	return r;
}

int qc_persist(struct qcow2 *q, struct exec *ex, const void *tbl, uint64_t off, uint64_t pos)
{
	uint64_t u = pos & ~(uint64_t)(q->unit - 1);
	return qc_pwrite(q, ex, (const uint8_t *)tbl + u, q->unit, off + u);
}

int qc_write_header_field(struct qcow2 *q, struct exec *ex, uint64_t pos, const void *val,
                          size_t len)
{
	uint8_t *h = qc_alloc_buf(q->unit);
	if (!h)
		return -ENOMEM;
	int r = qc_pread(q, ex, h, q->unit, 0);
	if (r == 0) {
		memcpy(h + pos, val, len);
		r = qc_pwrite(q, ex, h, q->unit, 0);
	}
	free(h);
	return r;
}

/* ---- refcounts ---- */

static uint64_t rb_get(const struct qcow2 *q, const uint8_t *b, uint64_t i)
{
	switch (q->refcount_order) {
	case 0: case 1: case 2: {
		unsigned bits = 1u << q->refcount_order, per = 8 / bits;
		return (b[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
	}
	case 3: return b[i];
	case 4: return be16toh(((const uint16_t *)b)[i]);
	case 5: return be32toh(((const uint32_t *)b)[i]);
	default: return be64toh(((const uint64_t *)b)[i]);
	}
}

static void rb_set(const struct qcow2 *q, uint8_t *b, uint64_t i, uint64_t v)
{
	switch (q->refcount_order) {
	case 0: case 1: case 2: {
		unsigned bits = 1u << q->refcount_order, per = 8 / bits, sh = (i % per) * bits;
		uint8_t m = (uint8_t)(((1u << bits) - 1) << sh);
		b[i / per] = (uint8_t)((b[i / per] & ~m) | ((v << sh) & m));
		break;
	}
	case 3: b[i] = (uint8_t)v; break;
	case 4: ((uint16_t *)b)[i] = htobe16((uint16_t)v); break;
	case 5: ((uint32_t *)b)[i] = htobe32((uint32_t)v); break;
	default: ((uint64_t *)b)[i] = htobe64(v); break;
	}
}

/* Byte position of refcount i inside its block (for persisting). */
static uint64_t rb_pos(const struct qcow2 *q, uint64_t i)
{
	return (i << q->refcount_order) >> 3;
}

/* The refcount block of cluster c: 0 and *e NULL when it has none. */
static int rb_load(struct qcow2 *q, struct exec *ex, uint64_t c, struct qc_ent **e)
{
	uint64_t b = c >> q->rb_bits;
	*e = NULL;
	if (b >= q->rt_entries)
		return 0;
	uint64_t off = qc_get64(q->rt, b);
	if (off & QC_RT_RESERVED)
		return -EIO;
	if (!off)
		return 0;
	if (off & (q->cs - 1))
		return -EIO;
	return qc_cache_get(q, ex, &q->rbc, off, true, e);
}

int qc_refcount(struct qcow2 *q, struct exec *ex, uint64_t cluster, uint64_t *out)
{
	struct qc_ent *e;
	int r = rb_load(q, ex, cluster, &e);
	if (r < 0)
		return r;
	*out = e ? rb_get(q, e->buf, cluster & ((1ULL << q->rb_bits) - 1)) : 0;
	if (e)
		qc_cache_put(ex, &q->rbc, e);
	return 0;
}

/* Set a refcount in memory and persist its unit. Caller holds alloc_lock. */
static int rc_store(struct qcow2 *q, struct exec *ex, struct qc_ent *e, uint64_t c, uint64_t v)
{
	uint64_t i = c & ((1ULL << q->rb_bits) - 1);
	rb_set(q, e->buf, i, v);
	return qc_persist(q, ex, e->buf, e->off, rb_pos(q, i));
}

int qc_set_refcount(struct qcow2 *q, struct exec *ex, uint64_t cluster, uint64_t v)
{
	struct qc_ent *e;
	int r = exec_sem_wait(ex, &q->alloc_lock);
	if (r < 0)
		return r;
	r = rb_load(q, ex, cluster, &e);
	if (r == 0 && !e)
		r = -ENOSPC; /* no block covers it (check -r never needs one) */
	if (r == 0) {
		r = rc_store(q, ex, e, cluster, v);
		qc_cache_put(ex, &q->rbc, e);
	}
	exec_sem_post(ex, &q->alloc_lock);
	return r;
}

/*
 * Relocate the refcount table to hold at least min entries: the new table
 * and the refcount blocks that cover it go past everything covered so far;
 * written and synced before the header points at them, the old table freed
 * after. A crash in between leaks, never corrupts.
 */
static int grow_rt(struct qcow2 *q, struct exec *ex, uint64_t min)
{
	uint64_t per = q->cs / 8, epb = 1ULL << q->rb_bits;
	uint64_t ne = q->rt_entries * 2 > min ? q->rt_entries * 2 : min;
	ne = (ne + per - 1) / per * per;
	uint64_t tc = ne / per;
	if (ne * 8 > QC_MAX_RT_BYTES)
		return -EFBIG;
	uint64_t cov = q->rt_entries * epb, fe = (q->file_end + q->cs - 1) >> q->cluster_bits;
	uint64_t s = cov > fe ? cov : fe, nb = 0;
	for (;;) { /* blocks needed for [s, s+nb+tc) (all beyond the old coverage) */
		uint64_t need = ((s + nb + tc - 1) >> q->rb_bits) - (s >> q->rb_bits) + 1;
		if (need == nb)
			break;
		nb = need;
	}
	if ((s + nb + tc) >> q->rb_bits >= ne)
		return -EFBIG;
	uint64_t *nt = qc_alloc_buf(tc * q->cs);
	uint8_t *blk = qc_alloc_buf(q->cs);
	int r = -ENOMEM;
	if (!nt || !blk)
		goto out;
	memcpy(nt, q->rt, q->rt_entries * 8);
	for (uint64_t i = 0; i < nb; i++) {
		uint64_t b = (s >> q->rb_bits) + i;
		memset(blk, 0, q->cs);
		for (uint64_t c = s; c < s + nb + tc; c++)
			if (c >> q->rb_bits == b)
				rb_set(q, blk, c & (epb - 1), 1);
		r = qc_pwrite(q, ex, blk, q->cs, (s + i) << q->cluster_bits);
		if (r < 0)
			goto out;
		qc_set64(nt, b, (s + i) << q->cluster_bits);
	}
	r = qc_pwrite(q, ex, nt, tc * q->cs, (s + nb) << q->cluster_bits);
	if (r == 0)
		r = exec_fdatasync(ex, q->fd);
	if (r < 0)
		goto out;
	uint8_t hv[12];
	uint64_t noff = (s + nb) << q->cluster_bits;
	uint64_t be_off = htobe64(noff);
	uint32_t be_cl = htobe32((uint32_t)tc);
	memcpy(hv, &be_off, 8);
	memcpy(hv + 8, &be_cl, 4);
	r = qc_write_header_field(q, ex, 48, hv, 12);
	if (r < 0)
		goto out;
	uint64_t old_off = q->rt_off, old_cl = q->rt_clusters;
	free(q->rt);
	q->rt = nt;
	nt = NULL;
	q->rt_off = noff;
	q->rt_clusters = (uint32_t)tc;
	q->rt_entries = ne;
	/* Free the old table (its blocks are loaded through the new table). */
	for (uint64_t c = 0; c < old_cl && r == 0; c++) {
		struct qc_ent *e;
		uint64_t cl = (old_off >> q->cluster_bits) + c, v;
		r = rb_load(q, ex, cl, &e);
		if (r == 0 && e) {
			v = rb_get(q, e->buf, cl & (epb - 1));
			r = rc_store(q, ex, e, cl, v ? v - 1 : 0);
			qc_cache_put(ex, &q->rbc, e);
		}
	}
	if (old_off >> q->cluster_bits < q->free_hint)
		q->free_hint = old_off >> q->cluster_bits;
out:
	free(nt);
	free(blk);
	return r;
}

/*
 * Give cluster block b a refcount block at cluster `at` (free, outside the
 * run being allocated): described by itself when it lies in b, else by the
 * block covering it (created first, self-describing, when missing).
 */
static int new_refblock(struct qcow2 *q, struct exec *ex, uint64_t b, uint64_t at)
{
	if (b >= q->rt_entries)
		return grow_rt(q, ex, b + 1);
	uint64_t ab = at >> q->rb_bits, off = at << q->cluster_bits;
	struct qc_ent *e, *host = NULL;
	int r;
	if (ab != b) {
		if ((r = rb_load(q, ex, at, &host)) < 0)
			return r;
		if (!host)
			return new_refblock(q, ex, ab, at);
		r = rc_store(q, ex, host, at, 1);
		qc_cache_put(ex, &q->rbc, host);
		if (r < 0)
			return r;
	}
	if ((r = qc_cache_get(q, ex, &q->rbc, off, false, &e)) < 0)
		return r;
	if (ab == b)
		rb_set(q, e->buf, at & ((1ULL << q->rb_bits) - 1), 1);
	r = qc_pwrite(q, ex, e->buf, q->cs, off);
	qc_cache_put(ex, &q->rbc, e);
	if (r < 0) {
		qc_cache_forget(&q->rbc, off);
		return r;
	}
	qc_set64(q->rt, b, off);
	return qc_persist(q, ex, q->rt, q->rt_off, b * 8);
}

int64_t qc_alloc(struct qcow2 *q, struct exec *ex, uint64_t n)
{
	int r = exec_sem_wait(ex, &q->alloc_lock);
	if (r < 0)
		return r;
retry:;
	uint64_t start = q->free_hint, c = start, v;
	for (;;) {
		if (c - start == n)
			break;
		if (c >= (QC_MAX_VSIZE >> q->cluster_bits)) {
			r = -ENOSPC;
			goto out;
		}
		r = qc_refcount(q, ex, c, &v);
		if (r < 0)
			goto out;
		if (v) {
			start = ++c;
			continue;
		}
		c++;
	}
	/* Every cluster of the run needs a block; new blocks go past the run. */
	for (c = start; c < start + n; c++) {
		struct qc_ent *e;
		r = rb_load(q, ex, c, &e);
		if (r < 0)
			goto out;
		if (!e) {
			uint64_t at = start + n;
			for (;; at++) {
				if ((r = qc_refcount(q, ex, at, &v)) < 0)
					goto out;
				if (!v)
					break;
			}
			r = new_refblock(q, ex, c >> q->rb_bits, at);
			if (r < 0)
				goto out;
			goto retry;
		}
		qc_cache_put(ex, &q->rbc, e);
	}
	for (c = start; c < start + n; c++) {
		struct qc_ent *e;
		r = rb_load(q, ex, c, &e);
		if (r == 0 && e) {
			r = rc_store(q, ex, e, c, 1);
			qc_cache_put(ex, &q->rbc, e);
		}
		if (r < 0)
			goto out; /* already-set ones leak: never corrupt */
	}
	if (n == 1 || start == q->free_hint)
		q->free_hint = start + n;
	exec_sem_post(ex, &q->alloc_lock);
	return (int64_t)(start << q->cluster_bits);
out:
	exec_sem_post(ex, &q->alloc_lock);
	return r;
}

int qc_ref_range(struct qcow2 *q, struct exec *ex, uint64_t off, uint64_t len, int delta)
{
	if (!len)
		return 0;
	int r = exec_sem_wait(ex, &q->alloc_lock);
	if (r < 0)
		return r;
	uint64_t first = off >> q->cluster_bits, last = (off + len - 1) >> q->cluster_bits;
	for (uint64_t c = first; c <= last && r == 0; c++) {
		struct qc_ent *e;
		r = rb_load(q, ex, c, &e);
		if (r < 0)
			break;
		if (!e) {
			r = -EIO;
			break;
		}
		uint64_t v = rb_get(q, e->buf, c & ((1ULL << q->rb_bits) - 1));
		if (delta < 0 && v == 0)
			r = -EIO;
		else if (delta > 0 && v == q->rc_max)
			r = -ERANGE;
		else
			r = rc_store(q, ex, e, c, delta < 0 ? v - 1 : v + 1);
		if (r == 0 && delta < 0 && v == 1) {
			if (c < q->free_hint)
				q->free_hint = c;
			qc_cache_forget(&q->l2c, c << q->cluster_bits);
		}
		qc_cache_put(ex, &q->rbc, e);
	}
	exec_sem_post(ex, &q->alloc_lock);
	return r;
}
