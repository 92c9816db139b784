/*
 * A 16550A UART on the PIO bus (COM1 is 0x3f8, 8 ports, IRQ 4): every register
 * Linux's 8250 driver probes, interrupt-driven TX and RX, a 64-byte RX FIFO
 * fed by an input thread, TX written straight to an fd or a sink callback.
 * The guest sees a plain 16550A; nothing here is virtio.
 */
#ifndef RINGVM_DEVICES_LEGACY_SERIAL_H
#define RINGVM_DEVICES_LEGACY_SERIAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/bus.h"
#include "core/irq.h"

/* The four PC COM ports. Each claims SERIAL_PORT_LEN ports at its base. */
#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ  4
#define SERIAL_COM2_BASE 0x2f8
#define SERIAL_COM2_IRQ  3
#define SERIAL_COM3_BASE 0x3e8
#define SERIAL_COM3_IRQ  4
#define SERIAL_COM4_BASE 0x2e8
#define SERIAL_COM4_IRQ  3
#define SERIAL_PORT_LEN  8

/*
 * Depth of the RX FIFO while the guest has FIFOs enabled (FCR bit 0); with
 * FIFOs off the UART holds one byte, like a 16450. Deeper than a real
 * 16550A's 16 bytes so the input thread waits less; the guest cannot tell,
 * since Linux drains while LSR.DR is set rather than counting to 16.
 */
#define SERIAL_RX_FIFO_SIZE 64

struct serial;

/*
 * Optional TX sink, replacing out_fd: receives every byte the guest transmits
 * (outside loopback), in order, with the device lock held. It must not block
 * for long (a vCPU is waiting) and must not call back into this serial.
 */
typedef void serial_sink_fn(void *opaque, const uint8_t *buf, size_t len);

/*
 * Optional RX-space notification: called (device lock held; must not call
 * back into this serial, e.g. write an eventfd) once the guest has made room
 * after serial_push_input() accepted fewer bytes than offered, or when the
 * guest leaves loopback mode. The input thread then retries.
 */
typedef void serial_rx_ready_fn(void *opaque);

/* Counters for metrics; a snapshot taken under the device lock. */
struct serial_stats {
	uint64_t tx_bytes;    /* bytes the guest wrote to THR outside loopback */
	uint64_t tx_dropped;  /* of those, bytes the output refused (EAGAIN, EPIPE, ...) */
	uint64_t rx_bytes;    /* bytes accepted by serial_push_input() */
	uint64_t rx_flushed;  /* accepted bytes the guest discarded (FCR clear / FIFO toggle) */
	uint64_t rx_overruns; /* loopback bytes lost to a full RX FIFO (LSR.OE set) */
};

/*
 * Create a UART in its power-on state (FIFOs off, divisor 12 = 9600 baud,
 * interrupts disabled). irq is the caller's line (IRQ 4 for COM1), which must
 * outlive the serial; the serial only drives it, under its own lock. out_fd is
 * where TX bytes go (-1: discarded); it is used as is and never closed: make
 * it non-blocking if a stalled reader must not stall the vCPU, and ignore
 * SIGPIPE in the process (the VMM does) so a closed reader only costs
 * tx_dropped. Returns 0 and *out, -EINVAL (irq NULL) or -ENOMEM.
 */
int serial_create(struct serial **out, struct irq_line *irq, int out_fd)
    __attribute__((warn_unused_result));

/* Route TX to fn instead of out_fd (fn NULL: back to out_fd). Call before the guest runs. */
void serial_set_sink(struct serial *s, serial_sink_fn *fn, void *opaque);

/* Set the RX-space notification (NULL: none). Call before the input thread starts. */
void serial_set_rx_ready(struct serial *s, serial_rx_ready_fn *fn, void *opaque);

/*
 * Queue host input for the guest; safe from any thread. Returns how many of
 * the len bytes were accepted (0..len): fewer when the FIFO is full, 0 while
 * the guest has the UART in loopback (its receiver is then disconnected).
 * Bytes not accepted are the caller's to retry (after the rx_ready
 * notification, or later), so no input is lost here. Raises the RX interrupt
 * when the guest enabled it.
 */
size_t serial_push_input(struct serial *s, const uint8_t *buf, size_t len);

/* Copy the counters. */
void serial_get_stats(struct serial *s, struct serial_stats *out);

/* Free the UART. No vCPU or input thread may be using it. NULL is ignored. */
void serial_destroy(struct serial *s);

/*
 * Bus callbacks; opaque is the struct serial. Register with
 * bus_add(pio, SERIAL_COM1_BASE, SERIAL_PORT_LEN, &serial_bus_ops, s).
 * Wider accesses act as consecutive byte accesses, as on the ISA bus.
 */
extern const struct bus_ops serial_bus_ops;

#endif
