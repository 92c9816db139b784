/*
 * qcow2 guest I/O (disk_qcow2_ops; reads are in qcow2_read.c): mapping
 * through the L1 table and the L2 cache; writes in place when the cluster
 * is ours alone, else into a newly allocated cluster (copy-on-write of the
 * old contents, or a fallocate-zeroed cluster when they read as zeros), one
 * allocation per guest cluster however many requests race for it
 * (per-cluster locks); discard and write-zeroes. Order of a new mapping:
 * refcount, data, L2, then L1 — each write completed before the next.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "disk/qcow2_int.h"

#define L1_LOCK (1ULL << 63) /* lock keys: guest cluster, or this | L1 index */

/* ---- mapping ---- */

int qc_l1_table(struct qcow2 *q, uint64_t l1i, uint64_t *l2off)
{
	*l2off = 0;
	if (l1i >= q->l1_size)
		return 0;
	uint64_t e = qc_get64(q->l1, l1i);
	if (e & QC_L1_RESERVED)
		return -EIO;
	*l2off = e & QC_OFF_MASK;
	if (*l2off & (q->cs - 1))
		return -EIO;
	return 0;
}

int qc_l2_entry(struct qcow2 *q, struct exec *ex, uint64_t g, uint64_t *out)
{
	uint64_t l2off;
	struct qc_ent *t;
	*out = 0;
	int r = qc_l1_table(q, g >> q->l2_bits, &l2off);
	if (r < 0 || !l2off)
		return r;
	const uint8_t *buf = qc_cache_peek(&q->l2c, l2off); /* the common case: a hit */
	if (buf) {
		*out = qc_get64(buf, g & ((1ULL << q->l2_bits) - 1));
		return 0;
	}
	r = qc_cache_get(q, ex, &q->l2c, l2off, true, &t);
	if (r < 0)
		return r;
	*out = qc_get64(t->buf, g & ((1ULL << q->l2_bits) - 1));
	qc_cache_put(ex, &q->l2c, t);
	return 0;
}

void qc_compressed_span(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len)
{
	unsigned x = 62 - (q->cluster_bits - 8);
	uint64_t host = e & ((1ULL << x) - 1);
	uint64_t nsect = ((e & ((1ULL << 62) - 1)) >> x) + 1;
	*off = host & ~511ULL;
	*len = nsect * 512;
}

int qcow2_map_cluster(struct disk *d, struct exec *ex, uint64_t g, enum qcow2_kind *kind,
                      uint64_t *host)
{
	struct qcow2 *q = qc_of(d);
	uint64_t e;
	int r = qc_l2_entry(q, ex, g, &e);
	if (r < 0)
		return r;
	*kind = qc_kind(q, e);
	*host = *kind == QCOW2_COMPRESSED ? 0 : e & QC_OFF_MASK;
	return 0;
}

/* ---- writes ---- */

static bool in_place(const struct qcow2 *q, uint64_t e)
{
	return (e & QC_COPIED) && qc_kind(q, e) == QCOW2_NORMAL;
}

/* Pin the L2 table of l1 index l1i, allocating it if absent (L2, then L1). */
int qc_l2_ensure(struct qcow2 *q, struct exec *ex, uint64_t l1i, struct qc_ent **out)
{
	uint64_t l2off;
	int r = qc_l1_table(q, l1i, &l2off);
	if (r < 0)
		return r;
	if (l1i >= q->l1_size)
		return -EIO;
	if (l2off)
		return qc_cache_get(q, ex, &q->l2c, l2off, true, out);
	struct qc_lock lk;
	r = qc_lock(ex, q, &lk, L1_LOCK | l1i);
	if (r < 0)
		return r;
	r = qc_l1_table(q, l1i, &l2off);
	if (r == 0 && l2off) {
		r = qc_cache_get(q, ex, &q->l2c, l2off, true, out);
		goto out;
	}
	int64_t a = qc_alloc(q, ex, 1);
	if (a < 0) {
		r = (int)a;
		goto out;
	}
	struct qc_ent *t;
	r = qc_cache_get(q, ex, &q->l2c, (uint64_t)a, false, &t);
	if (r < 0)
		goto out;
	r = qc_pwrite(q, ex, t->buf, q->cs, (uint64_t)a);
	if (r < 0) {
		qc_cache_put(ex, &q->l2c, t);
		qc_cache_forget(&q->l2c, (uint64_t)a);
		goto out; /* the cluster leaks */
	}
	qc_set64(q->l1, l1i, (uint64_t)a | QC_COPIED);
	r = qc_persist(q, ex, q->l1, q->l1_off, l1i * 8);
	if (r < 0) {
		qc_set64(q->l1, l1i, 0);
		qc_cache_put(ex, &q->l2c, t);
		goto out;
	}
	*out = t;
out:
	qc_unlock(ex, q, &lk);
	return r;
}

/*
 * In-place writes look the mapping up without a lock and then write to the
 * host cluster; a discard of the same guest cluster meanwhile may free that
 * cluster, and an allocation reuse it for other data (or metadata) before
 * the stale write lands. So a write registers its host cluster before it
 * can yield, and freeing waits until no write to that cluster is in flight.
 */
static void inflight_add(struct qcow2 *q, struct qc_inflight *w, uint64_t host)
{
	w->host = host;
	w->prev = NULL;
	w->next = q->inflight;
	if (q->inflight)
		q->inflight->prev = w;
	q->inflight = w;
}

static void inflight_del(struct exec *ex, struct qcow2 *q, struct qc_inflight *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		q->inflight = w->next;
	if (w->next)
		w->next->prev = w->prev;
	if (q->drain_waiters)
		exec_waitq_wake(ex, &q->drained, UINT32_MAX);
}

static int inflight_drain(struct exec *ex, struct qcow2 *q, uint64_t host)
{
	for (struct qc_inflight *w = q->inflight; w;) {
		if (w->host != host) {
			w = w->next;
			continue;
		}
		q->drain_waiters++;
		int r = exec_waitq_wait(ex, &q->drained);
		q->drain_waiters--;
		if (r < 0)
			return r;
		w = q->inflight; /* the list changed: look again */
	}
	return 0;
}

void qcow2_hold_writes(struct disk *d, struct exec *ex, bool hold)
{
	struct qcow2 *q = qc_of(d);
	q->hold_inplace = hold;
	if (!hold)
		exec_waitq_wake(ex, &q->held, UINT32_MAX);
}

/* Drop the host clusters an entry no longer referenced held. */
static int release(struct qcow2 *q, struct exec *ex, uint64_t e)
{
	if (e & QC_COMPRESSED) {
		uint64_t off, len;
		qc_compressed_span(q, e, &off, &len);
		return qc_ref_range(q, ex, off, len, -1);
	}
	int64_t h = qc_host(q, e);
	if (h <= 0)
		return h < 0 ? (int)h : 0;
	int r = inflight_drain(ex, q, (uint64_t)h);
	return r < 0 ? r : qc_ref_range(q, ex, (uint64_t)h, q->cs, -1);
}

/* Point guest cluster g at ne in its (pinned) table, persist, release old. */
int qc_set_entry(struct qcow2 *q, struct exec *ex, struct qc_ent *t, uint64_t g, uint64_t ne,
                     bool free_old)
{
	uint64_t i = g & ((1ULL << q->l2_bits) - 1), old = qc_get64(t->buf, i);
	qc_set64(t->buf, i, ne);
	int r = qc_persist(q, ex, t->buf, t->off, i * 8);
	if (r < 0) {
		qc_set64(t->buf, i, old);
		return r;
	}
	return free_old ? release(q, ex, old) : 0;
}

/*
 * Give guest cluster g (entry old; lock held) a new host cluster holding its
 * old contents with [in, in+len) replaced by iov (or zeros if iov is NULL).
 */
static int replace(struct disk *d, struct exec *ex, uint64_t g, uint64_t old, uint64_t in,
                   struct iovec *iov, unsigned n, uint64_t len)
{
	struct qcow2 *q = qc_of(d);
	struct qc_ent *t;
	uint8_t *buf = NULL;
	int r = qc_l2_ensure(q, ex, g >> q->l2_bits, &t);
	if (r < 0)
		return r;
	struct iovec one, *src = iov;
	unsigned cnt = n;
	/* Old contents all zeros: the new cluster is zeroed by fallocate and
	 * only the guest's bytes are written (no bounce buffer, no 64 KiB write). */
	enum qcow2_kind k = qc_kind(q, old);
	bool zeros = k == QCOW2_ZERO || (k == QCOW2_UNALLOC && !d->backing);
	if (zeros && len < q->cs && iov) {
		int64_t h = qc_alloc(q, ex, 1);
		if (h < 0) {
			r = (int)h;
			goto out;
		}
		r = q->no_zero_fill ? -EOPNOTSUPP : qc_zero(q, ex, (uint64_t)h, q->cs);
		if (r == 0)
			r = qc_pwritev(q, ex, iov, n, (uint64_t)h + in);
		if (r == 0) {
			r = qc_set_entry(q, ex, t, g, (uint64_t)h | QC_COPIED, true);
			goto out;
		}
		int r2 = qc_ref_range(q, ex, (uint64_t)h, q->cs, -1);
		(void)r2;
		if (r != -EOPNOTSUPP)
			goto out;
		q->no_zero_fill = true; /* no fallocate at all: bounce buffers from now on */
	}
	if (len < q->cs || !iov) {
		buf = qc_alloc_buf(q->cs);
		if (!buf) {
			r = -ENOMEM;
			goto out;
		}
		if (len < q->cs) {
			struct iovec whole = {buf, q->cs};
			r = qc_read_seg(d, ex, g, old, 0, &whole, 1, q->cs);
			if (r < 0)
				goto out;
		}
		if (iov)
			qc_iov_to_buf(iov, n, buf + in);
		else
			memset(buf + in, 0, len);
		one = (struct iovec){buf, q->cs};
		src = &one;
		cnt = 1;
	}
	int64_t h = qc_alloc(q, ex, 1);
	if (h < 0) {
		r = (int)h;
		goto out;
	}
	r = qc_pwritev(q, ex, src, cnt, (uint64_t)h);
	if (r < 0) {
		/* Never referenced: give it back (if that fails too, it leaks). */
		int r2 = qc_ref_range(q, ex, (uint64_t)h, q->cs, -1);
		(void)r2;
		goto out;
	}
	r = qc_set_entry(q, ex, t, g, (uint64_t)h | QC_COPIED, true);
out:
	free(buf);
	qc_cache_put(ex, &q->l2c, t);
	return r;
}

static int write_seg(struct disk *d, struct exec *ex, uint64_t g, uint64_t in, struct iovec *iov,
                     unsigned n, uint64_t len)
{
	struct qcow2 *q = qc_of(d);
	uint64_t e;
	struct qc_lock lk;
	int r = qc_l2_entry(q, ex, g, &e);
	if (r < 0)
		return r;
	if (!in_place(q, e)) {
		r = qc_lock(ex, q, &lk, g);
		if (r < 0)
			return r;
		r = qc_l2_entry(q, ex, g, &e);
		/* Zeros over a cluster that reads as zeros: nothing to do. */
		if (r == 0 && !iov &&
		    (qc_kind(q, e) == QCOW2_ZERO || (qc_kind(q, e) == QCOW2_UNALLOC && !d->backing)) &&
		    !(e & QC_L2_RESERVED))
			r = 1;
		else if (r == 0 && !in_place(q, e))
			r = replace(d, ex, g, e, in, iov, n, len) ?: 1;
		qc_unlock(ex, q, &lk);
		if (r)
			return r < 0 ? r : 0;
	}
	int64_t h = qc_host(q, e);
	if (h < 0)
		return (int)h;
	/* Never let a hostile L2 entry aim guest data at our metadata. */
	if ((uint64_t)h >= q->file_end || qc_overlaps_meta(q, (uint64_t)h, q->cs))
		return -EIO;
	struct qc_inflight w;
	inflight_add(q, &w, (uint64_t)h); /* before anything can yield */
	while (q->hold_inplace && r == 0)
		r = exec_waitq_wait(ex, &q->held);
	if (r == 0 && !iov) {
		uint8_t *z = qc_alloc_buf(len);
		r = z ? qc_pwrite(q, ex, z, len, (uint64_t)h + in) : -ENOMEM;
		free(z);
	} else if (r == 0) {
		r = qc_pwritev(q, ex, iov, n, (uint64_t)h + in);
	}
	inflight_del(ex, q, &w);
	return r;
}

static int64_t qcow2_writev(struct disk *d, struct exec *ex, struct iovec *iov, unsigned n,
                            uint64_t off)
{
	struct qcow2 *q = qc_of(d);
	if (q->read_only)
		return -EROFS;
	size_t total = qc_iov_total(iov, n), pos = 0;
	uint64_t in0 = off & (q->cs - 1);
	if (in0 + total <= q->cs) { /* the common case: one cluster, the caller's iovecs */
		int r = write_seg(d, ex, off >> q->cluster_bits, in0, iov, n, total);
		return r < 0 ? r : (int64_t)total;
	}
	struct iovec small[QC_SMALL_IOV], *sub = small;
	if (n + 1 > QC_SMALL_IOV && !(sub = malloc((n + 1) * sizeof(*sub))))
		return -ENOMEM;
	int r = 0;
	while (pos < total) {
		uint64_t o = off + pos, g = o >> q->cluster_bits, in = o & (q->cs - 1);
		uint64_t len = q->cs - in < total - pos ? q->cs - in : total - pos;
		unsigned k = qc_iov_slice(iov, n, pos, len, sub);
		r = write_seg(d, ex, g, in, sub, k, len);
		if (r < 0)
			break;
		pos += len;
	}
	if (sub != small)
		free(sub);
	return r < 0 ? r : (int64_t)total;
}

static int qcow2_flush(struct disk *d, struct exec *ex)
{
	struct qcow2 *q = qc_of(d);
	return q->read_only ? 0 : exec_fdatasync(ex, q->fd);
}

enum zmode { Z_DISCARD, Z_ZEROES, Z_ZEROES_UNMAP, Z_DEALLOC };

/* Make a whole guest cluster read as zeros / be discarded. */
static int zero_cluster(struct disk *d, struct exec *ex, uint64_t g, enum zmode m)
{
	struct qcow2 *q = qc_of(d);
	struct qc_lock lk;
	struct qc_ent *t = NULL;
	uint64_t e, ne;
	int r = qc_lock(ex, q, &lk, g);
	if (r < 0)
		return r;
	r = qc_l2_entry(q, ex, g, &e);
	if (r < 0)
		goto out;
	bool v3 = q->version >= 3, keep = false;
	if (m == Z_DEALLOC) {
		ne = 0;
	} else if (v3) {
		keep = m == Z_ZEROES && in_place(q, e);
		ne = keep ? (e | QC_ZERO) : (m == Z_DISCARD && !d->backing) ? 0 : QC_ZERO;
	} else if (m == Z_DISCARD || !d->backing) {
		ne = 0;
	} else {
		/* v2 over a backing file has no zero flag: write real zeros. */
		qc_unlock(ex, q, &lk);
		return write_seg(d, ex, g, 0, NULL, 0, q->cs);
	}
	if (e == ne)
		goto out;
	uint64_t l2off;
	r = qc_l1_table(q, g >> q->l2_bits, &l2off);
	if (r < 0 || (!l2off && !ne))
		goto out;
	r = qc_l2_ensure(q, ex, g >> q->l2_bits, &t);
	if (r == 0) {
		r = qc_set_entry(q, ex, t, g, ne, !keep);
		qc_cache_put(ex, &q->l2c, t);
	}
out:
	qc_unlock(ex, q, &lk);
	return r;
}

int qc_dealloc(struct disk *d, struct exec *ex, uint64_t g)
{
	return zero_cluster(d, ex, g, Z_DEALLOC);
}

static int zero_range(struct disk *d, struct exec *ex, uint64_t off, uint64_t len, enum zmode m)
{
	struct qcow2 *q = qc_of(d);
	if (q->read_only)
		return -EROFS;
	while (len) {
		uint64_t in = off & (q->cs - 1), l = q->cs - in < len ? q->cs - in : len;
		int r = 0;
		if (l == q->cs)
			r = zero_cluster(d, ex, off >> q->cluster_bits, m);
		else if (m != Z_DISCARD)
			r = write_seg(d, ex, off >> q->cluster_bits, in, NULL, 0, l);
		if (r < 0)
			return r;
		off += l;
		len -= l;
	}
	return 0;
}

static int qcow2_discard(struct disk *d, struct exec *ex, uint64_t off, uint64_t len)
{
	return zero_range(d, ex, off, len, Z_DISCARD);
}

static int qcow2_write_zeroes(struct disk *d, struct exec *ex, uint64_t off, uint64_t len,
                              bool unmap)
{
	return zero_range(d, ex, off, len, unmap ? Z_ZEROES_UNMAP : Z_ZEROES);
}

static uint64_t qcow2_size(const struct disk *d)
{
	return qc_of(d)->size;
}

static void qcow2_close(struct disk *d)
{
	qc_destroy(d->priv);
	d->priv = NULL;
}

const struct disk_ops disk_qcow2_ops = {
    .name = "qcow2",
    .readv = qc_readv,
    .writev = qcow2_writev,
    .flush = qcow2_flush,
    .discard = qcow2_discard,
    .write_zeroes = qcow2_write_zeroes,
    .size = qcow2_size,
    .close = qcow2_close,
};
