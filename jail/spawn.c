/*
 * The parent half of the jail: validate the config, prepare everything that
 * allocates (BPF, libcap set) before clone3, create the child with a pidfd,
 * write its uid/gid maps, release it, and wait for its setup report. Also
 * the pidfd lifecycle: wait, kill, close, with no zombie on any path, and
 * the fork fallback for where clone3/pidfd_open do not exist (valgrind).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/sched.h>
#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "jail/jail_internal.h"

#define SANDBOX_NS_FLAGS                                                                 \
	(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC |       \
	 CLONE_NEWUTS | CLONE_NEWCGROUP)

static int validate(const struct jail_config *cfg, jail_child_fn *fn)
{
	if (!cfg || !fn || (cfg->n_keep_fds && !cfg->keep_fds))
		return -EINVAL;
	if (cfg->n_keep_fds > JAIL_MAX_KEEP_FDS)
		return -E2BIG;
	for (size_t i = 0; i < cfg->n_keep_fds; i++)
		if (cfg->keep_fds[i] < 0 || fcntl(cfg->keep_fds[i], F_GETFD) < 0)
			return -EBADF;
	if (cfg->hostname && strlen(cfg->hostname) > 64)
		return -ENAMETOOLONG;
	if (cfg->outside_uid == (uid_t)-1 || cfg->outside_gid == (gid_t)-1)
		return -EINVAL;
	return 0;
}

/* keep = cfg->keep_fds + extra, sorted, duplicates removed. */
static void build_keep_list(struct jail_plan *p, int extra)
{
	const struct jail_config *cfg = p->cfg;
	p->n_keep = 0;
	for (size_t i = 0; i <= cfg->n_keep_fds; i++) {
		int fd = i < cfg->n_keep_fds ? cfg->keep_fds[i] : extra;
		size_t j = p->n_keep;
		while (j > 0 && p->keep[j - 1] > fd)
			j--;
		if (j > 0 && p->keep[j - 1] == fd)
			continue;
		memmove(&p->keep[j + 1], &p->keep[j], (p->n_keep - j) * sizeof(int));
		p->keep[j] = fd;
		p->n_keep++;
	}
}

static int write_proc(pid_t pid, const char *file, const char *text)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = strlen(text);
	ssize_t n = write(fd, text, len);
	int ret = n < 0 ? -errno : (size_t)n != len ? -EIO : 0;
	close(fd);
	return ret;
}

/*
 * uid/gid 0 inside → cfg's unprivileged ids outside. That needs
 * CAP_SETUID/CAP_SETGID here; without them (ringvm run by a plain user),
 * fall back to mapping our own ids, which the kernel allows any process for
 * its own user namespace child, but only with setgroups "deny". Never map to
 * real root. Returns the release byte for the child, or -errno.
 */
static int write_id_maps(pid_t pid, const struct jail_config *cfg, bool *unprivileged)
{
	char map[64];
	uid_t uid = cfg->outside_uid ? cfg->outside_uid : JAIL_DEFAULT_ID;
	gid_t gid = cfg->outside_gid ? cfg->outside_gid : JAIL_DEFAULT_ID;
	int ret;

	/* "allow" (the default, written for clarity) lets the child drop the
	 * supplementary groups it inherited; only gid 0 is mapped, so it cannot
	 * gain any. */
	ret = write_proc(pid, "setgroups", "allow");
	if (ret < 0)
		return ret;
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
	ret = write_proc(pid, "uid_map", map);
	if (ret == -EPERM || ret == -EINVAL) {
		uid_t own_uid = geteuid();
		gid_t own_gid = getegid();
		if (own_uid == 0 || own_gid == 0)
			return -EPERM;
		ret = write_proc(pid, "setgroups", "deny");
		if (ret < 0)
			return ret;
		snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)own_uid);
		ret = write_proc(pid, "uid_map", map);
		if (ret < 0)
			return ret;
		snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)own_gid);
		ret = write_proc(pid, "gid_map", map);
		if (ret < 0)
			return ret;
		*unprivileged = false;
		return JAIL_RELEASE_GROUPS_DENIED;
	}
	if (ret < 0)
		return ret;
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
	ret = write_proc(pid, "gid_map", map);
	if (ret < 0)
		return ret;
	*unprivileged = true;
	return JAIL_RELEASE_GROUPS_ALLOWED;
}

static int status_from_siginfo(const siginfo_t *si)
{
	switch (si->si_code) {
	case CLD_EXITED:
		return (si->si_status & 0xff) << 8;
	case CLD_DUMPED:
		return (si->si_status & 0x7f) | 0x80;
	default:
		return si->si_status & 0x7f;
	}
}

static int reap(struct jail_child *c)
{
	siginfo_t si;
	if (c->reaped)
		return 0;
	if (c->forked) {
		int st;
		while (waitpid(c->pid, &st, 0) < 0)
			if (errno != EINTR)
				return -errno;
		c->status = st;
		c->reaped = true;
		return 0;
	}
	memset(&si, 0, sizeof(si));
	while (waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED) < 0)
		if (errno != EINTR)
			return -errno;
	c->status = status_from_siginfo(&si);
	c->reaped = true;
	return 0;
}

/*
 * Wait for the child's report. The child may die without one (killed by
 * its own seccomp filter in pre_seccomp's aftermath, say), so the pidfd is
 * watched too rather than relying on EOF: another process could hold a copy
 * of the pipe's write end.
 */
static int await_ready(int status_r, struct jail_child *c, bool *reported)
{
	struct jail_report r;
	struct pollfd pfd[2] = {
		{.fd = status_r, .events = POLLIN},
		{.fd = c->pidfd, .events = POLLIN},
	};

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		ssize_t n = read(status_r, &r, sizeof(r)); /* O_NONBLOCK */
		if (n == (ssize_t)sizeof(r)) {
			if (r.err == 0)
				return 0;
			*reported = true; /* and it is on its way to _exit */
			memcpy(c->failed_stage, r.stage, sizeof(c->failed_stage));
			c->failed_stage[sizeof(c->failed_stage) - 1] = '\0';
			return r.err < 0 ? r.err : -EPROTO;
		}
		if (n > 0)
			return -EPROTO;
		/* A death pipe (fork fallback) hangs up rather than turning readable. */
		if (n == 0 || (pfd[1].revents & (POLLIN | POLLHUP)) || errno != EAGAIN) {
			snprintf(c->failed_stage, sizeof(c->failed_stage), "died");
			return -ECHILD;
		}
	}
}

static int send_kill(const struct jail_child *c)
{
	return c->forked ? kill(c->pid, SIGKILL) : pidfd_send_signal(c->pidfd, SIGKILL, NULL, 0);
}

/* RINGVM_JAIL_FALLBACK=1: behave as if clone3 and pidfd_open were missing,
 * so that tests exercise the fork fallback on any kernel. */
static bool fallback_forced(void)
{
	const char *v = getenv("RINGVM_JAIL_FALLBACK");
	return v && *v && strcmp(v, "0") != 0;
}

/* Fork-like clone3 (no new stack): the child continues in jail_child_main
 * on a copy of our stack, PID 1 of its namespaces when sandboxed. Returns
 * the pid (with *pidfd), or -errno. */
static long clone_pidfd(const struct jail_plan *p, int *pidfd)
{
	struct clone_args ca;
	memset(&ca, 0, sizeof(ca));
	ca.flags = CLONE_PIDFD | (p->cfg->sandbox ? SANDBOX_NS_FLAGS : 0);
	ca.pidfd = (uint64_t)(uintptr_t)pidfd;
	ca.exit_signal = SIGCHLD;
	long pid = syscall(SYS_clone3, &ca, sizeof(ca));
	if (pid < 0)
		return -errno;
	if (pid == 0)
		jail_child_main(p);
	return pid;
}

/*
 * The fallback: a plain fork-like clone() (no namespaces, so unsandboxed
 * only), which valgrind emulates, watched through a death pipe instead of a
 * pidfd. The child holds the only write end (ours is closed before anything
 * else can fork, and it is close-on-exec), so the read end hangs up exactly
 * when the child has exited. Returns the pid (with *watch_fd), or -errno.
 */
static long clone_forked(struct jail_plan *p, int *watch_fd)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	p->death_r = fds[0];
	p->death_w = fds[1];
	long pid = syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);
	int err = errno;
	if (pid == 0)
		jail_child_main(p);
	close(p->death_w);
	p->death_w = -1;
	if (pid < 0) {
		close(p->death_r);
		p->death_r = -1;
		return -err;
	}
	*watch_fd = p->death_r;
	p->death_r = -1;
	return pid;
}

int jail_spawn_start(const struct jail_config *cfg, jail_child_fn *fn, void *arg,
		     struct jail_child *out)
{
	struct jail_plan p;
	int fds[2];
	int ret;

	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->pid = -1;
	out->pidfd = -1;
	out->status_fd = -1;
	ret = validate(cfg, fn);
	if (ret < 0)
		return ret;

	memset(&p, 0, sizeof(p));
	p.cfg = cfg;
	p.fn = fn;
	p.arg = arg;
	p.hostname = cfg->hostname ? cfg->hostname : "ringvm-jail";
	p.nofile = cfg->max_fds ? cfg->max_fds : JAIL_DEFAULT_MAX_FDS;
	p.nproc = cfg->max_procs ? cfg->max_procs : JAIL_DEFAULT_MAX_PROCS;
	p.fsize = cfg->max_file_size;
	p.memlock = cfg->max_memlock;
	p.release_r = p.release_w = p.status_r = p.status_w = p.parent_pidfd = -1;
	p.death_r = p.death_w = -1;
	p.parent_pid = getpid();

	bool fallback = fallback_forced();
	if (!fallback) {
		p.parent_pidfd = pidfd_open(getpid(), 0);
		if (p.parent_pidfd < 0 && errno != ENOSYS)
			return -errno;
		fallback = p.parent_pidfd < 0;
	}
	if (fallback && cfg->sandbox) {
		/* Namespaces are not worth weakening silently: the caller says
		 * so in one line and the user may choose --disable-sandbox. */
		snprintf(out->failed_stage, sizeof(out->failed_stage), "clone3");
		return -ENOSYS;
	}

	/* The rules are checked in both modes, so a bad allowlist cannot hide
	 * behind --disable-sandbox runs; except in the fork fallback, which
	 * loads no filter and where (under valgrind) libseccomp cannot probe
	 * seccomp(2) and so rejects every filter. */
	if (!fallback) {
		scmp_filter_ctx ctx;
		ret = jail_seccomp_build(cfg->rules, cfg->n_rules, cfg->seccomp_log, &ctx);
		if (ret < 0)
			goto out_pidfd;
		ret = cfg->sandbox ? jail_seccomp_compile(ctx, &p.bpf) : 0;
		seccomp_release(ctx);
		if (ret < 0)
			goto out_pidfd;
	}
	if (cfg->sandbox) {
		p.empty_caps = cap_init(); /* all three sets empty */
		if (!p.empty_caps) {
			ret = -ENOMEM;
			goto out_bpf;
		}
	}
	if (pipe2(fds, O_CLOEXEC) < 0) {
		ret = -errno;
		goto out_caps;
	}
	p.release_r = fds[0];
	p.release_w = fds[1];
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		ret = -errno;
		goto out_pipes;
	}
	p.status_r = fds[0];
	p.status_w = fds[1];
	build_keep_list(&p, p.status_w);

	int pidfd = -1;
	long pid = fallback ? -ENOSYS : clone_pidfd(&p, &pidfd);
	if (pid == -ENOSYS) {
		if (cfg->sandbox) { /* clone3 missing though pidfd_open is not */
			snprintf(out->failed_stage, sizeof(out->failed_stage), "clone3");
			ret = -ENOSYS;
			goto out_pipes;
		}
		out->forked = true;
		pid = clone_forked(&p, &pidfd);
	}
	if (pid < 0) {
		out->forked = false;
		ret = (int)pid;
		goto out_pipes;
	}

	out->pid = (pid_t)pid;
	out->pidfd = pidfd;
	close(p.release_r);
	p.release_r = -1;
	close(p.status_w);
	p.status_w = -1;

	char mode = JAIL_RELEASE_GROUPS_DENIED;
	if (cfg->sandbox) {
		ret = write_id_maps(out->pid, cfg, &out->mapped_unprivileged);
		if (ret < 0) {
			snprintf(out->failed_stage, sizeof(out->failed_stage), "id_maps");
			goto out_kill;
		}
		mode = (char)ret;
	}
	if (write(p.release_w, &mode, 1) != 1) {
		ret = -errno;
		goto out_kill;
	}
	/* The status pipe now belongs to out, for jail_spawn_finish. */
	out->status_fd = p.status_r;
	out->setup_pending = true;
	p.status_r = -1;
	ret = 0;
	goto out_pipes;

out_kill:
	/* The child may be mid-setup or already dead; either way reap it now
	 * so a failed spawn leaves nothing behind. */
	send_kill(out);
	if (reap(out) == 0 && out->failed_stage[0] == '\0')
		snprintf(out->failed_stage, sizeof(out->failed_stage), "died");
	close(out->pidfd);
	out->pidfd = -1;
out_pipes:
	if (p.release_r >= 0)
		close(p.release_r);
	if (p.release_w >= 0)
		close(p.release_w);
	if (p.status_r >= 0)
		close(p.status_r);
	if (p.status_w >= 0)
		close(p.status_w);
out_caps:
	if (p.empty_caps)
		cap_free(p.empty_caps);
out_bpf:
	jail_bpf_free(&p.bpf);
out_pidfd:
	if (p.parent_pidfd >= 0)
		close(p.parent_pidfd);
	return ret;
}

int jail_spawn_finish(struct jail_child *c)
{
	if (!c || !c->setup_pending)
		return -EINVAL;
	bool reported = false;
	int ret = await_ready(c->status_fd, c, &reported);
	close(c->status_fd);
	c->status_fd = -1;
	c->setup_pending = false;
	if (ret == 0)
		return 0;
	if (!reported) /* else it exits by itself: its status says so */
		send_kill(c);
	if (reap(c) == 0 && c->failed_stage[0] == '\0')
		snprintf(c->failed_stage, sizeof(c->failed_stage), "died");
	close(c->pidfd);
	c->pidfd = -1;
	return ret;
}

int jail_spawn(const struct jail_config *cfg, jail_child_fn *fn, void *arg, struct jail_child *out)
{
	int ret = jail_spawn_start(cfg, fn, arg, out);
	return ret < 0 ? ret : jail_spawn_finish(out);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int jail_child_wait(struct jail_child *c, int *status, int timeout_ms)
{
	if (!c)
		return -EINVAL;
	if (!c->reaped) {
		if (c->pidfd < 0)
			return -EBADF;
		struct pollfd pfd = {.fd = c->pidfd, .events = POLLIN};
		int64_t deadline = timeout_ms < 0 ? 0 : now_ms() + timeout_ms;
		for (;;) {
			int left = -1;
			if (timeout_ms >= 0) {
				int64_t d = deadline - now_ms();
				left = d < 0 ? 0 : d > INT_MAX ? INT_MAX : (int)d;
			}
			int n = poll(&pfd, 1, left);
			if (n > 0)
				break;
			if (n == 0)
				return -ETIMEDOUT;
			if (errno != EINTR)
				return -errno;
		}
		int ret = reap(c);
		if (ret < 0)
			return ret;
	}
	if (status)
		*status = c->status;
	return 0;
}

int jail_child_kill(struct jail_child *c)
{
	if (!c)
		return -EINVAL;
	if (c->reaped)
		return 0;
	if (c->pidfd < 0)
		return -EBADF;
	if (send_kill(c) < 0 && errno != ESRCH)
		return -errno;
	return 0;
}

void jail_child_close(struct jail_child *c)
{
	if (!c)
		return;
	if (c->setup_pending) {
		close(c->status_fd);
		c->status_fd = -1;
		c->setup_pending = false;
	}
	if (c->pidfd < 0)
		return;
	if (!c->reaped) {
		/* Kill cannot fail on the pidfd of our own unreaped child, and
		 * reap retries EINTR: no zombie is left behind. */
		if (jail_child_kill(c) < 0)
			send_kill(c);
		(void)reap(c);
	}
	close(c->pidfd);
	c->pidfd = -1;
}
