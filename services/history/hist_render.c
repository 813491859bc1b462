#include "hist_render.h"
#include "hist_params.h"
#include "herald/hr_log.h"
#include "herald/hr_core.h"
#include "herald/hr_time.h"

#include <errno.h>
#include <stdlib.h>

/* A whole number from column col (NULL reads as 0). */
long long
hist_int(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Adds key as RFC 3339 from an int8 of ms since the epoch, or null. 0, or HR_ERR if unreadable. */
static int
hist_add_time(cJSON *o, const char *key, const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) {
        cJSON_AddNullToObject(o, key);
        return 0;
    }
    const char *v = PQgetvalue(r, row, col);
    char *end;
    errno = 0;
    long long ms = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || ms < 0)
        return HR_ERR;
    char iso[HR_TIME_ISO_LEN];
    hr_time_format_iso((uint64_t)ms, iso);
    cJSON_AddStringToObject(o, key, iso);
    return 0;
}

/*
 * A notification row (HIST_COL_*) as the envelope plus delivered_at and
 * read_at. data is jsonb's own text, valid JSON by construction, so it goes
 * in raw. NULL (logged) when a timestamp is unreadable.
 */
cJSON *
hist_item_json(const PGresult *r, int row)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", PQgetvalue(r, row, HIST_COL_ID));
    cJSON_AddStringToObject(o, "user_id", PQgetvalue(r, row, HIST_COL_USER_ID));
    cJSON_AddStringToObject(o, "type", PQgetvalue(r, row, HIST_COL_TYPE));
    cJSON_AddStringToObject(o, "message", PQgetvalue(r, row, HIST_COL_MESSAGE));
    if (!PQgetisnull(r, row, HIST_COL_DATA))
        cJSON_AddRawToObject(o, "data", PQgetvalue(r, row, HIST_COL_DATA));
    else
        cJSON_AddNullToObject(o, "data");
    if (hist_add_time(o, "created_at", r, row, HIST_COL_CREATED_AT) != 0 ||
        hist_add_time(o, "delivered_at", r, row, HIST_COL_DELIVERED_AT) != 0 ||
        hist_add_time(o, "read_at", r, row, HIST_COL_READ_AT) != 0) {
        hr_log_error("row_invalid", "id=%s error=\"timestamp before 1970 or unreadable\"",
                     PQgetvalue(r, row, HIST_COL_ID));
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* A room message row (HIST_RCOL_*) as {"id","room","from","message","created_at"}. */
static cJSON *
hist_room_item_json(const PGresult *r, int row)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", PQgetvalue(r, row, HIST_RCOL_ID));
    cJSON_AddStringToObject(o, "room", PQgetvalue(r, row, HIST_RCOL_ROOM));
    cJSON_AddStringToObject(o, "from", PQgetvalue(r, row, HIST_RCOL_FROM));
    cJSON_AddStringToObject(o, "message", PQgetvalue(r, row, HIST_RCOL_MESSAGE));
    if (hist_add_time(o, "created_at", r, row, HIST_RCOL_CREATED_AT) != 0) {
        hr_log_error("row_invalid", "id=%s error=\"timestamp before 1970 or unreadable\"",
                     PQgetvalue(r, row, HIST_RCOL_ID));
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* unread_count, exact up to HIST_UNREAD_CAP; past it the cap and unread_capped: true. */
void
hist_add_unread(cJSON *root, long long n)
{
    cJSON_AddNumberToObject(root, "unread_count",
                            (double)(n > HIST_UNREAD_CAP ? HIST_UNREAD_CAP : n));
    if (n > HIST_UNREAD_CAP)
        cJSON_AddTrueToObject(root, "unread_capped");
}

/*
 * {"items":[…], "next_cursor": …} from a page query that fetched limit+1 rows:
 * the extra row only says there is a next page, whose cursor names the last
 * item shown. Rows whose id is NULL (the empty page of a LIST query) are
 * skipped. Returns the object (owned by caller) or NULL when a row is bad.
 */
cJSON *
hist_page_json(const PGresult *r, int limit, int room)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(root, "items");
    int rows = PQntuples(r), shown = 0;
    const char *last = NULL;
    for (int i = 0; i < rows && shown < limit; i++) {
        if (PQgetisnull(r, i, 0))
            continue;
        cJSON *o = room ? hist_room_item_json(r, i) : hist_item_json(r, i);
        if (o == NULL) {
            cJSON_Delete(root);
            return NULL;
        }
        cJSON_AddItemToArray(items, o);
        last = PQgetvalue(r, i, 0);
        shown++;
    }
    char cursor[HIST_CURSOR_LEN + 1];
    if (rows > limit && last != NULL && hist_cursor_encode(last, cursor) == 0)
        cJSON_AddStringToObject(root, "next_cursor", cursor);
    else
        cJSON_AddNullToObject(root, "next_cursor");
    return root;
}
