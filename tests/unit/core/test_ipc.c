/* IPC wire format: layouts, round trips with descriptors, and every malformed message. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/ipc.h"

static int sv[2];

static void setup(void)
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static void teardown(void)
{
	close(sv[0]);
	close(sv[1]);
}

TestSuite(core_ipc, .init = setup, .fini = teardown);

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	for (struct dirent *e; d && (e = readdir(d));)
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

Test(core_ipc, layouts_are_fixed)
{
	/* Both processes are built from one tree, but the offsets are the contract. */
	cr_assert_eq(offsetof(struct ipc_bus_req, off), 12);
	cr_assert_eq(offsetof(struct ipc_bus_req, data), 16);
	cr_assert_eq(offsetof(struct ipc_bus_resp, data), 16);
	cr_assert_eq(offsetof(struct ipc_bus_resp, bars), 48);
	cr_assert_eq(offsetof(struct ipc_ctl_req, msi_addr), 16);
	cr_assert_eq(offsetof(struct ipc_ctl_req, off), 32);
}

Test(core_ipc, round_trip_without_fds)
{
	struct ipc_bus_req q = {.op = IPC_BAR_READ, .seq = 7, .bar = 0, .len = 4, .off = 0x14};
	cr_assert_eq(ipc_send(sv[0], &q, sizeof(q), NULL, 0), 0);
	struct ipc_bus_req got;
	unsigned nfds = 9;
	cr_assert_eq(ipc_recv(sv[1], &got, sizeof(got), NULL, 0, &nfds), 0);
	cr_assert_eq(nfds, 0);
	cr_assert_eq(memcmp(&q, &got, sizeof(q)), 0);
}

Test(core_ipc, round_trip_with_fd)
{
	int efd = eventfd(0, EFD_CLOEXEC);
	struct ipc_ctl_req q = {.op = IPC_CTL_IOEVENTFD, .seq = 1, .assign = 1, .off = 0x2000};
	cr_assert_eq(ipc_send(sv[0], &q, sizeof(q), &efd, 1), 0);
	struct ipc_ctl_req got;
	int fds[IPC_MAX_FDS];
	unsigned nfds = 0;
	cr_assert_eq(ipc_recv(sv[1], &got, sizeof(got), fds, 1, &nfds), 0);
	cr_assert_eq(nfds, 1);
	/* The received descriptor is the same eventfd, and close-on-exec. */
	uint64_t v = 5;
	cr_assert_eq(write(efd, &v, sizeof(v)), 8);
	cr_assert_eq(read(fds[0], &v, sizeof(v)), 8);
	cr_assert_eq(v, 5);
	cr_assert(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
	close(fds[0]);
	close(efd);
}

Test(core_ipc, wrong_sizes_refused)
{
	char small[31] = {0}, big[64] = {0};
	struct ipc_bus_req got;
	cr_assert_eq(ipc_send(sv[0], small, sizeof(small), NULL, 0), 0);
	cr_assert_eq(ipc_recv(sv[1], &got, sizeof(got), NULL, 0, NULL), -EBADMSG);
	cr_assert_eq(ipc_send(sv[0], big, sizeof(big), NULL, 0), 0);
	cr_assert_eq(ipc_recv(sv[1], &got, sizeof(got), NULL, 0, NULL), -EBADMSG);
	/* A good message after the bad ones still gets through: one datagram each. */
	struct ipc_bus_req q = {.op = IPC_HELLO};
	cr_assert_eq(ipc_send(sv[0], &q, sizeof(q), NULL, 0), 0);
	cr_assert_eq(ipc_recv(sv[1], &got, sizeof(got), NULL, 0, NULL), 0);
	cr_assert_eq(got.op, IPC_HELLO);
}

Test(core_ipc, unexpected_fds_are_closed)
{
	int before = count_fds();
	int efd[2] = {eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC)};
	struct ipc_bus_req q = {.op = IPC_CFG_WRITE};
	struct ipc_bus_req got;
	/* The bus socket takes no descriptors at all. */
	cr_assert_eq(ipc_send(sv[0], &q, sizeof(q), efd, 2), 0);
	cr_assert_eq(ipc_recv(sv[1], &got, sizeof(got), NULL, 0, NULL), -EBADMSG);
	/* The control socket takes one; two is one too many. */
	int fds[IPC_MAX_FDS];
	cr_assert_eq(ipc_send(sv[0], &q, sizeof(q), efd, 2), 0);
	cr_assert_eq(ipc_recv(sv[1], &got, sizeof(got), fds, 1, NULL), -EBADMSG);
	close(efd[0]);
	close(efd[1]);
	cr_assert_eq(count_fds(), before, "received descriptors leaked");
}

Test(core_ipc, too_many_fds_to_send)
{
	int fds[3] = {0, 1, 2};
	struct ipc_bus_req q = {0};
	cr_assert_eq(ipc_send(sv[0], &q, sizeof(q), fds, 3), -EINVAL);
}

Test(core_ipc, eof_and_dead_peer)
{
	struct ipc_bus_req got;
	close(sv[0]);
	cr_assert_eq(ipc_recv(sv[1], &got, sizeof(got), NULL, 0, NULL), -EPIPE);
	/* Sending to a closed peer is an error, never SIGPIPE. */
	cr_assert_eq(ipc_send(sv[1], &got, sizeof(got), NULL, 0), -EPIPE);
	sv[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
}
