/*
 * PIO/MMIO bus dispatch. Readers (vCPU threads) load the current table with
 * acquire ordering and binary-search it; writers copy, modify, sort and
 * publish a new table with release ordering, retiring the old one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/bus.h"
#include "core/log.h"

int bus_init(struct bus *bus, const char *name)
{
	memset(bus, 0, sizeof(*bus));
	bus->name = name;
	struct bus_table *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	int r = pthread_mutex_init(&bus->update_lock, NULL);
	if (r) {
		free(t);
		return -r;
	}
	atomic_store_explicit(&bus->table, t, memory_order_release);
	return 0;
}

static int cmp_range(const void *a, const void *b)
{
	const struct bus_range *x = a, *y = b;
	return x->base < y->base ? -1 : x->base > y->base;
}

static int overlaps(const struct bus_range *a, uint64_t base, uint64_t len)
{
	/* Both ranges are known not to wrap. */
	return base < a->base + a->len && a->base < base + len;
}

/* Publish a sorted copy of ranges[0..n); the caller holds update_lock. */
static int publish(struct bus *bus, const struct bus_range *ranges, size_t n)
{
	struct bus_table *old = atomic_load_explicit(&bus->table, memory_order_relaxed);
	struct bus_table *t = malloc(sizeof(*t) + n * sizeof(t->ranges[0]));
	if (!t)
		return -ENOMEM;
	t->n = n;
	if (n)
		memcpy(t->ranges, ranges, n * sizeof(ranges[0]));
	qsort(t->ranges, n, sizeof(t->ranges[0]), cmp_range);
	t->retired = old;
	atomic_store_explicit(&bus->table, t, memory_order_release);
	return 0;
}

int bus_add(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops, void *opaque)
{
	if (len == 0 || base + len < base || !ops)
		return -EINVAL;
	pthread_mutex_lock(&bus->update_lock);
	struct bus_table *cur = atomic_load_explicit(&bus->table, memory_order_relaxed);
	int r = -EEXIST;
	for (size_t i = 0; i < cur->n; i++)
		if (overlaps(&cur->ranges[i], base, len))
			goto out_unlock;
	struct bus_range *tmp = malloc((cur->n + 1) * sizeof(*tmp));
	r = -ENOMEM;
	if (!tmp)
		goto out_unlock;
	if (cur->n)
		memcpy(tmp, cur->ranges, cur->n * sizeof(*tmp));
	tmp[cur->n] = (struct bus_range){.base = base, .len = len, .ops = ops, .opaque = opaque};
	r = publish(bus, tmp, cur->n + 1);
	free(tmp);
out_unlock:
	pthread_mutex_unlock(&bus->update_lock);
	return r;
}

static ssize_t find_exact(const struct bus_table *t, uint64_t base)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->ranges[i].base == base)
			return (ssize_t)i;
	return -1;
}

int bus_remove(struct bus *bus, uint64_t base)
{
	pthread_mutex_lock(&bus->update_lock);
	struct bus_table *cur = atomic_load_explicit(&bus->table, memory_order_relaxed);
	ssize_t idx = find_exact(cur, base);
	int r = -ENOENT;
	if (idx < 0)
		goto out_unlock;
	struct bus_range *tmp = malloc(cur->n * sizeof(*tmp));
	r = -ENOMEM;
	if (!tmp)
		goto out_unlock;
	size_t k = 0;
	for (size_t i = 0; i < cur->n; i++)
		if ((ssize_t)i != idx)
			tmp[k++] = cur->ranges[i];
	r = publish(bus, tmp, k);
	free(tmp);
out_unlock:
	pthread_mutex_unlock(&bus->update_lock);
	return r;
}

int bus_move(struct bus *bus, uint64_t old_base, uint64_t new_base)
{
	pthread_mutex_lock(&bus->update_lock);
	struct bus_table *cur = atomic_load_explicit(&bus->table, memory_order_relaxed);
	ssize_t idx = find_exact(cur, old_base);
	int r = -ENOENT;
	if (idx < 0)
		goto out_unlock;
	uint64_t len = cur->ranges[idx].len;
	r = -EINVAL;
	if (new_base + len < new_base)
		goto out_unlock;
	r = -EEXIST;
	for (size_t i = 0; i < cur->n; i++)
		if ((ssize_t)i != idx && overlaps(&cur->ranges[i], new_base, len))
			goto out_unlock;
	struct bus_range *tmp = malloc(cur->n * sizeof(*tmp));
	r = -ENOMEM;
	if (!tmp)
		goto out_unlock;
	memcpy(tmp, cur->ranges, cur->n * sizeof(*tmp));
	tmp[idx].base = new_base;
	r = publish(bus, tmp, cur->n);
	free(tmp);
out_unlock:
	pthread_mutex_unlock(&bus->update_lock);
	return r;
}

const struct bus_range *bus_lookup(const struct bus *bus, uint64_t addr)
{
	const struct bus_table *t = atomic_load_explicit(&bus->table, memory_order_acquire);
	size_t lo = 0, hi = t->n;
	/* Find the last range whose base is <= addr. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->ranges[mid].base <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	const struct bus_range *r = &t->ranges[lo - 1];
	return addr - r->base < r->len ? r : NULL;
}

void bus_read(struct bus *bus, uint64_t addr, uint8_t *data, unsigned len)
{
	const struct bus_range *r = bus_lookup(bus, addr);
	if (r && r->ops->read) {
		r->ops->read(r->opaque, addr - r->base, data, len);
		return;
	}
	memset(data, 0, len);
	if (!r) {
		atomic_fetch_add_explicit(&bus->unclaimed_reads, 1, memory_order_relaxed);
		log_debug("%s: unclaimed read of %u bytes at 0x%llx", bus->name, len,
			  (unsigned long long)addr);
	}
}

void bus_write(struct bus *bus, uint64_t addr, const uint8_t *data, unsigned len)
{
	const struct bus_range *r = bus_lookup(bus, addr);
	if (r && r->ops->write) {
		r->ops->write(r->opaque, addr - r->base, data, len);
		return;
	}
	if (!r) {
		atomic_fetch_add_explicit(&bus->unclaimed_writes, 1, memory_order_relaxed);
		log_debug("%s: unclaimed write of %u bytes at 0x%llx", bus->name, len,
			  (unsigned long long)addr);
	}
}

void bus_destroy(struct bus *bus)
{
	struct bus_table *t = atomic_load_explicit(&bus->table, memory_order_relaxed);
	while (t) {
		struct bus_table *next = t->retired;
		free(t);
		t = next;
	}
	atomic_store_explicit(&bus->table, NULL, memory_order_relaxed);
	pthread_mutex_destroy(&bus->update_lock);
}
