/*
 * ringvm's entry point: subcommand dispatch (run now; stop/pause/status/...
 * over the control socket later), --version and --help.
 */
#include <stdio.h>
#include <string.h>

#include "core/cli.h"
#include "core/vm.h"

#ifndef RINGVM_VERSION
#define RINGVM_VERSION "unknown"
#endif

static void print_help(FILE *f)
{
	fputs("NAME\n"
	      "    ringvm - a KVM virtual machine monitor with sandboxed device processes\n"
	      "\n"
	      "SYNOPSIS\n"
	      "    ringvm run [OPTIONS] KERNEL\n"
	      "    ringvm --version\n"
	      "    ringvm --help | ringvm help [SUBCOMMAND]\n"
	      "\n"
	      "SUBCOMMANDS\n"
	      "    run     boot a virtual machine (see 'ringvm run --help')\n"
	      "    help    show this text, or a subcommand's help\n"
	      "\n"
	      "ringvm needs read-write access to /dev/kvm.\n",
	      f);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "ringvm: missing subcommand (see 'ringvm --help')\n");
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
		printf("ringvm %s\n", RINGVM_VERSION);
		return 0;
	}
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		print_help(stdout);
		return 0;
	}
	if (strcmp(cmd, "help") == 0) {
		if (argc > 2 && strcmp(argv[2], "run") == 0)
			cli_print_run_help(stdout);
		else if (argc > 2) {
			fprintf(stderr, "ringvm help: unknown subcommand '%s'\n", argv[2]);
			return 2;
		} else
			print_help(stdout);
		return 0;
	}
	if (strcmp(cmd, "run") == 0) {
		struct vm_config cfg;
		cli_config_defaults(&cfg);
		int r = cli_parse_run(argc - 1, argv + 1, &cfg);
		if (r == 0)
			r = vm_run(&cfg);
		else if (r == 1)
			r = 0; /* --help */
		cli_config_free(&cfg);
		return r;
	}
	fprintf(stderr, "ringvm: unknown subcommand '%s' (see 'ringvm --help')\n", cmd);
	return 2;
}
