/*
 * The device-process sandbox: jail_spawn() forks one device process into
 * fresh user/PID/mount/net/IPC/UTS/cgroup namespaces, an empty read-only
 * tmpfs root, no capabilities, tight rlimits and a kill-by-default seccomp
 * filter, and hands the caller a pidfd to watch it. Mechanism only: each
 * device declares its own syscall allowlist (struct jail_syscall_rule).
 */
#ifndef RINGVM_JAIL_JAIL_H
#define RINGVM_JAIL_JAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/filter.h>
#include <seccomp.h>

#define JAIL_WUR __attribute__((warn_unused_result))

/* ------------------------------------------------------------------ */
/* Seccomp rules                                                       */
/* ------------------------------------------------------------------ */

/* How one syscall argument is compared (64-bit compares, as the kernel does). */
enum jail_cmp {
	JAIL_CMP_EQ = 1,
	JAIL_CMP_NE,
	JAIL_CMP_LT,
	JAIL_CMP_LE,
	JAIL_CMP_GT,
	JAIL_CMP_GE,
	JAIL_CMP_MASKED_EQ, /* (arg & mask) == value */
};

/* One condition on argument `arg` (0..5). `mask` is used by MASKED_EQ only. */
struct jail_arg_cond {
	unsigned arg;
	enum jail_cmp op;
	uint64_t value;
	uint64_t mask;
};

#define JAIL_MAX_ARG_CONDS 3

/*
 * One allowlist entry: the native syscall number (__NR_x), what happens when
 * it matches, and up to JAIL_MAX_ARG_CONDS conditions that must all hold.
 * Several entries for the same syscall are alternatives (OR).
 * errno_ret 0 allows the call; a positive errno (1..4095) makes it fail with
 * that error without running. Anything no entry matches kills the process
 * (SIGSYS), or is only logged with jail_config.seccomp_log.
 */
struct jail_syscall_rule {
	int nr;
	int errno_ret;
	unsigned n_conds;
	struct jail_arg_cond conds[JAIL_MAX_ARG_CONDS];
};

/*
 * The allowlist every device process gets before its own entries: exit,
 * read/write, futex, signal return, clocks, sleeps, memory management
 * without PROT_EXEC, io_uring_enter, sendmsg/recvmsg, poll, getrandom,
 * prctl(PR_SET_NAME), and open/openat/openat2 failing with ENOENT so that
 * libc probing fails closed. io_uring_setup/io_uring_register, execve,
 * socket, ptrace, clone/fork, ftruncate/fallocate, memfd_create, unshare,
 * setns, mount, kexec, bpf, perf_event_open, userfaultfd: absent, so they
 * kill.
 */
extern const struct jail_syscall_rule jail_base_rules[];
extern const size_t jail_base_rules_len;

/*
 * Syscalls a device rule may never ALLOW, because allowing them would undo
 * the jail itself (exec, ptrace, namespace and mount changes, a second
 * io_uring, PROT_EXEC through mmap/mprotect/personality, kernel modules,
 * bpf...). A device rule may still make them fail with an errno.
 */
extern const int jail_never_allowed[];
extern const size_t jail_never_allowed_len;

/* True when nr is on jail_never_allowed. */
bool jail_syscall_never_allowed(int nr);

/*
 * Build the filter of a device process: default action KILL_PROCESS (LOG
 * when `log`), a foreign-architecture (or x32) call kills, jail_base_rules
 * plus `rules`. Returns 0 and a context the caller frees with
 * seccomp_release(), or -EINVAL (bad rule: arg > 5, unknown op, errno out of
 * range, too many conditions), -EPERM (a rule allows a never-allowed
 * syscall), or a libseccomp error (-EEXIST: two rules conflict). Allocates:
 * call it in the parent, never in a half-built child.
 */
JAIL_WUR int jail_seccomp_build(const struct jail_syscall_rule *rules, size_t n_rules, bool log,
				scmp_filter_ctx *out);

/* A compiled classic-BPF program, ready for the seccomp syscall. */
struct jail_bpf {
	struct sock_filter *insns; /* malloc'd */
	unsigned short len;
};

/* Compile ctx to BPF in memory. Returns 0 or -errno. Free with jail_bpf_free. */
JAIL_WUR int jail_seccomp_compile(scmp_filter_ctx ctx, struct jail_bpf *out);
void jail_bpf_free(struct jail_bpf *bpf);

/*
 * Install a compiled filter on the calling thread (no allocation, so it is
 * safe in a freshly cloned child). The caller must already have no_new_privs
 * or CAP_SYS_ADMIN. Returns 0 or -errno.
 */
JAIL_WUR int jail_seccomp_install(const struct jail_bpf *bpf);

/* ------------------------------------------------------------------ */
/* Spawning a device process                                           */
/* ------------------------------------------------------------------ */

/* What the device process runs; its return value is the exit status (& 0xff). */
typedef int jail_child_fn(void *arg);

/*
 * Runs in the child after every other step of the jail and before the
 * seccomp filter, i.e. with no capabilities and no filesystem, but with
 * every syscall still available: this is where a device creates its
 * io_uring and registers its restrictions and fixed files. Returns 0 or
 * -errno (reported back by jail_spawn).
 */
typedef int jail_hook_fn(void *arg);

#define JAIL_MAX_KEEP_FDS     64
#define JAIL_DEFAULT_MAX_FDS  64
#define JAIL_DEFAULT_MAX_PROCS 16
#define JAIL_DEFAULT_ID       65534 /* nobody/nogroup */
#define JAIL_RLIM_INFINITY    UINT64_MAX
#define JAIL_STAGE_LEN        28

/*
 * How to build one device process. A zeroed struct plus `sandbox = true` is
 * a complete jail with the base allowlist only.
 */
struct jail_config {
	/* false (ringvm --disable-sandbox): no namespaces, no filter, no fd
	 * closing, no rlimits; only the process shape, the pidfd, the parent-
	 * death signal and pre_seccomp stay. */
	bool sandbox;
	/* ringvm --seccomp-log: unmatched syscalls are logged by the kernel
	 * (audit / dmesg "type=1326") and run, instead of killing. */
	bool seccomp_log;
	/* UTS hostname inside the jail; NULL: "ringvm-jail". At most 64 bytes. */
	const char *hostname;
	/* Descriptors the device keeps (same numbers inside); every other
	 * descriptor is closed. Each must be open at jail_spawn time. */
	const int *keep_fds;
	size_t n_keep_fds;
	/* RLIMIT_NOFILE (0: JAIL_DEFAULT_MAX_FDS). Fds above it stay valid. */
	unsigned max_fds;
	/* RLIMIT_NPROC (0: JAIL_DEFAULT_MAX_PROCS); counts threads and io_uring
	 * io-wq workers of this jail's user. */
	unsigned max_procs;
	/* RLIMIT_FSIZE in bytes. 0 forbids every write() to a regular file
	 * (the kernel checks the write offset, not the growth); a disk device
	 * that writes its image needs JAIL_RLIM_INFINITY. */
	uint64_t max_file_size;
	/* RLIMIT_MEMLOCK in bytes (0 by default), applied after pre_seccomp:
	 * since Linux 6.13 io_uring charges its rings to it, so the ring is
	 * created under the caller's limit; registered buffers made later are
	 * charged against this one. The count is per outside uid, shared by
	 * every jail mapped to the same id. */
	uint64_t max_memlock;
	/* Ids that uid/gid 0 inside the jail map to outside (0: nobody/nogroup,
	 * 65534). Never mapped to real root. */
	uid_t outside_uid;
	gid_t outside_gid;
	/* The device's own allowlist, added to jail_base_rules. */
	const struct jail_syscall_rule *rules;
	size_t n_rules;
	/* See jail_hook_fn; NULL: none. */
	jail_hook_fn *pre_seccomp;
	void *pre_seccomp_arg;
};

/* A spawned process. Owned by the caller; release with jail_child_close. */
struct jail_child {
	pid_t pid;    /* in the caller's PID namespace; -1 if none */
	/* A pidfd, or with `forked` the read end of a pipe whose only writer
	 * is the child: either way pollable, and readable or hung up (POLLIN
	 * or POLLHUP) once the child has exited. -1 once closed. */
	int pidfd;
	/* Made by the fork fallback (no clone3/pidfd_open, e.g. under
	 * valgrind): reaped with waitpid and signalled by pid, which is safe
	 * until it is reaped because nothing else may reap it. */
	bool forked;
	bool reaped;
	int status;   /* wait(2)-style status, valid once reaped */
	/* Sandbox only: true when uid/gid 0 inside map to the configured
	 * unprivileged ids; false when the caller was not allowed to, and they
	 * map to the caller's own ids instead. */
	bool mapped_unprivileged;
	/* When jail_spawn fails inside the child: the step that failed. */
	char failed_stage[JAIL_STAGE_LEN];
	/* Between jail_spawn_start and jail_spawn_finish: the child's status pipe. */
	bool setup_pending;
	int status_fd;
};

/*
 * Create the device process and run fn(arg) in it once the jail is complete.
 *
 * With cfg->sandbox the child is PID 1 of new user, PID, mount, network,
 * IPC, UTS and cgroup namespaces (no intermediate process), uid/gid 0 inside
 * map to cfg->outside_uid/gid, and before fn runs it has: an empty read-only
 * tmpfs as /, only cfg->keep_fds open, rlimits, no capabilities in any set,
 * locked securebits, no_new_privs, no way to create namespaces, and the
 * seccomp filter of jail_seccomp_build(cfg->rules, ...). The order of these
 * steps is explained in jail/README.md.
 *
 * Needs Linux >= 5.4 (clone3 with CLONE_PIDFD, pidfd_open, waitid P_PIDFD).
 * Where those are missing (ENOSYS: valgrind 3.19 implements neither clone3
 * nor pidfd_open), or when the environment has RINGVM_JAIL_FALLBACK=1 (for
 * tests), the fork fallback runs instead: without cfg->sandbox the child is
 * a fork-like clone() watched through a death pipe (out->forked; see
 * jail_death_fd); with cfg->sandbox jail_spawn fails with -ENOSYS and
 * out->failed_stage "clone3" rather than start a weaker jail.
 *
 * In both modes the child gets SIGKILL when the calling thread dies, and
 * jail_spawn returns only once the child has finished its setup: 0 with
 * *out filled (pid, pidfd), or -errno. If the child's setup fails the error
 * is the child's own (out->failed_stage names the step) and the child has
 * been reaped; -ECHILD means it died without saying why.
 *
 * Contract for the caller:
 * - Be single-threaded, or at least have no other thread that may hold a
 *   libc or allocator lock: the child is a raw clone3() copy that does not
 *   run atfork handlers. The child itself allocates nothing before fn.
 * - Call it from a thread that outlives the child: the parent-death signal
 *   is tied to the calling thread, not the process.
 * - Do not set SIGCHLD to SIG_IGN and do not reap with wait(-1): the child
 *   is reaped through its pidfd by jail_child_wait/jail_child_close.
 * - fn runs with the caller's signal dispositions. As PID 1 of its own
 *   namespace, the child ignores signals it has no handler for (except
 *   SIGKILL/SIGSTOP); stop it with jail_child_kill.
 * - fn must return (or _exit); the child never returns from jail_spawn and
 *   exits with _exit, so stdio buffers are not flushed.
 */
JAIL_WUR int jail_spawn(const struct jail_config *cfg, jail_child_fn *fn, void *arg,
			struct jail_child *out);

/*
 * jail_spawn in two halves, so a caller can start several children (or do
 * other work) while each builds its jail. jail_spawn_start returns once the
 * child runs and has been released into its setup (0, or -errno as
 * jail_spawn, the child reaped); jail_spawn_finish then waits for the setup
 * to end, with jail_spawn's results and failure handling. Until then the
 * child holds a descriptor of the caller's (the status pipe); jail_child_close
 * closes it too. cfg need not outlive jail_spawn_start.
 */
JAIL_WUR int jail_spawn_start(const struct jail_config *cfg, jail_child_fn *fn, void *arg,
			      struct jail_child *out);
JAIL_WUR int jail_spawn_finish(struct jail_child *c);

/*
 * In a child made by the fork fallback: the write end of its death pipe,
 * which fn must leave open (the parent takes its hang-up as the child's
 * exit, so closing it early makes the parent reap a live process). -1 in
 * every other process.
 */
int jail_death_fd(void);

/*
 * Wait up to timeout_ms (negative: forever, 0: just check) for the child to
 * exit, and reap it. Returns 0 with *status (wait(2)-style; may be NULL), or
 * -ETIMEDOUT while it still runs, or -errno. Repeated calls after it was
 * reaped return the same status.
 */
JAIL_WUR int jail_child_wait(struct jail_child *c, int *status, int timeout_ms);

/* SIGKILL the child (through its pidfd, or by pid if forked and not yet
 * reaped). 0 if it is (or was) gone, or -errno. */
JAIL_WUR int jail_child_kill(struct jail_child *c);

/*
 * Kill the child if it still runs, reap it, close the pidfd. Leaves no
 * zombie. Safe to call twice, and on the jail_child of a failed jail_spawn
 * (which leaves pidfd -1); not on a merely zeroed struct (pidfd 0).
 */
void jail_child_close(struct jail_child *c);

#endif
