/*
 * What the libFuzzer targets (fuzz/) found, one test per finding, each with
 * the input that found it. The raw inputs also stay in fuzz/regressions/<target>/,
 * which fuzz/run.sh replays before every run.
 */
#include "hr_test.h"

#include "hist_params.h"
#include "herald/hr_core.h"

#include <string.h>

/*
 * fuzz_history, fuzz/regressions/history/raw_nul_in_segment: a raw NUL in a
 * path segment was copied through, so the decoded length (returned) and the
 * text (NUL-terminated) disagreed, and "0190f7c4-…\0junk" would read as the id.
 */
HR_TEST(unescape_refuses_a_raw_nul_byte)
{
    static const char seg[] = "user_id=alice&\025\000\000\000or=";
    char out[64];
    HR_CHECK_EQ_INT(hist_unescape(seg, sizeof(seg) - 1, out, sizeof(out), 0), -1);
    static const char id[] = "0190f7c4-5d6e-7a8b-9c0d-1e2f3a4b5c6d\0junk";
    HR_CHECK_EQ_INT(hist_unescape(id, sizeof(id) - 1, out, sizeof(out), 0), -1);
    /* Escaped, as before: refused too. */
    HR_CHECK_EQ_INT(hist_unescape("ab%00", 5, out, sizeof(out), 1), -1);
    HR_CHECK_EQ_INT(hist_unescape("a%20b+c", 7, out, sizeof(out), 1), 5);
    HR_CHECK_EQ_STR(out, "a b c");
}

HR_TEST_MAIN()
