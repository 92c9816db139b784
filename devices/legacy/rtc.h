/*
 * The CMOS real-time clock at PIO 0x70 (index; bit 7 masks NMI) and 0x71
 * (data): time registers read from the host clock (UTC) in BCD or binary,
 * 12 or 24 hour as register B asks, status registers A-D, and 128 bytes of
 * CMOS NVRAM, including the memory-size bytes firmware reads. No IRQ 8.
 */
#ifndef RINGVM_DEVICES_LEGACY_RTC_H
#define RINGVM_DEVICES_LEGACY_RTC_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/bus.h"

#define RTC_PORT_BASE 0x70
#define RTC_PORT_LEN  2

/* CMOS indices with a fixed meaning. */
#define RTC_SECONDS      0x00
#define RTC_MINUTES      0x02
#define RTC_HOURS        0x04
#define RTC_DAY_OF_WEEK  0x06
#define RTC_DAY_OF_MONTH 0x07
#define RTC_MONTH        0x08
#define RTC_YEAR         0x09
#define RTC_REG_A        0x0a
#define RTC_REG_B        0x0b
#define RTC_REG_C        0x0c
#define RTC_REG_D        0x0d
#define RTC_CENTURY      0x32

struct rtc;

/*
 * Where the time comes from: fills *now with the current UTC time. The
 * default is clock_gettime(CLOCK_REALTIME); tests pass a fixed time. Called
 * with the device lock held, so it must not call back into the rtc.
 */
typedef void rtc_clock_fn(void *opaque, struct timespec *now);

/*
 * Create an RTC in the state firmware leaves it: 24-hour BCD mode (Linux's
 * rtc-cmos refuses 12-hour mode), 32.768 kHz time base, valid RAM (register
 * D VRT), NVRAM zeroed. clock NULL selects the host realtime clock. Returns 0
 * and *out, or -ENOMEM.
 */
int rtc_create(struct rtc **out, rtc_clock_fn *clock, void *opaque)
    __attribute__((warn_unused_result));

/*
 * Record the RAM size in the CMOS bytes firmware (SeaBIOS, qboot) reads, as
 * QEMU does: 0x15/0x16 base memory (640 KiB), 0x17/0x18 and 0x30/0x31
 * extended memory in KiB above 1 MiB (capped at 0xffff), 0x34/0x35 memory
 * above 16 MiB below 4 GiB in 64 KiB units, 0x5b-0x5d memory above 4 GiB in
 * 64 KiB units, and the standard checksum of 0x10-0x2d at 0x2e/0x2f.
 */
void rtc_set_mem_size(struct rtc *rtc, uint64_t ram_below_4g, uint64_t ram_above_4g);

/* Whether the guest last wrote the index port with bit 7 (NMI disabled) set. */
bool rtc_nmi_masked(struct rtc *rtc);

/* Free the RTC. No vCPU may be using it. NULL is ignored. */
void rtc_destroy(struct rtc *rtc);

/*
 * Bus callbacks; opaque is the struct rtc. Register with
 * bus_add(pio, RTC_PORT_BASE, RTC_PORT_LEN, &rtc_bus_ops, rtc).
 * Offset 0 is the index port (reads 0xff: it is write-only), offset 1 the
 * data port; a 2-byte write sets index then data, as on the ISA bus.
 */
extern const struct bus_ops rtc_bus_ops;

#endif
