/*
 * Device-only virtio-blk benchmark: drives the real (jailed) blk device
 * process through the host-side harness (tests/harness/vdriver) — no guest,
 * no KVM — with 4 KiB random reads or writes over a file at a fixed queue
 * depth for N seconds, and prints one JSON object per run: IOPS, and the
 * device's own service-time percentiles from IPC_METRICS.
 *
 *   bench-blk-harness [--file PATH] [--size MIB] [--seconds N] [--qd 1,32,128]
 *                     [--rw randread,randwrite] [--queues N] [--no-sandbox]
 *
 * Without --file a sparse-free temp file is made on /dev/shm (tmpfs) and
 * filled, so reads hit the page cache as fio's do on the same file.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio/blk.h"
#include "tests/harness/vdriver.h"

#define FEATURES                                                                                   \
	((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_EVENT_IDX) |                             \
	 (1ull << VIRTIO_F_INDIRECT_DESC) | (1ull << VIRTIO_BLK_F_FLUSH) |                         \
	 (1ull << VIRTIO_BLK_F_MQ) | (1ull << VIRTIO_BLK_F_SEG_MAX) |                              \
	 (1ull << VIRTIO_BLK_F_BLK_SIZE))
#define RAM        (64ull << 20)
#define MAX_QD     256
#define HDR_BASE   VDRIVER_DATA_BASE
#define TABLE_BASE (VDRIVER_DATA_BASE + 0x40000ull)
#define DATA_BASE  (VDRIVER_DATA_BASE + 0x200000ull)
#define BS         4096u

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

struct ctx {
	struct vdriver v;
	uint16_t nq;
	uint64_t blocks; /* BS-sized blocks in the file */
	bool write;
	int slot_of_head[MAX_QD * 16];
};

static uint64_t hdr_gpa(uint16_t q, unsigned s)
{
	return HDR_BASE + 0x2000ull * q + 32ull * s;
}

/* Queue request `slot` of queue q at a random block; returns 0 or -errno. */
static int submit(struct ctx *c, uint16_t q, unsigned slot)
{
	uint8_t *h = guest_mem_ptr(&c->v.mem, hdr_gpa(q, slot), 17);
	uint32_t ty = htole32(c->write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN), prio = 0;
	uint64_t sector = htole64((rnd() % c->blocks) * (BS / 512));
	memcpy(h, &ty, 4);
	memcpy(h + 4, &prio, 4);
	memcpy(h + 8, &sector, 8);
	struct vring_buf b[3] = {
	    {hdr_gpa(q, slot), BLK_HDR_LEN, false},
	    {DATA_BASE + 0x100000ull * q + (uint64_t)BS * slot, BS, !c->write},
	    {hdr_gpa(q, slot) + 16, 1, true},
	};
	int head = vring_add_indirect(&c->v.ring[q], b, 3, TABLE_BASE + 0x4000ull * q + 64ull * slot);
	if (head < 0)
		return head;
	c->slot_of_head[q * MAX_QD + head] = (int)slot;
	return 0;
}

/* Kick q only if the device asked for it (EVENT_IDX avail_event), as Linux does. */
static int maybe_kick(struct ctx *c, uint16_t q, uint16_t old_idx)
{
	/* Full fence: our avail->idx store before the avail_event load (the
	 * device does the mirror image), or both sides can miss each other. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint16_t new_idx = c->v.ring[q].avail_idx, ev = vring_avail_event(&c->v.ring[q]);
	if ((uint16_t)(new_idx - ev - 1) < (uint16_t)(new_idx - old_idx))
		return vdriver_kick(&c->v, q);
	return 0;
}

struct result {
	double iops, seconds;
	uint64_t ios, kicks_skipped;
	struct ipc_metrics m;
};

static int run_one(const char *file, bool sandbox, uint16_t nq, unsigned qd, bool write,
                   double seconds, struct result *res)
{
	static struct ctx c;
	char opts[512];
	snprintf(opts, sizeof(opts), "path=%s,queues=%u,queue-size=256", file, nq);
	struct vdriver_params p = {
	    .device = "block", .opts = opts, .ram_size = RAM, .sandbox = sandbox, .ncpus = nq};
	memset(&c, 0, sizeof(c));
	struct stat st;
	if (stat(file, &st) < 0)
		return -errno;
	c.blocks = (uint64_t)st.st_size / BS;
	c.write = write;
	c.nq = nq;
	int r = vdriver_spawn(&c.v, &p);
	if (r == 0)
		r = vdriver_setup(&c.v, FEATURES, 256);
	if (r < 0) {
		vdriver_destroy(&c.v);
		return r;
	}
	uint64_t ios = 0;
	for (uint16_t q = 0; q < nq; q++) {
		uint16_t old = c.v.ring[q].avail_idx;
		for (unsigned s = 0; s < qd; s++)
			if ((r = submit(&c, q, s)) < 0)
				goto out;
		if ((r = maybe_kick(&c, q, old)) < 0)
			goto out;
	}
	uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9), t1;
	for (;;) {
		bool any = false;
		for (uint16_t q = 0; q < nq; q++) {
			/* Reap whatever is there; then wait for the queue's interrupt. */
			if (!vring_used_pending(&c.v.ring[q])) {
				int n = vdriver_wait_irq(&c.v, q + 1u, VDRIVER_TIMEOUT_MS);
				if (n < 0 && !vring_used_pending(&c.v.ring[q])) {
					struct ipc_metrics dm;
					struct vring *vr = &c.v.ring[q];
					int mr = vdriver_metrics(&c.v, &dm);
					fprintf(stderr,
					        "stalled: q%u avail_idx %u avail_event %u used_idx %u "
					        "last_used %u; device (%d): inflight %" PRIu64
					        " requests %" PRIu64 " notifications %" PRIu64 "\n",
					        q, vr->avail_idx, vring_avail_event(vr), vring_used_idx(vr),
					        vr->last_used, mr, dm.inflight, dm.requests, dm.notifications);
					r = n;
					goto out;
				}
			}
			uint16_t old = c.v.ring[q].avail_idx;
			uint32_t id, len;
			while (vring_get_used(&c.v.ring[q], &id, &len) == 1) {
				unsigned slot = (unsigned)c.slot_of_head[q * MAX_QD + (id & (MAX_QD - 1))];
				uint8_t status = *(uint8_t *)guest_mem_ptr(&c.v.mem, hdr_gpa(q, slot) + 16, 1);
				if (status != VIRTIO_BLK_S_OK) {
					fprintf(stderr, "request failed with status %u\n", status);
					r = -EIO;
					goto out;
				}
				ios++;
				any = true;
				if ((r = submit(&c, q, slot)) < 0)
					goto out;
			}
			if ((r = maybe_kick(&c, q, old)) < 0)
				goto out;
		}
		t1 = now_ns();
		if (t1 >= end && any)
			break;
	}
	res->ios = ios;
	res->seconds = (double)(t1 - t0) / 1e9;
	res->iops = (double)ios / res->seconds;
	r = vdriver_metrics(&c.v, &res->m);
out:; /* IPC_SHUTDOWN finishes what is still in flight */
	int ws = vdriver_shutdown(&c.v);
	if (r == 0 && (ws < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0))
		r = -EPROTO;
	vdriver_destroy(&c.v);
	return r;
}

static int make_file(char *path, size_t len, uint64_t mib)
{
	snprintf(path, len, "/dev/shm/ringvm-bench-blk-XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	static uint8_t buf[1 << 20];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	for (uint64_t i = 0; i < mib; i++)
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
			int e = -errno;
			close(fd);
			unlink(path);
			return e ? e : -EIO;
		}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	const char *file = NULL, *qds = "1,32,128", *rws = "randread,randwrite";
	double seconds = 5;
	uint64_t mib = 256;
	unsigned nq = 1;
	bool sandbox = true;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--no-sandbox")) {
			sandbox = false;
			continue;
		}
		if (!v) {
			fprintf(stderr, "usage: %s [--file PATH] [--size MIB] [--seconds N] [--qd LIST] "
			                "[--rw LIST] [--queues N] [--no-sandbox]\n", argv[0]);
			return 2;
		}
		i++;
		if (!strcmp(a, "--file"))
			file = v;
		else if (!strcmp(a, "--size"))
			mib = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--seconds"))
			seconds = atof(v);
		else if (!strcmp(a, "--qd"))
			qds = v;
		else if (!strcmp(a, "--rw"))
			rws = v;
		else if (!strcmp(a, "--queues"))
			nq = (unsigned)atoi(v);
		else {
			fprintf(stderr, "unknown option %s\n", a);
			return 2;
		}
	}
	if (nq < 1 || nq > 4 || mib < 1 || seconds <= 0) {
		fprintf(stderr, "--queues 1..4, --size >= 1, --seconds > 0\n");
		return 2;
	}
	char tmp[64];
	bool made = false;
	if (!file) {
		int r = make_file(tmp, sizeof(tmp), mib);
		if (r < 0) {
			fprintf(stderr, "cannot create the test file on /dev/shm: %s\n", strerror(-r));
			return 1;
		}
		file = tmp;
		made = true;
	}
	int rc = 0;
	printf("[\n");
	bool first = true;
	char rwbuf[64];
	snprintf(rwbuf, sizeof(rwbuf), "%s", rws);
	for (char *rw = strtok(rwbuf, ","); rw; rw = strtok(NULL, ",")) {
		bool write = !strcmp(rw, "randwrite");
		if (!write && strcmp(rw, "randread")) {
			fprintf(stderr, "--rw: randread or randwrite, not %s\n", rw);
			rc = 2;
			break;
		}
		for (const char *q = qds; *q;) {
			unsigned qd = (unsigned)strtoul(q, NULL, 10);
			q += strcspn(q, ",");
			q += *q == ',';
			if (qd < 1 || qd > 128) {
				fprintf(stderr, "--qd: 1..128\n");
				rc = 2;
				continue;
			}
			struct result res;
			int r = run_one(file, sandbox, (uint16_t)nq, qd, write, seconds, &res);
			if (r < 0) {
				fprintf(stderr, "%s qd %u: %s\n", rw, qd, strerror(-r));
				rc = 1;
				continue;
			}
			/* the service-time distribution, for bench/report.py's plot */
			static const double pct[] = {1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9};
			char dist[512];
			size_t dl = 0;
			for (size_t k = 0; k < sizeof(pct) / sizeof(pct[0]) && dl < sizeof(dist); k++)
				dl += (size_t)snprintf(dist + dl, sizeof(dist) - dl, "%s\"%g\": %.2f",
				                       k ? ", " : "", pct[k],
				                       ipc_metrics_percentile(&res.m, pct[k]) / 1e3);
			printf("%s  {\"rw\": \"%s\", \"bs\": %u, \"qd\": %u, \"queues\": %u, "
			       "\"sandbox\": %s, \"seconds\": %.2f, \"ios\": %" PRIu64 ", \"iops\": %.0f,\n"
			       "   \"service_pct_us\": {%s},\n"
			       "   \"service_us\": {\"p50\": %.2f, \"p99\": %.2f, \"mean\": %.2f}, "
			       "\"max_inflight\": %" PRIu64 ", \"notifications\": %" PRIu64
			       ", \"interrupts\": %" PRIu64 "}",
			       first ? "" : ",\n", rw, BS, qd, nq, sandbox ? "true" : "false", res.seconds,
			       res.ios, res.iops, dist, ipc_metrics_percentile(&res.m, 50) / 1e3,
			       ipc_metrics_percentile(&res.m, 99) / 1e3,
			       res.m.svc_count ? (double)res.m.svc_sum_ns / (double)res.m.svc_count / 1e3 : 0,
			       res.m.max_inflight, res.m.notifications, res.m.interrupts);
			fflush(stdout);
			first = false;
		}
	}
	printf("\n]\n");
	if (made)
		unlink(file);
	return rc;
}
