/*
 * End-to-end harness: child process runner with piped stdio and a deadline,
 * the probe guest's line-protocol parser and the QEMU command line builder.
 * See harness.h for each function's contract.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"

#define OUTPUT_CAP  (64u << 20)
#define DRAIN_GRACE 2.0 /* seconds to read what is left once the child has exited */

/* ---- argv builder ---- */

void harness_argv_init(struct harness_argv *a)
{
	a->argc = 0;
	a->argv[0] = NULL;
	a->used = 0;
	a->overflow = false;
}

static void argv_push(struct harness_argv *a, const char *s, size_t n)
{
	if (a->argc >= HARNESS_MAX_ARGS || a->used + n + 1 > sizeof(a->strbuf)) {
		a->overflow = true;
		return;
	}
	char *dst = a->strbuf + a->used;
	memcpy(dst, s, n);
	dst[n] = '\0';
	a->used += n + 1;
	a->argv[a->argc++] = dst;
	a->argv[a->argc] = NULL;
}

void harness_argv_add(struct harness_argv *a, const char *fmt, ...)
{
	char tmp[HARNESS_ARGV_STRBUF];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		a->overflow = true;
		return;
	}
	argv_push(a, tmp, (size_t)n);
}

void harness_argv_addv(struct harness_argv *a, const char *const *list)
{
	for (; list && *list; list++)
		argv_push(a, *list, strlen(*list));
}

const char *harness_argv_str(const struct harness_argv *a, char *buf, size_t len)
{
	size_t off = 0;
	if (len == 0)
		return buf;
	buf[0] = '\0';
	for (int i = 0; i < a->argc && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? " " : "", a->argv[i]);
		if (n < 0)
			break;
		off += (size_t)n;
	}
	return buf;
}

/* ---- running a command ---- */

struct obuf {
	char *p;
	size_t len, cap;
};

static int obuf_reserve(struct obuf *b, size_t more)
{
	if (b->len + more + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Reads what fd has; returns 1 on EOF or error (fd done), else 0. */
static int drain_fd(int fd, struct obuf *b)
{
	char tmp[65536];
	for (;;) {
		ssize_t n = read(fd, tmp, sizeof(tmp));
		if (n == 0)
			return 1;
		if (n < 0)
			return (errno == EAGAIN || errno == EINTR) ? 0 : 1;
		size_t keep = (size_t)n;
		if (b->len + keep > OUTPUT_CAP)
			keep = b->len < OUTPUT_CAP ? OUTPUT_CAP - b->len : 0;
		if (keep && obuf_reserve(b, keep) == 0) {
			memcpy(b->p + b->len, tmp, keep);
			b->len += keep;
			b->p[b->len] = '\0';
		}
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

static __attribute__((noreturn)) void child_exec(const struct harness_argv *a, int in, int out,
                                                 int err)
{
	setpgid(0, 0);
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(127);
	/* The parent ignores SIGPIPE; an ignored disposition would survive exec. */
	signal(SIGPIPE, SIG_DFL);
	/* Criterion's own pipes must not leak into the VMM (they would hold the runner open). */
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	harness_execv(a);
	dprintf(2, "harness: exec %s: %s\n", a->argv[0], strerror(errno));
	_exit(127);
}

/* ---- valgrind ---- */

bool harness_valgrind(void)
{
	const char *v = getenv("RINGVM_VALGRIND");
	return v && *v && strcmp(v, "0") != 0;
}

static bool runs_ringvm(const struct harness_argv *a)
{
	const char *base = strrchr(a->argv[0], '/');
	base = base ? base + 1 : a->argv[0];
	return strcmp(base, "ringvm") == 0;
}

double harness_timeout_scale(void)
{
	if (!harness_valgrind())
		return 1;
	const char *v = getenv("RINGVM_VALGRIND_SCALE");
	double s = v ? strtod(v, NULL) : 0;
	return s >= 1 && s <= 100 ? s : 5;
}

/* Whether a is a `ringvm run` without --disable-sandbox anywhere in it. */
static bool wants_sandbox(const struct harness_argv *a)
{
	if (a->argc < 2 || strcmp(a->argv[1], "run") != 0)
		return false;
	for (int i = 2; i < a->argc; i++)
		if (strcmp(a->argv[i], "--disable-sandbox") == 0)
			return false;
	return true;
}

bool harness_no_sandbox(void)
{
	const char *v = getenv("RINGVM_TEST_NO_SANDBOX");
	return harness_valgrind() || (v && *v && strcmp(v, "0") != 0);
}

/* Append a's argv to v from n on, with --disable-sandbox added to a
 * `ringvm run` that lacks it, then the NULL; execvp v. v has room for
 * n + a->argc + 2 entries. */
static void exec_unsandboxed_at(char **v, int n, const struct harness_argv *a)
{
	bool unjail = wants_sandbox(a);
	for (int i = 0; i < a->argc; i++) {
		v[n++] = a->argv[i];
		if (i == 1 && unjail)
			v[n++] = "--disable-sandbox";
	}
	v[n] = NULL;
	execvp(v[0], v);
}

void harness_execv(const struct harness_argv *a)
{
	if (!runs_ringvm(a)) {
		execvp(a->argv[0], a->argv);
		return;
	}
	if (!harness_valgrind()) {
		if (harness_no_sandbox()) {
			char *v[HARNESS_MAX_ARGS + 2];
			exec_unsandboxed_at(v, 0, a);
		} else
			execvp(a->argv[0], a->argv);
		return;
	}
	/* Room for the fixed options, up to 16 words of RINGVM_VALGRIND_OPTS,
	 * --disable-sandbox and a's argv. */
	char *v[8 + 16 + 1 + HARNESS_MAX_ARGS + 1], opts[1024];
	int n = 0;
	v[n++] = "valgrind";
	v[n++] = "--error-exitcode=99";
	v[n++] = "--leak-check=full";
	v[n++] = "--errors-for-leak-kinds=definite,indirect";
	v[n++] = "--trace-children=no";
	v[n++] = "--suppressions=" SOURCE_PATH("tests/valgrind.supp");
	snprintf(opts, sizeof(opts), "%s", getenv("RINGVM_VALGRIND_OPTS") ?: "");
	for (char *save = NULL, *w = strtok_r(opts, " ", &save); w && n < 8 + 16;
	     w = strtok_r(NULL, " ", &save))
		v[n++] = w;
	/* valgrind has no clone3, pidfd_open or seccomp(2): device processes
	 * can only start unsandboxed, through the jail's fork fallback (forced,
	 * so that valgrind does not warn about the probing syscalls). */
	setenv("RINGVM_JAIL_FALLBACK", "1", 1);
	exec_unsandboxed_at(v, n, a);
}

int harness_run(const struct harness_argv *argv, const struct harness_opts *opts,
                struct harness_result *r)
{
	static const struct harness_opts no_opts;
	int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
	struct obuf out = {0}, err = {0};
	int ret;

	memset(r, 0, sizeof(*r));
	if (!opts)
		opts = &no_opts;
	if (argv->overflow || argv->argc < 1)
		return -E2BIG;
	if (obuf_reserve(&out, 0) < 0 || obuf_reserve(&err, 0) < 0) {
		ret = -ENOMEM;
		goto free_bufs;
	}
	out.p[0] = err.p[0] = '\0';
	if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) {
		ret = -errno;
		goto close_pipes;
	}
	struct sigaction ign = {.sa_handler = SIG_IGN};
	sigaction(SIGPIPE, &ign, NULL);

	double t0 = now_s();
	pid_t pid = fork();
	if (pid < 0) {
		ret = -errno;
		goto close_pipes;
	}
	if (pid == 0)
		child_exec(argv, pin[0], pout[1], perr[1]);
	setpgid(pid, pid); /* also in the child: whichever runs first wins the race */
	close_fd(&pin[0]);
	close_fd(&pout[1]);
	close_fd(&perr[1]);
	fcntl(pin[1], F_SETFL, O_NONBLOCK);
	fcntl(pout[0], F_SETFL, O_NONBLOCK);
	fcntl(perr[0], F_SETFL, O_NONBLOCK);

	const char *in_data = opts->stdin_data;
	size_t in_len = in_data ? (opts->stdin_len ? opts->stdin_len : strlen(in_data)) : 0;
	size_t in_off = 0;
	if (!in_data && !opts->keep_stdin_open)
		close_fd(&pin[1]);

	bool reaped = false;
	int status = 0;
	double scale = runs_ringvm(argv) ? harness_timeout_scale() : 1;
	double deadline = opts->timeout_s > 0 ? t0 + opts->timeout_s * scale : 0;
	double drain_until = 0;

	while (pout[0] >= 0 || perr[0] >= 0 || !reaped) {
		double now = now_s();
		if (!reaped) {
			/* Notice the exit without reaping: the zombie keeps the pgid from being
			 * reused. */
			siginfo_t si = {0};
			if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
			    si.si_pid == pid) {
				r->elapsed_s = now - t0;
				kill(-pid, SIGKILL);
				waitpid(pid, &status, 0);
				reaped = true;
				drain_until = now + DRAIN_GRACE;
			} else if (deadline && now >= deadline) {
				r->timed_out = true;
				r->elapsed_s = now - t0;
				kill(-pid, SIGKILL);
				waitpid(pid, &status, 0);
				reaped = true;
				drain_until = now + DRAIN_GRACE;
			}
		}
		if (reaped && now >= drain_until)
			break;

		bool may_write =
		    pin[1] >= 0 && in_off < in_len &&
		    (!opts->stdin_after || (out.len && strstr(out.p, opts->stdin_after)));
		struct pollfd pfd[3] = {
		    {.fd = pout[0], .events = POLLIN},
		    {.fd = perr[0], .events = POLLIN},
		    {.fd = may_write ? pin[1] : -1, .events = POLLOUT},
		};
		poll(pfd, 3, 20);
		if (pfd[0].revents && drain_fd(pout[0], &out))
			close_fd(&pout[0]);
		if (pfd[1].revents && drain_fd(perr[0], &err))
			close_fd(&perr[0]);
		if (pfd[2].revents & (POLLERR | POLLHUP)) {
			close_fd(&pin[1]);
		} else if (pfd[2].revents & POLLOUT) {
			ssize_t n = write(pin[1], in_data + in_off, in_len - in_off);
			if (n > 0)
				in_off += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				close_fd(&pin[1]);
			if (in_off == in_len && !opts->keep_stdin_open)
				close_fd(&pin[1]);
		}
	}

	if (WIFEXITED(status)) {
		r->exited = true;
		r->exit_code = WEXITSTATUS(status);
	} else if (WIFSIGNALED(status)) {
		r->term_signal = WTERMSIG(status);
	}
	r->out = out.p;
	r->out_len = out.len;
	r->err = err.p;
	r->err_len = err.len;
	out.p = err.p = NULL;
	ret = 0;

close_pipes:
	for (int i = 0; i < 2; i++) {
		close_fd(&pin[i]);
		close_fd(&pout[i]);
		close_fd(&perr[i]);
	}
free_bufs:
	free(out.p);
	free(err.p);
	return ret;
}

void harness_result_free(struct harness_result *r)
{
	free(r->out);
	free(r->err);
	memset(r, 0, sizeof(*r));
}

const char *harness_result_str(const struct harness_result *r, char *buf, size_t len)
{
	if (r->exited)
		snprintf(buf, len, "exit %d after %.3f s", r->exit_code, r->elapsed_s);
	else
		snprintf(buf, len, "killed by signal %d%s after %.3f s", r->term_signal,
		         r->timed_out ? " (timeout)" : "", r->elapsed_s);
	return buf;
}

/* ---- the probe output protocol ---- */

static bool eol(char c)
{
	return c == '\n' || c == '\r' || c == '\0';
}

/* Does the line at l start with word (followed by a space or the line end)? */
static bool starts_word(const char *l, const char *word)
{
	size_t n = strlen(word);
	return strncmp(l, word, n) == 0 && (l[n] == ' ' || eol(l[n]));
}

static const char *next_line(const char *l)
{
	const char *nl = strchr(l, '\n');
	return nl ? nl + 1 : NULL;
}

const char *probe_line(const char *out, const char *test, unsigned n)
{
	size_t tl = strlen(test);
	for (const char *l = out; l && *l; l = next_line(l)) {
		if (strncmp(l, "PROBE ", 6) || strncmp(l + 6, test, tl))
			continue;
		if (l[6 + tl] != ' ' && !eol(l[6 + tl]))
			continue;
		if (n-- == 0)
			return l;
	}
	return NULL;
}

unsigned probe_count(const char *out, const char *test)
{
	unsigned n = 0;
	while (probe_line(out, test, n))
		n++;
	return n;
}

const char *probe_line_with(const char *out, const char *test, const char *key, const char *value)
{
	char buf[1024];
	const char *l;
	for (unsigned i = 0; (l = probe_line(out, test, i)); i++)
		if (probe_get(l, key, buf, sizeof(buf)) && strcmp(buf, value) == 0)
			return l;
	return NULL;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Parses the value starting at p (quoted or bare) into buf when buf is non-NULL.
 * Returns the position after the value; *ok is false if it did not fit.
 */
static const char *parse_value(const char *p, char *buf, size_t len, bool *ok)
{
	size_t n = 0;
	*ok = true;
#define PUT(c)                                                                                     \
	do {                                                                                       \
		if (buf) {                                                                         \
			if (n + 1 < len)                                                           \
				buf[n++] = (c);                                                    \
			else                                                                       \
				*ok = false;                                                       \
		}                                                                                  \
	} while (0)
	if (*p == '"') {
		p++;
		while (!eol(*p) && *p != '"') {
			if (*p == '\\' && p[1] == 'x' && hexval(p[2]) >= 0 && hexval(p[3]) >= 0) {
				PUT((char)(hexval(p[2]) * 16 + hexval(p[3])));
				p += 4;
			} else if (*p == '\\' && !eol(p[1])) {
				PUT(p[1]);
				p += 2;
			} else {
				PUT(*p);
				p++;
			}
		}
		if (*p == '"')
			p++;
	} else {
		while (!eol(*p) && *p != ' ') {
			PUT(*p);
			p++;
		}
	}
#undef PUT
	if (buf && len)
		buf[n < len ? n : len - 1] = '\0';
	if (buf && !len)
		*ok = false;
	return p;
}

bool probe_get(const char *line, const char *key, char *buf, size_t len)
{
	size_t kl = strlen(key);
	const char *p = line;
	while (!eol(*p)) {
		while (*p == ' ')
			p++;
		const char *tok = p;
		while (!eol(*p) && *p != ' ' && *p != '=')
			p++;
		if (*p != '=')
			continue; /* a bare word such as "PROBE" or the test name */
		bool match = (size_t)(p - tok) == kl && strncmp(tok, key, kl) == 0;
		bool ok;
		p = parse_value(p + 1, match ? buf : NULL, len, &ok);
		if (match)
			return ok;
	}
	return false;
}

bool probe_get_u64(const char *line, const char *key, uint64_t *v)
{
	char buf[64], *end;
	if (!probe_get(line, key, buf, sizeof(buf)) || !buf[0] || buf[0] == '-')
		return false;
	errno = 0;
	unsigned long long x = strtoull(buf, &end, 0);
	if (errno || *end)
		return false;
	*v = x;
	return true;
}

const char *probe_end_line(const char *out)
{
	for (const char *l = out; l && *l; l = next_line(l))
		if (starts_word(l, "PROBE-END"))
			return l;
	return NULL;
}

bool probe_end_ok(const char *out)
{
	const char *l = probe_end_line(out);
	if (!l)
		return false;
	const char *nl = next_line(l);
	if (nl && probe_end_line(nl))
		return false; /* more than one: the guest ran twice (unexpected reboot) */
	char status[16];
	return probe_get(l, "status", status, sizeof(status)) && strcmp(status, "ok") == 0;
}

/* ---- the probe guest and QEMU ---- */

const char *harness_probe_path(void)
{
	return BUILD_PATH("tests/guest/probe.elf");
}

bool harness_probe_exists(void)
{
	return access(harness_probe_path(), R_OK) == 0;
}

void harness_qemu_probe_argv(struct harness_argv *a, const struct harness_qemu_cfg *cfg)
{
	harness_argv_init(a);
	harness_argv_add(a, "qemu-system-x86_64");
	harness_argv_add(a, "-enable-kvm");
	/* arch-capabilities: QEMU 7.2 aborts on MSR 0x10a with plain -cpu host on these hosts. */
	harness_argv_add(a, "-cpu");
	harness_argv_add(a, "host,-arch-capabilities");
	harness_argv_add(a, "-M");
	harness_argv_add(a, "pc");
	harness_argv_add(a, "-m");
	harness_argv_add(a, "%u", cfg->mem_mib ? cfg->mem_mib : 256);
	harness_argv_add(a, "-smp");
	harness_argv_add(a, "%u", cfg->cpus ? cfg->cpus : 1);
	harness_argv_add(a, "-nodefaults");
	harness_argv_add(a, "-no-reboot");
	harness_argv_add(a, "-display");
	harness_argv_add(a, "none");
	harness_argv_add(a, "-serial");
	harness_argv_add(a, "stdio");
	/* qboot boots a PVH ELF from fw_cfg itself, ~18x faster than SeaBIOS here. */
	harness_argv_add(a, "-bios");
	harness_argv_add(a, "/usr/share/qemu/qboot.rom");
	harness_argv_add(a, "-kernel");
	harness_argv_add(a, "%s", cfg->kernel ? cfg->kernel : harness_probe_path());
	if (cfg->params) {
		harness_argv_add(a, "-append");
		harness_argv_add(a, "%s", cfg->params);
	}
	harness_argv_addv(a, cfg->extra);
}

bool harness_ringvm_has_option(const char *opt)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 10};
	struct harness_result r;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM_BUILD_DIR "/core/ringvm");
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "--help");
	if (harness_run(&a, &o, &r) != 0)
		return false;
	bool found = r.out && strstr(r.out, opt) != NULL;
	harness_result_free(&r);
	return found;
}
