/*
 * Facilities a test may need (/dev/kvm, io_uring, root, QEMU). Missing ones
 * skip the test with the reason — except in CI (CI=true), where every one of
 * them is promised, so a missing facility fails the test instead of letting a
 * green run hide it.
 */
#ifndef RINGVM_TESTS_FACILITY_H
#define RINGVM_TESTS_FACILITY_H

#include <stdbool.h>
#include <criterion/criterion.h>

bool facility_in_ci(void);
bool facility_kvm(void);      /* /dev/kvm opens read-write */
bool facility_io_uring(void); /* io_uring_setup works */
bool facility_root(void);     /* euid 0 */
bool facility_qemu(void);     /* qemu-system-x86_64 on PATH */
bool facility_qboot(void);    /* /usr/share/qemu/qboot.rom exists */

/* Skip (outside CI) or fail (in CI) the current test when cond is false. */
#define REQUIRE_FACILITY(cond, reason)                                                      \
	do {                                                                                \
		if (!(cond)) {                                                              \
			if (facility_in_ci())                                               \
				cr_assert_fail("CI=true but facility missing: %s", (reason));    \
			cr_skip_test("skipped: %s", (reason));                              \
		}                                                                           \
	} while (0)

/*
 * Note for test writers: Criterion 2.4 exits 1 after any cr_log_warn(), even
 * when every test passed, which fails `make check`: report with cr_log_info().
 */

/* Run a shell command built printf-style; its exit status, or -1 if it did not exit. */
int test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Absolute paths of build products and sources (set by meson). */
#define BUILD_PATH(rel)  RINGVM_BUILD_DIR "/" rel
#define SOURCE_PATH(rel) RINGVM_SOURCE_DIR "/" rel

#endif
