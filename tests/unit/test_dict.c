/*
 * common/src/hr_dict.c: set/get/del, growth, and shrinking after a spike.
 * Includes the .c to read the bucket count.
 */
#include "hr_test.h"

#include "common/src/hr_dict.c"

#include <stdio.h>

static size_t
buckets(const hr_dict_t *d)
{
    return d->mask + 1;
}

static size_t
key_of(char *buf, size_t cap, int i)
{
    return (size_t)snprintf(buf, cap, "herald:user:%d", i);
}

static int
count_one(const char *key, size_t klen, void *val, void *ud)
{
    (void)key;
    (void)klen;
    (void)val;
    (*(size_t *)ud)++;
    return 0;
}

HR_TEST(set_get_del_and_replace)
{
    hr_dict_t *d = hr_dict_create();
    int a = 1, b = 2;
    HR_CHECK(hr_dict_set(d, "k", 1, &a) == NULL);
    HR_CHECK(hr_dict_set(d, "k", 1, &b) == &a);
    HR_CHECK(hr_dict_get(d, "k", 1) == &b);
    HR_CHECK(hr_dict_get(d, "kk", 2) == NULL);
    HR_CHECK(hr_dict_del(d, "k", 1) == &b);
    HR_CHECK(hr_dict_del(d, "k", 1) == NULL);
    HR_CHECK_EQ_UINT(hr_dict_size(d), 0);
    hr_dict_destroy(d, NULL);
}

HR_TEST(table_shrinks_back_after_a_spike)
{
    hr_dict_t *d = hr_dict_create();
    size_t start = buckets(d);
    char k[64];
    static int v;
    for (int i = 0; i < 100000; i++)
        hr_dict_set(d, k, key_of(k, sizeof(k), i), &v);
    HR_CHECK_CMP_UINT(buckets(d), >=, 100000);
    /* Down to 100 keys: the table follows (load stays between 1/8 and 1). */
    for (int i = 100; i < 100000; i++)
        HR_REQUIRE(hr_dict_del(d, k, key_of(k, sizeof(k), i)) == &v);
    HR_CHECK_CMP_UINT(buckets(d), <=, 8 * 100);
    HR_CHECK_CMP_UINT(buckets(d), >=, 100);
    for (int i = 0; i < 100; i++)
        HR_CHECK(hr_dict_get(d, k, key_of(k, sizeof(k), i)) == &v);
    size_t n = 0;
    hr_dict_foreach(d, count_one, &n);
    HR_CHECK_EQ_UINT(n, 100);
    for (int i = 0; i < 100; i++)
        hr_dict_del(d, k, key_of(k, sizeof(k), i));
    HR_CHECK_EQ_UINT(buckets(d), start);
    hr_dict_destroy(d, NULL);
}

HR_TEST(alternating_at_a_boundary_does_not_resize_each_time)
{
    hr_dict_t *d = hr_dict_create();
    char k[64];
    static int v;
    for (int i = 0; i < 1024; i++)
        hr_dict_set(d, k, key_of(k, sizeof(k), i), &v);
    /* 1,025 keys grow the table once; back to 1,024 must not shrink it. */
    hr_dict_set(d, "extra", 5, &v);
    hr_dict_del(d, "extra", 5);
    size_t at = buckets(d);
    for (int round = 0; round < 1000; round++) {
        hr_dict_set(d, "extra", 5, &v);
        hr_dict_del(d, "extra", 5);
        if (buckets(d) != at) {
            HR_FAIL("resized to %zu buckets in round %d", buckets(d), round);
            break;
        }
    }
    hr_dict_destroy(d, NULL);
}

HR_TEST_MAIN()
