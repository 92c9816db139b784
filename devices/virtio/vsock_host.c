/*
 * virtio-vsock, the main process's part: the `--vsock` factory creates,
 * binds and listens on the Unix socket at PATH (refusing a path that is not
 * a socket or that a live process listens on, replacing a stale socket),
 * hands the listening descriptor to the device process, removes the socket
 * file on exit, and connects to PATH_<port> on the device's behalf
 * (IPC_CTL_VSOCK_CONNECT): the jailed device names a port, never a path.
 * Also the registry entry with the device's allowlist.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/io_uring.h>

#include "devices/virtio/vsock_priv.h"

extern const struct virtio_device_ops vsock_ops;
void vsock_metrics(void *state, struct ipc_metrics *out);

static void set_addr(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
}

/* Whether something listens at path (a stale socket file refuses). */
static bool live_socket(const struct sockaddr_un *a)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return false;
	int r = connect(fd, (const struct sockaddr *)a, sizeof(*a));
	bool live = r == 0 || errno == EAGAIN;
	close(fd);
	return live;
}

static int open_listener(struct vsock *vs)
{
	const char *path = vs->opts.uds;
	struct sockaddr_un a;
	struct stat sb;
	set_addr(&a, path);
	if (lstat(path, &sb) == 0) {
		if (!S_ISSOCK(sb.st_mode)) {
			fprintf(stderr, "ringvm run: --vsock: %s exists and is not a socket\n", path);
			return -EEXIST;
		}
		if (live_socket(&a)) {
			fprintf(stderr, "ringvm run: --vsock: %s is in use by another process\n", path);
			return -EADDRINUSE;
		}
		if (unlink(path) < 0 && errno != ENOENT) {
			int e = errno;
			fprintf(stderr, "ringvm run: --vsock: cannot remove the stale socket %s: %s\n",
			        path, strerror(e));
			return -e;
		}
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 128) < 0 ||
	    fstat(fd, &sb) < 0 || stat(path, &sb) < 0) {
		int e = errno;
		fprintf(stderr, "ringvm run: --vsock: cannot listen on %s: %s\n", path, strerror(e));
		close(fd);
		return -e;
	}
	vs->listen_fd = fd;
	vs->sock_dev = sb.st_dev;
	vs->sock_ino = sb.st_ino;
	vs->own_path = true;
	return 0;
}

static int vsock_create(const struct registry_ctx *ctx, const char *opts, void **state)
{
	char err[256];
	(void)ctx;
	struct vsock *vs = calloc(1, sizeof(*vs));
	if (!vs)
		return -ENOMEM;
	vs->listen_fd = -1;
	int r = vsock_parse_opts(opts, &vs->opts, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ringvm run: %s\n", err);
		free(vs);
		return r;
	}
	r = open_listener(vs);
	if (r < 0) {
		free(vs);
		return r;
	}
	vs->vdev.ops = &vsock_ops;
	vs->cfg.guest_cid = htole64(vs->opts.cid);
	*state = vs;
	return 0;
}

static void vsock_destroy(void *state)
{
	struct vsock *vs = state;
	struct stat sb;
	if (!vs)
		return;
	if (vs->listen_fd >= 0)
		close(vs->listen_fd);
	/* Remove the socket file only if it is still ours (not replaced meanwhile). */
	if (vs->own_path && stat(vs->opts.uds, &sb) == 0 && sb.st_dev == vs->sock_dev &&
	    sb.st_ino == vs->sock_ino)
		unlink(vs->opts.uds);
	free(vs);
}

static unsigned vsock_keep_fds(void *state, int *fds, unsigned max)
{
	struct vsock *vs = state;
	if (!max || vs->listen_fd < 0)
		return 0;
	fds[0] = vs->listen_fd;
	return 1;
}

/*
 * IPC_CTL_VSOCK_CONNECT on the vmctl thread: a non-blocking connect to
 * PATH_<port>, which for a Unix socket completes at once or fails at once
 * (-ECONNREFUSED, -ENOENT, -EAGAIN when its backlog is full), so the
 * thread serving every device never waits on a host peer.
 */
static int vsock_vmctl(void *state, const struct ipc_ctl_req *req, int *fd_out)
{
	struct vsock *vs = state;
	struct sockaddr_un a;
	char path[sizeof(a.sun_path) + 16]; /* vsock_parse_opts left room for "_<port>" */
	if (req->op != IPC_CTL_VSOCK_CONNECT)
		return -EOPNOTSUPP;
	snprintf(path, sizeof(path), "%s_%u", vs->opts.uds, req->port);
	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	set_addr(&a, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		return -e;
	}
	*fd_out = fd;
	return 0;
}

/*
 * Beyond devproc's needs: accept4 on the listening socket and shutdown for
 * half-closes. Data moves with readv/writev/read/write (base allowlist);
 * waits are POLL_ADD on the ring; connected sockets come from the main
 * process, so socket and connect stay forbidden.
 */
static const struct jail_syscall_rule vsock_rules[] = {
    {.nr = __NR_accept4},
    {.nr = __NR_shutdown},
};

/* Deadlines (a client's CONNECT line, the guest's answer) are linked
 * timeouts on the poll; the accept loop backs off with a timeout. */
static const uint8_t vsock_uring_ops[] = {IORING_OP_LINK_TIMEOUT, IORING_OP_TIMEOUT};

const struct registry_entry vsock_entry = {
    .option = "vsock",
    .meta = "cid=N,uds=PATH",
    .help = "virtio-vsock (one per VM), guest CID N (>= 3), bridged to Unix sockets\n"
            "as Firecracker's hybrid vsock: ringvm listens on PATH (a stale socket\n"
            "there is replaced, any other file refused; removed on exit); a host\n"
            "client connects, sends \"CONNECT <port>\\n\" and gets \"OK <host_port>\\n\"\n"
            "once the guest accepts. A guest connect to CID 2 port P connects to\n"
            "PATH_P (made by ringvm's main process; nothing listening: RST).",
    .default_on = false,
    .single = true,
    .ops = &vsock_ops,
    .create = vsock_create,
    .destroy = vsock_destroy,
    .keep_fds = vsock_keep_fds,
    .metrics = vsock_metrics,
    .vmctl = vsock_vmctl,
    .rules = vsock_rules,
    .n_rules = sizeof(vsock_rules) / sizeof(vsock_rules[0]),
    .uring_ops = vsock_uring_ops,
    .n_uring_ops = sizeof(vsock_uring_ops),
    /* Up to two operations per connection (poll + linked timeout) in flight. */
    .uring_sq_entries = 2048,
    .max_fds = VSOCK_MAX_CONNS + 64,
};
