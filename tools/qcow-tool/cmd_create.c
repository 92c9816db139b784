/*
 * qcow-tool create and resize: a new image (options as qemu-img's -o,
 * preallocation through the qcow2 code on the executor), and growing or
 * shrinking one (the L1 table relocated when it must grow).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/qcow-tool/qcow-tool.h"

static const char create_help[] =
    "Usage: qcow-tool create [-f qcow2] [-o OPTIONS] [-b BACKING -F FMT] [-p] [--force] FILE [SIZE]\n"
    "\n"
    "Create a qcow2 image of SIZE bytes (K/M/G/T suffixes). With -b the image\n"
    "starts as a copy-on-write overlay of BACKING (a path relative to FILE's\n"
    "directory, or absolute) in format FMT (raw or qcow2); SIZE then defaults\n"
    "to the backing file's. An existing FILE is never overwritten unless\n"
    "--force is given. preallocation=full shows a progress bar on stderr when\n"
    "it is a terminal, or with -p.\n"
    "\n"
    "OPTIONS (comma-separated):\n"
    "  cluster_size=N      512 to 2M, a power of two (default 64K)\n"
    "  compat=0.10|1.1     format version 2 or 3 (default 1.1)\n"
    "  compression_type=zlib|zstd  how convert -c compresses clusters (zstd:\n"
    "                      1.1 only; default zlib, which every reader knows)\n"
    "  lazy_refcounts=on|off   set the lazy-refcounts bit (1.1 only; ringvm\n"
    "                      still updates refcounts eagerly)\n"
    "  preallocation=off|metadata|falloc|full   allocate the metadata (and the\n"
    "                      data: fallocate'd, or written as zeros) up front\n"
    "  refcount_bits=N     1, 2, 4, 8, 16, 32 or 64 (default 16; 0.10: 16 only)\n"
    "\n"
    "Exit status: 0 created, 1 failure, 2 bad usage.\n";

enum prealloc { PRE_OFF, PRE_META, PRE_FALLOC, PRE_FULL };

struct create_job {
	const char *file;
	enum prealloc pre;
	bool progress;
	int rc;
};

static int parse_opts(char *opts, struct qcow2_create_opts *o, enum prealloc *pre)
{
	for (char *save = NULL, *kv = strtok_r(opts, ",", &save); kv;
	     kv = strtok_r(NULL, ",", &save)) {
		char *v = strchr(kv, '=');
		if (!v)
			return usage_error("create", "option '%s' needs a value", kv);
		*v++ = 0;
		uint64_t n;
		if (!strcmp(kv, "cluster_size")) {
			if (parse_size(v, &n) || n < 512 || n > (2u << 20) || (n & (n - 1)))
				return usage_error("create", "bad cluster_size '%s'", v);
			o->cluster_bits = (unsigned)__builtin_ctzll(n);
		} else if (!strcmp(kv, "compat")) {
			if (!strcmp(v, "0.10"))
				o->version = 2;
			else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
				o->version = 3;
			else
				return usage_error("create", "compat must be 0.10 or 1.1, not '%s'", v);
		} else if (!strcmp(kv, "compression_type")) {
			if (strcmp(v, "zlib") && strcmp(v, "zstd"))
				return usage_error("create", "compression_type must be zlib or zstd, not '%s'",
				                   v);
			o->zstd = !strcmp(v, "zstd");
		} else if (!strcmp(kv, "lazy_refcounts")) {
			if (strcmp(v, "on") && strcmp(v, "off"))
				return usage_error("create", "lazy_refcounts must be on or off, not '%s'", v);
			o->lazy_refcounts = !strcmp(v, "on");
		} else if (!strcmp(kv, "preallocation")) {
			if (!strcmp(v, "off"))
				*pre = PRE_OFF;
			else if (!strcmp(v, "metadata"))
				*pre = PRE_META;
			else if (!strcmp(v, "falloc"))
				*pre = PRE_FALLOC;
			else if (!strcmp(v, "full"))
				*pre = PRE_FULL;
			else
				return usage_error("create", "bad preallocation '%s'", v);
		} else if (!strcmp(kv, "refcount_bits")) {
			if (parse_size(v, &n) || !n || n > 64 || (n & (n - 1)))
				return usage_error("create", "bad refcount_bits '%s'", v);
			o->refcount_order = (unsigned)__builtin_ctzll(n);
			if (!o->refcount_order)
				o->refcount_order = 0;
		} else {
			return usage_error("create", "unknown option '%s'", kv);
		}
	}
	return 0;
}

static int prealloc_task(struct exec *ex, void *arg)
{
	struct create_job *j = arg;
	struct disk d;
	char err[512];
	int r = open_image(&d, j->file, false, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "qcow-tool create: %s\n", err);
		return r;
	}
	r = qcow2_preallocate(&d, ex);
	struct qcow2_info in;
	qcow2_get_info(&d, &in);
	if (r == 0 && j->pre != PRE_OFF) {
		/* The data clusters lie inside the file (sparse unless asked otherwise). */
		if (ftruncate(d.fd, (off_t)in.file_end) < 0)
			r = -errno;
		if (r == 0 && j->pre == PRE_FALLOC && fallocate(d.fd, 0, 0, (off_t)in.file_end) < 0)
			r = -errno;
		if (r == 0 && j->pre == PRE_FULL) {
			uint64_t cs = 1ULL << in.cluster_bits, n = (in.size + cs - 1) / cs;
			char *z = calloc(1, cs);
			struct progress pg;
			progress_init(&pg, j->progress);
			for (uint64_t g = 0; z && r == 0 && g < n; g++) {
				progress(&pg, g + 1, n);
				enum qcow2_kind k;
				uint64_t h;
				r = qcow2_map_cluster(&d, ex, g, &k, &h);
				if (r == 0 && k == QCOW2_NORMAL && pwrite(d.fd, z, cs, (off_t)h) != (ssize_t)cs)
					r = -EIO;
			}
			if (!z)
				r = -ENOMEM;
			free(z);
		}
	}
	if (r == 0)
		r = exec_fdatasync(ex, d.fd);
	if (r < 0)
		fprintf(stderr, "qcow-tool create: %s: preallocation failed: %s\n", j->file,
		        strerror(-r));
	disk_close(&d);
	return r;
}

int cmd_create(int argc, char **argv)
{
	static const struct option lo[] = {{"help", no_argument, 0, 'h'},
	                                   {"force", no_argument, 0, 'x'},
	                                   {"progress", no_argument, 0, 'p'},
	                                   {0, 0, 0, 0}};
	struct qcow2_create_opts o = {0};
	enum prealloc pre = PRE_OFF;
	bool force = false, show = false;
	char *backing = NULL, *bfmt = NULL;
	int c, r;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+f:o:b:F:hp", lo, NULL)) != -1) {
		switch (c) {
		case 'p': show = true; break;
		case 'h':
			fputs(create_help, stdout);
			return 0;
		case 'x': force = true; break;
		case 'f':
			if (strcmp(optarg, "qcow2"))
				return usage_error("create", "only -f qcow2 can be created, not '%s'", optarg);
			break;
		case 'o':
			if ((r = parse_opts(optarg, &o, &pre)))
				return r;
			break;
		case 'b': backing = optarg; break;
		case 'F': bfmt = optarg; break;
		default: return usage_error("create", "bad option%s", "");
		}
	}
	if (optind >= argc)
		return usage_error("create", "missing FILE%s", "");
	const char *file = argv[optind];
	if (argc - optind > 2)
		return usage_error("create", "unexpected argument '%s'", argv[optind + 2]);
	if (backing && !bfmt)
		return usage_error("create", "-b needs -F (the backing format: raw or qcow2)%s", "");
	if (bfmt && strcmp(bfmt, "raw") && strcmp(bfmt, "qcow2"))
		return usage_error("create", "backing format must be raw or qcow2, not '%s'", bfmt);
	if (bfmt && !backing)
		return usage_error("create", "-F needs -b%s", "");
	if (argc - optind == 2) {
		if (parse_size(argv[optind + 1], &o.size))
			return usage_error("create", "bad size '%s'", argv[optind + 1]);
	} else if (!backing) {
		return usage_error("create", "missing SIZE%s", "");
	}
	if (backing) {
		/* The backing file must exist and be of the format named; relative
		 * names are resolved from the new image's directory. */
		char full[4096], err[512];
		const char *slash = strrchr(file, '/');
		if (backing[0] == '/' || !slash)
			snprintf(full, sizeof(full), "%s", backing);
		else
			snprintf(full, sizeof(full), "%.*s/%s", (int)(slash - file), file, backing);
		struct disk b;
		struct disk_open_params bp = {.path = full, .read_only = true,
		                              .format = strcmp(bfmt, "raw") ? DISK_FORMAT_QCOW2
		                                                            : DISK_FORMAT_RAW};
		if ((r = disk_open(&b, &bp, err, sizeof(err))) < 0) {
			fprintf(stderr, "qcow-tool create: backing file: %s\n", err);
			return 1;
		}
		if (argc - optind < 2)
			o.size = b.size;
		disk_close(&b);
		o.backing = backing;
		o.backing_fmt = bfmt;
	}
	if (pre != PRE_OFF && backing)
		return usage_error("create", "preallocation is not possible with a backing file%s", "");
	int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0644);
	if (fd < 0) {
		if (errno == EEXIST)
			fprintf(stderr, "qcow-tool create: %s: already exists (use --force to overwrite)\n",
			        file);
		else
			fprintf(stderr, "qcow-tool create: %s: %s\n", file, strerror(errno));
		return 1;
	}
	char err[512];
	r = qcow2_create(fd, &o, err, sizeof(err));
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0) {
		fprintf(stderr, "qcow-tool create: %s: %s\n", file, err);
		unlink(file);
		return r == -EINVAL ? 2 : 1;
	}
	if (pre != PRE_OFF) {
		struct create_job j = {.file = file, .pre = pre, .progress = show};
		if (run_task(prealloc_task, &j) < 0)
			return 1;
	}
	printf("Formatting '%s', fmt=qcow2 size=%llu\n", file, (unsigned long long)o.size);
	return 0;
}

static const char resize_help[] =
    "Usage: qcow-tool resize [--shrink] FILE [+|-]SIZE\n"
    "\n"
    "Set the virtual size of FILE to SIZE, or grow/shrink it by SIZE with a\n"
    "leading + or -. Growing relocates the L1 table when it has to. Shrinking\n"
    "needs --shrink and works only over unallocated space: a qcow2 image with\n"
    "data (or compressed clusters) past the new end is refused, so nothing is\n"
    "lost; zero clusters there are dropped and the L1 table shrinks. Raw\n"
    "images are truncated/extended. The image must not be in use.\n"
    "\n"
    "Exit status: 0 resized, 1 failure, 2 bad usage.\n";

struct resize_job {
	const char *file;
	const char *spec;
	bool shrink;
	int rc;
};

static int resize_task(struct exec *ex, void *arg)
{
	struct resize_job *j = arg;
	struct disk d;
	char err[512];
	int r = open_image(&d, j->file, false, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "qcow-tool resize: %s\n", err);
		return 1;
	}
	const char *s = j->spec;
	int sign = *s == '+' ? 1 : *s == '-' ? -1 : 0;
	uint64_t n, cur = d.ops->size(&d), want, busy = 0;
	if (parse_size(sign ? s + 1 : s, &n)) {
		disk_close(&d);
		return usage_error("resize", "bad size '%s'", s);
	}
	want = sign > 0 ? cur + n : sign < 0 ? (n > cur ? 0 : cur - n) : n;
	if ((sign > 0 && want < cur) || (sign < 0 && n > cur)) {
		disk_close(&d);
		return usage_error("resize", "size out of range: '%s'", s);
	}
	if (want < cur && !j->shrink) {
		fprintf(stderr, "qcow-tool resize: %s: shrinking discards data past the new end; "
		                "use --shrink\n", j->file);
		disk_close(&d);
		return 1;
	}
	if (d.format == DISK_FORMAT_RAW)
		r = ftruncate(d.fd, (off_t)want) < 0 ? -errno : 0;
	else if (want >= cur)
		r = qcow2_grow(&d, ex, want);
	else
		r = qcow2_shrink(&d, ex, want, &busy);
	if (r == -ENOTEMPTY) {
		fprintf(stderr, "qcow-tool resize: %s: data is allocated past the new end (at guest "
		                "offset %llu); discard it first\n",
		        j->file, (unsigned long long)busy);
		disk_close(&d);
		return 1;
	}
	if (r == 0)
		r = exec_fdatasync(ex, d.fd);
	disk_close(&d);
	if (r < 0) {
		fprintf(stderr, "qcow-tool resize: %s: %s\n", j->file, strerror(-r));
		return 1;
	}
	puts("Image resized.");
	return 0;
}

int cmd_resize(int argc, char **argv)
{
	static const struct option lo[] = {{"help", no_argument, 0, 'h'},
	                                   {"shrink", no_argument, 0, 's'},
	                                   {0, 0, 0, 0}};
	struct resize_job j = {0};
	int c;
	optind = 1;
	/* "-1G" is a size, not an option: stop at the first non-option. */
	while ((c = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		if (c == 'h') {
			fputs(resize_help, stdout);
			return 0;
		}
		if (c == 's')
			j.shrink = true;
		else
			return usage_error("resize", "bad option%s", "");
	}
	if (argc - optind != 2)
		return usage_error("resize", "expected FILE and SIZE%s", "");
	j.file = argv[optind];
	j.spec = argv[optind + 1];
	int r = run_task(resize_task, &j);
	return r < 0 ? 1 : r;
}
