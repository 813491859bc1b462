#include "herald/hr_dict.h"
#include "herald/hr_alloc.h"

#include <stdint.h>
#include <string.h>

typedef struct hr_dict_entry_s {
    struct hr_dict_entry_s *next; /* owned chain */
    void *val;                    /* borrowed */
    uint64_t hash;
    size_t klen;
    char key[]; /* owned copy, NUL-terminated */
} hr_dict_entry_t;

struct hr_dict_s {
    hr_dict_entry_t **buckets; /* owned */
    size_t mask;               /* nbuckets - 1 */
    size_t size;
};

/* FNV-1a: keys are short (channel names), so a simple hash is fast enough. */
static uint64_t
hr_dict_hash(const char *key, size_t klen)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < klen; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#define HR_DICT_MIN_MASK 15 /* 16 buckets: a table never shrinks below this */

hr_dict_t *
hr_dict_create(void)
{
    hr_dict_t *d = hr_calloc(1, sizeof(*d));
    d->mask = HR_DICT_MIN_MASK;
    d->buckets = hr_calloc(d->mask + 1, sizeof(*d->buckets));
    return d;
}

void
hr_dict_destroy(hr_dict_t *d, void (*free_val)(void *))
{
    if (d == NULL)
        return;
    for (size_t i = 0; i <= d->mask; i++) {
        hr_dict_entry_t *e = d->buckets[i];
        while (e != NULL) {
            hr_dict_entry_t *next = e->next;
            if (free_val != NULL)
                free_val(e->val);
            hr_free(e);
            e = next;
        }
    }
    hr_free(d->buckets);
    hr_free(d);
}

static hr_dict_entry_t **
hr_dict_find(const hr_dict_t *d, const char *key, size_t klen, uint64_t h)
{
    hr_dict_entry_t **pe = &d->buckets[h & d->mask];
    while (*pe != NULL) {
        hr_dict_entry_t *e = *pe;
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return pe;
        pe = &e->next;
    }
    return pe;
}

void *
hr_dict_get(const hr_dict_t *d, const char *key, size_t klen)
{
    hr_dict_entry_t **pe = hr_dict_find(d, key, klen, hr_dict_hash(key, klen));
    return *pe ? (*pe)->val : NULL;
}

/* Rehashes every entry into 2^k buckets (nmask = 2^k - 1). */
static void
hr_dict_resize(hr_dict_t *d, size_t nmask)
{
    hr_dict_entry_t **nb = hr_calloc(nmask + 1, sizeof(*nb));
    for (size_t i = 0; i <= d->mask; i++) {
        hr_dict_entry_t *e = d->buckets[i];
        while (e != NULL) {
            hr_dict_entry_t *next = e->next;
            e->next = nb[e->hash & nmask];
            nb[e->hash & nmask] = e;
            e = next;
        }
    }
    hr_free(d->buckets);
    d->buckets = nb;
    d->mask = nmask;
}

void *
hr_dict_set(hr_dict_t *d, const char *key, size_t klen, void *val)
{
    uint64_t h = hr_dict_hash(key, klen);
    hr_dict_entry_t **pe = hr_dict_find(d, key, klen, h);
    if (*pe != NULL) {
        void *old = (*pe)->val;
        (*pe)->val = val;
        return old;
    }
    hr_dict_entry_t *e = hr_malloc(sizeof(*e) + klen + 1);
    e->next = NULL;
    e->val = val;
    e->hash = h;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->key[klen] = '\0';
    *pe = e;
    if (++d->size > d->mask + 1)
        hr_dict_resize(d, d->mask * 2 + 1);
    return NULL;
}

void *
hr_dict_del(hr_dict_t *d, const char *key, size_t klen)
{
    hr_dict_entry_t **pe = hr_dict_find(d, key, klen, hr_dict_hash(key, klen));
    hr_dict_entry_t *e = *pe;
    if (e == NULL)
        return NULL;
    void *val = e->val;
    *pe = e->next;
    hr_free(e);
    d->size--;
    /*
     * Shrink at load 1/8 to load 1/2 (after a spike of sockets the tables
     * would keep their peak size forever); the gap to the grow threshold
     * keeps a size near a boundary from resizing on every call.
     */
    if (d->mask > HR_DICT_MIN_MASK && d->size * 8 < d->mask + 1)
        hr_dict_resize(d, d->mask / 4 > HR_DICT_MIN_MASK ? d->mask / 4 : HR_DICT_MIN_MASK);
    return val;
}

size_t
hr_dict_size(const hr_dict_t *d)
{
    return d->size;
}

void
hr_dict_foreach(const hr_dict_t *d, int (*fn)(const char *, size_t, void *, void *), void *ud)
{
    for (size_t i = 0; i <= d->mask; i++) {
        for (hr_dict_entry_t *e = d->buckets[i]; e != NULL; e = e->next) {
            if (fn(e->key, e->klen, e->val, ud) != 0)
                return;
        }
    }
}
