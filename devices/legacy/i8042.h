/*
 * A minimal i8042 keyboard controller at PIO 0x60 (data) and 0x64 (status /
 * command), with no keyboard or mouse attached and no IRQ: enough for Linux's
 * i8042 probe to pass quickly, and the guest's way to reboot the machine
 * (command 0xfe), which the VMM turns into "VM ends with status 0".
 */
#ifndef RINGVM_DEVICES_LEGACY_I8042_H
#define RINGVM_DEVICES_LEGACY_I8042_H

#include <stdint.h>

#include "core/bus.h"

/* Two separate one-port ranges, since each range's offsets start at 0. */
#define I8042_DATA_PORT    0x60
#define I8042_COMMAND_PORT 0x64
#define I8042_PORT_LEN     1

struct i8042;

/*
 * Called when the guest pulses the CPU reset line: command 0xfe (or any
 * 0xf0-0xfe pulse command with bit 0 clear, which is what pulses reset on a
 * real 8042), or writing the output port (0xd1) with bit 0 clear. Called from
 * the vCPU thread without the device lock held, so it may do anything but
 * destroy the i8042; it is not called again until the callback returns.
 */
typedef void i8042_reset_fn(void *opaque);

/*
 * Create a controller in its post-BIOS state (self-test passed, keyboard
 * interrupt and translation on, AUX disabled). reset may be NULL (reset
 * requests are then only counted). Returns 0 and *out, or -ENOMEM.
 */
int i8042_create(struct i8042 **out, i8042_reset_fn *reset, void *opaque)
    __attribute__((warn_unused_result));

/* Times the guest requested a CPU reset (for tests and metrics). */
unsigned i8042_reset_count(struct i8042 *k);

/* Free the controller. No vCPU may be using it. NULL is ignored. */
void i8042_destroy(struct i8042 *k);

/*
 * Bus callbacks; opaque is the struct i8042. Register both:
 *   bus_add(pio, I8042_DATA_PORT, I8042_PORT_LEN, &i8042_data_ops, k)
 *   bus_add(pio, I8042_COMMAND_PORT, I8042_PORT_LEN, &i8042_command_ops, k)
 * Only the first byte of a wider access is acted on; the rest read as 0xff.
 */
extern const struct bus_ops i8042_data_ops;
extern const struct bus_ops i8042_command_ops;

#endif
