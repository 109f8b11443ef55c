-- What issue 19's first direction would reach (a sketch to size it, not
-- Hive's schema): the same life of a batch of 100 tasks as
-- pgbench-task-lifecycle.sql — three transactions, the same task row, JSON
-- sizes and task indexes — but the lifecycle events folded into the task row
-- (an array appended by each update, as the store would materialize them on
-- read) and the tenant feed written as one page row per transaction (the
-- cursor range it took from the head row, its tasks and seqs as arrays). A
-- terminal event keeps an index entry (tenant, cursor) for consumers. So 3
-- heap tuples per task instead of 7. Schema `pf`: the one of
-- hive-store/migrations/postgres plus the columns and table below:
--
--   psql -c 'create schema pf'
--   for f in hive-store/migrations/postgres/*.sql; do PGOPTIONS='-c search_path=pf' psql -f "$f"; done
--   psql -c 'alter table pf.tasks add column events text[], add column term_cursor bigint;
--            create index tasks_terminal on pf.tasks (tenant, term_cursor) where term_cursor is not null;
--            create table pf.feed_pages (tenant text collate "C", first bigint, last bigint,
--                                        tasks uuid[], seqs int[], primary key (tenant, first))'
--   pgbench -n -c 2 -j 2 -T 15 -f docs/pgbench-task-lifecycle-folded.sql    # tasks/s = tps × 100
SELECT nextval('pf.task_order') * 1000 AS base \gset
BEGIN;
INSERT INTO pf.tasks (id, tenant, principal, agent, labels, priority, idem_key, spec, input, created_at, core, state, last_seq, available_at, queue_order, deadline_at, events)
  SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid, 'bench', 'p', 'noop', '{}'::jsonb, 0, NULL,
         json_build_object('s', repeat('s', 250)), '1'::json, 0, json_build_object('c', repeat('c', 285)),
         'pending', 1, 0, g, 300000, ARRAY['0 {"type":"queued"}']
  FROM generate_series(1, 100) g;
WITH h AS (INSERT INTO pf.feeds AS f (tenant, head) VALUES ('bench', 100)
           ON CONFLICT (tenant) DO UPDATE SET head = f.head + 100 RETURNING head)
INSERT INTO pf.feed_pages (tenant, first, last, tasks, seqs)
  SELECT 'bench', h.head - 99, h.head,
         ARRAY(SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid FROM generate_series(1, 100) g),
         array_fill(1, ARRAY[100])
  FROM h;
COMMIT;
BEGIN;
UPDATE pf.tasks SET state = 'running', last_seq = 3, core = json_build_object('c', repeat('r', 295)),
       lease_node = '00000000-0000-7000-8000-000000000001', deadline_at = 1000,
       events = events || ARRAY['0 {"type":"scheduled","node":"' || repeat('n', 36) || '"}',
                                '0 {"type":"started","node":"' || repeat('n', 36) || '","attempt":1}']
  WHERE id IN (SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid FROM generate_series(1, 100) g);
WITH h AS (UPDATE pf.feeds SET head = head + 200 WHERE tenant = 'bench' RETURNING head)
INSERT INTO pf.feed_pages (tenant, first, last, tasks, seqs)
  SELECT 'bench', h.head - 199, h.head,
         ARRAY(SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid FROM generate_series(1, 100) g, generate_series(2, 3) s),
         ARRAY(SELECT s FROM generate_series(1, 100) g, generate_series(2, 3) s)
  FROM h;
COMMIT;
BEGIN;
WITH h AS (UPDATE pf.feeds SET head = head + 100 WHERE tenant = 'bench' RETURNING head),
     p AS (INSERT INTO pf.feed_pages (tenant, first, last, tasks, seqs)
           SELECT 'bench', h.head - 99, h.head,
                  ARRAY(SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid FROM generate_series(1, 100) g),
                  array_fill(4, ARRAY[100])
           FROM h RETURNING first)
UPDATE pf.tasks t SET state = 'succeeded', last_seq = 4, core = json_build_object('c', repeat('d', 300)),
       lease_node = NULL, deadline_at = NULL, term_cursor = p.first + x.g - 1,
       events = events || ARRAY['0 {"type":"succeeded","output":{"ok":1}}']
  FROM p, (SELECT g, ('01900000-0000-7000-8000-' || lpad(to_hex(:base + g), 12, '0'))::uuid AS id FROM generate_series(1, 100) g) x
  WHERE t.id = x.id;
COMMIT;
