#include "hist_auth.h"
#include "hist_params.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct hist_auth_s {
    hr_token_config_t cfg;    /* owned: the keys, kept for POST /dev/token */
    hr_token_verifier_t *ver; /* owned */
    int dev_user_query;
    int dev_mint;
};

int
hist_auth_create(const hist_auth_opts_t *o, hist_auth_t **out, char *err, size_t errlen)
{
    hist_auth_t *a = hr_calloc(1, sizeof(*a));
    a->dev_user_query = o->dev_user_query;
    a->dev_mint = o->dev_mint;
    if (o->config_path != NULL && o->config_path[0] != '\0') {
        if (hr_token_config_load(o->config_path, &a->cfg, err, errlen) != 0) {
            hr_free(a);
            return HR_ERR;
        }
    } else {
        a->cfg.leeway_s = 30;
    }
    if (hr_token_verifier_create(&a->cfg, &a->ver, err, errlen) != 0) {
        hist_auth_destroy(a);
        return HR_ERR;
    }
    if (a->dev_mint) {
        /* Fail at start, not at the first request, when there is nothing to sign with. */
        char *tok = NULL;
        if (hr_token_mint_hs256(&a->cfg, NULL, "probe", NULL, 0, 0, 1, &tok, err, errlen) != 0) {
            size_t n = strlen(err);
            snprintf(err + n, errlen > n ? errlen - n : 0, " (history.dev_mint needs one)");
            hist_auth_destroy(a);
            return HR_ERR;
        }
        hr_free(tok);
    }
    if (a->cfg.nkeys == 0)
        hr_log_warn("auth_no_keys", "error=\"auth.keys is empty: every token is refused\"");
    if (a->dev_user_query)
        hr_log_warn("dev_user_query", "error=\"history.dev_user_query is on: ?user_id= is "
                                      "accepted without a token (development only)\"");
    if (a->dev_mint)
        hr_log_warn("dev_mint", "error=\"history.dev_mint is on: POST /dev/token mints a token "
                                "for any user (development only)\"");
    *out = a;
    return 0;
}

void
hist_auth_destroy(hist_auth_t *a)
{
    if (a == NULL)
        return;
    hr_token_verifier_destroy(a->ver);
    hr_token_config_free(&a->cfg);
    hr_free(a);
}

int
hist_auth_dev_user_query(const hist_auth_t *a)
{
    return a->dev_user_query;
}

int
hist_auth_dev_mint(const hist_auth_t *a)
{
    return a->dev_mint;
}

int
hist_auth_verify(const hist_auth_t *a, hr_httpd_req_t *req, int64_t now, hr_token_claims_t *claims,
                 char *err, size_t errlen)
{
    const char *values[2];
    size_t seen = 0;
    for (size_t i = 0, n = hr_httpd_nheaders(req); i < n && seen < 2; i++) {
        const char *name, *value;
        hr_httpd_header_at(req, i, &name, &value);
        if (strcasecmp(name, "Authorization") == 0)
            values[seen++] = value;
    }
    return hist_auth_verify_values(a, values, seen, now, claims, err, errlen);
}

int
hist_auth_verify_values(const hist_auth_t *a, const char *const *values, size_t n, int64_t now,
                        hr_token_claims_t *claims, char *err, size_t errlen)
{
    if (n == 0) {
        snprintf(err, errlen, "Authorization: Bearer <token> is required");
        return HIST_AUTH_MISSING;
    }
    if (n > 1) {
        snprintf(err, errlen, "more than one Authorization header");
        return HR_TOKEN_MALFORMED;
    }
    const char *value = values[0];
    static const char scheme[] = "Bearer";
    size_t sl = sizeof(scheme) - 1;
    if (strncasecmp(value, scheme, sl) != 0 || (value[sl] != ' ' && value[sl] != '\t')) {
        snprintf(err, errlen, "the Authorization scheme must be Bearer");
        return HR_TOKEN_MALFORMED;
    }
    const char *tok = value + sl;
    while (*tok == ' ' || *tok == '\t')
        tok++;
    size_t len = strlen(tok);
    while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
        len--;
    if (len == 0) {
        snprintf(err, errlen, "the Bearer token is empty");
        return HR_TOKEN_MALFORMED;
    }
    return hr_token_verify(a->ver, tok, len, now, claims, err, errlen);
}

const char *
hist_auth_reason(int code)
{
    return code == HIST_AUTH_MISSING ? "missing" : hr_token_reason(code);
}

void
hist_auth_send_unauthorized(hr_httpd_req_t *req, int code, const char *message)
{
    /* RFC 6750 §3: no error attribute when no credential was presented. */
    hr_httpd_add_header(req, "WWW-Authenticate",
                        code == HIST_AUTH_MISSING ? "Bearer" : "Bearer error=\"invalid_token\"");
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", HR_E_UNAUTHORIZED);
    cJSON_AddStringToObject(e, "reason", hist_auth_reason(code));
    cJSON_AddStringToObject(e, "message", message);
    char *s = hr_json_print(o);
    cJSON_Delete(o);
    hr_httpd_send_json(req, 401, s, strlen(s));
    hr_free(s);
}

size_t
hist_auth_revoked_key(char *buf, size_t cap, const char *user)
{
    int n = snprintf(buf, cap, HR_KEY_REVOKED_PREFIX "%s}", user);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

int
hist_auth_cutoff_parse(const redisReply *r, int64_t *cutoff)
{
    *cutoff = 0;
    if (r->type == REDIS_REPLY_NIL)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER) {
        *cutoff = (int64_t)r->integer;
        return 0;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
        return HR_ERR;
    char buf[24];
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || !isdigit((unsigned char)buf[0]))
        return HR_ERR;
    *cutoff = (int64_t)v;
    return 0;
}

/* Fills e as a 400 invalid_field naming what is wrong; returns HR_DECLINED. */
static int
hist_mint_fail(hr_proto_err_t *e, const char *code, const char *msg)
{
    return hist_fail(e, code, "%s", msg);
}

/* ttl_s: a whole number within the bounds. */
static int
hist_mint_ttl(const cJSON *v, int64_t *ttl, hr_proto_err_t *e)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble ||
        v->valuedouble < HIST_MINT_TTL_MIN || v->valuedouble > HIST_MINT_TTL_MAX)
        return hist_fail(e, HR_E_INVALID_FIELD, "ttl_s must be a whole number of seconds, %d-%d",
                         HIST_MINT_TTL_MIN, HIST_MINT_TTL_MAX);
    *ttl = (int64_t)v->valuedouble;
    return 0;
}

int
hist_auth_mint(const hist_auth_t *a, const char *body, size_t len, int64_t now, char **out,
               hr_proto_err_t *e)
{
    char err[256];
    cJSON *root = NULL;
    if (hr_json_parse_object(body, len, &root, err, sizeof(err)) != 0)
        return hist_fail(e, HR_E_INVALID_JSON, "body: %s", err);
    int rc = HR_DECLINED;
    const char *user = NULL;
    const char **rooms = NULL;
    size_t nrooms = 0;
    int has_rooms = 0;
    int64_t ttl = HIST_MINT_TTL_DEFAULT;
    const cJSON *m;
    cJSON_ArrayForEach(m, root)
    {
        if (strcmp(m->string, "user_id") == 0) {
            if (!cJSON_IsString(m) ||
                !hr_token_user_id_valid(m->valuestring, strlen(m->valuestring))) {
                hist_fail(e, HR_E_INVALID_FIELD,
                          "user_id must be 1-%d bytes of UTF-8 without control characters",
                          HR_TOKEN_SUB_MAX);
                goto done;
            }
            user = m->valuestring;
        } else if (strcmp(m->string, "rooms") == 0) {
            if (!cJSON_IsArray(m)) {
                hist_mint_fail(e, HR_E_INVALID_FIELD, "rooms must be an array of room names");
                goto done;
            }
            int n = cJSON_GetArraySize(m);
            if (n > HR_TOKEN_ROOMS_MAX) {
                hist_fail(e, HR_E_INVALID_FIELD, "rooms: at most %d entries", HR_TOKEN_ROOMS_MAX);
                goto done;
            }
            rooms = hr_calloc(n > 0 ? (size_t)n : 1, sizeof(*rooms));
            has_rooms = 1;
            const cJSON *r;
            cJSON_ArrayForEach(r, m)
            {
                if (!cJSON_IsString(r) || !hr_room_pattern_valid(r->valuestring)) {
                    hist_fail(e, HR_E_INVALID_FIELD,
                              "rooms[%zu] must be a room name (1-%d of A-Za-z0-9_.:@-), \"*\" or "
                              "\"<prefix>:*\"",
                              nrooms, HR_ROOM_MAX);
                    goto done;
                }
                rooms[nrooms++] = r->valuestring;
            }
        } else if (strcmp(m->string, "ttl_s") == 0) {
            if (hist_mint_ttl(m, &ttl, e) != 0)
                goto done;
        } else {
            hist_fail(e, HR_E_UNKNOWN_FIELD, "unknown member (known: user_id, rooms, ttl_s)");
            goto done;
        }
    }
    if (user == NULL) {
        hist_mint_fail(e, HR_E_MISSING_FIELD, "user_id is required");
        goto done;
    }
    char *tok = NULL;
    if (hr_token_mint_hs256(&a->cfg, NULL, user, has_rooms ? rooms : NULL, nrooms, now, ttl, &tok,
                            err, sizeof(err)) != 0) {
        /* Input was checked above; what is left is the key (checked at start). */
        hr_log_error("mint_failed", "error=\"%s\"", err);
        e->status = 500;
        e->code = HR_E_INTERNAL;
        snprintf(e->message, sizeof(e->message), "the token could not be signed");
        goto done;
    }
    cJSON *ans = cJSON_CreateObject();
    cJSON_AddStringToObject(ans, "token", tok);
    cJSON_AddNumberToObject(ans, "expires_at", (double)(now + ttl));
    *out = hr_json_print(ans);
    cJSON_Delete(ans);
    hr_free(tok);
    hr_log_info("dev_token_minted", "user_len=%zu rooms=%zu ttl_s=%lld", strlen(user), nrooms,
                (long long)ttl);
    rc = 0;
done:
    hr_free(rooms);
    cJSON_Delete(root);
    return rc;
}
