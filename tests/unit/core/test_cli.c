/* `ringvm run` argument parsing: good forms, and every bad form exits 2. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "core/cli.h"
#include "core/log.h"

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

Test(core_cli, defaults)
{
	struct vm_config cfg;
	const char *a[] = {"k.elf", NULL};
	cr_assert_eq(parse(&cfg, a), 0);
	cr_assert_str_eq(cfg.kernel, "k.elf");
	cr_assert_eq(cfg.mem_mib, 256);
	cr_assert_eq(cfg.ncpus, 1);
	cr_assert_eq(cfg.serial, SERIAL_STDOUT);
	cr_assert_str_eq(cfg.cmdline, "");
	cli_config_free(&cfg);
}

Test(core_cli, all_forms)
{
	struct vm_config cfg;
	const char *a[] = {"-m", "512", "--cpus=2", "-p", "probe=hello", "--params",
			   "a=b c", "-i", "rd.img", "--serial", "file=/tmp/x", "--no-i8042",
			   "--no-rtc", "-m1G", "--log-level=warn", "--", "-kernel-with-dash", NULL};
	cr_assert_eq(parse(&cfg, a), 0);
	cr_assert_eq(cfg.mem_mib, 1024);
	cr_assert_eq(cfg.ncpus, 2);
	cr_assert_str_eq(cfg.cmdline, "probe=hello a=b c");
	cr_assert_str_eq(cfg.initrd, "rd.img");
	cr_assert_eq(cfg.serial, SERIAL_FILE);
	cr_assert_str_eq(cfg.serial_path, "/tmp/x");
	cr_assert(cfg.no_i8042);
	cr_assert(cfg.no_rtc);
	cr_assert_str_eq(cfg.kernel, "-kernel-with-dash");
	cli_config_free(&cfg);
}

struct bad_case {
	const char *args[6];
};

Test(core_cli, bad_arguments_exit_2)
{
	static const struct bad_case cases[] = {
		{{NULL}},                               /* missing kernel */
		{{"--bogus", "k", NULL}},               /* unknown option */
		{{"-z", "k", NULL}},                    /* unknown short option */
		{{"k", "extra", NULL}},                 /* two kernels */
		{{"-m", NULL}},                         /* missing value */
		{{"-m", "0", "k", NULL}},               /* zero memory */
		{{"-m", "12x", "k", NULL}},             /* junk */
		{{"-m", "-5", "k", NULL}},              /* negative */
		{{"-m", "99999999999999999999", "k", NULL}}, /* overflow */
		{{"-c", "0", "k", NULL}},
		{{"-c", "1025", "k", NULL}},
		{{"--serial", "tcp", "k", NULL}},
		{{"--serial", "file=", "k", NULL}},
		{{"--no-rtc=1", "k", NULL}},            /* flag with a value */
		{{"--log-level", "loud", "k", NULL}},
		{{"-i", "", "k", NULL}},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vm_config cfg;
		cr_expect_eq(parse(&cfg, cases[i].args), 2, "case %zu", i);
		cli_config_free(&cfg);
	}
	log_level = LOG_WARN;
}

Test(core_cli, help_returns_1)
{
	struct vm_config cfg;
	const char *a[] = {"--help", NULL};
	cr_assert_eq(parse(&cfg, a), 1);
	cli_config_free(&cfg);
}
