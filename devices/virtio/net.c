/*
 * virtio-net (virtio 1.2 §5.1) on a net/ backend (a TAP): configuration and
 * features, the control queue (RX mode, MAC tables, MQ pairs), activation
 * (offloads follow what the guest negotiated) and reset, the factory that
 * opens the TAP in the main process, and the registry entry with the
 * device's ioctl allowlist. The hot paths are in net_io.c.
 */
#include <endian.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <linux/if_tun.h>

#include "devices/virtio/net_priv.h"

/* Queue roles: RX of pair i is 2i, TX 2i + 1, control at ctrl_index. */
static int net_kick(struct virtio_dev *d, struct virtio_queue *q);

static void net_config_read(struct virtio_dev *d, uint32_t off, void *buf, uint32_t len)
{
	struct net *n = (struct net *)d;
	memcpy(buf, (const uint8_t *)&n->cfg + off, len);
}

static void net_config_write(struct virtio_dev *d, uint32_t off, const void *buf, uint32_t len)
{
	(void)d, (void)off, (void)buf, (void)len; /* the MAC is read-only (virtio 1.x) */
}

/* Attach the pairs in use to the TAP, detach the others, wake their RX coroutines. */
static void apply_pairs(struct net *n, unsigned pairs)
{
	n->curr_pairs = pairs;
	for (unsigned i = 0; i < n->npairs; i++) {
		bool on = i < pairs;
		int r = n->be.ops->set_queue(&n->be, i, on);
		if (r < 0)
			fprintf(stderr, "virtio-net: %s queue %u: %s\n", on ? "attach" : "detach", i,
			        strerror(-r));
		n->rx[i].active = on;
		exec_sem_post(n->vdev.ex, &n->rx[i].kick);
	}
}

static void ctrl_apply(struct net *n, const struct net_ctrl_cmd *c)
{
	switch (c->cls) {
	case VIRTIO_NET_CTRL_RX:
		/* Recorded only: a TAP is a point-to-point link, the host side
		 * (bridge, routing) decides which frames reach it. */
		if (c->cmd == VIRTIO_NET_CTRL_RX_PROMISC)
			n->promisc = c->on;
		else
			n->allmulti = c->on;
		break;
	case VIRTIO_NET_CTRL_MQ:
		apply_pairs(n, c->pairs);
		break;
	}
}

static int ctrl_kick(struct net *n, struct virtio_queue *q)
{
	static uint8_t buf[NET_CTRL_MAX]; /* one process, one control queue: off the stack */
	struct virtq_chain *c = &n->ctrl_chain;
	struct net_ctrl_caps caps = {.rx = virtio_has_feature(&n->vdev, VIRTIO_NET_F_CTRL_RX),
	                             .mq = virtio_has_feature(&n->vdev, VIRTIO_NET_F_MQ),
	                             .max_pairs = (uint16_t)n->npairs};
	int r;
	while ((r = virtq_pop(&q->vq, c)) > 0) {
		struct net_ctrl_cmd cmd = {.ack = VIRTIO_NET_ERR};
		struct virtq_reader rd;
		struct virtq_writer w;
		n->st.ctrl_cmds++;
		if (c->read_len <= NET_CTRL_MAX) {
			virtq_reader_init(&rd, c);
			size_t len = virtq_reader_read(&rd, buf, c->read_len);
			net_ctrl_parse(buf, len, &caps, &cmd);
		}
		if (cmd.ack == VIRTIO_NET_OK)
			ctrl_apply(n, &cmd);
		else
			n->st.ctrl_errs++;
		uint32_t used = 0;
		virtq_writer_init(&w, c);
		if (c->write_len)
			used = (uint32_t)virtq_writer_write(&w, &cmd.ack, 1);
		if ((r = virtq_push(&q->vq, c, used)) < 0)
			return r;
	}
	return r;
}

static int net_kick(struct virtio_dev *d, struct virtio_queue *q)
{
	struct net *n = (struct net *)d;
	unsigned pairs = virtio_has_feature(d, VIRTIO_NET_F_MQ) ? n->npairs : 1;
	if (virtio_has_feature(d, VIRTIO_NET_F_CTRL_VQ) && q->index == n->ctrl_index)
		return ctrl_kick(n, q);
	if (q->index >= 2 * pairs)
		return 0; /* a queue with no role under the negotiated features: ignored */
	unsigned pair = q->index / 2;
	if (q->index % 2)
		return net_tx_kick(n, q, pair);
	/* RX: the pair's coroutine pops; a kick only says buffers were added. */
	exec_sem_post(d->ex, &n->rx[pair].kick);
	return 0;
}

static unsigned offloads_for(const struct net *n)
{
	const struct virtio_dev *d = &n->vdev;
	unsigned off = 0;
	if (!virtio_has_feature(d, VIRTIO_NET_F_GUEST_CSUM))
		return 0; /* every other receive offload needs checksum offload */
	off |= NET_OFF_CSUM;
	if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO4))
		off |= NET_OFF_TSO4;
	if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO6))
		off |= NET_OFF_TSO6;
	if ((off & (NET_OFF_TSO4 | NET_OFF_TSO6)) && virtio_has_feature(d, VIRTIO_NET_F_GUEST_ECN))
		off |= NET_OFF_TSO_ECN;
	if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_UFO))
		off |= NET_OFF_UFO;
	return off & n->be.offloads;
}

static int net_activate(struct virtio_dev *d)
{
	struct net *n = (struct net *)d;
	bool mq = virtio_has_feature(d, VIRTIO_NET_F_MQ);
	unsigned mtu = n->opts.mtu ? n->opts.mtu : n->be.mtu;
	bool host_gso = virtio_has_feature(d, VIRTIO_NET_F_HOST_TSO4) ||
	                virtio_has_feature(d, VIRTIO_NET_F_HOST_TSO6) ||
	                virtio_has_feature(d, VIRTIO_NET_F_HOST_UFO);
	bool guest_gso = virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO4) ||
	                 virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO6) ||
	                 virtio_has_feature(d, VIRTIO_NET_F_GUEST_UFO);
	bool mtu_neg = virtio_has_feature(d, VIRTIO_NET_F_MTU);

	n->ctrl_index = (uint16_t)(mq ? 2 * n->npairs : 2);
	n->mrg = virtio_has_feature(d, VIRTIO_NET_F_MRG_RXBUF);
	n->guest_csum = virtio_has_feature(d, VIRTIO_NET_F_GUEST_CSUM);
	n->ring_io = n->be.ops->ring_io;
	n->txl = (struct net_tx_limits){
	    .csum = virtio_has_feature(d, VIRTIO_NET_F_CSUM),
	    .tso4 = virtio_has_feature(d, VIRTIO_NET_F_HOST_TSO4),
	    .tso6 = virtio_has_feature(d, VIRTIO_NET_F_HOST_TSO6),
	    .ecn = virtio_has_feature(d, VIRTIO_NET_F_HOST_ECN),
	    .ufo = virtio_has_feature(d, VIRTIO_NET_F_HOST_UFO),
	    /* Without segmentation offload and with the MTU negotiated, a
	     * frame is at most the MTU plus an Ethernet and a VLAN header;
	     * otherwise the driver may raise its MTU up to 64 KiB. */
	    .max_frame = !host_gso && mtu_neg ? mtu + NET_ETH_HLEN + NET_VLAN_HLEN : NET_MAX_FRAME};
	n->rx_want = NET_HDR_LEN + (guest_gso ? NET_MAX_FRAME : mtu + NET_ETH_HLEN + NET_VLAN_HLEN);

	unsigned off = offloads_for(n);
	int r = n->be.ops->set_offload(&n->be, off);
	if (r < 0) {
		/* Harmless: the TAP then hands over plain, checksummed frames. */
		fprintf(stderr, "virtio-net: TUNSETOFFLOAD %#x: %s\n", off, strerror(-r));
		(void)n->be.ops->set_offload(&n->be, 0);
	}
	unsigned used_pairs = mq ? n->npairs : 1;
	for (unsigned i = 0; i < used_pairs; i++) {
		r = net_rx_start(n, i);
		if (r < 0)
			return r;
	}
	apply_pairs(n, 1); /* MQ starts with one pair until VQ_PAIRS_SET */
	return 0;
}

static void net_reset(struct virtio_dev *d)
{
	struct net *n = (struct net *)d;
	for (unsigned i = 0; i < n->npairs; i++)
		net_rx_stop(n, i);
	(void)n->be.ops->set_offload(&n->be, 0);
	n->promisc = n->allmulti = false;
}

static const struct virtio_device_ops net_ops = {
    .name = "virtio-net",
    .device_id = VIRTIO_ID_NET,
    .pci_class = 0x02, /* network controller, Ethernet */
    .pci_subclass = 0x00,
    .num_queues = 3, /* per device: 2 per pair + control (see net_create) */
    .queue_max_size = NET_QUEUE_SIZE,
    .features = 0, /* per device */
    .config_size = sizeof(struct virtio_net_config),
    .config_read = net_config_read,
    .config_write = net_config_write,
    .activate = net_activate,
    .queue_kick = net_kick,
    .reset = net_reset,
};

static void setup(struct net *n)
{
	const struct net_backend *b = &n->be;
	uint64_t f = (1ull << VIRTIO_NET_F_MTU) | (1ull << VIRTIO_NET_F_STATUS) |
	             (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_HOST_TSO4) |
	             (1ull << VIRTIO_NET_F_HOST_TSO6) | (1ull << VIRTIO_NET_F_HOST_ECN) |
	             (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_NET_F_CTRL_VQ) |
	             (1ull << VIRTIO_NET_F_CTRL_RX);
	if (b->host_ufo)
		f |= 1ull << VIRTIO_NET_F_HOST_UFO;
	if (b->offloads & NET_OFF_CSUM)
		f |= 1ull << VIRTIO_NET_F_GUEST_CSUM;
	if (b->offloads & NET_OFF_TSO4)
		f |= 1ull << VIRTIO_NET_F_GUEST_TSO4;
	if (b->offloads & NET_OFF_TSO6)
		f |= 1ull << VIRTIO_NET_F_GUEST_TSO6;
	if (b->offloads & NET_OFF_TSO_ECN)
		f |= 1ull << VIRTIO_NET_F_GUEST_ECN;
	if (b->offloads & NET_OFF_UFO)
		f |= 1ull << VIRTIO_NET_F_GUEST_UFO;
	if (n->opts.mac_set)
		f |= 1ull << VIRTIO_NET_F_MAC;
	if (n->npairs > 1)
		f |= 1ull << VIRTIO_NET_F_MQ;
	n->ops = net_ops;
	n->ops.num_queues = (uint16_t)(2 * n->npairs + 1);
	n->ops.features = f;
	n->vdev.ops = &n->ops;

	struct virtio_net_config *c = &n->cfg;
	memset(c, 0, sizeof(*c));
	memcpy(c->mac, n->opts.mac, sizeof(c->mac));
	c->status = htole16(VIRTIO_NET_S_LINK_UP);
	c->max_virtqueue_pairs = htole16((uint16_t)n->npairs);
	c->mtu = htole16((uint16_t)(n->opts.mtu ? n->opts.mtu : b->mtu));
}

/* What every way of creating the device shares, once opts and be are set. */
static void finish_create(struct net *n)
{
	if (n->be.mtu > NET_MAX_MTU)
		n->be.mtu = NET_MAX_MTU;
	n->npairs = n->opts.queues;
	setup(n);
}

static int net_create(const struct registry_ctx *ctx, const char *opts, void **state)
{
	char err[256];
	(void)ctx;
	struct net *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (unsigned i = 0; i < NET_MAX_QUEUES; i++)
		n->be.fd[i] = -1;
	int r = net_parse_opts(opts, &n->opts, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ringvm run: %s\n", err);
		free(n);
		return r;
	}
	struct tap_params p = {.name = n->opts.tap[0] ? n->opts.tap : NULL,
	                       .fd = n->opts.tap_fd,
	                       .queues = n->opts.queues,
	                       .mtu = n->opts.mtu};
	r = tap_open(&n->be, &p, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ringvm run: --net: %s\n", err);
		free(n);
		return r;
	}
	finish_create(n);
	*state = n;
	return 0;
}

struct net *net_create_on(const struct net_opts *o, const struct net_backend *be)
{
	struct net *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->opts = *o;
	n->be = *be;
	finish_create(n);
	return n;
}

static void net_destroy(void *state)
{
	struct net *n = state;
	if (!n)
		return;
	net_backend_close(&n->be);
	free(n);
}

static unsigned net_keep_fds(void *state, int *fds, unsigned max)
{
	struct net *n = state;
	unsigned k = 0;
	for (unsigned i = 0; i < n->be.nqueues && k < max; i++)
		if (n->be.fd[i] >= 0)
			fds[k++] = n->be.fd[i];
	return k;
}

/*
 * IPC_METRICS has no per-direction fields: RX (frames to the guest) is
 * reads/bytes_read, TX (from the guest) writes/bytes_written, errors are
 * the frames dropped both ways, other the control commands.
 */
static void net_metrics(void *state, struct ipc_metrics *out)
{
	struct net *n = state;
	const struct net_stats *s = &n->st;
	memset(out, 0, sizeof(*out));
	out->requests = s->tx_packets + s->rx_packets;
	out->reads = s->rx_packets;
	out->bytes_read = s->rx_bytes;
	out->writes = s->tx_packets;
	out->bytes_written = s->tx_bytes;
	out->errors = s->tx_drops + s->rx_drops + s->rx_bad_chains;
	out->other = s->ctrl_cmds;
	for (unsigned i = 0; i < n->ops.num_queues && i < VIRTIO_MAX_QUEUES; i++)
		out->notifications += n->vdev.queues[i].kicks;
}

/*
 * Beyond devproc's needs: the two TAP ioctls, with the request number
 * pinned (see net/README.md for why the descriptor is not). Frames move
 * as READV/WRITEV on the ring (readv/writev of the base allowlist only for
 * a retry after a full TAP); waits are POLL_ADD on the ring.
 */
static const struct jail_syscall_rule net_rules[] = {
    {.nr = __NR_ioctl, .n_conds = 1, .conds = {{.arg = 1, .op = JAIL_CMP_EQ, .value = TUNSETOFFLOAD}}},
    {.nr = __NR_ioctl, .n_conds = 1, .conds = {{.arg = 1, .op = JAIL_CMP_EQ, .value = TUNSETQUEUE}}},
};

static const uint8_t net_uring_ops[] = {IORING_OP_READV, IORING_OP_WRITEV};

const struct registry_entry net_entry = {
    .option = "net",
    .meta = "tap=NAME|tap-fd=FD[,OPTS]",
    .help = "virtio-net on a TAP (repeatable). tap=NAME opens the TAP (creating\n"
            "it if needed, which needs CAP_NET_ADMIN); tap-fd=FD uses an open TAP\n"
            "(IFF_TAP|IFF_NO_PI|IFF_VNET_HDR). OPTS: mac=XX:XX:XX:XX:XX:XX,\n"
            "queues=N (queue pairs, 1..4; N > 1 needs tap=), mtu=N (68..65535,\n"
            "also set on the TAP). The device process gets the TAP open and\n"
            "opens nothing.",
    .default_on = false,
    .ops = &net_ops,
    .create = net_create,
    .destroy = net_destroy,
    .keep_fds = net_keep_fds,
    .metrics = net_metrics,
    .rules = net_rules,
    .n_rules = sizeof(net_rules) / sizeof(net_rules[0]),
    .uring_ops = net_uring_ops,
    .n_uring_ops = sizeof(net_uring_ops),
};
