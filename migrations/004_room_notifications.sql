-- Herald schema, version 4: notifications addressed to a room.
-- POST /notifications with "room" instead of "user_id" stores ONE row for the
-- room (room set, user_id NULL); the live frame goes to the room's members of
-- the moment (proto/redis.md). Exactly one of user_id and room is set.

ALTER TABLE notifications ADD COLUMN room text;
ALTER TABLE notifications ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE notifications ADD CONSTRAINT notifications_one_target
    CHECK ((user_id IS NULL) <> (room IS NULL));

-- A room's notifications newest first; user rows are not indexed here.
CREATE INDEX notifications_room_id_idx ON notifications (room, id DESC) WHERE room IS NOT NULL;
