#include "ing_revoke.h"

#include <event2/http.h> /* evhttp_uridecode */
#include "hr_proto.h"
#include "ing_write.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The cut-off and the order, atomic (proto/auth.md, proto/redis.md).
 *
 * KEYS[1] herald:revoked:{<user_id>}   (string: decimal seconds)
 * ARGV[1] issued_before (decimal seconds), or "" for a disconnect
 * ARGV[2] the cut-off's TTL in seconds (auth.revocation_ttl_s)
 * ARGV[3] the control message up to its issued_before value,
 *         {"type":"disconnect","user_id":<user_id>,"issued_before":
 * Reply: {receivers of the order (PUBLISH's count), the cut-off published
 * (the later of the stored one and ARGV[1]) or ""}.
 */
static const char ing_revoke_lua[] =
    "local cut = ARGV[1]\n"
    "if cut ~= '' then\n"
    "  local n = tonumber(cut)\n"
    "  local old = redis.call('GET', KEYS[1])\n"
    "  old = old and tonumber(old)\n"
    "  if old and old > n then n = old end\n"
    "  cut = string.format('%d', n)\n"
    "  redis.call('SET', KEYS[1], cut, 'EX', ARGV[2])\n"
    "end\n"
    "local msg = ARGV[3] .. (cut ~= '' and cut or 'null') .. '}'\n"
    "return {redis.call('PUBLISH', '" HR_CHANNEL_CONTROL "', msg), cut}\n";

struct ing_revoke_s {
    hr_redis_async_t *redis; /* borrowed */
    ing_auth_t *auth;        /* borrowed */
    ing_metrics_t *metrics;  /* borrowed: every answer is counted and logged */
    hr_http_drain_t *drain;  /* borrowed */
    int ttl_s;
};

/* One revocation waiting on Redis; freed in its reply callback. */
typedef struct {
    ing_revoke_t *rv;     /* borrowed */
    hr_httpd_req_t *req;  /* borrowed: valid until answered */
    char *user;           /* owned: the decoded user id */
    const char *key_name; /* borrowed from the auth */
    uint64_t start_us;    /* hr_mono_us when the request arrived */
    int revoke;           /* revoke, else disconnect */
} ing_revoke_pending_t;

static void
ing_revoke_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    ing_revoke_pending_t *p = privdata;
    ing_revoke_t *rv = p->rv;
    redisReply *r = reply;
    rv->metrics->key = p->key_name;

    if (r == NULL && hr_redis_async_lost_unsent(rv->redis)) {
        hr_log_warn("revoke_failed", "sent=0 error=\"%s\"", "redis connection lost");
        ing_metrics_send_error(rv->metrics, p->req, p->start_us, 503, HR_E_UNAVAILABLE,
                               "redis connection lost before the revocation was sent; retry");
    } else if (r == NULL) {
        hr_log_warn("revoke_failed", "sent=1 error=\"%s\"", "no reply from redis");
        ing_metrics_send_error(
            rv->metrics, p->req, p->start_us, 503, HR_E_OUTCOME_UNKNOWN,
            "redis did not answer; the revocation may be done: retrying is safe");
    } else if (r->type == REDIS_REPLY_ERROR) {
        hr_log_error("revoke_failed", "error=\"%s\"", r->str);
        ing_metrics_send_error(rv->metrics, p->req, p->start_us, 503, HR_E_UNAVAILABLE,
                               "redis refused the revocation; retry");
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_INTEGER ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        hr_log_error("revoke_failed", "error=\"%s\"", "unexpected script reply");
        ing_metrics_send_error(rv->metrics, p->req, p->start_us, 500, HR_E_INTERNAL,
                               "unexpected reply from redis");
    } else {
        char inl[256], num[24];
        ing_buf_t b;
        ing_buf_init(&b, inl, sizeof(inl));
        ing_buf_adds(&b, "{\"user_id\":");
        ing_json_str(&b, p->user);
        ing_buf_adds(&b, ",\"issued_before\":");
        /* A decimal Redis wrote from our own number: digits only, or "". */
        ing_buf_adds(&b, r->element[1]->len > 0 ? r->element[1]->str : "null");
        snprintf(num, sizeof(num), "%lld", (long long)r->element[0]->integer);
        ing_buf_adds(&b, ",\"gateways\":");
        ing_buf_adds(&b, num);
        ing_buf_adds(&b, "}");
        hr_log_info("revocation", "action=%s cutoff=%s gateways=%s key=%s",
                    p->revoke ? "revoke" : "disconnect",
                    r->element[1]->len > 0 ? r->element[1]->str : "none", num, p->key_name);
        ing_metrics_send_json(rv->metrics, p->req, p->start_us, 200, b.p, b.len);
        ing_buf_free(&b);
    }
    hr_free(p->user);
    hr_free(p);
    hr_http_drain_release(rv->drain);
}

/*
 * The body of either route: empty, or a JSON object whose only member may be
 * "issued_before" (revoke only; null = absent), an integer 0..now+
 * ING_REVOKE_FUTURE_MAX_S. Sets *cut (-1: now / none). Returns 0, or
 * HR_DECLINED after answering 400/413/415.
 */
static int
ing_revoke_body(ing_revoke_t *rv, hr_httpd_req_t *req, int revoke, int64_t now, int64_t *cut)
{
    size_t len;
    const char *body = hr_httpd_body(req, &len);
    char err[128], msg[160];
    cJSON *root;
    *cut = -1;
    if (len == 0)
        return 0;
    if (len > ING_REVOKE_BODY_MAX) {
        snprintf(msg, sizeof(msg), "body is larger than %d bytes", ING_REVOKE_BODY_MAX);
        ing_metrics_send_error(rv->metrics, req, rv->metrics->route_start_us, 413,
                               HR_E_BODY_TOO_LARGE, msg);
        return HR_DECLINED;
    }
    if (!hr_http_json_type(hr_httpd_header(req, "Content-Type"))) {
        ing_metrics_send_error(rv->metrics, req, rv->metrics->route_start_us, 415,
                               HR_E_UNSUPPORTED_MEDIA, "Content-Type must be application/json");
        return HR_DECLINED;
    }
    if (!hr_utf8_valid(body, len) ||
        hr_json_parse_object(body, len, &root, err, sizeof(err)) != 0) {
        ing_metrics_send_error(rv->metrics, req, rv->metrics->route_start_us, 400,
                               HR_E_INVALID_JSON,
                               hr_utf8_valid(body, len) ? err : "body is not valid UTF-8");
        return HR_DECLINED;
    }
    int rc = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        if (!revoke || strcmp(it->string, "issued_before") != 0) {
            snprintf(msg, sizeof(msg), "unknown field \"%.64s\"", it->string);
            ing_metrics_send_error(rv->metrics, req, rv->metrics->route_start_us, 400,
                                   HR_E_UNKNOWN_FIELD, msg);
            rc = HR_DECLINED;
            goto done;
        }
    }
    it = cJSON_GetObjectItemCaseSensitive(root, "issued_before");
    if (it != NULL && !cJSON_IsNull(it)) {
        double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
        if (v < 0 || v != floor(v) || v > (double)(now + ING_REVOKE_FUTURE_MAX_S)) {
            snprintf(msg, sizeof(msg),
                     "issued_before must be an integer number of seconds since the epoch, "
                     "at most %d s ahead of now",
                     ING_REVOKE_FUTURE_MAX_S);
            ing_metrics_send_error(rv->metrics, req, rv->metrics->route_start_us, 400,
                                   HR_E_INVALID_FIELD, msg);
            rc = HR_DECLINED;
            goto done;
        }
        *cut = (int64_t)v;
    }
done:
    cJSON_Delete(root);
    return rc;
}

/*
 * The user id of /users/<id>/<action> (percent-decoded, owned by the caller)
 * and whether action is revoke; NULL for another path or one whose id
 * segment holds a raw "/". An empty or invalid id is given back as "" for
 * the caller to refuse.
 */
static char *
ing_revoke_path(hr_httpd_req_t *req, int *revoke, size_t *idlen)
{
    static const char prefix[] = "/users/";
    size_t n;
    const char *p = hr_httpd_path(req, &n);
    size_t pl = sizeof(prefix) - 1;
    if (n <= pl || memcmp(p, prefix, pl) != 0)
        return NULL;
    const char *seg = p + pl, *end = p + n;
    const char *slash = memchr(seg, '/', (size_t)(end - seg));
    if (slash == NULL)
        return NULL;
    size_t al = (size_t)(end - slash - 1);
    if (al == 6 && memcmp(slash + 1, "revoke", 6) == 0)
        *revoke = 1;
    else if (al == 10 && memcmp(slash + 1, "disconnect", 10) == 0)
        *revoke = 0;
    else
        return NULL;
    char *enc = hr_strndup(seg, (size_t)(slash - seg));
    size_t dl = 0;
    char *dec = evhttp_uridecode(enc, 0, &dl);
    hr_free(enc);
    if (dec == NULL) {
        *idlen = 0;
        return hr_strdup("");
    }
    char *id = hr_malloc(dl + 1);
    memcpy(id, dec, dl);
    id[dl] = '\0';
    free(dec); /* libevent's allocation */
    *idlen = dl;
    return id;
}

int
ing_revoke_route(ing_revoke_t *rv, hr_httpd_req_t *req, const ing_caller_t *c)
{
    int revoke = 0;
    size_t idlen = 0;
    char *user = ing_revoke_path(req, &revoke, &idlen);
    if (user == NULL)
        return 0;
    int64_t now = (int64_t)(hr_now_ms() / 1000), cut;
    if (hr_httpd_method(req) != HR_HTTPD_POST) {
        ing_metrics_send_error(rv->metrics, req, rv->metrics->route_start_us, 405, HR_E_METHOD,
                               "use POST");
    } else if (!hr_proto_id_valid(user, idlen)) {
        ing_metrics_send_error(
            rv->metrics, req, rv->metrics->route_start_us, 400, HR_E_INVALID_FIELD,
            "the user id must be 1-128 bytes of UTF-8 without control characters "
            "(percent-encoded in the path)");
    } else if (!ing_auth_allows_user(c, user)) {
        ing_auth_send_out_of_scope(rv->auth, req, c, "this user");
    } else if (ing_revoke_body(rv, req, revoke, now, &cut) != 0) {
        /* answered */
    } else if (ing_auth_admit(rv->auth, req, c) != 0) {
        /* answered */
    } else if (rv->drain->draining || !hr_redis_async_ready(rv->redis)) {
        ing_metrics_send_error(rv->metrics, req, rv->metrics->route_start_us, 503, HR_E_UNAVAILABLE,
                               "redis is not reachable; retry");
    } else {
        char keybuf[HR_USER_ID_MAX + 32], cutbuf[24], ttlbuf[24];
        int kl = snprintf(keybuf, sizeof(keybuf), HR_KEY_REVOKED_PREFIX "%s}", user);
        int cl = revoke
                     ? snprintf(cutbuf, sizeof(cutbuf), "%lld", (long long)(cut >= 0 ? cut : now))
                     : 0;
        int tl = snprintf(ttlbuf, sizeof(ttlbuf), "%d", rv->ttl_s);
        char inl[256];
        ing_buf_t msg;
        ing_buf_init(&msg, inl, sizeof(inl));
        ing_buf_adds(&msg, "{\"type\":\"" HR_CONTROL_DISCONNECT "\",\"user_id\":");
        ing_json_str(&msg, user);
        ing_buf_adds(&msg, ",\"issued_before\":");
        const char *argv[] = {"EVAL", ing_revoke_lua, "1", keybuf, cutbuf, ttlbuf, msg.p};
        size_t argvlen[] = {
            4, sizeof(ing_revoke_lua) - 1, 1, (size_t)kl, (size_t)cl, (size_t)tl, msg.len};
        ing_revoke_pending_t *p = hr_malloc(sizeof(*p));
        p->rv = rv;
        p->req = req;
        p->user = user;
        p->key_name = c->name;
        p->start_us = rv->metrics->route_start_us;
        p->revoke = revoke;
        if (hr_redis_async_argv(rv->redis, ing_revoke_done, p, (int)HR_ARRAY_LEN(argv), argv,
                                argvlen) == 0) {
            rv->drain->inflight++;
            user = NULL; /* the pending owns it now */
        } else {
            hr_free(p);
            ing_metrics_send_error(rv->metrics, req, rv->metrics->route_start_us, 503,
                                   HR_E_UNAVAILABLE, "redis is not reachable; retry");
        }
        ing_buf_free(&msg);
    }
    hr_free(user);
    return 1;
}

ing_revoke_t *
ing_revoke_create(hr_redis_async_t *redis, ing_auth_t *auth, ing_metrics_t *metrics,
                  hr_http_drain_t *drain, int ttl_s)
{
    ing_revoke_t *rv = hr_calloc(1, sizeof(*rv));
    rv->redis = redis;
    rv->auth = auth;
    rv->metrics = metrics;
    rv->drain = drain;
    rv->ttl_s = ttl_s;
    return rv;
}

void
ing_revoke_destroy(ing_revoke_t *rv)
{
    hr_free(rv);
}
