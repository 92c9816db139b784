/*
 * virtio-pci transport, part 3: queues. Enabling validates the rings
 * (virtq_init); DRIVER_OK gives each enabled queue a kick eventfd that the
 * main process registers as a zero-length MMIO ioeventfd on the queue's
 * notify address, and one coroutine with exactly one read armed on it. Reset
 * stops the coroutines (cancel + await, never leaving an op in flight) and
 * deassigns the ioeventfds.
 */
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/virtio/virtio_pci_priv.h"

void vpci_queue_enable(struct virtio_pci *p, struct virtio_queue *q)
{
	struct virtio_dev *d = p->dev;
	if (!(p->status & VIRTIO_STATUS_FEATURES_OK)) {
		/* Ring features (EVENT_IDX, INDIRECT) are not known yet. */
		virtio_needs_reset(d, "queue enabled before FEATURES_OK");
		return;
	}
	if (q->size > d->ops->queue_max_size) {
		virtio_needs_reset(d, "queue size above the maximum");
		return;
	}
	int r = virtq_init(&q->vq, d->mem, q->size, q->desc_gpa, q->avail_gpa, q->used_gpa,
	                   d->features);
	if (r < 0) {
		virtio_needs_reset(d, r == -EFAULT ? "queue rings outside RAM"
		                                   : "queue size or ring alignment invalid");
		return;
	}
	q->enabled = true;
	if (p->status & VIRTIO_STATUS_DRIVER_OK)
		vpci_queues_start(p);
}

/* Pop and complete everything available, then signal once for the batch. */
static int run_batch(struct virtio_dev *d, struct virtio_queue *q)
{
	int r = d->ops->queue_kick(d, q);
	q->batches++;
	virtio_queue_signal(d, q);
	if (r < 0 || virtq_broken(&q->vq)) {
		virtio_needs_reset(d, "malformed virtqueue");
		return -EIO;
	}
	return 0;
}

static int queue_task(struct exec *ex, void *arg)
{
	struct virtio_queue *q = arg;
	struct virtio_dev *d = q->dev;

	/* Buffers made available before DRIVER_OK (their kicks reached no
	 * eventfd) are served first. */
	if (!q->stopping && run_batch(d, q) < 0)
		return 0;
	while (!q->stopping) {
		q->waiting = true;
		int64_t v = exec_eventfd_wait(ex, &q->kick);
		q->waiting = false;
		if (v == -ECANCELED || q->stopping)
			break;
		if (v < 0) {
			virtio_needs_reset(d, "kick eventfd read failed");
			break;
		}
		q->kicks++;
		if (run_batch(d, q) < 0)
			break;
	}
	return 0;
}

static void queue_start(struct virtio_pci *p, struct virtio_queue *q)
{
	struct ipc_ctl_req req = {.op = IPC_CTL_IOEVENTFD,
	                          .bar = VIRTIO_PCI_BAR,
	                          .assign = 1,
	                          .off = virtio_pci_notify_off(q->index)};
	q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->kick_fd < 0) {
		virtio_needs_reset(p->dev, "no eventfd for a queue");
		return;
	}
	exec_eventfd_init(&q->kick, q->kick_fd);
	/* The ioeventfd may be refused (the notify write then still arrives as
	 * a BAR write and vpci_queue_notify kicks by hand), so go on anyway. */
	int r = vpci_ctl_call(p, &req, q->kick_fd);
	if (r < 0)
		vpci_log(p, "ioeventfd for queue %u refused: %s", q->index, strerror(-r));
	else
		q->ioeventfd = true;
	q->stopping = false;
	r = exec_spawn(p->ex, queue_task, q, 0, &q->task);
	if (r < 0) {
		q->task = NULL;
		virtio_needs_reset(p->dev, "cannot start a queue coroutine");
	}
}

void vpci_queues_start(struct virtio_pci *p)
{
	struct virtio_dev *d = p->dev;
	for (unsigned i = 0; i < d->ops->num_queues; i++) {
		struct virtio_queue *q = &d->queues[i];
		if (q->enabled && q->kick_fd < 0)
			queue_start(p, q);
	}
}

static void queue_stop(struct virtio_pci *p, struct virtio_queue *q)
{
	if (q->task) {
		q->stopping = true;
		/* Only a coroutine parked on its kick is cancelled: one inside
		 * queue_kick finishes the requests it popped and then sees
		 * `stopping`. The join returns after its last op completed. */
		if (q->waiting && exec_task_cancel(p->ex, q->task) < 0)
			vpci_log(p, "queue %u: cancel failed", q->index);
		int r = exec_join(p->ex, q->task);
		(void)r;
		q->task = NULL;
	}
	if (q->kick_fd < 0)
		return;
	/* The read stays armed after a cancelled wait: disarm (cancel and await
	 * its completion) before the eventfd is closed. */
	int64_t r = exec_eventfd_close(p->ex, &q->kick);
	(void)r;
	if (q->ioeventfd && !p->shutdown) {
		struct ipc_ctl_req req = {.op = IPC_CTL_IOEVENTFD,
		                          .bar = VIRTIO_PCI_BAR,
		                          .assign = 0,
		                          .off = virtio_pci_notify_off(q->index)};
		if (vpci_ctl_call(p, &req, -1) < 0)
			vpci_log(p, "deassigning the ioeventfd of queue %u failed", q->index);
		q->ioeventfd = false;
	}
	close(q->kick_fd);
	q->kick_fd = -1;
}

void vpci_queues_stop(struct virtio_pci *p)
{
	for (unsigned i = 0; i < p->dev->ops->num_queues; i++)
		queue_stop(p, &p->dev->queues[i]);
}

void vpci_queue_notify(struct virtio_pci *p, uint16_t index)
{
	struct virtio_queue *q = &p->dev->queues[index];
	if (q->kick_fd < 0)
		return; /* not started: the first batch at DRIVER_OK looks anyway */
	uint64_t one = 1;
	ssize_t n = write(q->kick_fd, &one, sizeof(one)); /* fails only on overflow */
	(void)n;
}
