/*
 * What jail_spawn (parent, spawn.c) prepares before clone3 and the child
 * half (child.c) consumes: the plan is filled in the parent, so every
 * allocation (BPF program, libcap set) happens there and the child only
 * issues syscalls. Also the wire format of the child's setup report.
 */
#ifndef RINGVM_JAIL_JAIL_INTERNAL_H
#define RINGVM_JAIL_JAIL_INTERNAL_H

#include <stdint.h>
#include <sys/capability.h>
#include <sys/types.h>

#include "jail/jail.h"

/* Exit status of a child that gave up during setup (after reporting why). */
#define JAIL_EXIT_SETUP 125

/* Release byte from the parent: may the child clear its supplementary
 * groups (setgroups "allow"), or are they frozen (setgroups "deny")? */
#define JAIL_RELEASE_GROUPS_ALLOWED 'A'
#define JAIL_RELEASE_GROUPS_DENIED  'D'

/* One record on the status pipe: err 0 and stage "ready" once the jail is
 * complete, or the child's -errno and the step that failed. Smaller than
 * PIPE_BUF, so it arrives whole or not at all. */
struct jail_report {
	int32_t err;
	char stage[JAIL_STAGE_LEN];
};
_Static_assert(sizeof(struct jail_report) == 32, "jail_report wire size");

struct jail_plan {
	const struct jail_config *cfg;
	jail_child_fn *fn;
	void *arg;
	/* Sandbox only. */
	struct jail_bpf bpf;
	cap_t empty_caps;
	const char *hostname;
	uint64_t nofile, nproc, fsize, memlock;
	/* Sorted, unique: cfg->keep_fds plus status_w (closed just before fn). */
	int keep[JAIL_MAX_KEEP_FDS + 1];
	size_t n_keep;
	/* Pipes and the parent's pidfd; the child closes the ends it does not use. */
	int release_r, release_w;
	int status_r, status_w;
	int parent_pidfd; /* -1 in the fork fallback: the child checks parent_pid */
	pid_t parent_pid;
	/* Fork fallback only (else -1): the child's death pipe. The child keeps
	 * death_w for life; the parent watches death_r for the hang-up. */
	int death_r, death_w;
};

/* The child half of jail_spawn. Never returns: exits with fn's status, or
 * JAIL_EXIT_SETUP after writing a jail_report. */
_Noreturn void jail_child_main(const struct jail_plan *p);

#endif
