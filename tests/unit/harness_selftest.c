/*
 * The harness checked by CTest: one passing test, one failing, one passing.
 * CTest expects the TAP below and a non-zero exit code.
 */
#include "hr_test.h"

static int calls;

static int
count_call(void)
{
    return ++calls;
}

HR_TEST(checks_evaluate_each_operand_once)
{
    HR_CHECK_EQ_INT(count_call(), 1);
    HR_CHECK_CMP_UINT(count_call(), >, 1);
    HR_CHECK_EQ_INT(calls, 2);
    HR_CHECK_EQ_STR("a", "a");
    HR_CHECK_EQ_MEM("ab", 2, "ab", 2);
    HR_CHECK_CONTAINS("haystack", "st");
}

HR_TEST(failing_checks_are_reported_with_file_and_line)
{
    HR_CHECK_EQ_INT(1 + 1, 3);
    HR_CHECK_EQ_STR("left", "right");
    HR_REQUIRE(0);
    HR_FAIL("%s", "not reached: HR_REQUIRE returned");
}

HR_TEST(a_failure_does_not_stop_later_tests)
{
    HR_CHECK(1);
}

HR_TEST_MAIN()
