-- herald:no-transaction
-- Herald schema, version 6: a room's notifications newest first (user rows
-- are not indexed here). Built CONCURRENTLY, outside a transaction (the
-- marker above), so reads and writes go on while it scans the table. Safe to
-- re-run: a build that failed half-way leaves an INVALID index, dropped
-- first; one that exists (built by the first version of 004) is kept.
SET lock_timeout = '5s';
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname = 'notifications_room_id_idx' AND NOT i.indisvalid) THEN
        DROP INDEX notifications_room_id_idx;
    END IF;
END $$;
CREATE INDEX CONCURRENTLY IF NOT EXISTS notifications_room_id_idx
    ON notifications (room, id DESC) WHERE room IS NOT NULL;
RESET lock_timeout;
