#include "ing_auth.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_httpd.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

struct ing_auth_s {
    hr_apikeys_t *keys; /* owned */
    size_t nkeys;
    int allow_anonymous;    /* ingest.allow_anonymous: no header = ING_AUTH_ANONYMOUS */
    ing_metrics_t *metrics; /* borrowed: refusals are counted and logged like every answer */
};

int
ing_auth_create(const char *path, int allow_anonymous, ing_metrics_t *metrics, ing_auth_t **out,
                char *err, size_t errlen)
{
    hr_apikey_config_t *cfg = NULL;
    size_t n = 0;
    *out = NULL;
    if (path != NULL && path[0] != '\0' && hr_apikey_config_load(path, &cfg, &n, err, errlen) != 0)
        return HR_ERR;
    hr_apikeys_t *ks;
    int rc = hr_apikeys_create(cfg, n, &ks, err, errlen);
    hr_apikey_config_free(cfg, n);
    if (rc != 0)
        return HR_ERR;
    ing_auth_t *a = hr_calloc(1, sizeof(*a));
    a->keys = ks;
    a->nkeys = n;
    a->allow_anonymous = allow_anonymous;
    a->metrics = metrics;
    if (allow_anonymous)
        hr_log_warn("allow_anonymous",
                    "keys=%zu note=\"ingest.allow_anonymous is on: requests without a key are "
                    "accepted as anonymous, with no scope and no rate (development only)\"",
                    n);
    else if (n == 0)
        hr_log_warn("no_ingest_keys", "%s",
                    "note=\"auth.ingest_keys is empty: every request is refused (401)\"");
    else
        hr_log_info("ingest_keys", "keys=%zu", n);
    *out = a;
    return 0;
}

void
ing_auth_destroy(ing_auth_t *a)
{
    if (a == NULL)
        return;
    hr_apikeys_destroy(a->keys);
    hr_free(a);
}

int
ing_auth_open_path(hr_httpd_req_t *req)
{
    return hr_httpd_path_is(req, "/healthz") || hr_httpd_path_is(req, "/readyz") ||
           hr_httpd_path_is(req, "/metrics");
}

/*
 * The key of "Authorization: Bearer <key>" (scheme in any case, blanks
 * around the key dropped) as *key, *len; HR_DECLINED if the header has
 * another shape.
 */
static int
ing_auth_bearer(const char *h, const char **key, size_t *len)
{
    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
        return HR_DECLINED;
    h += 6;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    *key = h;
    *len = n;
    return n > 0 ? 0 : HR_DECLINED;
}

static void
ing_auth_send_unknown(ing_auth_t *a, hr_httpd_req_t *req, int given)
{
    hr_httpd_add_header(req, "WWW-Authenticate",
                        given ? "Bearer realm=\"herald-ingest\", error=\"invalid_token\""
                              : "Bearer realm=\"herald-ingest\"");
    ing_metrics_send_error(a->metrics, req, a->metrics->route_start_us, 401, HR_E_UNKNOWN_KEY,
                           given ? "the API key is not one of this ingest's keys"
                                 : "an API key is required: Authorization: Bearer <key>");
}

int
ing_auth_identify(ing_auth_t *a, hr_httpd_req_t *req, ing_caller_t *c)
{
    const char *h = hr_httpd_header(req, "Authorization");
    const char *key;
    size_t len;
    c->key = NULL;
    c->name = NULL;
    if (h == NULL && a->allow_anonymous) {
        c->name = ING_AUTH_ANONYMOUS;
        return 0;
    }
    if (h == NULL || ing_auth_bearer(h, &key, &len) != 0) {
        hr_log_debug("unauthorized", "reason=%s", h == NULL ? "no_key" : "not_bearer");
        ing_auth_send_unknown(a, req, h != NULL);
        return HR_DECLINED;
    }
    c->key = hr_apikeys_lookup(a->keys, key, len);
    if (c->key == NULL) {
        hr_log_debug("unauthorized", "reason=%s len=%zu", "unknown_key", len);
        ing_auth_send_unknown(a, req, 1);
        return HR_DECLINED;
    }
    c->name = hr_apikey_name(c->key);
    return 0;
}

int
ing_auth_allows_user(const ing_caller_t *c, const char *user)
{
    return c->key == NULL || hr_apikey_allows_user(c->key, user);
}

int
ing_auth_allows_request(const ing_caller_t *c, const hr_proto_request_t *r)
{
    if (c->key == NULL)
        return 1;
    if (r->n.room != NULL)
        return hr_apikey_allows_room(c->key, r->n.room);
    if (r->user_ids != NULL) {
        for (size_t i = 0; i < r->nusers; i++)
            if (!hr_apikey_allows_user(c->key, r->user_ids[i]))
                return 0;
        return 1;
    }
    return r->n.user_id != NULL && hr_apikey_allows_user(c->key, r->n.user_id);
}

void
ing_auth_send_out_of_scope(ing_auth_t *a, hr_httpd_req_t *req, const ing_caller_t *c,
                           const char *what)
{
    char msg[256];
    /* Logged at info: a caller sending outside its scope is misconfigured, not noise. */
    hr_log_info("out_of_scope", "key=%s", c->name);
    snprintf(msg, sizeof(msg), "the API key \"%s\" may not notify %s", c->name, what);
    ing_metrics_send_error(a->metrics, req, a->metrics->route_start_us, 403, HR_E_OUT_OF_SCOPE,
                           msg);
}

int
ing_auth_admit(ing_auth_t *a, hr_httpd_req_t *req, const ing_caller_t *c)
{
    int retry = 1;
    if (c->key == NULL || hr_apikey_take(a->keys, c->key, hr_mono_ms(), &retry) == 0)
        return 0;
    char v[16], msg[128];
    snprintf(v, sizeof(v), "%d", retry);
    hr_httpd_add_header(req, "Retry-After", v);
    hr_log_debug("over_rate", "key=%s retry_after_s=%d", c->name, retry);
    snprintf(msg, sizeof(msg), "the API key \"%s\" is over its rate: retry in %d s", c->name,
             retry);
    ing_metrics_send_error(a->metrics, req, a->metrics->route_start_us, 429, HR_E_OVER_RATE, msg);
    return HR_DECLINED;
}

int
ing_auth_check_request(ing_auth_t *a, hr_httpd_req_t *req, const ing_caller_t *c,
                       const hr_proto_request_t *r)
{
    if (!ing_auth_allows_request(c, r)) {
        ing_auth_send_out_of_scope(a, req, c,
                                   r->n.room != NULL ? "this room" : "every user of this request");
        return HR_DECLINED;
    }
    return ing_auth_admit(a, req, c);
}
