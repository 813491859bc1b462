#include "gw_revoke.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_dict.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GW_REVOKE_SCAN_COUNT "500"

typedef struct {
    int64_t cutoff;      /* seconds: tokens issued before are refused */
    uint64_t expires_ms; /* monotonic: forgotten after this */
    uint32_t gen;        /* the sync that last saw it */
} gw_cutoff_t;

struct gw_revoke_s {
    hr_redis_async_t *redis; /* borrowed */
    hr_dict_t *users;        /* user → gw_cutoff_t (owned) */
    int ttl_s;
    gw_revoke_close_fn close_fn;
    void *ud; /* borrowed */
    uint32_t gen;
    int control_live;
    int syncing;
    int again; /* another sync was asked for while one ran */
    int loaded;
};

/* One step of a sync in flight; owned by the pending command's callback. */
typedef struct {
    gw_revoke_t *r;
    char *cursor; /* owned: the SCAN cursor after this batch */
    char **keys;  /* owned: the batch being read by MGET */
    size_t nkeys;
} gw_step_t;

static void gw_revoke_scan(gw_revoke_t *r, const char *cursor);
static void gw_revoke_try(gw_revoke_t *r);

gw_revoke_t *
gw_revoke_create(hr_redis_async_t *redis, int ttl_s, gw_revoke_close_fn close_fn, void *ud)
{
    gw_revoke_t *r = hr_calloc(1, sizeof(*r));
    r->redis = redis;
    r->users = hr_dict_create();
    r->ttl_s = ttl_s;
    r->close_fn = close_fn;
    r->ud = ud;
    return r;
}

void
gw_revoke_destroy(gw_revoke_t *r)
{
    if (r == NULL)
        return;
    hr_dict_destroy(r->users, hr_free);
    hr_free(r);
}

/* Raises user's cut-off to at least t (cut-offs only move forward, as the script's max). */
static void
gw_revoke_set(gw_revoke_t *r, const char *user, size_t len, int64_t t)
{
    gw_cutoff_t *c = hr_dict_get(r->users, user, len);
    if (c == NULL) {
        c = hr_calloc(1, sizeof(*c));
        hr_dict_set(r->users, user, len, c);
    }
    if (t > c->cutoff)
        c->cutoff = t;
    c->expires_ms = hr_mono_ms() + (uint64_t)r->ttl_s * 1000;
    c->gen = r->gen;
}

static void
gw_step_free(gw_step_t *st)
{
    for (size_t i = 0; i < st->nkeys; i++)
        hr_free(st->keys[i]);
    hr_free(st->keys);
    hr_free(st->cursor);
    hr_free(st);
}

static void
gw_revoke_failed(gw_revoke_t *r, const redisReply *rep)
{
    r->syncing = 0;
    hr_log_warn("revocations_sync_failed", "error=\"%s\"",
                rep == NULL                      ? "connection lost"
                : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                 : "bad reply");
    /* A lost connection syncs again when it is back; an error reply does not repeat by itself. */
    if (rep != NULL)
        r->again = 1;
}

typedef struct {
    gw_revoke_t *r;
    char **drop; /* owned */
    size_t ndrop;
} gw_drop_t;

static int
gw_revoke_stale_one(const char *key, size_t klen, void *val, void *ud)
{
    gw_drop_t *d = ud;
    const gw_cutoff_t *c = val;
    if (c->gen != d->r->gen || c->expires_ms <= hr_mono_ms()) {
        d->drop = hr_realloc(d->drop, (d->ndrop + 1) * sizeof(char *));
        d->drop[d->ndrop++] = hr_strndup(key, klen);
    }
    return 0;
}

/* Drops entries the sync just finished did not see (their key is gone) or that expired. */
static void
gw_revoke_drop_stale(gw_revoke_t *r)
{
    gw_drop_t d = {r, NULL, 0};
    hr_dict_foreach(r->users, gw_revoke_stale_one, &d);
    for (size_t i = 0; i < d.ndrop; i++) {
        hr_free(hr_dict_del(r->users, d.drop[i], strlen(d.drop[i])));
        hr_free(d.drop[i]);
    }
    hr_free(d.drop);
}

static void
gw_revoke_finish(gw_revoke_t *r)
{
    gw_revoke_drop_stale(r);
    r->syncing = 0;
    r->loaded = 1;
    hr_log_info("revocations_loaded", "users=%zu", hr_dict_size(r->users));
    /* Orders published while this gateway was away: check every open socket once. */
    r->close_fn(r->ud, NULL, 0, 0);
    if (r->again)
        gw_revoke_try(r);
}

/* Ends the sync as failed (gw_revoke_failed says why, rep may be NULL) and frees st. */
static void
gw_step_failed(gw_step_t *st, const redisReply *rep)
{
    gw_revoke_failed(st->r, rep);
    gw_step_free(st);
}

/*
 * Whether rep has the shape a step expects: an array of n elements, the
 * first ntypes of them of the reply types in types. Otherwise the step
 * fails (gw_step_failed) and st is gone.
 */
static int
gw_step_reply_ok(gw_step_t *st, const redisReply *rep, size_t n, const int *types, size_t ntypes)
{
    int ok = rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == n;
    for (size_t i = 0; ok && i < ntypes; i++)
        ok = rep->element[i]->type == types[i];
    if (!ok)
        gw_step_failed(st, rep);
    return ok;
}

/* Frees st and goes on from its cursor: the next SCAN, or the end of the sync at "0". */
static void
gw_step_next(gw_step_t *st)
{
    gw_revoke_t *r = st->r;
    char *cursor = st->cursor;
    st->cursor = NULL;
    gw_step_free(st);
    if (strcmp(cursor, "0") == 0)
        gw_revoke_finish(r);
    else
        gw_revoke_scan(r, cursor);
    hr_free(cursor);
}

static void
gw_revoke_mget_done(redisAsyncContext *ac, void *reply, void *priv)
{
    HR_UNUSED(ac);
    gw_step_t *st = priv;
    gw_revoke_t *r = st->r;
    redisReply *rep = reply;
    if (!gw_step_reply_ok(st, rep, st->nkeys, NULL, 0))
        return;
    size_t pl = strlen(HR_KEY_REVOKED_PREFIX);
    for (size_t i = 0; i < st->nkeys; i++) {
        const redisReply *v = rep->element[i];
        const char *k = st->keys[i];
        size_t kl = strlen(k);
        /* herald:revoked:{<user>}: the prefix ends in '{', the user runs up to the last '}'. */
        if (v->type != REDIS_REPLY_STRING || kl < pl + 2 || k[kl - 1] != '}')
            continue;
        char *end;
        long long t = strtoll(v->str, &end, 10);
        if (end == v->str || *end != '\0')
            continue;
        gw_revoke_set(r, k + pl, kl - pl - 1, (int64_t)t);
    }
    gw_step_next(st);
}

static void
gw_revoke_scan_done(redisAsyncContext *ac, void *reply, void *priv)
{
    HR_UNUSED(ac);
    gw_step_t *st = priv;
    gw_revoke_t *r = st->r;
    redisReply *rep = reply;
    /* SCAN answers [cursor, [key, ...]]. */
    static const int shape[] = {REDIS_REPLY_STRING, REDIS_REPLY_ARRAY};
    if (!gw_step_reply_ok(st, rep, 2, shape, HR_ARRAY_LEN(shape)))
        return;
    const redisReply *keys = rep->element[1];
    st->cursor = hr_strdup(rep->element[0]->str);
    if (keys->elements == 0) {
        gw_step_next(st);
        return;
    }
    size_t n = keys->elements;
    const char **argv = hr_malloc((n + 1) * sizeof(char *));
    size_t *argvlen = hr_malloc((n + 1) * sizeof(size_t));
    st->keys = hr_calloc(n, sizeof(char *));
    argv[0] = "MGET";
    argvlen[0] = 4;
    for (size_t i = 0; i < n; i++) {
        const redisReply *k = keys->element[i];
        st->keys[st->nkeys++] = hr_strndup(k->type == REDIS_REPLY_STRING ? k->str : "",
                                           k->type == REDIS_REPLY_STRING ? k->len : 0);
        argv[i + 1] = st->keys[i];
        argvlen[i + 1] = strlen(st->keys[i]);
    }
    int rc = hr_redis_async_argv(r->redis, gw_revoke_mget_done, st, (int)n + 1, argv, argvlen);
    hr_free(argv);
    hr_free(argvlen);
    if (rc != 0)
        gw_step_failed(st, NULL);
}

static void
gw_revoke_scan(gw_revoke_t *r, const char *cursor)
{
    gw_step_t *st = hr_calloc(1, sizeof(*st));
    st->r = r;
    const char *argv[6] = {
        "SCAN", cursor, "MATCH", HR_KEY_REVOKED_PREFIX "*", "COUNT", GW_REVOKE_SCAN_COUNT};
    size_t argvlen[6];
    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    if (hr_redis_async_argv(r->redis, gw_revoke_scan_done, st, 6, argv, argvlen) != 0)
        gw_step_failed(st, NULL);
}

/* Starts a sync if the control channel is live and commands can be sent. */
static void
gw_revoke_try(gw_revoke_t *r)
{
    if (!r->control_live || !hr_redis_async_ready(r->redis))
        return;
    if (r->syncing) {
        r->again = 1;
        return;
    }
    r->again = 0;
    r->syncing = 1;
    r->gen++;
    gw_revoke_scan(r, "0");
}

void
gw_revoke_control_live(gw_revoke_t *r, int live)
{
    r->control_live = live;
    if (live)
        gw_revoke_try(r);
}

void
gw_revoke_command_ready(gw_revoke_t *r)
{
    gw_revoke_try(r);
}

void
gw_revoke_message(gw_revoke_t *r, const char *payload, size_t len)
{
    cJSON *root;
    char err[128];
    if (hr_json_parse_object(payload, len, &root, err, sizeof(err)) != 0) {
        hr_log_warn("control_invalid", "error=\"%s\"", err);
        return;
    }
    const char *type = hr_json_get_str(root, "type");
    const char *user = hr_json_get_str(root, "user_id");
    const cJSON *ib = cJSON_GetObjectItemCaseSensitive(root, "issued_before");
    if (type == NULL || strcmp(type, HR_CONTROL_DISCONNECT) != 0 || user == NULL ||
        !hr_proto_id_valid(user, strlen(user)) ||
        (ib != NULL && !cJSON_IsNull(ib) && !cJSON_IsNumber(ib))) {
        hr_log_warn("control_invalid", "error=\"%s\"",
                    "not {\"type\":\"disconnect\",\"user_id\":…,\"issued_before\":T|null}");
        cJSON_Delete(root);
        return;
    }
    int has = cJSON_IsNumber(ib);
    int64_t t = has ? (int64_t)ib->valuedouble : 0;
    if (has)
        gw_revoke_set(r, user, strlen(user), t);
    hr_log_info("disconnect_order", "user=%s issued_before=%lld", user, has ? (long long)t : -1LL);
    r->close_fn(r->ud, user, has, t);
    cJSON_Delete(root);
}

int64_t
gw_revoke_cutoff(gw_revoke_t *r, const char *user)
{
    const gw_cutoff_t *c = hr_dict_get(r->users, user, strlen(user));
    if (c == NULL || c->expires_ms <= hr_mono_ms())
        return 0;
    return c->cutoff;
}

int
gw_revoke_loaded(const gw_revoke_t *r)
{
    return r->loaded;
}

size_t
gw_revoke_count(const gw_revoke_t *r)
{
    return hr_dict_size(r->users);
}

typedef struct {
    char **drop; /* owned */
    size_t ndrop;
} gw_expired_t;

static int
gw_revoke_expired_one(const char *key, size_t klen, void *val, void *ud)
{
    gw_expired_t *d = ud;
    const gw_cutoff_t *c = val;
    if (c->expires_ms <= hr_mono_ms()) {
        d->drop = hr_realloc(d->drop, (d->ndrop + 1) * sizeof(char *));
        d->drop[d->ndrop++] = hr_strndup(key, klen);
    }
    return 0;
}

void
gw_revoke_sweep(gw_revoke_t *r)
{
    gw_expired_t d = {NULL, 0};
    hr_dict_foreach(r->users, gw_revoke_expired_one, &d);
    for (size_t i = 0; i < d.ndrop; i++) {
        hr_free(hr_dict_del(r->users, d.drop[i], strlen(d.drop[i])));
        hr_free(d.drop[i]);
    }
    hr_free(d.drop);
}
