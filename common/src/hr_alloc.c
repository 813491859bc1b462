#include "herald/hr_alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
hr_oom(size_t size)
{
    fprintf(stderr, "herald: out of memory allocating %zu bytes\n", size);
    fflush(stderr);
    abort();
}

void *
hr_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        hr_oom(size);
    return p;
}

void *
hr_calloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL)
        hr_oom(nmemb * size);
    return p;
}

void *
hr_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL)
        hr_oom(size);
    return p;
}

char *
hr_strdup(const char *s)
{
    if (s == NULL)
        return NULL;
    return hr_strndup(s, strlen(s));
}

char *
hr_strndup(const char *s, size_t n)
{
    char *p = hr_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void
hr_free(void *ptr)
{
    free(ptr);
}
