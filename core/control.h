/*
 * The control socket server: a Unix stream socket (mode 0600) speaking one
 * JSON object per line each way (docs/control.md), served by one "control"
 * thread that polls the listening socket and a bounded set of clients. It
 * knows nothing about VMs: the caller hands it a table of named commands, so
 * it is tested with fake commands and real sockets (tests/unit/core).
 */
#ifndef RINGVM_CORE_CONTROL_H
#define RINGVM_CORE_CONTROL_H

#include <stddef.h>

struct json_object;

#define CONTROL_VERSION     1
#define CONTROL_MAX_LINE    (64u * 1024u) /* longest request line, newline excluded */
#define CONTROL_MAX_CLIENTS 16            /* connections served at once */

/*
 * One command. req is the whole request object (arguments are its other
 * members). On success return 0 and optionally set *result to a new object
 * (the reply's "result"; ownership passes to the server). On failure return
 * -errno and optionally write a message to err: -EINVAL, -ENOENT, -ENOTSUP,
 * -EBUSY, -ETIMEDOUT and -ESHUTDOWN map to the error codes of docs/control.md.
 * Runs on the control thread; a slow command delays the other clients.
 */
typedef int control_cmd_fn(void *ctx, struct json_object *req, struct json_object **result,
			   char *err, size_t errlen);

struct control_command {
	const char *name; /* the request's "command" value */
	control_cmd_fn *fn;
};

struct control_config {
	const char *path; /* socket path; a directory gives PATH/ringvm-<pid>.sock */
	const struct control_command *cmds;
	size_t ncmds;
	void *ctx;            /* passed to every command */
	unsigned max_clients; /* 0: CONTROL_MAX_CLIENTS */
	size_t max_line;      /* 0: CONTROL_MAX_LINE */
};

struct control;

/*
 * Create the socket and listen (no thread yet, so this may run before a
 * fork). A stale socket file (nobody listening) is replaced; a live one, or
 * anything that is not a socket, is refused with -EADDRINUSE / -EEXIST.
 * 0 and *out, or -errno with a one-line reason in err.
 */
int control_create(const struct control_config *cfg, struct control **out, char *err,
		   size_t errlen) __attribute__((warn_unused_result));

/* Start the "control" thread. 0 or -errno. */
int control_start(struct control *c) __attribute__((warn_unused_result));

/* The socket's path (what clients connect to). */
const char *control_path(const struct control *c);

/*
 * Stop the thread, flush what replies can be flushed without blocking, close
 * every client and the socket, and remove the socket file. NULL is a no-op.
 */
void control_destroy(struct control *c);

/*
 * Turn a command's -errno into the protocol's error code string
 * ("bad-argument", "not-found", "not-supported", "busy", "timeout",
 * "read-only", "stopping", "failed").
 */
const char *control_error_code(int err);

#endif
