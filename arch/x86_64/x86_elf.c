/*
 * ELF64 kernels: a PVH kernel (XEN_ELFNOTE_PHYS32_ENTRY note, entered in
 * 32-bit protected mode) or a plain vmlinux (entered in long mode at e_entry
 * with a zero page). Validates the headers and PT_LOAD segments, then copies
 * each segment to its physical address and zeroes its bss tail.
 */
#include <elf.h>
#include <errno.h>
#include <stdio.h>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/x86_priv.h"

/* vmlinux has 5 program headers; a cap keeps the table on the stack and the checks O(n²)-cheap. */
#define MAX_PHDRS 64
/* Section headers are read one at a time, but a hostile count must still be bounded. */
#define MAX_SHDRS 4096
/* Linux's notes are a few hundred bytes. */
#define MAX_NOTE_BYTES           16384
#define XEN_ELFNOTE_PHYS32_ENTRY 18

/* PVH entry from one note area, 0 when absent, -errno when malformed. */
static int parse_notes(struct x86_ctx *c, const uint8_t *p, uint64_t len, uint64_t *entry)
{
	uint64_t off = 0;
	while (len - off >= 12) {
		uint32_t namesz = x86_get32(p + off), descsz = x86_get32(p + off + 4);
		uint32_t type = x86_get32(p + off + 8);
		/* 64-bit sums of 32-bit sizes cannot wrap. */
		uint64_t name = off + 12;
		uint64_t desc = name + (((uint64_t)namesz + 3) & ~3ull);
		uint64_t next = desc + (((uint64_t)descsz + 3) & ~3ull);
		if (desc + descsz > len)
			break; /* truncated trailing note: nothing more to read */
		if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 &&
		    !memcmp(p + name, "Xen", 4)) {
			if (descsz == 4)
				*entry = x86_get32(p + desc);
			else if (descsz == 8)
				*entry = x86_get64(p + desc);
			else
				return x86_fail(c, -ENOEXEC, "%s: PVH entry note has %u-byte value",
				                c->path, descsz);
			if (*entry == 0 || *entry >= X86_MMIO_HOLE_END)
				return x86_fail(c, -ENOEXEC,
				                "%s: PVH entry 0x%llx is not a 32-bit address",
				                c->path, (unsigned long long)*entry);
			return 1;
		}
		off = next > len ? len : next;
	}
	return 0;
}

static int read_notes(struct x86_ctx *c, uint64_t off, uint64_t size, uint64_t *entry)
{
	uint8_t buf[MAX_NOTE_BYTES];
	if (!x86_in_file(c, off, size))
		return x86_fail(c, -ENOEXEC, "%s: truncated ELF: note at 0x%llx+0x%llx past EOF",
		                c->path, (unsigned long long)off, (unsigned long long)size);
	if (size > sizeof(buf))
		return x86_fail(c, -ENOEXEC, "%s: ELF note area of %llu bytes is too large",
		                c->path, (unsigned long long)size);
	int ret = x86_read(c, buf, (size_t)size, off);
	if (ret < 0)
		return ret;
	return parse_notes(c, buf, size, entry);
}

/* No PVH note in a PT_NOTE: the linker may have left it only in a SHT_NOTE section. */
static int find_section_note(struct x86_ctx *c, const Elf64_Ehdr *eh, uint64_t *entry)
{
	if (eh->e_shoff == 0 || eh->e_shnum == 0)
		return 0;
	if (eh->e_shentsize != sizeof(Elf64_Shdr) || eh->e_shnum > MAX_SHDRS)
		return x86_fail(c, -ENOEXEC, "%s: bad ELF section header table (%u x %u bytes)",
		                c->path, eh->e_shnum, eh->e_shentsize);
	if (!x86_in_file(c, eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr)))
		return x86_fail(c, -ENOEXEC, "%s: truncated ELF: section headers past EOF",
		                c->path);
	for (unsigned i = 0; i < eh->e_shnum; i++) {
		Elf64_Shdr sh;
		int ret = x86_read(c, &sh, sizeof(sh), eh->e_shoff + (uint64_t)i * sizeof(sh));
		if (ret < 0)
			return ret;
		if (sh.sh_type != SHT_NOTE)
			continue;
		ret = read_notes(c, sh.sh_offset, sh.sh_size, entry);
		if (ret != 0)
			return ret;
	}
	return 0;
}

static int check_header(struct x86_ctx *c, const Elf64_Ehdr *eh)
{
	if (eh->e_ident[EI_CLASS] != ELFCLASS64)
		return x86_fail(c, -ENOEXEC, "%s: ELF class %u is not ELF64", c->path,
		                eh->e_ident[EI_CLASS]);
	if (eh->e_ident[EI_DATA] != ELFDATA2LSB)
		return x86_fail(c, -ENOEXEC, "%s: ELF is not little-endian", c->path);
	if (eh->e_machine != EM_X86_64)
		return x86_fail(c, -ENOEXEC, "%s: ELF machine %u is not x86-64", c->path,
		                eh->e_machine);
	if (eh->e_type != ET_EXEC)
		return x86_fail(c, -ENOEXEC, "%s: ELF type %u is not an executable", c->path,
		                eh->e_type);
	if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 || eh->e_phnum > MAX_PHDRS)
		return x86_fail(c, -ENOEXEC, "%s: bad ELF program header table (%u x %u bytes)",
		                c->path, eh->e_phnum, eh->e_phentsize);
	if (!x86_in_file(c, eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr)))
		return x86_fail(c, -ENOEXEC, "%s: truncated ELF: program headers past EOF",
		                c->path);
	return 0;
}

static int check_segments(struct x86_ctx *c, const Elf64_Phdr *ph, unsigned n)
{
	char what[32];
	for (unsigned i = 0; i < n; i++) {
		if (ph[i].p_type != PT_LOAD || ph[i].p_memsz == 0)
			continue;
		if (ph[i].p_filesz > ph[i].p_memsz)
			return x86_fail(c, -ENOEXEC, "%s: segment %u has filesz > memsz", c->path,
			                i);
		if (!x86_in_file(c, ph[i].p_offset, ph[i].p_filesz))
			return x86_fail(c, -ENOEXEC,
			                "%s: truncated ELF: segment %u data past end of file",
			                c->path, i);
		snprintf(what, sizeof(what), "segment %u", i);
		int ret = x86_check_range(c, what, ph[i].p_paddr, ph[i].p_memsz);
		if (ret < 0)
			return ret;
		for (unsigned j = 0; j < i; j++) {
			if (ph[j].p_type != PT_LOAD || ph[j].p_memsz == 0)
				continue;
			/* Both ranges were checked not to wrap. */
			if (ph[i].p_paddr < ph[j].p_paddr + ph[j].p_memsz &&
			    ph[j].p_paddr < ph[i].p_paddr + ph[i].p_memsz)
				return x86_fail(c, -ENOEXEC,
				                "%s: PT_LOAD segments %u and %u overlap", c->path,
				                j, i);
		}
	}
	return 0;
}

/* Physical entry: inside a segment's physical range, or its virtual range translated. */
static int resolve_entry(const Elf64_Phdr *ph, unsigned n, uint64_t e, uint64_t *entry)
{
	for (unsigned i = 0; i < n; i++)
		if (ph[i].p_type == PT_LOAD && e >= ph[i].p_paddr &&
		    e - ph[i].p_paddr < ph[i].p_memsz) {
			*entry = e;
			return 0;
		}
	for (unsigned i = 0; i < n; i++)
		if (ph[i].p_type == PT_LOAD && e >= ph[i].p_vaddr &&
		    e - ph[i].p_vaddr < ph[i].p_memsz) {
			*entry = ph[i].p_paddr + (e - ph[i].p_vaddr);
			return 0;
		}
	return -ENOEXEC;
}

int x86_elf_load(struct x86_ctx *c)
{
	Elf64_Ehdr eh;
	Elf64_Phdr ph[MAX_PHDRS];
	if (c->fsize < sizeof(eh))
		return x86_fail(c, -ENOEXEC, "%s: truncated ELF header (%llu bytes)", c->path,
		                (unsigned long long)c->fsize);
	int ret = x86_read(c, &eh, sizeof(eh), 0);
	if (ret < 0)
		return ret;
	ret = check_header(c, &eh);
	if (ret < 0)
		return ret;
	unsigned n = eh.e_phnum;
	ret = x86_read(c, ph, n * sizeof(ph[0]), eh.e_phoff);
	if (ret < 0)
		return ret;
	ret = check_segments(c, ph, n);
	if (ret < 0)
		return ret;

	uint64_t pvh = 0;
	int found = 0;
	for (unsigned i = 0; i < n && !found; i++) {
		if (ph[i].p_type != PT_NOTE)
			continue;
		found = read_notes(c, ph[i].p_offset, ph[i].p_filesz, &pvh);
		if (found < 0)
			return found;
	}
	if (!found) {
		found = find_section_note(c, &eh, &pvh);
		if (found < 0)
			return found;
	}

	uint64_t lo = UINT64_MAX, hi = 0;
	for (unsigned i = 0; i < n; i++) {
		if (ph[i].p_type != PT_LOAD || ph[i].p_memsz == 0)
			continue;
		if (ph[i].p_paddr < lo)
			lo = ph[i].p_paddr;
		if (ph[i].p_paddr + ph[i].p_memsz > hi)
			hi = ph[i].p_paddr + ph[i].p_memsz;
	}
	if (hi == 0)
		return x86_fail(c, -ENOEXEC, "%s: ELF has no loadable segment", c->path);

	c->k.kind = found ? X86_ENTRY_PVH : X86_ENTRY_LINUX64;
	c->k.format = found ? "pvh-elf" : "elf64";
	if (resolve_entry(ph, n, found ? pvh : eh.e_entry, &c->k.entry) < 0)
		return x86_fail(c, -ENOEXEC, "%s: entry point 0x%llx is outside every segment",
		                c->path, (unsigned long long)(found ? pvh : eh.e_entry));
	if (found && c->k.entry >= X86_MMIO_HOLE_START)
		return x86_fail(c, -ENOEXEC, "%s: PVH entry 0x%llx is above 3 GiB", c->path,
		                (unsigned long long)c->k.entry);
	c->k.start = lo;
	c->k.end = hi;
	c->k.cmdline_max = X86_CMDLINE_MAX - 1;
	c->k.initrd_end_max = X86_MMIO_HOLE_START;
	c->k.hdr_len = 0;

	for (unsigned i = 0; i < n; i++) {
		if (ph[i].p_type != PT_LOAD || ph[i].p_memsz == 0)
			continue;
		ret = x86_copy_to_guest(c, ph[i].p_paddr, ph[i].p_offset, ph[i].p_filesz);
		if (ret < 0)
			return ret;
		/* Guest RAM may be reused (tests, reboot): the bss tail must read as zero. */
		(void)guest_mem_zero(c->mem, ph[i].p_paddr + ph[i].p_filesz,
		                     ph[i].p_memsz - ph[i].p_filesz);
	}
	return 0;
}
