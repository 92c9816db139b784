/*
 * The device table: one line per device, sorted by option (a test checks the
 * order), looked up by binary search. No constructor tricks: what ringvm can
 * run is exactly what is listed here.
 */
#include <string.h>

#include "devices/virtio/registry.h"

static const struct registry_entry *const table[] = {
    &blk_entry,
    &net_entry,
    &rng_entry,
    &vsock_entry,
};

#define TABLE_LEN (sizeof(table) / sizeof(table[0]))

const struct registry_entry *registry_find(const char *option)
{
	size_t lo = 0, hi = TABLE_LEN;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(option, table[mid]->option);
		if (c == 0)
			return table[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

const struct registry_entry *registry_at(size_t i)
{
	return i < TABLE_LEN ? table[i] : NULL;
}
