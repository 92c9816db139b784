/*
 * qcow-tool's shared helpers (qcow-tool.h): usage errors, size parsing, the
 * progress bar, running a command body as a task on a fresh executor, and
 * opening an image. Apart from main() so the fuzz targets can link the
 * commands without it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
