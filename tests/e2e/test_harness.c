/*
 * The e2e harness itself: the PROBE line parser (table-driven, malformed
 * lines included) and the process runner (exit status, signals, timeouts,
 * stdin, process-group cleanup). Needs only /bin/sh.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "tests/e2e/harness.h"

TestSuite(e2e_harness, .timeout = 30);

static const char out[] =
    "garbage from firmware\r\n"
    "PROBE hello cmdline=\"probe=hello x=\\\"y\\\" z\" vendor=GenuineIntel mem_entries=2\r\n"
    "PROBE hello.mem addr=0x0 size=0x9fc00 type=1\r\n"
    "PROBE hello.mem addr=0x100000 size=0xff00000 type=1\r\n"
    "PROBE pci dev=00:00.0 vendor=0x8086 bars=- caps=-\n"
    "PROBE pci dev=00:01.0 vendor=0x8086\n"
    "PROBE pci count=2\n"
    "PROBE echo line=\"tab\\x09end\\\\\" ticks=3\n"
    "PROBE bare\n"
    "PROBE-END status=ok\r\n";

struct get_case {
	const char *test;
	unsigned nth;
	const char *key;
	const char *want; /* NULL: key must be absent */
};

Test(e2e_harness, probe_get_table)
{
	static const struct get_case cases[] = {
	    {"hello", 0, "cmdline", "probe=hello x=\"y\" z"},
	    {"hello", 0, "vendor", "GenuineIntel"},
	    {"hello", 0, "mem_entries", "2"},
	    {"hello", 0, "x", NULL},    /* inside the quoted value, not a key */
	    {"hello", 0, "vend", NULL}, /* no prefix matches */
	    {"hello.mem", 1, "size", "0xff00000"},
	    {"hello.mem", 1, "type", "1"},
	    {"pci", 0, "bars", "-"},
	    {"pci", 2, "count", "2"},
	    {"pci", 1, "count", NULL},
	    {"echo", 0, "line", "tab\tend\\"},
	    {"echo", 0, "ticks", "3"},
	    {"bare", 0, "anything", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct get_case *c = &cases[i];
		const char *l = probe_line(out, c->test, c->nth);
		cr_assert_not_null(l, "case %zu: no line %u of %s", i, c->nth, c->test);
		char buf[128];
		bool found = probe_get(l, c->key, buf, sizeof(buf));
		if (!c->want) {
			cr_expect(!found, "case %zu: %s= should be absent, got \"%s\"", i, c->key,
			          buf);
			continue;
		}
		cr_expect(found, "case %zu: %s= not found", i, c->key);
		if (found)
			cr_expect_str_eq(buf, c->want, "case %zu: %s", i, c->key);
	}
}

Test(e2e_harness, probe_line_matches_whole_words)
{
	cr_expect_eq(probe_count(out, "hello"), 1);
	cr_expect_eq(probe_count(out, "hello.mem"), 2);
	cr_expect_eq(probe_count(out, "hell"), 0);
	cr_expect_eq(probe_count(out, "pci"), 3);
	cr_expect_eq(probe_count(out, "bare"), 1);
	cr_expect_null(probe_line(out, "pci", 3));
	const char *l = probe_line_with(out, "pci", "dev", "00:01.0");
	cr_assert_not_null(l);
	cr_expect(strncmp(l, "PROBE pci dev=00:01.0", 21) == 0);
	cr_expect_null(probe_line_with(out, "pci", "dev", "00:02.0"));
}

Test(e2e_harness, probe_get_u64_and_limits)
{
	const char *l = probe_line(out, "hello.mem", 1);
	uint64_t v = 0;
	cr_expect(probe_get_u64(l, "addr", &v) && v == 0x100000);
	cr_expect(probe_get_u64(probe_line(out, "echo", 0), "ticks", &v) && v == 3);
	cr_expect(!probe_get_u64(probe_line(out, "pci", 0), "bars", &v), "\"-\" is not a number");
	cr_expect(!probe_get_u64(probe_line(out, "hello", 0), "vendor", &v));
	char small[4];
	cr_expect(!probe_get(probe_line(out, "hello", 0), "vendor", small, sizeof(small)),
	          "a value that does not fit must not be reported as found");
	cr_expect(!probe_get("PROBE x key=\"unterminated", "other", small, sizeof(small)));
	char b8[8]; /* an unterminated quote ends at the line end */
	cr_expect(probe_get("PROBE x key=\"abc\nPROBE y", "key", b8, sizeof(b8)) &&
	          strcmp(b8, "abc") == 0);
}

Test(e2e_harness, probe_end)
{
	cr_expect(probe_end_ok(out));
	cr_expect(!probe_end_ok("PROBE hello\n"), "no PROBE-END");
	cr_expect(!probe_end_ok("PROBE-END status=fail reason=x\n"));
	cr_expect(!probe_end_ok("PROBE-END status=ok\nPROBE-END status=ok\n"), "guest ran twice");
	cr_expect(!probe_end_ok("PROBE-ENDstatus=ok\n"));
	char why[32];
	const char *l =
	    probe_end_line("x\nPROBE-END status=fail reason=echo-timeout test=echo\r\n");
	cr_assert_not_null(l);
	cr_expect(probe_get(l, "reason", why, sizeof(why)) && strcmp(why, "echo-timeout") == 0);
}

static struct harness_result res;

static void run_sh(const char *script, const struct harness_opts *o)
{
	struct harness_argv a;
	harness_argv_init(&a);
	harness_argv_add(&a, "/bin/sh");
	harness_argv_add(&a, "-c");
	harness_argv_add(&a, "%s", script);
	cr_assert_eq(harness_run(&a, o, &res), 0);
}

static void fini(void)
{
	harness_result_free(&res);
}

Test(e2e_harness, run_collects_output_and_status, .fini = fini)
{
	run_sh("echo out; echo err >&2; exit 3", NULL);
	cr_expect(res.exited);
	cr_expect_eq(res.exit_code, 3);
	cr_expect_str_eq(res.out, "out\n");
	cr_expect_str_eq(res.err, "err\n");
	cr_expect(!res.timed_out);
}

Test(e2e_harness, run_reports_signal, .fini = fini)
{
	run_sh("kill -TERM $$", NULL);
	cr_expect(!res.exited);
	cr_expect_eq(res.term_signal, SIGTERM);
}

Test(e2e_harness, run_timeout_kills_group, .fini = fini)
{
	struct harness_opts o = {.timeout_s = 0.3};
	run_sh("sleep 20 & echo started; wait", &o);
	cr_expect(res.timed_out);
	cr_expect_eq(res.term_signal, SIGKILL);
	cr_expect_str_eq(res.out, "started\n");
	cr_expect(res.elapsed_s >= 0.3 && res.elapsed_s < 30.0, "elapsed %.3f", res.elapsed_s);
}

Test(e2e_harness, run_does_not_wait_for_grandchildren, .fini = fini)
{
	/* The grandchild keeps stdout open; the harness kills it once sh has exited. */
	run_sh("sleep 20 & echo bye", NULL);
	cr_expect(res.exited && res.exit_code == 0);
	cr_expect_str_eq(res.out, "bye\n");
	/* Well under the grandchild's 20 s: the harness did not wait for it. */
	cr_expect(res.elapsed_s < 10.0, "elapsed %.3f", res.elapsed_s);
}

Test(e2e_harness, run_feeds_stdin, .fini = fini)
{
	struct harness_opts o = {.stdin_data = "one\ntwo\n"};
	run_sh("cat", &o);
	cr_expect_str_eq(res.out, "one\ntwo\n");

	harness_result_free(&res);
	struct harness_opts after = {.stdin_data = "late\n", .stdin_after = "ready"};
	run_sh("echo ready; read x; echo got=$x", &after);
	cr_expect_str_eq(res.out, "ready\ngot=late\n");

	harness_result_free(&res);
	run_sh("cat; echo eof", NULL); /* no data: stdin is at EOF at once */
	cr_expect_str_eq(res.out, "eof\n");
}

Test(e2e_harness, run_exec_failure, .fini = fini)
{
	struct harness_argv a;
	harness_argv_init(&a);
	harness_argv_add(&a, "/nonexistent/vmm");
	cr_assert_eq(harness_run(&a, NULL, &res), 0);
	cr_expect(res.exited && res.exit_code == 127);
	cr_expect(strstr(res.err, "/nonexistent/vmm") != NULL);
}

Test(e2e_harness, argv_builder)
{
	struct harness_argv a;
	struct harness_qemu_cfg cfg = {.mem_mib = 128, .cpus = 2, .params = "probe=smp"};
	harness_qemu_probe_argv(&a, &cfg);
	char buf[1024];
	harness_argv_str(&a, buf, sizeof(buf));
	cr_expect(strstr(buf, " -m 128 -smp 2 ") != NULL, "%s", buf);
	cr_expect(strstr(buf, " -append probe=smp") != NULL, "%s", buf);
	cr_expect(strstr(buf, "tests/guest/probe.elf") != NULL, "%s", buf);
	cr_expect_null(a.argv[a.argc]);
	cr_expect(!a.overflow);

	harness_argv_init(&a);
	for (int i = 0; i < HARNESS_MAX_ARGS + 1; i++)
		harness_argv_add(&a, "x");
	cr_expect(a.overflow);
	cr_expect_eq(a.argc, HARNESS_MAX_ARGS);
	struct harness_result r;
	cr_expect_eq(harness_run(&a, NULL, &r), -E2BIG);
}
