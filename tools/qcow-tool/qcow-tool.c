/*
 * qcow-tool: create, inspect, check, resize, convert and map qcow2 images
 * with the same disk/ code the VMM runs, on a local io_uring executor. Exit
 * codes follow qemu-img: 0 success, 1 failure, 2 bad usage; check uses
 * 0 clean / 1 not completed / 2 corruption / 3 leaks.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/qcow-tool/qcow-tool.h"

int usage_error(const char *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, "qcow-tool%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	fprintf(stderr, fmt, arg ? arg : "");
	fprintf(stderr, " (try 'qcow-tool %s--help')\n", cmd ? cmd : "");
	return 2;
}

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	unsigned sh = 0;
	switch (*end) {
	case 0: break;
	case 'b': case 'B': end++; break;
	case 'k': case 'K': sh = 10; end++; break;
	case 'm': case 'M': sh = 20; end++; break;
	case 'g': case 'G': sh = 30; end++; break;
	case 't': case 'T': sh = 40; end++; break;
	default: return -EINVAL;
	}
	if (sh && (!strcmp(end, "iB") || !strcmp(end, "B")))
		end += strlen(end);
	if (*end || (sh && v > (UINT64_MAX >> sh)))
		return -EINVAL;
	*out = (uint64_t)v << sh;
	return 0;
}

void progress(struct progress *p, uint64_t done, uint64_t total)
{
	if (!p->tty || !total)
		return;
	unsigned pct = (unsigned)(done * 100 / total);
	if (pct == p->last && done != total)
		return;
	p->last = pct;
	char bar[41];
	unsigned fill = pct * 40 / 100;
	memset(bar, '#', fill);
	memset(bar + fill, '-', 40 - fill);
	bar[40] = 0;
	fprintf(stderr, "\r    (%3u%%) [%s]", pct, bar);
	if (done == total)
		fputc('\n', stderr);
}

void progress_init(struct progress *p, bool asked)
{
	p->tty = asked || isatty(2);
	p->last = 101;
}

void progress_cb(void *arg, uint64_t done, uint64_t total)
{
	progress(arg, done, total);
}

struct task_ctx {
	task_fn *fn;
	void *arg;
};

static int trampoline(struct exec *ex, void *arg)
{
	struct task_ctx *c = arg;
	return c->fn(ex, c->arg);
}

int run_task(task_fn *fn, void *arg)
{
	struct exec *ex;
	int r = exec_create(&ex, NULL);
	if (r < 0) {
		fprintf(stderr, "qcow-tool: cannot create an io_uring executor: %s\n", strerror(-r));
		return r;
	}
	struct task_ctx c = {fn, arg};
	struct exec_task *t;
	r = exec_spawn(ex, trampoline, &c, 1 << 20, &t);
	if (r == 0)
		r = exec_join(ex, t);
	exec_destroy(ex);
	return r;
}

int open_image(struct disk *d, const char *path, bool ro, char *err, size_t errlen)
{
	struct disk_open_params p = {.path = path, .format = DISK_FORMAT_AUTO, .read_only = ro};
	return disk_open(d, &p, err, errlen);
}

static const char main_help[] =
    "Usage: qcow-tool COMMAND [OPTIONS] ARGS...\n"
    "\n"
    "Create, inspect, check, resize, convert and map qcow2 images with the\n"
    "same code ringvm runs. Sizes take the suffixes K, M, G and T (powers of\n"
    "1024). Images are opened with a lock: a running VM's image is refused.\n"
    "\n"
    "Commands:\n"
    "  create   make a new qcow2 image (never overwrites without --force)\n"
    "  info     show an image's format, sizes and features\n"
    "  check    verify (and optionally repair) refcounts and tables\n"
    "  resize   grow or shrink the virtual disk\n"
    "  convert  copy an image to raw or qcow2 (optionally compressed)\n"
    "  map      show which guest ranges are allocated and where\n"
    "\n"
    "Run 'qcow-tool COMMAND --help' for a command's options.\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 bad usage (check: see its help).\n";

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
	    {"check", cmd_check},   {"convert", cmd_convert}, {"create", cmd_create},
	    {"info", cmd_info},     {"map", cmd_map},         {"resize", cmd_resize},
	};
	if (argc < 2)
		return usage_error(NULL, "missing command%s", "");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(main_help, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		puts("qcow-tool (ringvm) 0.1.0");
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	return usage_error(NULL, "unknown command '%s'", argv[1]);
}
