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
 * Dead letter, atomic so an entry is dead-lettered once, written before the
 * ack so a failure (any error stops the script) leaves the entry pending
 * rather than acked without a trace.
 * KEYS[1] the entry's stream, KEYS[2] HR_STREAM_DEAD_LETTER
 * ARGV[1] group, ARGV[2] entry id, ARGV[3] MAXLEN ~ bound, ARGV[4] "1" when
 * the Redis server changed since the entry was read (its pending list may be
 * gone), ARGV[5..] the dead letter's field/value pairs (bounded: the
 * original fields past HR_DEAD_INLINE_MAX items travel as one value).
 * Reply: 1 dead-lettered and acked; 2 dead-lettered, nothing to ack (group or
 * pending entry lost with a Redis restart); 0 no longer pending here and the
 * server is the same (another consumer handled it).
 */
static const char wrk_lua_dead[] =
    "local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)\n"
    "local held = ok and type(p) == 'table' and #p > 0\n"
    "if ok and not held and ARGV[4] ~= '1' then return 0 end\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 5))\n"
    "if not held then return 2 end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "return 1\n";

/*
 * Appends the dead letter of entry e: meta fields, then its original fields,
 * inline or encoded into fields (which the arguments then borrow).
 */
static void
wrk_dead_args(wrk_worker_t *w, const wrk_entry_t *e, const char **argv, size_t *argvlen,
              size_t *argc, char *deliveries, char *at, wrk_buf_t *fields)
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
    size_t items = e->nraw - e->nraw % 2;
    if (items <= HR_DEAD_INLINE_MAX && e->nraw % 2 == 0) {
        for (size_t i = 0; i < items; i++) {
            WRK_ARG(p, e->rawlen[i]);
            p += e->rawlen[i];
        }
    } else {
        /* Too many for one script call (Lua's unpack stops near 8,000), or odd: one value. */
        fields->len = 0;
        for (size_t i = 0; i < e->nraw; i++) {
            char num[24];
            int nl = snprintf(num, sizeof(num), "%zu:", e->rawlen[i]);
            wrk_buf_append(fields, num, (size_t)nl);
            wrk_buf_append(fields, p, e->rawlen[i]);
            wrk_buf_append(fields, ",", 1);
            p += e->rawlen[i];
        }
        WRK_ARG(HR_FIELD_DEAD_FIELDS, strlen(HR_FIELD_DEAD_FIELDS));
        WRK_ARG(fields->len > 0 ? fields->data : "", fields->len);
    }
#undef WRK_ARG
    *argc = n;
}

/*
 * Acknowledges the committed batch in one pipeline: every dead letter by the
 * atomic script (XADD to the dead-letter stream, then XACK), then one XACK per
 * stream for the rest, except entries left pending on purpose (receipts
 * waiting for their row). Empties the batch. Returns 0, or HR_AGAIN (batch
 * kept, still committed: the ack is retried after reconnecting, skipping the
 * dead letters already written).
 */
int
wrk_ack(wrk_worker_t *w)
{
    wrk_batch_t *b = &w->batch;
    size_t sent = 0, dead = 0;
    char at[24];
    snprintf(at, sizeof(at), "%" PRIu64, hr_now_ms());
    /* Read from another server than this one (a restart, a failover): dead-letter regardless. */
    const char *lost = strcmp(w->batch_run_id, w->redis_run_id) != 0 ? "1" : "0";
    size_t *dead_at = hr_malloc((b->len ? b->len : 1) * sizeof(*dead_at));
    wrk_buf_t *fields = hr_calloc(b->len ? b->len : 1, sizeof(*fields));
    for (size_t i = 0; i < b->len; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (e->reason == NULL || e->no_ack || e->dead_done)
            continue;
        size_t cap = 9 + 12 + 2 + (e->nraw <= HR_DEAD_INLINE_MAX ? e->nraw : 0);
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
                              HR_DEAD_LETTER_MAXLEN,
                              lost};
        for (size_t k = 0; k < HR_ARRAY_LEN(head); k++) {
            argv[argc] = head[k];
            argvlen[argc++] = strlen(head[k]);
        }
        wrk_dead_args(w, e, argv, argvlen, &argc, deliveries, at, &fields[dead]);
        redisAppendCommandArgv(w->redis, (int)argc, argv, argvlen);
        hr_free(argv);
        hr_free(argvlen);
        dead_at[dead] = i;
        sent++;
        dead++;
    }
    size_t nxack = 0; /* the replies after the dead letters' are these XACKs' */
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
        nxack++;
    }
    /* Entries done with (stored or dead-lettered) drop their attempt counts. */
    size_t nattempt = 0;
    char(*afield)[WRK_SID_MAX + 64] = hr_malloc((b->len ? b->len : 1) * sizeof(*afield));
    for (size_t i = 0; i < b->len; i++) {
        const wrk_entry_t *e = &b->entries[i];
        if (!e->counted || e->no_ack)
            continue;
        if (nattempt == 0) {
            w->argv[0] = "HDEL";
            w->argvlen[0] = 4;
            w->argv[1] = HR_KEY_WORKER_ATTEMPTS;
            w->argvlen[1] = strlen(HR_KEY_WORKER_ATTEMPTS);
        }
        int n = snprintf(afield[nattempt], sizeof(afield[nattempt]), "%s/%s",
                         wrk_stream_name(e->stream), e->sid);
        w->argv[2 + nattempt] = afield[nattempt];
        w->argvlen[2 + nattempt] = (size_t)n;
        nattempt++;
    }
    if (nattempt > 0) {
        redisAppendCommandArgv(w->redis, (int)(2 + nattempt), w->argv, w->argvlen);
        sent++;
    }
    hr_free(afield);
    for (size_t k = 0; k < dead; k++)
        wrk_buf_free(&fields[k]);
    hr_free(fields);
    int rc = 0;
    size_t moved = 0, unacked = 0;
    for (size_t k = 0; k < sent; k++) {
        redisReply *r = NULL;
        if (redisGetReply(w->redis, (void **)&r) != REDIS_OK || r == NULL) {
            char err[256];
            snprintf(err, sizeof(err), "XACK: %s", w->redis->errstr);
            wrk_link_fail(&w->redis_link, err);
            wrk_redis_drop(w);
            hr_free(dead_at);
            return HR_AGAIN;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            char err[256], safe[200];
            snprintf(err, sizeof(err), "%s: %s", k < dead ? "dead letter" : "XACK",
                     wrk_log_safe(safe, sizeof(safe), r->str));
            if (k < dead) {
                char rid[WRK_RID_LOG_MAX];
                hr_log_error("dead_letter_failed",
                             "sid=%s request_id=\"%s\" error=\"%s\" action=left_pending",
                             b->entries[dead_at[k]].sid,
                             wrk_entry_rid(rid, &b->entries[dead_at[k]]), err);
            }
            if (rc == 0)
                wrk_link_fail(&w->redis_link, err);
            rc = HR_AGAIN;
        } else if (k < dead && r->type == REDIS_REPLY_INTEGER) {
            /* Written: an ack retry must not write it again. */
            if (r->integer > 0) {
                wrk_entry_t *e = &b->entries[dead_at[k]];
                char rid[WRK_RID_LOG_MAX], safe[256];
                e->dead_done = 1;
                hr_log_warn("entry_dead_lettered",
                            "sid=%s stream=%s request_id=\"%s\" reason=\"%s\"", e->sid,
                            wrk_stream_name(e->stream), wrk_entry_rid(rid, e),
                            wrk_log_safe(safe, sizeof(safe), e->reason));
            }
            moved += r->integer > 0;
            unacked += r->integer == 2;
        } else if (k >= dead && k < dead + nxack && r->type == REDIS_REPLY_INTEGER) {
            /* Counted at once: a retry after a later failure acks these no more. */
            hr_counter_add(w->m.acks, (uint64_t)r->integer);
        }
        freeReplyObject(r);
    }
    hr_free(dead_at);
    if (rc != 0) {
        wrk_redis_drop(w);
        return rc;
    }
    if (moved > 0)
        hr_log_warn("dead_lettered", "count=%zu stream=%s", moved, HR_STREAM_DEAD_LETTER);
    if (unacked > 0)
        hr_log_warn("dead_lettered_unpending",
                    "count=%zu reason=\"their pending entries were lost (Redis restarted or "
                    "failed over since they were read)\"",
                    unacked);
    w->stats.dead += moved;
    hr_counter_add(w->m.dead, moved);
    w->stats.batches++;
    wrk_batch_clear(b);
    return 0;
}
