/*
 * A string-keyed hash table (chained, power-of-two buckets, grows at load 1,
 * shrinks at load 1/8 down to 16 buckets).
 * Keys are copied and owned by the table; values are borrowed pointers the
 * caller owns.
 */
#ifndef HERALD_HR_DICT_H
#define HERALD_HR_DICT_H

#include <stddef.h>

typedef struct hr_dict_s hr_dict_t;

/** An empty table. */
hr_dict_t *hr_dict_create(void);
/** Frees the table; free_val (may be NULL) is called on every value. */
void hr_dict_destroy(hr_dict_t *d, void (*free_val)(void *));
/** The value under key, or NULL. */
void *hr_dict_get(const hr_dict_t *d, const char *key, size_t klen);
/** Sets key to val, replacing any previous value; returns the previous one or NULL. */
void *hr_dict_set(hr_dict_t *d, const char *key, size_t klen, void *val);
/** Removes key; returns its value or NULL. */
void *hr_dict_del(hr_dict_t *d, const char *key, size_t klen);
/** Number of keys. */
size_t hr_dict_size(const hr_dict_t *d);
/**
 * Calls fn on each entry; fn returns 0 to go on, non-zero to stop. fn must not
 * add or remove keys (collect them and change the table afterwards).
 */
void hr_dict_foreach(const hr_dict_t *d,
                     int (*fn)(const char *key, size_t klen, void *val, void *ud), void *ud);

#endif
