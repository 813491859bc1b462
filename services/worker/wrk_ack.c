/* The worker's last stage: XACK of a committed batch and its dead letters. */
#include "wrk_internal.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/*
 * Dead letter, atomic so an entry is dead-lettered exactly once.
 * KEYS[1] the entry's stream, KEYS[2] HR_STREAM_DEAD_LETTER
 * ARGV[1] group, ARGV[2] entry id, ARGV[3] MAXLEN ~ bound, ARGV[4..] the dead
 * letter's field/value pairs
 * Reply: 1 moved, 0 no longer pending here (someone else handled it).
 */
static const char wrk_lua_dead[] =
    "if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))\n"
    "return 1\n";

/* Appends the dead letter of entry e (meta fields, then its original fields). */
static void
wrk_dead_args(wrk_worker_t *w, const wrk_entry_t *e, const char **argv, size_t *argvlen,
              size_t *argc, char *deliveries, char *at)
{
    size_t n = *argc;
#define WRK_ARG(s, l) (argv[n] = (s), argvlen[n++] = (l))
    WRK_ARG(HR_FIELD_DEAD_STREAM, strlen(HR_FIELD_DEAD_STREAM));
    WRK_ARG(wrk_stream_name(e->stream), strlen(wrk_stream_name(e->stream)));
    WRK_ARG(HR_FIELD_DEAD_SID, strlen(HR_FIELD_DEAD_SID));
    WRK_ARG(e->sid, strlen(e->sid));
    WRK_ARG(HR_FIELD_DEAD_REASON, strlen(HR_FIELD_DEAD_REASON));
    WRK_ARG(e->reason, strlen(e->reason));
    WRK_ARG(HR_FIELD_DEAD_DELIVERIES, strlen(HR_FIELD_DEAD_DELIVERIES));
    WRK_ARG(deliveries, strlen(deliveries));
    WRK_ARG(HR_FIELD_DEAD_CONSUMER, strlen(HR_FIELD_DEAD_CONSUMER));
    WRK_ARG(w->consumer, strlen(w->consumer));
    WRK_ARG(HR_FIELD_DEAD_AT, strlen(HR_FIELD_DEAD_AT));
    WRK_ARG(at, strlen(at));
    const char *p = e->raw;
    /* An odd trailing item cannot be a field/value pair: XADD would refuse it. */
    for (size_t i = 0; i < e->nraw - e->nraw % 2; i++) {
        WRK_ARG(p, e->rawlen[i]);
        p += e->rawlen[i];
    }
#undef WRK_ARG
    *argc = n;
}

/*
 * Acknowledges the committed batch in one pipeline: every dead letter by the
 * atomic script (XACK + XADD to the dead-letter stream), then one XACK per
 * stream for the rest, except entries left pending on purpose (receipts
 * waiting for their row). Empties the batch. Returns 0, or HR_AGAIN (batch
 * kept, still committed: the ack is retried after reconnecting; the script
 * cannot dead-letter an entry twice).
 */
int
wrk_ack(wrk_worker_t *w)
{
    wrk_batch_t *b = &w->batch;
    size_t sent = 0, dead = 0;
    char at[24];
    snprintf(at, sizeof(at), "%" PRIu64, hr_now_ms());
    for (size_t i = 0; i < b->len; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (e->reason == NULL || e->no_ack)
            continue;
        size_t cap = 9 + 12 + e->nraw;
        const char **argv = hr_malloc(cap * sizeof(*argv));
        size_t *argvlen = hr_malloc(cap * sizeof(*argvlen));
        char deliveries[16];
        snprintf(deliveries, sizeof(deliveries), "%u", e->deliveries);
        size_t argc = 0;
        const char *head[] = {"EVAL",
                              wrk_lua_dead,
                              "2",
                              wrk_stream_name(e->stream),
                              HR_STREAM_DEAD_LETTER,
                              HR_GROUP_WORKERS,
                              e->sid,
                              HR_DEAD_LETTER_MAXLEN};
        for (size_t k = 0; k < HR_ARRAY_LEN(head); k++) {
            argv[argc] = head[k];
            argvlen[argc++] = strlen(head[k]);
        }
        wrk_dead_args(w, e, argv, argvlen, &argc, deliveries, at);
        redisAppendCommandArgv(w->redis, (int)argc, argv, argvlen);
        hr_free(argv);
        hr_free(argvlen);
        sent++;
        dead++;
    }
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        size_t argc = 0;
        w->argv[argc] = "XACK";
        w->argvlen[argc++] = 4;
        w->argv[argc] = wrk_stream_name(s);
        w->argvlen[argc++] = strlen(wrk_stream_name(s));
        w->argv[argc] = HR_GROUP_WORKERS;
        w->argvlen[argc++] = strlen(HR_GROUP_WORKERS);
        for (size_t i = 0; i < b->len; i++) {
            wrk_entry_t *e = &b->entries[i];
            if (e->stream != s || e->no_ack || e->reason != NULL)
                continue;
            w->argv[argc] = e->sid;
            w->argvlen[argc++] = strlen(e->sid);
        }
        if (argc == 3)
            continue;
        redisAppendCommandArgv(w->redis, (int)argc, w->argv, w->argvlen);
        sent++;
    }
    int rc = 0;
    size_t moved = 0;
    for (size_t k = 0; k < sent; k++) {
        redisReply *r = NULL;
        if (redisGetReply(w->redis, (void **)&r) != REDIS_OK || r == NULL) {
            char err[256];
            snprintf(err, sizeof(err), "XACK: %s", w->redis->errstr);
            wrk_link_fail(&w->redis_link, err);
            wrk_redis_drop(w);
            return HR_AGAIN;
        }
        if (r->type == REDIS_REPLY_ERROR && rc == 0) {
            char err[256];
            snprintf(err, sizeof(err), "XACK: %s", r->str);
            wrk_link_fail(&w->redis_link, err);
            rc = HR_AGAIN;
        } else if (k < dead && r->type == REDIS_REPLY_INTEGER) {
            moved += (size_t)r->integer;
        }
        freeReplyObject(r);
    }
    if (rc != 0) {
        wrk_redis_drop(w);
        return rc;
    }
    if (moved > 0)
        hr_log_warn("dead_lettered", "count=%zu stream=%s", moved, HR_STREAM_DEAD_LETTER);
    w->stats.dead += moved;
    w->stats.batches++;
    wrk_batch_clear(b);
    return 0;
}
