/*
 * fuzz_regressions: every fuzz target's entry function (the same
 * LLVMFuzzerTestOneInput, compiled without libFuzzer) run over every file of
 * tests/fuzz/regressions/<target>/ (minimised inputs that once crashed) and
 * tests/fuzz/corpus/<target>/ (the seeds). A target aborts on a broken
 * invariant; the sanitizer build also catches memory errors.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/common/facility.h"

#define X(n) int fuzz_##n##_one(const uint8_t *data, size_t size);
FUZZ_TARGETS
#undef X

static unsigned replay_dir(const char *target, const char *kind,
                           int (*fn)(const uint8_t *, size_t))
{
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/tests/fuzz/%s/%s", RINGVM_SOURCE_DIR, kind, target);
	DIR *d = opendir(dir);
	if (!d)
		return 0; /* no regressions for this target (yet) */
	unsigned n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[1024];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
		struct stat st;
		cr_assert_eq(fstat(fd, &st), 0);
		uint8_t *buf = malloc((size_t)st.st_size + 1);
		cr_assert_not_null(buf);
		ssize_t got = read(fd, buf, (size_t)st.st_size);
		close(fd);
		cr_assert_eq(got, st.st_size, "%s: short read", path);
		cr_log_info("fuzz %s: %s/%s", target, kind, e->d_name);
		fn(buf, (size_t)got);
		free(buf);
		n++;
	}
	closedir(d);
	return n;
}

static void replay(const char *target, int (*fn)(const uint8_t *, size_t))
{
	REQUIRE_FACILITY(facility_io_uring(), "io_uring_setup unavailable");
	unsigned n = replay_dir(target, "regressions", fn) + replay_dir(target, "corpus", fn);
	/* Every target ships seeds: an empty replay means the corpus went missing. */
	cr_expect_gt(n, 0, "no inputs under tests/fuzz/{regressions,corpus}/%s", target);
}

#define X(n)                                                                                      \
	Test(fuzz_regressions, n, .timeout = 600)                                                  \
	{                                                                                          \
		replay(#n, fuzz_##n##_one);                                                        \
	}
FUZZ_TARGETS
#undef X
