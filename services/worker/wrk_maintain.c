/* Stream trimming and removal of gone consumers. */
#include "wrk_internal.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <stdio.h>
#include <string.h>

/*
 * Maintenance of one stream, atomic so nothing pending can be trimmed or
 * orphaned between the look and the change.
 * KEYS[1] stream
 * ARGV[1] our group, ARGV[2] idle ms after which a consumer with nothing
 * pending is deleted, ARGV[3] this consumer (never deleted)
 * Trims below the oldest entry any group still needs: per group, its oldest
 * pending entry, or if none its last-delivered id (XTRIM MINID keeps that id).
 * Reply: {entries trimmed, consumers deleted}.
 */
static const char wrk_lua_maintain[] =
    "local function tbl(a) local t = {} for i = 1, #a, 2 do t[a[i]] = a[i + 1] end return t end\n"
    "local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])\n"
    "if not ok or type(groups) ~= 'table' then return {0, 0} end\n"
    "local min, minms, minseq\n"
    "for _, g in ipairs(groups) do\n"
    "  local t = tbl(g)\n"
    "  local cand = t['last-delivered-id']\n"
    "  if t['pending'] > 0 then cand = redis.call('XPENDING', KEYS[1], t['name'])[2] end\n"
    "  local a, b = string.match(cand, '^(%d+)-(%d+)$')\n"
    "  local ms, seq = tonumber(a), tonumber(b)\n"
    "  if ms and (not min or ms < minms or (ms == minms and seq < minseq)) then\n"
    "    min, minms, minseq = cand, ms, seq\n"
    "  end\n"
    "end\n"
    "local trimmed = 0\n"
    "if min then trimmed = redis.call('XTRIM', KEYS[1], 'MINID', min) end\n"
    "local deleted = 0\n"
    "local ok2, cs = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])\n"
    "if ok2 and type(cs) == 'table' then\n"
    "  for _, c in ipairs(cs) do\n"
    "    local t = tbl(c)\n"
    "    if t['name'] ~= ARGV[3] and t['pending'] == 0 and t['idle'] > tonumber(ARGV[2]) then\n"
    "      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], t['name'])\n"
    "      deleted = deleted + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {trimmed, deleted}\n";

/*
 * Every worker.maintenance_ms: trims each stream below what every group still
 * needs and deletes consumers gone for worker.consumer_gc_ms with nothing
 * pending (wrk_lua_maintain). Failures are left to the next round.
 */
void
wrk_maintain(wrk_worker_t *w)
{
    if (w->cfg->maintenance_ms <= 0 || hr_mono_ms() < w->next_maintain_ms || w->redis == NULL)
        return;
    w->next_maintain_ms = hr_mono_ms() + (uint64_t)w->cfg->maintenance_ms;
    char gc[16];
    snprintf(gc, sizeof(gc), "%d", w->cfg->consumer_gc_ms);
    for (int s = 0; s < WRK_NSTREAMS && w->redis != NULL; s++) {
        const char *argv[] = {"EVAL", wrk_lua_maintain, "1", wrk_stream_name(s), HR_GROUP_WORKERS,
                              gc,     w->consumer};
        redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
        if (r == NULL)
            return;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_INTEGER &&
            r->element[1]->type == REDIS_REPLY_INTEGER) {
            w->stats.trimmed += (uint64_t)r->element[0]->integer;
            if (r->element[0]->integer > 0)
                hr_log_debug("stream_trimmed", "stream=%s entries=%lld", wrk_stream_name(s),
                             r->element[0]->integer);
            if (r->element[1]->integer > 0)
                hr_log_info("consumers_removed", "stream=%s count=%lld idle_ms_over=%d",
                            wrk_stream_name(s), r->element[1]->integer, w->cfg->consumer_gc_ms);
        } else if (r->type == REDIS_REPLY_ERROR) {
            hr_log_warn("maintenance_failed", "stream=%s error=\"%s\"", wrk_stream_name(s), r->str);
        }
        freeReplyObject(r);
    }
}
