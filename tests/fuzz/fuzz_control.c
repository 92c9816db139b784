/*
 * Fuzz target "control": the control socket (core/control.c, its line
 * framing, JSON envelope and the VM commands of core/control_vm.c; hostile
 * input 25). The real server thread runs once with ringvm's command table
 * over a stand-in VM (no vCPUs, two --block specs, no device processes);
 * each input is what one client sends before closing its side. Invariant:
 * every reply is one JSON object per line carrying "ok", and the server
 * closes the connection once it has answered.
 */
#define FUZZ_TARGET control
#include "tests/fuzz/fuzz.h"

#include <json-c/json.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/control.h"
#include "core/control_vm.h"
#include "core/vm.h"
#include "devices/virtio/registry.h"

static struct vm vm;
static struct vm_config cfg;
static char sock_path[108];
static char reply[1u << 20];

static void teardown(void)
{
	control_destroy(vm.control); /* stops the thread and removes the socket file */
}

static void setup(void)
{
	snprintf(sock_path, sizeof(sock_path), "/tmp/ringvm-fuzz-control-%d.sock", (int)getpid());
	cfg.socket_path = sock_path;
	cfg.kernel = "/boot/fuzz-kernel";
	cfg.mem_mib = 256;
	cfg.ncpus = 2;
	cfg.devs[0] = (struct vm_device_spec){registry_find("block"), "path=/img/data.raw,id=data"};
	cfg.devs[1] = (struct vm_device_spec){registry_find("rng"), ""};
	cfg.devs[2] = (struct vm_device_spec){registry_find("block"), "/img/root.qcow2,ro"};
	cfg.ndevs = 3;
	vm.cfg = &cfg;
	vm.vm_fd = vm.kvm_fd = -1;
	vm.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	FUZZ_CHECK(vm.stop_fd >= 0, "eventfd");
	FUZZ_CHECK(control_vm_create(&vm) == 0 && control_vm_start(&vm) == 0, "control socket");
	atexit(teardown);
}

static void check_replies(char *buf, size_t len)
{
	char *line = buf, *end = buf + len;
	while (line < end) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		FUZZ_CHECK(nl, "a reply without its newline");
		*nl = 0;
		struct json_object *o = json_tokener_parse(line);
		FUZZ_CHECK(o && json_object_is_type(o, json_type_object), "reply is not an object: %.200s",
		           line);
		struct json_object *ok;
		FUZZ_CHECK(json_object_object_get_ex(o, "ok", &ok), "reply without ok: %.200s", line);
		json_object_put(o);
		line = nl + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!vm.control)
		setup();
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	FUZZ_CHECK(fd >= 0, "socket");
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", control_path(vm.control));
	FUZZ_CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect: %s",
	           strerror(errno));
	size_t sent = 0, got = 0;
	bool wr_open = true;
	/* Send and read at once: replies may fill the socket before we finish sending. */
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN | (wr_open ? POLLOUT : 0)};
		int n = poll(&p, 1, 30000); /* generous: the machines are shared and loaded */
		if (n < 0 && errno == EINTR)
			continue; /* libFuzzer's -timeout alarm lands on this thread now and then */
		FUZZ_CHECK(n > 0, "the server stopped answering (%s)", n < 0 ? strerror(errno) : "timeout");
		if (wr_open && (p.revents & POLLOUT)) {
			if (sent < size) {
				ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
				if (w > 0)
					sent += (size_t)w;
			}
			if (sent == size) {
				shutdown(fd, SHUT_WR);
				wr_open = false;
			}
		}
		if (p.revents & (POLLIN | POLLHUP)) {
			ssize_t r = recv(fd, reply + got, sizeof(reply) - 1 - got, MSG_DONTWAIT);
			if (r == 0)
				break;
			if (r > 0)
				got += (size_t)r;
			FUZZ_CHECK(got < sizeof(reply) - 1, "more than 1 MiB of replies");
		}
	}
	close(fd);
	check_replies(reply, got);
	/* "stop" and "pause" change the stand-in VM: undo for the next input. */
	atomic_store(&vm.stopping, false);
	atomic_store(&vm.pause_requested, false);
	uint64_t v;
	while (read(vm.stop_fd, &v, sizeof(v)) > 0)
		;
	return 0;
}
