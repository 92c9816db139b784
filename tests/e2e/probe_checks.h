/*
 * Assertions on the probe guest's v1 output, shared by the ringvm and QEMU
 * end-to-end tests so both VMMs are held to exactly the same expectations
 * (a failure under one and not the other points at the VMM, not the probe).
 */
#ifndef RINGVM_TESTS_E2E_PROBE_CHECKS_H
#define RINGVM_TESTS_E2E_PROBE_CHECKS_H

#include <stdint.h>

#include "tests/e2e/harness.h"

/* The run exited 0, printed PROBE-END status=ok, and did not time out. */
void check_probe_ok(const struct harness_result *r, const char *what);

/* hello: cmdline echoed, vendor known, memory map RAM totalling about mem_mib. */
void check_hello(const char *out, const char *cmdline, unsigned mem_mib);

/* pci: the host bridge 8086:1237 class 060000 at 00:00.0 and a count ≥ 1. */
void check_pci(const char *out);

/* timer: a plausible TSC frequency (100 MHz .. 10 GHz). */
void check_timer(const char *out);

/* smp: cpus == started == ncpus. */
void check_smp(const char *out, unsigned ncpus);

/* irq: lapic_timer=ok and at least one tick. */
void check_irq(const char *out);

/* idle: the reported sleep was at least secs (the host also checks wall time). */
void check_idle(const char *out, unsigned secs);

#endif
