/*
 * qcow-tool info and map: an image's format, sizes and features (human or
 * qemu-img-compatible JSON, optionally down the backing chain), and the
 * allocation map of the guest address space.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "tools/qcow-tool/qcow-tool.h"

static const char info_help[] =
    "Usage: qcow-tool info [--output=human|json] [--backing-chain] FILE\n"
    "\n"
    "Show FILE's format, virtual size, space used, cluster size and qcow2\n"
    "features (compat, refcount bits, lazy refcounts, corrupt/dirty flags,\n"
    "backing file). JSON output uses qemu-img's field names; with\n"
    "--backing-chain every image of the chain is shown (JSON: an array).\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 bad usage.\n";

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void show(const struct disk *d, const char *name, bool json)
{
	struct stat st;
	uint64_t actual = fstat(d->fd, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
	bool q = d->format == DISK_FORMAT_QCOW2;
	struct qcow2_info in = {0};
	if (q)
		qcow2_get_info(d, &in);
	const char *compat = in.version == 2 ? "0.10" : "1.1";
	if (json) {
		printf("{\n    \"virtual-size\": %llu,\n    \"filename\": ",
		       (unsigned long long)d->ops->size(d));
		json_str(name);
		printf(",\n    \"format\": \"%s\",\n    \"actual-size\": %llu", q ? "qcow2" : "raw",
		       (unsigned long long)actual);
		if (q) {
			printf(",\n    \"cluster-size\": %llu", 1ULL << in.cluster_bits);
			printf(",\n    \"format-specific\": {\n        \"type\": \"qcow2\",\n"
			       "        \"data\": {\n            \"compat\": \"%s\",\n", compat);
			if (in.version >= 3)
				printf("            \"compression-type\": \"%s\",\n"
				       "            \"lazy-refcounts\": %s,\n",
				       in.compression_type ? "zstd" : "zlib",
				       in.compat & 1 ? "true" : "false");
			printf("            \"refcount-bits\": %u,\n            \"corrupt\": %s",
			       1u << in.refcount_order, in.incompat & 2 ? "true" : "false");
			if (in.version >= 3)
				printf(",\n            \"extended-l2\": false");
			printf("\n        }\n    }");
			if (in.backing[0]) {
				printf(",\n    \"backing-filename\": ");
				json_str(in.backing);
				if (in.backing_fmt[0]) {
					printf(",\n    \"backing-filename-format\": ");
					json_str(in.backing_fmt);
				}
			}
			printf(",\n    \"dirty-flag\": %s", in.incompat & 1 ? "true" : "false");
		}
		printf("\n}");
		return;
	}
	printf("image: %s\nfile format: %s\nvirtual size: %llu bytes\ndisk size: %llu bytes\n",
	       name, q ? "qcow2" : "raw", (unsigned long long)d->ops->size(d),
	       (unsigned long long)actual);
	if (!q)
		return;
	printf("cluster_size: %llu\n", 1ULL << in.cluster_bits);
	if (in.backing[0])
		printf("backing file: %s\n", in.backing);
	if (in.backing_fmt[0])
		printf("backing file format: %s\n", in.backing_fmt);
	printf("Format specific information:\n    compat: %s\n", compat);
	if (in.version >= 3)
		printf("    compression type: %s\n    lazy refcounts: %s\n",
		       in.compression_type ? "zstd" : "zlib", in.compat & 1 ? "true" : "false");
	printf("    refcount bits: %u\n    corrupt: %s\n    dirty: %s\n", 1u << in.refcount_order,
	       in.incompat & 2 ? "true" : "false", in.incompat & 1 ? "true" : "false");
	if (in.nb_snapshots)
		printf("    snapshots: %u (internal; read-only here)\n", in.nb_snapshots);
}

int cmd_info(int argc, char **argv)
{
	static const struct option lo[] = {{"help", no_argument, 0, 'h'},
	                                   {"output", required_argument, 0, 'o'},
	                                   {"backing-chain", no_argument, 0, 'b'},
	                                   {0, 0, 0, 0}};
	bool json = false, chain = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'h': fputs(info_help, stdout); return 0;
		case 'b': chain = true; break;
		case 'o':
			if (!strcmp(optarg, "json"))
				json = true;
			else if (strcmp(optarg, "human"))
				return usage_error("info", "--output must be human or json, not '%s'", optarg);
			break;
		default: return usage_error("info", "bad option%s", "");
		}
	}
	if (argc - optind != 1)
		return usage_error("info", "expected one FILE%s", "");
	struct disk d;
	char err[512];
	if (open_image(&d, argv[optind], true, err, sizeof(err)) < 0) {
		fprintf(stderr, "qcow-tool info: %s\n", err);
		return 1;
	}
	if (json && chain)
		printf("[");
	for (const struct disk *p = &d; p; p = chain ? p->backing : NULL) {
		if (p != &d)
			printf(json ? ",\n" : "\n");
		show(p, p == &d ? argv[optind] : p->path, json);
	}
	if (json && chain)
		printf("]");
	if (json)
		printf("\n");
	disk_close(&d);
	return 0;
}

static const char map_help[] =
    "Usage: qcow-tool map [--output=human|json] FILE\n"
    "\n"
    "Print the ranges of the guest disk that FILE itself stores data for,\n"
    "with the host offset of each (human), or every range with its kind\n"
    "(data, zero, compressed, unallocated) as JSON. Ranges served by a\n"
    "backing file are shown as unallocated.\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 bad usage.\n";

struct map_job {
	const char *file;
	bool json;
};

static const char *kind_name(enum qcow2_kind k)
{
	switch (k) {
	case QCOW2_ZERO: return "zero";
	case QCOW2_NORMAL: return "data";
	case QCOW2_COMPRESSED: return "compressed";
	default: return "unallocated";
	}
}

static int map_task(struct exec *ex, void *arg)
{
	struct map_job *j = arg;
	struct disk d;
	char err[512];
	if (open_image(&d, j->file, true, err, sizeof(err)) < 0) {
		fprintf(stderr, "qcow-tool map: %s\n", err);
		return 1;
	}
	if (d.format != DISK_FORMAT_QCOW2) {
		if (j->json)
			printf("[{ \"start\": 0, \"length\": %llu, \"kind\": \"data\", \"offset\": 0}]\n",
			       (unsigned long long)d.size);
		else
			printf("%-16s%-16s%-16s%s\n%#-16llx%#-16llx%#-16x%s\n", "Offset", "Length",
			       "Mapped to", "File", 0ULL, (unsigned long long)d.size, 0, j->file);
		disk_close(&d);
		return 0;
	}
	struct qcow2_info in;
	qcow2_get_info(&d, &in);
	uint64_t cs = 1ULL << in.cluster_bits, n = (in.size + cs - 1) / cs;
	uint64_t run_start = 0, run_host = 0;
	enum qcow2_kind run_kind = QCOW2_UNALLOC;
	bool first = true;
	int r = 0;
	if (j->json)
		printf("[");
	else
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	for (uint64_t g = 0; g <= n; g++) {
		enum qcow2_kind k = QCOW2_UNALLOC;
		uint64_t h = 0;
		if (g < n && (r = qcow2_map_cluster(&d, ex, g, &k, &h)) < 0)
			break;
		bool cont = g < n && g > 0 && k == run_kind &&
		            (k != QCOW2_NORMAL || h == run_host + (g - run_start) * cs);
		if (cont)
			continue;
		if (g > 0) {
			uint64_t off = run_start * cs, len = (g * cs > in.size ? in.size : g * cs) - off;
			if (j->json) {
				printf("%s\n{ \"start\": %llu, \"length\": %llu, \"kind\": \"%s\"", first ? "" : ",",
				       (unsigned long long)off, (unsigned long long)len, kind_name(run_kind));
				if (run_kind == QCOW2_NORMAL)
					printf(", \"offset\": %llu", (unsigned long long)run_host);
				printf("}");
				first = false;
			} else if (run_kind == QCOW2_NORMAL) {
				printf("%#-16llx%#-16llx%#-16llx%s\n", (unsigned long long)off,
				       (unsigned long long)len, (unsigned long long)run_host, j->file);
			}
		}
		run_start = g;
		run_kind = k;
		run_host = h;
	}
	if (j->json)
		printf("]\n");
	disk_close(&d);
	if (r < 0) {
		fprintf(stderr, "qcow-tool map: %s: %s\n", j->file, strerror(-r));
		return 1;
	}
	return 0;
}

int cmd_map(int argc, char **argv)
{
	static const struct option lo[] = {{"help", no_argument, 0, 'h'},
	                                   {"output", required_argument, 0, 'o'},
	                                   {0, 0, 0, 0}};
	struct map_job j = {0};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (c == 'h') {
			fputs(map_help, stdout);
			return 0;
		}
		if (c != 'o')
			return usage_error("map", "bad option%s", "");
		if (!strcmp(optarg, "json"))
			j.json = true;
		else if (strcmp(optarg, "human"))
			return usage_error("map", "--output must be human or json, not '%s'", optarg);
	}
	if (argc - optind != 1)
		return usage_error("map", "expected one FILE%s", "");
	j.file = argv[optind];
	int r = run_task(map_task, &j);
	return r < 0 ? 1 : r;
}
