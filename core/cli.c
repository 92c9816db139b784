/*
 * `ringvm run` options: parsing (long and short forms, --opt=val and --opt val,
 * repeatable options), validation with one clear line per error, and the
 * man-page style help generated from the same tables.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "core/cli.h"
#include "core/log.h"
#include "devices/virtio/registry.h"

#define MAX_MEM_MIB (1024u * 1024u) /* 1 TiB */

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	*out = v;
	return *end ? -EINVAL : 0;
}

static int opt_mem(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	uint64_t v;
	char buf[32];
	size_t n = strlen(arg);
	uint64_t mul = 1;
	/* Plain MiB as crosvm takes it, with an optional M or G suffix for convenience. */
	if (n > 0 && n < sizeof(buf) && (arg[n - 1] == 'G' || arg[n - 1] == 'M')) {
		mul = arg[n - 1] == 'G' ? 1024 : 1;
		memcpy(buf, arg, n - 1);
		buf[n - 1] = 0;
		arg = buf;
	}
	if (parse_u64(arg, &v) < 0 || v == 0 || v > MAX_MEM_MIB / mul) {
		snprintf(err, errlen, "--mem: '%s' is not a memory size in MiB (1..%u)", arg,
			 MAX_MEM_MIB);
		return -EINVAL;
	}
	cfg->mem_mib = v * mul;
	return 0;
}

static int opt_cpus(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	uint64_t v;
	if (parse_u64(arg, &v) < 0 || v == 0 || v > 1024) {
		snprintf(err, errlen, "--cpus: '%s' is not a vCPU count (1..1024)", arg);
		return -EINVAL;
	}
	cfg->ncpus = (unsigned)v;
	return 0;
}

static int opt_params(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	size_t old = cfg->cmdline ? strlen(cfg->cmdline) : 0;
	size_t add = strlen(arg);
	char *p = realloc(cfg->cmdline, old + add + 2);
	if (!p) {
		snprintf(err, errlen, "--params: out of memory");
		return -ENOMEM;
	}
	if (old)
		p[old++] = ' ';
	memcpy(p + old, arg, add + 1);
	cfg->cmdline = p;
	return 0;
}

static int opt_initrd(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	if (!*arg) {
		snprintf(err, errlen, "--initrd: empty path");
		return -EINVAL;
	}
	cfg->initrd = arg;
	return 0;
}

static int opt_serial(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	if (strcmp(arg, "stdout") == 0) {
		cfg->serial = SERIAL_STDOUT;
	} else if (strcmp(arg, "none") == 0) {
		cfg->serial = SERIAL_NONE;
	} else if (strncmp(arg, "file=", 5) == 0 && arg[5]) {
		cfg->serial = SERIAL_FILE;
		cfg->serial_path = arg + 5;
	} else {
		snprintf(err, errlen, "--serial: '%s' is not one of stdout, file=PATH, none", arg);
		return -EINVAL;
	}
	return 0;
}

static int opt_metrics_file(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	if (!*arg) {
		snprintf(err, errlen, "--metrics-file: empty path");
		return -EINVAL;
	}
	cfg->metrics_file = arg;
	return 0;
}

static int opt_socket(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	if (!*arg) {
		snprintf(err, errlen, "--socket: empty path");
		return -EINVAL;
	}
	cfg->socket_path = arg;
	return 0;
}

/* --config is read before everything else (load_config); here it is only skipped. */
static int opt_config(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	(void)cfg, (void)arg, (void)err, (void)errlen;
	return 0;
}

static int opt_no_i8042(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	(void)arg, (void)err, (void)errlen;
	cfg->no_i8042 = true;
	return 0;
}

static int opt_no_rtc(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	(void)arg, (void)err, (void)errlen;
	cfg->no_rtc = true;
	return 0;
}

static int opt_log_level(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	(void)cfg;
	if (log_parse_level(arg, &log_level) < 0) {
		snprintf(err, errlen, "--log-level: '%s' is not one of error, warn, info, debug",
			 arg);
		return -EINVAL;
	}
	return 0;
}

static int opt_disable_sandbox(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	(void)arg, (void)err, (void)errlen;
	cfg->disable_sandbox = true;
	return 0;
}

static int opt_seccomp_log(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	(void)arg, (void)err, (void)errlen;
	cfg->seccomp_log = true;
	return 0;
}

static const struct cli_option sandbox_opts[] = {
	{"disable-sandbox", 0, NULL,
	 "Run device processes without the jail (no namespaces, no seccomp,\n"
	 "capabilities kept): for debugging only.",
	 opt_disable_sandbox},
	{"seccomp-log", 0, NULL,
	 "Log a device's forbidden system calls (kernel audit log) instead of\n"
	 "killing it: for debugging a device's allowlist.",
	 opt_seccomp_log},
};

static const struct cli_option core_opts[] = {
	{"config", 0, "FILE",
	 "Read settings from FILE, a JSON object whose keys are this command's\n"
	 "long option names (\"mem\", \"cpus\", \"params\", \"socket\", \"block\",\n"
	 "\"disable_sandbox\"...; '_' and '-' are the same) plus \"kernel\".\n"
	 "Values: a string or number for an option with an argument, an array\n"
	 "of strings for a repeatable one (params, block), true/false for a\n"
	 "flag (\"rng\": false is --no-rng). Flags given on the command line\n"
	 "override the file: a scalar flag replaces the file's value, -p\n"
	 "replaces its params, a KERNEL argument its kernel; devices from both\n"
	 "are added. An unknown key or a wrong type is an error (status 2).\n"
	 "Example: {\"kernel\": \"probe.elf\", \"mem\": 512, \"params\": \"probe=hello\"}",
	 opt_config},
	{"cpus", 'c', "N", "Number of vCPUs (default 1, at most what KVM allows).", opt_cpus},
	{"initrd", 'i', "PATH", "Initial ramdisk loaded for a Linux kernel (PVH: module 0).",
	 opt_initrd},
	{"log-level", 0, "LEVEL", "error, warn (default), info or debug; messages go to stderr.",
	 opt_log_level},
	{"mem", 'm', "MIB", "Guest RAM in MiB (default 256; suffix G for GiB).", opt_mem},
	{"metrics-file", 0, "PATH",
	 "At shutdown, write every device's metrics (request counts, bytes,\n"
	 "service-time percentiles) to PATH as JSON (devices/virtio/README.md).",
	 opt_metrics_file},
	{"no-i8042", 0, NULL, "Leave out the i8042 controller (the guest then cannot reset via it).",
	 opt_no_i8042},
	{"no-rtc", 0, NULL, "Leave out the CMOS real-time clock.", opt_no_rtc},
	{"params", 'p', "STR",
	 "Kernel command line; repeatable, the values are joined with spaces.", opt_params},
	{"serial", 0, "MODE",
	 "Where COM1 goes: stdout (default), file=PATH or none. With stdout,\n"
	 "standard input feeds the UART (a terminal is put in raw mode\n"
	 "and restored on exit).",
	 opt_serial},
	{"socket", 's', "PATH",
	 "Serve the control socket at PATH (created mode 0600, removed on\n"
	 "exit); if PATH is a directory, at PATH/ringvm-<pid>.sock. One JSON\n"
	 "object per line each way (docs/control.md); 'ringvm stop|pause|\n"
	 "resume|status|metrics SOCKET' and 'ringvm disk resize' use it.",
	 opt_socket},
};

/* Every option table of `run`, sorted by group; device modules add theirs here. */
static const struct cli_option_table run_tables[] = {
	{"VM options", core_opts, sizeof(core_opts) / sizeof(core_opts[0])},
	{"Sandbox options", sandbox_opts, sizeof(sandbox_opts) / sizeof(sandbox_opts[0])},
};

/*
 * Device options come from the device registry (devices/virtio/registry.c):
 * each device file names its option there, so adding a device never touches
 * this file. A default-on device also gets --no-<option>.
 */
static int add_device(struct vm_config *cfg, const struct registry_entry *e, const char *opts)
{
	if (cfg->ndevs == VM_MAX_DEVICES) {
		fprintf(stderr, "ringvm run: --%s: at most %d devices\n", e->option, VM_MAX_DEVICES);
		return 2;
	}
	for (unsigned i = 0; e->single && i < cfg->ndevs; i++)
		if (cfg->devs[i].entry == e) {
			fprintf(stderr, "ringvm run: --%s: at most one such device\n", e->option);
			return 2;
		}
	if (e->default_on) {
		/* --rng after --no-rng turns it back on; given twice, it stays one device. */
		for (size_t i = 0; registry_at(i); i++)
			if (registry_at(i) == e)
				cfg->disabled_defaults &= ~(1ul << i);
		for (unsigned i = 0; i < cfg->ndevs; i++)
			if (cfg->devs[i].entry == e)
				return 0;
	}
	cfg->devs[cfg->ndevs++] = (struct vm_device_spec){.entry = e, .opts = opts ? opts : ""};
	return 0;
}

static void add_default_devices(struct vm_config *cfg)
{
	for (size_t i = 0; registry_at(i); i++) {
		const struct registry_entry *e = registry_at(i);
		if (e->default_on && !(cfg->disabled_defaults & (1ul << i)))
			(void)add_device(cfg, e, "");
	}
}

static void print_device_help(FILE *f)
{
	fprintf(f, "\nDevice options (each device runs in its own sandboxed process)\n");
	for (size_t i = 0; registry_at(i); i++) {
		const struct registry_entry *e = registry_at(i);
		fprintf(f, "    --%s%s%s\n", e->option, e->meta ? " " : "", e->meta ? e->meta : "");
		if (e->default_on)
			fprintf(f, "    --no-%s\n", e->option);
		const char *h = e->help ? e->help : "";
		while (*h) {
			size_t n = strcspn(h, "\n");
			fprintf(f, "        %.*s\n", (int)n, h);
			h += n + (h[n] == '\n');
		}
	}
}

void cli_config_defaults(struct vm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mem_mib = 256;
	cfg->ncpus = 1;
	cfg->serial = SERIAL_STDOUT;
}

void cli_config_free(struct vm_config *cfg)
{
	free(cfg->cmdline);
	cfg->cmdline = NULL;
	for (unsigned i = 0; i < cfg->n_config_strs; i++)
		free(cfg->config_strs[i]);
	free(cfg->config_strs);
	cfg->config_strs = NULL;
	cfg->n_config_strs = 0;
	json_object_put(cfg->config_json);
	cfg->config_json = NULL;
}

void cli_print_run_help(FILE *f)
{
	fputs("NAME\n"
	      "    ringvm run - boot a virtual machine\n"
	      "\n"
	      "SYNOPSIS\n"
	      "    ringvm run [OPTIONS] KERNEL\n"
	      "\n"
	      "DESCRIPTION\n"
	      "    Boots KERNEL in a new KVM virtual machine. KERNEL may be a PVH ELF\n"
	      "    (such as the probe guest, tests/guest/probe.elf), an uncompressed ELF\n"
	      "    vmlinux or a Linux bzImage (boot protocol 2.06 or later); the format\n"
	      "    is detected from the file. No firmware runs: ringvm loads the kernel,\n"
	      "    writes the memory map, MP and ACPI tables and starts the boot vCPU at\n"
	      "    the kernel's entry point.\n",
	      f);
	for (size_t t = 0; t < sizeof(run_tables) / sizeof(run_tables[0]); t++) {
		fprintf(f, "\n%s\n", run_tables[t].group);
		for (size_t i = 0; i < run_tables[t].n; i++) {
			const struct cli_option *o = &run_tables[t].opts[i];
			char head[64];
			if (o->short_name)
				snprintf(head, sizeof(head), "-%c, --%s%s%s", o->short_name, o->name,
					 o->meta ? " " : "", o->meta ? o->meta : "");
			else
				snprintf(head, sizeof(head), "--%s%s%s", o->name, o->meta ? " " : "",
					 o->meta ? o->meta : "");
			fprintf(f, "    %s\n", head);
			const char *h = o->help;
			while (*h) {
				size_t n = strcspn(h, "\n");
				fprintf(f, "        %.*s\n", (int)n, h);
				h += n + (h[n] == '\n');
			}
		}
	}
	print_device_help(f);
	fputs("\n    -h, --help\n"
	      "        Show this help and exit.\n"
	      "\n"
	      "SIGNALS\n"
	      "    SIGINT, SIGTERM, SIGHUP\n"
	      "        Stop the VM in order, as the control command 'stop' does: the\n"
	      "        vCPUs stop, every device process finishes its requests and\n"
	      "        exits, then ringvm exits with status 0. A second signal forces\n"
	      "        it: the device processes are killed, the control socket is\n"
	      "        removed and ringvm exits at once with status 128 + signal.\n"
	      "\n"
	      "EXIT STATUS\n"
	      "    0  the guest reset (i8042 0xFE, ACPI) or shut down, or a stop was\n"
	      "       requested ('ringvm stop', SIGINT, SIGTERM, SIGHUP)\n"
	      "    1  a VMM or KVM error (including a KVM emulation failure)\n"
	      "    2  bad arguments or --config file, an unusable --socket path, or a\n"
	      "       kernel/initrd that cannot be loaded\n"
	      "    3  the guest crashed (triple fault)\n"
	      "    4  a device process died or stopped answering\n"
	      "    128+N  forced exit on a second signal N (143 for SIGTERM)\n"
	      "\n"
	      "EXAMPLES\n"
	      "    ringvm run -p probe=hello,pci,timer tests/guest/probe.elf\n"
	      "    ringvm run -c 2 -m 512 -i initrd.img -p console=ttyS0 vmlinux\n"
	      "    ringvm run -s /run/ringvm --config vm.json    (then: ringvm status /run/ringvm)\n",
	      f);
}

static const struct cli_option *find_long(const char *name, size_t len)
{
	for (size_t t = 0; t < sizeof(run_tables) / sizeof(run_tables[0]); t++)
		for (size_t i = 0; i < run_tables[t].n; i++) {
			const struct cli_option *o = &run_tables[t].opts[i];
			if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
				return o;
		}
	return NULL;
}

static const struct cli_option *find_short(char c)
{
	for (size_t t = 0; t < sizeof(run_tables) / sizeof(run_tables[0]); t++)
		for (size_t i = 0; i < run_tables[t].n; i++)
			if (run_tables[t].opts[i].short_name == c)
				return &run_tables[t].opts[i];
	return NULL;
}

/* ---- --config FILE ---- */

static int usage_error(const char *fmt, const char *a);

#define CONFIG_MAX_ARGS 256

/* The synthetic arguments a config file turns into (put before the real ones). */
struct config_args {
	char *v[CONFIG_MAX_ARGS];
	int n;
};

static int keep_str(struct vm_config *cfg, char *s, char **out)
{
	char **p = s ? realloc(cfg->config_strs, (cfg->n_config_strs + 1) * sizeof(*p)) : NULL;
	if (!p) {
		free(s);
		return -ENOMEM;
	}
	cfg->config_strs = p;
	p[cfg->n_config_strs++] = s;
	*out = s;
	return 0;
}

static int push_arg(struct vm_config *cfg, struct config_args *ca, const char *fmt,
		    const char *a)
{
	char *s;
	if (ca->n == CONFIG_MAX_ARGS)
		return -E2BIG;
	if (asprintf(&s, fmt, a) < 0)
		return -ENOMEM;
	return keep_str(cfg, s, &ca->v[ca->n++]);
}

/* Push --name VALUE for a string or integer JSON value. */
static int push_value(struct vm_config *cfg, struct config_args *ca, const char *name,
		      struct json_object *v)
{
	char num[32];
	const char *val;
	if (json_object_is_type(v, json_type_string))
		val = json_object_get_string(v);
	else if (json_object_is_type(v, json_type_int)) {
		snprintf(num, sizeof(num), "%lld", (long long)json_object_get_int64(v));
		val = num;
	} else
		return -EINVAL;
	int r = push_arg(cfg, ca, "--%s", name);
	return r ? r : push_arg(cfg, ca, "%s", val);
}

/* A string, or (when many) an array of strings: one --name VALUE per element. */
static int push_values(struct vm_config *cfg, struct config_args *ca, const char *name,
		       struct json_object *v, bool many)
{
	if (!many || !json_object_is_type(v, json_type_array))
		return push_value(cfg, ca, name, v);
	for (size_t i = 0; i < json_object_array_length(v); i++) {
		struct json_object *e = json_object_array_get_idx(v, i);
		if (!json_object_is_type(e, json_type_string))
			return -EINVAL;
		int r = push_value(cfg, ca, name, e);
		if (r)
			return r;
	}
	return 0;
}

static int config_error(const char *file, const char *key, const char *what)
{
	fprintf(stderr, "ringvm run: --config %s: key '%s': %s\n", file, key, what);
	return 2;
}

/* One key of the file: the same settings as the flags, by long option name. */
static int config_key(struct vm_config *cfg, struct config_args *ca, const char *file,
		      const char *key, struct json_object *v)
{
	char name[64];
	size_t len = strlen(key);
	if (len >= sizeof(name))
		return config_error(file, key, "unknown key");
	for (size_t i = 0; i <= len; i++)
		name[i] = key[i] == '_' ? '-' : key[i];
	bool is_bool = json_object_is_type(v, json_type_boolean);
	int r;
	if (strcmp(name, "kernel") == 0) {
		if (!json_object_is_type(v, json_type_string) || !*json_object_get_string(v))
			return config_error(file, key, "must be a path (a string)");
		cfg->kernel = json_object_get_string(v);
		return 0;
	}
	const struct cli_option *o = strcmp(name, "config") ? find_long(name, len) : NULL;
	const struct registry_entry *e = o ? NULL : registry_find(name);
	if (o && !o->meta) {
		if (!is_bool)
			return config_error(file, key, "must be true or false");
		r = json_object_get_boolean(v) ? push_arg(cfg, ca, "--%s", name) : 0;
	} else if (o) {
		r = push_values(cfg, ca, name, v, strcmp(name, "params") == 0);
		if (r == -EINVAL)
			return config_error(file, key,
					    strcmp(name, "params") == 0
						    ? "must be a string or an array of strings"
						    : "must be a string or a number");
	} else if (e && !e->meta) {
		if (!is_bool)
			return config_error(file, key, "must be true or false");
		r = json_object_get_boolean(v) ? push_arg(cfg, ca, "--%s", name)
		    : e->default_on	       ? push_arg(cfg, ca, "--no-%s", name)
					       : 0;
	} else if (e) {
		r = push_values(cfg, ca, name, v, true);
		if (r == -EINVAL)
			return config_error(file, key, "must be a string or an array of strings");
	} else if (strncmp(name, "no-", 3) == 0 && (e = registry_find(name + 3)) &&
		   e->default_on && !e->meta) {
		if (!is_bool)
			return config_error(file, key, "must be true or false");
		r = json_object_get_boolean(v) ? push_arg(cfg, ca, "--%s", name) : 0;
	} else {
		return config_error(file, key, "unknown key");
	}
	if (r == -E2BIG)
		return config_error(file, key, "too many values in the file");
	if (r < 0)
		return config_error(file, key, strerror(-r));
	return 0;
}

/* Read --config FILE into cfg->kernel and synthetic arguments. 0, or 2 after one error line. */
static int load_config(struct vm_config *cfg, const char *file, struct config_args *ca)
{
	enum { MAX_CONFIG = 1 << 20 };
	FILE *f = fopen(file, "re");
	char *text = malloc(MAX_CONFIG + 1);
	size_t n = f && text ? fread(text, 1, MAX_CONFIG + 1, f) : 0;
	int rerr = !f ? errno : (!text ? ENOMEM : (ferror(f) ? EIO : 0));
	if (f)
		fclose(f);
	if (rerr || n > MAX_CONFIG) {
		free(text);
		fprintf(stderr, "ringvm run: --config %s: %s\n", file,
			rerr ? strerror(rerr) : "larger than 1 MiB");
		return 2;
	}
	text[n] = '\0'; /* the strspn past the object below must stop at the end of the file */
	struct json_tokener *tok = json_tokener_new();
	if (!tok) {
		free(text);
		return usage_error("out of memory%s", "");
	}
	struct json_object *root = json_tokener_parse_ex(tok, text, (int)n);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	if (root && jerr == json_tokener_success)
		end += strspn(text + end, " \t\r\n");
	if (!root || jerr != json_tokener_success || end != n) {
		unsigned line = 1;
		for (size_t i = 0; i < end && i < n; i++)
			line += text[i] == '\n';
		fprintf(stderr, "ringvm run: --config %s: line %u: not valid JSON (%s)\n", file, line,
			jerr == json_tokener_continue	 ? "unexpected end of file"
			: jerr == json_tokener_success ? "text after the object"
							 : json_tokener_error_desc(jerr));
		json_object_put(root);
		json_tokener_free(tok);
		free(text);
		return 2;
	}
	json_tokener_free(tok);
	free(text);
	cfg->config_json = root;
	if (!json_object_is_type(root, json_type_object)) {
		fprintf(stderr, "ringvm run: --config %s: not a JSON object\n", file);
		return 2;
	}
	json_object_object_foreach(root, key, v)
	{
		int r = config_key(cfg, ca, file, key, v);
		if (r)
			return r;
	}
	return 0;
}

/* Is a (an option without "=value") followed by its value as the next argument? */
static bool takes_separate_value(const char *a)
{
	if (a[0] != '-' || !a[1])
		return false;
	if (a[1] != '-') {
		const struct cli_option *o = a[2] ? NULL : find_short(a[1]);
		return o && o->meta;
	}
	if (strchr(a, '='))
		return false;
	const struct cli_option *o = find_long(a + 2, strlen(a + 2));
	const struct registry_entry *e = o ? NULL : registry_find(a + 2);
	return (o && o->meta) || (e && e->meta);
}

/* The --config argument in argv (before any "--"), or NULL. */
static const char *find_config_arg(int argc, char **argv, int *bad)
{
	const char *file = NULL;
	*bad = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strncmp(argv[i], "--config=", 9) == 0)
			file = argv[i] + 9;
		else if (strcmp(argv[i], "--config") == 0) {
			if (i + 1 >= argc) {
				*bad = 1;
				return NULL;
			}
			file = argv[++i];
		} else if (takes_separate_value(argv[i]))
			i++; /* the value of -p, --block...: not an option even if it looks like one */
	}
	return file;
}

static int usage_error(const char *fmt, const char *a)
{
	fprintf(stderr, "ringvm run: ");
	fprintf(stderr, fmt, a);
	fprintf(stderr, " (see 'ringvm run --help')\n");
	return 2;
}

static int parse_args(int argc, char **argv, int nfile, const char *file,
		      struct vm_config *cfg);

int cli_parse_run(int argc, char **argv, struct vm_config *cfg)
{
	struct config_args ca = {.n = 0};
	int bad;
	const char *file = find_config_arg(argc, argv, &bad);
	if (bad)
		return usage_error("option '%s' needs a value", "--config");
	if (file) {
		int r = load_config(cfg, file, &ca);
		if (r)
			return r;
	}
	/* The file's settings become arguments placed before the command line's. */
	char **all = malloc(((size_t)argc + (size_t)ca.n + 1) * sizeof(*all));
	if (!all)
		return usage_error("out of memory%s", "");
	all[0] = argv[0];
	memcpy(all + 1, ca.v, (size_t)ca.n * sizeof(*all));
	memcpy(all + 1 + ca.n, argv + 1, (size_t)(argc - 1) * sizeof(*all));
	all[argc + ca.n] = NULL;
	int r = parse_args(argc + ca.n, all, ca.n, file, cfg);
	free(all);
	return r;
}

/* argv[1..nfile] came from --config file (for error messages and overrides). */
static int parse_args(int argc, char **argv, int nfile, const char *file, struct vm_config *cfg)
{
	char err[256];
	bool only_positional = false;
	bool kernel_from_file = cfg->kernel != NULL;
	bool params_from_flags = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const struct cli_option *o = NULL;
		const char *val = NULL;
		bool inline_val = false;
		if (only_positional || a[0] != '-' || a[1] == 0) {
			if (cfg->kernel && !kernel_from_file)
				return usage_error("unexpected extra argument '%s'", a);
			cfg->kernel = a; /* the command line's KERNEL overrides the file's */
			kernel_from_file = false;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_positional = true;
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			cli_print_run_help(stdout);
			return 1;
		}
		if (a[1] == '-') {
			const char *eq = strchr(a + 2, '=');
			size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
			o = find_long(a + 2, len);
			if (eq) {
				val = eq + 1;
				inline_val = true;
			}
		} else {
			o = find_short(a[1]);
			if (a[2]) {
				val = a + 2;
				inline_val = true;
			}
		}
		if (!o && a[1] == '-') {
			const char *name = a + 2;
			const char *eq = strchr(name, '=');
			char nm[64];
			size_t len = eq ? (size_t)(eq - name) : strlen(name);
			if (len >= sizeof(nm))
				return usage_error("unknown option '%s'", a);
			memcpy(nm, name, len);
			nm[len] = 0;
			const struct registry_entry *e = registry_find(nm);
			if (e) {
				const char *v = NULL;
				if (!e->meta && eq)
					return usage_error("option '%s' takes no value", a);
				if (e->meta) {
					if (eq)
						v = eq + 1;
					else if (i + 1 < argc)
						v = argv[++i];
					else
						return usage_error("option '%s' needs a value", a);
				}
				int rr = add_device(cfg, e, v);
				if (rr)
					return rr;
				continue;
			}
			if (strncmp(nm, "no-", 3) == 0 && (e = registry_find(nm + 3)) && e->default_on &&
			    !eq) {
				for (size_t k = 0; registry_at(k); k++)
					if (registry_at(k) == e)
						cfg->disabled_defaults |= 1ul << k;
				for (unsigned k = 0; k < cfg->ndevs; k++)
					if (cfg->devs[k].entry == e)
						cfg->devs[k--] = cfg->devs[--cfg->ndevs];
				continue;
			}
		}
		if (!o)
			return usage_error("unknown option '%s'", a);
		if (!o->meta && inline_val)
			return usage_error("option '%s' takes no value", a);
		if (o->meta && !inline_val) {
			if (i + 1 >= argc)
				return usage_error("option '%s' needs a value", a);
			val = argv[++i];
		}
		if (o->handle == opt_params && i > nfile && !params_from_flags) {
			/* -p on the command line replaces the file's params. */
			params_from_flags = true;
			free(cfg->cmdline);
			cfg->cmdline = NULL;
		}
		err[0] = 0;
		if (o->handle(cfg, val, err, sizeof(err)) < 0) {
			fprintf(stderr, "ringvm run: %s%s%s%s\n", i <= nfile ? "--config " : "",
				i <= nfile ? file : "", i <= nfile ? ": " : "",
				err[0] ? err : "invalid option value");
			return 2;
		}
	}
	if (!cfg->kernel)
		return usage_error("missing KERNEL%s", "");
	add_default_devices(cfg);
	/*
	 * Run every device factory once now, then drop what it made: a bad
	 * device option, a missing or locked image... is a usage error (status
	 * 2, the factory's one line on stderr) before any VM exists. vm_run
	 * creates the devices again for real (see devmgr.c).
	 */
	struct registry_ctx ctx = {.ncpus = cfg->ncpus};
	for (unsigned i = 0; i < cfg->ndevs; i++) {
		void *state = NULL;
		const struct registry_entry *e = cfg->devs[i].entry;
		int rr = e->create(&ctx, cfg->devs[i].opts, &state);
		if (rr < 0) {
			if (rr == -ENOMEM) /* every other failure was named by the factory */
				fprintf(stderr, "ringvm run: --%s: %s\n", e->option, strerror(-rr));
			return 2;
		}
		e->destroy(state);
	}
	if (!cfg->cmdline) {
		cfg->cmdline = strdup("");
		if (!cfg->cmdline)
			return usage_error("out of memory%s", "");
	}
	return 0;
}
