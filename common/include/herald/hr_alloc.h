/* Allocation wrappers: out of memory aborts, so NULL never means "no memory". */
#ifndef HERALD_HR_ALLOC_H
#define HERALD_HR_ALLOC_H

#include <stddef.h>

/** malloc that aborts with a message when memory is exhausted. */
void *hr_malloc(size_t size);
/** calloc that aborts on exhaustion. */
void *hr_calloc(size_t nmemb, size_t size);
/** realloc that aborts on exhaustion. */
void *hr_realloc(void *ptr, size_t size);
/** strdup that aborts on exhaustion; NULL in gives NULL out. */
char *hr_strdup(const char *s);
/** Copy of the first n bytes of s, NUL-terminated. */
char *hr_strndup(const char *s, size_t n);
/** free(); here so every allocation goes through one module. */
void hr_free(void *ptr);

#endif
