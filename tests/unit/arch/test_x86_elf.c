/*
 * ELF loading: a crafted PVH kernel (note in a PT_NOTE or only in a SHT_NOTE
 * section) and a crafted vmlinux load, land at their physical addresses and
 * get the right boot argument; every malformed header or segment is refused
 * with a clear message (table-driven).
 */
#include <elf.h>
#include <errno.h>

#include "tests/unit/arch/arch_fixture.h"

#define IMG_SIZE    0x3200
#define TEXT_OFF    0x1000
#define TEXT_PADDR  0x100000ull
#define TEXT_FILESZ 0x100
#define TEXT_MEMSZ  0x2000
#define DATA_OFF    0x2000
#define DATA_PADDR  0x200000ull
#define NOTE_OFF    0x3000
#define SHDR_OFF    0x3100
#define VM_ENTRY    (TEXT_PADDR + 0x10)
#define PVH_ENTRY   (TEXT_PADDR + 0x20)

enum note_kind { NOTE_NONE, NOTE_PHDR, NOTE_SECTION };

struct elf_img {
	uint8_t b[IMG_SIZE];
	size_t len;
};

static Elf64_Ehdr *ehdr(struct elf_img *im)
{
	return (Elf64_Ehdr *)im->b;
}

static Elf64_Phdr *phdr(struct elf_img *im, int i)
{
	return (Elf64_Phdr *)(im->b + sizeof(Elf64_Ehdr)) + i;
}

/* A note list: a decoy GNU note, then Xen's PHYS32_ENTRY with an 8-byte value (as Linux emits). */
static size_t put_notes(uint8_t *p, uint64_t entry, uint32_t descsz)
{
	uint32_t gnu[] = {4, 4, 3};
	memcpy(p, gnu, 12);
	memcpy(p + 12, "GNU\0", 4);
	memcpy(p + 16, "\1\2\3\4", 4);
	uint32_t xen[] = {4, descsz, 18};
	memcpy(p + 20, xen, 12);
	memcpy(p + 32, "Xen\0", 4);
	memcpy(p + 36, &entry, 8);
	return 36 + ((descsz + 3) & ~3u);
}

static void make_elf(struct elf_img *im, enum note_kind notes)
{
	memset(im, 0, sizeof(*im));
	im->len = IMG_SIZE;
	Elf64_Ehdr *e = ehdr(im);
	memcpy(e->e_ident, ELFMAG, SELFMAG);
	e->e_ident[EI_CLASS] = ELFCLASS64;
	e->e_ident[EI_DATA] = ELFDATA2LSB;
	e->e_ident[EI_VERSION] = EV_CURRENT;
	e->e_type = ET_EXEC;
	e->e_machine = EM_X86_64;
	e->e_version = EV_CURRENT;
	e->e_entry = VM_ENTRY;
	e->e_phoff = sizeof(Elf64_Ehdr);
	e->e_ehsize = sizeof(Elf64_Ehdr);
	e->e_phentsize = sizeof(Elf64_Phdr);
	e->e_phnum = notes == NOTE_PHDR ? 3 : 2;
	*phdr(im, 0) = (Elf64_Phdr){.p_type = PT_LOAD,
	                            .p_offset = TEXT_OFF,
	                            .p_vaddr = 0xffffffff80000000ull + TEXT_PADDR,
	                            .p_paddr = TEXT_PADDR,
	                            .p_filesz = TEXT_FILESZ,
	                            .p_memsz = TEXT_MEMSZ,
	                            .p_flags = PF_R | PF_X};
	*phdr(im, 1) = (Elf64_Phdr){.p_type = PT_LOAD,
	                            .p_offset = DATA_OFF,
	                            .p_vaddr = DATA_PADDR,
	                            .p_paddr = DATA_PADDR,
	                            .p_filesz = 0x80,
	                            .p_memsz = 0x80,
	                            .p_flags = PF_R | PF_W};
	for (int i = 0; i < TEXT_FILESZ; i++)
		im->b[TEXT_OFF + i] = (uint8_t)(i + 1);
	memset(im->b + DATA_OFF, 0x5a, 0x80);
	if (notes == NOTE_NONE)
		return;
	size_t nlen = put_notes(im->b + NOTE_OFF, PVH_ENTRY, 8);
	if (notes == NOTE_PHDR) {
		*phdr(im, 2) = (Elf64_Phdr){.p_type = PT_NOTE,
		                            .p_offset = NOTE_OFF,
		                            .p_filesz = nlen,
		                            .p_memsz = nlen,
		                            .p_align = 4};
		return;
	}
	Elf64_Shdr *sh = (Elf64_Shdr *)(im->b + SHDR_OFF);
	sh[1] = (Elf64_Shdr){.sh_type = SHT_NOTE, .sh_offset = NOTE_OFF, .sh_size = nlen};
	e->e_shoff = SHDR_OFF;
	e->e_shnum = 2;
	e->e_shentsize = sizeof(Elf64_Shdr);
}

static int load(struct guest_mem *m, const struct elf_img *im, const char *cmdline,
                struct x86_boot_info *info, char *err, size_t errlen)
{
	char path[32];
	arch_write_tmp(path, im->b, im->len);
	struct x86_boot_config cfg = {.kernel_path = path, .cmdline = cmdline, .ncpus = 2};
	int ret = x86_load(m, &cfg, info, err, errlen);
	unlink(path);
	return ret;
}

Test(arch_elf, pvh_note_in_phdr)
{
	struct guest_mem m;
	struct elf_img im;
	struct x86_boot_info info;
	char err[256];
	arch_mem_init(&m, 64 * MIB);
	/* Stale bytes where the bss goes: the loader must zero them. */
	memset(arch_gpa(&m, TEXT_PADDR, TEXT_MEMSZ), 0xee, TEXT_MEMSZ);
	arch_mark_trampoline(&m);
	make_elf(&im, NOTE_PHDR);
	cr_assert_eq(load(&m, &im, "console=ttyS0", &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(info.kind, X86_ENTRY_PVH);
	cr_assert_str_eq(info.format, "pvh-elf");
	cr_assert_eq(info.entry, PVH_ENTRY);
	cr_assert_eq(info.boot_arg, X86_PVH_INFO_ADDR);
	cr_assert_eq(info.kernel_start, TEXT_PADDR);
	cr_assert_eq(info.kernel_end, DATA_PADDR + 0x80);
	const uint8_t *text = arch_gpa(&m, TEXT_PADDR, TEXT_MEMSZ);
	for (int i = 0; i < TEXT_MEMSZ; i++)
		cr_assert_eq(text[i], i < TEXT_FILESZ ? (uint8_t)(i + 1) : 0, "text byte %d", i);
	cr_assert_eq(*(uint8_t *)arch_gpa(&m, DATA_PADDR + 0x7f, 1), 0x5a);
	const uint8_t *si = arch_gpa(&m, X86_PVH_INFO_ADDR, 56);
	cr_assert_eq(arch_le32(si), 0x336ec578);
	cr_assert_eq(arch_le32(si + 4), 1);
	cr_assert_eq(arch_le32(si + 12), 0, "no modules without an initrd");
	cr_assert_eq(arch_le64(si + 24), X86_CMDLINE_ADDR);
	cr_assert_eq(arch_le64(si + 32), X86_ACPI_ADDR, "rsdp_paddr");
	cr_assert_eq(memcmp(arch_gpa(&m, X86_ACPI_ADDR, 8), "RSD PTR ", 8), 0);
	cr_assert_str_eq((char *)arch_gpa(&m, X86_CMDLINE_ADDR, 14), "console=ttyS0");
	cr_assert_eq(arch_le64(si + 40), X86_PVH_MEMMAP_ADDR);
	cr_assert_eq(arch_le32(si + 48), 4);
	const uint8_t *mm = arch_gpa(&m, X86_PVH_MEMMAP_ADDR, 4 * 24);
	cr_assert_eq(arch_le64(mm), 0);
	cr_assert_eq(arch_le64(mm + 8), X86_EBDA_START);
	cr_assert_eq(arch_le32(mm + 16), X86_E820_RAM);
	cr_assert_eq(arch_le32(mm + 24 + 16), X86_E820_RESERVED);
	cr_assert_eq(arch_le64(mm + 72), X86_HIGH_MEM_START);
	cr_assert_eq(arch_le64(mm + 80), 63 * MIB);
	cr_assert_eq(arch_le32(mm + 88), X86_E820_RAM);
	arch_assert_trampoline(&m);
	arch_mem_fini(&m);
}

Test(arch_elf, pvh_note_only_in_section)
{
	struct guest_mem m;
	struct elf_img im;
	struct x86_boot_info info;
	char err[256];
	arch_mem_init(&m, 64 * MIB);
	make_elf(&im, NOTE_SECTION);
	cr_assert_eq(load(&m, &im, "", &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(info.kind, X86_ENTRY_PVH);
	cr_assert_eq(info.entry, PVH_ENTRY);
	arch_mem_fini(&m);
}

Test(arch_elf, vmlinux_gets_zero_page)
{
	struct guest_mem m;
	struct elf_img im;
	struct x86_boot_info info;
	char err[256];
	arch_mem_init(&m, 64 * MIB);
	arch_mark_trampoline(&m);
	make_elf(&im, NOTE_NONE);
	cr_assert_eq(load(&m, &im, "root=/dev/vda", &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(info.kind, X86_ENTRY_LINUX64);
	cr_assert_str_eq(info.format, "elf64");
	cr_assert_eq(info.entry, VM_ENTRY);
	cr_assert_eq(info.boot_arg, X86_ZERO_PAGE_ADDR);
	const uint8_t *bp = arch_gpa(&m, X86_ZERO_PAGE_ADDR, 0x1000);
	cr_assert_eq(arch_le16(bp + 0x1fe), 0xaa55);
	cr_assert_eq(memcmp(bp + 0x202, "HdrS", 4), 0);
	cr_assert_geq(arch_le16(bp + 0x206), 0x20a);
	cr_assert_eq(bp[0x210], 0xff, "type_of_loader");
	cr_assert_eq(arch_le64(bp + 0x70), X86_ACPI_ADDR, "acpi_rsdp_addr");
	cr_assert_eq(arch_le32(bp + 0x228), X86_CMDLINE_ADDR);
	cr_assert_eq(arch_le32(bp + 0x238), 65535, "cmdline_size");
	cr_assert_str_eq((char *)arch_gpa(&m, X86_CMDLINE_ADDR, 14), "root=/dev/vda");
	cr_assert_eq(bp[0x1e8], 4, "e820 entries");
	cr_assert_eq(arch_le64(bp + 0x2d0 + 3 * 20), X86_HIGH_MEM_START);
	cr_assert_eq(arch_le64(bp + 0x2d0 + 3 * 20 + 8), 63 * MIB);
	arch_assert_trampoline(&m);
	arch_mem_fini(&m);
}

Test(arch_elf, virtual_entry_is_translated)
{
	struct guest_mem m;
	struct elf_img im;
	struct x86_boot_info info;
	char err[256];
	arch_mem_init(&m, 64 * MIB);
	make_elf(&im, NOTE_NONE);
	ehdr(&im)->e_entry = 0xffffffff80000000ull + VM_ENTRY;
	cr_assert_eq(load(&m, &im, "", &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(info.entry, VM_ENTRY);
	arch_mem_fini(&m);
}

/* Malformed images: each mutation alone must be refused with errno and message. */
struct bad_elf {
	const char *name;
	void (*mutate)(struct elf_img *im);
	int err;
	const char *msg;
};

static void m_truncated_header(struct elf_img *im)
{
	im->len = 40;
}
static void m_class32(struct elf_img *im)
{
	ehdr(im)->e_ident[EI_CLASS] = ELFCLASS32;
}
static void m_big_endian(struct elf_img *im)
{
	ehdr(im)->e_ident[EI_DATA] = ELFDATA2MSB;
}
static void m_machine(struct elf_img *im)
{
	ehdr(im)->e_machine = EM_386;
}
static void m_type_dyn(struct elf_img *im)
{
	ehdr(im)->e_type = ET_DYN;
}
static void m_no_phdrs(struct elf_img *im)
{
	ehdr(im)->e_phnum = 0;
}
static void m_phentsize(struct elf_img *im)
{
	ehdr(im)->e_phentsize = 32;
}
static void m_many_phdrs(struct elf_img *im)
{
	ehdr(im)->e_phnum = 0xffff;
}
static void m_phoff_eof(struct elf_img *im)
{
	ehdr(im)->e_phoff = IMG_SIZE - 8;
}
static void m_phoff_wrap(struct elf_img *im)
{
	ehdr(im)->e_phoff = UINT64_MAX - 16;
}
static void m_filesz_gt_memsz(struct elf_img *im)
{
	phdr(im, 1)->p_filesz = 0x100;
}
static void m_offset_eof(struct elf_img *im)
{
	phdr(im, 1)->p_offset = IMG_SIZE;
}
static void m_offset_wrap(struct elf_img *im)
{
	phdr(im, 1)->p_offset = UINT64_MAX - 0x10;
}
static void m_cut_segment(struct elf_img *im)
{
	im->len = DATA_OFF + 0x40;
}
static void m_overlap(struct elf_img *im)
{
	phdr(im, 1)->p_paddr = TEXT_PADDR + TEXT_MEMSZ - 0x10;
}
static void m_low_memory(struct elf_img *im)
{
	phdr(im, 1)->p_paddr = 0x9000;
}
static void m_pci_hole(struct elf_img *im)
{
	phdr(im, 1)->p_paddr = 0xfec00000ull;
}
static void m_past_ram(struct elf_img *im)
{
	phdr(im, 1)->p_paddr = 128 * MIB;
}
static void m_paddr_wrap(struct elf_img *im)
{
	phdr(im, 1)->p_paddr = UINT64_MAX - 0x10;
}
static void m_huge_memsz(struct elf_img *im)
{
	phdr(im, 0)->p_memsz = 1ull << 40;
}
static void m_entry_outside(struct elf_img *im)
{
	ehdr(im)->e_entry = 0x800000;
}
static void m_no_load(struct elf_img *im)
{
	phdr(im, 0)->p_type = PT_NULL;
	phdr(im, 1)->p_type = PT_NULL;
}
static void m_pvh_bad_size(struct elf_img *im)
{
	put_notes(im->b + NOTE_OFF, PVH_ENTRY, 2);
}
static void m_pvh_high_entry(struct elf_img *im)
{
	put_notes(im->b + NOTE_OFF, 0x100000000ull + PVH_ENTRY, 8);
}
static void m_pvh_entry_outside(struct elf_img *im)
{
	put_notes(im->b + NOTE_OFF, 0x800000, 8);
}
static void m_note_eof(struct elf_img *im)
{
	phdr(im, 2)->p_offset = IMG_SIZE - 4;
}
static void m_note_huge(struct elf_img *im)
{
	phdr(im, 2)->p_offset = 0;
	phdr(im, 2)->p_filesz = 1 << 20;
}

static const struct bad_elf bad_elfs[] = {
    {"truncated header", m_truncated_header, -ENOEXEC, "truncated ELF header"},
    {"ELF32", m_class32, -ENOEXEC, "is not ELF64"},
    {"big-endian", m_big_endian, -ENOEXEC, "not little-endian"},
    {"i386 machine", m_machine, -ENOEXEC, "is not x86-64"},
    {"ET_DYN", m_type_dyn, -ENOEXEC, "is not an executable"},
    {"no program headers", m_no_phdrs, -ENOEXEC, "bad ELF program header table"},
    {"wrong phentsize", m_phentsize, -ENOEXEC, "bad ELF program header table"},
    {"65535 program headers", m_many_phdrs, -ENOEXEC, "bad ELF program header table"},
    {"phdrs past EOF", m_phoff_eof, -ENOEXEC, "program headers past EOF"},
    {"phoff wraps", m_phoff_wrap, -ENOEXEC, "program headers past EOF"},
    {"filesz > memsz", m_filesz_gt_memsz, -ENOEXEC, "filesz > memsz"},
    {"segment offset past EOF", m_offset_eof, -ENOEXEC, "past end of file"},
    {"segment offset wraps", m_offset_wrap, -ENOEXEC, "past end of file"},
    {"file cut inside a segment", m_cut_segment, -ENOEXEC, "past end of file"},
    {"overlapping PT_LOADs", m_overlap, -ENOEXEC, "segments 0 and 1 overlap"},
    {"segment in boot data", m_low_memory, -ENOEXEC, "boot data area"},
    {"segment in PCI hole", m_pci_hole, -ENOEXEC, "PCI hole"},
    {"segment past RAM", m_past_ram, -ENOMEM, "-m too small"},
    {"paddr + memsz wraps", m_paddr_wrap, -ENOEXEC, "wraps"},
    {"1 TiB memsz", m_huge_memsz, -ENOEXEC, "PCI hole"},
    {"entry outside segments", m_entry_outside, -ENOEXEC, "entry point 0x800000"},
    {"no PT_LOAD", m_no_load, -ENOEXEC, "no loadable segment"},
};

static const struct bad_elf bad_pvh[] = {
    {"PVH note with 2-byte value", m_pvh_bad_size, -ENOEXEC, "2-byte value"},
    {"PVH entry above 4 GiB", m_pvh_high_entry, -ENOEXEC, "not a 32-bit address"},
    {"PVH entry outside segments", m_pvh_entry_outside, -ENOEXEC, "entry point 0x800000"},
    {"note past EOF", m_note_eof, -ENOEXEC, "note at"},
    {"1 MiB note area", m_note_huge, -ENOEXEC, "past EOF"},
};

static void run_bad(const struct bad_elf *cases, size_t n, enum note_kind notes)
{
	for (size_t i = 0; i < n; i++) {
		struct guest_mem m;
		struct elf_img im;
		struct x86_boot_info info;
		char err[256] = "";
		arch_mem_init(&m, 64 * MIB);
		make_elf(&im, notes);
		cases[i].mutate(&im);
		int ret = load(&m, &im, "", &info, err, sizeof(err));
		cr_expect_eq(ret, cases[i].err, "%s: got %d (%s)", cases[i].name, ret, err);
		cr_expect(strstr(err, cases[i].msg), "%s: message '%s' lacks '%s'", cases[i].name,
		          err, cases[i].msg);
		cr_expect(!strchr(err, '\n'), "%s: message is not one line", cases[i].name);
		arch_mem_fini(&m);
	}
}

Test(arch_elf, bad_images_rejected)
{
	run_bad(bad_elfs, sizeof(bad_elfs) / sizeof(bad_elfs[0]), NOTE_NONE);
}

Test(arch_elf, bad_pvh_notes_rejected)
{
	run_bad(bad_pvh, sizeof(bad_pvh) / sizeof(bad_pvh[0]), NOTE_PHDR);
}
