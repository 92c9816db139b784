/*
 * The boot argument a kernel finds at entry: the memory map (e820), and the
 * structure carrying it — the Linux zero page (boot_params, RSI at the 64-bit
 * entry) or the PVH hvm_start_info (EBX at the 32-bit entry) with its memmap
 * and module list.
 */
#include <errno.h>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/x86_priv.h"

/* boot_params offsets (arch/x86/include/uapi/asm/bootparam.h). */
#define BP_ACPI_RSDP        0x070
#define BP_EXT_RAMDISK_IMG  0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE     0x0c8
#define BP_E820_ENTRIES     0x1e8
#define BP_BOOT_FLAG        0x1fe
#define BP_HEADER           0x202
#define BP_VERSION          0x206
#define BP_TYPE_OF_LOADER   0x210
#define BP_RAMDISK_IMAGE    0x218
#define BP_RAMDISK_SIZE     0x21c
#define BP_CMD_LINE_PTR     0x228
#define BP_INITRD_ADDR_MAX  0x22c
#define BP_KERNEL_ALIGN     0x230
#define BP_CMDLINE_SIZE     0x238
#define BP_HW_SUBARCH       0x23c
#define BP_E820_TABLE       0x2d0
#define BP_E820_MAX         128
#define BP_E820_ENTRY_SIZE  20
#define BP_SIZE             0x1000

/* hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h), version 1. */
#define PVH_MAGIC 0x336ec578u
struct pvh_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};
struct pvh_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};
struct pvh_memmap_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};
_Static_assert(sizeof(struct pvh_start_info) == 56, "hvm_start_info is 56 bytes");
_Static_assert(sizeof(struct pvh_modlist_entry) == 32, "hvm_modlist_entry is 32 bytes");
_Static_assert(sizeof(struct pvh_memmap_entry) == 24, "hvm_memmap_table_entry is 24 bytes");
_Static_assert(X86_PVH_INFO_ADDR + sizeof(struct pvh_start_info) <= X86_PVH_MODLIST_ADDR,
               "start info overlaps the module list");
_Static_assert(X86_PVH_MODLIST_ADDR + sizeof(struct pvh_modlist_entry) <= X86_PVH_MEMMAP_ADDR,
               "module list overlaps the memmap");
_Static_assert(X86_PVH_MEMMAP_ADDR + X86_E820_MAX * sizeof(struct pvh_memmap_entry) <=
                   X86_PVH_INFO_ADDR + 0x1000,
               "memmap spills out of its page");
_Static_assert(X86_ZERO_PAGE_ADDR + BP_SIZE <= X86_TRAMPOLINE_START,
               "zero page reaches the guest's trampoline page");

static int add(struct x86_e820_entry *e, unsigned *n, unsigned max, uint64_t addr, uint64_t end,
               uint32_t type)
{
	if (end <= addr)
		return 0;
	if (*n >= max)
		return -ENOSPC;
	e[(*n)++] = (struct x86_e820_entry){.addr = addr, .size = end - addr, .type = type};
	return 0;
}

int x86_e820_build(const struct guest_mem *mem, struct x86_e820_entry *e, unsigned max)
{
	if (mem->nregions < 1 || mem->regions[0].gpa != 0 ||
	    mem->regions[0].size < X86_HIGH_MEM_START)
		return -EINVAL;
	unsigned n = 0;
	int ret = add(e, &n, max, 0, X86_EBDA_START, X86_E820_RAM);
	ret = ret ?: add(e, &n, max, X86_EBDA_START, X86_BIOS_START, X86_E820_RESERVED);
	ret = ret ?: add(e, &n, max, X86_ACPI_ADDR, X86_BIOS_TABLES_END, X86_E820_RESERVED);
	for (unsigned i = 0; i < mem->nregions && !ret; i++) {
		const struct guest_region *r = &mem->regions[i];
		uint64_t start = r->gpa < X86_HIGH_MEM_START ? X86_HIGH_MEM_START : r->gpa;
		ret = add(e, &n, max, start, r->gpa + r->size, X86_E820_RAM);
	}
	return ret < 0 ? ret : (int)n;
}

int x86_zero_page_write(struct x86_ctx *c, const struct x86_boot_info *info)
{
	uint8_t *bp = guest_mem_ptr(c->mem, X86_ZERO_PAGE_ADDR, BP_SIZE);
	struct x86_e820_entry e[X86_E820_MAX];
	int n = x86_e820_build(c->mem, e, X86_E820_MAX);
	if (!bp || n < 0)
		return x86_fail(c, -ENOMEM, "cannot build the zero page");
	memset(bp, 0, BP_SIZE);
	if (c->k.hdr_len) {
		memcpy(bp + X86_SETUP_HDR_OFF, c->k.hdr, c->k.hdr_len);
	} else {
		/*
		 * A vmlinux has no setup header, but Linux reads the protocol
		 * version from it to decide which fields exist: claim 2.15.
		 */
		x86_put16(bp + BP_BOOT_FLAG, 0xaa55);
		memcpy(bp + BP_HEADER, "HdrS", 4);
		x86_put16(bp + BP_VERSION, 0x020f);
		x86_put32(bp + BP_INITRD_ADDR_MAX, (uint32_t)(c->k.initrd_end_max - 1));
		x86_put32(bp + BP_KERNEL_ALIGN, 0x200000);
		x86_put32(bp + BP_CMDLINE_SIZE, (uint32_t)c->k.cmdline_max);
	}
	bp[BP_TYPE_OF_LOADER] = 0xff;     /* undefined loader: no registered id */
	x86_put32(bp + BP_HW_SUBARCH, 0); /* a normal PC */
	x86_put32(bp + BP_CMD_LINE_PTR, (uint32_t)X86_CMDLINE_ADDR);
	x86_put32(bp + BP_EXT_CMD_LINE, 0);
	/* The initrd is always placed below 3 GiB, so the ext_ (high 32-bit) halves stay 0. */
	x86_put32(bp + BP_RAMDISK_IMAGE, (uint32_t)info->initrd_start);
	x86_put32(bp + BP_RAMDISK_SIZE, (uint32_t)info->initrd_size);
	x86_put32(bp + BP_EXT_RAMDISK_IMG, (uint32_t)(info->initrd_start >> 32));
	x86_put32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)(info->initrd_size >> 32));
	x86_put64(bp + BP_ACPI_RSDP, X86_ACPI_ADDR); /* saves Linux the scan (protocol 2.14+) */
	_Static_assert(X86_E820_MAX <= BP_E820_MAX, "e820 table too small");
	bp[BP_E820_ENTRIES] = (uint8_t)n;
	for (int i = 0; i < n; i++) {
		uint8_t *p = bp + BP_E820_TABLE + i * BP_E820_ENTRY_SIZE;
		x86_put64(p, e[i].addr);
		x86_put64(p + 8, e[i].size);
		x86_put32(p + 16, e[i].type);
	}
	return 0;
}

int x86_pvh_write(struct x86_ctx *c, const struct x86_boot_info *info)
{
	struct x86_e820_entry e[X86_E820_MAX];
	int n = x86_e820_build(c->mem, e, X86_E820_MAX);
	struct pvh_memmap_entry *mm =
	    guest_mem_ptr(c->mem, X86_PVH_MEMMAP_ADDR, X86_E820_MAX * sizeof(*mm));
	struct pvh_modlist_entry *mod = guest_mem_ptr(c->mem, X86_PVH_MODLIST_ADDR, sizeof(*mod));
	struct pvh_start_info *si = guest_mem_ptr(c->mem, X86_PVH_INFO_ADDR, sizeof(*si));
	if (!mm || !mod || !si || n < 0)
		return x86_fail(c, -ENOMEM, "cannot build the PVH start info");
	for (int i = 0; i < n; i++)
		mm[i] = (struct pvh_memmap_entry){
		    .addr = e[i].addr, .size = e[i].size, .type = e[i].type};
	*si = (struct pvh_start_info){
	    .magic = PVH_MAGIC,
	    .version = 1,
	    .cmdline_paddr = X86_CMDLINE_ADDR,
	    .rsdp_paddr = X86_ACPI_ADDR,
	    .memmap_paddr = X86_PVH_MEMMAP_ADDR,
	    .memmap_entries = (uint32_t)n,
	};
	if (info->initrd_size) {
		*mod = (struct pvh_modlist_entry){.paddr = info->initrd_start,
		                                  .size = info->initrd_size};
		si->nr_modules = 1;
		si->modlist_paddr = X86_PVH_MODLIST_ADDR;
	}
	return 0;
}
