/*
 * The probe guest's shared declarations: port and MMIO access, the COM1
 * console and PROBE line printing, command-line options, the TSC clock, the
 * IDT/interrupt hooks and the test table. Freestanding: no libc, no SSE.
 * Every instruction here is emulated on PVM hosts (~1 µs each), so helpers
 * are written to do as little as possible.
 */
#ifndef PROBE_H
#define PROBE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROBE_MAX_CPUS    64
#define PROBE_CMDLINE_MAX 1024
#define PROBE_MEMMAP_MAX  64

/* ---- port and MMIO access ---- */
static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint16_t inw(uint16_t port)
{
	uint16_t v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint8_t mmio_read8(uint64_t addr)
{
	return *(volatile uint8_t *)addr;
}
static inline uint16_t mmio_read16(uint64_t addr)
{
	return *(volatile uint16_t *)addr;
}
static inline uint32_t mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)addr;
}
static inline void mmio_write8(uint64_t addr, uint8_t v)
{
	*(volatile uint8_t *)addr = v;
}
static inline void mmio_write16(uint64_t addr, uint16_t v)
{
	*(volatile uint16_t *)addr = v;
}
static inline void mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)addr = v;
}
static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid"
	                 : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
	                 : "a"(leaf), "c"(sub));
}
static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}
#define barrier() __asm__ volatile("" ::: "memory")

/* ---- freestanding libc subset (lib.c) ---- */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);

/* ---- console (lib.c): COM1, polled ---- */
void uart_init(void);
void uart_putc(char c);
/* Returns the next received byte, or -1 if none is waiting. */
int uart_getc_nowait(void);

/*
 * printf subset: %d %u %x %lx %llx %s %c %%, with 'l'/'ll'/'z' length, '0' flag
 * and width. '\n' is sent as "\r\n". Output goes straight to COM1.
 */
void probe_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void probe_vprintf(const char *fmt, va_list ap);
/* Prints s as a quoted value: '"' and '\\' escaped, other bytes outside 0x20..0x7e as \xNN. */
void probe_print_quoted(const char *s, size_t len);

/* ---- command line (main.c) ---- */
/* The command line copied out of start_info (always NUL-terminated, maybe ""). */
const char *probe_cmdline(void);
/*
 * Value of option `key` (e.g. "idle.secs") from the command line: copies it
 * NUL-terminated into buf and returns true, or returns false if absent.
 */
bool probe_opt(const char *key, char *buf, size_t len);
/* Numeric option (decimal or 0x hex); def when absent or malformed. */
uint64_t probe_opt_u64(const char *key, uint64_t def);

/* ---- boot information (main.c) ---- */
struct probe_mem_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};
extern struct probe_mem_entry probe_memmap[PROBE_MEMMAP_MAX];
extern unsigned probe_memmap_entries;
extern uint64_t probe_rsdp_paddr; /* 0 when start_info gave none */

/* ---- clocks (test_timer.c) ---- */
/* TSC frequency in kHz, calibrated against PIT channel 2 on first use. */
uint64_t probe_tsc_khz(void);
/* Busy-waits us microseconds (TSC based). */
void probe_udelay(uint64_t us);
/* Microseconds elapsed since tsc0. */
uint64_t probe_us_since(uint64_t tsc0);

/* ---- traps and interrupts (trap.c) ---- */
typedef void irq_handler_fn(unsigned vector);
void trap_init(void);
/* Installs handler for vector (32..254) in the IDT. The handler sends any EOI. */
void irq_register(unsigned vector, irq_handler_fn *handler);
/* Load the shared IDT on this CPU (APs call it before enabling interrupts). */
void trap_load_idt(void);

/* ---- local APIC (lapic.c) ---- */
#define LAPIC_BASE            0xFEE00000ull
#define LAPIC_ID              0x020
#define LAPIC_EOI             0x0B0
#define LAPIC_SVR             0x0F0
#define LAPIC_ICR_LO          0x300
#define LAPIC_ICR_HI          0x310
#define LAPIC_LVT_TIMER       0x320
#define LAPIC_TIMER_ICR       0x380
#define LAPIC_TIMER_CCR       0x390
#define LAPIC_TIMER_DCR       0x3E0
#define LAPIC_TIMER_VECTOR    0x40
#define LAPIC_SPURIOUS_VECTOR 0xFF

static inline uint32_t lapic_read(uint32_t reg)
{
	return mmio_read32(LAPIC_BASE + reg);
}
static inline void lapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(LAPIC_BASE + reg, v);
}
static inline void lapic_eoi(void)
{
	lapic_write(LAPIC_EOI, 0);
}
/* Software-enables this CPU's LAPIC (idempotent). */
void lapic_enable(void);
unsigned lapic_id(void);
/* LAPIC timer input clock (after divide-by-1) in kHz, calibrated against the TSC once. */
uint64_t lapic_timer_khz(void);
/*
 * Arms the LAPIC timer one-shot for us microseconds on LAPIC_TIMER_VECTOR
 * (divide by 16, saturating at the 32-bit counter's range).
 */
void lapic_timer_oneshot_us(uint64_t us);
void lapic_timer_stop(void);
/* Number of LAPIC timer interrupts taken on the BSP (set by the vector's handler). */
extern volatile uint64_t lapic_timer_ticks;
/* Halts with interrupts enabled until an interrupt arrives, then disables them again. */
static inline void probe_wait_irq(void)
{
	__asm__ volatile("sti; hlt; cli" ::: "memory");
}

/* Lets interrupts that are already pending in the LAPIC be taken (the
 * probe runs with interrupts off outside probe_wait_irq): one instruction
 * with them enabled, after STI's one-instruction shadow. */
static inline void probe_irq_window(void)
{
	__asm__ volatile("sti; nop; cli" ::: "memory");
}

/* ---- PCI (pci.c) ---- */
uint32_t pci_cfg_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off);
void pci_cfg_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v);
/*
 * Gives BAR `bar` of a function an address if it has none (BAR reads 0),
 * from a bump allocator over [0xC0000000, 0xFEC00000) (memory) or
 * [0xC000, 0x10000) (I/O), and enables decoding. Returns the BAR's address
 * (existing or new) or 0 if the BAR is unimplemented or the window is full.
 * Sizes the BAR: several config accesses, so only for devices a test drives.
 */
uint64_t pci_bar_assign(unsigned bus, unsigned dev, unsigned fn, unsigned bar);

/* ---- end of run (main.c) ---- */
/* Prints PROBE-END status=fail reason=<reason> and resets; never returns. */
__attribute__((noreturn)) void probe_fail(const char *reason);
/* i8042 reset, then cli; hlt forever. */
__attribute__((noreturn)) void probe_reset(void);

/* ---- SMP (test_smp.c): entry of an AP once in long mode (called from start.S) ---- */
void ap_main(void);

/*
 * A test: returns NULL when it passed, else one word (no spaces) saying why
 * it failed, which becomes PROBE-END's reason. Tests print their own
 * `PROBE <name> ...` lines.
 */
typedef const char *probe_test_fn(void);
probe_test_fn test_blk_bench, test_blk_copy, test_blk_fill, test_blk_verify, test_echo, test_fault,
    test_hello, test_hostile_blk, test_hostile_vq, test_idle, test_irq, test_pci, test_rng,
    test_smp, test_timer, test_virtio_cfg;
probe_test_fn test_lat, test_rng_bench;
probe_test_fn test_blk_resize;
probe_test_fn test_hostile_net, test_net, test_net_bench;
probe_test_fn test_hostile_vsock, test_vsock, test_vsock_bench;

#endif
