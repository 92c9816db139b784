/*
 * The child half of jail_spawn: everything a freshly cloned device process
 * does to itself, in order, before running the device. Only raw syscalls
 * and allocation-free libcap calls happen here: the child is a clone3()
 * (or, in the fork fallback, clone()) copy of the caller that ran no
 * atfork handlers. Why the order is what it
 * is: jail/README.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <linux/securebits.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "jail/jail_internal.h"

/* Set in the child only (it is a copy of the caller's memory). */
static int death_fd = -1;

int jail_death_fd(void)
{
	return death_fd;
}

static void report(const struct jail_plan *p, const char *stage, int err)
{
	struct jail_report r;
	memset(&r, 0, sizeof(r));
	r.err = err;
	for (size_t i = 0; stage[i] && i < sizeof(r.stage) - 1; i++)
		r.stage[i] = stage[i];
	/* Nothing to do if the parent stopped listening: it will see us die. */
	if (write(p->status_w, &r, sizeof(r)) != (ssize_t)sizeof(r))
		return;
}

static _Noreturn void fail(const struct jail_plan *p, const char *stage, int err)
{
	report(p, stage, err < 0 ? err : -EIO);
	_exit(JAIL_EXIT_SETUP);
}

/* Wraps a libc call that returns -1/errno. */
#define TRY(p, stage, call)                                                              \
	do {                                                                             \
		if ((call) < 0)                                                          \
			fail((p), (stage), -errno);                                      \
	} while (0)

/*
 * Wait for the parent's go (it writes our id maps first). SIGKILL on parent
 * death covers the wait; EOF instead of a byte means the parent died before
 * PDEATHSIG was armed or gave up on us. Returns the release byte.
 */
static char wait_release(const struct jail_plan *p)
{
	char mode;
	ssize_t n;

	close(p->release_w); /* else our own copy would hide the parent's EOF */
	close(p->status_r);
	TRY(p, "pdeathsig", prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
	do
		n = read(p->release_r, &mode, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		_exit(JAIL_EXIT_SETUP);
	close(p->release_r);
	return mode;
}

/*
 * Take on the mapped ids. Until now our credentials are the caller's (real
 * root, if the VMM runs as root); the map only decides what setres*id(0)
 * turns them into. Raw syscalls: glibc's wrappers would try to broadcast
 * the change to threads that exist only in the parent.
 */
static void become_mapped_root(const struct jail_plan *p, char mode)
{
	TRY(p, "setresgid", syscall(SYS_setresgid, 0, 0, 0));
	/* Drop the caller's supplementary groups (a root login's include gid 0
	 * and often disk-like groups), which the kernel allows only where
	 * setgroups was left "allow". */
	if (mode == JAIL_RELEASE_GROUPS_ALLOWED)
		TRY(p, "setgroups", syscall(SYS_setgroups, 0, NULL));
	TRY(p, "setresuid", syscall(SYS_setresuid, 0, 0, 0));
	/* The euid change made us non-dumpable already when the ids really
	 * changed; say it outright for the case where they did not. Non-
	 * dumpable, other processes running as the same outside uid (nobody is
	 * shared) cannot ptrace us or read our /proc files. */
	TRY(p, "dumpable", prctl(PR_SET_DUMPABLE, 0, 0, 0, 0));
}

/*
 * An euid change clears the parent-death signal, so arm it again, then make
 * sure the parent did not die in the window where it was not armed (in our
 * PID namespace getppid() is 0, so ask the parent's pidfd instead).
 */
static void check_parent(const struct jail_plan *p)
{
	struct pollfd pfd = {.fd = p->parent_pidfd, .events = POLLIN};
	int n;

	TRY(p, "pdeathsig", prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
	if (p->parent_pidfd < 0) {
		/* Fork fallback: never sandboxed, so no PID namespace hides
		 * the parent; reparenting means it has exited. */
		if (getppid() != p->parent_pid)
			_exit(JAIL_EXIT_SETUP);
		return;
	}
	do
		n = poll(&pfd, 1, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		fail(p, "parent_pidfd", -errno);
	if (n > 0)
		_exit(JAIL_EXIT_SETUP); /* the parent has exited */
	close(p->parent_pidfd);
}

/*
 * No further namespaces from inside: the per-user-namespace limits are ours
 * to set while we hold CAP_SYS_RESOURCE in it, and they bind even if a
 * device allowlist lets clone or clone3 through. Needs /proc, so before
 * pivot_root.
 */
static void forbid_new_namespaces(const struct jail_plan *p)
{
	static const char *const files[] = {
		"/proc/sys/user/max_cgroup_namespaces", "/proc/sys/user/max_ipc_namespaces",
		"/proc/sys/user/max_mnt_namespaces",    "/proc/sys/user/max_net_namespaces",
		"/proc/sys/user/max_pid_namespaces",    "/proc/sys/user/max_time_namespaces",
		"/proc/sys/user/max_user_namespaces",   "/proc/sys/user/max_uts_namespaces",
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		int fd = open(files[i], O_WRONLY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			continue; /* a namespace type this kernel does not have */
		if (fd < 0)
			fail(p, "ns_limits", -errno);
		ssize_t n = write(fd, "0\n", 2);
		int err = errno;
		close(fd);
		if (n != 2)
			fail(p, "ns_limits", n < 0 ? -err : -EIO);
	}
}

/* /proc/self/fd walk for kernels without close_range (before 5.9). */
static void close_fds_slow(const struct jail_plan *p)
{
	char buf[2048];
	int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		fail(p, "close_fds", -errno);
	for (;;) {
		long n = syscall(SYS_getdents64, dir, buf, sizeof(buf));
		if (n < 0)
			fail(p, "close_fds", -errno);
		if (n == 0)
			break;
		for (long off = 0; off < n;) {
			const char *name = buf + off + 19; /* d_ino, d_off, d_reclen, d_type */
			unsigned short reclen;
			memcpy(&reclen, buf + off + 16, sizeof(reclen));
			off += reclen;
			if (name[0] < '0' || name[0] > '9')
				continue;
			int fd = 0;
			for (const char *c = name; *c; c++)
				fd = fd * 10 + (*c - '0');
			bool keep = fd == dir;
			for (size_t i = 0; i < p->n_keep && !keep; i++)
				keep = p->keep[i] == fd;
			if (!keep)
				close(fd);
		}
	}
	close(dir);
}

/* Close everything but p->keep (sorted): the gaps between kept fds. */
static void close_fds(const struct jail_plan *p)
{
	unsigned lo = 0;
	for (size_t i = 0; i <= p->n_keep; i++) {
		unsigned hi = i < p->n_keep ? (unsigned)p->keep[i] : ~0u;
		if (hi > lo && close_range(lo, hi - 1, 0) < 0) {
			if (errno == ENOSYS) {
				close_fds_slow(p);
				return;
			}
			fail(p, "close_fds", -errno);
		}
		lo = hi + 1;
	}
}

/*
 * An empty, size-limited tmpfs becomes /, the host's tree is detached
 * (not just hidden), and / is then made read-only. The tmpfs goes over
 * /proc because that directory must exist wherever the jail works at all
 * (the parent wrote our id maps through it) and nothing below it is needed
 * any more.
 */
static void make_root(const struct jail_plan *p)
{
	/* Our unmounts must not propagate back to the host's namespace. */
	TRY(p, "mount_private", mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
	TRY(p, "mount_tmpfs",
	    mount("ringvm-jail", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "size=16k,nr_inodes=8,mode=0555"));
	TRY(p, "chdir_root", chdir("/proc"));
	/* pivot_root(".", "."): the old root ends up stacked on the new one,
	 * where umount2 can detach it without needing a put_old directory. */
	TRY(p, "pivot_root", syscall(SYS_pivot_root, ".", "."));
	TRY(p, "umount_old", umount2(".", MNT_DETACH));
	TRY(p, "chdir_root", chdir("/"));
	TRY(p, "remount_ro",
	    mount(NULL, "/", NULL,
		  MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
}

/* Limits only go down: raising a hard limit needs CAP_SYS_RESOURCE in the
 * initial user namespace, which the jail never has. */
static void set_limit(const struct jail_plan *p, int resource, uint64_t value)
{
	struct rlimit rl;
	TRY(p, "getrlimit", getrlimit(resource, &rl));
	rlim_t v = value == JAIL_RLIM_INFINITY ? RLIM_INFINITY : (rlim_t)value;
	if (rl.rlim_max != RLIM_INFINITY && (v == RLIM_INFINITY || v > rl.rlim_max))
		v = rl.rlim_max;
	rl.rlim_cur = rl.rlim_max = v;
	TRY(p, "setrlimit", setrlimit(resource, &rl));
}

static void set_limits(const struct jail_plan *p)
{
	set_limit(p, RLIMIT_NOFILE, p->nofile);
	set_limit(p, RLIMIT_NPROC, p->nproc);
	set_limit(p, RLIMIT_CORE, 0); /* a device's memory holds guest data */
	set_limit(p, RLIMIT_FSIZE, p->fsize);
	/* RLIMIT_MEMLOCK waits until after pre_seccomp: since Linux 6.13 the
	 * io_uring rings themselves are charged to it (unless CAP_IPC_LOCK), so
	 * a 0 limit would make the device's io_uring_setup fail with ENOMEM.
	 * Lowered afterwards, it still caps registered buffers. */
}

/*
 * Bounding set and securebits need CAP_SETPCAP, so they go before the
 * capset that empties effective/permitted/inheritable. The locked
 * securebits keep uid 0 (inside) from meaning anything again.
 */
static void drop_caps(const struct jail_plan *p)
{
	for (cap_value_t c = 0; c < cap_max_bits(); c++)
		TRY(p, "capbset_drop", cap_drop_bound(c));
	TRY(p, "ambient_clear", cap_reset_ambient());
	TRY(p, "securebits",
	    cap_set_secbits(SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
			    SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
			    SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED));
	TRY(p, "capset", cap_set_proc(p->empty_caps));
}

_Noreturn void jail_child_main(const struct jail_plan *p)
{
	const struct jail_config *cfg = p->cfg;
	if (p->death_r >= 0)
		close(p->death_r);
	death_fd = p->death_w;
	char mode = wait_release(p);

	if (cfg->sandbox)
		become_mapped_root(p, mode);
	check_parent(p);
	if (cfg->sandbox) {
		forbid_new_namespaces(p);
		close_fds(p);
		make_root(p);
		TRY(p, "sethostname", sethostname(p->hostname, strlen(p->hostname)));
		set_limits(p);
		drop_caps(p);
		TRY(p, "no_new_privs", prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
	}
	if (cfg->pre_seccomp) {
		int r = cfg->pre_seccomp(cfg->pre_seccomp_arg);
		if (r != 0)
			fail(p, "pre_seccomp", r < 0 ? r : -EINVAL);
	}
	if (cfg->sandbox) {
		set_limit(p, RLIMIT_MEMLOCK, p->memlock);
		int r = jail_seccomp_install(&p->bpf);
		if (r < 0)
			fail(p, "seccomp", r);
	}
	report(p, "ready", 0);
	close(p->status_w);
	_exit(p->fn(p->arg) & 0xff);
}
