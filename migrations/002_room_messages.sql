-- Herald schema, version 2: chat messages of rooms (written by the worker from
-- the herald:stream:room_messages stream, read by history).

CREATE TABLE room_messages (
    id         uuid PRIMARY KEY,          -- UUIDv7 assigned by the gateway
    room       text        NOT NULL,
    user_id    text        NOT NULL,      -- the sender
    message    text        NOT NULL,
    created_at timestamptz NOT NULL
);

-- Room history newest first, keyset-paginated on id (GET /rooms/{room}/messages).
CREATE INDEX room_messages_room_id_idx ON room_messages (room, id DESC);
