/*
 * qcow-tool check and convert: the consistency check with qemu-img's exit
 * codes and JSON fields, and copying any image (raw or a qcow2 chain) to a
 * raw or qcow2 file, skipping zero clusters, optionally compressing.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/qcow-tool/qcow-tool.h"

static const char check_help[] =
    "Usage: qcow-tool check [-r leaks|all] [--output=human|json] [-p] FILE\n"
    "\n"
    "Count every reference FILE's tables make and compare with the stored\n"
    "refcounts. A refcount above its references is a leak (wasted space,\n"
    "harmless); below, or a reference that is misaligned or past the end of\n"
    "the file, is a corruption. -r leaks repairs leaks, -r all also raises\n"
    "refcounts that are too low. Raw images have nothing to check. A\n"
    "progress bar goes to stderr when it is a terminal, or with -p.\n"
    "Opening a dirty image (lazy refcounts, not closed cleanly) with -r\n"
    "rebuilds its refcounts first, as every read-write open does.\n"
    "\n"
    "Exit status (as qemu-img check): 0 no errors, 1 the check could not be\n"
    "completed, 2 corruptions remain, 3 only leaks remain, and 63 for a\n"
    "format without checks; 2 also for bad usage.\n";

struct check_job {
	const char *file;
	unsigned repair;
	bool json, progress;
};

static int check_task(struct exec *ex, void *arg)
{
	struct check_job *j = arg;
	struct disk d;
	char err[512];
	if (open_image(&d, j->file, !j->repair, err, sizeof(err)) < 0) {
		fprintf(stderr, "qcow-tool check: %s\n", err);
		return 1;
	}
	if (d.format != DISK_FORMAT_QCOW2) {
		fprintf(stderr, "qcow-tool check: %s: raw images have nothing to check\n", j->file);
		disk_close(&d);
		return 63;
	}
	struct qcow2_check c;
	struct progress pg;
	progress_init(&pg, j->progress);
	int r = qcow2_check_progress(&d, ex, j->repair, &c, progress_cb, &pg);
	if (r == 0 && j->repair)
		r = exec_fdatasync(ex, d.fd);
	disk_close(&d);
	if (r < 0) {
		fprintf(stderr, "qcow-tool check: %s: check not completed: %s\n", j->file,
		        strerror(-r));
		return 1;
	}
	uint64_t corrupt = c.corruptions - c.fixed_corruptions, leaks = c.leaks - c.fixed_leaks;
	if (j->json) {
		printf("{\n    \"image-end-offset\": %llu,\n    \"total-clusters\": %llu,\n"
		       "    \"check-errors\": 0,\n    \"allocated-clusters\": %llu,\n"
		       "    \"fragmented-clusters\": %llu,\n    \"compressed-clusters\": %llu,\n",
		       (unsigned long long)c.image_end, (unsigned long long)c.total,
		       (unsigned long long)c.allocated, (unsigned long long)c.fragmented,
		       (unsigned long long)c.compressed);
		if (leaks)
			printf("    \"leaks\": %llu,\n", (unsigned long long)leaks);
		if (corrupt)
			printf("    \"corruptions\": %llu,\n", (unsigned long long)corrupt);
		if (c.fixed_leaks)
			printf("    \"leaks-fixed\": %llu,\n", (unsigned long long)c.fixed_leaks);
		if (c.fixed_corruptions)
			printf("    \"corruptions-fixed\": %llu,\n",
			       (unsigned long long)c.fixed_corruptions);
		printf("    \"filename\": \"%s\",\n    \"format\": \"qcow2\"\n}\n", j->file);
	} else {
		if (c.first_error[0] && corrupt)
			printf("ERROR %s\n", c.first_error);
		if (c.fixed_leaks || c.fixed_corruptions)
			printf("The following inconsistencies were found and repaired:\n\n"
			       "    %llu leaked clusters\n    %llu corruptions\n\n",
			       (unsigned long long)c.fixed_leaks, (unsigned long long)c.fixed_corruptions);
		if (corrupt)
			printf("\n%llu errors were found on the image.\n"
			       "Data may be corrupted, or further writes to the image may corrupt it.\n",
			       (unsigned long long)corrupt);
		if (leaks)
			printf("\n%llu leaked clusters were found on the image.\n"
			       "This means waste of disk space, but no harm to data.\n",
			       (unsigned long long)leaks);
		if (!corrupt && !leaks)
			printf("No errors were found on the image.\n");
		if (c.total)
			printf("%llu/%llu = %.2f%% allocated, %.2f%% fragmented, %.2f%% compressed "
			       "clusters\n",
			       (unsigned long long)c.allocated, (unsigned long long)c.total,
			       100.0 * (double)c.allocated / (double)c.total,
			       c.allocated ? 100.0 * (double)c.fragmented / (double)c.allocated : 0.0,
			       c.allocated ? 100.0 * (double)c.compressed / (double)c.allocated : 0.0);
		printf("Image end offset: %llu\n", (unsigned long long)c.image_end);
	}
	return corrupt ? 2 : leaks ? 3 : 0;
}

int cmd_check(int argc, char **argv)
{
	static const struct option lo[] = {{"help", no_argument, 0, 'h'},
	                                   {"output", required_argument, 0, 'o'},
	                                   {"repair", required_argument, 0, 'r'},
	                                   {"progress", no_argument, 0, 'p'},
	                                   {0, 0, 0, 0}};
	struct check_job j = {0};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "hr:p", lo, NULL)) != -1) {
		switch (c) {
		case 'h': fputs(check_help, stdout); return 0;
		case 'p': j.progress = true; break;
		case 'r':
			if (!strcmp(optarg, "leaks"))
				j.repair = QCOW2_REPAIR_LEAKS;
			else if (!strcmp(optarg, "all"))
				j.repair = QCOW2_REPAIR_LEAKS | QCOW2_REPAIR_ALL;
			else
				return usage_error("check", "-r must be leaks or all, not '%s'", optarg);
			break;
		case 'o':
			if (!strcmp(optarg, "json"))
				j.json = true;
			else if (strcmp(optarg, "human"))
				return usage_error("check", "--output must be human or json, not '%s'", optarg);
			break;
		default: return usage_error("check", "bad option%s", "");
		}
	}
	if (argc - optind != 1)
		return usage_error("check", "expected one FILE%s", "");
	j.file = argv[optind];
	int r = run_task(check_task, &j);
	return r < 0 ? 1 : r;
}

static const char convert_help[] =
    "Usage: qcow-tool convert [-O raw|qcow2] [-c] [-o OPTIONS] [-p] [--force] SRC DST\n"
    "\n"
    "Copy the guest-visible contents of SRC (raw, or qcow2 with its whole\n"
    "backing chain) into a new image DST of format -O (default raw). Clusters\n"
    "that read as zeros are left unallocated. -c compresses qcow2 clusters\n"
    "(deflate as QEMU writes them by default, or zstd with -o\n"
    "compression_type=zstd). -o takes create's cluster_size, compat,\n"
    "compression_type and refcount_bits. DST is never overwritten without --force. A progress\n"
    "bar goes to stderr when it is a terminal, or with -p.\n"
    "\n"
    "Exit status: 0 converted, 1 failure, 2 bad usage.\n";

struct convert_job {
	const char *src, *dst;
	bool qcow2, compress, progress;
	struct qcow2_create_opts o;
};

static bool all_zero(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static int convert_task(struct exec *ex, void *arg)
{
	struct convert_job *j = arg;
	struct disk s, d;
	char err[512];
	int r;
	if (open_image(&s, j->src, true, err, sizeof(err)) < 0) {
		fprintf(stderr, "qcow-tool convert: %s\n", err);
		return 1;
	}
	struct disk_open_params dp = {.path = j->dst,
	                              .format = j->qcow2 ? DISK_FORMAT_QCOW2 : DISK_FORMAT_RAW};
	uint64_t size = s.ops->size(&s);
	if (j->qcow2) {
		int fd = open(j->dst, O_RDWR | O_CLOEXEC);
		j->o.size = size;
		r = fd < 0 ? -errno : qcow2_create(fd, &j->o, err, sizeof(err));
		if (fd >= 0)
			close(fd);
		if (r < 0) {
			fprintf(stderr, "qcow-tool convert: %s: %s\n", j->dst, err);
			disk_close(&s);
			return 1;
		}
	} else if (truncate(j->dst, (off_t)size) < 0) {
		fprintf(stderr, "qcow-tool convert: %s: %s\n", j->dst, strerror(errno));
		disk_close(&s);
		return 1;
	}
	if (size < 512 && !j->qcow2) {
		r = 0;
		goto close_src;
	}
	if ((r = disk_open(&d, &dp, err, sizeof(err))) < 0) {
		fprintf(stderr, "qcow-tool convert: %s\n", err);
		goto close_src;
	}
	uint64_t chunk = 1ULL << 16;
	if (d.format == DISK_FORMAT_QCOW2) {
		struct qcow2_info in;
		qcow2_get_info(&d, &in);
		chunk = 1ULL << in.cluster_bits;
	}
	uint8_t *buf = aligned_alloc(4096, chunk);
	struct progress pg;
	progress_init(&pg, j->progress);
	r = buf ? 0 : -ENOMEM;
	for (uint64_t off = 0; r == 0 && off < size; off += chunk) {
		uint64_t len = size - off < chunk ? size - off : chunk;
		struct iovec v = {buf, len};
		int64_t n = s.ops->readv(&s, ex, &v, 1, off);
		if (n < 0) {
			r = (int)n;
			break;
		}
		progress(&pg, off + len, size);
		if (all_zero(buf, len))
			continue;
		if (j->compress && len == chunk) {
			r = qcow2_write_compressed(&d, ex, off / chunk, buf);
		} else {
			v = (struct iovec){buf, len};
			n = d.ops->writev(&d, ex, &v, 1, off);
			r = n < 0 ? (int)n : 0;
		}
	}
	free(buf);
	if (r == 0)
		r = d.ops->flush(&d, ex);
	disk_close(&d);
	if (r < 0)
		fprintf(stderr, "qcow-tool convert: %s: %s\n", j->dst, strerror(-r));
close_src:
	disk_close(&s);
	return r < 0 ? 1 : 0;
}

int cmd_convert(int argc, char **argv)
{
	static const struct option lo[] = {{"help", no_argument, 0, 'h'},
	                                   {"force", no_argument, 0, 'x'},
	                                   {"progress", no_argument, 0, 'p'},
	                                   {0, 0, 0, 0}};
	struct convert_job j = {0};
	bool force = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "hO:co:f:p", lo, NULL)) != -1) {
		switch (c) {
		case 'h': fputs(convert_help, stdout); return 0;
		case 'p': j.progress = true; break;
		case 'x': force = true; break;
		case 'c': j.compress = true; break;
		case 'f': break; /* the source format is detected */
		case 'O':
			if (!strcmp(optarg, "qcow2"))
				j.qcow2 = true;
			else if (strcmp(optarg, "raw"))
				return usage_error("convert", "-O must be raw or qcow2, not '%s'", optarg);
			break;
		case 'o':
			for (char *save = NULL, *kv = strtok_r(optarg, ",", &save); kv;
			     kv = strtok_r(NULL, ",", &save)) {
				uint64_t n;
				if (!strncmp(kv, "cluster_size=", 13) && !parse_size(kv + 13, &n) &&
				    n >= 512 && n <= (2u << 20) && !(n & (n - 1)))
					j.o.cluster_bits = (unsigned)__builtin_ctzll(n);
				else if (!strcmp(kv, "compat=0.10"))
					j.o.version = 2;
				else if (!strcmp(kv, "compat=1.1"))
					j.o.version = 3;
				else if (!strcmp(kv, "compression_type=zlib"))
					j.o.zstd = false;
				else if (!strcmp(kv, "compression_type=zstd"))
					j.o.zstd = true;
				else if (!strncmp(kv, "refcount_bits=", 14) && !parse_size(kv + 14, &n) &&
				         n && n <= 64 && !(n & (n - 1)))
					j.o.refcount_order = (unsigned)__builtin_ctzll(n);
				else
					return usage_error("convert", "bad option '%s'", kv);
			}
			break;
		default: return usage_error("convert", "bad option%s", "");
		}
	}
	if (argc - optind != 2)
		return usage_error("convert", "expected SRC and DST%s", "");
	if (j.compress && !j.qcow2)
		return usage_error("convert", "-c needs -O qcow2%s", "");
	j.src = argv[optind];
	j.dst = argv[optind + 1];
	int fd = open(j.dst, O_RDWR | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0644);
	if (fd < 0) {
		fprintf(stderr, "qcow-tool convert: %s: %s\n", j.dst,
		        errno == EEXIST ? "already exists (use --force to overwrite)" : strerror(errno));
		return 1;
	}
	close(fd);
	int r = run_task(convert_task, &j);
	if (r != 0)
		unlink(j.dst);
	return r < 0 ? 1 : r;
}
