/* hist_params_parse: the query string of every history endpoint, without a server. */
#include "hr_test.h"

#include "hist_server.h"
#include "herald/hr_core.h"

#include <stdio.h>

#include <string.h>

HR_TEST(empty_cursor_or_before_is_the_first_page)
{
    hist_params_t p;
    hr_proto_err_t e;
    HR_CHECK_EQ_INT(hist_params_parse("user_id=a&cursor=", &p, &e), 0);
    HR_CHECK_EQ_STR(p.user_id, "a");
    HR_CHECK_EQ_STR(p.cursor, "");
    HR_CHECK_EQ_INT(hist_params_parse("cursor=&user_id=b&limit=5", &p, &e), 0);
    HR_CHECK_EQ_STR(p.user_id, "b");
    HR_CHECK_EQ_INT(p.limit, 5);
    HR_CHECK_EQ_INT(hist_params_parse("before&limit=3", &p, &e), 0);
    HR_CHECK_EQ_INT(p.limit, 3);
    HR_CHECK_EQ_STR(p.cursor, "");
}

HR_TEST(cursor_given_twice_is_refused_even_when_one_is_empty)
{
    hist_params_t p;
    hr_proto_err_t e;
    HR_CHECK_EQ_INT(hist_params_parse("cursor=&cursor=", &p, &e), HR_DECLINED);
    HR_CHECK_EQ_INT(e.status, 400);
    HR_CHECK_CONTAINS(e.message, "once");
}

HR_TEST(a_cursor_round_trips)
{
    char c[HIST_CURSOR_LEN + 1], id[HR_UUID_STR_LEN], q[64];
    HR_REQUIRE_EQ_INT(hist_cursor_encode("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b", c), 0);
    snprintf(q, sizeof(q), "cursor=%s", c);
    hist_params_t p;
    hr_proto_err_t e;
    HR_CHECK_EQ_INT(hist_params_parse(q, &p, &e), 0);
    HR_CHECK_EQ_STR(p.cursor, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
    HR_CHECK_EQ_INT(hist_cursor_decode(c, strlen(c), id), 0);
    HR_CHECK_EQ_INT(hist_params_parse("cursor=AAAA", &p, &e), HR_DECLINED);
}

HR_TEST_MAIN()
