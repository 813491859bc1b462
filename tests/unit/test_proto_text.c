/*
 * proto/hr_proto.c: hr_proto_text_check, the one-pass UTF-8 and \u0000 check
 * of a POST body, answers exactly as hr_utf8_valid() then
 * hr_json_has_nul_escape() did. Includes the .c to reach the static function.
 */
#include "hr_test.h"

#include "proto/hr_proto.c"

#include "herald/hr_json.h"

#include <stdint.h>
#include <string.h>

static int
two_pass(const char *s, size_t len)
{
    if (!hr_utf8_valid(s, len))
        return HR_PROTO_TEXT_NOT_UTF8;
    return hr_json_has_nul_escape(s, len) ? HR_PROTO_TEXT_NUL_ESCAPE : HR_PROTO_TEXT_OK;
}

HR_TEST(one_pass_check_agrees_with_the_two_checks_on_every_short_mix)
{
    /* Backslashes, the escape's letters, NUL, valid and broken multi-byte sequences. */
    static const unsigned char alphabet[] = {'\\', 'u',  '0',  '0',  '"',  'a',  0x00, 0xc3, 0xa9,
                                             0xed, 0xa0, 0x80, 0xf0, 0x9f, 0x98, 0xff, 0xc0};
    uint32_t seed = 12345;
    for (int round = 0; round < 200000; round++) {
        char buf[16];
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % sizeof(buf);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (char)alphabet[(seed >> 16) % sizeof(alphabet)];
        }
        /* An exact-size copy, so ASan sees any read past the end. */
        char *copy = hr_malloc(len ? len : 1);
        memcpy(copy, buf, len);
        int want = two_pass(copy, len), got = hr_proto_text_check(copy, len);
        hr_free(copy);
        if (!HR_CHECK_EQ_INT(got, want))
            return;
    }
}

HR_TEST(one_pass_check_examples)
{
    HR_CHECK_EQ_INT(hr_proto_text_check("{\"a\":\"x\\u0000\"}", 15), HR_PROTO_TEXT_NUL_ESCAPE);
    HR_CHECK_EQ_INT(hr_proto_text_check("{\"a\":\"\\\\u0000\"}", 15), HR_PROTO_TEXT_OK);
    HR_CHECK_EQ_INT(hr_proto_text_check("\\\\\\u0000", 8), HR_PROTO_TEXT_NUL_ESCAPE);
    HR_CHECK_EQ_INT(hr_proto_text_check("a\0b", 3), HR_PROTO_TEXT_NOT_UTF8);
    /* Not UTF-8 wins over an earlier escape. */
    HR_CHECK_EQ_INT(hr_proto_text_check("\\u0000\xff", 7), HR_PROTO_TEXT_NOT_UTF8);
    HR_CHECK_EQ_INT(hr_proto_text_check("\xc3\xa9\xf0\x9f\x98\x80", 6), HR_PROTO_TEXT_OK);
    HR_CHECK_EQ_INT(hr_proto_text_check("\xed\xa0\x80", 3), HR_PROTO_TEXT_NOT_UTF8);
}

HR_TEST_MAIN()
