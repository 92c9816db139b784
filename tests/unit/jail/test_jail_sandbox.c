/*
 * jail sandbox: what a jailed device process can and cannot do (hostile
 * inputs item 22), seen from inside (the probe reports over a kept pipe)
 * and from the parent (/proc/<pid>/...): forbidden actions die or fail,
 * credentials/capabilities/seccomp state, id maps, the empty read-only
 * root, the surviving descriptors, rlimits and --seccomp-log.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "tests/common/facility.h"
#include "tests/unit/jail/jail_probe.h"

static void require_root(void)
{
	REQUIRE_FACILITY(facility_root(), "the jail maps to nobody only when run as root");
}

TestSuite(jail_sandbox, .init = require_root, .timeout = 60);

#define KILL (-SIGSYS)

static int memfd = -1; /* kept by the probes of forbidden_actions */

static int a_open(void) { return open("/etc/passwd", O_RDONLY); }
static int a_execve(void)
{
	char *argv[] = {"/bin/true", NULL};
	return execve("/bin/true", argv, NULL);
}
static int a_socket(void) { return socket(AF_UNIX, SOCK_STREAM, 0); }
static int a_ptrace(void) { return (int)syscall(__NR_ptrace, 0, 0, 0, 0); }
static int a_ftruncate(void) { return ftruncate(memfd, 1 << 20); }
/* write() is allowed, but RLIMIT_FSIZE 0 stops it on any regular file or
 * memfd (as PID 1 the SIGXFSZ is ignored, so it fails with EFBIG). */
static int a_write_memfd(void) { return (int)write(memfd, "x", 1); }
static int a_mmap_exec(void)
{
	return mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
			       MAP_FAILED
		       ? -1
		       : 0;
}
static int a_uring(void)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	return (int)syscall(__NR_io_uring_setup, 4, &p);
}
static int a_capset(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {{.effective = ~0u, .permitted = ~0u}};
	return (int)syscall(__NR_capset, &h, d);
}
static int a_unshare(void) { return unshare(CLONE_NEWUSER); }
static int a_memfd(void) { return (int)syscall(__NR_memfd_create, "x", 0); }

static const struct {
	const char *name;
	int (*act)(void);
	int expect; /* an errno the call must fail with, or KILL */
} forbidden[] = {
	{"open a file", a_open, ENOENT},
	{"execve", a_execve, KILL},
	{"create a socket", a_socket, KILL},
	{"ptrace", a_ptrace, KILL},
	{"resize a kept memfd", a_ftruncate, KILL},
	{"write into a kept memfd", a_write_memfd, EFBIG},
	{"mmap PROT_EXEC", a_mmap_exec, KILL},
	{"create an io_uring", a_uring, KILL},
	{"raise capabilities", a_capset, KILL},
	{"create a user namespace", a_unshare, KILL},
	{"create a memfd", a_memfd, KILL},
};

static int fn_forbidden(void *arg)
{
	int r = forbidden[(intptr_t)arg].act();
	return r < 0 ? errno : 0; /* reached only if the call returned */
}

Test(jail_sandbox, forbidden_actions)
{
	memfd = (int)syscall(__NR_memfd_create, "guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(memfd, 0);
	cr_assert_eq(ftruncate(memfd, 4096), 0);
	struct jail_config cfg = {.sandbox = true, .keep_fds = &memfd, .n_keep_fds = 1};
	for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++) {
		struct jail_child c;
		int st = -1;
		cr_assert_eq(jail_spawn(&cfg, fn_forbidden, (void *)(intptr_t)i, &c), 0, "%s",
			     forbidden[i].name);
		cr_assert_eq(jail_child_wait(&c, &st, 10000), 0, "%s", forbidden[i].name);
		jail_child_close(&c);
		if (forbidden[i].expect == KILL)
			cr_expect(probe_signaled(st, SIGSYS), "%s: expected SIGSYS, status %#x",
				  forbidden[i].name, st);
		else
			cr_expect(probe_exited(st, forbidden[i].expect), "%s: expected errno %d, status %#x",
				  forbidden[i].name, forbidden[i].expect, st);
	}
	struct stat sb;
	cr_assert_eq(fstat(memfd, &sb), 0);
	cr_expect_eq(sb.st_size, 4096, "the jailed probe resized the memfd");
	close(memfd);
}

/* ---- the parent's view of a running probe ---- */

static int fn_ready_then_block(void *arg)
{
	(void)arg;
	char c = 'R';
	probe_send(&c, 1);
	probe_block();
	return 0;
}

static char *slurp(pid_t pid, const char *file)
{
	static char buf[8192];
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static void expect_line(const char *text, const char *line)
{
	char needle[128];
	snprintf(needle, sizeof(needle), "\n%s\n", line);
	cr_expect_not_null(strstr(text, needle), "missing line \"%s\" in:\n%s", line, text);
}

/* Soft limit of one row of /proc/<pid>/limits; -1 for unlimited. */
static long long limit_of(const char *text, const char *row)
{
	const char *p = strstr(text, row);
	cr_assert_not_null(p, "no %s row", row);
	p += strlen(row);
	while (*p == ' ')
		p++;
	return strncmp(p, "unlimited", 9) == 0 ? -1 : atoll(p);
}

Test(jail_sandbox, parent_sees_a_locked_down_process)
{
	struct jail_config cfg = {.sandbox = true, .max_fds = 32};
	struct probe p;
	char c;

	cr_assert_eq(probe_start(&cfg, fn_ready_then_block, NULL, &p), 0);
	cr_assert_eq(probe_recv(&p, &c, 1, 10000), 0);
	pid_t pid = p.child.pid;
	cr_expect(p.child.mapped_unprivileged);

	const char *st = slurp(pid, "status");
	expect_line(st, "Seccomp:\t2");
	expect_line(st, "NoNewPrivs:\t1");
	expect_line(st, "CapInh:\t0000000000000000");
	expect_line(st, "CapPrm:\t0000000000000000");
	expect_line(st, "CapEff:\t0000000000000000");
	expect_line(st, "CapBnd:\t0000000000000000");
	expect_line(st, "CapAmb:\t0000000000000000");
	expect_line(st, "Uid:\t65534\t65534\t65534\t65534");
	expect_line(st, "Gid:\t65534\t65534\t65534\t65534");
	const char *groups = strstr(st, "\nGroups:\t");
	cr_assert_not_null(groups);
	groups += strlen("\nGroups:\t");
	cr_expect_eq(strspn(groups, " "), strcspn(groups, "\n"),
		     "supplementary groups survived: %.40s", groups);
	char nspid[64];
	snprintf(nspid, sizeof(nspid), "\nNSpid:\t%d\t1\n", (int)pid);
	cr_expect_not_null(strstr(st, nspid), "child is not PID 1 one level down:\n%s", st);

	unsigned in, out, count;
	cr_expect_eq(sscanf(slurp(pid, "uid_map"), "%u %u %u", &in, &out, &count), 3);
	cr_expect(in == 0 && out == 65534 && count == 1, "uid_map %u %u %u", in, out, count);
	cr_expect_eq(sscanf(slurp(pid, "gid_map"), "%u %u %u", &in, &out, &count), 3);
	cr_expect(in == 0 && out == 65534 && count == 1, "gid_map %u %u %u", in, out, count);

	const char *lim = slurp(pid, "limits");
	cr_expect_eq(limit_of(lim, "Max open files"), 32);
	cr_expect_eq(limit_of(lim, "Max processes"), JAIL_DEFAULT_MAX_PROCS);
	cr_expect_eq(limit_of(lim, "Max core file size"), 0);
	cr_expect_eq(limit_of(lim, "Max file size"), 0);
	cr_expect_eq(limit_of(lim, "Max locked memory"), 0);

	/* Non-dumpable: its /proc entries belong to real root, so another
	 * process running as nobody cannot ptrace it or read its memory. */
	struct stat sb;
	char dir[32];
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	cr_assert_eq(stat(dir, &sb), 0);
	cr_expect_eq(sb.st_uid, 0, "jailed process is dumpable (owner %u)", sb.st_uid);

	/* Every namespace differs from ours. */
	static const char *const ns[] = {"user", "pid", "mnt", "net", "ipc", "uts", "cgroup"};
	for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
		char a[64], b[64];
		struct stat sa, sc;
		snprintf(a, sizeof(a), "/proc/self/ns/%s", ns[i]);
		snprintf(b, sizeof(b), "/proc/%d/ns/%s", (int)pid, ns[i]);
		cr_assert_eq(stat(a, &sa), 0);
		cr_assert_eq(stat(b, &sc), 0, "%s", b);
		cr_expect_neq(sa.st_ino, sc.st_ino, "%s namespace shared with the parent", ns[i]);
	}

	/* Its root: empty, read-only, the only mount it has. */
	char root[32];
	snprintf(root, sizeof(root), "/proc/%d/root", (int)pid);
	DIR *d = opendir(root);
	cr_assert_not_null(d, "%s: %s", root, strerror(errno));
	int entries = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	cr_expect_eq(entries, 0, "the jail's root is not empty");
	struct statvfs vfs;
	cr_assert_eq(statvfs(root, &vfs), 0);
	cr_expect(vfs.f_flag & ST_RDONLY, "the jail's root is writable");
	cr_expect(vfs.f_flag & ST_NOEXEC);
	int mounts = 0;
	for (const char *m = slurp(pid, "mountinfo"); *m; m++)
		mounts += *m == '\n';
	cr_expect_eq(mounts, 1, "the jail sees more than its root:\n%s", slurp(pid, "mountinfo"));

	cr_expect(probe_exited(probe_finish(&p, 10000), 0));
}

/* ---- the probe's own view, before and after the filter ---- */

struct inside {
	int root_entries;   /* getdents on "/" minus . and .. */
	int mkdir_errno;    /* mkdir on the root */
	int userns_errno;   /* unshare(CLONE_NEWUSER): namespace limits */
	int netns_errno;    /* unshare(CLONE_NEWNET): no CAP_SYS_ADMIN */
	int capset_errno;   /* raising CAP_SYS_ADMIN */
	int ambient_errno;  /* PR_CAP_AMBIENT_RAISE */
	char hostname[65];
	int pid;
	int uring_fd;
	int open_fds[8];    /* fds 0..255 open after the filter (fcntl probe) */
	int n_open_fds;
	int allowed_ok;     /* bitmask of allowed calls that worked */
};
static struct inside seen; /* filled in the child, sent by fn */

static int hook_observe(void *arg)
{
	(void)arg;
	char buf[512];
	int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
	seen.root_entries = -2;
	for (long off = 0; off < n;) {
		unsigned short reclen;
		memcpy(&reclen, buf + off + 16, sizeof(reclen));
		seen.root_entries++;
		off += reclen;
	}
	close(fd);
	seen.mkdir_errno = mkdir("/x", 0700) < 0 ? errno : 0;
	seen.userns_errno = unshare(CLONE_NEWUSER) < 0 ? errno : 0;
	seen.netns_errno = unshare(CLONE_NEWNET) < 0 ? errno : 0;
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {{.effective = 1u << CAP_SYS_ADMIN,
					       .permitted = 1u << CAP_SYS_ADMIN}};
	seen.capset_errno = syscall(__NR_capset, &h, d) < 0 ? errno : 0;
	seen.ambient_errno =
		prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0) < 0 ? errno : 0;
	gethostname(seen.hostname, sizeof(seen.hostname) - 1);
	/* What a device does here: create its ring before the filter. */
	struct io_uring_params up;
	memset(&up, 0, sizeof(up));
	seen.uring_fd = (int)syscall(__NR_io_uring_setup, 4, &up);
	if (seen.uring_fd < 0)
		seen.uring_fd = -errno;
	return 0;
}

static int fn_observe(void *arg)
{
	(void)arg;
	seen.pid = getpid();
	for (int fd = 0; fd < 256; fd++)
		if (fcntl(fd, F_GETFD) >= 0 && seen.n_open_fds < 8)
			seen.open_fds[seen.n_open_fds++] = fd;
	/* Allowed calls with allowed arguments keep working. */
	char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED) {
		m[4096] = 1;
		seen.allowed_ok |= (m[4096] == 1) << 0;
		seen.allowed_ok |= (mprotect(m, 4096, PROT_READ) == 0) << 1;
		seen.allowed_ok |= (munmap(m, 8192) == 0) << 2;
	}
	struct timespec ts, nap = {0, 1000};
	seen.allowed_ok |= (syscall(__NR_clock_gettime, CLOCK_MONOTONIC, &ts) == 0) << 3;
	seen.allowed_ok |= (nanosleep(&nap, NULL) == 0) << 4;
	char rnd[16];
	seen.allowed_ok |= (syscall(__NR_getrandom, rnd, sizeof(rnd), 0) == 16) << 5;
	seen.allowed_ok |= (prctl(PR_SET_NAME, "jailed", 0, 0, 0) == 0) << 6;
	seen.allowed_ok |= (sched_yield() == 0) << 7;
	seen.allowed_ok |=
		(seen.uring_fd >= 0 && syscall(__NR_io_uring_enter, seen.uring_fd, 0, 0, 0, NULL, 0) == 0)
		<< 8;
	probe_send(&seen, sizeof(seen));
	probe_block();
	return 0;
}

Test(jail_sandbox, inside_view)
{
	REQUIRE_FACILITY(facility_io_uring(), "io_uring_setup is unavailable");
	static const struct jail_syscall_rule fcntl_getfd[] = {
		{.nr = __NR_fcntl, .n_conds = 1, .conds = {{.arg = 1, .op = JAIL_CMP_EQ, .value = F_GETFD}}},
	};
	int extra = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 40);
	int dropped = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 50);
	cr_assert_geq(extra, 40);
	cr_assert_geq(dropped, 50);
	struct jail_config cfg = {
		.sandbox = true,
		.hostname = "blk0",
		.keep_fds = &extra,
		.n_keep_fds = 1,
		.rules = fcntl_getfd,
		.n_rules = 1,
		.pre_seccomp = hook_observe,
	};
	struct probe p;
	struct inside in;

	cr_assert_eq(probe_start(&cfg, fn_observe, NULL, &p), 0);
	cr_assert_eq(probe_recv(&p, &in, sizeof(in), 10000), 0);
	cr_expect_eq(in.pid, 1);
	cr_expect_eq(in.root_entries, 0, "root has %d entries", in.root_entries);
	cr_expect_eq(in.mkdir_errno, EROFS, "mkdir on / gave errno %d", in.mkdir_errno);
	cr_expect_eq(in.userns_errno, ENOSPC, "nested user namespace: errno %d", in.userns_errno);
	cr_expect_eq(in.netns_errno, EPERM, "unshare(CLONE_NEWNET): errno %d", in.netns_errno);
	cr_expect_eq(in.capset_errno, EPERM);
	cr_expect_eq(in.ambient_errno, EPERM);
	cr_expect_str_eq(in.hostname, "blk0");
	cr_expect_geq(in.uring_fd, 0, "pre_seccomp could not create a ring: %d", in.uring_fd);
	cr_expect_eq(in.allowed_ok, 0x1ff, "allowed calls failed: mask %#x", in.allowed_ok);

	/* Exactly the kept fds, the two probe pipes and the hook's ring. */
	int want[4] = {extra, probe_out_fd, probe_in_fd, in.uring_fd}, n_want = 4;
	cr_expect_eq(in.n_open_fds, n_want, "%d fds open inside", in.n_open_fds);
	for (int i = 0; i < n_want; i++) {
		bool found = false;
		for (int j = 0; j < in.n_open_fds; j++)
			found |= in.open_fds[j] == want[i];
		cr_expect(found, "fd %d did not survive", want[i]);
	}
	for (int j = 0; j < in.n_open_fds; j++) {
		cr_expect_neq(in.open_fds[j], dropped, "fd %d not on keep_fds survived", dropped);
		cr_expect_neq(in.open_fds[j], STDERR_FILENO, "stderr survived");
	}
	cr_expect(probe_exited(probe_finish(&p, 10000), 0));
	close(extra);
	close(dropped);
}

static int fn_log_mode(void *arg)
{
	(void)arg;
	int s = socket(AF_UNIX, SOCK_STREAM, 0); /* unlisted: logged, runs */
	int o = open("/etc/passwd", O_RDONLY);   /* still ENOENT */
	int32_t r[2] = {s, o < 0 ? errno : 0};
	probe_send(r, sizeof(r));
	return 0;
}

Test(jail_sandbox, seccomp_log_logs_instead_of_killing)
{
	struct jail_config cfg = {.sandbox = true, .seccomp_log = true};
	struct probe p;
	int32_t r[2];

	cr_assert_eq(probe_start(&cfg, fn_log_mode, NULL, &p), 0);
	cr_assert_eq(probe_recv(&p, r, sizeof(r), 10000), 0);
	cr_expect_geq(r[0], 0, "socket() did not run under --seccomp-log");
	cr_expect_eq(r[1], ENOENT);
	cr_expect(probe_exited(probe_finish(&p, 10000), 0));
}

/*
 * A caller without CAP_SETUID (ringvm run by a plain user) cannot map to
 * nobody: the jail falls back to the caller's own ids and says so.
 */
struct fallback_report {
	int spawn_ret;
	bool mapped_unprivileged;
	unsigned in, out, count;
	char setgroups[16];
	int status;
};

Test(jail_sandbox, unprivileged_caller_maps_its_own_ids)
{
	int pfd[2];
	cr_assert_eq(pipe(pfd), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct fallback_report r;
		memset(&r, 0, sizeof(r));
		close(pfd[0]);
		if (setgroups(0, NULL) < 0 || setresgid(1000, 1000, 1000) < 0 ||
		    setresuid(1000, 1000, 1000) < 0 || prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
			_exit(2);
		struct jail_config cfg = {.sandbox = true};
		struct probe p;
		r.spawn_ret = probe_start(&cfg, fn_ready_then_block, NULL, &p);
		if (r.spawn_ret == 0) {
			char c;
			r.mapped_unprivileged = p.child.mapped_unprivileged;
			if (probe_recv(&p, &c, 1, 10000) == 0) {
				char path[64];
				snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)p.child.pid);
				FILE *f = fopen(path, "r");
				if (f) {
					if (fscanf(f, "%u %u %u", &r.in, &r.out, &r.count) != 3)
						r.count = 0;
					fclose(f);
				}
				snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)p.child.pid);
				f = fopen(path, "r");
				if (f) {
					if (!fgets(r.setgroups, sizeof(r.setgroups), f))
						r.setgroups[0] = '\0';
					fclose(f);
				}
			}
			r.status = probe_finish(&p, 10000);
		}
		if (write(pfd[1], &r, sizeof(r)) != sizeof(r))
			_exit(3);
		_exit(0);
	}
	close(pfd[1]);
	struct fallback_report r;
	cr_assert_eq(read(pfd[0], &r, sizeof(r)), (ssize_t)sizeof(r), "middle process failed");
	close(pfd[0]);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert_eq(r.spawn_ret, 0, "unprivileged jail_spawn: %d", r.spawn_ret);
	cr_expect_not(r.mapped_unprivileged);
	cr_expect(r.in == 0 && r.out == 1000 && r.count == 1, "uid_map %u %u %u", r.in, r.out,
		  r.count);
	cr_expect_str_eq(r.setgroups, "deny\n");
	cr_expect(probe_exited(r.status, 0), "status %#x", r.status);
}
