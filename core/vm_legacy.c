/*
 * Wiring of the legacy devices. The UART's input comes from a thread that
 * polls stdin; when the guest's FIFO is full it waits for the UART's
 * rx-ready notification instead of dropping bytes. A terminal on stdin is
 * put in raw mode (Ctrl-A x quits) and restored on every exit path.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <termios.h>
#include <unistd.h>

#include "arch/x86_64/layout.h"
#include "core/log.h"
#include "core/vm_legacy.h"
#include "devices/legacy/i8042.h"
#include "devices/legacy/port80.h"
#include "devices/legacy/rtc.h"
#include "devices/legacy/serial.h"

struct legacy {
	struct irq_line com1_irq;
	pthread_t input_thread;
	bool input_started;
	int rx_ready_fd; /* eventfd: the UART has room again */
	int quit_fd;     /* eventfd: the input thread must exit */
	bool tty_raw;
	struct termios saved_tty;
};

/* One VM per process: the terminal state is restored from here by atexit too. */
static struct legacy legacy_state = {.rx_ready_fd = -1, .quit_fd = -1};

static void restore_tty(void)
{
	if (legacy_state.tty_raw) {
		tcsetattr(STDIN_FILENO, TCSANOW, &legacy_state.saved_tty);
		legacy_state.tty_raw = false;
	}
}

static void on_reset(void *opaque)
{
	vm_request_stop(opaque, VM_EXIT_OK, "guest requested a reset through the i8042");
}

static void on_rx_ready(void *opaque)
{
	(void)opaque;
	uint64_t one = 1;
	ssize_t w = write(legacy_state.rx_ready_fd, &one, sizeof(one));
	(void)w;
}

static int add(struct vm *vm, uint64_t base, uint64_t len, const struct bus_ops *ops, void *dev)
{
	int r = bus_add(&vm->pio, base, len, ops, dev);
	if (r < 0)
		log_error("cannot place %s at port 0x%llx: %s", ops->name,
			  (unsigned long long)base, strerror(-r));
	return r;
}

static int open_serial_out(struct vm *vm)
{
	switch (vm->cfg->serial) {
	case SERIAL_STDOUT:
		return STDOUT_FILENO;
	case SERIAL_NONE:
		return -1;
	case SERIAL_FILE:
		vm->serial_out_fd = open(vm->cfg->serial_path,
					 O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (vm->serial_out_fd < 0) {
			log_error("--serial file=%s: %s", vm->cfg->serial_path, strerror(errno));
			return -2;
		}
		return vm->serial_out_fd;
	}
	return -1;
}

int vm_legacy_create(struct vm *vm)
{
	struct legacy *l = &legacy_state;
	int r;
	int out = open_serial_out(vm);
	if (out == -2)
		return -EINVAL;
	l->rx_ready_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	l->quit_fd = eventfd(0, EFD_CLOEXEC);
	if (l->rx_ready_fd < 0 || l->quit_fd < 0)
		return -errno;
	irq_line_init(&l->com1_irq, vm->vm_fd, SERIAL_COM1_IRQ);
	r = serial_create(&vm->serial, &l->com1_irq, out);
	if (r < 0)
		return r;
	serial_set_rx_ready(vm->serial, on_rx_ready, NULL);
	r = add(vm, SERIAL_COM1_BASE, SERIAL_PORT_LEN, &serial_bus_ops, vm->serial);
	if (r < 0)
		return r;
	if (!vm->cfg->no_i8042) {
		r = i8042_create(&vm->i8042, on_reset, vm);
		if (r < 0)
			return r;
		r = add(vm, I8042_DATA_PORT, I8042_PORT_LEN, &i8042_data_ops, vm->i8042);
		if (r == 0)
			r = add(vm, I8042_COMMAND_PORT, I8042_PORT_LEN, &i8042_command_ops,
				vm->i8042);
		if (r < 0)
			return r;
	}
	if (!vm->cfg->no_rtc) {
		r = rtc_create(&vm->rtc, NULL, NULL);
		if (r < 0)
			return r;
		uint64_t ram = guest_mem_size(&vm->mem);
		uint64_t low = ram < X86_MMIO_HOLE_START ? ram : X86_MMIO_HOLE_START;
		rtc_set_mem_size(vm->rtc, low, ram - low);
		r = add(vm, RTC_PORT_BASE, RTC_PORT_LEN, &rtc_bus_ops, vm->rtc);
		if (r < 0)
			return r;
	}
	r = port80_create(&vm->port80);
	if (r < 0)
		return r;
	return add(vm, PORT80_PORT, PORT80_LEN, &port80_bus_ops, vm->port80);
}

/* Feed buf to the UART, waiting for room; returns false when told to quit. */
static bool feed(struct vm *vm, const uint8_t *buf, size_t n)
{
	struct legacy *l = &legacy_state;
	while (n) {
		size_t k = serial_push_input(vm->serial, buf, n);
		buf += k;
		n -= k;
		if (!n)
			break;
		struct pollfd p[2] = {{.fd = l->rx_ready_fd, .events = POLLIN},
				      {.fd = l->quit_fd, .events = POLLIN}};
		/* Also retry every 100 ms: loopback exit is signalled, but be robust. */
		if (poll(p, 2, 100) < 0 && errno != EINTR)
			return false;
		if (p[1].revents)
			return false;
		uint64_t v;
		ssize_t rd = read(l->rx_ready_fd, &v, sizeof(v));
		(void)rd;
	}
	return true;
}

static void *input_thread(void *arg)
{
	struct vm *vm = arg;
	struct legacy *l = &legacy_state;
	bool escape = false;
	for (;;) {
		struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
				      {.fd = l->quit_fd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		uint8_t buf[256];
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			break; /* EOF: the guest simply gets no more input */
		if (l->tty_raw) {
			/* Ctrl-A x leaves, Ctrl-A Ctrl-A sends one Ctrl-A (as QEMU's mux does). */
			size_t k = 0;
			for (ssize_t i = 0; i < n; i++) {
				if (escape) {
					escape = false;
					if (buf[i] == 'x') {
						vm_request_stop(vm, VM_EXIT_OK, "stopped from the console");
						return NULL;
					}
					if (buf[i] != 0x01)
						continue;
				} else if (buf[i] == 0x01) {
					escape = true;
					continue;
				}
				buf[k++] = buf[i];
			}
			n = (ssize_t)k;
		}
		if (!feed(vm, buf, (size_t)n))
			break;
	}
	return NULL;
}

int vm_legacy_start(struct vm *vm)
{
	struct legacy *l = &legacy_state;
	if (vm->cfg->serial != SERIAL_STDOUT)
		return 0;
	if (fcntl(STDIN_FILENO, F_GETFD) < 0)
		return 0; /* no stdin at all */
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &l->saved_tty) == 0) {
		struct termios raw = l->saved_tty;
		cfmakeraw(&raw);
		raw.c_oflag |= OPOST | ONLCR; /* keep host-side line endings sane for the VMM's own messages */
		if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) {
			l->tty_raw = true;
			atexit(restore_tty);
		}
	}
	int r = pthread_create(&l->input_thread, NULL, input_thread, vm);
	if (r) {
		restore_tty();
		log_error("cannot start the console input thread: %s", strerror(r));
		return -r;
	}
	pthread_setname_np(l->input_thread, "serial-in");
	l->input_started = true;
	return 0;
}

void vm_legacy_stop(struct vm *vm)
{
	(void)vm;
	struct legacy *l = &legacy_state;
	if (l->input_started) {
		uint64_t one = 1;
		ssize_t w = write(l->quit_fd, &one, sizeof(one));
		(void)w;
		pthread_join(l->input_thread, NULL);
		l->input_started = false;
	}
	restore_tty();
}

void vm_legacy_destroy(struct vm *vm)
{
	struct legacy *l = &legacy_state;
	vm_legacy_stop(vm);
	serial_destroy(vm->serial);
	if (vm->i8042)
		i8042_destroy(vm->i8042);
	if (vm->rtc)
		rtc_destroy(vm->rtc);
	if (vm->port80)
		port80_destroy(vm->port80);
	vm->serial = NULL;
	vm->i8042 = NULL;
	vm->rtc = NULL;
	vm->port80 = NULL;
	if (vm->serial_out_fd >= 0)
		close(vm->serial_out_fd);
	vm->serial_out_fd = -1;
	if (l->rx_ready_fd >= 0)
		close(l->rx_ready_fd);
	if (l->quit_fd >= 0)
		close(l->quit_fd);
	l->rx_ready_fd = l->quit_fd = -1;
}
