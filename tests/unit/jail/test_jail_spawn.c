/*
 * jail spawn: the process lifecycle in both modes — pid shape, exit status
 * and setup errors reported back, wait/kill/close through the pidfd, no
 * zombie and no leaked descriptor on any path, and the child dying with
 * its parent. Suite jail_fallback runs the unsandboxed cases again through
 * the fork fallback (forced with RINGVM_JAIL_FALLBACK; valgrind needs it).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "tests/common/facility.h"
#include "tests/unit/jail/jail_probe.h"

TestSuite(jail_spawn, .timeout = 60);

#define ROOT_REASON "the jail's user namespace maps to nobody only when run as root"

static void require_mode(bool sandbox)
{
	if (sandbox)
		REQUIRE_FACILITY(facility_root(), ROOT_REASON);
}

static int fn_report_pid(void *arg)
{
	int32_t v = (int32_t)getpid();
	probe_send(&v, sizeof(v));
	probe_block();
	return (int)(intptr_t)arg;
}

static void pid_shape(bool sandbox)
{
	struct jail_config cfg = {.sandbox = sandbox};
	struct probe p;
	int32_t inside;

	require_mode(sandbox);
	cr_assert_eq(probe_start(&cfg, fn_report_pid, (void *)(intptr_t)42, &p), 0);
	cr_assert_gt(p.child.pid, 0);
	cr_assert_geq(p.child.pidfd, 0);
	cr_assert_eq(probe_recv(&p, &inside, sizeof(inside), 10000), 0);
	if (sandbox)
		cr_expect_eq(inside, 1, "sandboxed child must be PID 1 of its namespace");
	else
		cr_expect_eq(inside, p.child.pid, "unsandboxed child shares our PID namespace");
	pid_t pid = p.child.pid;
	int st = probe_finish(&p, 10000);
	cr_expect(probe_exited(st, 42), "fn's return value is the exit code (status %#x)", st);
	cr_expect(probe_no_child(pid), "child left as a zombie");
}

Test(jail_spawn, sandbox_child_is_pid1) { pid_shape(true); }
Test(jail_spawn, no_sandbox_child_keeps_namespaces) { pid_shape(false); }

static int hook_fails(void *arg)
{
	(void)arg;
	return -EBADMSG;
}

static int fn_unreachable(void *arg)
{
	(void)arg;
	return 3;
}

static void setup_error_reported(bool sandbox)
{
	struct jail_config cfg = {.sandbox = sandbox, .pre_seccomp = hook_fails};
	struct jail_child c;

	require_mode(sandbox);
	cr_assert_eq(jail_spawn(&cfg, fn_unreachable, NULL, &c), -EBADMSG);
	cr_expect_str_eq(c.failed_stage, "pre_seccomp");
	cr_expect_eq(c.pidfd, -1);
	cr_expect(c.reaped);
	cr_expect(probe_exited(c.status, 125), "status %#x", c.status);
	cr_expect(probe_no_child(c.pid));
	jail_child_close(&c); /* harmless after a failed spawn */
}

Test(jail_spawn, sandbox_setup_error_is_reported) { setup_error_reported(true); }
Test(jail_spawn, no_sandbox_setup_error_is_reported) { setup_error_reported(false); }

Test(jail_spawn, config_validation)
{
	static const int bad_fd[] = {1000};
	static int many[JAIL_MAX_KEEP_FDS + 1];
	static const struct jail_syscall_rule allow_exec[] = {{.nr = __NR_execve}};
	static const char long_name[] =
		"a-hostname-that-is-longer-than-the-sixty-four-bytes-the-kernel-allows";
	const struct {
		const char *name;
		struct jail_config cfg;
		int expect;
	} cases[] = {
		{"closed keep fd", {.sandbox = true, .keep_fds = bad_fd, .n_keep_fds = 1}, -EBADF},
		{"too many keep fds", {.sandbox = true, .keep_fds = many, .n_keep_fds = JAIL_MAX_KEEP_FDS + 1},
		 -E2BIG},
		{"long hostname", {.sandbox = true, .hostname = long_name}, -ENAMETOOLONG},
		{"rule allowing execve", {.sandbox = true, .rules = allow_exec, .n_rules = 1}, -EPERM},
		{"rule allowing execve, no sandbox", {.rules = allow_exec, .n_rules = 1}, -EPERM},
		{"uid -1", {.sandbox = true, .outside_uid = (uid_t)-1}, -EINVAL},
	};
	int fds_before = probe_count_fds();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct jail_child c;
		int r = jail_spawn(&cases[i].cfg, fn_unreachable, NULL, &c);
		cr_expect_eq(r, cases[i].expect, "%s: got %d", cases[i].name, r);
		cr_expect_eq(c.pidfd, -1, "%s", cases[i].name);
	}
	struct jail_child c;
	struct jail_config ok = {0};
	cr_expect_eq(jail_spawn(&ok, NULL, NULL, &c), -EINVAL, "NULL fn");
	cr_expect_eq(jail_spawn(NULL, fn_unreachable, NULL, &c), -EINVAL, "NULL config");
	cr_expect_eq(probe_count_fds(), fds_before, "a rejected config leaked descriptors");
}

static int fn_sleep_forever(void *arg)
{
	(void)arg;
	probe_block();
	return 0;
}

static void wait_kill_close(bool sandbox)
{
	struct jail_config cfg = {.sandbox = sandbox};
	struct probe p;
	int st = -1;

	require_mode(sandbox);
	cr_assert_eq(probe_start(&cfg, fn_sleep_forever, NULL, &p), 0);
	cr_expect_eq(jail_child_wait(&p.child, &st, 0), -ETIMEDOUT);
	cr_expect_eq(jail_child_wait(&p.child, &st, 50), -ETIMEDOUT);
	cr_assert_eq(jail_child_kill(&p.child), 0);
	cr_assert_eq(jail_child_wait(&p.child, &st, 10000), 0);
	cr_expect(probe_signaled(st, SIGKILL), "status %#x", st);
	cr_expect(probe_no_child(p.child.pid));
	st = -1;
	cr_expect_eq(jail_child_wait(&p.child, &st, 0), 0, "a reaped child waits again");
	cr_expect(probe_signaled(st, SIGKILL));
	cr_expect_eq(jail_child_kill(&p.child), 0, "killing a reaped child is a no-op");
	jail_child_close(&p.child);
	jail_child_close(&p.child);
	cr_expect_eq(p.child.pidfd, -1);
	close(p.go_w);
	close(p.res_r);
}

Test(jail_spawn, sandbox_wait_kill_close) { wait_kill_close(true); }
Test(jail_spawn, no_sandbox_wait_kill_close) { wait_kill_close(false); }

/* jail_child_close on a running child kills and reaps it. */
static void close_running(bool sandbox)
{
	struct jail_config cfg = {.sandbox = sandbox};
	struct probe p;

	require_mode(sandbox);
	cr_assert_eq(probe_start(&cfg, fn_sleep_forever, NULL, &p), 0);
	pid_t pid = p.child.pid;
	jail_child_close(&p.child);
	cr_expect(p.child.reaped);
	cr_expect(probe_signaled(p.child.status, SIGKILL), "status %#x", p.child.status);
	cr_expect(probe_no_child(pid), "close left a zombie");
	close(p.go_w);
	close(p.res_r);
}

Test(jail_spawn, sandbox_close_kills_running_child) { close_running(true); }
Test(jail_spawn, no_sandbox_close_kills_running_child) { close_running(false); }

/*
 * A middle process spawns a child that blocks forever and tells us its
 * pid; we SIGKILL the middle one and the grandchild must go too.
 */
static int fn_block_forever(void *arg)
{
	(void)arg;
	for (;;)
		if (ppoll(NULL, 0, NULL, NULL) < 0 && errno != EINTR)
			return 1; /* pause() is not on the base allowlist; ppoll is */
}

static void dies_with_parent(bool sandbox)
{
	int pfd[2];
	require_mode(sandbox);
	/* The orphaned grandchild comes back to us, so we can check how it
	 * died and reap it instead of leaving it to the host's init. */
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
	cr_assert_eq(pipe(pfd), 0);
	pid_t middle = fork();
	cr_assert_geq(middle, 0);
	if (middle == 0) {
		struct jail_config cfg = {.sandbox = sandbox};
		struct jail_child c;
		int32_t pid = -1;
		close(pfd[0]);
		if (jail_spawn(&cfg, fn_block_forever, NULL, &c) == 0)
			pid = c.pid;
		if (write(pfd[1], &pid, sizeof(pid)) != sizeof(pid))
			_exit(1);
		for (;;)
			pause();
	}
	close(pfd[1]);
	int32_t gpid = -1;
	cr_assert_eq(read(pfd[0], &gpid, sizeof(gpid)), (ssize_t)sizeof(gpid));
	close(pfd[0]);
	cr_assert_gt(gpid, 0, "middle process failed to spawn");
	int gfd = pidfd_open(gpid, 0);
	cr_assert_geq(gfd, 0, "grandchild gone before its parent died");
	struct pollfd alive = {.fd = gfd, .events = POLLIN};
	cr_expect_eq(poll(&alive, 1, 100), 0, "grandchild should run while its parent does");

	cr_assert_eq(kill(middle, SIGKILL), 0);
	cr_assert_eq(waitpid(middle, NULL, 0), middle);
	struct pollfd dead = {.fd = gfd, .events = POLLIN};
	cr_expect_eq(poll(&dead, 1, 5000), 1, "grandchild survived its parent");
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	cr_assert_eq(waitid(P_PIDFD, (id_t)gfd, &si, WEXITED | WNOHANG), 0, "%s", strerror(errno));
	cr_expect_eq(si.si_code, CLD_KILLED);
	cr_expect_eq(si.si_status, SIGKILL, "grandchild ended by signal %d", si.si_status);
	close(gfd);
	cr_expect(probe_no_child(gpid));
}

Test(jail_spawn, sandbox_child_dies_with_parent) { dies_with_parent(true); }
Test(jail_spawn, no_sandbox_child_dies_with_parent) { dies_with_parent(false); }

static int fn_exit_now(void *arg)
{
	(void)arg;
	return 0;
}

/* Many spawn/wait cycles: no descriptor, no zombie left over. */
Test(jail_spawn, repeated_cycles_leak_nothing)
{
	REQUIRE_FACILITY(facility_root(), ROOT_REASON);
	int fds_before = probe_count_fds();
	for (int i = 0; i < 40; i++) {
		struct jail_config cfg = {.sandbox = (i & 1) == 0};
		struct jail_child c;
		int st;
		cr_assert_eq(jail_spawn(&cfg, fn_exit_now, NULL, &c), 0, "cycle %d", i);
		cr_assert_eq(jail_child_wait(&c, &st, 10000), 0, "cycle %d", i);
		cr_expect(probe_exited(st, 0), "cycle %d: status %#x", i, st);
		pid_t pid = c.pid;
		jail_child_close(&c);
		cr_expect(probe_no_child(pid), "cycle %d left a zombie", i);
	}
	cr_expect_eq(probe_count_fds(), fds_before, "descriptors leaked over 40 cycles");
}

/*
 * The split spawn the VMM uses to overlap device start-up: several children
 * started before any is finished all come up; a setup error surfaces at
 * jail_spawn_finish with jail_spawn's results; a child closed while its
 * setup is pending leaves no zombie and no descriptor.
 */
static void split_spawn(bool sandbox)
{
	require_mode(sandbox);
	int fds_before = probe_count_fds();
	struct jail_config ok = {.sandbox = sandbox};
	struct jail_config bad = {.sandbox = sandbox, .pre_seccomp = hook_fails};
	struct jail_child c[3];
	cr_assert_eq(jail_spawn_start(&ok, fn_exit_now, NULL, &c[0]), 0);
	cr_assert_eq(jail_spawn_start(&bad, fn_unreachable, NULL, &c[1]), 0,
		     "a setup error is not known before finish");
	cr_assert_eq(jail_spawn_start(&ok, fn_sleep_forever, NULL, &c[2]), 0);
	cr_assert(c[0].setup_pending && c[1].setup_pending && c[2].setup_pending);

	cr_assert_eq(jail_spawn_finish(&c[0]), 0);
	cr_expect(!c[0].setup_pending);
	int st;
	cr_assert_eq(jail_child_wait(&c[0], &st, 10000), 0);
	cr_expect(probe_exited(st, 0), "status %#x", st);

	cr_assert_eq(jail_spawn_finish(&c[1]), -EBADMSG);
	cr_expect_str_eq(c[1].failed_stage, "pre_seccomp");
	cr_expect_eq(c[1].pidfd, -1);
	cr_expect(c[1].reaped);
	cr_expect(probe_exited(c[1].status, 125), "status %#x", c[1].status);
	cr_expect_eq(jail_spawn_finish(&c[1]), -EINVAL, "finish twice is refused");

	pid_t pids[3] = {c[0].pid, c[1].pid, c[2].pid};
	jail_child_close(&c[2]); /* still pending: killed, reaped, status pipe closed */
	cr_expect(!c[2].setup_pending);
	jail_child_close(&c[0]);
	jail_child_close(&c[1]);
	for (int i = 0; i < 3; i++)
		cr_expect(probe_no_child(pids[i]), "child %d left a zombie", i);
	cr_expect_eq(probe_count_fds(), fds_before, "descriptors leaked");
}

Test(jail_spawn, sandbox_split_spawn) { split_spawn(true); }
Test(jail_spawn, no_sandbox_split_spawn) { split_spawn(false); }

/* ---- the fork fallback (no clone3/pidfd_open), forced ---- */

TestSuite(jail_fallback, .timeout = 60);

/* Each Criterion test is its own process, so the variable stays in it. */
static void force_fallback(void)
{
	cr_assert_eq(setenv("RINGVM_JAIL_FALLBACK", "1", 1), 0);
}

Test(jail_fallback, child_keeps_namespaces) { force_fallback(); pid_shape(false); }
Test(jail_fallback, setup_error_is_reported) { force_fallback(); setup_error_reported(false); }
Test(jail_fallback, wait_kill_close) { force_fallback(); wait_kill_close(false); }
Test(jail_fallback, close_kills_running_child) { force_fallback(); close_running(false); }
Test(jail_fallback, child_dies_with_parent) { force_fallback(); dies_with_parent(false); }

static int fn_report_death_fd(void *arg)
{
	(void)arg;
	int32_t v = jail_death_fd();
	probe_send(&v, sizeof(v));
	probe_block();
	return 0;
}

/* The child holds the death pipe's write end, the parent none; the watch
 * descriptor hangs up only once the child is gone. */
static void death_pipe(bool forced)
{
	struct jail_config cfg = {.sandbox = false};
	struct probe p;
	int32_t fd = -2;

	if (forced)
		force_fallback();
	cr_assert_eq(probe_start(&cfg, fn_report_death_fd, NULL, &p), 0);
	cr_expect_eq(p.child.forked, forced);
	cr_expect_eq(jail_death_fd(), -1, "the parent holds no death pipe");
	cr_assert_eq(probe_recv(&p, &fd, sizeof(fd), 10000), 0);
	if (!forced) {
		cr_expect_eq(fd, -1, "clone3 children have no death pipe");
		int st = probe_finish(&p, 10000);
		cr_expect(probe_exited(st, 0), "status %#x", st);
		return;
	}
	cr_expect_geq(fd, 0, "the forked child holds its death pipe");
	struct pollfd alive = {.fd = p.child.pidfd, .events = POLLIN};
	cr_expect_eq(poll(&alive, 1, 100), 0, "death pipe signalled while the child runs");
	cr_assert_eq(jail_child_kill(&p.child), 0);
	struct pollfd dead = {.fd = p.child.pidfd, .events = POLLIN};
	cr_expect_eq(poll(&dead, 1, 5000), 1, "death pipe silent after the child died");
	cr_expect(dead.revents & POLLHUP, "revents %#x", dead.revents);
	int st = -1;
	cr_assert_eq(jail_child_wait(&p.child, &st, 10000), 0);
	cr_expect(probe_signaled(st, SIGKILL), "status %#x", st);
	pid_t pid = p.child.pid;
	jail_child_close(&p.child);
	cr_expect(probe_no_child(pid), "child left as a zombie");
	close(p.go_w);
	close(p.res_r);
}

Test(jail_fallback, death_pipe_held_by_child_only) { death_pipe(true); }
Test(jail_fallback, normal_path_has_no_death_pipe) { death_pipe(false); }

/* The sandbox is refused, not weakened, and the refusal leaks nothing. */
Test(jail_fallback, sandbox_refused)
{
	force_fallback();
	int fds_before = probe_count_fds();
	struct jail_config cfg = {.sandbox = true};
	struct jail_child c;
	cr_assert_eq(jail_spawn(&cfg, fn_unreachable, NULL, &c), -ENOSYS);
	cr_expect_str_eq(c.failed_stage, "clone3");
	cr_expect_eq(c.pid, -1);
	cr_expect_eq(c.pidfd, -1);
	jail_child_close(&c);
	cr_expect_eq(probe_count_fds(), fds_before, "a refused spawn leaked descriptors");
}

Test(jail_fallback, repeated_cycles_leak_nothing)
{
	force_fallback();
	int fds_before = probe_count_fds();
	for (int i = 0; i < 40; i++) {
		struct jail_config cfg = {.sandbox = false};
		struct jail_child c;
		int st;
		cr_assert_eq(jail_spawn(&cfg, fn_exit_now, NULL, &c), 0, "cycle %d", i);
		cr_expect(c.forked, "cycle %d", i);
		cr_assert_eq(jail_child_wait(&c, &st, 10000), 0, "cycle %d", i);
		cr_expect(probe_exited(st, 0), "cycle %d: status %#x", i, st);
		pid_t pid = c.pid;
		jail_child_close(&c);
		cr_expect(probe_no_child(pid), "cycle %d left a zombie", i);
	}
	cr_expect_eq(probe_count_fds(), fds_before, "descriptors leaked over 40 cycles");
}

/* The VMM's split spawn through the fallback too (how devices start under valgrind). */
Test(jail_fallback, split_spawn) { force_fallback(); split_spawn(false); }
