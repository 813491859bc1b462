/*
 * History's result rows as JSON (proto/openapi.yaml): notifications with
 * their delivered/read times, room messages, pages with their cursor, and
 * the capped unread count. Pure: a PGresult in, a cJSON out.
 */
#ifndef HERALD_HIST_RENDER_H
#define HERALD_HIST_RENDER_H

#include "hist_db.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>

/** A whole number from column col (NULL reads as 0). */
long long hist_int(const PGresult *r, int row, int col);
/** A notification row (HIST_COL_*) as JSON (owned by the caller); NULL (logged) if a time is bad.
 */
cJSON *hist_item_json(const PGresult *r, int row);
/** Adds unread_count, exact up to HIST_UNREAD_CAP; past it the cap and unread_capped: true. */
void hist_add_unread(cJSON *root, long long n);
/**
 * {"items":[…],"next_cursor":…} from a page query that fetched limit+1 rows
 * (room: room message rows). Owned by the caller; NULL when a row is bad.
 */
cJSON *hist_page_json(const PGresult *r, int limit, int room);

#endif
