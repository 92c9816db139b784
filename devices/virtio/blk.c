/*
 * virtio-blk (virtio 1.2 §5.2) on a disk/ backend: multiqueue, many requests
 * in flight per queue, zero-copy readv/writev on the guest's buffers. Each
 * queue has a pool of request slots sized to the queue, each slot a
 * coroutine spawned on first use; the queue coroutine pops and checks every
 * available chain, hands it to a slot and returns, so all the I/O of a
 * batch is submitted with one io_uring_enter. Completions push as their CQEs
 * arrive and signal once per batch (EVENT_IDX decides).
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/io_uring.h>

#include "devices/virtio/blk.h"
#include "devices/virtio/registry.h"
#include "disk/qcow2.h"

struct blk;
struct blk_queue;

/* One request slot: the chain, its checked description, its coroutine. */
struct blk_req {
	struct virtq_chain chain;
	struct blk_req_desc d;
	struct iovec iov[VIRTQ_MAX_SIZE]; /* the data, as views of the chain's buffers */
	uint8_t *bounce; /* BLK_BOUNCE bytes, page-aligned: a private copy of the start of a
	                    write to sector 0 (format-probe check; aligned for O_DIRECT) */
	struct blk_queue *q;
	struct exec_task *task; /* spawned on first use, lives until reset */
	struct exec_sem go;     /* posted when the slot holds a request */
	struct blk_req *next_free;
	uint64_t t_pop; /* exec_now() when taken off the avail ring */
};

/* Bytes of a sector-0 write checked and written from a private copy. */
#define BLK_BOUNCE 4096u

struct blk_queue {
	struct blk *blk;
	struct virtio_queue *vq;
	struct blk_req *reqs; /* vq->vq.size slots, allocated on the first kick */
	uint8_t *bounce;      /* vq->vq.size × BLK_BOUNCE, page-aligned, touched only when used */
	unsigned nreqs;
	struct blk_req *free;
	unsigned active;     /* handed to a slot and not yet finished (signal included) */
	bool signal_pending; /* a completion will signal for the current batch */
	bool draining;       /* reset waits on `drained` for active == 0 */
	struct exec_waitq drained;
};

struct blk {
	struct virtio_dev vdev;       /* first: what the transport sees */
	struct virtio_device_ops ops; /* blk_ops with this disk's queue count and size */
	struct blk_opts opts;
	struct disk disk;
	struct blk_geom geom;
	struct virtio_blk_config cfg; /* little-endian, as the driver reads it */
	struct blk_queue q[VIRTIO_MAX_QUEUES];
	struct ipc_metrics m;      /* counters, reported by IPC_METRICS */
	bool resizing;             /* blk_resize runs: queues take no new request */
	struct exec_waitq resized; /* queue coroutines waiting for it to finish */
};

static void count(struct blk *b, const struct blk_req *req, uint8_t status)
{
	struct ipc_metrics *m = &b->m;
	const struct blk_req_desc *d = &req->d;
	m->requests++;
	m->inflight--;
	if (status != VIRTIO_BLK_S_OK || d->no_status)
		m->errors++;
	switch (d->type) {
	case VIRTIO_BLK_T_IN:
		m->reads++;
		if (status == VIRTIO_BLK_S_OK)
			m->bytes_read += d->len;
		break;
	case VIRTIO_BLK_T_OUT:
		m->writes++;
		if (status == VIRTIO_BLK_S_OK)
			m->bytes_written += d->len;
		break;
	case VIRTIO_BLK_T_FLUSH:
		m->flushes++;
		break;
	case VIRTIO_BLK_T_GET_ID:
		m->get_ids++;
		break;
	case VIRTIO_BLK_T_DISCARD:
		m->discards++;
		break;
	case VIRTIO_BLK_T_WRITE_ZEROES:
		m->write_zeroes++;
		break;
	default:
		m->other++;
	}
}

/* Write the status, publish the used entry, record the service time, free the slot. */
static void finish(struct blk_queue *q, struct blk_req *req, uint8_t status)
{
	struct blk *b = q->blk;
	const struct virtq_chain *c = &req->chain;
	uint32_t used = 0;
	if (!req->d.no_status) {
		struct virtq_writer w;
		virtq_writer_init(&w, c);
		virtq_writer_advance(&w,
		                     c->write_len - 1u); /* the status is the chain's last byte */
		(void)virtq_writer_write(&w, &status, 1);
		used = c->write_len;
	}
	int r = virtq_push(&q->vq->vq, c, used);
	(void)r; /* -EIO: the queue broke meanwhile; the head is released all the same */
	uint64_t ns = exec_now() - req->t_pop;
	struct ipc_metrics *m = &b->m;
	m->svc_count++;
	m->svc_sum_ns += ns;
	if (ns > m->svc_max_ns)
		m->svc_max_ns = ns;
	m->svc_hist[ipc_metrics_bucket(ns)]++;
	count(b, req, status);
	/* Free the slot before anything can park: the guest may reuse the head at once. */
	req->next_free = q->free;
	q->free = req;
}

static uint8_t io_status(int64_t r)
{
	/* Every host error (EIO, ENOSPC, EFBIG...) is the request's, never the VM's. */
	return r < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
}

static uint8_t do_read(struct exec *ex, struct blk *b, struct blk_req *req)
{
	struct virtq_writer w;
	size_t bytes;
	virtq_writer_init(&w, &req->chain);
	unsigned n = virtq_writer_iov(&w, req->iov, VIRTQ_MAX_SIZE, req->d.len, &bytes);
	if (bytes != req->d.len)
		return VIRTIO_BLK_S_IOERR;
	return io_status(b->disk.ops->readv(&b->disk, ex, req->iov, n, req->d.off));
}

static uint8_t do_write(struct exec *ex, struct blk *b, struct blk_req *req)
{
	struct virtq_reader rd;
	size_t bytes, len = req->d.len;
	unsigned n = 0;
	virtq_reader_init(&rd, &req->chain);
	virtq_reader_advance(&rd, BLK_HDR_LEN);
	if (req->d.off == 0 && b->disk.auto_detected && len) {
		/*
		 * An auto-detected raw image must never become a qcow2 image: the
		 * next auto-detecting open would follow a guest-chosen backing
		 * file. Check a private copy of the start (the guest can rewrite
		 * its buffer at any time) and write that copy: page-aligned and a
		 * page long (or the whole write), so O_DIRECT takes it too.
		 */
		size_t head = len < BLK_BOUNCE ? len : BLK_BOUNCE;
		if (virtq_reader_read(&rd, req->bounce, head) != head)
			return VIRTIO_BLK_S_IOERR;
		req->iov[0] = (struct iovec){.iov_base = req->bounce, .iov_len = head};
		if (disk_write_is_format_probe(&b->disk, req->iov, 1, 0))
			return VIRTIO_BLK_S_IOERR;
		n = 1;
		len -= head;
	}
	n += virtq_reader_iov(&rd, req->iov + n, VIRTQ_MAX_SIZE - n, len, &bytes);
	if (bytes != len)
		return VIRTIO_BLK_S_IOERR;
	return io_status(b->disk.ops->writev(&b->disk, ex, req->iov, n, req->d.off));
}

static uint8_t do_dz(struct exec *ex, struct blk *b, struct blk_req *req)
{
	for (unsigned i = 0; i < req->d.nseg; i++) {
		const struct blk_dz_seg *s = &req->d.seg[i];
		uint64_t off = s->sector * BLK_SECTOR, len = (uint64_t)s->num_sectors * BLK_SECTOR;
		int r;
		if (!len)
			continue;
		if (req->d.type == VIRTIO_BLK_T_DISCARD)
			r = b->disk.ops->discard(&b->disk, ex, off, len);
		else
			r = b->disk.ops->write_zeroes(&b->disk, ex, off, len,
			                              (s->flags & VIRTIO_BLK_WZ_F_UNMAP) &&
			                                  b->geom.may_unmap);
		if (r < 0)
			return VIRTIO_BLK_S_IOERR;
	}
	return VIRTIO_BLK_S_OK;
}

static uint8_t execute(struct exec *ex, struct blk *b, struct blk_req *req)
{
	switch (req->d.type) {
	case VIRTIO_BLK_T_IN:
		return do_read(ex, b, req);
	case VIRTIO_BLK_T_OUT:
		return do_write(ex, b, req);
	case VIRTIO_BLK_T_FLUSH:
		return io_status(b->disk.ops->flush(&b->disk, ex));
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		return do_dz(ex, b, req);
	}
	return VIRTIO_BLK_S_UNSUPP; /* blk_req_check lets nothing else through */
}

/* A request slot's coroutine: one request at a time, many slots at once. */
static int slot_task(struct exec *ex, void *arg)
{
	struct blk_req *req = arg;
	struct blk_queue *q = req->q;
	for (;;) {
		if (exec_sem_wait(ex, &req->go) < 0)
			return 0; /* cancelled by reset, idle */
		finish(q, req, execute(ex, q->blk, req));
		/*
		 * One interrupt per batch: the first slot to complete lets every
		 * other task of this pass (the other completions of the same CQE
		 * batch) run before it signals; the others find it pending. Alone
		 * (QD1), it signals at once: a yield would only add a loop pass.
		 */
		if (!q->signal_pending) {
			if (exec_others_runnable(ex)) {
				q->signal_pending = true;
				exec_yield(ex);
				q->signal_pending = false;
			}
			virtio_queue_signal(&q->blk->vdev, q->vq);
		}
		if (--q->active == 0 && q->draining)
			exec_waitq_wake(ex, &q->drained, UINT_MAX);
	}
}

static int queue_alloc(struct blk *b, struct blk_queue *q, struct virtio_queue *vq)
{
	unsigned n = vq->vq.size;
	void *bounce = NULL;
	q->reqs = calloc(n, sizeof(*q->reqs));
	if (!q->reqs || posix_memalign(&bounce, 4096, (size_t)n * BLK_BOUNCE)) {
		free(q->reqs);
		q->reqs = NULL;
		return -ENOMEM;
	}
	q->bounce = bounce;
	q->blk = b;
	q->vq = vq;
	q->nreqs = n;
	q->free = NULL;
	for (unsigned i = n; i-- > 0;) {
		struct blk_req *req = &q->reqs[i];
		req->q = q;
		req->bounce = q->bounce + (size_t)i * BLK_BOUNCE;
		exec_sem_init(&req->go, 0);
		req->next_free = q->free;
		q->free = req;
	}
	exec_waitq_init(&q->drained);
	return 0;
}

/* Complete at once what needs no I/O (bad requests, GET_ID, empty transfers). */
static bool immediate(struct blk *b, struct blk_req *req, uint8_t *status)
{
	const struct blk_req_desc *d = &req->d;
	*status = d->status;
	if (d->no_status || d->status != VIRTIO_BLK_S_OK)
		return true;
	switch (d->type) {
	case VIRTIO_BLK_T_GET_ID: {
		char id[BLK_ID_BYTES] = {0}; /* NUL-padded when shorter than 20 bytes */
		struct virtq_writer w;
		memcpy(id, b->opts.id, strnlen(b->opts.id, BLK_ID_BYTES));
		virtq_writer_init(&w, &req->chain);
		(void)virtq_writer_write(&w, id, BLK_ID_BYTES);
		return true;
	}
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		return d->len == 0;
	case VIRTIO_BLK_T_FLUSH:
		return b->disk.read_only;
	}
	return false;
}

static int blk_kick(struct virtio_dev *d, struct virtio_queue *vq)
{
	struct blk *b = (struct blk *)d;
	struct blk_queue *q = &b->q[vq->index];
	int r;
	/* A resize is changing the disk under the requests: leave them on the
	 * ring until it is done (it wakes us), then check them against the new size. */
	while (b->resizing)
		if (exec_waitq_wait(d->ex, &b->resized) < 0)
			return 0;
	if (!q->reqs && (r = queue_alloc(b, q, vq)) < 0)
		return r;
	b->m.notifications++;
	for (;;) {
		/* At most size chains are in flight (virtq_pop refuses more), so a
		 * slot is free whenever the ring has one for us. */
		struct blk_req *req = q->free;
		if (!req)
			return 0;
		r = virtq_pop(&vq->vq, &req->chain);
		if (r <= 0)
			return r;
		q->free = req->next_free;
		req->t_pop = exec_now();
		if (++b->m.inflight > b->m.max_inflight)
			b->m.max_inflight = b->m.inflight;
		blk_req_check(&b->geom, &req->chain, &req->d);
		uint8_t status;
		if (immediate(b, req, &status)) {
			finish(q, req, status); /* the transport signals after this batch */
			continue;
		}
		if (!req->task && exec_spawn(d->ex, slot_task, req, 0, &req->task) < 0) {
			req->task = NULL;
			finish(q, req, VIRTIO_BLK_S_IOERR);
			continue;
		}
		q->active++;
		exec_sem_post(d->ex, &req->go);
	}
}

/* Wait until q has no request handed to a slot (its I/O done, its signal sent). */
static void drain(struct exec *ex, struct blk_queue *q)
{
	q->draining = true;
	while (q->active)
		if (exec_waitq_wait(ex, &q->drained) < 0)
			exec_yield(ex); /* cancelled ourselves: still wait it out */
	q->draining = false;
}

/* Finish every request in flight, then stop the idle slot coroutines. */
static void blk_reset(struct virtio_dev *d)
{
	struct blk *b = (struct blk *)d;
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		struct blk_queue *q = &b->q[i];
		if (!q->reqs)
			continue;
		drain(d->ex, q);
		for (unsigned k = 0; k < q->nreqs; k++) {
			struct blk_req *req = &q->reqs[k];
			if (!req->task)
				continue;
			/* Idle: parked on its semaphore, so the cancel ends it at once. */
			int r = exec_task_cancel(d->ex, req->task);
			r = exec_join(d->ex, req->task);
			(void)r;
			req->task = NULL;
		}
		free(q->reqs);
		free(q->bounce);
		memset(q, 0, sizeof(*q));
	}
}

static void blk_config_read(struct virtio_dev *d, uint32_t off, void *buf, uint32_t len)
{
	struct blk *b = (struct blk *)d;
	memcpy(buf, (const uint8_t *)&b->cfg + off, len);
}

static void blk_config_write(struct virtio_dev *d, uint32_t off, const void *buf, uint32_t len)
{
	(void)d, (void)off, (void)buf, (void)len; /* nothing is writable (no CONFIG_WCE) */
}

static const struct virtio_device_ops blk_ops = {
    .name = "virtio-blk",
    .device_id = VIRTIO_ID_BLOCK,
    .pci_class = 0x01, /* mass storage */
    .pci_subclass = 0x00,
    .num_queues = 1, /* per disk: queues= (see blk_create) */
    .queue_max_size = BLK_DEFAULT_QUEUE_SIZE,
    .features = 0, /* per disk */
    .config_size = sizeof(struct virtio_blk_config),
    .config_read = blk_config_read,
    .config_write = blk_config_write,
    .activate = NULL,
    .queue_kick = blk_kick,
    .reset = blk_reset,
};

static void setup_config(struct blk *b)
{
	const struct blk_opts *o = &b->opts;
	bool ro = b->disk.read_only;
	uint64_t f = (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
	             (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH) |
	             (1ull << VIRTIO_BLK_F_MQ);
	if (ro)
		f |= 1ull << VIRTIO_BLK_F_RO;
	if (!ro && o->discard)
		f |= 1ull << VIRTIO_BLK_F_DISCARD;
	if (!ro)
		f |= 1ull << VIRTIO_BLK_F_WRITE_ZEROES;
	b->ops = blk_ops;
	b->ops.num_queues = (uint16_t)o->queues;
	b->ops.queue_max_size = (uint16_t)o->queue_size;
	b->ops.features = f;
	b->vdev.ops = &b->ops;

	b->geom = (struct blk_geom){.capacity = b->disk.ops->size(&b->disk) / BLK_SECTOR,
	                            .read_only = ro,
	                            .discard = !ro && o->discard,
	                            .write_zeroes = !ro,
	                            .may_unmap = !ro && o->discard};
	struct virtio_blk_config *c = &b->cfg;
	memset(c, 0, sizeof(*c));
	c->capacity = htole64(b->geom.capacity);
	c->size_max = htole32(BLK_SIZE_MAX);
	c->seg_max = htole32(o->queue_size - 2); /* header and status take two descriptors */
	c->blk_size = htole32(BLK_SECTOR);
	c->num_queues = htole16((uint16_t)o->queues);
	c->max_discard_sectors = htole32(BLK_MAX_DZ_SECTORS);
	c->max_discard_seg = htole32(BLK_MAX_SEG);
	c->discard_sector_alignment = htole32(4096 / BLK_SECTOR);
	c->max_write_zeroes_sectors = htole32(BLK_MAX_DZ_SECTORS);
	c->max_write_zeroes_seg = htole32(BLK_MAX_SEG);
	c->write_zeroes_may_unmap = b->geom.may_unmap;
}

static int blk_create(const struct registry_ctx *ctx, const char *opts, void **state)
{
	char err[512];
	struct blk *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->disk.fd = b->disk.io_fd = -1;
	int r =
	    blk_parse_opts(opts, ctx && ctx->ncpus ? ctx->ncpus : 1, &b->opts, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ringvm run: %s\n", err);
		free(b);
		return r;
	}
	struct disk_open_params p = {.path = b->opts.path,
	                             .format = b->opts.format,
	                             .read_only = b->opts.read_only,
	                             .direct = b->opts.direct};
	r = disk_open(&b->disk, &p, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ringvm run: --block: %s\n", err);
		free(b);
		return r;
	}
	setup_config(b);
	exec_waitq_init(&b->resized);
	*state = b;
	return 0;
}

static void blk_destroy(void *state)
{
	struct blk *b = state;
	if (!b)
		return;
	disk_close(&b->disk);
	free(b);
}

static unsigned blk_keep_fds(void *state, int *fds, unsigned max)
{
	struct blk *b = state;
	/* The image and, for qcow2, every backing file: the jail closes anything else. */
	return b->disk.fd < 0 ? 0 : disk_fds(&b->disk, fds, max);
}

static void blk_metrics(void *state, struct ipc_metrics *out)
{
	struct blk *b = state;
	*out = b->m;
}

/*
 * IPC_RESIZE, in the device process: the main process has already made
 * room in a raw file (blk_resize_host) and truncates it after we return;
 * a qcow2 image grows here, through the ring. No request is in flight
 * meanwhile: the queues stop taking new ones and those in flight finish,
 * since a qcow2 grow may move the L1 table under them and a raw shrink
 * must not race with a write past the new end. Then capacity is updated,
 * the config generation bumped and the config-change interrupt raised.
 */
static int blk_resize(void *state, struct exec *ex, uint64_t new_size, uint64_t *now)
{
	struct blk *b = state;
	struct disk *d = &b->disk;
	uint64_t old = d->ops->size(d);
	bool qcow2 = d->format == DISK_FORMAT_QCOW2;
	*now = old;
	if (!new_size || new_size % BLK_SECTOR)
		return -EINVAL;
	if (d->read_only)
		return -EROFS;
	if (qcow2 && new_size < old)
		return -ENOTSUP; /* shrinking a qcow2 image under a running guest: not offered */
	if (new_size == old)
		return 0;
	b->resizing = true;
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
		if (b->q[i].reqs)
			drain(ex, &b->q[i]);
	int r = 0;
	if (qcow2)
		r = qcow2_grow(d, ex, new_size);
	else
		d->size = new_size;
	/* Whatever the outcome, the guest sees what the disk now says it is. */
	*now = d->ops->size(d);
	b->geom.capacity = *now / BLK_SECTOR;
	b->cfg.capacity = htole64(b->geom.capacity);
	b->resizing = false;
	exec_waitq_wake(ex, &b->resized, UINT_MAX);
	if (*now != old)
		virtio_config_changed(&b->vdev);
	return r;
}

/* The main process's part of a resize (see registry.h): a raw file's length. */
static int blk_resize_host(void *state, enum registry_resize_step step, uint64_t new_size)
{
	struct blk *b = state;
	struct disk *d = &b->disk;
	bool qcow2 = d->format == DISK_FORMAT_QCOW2;
	uint64_t old = d->size;
	struct stat st;
	switch (step) {
	case REGISTRY_RESIZE_PREPARE:
		if (!new_size || new_size % BLK_SECTOR)
			return -EINVAL;
		if (d->read_only)
			return -EROFS;
		if (qcow2)
			return new_size < old ? -ENOTSUP : 0;
		if (fstat(d->fd, &st) < 0)
			return -errno;
		if (!S_ISREG(st.st_mode))
			return -ENOTSUP; /* a block device's size is not ours to change */
		if (new_size > old && ftruncate(d->fd, (off_t)new_size) < 0)
			return -errno;
		return 0;
	case REGISTRY_RESIZE_COMMIT:
		d->size = new_size;
		if (!qcow2 && new_size < old && ftruncate(d->fd, (off_t)new_size) < 0)
			return -errno;
		return 0;
	case REGISTRY_RESIZE_ABORT:
		if (!qcow2 && new_size > old && ftruncate(d->fd, (off_t)old) < 0)
			return -errno;
		return 0;
	}
	return -EINVAL;
}

/* All I/O goes through the ring: readv/writev, fdatasync (FSYNC), discard
 * and write-zeroes (FALLOCATE). No extra system calls. */
static const uint8_t blk_uring_ops[] = {IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC,
                                        IORING_OP_FALLOCATE};

const struct registry_entry blk_entry = {
    .option = "block",
    .meta = "path=FILE[,OPTS]",
    .help = "virtio-blk disk (repeatable; the first is /dev/vda in Linux). OPTS:\n"
            "format=raw|qcow2|auto (auto: detected from the image; a guest can never\n"
            "turn an auto-detected raw image into qcow2), backing files of a qcow2\n"
            "image are opened too (read-only, relative to its directory),\n"
            "ro (read-only, shared lock), direct (O_DIRECT), id=STR (serial,\n"
            "at most 20 bytes; default the file name), queues=N (default: one\n"
            "per vCPU, at most 16), queue-size=N (power of two, default 256),\n"
            "discard=on|off (default on). The image is locked against other\n"
            "writers; the device process gets it open and opens nothing.\n"
            "A dirty qcow2 image (lazy refcounts, not closed cleanly) opened\n"
            "read-write has its refcounts rebuilt first (as QEMU does); one the\n"
            "rebuild cannot repair is refused (use ro). A corrupt one is ro.",
    .default_on = false,
    .ops = &blk_ops,
    .create = blk_create,
    .destroy = blk_destroy,
    .keep_fds = blk_keep_fds,
    .metrics = blk_metrics,
    .resize = blk_resize,
    .resize_host = blk_resize_host,
    .rules = NULL,
    .n_rules = 0,
    .uring_ops = blk_uring_ops,
    .n_uring_ops = sizeof(blk_uring_ops),
    /* Buffered writes, fdatasync and fallocate run on io-wq workers; each is
     * a thread of the jail's user, so cap them below RLIMIT_NPROC. */
    .uring_max_workers = {8, 4},
    .max_file_size = JAIL_RLIM_INFINITY,
    .max_procs = 32,
};
