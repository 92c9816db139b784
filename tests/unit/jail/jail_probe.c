/*
 * The jail tests' probe harness (contract in jail_probe.h): pipes kept into
 * the jailed probe, bounded reads, release-and-reap, and a plain-fork runner
 * that tries one call under a filter.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "tests/unit/jail/jail_probe.h"

int probe_out_fd = -1;
int probe_in_fd = -1;

int probe_start(const struct jail_config *cfg, jail_child_fn *fn, void *arg, struct probe *p)
{
	int res[2], go[2], keep[JAIL_MAX_KEEP_FDS];
	struct jail_config c = *cfg;
	int ret;

	if (cfg->n_keep_fds + 2 > JAIL_MAX_KEEP_FDS)
		return -E2BIG;
	signal(SIGPIPE, SIG_IGN); /* see probe_finish */
	if (pipe2(res, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(go, O_CLOEXEC) < 0) {
		ret = -errno;
		goto err_res;
	}
	if (cfg->n_keep_fds)
		memcpy(keep, cfg->keep_fds, cfg->n_keep_fds * sizeof(int));
	keep[cfg->n_keep_fds] = res[1];
	keep[cfg->n_keep_fds + 1] = go[0];
	c.keep_fds = keep;
	c.n_keep_fds = cfg->n_keep_fds + 2;
	probe_out_fd = res[1];
	probe_in_fd = go[0];
	ret = jail_spawn(&c, fn, arg, &p->child);
	close(res[1]);
	close(go[0]);
	if (ret < 0) {
		close(go[1]);
		close(res[0]);
		return ret;
	}
	p->res_r = res[0];
	p->go_w = go[1];
	return 0;

err_res:
	close(res[0]);
	close(res[1]);
	return ret;
}

int probe_recv(struct probe *p, void *buf, size_t len, int timeout_ms)
{
	size_t got = 0;
	while (got < len) {
		struct pollfd pfd = {.fd = p->res_r, .events = POLLIN};
		int n = poll(&pfd, 1, timeout_ms);
		if (n == 0)
			return -ETIMEDOUT;
		if (n < 0)
			return -errno;
		ssize_t r = read(p->res_r, (char *)buf + got, len - got);
		if (r == 0)
			return -EPIPE;
		if (r < 0)
			return -errno;
		got += (size_t)r;
	}
	return 0;
}

int probe_finish(struct probe *p, int timeout_ms)
{
	int status = 0;
	/* A byte, not EOF: an unsandboxed probe holds a copy of go_w itself.
	 * A probe that already returned has closed the other end: that is
	 * EPIPE (SIGPIPE is ignored by probe_start), not an error. */
	if (write(p->go_w, "G", 1) != 1 && errno != EPIPE) {
		int err = -errno;
		close(p->go_w);
		jail_child_close(&p->child);
		close(p->res_r);
		return err;
	}
	close(p->go_w);
	int ret = jail_child_wait(&p->child, &status, timeout_ms);
	jail_child_close(&p->child);
	close(p->res_r);
	return ret < 0 ? ret : status;
}

void probe_send(const void *buf, size_t len)
{
	if (write(probe_out_fd, buf, len) != (ssize_t)len)
		_exit(99);
}

void probe_block(void)
{
	char c;
	ssize_t n;
	do
		n = read(probe_in_fd, &c, 1);
	while (n < 0 && errno == EINTR);
}

bool probe_no_child(pid_t pid)
{
	return waitpid(pid, NULL, WNOHANG) < 0 && errno == ECHILD;
}

int probe_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", ".." and the DIR's own fd */
}

int probe_filtered(const struct jail_syscall_rule *rules, size_t n, bool log,
		   long (*call)(void *), void *arg)
{
	scmp_filter_ctx ctx;
	struct jail_bpf bpf;
	int status;

	if (jail_seccomp_build(rules, n, log, &ctx) < 0)
		return -1;
	int ret = jail_seccomp_compile(ctx, &bpf);
	seccomp_release(ctx);
	if (ret < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || jail_seccomp_install(&bpf) < 0)
			_exit(255);
		long r = call(arg);
		_exit(r >= 0 ? 0 : (int)(errno & 0xff));
	}
	jail_bpf_free(&bpf);
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

bool probe_exited(int status, int code)
{
	return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

bool probe_signaled(int status, int sig)
{
	return status >= 0 && WIFSIGNALED(status) && WTERMSIG(status) == sig;
}
