/*
 * `ringvm stop|pause|resume|status|metrics|disk resize`: argument parsing,
 * their help, one request/reply over the control socket with a deadline,
 * and the human-readable rendering of each reply (see control_client.h).
 */
#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/control.h"
#include "core/control_client.h"

#define REPLY_TIMEOUT_MS 30000 /* metrics asks every device (2 s bound each) */
#define EXIT_TIMEOUT_MS  30000 /* stop: the VM's own shutdown bound is 2 s per device */

struct cmd_help {
	const char *name;
	const char *synopsis;
	const char *description;
};

static const struct cmd_help helps[] = {
	{"disk", "ringvm disk resize [--json] ID SIZE SOCKET",
	 "    Change the size of a running VM's block device; the guest gets a\n"
	 "    config-change interrupt and sees the new capacity. ID is the\n"
	 "    device's index among the --block options (0 for the first), its\n"
	 "    id= value or, without one, its default id (the image's file name).\n"
	 "    SIZE is bytes, or a number with a K, M, G or T suffix (powers of\n"
	 "    1024), a positive multiple of 512. A raw image file grows or\n"
	 "    shrinks (shrinking drops the data past the new end: the guest's\n"
	 "    file system must already be smaller); a qcow2 image only grows. A\n"
	 "    read-only disk is refused (error read-only). Prints the new size.\n"},
	{"metrics", "ringvm metrics [--json] SOCKET",
	 "    Print the VM's counters: the resident memory (VmRSS) of ringvm and\n"
	 "    of every device process, and each device's own counters (requests\n"
	 "    by kind, bytes read and written, errors, requests in flight and\n"
	 "    their high-water mark, queue notifications consumed, interrupts\n"
	 "    raised, service-time percentiles).\n"},
	{"pause", "ringvm pause [--json] SOCKET",
	 "    Stop every vCPU of the VM (they leave KVM_RUN and wait) and return\n"
	 "    once all have stopped. Device processes keep finishing requests\n"
	 "    already submitted. Pausing a paused VM does nothing.\n"},
	{"resume", "ringvm resume [--json] SOCKET",
	 "    Let the vCPUs of a paused VM run again. Resuming a running VM does\n"
	 "    nothing.\n"},
	{"status", "ringvm status [--json] SOCKET",
	 "    Print the VM's state (running, paused or stopping), ringvm's pid,\n"
	 "    uptime, vCPUs, memory, and every device process with its pid and\n"
	 "    whether it is sandboxed.\n"},
	{"stop", "ringvm stop [--json] SOCKET",
	 "    Stop the VM in order: the vCPUs stop, every device process finishes\n"
	 "    its requests and exits, then ringvm exits with status 0 and removes\n"
	 "    the socket. Waits until the VM is gone (at most 30 s).\n"},
};

static const struct cmd_help *find_help(const char *name)
{
	for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++)
		if (strcmp(helps[i].name, name) == 0)
			return &helps[i];
	return NULL;
}

bool control_client_is_command(const char *name)
{
	return find_help(name) != NULL;
}

bool control_client_help(const char *name, FILE *f)
{
	const struct cmd_help *h = find_help(name);
	if (!h)
		return false;
	fprintf(f,
		"NAME\n    ringvm %s - control a running VM over its control socket\n\n"
		"SYNOPSIS\n    %s\n\nDESCRIPTION\n%s\n"
		"    SOCKET is what 'ringvm run -s PATH' serves: the socket file, or the\n"
		"    directory PATH when it holds exactly one ringvm-<pid>.sock.\n\n"
		"OPTIONS\n"
		"    --json\n"
		"        Print the VM's reply as it came (one JSON object, see\n"
		"        docs/control.md) instead of the human-readable form.\n"
		"    -h, --help\n"
		"        Show this help and exit.\n\n"
		"EXIT STATUS\n"
		"    0  done\n"
		"    1  the VM refused or failed the request (the message says why)\n"
		"    2  bad arguments\n"
		"    3  no VM answers at SOCKET (not running, gone, or it stopped answering)\n",
		h->name, h->synopsis, h->description);
	return true;
}

/* SOCKET may be a directory holding exactly one ringvm-*.sock. */
static int resolve_socket(const char *cmd, const char *arg, char *out, size_t len)
{
	struct stat st;
	if (stat(arg, &st) < 0 || !S_ISDIR(st.st_mode)) {
		if ((size_t)snprintf(out, len, "%s", arg) >= len) {
			fprintf(stderr, "ringvm %s: %s: path too long\n", cmd, arg);
			return CONTROL_CLIENT_USAGE;
		}
		return 0;
	}
	DIR *d = opendir(arg);
	struct dirent *e;
	unsigned found = 0;
	while (d && (e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (strncmp(e->d_name, "ringvm-", 7) || n < 12 || strcmp(e->d_name + n - 5, ".sock"))
			continue;
		if (found++ == 0 && (size_t)snprintf(out, len, "%s/%s", arg, e->d_name) >= len)
			found = 99;
	}
	if (d)
		closedir(d);
	if (found == 1)
		return 0;
	fprintf(stderr, "ringvm %s: %s: %s\n", cmd, arg,
		found ? "holds several ringvm-*.sock; name one" : "no ringvm-*.sock there (no VM)");
	return found ? CONTROL_CLIENT_USAGE : CONTROL_CLIENT_UNREACHABLE;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read until '\n' (into *line, malloc'd) or EOF/deadline. 0, -EPIPE at EOF, -ETIMEDOUT. */
static int read_line(int fd, char **line, long long deadline)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		long long left = deadline - now_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (left <= 0) {
			free(buf);
			return -ETIMEDOUT;
		}
		int n = poll(&p, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			return n == 0 ? -ETIMEDOUT : -errno;
		}
		if (len + 1 >= cap) {
			char *nb = cap < (16u << 20) ? realloc(buf, cap * 2) : NULL;
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = recv(fd, buf + len, 1, 0); /* byte by byte: nothing past the line */
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			free(buf);
			return r == 0 ? -EPIPE : -errno;
		}
		if (buf[len] == '\n') {
			buf[len] = 0;
			*line = buf;
			return 0;
		}
		len++;
	}
}

static const char *str_of(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) && v ? json_object_get_string(v) : "?";
}

static long long int_of(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) && v ? json_object_get_int64(v) : -1;
}

static void print_status(struct json_object *r)
{
	struct json_object *v, *devs;
	printf("state     %s\n", str_of(r, "state"));
	printf("pid       %lld\n", int_of(r, "pid"));
	if (json_object_object_get_ex(r, "uptime_s", &v))
		printf("uptime    %.1f s\n", json_object_get_double(v));
	printf("vcpus     %lld\n", int_of(r, "vcpus"));
	printf("memory    %lld MiB\n", int_of(r, "memory_mib"));
	printf("kernel    %s\n", str_of(r, "kernel"));
	if (!json_object_object_get_ex(r, "devices", &devs) || !json_object_array_length(devs)) {
		printf("devices   none\n");
		return;
	}
	printf("devices\n");
	for (size_t i = 0; i < json_object_array_length(devs); i++) {
		struct json_object *d = json_object_array_get_idx(devs, i), *sb, *al;
		bool sandboxed = json_object_object_get_ex(d, "sandboxed", &sb) &&
				 json_object_get_boolean(sb);
		bool alive = json_object_object_get_ex(d, "alive", &al) && json_object_get_boolean(al);
		printf("  %lld  %-8s pid %-8lld %s%s\n", int_of(d, "index"), str_of(d, "option"),
		       int_of(d, "pid"), sandboxed ? "sandboxed" : "not sandboxed",
		       alive ? "" : ", gone");
	}
}

static void print_rss(struct json_object *o)
{
	long long kib = int_of(o, "rss_kib");
	if (kib >= 0)
		printf("rss %lld KiB", kib);
	else
		printf("rss ?");
}

static void print_metrics(struct json_object *r)
{
	struct json_object *proc, *devs, *svc;
	if (json_object_object_get_ex(r, "process", &proc)) {
		printf("ringvm      pid %-8lld ", int_of(proc, "pid"));
		print_rss(proc);
		printf("\n");
	}
	if (!json_object_object_get_ex(r, "devices", &devs))
		return;
	for (size_t i = 0; i < json_object_array_length(devs); i++) {
		struct json_object *d = json_object_array_get_idx(devs, i), *ok;
		printf("device %lld   %s pid %-8lld ", int_of(d, "index"), str_of(d, "option"),
		       int_of(d, "pid"));
		print_rss(d);
		printf("\n");
		if (!json_object_object_get_ex(d, "ok", &ok) || !json_object_get_boolean(ok)) {
			printf("    no counters: %s\n", str_of(d, "error"));
			continue;
		}
		printf("    requests %lld (reads %lld, writes %lld, flushes %lld), errors %lld\n",
		       int_of(d, "requests"), int_of(d, "reads"), int_of(d, "writes"),
		       int_of(d, "flushes"), int_of(d, "errors"));
		printf("    bytes read %lld, written %lld; in flight %lld (max %lld)\n",
		       int_of(d, "bytes_read"), int_of(d, "bytes_written"), int_of(d, "inflight"),
		       int_of(d, "max_inflight"));
		printf("    queue notifications %lld, interrupts %lld\n", int_of(d, "notifications"),
		       int_of(d, "interrupts"));
		if (json_object_object_get_ex(d, "service_ns", &svc) && int_of(svc, "count") > 0)
			printf("    service time ns: mean %lld, p50 %lld, p99 %lld, max %lld\n",
			       int_of(svc, "mean"), int_of(svc, "p50"), int_of(svc, "p99"),
			       int_of(svc, "max"));
	}
}

static int usage(const char *cmd, const char *what)
{
	fprintf(stderr, "ringvm %s: %s (see 'ringvm %s --help')\n", cmd, what, cmd);
	return CONTROL_CLIENT_USAGE;
}

int control_client_main(int argc, char **argv)
{
	const char *cmd = argv[0], *pos[4];
	unsigned npos = 0;
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			control_client_help(cmd, stdout);
			return CONTROL_CLIENT_OK;
		} else if (argv[i][0] == '-' && argv[i][1])
			return usage(cmd, "unknown option");
		else if (npos == 4)
			return usage(cmd, "too many arguments");
		else
			pos[npos++] = argv[i];
	}
	bool disk = strcmp(cmd, "disk") == 0;
	if (disk && (npos < 1 || strcmp(pos[0], "resize") != 0))
		return usage(cmd, "the only disk command is 'disk resize ID SIZE SOCKET'");
	if (npos != (disk ? 4u : 1u))
		return usage(cmd, disk ? "usage: disk resize ID SIZE SOCKET" : "needs SOCKET");

	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int r = resolve_socket(cmd, pos[npos - 1], path, sizeof(path));
	if (r)
		return r;
	struct json_object *req = json_object_new_object();
	json_object_object_add(req, "version", json_object_new_int(CONTROL_VERSION));
	json_object_object_add(req, "command", json_object_new_string(disk ? "disk-resize" : cmd));
	if (disk) {
		json_object_object_add(req, "disk", json_object_new_string(pos[1]));
		json_object_object_add(req, "size", json_object_new_string(pos[2]));
	}
	char *line = NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "ringvm %s: no VM at %s: %s\n", cmd, path, strerror(errno));
		r = CONTROL_CLIENT_UNREACHABLE;
		goto out;
	}
	const char *s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	size_t n = strlen(s);
	if (send(fd, s, n, MSG_NOSIGNAL) != (ssize_t)n || send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
		fprintf(stderr, "ringvm %s: %s: %s\n", cmd, path, strerror(errno));
		r = CONTROL_CLIENT_UNREACHABLE;
		goto out;
	}
	r = read_line(fd, &line, now_ms() + REPLY_TIMEOUT_MS);
	if (r < 0) {
		fprintf(stderr, "ringvm %s: %s: %s\n", cmd, path,
			r == -EPIPE ? "the VM closed the connection without answering"
				    : r == -ETIMEDOUT ? "no answer within 30 s"
						      : strerror(-r));
		r = CONTROL_CLIENT_UNREACHABLE;
		goto out;
	}
	struct json_object *reply = json_tokener_parse(line), *ok, *res, *err;
	if (!reply || !json_object_object_get_ex(reply, "ok", &ok)) {
		fprintf(stderr, "ringvm %s: unexpected reply: %.200s\n", cmd, line);
		json_object_put(reply);
		r = CONTROL_CLIENT_FAILED;
		goto out;
	}
	if (json)
		printf("%s\n", line);
	if (!json_object_get_boolean(ok)) {
		json_object_object_get_ex(reply, "error", &err);
		fprintf(stderr, "ringvm %s: %s (%s)\n", cmd, str_of(err, "message"),
			str_of(err, "code"));
		json_object_put(reply);
		r = CONTROL_CLIENT_FAILED;
		goto out;
	}
	json_object_object_get_ex(reply, "result", &res);
	if (!json && strcmp(cmd, "status") == 0)
		print_status(res);
	else if (!json && strcmp(cmd, "metrics") == 0)
		print_metrics(res);
	else if (!json && disk)
		printf("disk %s: %lld bytes\n", str_of(res, "disk"), int_of(res, "size"));
	else if (!json && strcmp(cmd, "stop") != 0)
		printf("%s\n", str_of(res, "state"));
	json_object_put(reply);
	r = CONTROL_CLIENT_OK;
	if (strcmp(cmd, "stop") == 0) {
		/* The VM closes every connection as it exits: wait for that. */
		free(line);
		line = NULL;
		int e = read_line(fd, &line, now_ms() + EXIT_TIMEOUT_MS);
		if (e == -ETIMEDOUT) {
			fprintf(stderr, "ringvm stop: the VM did not exit within 30 s\n");
			r = CONTROL_CLIENT_FAILED;
		} else if (!json)
			printf("stopped\n");
	}
out:
	free(line);
	if (fd >= 0)
		close(fd);
	json_object_put(req);
	return r;
}
