-- Herald schema, version 1: the notification record.
-- Applied once by `herald-worker --migrate` (recorded in schema_migrations).

CREATE TABLE notifications (
    id           uuid PRIMARY KEY,          -- UUIDv7: time-ordered, the pagination key
    user_id      text        NOT NULL,
    type         text        NOT NULL,
    message      text        NOT NULL,
    data         jsonb,
    created_at   timestamptz NOT NULL,
    delivered_at timestamptz,
    read_at      timestamptz
);

-- Inbox: a user's notifications newest first, keyset-paginated on id.
CREATE INDEX notifications_user_id_idx ON notifications (user_id, id DESC);

-- Unread badge and unread filter: only unread rows are indexed, so the index
-- stays small as users read.
CREATE INDEX notifications_user_unread_idx ON notifications (user_id, id DESC)
    WHERE read_at IS NULL;
