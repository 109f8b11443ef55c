-- Pending tasks that become claimable later than their submission (retries in
-- their backoff): the claim answers when the earliest becomes due, so an idle
-- worker wakes then instead of at its next poll. Fresh tasks have
-- available_at = created_at and stay out of this index.
CREATE INDEX tasks_delayed ON tasks (available_at)
    WHERE state = 'pending' AND available_at > created_at;
