-- The physical limit of Hive's PostgreSQL write pattern (issue 19, item 1):
-- one script run is the whole life of a batch of 100 tasks, written by hand
-- the way the store writes it — three transactions (submit; claim and start;
-- report), 7 rows per task (the task row inserted and updated twice, its
-- four lifecycle events with feed cursors from the tenant's head row), JSON
-- of the sizes the store writes — into a schema `pb` built from
-- hive-store/migrations/postgres (same tables and indexes):
--
--   psql -c 'create schema pb'
--   for f in hive-store/migrations/postgres/*.sql; do PGOPTIONS='-c search_path=pb' psql -f "$f"; done
--   pgbench -n -c 2 -j 2 -T 15 -f docs/pgbench-task-lifecycle.sql    # tasks/s = tps × 100
--
-- One tenant (its feed head row is taken by every transaction); replace
-- 'bench' by 'bench' || :client_id for a tenant per client. Task ids grow
-- with time, as Hive's UUIDv7 ids do (a first version used random ids, whose
-- scattered index inserts cost about a quarter of the throughput: see
-- docs/benchmarks.md).
SELECT nextval('pb.task_order') * 1000 AS base \gset
BEGIN;
INSERT INTO pb.tasks (id, tenant, principal, agent, labels, priority, idem_key, spec, input, created_at, core, state, last_seq, available_at, queue_order, deadline_at)
  SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid, 'bench', 'p', 'noop', '{}'::jsonb, 0, NULL,
         json_build_object('s', repeat('s', 250)), '1'::json, 0, json_build_object('c', repeat('c', 285)),
         'pending', 1, 0, g, 300000
  FROM generate_series(1, 100) g;
WITH h AS (INSERT INTO pb.feeds AS f (tenant, head) VALUES ('bench', 100)
           ON CONFLICT (tenant) DO UPDATE SET head = f.head + 100 RETURNING head)
INSERT INTO pb.task_events (task, seq, tenant, feed_cursor, at, terminal, kind)
  SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid, 1, 'bench', h.head - 100 + g, 0, false, '{"type":"queued"}'::json
  FROM generate_series(1, 100) g, h;
COMMIT;
BEGIN;
UPDATE pb.tasks SET state = 'running', last_seq = 3, core = json_build_object('c', repeat('r', 295)),
       lease_node = '00000000-0000-7000-8000-000000000001', deadline_at = 1000
  WHERE id IN (SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid FROM generate_series(1, 100) g);
WITH h AS (UPDATE pb.feeds SET head = head + 200 WHERE tenant = 'bench' RETURNING head)
INSERT INTO pb.task_events (task, seq, tenant, feed_cursor, at, terminal, kind)
  SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid, s, 'bench', h.head - 200 + (g - 1) * 2 + (s - 1), 0, false,
         json_build_object('type', 'x', 'node', repeat('n', 40 + s * 5))
  FROM generate_series(1, 100) g, generate_series(2, 3) s, h;
COMMIT;
BEGIN;
UPDATE pb.tasks SET state = 'succeeded', last_seq = 4, core = json_build_object('c', repeat('d', 300)),
       lease_node = NULL, deadline_at = NULL
  WHERE id IN (SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid FROM generate_series(1, 100) g);
WITH h AS (UPDATE pb.feeds SET head = head + 100 WHERE tenant = 'bench' RETURNING head)
INSERT INTO pb.task_events (task, seq, tenant, feed_cursor, at, terminal, kind)
  SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid, 4, 'bench', h.head - 100 + g, 0, true,
         '{"type":"succeeded","output":{"ok":1}}'::json
  FROM generate_series(1, 100) g, h;
COMMIT;
