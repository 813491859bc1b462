/* herald-worker --replay-dead-letter: dead letters back to their streams. */
#include "wrk_internal.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include "herald/hr_redis.h"

#include <stdio.h>
#include <string.h>

/*
 * Replay of one dead letter, atomic: it is either still a dead letter or back
 * in its stream, never both or neither. The XADD comes first so that if it
 * fails (the script stops there) the dead letter stays.
 * KEYS[1] HR_STREAM_DEAD_LETTER, KEYS[2] the stream it came from
 * ARGV[1] dead letter id, ARGV[2..] the original field/value pairs
 * Reply: the new entry id, or false if the dead letter was gone.
 */
static const char wrk_lua_replay[] =
    "if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end\n"
    "local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return id\n";

/* Lua's unpack stops near 8,000 values: a replay script call stays below. */
#define WRK_REPLAY_MAX_ITEMS 7000

typedef struct {
    const char **v; /* owned array of borrowed strings */
    size_t *len;    /* owned */
    size_t n, cap;
} wrk_args_t;

static void
wrk_args_push(wrk_args_t *a, const char *s, size_t len)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->v = hr_realloc(a->v, a->cap * sizeof(*a->v));
        a->len = hr_realloc(a->len, a->cap * sizeof(*a->len));
    }
    a->v[a->n] = s;
    a->len[a->n++] = len;
}

/*
 * Appends the items of an HR_FIELD_DEAD_FIELDS value ("<len>:<bytes>," each)
 * to a, borrowing from s. Returns 0, or HR_ERR if the encoding is broken.
 */
static int
wrk_args_netstrings(wrk_args_t *a, const char *s, size_t len)
{
    size_t at = 0;
    while (at < len) {
        size_t n = 0, digits = 0;
        while (at < len && s[at] >= '0' && s[at] <= '9' && digits < 19) {
            n = n * 10 + (size_t)(s[at++] - '0');
            digits++;
        }
        if (digits == 0 || at >= len || s[at] != ':' || len - at - 1 < n + 1 ||
            s[at + 1 + n] != ',')
            return HR_ERR;
        wrk_args_push(a, s + at + 1, n);
        at += n + 2;
    }
    return 0;
}

/*
 * One dead letter back to its stream: splits the dead_* fields from the
 * original ones (inline, or encoded in HR_FIELD_DEAD_FIELDS) and runs
 * wrk_lua_replay. Returns 1 replayed, 0 skipped (logged), HR_ERR on a Redis
 * failure (err filled).
 */
static int
wrk_replay_one(redisContext *c, const redisReply *e, char *err, size_t errlen)
{
    const redisReply *sid = e->element[0], *f = e->element[1];
    const char *stream = NULL, *why = NULL;
    size_t n = f->type == REDIS_REPLY_ARRAY ? f->elements : 0;
    wrk_args_t a = {0};
    const size_t head = 6; /* EVAL script 2 dead-stream stream dead-id */
    for (size_t i = 0; i < head; i++)
        wrk_args_push(&a, "", 0);
    for (size_t i = 0; i + 1 < n; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, HR_FIELD_DEAD_STREAM) == 0) {
            stream = v->str;
        } else if (strcmp(k->str, HR_FIELD_DEAD_FIELDS) == 0) {
            if (wrk_args_netstrings(&a, v->str, v->len) != 0)
                why = "dead_fields is not a list of netstrings";
        } else if (strncmp(k->str, "dead_", 5) != 0) {
            wrk_args_push(&a, k->str, k->len);
            wrk_args_push(&a, v->str, v->len);
        }
    }
    size_t items = a.n - head;
    if (why == NULL && (stream == NULL || wrk_stream_index(stream, strlen(stream)) < 0))
        why = "no origin stream";
    if (why == NULL && (items == 0 || items % 2 != 0))
        why = "no original field/value pairs";
    if (why == NULL && items > WRK_REPLAY_MAX_ITEMS)
        why = "too many original fields to replay in one script call";
    int rc = 0;
    if (why != NULL) {
        hr_log_warn("replay_skipped", "sid=%s items=%zu reason=\"%s\"", sid->str, items, why);
    } else {
        const char *h[] = {"EVAL", wrk_lua_replay, "2", HR_STREAM_DEAD_LETTER, stream, sid->str};
        for (size_t k = 0; k < head; k++) {
            a.v[k] = h[k];
            a.len[k] = strlen(h[k]);
        }
        redisReply *r = redisCommandArgv(c, (int)a.n, a.v, a.len);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "replay of %s: %s", sid->str, r ? r->str : c->errstr);
            rc = HR_ERR;
        } else if (r->type == REDIS_REPLY_STRING) {
            hr_log_info("replayed", "dead_sid=%s stream=%s new_sid=%s", sid->str, stream, r->str);
            rc = 1;
        }
        if (r)
            freeReplyObject(r);
    }
    hr_free(a.v);
    hr_free(a.len);
    return rc;
}

int
wrk_replay_dead_letter(const wrk_config_t *cfg, long max, long *replayed, char *err, size_t errlen)
{
    hr_redis_addr_t addr;
    *replayed = 0;
    if (hr_redis_addr_parse(cfg->redis_url, &addr, err, errlen) != 0)
        return HR_ERR;
    redisContext *c = hr_redis_connect_sync(&addr, cfg->redis_timeout_ms, err, errlen);
    hr_redis_addr_clear(&addr);
    if (c == NULL)
        return HR_ERR;
    char cursor[WRK_SID_MAX + 1] = "-";
    int rc = 0;
    for (;;) {
        const char *argv[] = {"XRANGE", HR_STREAM_DEAD_LETTER, cursor, "+", "COUNT", "100"};
        redisReply *r = redisCommandArgv(c, (int)HR_ARRAY_LEN(argv), argv, NULL);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            snprintf(err, errlen, "XRANGE: %s", r ? (r->str ? r->str : "bad reply") : c->errstr);
            if (r)
                freeReplyObject(r);
            rc = HR_ERR;
            break;
        }
        size_t n = r->elements;
        for (size_t i = 0; i < n && rc == 0 && (max <= 0 || *replayed < max); i++) {
            const redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= WRK_SID_MAX)
                continue;
            /* Exclusive start for the next page. */
            snprintf(cursor, sizeof(cursor), "(%s", e->element[0]->str);
            int one = wrk_replay_one(c, e, err, errlen);
            if (one < 0)
                rc = HR_ERR;
            else
                *replayed += one;
        }
        freeReplyObject(r);
        if (rc != 0 || n < 100 || (max > 0 && *replayed >= max))
            break;
    }
    redisFree(c);
    return rc;
}
