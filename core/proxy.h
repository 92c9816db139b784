/*
 * The main process's stand-in for a device that lives in another process.
 * It sits in a PCI slot and, while the guest has memory decoding enabled, on
 * the MMIO bus at the device's BARs, and forwards every access over the
 * device's bus socket: reads wait for the reply (bounded: a device that does
 * not answer in PROXY_REPLY_TIMEOUT_MS is declared dead), writes are posted
 * but stay in order. It watches the guest's BAR and command-register writes
 * itself, so the bus ranges and the device's ioeventfds follow a moved BAR
 * without trusting the device to report it. It also serves the device's
 * VM-control requests (MSI routes, ioeventfds), validating each one.
 */
#ifndef RINGVM_CORE_PROXY_H
#define RINGVM_CORE_PROXY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include "core/ipc.h"
#include "core/irqroute.h"
#include "core/vm.h"
#include "jail/jail.h"

#define PROXY_REPLY_TIMEOUT_MS 5000
#define PROXY_MAX_VECTORS      64
#define PROXY_MAX_IOEVENTFDS   64

struct proxy;

struct proxy_bar {
	struct proxy *proxy;
	unsigned index;
	struct ipc_bar_info info;
	uint32_t reg_lo, reg_hi; /* latched BAR register values */
	uint64_t mapped_at;      /* guest address while on the bus */
	bool mapped;
};

struct proxy {
	struct vm *vm;
	struct irqroute *routes;
	char name[16];
	unsigned slot;
	int bus_sock, ctl_sock;
	pid_t pid;
	struct jail_child child;   /* the device process (pidfd, reaped status) */
	pthread_mutex_t reap_lock; /* the control thread and shutdown may both reap */
	/*
	 * Two locks, never held together: lock serialises request/reply on
	 * bus_sock (a vCPU may hold it while the device works); state_lock guards
	 * BAR mappings and ioeventfds, which the vmctl thread changes while
	 * serving the device — so a device that asks for an ioeventfd while a
	 * vCPU waits for its reply cannot deadlock the two.
	 */
	pthread_mutex_t lock;
	pthread_mutex_t state_lock;
	uint32_t seq;
	atomic_bool dead;
	int reply_timeout_ms; /* PROXY_REPLY_TIMEOUT_MS; tests shorten it */
	atomic_bool shutting_down;
	uint16_t command; /* latched PCI command register */
	struct proxy_bar bars[IPC_MAX_BARS];
	struct {
		int irqfd; /* -1: vector not set up */
		int gsi;
	} vec[PROXY_MAX_VECTORS];
	struct {
		int fd;
		uint8_t bar;
		uint32_t off;
		bool registered; /* currently known to KVM at bars[bar].mapped_at + off */
	} ioev[PROXY_MAX_IOEVENTFDS];
	unsigned nioev;
	/*
	 * Device-specific VM-control requests (any op but MSI_ROUTE and
	 * IOEVENTFD), served on the vmctl thread: the device's registry hook
	 * and its main-process state, set before the vmctl thread starts.
	 * NULL: refused with -EOPNOTSUPP.
	 */
	int (*dev_vmctl)(void *state, const struct ipc_ctl_req *req, int *fd_out);
	void *dev_state;
	struct ipc_bus_req hello; /* sent by proxy_start, answered in proxy_connect */
};

/*
 * Take over the main-process ends of a freshly spawned device's sockets and
 * its jail_child and post the HELLO, without waiting: the device sets up its
 * jail meanwhile, so the VMM starts several devices and creates its vCPUs in
 * parallel with them. 0 or -errno (logged). Either way the proxy owns the
 * sockets and the child afterwards: call proxy_shutdown() and proxy_destroy().
 */
int proxy_start(struct proxy *p, struct vm *vm, struct irqroute *routes, const char *name,
		unsigned slot, int bus_sock, int ctl_sock, const struct jail_child *child)
	__attribute__((warn_unused_result));

/*
 * Wait for the HELLO reply (bounded by reply_timeout_ms), check it, program
 * the initial BAR addresses from *mmio_next (advanced past them) and plug into
 * the proxy's PCI slot. Called in slot order so BAR addresses are the same on
 * every run. 0 or -errno (logged).
 */
int proxy_connect(struct proxy *p, uint64_t *mmio_next) __attribute__((warn_unused_result));

/* proxy_start and proxy_connect in one. */
int proxy_init(struct proxy *p, struct vm *vm, struct irqroute *routes, const char *name,
	       unsigned slot, int bus_sock, int ctl_sock, const struct jail_child *child,
	       uint64_t *mmio_next) __attribute__((warn_unused_result));

/*
 * Reap the device if it has exited (timeout_ms 0: just check; -1: wait).
 * Returns 0 with *status (wait(2)-style) once reaped, -ETIMEDOUT while it
 * runs. Thread-safe; repeated calls return the same status.
 */
int proxy_reap(struct proxy *p, int *status, int timeout_ms);

/* Serve one message from ctl_sock (called when it is readable). -errno when the device must die. */
int proxy_handle_ctl(struct proxy *p) __attribute__((warn_unused_result));

/*
 * Ask the device to finish and exit, wait up to timeout_ms for it, SIGKILL it
 * otherwise, and reap it. Returns the wait status (as waitpid) or -errno.
 */
int proxy_shutdown(struct proxy *p, int timeout_ms);

/* Describe how the device process ended, from a wait status, into buf. */
const char *proxy_describe_exit(int status, char *buf, size_t len);

/* Close everything (after proxy_shutdown). */
void proxy_destroy(struct proxy *p);

#endif
