/*
 * ringvm's entry point: subcommand dispatch (run; stop, pause, resume,
 * status, metrics and disk over the control socket), --version and --help.
 */
#include <stdio.h>
#include <string.h>

#include "core/cli.h"
#include "core/control_client.h"
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
	      "    ringvm stop|pause|resume|status|metrics [--json] SOCKET\n"
	      "    ringvm disk resize [--json] ID SIZE SOCKET\n"
	      "    ringvm --version\n"
	      "    ringvm --help | ringvm help [SUBCOMMAND]\n"
	      "\n"
	      "SUBCOMMANDS\n"
	      "    run      boot a virtual machine (see 'ringvm run --help')\n"
	      "    stop     stop a running VM in order and wait until it is gone\n"
	      "    pause    stop every vCPU of a running VM\n"
	      "    resume   let a paused VM run again\n"
	      "    status   show a VM's state, vCPUs, memory and device processes\n"
	      "    metrics  show a VM's per-device counters and memory use\n"
	      "    disk     'disk resize ID SIZE SOCKET': change a block device's size\n"
	      "    help     show this text, or a subcommand's help\n"
	      "\n"
	      "    The control subcommands talk to the socket a VM started with\n"
	      "    'ringvm run -s PATH' serves (protocol: docs/control.md); each has\n"
	      "    its own --help.\n"
	      "\n"
	      "ringvm run needs read-write access to /dev/kvm.\n",
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
		else if (argc > 2 && control_client_help(argv[2], stdout))
			;
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
	if (control_client_is_command(cmd))
		return control_client_main(argc - 1, argv + 1);
	fprintf(stderr, "ringvm: unknown subcommand '%s' (see 'ringvm --help')\n", cmd);
	return 2;
}
