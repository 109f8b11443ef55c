-- Hive's PostgreSQL schema. Every statement runs with `search_path` set to the
-- schema named by `OpenOptions::schema`, so names are unqualified.
-- Times are milliseconds since the UNIX epoch (the callers' clocks, never the
-- server's). Ids and keys compare bytewise (COLLATE "C").

-- Enqueue order among pending tasks of equal priority.
CREATE SEQUENCE task_order;

CREATE TABLE tasks (
    id           uuid PRIMARY KEY,
    tenant       text COLLATE "C" NOT NULL,
    principal    text COLLATE "C" NOT NULL,
    agent        text COLLATE "C" NOT NULL,
    -- Required node labels (the spec's), for eligibility and listing filters.
    labels       jsonb NOT NULL,
    priority     integer NOT NULL,
    idem_key     text COLLATE "C",
    -- The spec without its input (what transitions need), and the input.
    spec         json NOT NULL,
    input        json NOT NULL,
    created_at   bigint NOT NULL,
    -- The machine's TaskCore; the columns below are copies of it for indexes.
    core         json NOT NULL,
    state        text NOT NULL,
    last_seq     bigint NOT NULL,
    available_at bigint NOT NULL,
    queue_order  bigint NOT NULL,
    lease_node   uuid,
    avoid_node   uuid,
    deadline_at  bigint
);

CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX tasks_by_tenant ON tasks (tenant, id);
CREATE INDEX tasks_pending ON tasks (tenant, priority DESC, queue_order) WHERE state = 'pending';
CREATE INDEX tasks_leases ON tasks (lease_node) WHERE lease_node IS NOT NULL;
CREATE INDEX tasks_deadlines ON tasks (deadline_at) WHERE deadline_at IS NOT NULL;

-- Every event, in its task's stream (task, seq) and its tenant's feed
-- (tenant, feed_cursor).
CREATE TABLE task_events (
    task        uuid NOT NULL,
    seq         bigint NOT NULL,
    tenant      text COLLATE "C" NOT NULL,
    feed_cursor bigint NOT NULL,
    at          bigint NOT NULL,
    terminal    boolean NOT NULL,
    kind        json NOT NULL,
    PRIMARY KEY (task, seq)
);

CREATE UNIQUE INDEX task_events_feed ON task_events (tenant, feed_cursor);
CREATE INDEX task_events_terminal ON task_events (tenant, feed_cursor) WHERE terminal;

-- The last cursor of each tenant's feed. Its row lock, taken by the statement
-- that appends events, orders appends by commit: cursors are gapless and a
-- reader never sees N+1 before N.
CREATE TABLE feeds (
    tenant text COLLATE "C" PRIMARY KEY,
    head   bigint NOT NULL
);

-- Named consumers of terminal events: every terminal event at or below `floor`
-- is acknowledged; acknowledgements above it are rows of feed_acks.
CREATE TABLE feed_consumers (
    tenant   text COLLATE "C" NOT NULL,
    consumer text COLLATE "C" NOT NULL,
    floor    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, consumer)
);

CREATE TABLE feed_acks (
    tenant      text COLLATE "C" NOT NULL,
    consumer    text COLLATE "C" NOT NULL,
    task        uuid NOT NULL,
    feed_cursor bigint NOT NULL,
    PRIMARY KEY (tenant, consumer, task)
);

-- Worker nodes. `in_flight` is not stored: it is the number of tasks whose
-- lease_node is the node.
CREATE TABLE nodes (
    id            uuid PRIMARY KEY,
    spec          json NOT NULL,
    status        text NOT NULL,
    registered_at bigint NOT NULL,
    last_seen     bigint NOT NULL
);

CREATE TABLE records (
    kind       text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    tenant     text COLLATE "C" NOT NULL,
    version    bigint NOT NULL,
    status     text COLLATE "C" NOT NULL,
    body       json NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    last_seq   bigint NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE INDEX records_by_tenant ON records (kind, tenant, id);

CREATE TABLE record_events (
    kind text COLLATE "C" NOT NULL,
    id   text COLLATE "C" NOT NULL,
    seq  bigint NOT NULL,
    at   bigint NOT NULL,
    body json NOT NULL,
    PRIMARY KEY (kind, id, seq)
);
