/*
 * The POST-code port 0x80: firmware and kernels write progress codes there
 * (and Linux writes it only to delay I/O). This sink keeps the last value,
 * which reads back, and counts writes so a debugging user can see progress.
 */
#ifndef RINGVM_DEVICES_LEGACY_PORT80_H
#define RINGVM_DEVICES_LEGACY_PORT80_H

#include <stdint.h>

#include "core/bus.h"

#define PORT80_PORT 0x80
#define PORT80_LEN  1

struct port80;

/* Create the sink (last value 0, no writes). Returns 0 and *out, or -ENOMEM. */
int port80_create(struct port80 **out) __attribute__((warn_unused_result));

/* The last byte the guest wrote (0 before any write). Lock-free. */
uint8_t port80_last(const struct port80 *p);

/* How many writes the guest made. Lock-free. */
uint64_t port80_writes(const struct port80 *p);

/* Free the sink. No vCPU may be using it. NULL is ignored. */
void port80_destroy(struct port80 *p);

/*
 * Bus callbacks; opaque is the struct port80. Register with
 * bus_add(pio, PORT80_PORT, PORT80_LEN, &port80_bus_ops, p).
 * A wider write records its first byte; a read returns the last value in
 * every byte.
 */
extern const struct bus_ops port80_bus_ops;

#endif
