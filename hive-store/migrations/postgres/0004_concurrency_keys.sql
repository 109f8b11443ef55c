-- Concurrency keys. `ckey` is a keyed task's key (per tenant). While the task
-- waits for one of the key's slots, `key_wait` holds its own `available_at`
-- and `available_at` is the far future (no claim sees it); it is NULL once the
-- task holds a slot.
ALTER TABLE tasks ADD COLUMN ckey text;
ALTER TABLE tasks ADD COLUMN key_wait bigint;
CREATE INDEX tasks_keys ON tasks (tenant, ckey, (key_wait IS NULL), priority DESC, queue_order)
    WHERE ckey IS NOT NULL AND state IN ('pending', 'scheduled', 'running');
-- Claims read the pending index in priority and queue order: tasks waiting for
-- a slot stay out of it, so a long line of them costs a claim nothing.
DROP INDEX tasks_pending;
CREATE INDEX tasks_pending ON tasks (tenant, priority DESC, queue_order)
    WHERE state = 'pending' AND key_wait IS NULL;
