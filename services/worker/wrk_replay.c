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
 * in its stream, never both or neither.
 * KEYS[1] HR_STREAM_DEAD_LETTER, KEYS[2] the stream it came from
 * ARGV[1] dead letter id, ARGV[2..] the original field/value pairs
 * Reply: the new entry id, or false if the dead letter was gone.
 */
static const char wrk_lua_replay[] =
    "if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end\n"
    "return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))\n";

/*
 * One dead letter back to its stream: splits the dead_* fields from the
 * original ones and runs wrk_lua_replay. Returns 1 replayed, 0 skipped
 * (logged), HR_ERR on a Redis failure (err filled).
 */
static int
wrk_replay_one(redisContext *c, const redisReply *e, char *err, size_t errlen)
{
    const redisReply *sid = e->element[0], *f = e->element[1];
    const char *stream = NULL;
    size_t n = f->type == REDIS_REPLY_ARRAY ? f->elements : 0;
    const char **argv = hr_malloc((n + 5) * sizeof(*argv));
    size_t *argvlen = hr_malloc((n + 5) * sizeof(*argvlen));
    size_t argc = 5;
    for (size_t i = 0; i + 1 < n; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, HR_FIELD_DEAD_STREAM) == 0) {
            stream = v->str;
        } else if (strncmp(k->str, "dead_", 5) != 0) {
            argv[argc] = k->str;
            argvlen[argc++] = k->len;
            argv[argc] = v->str;
            argvlen[argc++] = v->len;
        }
    }
    int rc = 0;
    if (stream == NULL || wrk_stream_index(stream, strlen(stream)) < 0 || argc == 5) {
        hr_log_warn("replay_skipped", "sid=%s reason=\"no origin stream or no original fields\"",
                    sid->str);
    } else {
        argv[0] = "EVAL";
        argv[1] = wrk_lua_replay;
        argv[2] = "2";
        argv[3] = HR_STREAM_DEAD_LETTER;
        argv[4] = stream;
        for (int k = 0; k < 5; k++)
            argvlen[k] = strlen(argv[k]);
        /* ARGV[1] is the dead letter's id: insert it after the keys. */
        argv = hr_realloc(argv, (argc + 1) * sizeof(*argv));
        argvlen = hr_realloc(argvlen, (argc + 1) * sizeof(*argvlen));
        memmove(argv + 6, argv + 5, (argc - 5) * sizeof(*argv));
        memmove(argvlen + 6, argvlen + 5, (argc - 5) * sizeof(*argvlen));
        argv[5] = sid->str;
        argvlen[5] = sid->len;
        redisReply *r = redisCommandArgv(c, (int)argc + 1, argv, argvlen);
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
    hr_free(argv);
    hr_free(argvlen);
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
