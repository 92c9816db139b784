/*
 * virtio-blk, the pure half: `--block` option parsing and the checks every
 * request passes before any I/O (see blk.h). Guest-controlled values are
 * copied out of guest RAM once and only the copies are checked and used.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtio/blk.h"
#include "devices/virtio/opts.h"
#include "devices/virtio/virtio_device.h"

static int bad(char *err, size_t errlen, const char *what, const char *val, size_t n)
{
	snprintf(err, errlen, "--block: %s '%.*s'", what, (int)n, val);
	return -EINVAL;
}

static int parse_uint(const char *v, size_t n, unsigned max, unsigned *out)
{
	unsigned long x = 0;
	if (!n || n > 9)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EINVAL;
		x = x * 10 + (unsigned)(v[i] - '0');
	}
	if (x > max)
		return -EINVAL;
	*out = (unsigned)x;
	return 0;
}

void blk_default_id(const char *path, char id[BLK_ID_BYTES + 1])
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	size_t start = n;
	while (start > 0 && path[start - 1] != '/')
		start--;
	size_t len = n - start;
	if (len > BLK_ID_BYTES)
		len = BLK_ID_BYTES;
	memcpy(id, path + start, len);
	id[len] = 0;
}

int blk_parse_opts(const char *opts, unsigned ncpus, struct blk_opts *o, char *err, size_t errlen)
{
	bool have_path = false;
	memset(o, 0, sizeof(*o));
	o->format = DISK_FORMAT_AUTO;
	o->discard = true;
	o->queues = ncpus < 1 ? 1 : ncpus > VIRTIO_MAX_QUEUES ? VIRTIO_MAX_QUEUES : ncpus;
	o->queue_size = BLK_DEFAULT_QUEUE_SIZE;
	if (!opts)
		opts = "";

	struct opt_item it;
	for (const char *cur = opts; opt_next(&cur, &it);) {
		const char *p = it.item, *v = it.val;
		size_t n = it.n, klen = it.klen, vlen = it.vlen;

		if (!n)
			return bad(err, errlen, "empty item in", opts, strlen(opts));
		if ((opt_eq(p, klen, "path") && v) ||
		    (!v && p == opts && !opt_eq(p, n, "ro") && !opt_eq(p, n, "direct"))) {
			if (!v) {
				v = p;
				vlen = n;
			}
			if (have_path)
				return bad(err, errlen, "path given twice:", v, vlen);
			if (!vlen || vlen >= sizeof(o->path))
				return bad(err, errlen, "bad path", v, vlen);
			memcpy(o->path, v, vlen);
			o->path[vlen] = 0;
			have_path = true;
		} else if (opt_eq(p, klen, "format") && v) {
			if (opt_eq(v, vlen, "raw"))
				o->format = DISK_FORMAT_RAW;
			else if (opt_eq(v, vlen, "qcow2"))
				o->format = DISK_FORMAT_QCOW2;
			else if (opt_eq(v, vlen, "auto"))
				o->format = DISK_FORMAT_AUTO;
			else
				return bad(err, errlen, "format must be raw, qcow2 or auto, not", v,
				           vlen);
		} else if (opt_eq(p, n, "ro") || (opt_eq(p, klen, "ro") && v)) {
			if (v && !opt_eq(v, vlen, "on") && !opt_eq(v, vlen, "true") &&
			    !opt_eq(v, vlen, "off") && !opt_eq(v, vlen, "false"))
				return bad(err, errlen, "ro takes no value or on/off, not", v,
				           vlen);
			o->read_only = !v || opt_eq(v, vlen, "on") || opt_eq(v, vlen, "true");
		} else if (opt_eq(p, n, "direct") || (opt_eq(p, klen, "direct") && v)) {
			if (v && !opt_eq(v, vlen, "on") && !opt_eq(v, vlen, "true") &&
			    !opt_eq(v, vlen, "off") && !opt_eq(v, vlen, "false"))
				return bad(err, errlen, "direct takes no value or on/off, not", v,
				           vlen);
			o->direct = !v || opt_eq(v, vlen, "on") || opt_eq(v, vlen, "true");
		} else if (opt_eq(p, klen, "id") && v) {
			if (!vlen || vlen > BLK_ID_BYTES)
				return bad(err, errlen, "id must be 1 to 20 bytes, not", v, vlen);
			for (size_t i = 0; i < vlen; i++)
				if (v[i] < 0x21 || v[i] > 0x7e)
					return bad(err, errlen,
					           "id must be printable ASCII without spaces:", v,
					           vlen);
			memcpy(o->id, v, vlen);
			o->id[vlen] = 0;
			o->id_set = true;
		} else if (opt_eq(p, klen, "queues") && v) {
			if (parse_uint(v, vlen, VIRTIO_MAX_QUEUES, &o->queues) < 0 || !o->queues)
				return bad(err, errlen, "queues must be 1..16, not", v, vlen);
		} else if (opt_eq(p, klen, "queue-size") && v) {
			unsigned qs;
			if (parse_uint(v, vlen, VIRTQ_MAX_SIZE, &qs) < 0 || qs < 2 ||
			    (qs & (qs - 1)))
				return bad(err, errlen,
				           "queue-size must be a power of two 2..256, not", v,
				           vlen);
			o->queue_size = qs;
		} else if (opt_eq(p, klen, "discard") && v) {
			if (opt_eq(v, vlen, "on"))
				o->discard = true;
			else if (opt_eq(v, vlen, "off"))
				o->discard = false;
			else
				return bad(err, errlen, "discard must be on or off, not", v, vlen);
		} else {
			return bad(err, errlen, "unknown option", p, n);
		}
	}
	if (!have_path) {
		snprintf(err, errlen, "--block: path=FILE is required");
		return -EINVAL;
	}
	if (!o->id_set)
		blk_default_id(o->path, o->id);
	return 0;
}

/* Sectors [sector, sector + count) inside the disk, without overflow. */
static bool in_range(const struct blk_geom *g, uint64_t sector, uint64_t count)
{
	return sector <= g->capacity && count <= g->capacity - sector;
}

static void check_dz(const struct blk_geom *g, struct virtq_reader *rd, uint32_t data,
                     struct blk_req_desc *r)
{
	bool wz = r->type == VIRTIO_BLK_T_WRITE_ZEROES;
	if (g->read_only)
		return; /* a write like any other: IOERR */
	if (!(wz ? g->write_zeroes : g->discard)) {
		r->status = VIRTIO_BLK_S_UNSUPP;
		return;
	}
	if (!data || data % BLK_SEG_LEN || data / BLK_SEG_LEN > BLK_MAX_SEG) {
		r->status = VIRTIO_BLK_S_IOERR;
		return;
	}
	r->nseg = data / BLK_SEG_LEN;
	for (unsigned i = 0; i < r->nseg; i++) {
		uint8_t raw[BLK_SEG_LEN];
		if (virtq_reader_read(rd, raw, sizeof(raw)) != sizeof(raw)) {
			r->status = VIRTIO_BLK_S_IOERR;
			return;
		}
		struct blk_dz_seg *s = &r->seg[i];
		uint64_t sector;
		uint32_t num, flags;
		memcpy(&sector, raw, 8);
		memcpy(&num, raw + 8, 4);
		memcpy(&flags, raw + 12, 4);
		s->sector = le64toh(sector);
		s->num_sectors = le32toh(num);
		s->flags = le32toh(flags);
		/* Discard has no flags; write-zeroes knows only UNMAP. */
		if (s->flags & ~(wz ? VIRTIO_BLK_WZ_F_UNMAP : 0u)) {
			r->status = VIRTIO_BLK_S_UNSUPP;
			return;
		}
		if (s->num_sectors > BLK_MAX_DZ_SECTORS ||
		    !in_range(g, s->sector, s->num_sectors)) {
			r->status = VIRTIO_BLK_S_IOERR;
			return;
		}
	}
	r->status = VIRTIO_BLK_S_OK;
}

void blk_req_check(const struct blk_geom *g, const struct virtq_chain *c, struct blk_req_desc *r)
{
	struct virtq_reader rd;
	uint8_t hdr[BLK_HDR_LEN];

	r->type = UINT32_MAX;
	r->status = VIRTIO_BLK_S_IOERR;
	r->no_status = false;
	r->off = r->len = 0;
	r->nseg = 0;
	if (c->write_len < 1) {
		r->no_status = true; /* nowhere to say what went wrong */
		return;
	}
	if (c->read_len < BLK_HDR_LEN)
		return;
	virtq_reader_init(&rd, c);
	if (virtq_reader_read(&rd, hdr, sizeof(hdr)) != sizeof(hdr))
		return;
	uint32_t type;
	uint64_t sector;
	memcpy(&type, hdr, 4);
	memcpy(&sector, hdr + 8, 8); /* hdr + 4 is the ioprio, ignored */
	r->type = le32toh(type);
	sector = le64toh(sector);
	uint32_t rdata = c->read_len - BLK_HDR_LEN; /* readable bytes after the header */
	uint32_t wdata = c->write_len - 1;          /* writable bytes before the status */

	switch (r->type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT: {
		bool out = r->type == VIRTIO_BLK_T_OUT;
		uint32_t len = out ? rdata : wdata;
		if (out && g->read_only)
			return;
		if (len % BLK_SECTOR || !in_range(g, sector, len / BLK_SECTOR))
			return;
		r->off = sector * BLK_SECTOR;
		r->len = len;
		break;
	}
	case VIRTIO_BLK_T_FLUSH:
		/* The spec gives FLUSH no data: a chain carrying some is refused. */
		if (rdata || wdata)
			return;
		break;
	case VIRTIO_BLK_T_GET_ID:
		if (wdata < BLK_ID_BYTES)
			return;
		r->len = wdata;
		break;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		check_dz(g, &rd, rdata, r);
		return;
	default:
		r->status = VIRTIO_BLK_S_UNSUPP;
		return;
	}
	r->status = VIRTIO_BLK_S_OK;
}
