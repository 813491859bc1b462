/* gw_wait: waiters indexed by channel. */
#include "hr_test.h"

#include "gw_wait.h"
#include "herald/hr_alloc.h"

#include <string.h>

HR_TEST(waiters_of_one_channel_are_found_until_removed)
{
    gw_waiters_t *w = gw_waiters_create();
    gw_waiter_t a = {0}, b = {0}, c = {0};
    gw_waiters_add(w, &a, "herald:room:x", 13);
    gw_waiters_add(w, &b, "herald:room:x", 13);
    gw_waiters_add(w, &c, "herald:user:y", 13);
    int seen = 0;
    gw_waiter_t *x;
    while ((x = gw_waiters_first(w, "herald:room:x", 13)) != NULL) {
        HR_CHECK(x == &a || x == &b);
        gw_waiters_remove(w, x);
        HR_CHECK(x->ch == NULL);
        seen++;
    }
    HR_CHECK_EQ_INT(seen, 2);
    HR_CHECK(gw_waiters_first(w, "herald:user:y", 13) == &c);
    gw_waiters_remove(w, &c);
    gw_waiters_remove(w, &c); /* not waiting: no-op */
    HR_CHECK(gw_waiters_first(w, "herald:user:y", 13) == NULL);
    gw_waiters_destroy(w);
}

HR_TEST(removing_from_the_middle_keeps_the_others)
{
    gw_waiters_t *w = gw_waiters_create();
    gw_waiter_t x[3];
    memset(x, 0, sizeof(x));
    for (int i = 0; i < 3; i++)
        gw_waiters_add(w, &x[i], "ch", 2);
    gw_waiters_remove(w, &x[1]);
    size_t n;
    gw_waiter_t **all = gw_waiters_all(w, &n);
    HR_CHECK_EQ_UINT(n, 2);
    HR_CHECK((all[0] == &x[0] && all[1] == &x[2]) || (all[0] == &x[2] && all[1] == &x[0]));
    hr_free(all);
    gw_waiters_remove(w, &x[2]);
    gw_waiters_remove(w, &x[0]);
    all = gw_waiters_all(w, &n);
    HR_CHECK_EQ_UINT(n, 0);
    HR_CHECK(all == NULL);
    gw_waiters_destroy(w);
}

HR_TEST_MAIN()
