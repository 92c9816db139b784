/*
 * qcow2 table caches and locks: the write-through LRU caches of L2 tables
 * and refcount blocks (hash by host offset, loads shared by every task that
 * wants the table), per-key locks held by one task, and the check that a
 * data write never lands on metadata we know of.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "disk/qcow2_int.h"

int qc_cache_init(struct qc_cache *c, unsigned cap, uint64_t cs)
{
	memset(c, 0, sizeof(*c));
	if (cap < 4)
		cap = 4;
	unsigned hs = 1;
	while (hs < 2 * cap)
		hs <<= 1;
	c->ents = calloc(cap, sizeof(*c->ents));
	c->hash = calloc(hs, sizeof(*c->hash));
	if (!c->ents || !c->hash)
		goto nomem;
	c->cap = cap;
	c->hmask = hs - 1;
	for (unsigned i = 0; i < cap; i++) {
		c->ents[i].buf = qc_alloc_buf(cs);
		if (!c->ents[i].buf)
			goto nomem;
		exec_waitq_init(&c->ents[i].loaded);
	}
	exec_waitq_init(&c->room);
	return 0;
nomem:
	qc_cache_free(c);
	return -ENOMEM;
}

void qc_cache_free(struct qc_cache *c)
{
	if (c->ents)
		for (unsigned i = 0; i < c->cap; i++)
			free(c->ents[i].buf);
	free(c->ents);
	free(c->hash);
	memset(c, 0, sizeof(*c));
}

static unsigned hslot(const struct qc_cache *c, uint64_t off)
{
	return (unsigned)((off >> 9) * 0x9e3779b97f4a7c15ULL >> 40) & c->hmask;
}

static struct qc_ent *hfind(const struct qc_cache *c, uint64_t off)
{
	for (struct qc_ent *e = c->hash[hslot(c, off)]; e; e = e->hnext)
		if (e->off == off)
			return e;
	return NULL;
}

static void hremove(struct qc_cache *c, struct qc_ent *e)
{
	struct qc_ent **pp = &c->hash[hslot(c, e->off)];
	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	e->hnext = NULL;
}

static void lru_unlink(struct qc_cache *c, struct qc_ent *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else if (c->head == e)
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else if (c->tail == e)
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_front(struct qc_cache *c, struct qc_ent *e)
{
	lru_unlink(c, e);
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

bool qc_cache_has(const struct qc_cache *c, uint64_t off)
{
	return c->cap && hfind(c, off) != NULL;
}

void qc_cache_forget(struct qc_cache *c, uint64_t off)
{
	struct qc_ent *e = hfind(c, off);
	if (e && !e->pins && !e->loading) {
		hremove(c, e);
		e->off = 0;
	}
}

int qc_cache_get(struct qcow2 *q, struct exec *ex, struct qc_cache *c, uint64_t off, bool load,
                 struct qc_ent **out)
{
	struct qc_ent *e;
	int r;
again:
	e = hfind(c, off);
	if (e) {
		c->st.hits++;
		e->pins++;
		lru_front(c, e);
		while (e->loading) {
			r = exec_waitq_wait(ex, &e->loaded);
			if (r < 0) {
				e->pins--;
				return r;
			}
		}
		if (e->err || e->off != off) {
			r = e->err ? e->err : -EIO;
			qc_cache_put(ex, c, e);
			return r;
		}
		if (!load)
			memset(e->buf, 0, q->cs);
		*out = e;
		return 0;
	}
	/* A free slot, else the least recently used unpinned one. */
	if (c->n < c->cap) {
		e = &c->ents[c->n++];
	} else {
		for (e = c->tail; e && (e->pins || e->loading); e = e->prev)
			;
		if (!e) {
			r = exec_waitq_wait(ex, &c->room);
			if (r < 0)
				return r;
			goto again;
		}
		if (e->off) {
			hremove(c, e);
			c->st.evictions++;
		}
	}
	c->st.misses++;
	e->off = off;
	e->err = 0;
	e->pins = 1;
	e->hnext = c->hash[hslot(c, off)];
	c->hash[hslot(c, off)] = e;
	lru_front(c, e);
	if (!load) {
		memset(e->buf, 0, q->cs);
		*out = e;
		return 0;
	}
	e->loading = true;
	r = (off + q->cs > q->file_end) ? -EIO : qc_pread(q, ex, e->buf, q->cs, off);
	e->loading = false;
	e->err = r;
	exec_waitq_wake(ex, &e->loaded, UINT32_MAX);
	if (r < 0) {
		hremove(c, e);
		e->off = 0;
		qc_cache_put(ex, c, e);
		return r;
	}
	*out = e;
	return 0;
}

void qc_cache_put(struct exec *ex, struct qc_cache *c, struct qc_ent *e)
{
	if (--e->pins == 0 && c->room.head)
		exec_waitq_wake(ex, &c->room, 1);
}

const uint8_t *qc_cache_peek(struct qc_cache *c, uint64_t off)
{
	struct qc_ent *e = hfind(c, off);
	if (!e || e->loading || e->err)
		return NULL;
	c->st.hits++;
	if (c->head != e)
		lru_front(c, e);
	return e->buf;
}

/* ---- locks ---- */

int qc_lock(struct exec *ex, struct qcow2 *q, struct qc_lock *l, uint64_t key)
{
	for (;;) {
		struct qc_lock *o = q->locks;
		while (o && o->key != key)
			o = o->next;
		if (!o)
			break;
		int r = exec_waitq_wait(ex, &o->q);
		if (r < 0)
			return r;
	}
	l->key = key;
	exec_waitq_init(&l->q);
	l->next = q->locks;
	q->locks = l;
	return 0;
}

void qc_unlock(struct exec *ex, struct qcow2 *q, struct qc_lock *l)
{
	struct qc_lock **pp = &q->locks;
	while (*pp && *pp != l)
		pp = &(*pp)->next;
	if (*pp)
		*pp = l->next;
	exec_waitq_wake(ex, &l->q, UINT32_MAX);
}

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

bool qc_overlaps_meta(const struct qcow2 *q, uint64_t off, uint64_t len)
{
	if (off < q->cs || overlap(off, len, q->l1_off, q->l1_alloc * 8) ||
	    overlap(off, len, q->rt_off, (uint64_t)q->rt_clusters * q->cs))
		return true;
	for (uint64_t c = off & ~(q->cs - 1); c < off + len; c += q->cs)
		if (hfind(&q->l2c, c) || hfind(&q->rbc, c))
			return true;
	return false;
}
