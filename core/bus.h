/*
 * The PIO and MMIO buses: a sorted array of non-overlapping ranges searched by
 * binary search on the base address (as crosvm does). Every vCPU reads the
 * current table without locks; a change (a BAR moved by the guest) builds a
 * new table and publishes it with one atomic store. Old tables are retired,
 * not freed, until bus_destroy(), so a vCPU still walking one is never hurt.
 * Unclaimed reads return zeros, unclaimed writes are dropped; both are counted.
 */
#ifndef RINGVM_CORE_BUS_H
#define RINGVM_CORE_BUS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

/*
 * Access callbacks. offset is relative to the range base; len is 1..8 and
 * data is the little-endian value (read: fill all len bytes). Called
 * concurrently from any vCPU thread: a device serialises itself.
 */
typedef void bus_read_fn(void *opaque, uint64_t offset, uint8_t *data, unsigned len);
typedef void bus_write_fn(void *opaque, uint64_t offset, const uint8_t *data, unsigned len);

struct bus_ops {
	const char *name;
	bus_read_fn *read;   /* NULL: reads as zeros */
	bus_write_fn *write; /* NULL: writes ignored */
};

struct bus_range {
	uint64_t base;
	uint64_t len; /* > 0 */
	const struct bus_ops *ops;
	void *opaque;
};

struct bus_table {
	size_t n;
	struct bus_table *retired; /* older tables kept alive until bus_destroy */
	struct bus_range ranges[];
};

struct bus {
	const char *name; /* "pio" or "mmio", for messages */
	_Atomic(struct bus_table *) table;
	pthread_mutex_t update_lock; /* serialises writers only */
	atomic_ulong unclaimed_reads, unclaimed_writes;
};

/* Initialise an empty bus. Returns 0 or -errno. */
int bus_init(struct bus *bus, const char *name) __attribute__((warn_unused_result));

/*
 * Add a range. Fails with -EINVAL for len 0 or base+len wrapping, -EEXIST when
 * it overlaps a range already present. Publishes a new table.
 */
int bus_add(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops, void *opaque)
	__attribute__((warn_unused_result));

/* Remove the range that starts exactly at base. -ENOENT if none. */
int bus_remove(struct bus *bus, uint64_t base) __attribute__((warn_unused_result));

/* Move the range starting at old_base to new_base (same length). -ENOENT / -EEXIST. */
int bus_move(struct bus *bus, uint64_t old_base, uint64_t new_base)
	__attribute__((warn_unused_result));

/*
 * The range containing addr, or NULL. Only the access's first byte decides
 * (an access straddling two ranges goes to the one holding its base). The
 * pointer stays valid until bus_destroy().
 */
const struct bus_range *bus_lookup(const struct bus *bus, uint64_t addr);

/* Dispatch an access; unclaimed reads fill data with zeros. */
void bus_read(struct bus *bus, uint64_t addr, uint8_t *data, unsigned len);
void bus_write(struct bus *bus, uint64_t addr, const uint8_t *data, unsigned len);

/* Free every table. No vCPU may be running. */
void bus_destroy(struct bus *bus);

#endif
