#include "wrk_internal.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_redis.h"
#include "herald/hr_time.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

const hr_cfg_field_t wrk_config_fields[] = {
    /* redis.url: redis://[:password@]host[:port][/db] holding the notifications stream. */
    {"redis.url", HR_CFG_STR, offsetof(wrk_config_t, redis_url), "redis://127.0.0.1:6379", 0, 0},
    /* redis.timeout_ms: connect timeout, and how long past worker.block_ms a reply may take. */
    {"redis.timeout_ms", HR_CFG_INT, offsetof(wrk_config_t, redis_timeout_ms), "2000", 10, 600000},
    /* postgres.url: libpq conninfo ("host=... dbname=...") or postgresql:// URI. */
    {"postgres.url", HR_CFG_STR, offsetof(wrk_config_t, postgres_url),
     "host=127.0.0.1 port=5432 dbname=herald user=postgres", 0, 0},
    /* worker.consumer: name in the consumer group; empty means <hostname>-<pid>. */
    {"worker.consumer", HR_CFG_STR, offsetof(wrk_config_t, consumer), "", 0, 0},
    /* worker.batch_size: entries per XREADGROUP, rows per transaction. */
    {"worker.batch_size", HR_CFG_INT, offsetof(wrk_config_t, batch_size), "5000", 1, 10000},
    /* worker.flush_ms: a batch is stored once it holds batch_size entries or is this old. */
    {"worker.flush_ms", HR_CFG_INT, offsetof(wrk_config_t, flush_ms), "50", 0, 60000},
    /*
     * worker.max_deliveries: an entry whose store was attempted more often
     * than this with PostgreSQL reachable, without success (it crashed
     * workers), goes to the dead-letter stream. Re-reads, restarts and claims
     * while PostgreSQL is down do not count.
     */
    {"worker.max_deliveries", HR_CFG_INT, offsetof(wrk_config_t, max_deliveries), "10", 1, 1000},
    /* worker.receipt_retry_ms: how soon a receipt that found no row is tried again. */
    {"worker.receipt_retry_ms", HR_CFG_INT, offsetof(wrk_config_t, receipt_retry_ms), "2000", 10,
     86400000},
    /* worker.receipt_max_age_ms: a receipt still without its row this long after it was written is
       dead-lettered. */
    {"worker.receipt_max_age_ms", HR_CFG_INT, offsetof(wrk_config_t, receipt_max_age_ms), "3600000",
     1000, 604800000},
    /* worker.maintenance_ms: how often the streams are trimmed and gone consumers removed; 0
       disables. */
    {"worker.maintenance_ms", HR_CFG_INT, offsetof(wrk_config_t, maintenance_ms), "5000", 0,
     86400000},
    /* worker.consumer_gc_ms: a consumer idle this long with nothing pending is deleted from the
       group. */
    {"worker.consumer_gc_ms", HR_CFG_INT, offsetof(wrk_config_t, consumer_gc_ms), "600000", 1000,
     604800000},
    /* worker.block_ms: XREADGROUP BLOCK; also bounds how late a stop signal is seen. */
    {"worker.block_ms", HR_CFG_INT, offsetof(wrk_config_t, block_ms), "100", 1, 60000},
    /*
     * worker.claim_idle_ms: take over (XAUTOCLAIM) entries another consumer has
     * held this long without acking, e.g. a worker killed mid-batch whose
     * <hostname>-<pid> name will never come back; 0 disables.
     */
    {"worker.claim_idle_ms", HR_CFG_INT, offsetof(wrk_config_t, claim_idle_ms), "30000", 0,
     86400000},
    /* worker.migrations_dir: NNN_name.sql files applied at start and by --migrate. */
    {"worker.migrations_dir", HR_CFG_STR, offsetof(wrk_config_t, migrations_dir), "migrations", 0,
     0},
    /* worker.host: address of the small HTTP listener for /metrics, /healthz and /readyz. */
    {"worker.host", HR_CFG_STR, offsetof(wrk_config_t, host), "127.0.0.1", 0, 0},
    /* worker.port: its port (proto/metrics.md); 0 picks a free one. */
    {"worker.port", HR_CFG_INT, offsetof(wrk_config_t, port), "8084", 0, 65535},
    /* log.level: debug|info|warn|error. */
    {"log.level", HR_CFG_STR, offsetof(wrk_config_t, log_level), "info", 0, 0},
};
const size_t wrk_config_nfields = HR_ARRAY_LEN(wrk_config_fields);

#define WRK_BACKOFF_MIN_MS 100
#define WRK_BACKOFF_MAX_MS 5000
#define WRK_SLEEP_SLICE_MS 50

/* Copies s into a log-safe form: no quotes or control characters, bounded. */
const char *
wrk_log_safe(char *dst, size_t cap, const char *s)
{
    size_t n = 0;
    for (; s != NULL && *s != '\0' && n + 1 < cap; s++)
        dst[n++] = (*s == '"') ? '\'' : ((unsigned char)*s < 0x20 ? ' ' : *s);
    dst[n] = '\0';
    return dst;
}

const char *
wrk_entry_rid(char *dst, const wrk_entry_t *e)
{
    size_t n;
    const char *v = wrk_entry_field(e, HR_FIELD_REQUEST_ID, &n);
    if (v == NULL)
        return strcpy(dst, "-");
    /* Cut at HR_REQUEST_ID_MAX: entries written by others may carry anything. */
    return hr_log_quote(dst, WRK_RID_LOG_MAX, v, n < HR_REQUEST_ID_MAX ? n : HR_REQUEST_ID_MAX);
}

/* Makes err safe to log inside quotes, in place (see wrk_log_safe). */
void
wrk_err_safe(char *err)
{
    for (; *err != '\0'; err++)
        *err = (*err == '"') ? '\'' : ((unsigned char)*err < 0x20 ? ' ' : *err);
}

static void
wrk_link_init(wrk_link_t *l, const char *name)
{
    memset(l, 0, sizeof(*l));
    l->name = name;
    hr_backoff_init(&l->backoff, WRK_BACKOFF_MIN_MS, WRK_BACKOFF_MAX_MS);
}

/* Records a failed attempt; only the first of an outage is logged. */
void
wrk_link_fail(wrk_link_t *l, const char *error)
{
    l->attempts++;
    if (l->down)
        return;
    l->down = 1;
    l->since_ms = hr_mono_ms();
    char safe[512];
    hr_log_warn("unavailable", "dep=%s error=\"%s\" action=retry_with_backoff", l->name,
                wrk_log_safe(safe, sizeof(safe), error));
}

void
wrk_link_ok(wrk_link_t *l)
{
    if (!l->ever_up)
        hr_log_info("connected", "dep=%s", l->name);
    l->ever_up = 1;
    if (l->down)
        hr_log_info("recovered", "dep=%s down_ms=%" PRIu64 " attempts=%u", l->name,
                    hr_mono_ms() - l->since_ms, l->attempts);
    l->down = 0;
    l->attempts = 0;
    hr_backoff_reset(&l->backoff);
}

/* Sleeps ms, in slices, returning early once a stop is requested; answers HTTP meanwhile. */
static void
wrk_sleep(wrk_worker_t *w, uint32_t ms)
{
    uint64_t end = hr_mono_ms() + ms;
    while (!*w->stop) {
        uint64_t now = hr_mono_ms();
        if (now >= end)
            return;
        uint64_t slice = end - now < WRK_SLEEP_SLICE_MS ? end - now : WRK_SLEEP_SLICE_MS;
        wrk_http_wait(w, (uint32_t)slice);
    }
}

static void
wrk_backoff_sleep(wrk_worker_t *w, wrk_link_t *l)
{
    wrk_sleep(w, hr_backoff_next(&l->backoff));
}

/* ---- Redis connection ---- */

void
wrk_redis_drop(wrk_worker_t *w)
{
    if (w->redis != NULL)
        redisFree(w->redis);
    w->redis = NULL;
}

/*
 * Sends one command. Returns the reply (owned by the caller, possibly an
 * error reply), or NULL after an I/O error, with the connection dropped and
 * the outage recorded.
 */
redisReply *
wrk_redis_cmd(wrk_worker_t *w, int argc, const char **argv, const size_t *argvlen)
{
    redisReply *r = redisCommandArgv(w->redis, argc, argv, argvlen);
    if (r == NULL) {
        char err[256];
        snprintf(err, sizeof(err), "%s: %s", argv[0], w->redis->errstr);
        wrk_link_fail(&w->redis_link, err);
        wrk_redis_drop(w);
    }
    return r;
}

/* An error reply to a command: recorded as an outage, the connection is dropped. */
int
wrk_redis_error(wrk_worker_t *w, const char *cmd, redisReply *r)
{
    char err[256];
    snprintf(err, sizeof(err), "%s: %s", cmd, r->str);
    freeReplyObject(r);
    wrk_link_fail(&w->redis_link, err);
    wrk_redis_drop(w);
    return HR_AGAIN;
}

/* Creates the consumer group (and the stream) on every stream read. 0 or HR_AGAIN. */
int
wrk_redis_group(wrk_worker_t *w)
{
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        const char *argv[] = {"XGROUP",         "CREATE", wrk_stream_name(s),
                              HR_GROUP_WORKERS, "0",      "MKSTREAM"};
        redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
        if (r == NULL)
            return HR_AGAIN;
        if (r->type == REDIS_REPLY_ERROR) {
            if (strncmp(r->str, "BUSYGROUP", 9) != 0)
                return wrk_redis_error(w, "XGROUP CREATE", r);
        } else {
            hr_log_info("group_created", "stream=%s group=%s", wrk_stream_name(s),
                        HR_GROUP_WORKERS);
        }
        freeReplyObject(r);
    }
    return 0;
}

/* Schedules a re-read of this consumer's pending entries on every stream. */
void
wrk_reread_pending(wrk_worker_t *w)
{
    for (int s = 0; s < WRK_NSTREAMS; s++) {
        w->read_pending[s] = 1;
        snprintf(w->pending_cursor[s], sizeof(w->pending_cursor[s]), "0");
    }
}

/*
 * Records the server's run_id (new at every restart): a batch read from
 * another run lost its pending entries with it, so its dead letters are
 * written whatever XPENDING says (wrk_ack). 0 or HR_AGAIN.
 */
static int
wrk_redis_run_id(wrk_worker_t *w)
{
    const char *argv[] = {"INFO", "server"};
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(argv), argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    w->redis_run_id[0] = '\0';
    const char *p = r->type == REDIS_REPLY_STRING ? strstr(r->str, "run_id:") : NULL;
    if (p != NULL) {
        p += 7;
        size_t n = strcspn(p, "\r\n");
        if (n >= sizeof(w->redis_run_id))
            n = sizeof(w->redis_run_id) - 1;
        memcpy(w->redis_run_id, p, n);
        w->redis_run_id[n] = '\0';
    }
    freeReplyObject(r);
    return 0;
}

int
wrk_redis_clock(wrk_worker_t *w)
{
    const char *argv[] = {"TIME"};
    redisReply *r = wrk_redis_cmd(w, 1, argv, NULL);
    if (r == NULL)
        return HR_AGAIN;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
        w->redis_clock_ms = strtoull(r->element[0]->str, NULL, 10) * 1000 +
                            strtoull(r->element[1]->str, NULL, 10) / 1000;
        w->redis_clock_mono = hr_mono_ms();
    }
    freeReplyObject(r);
    return 0;
}

uint64_t
wrk_redis_now_ms(const wrk_worker_t *w)
{
    if (w->redis_clock_ms == 0)
        return hr_now_ms();
    return w->redis_clock_ms + (hr_mono_ms() - w->redis_clock_mono);
}

/*
 * Makes w->redis usable: connects, sets the reply timeout, ensures the groups,
 * and schedules a re-read of this consumer's pending entries (delivered before
 * a disconnect, never acked). Returns 0 or HR_AGAIN (outage recorded).
 */
int
wrk_redis_ready(wrk_worker_t *w)
{
    if (w->redis != NULL)
        return 0;
    char err[256];
    redisContext *c = hr_redis_connect_sync(&w->addr, w->cfg->redis_timeout_ms, err, sizeof(err));
    if (c == NULL) {
        wrk_link_fail(&w->redis_link, err);
        return HR_AGAIN;
    }
    int ms = w->cfg->block_ms + w->cfg->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        wrk_link_fail(&w->redis_link, "cannot set the socket timeout");
        redisFree(c);
        return HR_AGAIN;
    }
    w->redis = c;
    /* A name for CLIENT LIST; a refusal (ACL) does not matter. */
    const char *name[] = {"CLIENT", "SETNAME", "herald-worker"};
    redisReply *r = wrk_redis_cmd(w, (int)HR_ARRAY_LEN(name), name, NULL);
    if (r == NULL)
        return HR_AGAIN;
    freeReplyObject(r);
    if (wrk_redis_group(w) != 0 || wrk_redis_run_id(w) != 0 || wrk_redis_clock(w) != 0)
        return HR_AGAIN;
    wrk_link_ok(&w->redis_link);
    wrk_reread_pending(w);
    return 0;
}

/* ---- public ---- */

wrk_worker_t *
wrk_worker_create(const wrk_config_t *cfg, volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    hr_redis_addr_t addr;
    if (hr_redis_addr_parse(cfg->redis_url, &addr, err, errlen) != 0) {
        wrk_err_safe(err);
        return NULL;
    }
    DIR *d = opendir(cfg->migrations_dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot open migrations dir %s", cfg->migrations_dir);
        hr_redis_addr_clear(&addr);
        return NULL;
    }
    closedir(d);

    wrk_worker_t *w = hr_calloc(1, sizeof(*w));
    w->cfg = cfg;
    w->stop = stop;
    w->addr = addr;
    if (cfg->consumer != NULL && cfg->consumer[0] != '\0') {
        w->consumer = hr_strdup(cfg->consumer);
    } else {
        char host[256] = "";
        if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "worker");
        host[sizeof(host) - 1] = '\0';
        char name[300];
        snprintf(name, sizeof(name), "%s-%ld", host, (long)getpid());
        w->consumer = hr_strdup(name);
    }
    wrk_link_init(&w->redis_link, "redis");
    wrk_link_init(&w->pg_link, "postgres");
    for (int s = 0; s < WRK_NSTREAMS; s++)
        snprintf(w->claim_cursor[s], sizeof(w->claim_cursor[s]), "0-0");
    /* One XREADGROUP may return COUNT entries of each stream. */
    size_t cap = (size_t)cfg->batch_size * WRK_NSTREAMS;
    wrk_batch_init(&w->batch, cap);
    w->argv = hr_calloc(cap + 3, sizeof(*w->argv));
    w->argvlen = hr_calloc(cap + 3, sizeof(*w->argvlen));
    if (wrk_http_start(w, err, errlen) != 0) {
        wrk_worker_destroy(w);
        return NULL;
    }
    return w;
}

int
wrk_worker_step(wrk_worker_t *w)
{
    wrk_batch_t *b = &w->batch;
    /* A failed migration is retried on its own, not only when a batch needs PostgreSQL. */
    if (w->migrate_failed && wrk_pg_ready(w) != 0) {
        wrk_backoff_sleep(w, &w->pg_link);
        return 0;
    }
    if (b->len == 0) {
        wrk_pg_probe(w);
        if (wrk_redis_ready(w) == 0)
            wrk_maintain(w);
        if (wrk_redis_ready(w) != 0 || wrk_fetch(w) != 0) {
            wrk_backoff_sleep(w, &w->redis_link);
            return 0;
        }
        if (b->len == 0)
            return 0;
    }
    if (!b->committed) {
        /* Only attempts made with PostgreSQL reachable count towards poison. */
        if (wrk_pg_ready(w) == 0 && wrk_redis_ready(w) == 0)
            wrk_count_attempts(w);
        int rc = wrk_commit(w);
        if (rc == HR_ERR)
            return HR_ERR;
        if (rc != 0 && w->pg == NULL && wrk_redis_ready(w) == 0)
            wrk_uncount_attempts(w);
        if (rc != 0) {
            wrk_backoff_sleep(w, &w->pg_link);
            return 0;
        }
    }
    if (wrk_redis_ready(w) != 0 || wrk_ack(w) != 0)
        wrk_backoff_sleep(w, &w->redis_link);
    return 0;
}

int
wrk_worker_run(wrk_worker_t *w)
{
    hr_log_info("started",
                "consumer=%s group=%s streams=%s,%s,%s batch_size=%d flush_ms=%d block_ms=%d "
                "max_deliveries=%d",
                w->consumer, HR_GROUP_WORKERS, wrk_stream_name(0), wrk_stream_name(1),
                wrk_stream_name(2), w->cfg->batch_size, w->cfg->flush_ms, w->cfg->block_ms,
                w->cfg->max_deliveries);
    /* Migrate now if PostgreSQL is up; otherwise on the first connection. */
    wrk_pg_ready(w);
    while (!*w->stop) {
        if (wrk_worker_step(w) == HR_ERR)
            return HR_ERR;
        wrk_http_poll(w);
    }

    wrk_batch_t *b = &w->batch;
    hr_log_info("stopping", "entries_in_flight=%zu", b->len);
    /* The stop may have cut a backoff sleep short: one last try, no waiting. */
    if (b->len > 0 && !b->committed && wrk_commit(w) == HR_ERR)
        return HR_ERR;
    if (b->len > 0 && b->committed && wrk_redis_ready(w) == 0)
        wrk_ack(w);
    if (b->len > 0)
        hr_log_warn("stopped_unfinished",
                    "entries=%zu committed=%d note=\"left pending: re-read by this consumer "
                    "or claimed by another after worker.claim_idle_ms\"",
                    b->len, b->committed);
    hr_log_info("stopped",
                "batches=%" PRIu64 " rows=%" PRIu64 " inserted=%" PRIu64 " rejected=%" PRIu64
                " claimed=%" PRIu64 " dead=%" PRIu64 " receipts=%" PRIu64 " trimmed=%" PRIu64,
                w->stats.batches, w->stats.rows, w->stats.inserted, w->stats.rejected,
                w->stats.claimed, w->stats.dead, w->stats.receipts, w->stats.trimmed);
    return 0;
}

const char *
wrk_worker_consumer(const wrk_worker_t *w)
{
    return w->consumer;
}

void
wrk_worker_stats(const wrk_worker_t *w, wrk_stats_t *out)
{
    *out = w->stats;
}

void
wrk_worker_destroy(wrk_worker_t *w)
{
    if (w == NULL)
        return;
    wrk_http_stop(w);
    wrk_redis_drop(w);
    wrk_pg_drop(w);
    wrk_batch_free(&w->batch);
    wrk_buf_free(&w->copy);
    hr_free(w->argv);
    hr_free(w->argvlen);
    hr_free(w->kv);
    hr_free(w->kvlen);
    hr_free(w->consumer);
    hr_redis_addr_clear(&w->addr);
    hr_free(w);
}
