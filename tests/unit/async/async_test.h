/*
 * Helpers shared by the async/ tests: an executor that skips (or fails in
 * CI) without io_uring, temp files on tmpfs, and fd/mapping counters used
 * to prove nothing leaks.
 */
#ifndef RINGVM_TESTS_ASYNC_TEST_H
#define RINGVM_TESTS_ASYNC_TEST_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "async/exec.h"
#include "tests/common/facility.h"

#define NEED_IO_URING() REQUIRE_FACILITY(facility_io_uring(), "io_uring_setup unavailable")

static inline struct exec *test_exec(const struct exec_params *p)
{
	struct exec *ex = NULL;
	int ret;

	NEED_IO_URING();
	ret = exec_create(&ex, p);
	cr_assert_eq(ret, 0, "exec_create: %d", ret);
	return ex;
}

/* An unlinked temp file (on /dev/shm when present). */
static inline int test_tmpfile(void)
{
	char path[] = "/dev/shm/ringvm-async-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0) {
		char alt[] = "/tmp/ringvm-async-XXXXXX";
		fd = mkstemp(alt);
		cr_assert_geq(fd, 0, "mkstemp");
		unlink(alt);
		return fd;
	}
	unlink(path);
	return fd;
}

/*
 * An anonymous file on a disk filesystem that has every fallocate mode
 * (FALLOC_FL_ZERO_RANGE included, which tmpfs lacks): the first of
 * /var/tmp, the build directory and /tmp that has it — /tmp is a tmpfs on
 * many machines.
 */
static inline int test_tmpfile_disk(void)
{
	const char *dirs[] = {"/var/tmp", RINGVM_BUILD_DIR, "/tmp"};
	for (unsigned i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		int fd = open(dirs[i], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (fd < 0)
			continue;
		if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0)
			return fd;
		close(fd);
	}
	cr_assert_fail("no disk filesystem with FALLOC_FL_ZERO_RANGE in /var/tmp, the build "
	               "directory or /tmp");
	return -1;
}

static inline int test_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	cr_assert(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static inline int test_count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	int n = 0, c;
	cr_assert(f);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

#endif
