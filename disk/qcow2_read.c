/*
 * qcow2 guest reads: one cluster's worth at a time (host-contiguous data
 * clusters coalesced into one READV), from the data cluster, the backing
 * chain, zeros, or a decompressed cluster; a request inside one cluster
 * reads straight into the caller's iovecs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "disk/qcow2_int.h"

static int read_backing(struct disk *d, struct exec *ex, struct iovec *iov, unsigned n,
                        uint64_t goff, uint64_t len)
{
	struct disk *b = d->backing;
	uint64_t bsize = b->ops->size(b), in = goff < bsize ? bsize - goff : 0;
	if (in > len)
		in = len;
	struct iovec tmp[n + 1];
	if (in) {
		unsigned k = qc_iov_slice(iov, n, 0, in, tmp);
		int64_t r = b->ops->readv(b, ex, tmp, k, goff);
		if (r < 0)
			return (int)r;
	}
	if (in < len)
		qc_iov_zero(tmp, qc_iov_slice(iov, n, in, len - in, tmp));
	return 0;
}

/* Read [in, in+len) of guest cluster g, whose entry is e, into iov. */
int qc_read_seg(struct disk *d, struct exec *ex, uint64_t g, uint64_t e, uint64_t in,
                    struct iovec *iov, unsigned n, uint64_t len)
{
	struct qcow2 *q = qc_of(d);
	switch (qc_kind(q, e)) {
	case QCOW2_UNALLOC:
		if (e & QC_L2_RESERVED)
			return -EIO;
		if (d->backing)
			return read_backing(d, ex, iov, n, (g << q->cluster_bits) + in, len);
		qc_iov_zero(iov, n);
		return 0;
	case QCOW2_ZERO:
		qc_iov_zero(iov, n);
		return 0;
	case QCOW2_NORMAL: {
		int64_t h = qc_host(q, e);
		if (h < 0)
			return (int)h;
		return qc_preadv(q, ex, iov, n, (uint64_t)h + in);
	}
	case QCOW2_COMPRESSED: {
		uint8_t *buf = qc_alloc_buf(q->cs);
		if (!buf)
			return -ENOMEM;
		int r = qc_decompress(q, ex, e, buf);
		if (r == 0)
			qc_buf_to_iov(buf + in, iov, n);
		free(buf);
		return r;
	}
	}
	return -EIO;
}

int64_t qc_readv(struct disk *d, struct exec *ex, struct iovec *iov, unsigned n,
                           uint64_t off)
{
	struct qcow2 *q = qc_of(d);
	size_t total = qc_iov_total(iov, n), pos = 0;
	uint64_t in0 = off & (q->cs - 1), e0;
	if (in0 + total <= q->cs) { /* the common case: one cluster, the caller's iovecs */
		int r = qc_l2_entry(q, ex, off >> q->cluster_bits, &e0);
		if (r == 0)
			r = qc_read_seg(d, ex, off >> q->cluster_bits, e0, in0, iov, n, total);
		return r < 0 ? r : (int64_t)total;
	}
	struct iovec small[QC_SMALL_IOV], *sub = small;
	if (n + 1 > QC_SMALL_IOV && !(sub = malloc((n + 1) * sizeof(*sub))))
		return -ENOMEM;
	int r = 0;
	while (pos < total) {
		uint64_t o = off + pos, g = o >> q->cluster_bits, in = o & (q->cs - 1);
		uint64_t len = q->cs - in < total - pos ? q->cs - in : total - pos, e;
		r = qc_l2_entry(q, ex, g, &e);
		if (r < 0)
			break;
		/* Coalesce following clusters that are contiguous on the host. */
		if (qc_kind(q, e) == QCOW2_NORMAL) {
			uint64_t h = e & QC_OFF_MASK, k = 1, e2;
			while (pos + len < total &&
			       qc_l2_entry(q, ex, g + k, &e2) == 0 && qc_kind(q, e2) == QCOW2_NORMAL &&
			       !(e2 & QC_L2_RESERVED) && (e2 & QC_OFF_MASK) == h + (k << q->cluster_bits)) {
				uint64_t more = total - pos - len < q->cs ? total - pos - len : q->cs;
				len += more;
				k++;
			}
		}
		unsigned k = qc_iov_slice(iov, n, pos, len, sub);
		r = qc_read_seg(d, ex, g, e, in, sub, k, len);
		if (r < 0)
			break;
		pos += len;
	}
	if (sub != small)
		free(sub);
	return r < 0 ? r : (int64_t)total;
}

