/*
 * `ringvm run --socket/--config` parsing (no KVM: the file's settings become
 * arguments in front of the command line's) and the control subcommands'
 * argument and connection errors.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cli.h"
#include "core/control_client.h"
#include "devices/virtio/registry.h"

static char dir[64], path[128];

static void write_config(const char *text)
{
	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/ringvm-cfg-XXXXXX");
		cr_assert_not_null(mkdtemp(dir));
	}
	snprintf(path, sizeof(path), "%s/vm.json", dir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

static void cleanup(void)
{
	unlink(path);
	rmdir(dir);
	dir[0] = 0;
}

static int parse(struct vm_config *cfg, const char *const *args)
{
	char *argv[32];
	int argc = 0;
	argv[argc++] = "run";
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	cli_config_defaults(cfg);
	return cli_parse_run(argc, argv, cfg);
}

static bool has_device(const struct vm_config *cfg, const char *option)
{
	for (unsigned i = 0; i < cfg->ndevs; i++)
		if (strcmp(cfg->devs[i].entry->option, option) == 0)
			return true;
	return false;
}

Test(core_control_cli, socket_option)
{
	struct vm_config cfg;
	const char *a[] = {"-s", "/run/x.sock", "k.elf", NULL};
	cr_assert_eq(parse(&cfg, a), 0);
	cr_assert_str_eq(cfg.socket_path, "/run/x.sock");
	cli_config_free(&cfg);
	const char *b[] = {"--socket=/tmp", "k.elf", NULL};
	cr_assert_eq(parse(&cfg, b), 0);
	cr_assert_str_eq(cfg.socket_path, "/tmp");
	cli_config_free(&cfg);
	const char *c[] = {"--socket=", "k.elf", NULL};
	cr_assert_eq(parse(&cfg, c), 2);
	cli_config_free(&cfg);
}

Test(core_control_cli, config_sets_everything)
{
	struct vm_config cfg;
	write_config("{\"kernel\": \"probe.elf\", \"mem\": 512, \"cpus\": \"2\",\n"
		     " \"params\": [\"a=1\", \"b=2\"], \"initrd\": \"rd.img\",\n"
		     " \"serial\": \"none\", \"disable_sandbox\": true, \"seccomp-log\": false,\n"
		     " \"socket\": \"/tmp/s.sock\", \"no_rtc\": true, \"rng\": false,\n"
		     " \"metrics_file\": \"/tmp/m.json\", \"log_level\": \"warn\"}\n");
	const char *a[] = {"--config", path, NULL};
	cr_assert_eq(parse(&cfg, a), 0);
	cr_assert_str_eq(cfg.kernel, "probe.elf");
	cr_assert_eq(cfg.mem_mib, 512);
	cr_assert_eq(cfg.ncpus, 2);
	cr_assert_str_eq(cfg.cmdline, "a=1 b=2");
	cr_assert_str_eq(cfg.initrd, "rd.img");
	cr_assert_eq(cfg.serial, SERIAL_NONE);
	cr_assert(cfg.disable_sandbox);
	cr_assert(!cfg.seccomp_log);
	cr_assert(cfg.no_rtc);
	cr_assert(!cfg.no_i8042);
	cr_assert_str_eq(cfg.socket_path, "/tmp/s.sock");
	cr_assert_str_eq(cfg.metrics_file, "/tmp/m.json");
	cr_assert(!has_device(&cfg, "rng"));
	cli_config_free(&cfg);
	cleanup();
}

Test(core_control_cli, flags_override_the_file)
{
	struct vm_config cfg;
	write_config("{\"kernel\": \"file.elf\", \"mem\": 512, \"params\": \"from=file\","
		     " \"rng\": false}");
	char cfgarg[160];
	snprintf(cfgarg, sizeof(cfgarg), "--config=%s", path);
	const char *b[] = {"-m", "64", cfgarg, "-p", "x=1", "-p", "y=2", "--rng", "cli.elf", NULL};
	cr_assert_eq(parse(&cfg, b), 0);
	cr_assert_eq(cfg.mem_mib, 64);
	cr_assert_str_eq(cfg.cmdline, "x=1 y=2");
	cr_assert_str_eq(cfg.kernel, "cli.elf");
	cr_assert(has_device(&cfg, "rng"));
	cli_config_free(&cfg);
	/* Without flags for them, the file's values stand. */
	const char *c[] = {"--config", path, NULL};
	cr_assert_eq(parse(&cfg, c), 0);
	cr_assert_eq(cfg.mem_mib, 512);
	cr_assert_str_eq(cfg.cmdline, "from=file");
	cr_assert_str_eq(cfg.kernel, "file.elf");
	cli_config_free(&cfg);
	/* Two kernels on the command line are still an error. */
	const char *d[] = {"--config", path, "a.elf", "b.elf", NULL};
	cr_assert_eq(parse(&cfg, d), 2);
	cli_config_free(&cfg);
	cleanup();
}

Test(core_control_cli, bad_config_files_exit_2)
{
	static const char *const cases[] = {
		"{\"kernel\": \"k\", \"bogus\": 1}",         /* unknown key */
		"{\"kernel\": \"k\", \"config\": \"x\"}",    /* no nesting */
		"{\"kernel\": \"k\", \"help\": true}",
		"{\"kernel\": \"k\", \"mem\": true}",        /* wrong types */
		"{\"kernel\": \"k\", \"mem\": 1.5}",
		"{\"kernel\": \"k\", \"mem\": [\"1\"]}",
		"{\"kernel\": \"k\", \"mem\": \"lots\"}",    /* a bad value, as for the flag */
		"{\"kernel\": \"k\", \"cpus\": 0}",
		"{\"kernel\": \"k\", \"params\": [1]}",
		"{\"kernel\": \"k\", \"params\": {}}",
		"{\"kernel\": \"k\", \"disable_sandbox\": \"yes\"}",
		"{\"kernel\": \"k\", \"rng\": \"on\"}",
		"{\"kernel\": 5}",
		"{\"kernel\": \"\"}",
		"[\"kernel\"]",                               /* not an object */
		"{\"kernel\": \"k\"",                         /* not JSON */
		"{\"kernel\": \"k\"} {}",
		"",
		"{}", /* valid, but no kernel anywhere */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vm_config cfg;
		write_config(cases[i]);
		const char *a[] = {"--config", path, NULL};
		cr_assert_eq(parse(&cfg, a), 2, "case %zu: %s", i, cases[i]);
		cli_config_free(&cfg);
	}
	struct vm_config cfg;
	const char *missing[] = {"--config", "/nonexistent/vm.json", "k", NULL};
	cr_assert_eq(parse(&cfg, missing), 2);
	cli_config_free(&cfg);
	const char *novalue[] = {"k", "--config", NULL};
	cr_assert_eq(parse(&cfg, novalue), 2);
	cli_config_free(&cfg);
	/* "--config" as the value of -p is a kernel parameter, not a file. */
	const char *asvalue[] = {"-p", "--config", "k", NULL};
	cr_assert_eq(parse(&cfg, asvalue), 0);
	cr_assert_str_eq(cfg.cmdline, "--config");
	cli_config_free(&cfg);
	cleanup();
}

static int client(const char *const *args)
{
	char *argv[8];
	int argc = 0;
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	return control_client_main(argc, argv);
}

Test(core_control_cli, client_usage_and_unreachable)
{
	const char *none[] = {"status", NULL};
	cr_assert_eq(client(none), CONTROL_CLIENT_USAGE);
	const char *two[] = {"stop", "a", "b", NULL};
	cr_assert_eq(client(two), CONTROL_CLIENT_USAGE);
	const char *opt[] = {"pause", "--frobnicate", "s", NULL};
	cr_assert_eq(client(opt), CONTROL_CLIENT_USAGE);
	const char *disk[] = {"disk", "grow", "0", "1G", "s", NULL};
	cr_assert_eq(client(disk), CONTROL_CLIENT_USAGE);
	const char *gone[] = {"status", "/nonexistent/ringvm.sock", NULL};
	cr_assert_eq(client(gone), CONTROL_CLIENT_UNREACHABLE);
	char d[] = "/tmp/ringvm-nosock-XXXXXX";
	cr_assert_not_null(mkdtemp(d));
	const char *empty[] = {"metrics", d, NULL};
	cr_assert_eq(client(empty), CONTROL_CLIENT_UNREACHABLE);
	rmdir(d);
	cr_assert(control_client_is_command("resume"));
	cr_assert(!control_client_is_command("run"));
}
