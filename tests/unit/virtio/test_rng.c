/*
 * virtio-rng end to end through the host-side harness: a real forked device
 * process (plain fork and jailed), driven through the bus socket, kicks by
 * ioeventfd, completions by irqfd. Plus hostile chains through the same
 * path, with the device still serving (or asking for a reset) afterwards.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "tests/common/facility.h"
#include "tests/harness/vdriver.h"

#define FEATURES                                                                                   \
	((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_EVENT_IDX) |                             \
	 (1ull << VIRTIO_F_INDIRECT_DESC))

static void start(struct vdriver *v, bool sandbox, uint64_t features)
{
	REQUIRE_FACILITY(facility_io_uring(), "io_uring_setup unavailable");
	struct vdriver_params p = {.device = "rng", .sandbox = sandbox};
	int r = vdriver_spawn(v, &p);
	if (sandbox && r < 0 && (r == -EPERM || r == -EINVAL || r == -ENOSPC))
		REQUIRE_FACILITY(false, "cannot create the jail's namespaces here");
	cr_assert_eq(r, 0, "vdriver_spawn: %d", r);
	r = vdriver_setup(v, features, 64);
	cr_assert_eq(r, 0, "vdriver_setup: %d", r);
	cr_assert_geq(v->kick[0], 0, "no ioeventfd registered for queue 0");
	cr_assert_geq(v->vec[1].irqfd, 0, "no irqfd for the queue's vector");
}

static void stop(struct vdriver *v)
{
	int st = vdriver_shutdown(v);
	cr_expect(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "device exit status %#x", st);
	vdriver_destroy(v);
}

/* One request of len writable bytes at gpa; returns the used length. */
static uint32_t request(struct vdriver *v, uint64_t gpa, uint32_t len)
{
	struct vring_buf b = {.gpa = gpa, .len = len, .write = true};
	int head = vring_add(&v->ring[0], &b, 1);
	cr_assert_geq(head, 0);
	cr_assert_eq(vdriver_kick(v, 0), 0);
	cr_assert_eq(vdriver_wait_used(v, 0, VDRIVER_TIMEOUT_MS), 0, "no completion");
	uint32_t id, used;
	cr_assert_eq(vring_get_used(&v->ring[0], &id, &used), 1);
	cr_assert_eq(id, (uint32_t)head);
	return used;
}

static void bytes_arrive(bool sandbox)
{
	struct vdriver v;
	start(&v, sandbox, FEATURES);
	uint8_t *a = vring_host(&v.ring[0], VDRIVER_DATA_BASE, 4096);
	uint8_t *b = vring_host(&v.ring[0], VDRIVER_DATA_BASE + 4096, 4096);
	cr_assert_eq(request(&v, VDRIVER_DATA_BASE, 256), 256);
	cr_assert_eq(request(&v, VDRIVER_DATA_BASE + 4096, 256), 256);
	static const uint8_t zero[256];
	cr_expect_neq(memcmp(a, zero, 256), 0, "no entropy written");
	cr_expect_neq(memcmp(a, b, 256), 0, "two requests got the same bytes");
	cr_expect_eq(a[256], 0, "wrote past the buffer");
	stop(&v);
}

Test(virtio_rng, bytes_arrive_and_vary)
{
	bytes_arrive(false);
}

Test(virtio_rng, bytes_arrive_sandboxed)
{
	bytes_arrive(true);
}

Test(virtio_rng, large_request_is_capped)
{
	struct vdriver v;
	start(&v, false, FEATURES);
	cr_expect_eq(request(&v, VDRIVER_DATA_BASE, 1u << 20), 64u * 1024);
	stop(&v);
}

Test(virtio_rng, indirect_and_batched)
{
	struct vdriver v;
	start(&v, false, FEATURES);
	struct vring_buf bufs[3] = {{VDRIVER_DATA_BASE, 100, true},
	                            {VDRIVER_DATA_BASE + 0x1000, 0, true},
	                            {VDRIVER_DATA_BASE + 0x2000, 28, true}};
	cr_assert_geq(vring_add_indirect(&v.ring[0], bufs, 3, VDRIVER_DATA_BASE + 0x10000), 0);
	for (int i = 0; i < 8; i++) {
		struct vring_buf b = {VDRIVER_DATA_BASE + 0x20000 + 0x1000u * i, 32, true};
		cr_assert_geq(vring_add(&v.ring[0], &b, 1), 0);
	}
	cr_assert_eq(vdriver_kick(&v, 0), 0);
	uint32_t id, len, total = 0, n = 0;
	while (n < 9) {
		cr_assert_eq(vdriver_wait_used(&v, 0, VDRIVER_TIMEOUT_MS), 0);
		while (vring_get_used(&v.ring[0], &id, &len) == 1) {
			total += len;
			n++;
		}
	}
	cr_expect_eq(total, 128 + 8 * 32);
	stop(&v);
}

Test(virtio_rng, kick_through_notify_bar_without_ioeventfd)
{
	struct vdriver v;
	start(&v, false, FEATURES);
	close(v.kick[0]); /* the guest's MMIO write then reaches the device as a BAR write */
	v.kick[0] = -1;
	cr_expect_eq(request(&v, VDRIVER_DATA_BASE, 64), 64);
	stop(&v);
}

Test(virtio_rng, hostile_loop_sets_needs_reset_then_reset_recovers)
{
	struct vdriver v;
	start(&v, false, FEATURES);
	vring_write_desc(&v.ring[0], 5, VDRIVER_DATA_BASE, 16,
	                 VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 5);
	vring_publish_raw(&v.ring[0], 5);
	cr_assert_eq(vdriver_kick(&v, 0), 0);
	/* The config vector (0) reports DEVICE_NEEDS_RESET. */
	cr_assert_gt(vdriver_wait_irq(&v, 0, VDRIVER_TIMEOUT_MS), 0);
	uint8_t st;
	cr_assert_eq(vdriver_status(&v, &st), 0);
	cr_expect(st & VIRTIO_STATUS_NEEDS_RESET, "status %#x", st);
	cr_expect(vdriver_alive(&v));
	/* The driver resets and starts over: the device serves again. */
	cr_assert_eq(vdriver_setup(&v, FEATURES, 64), 0);
	cr_expect_eq(request(&v, VDRIVER_DATA_BASE, 32), 32);
	stop(&v);
}

Test(virtio_rng, hostile_chains_through_the_process)
{
	/* Each: build the bad chain, kick, expect NEEDS_RESET, reset, serve. */
	static const struct {
		uint64_t addr;
		uint32_t len;
		uint16_t flags, next;
	} bad[] = {
	    {VDRIVER_DATA_BASE, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 200}, /* next ≥ size */
	    {UINT64_MAX - 4, 16, VIRTQ_DESC_F_WRITE, 0},                          /* wraps */
	    {(16ull << 20) - 8, 16, VIRTQ_DESC_F_WRITE, 0},                       /* past RAM */
	    {VDRIVER_DATA_BASE, 24, VIRTQ_DESC_F_INDIRECT, 0},                    /* table len */
	};
	struct vdriver v;
	start(&v, false, FEATURES);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vring_write_desc(&v.ring[0], 3, bad[i].addr, bad[i].len, bad[i].flags, bad[i].next);
		vring_publish_raw(&v.ring[0], 3);
		cr_assert_eq(vdriver_kick(&v, 0), 0);
		cr_assert_gt(vdriver_wait_irq(&v, 0, VDRIVER_TIMEOUT_MS), 0, "case %u", i);
		uint8_t st;
		cr_assert_eq(vdriver_status(&v, &st), 0);
		cr_expect(st & VIRTIO_STATUS_NEEDS_RESET, "case %u: status %#x", i, st);
		cr_assert_eq(vdriver_setup(&v, FEATURES, 64), 0, "case %u", i);
		cr_expect_eq(request(&v, VDRIVER_DATA_BASE, 32), 32, "case %u", i);
	}
	stop(&v);
}

Test(virtio_rng, hostile_head_out_of_range_and_avail_jump)
{
	struct vdriver v;
	start(&v, false, FEATURES);
	vring_publish_raw(&v.ring[0], 64); /* head == size */
	cr_assert_eq(vdriver_kick(&v, 0), 0);
	cr_assert_gt(vdriver_wait_irq(&v, 0, VDRIVER_TIMEOUT_MS), 0);
	cr_assert_eq(vdriver_setup(&v, FEATURES, 64), 0);
	vring_set_avail_idx(&v.ring[0], 65); /* 65 entries from a 64-entry ring */
	cr_assert_eq(vdriver_kick(&v, 0), 0);
	cr_assert_gt(vdriver_wait_irq(&v, 0, VDRIVER_TIMEOUT_MS), 0);
	cr_assert_eq(vdriver_setup(&v, FEATURES, 64), 0);
	cr_expect_eq(request(&v, VDRIVER_DATA_BASE, 8), 8);
	stop(&v);
}

Test(virtio_rng, bad_bus_message_kills_device)
{
	static const struct ipc_bus_req bad[] = {
	    {.op = IPC_BAR_READ, .bar = 2, .len = 4},                      /* no such BAR */
	    {.op = IPC_BAR_READ, .bar = 0, .len = 3},                      /* size */
	    {.op = IPC_BAR_WRITE, .bar = 0, .len = 8, .off = 0x3ffc},      /* past the end */
	    {.op = IPC_CFG_READ, .len = 8},                                /* config: no 8 */
	    {.op = IPC_CFG_WRITE, .len = 4, .off = 254},                   /* past 256 */
	    {.op = 77},                                                    /* unknown op */
	    {.op = IPC_HELLO, .version = IPC_VERSION, .magic = IPC_MAGIC}, /* second HELLO */
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vdriver v;
		start(&v, false, FEATURES);
		struct ipc_bus_resp resp;
		(void)vdriver_bus_raw(&v, &bad[i], false, &resp);
		int st = vdriver_wait_exit(&v, VDRIVER_TIMEOUT_MS);
		cr_expect(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "case %u: %#x", i, st);
		vdriver_destroy(&v);
	}
}

Test(virtio_rng, eof_on_bus_socket_exits)
{
	struct vdriver v;
	start(&v, false, FEATURES);
	close(v.bus);
	v.bus = -1;
	int st = vdriver_wait_exit(&v, VDRIVER_TIMEOUT_MS);
	cr_expect(st >= 0 && WIFEXITED(st), "status %#x", st);
	vdriver_destroy(&v);
}

/* A batch of requests and one kick: served in one pass, signalled once (EVENT_IDX). */
Test(virtio_rng, batch_is_signalled_once)
{
	struct vdriver v;
	start(&v, false, FEATURES);
	for (unsigned i = 0; i < 64; i++) {
		struct vring_buf b = {VDRIVER_DATA_BASE + 64u * i, 16, true};
		cr_assert_geq(vring_add(&v.ring[0], &b, 1), 0);
	}
	cr_assert_eq(vdriver_kick(&v, 0), 0);
	int irqs = 0;
	while (vring_used_pending(&v.ring[0]) < 64) {
		int n = vdriver_wait_irq(&v, 1, VDRIVER_TIMEOUT_MS);
		cr_assert_gt(n, 0, "completions without an interrupt");
		irqs += n;
	}
	cr_expect_eq(irqs, 1, "one interrupt for the whole batch");
	cr_expect_eq(vdriver_wait_irq(&v, 1, 50), -ETIMEDOUT, "and nothing more");
	uint32_t id, len;
	while (vring_get_used(&v.ring[0], &id, &len) == 1)
		cr_expect_eq(len, 16);
	stop(&v);
}

/* Not a benchmark gate: logs what the device process sustains through the harness. */
Test(virtio_rng, service_rate_is_logged)
{
	struct vdriver v;
	start(&v, false, FEATURES);
	const unsigned total = 20000, depth = 32;
	unsigned done = 0, irqs = 0, kicks = 0;
	uint64_t t0 = 0;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t0 = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	unsigned submitted = 0;
	while (done < total) {
		while (submitted < total && submitted - done < depth) {
			struct vring_buf b = {VDRIVER_DATA_BASE + 64u * (submitted % depth), 16,
			                      true};
			cr_assert_geq(vring_add(&v.ring[0], &b, 1), 0);
			submitted++;
		}
		cr_assert_eq(vdriver_kick(&v, 0), 0);
		kicks++;
		int n = vdriver_wait_irq(&v, 1, VDRIVER_TIMEOUT_MS);
		cr_assert_gt(n, 0);
		irqs += (unsigned)n;
		uint32_t id, len;
		while (vring_get_used(&v.ring[0], &id, &len) == 1)
			done++;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec - t0;
	cr_log_info("rng through the harness: %u requests in %.1f ms (%.0f/s, %.2f us each), "
	            "%u kicks, %u interrupts",
	            total, ns / 1e6, total * 1e9 / ns, ns / 1e3 / total, kicks, irqs);
	stop(&v);
}
