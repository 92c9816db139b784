/*
 * The comma-separated KEY=VALUE lists of the device options (--block,
 * --net, --vsock): one tokenizer, so every device splits them alike.
 */
#ifndef RINGVM_DEVICES_VIRTIO_OPTS_H
#define RINGVM_DEVICES_VIRTIO_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct opt_item {
	const char *item; /* the item, n bytes (not terminated) */
	size_t n;
	size_t klen;     /* its key: the bytes before '=' (all n without one) */
	const char *val; /* after '=', vlen bytes; NULL without '=' */
	size_t vlen;
};

/* The next item of the list at *cur, advancing *cur; false at the end. An
 * empty item (",,") comes back with n == 0; a trailing comma ends the list. */
static inline bool opt_next(const char **cur, struct opt_item *it)
{
	const char *p = *cur, *end;
	if (!*p)
		return false;
	end = strchr(p, ',');
	if (!end)
		end = p + strlen(p);
	const char *eqs = memchr(p, '=', (size_t)(end - p));
	it->item = p;
	it->n = (size_t)(end - p);
	it->klen = eqs ? (size_t)(eqs - p) : it->n;
	it->val = eqs ? eqs + 1 : NULL;
	it->vlen = eqs ? (size_t)(end - it->val) : 0;
	*cur = *end ? end + 1 : end;
	return true;
}

/* Whether the n bytes at s are exactly lit. */
static inline bool opt_eq(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

#endif
