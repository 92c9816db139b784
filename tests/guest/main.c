/*
 * The probe's C entry: copies the boot information out of PVH start_info,
 * parses `probe=<test>[,<test>...]` and per-test options from the command
 * line, runs the tests in order from the sorted table below and ends with
 * exactly one PROBE-END line and an i8042 reset.
 */
#include "probe.h"

#define XEN_HVM_START_MAGIC 0x336ec578u

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;   /* version >= 1 */
	uint32_t memmap_entries; /* version >= 1 */
	uint32_t reserved;
};

struct probe_test {
	const char *name;
	probe_test_fn *run;
};

/* Sorted by name (strncmp order): lookup() is a binary search. */
static const struct probe_test tests[] = {
    {"blk.bench", test_blk_bench},
    {"blk.copy", test_blk_copy},
    {"blk.fill", test_blk_fill},
    {"blk.resize", test_blk_resize},
    {"blk.verify", test_blk_verify},
    {"echo", test_echo},
    {"fault", test_fault},
    {"hello", test_hello},
    {"hostile.blk", test_hostile_blk},
    {"hostile.net", test_hostile_net},
    {"hostile.vq", test_hostile_vq},
    {"hostile.vsock", test_hostile_vsock},
    {"idle", test_idle},
    {"irq", test_irq},
    {"lat", test_lat},
    {"net", test_net},
    {"net.bench", test_net_bench},
    {"pci", test_pci},
    {"rng", test_rng},
    {"rng.bench", test_rng_bench},
    {"smp", test_smp},
    {"timer", test_timer},
    {"virtio-cfg", test_virtio_cfg},
    {"vsock", test_vsock},
    {"vsock.bench", test_vsock_bench},
};

#define MAX_RUN 32

static char cmdline[PROBE_CMDLINE_MAX];
struct probe_mem_entry probe_memmap[PROBE_MEMMAP_MAX];
unsigned probe_memmap_entries;
uint64_t probe_rsdp_paddr;

const char *probe_cmdline(void)
{
	return cmdline;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Start of the value of token `key=` in the command line, or NULL. */
static const char *find_opt(const char *key)
{
	size_t klen = strlen(key);
	const char *p = cmdline;
	while (*p) {
		while (is_space(*p))
			p++;
		if (!strncmp(p, key, klen) && p[klen] == '=')
			return p + klen + 1;
		while (*p && !is_space(*p))
			p++;
	}
	return NULL;
}

bool probe_opt(const char *key, char *buf, size_t len)
{
	const char *v = find_opt(key);
	if (!v || len == 0)
		return false;
	size_t n = 0;
	while (v[n] && !is_space(v[n]) && n + 1 < len) {
		buf[n] = v[n];
		n++;
	}
	buf[n] = '\0';
	return true;
}

uint64_t probe_opt_u64(const char *key, uint64_t def)
{
	const char *v = find_opt(key);
	if (!v || !*v || is_space(*v))
		return def;
	uint64_t r = 0;
	unsigned base = 10;
	if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
		base = 16;
		v += 2;
	}
	for (; *v && !is_space(*v); v++) {
		unsigned d;
		if (*v >= '0' && *v <= '9')
			d = (unsigned)(*v - '0');
		else if (base == 16 && *v >= 'a' && *v <= 'f')
			d = (unsigned)(*v - 'a' + 10);
		else if (base == 16 && *v >= 'A' && *v <= 'F')
			d = (unsigned)(*v - 'A' + 10);
		else
			return def;
		r = r * base + d;
	}
	return r;
}

__attribute__((noreturn)) void probe_reset(void)
{
	/* i8042 "pulse reset line"; a VMM run with no-reboot semantics exits here. */
	outb(0x64, 0xfe);
	for (;;)
		__asm__ volatile("cli; hlt");
}

__attribute__((noreturn)) void probe_fail(const char *reason)
{
	probe_printf("PROBE-END status=fail reason=%s\n", reason);
	probe_reset();
}

static const struct probe_test *lookup(const char *name, size_t len)
{
	size_t lo = 0, hi = sizeof(tests) / sizeof(tests[0]);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strncmp(tests[mid].name, name, len);
		if (c == 0 && tests[mid].name[len] == '\0')
			return &tests[mid];
		if (c == 0)
			c = 1; /* tests[mid].name is longer: it sorts after name */
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/*
 * The boot structures may live anywhere in low RAM the VMM chose, which later
 * tests may overwrite (AP trampoline, DMA buffers): copy what we need first.
 */
static bool copy_start_info(uint64_t si_paddr)
{
	if (si_paddr == 0 || si_paddr >= 0x100000000ull)
		return false;
	const struct hvm_start_info *si = (const struct hvm_start_info *)si_paddr;
	if (si->magic != XEN_HVM_START_MAGIC)
		return false;
	uint64_t cl = si->cmdline_paddr;
	if (cl && cl < 0x100000000ull) {
		const char *src = (const char *)cl;
		size_t n = 0;
		while (n + 1 < sizeof(cmdline) && src[n]) {
			cmdline[n] = src[n];
			n++;
		}
		cmdline[n] = '\0';
	}
	if (si->version >= 1 && si->memmap_paddr && si->memmap_paddr < 0x100000000ull) {
		unsigned n = si->memmap_entries;
		if (n > PROBE_MEMMAP_MAX)
			n = PROBE_MEMMAP_MAX;
		memcpy(probe_memmap, (const void *)si->memmap_paddr, n * sizeof(probe_memmap[0]));
		probe_memmap_entries = n;
	}
	if (si->rsdp_paddr < 0x100000000ull)
		probe_rsdp_paddr = si->rsdp_paddr;
	return true;
}

void probe_main(uint32_t start_info_paddr);

void probe_main(uint32_t start_info_paddr)
{
	bool have_si = copy_start_info(start_info_paddr);

	uart_init();
	trap_init();
	/* Mask both PICs: firmware may have left the PIT's IRQ 0 live on a vector we use. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);

	/* Start on a fresh line in case firmware left a partial one on the console. */
	probe_printf("\n");
	if (!have_si)
		probe_fail("bad-start-info");

	char list[256];
	if (!probe_opt("probe", list, sizeof(list)))
		memcpy(list, "hello", 6);

	const struct probe_test *run[MAX_RUN];
	unsigned nrun = 0;
	for (const char *p = list; *p;) {
		size_t len = 0;
		while (p[len] && p[len] != ',')
			len++;
		if (len) {
			const struct probe_test *t = lookup(p, len);
			if (!t) {
				probe_printf("PROBE main unknown_test=");
				probe_print_quoted(p, len);
				probe_printf("\n");
				probe_fail("unknown-test");
			}
			if (nrun == MAX_RUN)
				probe_fail("too-many-tests");
			run[nrun++] = t;
		}
		p += len;
		if (*p == ',')
			p++;
	}

	for (unsigned i = 0; i < nrun; i++) {
		const char *why = run[i]->run();
		if (why) {
			probe_printf("PROBE-END status=fail reason=%s test=%s\n", why,
			             run[i]->name);
			probe_reset();
		}
	}
	probe_printf("PROBE-END status=ok\n");
	probe_reset();
}
