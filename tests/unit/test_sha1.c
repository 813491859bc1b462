/* hr_sha1: FIPS 180-4 / RFC 3174 test vectors and split updates. */
#include "hr_test.h"

#include "herald/hr_alloc.h"
#include "herald/hr_sha1.h"

#include <string.h>

static void
sha1_hex_of(const void *data, size_t len, char out[HR_SHA1_HEX_LEN])
{
    hr_sha1_t c;
    uint8_t d[HR_SHA1_LEN];
    hr_sha1_init(&c);
    hr_sha1_update(&c, data, len);
    hr_sha1_final(&c, d);
    hr_sha1_hex(d, out);
}

HR_TEST(known_vectors)
{
    static const struct {
        const char *in, *hex;
    } v[] = {
        {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrl"
         "mnopqrsmnopqrstnopqrstu",
         "a49b2446a02c645bf419f995b67091253a04a259"},
        {"The quick brown fox jumps over the lazy dog", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"},
    };
    char hex[HR_SHA1_HEX_LEN];
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        sha1_hex_of(v[i].in, strlen(v[i].in), hex);
        HR_CHECK_EQ_STR(hex, v[i].hex);
    }
}

HR_TEST(a_million_a)
{
    char *a = hr_malloc(1000000);
    memset(a, 'a', 1000000);
    char hex[HR_SHA1_HEX_LEN];
    sha1_hex_of(a, 1000000, hex);
    HR_CHECK_EQ_STR(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    hr_free(a);
}

/* Padding edges: lengths around 55/56/64 bytes, fed in pieces of every size. */
HR_TEST(split_updates_match_one_update_at_every_length_and_split)
{
    uint8_t buf[200];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof(buf); len++) {
        char whole[HR_SHA1_HEX_LEN];
        sha1_hex_of(buf, len, whole);
        for (size_t step = 1; step <= 70; step += 23) {
            hr_sha1_t c;
            uint8_t d[HR_SHA1_LEN];
            char hex[HR_SHA1_HEX_LEN];
            hr_sha1_init(&c);
            for (size_t off = 0; off < len; off += step)
                hr_sha1_update(&c, buf + off, len - off < step ? len - off : step);
            hr_sha1_final(&c, d);
            hr_sha1_hex(d, hex);
            if (!HR_CHECK_EQ_STR(hex, whole)) {
                HR_FAIL("len %zu step %zu", len, step);
                return;
            }
        }
    }
}

HR_TEST(lengths_around_the_padding_boundary)
{
    /* Digests of 'a' * n computed with coreutils sha1sum. */
    static const struct {
        size_t n;
        const char *hex;
    } v[] = {
        {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
        {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
        {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
        {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
        {65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
    };
    char a[80], hex[HR_SHA1_HEX_LEN];
    memset(a, 'a', sizeof(a));
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        sha1_hex_of(a, v[i].n, hex);
        if (!HR_CHECK_EQ_STR(hex, v[i].hex))
            HR_FAIL("n=%zu", v[i].n);
    }
}

HR_TEST_MAIN()
