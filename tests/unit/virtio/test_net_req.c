/*
 * virtio-net's pure half (devices/virtio/net_req.c), table-driven: `--net`
 * options, every TX header the device must refuse (hostile case 19) and
 * control commands.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "devices/virtio/net.h"

Test(virtio_net_req, options_good)
{
	struct net_opts o;
	char err[256];
	cr_assert_eq(net_parse_opts("tap=tap0", &o, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(o.tap, "tap0");
	cr_assert_eq(o.tap_fd, -1);
	cr_assert_eq(o.queues, 1);
	cr_assert_eq(o.mtu, 0);
	cr_assert(!o.mac_set);
	cr_assert_eq(net_parse_opts("tap-fd=7,mac=52:54:00:Ab:cd:EF,mtu=9000", &o, err, sizeof(err)),
	             0, "%s", err);
	cr_assert_eq(o.tap_fd, 7);
	cr_assert(o.mac_set);
	static const uint8_t mac[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
	cr_assert_arr_eq(o.mac, mac, 6);
	cr_assert_eq(o.mtu, 9000);
	cr_assert_eq(net_parse_opts("queues=4,tap=t", &o, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(o.queues, 4);
}

Test(virtio_net_req, options_bad)
{
	static const struct {
		const char *opts, *msg;
	} cases[] = {
	    {"", "needs tap=NAME or tap-fd=FD"},
	    {"mac=52:54:00:00:00:01", "needs tap"},
	    {"tap", "KEY=VALUE"},
	    {"tap=", "interface name"},
	    {"tap=0123456789abcdef", "interface name"},
	    {"tap=a/b", "interface name"},
	    {"tap=a,tap=b", "only one"},
	    {"tap=a,tap-fd=5", "only one"},
	    {"tap-fd=x", "descriptor"},
	    {"tap-fd=2", "descriptor"},
	    {"tap-fd=-3", "descriptor"},
	    {"tap-fd=5,queues=2", "queues=N needs tap=NAME"},
	    {"tap=a,mac=52:54:00:00:00", "mac must be"},
	    {"tap=a,mac=52-54-00-00-00-01", "mac must be"},
	    {"tap=a,mac=zz:54:00:00:00:01", "mac must be"},
	    {"tap=a,mac=01:00:5e:00:00:01", "unicast"},
	    {"tap=a,queues=0", "queues must be"},
	    {"tap=a,queues=5", "queues must be"},
	    {"tap=a,queues=", "queues must be"},
	    {"tap=a,mtu=67", "mtu must be"},
	    {"tap=a,mtu=65536", "mtu must be"},
	    {"tap=a,mtu=99999999999", "mtu must be"},
	    {"tap=a,,mtu=1500", "empty item"},
	    {"tap=a,vq-pairs=2", "unknown option"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct net_opts o;
		char err[256] = "";
		cr_assert_eq(net_parse_opts(cases[i].opts, &o, err, sizeof(err)), -EINVAL, "'%s'",
		             cases[i].opts);
		cr_assert(strstr(err, cases[i].msg), "'%s': %s", cases[i].opts, err);
		cr_assert(!strchr(err, '\n'), "one line");
	}
}

static const struct net_tx_limits all = {
    .csum = true, .tso4 = true, .tso6 = true, .ecn = true, .ufo = true, .max_frame = NET_MAX_FRAME};
static const struct net_tx_limits none = {.max_frame = 1518};

Test(virtio_net_req, tx_check_table)
{
	static const struct {
		struct virtio_net_hdr h;
		uint32_t len;
		const struct net_tx_limits *l;
		enum net_tx_verdict want;
	} cases[] = {
	    /* plain frames */
	    {{0}, 60, &none, NET_TX_OK},
	    {{0}, 14, &none, NET_TX_OK},
	    {{0}, 13, &none, NET_TX_SHORT},
	    {{0}, 0, &all, NET_TX_SHORT},
	    {{0}, 1518, &none, NET_TX_OK},
	    {{0}, 1519, &none, NET_TX_LONG},
	    {{0}, NET_MAX_FRAME + 1, &all, NET_TX_LONG},
	    /* flags */
	    {{.flags = VIRTIO_NET_HDR_F_DATA_VALID}, 60, &all, NET_TX_FLAGS},
	    {{.flags = 0x80}, 60, &all, NET_TX_FLAGS},
	    {{.flags = 1, .csum_start = 34, .csum_offset = 16}, 60, &none, NET_TX_FLAGS},
	    /* checksum offsets */
	    {{.flags = 1, .csum_start = 34, .csum_offset = 16}, 60, &all, NET_TX_OK},
	    {{.flags = 1, .csum_start = 34, .csum_offset = 24}, 60, &all, NET_TX_OK},
	    {{.flags = 1, .csum_start = 34, .csum_offset = 25}, 60, &all, NET_TX_CSUM_RANGE},
	    {{.flags = 1, .csum_start = 60, .csum_offset = 0}, 60, &all, NET_TX_CSUM_RANGE},
	    {{.flags = 1, .csum_start = 0xffff, .csum_offset = 0xffff}, 60, &all, NET_TX_CSUM_RANGE},
	    /* GSO types */
	    {{.gso_type = 2}, 60, &all, NET_TX_GSO_TYPE},
	    {{.gso_type = 5}, 60, &all, NET_TX_GSO_TYPE},
	    {{.gso_type = 0x7f}, 60, &all, NET_TX_GSO_TYPE},
	    {{.gso_type = VIRTIO_NET_HDR_GSO_ECN}, 60, &all, NET_TX_GSO_TYPE},
	    {{.flags = 1, .gso_type = 1, .gso_size = 1448, .hdr_len = 54, .csum_start = 34,
	      .csum_offset = 16}, 3000, &all, NET_TX_OK},
	    {{.flags = 1, .gso_type = 1, .gso_size = 1448, .hdr_len = 54, .csum_start = 34,
	      .csum_offset = 16}, 1000, &none, NET_TX_FLAGS},
	    {{.flags = 1, .gso_type = 4, .gso_size = 1440, .hdr_len = 74, .csum_start = 54,
	      .csum_offset = 16}, 3000, &all, NET_TX_OK},
	    {{.flags = 1, .gso_type = 3, .gso_size = 1472, .hdr_len = 42, .csum_start = 34,
	      .csum_offset = 6}, 3000, &all, NET_TX_OK},
	    {{.flags = 1, .gso_type = 0x81, .gso_size = 1448, .hdr_len = 54, .csum_start = 34,
	      .csum_offset = 16}, 3000, &all, NET_TX_OK},
	    /* GSO fields */
	    {{.flags = 1, .gso_type = 1, .gso_size = 0, .hdr_len = 54, .csum_start = 34,
	      .csum_offset = 16}, 3000, &all, NET_TX_GSO_FIELDS},
	    {{.flags = 0, .gso_type = 1, .gso_size = 1448, .hdr_len = 54}, 3000, &all,
	     NET_TX_GSO_FIELDS},
	    {{.flags = 1, .gso_type = 1, .gso_size = 1448, .hdr_len = 3001, .csum_start = 34,
	      .csum_offset = 16}, 3000, &all, NET_TX_GSO_FIELDS},
	};
	struct net_tx_limits tso4_only = all;
	tso4_only.tso6 = tso4_only.ufo = tso4_only.ecn = false;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(net_tx_check(&cases[i].h, cases[i].len, cases[i].l), cases[i].want,
		             "case %zu", i);
	struct virtio_net_hdr h6 = {.flags = 1, .gso_type = 4, .gso_size = 1440, .hdr_len = 74,
	                            .csum_start = 54, .csum_offset = 16};
	cr_assert_eq(net_tx_check(&h6, 3000, &tso4_only), NET_TX_GSO_TYPE, "TSO6 not negotiated");
	h6.gso_type = 3;
	cr_assert_eq(net_tx_check(&h6, 3000, &tso4_only), NET_TX_GSO_TYPE, "UFO not negotiated");
	h6.gso_type = 0x81;
	cr_assert_eq(net_tx_check(&h6, 3000, &tso4_only), NET_TX_GSO_TYPE, "ECN not negotiated");
}

Test(virtio_net_req, hdr_byte_order)
{
	struct virtio_net_hdr h = {.flags = 1, .gso_type = 1, .hdr_len = 0x0102, .gso_size = 0x0304,
	                           .csum_start = 0x0506, .csum_offset = 0x0708, .num_buffers = 0x090a};
	uint8_t raw[12];
	net_hdr_to_le(&h);
	memcpy(raw, &h, 12);
	static const uint8_t want[12] = {1, 1, 2, 1, 4, 3, 6, 5, 8, 7, 0x0a, 9};
	cr_assert_arr_eq(raw, want, 12);
	net_hdr_from_le(&h);
	cr_assert_eq(h.csum_offset, 0x0708);
}

Test(virtio_net_req, ctrl_table)
{
	struct net_ctrl_caps caps = {.rx = true, .mq = true, .max_pairs = 2};
	struct net_ctrl_caps nocaps = {.max_pairs = 1};
	static const uint8_t mac_ok[] = {1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 1, 2, 0, 0, 0,
	                                 1, 0, 0x5e, 0, 0, 1, 1, 0, 0x5e, 0, 0, 2};
	static const struct {
		uint8_t buf[40];
		size_t len;
		bool with_caps;
		uint8_t ack;
		uint16_t pairs;
		bool on;
	} cases[] = {
	    {{0, 0, 1}, 3, true, VIRTIO_NET_OK, 0, true},      /* promisc on */
	    {{0, 1, 0}, 3, true, VIRTIO_NET_OK, 0, false},     /* allmulti off */
	    {{0, 0, 1}, 3, false, VIRTIO_NET_ERR, 0, false},   /* CTRL_RX not negotiated */
	    {{0, 0, 2}, 3, true, VIRTIO_NET_ERR, 0, false},    /* not a boolean */
	    {{0, 0}, 2, true, VIRTIO_NET_ERR, 0, false},       /* no data */
	    {{0, 0, 1, 1}, 4, true, VIRTIO_NET_ERR, 0, false}, /* trailing byte */
	    {{0, 2, 1}, 3, true, VIRTIO_NET_ERR, 0, false},    /* ALLUNI: no CTRL_RX_EXTRA */
	    {{4, 0, 2, 0}, 4, true, VIRTIO_NET_OK, 2, false},
	    {{4, 0, 1, 0}, 4, true, VIRTIO_NET_OK, 1, false},
	    {{4, 0, 3, 0}, 4, true, VIRTIO_NET_ERR, 0, false}, /* above max */
	    {{4, 0, 0, 0}, 4, true, VIRTIO_NET_ERR, 0, false}, /* zero pairs */
	    {{4, 0, 2, 0}, 4, false, VIRTIO_NET_ERR, 0, false},
	    {{4, 1, 2, 0}, 4, true, VIRTIO_NET_ERR, 0, false}, /* RSS not offered */
	    {{4, 0, 2}, 3, true, VIRTIO_NET_ERR, 0, false},
	    {{2, 0, 0, 0}, 4, true, VIRTIO_NET_ERR, 0, false}, /* VLAN not offered */
	    {{9, 9}, 2, true, VIRTIO_NET_ERR, 0, false},
	    {{0}, 1, true, VIRTIO_NET_ERR, 0, false},
	    {{0}, 0, true, VIRTIO_NET_ERR, 0, false},
	    {{1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 10, true, VIRTIO_NET_OK, 0, false}, /* empty tables */
	    {{1, 0, 0, 0, 0, 0, 0, 0, 0}, 9, true, VIRTIO_NET_ERR, 0, false},
	    {{1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, 10, true, VIRTIO_NET_ERR, 0, false},
	    {{1, 0, 65, 0, 0, 0}, 6, true, VIRTIO_NET_ERR, 0, false},
	    {{1, 1, 0, 0, 0, 0, 0, 1}, 8, true, VIRTIO_NET_ERR, 0, false}, /* ADDR_SET not offered */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct net_ctrl_cmd c;
		net_ctrl_parse(cases[i].buf, cases[i].len, cases[i].with_caps ? &caps : &nocaps, &c);
		cr_assert_eq(c.ack, cases[i].ack, "case %zu", i);
		cr_assert_eq(c.pairs, cases[i].pairs, "case %zu", i);
		cr_assert_eq(c.on, cases[i].on, "case %zu", i);
	}
	struct net_ctrl_cmd c;
	net_ctrl_parse(mac_ok, sizeof(mac_ok), &caps, &c);
	cr_assert_eq(c.ack, VIRTIO_NET_OK);
	net_ctrl_parse(mac_ok, sizeof(mac_ok) - 1, &caps, &c);
	cr_assert_eq(c.ack, VIRTIO_NET_ERR);
}
