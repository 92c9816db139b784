/*
 * Opening a qcow2 image in the main process: every header field checked
 * before it is used (hostile-inputs 14-16), header extensions, the L1 and
 * refcount tables read with pread, the backing chain opened through
 * disk_open_chain (so the device process receives every fd and opens
 * nothing), feature bits honoured (dirty, corrupt, autoclear).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk/qcow2_int.h"

static int efail(char *err, size_t errlen, int e, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int efail(char *err, size_t errlen, int e, const char *path, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s: %s", path, msg);
	return e;
}

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return be32toh(v);
}
static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return be64toh(v);
}

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

void qc_destroy(struct qcow2 *q)
{
	if (!q)
		return;
	qc_cache_free(&q->l2c);
	qc_cache_free(&q->rbc);
	free(q->l1);
	free(q->rt);
	free(q);
}

/* The feature name of incompatible bit `bit` from the name table, if any. */
static void feature_name(const uint8_t *tbl, uint32_t len, unsigned bit, char *out, size_t outlen)
{
	out[0] = 0;
	for (uint32_t i = 0; tbl && i + 48 <= len; i += 48)
		if (tbl[i] == 0 && tbl[i + 1] == bit) {
			snprintf(out, outlen, " (%.*s)", 46, (const char *)tbl + i + 2);
			return;
		}
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static int open_backing(struct disk *d, const struct disk_open_params *p, struct disk_chain *chain,
                        const char *name, const char *fmt, char *err, size_t errlen)
{
	char full[4096];
	if (name[0] == '/') {
		snprintf(full, sizeof(full), "%s", name);
	} else {
		const char *slash = strrchr(p->path, '/');
		int dl = slash ? (int)(slash - p->path) : 0;
		if ((size_t)snprintf(full, sizeof(full), "%.*s%s%s", dl, p->path, slash ? "/" : "",
		                     name) >= sizeof(full))
			return efail(err, errlen, -ENAMETOOLONG, p->path, "backing file path too long");
	}
	/*
	 * A file already in the chain is a loop. Look before opening: the open
	 * takes a shared lock, which an image of the chain opened read-write
	 * (ours, exclusively locked) would refuse as "locked by another
	 * process" — the wrong reason (disk_open_chain checks again by inode).
	 */
	struct stat st;
	if (stat(full, &st) == 0)
		for (unsigned i = 0; i < chain->depth; i++)
			if (chain->dev[i] == (uint64_t)st.st_dev && chain->ino[i] == (uint64_t)st.st_ino)
				return efail(err, errlen, -ELOOP, p->path,
				             "backing file: %s: backing chain refers back to itself", full);
	struct disk_open_params bp = {.path = full, .read_only = true, .direct = p->direct,
	                              .l2_cache_bytes = p->l2_cache_bytes};
	if (!fmt)
		bp.format = DISK_FORMAT_AUTO;
	else if (!strcmp(fmt, "raw"))
		bp.format = DISK_FORMAT_RAW;
	else if (!strcmp(fmt, "qcow2"))
		bp.format = DISK_FORMAT_QCOW2;
	else
		return efail(err, errlen, -ENOTSUP, p->path, "unsupported backing file format '%s'",
		             fmt);
	struct disk *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	char berr[512];
	int r = disk_open_chain(b, &bp, chain, berr, sizeof(berr));
	if (r < 0) {
		free(b);
		/* Only the innermost file and reason: one prefix per level of a deep
		 * chain would push the reason itself out of the message. */
		const char *inner = berr, *nest;
		while ((nest = strstr(inner, ": backing file: ")))
			inner = nest + strlen(": backing file: ");
		return efail(err, errlen, r, p->path, "backing file: %s", inner);
	}
	d->backing = b;
	return 0;
}

struct rebuild {
	struct disk *d;
	struct qcow2_check c;
};

static int rebuild_task(struct exec *ex, void *arg)
{
	struct rebuild *rb = arg;
	struct qcow2 *q = qc_of(rb->d);
	/* Look first: an image the repair cannot fix is refused untouched. */
	int r = qcow2_check(rb->d, ex, 0, &rb->c);
	if (r < 0 || rb->c.unfixable)
		return r;
	r = qcow2_check(rb->d, ex, QCOW2_REPAIR_LEAKS | QCOW2_REPAIR_ALL, &rb->c);
	if (r < 0 || rb->c.corruptions > rb->c.fixed_corruptions)
		return r;
	/* The new refcounts are durable before the header stops saying dirty. */
	if ((r = exec_fdatasync(ex, q->fd)) < 0)
		return r;
	uint64_t v = htobe64(q->incompat & ~QC_INCOMPAT_DIRTY);
	if ((r = qc_write_header_field(q, ex, 72, &v, 8)) < 0 ||
	    (r = exec_fdatasync(ex, q->fd)) < 0)
		return r;
	q->incompat &= ~QC_INCOMPAT_DIRTY;
	return 0;
}

/*
 * Rebuild the refcounts of a dirty image (lazy refcounts, not closed
 * cleanly) with the checker's repair, then clear the dirty bit. Runs on a
 * private executor: opens happen in the main process (or a qcow-tool task),
 * before any device executor exists for this image.
 */
static int rebuild_refcounts(struct disk *d, struct qcow2 *q, const char *path, char *err,
                             size_t errlen)
{
	struct exec *ex;
	struct exec_task *t;
	struct rebuild rb = {.d = d};
	void *saved = d->priv;
	int r = exec_create(&ex, NULL);
	if (r < 0)
		return efail(err, errlen, -EUCLEAN, path,
		             "image is dirty and its refcounts cannot be rebuilt (io_uring: %s); "
		             "open it read-only",
		             strerror(-r));
	d->priv = q;
	r = exec_spawn(ex, rebuild_task, &rb, 0, &t);
	if (r == 0)
		r = exec_join(ex, t);
	exec_destroy(ex);
	d->priv = saved;
	if (r < 0)
		return efail(err, errlen, -EUCLEAN, path,
		             "image is dirty and rebuilding its refcounts failed: %s", strerror(-r));
	if (rb.c.unfixable || rb.c.corruptions > rb.c.fixed_corruptions)
		return efail(err, errlen, -EUCLEAN, path,
		             "image is dirty and its refcounts cannot be rebuilt (%s); "
		             "open it read-only",
		             rb.c.first_error[0] ? rb.c.first_error : "corruptions remain");
	return 0;
}

int qcow2_open(struct disk *d, const struct disk_open_params *p, struct disk_chain *chain,
               char *err, size_t errlen)
{
	const char *path = p->path;
	uint8_t h[112] = {0};
	uint8_t *c0 = NULL;
	uint64_t fsize = d->size; /* disk_open stored the file size */
	int r;

	if (fsize < 72)
		return efail(err, errlen, -EINVAL, path, "qcow2 header truncated");
	r = read_full(d->fd, h, fsize < sizeof(h) ? fsize : sizeof(h), 0);
	if (r < 0)
		return efail(err, errlen, r, path, "cannot read the qcow2 header: %s", strerror(-r));
	if (memcmp(h, DISK_QCOW2_MAGIC, 4))
		return efail(err, errlen, -EINVAL, path, "not a qcow2 image (bad magic)");
	struct qcow2 *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->fd = d->fd;
	q->version = rd32(h + 4);
	uint64_t bf_off = rd64(h + 8);
	uint32_t bf_len = rd32(h + 16);
	q->cluster_bits = rd32(h + 20);
	q->size = rd64(h + 24);
	uint32_t crypt = rd32(h + 32);
	q->l1_size = rd32(h + 36);
	q->l1_off = rd64(h + 40);
	q->rt_off = rd64(h + 48);
	q->rt_clusters = rd32(h + 56);
	q->nb_snapshots = rd32(h + 60);
	q->refcount_order = 4;
	q->hdr_len = 72;
	if (q->version != 2 && q->version != 3) {
		r = efail(err, errlen, -ENOTSUP, path, "unsupported qcow2 version %u", q->version);
		goto fail;
	}
	if (q->cluster_bits < 9 || q->cluster_bits > 21) {
		r = efail(err, errlen, -EINVAL, path, "cluster_bits %u out of range (9..21)",
		          q->cluster_bits);
		goto fail;
	}
	q->cs = 1ULL << q->cluster_bits;
	if (q->version == 3) {
		if (fsize < 104) {
			r = efail(err, errlen, -EINVAL, path, "qcow2 header truncated");
			goto fail;
		}
		q->incompat = rd64(h + 72);
		q->compat = rd64(h + 80);
		q->autoclear = rd64(h + 88);
		q->refcount_order = rd32(h + 96);
		q->hdr_len = rd32(h + 100);
		if (q->hdr_len < 104 || q->hdr_len % 8 || q->hdr_len > q->cs) {
			r = efail(err, errlen, -EINVAL, path, "invalid header length %u", q->hdr_len);
			goto fail;
		}
		if (q->hdr_len > 104)
			q->comp_type = h[104];
	}
	if (q->refcount_order > 6) {
		r = efail(err, errlen, -EINVAL, path, "refcount_order %u out of range (0..6)",
		          q->refcount_order);
		goto fail;
	}
	/* Cluster 0 holds the header, its extensions and the backing name. */
	uint64_t c0len = q->cs < fsize ? q->cs : fsize;
	c0 = calloc(1, q->cs);
	if (!c0 || (r = read_full(d->fd, c0, c0len, 0)) < 0) {
		r = efail(err, errlen, c0 ? r : -ENOMEM, path, "cannot read cluster 0");
		goto fail;
	}
	const uint8_t *ftable = NULL;
	uint32_t ftable_len = 0;
	char bfmt[64] = "";
	bool have_bfmt = false;
	if (q->version == 3) {
		uint64_t pos = q->hdr_len;
		for (unsigned n = 0;; n++) {
			if (pos + 8 > q->cs || n > 1000) {
				r = efail(err, errlen, -EINVAL, path, "header extensions run past cluster 0");
				goto fail;
			}
			uint32_t type = rd32(c0 + pos), len = rd32(c0 + pos + 4);
			if (type == QC_EXT_END)
				break;
			if (len > q->cs - pos - 8) {
				r = efail(err, errlen, -EINVAL, path, "header extension 0x%08x too long",
				          type);
				goto fail;
			}
			if (type == QC_EXT_BACKING_FMT) {
				if (len == 0 || len >= sizeof(bfmt) || memchr(c0 + pos + 8, 0, len)) {
					r = efail(err, errlen, -EINVAL, path,
					          "invalid backing format extension");
					goto fail;
				}
				memcpy(bfmt, c0 + pos + 8, len);
				bfmt[len] = 0;
				have_bfmt = true;
			} else if (type == QC_EXT_FEATURES) {
				ftable = c0 + pos + 8;
				ftable_len = len;
			}
			pos += 8 + (((uint64_t)len + 7) & ~7ULL);
		}
	}
	uint64_t known = QC_INCOMPAT_DIRTY | QC_INCOMPAT_CORRUPT | QC_INCOMPAT_DATAFILE |
	                 QC_INCOMPAT_COMPRESS | QC_INCOMPAT_EXTL2;
	if (q->incompat & ~known) {
		unsigned bit = (unsigned)__builtin_ctzll(q->incompat & ~known);
		char nm[64];
		feature_name(ftable, ftable_len, bit, nm, sizeof(nm));
		r = efail(err, errlen, -ENOTSUP, path, "unknown incompatible feature bit %u%s", bit,
		          nm);
		goto fail;
	}
	if (q->incompat & QC_INCOMPAT_DATAFILE) {
		r = efail(err, errlen, -ENOTSUP, path, "external data files are not supported");
		goto fail;
	}
	if (q->incompat & QC_INCOMPAT_EXTL2) {
		r = efail(err, errlen, -ENOTSUP, path, "extended L2 entries are not supported");
		goto fail;
	}
	if (crypt) {
		r = efail(err, errlen, -ENOTSUP, path, "encrypted images are not supported");
		goto fail;
	}
	if (!!(q->incompat & QC_INCOMPAT_COMPRESS) != (q->comp_type != 0) || q->comp_type > 1) {
		r = efail(err, errlen, q->comp_type > 1 ? -ENOTSUP : -EINVAL, path,
		          "invalid compression type %u", q->comp_type);
		goto fail;
	}
	if (q->size > QC_MAX_VSIZE) {
		r = efail(err, errlen, -EINVAL, path, "virtual size %llu too large",
		          (unsigned long long)q->size);
		goto fail;
	}
	q->l2_bits = q->cluster_bits - 3;
	uint64_t per_l1 = 1ULL << (q->cluster_bits + q->l2_bits);
	uint64_t need_l1 = (q->size + per_l1 - 1) / per_l1;
	if ((uint64_t)q->l1_size * 8 > QC_MAX_L1_BYTES) {
		r = efail(err, errlen, -EINVAL, path, "L1 table too large (%u entries)", q->l1_size);
		goto fail;
	}
	if (q->l1_size < need_l1) {
		r = efail(err, errlen, -EINVAL, path, "L1 table too small for the virtual size");
		goto fail;
	}
	q->l1_alloc = (((uint64_t)q->l1_size * 8 + q->cs - 1) & ~(q->cs - 1)) / 8;
	if (q->l1_off & (q->cs - 1)) {
		r = efail(err, errlen, -EINVAL, path, "L1 table offset not cluster-aligned");
		goto fail;
	}
	if (q->l1_size && (q->l1_off == 0 || q->l1_off > fsize ||
	                   (uint64_t)q->l1_size * 8 > fsize - q->l1_off)) {
		r = efail(err, errlen, -EINVAL, path,
		          q->l1_off ? "L1 table past end of file" : "L1 table overlaps the header");
		goto fail;
	}
	if (q->rt_off & (q->cs - 1)) {
		r = efail(err, errlen, -EINVAL, path, "refcount table offset not cluster-aligned");
		goto fail;
	}
	if (q->rt_clusters == 0 || (uint64_t)q->rt_clusters * q->cs > QC_MAX_RT_BYTES) {
		r = efail(err, errlen, -EINVAL, path, "invalid refcount table size (%u clusters)",
		          q->rt_clusters);
		goto fail;
	}
	uint64_t rt_bytes = (uint64_t)q->rt_clusters * q->cs;
	if (q->rt_off == 0) {
		r = efail(err, errlen, -EINVAL, path, "refcount table overlaps the header");
		goto fail;
	}
	if (q->rt_off > fsize || rt_bytes > fsize - q->rt_off) {
		r = efail(err, errlen, -EINVAL, path, "refcount table truncated (past end of file)");
		goto fail;
	}
	if (q->l1_size && ranges_overlap(q->l1_off, (uint64_t)q->l1_size * 8, q->rt_off, rt_bytes)) {
		r = efail(err, errlen, -EINVAL, path, "L1 table overlaps the refcount table");
		goto fail;
	}
	if (bf_off) {
		if (bf_len == 0 || bf_len > 1023 || bf_off >= q->cs || bf_len > q->cs - bf_off ||
		    bf_off < q->hdr_len || memchr(c0 + bf_off, 0, bf_len)) {
			r = efail(err, errlen, -EINVAL, path, "invalid backing file name field");
			goto fail;
		}
	}
	q->read_only = p->read_only;
	if (q->incompat & QC_INCOMPAT_CORRUPT)
		q->read_only = true; /* never written until repaired */
	if (q->nb_snapshots && !q->read_only) {
		r = efail(err, errlen, -ENOTSUP, path,
		          "images with internal snapshots can only be opened read-only");
		goto fail;
	}
	/* The tables. */
	q->l1 = qc_alloc_buf(q->l1_alloc * 8);
	q->rt_entries = rt_bytes / 8;
	q->rt = qc_alloc_buf(rt_bytes);
	if (!q->l1 || !q->rt) {
		r = efail(err, errlen, -ENOMEM, path, "out of memory for the tables");
		goto fail;
	}
	if ((q->l1_size && (r = read_full(d->fd, q->l1, (size_t)q->l1_size * 8, q->l1_off)) < 0) ||
	    (r = read_full(d->fd, q->rt, rt_bytes, q->rt_off)) < 0) {
		r = efail(err, errlen, r, path, "cannot read the L1/refcount tables");
		goto fail;
	}
	q->rb_bits = q->cluster_bits + 3 - q->refcount_order;
	q->rc_max = q->refcount_order == 6 ? UINT64_MAX : (1ULL << (1u << q->refcount_order)) - 1;
	q->file_end = fsize;
	q->unit = q->cs < 4096 ? (unsigned)q->cs : 4096;
	q->free_hint = 0;
	exec_sem_init(&q->alloc_lock, 1);
	exec_waitq_init(&q->drained);
	exec_waitq_init(&q->held);
	uint64_t l2cap = p->l2_cache_bytes ? p->l2_cache_bytes / q->cs
	                                   : (need_l1 < QCOW2_DEFAULT_L2_CACHE_CAP / q->cs
	                                          ? need_l1
	                                          : QCOW2_DEFAULT_L2_CACHE_CAP / q->cs);
	if (l2cap > QCOW2_DEFAULT_L2_CACHE_CAP / q->cs * 4)
		l2cap = QCOW2_DEFAULT_L2_CACHE_CAP / q->cs * 4;
	uint64_t rbcap = l2cap / 4 > 4 ? l2cap / 4 : 4;
	if ((r = qc_cache_init(&q->l2c, (unsigned)l2cap, q->cs)) < 0 ||
	    (r = qc_cache_init(&q->rbc, (unsigned)rbcap, q->cs)) < 0) {
		r = efail(err, errlen, r, path, "out of memory for the caches");
		goto fail;
	}
	/* Unknown autoclear bits (we know none: bitmaps are not kept) are
	 * cleared before anything is written. */
	if (!q->read_only && q->autoclear) {
		uint64_t z = 0;
		if (pwrite(d->fd, &z, 8, 88) != 8) {
			r = efail(err, errlen, -errno ? -errno : -EIO, path, "cannot clear autoclear bits");
			goto fail;
		}
		q->autoclear = 0;
	}
	/* A dirty image's refcounts may be too low: rebuild them before the
	 * allocator trusts them (as QEMU does on a read-write open). */
	if ((q->incompat & QC_INCOMPAT_DIRTY) && !q->read_only &&
	    (r = rebuild_refcounts(d, q, path, err, errlen)) < 0)
		goto fail;
	if (bf_off) {
		char name[1024];
		memcpy(name, c0 + bf_off, bf_len);
		name[bf_len] = 0;
		q->has_backing = true;
		snprintf(q->backing_name, sizeof(q->backing_name), "%s", name);
		snprintf(q->backing_fmt, sizeof(q->backing_fmt), "%s", have_bfmt ? bfmt : "");
		r = open_backing(d, p, chain, name, have_bfmt ? bfmt : NULL, err, errlen);
		if (r < 0)
			goto fail;
	}
	free(c0);
	d->priv = q;
	d->size = q->size;
	d->read_only = q->read_only;
	d->format = DISK_FORMAT_QCOW2;
	d->ops = &disk_qcow2_ops;
	return 0;
fail:
	free(c0);
	qc_destroy(q);
	return r;
}

void qcow2_get_info(const struct disk *d, struct qcow2_info *o)
{
	const struct qcow2 *q = qc_of(d);
	*o = (struct qcow2_info){.version = q->version, .cluster_bits = q->cluster_bits,
	                         .refcount_order = q->refcount_order,
	                         .compression_type = q->comp_type, .size = q->size,
	                         .incompat = q->incompat, .compat = q->compat,
	                         .autoclear = q->autoclear, .nb_snapshots = q->nb_snapshots,
	                         .read_only = q->read_only, .file_end = q->file_end};
	snprintf(o->backing, sizeof(o->backing), "%s", q->backing_name);
	snprintf(o->backing_fmt, sizeof(o->backing_fmt), "%s", q->backing_fmt);
}

void qcow2_stats(const struct disk *d, struct qcow2_cache_stats *l2, struct qcow2_cache_stats *rb)
{
	const struct qcow2 *q = qc_of(d);
	if (l2)
		*l2 = q->l2c.st;
	if (rb)
		*rb = q->rbc.st;
}

unsigned qcow2_l2_cache_tables(const struct disk *d)
{
	return qc_of(d)->l2c.cap;
}

void qcow2_fail_write(struct disk *d, uint64_t n, int err)
{
	struct qcow2 *q = qc_of(d);
	q->fail_at = n ? q->writes + n : 0;
	q->fail_err = err;
}
