/*
 * The VM side of the control socket: one function per command of
 * docs/control.md, each a thin layer over vm.c (stop, pause, resume) or
 * devmgr.c (device pids, IPC_METRICS, IPC_RESIZE) that builds the reply's JSON result.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/control.h"
#include "core/control_vm.h"
#include "core/devmgr.h"
#include "core/log.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/registry.h"

#define PAUSE_TIMEOUT_MS 5000

long long control_vm_rss_kib(int pid)
{
	char path[64], line[256];
	long long kib = -ENOENT;
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/status", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/status");
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static const char *state_of(struct vm *vm)
{
	if (atomic_load(&vm->stopping))
		return "stopping";
	return atomic_load(&vm->pause_requested) ? "paused" : "running";
}

static struct json_object *state_result(struct vm *vm)
{
	struct json_object *o = json_object_new_object();
	if (o)
		json_object_object_add(o, "state", json_object_new_string(state_of(vm)));
	return o;
}

static int cmd_stop(void *ctx, struct json_object *req, struct json_object **res, char *err,
		    size_t errlen)
{
	struct vm *vm = ctx;
	(void)req, (void)err, (void)errlen;
	vm_request_stop(vm, VM_EXIT_OK, "stop requested on the control socket");
	*res = state_result(vm);
	return 0;
}

static int cmd_pause(void *ctx, struct json_object *req, struct json_object **res, char *err,
		     size_t errlen)
{
	struct vm *vm = ctx;
	(void)req;
	int r = vm_pause(vm, PAUSE_TIMEOUT_MS);
	if (r == -ETIMEDOUT)
		snprintf(err, errlen, "not every vCPU stopped within %d ms (still pausing)",
			 PAUSE_TIMEOUT_MS);
	else if (r == -ESHUTDOWN)
		snprintf(err, errlen, "the VM is stopping");
	if (r < 0)
		return r;
	*res = state_result(vm);
	return 0;
}

static int cmd_resume(void *ctx, struct json_object *req, struct json_object **res, char *err,
		      size_t errlen)
{
	struct vm *vm = ctx;
	(void)req;
	int r = vm_resume(vm);
	if (r < 0) {
		snprintf(err, errlen, "the VM is stopping");
		return r;
	}
	*res = state_result(vm);
	return 0;
}

static double uptime_s(const struct vm *vm)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	return (double)(now - vm->start_ns) / 1e9;
}

static void add_str(struct json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

static void add_u64(struct json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_uint64(v));
}

static int cmd_status(void *ctx, struct json_object *req, struct json_object **res, char *err,
		      size_t errlen)
{
	struct vm *vm = ctx;
	(void)req, (void)err, (void)errlen;
	struct json_object *o = state_result(vm), *devs = json_object_new_array();
	if (!o || !devs) {
		json_object_put(o);
		json_object_put(devs);
		return -ENOMEM;
	}
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	json_object_object_add(o, "uptime_s", json_object_new_double(uptime_s(vm)));
	json_object_object_add(o, "vcpus", json_object_new_int((int)vm->ncpus));
	add_u64(o, "memory_mib", vm->cfg->mem_mib);
	add_str(o, "kernel", vm->cfg->kernel);
	add_str(o, "socket", control_path(vm->control));
	struct devmgr_info info;
	for (unsigned i = 0; devmgr_info(vm, i, &info) == 0; i++) {
		struct json_object *d = json_object_new_object();
		if (!d)
			continue;
		json_object_object_add(d, "index", json_object_new_int((int)i));
		add_str(d, "option", info.option);
		json_object_object_add(d, "pid", json_object_new_int(info.pid));
		json_object_object_add(d, "sandboxed", json_object_new_boolean(info.sandboxed));
		json_object_object_add(d, "alive", json_object_new_boolean(info.alive));
		json_object_object_add(d, "pci_slot", json_object_new_int((int)info.slot));
		json_object_array_add(devs, d);
	}
	json_object_object_add(o, "devices", devs);
	*res = o;
	return 0;
}

static void add_rss(struct json_object *o, int pid)
{
	long long kib = control_vm_rss_kib(pid);
	json_object_object_add(o, "rss_kib", kib >= 0 ? json_object_new_int64(kib) : NULL);
}

static void add_counters(struct json_object *d, const struct ipc_metrics *m)
{
	add_str(d, "name", m->name);
	add_u64(d, "requests", m->requests);
	add_u64(d, "reads", m->reads);
	add_u64(d, "writes", m->writes);
	add_u64(d, "flushes", m->flushes);
	add_u64(d, "discards", m->discards);
	add_u64(d, "write_zeroes", m->write_zeroes);
	add_u64(d, "bytes_read", m->bytes_read);
	add_u64(d, "bytes_written", m->bytes_written);
	add_u64(d, "errors", m->errors);
	add_u64(d, "inflight", m->inflight);
	add_u64(d, "max_inflight", m->max_inflight);
	add_u64(d, "notifications", m->notifications);
	add_u64(d, "interrupts", m->interrupts);
	struct json_object *svc = json_object_new_object();
	if (!svc)
		return;
	add_u64(svc, "count", m->svc_count);
	add_u64(svc, "mean", m->svc_count ? m->svc_sum_ns / m->svc_count : 0);
	add_u64(svc, "p50", ipc_metrics_percentile(m, 50));
	add_u64(svc, "p99", ipc_metrics_percentile(m, 99));
	add_u64(svc, "max", m->svc_max_ns);
	json_object_object_add(d, "service_ns", svc);
}

static int cmd_metrics(void *ctx, struct json_object *req, struct json_object **res, char *err,
		       size_t errlen)
{
	struct vm *vm = ctx;
	(void)req;
	if (atomic_load(&vm->stopping)) {
		snprintf(err, errlen, "the VM is stopping");
		return -ESHUTDOWN;
	}
	struct json_object *o = json_object_new_object(), *devs = json_object_new_array();
	struct json_object *proc = json_object_new_object();
	struct ipc_metrics *m = malloc(sizeof(*m)); /* 2.5 KiB: not on the thread's stack */
	if (!o || !devs || !proc || !m) {
		json_object_put(o);
		json_object_put(devs);
		json_object_put(proc);
		free(m);
		return -ENOMEM;
	}
	json_object_object_add(proc, "pid", json_object_new_int(getpid()));
	add_rss(proc, 0);
	json_object_object_add(o, "process", proc);
	struct devmgr_info info;
	for (unsigned i = 0; devmgr_info(vm, i, &info) == 0; i++) {
		struct json_object *d = json_object_new_object();
		if (!d)
			continue;
		json_object_object_add(d, "index", json_object_new_int((int)i));
		add_str(d, "option", info.option);
		json_object_object_add(d, "pid", json_object_new_int(info.pid));
		add_rss(d, info.pid);
		int r = info.alive ? devmgr_metrics(vm, i, m) : -EPIPE;
		json_object_object_add(d, "ok", json_object_new_boolean(r == 0));
		if (r == 0)
			add_counters(d, m);
		else
			add_str(d, "error", strerror(-r));
		json_object_array_add(devs, d);
	}
	free(m);
	json_object_object_add(o, "devices", devs);
	*res = o;
	return 0;
}

/* SIZE: bytes as a JSON integer, or a string of digits with an optional K, M, G or T suffix. */
static int parse_size(struct json_object *v, uint64_t *out)
{
	if (json_object_is_type(v, json_type_int)) {
		int64_t n = json_object_get_int64(v);
		if (n < 0)
			return -EINVAL;
		*out = (uint64_t)n;
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return -EINVAL;
	const char *s = json_object_get_string(v);
	char *end;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long n = strtoull(s, &end, 10);
	unsigned shift = 0;
	switch (*end) {
	case 'T': shift += 10; /* fall through */
	case 'G': shift += 10; /* fall through */
	case 'M': shift += 10; /* fall through */
	case 'K': shift += 10; end++; break;
	default: break;
	}
	if (errno || *end || (shift && n > (~0ull >> shift)))
		return -EINVAL;
	*out = (uint64_t)n << shift;
	return 0;
}

/*
 * Is block device spec opts the one named id: its index among --block, its
 * id= or, without one, its default id (the image's file name)?
 */
static bool block_matches(const char *opts, unsigned ncpus, unsigned index, const char *id)
{
	char num[16], err[256];
	snprintf(num, sizeof(num), "%u", index);
	if (strcmp(id, num) == 0)
		return true;
	static struct blk_opts o; /* 4 KiB; only the control thread parses here */
	if (blk_parse_opts(opts, ncpus, &o, err, sizeof(err)) < 0)
		return false; /* cannot happen: the VM was built from it */
	return strcmp(o.id, id) == 0;
}

static int cmd_disk_resize(void *ctx, struct json_object *req, struct json_object **res,
			   char *err, size_t errlen)
{
	struct vm *vm = ctx;
	struct json_object *jd, *js;
	uint64_t size;
	if (!json_object_object_get_ex(req, "disk", &jd) ||
	    !json_object_is_type(jd, json_type_string)) {
		snprintf(err, errlen, "disk-resize needs \"disk\": the block device's index or id");
		return -EINVAL;
	}
	if (!json_object_object_get_ex(req, "size", &js) || parse_size(js, &size) < 0) {
		snprintf(err, errlen, "disk-resize needs \"size\": bytes, or a string like \"8G\"");
		return -EINVAL;
	}
	if (size == 0 || size % 512) {
		snprintf(err, errlen, "size %llu: must be a positive multiple of 512 bytes",
			 (unsigned long long)size);
		return -EINVAL;
	}
	if (atomic_load(&vm->stopping)) {
		snprintf(err, errlen, "the VM is stopping");
		return -ESHUTDOWN;
	}
	const char *id = json_object_get_string(jd);
	unsigned index = 0;
	for (unsigned i = 0; i < vm->cfg->ndevs; i++) {
		const struct vm_device_spec *d = &vm->cfg->devs[i];
		if (strcmp(d->entry->option, "block") != 0)
			continue;
		unsigned bi = index++;
		if (!block_matches(d->opts, vm->cfg->ncpus, bi, id))
			continue;
		uint64_t now = 0;
		char why[192];
		int r = devmgr_resize(vm, i, size, &now, why, sizeof(why));
		if (r < 0) {
			snprintf(err, errlen, "disk %.64s: %s", id, why);
			return r;
		}
		struct json_object *o = json_object_new_object();
		if (!o)
			return -ENOMEM;
		add_str(o, "disk", id);
		json_object_object_add(o, "index", json_object_new_int((int)bi));
		add_u64(o, "size", now);
		*res = o;
		log_info("disk %s resized to %llu bytes", id, (unsigned long long)now);
		return 0;
	}
	snprintf(err, errlen, "no block device '%.64s' (give its index or its id)", id);
	return -ENOENT;
}

static const struct control_command vm_commands[] = {
	{"disk-resize", cmd_disk_resize},
	{"metrics", cmd_metrics},
	{"pause", cmd_pause},
	{"resume", cmd_resume},
	{"status", cmd_status},
	{"stop", cmd_stop},
};

int control_vm_create(struct vm *vm)
{
	char err[256];
	if (!vm->cfg->socket_path)
		return 0;
	struct control_config cc = {
		.path = vm->cfg->socket_path,
		.cmds = vm_commands,
		.ncmds = sizeof(vm_commands) / sizeof(vm_commands[0]),
		.ctx = vm,
	};
	int r = control_create(&cc, &vm->control, err, sizeof(err));
	if (r < 0)
		log_error("%s", err);
	else
		log_info("control socket %s", control_path(vm->control));
	return r;
}

int control_vm_start(struct vm *vm)
{
	int r = control_start(vm->control);
	if (r < 0)
		log_error("cannot start the control thread: %s", strerror(-r));
	return r;
}
