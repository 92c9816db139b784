/*
 * The host side of the vsock end-to-end tests: a VMM run in a thread (so the
 * test can talk to the guest while it runs), Firecracker-style hybrid vsock
 * clients (connect to the Unix socket, `CONNECT <port>\n`, `OK <n>\n`) that
 * stream data and check the echo, and listeners at `<uds>_<port>` that echo,
 * echo after EOF, sink, source or die mid-stream. Everything is poll-driven
 * and bounded by deadlines; nothing here asserts (the tests do, after the VMM
 * has exited).
 */
#ifndef RINGVM_TESTS_E2E_VSOCK_HOST_H
#define RINGVM_TESTS_E2E_VSOCK_HOST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tests/e2e/harness.h"

/* ---- the VMM in a thread ---- */
struct vh_vm {
	struct harness_argv argv;
	struct harness_opts opts;
	struct harness_result res;
	int ret;
	pthread_t thread;
	bool started;
	volatile bool done;
};
int vh_vm_start(struct vh_vm *vm);
int vh_vm_join(struct vh_vm *vm);

/* ---- the stream every host client sends: byte i = vh_byte(seed, i) ---- */
#define VH_PERIOD 1048573u /* prime, so whole-period slips show */
const uint8_t *vh_pattern(void);

/* ---- host clients ---- */
struct vh_client {
	uint32_t port;     /* guest port */
	uint64_t bytes;    /* to send; the echo must bring them back */
	bool one_byte_line; /* send the CONNECT line one byte at a time */
	/* results */
	int fd;
	uint32_t host_port; /* from OK */
	uint64_t sent, received;
	bool connected, eof, mismatch, failed;
	uint64_t mismatch_at;
	char why[96];
	double t_connect, t_done; /* seconds since the run started */
};

/*
 * Connects one client (retrying for up to wait_s while the guest is not yet
 * listening or the socket does not exist yet). True when OK came back.
 */
bool vh_client_connect(const char *uds, struct vh_client *c, double wait_s);
/*
 * Streams every connected client's bytes and checks their echoes, all at
 * once on one poll loop; each client half-closes (SHUT_WR) after its last
 * byte and must then read the whole echo and EOF. Returns how many
 * finished with everything echoed, unchanged, and EOF.
 */
unsigned vh_clients_run(struct vh_client *c, unsigned n, double timeout_s);

/* Sends raw bytes on a fresh connection to uds and reports whether the device closed it. */
bool vh_garbage_closed(const char *uds, const char *bytes, size_t len, double wait_s,
                       char *why, size_t why_len);

/* ---- listeners at <uds>_<port> ---- */
enum vh_mode {
	VH_ECHO,    /* write back as it arrives; close after EOF once all is written */
	VH_DELAYED, /* read until EOF, then write it all back and close */
	VH_SINK,    /* read and drop until EOF, then close */
	VH_SOURCE,  /* write source_bytes of the pattern, then close */
	VH_STALL,   /* accept and never read (a peer that stopped reading) */
};

struct vh_listener {
	char path[128];
	enum vh_mode mode;
	uint64_t source_bytes;
	int fd;
	pthread_t thread;
	bool started;
	volatile bool stop;
	/* results (read after vh_listener_stop) */
	unsigned accepted, closed, max_open;
	uint64_t bytes_in, bytes_out;
	unsigned errors;
};
/* Binds <uds>_<port> and serves it from a thread. 0 or -errno. */
int vh_listener_start(struct vh_listener *l, const char *uds, uint32_t port, enum vh_mode mode);
void vh_listener_stop(struct vh_listener *l);

/*
 * A listener at <uds>_<port> in a child process that accepts one connection,
 * reads kill_after bytes and is then killed with SIGKILL (the peer vanishes
 * mid-stream). Returns the child's pid (reap with vh_killer_wait) or -errno.
 */
pid_t vh_killer_start(const char *uds, uint32_t port, uint64_t kill_after);
/* Reaps the child; true when it was killed by SIGKILL (it read what it was to read). */
bool vh_killer_wait(pid_t pid, double timeout_s);

double vh_now(void);

#endif
