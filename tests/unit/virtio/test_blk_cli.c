/*
 * virtio-blk from the main process's side: the factory (image locks, option
 * errors), `ringvm run` turning a bad --block into one line and exit status
 * 2, and --metrics-file writing every device's IPC_METRICS at shutdown.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devices/virtio/blk.h"
#include "devices/virtio/registry.h"
#include "tests/common/facility.h"

struct bt {
	char path[64];
	int fd;
};

static void make_image(struct bt *t, uint64_t size, const char *dir)
{
	snprintf(t->path, sizeof(t->path), "%s/ringvm-blk-XXXXXX", dir ? dir : "/tmp");
	t->fd = mkstemp(t->path);
	cr_assert_geq(t->fd, 0, "mkstemp: %s", strerror(errno));
	cr_assert_eq(ftruncate(t->fd, (off_t)size), 0);
}

/* The factory: the image lock, and bad options refused with -EINVAL. */
Test(virtio_blk, factory_locks_and_options)
{
	const struct registry_entry *e = registry_find("block");
	cr_assert_not_null(e);
	struct bt t;
	make_image(&t, 1 << 20, NULL);
	struct registry_ctx ctx = {.ncpus = 2};
	char opts[128];
	void *a = NULL, *b = NULL;
	snprintf(opts, sizeof(opts), "path=%s", t.path);
	cr_assert_eq(e->create(&ctx, opts, &a), 0);
	int fds[4];
	cr_expect_eq(e->keep_fds(a, fds, 4), 1, "the image fd is kept across the jail");
	cr_expect_eq(((struct virtio_dev *)a)->ops->num_queues, 2, "queues default to vCPUs");
	cr_expect_eq(e->create(&ctx, opts, &b), -EBUSY, "second writer");
	snprintf(opts, sizeof(opts), "path=%s,ro", t.path);
	cr_expect_eq(e->create(&ctx, opts, &b), -EBUSY, "reader while a writer holds it");
	e->destroy(a);
	cr_assert_eq(e->create(&ctx, opts, &a), 0);
	cr_assert_eq(e->create(&ctx, opts, &b), 0, "two readers share it");
	e->destroy(a);
	e->destroy(b);
	static const char *const bad[] = {"", "ro", "path=", "path=/x,format=vmdk",
	                                  "path=/x,queues=0", "path=/x,queues=17",
	                                  "path=/x,queue-size=100", "path=/x,discard=maybe",
	                                  "path=/x,id=123456789012345678901", "path=/x,,ro",
	                                  "path=/x,bogus=1"};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(e->create(&ctx, bad[i], &a), -EINVAL, "'%s'", bad[i]);
	close(t.fd);
	unlink(t.path);
}

/* Run `ringvm run ARGS...` (NULL-terminated); its stderr into err, its exit status back. */
static int run_ringvm_argv(char *const *argv, char *err, size_t errlen)
{
	int pfd[2];
	cr_assert_eq(pipe(pfd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pfd[1], 2);
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		execv(BUILD_PATH("core/ringvm"), argv);
		_exit(127);
	}
	close(pfd[1]);
	size_t n = 0;
	ssize_t k;
	while (n + 1 < errlen && (k = read(pfd[0], err + n, errlen - 1 - n)) > 0)
		n += (size_t)k;
	err[n] = 0;
	close(pfd[0]);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `ringvm run` turns a bad --block into one line and exit status 2 before any VM exists. */
static int run_ringvm(const char *a1, const char *a2, char *err, size_t errlen)
{
	char *argv[] = {"ringvm", "run", (char *)a1, (char *)a2, "no-such-kernel.elf", NULL};
	return run_ringvm_argv(argv, err, errlen);
}

Test(virtio_blk, cli_errors_exit_2)
{
	struct bt t;
	make_image(&t, 1 << 20, NULL);
	char arg[128], err[1024];
	snprintf(arg, sizeof(arg), "path=%s,queues=99", t.path);
	cr_expect_eq(run_ringvm("--block", arg, err, sizeof(err)), 2);
	cr_expect_not_null(strstr(err, "queues"), "%s", err);
	cr_expect_eq(strchr(err, '\n'), err + strlen(err) - 1, "one line: %s", err);
	cr_expect_eq(run_ringvm("--block", "path=/no/such/image", err, sizeof(err)), 2);
	cr_expect_not_null(strstr(err, "/no/such/image"), "%s", err);
	/* Locked by another process (this one). */
	const struct registry_entry *e = registry_find("block");
	struct registry_ctx ctx = {.ncpus = 1};
	void *st = NULL;
	snprintf(arg, sizeof(arg), "path=%s", t.path);
	cr_assert_eq(e->create(&ctx, arg, &st), 0);
	cr_expect_eq(run_ringvm("--block", arg, err, sizeof(err)), 2);
	cr_expect_not_null(strstr(err, t.path), "%s", err);
	cr_expect_not_null(strstr(err, "locked"), "%s", err);
	e->destroy(st);
	/* A qcow2 magic with a broken header: refused, naming the image. */
	cr_assert_eq(pwrite(t.fd, DISK_QCOW2_MAGIC, 4, 0), 4);
	cr_expect_eq(run_ringvm("--block", arg, err, sizeof(err)), 2);
	cr_expect_not_null(strstr(err, t.path), "%s", err);
	close(t.fd);
	unlink(t.path);
}

/* --metrics-file: every device's IPC_METRICS, fetched before IPC_SHUTDOWN, as JSON. */
Test(virtio_blk, metrics_file_at_shutdown)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	struct bt t;
	make_image(&t, 1 << 20, NULL);
	char blk[128], mpath[96], err[4096];
	snprintf(blk, sizeof(blk), "path=%s,id=metrics-disk", t.path);
	snprintf(mpath, sizeof(mpath), "%s.json", t.path);
	char *argv[] = {"ringvm", "run", "--serial", "none", "--block", blk, "--metrics-file",
	                mpath, "-p", "probe=hello", BUILD_PATH("tests/guest/probe.elf"), NULL};
	int rc = run_ringvm_argv(argv, err, sizeof(err));
	cr_expect_eq(rc, 0, "ringvm exit %d: %s", rc, err);
	FILE *f = fopen(mpath, "r");
	cr_assert_not_null(f, "no metrics file (%s)", err);
	static char json[16384];
	size_t n = fread(json, 1, sizeof(json) - 1, f);
	json[n] = 0;
	fclose(f);
	cr_expect_not_null(strstr(json, "\"version\": 1"), "%s", json);
	const char *b = strstr(json, "\"option\": \"block\", \"ok\": true, \"name\": \"virtio-blk\"");
	const char *r = strstr(json, "\"option\": \"rng\", \"ok\": true, \"name\": \"virtio-rng\"");
	cr_expect(b && r && b < r, "the disk first, then the rng: %s", json);
	cr_expect_not_null(strstr(json, "\"service_ns\": {\"count\": "), "%s", json);
	cr_expect_not_null(strstr(json, "\"p99\": "), "%s", json);
	unlink(mpath);
	close(t.fd);
	unlink(t.path);
}
