#include "gw_auth.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_dict.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GW_ORIGIN_MAX 256

typedef struct {
    double tokens;
    uint64_t ms;
} gw_bucket_t;

struct gw_auth_s {
    hr_token_verifier_t *verifier; /* owned */
    char **origins;                /* owned list of owned strings */
    size_t norigins;
    int origin_any; /* "*" in the list */
    int dev_user_query;
    int leeway_s;
    int rate, burst;    /* upgrades per second per address; 0: unlimited */
    hr_dict_t *buckets; /* address → gw_bucket_t (owned) */
};

const char *
gw_auth_reason(int code)
{
    return code == GW_AUTH_MISSING ? "missing" : hr_token_reason(code);
}

static void
gw_auth_add_origin(gw_auth_t *a, const char *o, size_t len)
{
    while (len > 0 && (*o == ' ' || *o == '\t'))
        o++, len--;
    while (len > 0 && (o[len - 1] == ' ' || o[len - 1] == '\t'))
        len--;
    if (len == 0)
        return;
    if (len == 1 && o[0] == '*')
        a->origin_any = 1;
    a->origins = hr_realloc(a->origins, (a->norigins + 1) * sizeof(char *));
    a->origins[a->norigins++] = hr_strndup(o, len);
}

/* gateway.allowed_origins: a list of strings in the file, a comma list in the environment. */
static int
gw_auth_load_origins(gw_auth_t *a, const char *path, char *err, size_t errlen)
{
    const char *env = getenv("HERALD_GATEWAY_ALLOWED_ORIGINS");
    if (env != NULL) {
        for (const char *p = env; *p != '\0';) {
            size_t n = strcspn(p, ",");
            gw_auth_add_origin(a, p, n);
            p += n + (p[n] == ',');
        }
        return 0;
    }
    if (path == NULL || path[0] == '\0')
        return 0;
    config_t c;
    config_init(&c);
    int rc = 0;
    if (config_read_file(&c, path) == CONFIG_TRUE) {
        const config_setting_t *l = config_lookup(&c, "gateway.allowed_origins");
        if (l != NULL && !config_setting_is_aggregate(l)) {
            snprintf(err, errlen, "%s: gateway.allowed_origins must be a list of strings", path);
            rc = HR_ERR;
        }
        for (int i = 0; rc == 0 && l != NULL && i < config_setting_length(l); i++) {
            const char *o = config_setting_get_string_elem(l, i);
            if (o == NULL || strlen(o) >= GW_ORIGIN_MAX) {
                snprintf(err, errlen, "%s: gateway.allowed_origins[%d] must be a string", path, i);
                rc = HR_ERR;
            } else {
                gw_auth_add_origin(a, o, strlen(o));
            }
        }
    } /* an unreadable file was already reported by the config loader */
    config_destroy(&c);
    return rc;
}

gw_auth_t *
gw_auth_create(const gw_config_t *cfg, char *err, size_t errlen)
{
    hr_token_config_t tc;
    char e[384];
    memset(&tc, 0, sizeof(tc));
    tc.leeway_s = 30;
    if (cfg->config_path != NULL && cfg->config_path[0] != '\0' &&
        hr_token_config_load(cfg->config_path, &tc, e, sizeof(e)) != 0) {
        snprintf(err, errlen, "auth: %s", e);
        hr_token_config_free(&tc);
        return NULL;
    }
    gw_auth_t *a = hr_calloc(1, sizeof(*a));
    if (hr_token_verifier_create(&tc, &a->verifier, e, sizeof(e)) != 0) {
        snprintf(err, errlen, "auth: %s", e);
        hr_token_config_free(&tc);
        hr_free(a);
        return NULL;
    }
    a->leeway_s = tc.leeway_s;
    size_t nkeys = tc.nkeys;
    hr_token_config_free(&tc);
    a->dev_user_query = cfg->dev_user_query;
    a->rate = cfg->upgrade_rate;
    a->burst = cfg->upgrade_burst > 0 ? cfg->upgrade_burst : cfg->upgrade_rate;
    a->buckets = hr_dict_create();
    if (gw_auth_load_origins(a, cfg->config_path, err, errlen) != 0) {
        gw_auth_destroy(a);
        return NULL;
    }
    if (a->dev_user_query)
        hr_log_warn("dev_user_query", "%s",
                    "gateway.dev_user_query is on: ?user_id= without a token is accepted "
                    "(development only)");
    if (a->origin_any)
        hr_log_warn("allowed_origins_any", "%s",
                    "gateway.allowed_origins holds \"*\": any web page may open sockets "
                    "(development only)");
    if (nkeys == 0 && !a->dev_user_query)
        hr_log_warn("no_auth_keys", "%s", "auth.keys is empty: every upgrade is refused (401)");
    hr_log_info("auth", "keys=%zu leeway_s=%d origins=%zu upgrade_rate=%d", nkeys, a->leeway_s,
                a->norigins, a->rate);
    return a;
}

void
gw_auth_destroy(gw_auth_t *a)
{
    if (a == NULL)
        return;
    hr_token_verifier_destroy(a->verifier);
    for (size_t i = 0; i < a->norigins; i++)
        hr_free(a->origins[i]);
    hr_free(a->origins);
    hr_dict_destroy(a->buckets, hr_free);
    hr_free(a);
}

int
gw_auth_leeway_s(const gw_auth_t *a)
{
    return a->leeway_s;
}

/* Token bucket per client address: 1 if an upgrade may proceed, else 0 with *retry_s. */
static int
gw_auth_rate_take(gw_auth_t *a, const char *ip, uint64_t now_ms, int *retry_s)
{
    if (a->rate <= 0)
        return 1;
    size_t len = strlen(ip);
    gw_bucket_t *b = hr_dict_get(a->buckets, ip, len);
    if (b == NULL) {
        b = hr_calloc(1, sizeof(*b));
        b->tokens = a->burst;
        b->ms = now_ms;
        hr_dict_set(a->buckets, ip, len, b);
    }
    b->tokens += (double)(now_ms - b->ms) * a->rate / 1000.0;
    if (b->tokens > a->burst)
        b->tokens = a->burst;
    b->ms = now_ms;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 1;
    }
    int s = (int)((1.0 - b->tokens) / a->rate + 0.999);
    *retry_s = s < 1 ? 1 : s;
    return 0;
}

typedef struct {
    const gw_auth_t *a;
    uint64_t now_ms;
    char **drop; /* owned list */
    size_t ndrop;
} gw_sweep_t;

static int
gw_auth_sweep_one(const char *key, size_t klen, void *val, void *ud)
{
    gw_sweep_t *sw = ud;
    const gw_bucket_t *b = val;
    double full = b->tokens + (double)(sw->now_ms - b->ms) * sw->a->rate / 1000.0;
    if (full >= sw->a->burst) {
        sw->drop = hr_realloc(sw->drop, (sw->ndrop + 1) * sizeof(char *));
        sw->drop[sw->ndrop++] = hr_strndup(key, klen);
    }
    return 0;
}

void
gw_auth_sweep(gw_auth_t *a, uint64_t now_ms)
{
    gw_sweep_t sw = {a, now_ms, NULL, 0};
    hr_dict_foreach(a->buckets, gw_auth_sweep_one, &sw);
    for (size_t i = 0; i < sw.ndrop; i++) {
        hr_free(hr_dict_del(a->buckets, sw.drop[i], strlen(sw.drop[i])));
        hr_free(sw.drop[i]);
    }
    hr_free(sw.drop);
}

/* An Origin header (scheme://host[:port]) must equal an entry; none: not a browser. */
static int
gw_auth_origin_ok(const gw_auth_t *a, struct lws *wsi)
{
    char origin[GW_ORIGIN_MAX];
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (total <= 0)
        return 1;
    if (a->origin_any)
        return 1;
    if (total >= (int)sizeof(origin) ||
        lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0)
        return 0;
    for (size_t i = 0; i < a->norigins; i++)
        if (strcasecmp(a->origins[i], origin) == 0)
            return 1;
    return 0;
}

static void
gw_refuse(gw_refusal_t *r, unsigned status, const char *code, const char *reason,
          const char *message)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
    r->code = code;
    r->reason = reason;
    snprintf(r->message, sizeof(r->message), "%s", message);
}

/* Verifies token and applies the user's cut-off: 0 with claims, or an HR_TOKEN_* code. */
static int
gw_auth_check(const gw_auth_t *a, const char *token, size_t len, int64_t now, gw_cutoff_fn cutoff,
              void *ud, hr_token_claims_t *claims)
{
    char err[128];
    int rc = hr_token_verify(a->verifier, token, len, now, claims, err, sizeof(err));
    if (rc != 0)
        return rc;
    rc = hr_token_check_cutoff(claims, cutoff(ud, claims->sub));
    if (rc != 0)
        hr_token_claims_free(claims);
    return rc;
}

int
gw_auth_upgrade(gw_auth_t *a, struct lws *wsi, const char *ip, int64_t now, gw_cutoff_fn cutoff,
                void *ud, gw_identity_t *id, gw_refusal_t *r)
{
    /* Any query fragment or header fits (the head's limit), so a long token is malformed, not
     * missing. */
    char *qbuf = NULL, *hbuf = NULL;
    int retry_s = 1, rc;
    memset(id, 0, sizeof(*id));
    if (!gw_auth_rate_take(a, ip, hr_mono_ms(), &retry_s)) {
        gw_refuse(r, 429, HR_E_TOO_MANY_REQUESTS, NULL,
                  "too many connection attempts from this address; retry later");
        r->retry_after_s = retry_s;
        return HR_DECLINED;
    }
    if (!gw_auth_origin_ok(a, wsi)) {
        gw_refuse(r, 403, HR_E_FORBIDDEN_ORIGIN, NULL,
                  "this Origin is not in gateway.allowed_origins");
        return HR_DECLINED;
    }
    qbuf = hr_malloc(GW_AUTH_HEAD_MAX + 1);
    hbuf = hr_malloc(GW_AUTH_HEAD_MAX + 1);
    const char *qtok = lws_get_urlarg_by_name(wsi, "token=", qbuf, GW_AUTH_HEAD_MAX + 1);
    const char *htok = NULL;
    int hlen = lws_hdr_custom_length(wsi, GW_AUTH_TOKEN_HEADER, strlen(GW_AUTH_TOKEN_HEADER));
    if (hlen > 0 && hlen <= GW_AUTH_HEAD_MAX &&
        lws_hdr_custom_copy(wsi, hbuf, GW_AUTH_HEAD_MAX + 1, GW_AUTH_TOKEN_HEADER,
                            strlen(GW_AUTH_TOKEN_HEADER)) > 0)
        htok = hbuf;
    if (qtok != NULL && htok != NULL && strcmp(qtok, htok) != 0) {
        rc = HR_TOKEN_MALFORMED; /* two different tokens: which one is meant? */
    } else if (qtok != NULL || htok != NULL) {
        const char *tok = qtok != NULL ? qtok : htok;
        rc = gw_auth_check(a, tok, strlen(tok), now, cutoff, ud, &id->claims);
        if (rc == 0)
            id->has_token = 1;
    } else if (a->dev_user_query) {
        /* Checked (invalid_user) once the socket is open, as before tokens. */
        const char *u = lws_get_urlarg_by_name(wsi, "user_id=", qbuf, GW_AUTH_HEAD_MAX + 1);
        snprintf(id->claims.sub, sizeof(id->claims.sub), "%s", u != NULL ? u : "");
        if (u != NULL && strlen(u) > HR_TOKEN_SUB_MAX)
            id->claims.sub[0] = '\0';
        rc = 0;
    } else {
        rc = GW_AUTH_MISSING;
    }
    hr_free(qbuf);
    hr_free(hbuf);
    if (rc == 0)
        return 0;
    char msg[128];
    snprintf(msg, sizeof(msg), "token refused: %s", gw_auth_reason(rc));
    gw_refuse(r, 401, HR_E_UNAUTHORIZED, gw_auth_reason(rc), msg);
    return HR_DECLINED;
}

int
gw_auth_refresh(const gw_auth_t *a, const gw_identity_t *cur, const char *token, size_t len,
                int64_t now, gw_cutoff_fn cutoff, void *ud, hr_token_claims_t *next)
{
    char err[128];
    int rc =
        hr_token_verify_refresh(a->verifier, &cur->claims, token, len, now, next, err, sizeof(err));
    if (rc != 0)
        return rc;
    rc = hr_token_check_cutoff(next, cutoff(ud, next->sub));
    if (rc != 0)
        hr_token_claims_free(next);
    return rc;
}

void
gw_identity_clear(gw_identity_t *id)
{
    if (id->has_token)
        hr_token_claims_free(&id->claims);
    memset(id, 0, sizeof(*id));
}

const char *
gw_identity_user(const gw_identity_t *id)
{
    return id->claims.sub;
}

int
gw_identity_room_allowed(const gw_identity_t *id, const char *room)
{
    return !id->has_token || hr_token_room_allowed(&id->claims, room);
}

int
gw_identity_revoked_by(const gw_identity_t *id, int64_t issued_before)
{
    if (!id->has_token)
        return issued_before > 0;
    return hr_token_check_cutoff(&id->claims, issued_before) != 0;
}

static void
gw_auth_timer_closed(uv_handle_t *h)
{
    hr_free(h);
}

void
gw_auth_expiry_arm(uv_loop_t *loop, uv_timer_t **t, const gw_identity_t *id, int leeway_s,
                   uv_timer_cb cb, void *data)
{
    if (!id->has_token)
        return;
    if (*t == NULL) {
        *t = hr_malloc(sizeof(uv_timer_t));
        uv_timer_init(loop, *t);
    }
    (*t)->data = data;
    /* Refused from exp + leeway on (hr_token): the socket ends at the same instant. */
    int64_t end_ms = (id->claims.exp + leeway_s) * 1000;
    int64_t now_ms = (int64_t)hr_now_ms();
    uv_timer_start(*t, cb, end_ms > now_ms ? (uint64_t)(end_ms - now_ms) : 0, 0);
}

void
gw_auth_expiry_stop(uv_timer_t **t)
{
    if (*t == NULL)
        return;
    uv_timer_stop(*t);
    uv_close((uv_handle_t *)*t, gw_auth_timer_closed);
    *t = NULL;
}
