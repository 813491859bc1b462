/*
 * LD_PRELOAD shim for bench/ingest_bench.sh: counts malloc/calloc/realloc
 * calls of the process (glibc's __libc_* entry points underneath) and
 * writes the total to $HERALD_ALLOC_COUNT_FILE at exit.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static atomic_ulong allocs;

void *
malloc(size_t n)
{
    atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
    return __libc_malloc(n);
}

void *
calloc(size_t n, size_t m)
{
    atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
    return __libc_calloc(n, m);
}

void *
realloc(void *p, size_t n)
{
    atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
    return __libc_realloc(p, n);
}

__attribute__((destructor)) static void
alloc_count_report(void)
{
    const char *path = getenv("HERALD_ALLOC_COUNT_FILE");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f != NULL) {
        fprintf(f, "%lu\n", (unsigned long)atomic_load(&allocs));
        fclose(f);
    }
}
