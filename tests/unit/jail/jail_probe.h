/*
 * Shared harness for the jail tests: spawn a jailed probe with two extra
 * kept pipes (results out, "go on" in), read what it reports, then release
 * and reap it. Also the plain-fork runner for filter-only checks.
 */
#ifndef RINGVM_TESTS_UNIT_JAIL_PROBE_H
#define RINGVM_TESTS_UNIT_JAIL_PROBE_H

#include <stdbool.h>
#include <sys/types.h>

#include "jail/jail.h"

/* Child side: the kept pipe ends (valid inside a probe). */
extern int probe_out_fd;
extern int probe_in_fd;

struct probe {
	struct jail_child child;
	int res_r; /* parent reads what the probe sends */
	int go_w;  /* parent closes it to let the probe finish */
};

/* Spawn fn in a jail built from cfg plus the two probe pipes (added to the
 * keep list). Returns jail_spawn's result; on failure nothing is left open. */
int probe_start(const struct jail_config *cfg, jail_child_fn *fn, void *arg, struct probe *p);

/* Read exactly len bytes within timeout_ms. 0, -ETIMEDOUT, -EPIPE (EOF) or -errno. */
int probe_recv(struct probe *p, void *buf, size_t len, int timeout_ms);

/* Let the probe go on (one byte on go_w), wait up to timeout_ms for it, close everything.
 * Returns the wait status, or -errno (the child is then killed and reaped). */
int probe_finish(struct probe *p, int timeout_ms);

/* Child side: send bytes / block until the parent says go (a byte or EOF). */
void probe_send(const void *buf, size_t len);
void probe_block(void);

/* True when pid is no longer a child of ours (so not a zombie either). */
bool probe_no_child(pid_t pid);

/* Number of open descriptors of the calling process. */
int probe_count_fds(void);

/*
 * Fork a plain child that sets no_new_privs, installs the filter built from
 * (rules, log) and runs call(arg). Returns its wait status; the child exits
 * with 0 when call returns >= 0, with the errno when it fails.
 */
int probe_filtered(const struct jail_syscall_rule *rules, size_t n, bool log,
		   long (*call)(void *), void *arg);

/* "exited with code" / "killed by signal" helpers for assertions. */
bool probe_exited(int status, int code);
bool probe_signaled(int status, int sig);

#endif
