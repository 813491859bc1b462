-- Herald schema, version 4: notifications addressed to a room.
-- POST /notifications with "room" instead of "user_id" stores ONE row for the
-- room (room set, user_id NULL); the live frame goes to the room's members of
-- the moment (proto/redis.md). Exactly one of user_id and room is set.
--
-- Each statement here is a catalog change only, done under a short ACCESS
-- EXCLUSIVE lock: the CHECK is added NOT VALID (005 validates the existing
-- rows under a lock that lets reads and writes go on) and the room index is
-- built CONCURRENTLY by 006. The lock_timeout makes a migration stuck behind
-- a long transaction give up (the worker retries it) instead of queueing
-- every reader and writer of the table behind its lock request.
--
-- This file used to validate the CHECK and build the index here, in this
-- transaction, blocking all access to a big table for the whole scan.
-- Databases that applied that version keep its result (a valid constraint,
-- the index): 005 and 006 then find nothing to do.
SET LOCAL lock_timeout = '5s';
ALTER TABLE notifications ADD COLUMN room text;
ALTER TABLE notifications ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE notifications ADD CONSTRAINT notifications_one_target
    CHECK ((user_id IS NULL) <> (room IS NULL)) NOT VALID;
