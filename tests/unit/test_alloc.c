/* hr_alloc: the allocation wrappers never return NULL for memory. */
#include "hr_test.h"

#include "herald/hr_alloc.h"

#include <string.h>

HR_TEST(zero_sized_allocations_return_usable_pointers)
{
    void *p = hr_malloc(0);
    void *q = hr_calloc(0, 8);
    void *r = hr_calloc(8, 0);
    HR_CHECK(p != NULL && q != NULL && r != NULL);
    p = hr_realloc(p, 0);
    HR_CHECK(p != NULL);
    hr_free(p);
    hr_free(q);
    hr_free(r);
}

HR_TEST(calloc_zeroes_and_realloc_keeps_contents)
{
    unsigned char *p = hr_calloc(64, 4);
    int nonzero = 0;
    for (int i = 0; i < 256; i++)
        nonzero += p[i] != 0;
    HR_CHECK_EQ_INT(nonzero, 0);
    memset(p, 0xab, 256);
    p = hr_realloc(p, 4096);
    HR_CHECK_EQ_INT(p[0], 0xab);
    HR_CHECK_EQ_INT(p[255], 0xab);
    hr_free(p);
}

HR_TEST(strdup_copies_and_passes_null_through)
{
    const char *s = "herald";
    char *d = hr_strdup(s);
    HR_CHECK(d != s);
    HR_CHECK_EQ_STR(d, "herald");
    hr_free(d);
    HR_CHECK(hr_strdup(NULL) == NULL);
    hr_free(NULL);
}

HR_TEST(strndup_copies_n_bytes_and_terminates)
{
    char *d = hr_strndup("notification", 6);
    HR_CHECK_EQ_STR(d, "notifi");
    hr_free(d);
    d = hr_strndup("", 0);
    HR_CHECK_EQ_STR(d, "");
    hr_free(d);
    /* The source need not be NUL-terminated. */
    char raw[3] = {'a', 'b', 'c'};
    d = hr_strndup(raw, 3);
    HR_CHECK_EQ_STR(d, "abc");
    hr_free(d);
}

HR_TEST_MAIN()
