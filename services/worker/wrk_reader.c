/* The worker's reading stage: XREADGROUP of new and own pending entries, XAUTOCLAIM, delivery
 * counts. */
#include "wrk_internal.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Claims take at most 1/WRK_CLAIM_SHARE of a batch per stream and step. */
#define WRK_CLAIM_SHARE 4

/*
 * Moves a list of stream entries ([id, [field, value, ...] or nil], ...) of
 * stream s into the batch, logging each rejected one. Returns how many
 * entries were added.
 */
static size_t
wrk_take_entries(wrk_worker_t *w, int s, const redisReply *list)
{
    size_t added = 0;
    if (list == NULL || list->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < list->elements; i++) {
        const redisReply *e = list->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING) {
            hr_log_error("entry_unreadable", "reason=\"reply entry is not [id, fields]\"");
            continue;
        }
        const redisReply *sid = e->element[0], *f = e->element[1];
        const char *const *kv = NULL;
        size_t nkv = 0;
        if (f->type == REDIS_REPLY_ARRAY) {
            if (f->elements > w->kvcap) {
                w->kvcap = f->elements;
                w->kv = hr_realloc(w->kv, w->kvcap * sizeof(*w->kv));
                w->kvlen = hr_realloc(w->kvlen, w->kvcap * sizeof(*w->kvlen));
            }
            for (size_t j = 0; j < f->elements; j++) {
                const redisReply *x = f->element[j];
                int str = x->type == REDIS_REPLY_STRING;
                w->kv[j] = str ? x->str : "";
                w->kvlen[j] = str ? x->len : 0;
            }
            kv = w->kv;
            nkv = f->elements;
        }
        char err[512], safe[512];
        int rc = wrk_batch_add_entry(&w->batch, s, sid->str, sid->len, kv, w->kvlen, nkv, err,
                                     sizeof(err));
        if (rc == HR_AGAIN) {
            /* Cannot happen with COUNT <= capacity; left pending, re-read later. */
            hr_log_error("entry_skipped", "sid=%.*s reason=\"batch full or id too long\"",
                         (int)(sid->len > 64 ? 64 : sid->len), sid->str);
            continue;
        }
        added++;
        if (rc == HR_DECLINED) {
            /* Dead-lettered and acked with the batch, so it never blocks the stream. */
            const wrk_entry_t *e = &w->batch.entries[w->batch.len - 1];
            char rid[WRK_RID_LOG_MAX];
            hr_log_error("entry_rejected", "sid=%s stream=%s request_id=\"%s\" reason=\"%s\"",
                         e->sid, wrk_stream_name(s), wrk_entry_rid(rid, e),
                         wrk_log_safe(safe, sizeof(safe), err));
            w->stats.rejected++;
        }
    }
    return added;
}

/*
 * Entries batch[from..len) of stream s were delivered before (re-read or
 * claimed): looks up their delivery counts (XPENDING), for the dead letter and
 * for wrk_count_attempts(); a delivery count alone never makes an entry
 * poison (re-reads, restarts and claims raise it while PostgreSQL is down).
 * Receipts are exempt: they are retried on purpose until
 * worker.receipt_max_age_ms. Returns 0 or HR_AGAIN (Redis failed).
 */
static int
wrk_check_deliveries(wrk_worker_t *w, int s, size_t from)
{
    wrk_batch_t *b = &w->batch;
    if (from >= b->len || s == WRK_S_RECEIPT)
        return 0;
    char count[24];
    snprintf(count, sizeof(count), "%zu", b->len - from);
    const char *argv[] = {"XPENDING",           wrk_stream_name(s),         HR_GROUP_WORKERS,
                          b->entries[from].sid, b->entries[b->len - 1].sid, count,
                          w->consumer};
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_redis_error(w, "XPENDING", r);
    size_t i = from;
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
        const redisReply *p = r->element[k];
        if (p->type != REDIS_REPLY_ARRAY || p->elements < 4 ||
            p->element[0]->type != REDIS_REPLY_STRING || p->element[3]->type != REDIS_REPLY_INTEGER)
            continue;
        while (i < b->len && strcmp(b->entries[i].sid, p->element[0]->str) != 0)
            i++;
        if (i == b->len)
            break;
        wrk_entry_t *e = &b->entries[i];
        e->deliveries = (unsigned)p->element[3]->integer;
    }
    freeReplyObject(r);
    return 0;
}

/* The index of stream name n, or -1. */
int
wrk_stream_index(const char *n, size_t len)
{
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        if (strlen(wrk_stream_name(s)) == len && memcmp(wrk_stream_name(s), n, len) == 0)
            return s;
    }
    return -1;
}

/* Entries of an XREADGROUP reply ([[stream, entries]...] or nil) into the batch. */
static size_t
wrk_take_xread(wrk_worker_t *w, const redisReply *r)
{
    size_t n = 0;
    if (r->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *s = r->element[i];
        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
            s->element[0]->type != REDIS_REPLY_STRING)
            continue;
        int idx = wrk_stream_index(s->element[0]->str, s->element[0]->len);
        if (idx >= 0)
            n += wrk_take_entries(w, idx, s->element[1]);
    }
    return n;
}

/* Handles an XREADGROUP/XAUTOCLAIM error reply; NOGROUP recreates the groups. */
static int
wrk_fetch_error(wrk_worker_t *w, const char *cmd, redisReply *r)
{
    if (strncmp(r->str, "NOGROUP", 7) != 0)
        return wrk_redis_error(w, cmd, r);
    freeReplyObject(r);
    hr_log_warn("group_missing", "group=%s action=recreate", HR_GROUP_WORKERS);
    if (wrk_redis_group(w) != 0)
        return HR_AGAIN;
    wrk_reread_pending(w);
    return 0;
}

/* XREADGROUP of this consumer's own pending entries of stream s after its cursor. */
static int
wrk_fetch_pending(wrk_worker_t *w, int s, size_t want, size_t *got)
{
    char count[24];
    snprintf(count, sizeof(count), "%zu", want);
    const char *argv[] = {"XREADGROUP", "GROUP",   HR_GROUP_WORKERS,   w->consumer,         "COUNT",
                          count,        "STREAMS", wrk_stream_name(s), w->pending_cursor[s]};
    *got = 0;
    size_t from = w->batch.len;
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_fetch_error(w, "XREADGROUP", r);
    *got = wrk_take_xread(w, r);
    freeReplyObject(r);
    if (*got == 0) {
        w->read_pending[s] = 0;
        return 0;
    }
    hr_log_info("pending_reread", "stream=%s count=%zu", wrk_stream_name(s), *got);
    snprintf(w->pending_cursor[s], sizeof(w->pending_cursor[s]), "%s",
             w->batch.entries[w->batch.len - 1].sid);
    return wrk_check_deliveries(w, s, from);
}

/*
 * XREADGROUP of new entries, up to count of each stream, blocking up to
 * block_ms (0: not at all). While the notifications stream has a backlog
 * (the last read returned a full count of it) receipts are not read: they
 * would only wait, pending, for rows still behind in that backlog, and their
 * retries would crowd out the entries that carry those rows.
 */
static int
wrk_fetch_new(wrk_worker_t *w, int count, int block_ms, size_t *got)
{
    char cnt[16], block[16];
    snprintf(cnt, sizeof(cnt), "%d", count);
    snprintf(block, sizeof(block), "%d", block_ms);
    const char *argv[16];
    size_t argc = 0;
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = HR_GROUP_WORKERS;
    argv[argc++] = w->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = cnt;
    if (block_ms > 0) {
        argv[argc++] = "BLOCK";
        argv[argc++] = block;
    }
    argv[argc++] = "STREAMS";
    int nstreams = 0;
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        if (s == WRK_S_RECEIPT && w->notify_backlog)
            continue;
        argv[argc++] = wrk_stream_name(s);
        nstreams++;
    }
    for (int s = 0; s < nstreams; s++)
        argv[argc++] = ">";
    *got = 0;
    size_t from = w->batch.len;
    redisReply *r = wrk_redis_cmd(w, (int)argc, argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_fetch_error(w, "XREADGROUP", r);
    *got = wrk_take_xread(w, r);
    freeReplyObject(r);
    size_t notify = 0;
    for (size_t i = from; i < w->batch.len; i++)
        notify += w->batch.entries[i].stream == WRK_S_NOTIFY;
    w->notify_backlog = notify >= (size_t)count;
    return 0;
}

/*
 * XAUTOCLAIM on stream s: takes over entries left pending longer than
 * claim_idle_ms (receipts: receipt_retry_ms, which also retries this
 * consumer's own receipts waiting for their row), continuing from the saved
 * cursor. Entries Redis reports as deleted (trimmed while pending) are already
 * gone from the PEL: log them.
 */
static int
wrk_fetch_claim(wrk_worker_t *w, int s, size_t want, size_t *got)
{
    char count[24], idle[16];
    int idle_ms = s == WRK_S_RECEIPT ? w->cfg->receipt_retry_ms : w->cfg->claim_idle_ms;
    snprintf(count, sizeof(count), "%zu", want);
    snprintf(idle, sizeof(idle), "%d", idle_ms);
    const char *argv[] = {"XAUTOCLAIM", wrk_stream_name(s), HR_GROUP_WORKERS, w->consumer,
                          idle,         w->claim_cursor[s], "COUNT",          count};
    *got = 0;
    size_t from = w->batch.len;
    /* Claimed receipts are aged (wrk_commit): on a fresh reading of Redis's clock. */
    if (s == WRK_S_RECEIPT && wrk_redis_clock(w) != 0)
        return HR_AGAIN;
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ERROR)
        return wrk_fetch_error(w, "XAUTOCLAIM", r);
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= WRK_SID_MAX) {
        freeReplyObject(r);
        wrk_link_fail(&w->redis_link, "XAUTOCLAIM: unexpected reply shape");
        wrk_redis_drop(w);
        return HR_AGAIN;
    }
    memcpy(w->claim_cursor[s], r->element[0]->str, r->element[0]->len);
    w->claim_cursor[s][r->element[0]->len] = '\0';
    *got = wrk_take_entries(w, s, r->element[1]);
    if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY &&
        r->element[2]->elements > 0) {
        const redisReply *d = r->element[2];
        hr_log_error("entries_lost",
                     "stream=%s count=%zu first_sid=%s reason=\"deleted from the stream "
                     "while pending; no row can be written\"",
                     wrk_stream_name(s), d->elements,
                     d->element[0]->type == REDIS_REPLY_STRING ? d->element[0]->str : "?");
    }
    if (strcmp(w->claim_cursor[s], "0-0") == 0) {
        uint64_t every = (uint64_t)idle_ms / 2;
        w->next_claim_ms[s] = hr_mono_ms() + (every < 200 ? 200 : every);
    }
    freeReplyObject(r);
    if (*got > 0) {
        w->stats.claimed += *got;
        hr_counter_add(w->m.claims, *got);
        if (s == WRK_S_RECEIPT)
            hr_log_debug("entries_claimed", "count=%zu stream=%s min_idle_ms=%d", *got,
                         wrk_stream_name(s), idle_ms);
        else
            hr_log_info("entries_claimed", "count=%zu stream=%s min_idle_ms=%d", *got,
                        wrk_stream_name(s), idle_ms);
    }
    return wrk_check_deliveries(w, s, from);
}

/*
 * Fills the empty batch, in order of priority: this consumer's own pending
 * entries (after a (re)connect), entries abandoned by other consumers (and
 * receipts due for a retry, at most WRK_CLAIM_SHARE of a batch per stream
 * and step), then, in the same step, new entries: it keeps reading until
 * the batch holds worker.batch_size entries or worker.flush_ms have passed
 * since the first arrived (a first read into an empty batch blocks up to
 * block_ms). So a backlog of waiting receipts cannot starve new entries.
 * Returns 0 (the batch may still be empty) or HR_AGAIN after a Redis failure.
 */
int
wrk_fetch(wrk_worker_t *w)
{
    wrk_batch_t *b = &w->batch;
    size_t got, want = (size_t)w->cfg->batch_size;
    size_t claim_max = want / WRK_CLAIM_SHARE > 0 ? want / WRK_CLAIM_SHARE : 1;
    int rc, reread = 0;
    if (b->len == 0)
        memcpy(w->batch_run_id, w->redis_run_id, sizeof(w->batch_run_id));
    for (int s = 0; s < WRK_NSTREAMS && b->len < want; s++) {
        if (!w->read_pending[s])
            continue;
        /* Receipts are retries by nature: bounded like claims, so rows come first. */
        size_t n = want - b->len;
        if (s == WRK_S_RECEIPT && n > claim_max)
            n = claim_max;
        if ((rc = wrk_fetch_pending(w, s, n, &got)) != 0)
            return rc;
        reread += got > 0;
    }
    /* Claims could return entries just re-read (a consumer's own idle receipts). */
    for (int s = 0; s < WRK_NSTREAMS && !reread && b->len < want; s++) {
        int idle = s == WRK_S_RECEIPT ? w->cfg->receipt_retry_ms : w->cfg->claim_idle_ms;
        if (idle <= 0 || hr_mono_ms() < w->next_claim_ms[s])
            continue;
        size_t n = want - b->len < claim_max ? want - b->len : claim_max;
        if ((rc = wrk_fetch_claim(w, s, n, &got)) != 0)
            return rc;
    }
    if (b->len >= want)
        return 0;
    /* Each stream may return COUNT entries: the batch holds three times batch_size. */
    int first_block = b->len == 0 ? w->cfg->block_ms : 0;
    if ((rc = wrk_fetch_new(w, (int)(want - b->len), first_block, &got)) != 0)
        return b->len > 0 ? 0 : rc;
    uint64_t deadline = hr_mono_ms() + (uint64_t)w->cfg->flush_ms;
    while (got > 0 && b->len < want && !*w->stop) {
        uint64_t now = hr_mono_ms();
        if (now >= deadline)
            break;
        if ((rc = wrk_fetch_new(w, (int)(want - b->len), (int)(deadline - now), &got)) != 0)
            return b->len > 0 ? 0 : rc;
    }
    return 0;
}

/* The attempts hash field of entry e: "<stream>/<sid>". */
static size_t
wrk_attempt_field(const wrk_entry_t *e, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", wrk_stream_name(e->stream), e->sid);
    return n < 0 ? 0 : ((size_t)n >= cap ? cap - 1 : (size_t)n);
}

/*
 * Sends HINCRBY by for every entry selected by want (counted or not), one
 * pipeline; sets the entries' attempts from the replies. 0 or HR_AGAIN.
 */
static int
wrk_attempts_add(wrk_worker_t *w, int counted, long by)
{
    wrk_batch_t *b = &w->batch;
    size_t sent = 0;
    char incr[8];
    snprintf(incr, sizeof(incr), "%ld", by);
    for (size_t i = 0; i < b->len; i++) {
        wrk_entry_t *e = &b->entries[i];
        int want =
            counted ? e->counted
                    : (e->is_row && e->stream != WRK_S_RECEIPT && e->deliveries > 1 && !e->counted);
        if (!want)
            continue;
        char field[WRK_SID_MAX + 64];
        size_t fl = wrk_attempt_field(e, field, sizeof(field));
        const char *argv[] = {"HINCRBY", HR_KEY_WORKER_ATTEMPTS, field, incr};
        size_t argvlen[] = {7, strlen(HR_KEY_WORKER_ATTEMPTS), fl, strlen(incr)};
        redisAppendCommandArgv(w->redis, 4, argv, argvlen);
        sent++;
    }
    int rc = 0;
    for (size_t i = 0, k = 0; k < sent; i++) {
        wrk_entry_t *e = &b->entries[i];
        int want =
            counted ? e->counted
                    : (e->is_row && e->stream != WRK_S_RECEIPT && e->deliveries > 1 && !e->counted);
        if (!want)
            continue;
        k++;
        redisReply *r = NULL;
        if (redisGetReply(w->redis, (void **)&r) != REDIS_OK || r == NULL) {
            char err[256];
            snprintf(err, sizeof(err), "HINCRBY: %s", w->redis->errstr);
            wrk_link_fail(&w->redis_link, err);
            wrk_redis_drop(w);
            return HR_AGAIN;
        }
        if (r->type == REDIS_REPLY_INTEGER) {
            e->attempts = r->integer < 0 ? 0 : (unsigned)r->integer;
            e->counted = !counted;
        } else {
            rc = HR_AGAIN;
        }
        freeReplyObject(r);
    }
    return rc;
}

int
wrk_count_attempts(wrk_worker_t *w)
{
    if (w->redis == NULL || wrk_attempts_add(w, 0, 1) != 0)
        return HR_AGAIN;
    wrk_batch_t *b = &w->batch;
    for (size_t i = 0; i < b->len; i++) {
        wrk_entry_t *e = &b->entries[i];
        if (!e->counted || !e->is_row)
            continue;
        if (e->attempts <= (unsigned)w->cfg->max_deliveries) {
            /* Delivered again after a store attempt that did not end in an ack: a retry. */
            char rid[WRK_RID_LOG_MAX];
            hr_log_info("entry_retry",
                        "sid=%s stream=%s request_id=\"%s\" attempts=%u deliveries=%u", e->sid,
                        wrk_stream_name(e->stream), wrk_entry_rid(rid, e), e->attempts,
                        e->deliveries);
            continue;
        }
        char reason[160];
        snprintf(reason, sizeof(reason),
                 "%u store attempts failed (a worker crashed storing it, or postgres refused it)",
                 e->attempts);
        char rid[WRK_RID_LOG_MAX];
        hr_log_error("entry_poison", "sid=%s stream=%s request_id=\"%s\" attempts=%u deliveries=%u",
                     e->sid, wrk_stream_name(e->stream), wrk_entry_rid(rid, e), e->attempts,
                     e->deliveries);
        wrk_batch_reject_reason(b, i, reason);
        w->stats.rejected++;
    }
    return 0;
}

void
wrk_uncount_attempts(wrk_worker_t *w)
{
    if (w->redis != NULL)
        wrk_attempts_add(w, 1, -1);
}
