/*
 * virtio-rng, the entropy device (virtio 1.2 §5.4): one queue of
 * device-writable buffers, each filled from getrandom(2). It is the model
 * device: one ops table, a factory, an allowlist, a registry entry; the
 * transport does everything else. Copy this file to start a new device.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "devices/virtio/registry.h"

#define RNG_QUEUE_SIZE 256
/* Bytes per request at most: a guest posting a huge buffer gets a short
 * (but valid) answer instead of holding the queue for long. */
#define RNG_MAX_PER_REQUEST (64u * 1024)

struct rng {
	struct virtio_dev vdev;   /* first: what the transport sees */
	struct virtq_chain chain; /* one queue, one coroutine: one chain at a time */
	uint64_t bytes;           /* entropy handed out (tests, stats) */
};

/* Fill up to RNG_MAX_PER_REQUEST bytes of the chain's writable part. */
static size_t fill(struct virtq_writer *w)
{
	size_t budget = virtq_writer_remaining(w);
	if (budget > RNG_MAX_PER_REQUEST)
		budget = RNG_MAX_PER_REQUEST;
	while (budget) {
		struct iovec iov;
		size_t n;
		if (!virtq_writer_iov(w, &iov, 1, budget, &n))
			break;
		/* Straight into guest RAM: the buffer was validated by virtq_pop. */
		ssize_t got = getrandom(iov.iov_base, n, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break; /* report what was filled; never pass unfilled bytes */
		virtq_writer_advance(w, (size_t)got);
		budget -= (size_t)got;
	}
	return virtq_writer_written(w);
}

static int rng_kick(struct virtio_dev *d, struct virtio_queue *q)
{
	struct rng *rng = (struct rng *)d;
	int r;
	while ((r = virtq_pop(&q->vq, &rng->chain)) > 0) {
		struct virtq_writer w;
		virtq_writer_init(&w, &rng->chain);
		size_t n = fill(&w);
		rng->bytes += n;
		r = virtq_push(&q->vq, &rng->chain, (uint32_t)n);
		if (r < 0)
			return r;
	}
	return r; /* 0: ring empty; < 0: the queue is broken */
}

static const struct virtio_device_ops rng_ops = {
    .name = "virtio-rng",
    .device_id = VIRTIO_ID_ENTROPY,
    .pci_class = 0xff, /* "unassigned class", as other VMMs give an RNG */
    .pci_subclass = 0x00,
    .num_queues = 1,
    .queue_max_size = RNG_QUEUE_SIZE,
    .features = 0,
    .config_size = 0,
    .queue_kick = rng_kick,
};

static int rng_create(const struct registry_ctx *ctx, const char *opts, void **state)
{
	(void)ctx;
	if (opts && *opts) {
		fprintf(stderr, "rng: takes no options (got \"%s\")\n", opts);
		return -EINVAL;
	}
	struct rng *rng = calloc(1, sizeof(*rng));
	if (!rng)
		return -ENOMEM;
	rng->vdev.ops = &rng_ops;
	*state = rng;
	return 0;
}

static void rng_destroy(void *state)
{
	free(state);
}

/* getrandom(2) is all rng adds to devproc's needs, and jail_base_rules
 * already allows it: no extra rules. A device that needs more lists them
 * here, e.g. {.nr = __NR_fdatasync}. */
const struct registry_entry rng_entry = {
    .option = "rng",
    .meta = NULL,
    .help = "virtio-rng entropy device (on by default; --no-rng leaves it out),\n"
	    "fed by the host's getrandom() from its own sandboxed process.",
    .default_on = true,
    .ops = &rng_ops,
    .create = rng_create,
    .destroy = rng_destroy,
    .rules = NULL,
    .n_rules = 0,
    .uring_ops = NULL,
    .n_uring_ops = 0,
};
