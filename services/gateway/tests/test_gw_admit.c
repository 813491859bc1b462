/* gw_admit: sockets per user and per client address. */
#include "hr_test.h"

#include "gw_admit.h"
#include "herald/hr_core.h"

HR_TEST(user_limit_refuses_one_more_and_frees_on_release)
{
    gw_admit_t *a = gw_admit_create(2, 0);
    const char *why = NULL;
    HR_CHECK_EQ_INT(gw_admit_take(a, "alice", "10.0.0.1", &why), 0);
    HR_CHECK_EQ_INT(gw_admit_take(a, "alice", "10.0.0.2", &why), 0);
    HR_CHECK_EQ_INT(gw_admit_take(a, "alice", "10.0.0.3", &why), HR_DECLINED);
    HR_CHECK_CONTAINS(why, "user");
    HR_CHECK_EQ_INT(gw_admit_take(a, "bob", "10.0.0.3", &why), 0);
    gw_admit_release(a, "alice", "10.0.0.1");
    HR_CHECK_EQ_INT(gw_admit_take(a, "alice", "10.0.0.3", &why), 0);
    gw_admit_release(a, "alice", "10.0.0.2");
    gw_admit_release(a, "alice", "10.0.0.3");
    gw_admit_release(a, "bob", "10.0.0.3");
    gw_admit_destroy(a);
}

HR_TEST(address_limit_counts_every_user_of_the_address)
{
    gw_admit_t *a = gw_admit_create(0, 2);
    const char *why = NULL;
    HR_CHECK_EQ_INT(gw_admit_take(a, "u1", "10.0.0.1", &why), 0);
    HR_CHECK_EQ_INT(gw_admit_take(a, "u2", "10.0.0.1", &why), 0);
    HR_CHECK_EQ_INT(gw_admit_take(a, "u3", "10.0.0.1", &why), HR_DECLINED);
    HR_CHECK_CONTAINS(why, "address");
    HR_CHECK_EQ_INT(gw_admit_take(a, "u3", "10.0.0.2", &why), 0);
    /* A refusal counted nothing: after one release there is room for exactly one. */
    gw_admit_release(a, "u1", "10.0.0.1");
    HR_CHECK_EQ_INT(gw_admit_take(a, "u3", "10.0.0.1", &why), 0);
    HR_CHECK_EQ_INT(gw_admit_take(a, "u4", "10.0.0.1", &why), HR_DECLINED);
    gw_admit_release(a, "u2", "10.0.0.1");
    gw_admit_release(a, "u3", "10.0.0.1");
    gw_admit_release(a, "u3", "10.0.0.2");
    gw_admit_destroy(a);
}

HR_TEST(zero_means_no_limit)
{
    gw_admit_t *a = gw_admit_create(0, 0);
    const char *why = NULL;
    for (int i = 0; i < 1000; i++)
        HR_CHECK_EQ_INT(gw_admit_take(a, "same", "10.0.0.1", &why), 0);
    for (int i = 0; i < 1000; i++)
        gw_admit_release(a, "same", "10.0.0.1");
    gw_admit_destroy(a);
}

HR_TEST_MAIN()
