/*
 * The control socket server (see control.h): socket creation and removal,
 * the "control" thread's poll loop, per-client line framing with a hard cap,
 * and the request/reply envelope. Nothing a client sends can reach the VM
 * except through a command of the table; everything malformed gets an error
 * line and the connection stays usable.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/control.h"
#include "core/log.h"

/* Stop taking requests from a client while this much of its replies is unsent. */
#define OUT_HIGH (256u * 1024u)

struct client {
	int fd;           /* -1: free slot */
	char *in;         /* max_line + 1 bytes */
	size_t in_len;
	bool discarding;  /* inside an over-long line: drop bytes until '\n' */
	bool eof;         /* the peer closed its side: answer what is buffered, then close */
	char *out;
	size_t out_len, out_cap;
};

struct control {
	struct control_config cfg;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int listen_fd;
	int quit_fd;
	pthread_t thread;
	bool started;
	struct client *clients;
};

const char *control_error_code(int err)
{
	switch (err) {
	case -EINVAL:
		return "bad-argument";
	case -ENOENT:
	case -ENODEV:
		return "not-found";
	case -ENOTSUP:
		return "not-supported";
	case -EROFS:
		return "read-only";
	case -EBUSY:
	case -EAGAIN:
		return "busy";
	case -ETIMEDOUT:
		return "timeout";
	case -ESHUTDOWN:
		return "stopping";
	default:
		return "failed";
	}
}

/* ---- socket creation ---- */

static int resolve_path(const char *path, char *out, size_t len, char *err, size_t errlen)
{
	struct stat st;
	int n;
	if (!path || !*path) {
		snprintf(err, errlen, "--socket: empty path");
		return -EINVAL;
	}
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		n = snprintf(out, len, "%s%sringvm-%d.sock", path,
			     path[strlen(path) - 1] == '/' ? "" : "/", (int)getpid());
	else
		n = snprintf(out, len, "%s", path);
	if (n < 0 || (size_t)n >= len) {
		snprintf(err, errlen, "--socket %s: path longer than %zu bytes", path, len - 1);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* A socket file nobody listens on is left over from a VMM that died: replace it. */
static int clear_stale(const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "--socket %s: exists and is not a socket", path);
		return -EEXIST;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	close(fd);
	if (r == 0) {
		snprintf(err, errlen, "--socket %s: another VMM is listening there", path);
		return -EADDRINUSE;
	}
	if (e != ECONNREFUSED) {
		snprintf(err, errlen, "--socket %s: %s", path, strerror(e));
		return -e;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "--socket %s: cannot remove the stale socket: %s", path,
			 strerror(errno));
		return -errno;
	}
	return 0;
}

int control_create(const struct control_config *cfg, struct control **out, char *err,
		   size_t errlen)
{
	struct control *c = calloc(1, sizeof(*c));
	int r;
	err[0] = 0;
	if (!c)
		return -ENOMEM;
	c->cfg = *cfg;
	if (!c->cfg.max_clients)
		c->cfg.max_clients = CONTROL_MAX_CLIENTS;
	if (!c->cfg.max_line)
		c->cfg.max_line = CONTROL_MAX_LINE;
	c->listen_fd = c->quit_fd = -1;
	c->clients = calloc(c->cfg.max_clients, sizeof(*c->clients));
	if (!c->clients) {
		r = -ENOMEM;
		goto out_free;
	}
	for (unsigned i = 0; i < c->cfg.max_clients; i++)
		c->clients[i].fd = -1;
	r = resolve_path(cfg->path, c->path, sizeof(c->path), err, errlen);
	if (r < 0)
		goto out_free;
	r = clear_stale(c->path, err, errlen);
	if (r < 0)
		goto out_free;
	c->quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->quit_fd < 0 || c->listen_fd < 0) {
		r = -errno;
		goto out_fds;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
	/* Created 0600 from the start: no window in which others may connect. */
	mode_t old = umask(0177);
	r = bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
	umask(old);
	if (r < 0)
		goto out_fds;
	if (chmod(c->path, 0600) < 0 || listen(c->listen_fd, 16) < 0) {
		r = -errno;
		unlink(c->path);
		goto out_fds;
	}
	*out = c;
	return 0;
out_fds:
	if (!err[0])
		snprintf(err, errlen, "--socket %s: %s", c->path, strerror(-r));
	if (c->listen_fd >= 0)
		close(c->listen_fd);
	if (c->quit_fd >= 0)
		close(c->quit_fd);
out_free:
	if (!err[0])
		snprintf(err, errlen, "--socket: %s", strerror(-r));
	free(c->clients);
	free(c);
	return r;
}

const char *control_path(const struct control *c)
{
	return c->path;
}

/* ---- clients ---- */

static void client_close(struct client *cl)
{
	if (cl->fd >= 0)
		close(cl->fd);
	free(cl->in);
	free(cl->out);
	*cl = (struct client){.fd = -1};
}

static int out_append(struct client *cl, const char *s, size_t n)
{
	if (cl->out_len + n > cl->out_cap) {
		size_t cap = cl->out_cap ? cl->out_cap : 4096;
		while (cap < cl->out_len + n)
			cap *= 2;
		char *p = realloc(cl->out, cap);
		if (!p)
			return -ENOMEM;
		cl->out = p;
		cl->out_cap = cap;
	}
	memcpy(cl->out + cl->out_len, s, n);
	cl->out_len += n;
	return 0;
}

/* Append one reply line built from obj (consumed). */
static int send_obj(struct client *cl, struct json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	int r = s ? out_append(cl, s, strlen(s)) : -ENOMEM;
	if (r == 0)
		r = out_append(cl, "\n", 1);
	json_object_put(obj);
	return r;
}

static struct json_object *envelope(struct json_object *id, bool ok)
{
	struct json_object *o = json_object_new_object();
	if (!o)
		return NULL;
	json_object_object_add(o, "version", json_object_new_int(CONTROL_VERSION));
	if (id)
		json_object_object_add(o, "id", json_object_get(id));
	json_object_object_add(o, "ok", json_object_new_boolean(ok));
	return o;
}

static int send_error(struct client *cl, struct json_object *id, const char *code,
		      const char *msg)
{
	struct json_object *o = envelope(id, false), *e = json_object_new_object();
	if (!o || !e) {
		json_object_put(o);
		json_object_put(e);
		return -ENOMEM;
	}
	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", json_object_new_string(msg));
	json_object_object_add(o, "error", e);
	return send_obj(cl, o);
}

static const struct control_command *find_cmd(const struct control *c, const char *name)
{
	for (size_t i = 0; i < c->cfg.ncmds; i++)
		if (strcmp(c->cfg.cmds[i].name, name) == 0)
			return &c->cfg.cmds[i];
	return NULL;
}

/* One complete line (no newline, NUL-terminated at len). */
static int handle_line(struct control *c, struct client *cl, char *line, size_t len)
{
	char msg[256];
	while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		line[--len] = 0;
	size_t skip = strspn(line, " \t");
	if (skip == len)
		return 0; /* blank lines are keep-alives */
	if (memchr(line, 0, len))
		return send_error(cl, NULL, "bad-json", "the line contains a NUL byte");
	struct json_tokener *tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	struct json_object *req = json_tokener_parse_ex(tok, line, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t used = json_tokener_get_parse_end(tok);
	if (!req && jerr == json_tokener_continue) {
		/* A bare number is only complete once something follows it: end the line. */
		req = json_tokener_parse_ex(tok, " ", 1);
		jerr = json_tokener_get_error(tok);
		used = len;
	}
	json_tokener_free(tok);
	/* (A JSON null parses to NULL with success: it is refused below as a non-object.) */
	if (jerr != json_tokener_success || line[used + strspn(line + used, " \t")]) {
		json_object_put(req);
		snprintf(msg, sizeof(msg), "not one JSON value: %s",
			 jerr == json_tokener_success    ? "trailing characters"
			 : jerr == json_tokener_continue ? "incomplete"
							 : json_tokener_error_desc(jerr));
		return send_error(cl, NULL, "bad-json", msg);
	}
	struct json_object *id = NULL, *v;
	int r;
	if (!req || !json_object_is_type(req, json_type_object)) {
		r = send_error(cl, NULL, "bad-request", "a request is a JSON object");
		goto out;
	}
	json_object_object_get_ex(req, "id", &id);
	if (json_object_object_get_ex(req, "version", &v) &&
	    (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != CONTROL_VERSION)) {
		snprintf(msg, sizeof(msg), "this VMM speaks protocol version %d", CONTROL_VERSION);
		r = send_error(cl, id, "unsupported-version", msg);
		goto out;
	}
	if (!json_object_object_get_ex(req, "command", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		r = send_error(cl, id, "bad-request", "missing \"command\" (a string)");
		goto out;
	}
	const char *name = json_object_get_string(v);
	const struct control_command *cmd = find_cmd(c, name);
	if (!cmd) {
		snprintf(msg, sizeof(msg), "unknown command '%.64s'", name);
		r = send_error(cl, id, "unknown-command", msg);
		goto out;
	}
	struct json_object *result = NULL;
	msg[0] = 0;
	int cr = cmd->fn(c->cfg.ctx, req, &result, msg, sizeof(msg));
	if (cr < 0) {
		json_object_put(result);
		if (!msg[0])
			snprintf(msg, sizeof(msg), "%s: %s", name, strerror(-cr));
		r = send_error(cl, id, control_error_code(cr), msg);
		goto out;
	}
	struct json_object *o = envelope(id, true);
	if (!o) {
		json_object_put(result);
		r = -ENOMEM;
		goto out;
	}
	json_object_object_add(o, "result", result ? result : json_object_new_object());
	r = send_obj(cl, o);
out:
	json_object_put(req);
	return r;
}

/* Answer every complete buffered line, until the unsent replies reach OUT_HIGH. */
static int client_process(struct control *c, struct client *cl)
{
	size_t pos = 0;
	int r = 0;
	while (r == 0 && cl->out_len < OUT_HIGH && pos < cl->in_len) {
		char *nl = memchr(cl->in + pos, '\n', cl->in_len - pos);
		if (!nl)
			break;
		size_t n = (size_t)(nl - (cl->in + pos));
		if (cl->discarding) {
			cl->discarding = false; /* the over-long line ends here */
		} else {
			cl->in[pos + n] = 0;
			r = handle_line(c, cl, cl->in + pos, n);
		}
		pos += n + 1;
	}
	memmove(cl->in, cl->in + pos, cl->in_len - pos);
	cl->in_len -= pos;
	if (r == 0 && cl->in_len > c->cfg.max_line && !memchr(cl->in, '\n', cl->in_len)) {
		/* Full without a newline: over-long. Answer once, drop up to the next newline. */
		char msg[96];
		snprintf(msg, sizeof(msg), "request line longer than %zu bytes", c->cfg.max_line);
		cl->in_len = 0;
		if (!cl->discarding)
			r = send_error(cl, NULL, "line-too-long", msg);
		cl->discarding = true;
	}
	return r;
}

/* Read what the client sent. -errno or -EPIPE when it must be closed. */
static int client_read(struct control *c, struct client *cl)
{
	size_t room = c->cfg.max_line + 1 - cl->in_len;
	ssize_t n;
	do
		n = recv(cl->fd, cl->in + cl->in_len, room, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	if (n == 0) {
		cl->eof = true;
		return 0;
	}
	if (cl->discarding) {
		/* Skip to the newline that ends the over-long line, keep the rest. */
		char *nl = memchr(cl->in + cl->in_len, '\n', (size_t)n);
		if (!nl)
			return 0;
		cl->discarding = false;
		size_t keep = (size_t)n - (size_t)(nl + 1 - (cl->in + cl->in_len));
		memmove(cl->in, nl + 1, keep);
		cl->in_len = keep;
		return 0;
	}
	cl->in_len += (size_t)n;
	return 0;
}

/* Send what is pending without blocking. -errno when the peer is gone. */
static int client_flush(struct client *cl)
{
	size_t off = 0;
	int r = 0;
	while (off < cl->out_len) {
		ssize_t n = send(cl->fd, cl->out + off, cl->out_len - off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				r = -errno; /* EPIPE, ECONNRESET: the client left mid-reply */
			break;
		}
		off += (size_t)n;
	}
	if (off) { /* (out may still be NULL when nothing was ever queued) */
		memmove(cl->out, cl->out + off, cl->out_len - off);
		cl->out_len -= off;
	}
	return r;
}

static void accept_clients(struct control *c)
{
	for (;;) {
		int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				log_warn("control: accept: %s", strerror(errno));
			return;
		}
		struct client *cl = NULL;
		for (unsigned i = 0; i < c->cfg.max_clients && !cl; i++)
			if (c->clients[i].fd < 0)
				cl = &c->clients[i];
		if (cl && (cl->in = malloc(c->cfg.max_line + 1))) {
			cl->fd = fd;
			continue;
		}
		/* Full: say so (best effort, never blocking) and hang up. */
		char line[160];
		int n = snprintf(line, sizeof(line),
				 "{\"version\":%d,\"ok\":false,\"error\":{\"code\":\"busy\","
				 "\"message\":\"too many clients (at most %u)\"}}\n",
				 CONTROL_VERSION, c->cfg.max_clients);
		ssize_t w = send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)w;
		close(fd);
	}
}

static void *control_thread(void *arg)
{
	struct control *c = arg;
	unsigned max = c->cfg.max_clients;
	struct pollfd *pfd = calloc(max + 2, sizeof(*pfd));
	unsigned *who = calloc(max + 2, sizeof(*who));
	if (!pfd || !who) {
		log_error("control: out of memory; the control socket is not served");
		goto out;
	}
	for (;;) {
		unsigned n = 0;
		pfd[n++] = (struct pollfd){.fd = c->quit_fd, .events = POLLIN};
		pfd[n++] = (struct pollfd){.fd = c->listen_fd, .events = POLLIN};
		for (unsigned i = 0; i < max; i++) {
			struct client *cl = &c->clients[i];
			if (cl->fd < 0)
				continue;
			/* Back-pressure: a client that does not read its replies is not read. */
			short ev = cl->out_len ? POLLOUT : (cl->eof ? 0 : POLLIN);
			who[n] = i;
			pfd[n++] = (struct pollfd){.fd = cl->fd, .events = ev};
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("control: poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents)
			accept_clients(c);
		for (unsigned k = 2; k < n; k++) {
			struct client *cl = &c->clients[who[k]];
			short re = pfd[k].revents;
			int r = 0;
			if (!re)
				continue;
			if (re & POLLIN)
				r = client_read(c, cl);
			else if (re & (POLLERR | POLLHUP | POLLNVAL) && !(re & POLLOUT))
				r = -EPIPE;
			if (r == 0)
				r = client_process(c, cl);
			if (r == 0)
				r = client_flush(cl);
			/* Replies sent may let more buffered lines through. */
			while (r == 0 && !cl->out_len && memchr(cl->in, '\n', cl->in_len)) {
				r = client_process(c, cl);
				if (r == 0)
					r = client_flush(cl);
			}
			if (r < 0 || (cl->eof && !cl->out_len))
				client_close(cl);
		}
	}
out:
	free(pfd);
	free(who);
	return NULL;
}

int control_start(struct control *c)
{
	int r = pthread_create(&c->thread, NULL, control_thread, c);
	if (r)
		return -r;
	pthread_setname_np(c->thread, "control");
	c->started = true;
	return 0;
}

void control_destroy(struct control *c)
{
	if (!c)
		return;
	if (c->started) {
		uint64_t one = 1;
		ssize_t w = write(c->quit_fd, &one, sizeof(one));
		(void)w;
		pthread_join(c->thread, NULL);
	}
	/* Close the listener and remove the name first: nobody new connects to a dying VMM. */
	close(c->listen_fd);
	if (unlink(c->path) < 0 && errno != ENOENT)
		log_warn("cannot remove the control socket %s: %s", c->path, strerror(errno));
	for (unsigned i = 0; i < c->cfg.max_clients; i++)
		if (c->clients[i].fd >= 0) {
			(void)client_flush(&c->clients[i]);
			client_close(&c->clients[i]);
		}
	close(c->quit_fd);
	free(c->clients);
	free(c);
}
