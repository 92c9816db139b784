/*
 * The probe's tiny libc: string helpers, the polled COM1 console and a
 * printf subset. Output is the whole point of the probe, so every byte goes
 * out synchronously (LSR THRE polled before each byte).
 */
#include "probe.h"

#define COM1     0x3f8
#define UART_RBR 0
#define UART_THR 0
#define UART_IER 1
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_DR   0x01
#define LSR_THRE 0x20

void *memcpy(void *dst, const void *src, size_t n)
{
	__asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	void *d = dst;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] - y[i];
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (a[i] != b[i])
			return (unsigned char)a[i] - (unsigned char)b[i];
		if (!a[i])
			return 0;
	}
	return 0;
}

void uart_init(void)
{
	outb(COM1 + UART_IER, 0x00); /* no UART interrupts: everything is polled */
	outb(COM1 + UART_LCR, 0x80); /* DLAB: divisor 1 (115200) */
	outb(COM1 + 0, 0x01);
	outb(COM1 + 1, 0x00);
	outb(COM1 + UART_LCR, 0x03); /* 8N1 */
	outb(COM1 + UART_MCR, 0x03); /* DTR | RTS */
}

static void uart_tx(char c)
{
	while (!(inb(COM1 + UART_LSR) & LSR_THRE))
		cpu_relax();
	outb(COM1 + UART_THR, (uint8_t)c);
}

void uart_putc(char c)
{
	if (c == '\n')
		uart_tx('\r');
	uart_tx(c);
}

int uart_getc_nowait(void)
{
	if (!(inb(COM1 + UART_LSR) & LSR_DR))
		return -1;
	return inb(COM1 + UART_RBR);
}

static void put_str(const char *s)
{
	while (*s)
		uart_putc(*s++);
}

static void put_num(uint64_t v, unsigned base, unsigned width, char pad)
{
	char buf[24];
	unsigned n = 0;
	do {
		unsigned d = (unsigned)(v % base);
		buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v);
	while (n < width && n < sizeof(buf))
		buf[n++] = pad;
	while (n)
		uart_putc(buf[--n]);
}

void probe_vprintf(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			uart_putc(*fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		unsigned width = 0, lng = 0;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned)(*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case 'd': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			if (v < 0) {
				uart_putc('-');
				v = -v;
			}
			put_num((uint64_t)v, 10, width, pad);
			break;
		}
		case 'u':
		case 'x': {
			uint64_t v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
			put_num(v, *fmt == 'u' ? 10 : 16, width, pad);
			break;
		}
		case 's': {
			const char *s = va_arg(ap, const char *);
			put_str(s ? s : "(null)");
			break;
		}
		case 'c':
			uart_putc((char)va_arg(ap, int));
			break;
		case '%':
			uart_putc('%');
			break;
		case '\0':
			return;
		default:
			uart_putc('%');
			uart_putc(*fmt);
		}
	}
}

void probe_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	probe_vprintf(fmt, ap);
	va_end(ap);
}

void probe_print_quoted(const char *s, size_t len)
{
	uart_putc('"');
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			uart_putc('\\');
			uart_putc((char)c);
		} else if (c < 0x20 || c > 0x7e) {
			probe_printf("\\x%02x", c);
		} else {
			uart_putc((char)c);
		}
	}
	uart_putc('"');
}
