/*
 * virtio-pci transport, part 2: MSI-X (table and PBA in BAR 0, per-vector
 * and function masks) and interrupt delivery. An unmasked vector gets an
 * MSI route in KVM through the main process (IPC_CTL_MSI_ROUTE, carrying
 * the irqfd the first time); from then on an interrupt is one eventfd write
 * here, never a message. Also the VM-control request helper.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/virtio/virtio_pci_priv.h"

static int ctl_call(struct virtio_pci *p, struct ipc_ctl_req *req, int fd, int *fd_out)
{
	struct ipc_ctl_resp resp;
	int r, got[IPC_MAX_FDS];
	unsigned ngot = 0;

	if (p->ctl_dead)
		return -EPIPE;
	if (p->shutdown)
		return -ESHUTDOWN;
	req->seq = ++p->ctl_seq;
	r = ipc_send(p->ctl_sock, req, sizeof(*req), fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0);
	if (r < 0)
		goto dead;
	/* Park this task until the reply is there; other coroutines keep
	 * running meanwhile. The socket is then readable, so ipc_recv does
	 * not block. */
	r = exec_poll(p->ex, p->ctl_sock, POLLIN);
	if (r < 0)
		goto dead;
	r = ipc_recv(p->ctl_sock, &resp, sizeof(resp), got, fd_out ? 1 : 0, &ngot);
	if (r < 0)
		goto dead;
	if (resp.op != req->op || resp.seq != req->seq || resp.result > 0 ||
	    (ngot && resp.result < 0)) {
		for (unsigned i = 0; i < ngot; i++)
			close(got[i]);
		r = -EBADMSG;
		goto dead;
	}
	if (fd_out)
		*fd_out = ngot ? got[0] : -1;
	return resp.result;
dead:
	vpci_log(p, "VM-control socket: %s", strerror(-r));
	p->ctl_dead = true;
	return r;
}

static int ctl_call_locked(struct virtio_pci *p, struct ipc_ctl_req *req, int fd, int *fd_out)
{
	int r = exec_sem_wait(p->ex, &p->ctl_lock);
	if (r < 0)
		return r;
	r = ctl_call(p, req, fd, fd_out);
	exec_sem_post(p->ex, &p->ctl_lock);
	return r;
}

int vpci_ctl_call(struct virtio_pci *p, struct ipc_ctl_req *req, int fd)
{
	return ctl_call_locked(p, req, fd, NULL);
}

int virtio_vmctl_call(struct virtio_dev *d, struct ipc_ctl_req *req, int *fd_out)
{
	if (fd_out)
		*fd_out = -1;
	return ctl_call_locked(d->pci, req, -1, fd_out);
}

uint16_t vpci_msix_ctl(const struct virtio_pci *p)
{
	return (uint16_t)(p->cfg[p->cap_msix + 2] | p->cfg[p->cap_msix + 3] << 8);
}

static bool masked(const struct virtio_pci *p, uint16_t v)
{
	uint16_t ctl = vpci_msix_ctl(p);
	return !(ctl & MSIX_CTL_ENABLE) || (ctl & MSIX_CTL_FMASK) ||
	       (p->vec[v].ctrl & MSIX_ENTRY_MASKED);
}

static void fire(struct virtio_pci *p, struct virtio_msix_vec *e)
{
	static const uint64_t one = 1;
	/*
	 * From a device task the write rides on the executor's next submit (the
	 * one that waits for the next kick or completion): no syscall of its
	 * own on the completion path. Elsewhere, or with no ring room, write(2).
	 * An eventfd write only fails on counter overflow (2^64 - 2 pending
	 * interrupts), where one more changes nothing.
	 */
	if (!p->ex || exec_post_write(p->ex, e->irqfd, &one, sizeof(one)) < 0) {
		ssize_t n = write(e->irqfd, &one, sizeof(one));
		(void)n;
	}
	p->irqs++;
}

void vpci_msix_raise(struct virtio_pci *p, uint16_t v)
{
	p->signals++;
	if (v >= p->nvec || !(vpci_msix_ctl(p) & MSIX_CTL_ENABLE))
		return; /* no INTx: without MSI-X only the ISR bit tells */
	struct virtio_msix_vec *e = &p->vec[v];
	if (masked(p, v) || !e->routed) {
		p->pba |= 1ull << v; /* delivered when unmasked / routed */
		return;
	}
	fire(p, e);
}

void vpci_msix_update(struct virtio_pci *p, uint16_t v)
{
	struct virtio_msix_vec *e = &p->vec[v];
	struct ipc_ctl_req req = {.op = IPC_CTL_MSI_ROUTE, .vector = v};

	if (masked(p, v)) {
		if (!e->routed)
			return;
		e->routed = false; /* interrupts go to the PBA from now on */
		req.masked = 1;
		if (vpci_ctl_call(p, &req, -1) < 0)
			vpci_log(p, "masking MSI-X vector %u failed", v);
		return;
	}
	if (!e->routed) {
		if (e->irqfd < 0) {
			e->irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
			if (e->irqfd < 0) {
				vpci_log(p, "irqfd for vector %u: %s", v, strerror(errno));
				return;
			}
		}
		req.msi_addr = (uint64_t)e->addr_hi << 32 | e->addr_lo;
		req.msi_data = e->data;
		int r = vpci_ctl_call(p, &req, e->irqfd_sent ? -1 : e->irqfd);
		if (r < 0) {
			vpci_log(p, "MSI route for vector %u refused: %s", v, strerror(-r));
			return;
		}
		e->irqfd_sent = true;
		/* The table may have changed while we waited for the reply
		 * (another access cannot run meanwhile: the bus task is here),
		 * so the route is exactly what the entry says. */
		e->routed = true;
	}
	if (p->pba & (1ull << v)) {
		p->pba &= ~(1ull << v);
		fire(p, e);
	}
}

static uint32_t *entry_word(struct virtio_pci *p, uint32_t rel)
{
	struct virtio_msix_vec *e = &p->vec[rel / 16];
	switch ((rel % 16) / 4) {
	case 0:
		return &e->addr_lo;
	case 1:
		return &e->addr_hi;
	case 2:
		return &e->data;
	default:
		return &e->ctrl;
	}
}

static bool in_table(const struct virtio_pci *p, uint32_t off)
{
	return off >= VIRTIO_PCI_MSIX_TABLE_OFF && off < VIRTIO_PCI_MSIX_TABLE_OFF + 16u * p->nvec;
}

uint64_t vpci_msix_read(struct virtio_pci *p, uint32_t off, unsigned len)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < len; i++) {
		uint32_t o = off + i;
		uint8_t b = 0;
		if (in_table(p, o))
			b = (uint8_t)(*entry_word(p, o - VIRTIO_PCI_MSIX_TABLE_OFF) >>
			              (8 * (o % 4)));
		else if (o >= VIRTIO_PCI_MSIX_PBA_OFF && o < VIRTIO_PCI_MSIX_PBA_OFF + 8)
			b = (uint8_t)(p->pba >> (8 * (o - VIRTIO_PCI_MSIX_PBA_OFF)));
		v |= (uint64_t)b << (8 * i);
	}
	return v;
}

void vpci_msix_write(struct virtio_pci *p, uint32_t off, unsigned len, uint64_t val)
{
	uint64_t touched = 0;
	for (unsigned i = 0; i < len; i++) {
		uint32_t o = off + i;
		if (!in_table(p, o))
			continue; /* the PBA is read-only */
		uint32_t rel = o - VIRTIO_PCI_MSIX_TABLE_OFF;
		uint32_t *w = entry_word(p, rel);
		unsigned sh = 8 * (o % 4);
		uint32_t nw = (*w & ~(0xffu << sh)) | (uint32_t)((val >> (8 * i)) & 0xff) << sh;
		if ((rel % 16) / 4 == 3)
			nw &= MSIX_ENTRY_MASKED; /* only the mask bit is writable */
		else if (nw != *w)
			p->vec[rel / 16].routed = false; /* new address/data: route again */
		*w = nw;
		touched |= 1ull << (rel / 16);
	}
	for (uint16_t v = 0; v < p->nvec; v++)
		if (touched & (1ull << v))
			vpci_msix_update(p, v);
}

void vpci_msix_close(struct virtio_pci *p)
{
	for (unsigned v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++) {
		if (p->vec[v].irqfd >= 0)
			close(p->vec[v].irqfd);
		p->vec[v].irqfd = -1;
		p->vec[v].routed = false;
		p->vec[v].irqfd_sent = false;
	}
}
