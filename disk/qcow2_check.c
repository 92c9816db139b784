/*
 * qcow2 consistency check (qcow-tool check): every reference the tables
 * make is counted and compared with the stored refcounts, as qemu-img
 * check does: a stored refcount above the references is a leak, below it
 * (or a reference that is misaligned, reserved or past the end of the
 * file) is a corruption. Repair rewrites refcounts (leaks, or all).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk/qcow2_int.h"

#define MAX_CHECK_CLUSTERS (1ULL << 28)

struct walk {
	struct qcow2 *q;
	struct qcow2_check *out;
	uint32_t *ref;
	uint8_t *meta; /* per cluster: counted as metadata (header, tables, refcount blocks) */
	bool overlap;  /* some metadata shares a cluster with something else */
	uint64_t n;    /* clusters in the file */
};

/* A corruption; fixable ones are what check -r all repairs (refcounts). */
static void corrupt_as(struct walk *w, bool fixable, const char *fmt, unsigned long long a,
                       unsigned long long b)
{
	w->out->corruptions++;
	if (!fixable)
		w->out->unfixable++;
	if (!w->out->first_error[0])
		snprintf(w->out->first_error, sizeof(w->out->first_error), fmt, a, b);
}

static void corrupt(struct walk *w, const char *fmt, unsigned long long a, unsigned long long b)
{
	corrupt_as(w, false, fmt, a, b);
}

/* Count one reference to [off, off + len); meta: the range holds metadata. */
static void count(struct walk *w, uint64_t off, uint64_t len, const char *what, bool meta)
{
	if (!len)
		return;
	uint64_t first = off >> w->q->cluster_bits, last = (off + len - 1) >> w->q->cluster_bits;
	for (uint64_t c = first; c <= last; c++) {
		if (c >= w->n) {
			if (!w->out->first_error[0])
				snprintf(w->out->first_error, sizeof(w->out->first_error),
				         "%s at offset %#llx is past the end of the file", what,
				         (unsigned long long)(c << w->q->cluster_bits));
			w->out->corruptions++;
			w->out->unfixable++;
			return;
		}
		if (w->ref[c] && (meta || w->meta[c])) {
			/* Overlapping metadata: a refcount written by a repair could
			 * land inside a table, so the repair writes nothing at all. */
			w->overlap = true;
			w->out->corruptions++;
			w->out->unfixable++;
			if (!w->out->first_error[0])
				snprintf(w->out->first_error, sizeof(w->out->first_error),
				         "cluster %llu holds metadata and is also used as %s",
				         (unsigned long long)c, what);
		}
		w->meta[c] |= meta;
		if (w->ref[c] != UINT32_MAX)
			w->ref[c]++;
	}
}

static int walk_l2(struct walk *w, struct exec *ex, uint64_t l2off, uint64_t l1i)
{
	struct qcow2 *q = w->q;
	struct qc_ent *t;
	int r = qc_cache_get(q, ex, &q->l2c, l2off, true, &t);
	if (r < 0)
		return r;
	uint64_t per = 1ULL << q->l2_bits, prev = 0;
	for (uint64_t i = 0; i < per; i++) {
		uint64_t e = qc_get64(t->buf, i), g = (l1i << q->l2_bits) + i;
		if (!e)
			continue;
		if (e & QC_COMPRESSED) {
			uint64_t off, len;
			qc_compressed_span(q, e, &off, &len);
			if (e & QC_COPIED)
				corrupt(w, "compressed cluster %llu has the copied flag%.0llu",
				        (unsigned long long)g, 0);
			count(w, off, len, "compressed data", false);
			w->out->allocated++;
			w->out->compressed++;
			continue;
		}
		uint64_t h = e & QC_OFF_MASK;
		if ((e & QC_L2_RESERVED) || (h & (q->cs - 1)) || (q->version < 3 && (e & QC_ZERO))) {
			corrupt(w, "invalid L2 entry %#llx (guest cluster %llu)", (unsigned long long)e,
			        (unsigned long long)g);
			continue;
		}
		if (!h)
			continue;
		count(w, h, q->cs, "data cluster", false);
		if (!(e & QC_ZERO) || q->version < 3)
			w->out->allocated++;
		if (prev && h != prev + q->cs)
			w->out->fragmented++;
		prev = h;
		uint64_t rc;
		if (qc_refcount(q, ex, h >> q->cluster_bits, &rc) == 0 && (rc == 1) != !!(e & QC_COPIED))
			corrupt_as(w, true, "copied flag wrong on data cluster %#llx (refcount %llu)",
			        (unsigned long long)h, (unsigned long long)rc);
	}
	qc_cache_put(ex, &q->l2c, t);
	return 0;
}

int qcow2_check(struct disk *d, struct exec *ex, unsigned repair, struct qcow2_check *out)
{
	return qcow2_check_progress(d, ex, repair, out, NULL, NULL);
}

int qcow2_check_progress(struct disk *d, struct exec *ex, unsigned repair,
                         struct qcow2_check *out, qcow2_progress_fn *progress, void *parg)
{
	struct qcow2 *q = qc_of(d);
	memset(out, 0, sizeof(*out));
	if (q->nb_snapshots)
		return -ENOTSUP; /* snapshot tables are not walked */
	if (repair && q->read_only)
		return -EROFS;
	struct walk w = {.q = q, .out = out};
	w.n = (q->file_end + q->cs - 1) >> q->cluster_bits;
	if (w.n > MAX_CHECK_CLUSTERS)
		return -EFBIG;
	w.ref = calloc(w.n ? w.n : 1, sizeof(*w.ref));
	w.meta = calloc(w.n ? w.n : 1, 1);
	if (!w.ref || !w.meta) {
		free(w.ref);
		free(w.meta);
		return -ENOMEM;
	}
	out->image_end = q->file_end;
	out->total = (q->size + q->cs - 1) >> q->cluster_bits;
	count(&w, 0, q->cs, "header", true);
	count(&w, q->l1_off, (uint64_t)q->l1_size * 8, "L1 table", true);
	count(&w, q->rt_off, (uint64_t)q->rt_clusters * q->cs, "refcount table", true);
	int r = 0;
	uint64_t steps = q->l1_size + q->rt_entries, done = 0;
	for (uint64_t b = 0; b < q->rt_entries; b++) {
		uint64_t off = qc_get64(q->rt, b);
		if (!off)
			continue;
		if ((off & QC_RT_RESERVED) || (off & (q->cs - 1))) {
			corrupt(&w, "refcount block %llu at %#llx is misaligned", (unsigned long long)b,
			        (unsigned long long)off);
			continue;
		}
		count(&w, off, q->cs, "refcount block", true);
		if (off < q->file_end && off + q->cs > q->file_end)
			corrupt(&w, "refcount block at %#llx extends past the end of the file%.0llu",
			        (unsigned long long)off, 0);
	}
	for (uint64_t i = 0; i < q->l1_size; i++) {
		uint64_t e = qc_get64(q->l1, i), off = e & QC_OFF_MASK;
		if (progress)
			progress(parg, done++, steps);
		if (!e)
			continue;
		if ((e & QC_L1_RESERVED) || (off & (q->cs - 1))) {
			corrupt(&w, "invalid L1 entry %#llx (index %llu)", (unsigned long long)e,
			        (unsigned long long)i);
			continue;
		}
		if (!off)
			continue;
		count(&w, off, q->cs, "L2 table", true);
		if (off >= q->file_end)
			continue; /* counted as a corruption above */
		if (off + q->cs > q->file_end) {
			/* Cut by the end of the file: the next cluster allocated at the
			 * end would land inside it (QEMU always writes tables whole). */
			corrupt(&w, "L2 table at %#llx extends past the end of the file%.0llu",
			        (unsigned long long)off, 0);
			continue;
		}
		r = walk_l2(&w, ex, off, i);
		if (r < 0)
			goto out;
	}
	/* Compare with what is stored: every cluster some block covers, and the file. */
	uint64_t epb = 1ULL << q->rb_bits;
	for (uint64_t b = 0; b < q->rt_entries; b++) {
		uint64_t off = qc_get64(q->rt, b);
		if (progress)
			progress(parg, done++, steps);
		if (!off || (off & (QC_RT_RESERVED | (q->cs - 1))) || off + q->cs > q->file_end)
			continue;
		for (uint64_t c = b * epb; c < (b + 1) * epb; c++) {
			uint64_t rc, want = c < w.n ? w.ref[c] : 0;
			r = qc_refcount(q, ex, c, &rc);
			if (r < 0)
				goto out;
			if (rc == want)
				continue;
			bool leak = rc > want;
			if (leak)
				out->leaks++;
			else
				corrupt_as(&w, true, "cluster %llu: refcount %llu below its references",
				        (unsigned long long)c, (unsigned long long)rc);
			if (!w.overlap &&
			    ((repair & QCOW2_REPAIR_ALL) || (leak && (repair & QCOW2_REPAIR_LEAKS)))) {
				if (want > q->rc_max)
					continue;
				r = qc_set_refcount(q, ex, c, want);
				if (r < 0)
					goto out;
				if (leak)
					out->fixed_leaks++;
				else
					out->fixed_corruptions++;
			}
		}
	}
	/* Referenced clusters no block covers have refcount 0: corruptions. */
	for (uint64_t c = 0; c < w.n; c++) {
		uint64_t b = c >> q->rb_bits;
		if (w.ref[c] && (b >= q->rt_entries || !qc_get64(q->rt, b)))
			corrupt(&w, "cluster %llu is referenced but has no refcount block%.0llu",
			        (unsigned long long)c, 0);
	}
	r = 0;
	if (progress)
		progress(parg, steps, steps);
	if (out->fixed_leaks || out->fixed_corruptions) {
		/* What remains after the repair (copied flags follow the new refcounts). */
		struct qcow2_check again;
		free(w.ref);
		free(w.meta);
		w.ref = NULL;
		w.meta = NULL;
		r = qcow2_check(d, ex, 0, &again);
		if (r == 0) {
			again.fixed_leaks = out->fixed_leaks;
			again.fixed_corruptions = out->fixed_corruptions;
			again.leaks += again.fixed_leaks;
			again.corruptions += again.fixed_corruptions;
			*out = again;
		}
	}
out:
	free(w.ref);
	free(w.meta);
	return r;
}
