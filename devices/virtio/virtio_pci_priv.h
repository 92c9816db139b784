/*
 * Internals shared by the three files of the virtio-pci transport:
 * virtio_pci.c (config space, BAR dispatch, common cfg, status),
 * virtio_pci_msix.c (MSI-X, interrupts, VM-control requests) and
 * virtio_pci_queue.c (queue enable, ioeventfds, queue coroutines).
 */
#ifndef RINGVM_DEVICES_VIRTIO_VIRTIO_PCI_PRIV_H
#define RINGVM_DEVICES_VIRTIO_VIRTIO_PCI_PRIV_H

#include <stdio.h>

#include "devices/virtio/virtio_pci.h"

/* ISR bits (virtio 1.2 §4.1.4.5). */
#define VIRTIO_ISR_QUEUE  1
#define VIRTIO_ISR_CONFIG 2

/* MSI-X message control bits and table entry layout. */
#define MSIX_CTL_ENABLE   0x8000
#define MSIX_CTL_FMASK    0x4000
#define MSIX_ENTRY_MASKED 1

#define vpci_log(p, fmt, ...) fprintf(stderr, "%s: " fmt "\n", (p)->dev->ops->name, ##__VA_ARGS__)

/* virtio_pci_msix.c */
/* One VM-control request and its reply, awaited (bus task only). Returns the reply's result. */
int vpci_ctl_call(struct virtio_pci *p, struct ipc_ctl_req *req, int fd);
/* Raise MSI-X vector v (or set its PBA bit when masked / not routed yet). */
void vpci_msix_raise(struct virtio_pci *p, uint16_t v);
/* Bring vector v's route in line with its table entry and mask state (may await). */
void vpci_msix_update(struct virtio_pci *p, uint16_t v);
uint64_t vpci_msix_read(struct virtio_pci *p, uint32_t off, unsigned len);
void vpci_msix_write(struct virtio_pci *p, uint32_t off, unsigned len, uint64_t val);
/* The message control register of the MSI-X capability. */
uint16_t vpci_msix_ctl(const struct virtio_pci *p);
void vpci_msix_close(struct virtio_pci *p);

/* virtio_pci_queue.c */
/* queue_enable was written 1 for q: validate and set up (and start after DRIVER_OK). */
void vpci_queue_enable(struct virtio_pci *p, struct virtio_queue *q);
/* Start every enabled queue (DRIVER_OK). */
void vpci_queues_start(struct virtio_pci *p);
/* Stop every queue: coroutines left, ioeventfds deassigned, eventfds closed. */
void vpci_queues_stop(struct virtio_pci *p);
/* A notify write reached the device (no ioeventfd yet, or the PCI_CFG window). */
void vpci_queue_notify(struct virtio_pci *p, uint16_t index);

#endif
