/*
 * End-to-end harness: runs a VMM (ringvm, QEMU, anything) as a child process
 * with piped stdio and a deadline, and parses the probe guest's output
 * protocol (tests/guest/README.md): `PROBE <test> key=value ...` lines and
 * one final `PROBE-END status=ok|fail [reason=<word>]`. Also builds the QEMU
 * command line that boots the probe. Nothing here is QEMU- or ringvm-specific
 * except harness_qemu_probe_argv().
 */
#ifndef RINGVM_TESTS_E2E_HARNESS_H
#define RINGVM_TESTS_E2E_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- argv builder ---- */

#define HARNESS_MAX_ARGS    64
#define HARNESS_ARGV_STRBUF 8192

/* A NUL-terminated argv whose strings live inside the struct (no allocation). */
struct harness_argv {
	int argc;
	char *argv[HARNESS_MAX_ARGS + 1]; /* argv[argc] == NULL */
	size_t used;
	bool overflow; /* set when an add did not fit; harness_run() then refuses to run */
	char strbuf[HARNESS_ARGV_STRBUF];
};

/* Empties a. */
void harness_argv_init(struct harness_argv *a);
/*
 * Appends one argument, printf-formatted. On overflow the argument is dropped
 * and a->overflow set (checked by harness_run, so callers need not check).
 */
void harness_argv_add(struct harness_argv *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends each NULL-terminated string of list verbatim. */
void harness_argv_addv(struct harness_argv *a, const char *const *list);
/* The argv joined with spaces into buf (for failure messages); returns buf. */
const char *harness_argv_str(const struct harness_argv *a, char *buf, size_t len);

/* ---- running a command ---- */

struct harness_opts {
	double timeout_s;       /* > 0: SIGKILL the child's process group on expiry */
	const char *stdin_data; /* NULL: stdin gets EOF at once */
	size_t stdin_len;       /* 0 with stdin_data set: strlen(stdin_data) */
	/*
	 * Non-NULL: hold stdin_data back until this string appears in stdout
	 * (e.g. "PROBE echo ready"), for VMMs that drop input the guest is
	 * not yet reading.
	 */
	const char *stdin_after;
	bool keep_stdin_open; /* do not close stdin once the data is written */
};

struct harness_result {
	char *out; /* stdout, NUL-terminated (never NULL after a run) */
	size_t out_len;
	char *err; /* stderr, NUL-terminated (never NULL after a run) */
	size_t err_len;
	bool exited; /* exited normally: exit_code is valid */
	int exit_code;
	int term_signal;  /* killing signal when !exited, else 0 */
	bool timed_out;   /* the deadline passed and the group was killed */
	double elapsed_s; /* fork to reap, monotonic clock */
};

/*
 * Runs argv[0] (PATH searched) with argv, stdin/stdout/stderr on pipes, in a
 * new process group, and waits for it. The child's process group is killed
 * with SIGKILL when the deadline passes, and also once the child has exited
 * (so no grandchild outlives the run). Output is capped at 64 MiB per stream.
 * Returns 0 with *r filled (free it with harness_result_free), or -errno if
 * the child could not be started (pipes, fork, argv overflow); an exec
 * failure shows as exit code 127 with the reason on stderr.
 * Side effect: SIGPIPE is ignored in the calling process from then on (a VMM
 * dying before it read its stdin must not kill the test); the child gets the
 * default disposition back, and no file descriptor but its stdio.
 */
int harness_run(const struct harness_argv *argv, const struct harness_opts *opts,
                struct harness_result *r) __attribute__((warn_unused_result));
void harness_result_free(struct harness_result *r);
/* A one-line summary of how the run ended ("exit 0 after 0.12 s", "killed by signal 9 (timeout)").
 */
const char *harness_result_str(const struct harness_result *r, char *buf, size_t len);

/*
 * Replaces the calling process with a's command, as execvp does (returns
 * only on failure, errno set). With RINGVM_VALGRIND set (and not "0") a
 * ringvm command runs under valgrind's memcheck instead: exit status 99 on
 * any error or definite/indirect leak, tests/valgrind.supp applied, extra
 * options from RINGVM_VALGRIND_OPTS (space-separated). valgrind 3.19
 * implements neither seccomp(2), clone3 nor pidfd_open, so a `ringvm run`
 * gets --disable-sandbox (if it lacks it) and RINGVM_JAIL_FALLBACK=1: its
 * device processes start through the jail's fork fallback, as forks that
 * stay under valgrind (docs/security.md, "Sanitizers and valgrind").
 */
void harness_execv(const struct harness_argv *a);
/* Whether RINGVM_VALGRIND asks for ringvm to run under valgrind. */
bool harness_valgrind(void);
/*
 * Whether every `ringvm run` gets --disable-sandbox: under valgrind, or with
 * RINGVM_TEST_NO_SANDBOX set (and not "0"; e.g. with RINGVM_JAIL_FALLBACK=1
 * to run the lifecycle tests through the jail's fork fallback).
 */
bool harness_no_sandbox(void);
/*
 * How much longer ringvm takes here: 1, or under valgrind
 * RINGVM_VALGRIND_SCALE (1..100, default 5). harness_run multiplies a
 * ringvm command's timeout_s by it; tests scale their own waits with it.
 */
double harness_timeout_scale(void);

/* ---- the probe output protocol ---- */

/*
 * The n-th (0-based) line of out that is `PROBE <test>` followed by a space
 * or the line end — "PROBE pci" does not match "PROBE pci.x" — or NULL.
 * The returned pointer is into out; the line ends at '\n', '\r' or '\0'.
 */
const char *probe_line(const char *out, const char *test, unsigned n);
/* The first `PROBE <test>` line whose key has exactly value (unquoted), or NULL. */
const char *probe_line_with(const char *out, const char *test, const char *key, const char *value);
/* How many `PROBE <test>` lines out holds. */
unsigned probe_count(const char *out, const char *test);
/*
 * Copies the value of key=... in line (only that line; no key prefix match)
 * into buf, NUL-terminated, unquoting "..." values (\" \\ \xNN). Returns
 * false if the key is absent or the value does not fit in len.
 */
bool probe_get(const char *line, const char *key, char *buf, size_t len);
/* Numeric value (decimal or 0x hex) of key in line; false if absent or not a whole number. */
bool probe_get_u64(const char *line, const char *key, uint64_t *v);
/* The PROBE-END line, or NULL when the guest never printed one. */
const char *probe_end_line(const char *out);
/* True when there is exactly one PROBE-END line and it says status=ok. */
bool probe_end_ok(const char *out);

/* ---- ringvm ---- */

/*
 * True when `ringvm run --help` (the build's own binary) lists opt. Every
 * device option is registered there, so tests use this to check the option
 * exists; with REQUIRE_FACILITY a missing one fails under CI=true instead of
 * skipping quietly.
 */
bool harness_ringvm_has_option(const char *opt);

/* ---- the probe guest and QEMU ---- */

/* Absolute path of the built probe guest (BUILD_PATH("tests/guest/probe.elf")). */
const char *harness_probe_path(void);
bool harness_probe_exists(void);

struct harness_qemu_cfg {
	unsigned mem_mib;         /* 0: 256 */
	unsigned cpus;            /* 0: 1 */
	const char *params;       /* the -append string, e.g. "probe=hello"; NULL: none */
	const char *kernel;       /* NULL: the probe guest */
	const char *const *extra; /* NULL-terminated extra arguments, or NULL */
};

/*
 * The QEMU command line that boots cfg->kernel (a PVH ELF) with qboot:
 * qemu-system-x86_64 -enable-kvm -cpu host,-arch-capabilities -M pc -m MIB
 * -smp N -nodefaults -no-reboot -display none -serial stdio
 * -bios /usr/share/qemu/qboot.rom -kernel K [-append P] [extra...].
 * The guest's COM1 is QEMU's stdin/stdout; a guest reset or triple fault
 * makes QEMU exit with status 0 (-no-reboot).
 */
void harness_qemu_probe_argv(struct harness_argv *a, const struct harness_qemu_cfg *cfg);

#endif
