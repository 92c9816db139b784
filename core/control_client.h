/*
 * The client side of the control socket: `ringvm stop|pause|resume|status|
 * metrics SOCKET` and `ringvm disk resize ID SIZE SOCKET`. Each sends one
 * request (docs/control.md), prints the reply for people (or, with --json,
 * as the reply line itself) and exits with a status saying what happened.
 */
#ifndef RINGVM_CORE_CONTROL_CLIENT_H
#define RINGVM_CORE_CONTROL_CLIENT_H

#include <stdbool.h>
#include <stdio.h>

/* Exit statuses of the control subcommands. */
enum control_client_exit {
	CONTROL_CLIENT_OK = 0,
	CONTROL_CLIENT_FAILED = 1,      /* the VM answered with an error */
	CONTROL_CLIENT_USAGE = 2,       /* bad arguments */
	CONTROL_CLIENT_UNREACHABLE = 3, /* no VM at SOCKET, or it went away before answering */
};

/* Is name one of the control subcommands (stop, pause, resume, status, metrics, disk)? */
bool control_client_is_command(const char *name);

/* Run subcommand argv[0] with its arguments. Returns an enum control_client_exit. */
int control_client_main(int argc, char **argv);

/* Print the man-page style help of subcommand name to f; false if unknown. */
bool control_client_help(const char *name, FILE *f);

#endif
