/*
 * The server's side of gw_auth and gw_revoke: the check before the upgrade,
 * the expiry of a socket's token, and disconnect orders closing sockets.
 */
#include "gw_session.h"
#include "gw_http.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <stdio.h>
#include <string.h>

int64_t
gw_cutoff_of(void *ud, const char *user)
{
    gw_server_t *s = ud;
    return gw_revoke_cutoff(s->revoke, user);
}

/* The answer to a refused upgrade: {"error":{"code","reason"?,"message"}}. */
static void
gw_upgrade_refuse(struct lws *wsi, const gw_refusal_t *r)
{
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", r->code);
    if (r->reason != NULL)
        cJSON_AddStringToObject(e, "reason", r->reason);
    cJSON_AddStringToObject(e, "message", r->message);
    char *txt = hr_json_print(o);
    cJSON_Delete(o);
    gw_http_refuse_retry(wsi, r->status, txt, r->retry_after_s);
    hr_free(txt);
}

/*
 * Before the upgrade (FILTER_PROTOCOL_CONNECTION): the cut-offs must be
 * loaded, then gw_auth decides. A refusal is answered in HTTP and nothing is
 * registered or subscribed. Returns 0, or -1 to hang up after the answer.
 */
int
gw_upgrade_check(gw_server_t *s, gw_session_t *ss, struct lws *wsi)
{
    gw_refusal_t r;
    char ip[64];
    if (!gw_revoke_loaded(s->revoke)) {
        memset(&r, 0, sizeof(r));
        r.status = 503;
        r.code = HR_E_UNAVAILABLE;
        snprintf(r.message, sizeof(r.message), "revocation list not loaded yet (redis), retry");
        hr_counter_inc(&s->metrics->connects[GW_CONNECT_UNAVAILABLE]);
        gw_upgrade_refuse(wsi, &r);
        return -1;
    }
    gw_session_peer(s, wsi, ip, sizeof(ip));
    if (gw_auth_upgrade(s->auth, wsi, ip, (int64_t)(hr_now_ms() / 1000), gw_cutoff_of, s, &ss->id,
                        &r) == 0)
        return 0;
    gw_metrics_refused_upgrade(s->metrics, r.status, r.reason);
    /* A flood of upgrades (429) would flood the log too: those are counted, not logged. */
    hr_log_write(r.status == 429 ? HR_LOG_DEBUG : HR_LOG_INFO, "upgrade_refused",
                 "ip=%s status=%u code=%s reason=%s", ip, r.status, r.code,
                 r.reason != NULL ? r.reason : "-");
    gw_upgrade_refuse(wsi, &r);
    return -1;
}

/* The token's exp + leeway has come: the socket ends (proto/ws.md, close 4001). */
void
gw_session_expired(uv_timer_t *t)
{
    gw_session_t *ss = t->data;
    gw_server_t *s = lws_context_user(lws_get_context(ss->wsi));
    if (ss->conn.close_code != 0)
        return;
    gw_send_error(s, ss, HR_E_TOKEN_EXPIRED, "the token expired; reconnect with a new one", NULL);
    gw_conn_close(&ss->conn, HR_CLOSE_TOKEN_EXPIRED, "token expired");
}

typedef struct {
    gw_server_t *s;
    const char *user; /* NULL: every socket against the mirror; else only this user's are walked */
    int has_cutoff;
    int64_t issued_before;
    size_t closed;
} gw_revoke_walk_t;

static void
gw_revoke_close_one(gw_conn_t *c, void *ud)
{
    gw_revoke_walk_t *w = ud;
    gw_session_t *ss = gw_session_of(c);
    const char *user = gw_conn_user_id(c);
    if (c->close_code != 0 || user == NULL)
        return;
    if (w->user != NULL) {
        if (w->has_cutoff && !gw_identity_revoked_by(&ss->id, w->issued_before))
            return;
    } else {
        int64_t cut = gw_revoke_cutoff(w->s->revoke, user);
        if (cut <= 0 || !gw_identity_revoked_by(&ss->id, cut))
            return;
    }
    gw_send_error(w->s, ss, HR_E_REVOKED, "this session was revoked", NULL);
    gw_conn_close(c, HR_CLOSE_REVOKED, "revoked");
    w->closed++;
}

/*
 * gw_revoke_close_fn: a disconnect order, or (user NULL) a sync that may
 * have raised cut-offs. An order visits only its user's sockets (the hub's
 * user index): one order must not cost a walk over every socket of the
 * gateway. The sync, once per (re)connect to Redis, checks every socket.
 */
void
gw_revoke_close(void *ud, const char *user, int has_cutoff, int64_t issued_before)
{
    gw_server_t *s = ud;
    gw_revoke_walk_t w = {s, user, has_cutoff, issued_before, 0};
    if (user != NULL)
        gw_hub_foreach_user_conn(s->hub, user, gw_revoke_close_one, &w);
    else
        gw_hub_foreach_conn(s->hub, gw_revoke_close_one, &w);
    if (w.closed > 0) {
        hr_counter_add(s->metrics->revoked_closes, w.closed);
        hr_log_info("revoked_closed", "user=%s sockets=%zu", user != NULL ? user : "*", w.closed);
    }
}
