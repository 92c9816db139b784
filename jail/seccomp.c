/*
 * The seccomp half of the jail: the base allowlist every device process
 * gets, the syscalls no device may allow, building a libseccomp filter from
 * base + device rules, compiling it to BPF in the parent (libseccomp
 * allocates) and installing the BPF in the child (a bare syscall).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/seccomp.h>

#include "jail/jail.h"

#define ALLOW(n) {.nr = __NR_##n}
#define FAIL(n, e) {.nr = __NR_##n, .errno_ret = (e)}
/* PROT_EXEC clear in argument a: a device can map data, never code. */
#define NO_EXEC(n, a)                                                                    \
	{.nr = __NR_##n,                                                                 \
	 .n_conds = 1,                                                                   \
	 .conds = {{.arg = (a), .op = JAIL_CMP_MASKED_EQ, .mask = PROT_EXEC, .value = 0}}}

const struct jail_syscall_rule jail_base_rules[] = {
	ALLOW(brk),
	ALLOW(clock_gettime), /* the vDSO falls back to it */
	ALLOW(clock_nanosleep),
	ALLOW(close),
	ALLOW(exit),
	ALLOW(exit_group),
	ALLOW(futex),
	ALLOW(getpid),
	ALLOW(getrandom),
	ALLOW(gettid),
	ALLOW(io_uring_enter),
	ALLOW(madvise),
	NO_EXEC(mmap, 2),
	NO_EXEC(mprotect, 2),
	ALLOW(mremap), /* keeps the protection of the mapping it moves */
	ALLOW(munmap),
	ALLOW(nanosleep),
#ifdef __NR_open
	FAIL(open, ENOENT),
#endif
	FAIL(openat, ENOENT),
	FAIL(openat2, ENOENT),
#ifdef __NR_poll
	ALLOW(poll),
#endif
	ALLOW(ppoll),
	/* Thread names only; every other prctl could loosen the jail. The
	 * option is an int, so compare the low 32 bits only. */
	{.nr = __NR_prctl,
	 .n_conds = 1,
	 .conds = {{.arg = 0, .op = JAIL_CMP_MASKED_EQ, .mask = 0xffffffffu, .value = PR_SET_NAME}}},
	ALLOW(read),
	ALLOW(readv),
	ALLOW(recvmsg),
	ALLOW(restart_syscall),
	ALLOW(rt_sigprocmask),
	ALLOW(rt_sigreturn),
	ALLOW(sched_yield),
	ALLOW(sendmsg),
	/* Sanitizer runtimes (the ASan build runs the same filter) and some
	 * language runtimes set and clear an alternate signal stack per thread,
	 * including on _exit. It only points signal delivery at our own memory. */
	ALLOW(sigaltstack),
	ALLOW(write),
	ALLOW(writev),
};
const size_t jail_base_rules_len = sizeof(jail_base_rules) / sizeof(jail_base_rules[0]);

const int jail_never_allowed[] = {
	__NR_add_key,
	__NR_bpf,
	__NR_chroot,
	__NR_delete_module,
	__NR_execve,
	__NR_execveat,
	__NR_finit_module,
	__NR_fsconfig,
	__NR_fsmount,
	__NR_fsopen,
	__NR_fspick,
	__NR_init_module,
	__NR_io_uring_register, /* a compromised device could widen its ring */
	__NR_io_uring_setup,    /* a new ring would have no restrictions */
	__NR_kexec_file_load,
	__NR_kexec_load,
	__NR_keyctl,
	__NR_mmap,     /* the base rule already allows it without PROT_EXEC */
	__NR_mount,
	__NR_mount_setattr,
	__NR_move_mount,
	__NR_mprotect, /* as mmap */
#ifdef __NR_open
	__NR_open,     /* the base rule makes it ENOENT */
#endif
	__NR_open_tree,
	__NR_openat,
	__NR_openat2,
	__NR_perf_event_open,
	__NR_personality, /* READ_IMPLIES_EXEC would bypass the PROT_EXEC rule */
	__NR_pivot_root,
	__NR_pkey_mprotect,
	__NR_process_vm_readv,
	__NR_process_vm_writev,
	__NR_ptrace,
	__NR_request_key,
	__NR_setns,
	__NR_umount2,
	__NR_unshare,
	__NR_userfaultfd,
};
const size_t jail_never_allowed_len = sizeof(jail_never_allowed) / sizeof(jail_never_allowed[0]);

bool jail_syscall_never_allowed(int nr)
{
	for (size_t i = 0; i < jail_never_allowed_len; i++)
		if (jail_never_allowed[i] == nr)
			return true;
	return false;
}

static int to_scmp_op(enum jail_cmp op, enum scmp_compare *out)
{
	switch (op) {
	case JAIL_CMP_EQ: *out = SCMP_CMP_EQ; return 0;
	case JAIL_CMP_NE: *out = SCMP_CMP_NE; return 0;
	case JAIL_CMP_LT: *out = SCMP_CMP_LT; return 0;
	case JAIL_CMP_LE: *out = SCMP_CMP_LE; return 0;
	case JAIL_CMP_GT: *out = SCMP_CMP_GT; return 0;
	case JAIL_CMP_GE: *out = SCMP_CMP_GE; return 0;
	case JAIL_CMP_MASKED_EQ: *out = SCMP_CMP_MASKED_EQ; return 0;
	}
	return -EINVAL;
}

static int add_rule(scmp_filter_ctx ctx, const struct jail_syscall_rule *r, bool from_device)
{
	struct scmp_arg_cmp cmp[JAIL_MAX_ARG_CONDS];

	if (r->nr < 0 || r->n_conds > JAIL_MAX_ARG_CONDS || r->errno_ret < 0 ||
	    r->errno_ret > 4095)
		return -EINVAL;
	if (from_device && r->errno_ret == 0 && jail_syscall_never_allowed(r->nr))
		return -EPERM;
	for (unsigned i = 0; i < r->n_conds; i++) {
		const struct jail_arg_cond *c = &r->conds[i];
		enum scmp_compare op;
		if (c->arg > 5 || to_scmp_op(c->op, &op) < 0)
			return -EINVAL;
		cmp[i].arg = c->arg;
		cmp[i].op = op;
		/* libseccomp's MASKED_EQ takes the mask first, then the value. */
		cmp[i].datum_a = op == SCMP_CMP_MASKED_EQ ? c->mask : c->value;
		cmp[i].datum_b = op == SCMP_CMP_MASKED_EQ ? c->value : 0;
	}
	uint32_t action = r->errno_ret ? SCMP_ACT_ERRNO((uint32_t)r->errno_ret) : SCMP_ACT_ALLOW;
	/* The _exact variant: libseccomp must not silently rewrite a rule it
	 * cannot express on this architecture. */
	return seccomp_rule_add_exact_array(ctx, action, r->nr, r->n_conds, cmp);
}

int jail_seccomp_build(const struct jail_syscall_rule *rules, size_t n_rules, bool log,
		       scmp_filter_ctx *out)
{
	int ret;

	if (!out || (n_rules && !rules))
		return -EINVAL;
	scmp_filter_ctx ctx = seccomp_init(log ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS);
	if (!ctx)
		return -ENOMEM;
	/* A call made through another ABI (int 0x80, x32) is never what a
	 * device meant: kill even in log mode, the allowlist cannot cover it. */
	ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (ret < 0)
		goto err_release;
	for (size_t i = 0; i < jail_base_rules_len; i++) {
		ret = add_rule(ctx, &jail_base_rules[i], false);
		if (ret < 0)
			goto err_release;
	}
	for (size_t i = 0; i < n_rules; i++) {
		ret = add_rule(ctx, &rules[i], true);
		if (ret < 0)
			goto err_release;
	}
	*out = ctx;
	return 0;

err_release:
	seccomp_release(ctx);
	return ret;
}

int jail_seccomp_compile(scmp_filter_ctx ctx, struct jail_bpf *out)
{
	struct stat st;
	int ret;

	if (!ctx || !out)
		return -EINVAL;
	/* libseccomp 2.5 only exports BPF to a file descriptor. */
	int fd = memfd_create("jail-bpf", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = seccomp_export_bpf(ctx, fd);
	if (ret < 0)
		goto err_close;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto err_close;
	}
	size_t n = (size_t)st.st_size / sizeof(struct sock_filter);
	if (n == 0 || n > BPF_MAXINSNS || (size_t)st.st_size % sizeof(struct sock_filter)) {
		ret = -E2BIG;
		goto err_close;
	}
	struct sock_filter *insns = malloc((size_t)st.st_size);
	if (!insns) {
		ret = -ENOMEM;
		goto err_close;
	}
	ssize_t got = pread(fd, insns, (size_t)st.st_size, 0);
	if (got != st.st_size) {
		ret = got < 0 ? -errno : -EIO;
		goto err_free;
	}
	close(fd);
	out->insns = insns;
	out->len = (unsigned short)n;
	return 0;

err_free:
	free(insns);
err_close:
	close(fd);
	return ret;
}

void jail_bpf_free(struct jail_bpf *bpf)
{
	if (!bpf)
		return;
	free(bpf->insns);
	bpf->insns = NULL;
	bpf->len = 0;
}

int jail_seccomp_install(const struct jail_bpf *bpf)
{
	struct sock_fprog prog = {.len = bpf->len, .filter = bpf->insns};
	if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return -errno;
	return 0;
}
