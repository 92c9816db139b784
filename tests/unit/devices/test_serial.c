/*
 * Unit tests for devices/legacy/serial: the registers as Linux's 8250
 * autoconfig probes them, TX to a pipe, RX through the FIFO, interrupt
 * identification and the edges seen on a detached irq_line.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "devices/legacy/serial.h"

enum { RBR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

static struct irq_line irq;
static struct serial *uart;
static int pipefd[2] = {-1, -1};

static uint8_t rd(unsigned reg)
{
	uint8_t v = 0;
	serial_bus_ops.read(uart, reg, &v, 1);
	return v;
}

static void wr(unsigned reg, uint8_t v)
{
	serial_bus_ops.write(uart, reg, &v, 1);
}

static void setup(void)
{
	irq_line_init(&irq, -1, SERIAL_COM1_IRQ);
	cr_assert_eq(pipe2(pipefd, O_NONBLOCK | O_CLOEXEC), 0);
	cr_assert_eq(serial_create(&uart, &irq, pipefd[1]), 0);
}

static void teardown(void)
{
	serial_destroy(uart);
	uart = NULL;
	for (int i = 0; i < 2; i++)
		if (pipefd[i] >= 0)
			close(pipefd[i]);
	pipefd[0] = pipefd[1] = -1;
}

TestSuite(devices_serial, .init = setup, .fini = teardown);

Test(devices_serial, create_rejects_null_irq)
{
	struct serial *s = NULL;
	cr_assert_eq(serial_create(&s, NULL, -1), -EINVAL);
	cr_assert_null(s);
}

Test(devices_serial, power_on_state)
{
	cr_assert_eq(rd(IER), 0);
	cr_assert_eq(rd(IIR), 0x01, "no interrupt, FIFOs off");
	cr_assert_eq(rd(LSR), 0x60, "THRE and TEMT, no data");
	cr_assert_eq(rd(MSR) & 0xf0, 0xb0, "DCD, DSR, CTS asserted outside loopback");
	wr(LCR, 0x80);
	cr_assert_eq(rd(RBR), 12, "DLL: 9600 baud");
	cr_assert_eq(rd(IER), 0, "DLM");
	cr_assert_eq(irq.level, 0);
	cr_assert_eq(irq.raised, 0);
}

Test(devices_serial, scratch_register_holds_any_byte)
{
	static const uint8_t vals[] = {0x00, 0x55, 0xaa, 0xff, 0x5a, 0x01};
	for (size_t i = 0; i < sizeof(vals); i++) {
		wr(SCR, vals[i]);
		cr_assert_eq(rd(SCR), vals[i], "case %zu", i);
	}
}

/* 8250 autoconfig: IER 0 reads 0, 0x0f reads 0x0f, and UUE (bit 6) must not stick. */
Test(devices_serial, ier_probe_masks_to_low_nibble)
{
	static const struct {
		uint8_t w, r;
	} cases[] = {
	    {0x00, 0x00}, {0x0f, 0x0f}, {0x4f, 0x0f}, {0xf0, 0x00}, {0x05, 0x05},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		wr(IER, cases[i].w);
		cr_assert_eq(rd(IER), cases[i].r, "case %zu", i);
	}
}

/* MCR outputs wired back into MSR in loopback (autoconfig expects 0x90 for LOOP|OUT2|RTS). */
Test(devices_serial, loopback_wires_mcr_to_msr)
{
	static const struct {
		uint8_t mcr, msr;
	} cases[] = {
	    {0x10 | 0x08 | 0x02, 0x90}, /* the autoconfig test */
	    {0x10, 0x00},
	    {0x10 | 0x01, 0x20}, /* DTR -> DSR */
	    {0x10 | 0x04, 0x40}, /* OUT1 -> RI */
	    {0x10 | 0x0f, 0xf0},
	    {0x00, 0xb0}, /* loopback off: the fixed "cable" */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		wr(MCR, cases[i].mcr);
		cr_assert_eq(rd(MCR), cases[i].mcr, "case %zu", i);
		cr_assert_eq(rd(MSR) & 0xf0, cases[i].msr, "case %zu", i);
	}
	wr(MCR, 0xff);
	cr_assert_eq(rd(MCR), 0x1f, "AFE and reserved bits are not there on a 16550A");
}

/* The autoconfig sequence that tells a 16550A by IIR bits 6-7 (and not a 16750 by bit 5). */
Test(devices_serial, fifo_detection_bits_in_iir)
{
	wr(LCR, 0xbf);
	wr(FCR, 0x00); /* "EFR" write: FCR ignores DLAB */
	wr(LCR, 0x00);
	wr(FCR, 0x01);
	cr_assert_eq(rd(IIR) >> 6, 3, "16550A");
	wr(LCR, 0x80);
	cr_assert_neq(rd(IIR), 0, "IIR (not EFR) under DLAB: no ST16C650 misdetection");
	wr(LCR, 0x00);
	wr(FCR, 0x21); /* 64-byte FIFO request of a 16750 */
	cr_assert_eq(rd(IIR) & 0x20, 0, "no 64-byte FIFO bit");
	wr(FCR, 0x00);
	cr_assert_eq(rd(IIR) & 0xc0, 0, "FIFOs off");
}

Test(devices_serial, dlab_selects_divisor_latch)
{
	wr(IER, 0x05);
	wr(LCR, 0x83);
	cr_assert_eq(rd(LCR), 0x83);
	wr(RBR, 0x01);
	wr(IER, 0x02);
	cr_assert_eq(rd(RBR), 0x01);
	cr_assert_eq(rd(IER), 0x02);
	wr(LCR, 0x03);
	cr_assert_eq(rd(IER), 0x05, "IER untouched by DLM writes");
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.tx_bytes, 0, "a DLL write is not a transmit");
	char buf[8];
	cr_assert_eq(read(pipefd[0], buf, sizeof(buf)), -1);
	cr_assert_eq(errno, EAGAIN);
}

Test(devices_serial, tx_goes_to_fd)
{
	const char *msg = "hello, ringvm\n";
	for (const char *p = msg; *p; p++)
		wr(RBR, (uint8_t)*p);
	char buf[64] = {0};
	ssize_t n = read(pipefd[0], buf, sizeof(buf) - 1);
	cr_assert_eq(n, (ssize_t)strlen(msg));
	cr_assert_str_eq(buf, msg);
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.tx_bytes, strlen(msg));
	cr_assert_eq(st.tx_dropped, 0);
}

Test(devices_serial, tx_to_full_pipe_drops_instead_of_blocking)
{
	int size = fcntl(pipefd[1], F_GETPIPE_SZ);
	cr_assert_gt(size, 0);
	for (int i = 0; i < size + 100; i++)
		wr(RBR, 'x');
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.tx_bytes, (uint64_t)size + 100);
	cr_assert_eq(st.tx_dropped, 100);
}

Test(devices_serial, tx_to_closed_reader_drops)
{
	signal(SIGPIPE, SIG_IGN); /* the VMM's contract; otherwise EPIPE would be SIGPIPE */
	close(pipefd[0]);
	pipefd[0] = -1;
	wr(RBR, 'a');
	wr(RBR, 'b');
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.tx_bytes, 2);
	cr_assert_eq(st.tx_dropped, 2);
	cr_assert_eq(rd(LSR) & 0x60, 0x60, "the guest still sees an empty transmitter");
}

static uint8_t sink_buf[16];
static size_t sink_len;

static void sink(void *opaque, const uint8_t *buf, size_t len)
{
	cr_assert_eq(opaque, &sink_len);
	memcpy(sink_buf + sink_len, buf, len);
	sink_len += len;
}

Test(devices_serial, tx_sink_replaces_fd)
{
	sink_len = 0;
	serial_set_sink(uart, sink, &sink_len);
	wr(RBR, 'o');
	wr(RBR, 'k');
	cr_assert_eq(sink_len, 2);
	cr_assert_eq(memcmp(sink_buf, "ok", 2), 0);
	char c;
	cr_assert_eq(read(pipefd[0], &c, 1), -1, "nothing went to the fd");
}

Test(devices_serial, rx_push_sets_dr_and_interrupt_until_read)
{
	wr(FCR, 0x41); /* FIFOs on, trigger at 4 bytes */
	wr(IER, 0x01);
	cr_assert_eq(irq.level, 0);
	cr_assert_eq(serial_push_input(uart, (const uint8_t *)"ab", 2), 2);
	cr_assert_eq(rd(LSR) & 0x01, 0x01);
	cr_assert_eq(irq.level, 1);
	cr_assert_eq(irq.raised, 1);
	cr_assert_eq(rd(IIR), 0xcc, "below the trigger level: character timeout");
	cr_assert_eq(rd(RBR), 'a');
	cr_assert_eq(irq.level, 1, "one byte left");
	cr_assert_eq(rd(RBR), 'b');
	cr_assert_eq(rd(LSR) & 0x01, 0);
	cr_assert_eq(irq.level, 0);
	cr_assert_eq(rd(IIR), 0xc1);
	cr_assert_eq(rd(RBR), 'b', "an empty RBR reads stale, like hardware");
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.rx_bytes, 2);
}

Test(devices_serial, rx_without_ier_sets_dr_but_no_interrupt)
{
	cr_assert_eq(serial_push_input(uart, (const uint8_t *)"z", 1), 1);
	cr_assert_eq(rd(LSR) & 0x01, 0x01);
	cr_assert_eq(irq.level, 0);
	wr(IER, 0x01);
	cr_assert_eq(irq.level, 1, "enabling RDI with data waiting raises the line");
	cr_assert_eq(rd(IIR), 0x04, "FIFOs off: plain RDI");
}

Test(devices_serial, rx_trigger_levels)
{
	static const struct {
		uint8_t fcr;
		unsigned level;
	} cases[] = {
	    {0x01, 1},
	    {0x41, 4},
	    {0x81, 8},
	    {0xc1, 14},
	};
	uint8_t buf[16];
	memset(buf, 'q', sizeof(buf));
	wr(IER, 0x01);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		wr(FCR, cases[i].fcr | 0x02);
		unsigned below = cases[i].level - 1;
		cr_assert_eq(serial_push_input(uart, buf, below), below);
		if (below)
			cr_assert_eq(rd(IIR) & 0x0f, 0x0c, "case %zu: timeout below trigger", i);
		cr_assert_eq(serial_push_input(uart, buf, 1), 1);
		cr_assert_eq(rd(IIR) & 0x0f, 0x04, "case %zu: RDI at trigger", i);
	}
}

Test(devices_serial, full_fifo_accepts_fewer_bytes)
{
	uint8_t buf[SERIAL_RX_FIFO_SIZE + 10];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)i;
	cr_assert_eq(serial_push_input(uart, buf, sizeof(buf)), 1, "FIFOs off: one byte");
	wr(FCR, 0x01); /* enabling resets the FIFO */
	cr_assert_eq(serial_push_input(uart, buf, sizeof(buf)), SERIAL_RX_FIFO_SIZE);
	cr_assert_eq(serial_push_input(uart, buf, 1), 0);
	for (size_t i = 0; i < SERIAL_RX_FIFO_SIZE; i++)
		cr_assert_eq(rd(RBR), buf[i], "byte %zu in order", i);
	cr_assert_eq(rd(LSR) & 0x03, 0, "no data, no overrun: refused bytes are not lost");
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.rx_flushed, 1, "the byte held before FIFOs were enabled");
	cr_assert_eq(st.rx_overruns, 0);
}

static int rx_ready_calls;

static void rx_ready(void *opaque)
{
	(void)opaque;
	rx_ready_calls++;
}

Test(devices_serial, rx_ready_fires_once_room_appears)
{
	rx_ready_calls = 0;
	serial_set_rx_ready(uart, rx_ready, NULL);
	wr(FCR, 0x01);
	uint8_t buf[SERIAL_RX_FIFO_SIZE] = {0};
	cr_assert_eq(serial_push_input(uart, buf, sizeof(buf)), sizeof(buf));
	(void)rd(RBR);
	cr_assert_eq(rx_ready_calls, 0, "nothing was refused");
	cr_assert_eq(serial_push_input(uart, buf, 2), 1);
	(void)rd(RBR);
	cr_assert_eq(rx_ready_calls, 1);
	(void)rd(RBR);
	cr_assert_eq(rx_ready_calls, 1, "once per refusal");
}

Test(devices_serial, fcr_clear_rcvr_flushes)
{
	wr(FCR, 0x01);
	wr(IER, 0x01);
	cr_assert_eq(serial_push_input(uart, (const uint8_t *)"xyz", 3), 3);
	cr_assert_eq(irq.level, 1);
	wr(FCR, 0x03);
	cr_assert_eq(rd(LSR) & 0x01, 0);
	cr_assert_eq(irq.level, 0);
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.rx_flushed, 3);
}

Test(devices_serial, thre_interrupt_edges)
{
	wr(IER, 0x02);
	cr_assert_eq(irq.level, 1, "enabling THRI with THR empty raises at once");
	cr_assert_eq(irq.raised, 1);
	cr_assert_eq(rd(IIR), 0x02);
	cr_assert_eq(irq.level, 0, "reading IIR acknowledged THRE");
	cr_assert_eq(rd(IIR), 0x01);
	wr(IER, 0x02);
	cr_assert_eq(irq.level, 0, "rewriting the same IER does not re-latch");
	wr(IER, 0x00);
	wr(IER, 0x02);
	cr_assert_eq(irq.level, 1, "0 -> 1 of IER.THRI re-latches (Linux start_tx)");
	cr_assert_eq(irq.raised, 2);
	wr(IER, 0x00);
	cr_assert_eq(irq.level, 0, "disabling THRI lowers the line");
	wr(IER, 0x02);
	cr_assert_eq(irq.raised, 3);
	(void)rd(IIR);
	cr_assert_eq(irq.level, 0);
	wr(RBR, 'a');
	cr_assert_eq(irq.level, 1, "THR empties at once after a write");
	cr_assert_eq(irq.raised, 4);
	wr(RBR, 'b');
	cr_assert_eq(irq.raised, 4, "a burst with the line high is one edge");
	char buf[4];
	cr_assert_eq(read(pipefd[0], buf, sizeof(buf)), 2);
}

/* Linux's UART_BUG_THRE probe: IER 0 -> THRI must show THRI in IIR, not NO_INT. */
Test(devices_serial, thre_probe_sequence)
{
	wr(IER, 0x02);
	(void)rd(IIR);
	wr(IER, 0x00);
	wr(IER, 0x02);
	uint8_t iir = rd(IIR);
	wr(IER, 0x00);
	cr_assert_eq(iir & 0x01, 0, "interrupt pending");
	cr_assert_eq(iir & 0x0f, 0x02);
}

Test(devices_serial, loopback_tx_feeds_rx_not_fd)
{
	wr(FCR, 0x01);
	wr(MCR, 0x10);
	cr_assert_eq(serial_push_input(uart, (const uint8_t *)"h", 1), 0,
	             "receiver disconnected from the host in loopback");
	wr(RBR, 0x42);
	cr_assert_eq(rd(LSR) & 0x01, 0x01);
	cr_assert_eq(rd(RBR), 0x42);
	char c;
	cr_assert_eq(read(pipefd[0], &c, 1), -1, "nothing left the UART");
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.tx_bytes, 0);
	rx_ready_calls = 0;
	serial_set_rx_ready(uart, rx_ready, NULL);
	wr(MCR, 0x00);
	cr_assert_eq(rx_ready_calls, 1, "the refused input may come now");
	cr_assert_eq(serial_push_input(uart, (const uint8_t *)"h", 1), 1);
}

/* Priorities: line status > RX data > THRE > modem status. */
Test(devices_serial, iir_priority)
{
	wr(FCR, 0x01);
	wr(MCR, 0x10);
	(void)rd(MSR); /* entering loopback changed every line: clear those deltas */
	wr(IER, 0x0f);
	wr(MCR, 0x12); /* RTS -> CTS changes: DCTS, a modem status source */
	for (int i = 0; i < SERIAL_RX_FIFO_SIZE + 1; i++)
		wr(RBR, (uint8_t)i); /* one too many: overrun */
	cr_assert_eq(irq.level, 1);
	cr_assert_eq(rd(IIR) & 0x0f, 0x06, "line status first");
	cr_assert_eq(rd(LSR) & 0x03, 0x03, "DR and OE");
	cr_assert_eq(rd(LSR) & 0x02, 0, "OE cleared by reading LSR");
	cr_assert_eq(rd(IIR) & 0x0f, 0x04, "then received data");
	for (int i = 0; i < SERIAL_RX_FIFO_SIZE; i++)
		cr_assert_eq(rd(RBR), (uint8_t)i);
	cr_assert_eq(rd(IIR) & 0x0f, 0x02, "then THRE");
	cr_assert_eq(rd(IIR) & 0x0f, 0x00, "then modem status (THRE acknowledged)");
	cr_assert_eq(irq.level, 1);
	cr_assert_eq(rd(MSR) & 0x0f, 0x01, "DCTS");
	cr_assert_eq(rd(IIR) & 0x0f, 0x01, "nothing left");
	cr_assert_eq(irq.level, 0);
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.rx_overruns, 1);
}

Test(devices_serial, line_status_needs_its_ier_bit)
{
	wr(MCR, 0x10);
	wr(IER, 0x00);
	wr(RBR, 1);
	wr(RBR, 2); /* FIFOs off: one byte deep, overrun */
	cr_assert_eq(irq.level, 0);
	wr(IER, 0x04);
	cr_assert_eq(irq.level, 1);
	cr_assert_eq(rd(IIR), 0x06);
	(void)rd(LSR);
	cr_assert_eq(irq.level, 0);
}

Test(devices_serial, wide_access_is_consecutive_bytes)
{
	const uint8_t w[2] = {0x03, 0x0b}; /* LCR, MCR */
	serial_bus_ops.write(uart, LCR, w, 2);
	cr_assert_eq(rd(LCR), 0x03);
	cr_assert_eq(rd(MCR), 0x0b);
	uint8_t r[4];
	serial_bus_ops.read(uart, 6, r, 4);
	cr_assert_eq(r[0] & 0xf0, 0xb0, "MSR");
	cr_assert_eq(r[2], 0xff, "past the last register");
	cr_assert_eq(r[3], 0xff);
}

struct pump {
	size_t total;
	size_t received;
	int mismatches;
};

static void *input_thread(void *arg)
{
	struct pump *p = arg;
	size_t sent = 0;
	while (sent < p->total) {
		uint8_t chunk[37];
		size_t n = p->total - sent < sizeof(chunk) ? p->total - sent : sizeof(chunk);
		for (size_t i = 0; i < n; i++)
			chunk[i] = (uint8_t)((sent + i) * 7);
		size_t acc = serial_push_input(uart, chunk, n);
		sent += acc; /* the caller retries what was refused */
		if (acc < n)
			sched_yield();
	}
	return NULL;
}

/* An input thread racing a "vCPU" draining RX: no byte lost, duplicated or reordered. */
Test(devices_serial, concurrent_input_is_lossless, .timeout = 30)
{
	wr(FCR, 0xc1);
	wr(IER, 0x01);
	struct pump p = {.total = 200000};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, input_thread, &p), 0);
	while (p.received < p.total) {
		if (!(rd(LSR) & 0x01)) {
			sched_yield();
			continue;
		}
		uint8_t b = rd(RBR);
		if (b != (uint8_t)(p.received * 7))
			p.mismatches++;
		p.received++;
	}
	pthread_join(t, NULL);
	cr_assert_eq(p.mismatches, 0);
	struct serial_stats st;
	serial_get_stats(uart, &st);
	cr_assert_eq(st.rx_bytes, p.total);
	cr_assert_eq(st.rx_overruns, 0);
	cr_assert_eq(rd(LSR) & 0x01, 0);
}
