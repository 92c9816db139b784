/*
 * qcow-tool's shared helpers: size parsing, usage errors, the progress bar,
 * running a command body as a task on a local executor; one function per
 * command (cmd_*.c files).
 */
#ifndef RINGVM_TOOLS_QCOW_TOOL_H
#define RINGVM_TOOLS_QCOW_TOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "async/exec.h"
#include "disk/disk.h"
#include "disk/qcow2.h"

/* Print "qcow-tool CMD: <fmt with arg>" and a hint; returns 2 (bad usage). */
int usage_error(const char *cmd, const char *fmt, const char *arg);
/* "10", "512K", "1.." with K/M/G/T (1024-based): 0 or -EINVAL. */
int parse_size(const char *s, uint64_t *out);

/* A progress bar on stderr: shown when stderr is a terminal, or when asked
 * (-p); never otherwise, so scripts' output stays clean. */
struct progress {
	bool tty;
	unsigned last;
};
void progress_init(struct progress *p, bool asked);
void progress(struct progress *p, uint64_t done, uint64_t total);
/* progress() as a qcow2_progress_fn (arg: a struct progress). */
void progress_cb(void *arg, uint64_t done, uint64_t total);

typedef int task_fn(struct exec *ex, void *arg);
/* Run fn(ex, arg) as a task on a fresh executor and return its result. */
int run_task(task_fn *fn, void *arg);

int open_image(struct disk *d, const char *path, bool ro, char *err, size_t errlen);

int cmd_check(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_resize(int argc, char **argv);

#endif
