/*
 * virtio-blk (virtio 1.2 §5.2): the wire format, the `--block` option
 * parser and the request checker, shared by the device (blk.c) and its
 * tests. Everything here is pure: no I/O, no executor, so every malformed
 * request and option can be checked from a table.
 */
#ifndef RINGVM_DEVICES_VIRTIO_BLK_H
#define RINGVM_DEVICES_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/virtio/virtq.h"
#include "disk/disk.h"

/* Feature bits (§5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status values (§5.2.6). */
#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK           0
#define VIRTIO_BLK_S_IOERR        1
#define VIRTIO_BLK_S_UNSUPP       2
#define VIRTIO_BLK_WZ_F_UNMAP     1u

#define BLK_SECTOR      512u
#define BLK_HDR_LEN     16u
#define BLK_ID_BYTES    20u
#define BLK_SEG_LEN     16u /* one discard / write-zeroes segment */
#define BLK_MAX_SEG     32u /* max_discard_seg = max_write_zeroes_seg */
#define BLK_MAX_DZ_SECTORS (1u << 22) /* 2 GiB per discard / write-zeroes segment */
#define BLK_SIZE_MAX    (1u << 20)    /* size_max: one segment at most 1 MiB */
#define BLK_DEFAULT_QUEUE_SIZE 256

/* Device configuration layout (§5.2.4), little-endian, up to the secure-erase fields. */
struct virtio_blk_config {
	uint64_t capacity; /* in 512-byte sectors */
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t cylinders;
	uint8_t heads, sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp, alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback, unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors;
	uint32_t max_discard_seg;
	uint32_t discard_sector_alignment;
	uint32_t max_write_zeroes_sectors;
	uint32_t max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
	uint8_t unused1[3];
	uint32_t max_secure_erase_sectors;
	uint32_t max_secure_erase_seg;
	uint32_t secure_erase_sector_alignment;
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_blk_config) == 72, "virtio_blk_config layout");

/* What `--block` asked for (blk_parse_opts). */
struct blk_opts {
	char path[4096];
	enum disk_format format; /* auto unless format= */
	bool read_only, direct, discard;
	bool id_set;
	char id[BLK_ID_BYTES + 1]; /* NUL-terminated; default derived from the path */
	unsigned queues;           /* 1..VIRTIO_MAX_QUEUES; default min(vCPUs, max) */
	unsigned queue_size;       /* power of two 2..VIRTQ_MAX_SIZE; default 256 */
};

/*
 * Parse `path=FILE[,format=raw|qcow2|auto][,ro][,direct][,id=STR][,queues=N]
 * [,queue-size=N][,discard=on|off]` (a first item without '=' is the path).
 * ncpus gives the default queue count. 0, or -EINVAL with one line in err.
 */
int blk_parse_opts(const char *opts, unsigned ncpus, struct blk_opts *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The default serial: the last path component, truncated to BLK_ID_BYTES. */
void blk_default_id(const char *path, char id[BLK_ID_BYTES + 1]);

/* What the checker needs to know about the disk (from the config the device offers). */
struct blk_geom {
	uint64_t capacity; /* sectors */
	bool read_only;
	bool discard;      /* DISCARD offered */
	bool write_zeroes; /* WRITE_ZEROES offered */
	bool may_unmap;    /* write_zeroes_may_unmap */
};

/* One discard / write-zeroes segment as the guest wrote it (copied, host order). */
struct blk_dz_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

/* A checked request: what to do, or the status to complete it with at once. */
struct blk_req_desc {
	uint32_t type;
	uint8_t status;  /* VIRTIO_BLK_S_OK: do the I/O; otherwise complete with this */
	bool no_status;  /* the chain has no writable byte: give it back with length 0 */
	uint64_t off;    /* IN/OUT: byte offset on the disk */
	uint64_t len;    /* IN/OUT: data bytes; GET_ID: the buffer's bytes */
	unsigned nseg;   /* DISCARD/WRITE_ZEROES */
	struct blk_dz_seg seg[BLK_MAX_SEG];
};

/*
 * Check chain c (already validated by virtq_pop) as a virtio-blk request
 * before any I/O: header readable and ≥ 16 bytes, status byte writable
 * (the chain's last byte), data a multiple of 512 and inside the disk
 * without overflow, no writes to a read-only disk, FLUSH without data,
 * GET_ID with ≥ 20 bytes, discard/write-zeroes segments whole, at most
 * BLK_MAX_SEG of them, known flags and inside the disk. Every
 * guest-controlled value is copied once (header, segments) and only the
 * copy is checked and used. Fills *r; r->status says the outcome:
 * IOERR for bad requests, UNSUPP for unknown types or flags.
 */
void blk_req_check(const struct blk_geom *g, const struct virtq_chain *c, struct blk_req_desc *r);

#endif
