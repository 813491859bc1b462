#include "gw_admit.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_dict.h"

#include <stdint.h>
#include <string.h>

struct gw_admit_s {
    hr_dict_t *users; /* user id → sockets (a pointer-sized integer) */
    hr_dict_t *ips;   /* client address → sockets (likewise) */
    uintptr_t max_user, max_ip;
};

gw_admit_t *
gw_admit_create(int max_per_user, int max_per_ip)
{
    gw_admit_t *a = hr_calloc(1, sizeof(*a));
    a->users = hr_dict_create();
    a->ips = hr_dict_create();
    a->max_user = max_per_user > 0 ? (uintptr_t)max_per_user : 0;
    a->max_ip = max_per_ip > 0 ? (uintptr_t)max_per_ip : 0;
    return a;
}

void
gw_admit_destroy(gw_admit_t *a)
{
    if (a == NULL)
        return;
    hr_dict_destroy(a->users, NULL);
    hr_dict_destroy(a->ips, NULL);
    hr_free(a);
}

static uintptr_t
gw_admit_count(const hr_dict_t *d, const char *k)
{
    return (uintptr_t)hr_dict_get(d, k, strlen(k));
}

/* Adds delta to the count under k; the entry goes at 0. */
static void
gw_admit_add(hr_dict_t *d, const char *k, intptr_t delta)
{
    size_t kl = strlen(k);
    uintptr_t n = (uintptr_t)hr_dict_get(d, k, kl) + (uintptr_t)delta;
    if (n == 0)
        hr_dict_del(d, k, kl);
    else
        hr_dict_set(d, k, kl, (void *)n);
}

int
gw_admit_take(gw_admit_t *a, const char *user, const char *ip, const char **why)
{
    if (a->max_ip > 0 && gw_admit_count(a->ips, ip) >= a->max_ip) {
        *why = "too many sockets from this address";
        return HR_DECLINED;
    }
    if (a->max_user > 0 && gw_admit_count(a->users, user) >= a->max_user) {
        *why = "too many sockets of this user";
        return HR_DECLINED;
    }
    gw_admit_add(a->ips, ip, 1);
    gw_admit_add(a->users, user, 1);
    return 0;
}

void
gw_admit_release(gw_admit_t *a, const char *user, const char *ip)
{
    gw_admit_add(a->ips, ip, -1);
    gw_admit_add(a->users, user, -1);
}
