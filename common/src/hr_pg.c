#include "herald/hr_pg.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Arbitrary but fixed: the key every Herald process locks to migrate. */
#define HR_PG_MIGRATE_LOCK 0x6865726c64L

PGconn *
hr_pg_connect(const char *conninfo, char *err, size_t errlen)
{
    PGconn *c = PQconnectdb(conninfo);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", c ? PQerrorMessage(c) : "cannot allocate connection");
        /* libpq messages end in a newline; logs want one line. */
        err[strcspn(err, "\n")] = '\0';
        if (c)
            PQfinish(c);
        return NULL;
    }
    return c;
}

int
hr_pg_exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(c));
        err[strcspn(err, "\n")] = '\0';
        rc = HR_ERR;
    }
    PQclear(r);
    return rc;
}

static int
hr_pg_cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *
hr_pg_read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s", path);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = hr_malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            cap *= 2;
            buf = hr_realloc(buf, cap);
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* A file whose first line is this runs outside a transaction (CREATE INDEX CONCURRENTLY). */
#define HR_PG_NO_TX_MARK "-- herald:no-transaction"

/*
 * Runs sql's statements one by one in autocommit, split at each ';' that ends
 * a line outside a $$ body (so a DO block is one statement). Returns 0 or
 * HR_ERR with err filled.
 */
static int
hr_pg_exec_each(PGconn *c, char *sql, char *err, size_t errlen)
{
    char *start = sql;
    int dollar = 0;
    for (char *p = sql;; p++) {
        if (*p == '$' && p[1] == '$') {
            dollar = !dollar;
            p++;
            continue;
        }
        int end = *p == '\0';
        if (!end && !(*p == ';' && !dollar && (p[1] == '\n' || p[1] == '\0')))
            continue;
        char keep = end ? '\0' : p[1];
        if (!end)
            p[1] = '\0';
        PGresult *r = PQexec(c, start);
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (!end)
            p[1] = keep;
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
            snprintf(err, errlen, "%s", PQerrorMessage(c));
            err[strcspn(err, "\n")] = '\0';
            return HR_ERR;
        }
        if (end || keep == '\0')
            return 0;
        start = p + 1;
    }
}

/* Applies one file unless already recorded; the check is inside the lock. */
static int
hr_pg_apply(PGconn *c, const char *dir, const char *name, int *applied, char *err, size_t errlen)
{
    const char *params[1] = {name};
    PGresult *r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL,
                               params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(c));
        PQclear(r);
        return HR_ERR;
    }
    int done = PQntuples(r) > 0;
    PQclear(r);
    if (done)
        return 0;

    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char *sql = hr_pg_read_file(path, err, errlen);
    if (sql == NULL)
        return HR_ERR;

    int no_tx = strncmp(sql, HR_PG_NO_TX_MARK, strlen(HR_PG_NO_TX_MARK)) == 0;
    int rc = no_tx ? 0 : hr_pg_exec(c, "BEGIN", err, errlen);
    if (rc == 0 && (rc = no_tx ? hr_pg_exec_each(c, sql, err, errlen)
                               : hr_pg_exec(c, sql, err, errlen)) != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s: %s", name, err);
        snprintf(err, errlen, "%s", msg);
    }
    hr_free(sql);
    /* Without a transaction each statement committed: only the record is left. */
    if (rc != 0 && no_tx)
        return HR_ERR;
    if (rc == 0) {
        r = PQexecParams(c, "INSERT INTO schema_migrations (version) VALUES ($1)", 1, NULL, params,
                         NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "%s", PQerrorMessage(c));
            rc = HR_ERR;
        }
        PQclear(r);
    }
    if (rc == 0)
        rc = hr_pg_exec(c, "COMMIT", err, errlen);
    if (rc != 0) {
        char ignore[64];
        hr_pg_exec(c, "ROLLBACK", ignore, sizeof(ignore));
        return HR_ERR;
    }
    hr_log_info("migration_applied", "version=%s", name);
    (*applied)++;
    return 0;
}

int
hr_pg_migrate(PGconn *c, const char *dir, int *applied, char *err, size_t errlen)
{
    *applied = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot open migrations dir %s", dir);
        return HR_ERR;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".sql") == 0) {
            names = hr_realloc(names, (n + 1) * sizeof(*names));
            names[n++] = hr_strdup(de->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(*names), hr_pg_cmp_names);

    /*
     * Polled, not pg_advisory_lock(): a session waiting inside that statement
     * holds a snapshot, which a CREATE INDEX CONCURRENTLY of the lock holder
     * waits for: a deadlock.
     */
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_lock(%ld)", HR_PG_MIGRATE_LOCK);
    int rc;
    for (;;) {
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            snprintf(err, errlen, "%s", PQerrorMessage(c));
            err[strcspn(err, "\n")] = '\0';
            PQclear(r);
            rc = HR_ERR;
            break;
        }
        int got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
        if (got) {
            rc = 0;
            break;
        }
        struct timespec ts = {0, 100 * 1000 * 1000L};
        nanosleep(&ts, NULL);
    }
    if (rc == 0)
        rc = hr_pg_exec(c,
                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        " version text PRIMARY KEY,"
                        " applied_at timestamptz NOT NULL DEFAULT now())",
                        err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = hr_pg_apply(c, dir, names[i], applied, err, errlen);

    char ignore[64];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%ld)", HR_PG_MIGRATE_LOCK);
    hr_pg_exec(c, sql, ignore, sizeof(ignore));
    for (size_t i = 0; i < n; i++)
        hr_free(names[i]);
    hr_free(names);
    return rc;
}
