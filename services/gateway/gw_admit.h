/*
 * Admission: how many sockets each user and each client address holds on
 * this gateway, against gateway.max_sockets_per_user / _per_ip, so one client
 * cannot take all descriptors or multiply its publish rate by its sockets.
 */
#ifndef HERALD_GW_ADMIT_H
#define HERALD_GW_ADMIT_H

typedef struct gw_admit_s gw_admit_t;

/** Limits of 0 mean none. */
gw_admit_t *gw_admit_create(int max_per_user, int max_per_ip);
void gw_admit_destroy(gw_admit_t *a);
/**
 * Counts one more socket of user from ip. Returns 0, or HR_DECLINED with
 * *why (static text) when a limit is reached; nothing is counted then.
 */
int gw_admit_take(gw_admit_t *a, const char *user, const char *ip, const char **why);
/** Forgets a socket that gw_admit_take counted. */
void gw_admit_release(gw_admit_t *a, const char *user, const char *ip);

#endif
