/*
 * `echo`: reads one line from COM1 (polled) and prints it back, proving the
 * VMM carries its stdin to the guest's UART. `echo.timeout` (seconds,
 * default 10) bounds the wait.
 */
#include "probe.h"

#define ECHO_MAX 256

const char *test_echo(void)
{
	uint64_t timeout_s = probe_opt_u64("echo.timeout", 10);
	uint64_t deadline = rdtsc() + timeout_s * probe_tsc_khz() * 1000;
	char line[ECHO_MAX];
	size_t n = 0;

	probe_printf("PROBE echo ready timeout=%lu\n", timeout_s);
	for (;;) {
		int c = uart_getc_nowait();
		if (c < 0) {
			if (rdtsc() > deadline) {
				probe_printf("PROBE echo timeout=%lu got=%zu\n", timeout_s, n);
				return "echo-timeout";
			}
			cpu_relax();
			continue;
		}
		if (c == '\n' || c == '\r') {
			if (n == 0)
				continue; /* the LF of a CRLF, or an empty line before the data */
			break;
		}
		if (n < ECHO_MAX)
			line[n++] = (char)c;
	}
	probe_printf("PROBE echo line=");
	probe_print_quoted(line, n);
	probe_printf("\n");
	return NULL;
}
