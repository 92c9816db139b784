/*
 * Command-line parsing for `ringvm run`. Options live in tables: core's own
 * and, later, one per device module (each registers its --block/--net/...
 * option next to its factory), listed in one sorted array in cli.c.
 * Bad input yields one line naming the problem and exit status 2.
 */
#ifndef RINGVM_CORE_CLI_H
#define RINGVM_CORE_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "core/vm.h"

/* Handle one occurrence of an option; arg is NULL for flags. 0, or -EINVAL with err filled. */
typedef int cli_handle_fn(struct vm_config *cfg, const char *arg, char *err, size_t errlen);

struct cli_option {
	const char *name;  /* long name without dashes */
	char short_name;   /* 0: none */
	const char *meta;  /* argument name in help; NULL for a flag */
	const char *help;  /* one or more lines, each without trailing newline */
	cli_handle_fn *handle;
};

struct cli_option_table {
	const char *group; /* heading in --help */
	const struct cli_option *opts;
	size_t n;
};

/* Fill cfg with defaults (256 MiB, 1 vCPU, serial on stdout). */
void cli_config_defaults(struct vm_config *cfg);

/* Release what parsing allocated in cfg. */
void cli_config_free(struct vm_config *cfg);

/*
 * Parse `run`'s arguments (argv[0] is "run"). Returns 0 on success, 1 when
 * --help was printed, or 2 after printing one error line to stderr.
 */
int cli_parse_run(int argc, char **argv, struct vm_config *cfg);

/* Print `ringvm run --help` to f. */
void cli_print_run_help(FILE *f);

#endif
