/* Shared assertions on probe v1 output (see probe_checks.h). */
#include <criterion/criterion.h>
#include <string.h>

#include "tests/e2e/probe_checks.h"

void check_probe_ok(const struct harness_result *r, const char *what)
{
	char how[128];
	cr_assert(!r->timed_out, "%s: timed out\nstdout:\n%s\nstderr:\n%s", what, r->out, r->err);
	cr_assert(r->exited && r->exit_code == 0, "%s: %s\nstdout:\n%s\nstderr:\n%s", what,
		  harness_result_str(r, how, sizeof(how)), r->out, r->err);
	cr_assert(probe_end_ok(r->out), "%s: no PROBE-END status=ok\nstdout:\n%s\nstderr:\n%s", what,
		  r->out, r->err);
}

void check_hello(const char *out, const char *cmdline, unsigned mem_mib)
{
	const char *l = probe_line(out, "hello", 0);
	cr_assert_not_null(l, "no PROBE hello line:\n%s", out);
	char buf[512];
	cr_assert(probe_get(l, "cmdline", buf, sizeof(buf)));
	cr_assert_str_eq(buf, cmdline);
	cr_assert(probe_get(l, "vendor", buf, sizeof(buf)));
	cr_assert(strcmp(buf, "GenuineIntel") == 0 || strcmp(buf, "AuthenticAMD") == 0,
		  "vendor %s", buf);
	uint64_t n, ram_mib;
	cr_assert(probe_get_u64(l, "mem_entries", &n));
	cr_assert_eq(probe_count(out, "hello.mem"), n);
	cr_assert(probe_get_u64(l, "ram_mib", &ram_mib));
	/* The legacy hole and firmware areas take a little below 1 MiB. */
	cr_assert(ram_mib <= mem_mib && ram_mib + 2 >= mem_mib, "ram_mib=%llu for -m %u",
		  (unsigned long long)ram_mib, mem_mib);
	/* RAM below 1 MiB starts at 0, and nothing of type RAM lies in the 3-4 GiB hole. */
	uint64_t ram_total = 0;
	for (unsigned i = 0; i < n; i++) {
		const char *m = probe_line(out, "hello.mem", i);
		uint64_t addr, size, type;
		cr_assert(probe_get_u64(m, "addr", &addr) && probe_get_u64(m, "size", &size) &&
			  probe_get_u64(m, "type", &type));
		if (type == 1) {
			ram_total += size;
			cr_assert(addr + size <= 0xC0000000ull || addr >= 0x100000000ull,
				  "RAM entry in the PCI hole: %llx+%llx", (unsigned long long)addr,
				  (unsigned long long)size);
		}
	}
	cr_assert_eq(ram_total >> 20, ram_mib);
}

void check_pci(const char *out)
{
	const char *l = probe_line_with(out, "pci", "dev", "00:00.0");
	cr_assert_not_null(l, "no host bridge at 00:00.0:\n%s", out);
	char buf[64];
	cr_assert(probe_get(l, "vendor", buf, sizeof(buf)));
	cr_assert_str_eq(buf, "0x8086");
	cr_assert(probe_get(l, "device", buf, sizeof(buf)));
	cr_assert_str_eq(buf, "0x1237");
	cr_assert(probe_get(l, "class", buf, sizeof(buf)));
	cr_assert_str_eq(buf, "0x060000");
	uint64_t count = 0;
	for (unsigned i = 0; probe_line(out, "pci", i); i++)
		if (probe_get_u64(probe_line(out, "pci", i), "count", &count))
			break;
	cr_assert_geq(count, 1);
}

void check_timer(const char *out)
{
	const char *l = probe_line(out, "timer", 0);
	cr_assert_not_null(l, "no PROBE timer line:\n%s", out);
	uint64_t khz;
	cr_assert(probe_get_u64(l, "tsc_khz", &khz));
	cr_assert(khz > 100000 && khz < 10000000, "tsc_khz=%llu", (unsigned long long)khz);
}

void check_smp(const char *out, unsigned ncpus)
{
	const char *s = NULL;
	for (unsigned i = 0; (s = probe_line(out, "smp", i)); i++) {
		char tmp[16];
		if (probe_get(s, "cpus", tmp, sizeof(tmp)))
			break;
	}
	cr_assert_not_null(s, "no PROBE smp summary:\n%s", out);
	uint64_t cpus, started;
	cr_assert(probe_get_u64(s, "cpus", &cpus) && probe_get_u64(s, "started", &started));
	cr_assert_eq(cpus, ncpus);
	cr_assert_eq(started, ncpus);
	cr_assert_eq(probe_count(out, "smp.ap"), ncpus - 1);
}

void check_irq(const char *out)
{
	const char *l = probe_line(out, "irq", 0);
	cr_assert_not_null(l, "no PROBE irq line:\n%s", out);
	char buf[16];
	cr_assert(probe_get(l, "lapic_timer", buf, sizeof(buf)));
	cr_assert_str_eq(buf, "ok");
	uint64_t ticks;
	cr_assert(probe_get_u64(l, "ticks", &ticks));
	cr_assert_geq(ticks, 1);
}

void check_idle(const char *out, unsigned secs)
{
	const char *l = probe_line(out, "idle", 0);
	cr_assert_not_null(l, "no PROBE idle line:\n%s", out);
	uint64_t s;
	cr_assert(probe_get_u64(l, "secs", &s));
	cr_assert_eq(s, secs);
}
