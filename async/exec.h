/*
 * The executor: single-threaded coroutines on one io_uring. Owns task
 * spawning/joining/yielding, the run loop (one submit per iteration, CQEs
 * reaped in batches), awaitable io_uring operations, deadlines, safe
 * cancellation, eventfd waits and coroutine wait queues/semaphores, and
 * ring setup (feature probing, exec_restrict for sandboxed devices).
 */
#ifndef RINGVM_ASYNC_EXEC_H
#define RINGVM_ASYNC_EXEC_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "async/asan.h"

#define EXEC_WUR __attribute__((warn_unused_result))

struct exec;      /* one executor = one ring = one thread; opaque */
struct exec_task; /* one coroutine managed by an executor; opaque */

/* Body of a task. Its return value is what exec_join returns. */
typedef int exec_fn(struct exec *ex, void *arg);

/* Features exec_create found in the kernel and uses (exec_features()). */
enum {
	EXEC_FEAT_SINGLE_ISSUER = 1u << 0, /* IORING_SETUP_SINGLE_ISSUER (6.0) */
	EXEC_FEAT_DEFER_TASKRUN = 1u << 1, /* IORING_SETUP_DEFER_TASKRUN (6.1) */
	EXEC_FEAT_COOP_TASKRUN = 1u << 2,  /* IORING_SETUP_COOP_TASKRUN (5.19) */
	EXEC_FEAT_SUBMIT_ALL = 1u << 3,    /* IORING_SETUP_SUBMIT_ALL (5.18) */
	EXEC_FEAT_RING_FD = 1u << 4,       /* registered ring fd (5.18) */
	EXEC_FEAT_CANCEL_ANY = 1u << 5,    /* ASYNC_CANCEL by fd / any (5.19) */
	EXEC_FEAT_FIXED_FILES = 1u << 6,   /* a fixed-file table is registered */
	EXEC_FEAT_RESTRICTED = 1u << 7,    /* made by exec_restrict */
};

/* Default coroutine stack: frames are much bigger under ASan. */
#if defined(RINGVM_ASAN)
#define EXEC_STACK_DEFAULT ((size_t)256 * 1024)
#else
#define EXEC_STACK_DEFAULT ((size_t)64 * 1024)
#endif

/* Ring and executor sizing. Zeroed fields take the defaults in brackets. */
struct exec_params {
	unsigned sq_entries;  /* SQ size [256] */
	unsigned cq_entries;  /* CQ size, also the cap on operations in flight [2 * sq] */
	size_t stack_size;    /* stack of tasks spawned with stack_size 0 [EXEC_STACK_DEFAULT] */
	unsigned no_features; /* EXEC_FEAT_* bits not to use even if the kernel has them
	                         (simulates older kernels in tests) [0] */
};

/*
 * Create an executor owned by the calling thread, probing the kernel for
 * the features above and falling back step by step (6.1 → 5.19 → 5.18 →
 * 5.15) when setup rejects a flag. p may be NULL. Returns 0 and *out, or
 * -errno (-ENOSYS without io_uring, -ENOMEM, -EMFILE...).
 */
EXEC_WUR int exec_create(struct exec **out, const struct exec_params *p);

/* What exec_restrict applies before enabling the ring. */
struct exec_restrict_params {
	const uint8_t *ops; /* allowed IORING_OP_* (ASYNC_CANCEL is always added:
	                       safe cancellation depends on it) */
	unsigned n_ops;
	const int *files; /* registered as fixed files 0..n_files-1 (EXEC_FIXED) */
	unsigned n_files;
	uint8_t sqe_flags;       /* allowed IOSQE_*; 0 means IOSQE_FIXED_FILE | IOSQE_IO_LINK */
	unsigned max_workers[2]; /* io-wq caps [bounded, unbounded]; 0 keeps the kernel's */
};

/*
 * Create a locked-down executor for a device process, just before it loads
 * its seccomp filter: the ring is created IORING_SETUP_R_DISABLED, gets the
 * opcode/SQE-flag allowlist (IORING_REGISTER_RESTRICTIONS), the fixed files
 * and the io-wq worker caps, and only then is enabled. Afterwards every
 * opcode not allowed completes with -EACCES and every io_uring_register
 * call is refused, so later code cannot widen what the ring may do.
 * The calling thread becomes the ring's only submitter. 0 or -errno.
 */
EXEC_WUR int exec_restrict(struct exec **out, const struct exec_params *p,
                           const struct exec_restrict_params *r);

/*
 * Tear down. Operations still in flight are cancelled and their
 * completions awaited before any stack is unmapped (the kernel never writes
 * into freed memory); tasks that have not finished are then discarded
 * without running further. Must not be called from a task. NULL is a no-op.
 */
void exec_destroy(struct exec *ex);

/* EXEC_FEAT_* bits in use. */
unsigned exec_features(const struct exec *ex);

/* Whether the kernel supports opcode op (IORING_REGISTER_PROBE at setup). */
bool exec_op_supported(const struct exec *ex, unsigned op);

/* io-wq caps recorded by exec_restrict ([bounded, unbounded]; 0 if never set). */
void exec_max_workers(const struct exec *ex, unsigned out[2]);

/*
 * Register fds as the fixed-file table (index i = fds[i]), for use as
 * EXEC_FIXED(i). Not on a restricted executor (its table is fixed at
 * creation). Call outside tasks' in-flight use of fixed files. 0 or -errno.
 */
EXEC_WUR int exec_register_files(struct exec *ex, const int *fds, unsigned n);

/* The fd argument naming fixed file idx (registered table) in any operation. */
#define EXEC_FIXED(idx) ((int)(INT_MIN | (int)(idx)))

/* Counters for tests and benchmarks. */
struct exec_stats {
	uint64_t enters;       /* io_uring_enter-producing submit calls made by the loop */
	uint64_t cqes;         /* completions reaped */
	unsigned inflight;     /* operations whose completion is still owed */
	unsigned max_inflight; /* high-water mark of inflight */
	unsigned cq_entries;   /* the cap: inflight never exceeds it */
	unsigned tasks;        /* tasks not yet finished */
};
void exec_stats(const struct exec *ex, struct exec_stats *out);

/* ---- tasks ---- */

/*
 * Create a task running fn(ex, arg) on its own stack of stack_size bytes
 * (0: the executor's default; rounded to pages, with a guard page). It is
 * queued to run, in spawn order, once the caller yields or the loop runs.
 * With task != NULL the caller must exec_join it exactly once; with NULL it
 * is detached and cleaned up when it returns. Callable from tasks and from
 * outside the loop. 0 or -errno (-ENOMEM from mmap).
 */
EXEC_WUR int exec_spawn(struct exec *ex, exec_fn *fn, void *arg, size_t stack_size,
                        struct exec_task **task);

/*
 * Wait for t to finish and return its fn's return value, freeing t. From a
 * task: parks until then (-ECANCELED if the joiner itself is cancelled;
 * t stays joinable). From outside the loop: runs the loop until t has
 * finished (other tasks run too), or returns the loop's -errno.
 */
EXEC_WUR int exec_join(struct exec *ex, struct exec_task *t);

/* Let every other runnable task run once before the caller continues. */
void exec_yield(struct exec *ex);

/*
 * Run until every task has finished. 0, or -EDEADLK when tasks remain but
 * none can make progress (all parked on wait queues, nothing in flight),
 * or -errno from io_uring_enter. Not from a task (-EPERM).
 */
EXEC_WUR int exec_run(struct exec *ex);

/* The task calling this, or NULL outside tasks. */
struct exec_task *exec_self(struct exec *ex);

/*
 * Cancel task t. Never blocks. t's current wait ends: an operation in
 * flight is cancelled with IORING_OP_ASYNC_CANCEL and t resumes only after
 * the kernel has given back the operation's completion (so its buffers are
 * free again); the operation returns -ECANCELED, or its result if it
 * completed first. Waits on queues/semaphores/eventfds/joins return
 * -ECANCELED at once. Cancellation is sticky: every later operation or
 * wait of t returns -ECANCELED without being submitted. 0, or -ESRCH if t
 * has already finished.
 */
EXEC_WUR int exec_task_cancel(struct exec *ex, struct exec_task *t);

/* Whether the calling task has been cancelled. */
bool exec_cancelled(struct exec *ex);

/* CLOCK_MONOTONIC now, in ns (vDSO, no syscall). */
uint64_t exec_now(void);

/*
 * Set the calling task's deadline (CLOCK_MONOTONIC ns, 0 = none) and return
 * the previous one, so callers can scope it. While set, every operation
 * below except sleeps gets a linked timeout (IORING_OP_LINK_TIMEOUT, absolute)
 * and returns -ETIMEDOUT if the deadline cancels it; it still returns only
 * after the kernel has completed it.
 */
uint64_t exec_set_deadline(struct exec *ex, uint64_t deadline_ns);

/* ---- awaitable operations ----
 * Each must be called from a task of ex, parks the task until the kernel
 * completes it, and returns the CQE result: >= 0 on success, -errno on
 * failure (-ECANCELED when cancelled, -ETIMEDOUT past the deadline). The
 * caller's buffers are the kernel's until the call returns, and only then.
 * The operation state lives on the caller's stack: no allocation. fd may
 * be EXEC_FIXED(i). Offsets of (uint64_t)-1 mean the file position.
 * Outside a task they return -EPERM.
 */
EXEC_WUR int exec_nop(struct exec *ex);
EXEC_WUR int exec_read(struct exec *ex, int fd, void *buf, unsigned len, uint64_t off);
EXEC_WUR int exec_write(struct exec *ex, int fd, const void *buf, unsigned len, uint64_t off);
EXEC_WUR int exec_readv(struct exec *ex, int fd, const struct iovec *iov, unsigned n, uint64_t off);
EXEC_WUR int exec_writev(struct exec *ex, int fd, const struct iovec *iov, unsigned n,
                         uint64_t off);
EXEC_WUR int exec_fsync(struct exec *ex, int fd);
EXEC_WUR int exec_fdatasync(struct exec *ex, int fd);
/* fallocate(2) with any mode; the two helpers below are the common ones. */
EXEC_WUR int exec_fallocate(struct exec *ex, int fd, int mode, uint64_t off, uint64_t len);
/* Deallocate [off, off+len) keeping the size (FALLOC_FL_PUNCH_HOLE|KEEP_SIZE). */
EXEC_WUR int exec_punch_hole(struct exec *ex, int fd, uint64_t off, uint64_t len);
/* Make [off, off+len) read as zeros (FALLOC_FL_ZERO_RANGE, KEEP_SIZE). */
EXEC_WUR int exec_zero_range(struct exec *ex, int fd, uint64_t off, uint64_t len);
/* Wait until fd is ready for events (POLLIN/POLLOUT...); returns the revents mask. */
EXEC_WUR int exec_poll(struct exec *ex, int fd, unsigned events);
EXEC_WUR int exec_recvmsg(struct exec *ex, int fd, struct msghdr *msg, unsigned flags);
EXEC_WUR int exec_sendmsg(struct exec *ex, int fd, const struct msghdr *msg, unsigned flags);
/* Returns the new connected fd (SOCK_CLOEXEC etc. in flags). */
EXEC_WUR int exec_accept(struct exec *ex, int fd, struct sockaddr *addr, socklen_t *addrlen,
                         int flags);
EXEC_WUR int exec_connect(struct exec *ex, int fd, const struct sockaddr *addr, socklen_t addrlen);
/* Sleep until the CLOCK_MONOTONIC deadline: 0 when reached, -ECANCELED if cancelled. */
EXEC_WUR int exec_sleep_until(struct exec *ex, uint64_t deadline_ns);
/* exec_sleep_until(exec_now() + ns). */
EXEC_WUR int exec_sleep(struct exec *ex, uint64_t ns);
/*
 * Cancel every operation in flight on fd (any task's, IORING_ASYNC_CANCEL_FD
 * | ALL) and return how many were found; each owner still sees its own
 * completion (-ECANCELED). -EINVAL on kernels before 5.19.
 */
EXEC_WUR int exec_cancel_fd(struct exec *ex, int fd);

/*
 * Queue a write of buf[0..len) to fd (e.g. an eventfd signal) without
 * waiting for it: it goes to the kernel with the loop's next submit, which
 * also waits for the next completion, so no syscall of its own. buf must
 * stay valid until then (use static data); the result is not reported. For
 * writes that cannot block and need no answer. From a task only. 0, or
 * -EBUSY when no CQ/SQ room is at hand right now (write(2) instead),
 * -EPERM outside a task.
 */
EXEC_WUR int exec_post_write(struct exec *ex, int fd, const void *buf, unsigned len);

/* Hand every queued SQE (posted writes included) to the kernel now, instead
 * of with the loop's next submit. 0 or -errno. */
EXEC_WUR int exec_flush(struct exec *ex);

/* Whether another task will run before the loop next waits for the kernel
 * (one is runnable in this pass or the next). Lets a task batch its
 * follow-up work (e.g. one interrupt for several completions) only when
 * there is something to batch with. */
bool exec_others_runnable(const struct exec *ex);

/* ---- waiting for other tasks ---- */

/* A FIFO of parked tasks (a condition-variable-like wake-up). Embed and init. */
struct exec_waitq {
	struct exec_task *head, *tail;
};
void exec_waitq_init(struct exec_waitq *q);
/* Park the calling task on q until woken: 0, or -ECANCELED (also -EPERM outside tasks). */
EXEC_WUR int exec_waitq_wait(struct exec *ex, struct exec_waitq *q);
/* Wake up to n tasks (oldest first) and return how many were woken. Any context. */
unsigned exec_waitq_wake(struct exec *ex, struct exec_waitq *q, unsigned n);

/* Counting semaphore for coroutine-to-coroutine wake-ups (e.g. between a
 * device's queues). Posts are never lost: they count until waited for. */
struct exec_sem {
	uint64_t count;
	struct exec_waitq q;
};
void exec_sem_init(struct exec_sem *s, uint64_t count);
/* Take one unit, parking until one is posted: 0 or -ECANCELED. */
EXEC_WUR int exec_sem_wait(struct exec *ex, struct exec_sem *s);
/* Add one unit, waking the oldest waiter if any. Any context. */
void exec_sem_post(struct exec *ex, struct exec_sem *s);

/* Private: one operation's completion state (lives where its owner does). */
struct exec_op {
	struct exec_task *task; /* woken when pending drops to 0 (may be NULL) */
	int res;                /* the operation's CQE result */
	unsigned cqe_flags;
	int link_res;           /* the linked timeout's CQE result (-ETIME: it fired) */
	unsigned short pending; /* CQEs still owed: op, linked timeout, cancel */
};

/* ---- batches: many operations, one park ----
 * A task that has several independent operations to issue at once (a
 * virtio queue's worth of requests, a scatter of metadata reads) adds them
 * to a batch and parks once for all of them, instead of one park and one
 * context switch per operation. Batches are for operations that complete on
 * their own (file and block I/O, NOPs): they get no deadline, and cancelling
 * the waiting task does not cut them short — exec_batch_wait still returns
 * only once every one of them has completed, so buffers are never left with
 * the kernel. Both structs live with the caller (no allocation); each
 * exec_batch_op must stay put until exec_batch_wait returns.
 */
struct exec_batch_op {
	int res;                  /* the operation's CQE result, set when it completes */
	struct exec_batch *batch; /* private */
};
struct exec_batch {
	struct exec_op op; /* private: the waiting task and the completions owed */
	unsigned added;    /* operations added since init (whether or not they completed) */
};
void exec_batch_init(struct exec_batch *b);
/*
 * Queue one operation into b (submitted with the executor's next submit,
 * which also flushes a full SQ). May park while the CQ is full. 0, or
 * -errno with nothing queued for this call (-ECANCELED once the task is
 * cancelled, -EPERM outside a task). Operations added earlier stay queued
 * either way: the caller must still call exec_batch_wait.
 */
EXEC_WUR int exec_batch_nop(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o);
EXEC_WUR int exec_batch_readv(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o,
                              int fd, const struct iovec *iov, unsigned n, uint64_t off);
EXEC_WUR int exec_batch_writev(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o,
                               int fd, const struct iovec *iov, unsigned n, uint64_t off);
/*
 * The same with preadv2/pwritev2 flags (RWF_*). RWF_NOWAIT makes a read of
 * an empty pipe/TAP or a write to a full one complete at once with -EAGAIN:
 * io_uring otherwise ignores O_NONBLOCK on files that support non-blocking
 * I/O and waits for readiness, which would hold the whole batch back.
 * Files without non-blocking support complete with -EOPNOTSUPP.
 */
EXEC_WUR int exec_batch_readv_flags(struct exec *ex, struct exec_batch *b, struct exec_batch_op *o,
                                    int fd, const struct iovec *iov, unsigned n, uint64_t off,
                                    int rw_flags);
EXEC_WUR int exec_batch_writev_flags(struct exec *ex, struct exec_batch *b,
                                     struct exec_batch_op *o, int fd, const struct iovec *iov,
                                     unsigned n, uint64_t off, int rw_flags);
/*
 * Park until every operation added to b has completed (each result is in
 * its exec_batch_op.res) and reset b for reuse. Returns how many operations
 * completed (b->added), or -ECANCELED if the task was cancelled (the
 * results are still valid), or -EPERM outside a task. Never parks for an
 * empty batch.
 */
EXEC_WUR int exec_batch_wait(struct exec *ex, struct exec_batch *b);

/*
 * An eventfd waited on with exactly one read armed at a time: the read is
 * (re-)armed when a wait returns, so kicks that arrive while the task is
 * busy complete it and are reported by the next wait, summed by the
 * eventfd counter itself — never lost and never counted twice. The read's
 * buffer lives here, so this struct must stay put until exec_eventfd_close.
 */
struct exec_eventfd {
	int fd;
	bool armed;
	uint64_t value;    /* the read's buffer */
	struct exec_op op; /* the armed read */
	struct exec_task *waiter;
	struct exec_eventfd *prev, *next; /* the executor's armed eventfds, for teardown */
};
/* Bind e to fd (an eventfd, blocking or not). Arms nothing yet. */
void exec_eventfd_init(struct exec_eventfd *e, int fd);
/*
 * Wait for the counter to be non-zero and return its value (> 0), which the
 * read resets to zero; or -errno (-ECANCELED if cancelled; the read stays
 * armed). One task at a time (-EBUSY for a second waiter).
 */
EXEC_WUR int64_t exec_eventfd_wait(struct exec *ex, struct exec_eventfd *e);
/*
 * Disarm: cancel the armed read and await its completion, so e and fd may
 * then be freed/closed. A kick consumed by that read is returned (> 0),
 * else 0, or -errno. From a task of ex.
 */
EXEC_WUR int64_t exec_eventfd_close(struct exec *ex, struct exec_eventfd *e);

#endif
