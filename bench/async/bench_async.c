/*
 * Micro-benchmarks of async/: raw context-switch cost, executor yield cost,
 * NOP throughput through the executor versus a plain liburing loop with the
 * same batching and ring flags, and 4 KiB random reads of a file at a given
 * queue depth. One measurement per run; bench/async/run.sh repeats them,
 * takes medians and compares with fio. Prints "name value unit".
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "async/coro.h"
#include "async/exec.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- raw coro switch ---- */

static struct coro sw_main, sw_co;

static void sw_body(void *arg)
{
	(void)arg;
	for (;;)
		coro_switch(&sw_co, &sw_main);
}

static int bench_switch(long rounds)
{
	coro_init_thread(&sw_main);
	if (coro_stack_create(&sw_co, 0))
		return 1;
	coro_prepare(&sw_co, sw_body, NULL);
	for (int i = 0; i < 1000; i++) /* warm up */
		coro_switch(&sw_main, &sw_co);
	double t0 = now_s();
	for (long i = 0; i < rounds; i++)
		coro_switch(&sw_main, &sw_co);
	double dt = now_s() - t0;
	/* each round is two switches: in and back out */
	printf("switch_ns %.2f ns\n", dt * 1e9 / (double)(2 * rounds));
	return 0;
}

/* ---- executor yield ---- */

static long yield_rounds;
static int yield_body(struct exec *ex, void *arg)
{
	(void)arg;
	for (long i = 0; i < yield_rounds; i++)
		exec_yield(ex);
	return 0;
}

static int bench_yield(long rounds, int tasks)
{
	struct exec *ex;
	if (exec_create(&ex, NULL))
		return 1;
	yield_rounds = rounds / tasks;
	for (int i = 0; i < tasks; i++)
		if (exec_spawn(ex, yield_body, NULL, 0, NULL))
			return 1;
	double t0 = now_s();
	if (exec_run(ex))
		return 1;
	double dt = now_s() - t0;
	printf("yield_ns %.2f ns\n", dt * 1e9 / (double)(yield_rounds * tasks));
	exec_destroy(ex);
	return 0;
}

/* ---- NOPs ---- */

static long nops_per_task;
static int nop_body(struct exec *ex, void *arg)
{
	(void)arg;
	for (long i = 0; i < nops_per_task; i++)
		if (exec_nop(ex))
			return -1;
	return 0;
}

static int bench_nop_exec(int tasks, long total)
{
	struct exec *ex;
	struct exec_params p = {.sq_entries = 256};
	struct exec_stats st;
	if (exec_create(&ex, &p))
		return 1;
	nops_per_task = total / tasks;
	for (int i = 0; i < tasks; i++)
		if (exec_spawn(ex, nop_body, NULL, 0, NULL))
			return 1;
	double t0 = now_s();
	if (exec_run(ex))
		return 1;
	double dt = now_s() - t0;
	exec_stats(ex, &st);
	printf("nop_exec %.0f ops/s (%.2f ops/enter)\n", (double)st.cqes / dt,
	       (double)st.cqes / (double)st.enters);
	exec_destroy(ex);
	return 0;
}

/* One task issuing `batch` NOPs per exec_batch_wait: the executor's batch
 * API against the same plain loop (one park per batch, not per op). */
static long batch_rounds;
static int batch_size;
static int nop_batch_body(struct exec *ex, void *arg)
{
	struct exec_batch_op o[256];
	struct exec_batch b;
	(void)arg;
	exec_batch_init(&b);
	for (long r = 0; r < batch_rounds; r++) {
		for (int i = 0; i < batch_size; i++)
			if (exec_batch_nop(ex, &b, &o[i]))
				return -1;
		if (exec_batch_wait(ex, &b) != batch_size)
			return -1;
	}
	return 0;
}

static int bench_nop_batch(int batch, long total)
{
	struct exec *ex;
	struct exec_params p = {.sq_entries = 256};
	struct exec_stats st;
	if (batch < 1 || batch > 256 || exec_create(&ex, &p))
		return 1;
	batch_size = batch;
	batch_rounds = total / batch;
	if (exec_spawn(ex, nop_batch_body, NULL, 0, NULL))
		return 1;
	double t0 = now_s();
	if (exec_run(ex))
		return 1;
	double dt = now_s() - t0;
	exec_stats(ex, &st);
	printf("nop_batch %.0f ops/s (%.2f ops/enter)\n", (double)st.cqes / dt,
	       (double)st.cqes / (double)st.enters);
	exec_destroy(ex);
	return 0;
}

/* The same work as bench_nop_exec without coroutines: `batch` NOPs queued,
 * one submit-and-wait, every CQE reaped, on a ring set up with the same
 * flags the executor picks on this kernel. */
static int bench_nop_uring(int batch, long total)
{
	struct io_uring ring;
	struct io_uring_params prm;
	memset(&prm, 0, sizeof(prm));
	prm.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
	            IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	prm.cq_entries = 512;
	if (io_uring_queue_init_params(256, &ring, &prm)) {
		memset(&prm, 0, sizeof(prm));
		if (io_uring_queue_init_params(256, &ring, &prm))
			return 1;
	}
	io_uring_register_ring_fd(&ring);
	long done = 0, queued = 0;
	double t0 = now_s();
	while (done < total) {
		while (queued - done < batch && queued < total) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			io_uring_prep_nop(sqe);
			io_uring_sqe_set_data64(sqe, (uint64_t)queued + 1);
			queued++;
		}
		if (io_uring_submit_and_wait(&ring, 1) < 0)
			return 1;
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			if (cqe->res != 0)
				return 1;
			n++;
		}
		io_uring_cq_advance(&ring, n);
		done += n;
	}
	double dt = now_s() - t0;
	printf("nop_uring %.0f ops/s\n", (double)done / dt);
	io_uring_queue_exit(&ring);
	return 0;
}

/* ---- random reads ---- */

struct rr {
	int fd;
	uint64_t blocks;
	double end;
	uint64_t seed;
	long ios;
	int err;
};

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static int rr_body(struct exec *ex, void *arg)
{
	struct rr *r = arg;
	/* The buffer lives on this task's stack: no allocation per request. */
	char buf[4096] __attribute__((aligned(4096)));
	while (1) {
		/* check the clock every 64 requests: clock_gettime is cheap, not free */
		for (int i = 0; i < 64; i++) {
			uint64_t off = (xorshift(&r->seed) % r->blocks) * 4096;
			int ret = exec_read(ex, r->fd, buf, sizeof(buf), off);
			if (ret != (int)sizeof(buf)) {
				r->err = ret;
				return -1;
			}
			r->ios++;
		}
		if (now_s() >= r->end)
			return 0;
	}
}

static int bench_randread(const char *path, int qd, double secs, unsigned no_features)
{
	struct exec *ex;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		perror(path);
		return 1;
	}
	struct exec_params prm = {.no_features = no_features};
	if (exec_create(&ex, &prm))
		return 1;
	struct rr *r = calloc((size_t)qd, sizeof(*r));
	double t0 = now_s();
	for (int i = 0; i < qd; i++) {
		r[i].fd = fd;
		r[i].blocks = (uint64_t)st.st_size / 4096;
		r[i].end = t0 + secs;
		r[i].seed = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
		if (exec_spawn(ex, rr_body, &r[i], 0, NULL))
			return 1;
	}
	if (exec_run(ex))
		return 1;
	double dt = now_s() - t0;
	long ios = 0;
	for (int i = 0; i < qd; i++) {
		if (r[i].err) {
			fprintf(stderr, "read failed: %d\n", r[i].err);
			return 1;
		}
		ios += r[i].ios;
	}
	struct exec_stats est;
	exec_stats(ex, &est);
	printf("randread_qd%d %.0f iops (%.2f ops/enter)\n", qd, (double)ios / dt,
	       (double)est.cqes / (double)est.enters);
	exec_destroy(ex);
	free(r);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "switch"))
		return bench_switch(argc > 2 ? atol(argv[2]) : 20000000);
	if (argc >= 2 && !strcmp(argv[1], "yield"))
		return bench_yield(argc > 2 ? atol(argv[2]) : 10000000, argc > 3 ? atoi(argv[3]) : 2);
	if (argc >= 2 && !strcmp(argv[1], "nop-exec"))
		return bench_nop_exec(argc > 2 ? atoi(argv[2]) : 32,
		                      argc > 3 ? atol(argv[3]) : 10000000);
	if (argc >= 2 && !strcmp(argv[1], "nop-batch"))
		return bench_nop_batch(argc > 2 ? atoi(argv[2]) : 32,
		                       argc > 3 ? atol(argv[3]) : 5000000);
	if (argc >= 2 && !strcmp(argv[1], "nop-uring"))
		return bench_nop_uring(argc > 2 ? atoi(argv[2]) : 32,
		                       argc > 3 ? atol(argv[3]) : 10000000);
	if (argc >= 4 && !strcmp(argv[1], "randread"))
		return bench_randread(argv[2], atoi(argv[3]), argc > 4 ? atof(argv[4]) : 3.0,
		                      argc > 5 ? (unsigned)strtoul(argv[5], NULL, 0) : 0);
	fprintf(stderr,
	        "usage: %s switch [rounds] | yield [total] [tasks] | nop-exec [tasks] [total] |\n"
	        "       nop-batch [batch] [total] |\n"
	        "       nop-uring [batch] [total] | randread FILE QD [seconds] [no_features]\n",
	        argv[0]);
	return 2;
}
