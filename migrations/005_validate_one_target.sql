-- Herald schema, version 5: validate 004's CHECK on the rows that existed.
-- VALIDATE CONSTRAINT scans the table under SHARE UPDATE EXCLUSIVE: reads and
-- writes go on (new rows were checked since 004). A no-op where the
-- constraint is already valid. The lock_timeout: see 004.
SET LOCAL lock_timeout = '5s';
ALTER TABLE notifications VALIDATE CONSTRAINT notifications_one_target;
