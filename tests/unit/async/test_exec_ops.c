/*
 * Every awaitable operation against real objects: files on tmpfs, pipes,
 * UNIX and TCP sockets, eventfds, fixed files; errors come back as -errno.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "tests/unit/async/async_test.h"

typedef void body_fn(struct exec *ex, void *arg);

struct body {
	body_fn *fn;
	void *arg;
};

static int run_body(struct exec *ex, void *arg)
{
	struct body *b = arg;
	b->fn(ex, b->arg);
	return 0;
}

/* Run fn(ex, arg) as a task to completion on a fresh executor. */
static void in_task(body_fn *fn, void *arg)
{
	struct exec *ex = test_exec(NULL);
	struct body b = {fn, arg};
	struct exec_task *t;
	cr_assert_eq(exec_spawn(ex, run_body, &b, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	exec_destroy(ex);
}

static void file_rw(struct exec *ex, void *arg)
{
	int fd = test_tmpfile();
	char out[8192], in[8192];
	(void)arg;
	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(i * 7);
	cr_assert_eq(exec_write(ex, fd, out, sizeof(out), 4096), (int)sizeof(out));
	memset(in, 0, sizeof(in));
	cr_assert_eq(exec_read(ex, fd, in, sizeof(in), 4096), (int)sizeof(in));
	cr_assert_arr_eq(in, out, sizeof(in));
	/* the hole before 4096 reads as zeros; past EOF reads 0 bytes */
	cr_assert_eq(exec_read(ex, fd, in, 4096, 0), 4096);
	for (int i = 0; i < 4096; i++)
		cr_assert_eq(in[i], 0);
	cr_assert_eq(exec_read(ex, fd, in, 100, 1 << 20), 0);
	/* offset -1: the file position, which pread-style ops leave at 0 */
	cr_assert_eq(exec_write(ex, fd, "abc", 3, (uint64_t)-1), 3);
	cr_assert_eq(lseek(fd, 0, SEEK_CUR), 3);
	cr_assert_eq(exec_fsync(ex, fd), 0);
	cr_assert_eq(exec_fdatasync(ex, fd), 0);
	close(fd);
}

Test(async_ops, read_write_fsync_file)
{
	in_task(file_rw, NULL);
}

static void vectored(struct exec *ex, void *arg)
{
	int fd = test_tmpfile();
	char a[100], b[300], c[100], d[300];
	(void)arg;
	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	struct iovec wv[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
	cr_assert_eq(exec_writev(ex, fd, wv, 2, 10), 400);
	struct iovec rv[2] = {{c, sizeof(c)}, {d, sizeof(d)}};
	cr_assert_eq(exec_readv(ex, fd, rv, 2, 10), 400);
	cr_assert_arr_eq(c, a, sizeof(a));
	cr_assert_arr_eq(d, b, sizeof(b));
	struct stat st;
	fstat(fd, &st);
	cr_assert_eq(st.st_size, 410);
	close(fd);
}

Test(async_ops, readv_writev_at_offsets)
{
	in_task(vectored, NULL);
}

static void falloc(struct exec *ex, void *arg)
{
	int fd = test_tmpfile_disk();
	static char buf[65536], back[65536];
	struct stat st;
	(void)arg;
	memset(buf, 0xee, sizeof(buf));
	cr_assert_eq(exec_write(ex, fd, buf, sizeof(buf), 0), (int)sizeof(buf));
	fstat(fd, &st);
	blkcnt_t full = st.st_blocks;

	cr_assert_eq(exec_punch_hole(ex, fd, 16384, 16384), 0);
	fstat(fd, &st);
	cr_assert_eq(st.st_size, 65536, "punch hole keeps the size");
	cr_assert_lt(st.st_blocks, full, "punched blocks are freed");
	cr_assert_eq(exec_read(ex, fd, back, sizeof(back), 0), (int)sizeof(back));
	for (int i = 0; i < 65536; i++)
		cr_assert_eq((unsigned char)back[i], i >= 16384 && i < 32768 ? 0 : 0xee, "at %d",
		             i);

	cr_assert_eq(exec_zero_range(ex, fd, 40000, 1000), 0);
	cr_assert_eq(exec_read(ex, fd, back, sizeof(back), 0), (int)sizeof(back));
	for (int i = 40000; i < 41000; i++)
		cr_assert_eq(back[i], 0);
	cr_assert_eq((unsigned char)back[39999], 0xee);
	cr_assert_eq((unsigned char)back[41000], 0xee);

	cr_assert_eq(exec_fallocate(ex, fd, 0, 0, 1 << 20), 0);
	fstat(fd, &st);
	cr_assert_eq(st.st_size, 1 << 20, "plain fallocate extends");
	close(fd);

	/* tmpfs has no ZERO_RANGE: the filesystem's refusal comes back as is */
	fd = test_tmpfile();
	cr_assert_eq(exec_zero_range(ex, fd, 0, 4096), -EOPNOTSUPP);
	close(fd);
}

Test(async_ops, fallocate_punch_hole_zero_range)
{
	in_task(falloc, NULL);
}

struct pipe_pair {
	int p[2];
	int got;
	char buf[16];
};

static int pipe_reader(struct exec *ex, void *arg)
{
	struct pipe_pair *pp = arg;
	int rev = exec_poll(ex, pp->p[0], POLLIN);
	if (!(rev & POLLIN))
		return -100;
	pp->got = exec_read(ex, pp->p[0], pp->buf, sizeof(pp->buf), 0);
	return 0;
}

static int pipe_writer(struct exec *ex, void *arg)
{
	struct pipe_pair *pp = arg;
	/* let the reader park on its poll first */
	cr_assert_eq(exec_sleep(ex, 2000000), 0);
	cr_assert_eq(exec_poll(ex, pp->p[1], POLLOUT) & POLLOUT, POLLOUT);
	return exec_write(ex, pp->p[1], "hello", 5, 0);
}

Test(async_ops, pipe_poll_read_write)
{
	struct exec *ex = test_exec(NULL);
	struct pipe_pair pp = {0};
	struct exec_task *r, *w;
	cr_assert_eq(pipe2(pp.p, O_CLOEXEC), 0);
	cr_assert_eq(exec_spawn(ex, pipe_reader, &pp, 0, &r), 0);
	cr_assert_eq(exec_spawn(ex, pipe_writer, &pp, 0, &w), 0);
	cr_assert_eq(exec_join(ex, w), 5);
	cr_assert_eq(exec_join(ex, r), 0);
	cr_assert_eq(pp.got, 5);
	cr_assert_arr_eq(pp.buf, "hello", 5);
	close(pp.p[0]);
	close(pp.p[1]);
	exec_destroy(ex);
}

static void unix_msgs(struct exec *ex, void *arg)
{
	int sv[2];
	(void)arg;
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	/* send a message carrying an fd (SCM_RIGHTS), as device IPC does */
	int efd = eventfd(0, EFD_CLOEXEC);
	char data[] = "msg";
	struct iovec iov = {data, 3};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct msghdr m = {.msg_iov = &iov,
	                   .msg_iovlen = 1,
	                   .msg_control = ctl.b,
	                   .msg_controllen = sizeof(ctl.b)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &efd, sizeof(int));
	cr_assert_eq(exec_sendmsg(ex, sv[0], &m, 0), 3);

	char rbuf[16] = {0};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} rctl;
	struct iovec riov = {rbuf, sizeof(rbuf)};
	struct msghdr rm = {.msg_iov = &riov,
	                    .msg_iovlen = 1,
	                    .msg_control = rctl.b,
	                    .msg_controllen = sizeof(rctl.b)};
	cr_assert_eq(exec_recvmsg(ex, sv[1], &rm, MSG_CMSG_CLOEXEC), 3);
	cr_assert_str_eq(rbuf, "msg");
	struct cmsghdr *rc = CMSG_FIRSTHDR(&rm);
	cr_assert_not_null(rc);
	cr_assert_eq(rc->cmsg_type, SCM_RIGHTS);
	int got;
	memcpy(&got, CMSG_DATA(rc), sizeof(int));
	cr_assert_geq(got, 0);
	/* the received fd is the same eventfd */
	uint64_t one = 1, v = 0;
	cr_assert_eq(write(efd, &one, 8), 8);
	cr_assert_eq(exec_read(ex, got, &v, 8, 0), 8);
	cr_assert_eq(v, 1);
	close(got);
	close(efd);
	close(sv[0]);
	close(sv[1]);
}

Test(async_ops, sendmsg_recvmsg_with_fd)
{
	in_task(unix_msgs, NULL);
}

struct tcp {
	int lfd;
	struct sockaddr_in addr;
};

static int tcp_server(struct exec *ex, void *arg)
{
	struct tcp *t = arg;
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	int c = exec_accept(ex, t->lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
	if (c < 0)
		return c;
	cr_assert_eq(plen, sizeof(peer));
	char buf[8];
	struct iovec iov = {buf, sizeof(buf)};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	int n = exec_recvmsg(ex, c, &m, 0);
	cr_assert_eq(n, 4);
	cr_assert_arr_eq(buf, "ping", 4);
	struct iovec oiov = {"pong", 4};
	struct msghdr om = {.msg_iov = &oiov, .msg_iovlen = 1};
	cr_assert_eq(exec_sendmsg(ex, c, &om, 0), 4);
	close(c);
	return 0;
}

static int tcp_client(struct exec *ex, void *arg)
{
	struct tcp *t = arg;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ret = exec_connect(ex, s, (struct sockaddr *)&t->addr, sizeof(t->addr));
	if (ret)
		return ret;
	struct iovec iov = {"ping", 4};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	cr_assert_eq(exec_sendmsg(ex, s, &m, 0), 4);
	char buf[4];
	cr_assert_eq(exec_read(ex, s, buf, 4, 0), 4);
	cr_assert_arr_eq(buf, "pong", 4);
	close(s);
	return 0;
}

Test(async_ops, tcp_accept_connect_loopback)
{
	struct exec *ex = test_exec(NULL);
	struct tcp t = {0};
	struct exec_task *srv, *cli;
	socklen_t len = sizeof(t.addr);
	t.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	t.addr.sin_family = AF_INET;
	t.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(t.lfd, (struct sockaddr *)&t.addr, sizeof(t.addr)), 0);
	cr_assert_eq(getsockname(t.lfd, (struct sockaddr *)&t.addr, &len), 0);
	cr_assert_eq(listen(t.lfd, 4), 0);
	cr_assert_eq(exec_spawn(ex, tcp_server, &t, 0, &srv), 0);
	cr_assert_eq(exec_spawn(ex, tcp_client, &t, 0, &cli), 0);
	cr_assert_eq(exec_join(ex, cli), 0);
	cr_assert_eq(exec_join(ex, srv), 0);
	close(t.lfd);
	exec_destroy(ex);
}

static void errors(struct exec *ex, void *arg)
{
	char b[4];
	int sv[2];
	(void)arg;
	int fd = test_tmpfile();
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(exec_read(ex, 12345, b, 4, 0), -EBADF);
	cr_assert_eq(exec_write(ex, -1, b, 4, 0), -EBADF);
	cr_assert_eq(exec_fsync(ex, 9999), -EBADF);
	cr_assert_eq(exec_punch_hole(ex, p[1], 0, 4096), -ESPIPE);
	cr_assert_eq(exec_punch_hole(ex, p[0], 0, 4096), -EBADF, "read-only end");
	cr_assert_eq(exec_accept(ex, fd, NULL, NULL, 0), -ENOTSOCK);
	cr_assert_eq(exec_write(ex, p[0], b, 4, 0), -EBADF, "write to a pipe's read end");
	close(p[1]);
	cr_assert_eq(exec_read(ex, p[0], b, 4, 0), 0, "EOF once the writer is gone");
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	struct sockaddr_in nowhere = {
	    .sin_family = AF_INET, .sin_port = htons(1), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(exec_connect(ex, s, (struct sockaddr *)&nowhere, sizeof(nowhere)),
	             -ECONNREFUSED);
	close(s);
	close(sv[0]);
	close(sv[1]);
	close(p[0]);
	close(fd);
}

Test(async_ops, errors_surface_as_negative_errno)
{
	in_task(errors, NULL);
}

static void eventfd_ops(struct exec *ex, void *arg)
{
	(void)arg;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	uint64_t v = 5, r = 0;
	cr_assert_eq(exec_write(ex, efd, &v, 8, 0), 8);
	cr_assert_eq(exec_poll(ex, efd, POLLIN) & POLLIN, POLLIN);
	cr_assert_eq(exec_read(ex, efd, &r, 8, 0), 8);
	cr_assert_eq(r, 5);
	cr_assert_eq(exec_read(ex, efd, &r, 4, 0), -EINVAL, "eventfd reads must be 8 bytes");
	close(efd);
}

Test(async_ops, eventfd_read_write_poll)
{
	in_task(eventfd_ops, NULL);
}

static void fixed(struct exec *ex, void *arg)
{
	int *fds = arg;
	char buf[6] = {0};
	cr_assert_eq(exec_write(ex, EXEC_FIXED(1), "fixed", 5, 0), 5);
	cr_assert_eq(exec_read(ex, EXEC_FIXED(1), buf, 5, 0), 5);
	cr_assert_str_eq(buf, "fixed");
	cr_assert_eq(exec_read(ex, fds[1], buf, 5, 0), 5, "same file by its plain fd");
	cr_assert_eq(exec_read(ex, EXEC_FIXED(7), buf, 5, 0), -EBADF);
}

Test(async_ops, fixed_files)
{
	struct exec *ex = test_exec(NULL);
	int fds[2] = {test_tmpfile(), test_tmpfile()};
	struct body b = {fixed, fds};
	struct exec_task *t;
	cr_assert_eq(exec_register_files(ex, fds, 2), 0);
	cr_assert(exec_features(ex) & EXEC_FEAT_FIXED_FILES);
	cr_assert_eq(exec_spawn(ex, run_body, &b, 0, &t), 0);
	cr_assert_eq(exec_join(ex, t), 0);
	exec_destroy(ex);
	close(fds[0]);
	close(fds[1]);
}

static void nops(struct exec *ex, void *arg)
{
	(void)arg;
	for (int i = 0; i < 100; i++)
		cr_assert_eq(exec_nop(ex), 0);
}

Test(async_ops, nop)
{
	in_task(nops, NULL);
}
