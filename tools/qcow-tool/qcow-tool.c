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
