/*
 * The control socket server over real Unix sockets, with fake commands (no
 * KVM): socket file mode and removal, stale and live sockets, the envelope,
 * every malformed-input case answered on a connection that stays usable,
 * over-long lines, pipelining, concurrent clients, the client cap, clients
 * that leave mid-reply or never read (hostile-inputs case 25).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/control.h"

static atomic_int counter;

static int cmd_echo(void *ctx, struct json_object *req, struct json_object **res, char *err,
		    size_t errlen)
{
	(void)ctx, (void)err, (void)errlen;
	struct json_object *o = json_object_new_object(), *x;
	if (json_object_object_get_ex(req, "x", &x))
		json_object_object_add(o, "x", json_object_get(x));
	*res = o;
	return 0;
}

static int cmd_count(void *ctx, struct json_object *req, struct json_object **res, char *err,
		     size_t errlen)
{
	(void)ctx, (void)req, (void)res, (void)err, (void)errlen;
	atomic_fetch_add(&counter, 1);
	return 0;
}

static int cmd_fail(void *ctx, struct json_object *req, struct json_object **res, char *err,
		    size_t errlen)
{
	(void)ctx, (void)req, (void)res;
	snprintf(err, errlen, "no such thing");
	return -EINVAL;
}

static int cmd_nomsg(void *ctx, struct json_object *req, struct json_object **res, char *err,
		     size_t errlen)
{
	(void)ctx, (void)req, (void)res, (void)err, (void)errlen;
	return -ENOTSUP;
}

/* A 1 MiB reply: far more than a socket buffer, so a client can leave mid-reply. */
static int cmd_big(void *ctx, struct json_object *req, struct json_object **res, char *err,
		   size_t errlen)
{
	(void)ctx, (void)req, (void)err, (void)errlen;
	char *s = malloc(1 << 20);
	memset(s, 'b', (1 << 20) - 1);
	s[(1 << 20) - 1] = 0;
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "blob", json_object_new_string(s));
	free(s);
	*res = o;
	return 0;
}

static const struct control_command cmds[] = {
	{"big", cmd_big}, {"count", cmd_count}, {"echo", cmd_echo},
	{"fail", cmd_fail}, {"nomsg", cmd_nomsg},
};

static char dir[64];
static struct control *ctl;

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ringvm-ctl-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void start_server(unsigned max_clients)
{
	char err[256];
	make_dir();
	struct control_config cc = {.path = dir, .cmds = cmds, .ncmds = 5, .max_clients = max_clients};
	cr_assert_eq(control_create(&cc, &ctl, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(control_start(ctl), 0);
}

static void stop_server(void)
{
	control_destroy(ctl);
	ctl = NULL;
	rmdir(dir);
}

static int connect_to(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	cr_assert_geq(fd, 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

static int client(void)
{
	int fd = connect_to(control_path(ctl));
	cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
	return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		cr_assert_gt(w, 0, "send: %s", strerror(errno));
		c += w;
		n -= (size_t)w;
	}
}

static void send_str(int fd, const char *s)
{
	send_all(fd, s, strlen(s));
}

/* One reply line (malloc'd), or NULL at EOF or after 10 s. */
static char *recv_line(int fd)
{
	size_t len = 0, cap = 256;
	char *buf = malloc(cap);
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10000) <= 0)
			break;
		if (len + 1 >= cap)
			buf = realloc(buf, cap *= 2);
		ssize_t n = recv(fd, buf + len, 1, 0);
		if (n <= 0)
			break;
		if (buf[len] == '\n') {
			buf[len] = 0;
			return buf;
		}
		len++;
	}
	free(buf);
	return NULL;
}

/* Reply to one request line: the parsed object (caller puts it). */
static struct json_object *ask(int fd, const char *line)
{
	send_str(fd, line);
	char *s = recv_line(fd);
	cr_assert_not_null(s, "no reply to %s", line);
	struct json_object *o = json_tokener_parse(s);
	cr_assert_not_null(o, "reply is not JSON: %s", s);
	free(s);
	return o;
}

static bool is_ok(struct json_object *o)
{
	struct json_object *v;
	return json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v);
}

static const char *error_code(struct json_object *o)
{
	struct json_object *e, *c;
	if (!json_object_object_get_ex(o, "error", &e) || !json_object_object_get_ex(e, "code", &c))
		return "";
	return json_object_get_string(c);
}

static void expect_ok(int fd)
{
	struct json_object *o = ask(fd, "{\"version\":1,\"command\":\"echo\",\"x\":5}\n");
	cr_assert(is_ok(o), "%s", json_object_to_json_string(o));
	json_object_put(o);
}

Test(core_control, socket_in_directory_mode_0600_removed_on_destroy)
{
	start_server(0);
	char want[128];
	snprintf(want, sizeof(want), "%s/ringvm-%d.sock", dir, (int)getpid());
	cr_assert_str_eq(control_path(ctl), want);
	struct stat st;
	cr_assert_eq(lstat(want, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
	int fd = client(); /* a client still connected does not keep the file */
	stop_server();
	cr_assert_eq(lstat(want, &st), -1);
	cr_assert_eq(errno, ENOENT);
	close(fd);
}

Test(core_control, stale_socket_replaced_live_or_foreign_refused)
{
	char err[256], path[100];
	struct control *a, *b;
	make_dir();
	snprintf(path, sizeof(path), "%s/vm.sock", dir);
	struct control_config cc = {.path = path, .cmds = cmds, .ncmds = 5};
	/* A socket file nobody listens on (left by a killed VMM). */
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	cr_assert_eq(control_create(&cc, &a, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(control_create(&cc, &b, err, sizeof(err)), -EADDRINUSE);
	cr_assert(strstr(err, "listening"), "%s", err);
	control_destroy(a);
	FILE *f = fopen(path, "w");
	fclose(f);
	cr_assert_eq(control_create(&cc, &b, err, sizeof(err)), -EEXIST);
	cr_assert(strstr(err, "not a socket"), "%s", err);
	unlink(path);
	char longp[200];
	memset(longp, 'x', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = 0;
	cc.path = longp;
	cr_assert_eq(control_create(&cc, &b, err, sizeof(err)), -ENAMETOOLONG);
	rmdir(dir);
}

Test(core_control, envelope_version_id_result)
{
	start_server(0);
	int fd = client();
	struct json_object *o = ask(fd, "{\"version\":1,\"id\":\"abc\",\"command\":\"echo\",\"x\":[1,2]}\n");
	cr_assert_str_eq(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
			 "{\"version\":1,\"id\":\"abc\",\"ok\":true,\"result\":{\"x\":[1,2]}}");
	json_object_put(o);
	/* No version: taken as 1. CRLF and surrounding blanks are fine. */
	o = ask(fd, "\n  \r\n {\"command\":\"count\"} \r\n");
	cr_assert_str_eq(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
			 "{\"version\":1,\"ok\":true,\"result\":{}}");
	json_object_put(o);
	o = ask(fd, "{\"version\":1,\"id\":9,\"command\":\"fail\"}\n");
	cr_assert_str_eq(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
			 "{\"version\":1,\"id\":9,\"ok\":false,\"error\":{\"code\":\"bad-argument\","
			 "\"message\":\"no such thing\"}}");
	json_object_put(o);
	o = ask(fd, "{\"command\":\"nomsg\"}\n");
	cr_assert_str_eq(error_code(o), "not-supported");
	json_object_put(o);
	close(fd);
	stop_server();
}

struct bad_line {
	const char *line;
	const char *code;
};

Test(core_control, malformed_requests_get_errors_connection_survives)
{
	static const struct bad_line cases[] = {
		{"not json\n", "bad-json"},
		{"{\n", "bad-json"},
		{"{\"command\":\"echo\"\n", "bad-json"},
		{"{\"command\":\"echo\"} {\"command\":\"echo\"}\n", "bad-json"},
		{"{\"command\":\"echo\"}x\n", "bad-json"},
		{"\"command\"\n", "bad-request"},
		{"[1,2,3]\n", "bad-request"},
		{"123\n", "bad-request"},
		{"null\n", "bad-request"},
		{"{}\n", "bad-request"},
		{"{\"command\":5}\n", "bad-request"},
		{"{\"command\":null}\n", "bad-request"},
		{"{\"command\":\"nope\"}\n", "unknown-command"},
		{"{\"command\":\"\"}\n", "unknown-command"},
		{"{\"version\":2,\"command\":\"echo\"}\n", "unsupported-version"},
		{"{\"version\":\"1\",\"command\":\"echo\"}\n", "unsupported-version"},
		{"{\"version\":1.0,\"command\":\"echo\"}\n", "unsupported-version"},
		{"\xff\xfe{}\n", "bad-json"},
	};
	start_server(0);
	int fd = client();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_object *o = ask(fd, cases[i].line);
		cr_assert(!is_ok(o), "case %zu accepted", i);
		cr_assert_str_eq(error_code(o), cases[i].code, "case %zu: %s", i,
				 json_object_to_json_string(o));
		json_object_put(o);
		expect_ok(fd);
	}
	/* A NUL inside the line. */
	send_all(fd, "{\"command\":\0\"echo\"}\n", 20);
	char *s = recv_line(fd);
	cr_assert(s && strstr(s, "bad-json"), "%s", s ? s : "(none)");
	free(s);
	expect_ok(fd);
	/* Nesting far deeper than the parser allows. */
	size_t depth = 20000;
	char *deep = malloc(2 * depth + 2);
	memset(deep, '[', depth);
	memset(deep + depth, ']', depth);
	deep[2 * depth] = '\n';
	deep[2 * depth + 1] = 0;
	struct json_object *o = ask(fd, deep);
	cr_assert_str_eq(error_code(o), "bad-json");
	json_object_put(o);
	free(deep);
	expect_ok(fd);
	close(fd);
	stop_server();
}

Test(core_control, over_long_line_one_error_then_next_line_served)
{
	start_server(0);
	int fd = client();
	size_t n = 3 * CONTROL_MAX_LINE + 123;
	char *big = malloc(n);
	memset(big, 'a', n);
	send_all(fd, big, n);
	send_str(fd, "\n");
	struct json_object *o = ask(fd, "{\"command\":\"echo\",\"x\":1}\n");
	/* The first reply is the error for the long line; the echo's comes next. */
	cr_assert_str_eq(error_code(o), "line-too-long");
	json_object_put(o);
	char *s = recv_line(fd);
	cr_assert(s && strstr(s, "\"ok\":true"), "%s", s ? s : "(none)");
	free(s);
	/* One byte over the cap (newline excluded): too long, however the bytes arrive. */
	memset(big, ' ', CONTROL_MAX_LINE + 1);
	memcpy(big, "{\"command\":\"echo\"}", 18);
	send_all(fd, big, CONTROL_MAX_LINE + 1);
	o = ask(fd, "\n");
	cr_assert_str_eq(error_code(o), "line-too-long");
	json_object_put(o);
	big[CONTROL_MAX_LINE + 1] = '\n';
	big[CONTROL_MAX_LINE + 2] = 0;
	o = ask(fd, big); /* the same line and its newline in one go */
	cr_assert_str_eq(error_code(o), "line-too-long");
	json_object_put(o);
	/* Exactly at the cap: served. */
	send_all(fd, big, CONTROL_MAX_LINE);
	o = ask(fd, "\n");
	cr_assert(is_ok(o), "%s", json_object_to_json_string(o));
	json_object_put(o);
	expect_ok(fd);
	free(big);
	close(fd);
	stop_server();
}

Test(core_control, pipelined_requests_answered_in_order)
{
	start_server(0);
	int fd = client();
	send_str(fd, "{\"id\":1,\"command\":\"echo\"}\n{\"id\":2,\"command\":\"nope\"}\n"
		     "{\"id\":3,\"command\":\"echo\"}\n{\"id\":4,");
	for (int i = 1; i <= 3; i++) {
		char *s = recv_line(fd);
		char want[32];
		snprintf(want, sizeof(want), "\"id\":%d,", i);
		cr_assert(s && strstr(s, want), "reply %d: %s", i, s ? s : "(none)");
		free(s);
	}
	send_str(fd, "\"command\":\"echo\"}\n"); /* the rest of request 4 */
	char *s = recv_line(fd);
	cr_assert(s && strstr(s, "\"id\":4,"), "%s", s ? s : "(none)");
	free(s);
	close(fd);
	stop_server();
}

#define THREADS  8
#define REQUESTS 200

static void *hammer(void *arg)
{
	(void)arg;
	int fd = connect_to(control_path(ctl));
	if (fd < 0)
		return (void *)1;
	for (int i = 0; i < REQUESTS; i++) {
		send_str(fd, "{\"command\":\"count\"}\n");
		char *s = recv_line(fd);
		bool ok = s && strstr(s, "\"ok\":true");
		free(s);
		if (!ok) {
			close(fd);
			return (void *)1;
		}
	}
	close(fd);
	return NULL;
}

Test(core_control, concurrent_clients)
{
	pthread_t t[THREADS];
	atomic_store(&counter, 0);
	start_server(0);
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, hammer, NULL), 0);
	for (int i = 0; i < THREADS; i++) {
		void *r;
		pthread_join(t[i], &r);
		cr_assert_null(r, "client %d failed", i);
	}
	cr_assert_eq(atomic_load(&counter), THREADS * REQUESTS);
	stop_server();
}

Test(core_control, client_cap_busy_then_slot_reused)
{
	start_server(2);
	int a = client(), b = client();
	expect_ok(a);
	expect_ok(b);
	int c = client(); /* accepted by the kernel, then told off and closed */
	char *s = recv_line(c);
	cr_assert(s && strstr(s, "\"busy\""), "%s", s ? s : "(none)");
	free(s);
	cr_assert_null(recv_line(c)); /* EOF */
	close(c);
	close(a);
	usleep(50000);
	int d = client();
	expect_ok(d);
	expect_ok(b);
	close(b);
	close(d);
	stop_server();
}

Test(core_control, client_leaving_mid_reply_or_never_reading_is_harmless)
{
	start_server(0);
	int other = client();
	for (int i = 0; i < 5; i++) {
		int fd = client();
		send_str(fd, "{\"command\":\"big\"}\n");
		char buf[100];
		cr_assert_gt(recv(fd, buf, sizeof(buf), 0), 0); /* the reply has started */
		close(fd);                                      /* and the client leaves */
		expect_ok(other);
	}
	/* A client that pipelines many requests and never reads: back-pressure, not memory. */
	int greedy = client();
	char *burst = malloc(64 * 1024);
	size_t len = 0;
	while (len + 20 < 64 * 1024) {
		memcpy(burst + len, "{\"command\":\"big\"}\n", 18);
		len += 18;
	}
	int fl = MSG_DONTWAIT | MSG_NOSIGNAL;
	for (int i = 0; i < 50; i++)
		if (send(greedy, burst, len, fl) < 0)
			break;
	expect_ok(other); /* still served while greedy's replies pile up unread */
	close(greedy);
	free(burst);
	expect_ok(other);
	/* A client that half-closes after its request still gets the answer. */
	int hc = client();
	send_str(hc, "{\"id\":\"h\",\"command\":\"echo\"}\n");
	shutdown(hc, SHUT_WR);
	char *s = recv_line(hc);
	cr_assert(s && strstr(s, "\"id\":\"h\""), "%s", s ? s : "(none)");
	free(s);
	cr_assert_null(recv_line(hc));
	close(hc);
	close(other);
	stop_server();
}

Test(core_control, error_codes)
{
	cr_assert_str_eq(control_error_code(-EINVAL), "bad-argument");
	cr_assert_str_eq(control_error_code(-ENOENT), "not-found");
	cr_assert_str_eq(control_error_code(-ENOTSUP), "not-supported");
	cr_assert_str_eq(control_error_code(-EBUSY), "busy");
	cr_assert_str_eq(control_error_code(-ETIMEDOUT), "timeout");
	cr_assert_str_eq(control_error_code(-ESHUTDOWN), "stopping");
	cr_assert_str_eq(control_error_code(-EIO), "failed");
}
