/*
 * Port 0x80 POST-code sink. Its whole state is two atomics, so unlike the
 * other legacy devices it needs no mutex: Linux hits this port for every
 * "_p" I/O delay, and a lock would only add contention between vCPUs.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "devices/legacy/port80.h"

struct port80 {
	atomic_uchar last;
	atomic_uint_least64_t writes;
};

static void port80_read(void *opaque, uint64_t offset, uint8_t *data, unsigned len)
{
	struct port80 *p = opaque;
	(void)offset;
	uint8_t v = atomic_load_explicit(&p->last, memory_order_relaxed);
	for (unsigned i = 0; i < len; i++)
		data[i] = v;
}

static void port80_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned len)
{
	struct port80 *p = opaque;
	(void)offset;
	(void)len;
	atomic_store_explicit(&p->last, data[0], memory_order_relaxed);
	atomic_fetch_add_explicit(&p->writes, 1, memory_order_relaxed);
}

const struct bus_ops port80_bus_ops = {
    .name = "port80",
    .read = port80_read,
    .write = port80_write,
};

int port80_create(struct port80 **out)
{
	struct port80 *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	atomic_init(&p->last, 0);
	atomic_init(&p->writes, 0);
	*out = p;
	return 0;
}

uint8_t port80_last(const struct port80 *p)
{
	return atomic_load_explicit(&p->last, memory_order_relaxed);
}

uint64_t port80_writes(const struct port80 *p)
{
	return atomic_load_explicit(&p->writes, memory_order_relaxed);
}

void port80_destroy(struct port80 *p)
{
	free(p);
}
