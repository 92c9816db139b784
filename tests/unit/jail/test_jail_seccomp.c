/*
 * jail seccomp: rule validation, the base list's invariants, and every rule
 * tried both ways in a plain forked child carrying only the filter (no
 * namespaces, so no root needed): allowed arguments pass, mutated ones die.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <linux/io_uring.h>
#include <linux/sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "tests/unit/jail/jail_probe.h"

TestSuite(jail_seccomp, .timeout = 60);

/* ---- calls made under the filter ---- */

static long do_mmap(int prot)
{
	void *m = mmap(NULL, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return m == MAP_FAILED ? -1 : 0;
}
static long c_mmap_rw(void *a) { (void)a; return do_mmap(PROT_READ | PROT_WRITE); }
static long c_mmap_rx(void *a) { (void)a; return do_mmap(PROT_READ | PROT_EXEC); }
static long c_mprotect_x(void *a)
{
	(void)a;
	void *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return m == MAP_FAILED ? -1 : mprotect(m, 4096, PROT_READ | PROT_EXEC);
}
static long c_open(void *a) { (void)a; return syscall(__NR_open, "/etc/passwd", O_RDONLY); }
static long c_openat(void *a) { (void)a; return openat(AT_FDCWD, "/etc/passwd", O_RDONLY); }
static long c_openat2(void *a)
{
	(void)a;
	struct { uint64_t flags, mode, resolve; } how = {O_RDONLY, 0, 0};
	return syscall(__NR_openat2, AT_FDCWD, "/etc/passwd", &how, sizeof(how));
}
static long c_prctl_name(void *a) { (void)a; return prctl(PR_SET_NAME, "probe", 0, 0, 0); }
static long c_prctl_dumpable(void *a) { (void)a; return prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); }
static long c_write(void *a) { (void)a; return write(STDERR_FILENO, "", 0); }
static long c_getrandom(void *a)
{
	(void)a;
	char b[8];
	return syscall(__NR_getrandom, b, sizeof(b), 0);
}
static long c_socket(void *a) { (void)a; return socket(AF_UNIX, SOCK_STREAM, 0); }
static long c_execve(void *a)
{
	(void)a;
	char *argv[] = {"/bin/true", NULL};
	return syscall(__NR_execve, "/bin/true", argv, NULL);
}
static long c_ptrace(void *a) { (void)a; return syscall(__NR_ptrace, 0 /* TRACEME */, 0, 0, 0); }
static long c_uring_setup(void *a)
{
	(void)a;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	return syscall(__NR_io_uring_setup, 4, &p);
}
static long c_uring_register(void *a) { (void)a; return syscall(__NR_io_uring_register, -1, 0, NULL, 0); }
static long c_memfd(void *a) { (void)a; return syscall(__NR_memfd_create, "x", 0); }
static long c_ftruncate(void *a) { (void)a; return ftruncate(STDERR_FILENO, 0); }
static long c_fallocate(void *a) { (void)a; return syscall(__NR_fallocate, STDERR_FILENO, 0, 0, 4096); }
static long c_fork(void *a) { (void)a; return syscall(__NR_clone, SIGCHLD, 0, 0, 0, 0); }
static long c_clone3(void *a)
{
	(void)a;
	struct clone_args ca;
	memset(&ca, 0, sizeof(ca));
	ca.exit_signal = SIGCHLD;
	return syscall(__NR_clone3, &ca, sizeof(ca));
}
static long c_unshare(void *a) { (void)a; return syscall(__NR_unshare, 0); }
static long c_setns(void *a) { (void)a; return syscall(__NR_setns, -1, 0); }
static long c_mount(void *a) { (void)a; return syscall(__NR_mount, "none", "/", "tmpfs", 0, NULL); }
static long c_bpf(void *a) { (void)a; return syscall(__NR_bpf, 0, NULL, 0); }
static long c_perf(void *a) { (void)a; return syscall(__NR_perf_event_open, NULL, 0, -1, -1, 0); }
static long c_userfaultfd(void *a) { (void)a; return syscall(__NR_userfaultfd, 0); }
static long c_kexec(void *a) { (void)a; return syscall(__NR_kexec_load, 0, 0, NULL, 0); }
static long c_personality(void *a) { (void)a; return syscall(__NR_personality, 0xffffffffUL); }
static long c_capset(void *a) { (void)a; return syscall(__NR_capset, NULL, NULL); }
/* getpid through the x32 ABI: another ABI must not reach the allowlist. */
static long c_x32_getpid(void *a) { (void)a; return syscall(__NR_getpid | 0x40000000); }
static long c_fcntl_getfd(void *a) { (void)a; return fcntl(STDERR_FILENO, F_GETFD); }
static long c_fcntl_setfl(void *a) { (void)a; return fcntl(STDERR_FILENO, F_SETFL, 0); }
static long c_uname(void *a) { (void)a; return syscall(__NR_uname, NULL); }

#define OK 0
#define KILL (-SIGSYS)
struct call_case {
	const char *name;
	long (*call)(void *);
	int expect; /* OK, an errno, or KILL */
};

static void check(const struct call_case *c, const struct jail_syscall_rule *rules, size_t n,
		  bool log)
{
	int st = probe_filtered(rules, n, log, c->call, NULL);
	cr_assert_geq(st, 0, "%s: harness failed", c->name);
	if (c->expect == KILL)
		cr_expect(probe_signaled(st, SIGSYS), "%s: expected SIGSYS, status %#x", c->name, st);
	else
		cr_expect(probe_exited(st, c->expect), "%s: expected exit %d, status %#x", c->name,
			  c->expect, st);
}

Test(jail_seccomp, base_list_both_ways)
{
	static const struct call_case cases[] = {
		{"mmap rw", c_mmap_rw, OK},
		{"mmap exec", c_mmap_rx, KILL},
		{"mprotect exec", c_mprotect_x, KILL},
		{"open", c_open, ENOENT},
		{"openat", c_openat, ENOENT},
		{"openat2", c_openat2, ENOENT},
		{"prctl PR_SET_NAME", c_prctl_name, OK},
		{"prctl PR_SET_DUMPABLE", c_prctl_dumpable, KILL},
		{"write", c_write, OK},
		{"getrandom", c_getrandom, OK},
		{"socket", c_socket, KILL},
		{"execve", c_execve, KILL},
		{"ptrace", c_ptrace, KILL},
		{"io_uring_setup", c_uring_setup, KILL},
		{"io_uring_register", c_uring_register, KILL},
		{"memfd_create", c_memfd, KILL},
		{"ftruncate", c_ftruncate, KILL},
		{"fallocate", c_fallocate, KILL},
		{"fork via clone", c_fork, KILL},
		{"clone3", c_clone3, KILL},
		{"unshare", c_unshare, KILL},
		{"setns", c_setns, KILL},
		{"mount", c_mount, KILL},
		{"bpf", c_bpf, KILL},
		{"perf_event_open", c_perf, KILL},
		{"userfaultfd", c_userfaultfd, KILL},
		{"kexec_load", c_kexec, KILL},
		{"personality", c_personality, KILL},
		{"capset", c_capset, KILL},
		{"x32 getpid", c_x32_getpid, KILL},
		{"fcntl without a device rule", c_fcntl_getfd, KILL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check(&cases[i], NULL, 0, false);
}

Test(jail_seccomp, device_rules_both_ways)
{
	static const struct jail_syscall_rule rules[] = {
		{.nr = __NR_fcntl,
		 .n_conds = 1,
		 .conds = {{.arg = 1, .op = JAIL_CMP_EQ, .value = F_GETFD}}},
		{.nr = __NR_uname, .errno_ret = EACCES},
	};
	static const struct call_case cases[] = {
		{"fcntl F_GETFD (allowed arg)", c_fcntl_getfd, OK},
		{"fcntl F_SETFL (mutated arg)", c_fcntl_setfl, KILL},
		{"uname (errno rule)", c_uname, EACCES},
		{"socket still absent", c_socket, KILL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check(&cases[i], rules, 2, false);
}

Test(jail_seccomp, log_mode_lets_unlisted_calls_run)
{
	static const struct call_case cases[] = {
		{"socket logged, runs", c_socket, OK},
		{"prctl PR_SET_DUMPABLE logged, runs", c_prctl_dumpable, OK},
		{"openat still ENOENT", c_openat, ENOENT},
		{"x32 still kills", c_x32_getpid, KILL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check(&cases[i], NULL, 0, true);
}

Test(jail_seccomp, build_rejects_bad_rules)
{
	static const struct {
		const char *name;
		struct jail_syscall_rule rule;
		int expect;
	} cases[] = {
		{"allow execve", {.nr = __NR_execve}, -EPERM},
		{"allow io_uring_setup", {.nr = __NR_io_uring_setup}, -EPERM},
		{"allow ptrace", {.nr = __NR_ptrace}, -EPERM},
		{"allow unshare", {.nr = __NR_unshare}, -EPERM},
		{"allow mmap (widening the base rule)", {.nr = __NR_mmap}, -EPERM},
		{"allow personality", {.nr = __NR_personality}, -EPERM},
		{"errno on execve is fine", {.nr = __NR_execve, .errno_ret = EPERM}, 0},
		{"negative syscall", {.nr = -1}, -EINVAL},
		{"errno out of range", {.nr = __NR_uname, .errno_ret = 5000}, -EINVAL},
		{"too many conditions", {.nr = __NR_uname, .n_conds = JAIL_MAX_ARG_CONDS + 1}, -EINVAL},
		{"argument 6", {.nr = __NR_uname, .n_conds = 1, .conds = {{.arg = 6, .op = JAIL_CMP_EQ}}},
		 -EINVAL},
		{"unknown op", {.nr = __NR_uname, .n_conds = 1, .conds = {{.arg = 0, .op = 0}}}, -EINVAL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		scmp_filter_ctx ctx = NULL;
		int r = jail_seccomp_build(&cases[i].rule, 1, false, &ctx);
		cr_expect_eq(r, cases[i].expect, "%s: got %d, expected %d", cases[i].name, r,
			     cases[i].expect);
		if (r == 0)
			seccomp_release(ctx);
	}
}

Test(jail_seccomp, base_list_invariants)
{
	bool has_read = false, has_exit_group = false, has_uring_enter = false;
	for (size_t i = 0; i < jail_base_rules_len; i++) {
		const struct jail_syscall_rule *r = &jail_base_rules[i];
		/* The base may touch a never-allowed syscall only conditionally
		 * (mmap/mprotect without PROT_EXEC) or to make it fail. */
		if (jail_syscall_never_allowed(r->nr) && r->errno_ret == 0)
			cr_expect_gt(r->n_conds, 0, "base allows never-allowed nr %d outright", r->nr);
		cr_expect_neq(r->nr, __NR_io_uring_setup);
		cr_expect_neq(r->nr, __NR_execve);
		cr_expect_neq(r->nr, __NR_socket);
		has_read |= r->nr == __NR_read;
		has_exit_group |= r->nr == __NR_exit_group;
		has_uring_enter |= r->nr == __NR_io_uring_enter;
	}
	cr_expect(has_read && has_exit_group && has_uring_enter);

	scmp_filter_ctx ctx;
	struct jail_bpf bpf;
	cr_assert_eq(jail_seccomp_build(NULL, 0, false, &ctx), 0);
	cr_assert_eq(jail_seccomp_compile(ctx, &bpf), 0);
	seccomp_release(ctx);
	cr_expect_gt(bpf.len, 10);
	cr_expect_lt(bpf.len, 1024, "base filter unexpectedly large: %u insns", bpf.len);
	jail_bpf_free(&bpf);
	cr_expect_null(bpf.insns);
}
