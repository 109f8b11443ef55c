-- A sketch of a leaner PostgreSQL write pattern (issue 19), to compare with
-- docs/pgbench-task-lifecycle.sql (same setup; run that file's header first).
-- The lifecycle events carry no event rows: the task row gets fixed columns
-- for when it was scheduled, started and ended, and each transaction writes
-- one feed page row listing its (task, seq) pairs under its first cursor.
-- Needs, once, in schema pb:
--
--   alter table pb.tasks add column sched_at bigint, add column started_at bigint, add column ended_at bigint;
--   create table pb.feed_pages (tenant text collate "C" not null, first_cursor bigint not null,
--     tasks uuid[] not null, seqs int[] not null, primary key (tenant, first_cursor));
--
--   pgbench -n -c 2 -j 2 -T 8 -f docs/pgbench-task-lifecycle-lean.sql    # tasks/s = tps × 100
SELECT nextval('pb.task_order') * 1000 AS base \gset
BEGIN;
INSERT INTO pb.tasks (id, tenant, principal, agent, labels, priority, idem_key, spec, input, created_at, core, state, last_seq, available_at, queue_order, deadline_at)
  SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid, 'bench', 'p', 'noop', '{}'::jsonb, 0, NULL,
         json_build_object('s', repeat('s', 250)), '1'::json, 0, json_build_object('c', repeat('c', 285)),
         'pending', 1, 0, g, 300000
  FROM generate_series(1, 100) g;
WITH h AS (INSERT INTO pb.feeds AS f (tenant, head) VALUES ('bench', 100)
           ON CONFLICT (tenant) DO UPDATE SET head = f.head + 100 RETURNING head)
INSERT INTO pb.feed_pages (tenant, first_cursor, tasks, seqs)
  SELECT 'bench', h.head - 99, array_agg(('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid), array_agg(1)
  FROM generate_series(1, 100) g, h GROUP BY h.head;
COMMIT;
BEGIN;
UPDATE pb.tasks SET state = 'running', last_seq = 3, core = json_build_object('c', repeat('r', 295)),
       lease_node = '00000000-0000-7000-8000-000000000001', deadline_at = 1000, sched_at = 5, started_at = 5
  WHERE id IN (SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid FROM generate_series(1, 100) g);
WITH h AS (UPDATE pb.feeds SET head = head + 200 WHERE tenant = 'bench' RETURNING head)
INSERT INTO pb.feed_pages (tenant, first_cursor, tasks, seqs)
  SELECT 'bench', h.head - 199, array_agg(('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid), array_agg(s)
  FROM generate_series(1, 100) g, generate_series(2, 3) s, h GROUP BY h.head;
COMMIT;
BEGIN;
UPDATE pb.tasks SET state = 'succeeded', last_seq = 4, core = json_build_object('c', repeat('d', 300)),
       lease_node = NULL, deadline_at = NULL, ended_at = 9
  WHERE id IN (SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid FROM generate_series(1, 100) g);
WITH h AS (UPDATE pb.feeds SET head = head + 100 WHERE tenant = 'bench' RETURNING head)
INSERT INTO pb.feed_pages (tenant, first_cursor, tasks, seqs)
  SELECT 'bench', h.head - 99, array_agg(('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid), array_agg(4)
  FROM generate_series(1, 100) g, h GROUP BY h.head;
COMMIT;
