/*
 * Assertions on the probe guest's virtio tests (rng, virtio-cfg, hostile.vq),
 * shared by the QEMU and ringvm end-to-end tests so both VMMs' virtio-rng
 * devices are held to the same expectations. VMM-specific behaviour (QEMU's
 * per-case results) stays in the test files.
 */
#ifndef RINGVM_TESTS_E2E_VIRTIO_CHECKS_H
#define RINGVM_TESTS_E2E_VIRTIO_CHECKS_H

#include <stdbool.h>

/*
 * rng: one `PROBE rng` line; VERSION_1 negotiated; reads as asked; between
 * reads and reads*len bytes (a device may return fewer than asked); the bytes
 * vary (the guest checked none is constant and no two reads are equal — the
 * run must have ended ok for that); at least 16 distinct values among the
 * bytes the guest sampled (the first 64 of each read) when it sampled 64 or
 * more; every completion came with its MSI-X interrupt.
 */
void check_rng(const char *out, unsigned reads, unsigned len);

/*
 * virtio-cfg: the device is virtio-rng with ≥ 1 queue of a power-of-two size
 * and ≥ 2 MSI-X entries; VERSION_1 offered and a valid subset accepted;
 * strict: FEATURES_OK did not stick with an unoffered feature; a reset in the
 * middle of I/O reads back 0, disables the queue and the device serves again;
 * odd-sized and past-the-end accesses left it serving; result=ok.
 */
void check_virtio_cfg(const char *out, bool strict);

/*
 * hostile.vq: a result line for every case in hostile_vq_cases (result=skipped
 * exactly for those in the comma-separated skip list), each other case
 * pass=1, every needs-reset result came with a config interrupt (a MUST of
 * virtio 1.2 §2.1.2 once DRIVER_OK is set), and the summary agrees.
 */
/* garbage_status_ok: comma list of cases whose NEEDS_RESET may come without a config interrupt. */
void check_hostile_vq(const char *out, const char *skip, const char *garbage_status_ok);

/* The guest's hostile.vq cases, in the order it runs them. */
extern const char *const hostile_vq_cases[];
extern const unsigned hostile_vq_ncases;

#endif
