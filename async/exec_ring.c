/*
 * Ring setup: probing which io_uring features this kernel has (newest
 * first, stepping back on -EINVAL down to 5.15), registering the ring fd
 * and fixed files, and exec_restrict, which locks a ring down (opcode
 * allowlist, fixed files, io-wq caps) before enabling it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "async/exec_internal.h"

#define SQ_DEFAULT 256

struct setup_step {
	unsigned flags; /* IORING_SETUP_* */
	unsigned feat;  /* EXEC_FEAT_* they give */
};

/* Each step drops the newest feature; a kernel rejects unknown flags
 * with -EINVAL, so the first step it accepts is the best it has. */
static const struct setup_step setup_ladder[] = {
    {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
         IORING_SETUP_SUBMIT_ALL,
     EXEC_FEAT_SINGLE_ISSUER | EXEC_FEAT_DEFER_TASKRUN | EXEC_FEAT_SUBMIT_ALL},
    {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
         IORING_SETUP_SUBMIT_ALL,
     EXEC_FEAT_SINGLE_ISSUER | EXEC_FEAT_COOP_TASKRUN | EXEC_FEAT_SUBMIT_ALL},
    {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
     EXEC_FEAT_COOP_TASKRUN | EXEC_FEAT_SUBMIT_ALL},
    {IORING_SETUP_SUBMIT_ALL, EXEC_FEAT_SUBMIT_ALL},
    {0, 0},
};

static void probe_ops(struct exec *ex)
{
	struct io_uring_probe *pr = io_uring_get_probe_ring(&ex->ring);
	int i;

	if (!pr)
		return; /* exec_op_supported then answers false for everything */
	for (i = 0; i < pr->ops_len && i < 256; i++)
		if (pr->ops[i].flags & IO_URING_OP_SUPPORTED)
			ex->probe[i / 8] |= (uint8_t)(1u << (i % 8));
	io_uring_free_probe(pr);
}

int ring_setup(struct exec *ex, const struct exec_params *p, bool disabled)
{
	unsigned sq = p && p->sq_entries ? p->sq_entries : SQ_DEFAULT;
	unsigned cq = p && p->cq_entries ? p->cq_entries : 2 * sq;
	unsigned no = p ? p->no_features : 0;
	int ret = -EINVAL;
	size_t i;

	for (i = 0; i < sizeof(setup_ladder) / sizeof(setup_ladder[0]); i++) {
		const struct setup_step *s = &setup_ladder[i];
		struct io_uring_params prm;

		if (s->feat & no)
			continue;
		memset(&prm, 0, sizeof(prm));
		prm.flags = s->flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
		if (disabled)
			prm.flags |= IORING_SETUP_R_DISABLED;
		prm.cq_entries = cq;
		ret = io_uring_queue_init_params(sq, &ex->ring, &prm);
		if (ret == 0) {
			ex->features = s->feat;
			/* Cancel by fd/any arrived in 5.19 together with COOP_TASKRUN. */
			if (s->flags & (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_DEFER_TASKRUN))
				ex->features |= EXEC_FEAT_CANCEL_ANY & ~no;
			ex->max_inflight = prm.cq_entries;
			/* Posted writes need no CQE when they succeed (5.17). */
			ex->post_skip = (prm.features & IORING_FEAT_CQE_SKIP) != 0;
			break;
		}
		if (ret != -EINVAL)
			return ret;
	}
	if (ret)
		return ret;

	/* A registered ring fd spares the kernel an fd lookup on every enter. */
	if (!(no & EXEC_FEAT_RING_FD) && io_uring_register_ring_fd(&ex->ring) == 1)
		ex->features |= EXEC_FEAT_RING_FD;
	probe_ops(ex);
	ex->stack_size = p && p->stack_size ? p->stack_size : EXEC_STACK_DEFAULT;
	/* Stacks are page-rounded: recycling compares rounded sizes. */
	ex->stack_size = coro_stack_round(ex->stack_size);
	return 0;
}

int exec_restrict(struct exec **out, const struct exec_params *p,
                  const struct exec_restrict_params *r)
{
	struct io_uring_restriction res[256 + 2];
	unsigned n = 0, i;
	struct exec *ex;
	int ret;

	if (!r || r->n_ops > 256 || (r->n_ops && !r->ops) || (r->n_files && !r->files))
		return -EINVAL;
	ex = calloc(1, sizeof(*ex));
	if (!ex)
		return -ENOMEM;
	coro_init_thread(&ex->sched);
	ret = ring_setup(ex, p, true);
	if (ret)
		goto err_free;

	memset(res, 0, sizeof(res));
	for (i = 0; i < r->n_ops; i++) {
		res[n].opcode = IORING_RESTRICTION_SQE_OP;
		res[n++].sqe_op = r->ops[i];
	}
	/* Without ASYNC_CANCEL a cancelled or torn-down task could not get its
	 * buffers back from the kernel; it grants nothing beyond that. */
	res[n].opcode = IORING_RESTRICTION_SQE_OP;
	res[n++].sqe_op = IORING_OP_ASYNC_CANCEL;
	res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
	res[n++].sqe_flags = r->sqe_flags ? r->sqe_flags
	                                  : IOSQE_FIXED_FILE | IOSQE_IO_LINK |
	                                        (ex->post_skip ? IOSQE_CQE_SKIP_SUCCESS : 0);
	if (!(res[n - 1].sqe_flags & IOSQE_CQE_SKIP_SUCCESS))
		ex->post_skip = false;
	/* liburing 2.3's shared library lacks io_uring_register_restrictions(). */
	ret = io_uring_register(ex->ring.ring_fd, IORING_REGISTER_RESTRICTIONS, res, n);
	if (ret < 0)
		goto err_ring;

	if (r->n_files) {
		ret = io_uring_register_files(&ex->ring, r->files, r->n_files);
		if (ret < 0)
			goto err_ring;
		ex->features |= EXEC_FEAT_FIXED_FILES;
	}
	if (r->max_workers[0] || r->max_workers[1]) {
		unsigned v[2] = {r->max_workers[0], r->max_workers[1]};
		ret = io_uring_register_iowq_max_workers(&ex->ring, v);
		if (ret < 0)
			goto err_ring;
		/* {0, 0} changes nothing and reads the caps back. */
		v[0] = v[1] = 0;
		ret = io_uring_register_iowq_max_workers(&ex->ring, v);
		if (ret < 0)
			goto err_ring;
		ex->max_workers[0] = v[0];
		ex->max_workers[1] = v[1];
	}
	/* From here on the restrictions apply, register calls included. */
	ret = io_uring_register(ex->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
	if (ret < 0)
		goto err_ring;
	ex->features |= EXEC_FEAT_RESTRICTED;
	*out = ex;
	return 0;

err_ring:
	io_uring_queue_exit(&ex->ring);
err_free:
	free(ex);
	return ret;
}

int exec_register_files(struct exec *ex, const int *fds, unsigned n)
{
	int ret;

	if (ex->features & EXEC_FEAT_RESTRICTED)
		return -EPERM;
	if (ex->features & EXEC_FEAT_FIXED_FILES) {
		ret = io_uring_unregister_files(&ex->ring);
		if (ret < 0)
			return ret;
		ex->features &= ~EXEC_FEAT_FIXED_FILES;
	}
	ret = io_uring_register_files(&ex->ring, fds, n);
	if (ret < 0)
		return ret;
	ex->features |= EXEC_FEAT_FIXED_FILES;
	return 0;
}

unsigned exec_features(const struct exec *ex)
{
	return ex->features;
}

bool exec_op_supported(const struct exec *ex, unsigned op)
{
	return op < 256 && (ex->probe[op / 8] & (1u << (op % 8)));
}

void exec_max_workers(const struct exec *ex, unsigned out[2])
{
	out[0] = ex->max_workers[0];
	out[1] = ex->max_workers[1];
}
