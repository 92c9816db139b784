/*
 * Spawning, watching and stopping device processes (see devmgr.h). The vmctl
 * thread is the only reader of the VM-control sockets and the only watcher of
 * the pidfds while the VM runs; the main thread takes over at shutdown.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arch/x86_64/layout.h"
#include "core/devmgr.h"
#include "core/irqroute.h"
#include "core/log.h"
#include "core/proxy.h"
#include "devices/virtio/devproc.h"
#include "devices/virtio/registry.h"

#define SHUTDOWN_TIMEOUT_MS 2000
#define METRICS_TIMEOUT_MS  2000
#define RESIZE_TIMEOUT_MS   10000 /* the device first lets its requests in flight finish */
#define MAX_RULES 128
#define BASE_KEEP_FDS 4 /* bus, ctl, memfd, stderr */
/* + 1: the jail's death pipe in its fork fallback (jail_death_fd). */
#define MAX_KEEP_FDS  (BASE_KEEP_FDS + REGISTRY_MAX_KEEP_FDS + 1)

struct devmgr_dev {
	const struct registry_entry *entry;
	void *state;
	struct proxy proxy;
	bool has_proxy;
};

struct devmgr {
	struct irqroute routes;
	bool routes_ok;
	unsigned n;
	struct devmgr_dev dev[VM_MAX_DEVICES];
	pthread_t thread;
	bool thread_started;
	int quit_fd;
	bool stopped;
};

/* What the unjailed child runs: drop inherited descriptors first, then the device. */
struct child_arg {
	struct devproc_args dp;
	int *keep; /* room for MAX_KEEP_FDS */
	unsigned nkeep;
	bool sandbox;
};

static int keep_only(const int *keep, unsigned n)
{
	/* keep is tiny and unsorted: close every gap between kept descriptors. */
	int sorted[MAX_KEEP_FDS];
	if (n > MAX_KEEP_FDS)
		return -E2BIG;
	for (unsigned i = 0; i < n; i++) {
		int v = keep[i];
		unsigned j = i;
		while (j > 0 && sorted[j - 1] > v) {
			sorted[j] = sorted[j - 1];
			j--;
		}
		sorted[j] = v;
	}
	int lo = 0;
	for (unsigned i = 0; i <= n; i++) {
		int hi = i < n ? sorted[i] - 1 : (int)(~0u >> 1);
		if (hi >= lo && syscall(SYS_close_range, (unsigned)lo, (unsigned)hi, 0) < 0)
			return -errno;
		if (i < n)
			lo = sorted[i] + 1;
	}
	return 0;
}

static int child_main(void *arg)
{
	struct child_arg *c = arg;
	/*
	 * The jail already closed everything not kept; without it (--disable-sandbox)
	 * the child would still hold /dev/kvm and the VM fd, so close them here too.
	 * The keep array is this process's own copy, so it can grow here.
	 */
	if (!c->sandbox && jail_death_fd() >= 0 && c->nkeep < MAX_KEEP_FDS)
		c->keep[c->nkeep++] = jail_death_fd();
	if (!c->sandbox && keep_only(c->keep, c->nkeep) < 0)
		return 1;
	return devproc_main(&c->dp);
}

static void log_spawn_failure(const char *option, int r, const struct jail_child *c)
{
	log_error("device %s: cannot start its process: %s%s%s", option, strerror(-r),
		  c->failed_stage[0] ? " at step " : "", c->failed_stage);
}

static int spawn_one(struct vm *vm, struct devmgr *m, struct devmgr_dev *d, unsigned slot)
{
	int bus[2] = {-1, -1}, ctl[2] = {-1, -1};
	int r;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, bus) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0) {
		r = -errno;
		log_error("device %s: socketpair: %s", d->entry->option, strerror(errno));
		goto err;
	}
	struct jail_syscall_rule rules[MAX_RULES];
	size_t nrules = devproc_jail_rules(d->entry, rules, MAX_RULES);
	if (nrules > MAX_RULES) {
		r = -E2BIG;
		log_error("device %s: allowlist too long", d->entry->option);
		goto err;
	}
	int keep[MAX_KEEP_FDS] = {bus[1], ctl[1], vm->mem.memfd, STDERR_FILENO};
	unsigned nkeep = BASE_KEEP_FDS;
	if (d->entry->keep_fds) {
		/* The device's own descriptors (image files): the device process opens nothing. */
		unsigned k = d->entry->keep_fds(d->state, keep + nkeep, REGISTRY_MAX_KEEP_FDS);
		nkeep += k < REGISTRY_MAX_KEEP_FDS ? k : REGISTRY_MAX_KEEP_FDS;
	}
	struct child_arg ca = {
		.dp = {.bus_sock = bus[1], .ctl_sock = ctl[1], .memfd = vm->mem.memfd,
		       .dev = d->entry, .dev_state = d->state},
		.keep = keep,
		.nkeep = nkeep,
		.sandbox = !vm->cfg->disable_sandbox,
	};
	char host[32];
	snprintf(host, sizeof(host), "ringvm-%s", d->entry->option);
	struct jail_config jc = {
		.sandbox = !vm->cfg->disable_sandbox,
		.seccomp_log = vm->cfg->seccomp_log,
		.hostname = host,
		.keep_fds = keep,
		.n_keep_fds = nkeep,
		.max_file_size = d->entry->max_file_size,
		.max_procs = d->entry->max_procs,
		.max_fds = d->entry->max_fds,
		.rules = rules,
		.n_rules = nrules,
		.pre_seccomp = devproc_pre_seccomp,
		.pre_seccomp_arg = &ca.dp,
	};
	struct jail_child child;
	r = jail_spawn_start(&jc, child_main, &ca, &child);
	if (r == -ENOSYS && strcmp(child.failed_stage, "clone3") == 0) {
		log_error("device %s: the sandbox needs clone3 and pidfd_open, which this "
			  "kernel (or valgrind) lacks; use --disable-sandbox",
			  d->entry->option);
		goto err;
	}
	if (r < 0) {
		log_spawn_failure(d->entry->option, r, &child);
		goto err;
	}
	close(bus[1]);
	close(ctl[1]);
	d->has_proxy = true;
	r = proxy_start(&d->proxy, vm, &m->routes, d->entry->option, slot, bus[0], ctl[0], &child);
	d->proxy.dev_vmctl = d->entry->vmctl;
	d->proxy.dev_state = d->state;
	return r;
err:
	for (int i = 0; i < 2; i++) {
		if (bus[i] >= 0)
			close(bus[i]);
		if (ctl[i] >= 0)
			close(ctl[i]);
	}
	return r;
}

int devmgr_create(struct vm *vm)
{
	const struct vm_config *cfg = vm->cfg;
	struct devmgr *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	vm->devmgr = m;
	m->quit_fd = eventfd(0, EFD_CLOEXEC);
	if (m->quit_fd < 0)
		return -errno;
	if (cfg->ndevs == 0)
		return 0; /* no MSI routes to manage: leave KVM's default routing alone */
	int r = irqroute_init(&m->routes, vm->vm_fd);
	if (r < 0) {
		log_error("KVM_SET_GSI_ROUTING: %s", strerror(-r));
		return r;
	}
	m->routes_ok = true;
	return 0;
}

int devmgr_spawn(struct vm *vm)
{
	const struct vm_config *cfg = vm->cfg;
	struct devmgr *m = vm->devmgr;
	int r;
	for (unsigned i = 0; i < cfg->ndevs; i++) {
		struct devmgr_dev *d = &m->dev[m->n++];
		d->entry = cfg->devs[i].entry;
		struct registry_ctx ctx = {.ncpus = cfg->ncpus};
		/* The command line already ran every factory once (cli.c), so
		 * bad options exit with status 2 there; what fails here is new
		 * (e.g. another process locked the image meanwhile). */
		r = d->entry->create(&ctx, cfg->devs[i].opts, &d->state);
		if (r < 0) {
			log_error("--%s: cannot create the device: %s", d->entry->option,
				  strerror(-r));
			return r;
		}
		r = spawn_one(vm, m, d, i + 1);
		if (r < 0)
			return r;
	}
	return 0;
}

int devmgr_connect(struct vm *vm)
{
	struct devmgr *m = vm->devmgr;
	uint64_t mmio_next = X86_PCI_MMIO_START;
	for (unsigned i = 0; i < m->n; i++) {
		struct proxy *p = &m->dev[i].proxy;
		int r = jail_spawn_finish(&p->child);
		if (r < 0) {
			log_spawn_failure(m->dev[i].entry->option, r, &p->child);
			atomic_store(&p->dead, true); /* reaped: nothing to shut down */
			return r;
		}
		r = proxy_connect(p, &mmio_next);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * A device's pidfd became readable, or its control socket broke (r < 0). A
 * socket that broke because the process is dying is reported as its death,
 * with how it died; a live process that broke the protocol is killed.
 */
static void device_failed(struct vm *vm, struct proxy *p, int r)
{
	char how[96], msg[192];
	int st;
	if (atomic_load(&p->shutting_down))
		return;
	if (proxy_reap(p, &st, r < 0 ? 1000 : 0) == 0) {
		snprintf(msg, sizeof(msg), "device %s (pid %d) %s", p->name, (int)p->pid,
			 proxy_describe_exit(st, how, sizeof(how)));
	} else {
		snprintf(msg, sizeof(msg), "device %s (pid %d) broke its VM-control protocol (%s)",
			 p->name, (int)p->pid, strerror(-r));
		if (jail_child_kill(&p->child) < 0)
			log_warn("device %s: cannot kill it", p->name);
	}
	atomic_store(&p->dead, true);
	vm_request_stop(vm, VM_EXIT_DEVICE, msg);
}

static void *vmctl_thread(void *arg)
{
	struct vm *vm = arg;
	struct devmgr *m = vm->devmgr;
	struct pollfd pfd[1 + 2 * VM_MAX_DEVICES];
	for (;;) {
		unsigned n = 0, who[2 * VM_MAX_DEVICES];
		pfd[n++] = (struct pollfd){.fd = m->quit_fd, .events = POLLIN};
		for (unsigned i = 0; i < m->n; i++) {
			struct proxy *p = &m->dev[i].proxy;
			if (!m->dev[i].has_proxy || atomic_load(&p->shutting_down))
				continue;
			who[n - 1] = i;
			pfd[n++] = (struct pollfd){.fd = p->ctl_sock, .events = POLLIN};
			who[n - 1] = i | 0x100; /* the pidfd */
			pfd[n++] = (struct pollfd){.fd = p->child.pidfd, .events = POLLIN};
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			vm_request_stop(vm, VM_EXIT_ERROR, "vmctl: poll failed");
			return NULL;
		}
		if (pfd[0].revents)
			return NULL;
		for (unsigned k = 1; k < n; k++) {
			if (!pfd[k].revents)
				continue;
			struct proxy *p = &m->dev[who[k - 1] & 0xff].proxy;
			if (atomic_load(&p->shutting_down))
				continue;
			int r = 0;
			if (!(who[k - 1] & 0x100))
				r = proxy_handle_ctl(p);
			if ((who[k - 1] & 0x100) || r < 0)
				device_failed(vm, p, r);
		}
	}
}

int devmgr_start(struct vm *vm)
{
	struct devmgr *m = vm->devmgr;
	int r = pthread_create(&m->thread, NULL, vmctl_thread, vm);
	if (r) {
		log_error("cannot start the vmctl thread: %s", strerror(r));
		return -r;
	}
	pthread_setname_np(m->thread, "vmctl");
	m->thread_started = true;
	return 0;
}

/*
 * IPC_METRICS on p's bus socket, under the lock that serialises the vCPUs'
 * request/reply pairs, so the reply read here is this request's. 0 or -errno.
 */
static int fetch_metrics(struct proxy *p, struct ipc_metrics *out)
{
	int r;
	if (atomic_load(&p->dead))
		return -EPIPE;
	pthread_mutex_lock(&p->lock);
	struct ipc_bus_req req = {.op = IPC_METRICS, .seq = ++p->seq};
	r = ipc_send(p->bus_sock, &req, sizeof(req), NULL, 0);
	if (r == 0) {
		struct pollfd pfd = {.fd = p->bus_sock, .events = POLLIN};
		int n;
		do
			n = poll(&pfd, 1, METRICS_TIMEOUT_MS);
		while (n < 0 && errno == EINTR);
		r = n > 0 ? ipc_recv(p->bus_sock, out, sizeof(*out), NULL, 0, NULL)
			  : (n == 0 ? -ETIMEDOUT : -errno);
	}
	pthread_mutex_unlock(&p->lock);
	if (r == 0 && (out->op != IPC_METRICS || out->seq != req.seq ||
		       out->version != IPC_METRICS_VERSION))
		r = -EBADMSG;
	if (r == 0)
		out->name[sizeof(out->name) - 1] = 0; /* the device's string: terminate it */
	return r < 0 ? r : out->result;
}

static void json_metrics(FILE *f, const struct ipc_metrics *m)
{
	double mean = m->svc_count ? (double)m->svc_sum_ns / (double)m->svc_count : 0;
	fprintf(f,
		"\"requests\": %" PRIu64 ", \"reads\": %" PRIu64 ", \"writes\": %" PRIu64
		", \"flushes\": %" PRIu64 ", \"discards\": %" PRIu64
		", \"write_zeroes\": %" PRIu64 ", \"get_ids\": %" PRIu64 ", \"other\": %" PRIu64
		",\n      \"bytes_read\": %" PRIu64 ", \"bytes_written\": %" PRIu64
		", \"errors\": %" PRIu64 ", \"inflight\": %" PRIu64
		", \"max_inflight\": %" PRIu64 ", \"notifications\": %" PRIu64
		", \"interrupts\": %" PRIu64 ",\n",
		m->requests, m->reads, m->writes, m->flushes, m->discards, m->write_zeroes,
		m->get_ids, m->other, m->bytes_read, m->bytes_written, m->errors, m->inflight,
		m->max_inflight, m->notifications, m->interrupts);
	fprintf(f,
		"      \"service_ns\": {\"count\": %" PRIu64 ", \"mean\": %.0f, \"p50\": %" PRIu64
		", \"p90\": %" PRIu64 ", \"p99\": %" PRIu64 ", \"p999\": %" PRIu64
		", \"max\": %" PRIu64 ",\n        \"histogram\": [",
		m->svc_count, mean, ipc_metrics_percentile(m, 50), ipc_metrics_percentile(m, 90),
		ipc_metrics_percentile(m, 99), ipc_metrics_percentile(m, 99.9), m->svc_max_ns);
	bool first = true;
	for (unsigned b = 0; b < IPC_METRICS_BUCKETS; b++) {
		if (!m->svc_hist[b])
			continue;
		fprintf(f, "%s[%" PRIu64 ", %" PRIu64 "]", first ? "" : ", ",
			ipc_metrics_bucket_lo(b), m->svc_hist[b]);
		first = false;
	}
	fprintf(f, "]}");
}

unsigned devmgr_count(struct vm *vm)
{
	return vm->devmgr ? vm->devmgr->n : 0;
}

int devmgr_info(struct vm *vm, unsigned i, struct devmgr_info *out)
{
	struct devmgr *m = vm->devmgr;
	if (!m || i >= m->n)
		return -ENOENT;
	struct devmgr_dev *d = &m->dev[i];
	*out = (struct devmgr_info){
		.option = d->entry->option,
		.slot = d->has_proxy ? d->proxy.slot : 0,
		.pid = d->has_proxy ? d->proxy.pid : -1,
		.pidfd = d->has_proxy && !d->proxy.child.forked ? d->proxy.child.pidfd : -1,
		.sandboxed = !vm->cfg->disable_sandbox,
		.alive = d->has_proxy && !atomic_load(&d->proxy.dead) &&
			 !atomic_load(&d->proxy.shutting_down),
	};
	return 0;
}

int devmgr_metrics(struct vm *vm, unsigned i, struct ipc_metrics *out)
{
	struct devmgr *m = vm->devmgr;
	if (!m || i >= m->n)
		return -ENOENT;
	if (!m->dev[i].has_proxy || atomic_load(&m->dev[i].proxy.shutting_down))
		return -EPIPE;
	return fetch_metrics(&m->dev[i].proxy, out);
}

/*
 * IPC_RESIZE on p's bus socket, under the lock that serialises the vCPUs'
 * request/reply pairs (as fetch_metrics). The device's result (0 or
 * -errno) and the size it has now in *now; -EPIPE/-ETIMEDOUT/-EBADMSG when
 * the exchange itself failed.
 */
static int resize_call(struct proxy *p, uint64_t size, uint64_t *now)
{
	struct ipc_bus_resp resp;
	int r;
	if (atomic_load(&p->dead))
		return -EPIPE;
	pthread_mutex_lock(&p->lock);
	struct ipc_bus_req req = {.op = IPC_RESIZE, .seq = ++p->seq, .data = size};
	r = ipc_send(p->bus_sock, &req, sizeof(req), NULL, 0);
	if (r == 0) {
		struct pollfd pfd = {.fd = p->bus_sock, .events = POLLIN};
		int n;
		do
			n = poll(&pfd, 1, RESIZE_TIMEOUT_MS);
		while (n < 0 && errno == EINTR);
		r = n > 0 ? ipc_recv(p->bus_sock, &resp, sizeof(resp), NULL, 0, NULL)
			  : (n == 0 ? -ETIMEDOUT : -errno);
	}
	pthread_mutex_unlock(&p->lock);
	if (r == 0 && (resp.op != IPC_RESIZE || resp.seq != req.seq))
		r = -EBADMSG;
	if (r < 0)
		return r;
	*now = resp.data;
	return resp.result;
}

int devmgr_resize(struct vm *vm, unsigned i, uint64_t size, uint64_t *now, char *err,
		  size_t errlen)
{
	struct devmgr *m = vm->devmgr;
	if (!m || i >= m->n) {
		snprintf(err, errlen, "no such device");
		return -ENOENT;
	}
	struct devmgr_dev *d = &m->dev[i];
	if (!d->entry->resize || !d->entry->resize_host) {
		snprintf(err, errlen, "a %s device cannot be resized", d->entry->option);
		return -ENOTSUP;
	}
	if (!d->has_proxy || atomic_load(&d->proxy.shutting_down) || atomic_load(&d->proxy.dead)) {
		snprintf(err, errlen, "the device process is gone");
		return -EPIPE;
	}
	/* The main process's part first: the jailed device cannot change a file's length. */
	int r = d->entry->resize_host(d->state, REGISTRY_RESIZE_PREPARE, size);
	if (r < 0) {
		snprintf(err, errlen, "%s", r == -EROFS    ? "the disk is read-only"
					   : r == -ENOTSUP ? "this disk cannot take that size (a qcow2 "
							     "image only grows; a block device keeps its size)"
					   : r == -EINVAL  ? "the size must be a positive multiple of 512"
							   : strerror(-r));
		return r;
	}
	r = resize_call(&d->proxy, size, now);
	if (r < 0) {
		snprintf(err, errlen, "the device refused the new size: %s", strerror(-r));
		/* A device that did not answer in time may still apply it: leave the file be. */
		if (r != -ETIMEDOUT) {
			int a = d->entry->resize_host(d->state, REGISTRY_RESIZE_ABORT, size);
			if (a < 0)
				log_warn("device %s: undoing a failed resize: %s", d->entry->option,
					 strerror(-a));
		}
		return r;
	}
	r = d->entry->resize_host(d->state, REGISTRY_RESIZE_COMMIT, size);
	if (r < 0)
		snprintf(err, errlen, "the guest sees the new size, but the image could not be "
				      "truncated: %s", strerror(-r));
	return r;
}

/* --metrics-file: every device's IPC_METRICS as JSON (format in devices/virtio/README.md). */
static void write_metrics(struct vm *vm, struct devmgr *m)
{
	const char *path = vm->cfg->metrics_file;
	FILE *f = fopen(path, "we");
	if (!f) {
		log_error("--metrics-file %s: %s", path, strerror(errno));
		return;
	}
	static struct ipc_metrics mt; /* 2.5 KiB; only this thread writes metrics */
	fprintf(f, "{\n  \"version\": %d,\n  \"devices\": [", IPC_METRICS_VERSION);
	for (unsigned i = 0; i < m->n; i++) {
		struct devmgr_dev *d = &m->dev[i];
		int r = d->has_proxy ? fetch_metrics(&d->proxy, &mt) : -ENODEV;
		fprintf(f, "%s\n    {\"index\": %u, \"option\": \"%s\", ", i ? "," : "", i,
			d->entry->option);
		if (r < 0) {
			log_warn("device %s: no metrics: %s", d->entry->option, strerror(-r));
			fprintf(f, "\"ok\": false, \"error\": \"%s\"}", strerror(-r));
			continue;
		}
		fprintf(f, "\"ok\": true, \"name\": \"");
		for (const char *c = mt.name; *c; c++)
			fputc(*c >= 0x20 && *c < 0x7f && *c != '"' && *c != '\\' ? *c : '?', f);
		fprintf(f, "\",\n      ");
		json_metrics(f, &mt);
		fprintf(f, "}");
	}
	fprintf(f, "\n  ]\n}\n");
	if (fclose(f) != 0)
		log_error("--metrics-file %s: %s", path, strerror(errno));
}

void devmgr_stop(struct vm *vm)
{
	struct devmgr *m = vm->devmgr;
	if (!m || m->stopped)
		return;
	m->stopped = true;
	/* Metrics before IPC_SHUTDOWN: afterwards the processes are gone. */
	if (vm->cfg->metrics_file)
		write_metrics(vm, m);
	/* Devices first (the vmctl thread still serves them while they finish), then the thread. */
	for (unsigned i = 0; i < m->n; i++) {
		if (!m->dev[i].has_proxy)
			continue;
		int st = proxy_shutdown(&m->dev[i].proxy, SHUTDOWN_TIMEOUT_MS);
		char how[96];
		if (st >= 0 && st != 0)
			log_debug("device %s %s at shutdown", m->dev[i].proxy.name,
				  proxy_describe_exit(st, how, sizeof(how)));
	}
	if (m->thread_started) {
		uint64_t one = 1;
		ssize_t w = write(m->quit_fd, &one, sizeof(one));
		(void)w;
		pthread_join(m->thread, NULL);
		m->thread_started = false;
	}
}

void devmgr_destroy(struct vm *vm)
{
	struct devmgr *m = vm->devmgr;
	if (!m)
		return;
	devmgr_stop(vm);
	for (unsigned i = 0; i < m->n; i++) {
		struct devmgr_dev *d = &m->dev[i];
		if (d->has_proxy)
			proxy_destroy(&d->proxy);
		if (d->state && d->entry->destroy)
			d->entry->destroy(d->state);
	}
	if (m->routes_ok)
		irqroute_destroy(&m->routes);
	if (m->quit_fd >= 0)
		close(m->quit_fd);
	free(m);
	vm->devmgr = NULL;
}
