-- Concurrency keys. `ckey` is a keyed task's key (per tenant). While the task
-- waits for one of the key's slots, `key_wait` holds its own `available_at`
-- and `available_at` is the far future (no claim sees it); it is NULL once the
-- task holds a slot.
ALTER TABLE tasks ADD COLUMN ckey text;
ALTER TABLE tasks ADD COLUMN key_wait bigint;
CREATE INDEX tasks_keys ON tasks (tenant, ckey, (key_wait IS NULL), priority DESC, queue_order)
    WHERE ckey IS NOT NULL AND state IN ('pending', 'scheduled', 'running');
