/*
 * 16550A UART: register file, RX FIFO, interrupt identification and the TX
 * path to the host. All state sits behind one mutex because any vCPU and the
 * input thread may touch it; the interrupt level is recomputed at the end of
 * every access and pushed with irq_line_set().
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/legacy/serial.h"

/* Register offsets from the base (DLAB = LCR bit 7 remaps 0 and 1 to the divisor). */
enum {
	REG_RBR_THR = 0, /* DLL with DLAB */
	REG_IER = 1,     /* DLM with DLAB */
	REG_IIR_FCR = 2,
	REG_LCR = 3,
	REG_MCR = 4,
	REG_LSR = 5,
	REG_MSR = 6,
	REG_SCR = 7,
};

#define IER_RDI  0x01 /* received data available */
#define IER_THRI 0x02 /* THR empty */
#define IER_RLSI 0x04 /* receiver line status */
#define IER_MSI  0x08 /* modem status */
#define IER_MASK 0x0f /* bits 4-7 read as 0 on a 16550A; Linux's UUE probe relies on it */

#define IIR_NO_INT     0x01
#define IIR_MSI        0x00
#define IIR_THRI       0x02
#define IIR_RDI        0x04
#define IIR_RLSI       0x06
#define IIR_RX_TIMEOUT 0x0c
#define IIR_FIFO_BITS  0xc0 /* both set = 16550A with working FIFOs */

#define FCR_ENABLE     0x01
#define FCR_CLEAR_RCVR 0x02
#define FCR_CLEAR_XMIT 0x04
#define FCR_KEEP       0xc9 /* enable, DMA mode, trigger level: what reads back as state */

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR     0x01
#define LSR_OE     0x02
#define LSR_PE     0x04
#define LSR_FE     0x08
#define LSR_BI     0x10
#define LSR_THRE   0x20
#define LSR_TEMT   0x40
#define LSR_ERRORS (LSR_OE | LSR_PE | LSR_FE | LSR_BI)

#define MSR_DCTS  0x01
#define MSR_DDSR  0x02
#define MSR_TERI  0x04
#define MSR_DDCD  0x08
#define MSR_CTS   0x10
#define MSR_DSR   0x20
#define MSR_RI    0x40
#define MSR_DCD   0x80
#define MSR_DELTA 0x0f

struct serial {
	pthread_mutex_t lock;
	struct irq_line *irq;
	int out_fd;
	serial_sink_fn *sink;
	void *sink_opaque;
	serial_rx_ready_fn *rx_ready;
	void *rx_ready_opaque;

	uint8_t ier, fcr, lcr, mcr, scr, dll, dlm;
	uint8_t lsr_errors; /* sticky OE/PE/FE/BI until LSR is read */
	uint8_t msr_delta;  /* DCTS/DDSR/TERI/DDCD until MSR is read */
	uint8_t rbr_last;   /* what RBR reads when the FIFO is empty (stale, like hardware) */
	bool thr_ipending;  /* THRE interrupt latched; cleared by IIR read or THR write */
	bool rx_waiting;    /* input was refused; rx_ready owed once room appears */

	uint8_t rx_fifo[SERIAL_RX_FIFO_SIZE];
	unsigned rx_head, rx_count;

	struct serial_stats stats;
};

static unsigned rx_capacity(const struct serial *s)
{
	return (s->fcr & FCR_ENABLE) ? SERIAL_RX_FIFO_SIZE : 1;
}

/* The RX trigger level selected by FCR bits 6-7 (1, 4, 8 or 14 bytes). */
static unsigned rx_trigger(const struct serial *s)
{
	static const unsigned levels[4] = {1, 4, 8, 14};
	return levels[s->fcr >> 6];
}

/*
 * Modem inputs. Outside loopback the "cable" always reports carrier, DSR and
 * CTS so getty and flow control never wait; in loopback the MCR outputs are
 * wired back as the 8250 autoconfig test expects (RTS->CTS, DTR->DSR,
 * OUT1->RI, OUT2->DCD).
 */
static uint8_t msr_lines(const struct serial *s)
{
	if (!(s->mcr & MCR_LOOP))
		return MSR_DCD | MSR_DSR | MSR_CTS;
	uint8_t m = 0;
	if (s->mcr & MCR_RTS)
		m |= MSR_CTS;
	if (s->mcr & MCR_DTR)
		m |= MSR_DSR;
	if (s->mcr & MCR_OUT1)
		m |= MSR_RI;
	if (s->mcr & MCR_OUT2)
		m |= MSR_DCD;
	return m;
}

static uint8_t lsr_value(const struct serial *s)
{
	/* TX is synchronous, so the holding and shift registers are always empty. */
	uint8_t lsr = LSR_THRE | LSR_TEMT | s->lsr_errors;
	if (s->rx_count)
		lsr |= LSR_DR;
	return lsr;
}

/* Highest-priority pending source, as IIR bits 0-3. */
static uint8_t iir_source(const struct serial *s)
{
	if ((s->ier & IER_RLSI) && s->lsr_errors)
		return IIR_RLSI;
	if ((s->ier & IER_RDI) && s->rx_count) {
		/*
		 * Below the trigger level a real 16550A reports a character
		 * timeout after four idle character times; this UART has no
		 * timer and reports it at once, which drivers treat as RDI.
		 */
		if ((s->fcr & FCR_ENABLE) && s->rx_count < rx_trigger(s))
			return IIR_RX_TIMEOUT;
		return IIR_RDI;
	}
	if ((s->ier & IER_THRI) && s->thr_ipending)
		return IIR_THRI;
	if ((s->ier & IER_MSI) && s->msr_delta)
		return IIR_MSI;
	return IIR_NO_INT;
}

/*
 * The IRQ pin follows "some source pending". It is not gated by MCR.OUT2 as
 * on PC boards: QEMU and kvmtool don't either, and some guests never set it.
 */
static void update_irq(struct serial *s)
{
	irq_line_set(s->irq, iir_source(s) != IIR_NO_INT);
}

static void notify_rx_room(struct serial *s)
{
	if (!s->rx_waiting || s->rx_count >= rx_capacity(s) || (s->mcr & MCR_LOOP))
		return;
	s->rx_waiting = false;
	if (s->rx_ready)
		s->rx_ready(s->rx_ready_opaque);
}

static void rx_clear(struct serial *s)
{
	s->stats.rx_flushed += s->rx_count;
	s->rx_head = 0;
	s->rx_count = 0;
	notify_rx_room(s);
}

static bool rx_put(struct serial *s, uint8_t byte)
{
	if (s->rx_count >= rx_capacity(s))
		return false;
	s->rx_fifo[(s->rx_head + s->rx_count) % SERIAL_RX_FIFO_SIZE] = byte;
	s->rx_count++;
	return true;
}

static uint8_t rx_get(struct serial *s)
{
	if (!s->rx_count)
		return s->rbr_last;
	uint8_t byte = s->rx_fifo[s->rx_head];
	s->rx_head = (s->rx_head + 1) % SERIAL_RX_FIFO_SIZE;
	s->rx_count--;
	s->rbr_last = byte;
	notify_rx_room(s);
	return byte;
}

/*
 * Write to the host fd: retry EINTR and partial writes, give up on anything
 * else. EAGAIN (a full non-blocking pipe or pty) and EPIPE (reader gone) lose
 * the byte rather than stall the vCPU; tx_dropped counts it.
 */
static void tx_to_fd(struct serial *s, const uint8_t *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(s->out_fd, buf + done, len - done);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		break; /* EAGAIN, EPIPE, EIO, ... or a 0-byte write: don't spin */
	}
	s->stats.tx_dropped += len - done;
}

static void thr_write(struct serial *s, uint8_t byte)
{
	if (s->mcr & MCR_LOOP) {
		/* The transmitter is wired to our own receiver; nothing leaves. */
		if (!rx_put(s, byte)) {
			s->lsr_errors |= LSR_OE;
			s->stats.rx_overruns++;
		}
	} else {
		s->stats.tx_bytes++;
		if (s->sink)
			s->sink(s->sink_opaque, &byte, 1);
		else if (s->out_fd >= 0)
			tx_to_fd(s, &byte, 1);
	}
	/*
	 * The byte left at once, so THR is empty again: latch THRE. Within one
	 * access the latch goes 0 -> 1, so the line only rises here if it was
	 * low; a driver filling the FIFO with the line high gets one edge per
	 * burst, like a real 16550A draining its TX FIFO.
	 */
	s->thr_ipending = true;
}

static void ier_write(struct serial *s, uint8_t val)
{
	uint8_t old = s->ier;
	s->ier = val & IER_MASK;
	/*
	 * Enabling THRI while THR is empty latches a THRE interrupt at once:
	 * Linux's start_tx relies on it to get its first TX interrupt, and its
	 * UART_BUG_THRE probe toggles IER.THRI expecting IIR to show it.
	 */
	if ((s->ier & IER_THRI) && !(old & IER_THRI))
		s->thr_ipending = true;
}

static void fcr_write(struct serial *s, uint8_t val)
{
	/* Toggling the enable bit resets both FIFOs on a real 16550A. */
	if ((val ^ s->fcr) & FCR_ENABLE)
		val |= FCR_CLEAR_RCVR;
	s->fcr = val & FCR_KEEP;
	if (val & FCR_CLEAR_RCVR)
		rx_clear(s);
	/* FCR_CLEAR_XMIT: TX is synchronous, there is nothing to clear. */
}

static void mcr_write(struct serial *s, uint8_t val)
{
	uint8_t before = msr_lines(s);
	bool was_loop = s->mcr & MCR_LOOP;
	s->mcr = val & MCR_MASK;
	uint8_t after = msr_lines(s);
	uint8_t changed = before ^ after;
	if (changed & MSR_CTS)
		s->msr_delta |= MSR_DCTS;
	if (changed & MSR_DSR)
		s->msr_delta |= MSR_DDSR;
	if ((before & MSR_RI) && !(after & MSR_RI))
		s->msr_delta |= MSR_TERI; /* trailing edge only */
	if (changed & MSR_DCD)
		s->msr_delta |= MSR_DDCD;
	if (was_loop && !(s->mcr & MCR_LOOP))
		notify_rx_room(s); /* the receiver is connected to the host again */
}

static uint8_t reg_read(struct serial *s, unsigned reg)
{
	switch (reg) {
	case REG_RBR_THR:
		return (s->lcr & LCR_DLAB) ? s->dll : rx_get(s);
	case REG_IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case REG_IIR_FCR: {
		/* IIR ignores DLAB: 8250 autoconfig reads it with LCR = 0xbf. */
		uint8_t src = iir_source(s);
		if (src == IIR_THRI)
			s->thr_ipending = false; /* reading IIR acknowledges THRE */
		return src | ((s->fcr & FCR_ENABLE) ? IIR_FIFO_BITS : 0);
	}
	case REG_LCR:
		return s->lcr;
	case REG_MCR:
		return s->mcr;
	case REG_LSR: {
		uint8_t lsr = lsr_value(s);
		s->lsr_errors = 0;
		return lsr;
	}
	case REG_MSR: {
		uint8_t msr = msr_lines(s) | s->msr_delta;
		s->msr_delta = 0;
		return msr;
	}
	default: /* REG_SCR */
		return s->scr;
	}
}

static void reg_write(struct serial *s, unsigned reg, uint8_t val)
{
	switch (reg) {
	case REG_RBR_THR:
		if (s->lcr & LCR_DLAB)
			s->dll = val;
		else
			thr_write(s, val);
		break;
	case REG_IER:
		if (s->lcr & LCR_DLAB)
			s->dlm = val;
		else
			ier_write(s, val);
		break;
	case REG_IIR_FCR:
		fcr_write(s, val); /* FCR ignores DLAB too */
		break;
	case REG_LCR:
		s->lcr = val;
		break;
	case REG_MCR:
		mcr_write(s, val);
		break;
	case REG_SCR:
		s->scr = val;
		break;
	default: /* LSR, MSR: factory-test writes, ignored */
		break;
	}
}

static void serial_read(void *opaque, uint64_t offset, uint8_t *data, unsigned len)
{
	struct serial *s = opaque;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < len; i++) {
		uint64_t reg = offset + i;
		data[i] = reg < SERIAL_PORT_LEN ? reg_read(s, (unsigned)reg) : 0xff;
	}
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static void serial_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned len)
{
	struct serial *s = opaque;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < len; i++) {
		uint64_t reg = offset + i;
		if (reg < SERIAL_PORT_LEN)
			reg_write(s, (unsigned)reg, data[i]);
	}
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

const struct bus_ops serial_bus_ops = {
    .name = "serial",
    .read = serial_read,
    .write = serial_write,
};

int serial_create(struct serial **out, struct irq_line *irq, int out_fd)
{
	if (!irq)
		return -EINVAL;
	struct serial *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	int err = pthread_mutex_init(&s->lock, NULL);
	if (err) {
		free(s);
		return -err; /* pthread functions return a positive error */
	}
	s->irq = irq;
	s->out_fd = out_fd;
	s->dll = 12; /* 115200 / 12 = 9600 baud, the usual power-on divisor */
	*out = s;
	return 0;
}

void serial_set_sink(struct serial *s, serial_sink_fn *fn, void *opaque)
{
	pthread_mutex_lock(&s->lock);
	s->sink = fn;
	s->sink_opaque = opaque;
	pthread_mutex_unlock(&s->lock);
}

void serial_set_rx_ready(struct serial *s, serial_rx_ready_fn *fn, void *opaque)
{
	pthread_mutex_lock(&s->lock);
	s->rx_ready = fn;
	s->rx_ready_opaque = opaque;
	pthread_mutex_unlock(&s->lock);
}

size_t serial_push_input(struct serial *s, const uint8_t *buf, size_t len)
{
	size_t n = 0;
	pthread_mutex_lock(&s->lock);
	if (!(s->mcr & MCR_LOOP)) {
		while (n < len && rx_put(s, buf[n]))
			n++;
	}
	if (n < len)
		s->rx_waiting = true;
	s->stats.rx_bytes += n;
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return n;
}

void serial_get_stats(struct serial *s, struct serial_stats *out)
{
	pthread_mutex_lock(&s->lock);
	*out = s->stats;
	pthread_mutex_unlock(&s->lock);
}

void serial_destroy(struct serial *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s);
}
