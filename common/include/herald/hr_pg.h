/* PostgreSQL helpers over libpq: connecting and the migration runner. */
#ifndef HERALD_HR_PG_H
#define HERALD_HR_PG_H

#include <libpq-fe.h>
#include <stddef.h>

/** Blocking connect; returns the connection (owned by caller) or NULL with err filled. */
PGconn *hr_pg_connect(const char *conninfo, char *err, size_t errlen);

/** Runs one statement without parameters; returns 0 or HR_ERR with err filled. */
int hr_pg_exec(PGconn *c, const char *sql, char *err, size_t errlen);

/**
 * Applies every migrations/NNN_name.sql in dir not yet recorded in
 * schema_migrations, in name order, each in its own transaction, under an
 * advisory lock so several processes may call it at once. A file whose first
 * line is "-- herald:no-transaction" runs statement by statement outside a
 * transaction (CREATE INDEX CONCURRENTLY), so it must be safe to re-run.
 * Sets *applied to how many ran. Returns 0 or HR_ERR with err filled.
 */
int hr_pg_migrate(PGconn *c, const char *dir, int *applied, char *err, size_t errlen);

#endif
