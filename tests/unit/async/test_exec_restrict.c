/*
 * exec_restrict: the opcode allowlist is enforced by the kernel (-EACCES),
 * fixed files registered before enabling work, io-wq caps are applied,
 * and nothing can be registered once the ring is enabled.
 */
#include <errno.h>
#include <liburing.h>
#include <string.h>

#include "tests/unit/async/async_test.h"

static struct exec *restricted(int *files, unsigned nfiles)
{
	static const uint8_t ops[] = {IORING_OP_READ, IORING_OP_LINK_TIMEOUT};
	struct exec_restrict_params r = {
	    .ops = ops,
	    .n_ops = sizeof(ops),
	    .files = files,
	    .n_files = nfiles,
	    .max_workers = {2, 3},
	};
	struct exec *ex = NULL;
	NEED_IO_URING();
	int ret = exec_restrict(&ex, NULL, &r);
	cr_assert_eq(ret, 0, "exec_restrict: %d", ret);
	return ex;
}

static int restricted_body(struct exec *ex, void *arg)
{
	int fd = *(int *)arg;
	char buf[8] = {0};
	/* allowed: READ, on a fixed file and on a plain fd */
	cr_assert_eq(exec_read(ex, EXEC_FIXED(0), buf, 5, 0), 5);
	cr_assert_str_eq(buf, "hello");
	cr_assert_eq(exec_read(ex, fd, buf, 5, 0), 5);
	/* everything else is refused by the kernel */
	cr_assert_eq(exec_nop(ex), -EACCES);
	cr_assert_eq(exec_write(ex, fd, "x", 1, 0), -EACCES);
	cr_assert_eq(exec_fsync(ex, fd), -EACCES);
	cr_assert_eq(exec_sleep(ex, 1000), -EACCES, "TIMEOUT is not on the list");
	/* READ with a deadline: LINK_TIMEOUT is listed, IO_LINK allowed */
	exec_set_deadline(ex, exec_now() + 1000000000ull);
	cr_assert_eq(exec_read(ex, EXEC_FIXED(0), buf, 5, 0), 5);
	exec_set_deadline(ex, 0);
	return 0;
}

Test(async_restrict, allowlist_enforced)
{
	int fd = test_tmpfile();
	cr_assert_eq(pwrite(fd, "hello", 5, 0), 5);
	struct exec *ex = restricted(&fd, 1);
	unsigned f = exec_features(ex);
	cr_assert(f & EXEC_FEAT_RESTRICTED);
	cr_assert(f & EXEC_FEAT_FIXED_FILES);
	struct exec_task *t;
	cr_assert_eq(exec_spawn(ex, restricted_body, &fd, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	exec_destroy(ex);
	close(fd);
}

Test(async_restrict, iowq_caps_applied)
{
	int fd = test_tmpfile();
	struct exec *ex = restricted(&fd, 1);
	unsigned w[2];
	exec_max_workers(ex, w);
	cr_assert_eq(w[0], 2);
	cr_assert_eq(w[1], 3);
	exec_destroy(ex);
	close(fd);
}

Test(async_restrict, no_registration_after_enable)
{
	int fd = test_tmpfile();
	struct exec *ex = restricted(&fd, 1);
	cr_assert_eq(exec_register_files(ex, &fd, 1), -EPERM, "the API refuses");
	/* And so does the kernel, whatever a compromised caller tries: find the
	 * ring fd the way an attacker would and try to register on it. */
	int ring = -1;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	while ((de = readdir(d))) {
		char path[300], target[64] = {0};
		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		if (readlink(path, target, sizeof(target) - 1) > 0 &&
		    strcmp(target, "anon_inode:[io_uring]") == 0)
			ring = atoi(de->d_name);
	}
	closedir(d);
	cr_assert_geq(ring, 0, "ring fd not found");
	cr_assert_eq(io_uring_register(ring, IORING_REGISTER_FILES, &fd, 1), -EACCES);
	unsigned w[2] = {64, 64};
	cr_assert_eq(io_uring_register(ring, IORING_REGISTER_IOWQ_MAX_WORKERS, w, 2), -EACCES);
	exec_destroy(ex);
	close(fd);
}

static int cancel_read_target(struct exec *ex, void *arg)
{
	int fd = *(int *)arg;
	char buf[8];
	return exec_read(ex, fd, buf, sizeof(buf), 0);
}

static int cancel_it(struct exec *ex, void *arg)
{
	if (exec_sleep(ex, 1) != -EACCES)
		return -1; /* TIMEOUT is refused; yield instead */
	for (int i = 0; i < 10; i++)
		exec_yield(ex);
	return exec_task_cancel(ex, arg);
}

/* Cancellation keeps working on a restricted ring (ASYNC_CANCEL is always
 * allowed): a read parked on an empty pipe comes back -ECANCELED. */
Test(async_restrict, cancel_still_possible)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	struct exec *ex = restricted(NULL, 0);
	struct exec_task *r, *c;
	cr_assert_eq(exec_spawn(ex, cancel_read_target, &p[0], 0, &r), 0);
	cr_assert_eq(exec_spawn(ex, cancel_it, r, 0, &c), 0);
	cr_assert_eq(exec_join(ex, c), 0);
	cr_assert_eq(exec_join(ex, r), -ECANCELED);
	exec_destroy(ex);
	close(p[0]);
	close(p[1]);
}

Test(async_restrict, bad_params)
{
	struct exec *ex = NULL;
	NEED_IO_URING();
	cr_assert_eq(exec_restrict(&ex, NULL, NULL), -EINVAL);
	struct exec_restrict_params r = {.n_ops = 3, .ops = NULL};
	cr_assert_eq(exec_restrict(&ex, NULL, &r), -EINVAL);
	int bad = 12345;
	r = (struct exec_restrict_params){.files = &bad, .n_files = 1};
	cr_assert_eq(exec_restrict(&ex, NULL, &r), -EBADF);
}
