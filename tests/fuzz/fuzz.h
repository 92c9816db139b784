/*
 * Shared by every fuzz target (tests/fuzz/fuzz_*.c). A target defines
 * FUZZ_TARGET to its name and implements LLVMFuzzerTestOneInput; built with
 * -Dfuzz=true it links libFuzzer, and in the normal test binary
 * (without RINGVM_FUZZER) the same function is renamed fuzz_<name>_one so the
 * fuzz_regressions suite replays every saved input through it. A target
 * checks its own invariants and aborts on a violation, so a replay can fail
 * without a sanitizer too.
 */
#ifndef RINGVM_TESTS_FUZZ_FUZZ_H
#define RINGVM_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/guest_mem.h"

#ifndef FUZZ_TARGET
#error "define FUZZ_TARGET before including fuzz.h"
#endif

#ifndef RINGVM_FUZZER
#define FUZZ_CAT_(a, b, c) a##b##c
#define FUZZ_CAT(a, b, c)  FUZZ_CAT_(a, b, c)
#define LLVMFuzzerTestOneInput FUZZ_CAT(fuzz_, FUZZ_TARGET, _one)
#endif
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant the code under test promises: abort (a crash the fuzzer keeps) when broken. */
#define FUZZ_CHECK(cond, ...)                                                                     \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz invariant broken (%s:%d): ", __FILE__, __LINE__);    \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Call a warn_unused_result function whose outcome the target does not care about. */
#define FUZZ_IGNORE(call)                                                                          \
	do {                                                                                       \
		long long ignored_ = (long long)(call);                                            \
		(void)ignored_;                                                                    \
	} while (0)

/*
 * A small guest RAM for ring fuzzing, not backed by a memfd: FUZZ_RAM0
 * bytes at 0, a hole, FUZZ_RAM1 bytes at FUZZ_RAM1_GPA (so addresses can
 * fall into the hole or past the end).
 */
#define FUZZ_RAM0     0x10000u
#define FUZZ_RAM1_GPA 0x20000u
#define FUZZ_RAM1     0x4000u

/* Set up m over the fuzzers' RAM buffer: zeroed, then the first len bytes
 * of img (as much as fits) copied to its start. */
void fuzz_ram_init(struct guest_mem *m, const uint8_t *img, size_t len);
/* Whether [p, p + len) lies entirely inside m's regions' host memory. */
int fuzz_ram_contains(const struct guest_mem *m, const void *p, size_t len);

/* A memfd holding data (sealed against nothing: code under test may resize it). -errno. */
int fuzz_memfd(const char *name, const uint8_t *data, size_t size);

/* "/proc/self/fd/N" for fd into buf. */
const char *fuzz_fd_path(int fd, char *buf, size_t len);

#endif
