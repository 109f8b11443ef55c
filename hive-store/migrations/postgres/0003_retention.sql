-- Retention: each tenant feed's earliest readable cursor. The terminal events
-- below it belong to compacted tasks (which keep only their terminal event);
-- reading the feed from before it is OffsetExpired. A table of its own, so
-- that compaction never takes the feed head row that appends lock.
CREATE TABLE feed_retention (
    tenant    text COLLATE "C" PRIMARY KEY,
    floor     bigint NOT NULL,
    -- The terminal events below this cursor were deleted with their tasks.
    purged_to bigint NOT NULL DEFAULT 0
);
