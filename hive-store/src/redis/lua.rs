//! The Lua scripts. Each runs atomically on the server: a script is the "one
//! atomic step" of the store contract. Scripts never decide a task transition:
//! Rust runs `hive_core::task::machine::apply` on the core it read, and the
//! commit script stores the result only if the task's `seq` (its version: every
//! appended event bumps it) is still the one Rust read — a compare-and-set. A
//! miss is retried by the caller from a fresh read.
//!
//! Every script takes the key prefix as `ARGV[1]` and the caller's time as
//! `ARGV[2]`, and touches only keys under the prefix (see `keys.rs` for the
//! layout). Scripts access keys they build themselves, which standalone Redis
//! allows; they are not meant for Redis Cluster.

/// The ready-queue head index, shared by the scripts (and `WAKE`): `qh`, a
/// sorted set (all scores 0, ordered by member) with one member per non-empty
/// ready queue, `{tenant length:04}{tenant}{2147483647 - priority:010}{order:016}{queue}`
/// for the queue's first task, so a tenant's queues are one range ordered by
/// their heads' priority and age; `qhk` maps a queue to its member. A claim
/// reads a tenant's best heads from it instead of looking at every queue.
/// Needs `P` defined. `refresh_head(queue)` re-reads a queue's first task and
/// moves its index member.
macro_rules! heads_lua {
    () => {
        r#"
local qten = {}      -- queue -> tenant (from its owner record), per call
local function queue_tenant(qid)
  local t = qten[qid]
  if t == nil then
    local meta = redis.call('HGET', P .. 'qmeta', qid)
    t = meta and cjson.decode(meta).tenant or false
    qten[qid] = t
  end
  return t
end
local function refresh_head(qid)
  local head = redis.call('ZRANGE', P .. 'q:' .. qid, 0, 0, 'WITHSCORES')
  local old = redis.call('HGET', P .. 'qhk', qid)
  local new = false
  local t = #head > 0 and queue_tenant(qid)
  if t then
    new = string.format('%04d', #t) .. t .. string.format('%010d', 2147483647 + tonumber(head[2]))
      .. string.sub(head[1], 1, 16) .. qid
  end
  if new == old then return end
  if old then redis.call('ZREM', P .. 'qh', old) end
  if new then
    redis.call('ZADD', P .. 'qh', 0, new)
    redis.call('HSET', P .. 'qhk', qid, new)
  else
    redis.call('HDEL', P .. 'qhk', qid)
  end
end
"#
    };
}

/// Helpers shared by the scripts: feed cursors, ready queues, the commit of one
/// task record, the final notifications.
const PRELUDE: &str = concat!(
    r#"
local P = ARGV[1] .. ':'
local NOW = ARGV[2]
local function fmt(n) return string.format('%d', n) end
"#,
    heads_lua!(),
    r#"
local dirtyq = {}    -- queues whose first task may have changed (index refreshed by finish())

-- Per-call caches and batches, written by finish().
local fc = {}        -- escaped tenant -> last feed cursor (entries batched)
local order = nil    -- enqueue order counter
local touched = {}   -- task ids with new events
local work = false   -- new claimable work appeared
local batches = {}   -- cmd -> key -> {cmd, key, args}
local border = {}    -- batches in first-use order
local reserved = {}  -- task ids reserved by the claim being committed
local reclaiming = nil -- whether the reclaim list has entries (read once)
local LEASE_NODE = nil -- the node new leases go to (set by the claim commit)
-- A script that commits several tasks reads and checks everything first and
-- writes only in finish(): an error half-way (a key of the wrong type, say)
-- then leaves every task as it was, never a task hash without its feed entry
-- or index update.
local writes = {}    -- {cmd, key, args[, n]}: single-key writes (the first n args), run first by finish()
local staged_seq = {} -- task id -> the seq this call will write
local staged_qm = {}  -- task id -> its queue member, when this call set it

-- Keys built once per call (every string a script builds costs the server).
local KDL, KDELAYED, KRECLAIM, KQREADY = P .. 'dl', P .. 'delayed', P .. 'reclaim', P .. 'qready'
local kcache = {}    -- part -> name -> key
local function key(part, name)
  local c = kcache[part]
  if c == nil then
    c = {}
    kcache[part] = c
  end
  local k = c[name]
  if k == nil then
    k = P .. part .. name
    c[name] = k
  end
  return k
end

-- Queues `cmd key args...` to run as one multi-member command at the end;
-- returns that command's argument list (to append to it directly).
local function add(cmd, k, a, b)
  local bc = batches[cmd]
  if bc == nil then
    bc = {}
    batches[cmd] = bc
  end
  local bt = bc[k]
  if bt == nil then
    bt = {cmd, k, {}}
    bc[k] = bt
    border[#border + 1] = bt
  end
  local args = bt[3]
  args[#args + 1] = a
  if b ~= nil then args[#args + 1] = b end
  return args
end

local fb = {}        -- escaped tenant -> its feed batch (the RPUSH arguments)

local function flush()
  for _, bt in ipairs(border) do
    local args = bt[3]
    local step = 2000
    for i = 1, #args, step do
      redis.call(bt[1], bt[2], unpack(args, i, math.min(i + step - 1, #args)))
    end
  end
  batches = {}
  border = {}
  fb = {}
end

-- Appends one event to the tenant feed (a list: cursor = index + 1, so
-- gapless, in the order scripts ran); returns its cursor. The entries of a
-- call are pushed together by finish().
local function feed_push(et, entry)
  local c = fc[et]
  if c == nil then
    -- Entries trimmed by retention count: cursor = index + 1 + trimmed.
    c = redis.call('LLEN', key('f:', et)) + tonumber(redis.call('GET', key('fo:', et)) or '0')
  end
  c = c + 1
  fc[et] = c
  local args = fb[et]
  if args == nil then
    fb[et] = add('RPUSH', key('f:', et), entry)
  else
    args[#args + 1] = entry
  end
  return c
end

local function feed_append(et, id, s, kind)
  return feed_push(et, id .. ' ' .. s .. ' ' .. NOW .. ' ' .. kind)
end

local function next_order()
  if order == nil then order = tonumber(redis.call('GET', P .. 'order') or '0') end
  order = order + 1
  return order
end

-- A fresh ready-queue member for a task (queue it with add_ready).
local function new_member(id)
  return string.format('%016d', next_order()) .. id
end

local function add_ready(q, prio, m)
  add('ZADD', key('q:', q), -tonumber(prio), m)
  add('SADD', KQREADY, q)
  dirtyq[q] = true
  work = true
end

-- Puts a reserved task back where it was in its queue, if it is still pending.
local function unreserve(id)
  local t = redis.call('HMGET', P .. 't:' .. id, 'state', 'q', 'prio', 'qm')
  if t[1] == 'pending' and t[4] and t[4] ~= '' then
    add('ZADD', key('q:', t[2]), -tonumber(t[3]), t[4])
    add('SADD', KQREADY, t[2])
    dirtyq[t[2]] = true
    return true
  end
  return false
end

-- Moves due delayed (backoff) tasks to their ready queues.
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, 10000)
  for _, id in ipairs(due) do
    add('ZREM', KDELAYED, id)
    local t = redis.call('HMGET', P .. 't:' .. id, 'state', 'q', 'prio', 'qm')
    if t[1] == 'pending' then
      local m = t[4]
      if not m or m == '' then
        m = new_member(id)
        redis.call('HSET', P .. 't:' .. id, 'qm', m)
      end
      add_ready(t[2], t[3], m)
    end
  end
end

-- A sign of life of a node presenting an op.
local function touch(node)
  local nk = P .. 'n:' .. node
  local r = redis.call('HMGET', nk, 'status', 'seen')
  if not r[1] then return end
  if tonumber(r[2]) < tonumber(NOW) then
    redis.call('HSET', nk, 'seen', NOW)
    if r[1] ~= 'lost' then redis.call('ZADD', P .. 'seen', NOW, node) end
  end
end

-- Hands every lease of a node to the reclaim list (task -> node|lease).
local function hand_over_leases(node)
  local leases = redis.call('HGETALL', P .. 'nl:' .. node)
  local entries = {}
  for k = 1, #leases, 2 do
    local entry = node .. '|' .. leases[k + 1]
    redis.call('HSET', P .. 'reclaim', leases[k], entry)
    entries[#entries + 1] = leases[k]
    entries[#entries + 1] = entry
  end
  return entries
end

-- A concurrency gate argument `{max} {gate}`: its slots and its name.
local function gate_parts(gate)
  local sp = string.find(gate, ' ', 1, true)
  return tonumber(string.sub(gate, 1, sp - 1)), string.sub(gate, sp + 1)
end

-- Concurrency keys: an ended task leaves its gate (`{max} {gate}`), holding
-- or waiting (`member`: its queue member, if read), and the gate's free
-- slots go to its first waiting tasks (by priority, then submission): each
-- joins the end of its ready queue (a fresh member, so keys take turns), or
-- the delayed set until its own claimable time (`ka`).
local function release(id, gate, member)
  local max, g = gate_parts(gate)
  local kh, kw = P .. 'kh:' .. g, P .. 'kw:' .. g
  if redis.call('SREM', kh, id) == 0 then
    member = member or redis.call('HGET', P .. 't:' .. id, 'qm')
    if member then redis.call('ZREM', kw, member) end
  end
  local free = max - redis.call('SCARD', kh)
  while free > 0 do
    local head = redis.call('ZRANGE', kw, 0, 0)
    if #head == 0 then break end
    redis.call('ZREM', kw, head[1])
    local next_id = string.sub(head[1], 17)
    local tk = P .. 't:' .. next_id
    local t = redis.call('HMGET', tk, 'state', 'q', 'prio', 'ka')
    if t[1] == 'pending' then
      redis.call('SADD', kh, next_id)
      free = free - 1
      local m = new_member(next_id)
      redis.call('HSET', tk, 'qm', m)
      if staged_seq[next_id] then staged_qm[next_id] = m end
      if t[4] and tonumber(t[4]) > tonumber(NOW) then
        add('ZADD', KDELAYED, t[4], next_id)
        work = true
      else
        add_ready(t[2], t[3], m)
      end
    end
  end
  if redis.call('ZCARD', kw) == 0 then redis.call('SREM', P .. 'kgates', g) end
end

-- One commit record starting at ARGV[i]:
--   id, expected seq, escaped tenant, new seq, new state ('' unchanged),
--   queue action ('' none | x leave | r ready | delayed-until score),
--   deadline ('-' unchanged | '' none | score), old lease node ('' none), new
--   lease (`{lease id} {node}`, or just the id for the claiming node in a
--   claim; '' none),
--   then the count of the task hash fields that change and their (field,
--   value) pairs — a negative count -1-n: n pairs, then the count and (field,
--   value) pairs of the side hash (long values, see `codec.rs`) — and the
--   event count (negative when the last event is terminal) with per event:
--   field (`e{seq}`), value (`{at} {kind}`), feed entry (`{task} {seq} {at}
--   {kind}`, or '' for a heartbeat replaced in place). Rust builds the strings, and leaves out what does not change:
--   every argument and every string a script makes costs the server.
local function rec_end(i)
  local nf = tonumber(ARGV[i + 9])
  local j
  if nf < 0 then
    j = i + 10 + 2 * (-1 - nf)
    j = j + 1 + 2 * tonumber(ARGV[j])
  else
    j = i + 10 + 2 * nf
  end
  return j + 1 + 3 * math.abs(tonumber(ARGV[j]))
end

-- Returns 1 (stored), 0 (seq changed: compare-and-set miss), -1 (no such task),
-- and where the next record starts when it read this one to its end (nil on
-- a miss: the caller skips it with rec_end).
-- The events are fields `e{seq}` of the task's hash, written by the same HSET
-- as the core they lead to. (Plain locals, not tables, on this path: it runs
-- once per record, and every table and call a script makes costs the server.)
local function commit_one(i)
  local id = ARGV[i]
  local tk = P .. 't:' .. id
  local qa = ARGV[i + 5]
  local mine = reserved[id]
  local seq, q, prio, qm
  if qa == 'r' or (qa == 'x' and not mine) then
    local cur = redis.call('HMGET', tk, 'seq', 'q', 'prio', 'qm')
    seq, q, prio, qm = cur[1], cur[2], cur[3], cur[4]
  else
    -- Out of its queue already (reserved), or staying where it is.
    seq = redis.call('HGET', tk, 'seq')
  end
  if not seq then return -1 end
  local sseq = staged_seq[id]
  if sseq then
    -- An earlier command of this call changed the task: compare with that.
    seq = sseq
    qm = staged_qm[id] or qm
  end
  if seq ~= ARGV[i + 1] then return 0 end
  local new_seq = ARGV[i + 3]
  -- Sixteen slots made at once (a claim writes about twelve fields): a table
  -- that grows is rebuilt each time it doubles. Written up to `nfield`.
  local fields = {'seq', new_seq, false, false, false, false, false, false,
    false, false, false, false, false, false, false, false}
  local nfield = 2
  local gate
  local ns = ARGV[i + 4]
  if ns ~= '' then
    -- `{state} {max} {gate}`: it ends, its concurrency slot is handed on.
    local sp = string.find(ns, ' ', 1, true)
    if sp then
      gate = string.sub(ns, sp + 1)
      ns = string.sub(ns, 1, sp - 1)
    end
    fields[3] = 'state'
    fields[4] = ns
    nfield = 4
  end
  -- A task keeps its queue member (`qm`: its submission order) for life, so
  -- a retry or a lost placement goes back to its old place in the queue.
  if qa == 'x' then
    if not mine then
      if qm and qm ~= '' then
        add('ZREM', key('q:', q), qm)
        dirtyq[q] = true
      end
      add('ZREM', KDELAYED, id)
    end
  elseif qa == 'r' then
    if not qm or qm == '' then
      qm = new_member(id)
      fields[nfield + 1] = 'qm'
      fields[nfield + 2] = qm
      nfield = nfield + 2
    end
    staged_qm[id] = qm
    add_ready(q, prio, qm)
  elseif qa ~= '' then
    add('ZADD', KDELAYED, qa, id)
    -- Waiting workers claim again and learn when it is due.
    work = true
  end
  local dl = ARGV[i + 6]
  if dl == '' then
    add('ZREM', KDL, id)
  elseif dl ~= '-' then
    add('ZADD', KDL, dl, id)
  end
  local ol = ARGV[i + 7]
  if ol ~= '' then
    add('HDEL', key('nl:', ol), id)
    if reclaiming == nil then reclaiming = redis.call('EXISTS', KRECLAIM) == 1 end
    if reclaiming then add('HDEL', KRECLAIM, id) end
  end
  local nl = ARGV[i + 8]
  if #nl > 36 then
    add('HSET', key('nl:', string.sub(nl, 38)), id, string.sub(nl, 1, 36))
  elseif nl ~= '' then
    add('HSET', key('nl:', LEASE_NODE), id, nl)
  end
  local nf = tonumber(ARGV[i + 9])
  local np = nf
  if nf < 0 then np = -1 - nf end
  local j = i + 10
  for k = j, j + 2 * np - 1 do
    nfield = nfield + 1
    fields[nfield] = ARGV[k]
  end
  j = j + 2 * np
  if nf < 0 then
    local nsd = tonumber(ARGV[j])
    if nsd > 0 then writes[#writes + 1] = {'HSET', P .. 'tx:' .. id, {unpack(ARGV, j + 1, j + 2 * nsd)}} end
    j = j + 1 + 2 * nsd
  end
  local nev = tonumber(ARGV[j])
  local term = nev < 0
  if term then nev = -nev end
  local c
  local et = ARGV[i + 2]
  for k = j + 1, j + 3 * nev, 3 do
    fields[nfield + 1] = ARGV[k]
    fields[nfield + 2] = ARGV[k + 1]
    nfield = nfield + 2
    -- '' = a heartbeat replaced in place: it keeps its feed entry.
    local entry = ARGV[k + 2]
    if entry ~= '' then c = feed_push(et, entry) end
  end
  if term then add('ZADD', key('term:', et), c, id) end
  writes[#writes + 1] = {'HSET', tk, fields, nfield}
  staged_seq[id] = new_seq
  if nev > 0 then touched[#touched + 1] = id end
  if gate then release(id, gate, qm) end
  return 1, j + 1 + 3 * nev
end

-- Moves the head index members of the queues changed so far (after flush()).
local function refresh_dirty()
  for q in pairs(dirtyq) do refresh_head(q) end
  dirtyq = {}
end

-- Runs the batches, writes back the caches and publishes the wake-ups.
local function finish()
  -- (A write's fourth member, when it has one, is how many of its arguments
  -- count.)
  for _, w in ipairs(writes) do redis.call(w[1], w[2], unpack(w[3], 1, w[4] or #w[3])) end
  writes = {}
  flush()
  refresh_dirty()
  if order ~= nil then redis.call('SET', P .. 'order', fmt(order)) end
  for et, c in pairs(fc) do
    redis.call('PUBLISH', P .. 'ch:f:' .. et, fmt(c))
  end
  if #touched > 0 then
    redis.call('PUBLISH', P .. 'ch:tasks', table.concat(touched, ' '))
  end
  if work then
    local w = redis.call('INCR', P .. 'work')
    redis.call('PUBLISH', P .. 'ch:work', w)
  end
end
"#
);

/// Stores new tasks with their `Queued` event.
///
/// ARGV: prefix, now, queued kind, count, then per task: id, escaped tenant,
/// tenant, idempotency key ('' none), queue id, queue meta (JSON), priority,
/// `x` (or its redirect), `x` for the side hash ('' none), input (or its
/// redirect), input for the side hash ('' none), core (`c`), deadline (''
/// none), claimable-at of a delayed task ('' ready now), concurrency gate
/// (`{max} {gate}`, '' none). Returns per task: id, created (1/0), last seq.
///
/// A task with a concurrency gate takes a free slot (joins `kh:{gate}`) only
/// if none of the gate's tasks waits; else it waits in `kw:{gate}` (scored
/// -priority, its queue member) and in no ready queue, its claimable time in
/// its hash (`ka`), until an ended holder hands it the slot (`admit`).
const SUBMIT: &str = r#"
local queued = ARGV[3]
local held, waits = {}, {}  -- gate -> holders / waiting, counted with this call's
local n = tonumber(ARGV[4])
local out = {}
local metas = {}
local keys = {}  -- idempotency hash -> key -> id, stored by this call
local seen_tenants = {}
local KQMETA = P .. 'qmeta'
local i = 5
for _ = 1, n do
  local id, et, ten, key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local existing = false
  local ik = P .. 'idem:' .. et
  if key ~= '' then
    existing = (keys[ik] or {})[key] or redis.call('HGET', ik, key)
    if not existing then
      keys[ik] = keys[ik] or {}
      keys[ik][key] = id
      add('HSET', ik, key, id)
    end
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
    if staged_seq[existing] then
      out[#out + 1] = 1
    else
      out[#out + 1] = tonumber(redis.call('HGET', P .. 't:' .. existing, 'seq') or '0')
    end
  else
    local q, prio = ARGV[i + 4], ARGV[i + 6]
    local m = new_member(id)
    writes[#writes + 1] = {'HSET', P .. 't:' .. id, {'ten', ten, 'x', ARGV[i + 7], 'in', ARGV[i + 9],
      'c', ARGV[i + 11], 'seq', '1', 'state', 'pending', 'q', q, 'prio', prio, 'qm', m,
      'e1', NOW .. ' ' .. queued}}
    staged_seq[id] = '1'
    staged_qm[id] = m
    if ARGV[i + 8] ~= '' then writes[#writes + 1] = {'HSET', P .. 'tx:' .. id, {'x1', ARGV[i + 8]}} end
    if ARGV[i + 10] ~= '' then writes[#writes + 1] = {'HSET', P .. 'tx:' .. id, {'in1', ARGV[i + 10]}} end
    add('ZADD', P .. 'tl:' .. et, 0, id)
    if not seen_tenants[ten] then
      seen_tenants[ten] = true
      writes[#writes + 1] = {'SADD', P .. 'tenants', {ten}}
    end
    if not metas[q] then
      metas[q] = true
      writes[#writes + 1] = {'HSETNX', KQMETA, {q, ARGV[i + 5]}}
    end
    local wait = false
    local gate = ARGV[i + 14]
    if gate ~= '' then
      local max, g = gate_parts(gate)
      local kh, kw = P .. 'kh:' .. g, P .. 'kw:' .. g
      held[g] = held[g] or redis.call('SCARD', kh)
      waits[g] = waits[g] or redis.call('ZCARD', kw)
      if held[g] < max and waits[g] == 0 then
        held[g] = held[g] + 1
        add('SADD', kh, id)
      else
        waits[g] = waits[g] + 1
        wait = true
        add('ZADD', kw, -tonumber(prio), m)
        add('SADD', P .. 'kgates', g)
        if ARGV[i + 13] ~= '' then
          writes[#writes + 1] = {'HSET', P .. 't:' .. id, {'ka', ARGV[i + 13]}}
        end
      end
    end
    if wait then
      -- In no queue until it gets a slot.
    elseif ARGV[i + 13] ~= '' then
      add('ZADD', KDELAYED, ARGV[i + 13], id)
      work = true  -- waiting workers learn its due time from their next claim
    else
      add_ready(q, prio, m)
    end
    if ARGV[i + 12] ~= '' then add('ZADD', P .. 'dl', ARGV[i + 12], id) end
    feed_append(et, id, '1', queued)
    out[#out + 1] = id
    out[#out + 1] = 1
    out[#out + 1] = 1
  end
  i = i + 15
end
finish()
return out
"#;

/// The wake-ups after a plain (MULTI/EXEC) submit: refreshes the head index
/// of the queues it added to, bumps and publishes the work epoch, and
/// publishes each given tenant's feed head. ARGV: prefix, queue count,
/// queues…, escaped tenants…. Runs as `EVAL` inside the transaction.
pub(super) const WAKE: &str = concat!(
    r#"
local P = ARGV[1] .. ':'
"#,
    heads_lua!(),
    r#"
local nq = tonumber(ARGV[2])
for k = 3, 2 + nq do refresh_head(ARGV[k]) end
local w = redis.call('INCR', P .. 'work')
redis.call('PUBLISH', P .. 'ch:work', w)
for k = 3 + nq, #ARGV do
  local c = redis.call('LLEN', P .. 'f:' .. ARGV[k]) + tonumber(redis.call('GET', P .. 'fo:' .. ARGV[k]) or '0')
  redis.call('PUBLISH', P .. 'ch:f:' .. ARGV[k], string.format('%d', c))
end
return w
"#
);

/// Builds the ready-queue head index of a store written by format 2 (which
/// had none) from its ready queues, and marks the prefix format 3; in one
/// step, so no claim sees half an index. ARGV: prefix. Returns the queues
/// indexed, or -1 when the prefix is not at format 2 (another process
/// migrated it first).
pub(super) const MIGRATE_2_TO_3: &str = concat!(
    r#"
local P = ARGV[1] .. ':'
if redis.call('GET', ARGV[1] .. ':format') ~= '2' then return -1 end
"#,
    heads_lua!(),
    r#"
local n = 0
for _, qid in ipairs(redis.call('SMEMBERS', P .. 'qready')) do
  refresh_head(qid)
  n = n + 1
end
redis.call('SET', ARGV[1] .. ':format', '3')
return n
"#
);

/// Pending tasks: the ready queues' members, the retry backoffs and the
/// tasks waiting for a concurrency slot.
/// ARGV: prefix.
pub(super) const PENDING_COUNT: &str = r#"
local P = ARGV[1] .. ':'
local n = redis.call('ZCARD', P .. 'delayed')
for _, qid in ipairs(redis.call('SMEMBERS', P .. 'qready')) do
  n = n + redis.call('ZCARD', P .. 'q:' .. qid)
end
for _, g in ipairs(redis.call('SMEMBERS', P .. 'kgates')) do
  n = n + redis.call('ZCARD', P .. 'kw:' .. g)
end
return n
"#;

/// Commits transitions decided in Rust.
///
/// ARGV: prefix, now, node count, nodes to touch…, record count, records (see
/// `commit_one`), stale reclaim entries count, then (task, entry) pairs to drop
/// if unchanged. Returns one status per record.
const COMMIT: &str = r#"
local i = 3
local nn = tonumber(ARGV[i])
for k = 1, nn do touch(ARGV[i + k]) end
i = i + nn + 1
local n = tonumber(ARGV[i])
i = i + 1
local out = {}
for _ = 1, n do
  local status, nx = commit_one(i)
  out[#out + 1] = status
  i = nx or rec_end(i)
end
local ns = tonumber(ARGV[i])
for k = 0, ns - 1 do
  local task, entry = ARGV[i + 1 + 2 * k], ARGV[i + 2 + 2 * k]
  if redis.call('HGET', KRECLAIM, task) == entry then add('HDEL', KRECLAIM, task) end
end
finish()
return out
"#;

/// The first half of a claim: checks the node (exists, Ready, free capacity),
/// promotes due backoffs, and reserves eligible candidates — for every tenant,
/// its best `max` (by priority, then enqueue order) across the ready queues
/// whose owner, labels and agent the node may run, merged from the queues'
/// heads, skipping tasks that avoid this node. Eligibility is decided here, on the server, from
/// the node's stored spec and the queue's owner/agent/labels (the rule of
/// `hive_core::node::eligible`). Reserved tasks leave their queue; the second
/// half (CLAIM_COMMIT) schedules the chosen ones and puts the rest back, and a
/// sweep puts back the reservations of a claimer that died in between.
///
/// The reservation is one string of space-separated queue members
/// (`{order:016}{task}`, `rsv:{claim}`):
/// the second half deletes it, and only a claim that still finds it may
/// commit, so a sweep that put the reservation back wins as a whole.
///
/// ARGV: prefix, now, node, max, claim id, agent count, agents…
/// Returns: status ('ok' | 'nonode'), work epoch, node spec, status,
/// registered, last seen, in flight, when the earliest task in its backoff is
/// due ('' none), then per candidate: queue member
/// (`{order:016}{task}`), score (−priority), the task's fields `c`, `r`, `o`, `err`, `x`, `in` (as stored: long
/// values are redirects to the side hash, resolved by Rust), tenant.
const CLAIM_PREPARE: &str = r#"
local node, claim = ARGV[3], ARGV[5]
local nk = P .. 'n:' .. node
local n = redis.call('HMGET', nk, 'spec', 'status', 'cap', 'reg')
if not n[1] then return {'nonode'} end
local epoch = redis.call('GET', P .. 'work') or '0'
touch(node)
local seen = redis.call('HGET', nk, 'seen')
local inflight = redis.call('HLEN', P .. 'nl:' .. node)
local due = redis.call('ZRANGEBYSCORE', KDELAYED, '(' .. NOW, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local out = {'ok', epoch, n[1], n[2], n[4], seen, inflight, due[2] or ''}
if n[2] ~= 'ready' then return out end
local max = math.min(tonumber(ARGV[4]), tonumber(n[3]) - inflight)
if max <= 0 then return out end
promote(NOW)
flush()
refresh_dirty()
local agents = {}
local any_agent = true
for k = 7, 6 + tonumber(ARGV[6]) do
  agents[ARGV[k]] = true
  any_agent = false
end
local spec = cjson.decode(n[1])
local owner = spec.owner
local shares = spec.shared_with or {}
local labels = spec.labels or {}
local function owner_ok(m)
  if owner.type == 'system' then return true end
  if owner.tenant == m.tenant and owner.principal == m.principal then return true end
  for _, s in ipairs(shares) do
    if s.tenant == m.tenant and (s.type == 'tenant' or s.principal == m.principal) then
      return true
    end
  end
  return false
end
local function labels_ok(m)
  for k, v in pairs(m.labels or {}) do
    if labels[k] ~= v then return false end
  end
  return true
end
local rk = P .. 'rsv:' .. claim
local rids = {}
-- A min-heap of queue heads ({queue key, position, member, score, score as
-- stored, queue, page read ahead, index in it, page size, members reserved,
-- whether one was skipped}), by score (-priority) then member (enqueue order).
local function before(a, b)
  if a[4] ~= b[4] then return a[4] < b[4] end
  return a[3] < b[3]
end
local function sift(h, i)
  local n = #h
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and before(h[l], h[m]) then m = l end
    if r <= n and before(h[r], h[m]) then m = r end
    if m == i then return end
    h[i], h[m] = h[m], h[i]
    i = m
  end
end
local function push(h, e)
  h[#h + 1] = e
  local i = #h
  while i > 1 do
    local up = math.floor(i / 2)
    if not before(h[i], h[up]) then return end
    h[i], h[up] = h[up], h[i]
    i = up
  end
end
local KQH = P .. 'qh'
local PAGE = math.max(max, 16)
-- Tenant by tenant (one range of the head index each), the best `max`
-- eligible tasks: a merge of the queues' heads, pulling the next queue from
-- the index only when its head beats what the heap holds. So a claim looks at
-- O(max) tasks and queues per tenant (plus the queues the node may not run),
-- however many queues there are.
local cursor = '-'
while true do
  local first = redis.call('ZRANGEBYLEX', KQH, cursor, '+', 'LIMIT', 0, 1)
  if #first == 0 then break end
  local len = tonumber(string.sub(first[1], 1, 4))
  local prefix = string.sub(first[1], 1, 4 + len)
  local tenant = string.sub(prefix, 5)
  local upper = '(' .. prefix .. '\255'
  local from = '[' .. prefix
  local page, pi, ended = {}, 1, false
  -- The next eligible queue of this tenant in index order, as a heap entry.
  local function next_queue()
    while true do
      if pi > #page then
        if ended then return nil end
        page = redis.call('ZRANGEBYLEX', KQH, from, upper, 'LIMIT', 0, PAGE)
        pi = 1
        if #page < PAGE then ended = true end
        if #page == 0 then return nil end
        from = '(' .. page[#page]
      end
      local e = page[pi]
      pi = pi + 1
      local qid = string.sub(e, 4 + len + 27)
      local meta = redis.call('HGET', P .. 'qmeta', qid)
      local m = meta and cjson.decode(meta)
      if m and (any_agent or agents[m.agent]) and owner_ok(m) and labels_ok(m) then
        local qk = P .. 'q:' .. qid
        -- Its first members, read ahead a page at a time.
        local n = math.min(max, 32)
        local buf = redis.call('ZRANGE', qk, 0, n - 1, 'WITHSCORES')
        if #buf == 0 then
          -- A stale index entry: finish() drops it.
          dirtyq[qid] = true
        else
          return {qk, 0, buf[1], tonumber(buf[2]), buf[2], qid, buf, 1, n}
        end
      end
    end
  end
  local h = {}
  local waiting = next_queue()
  local taken = 0
  -- Takes a queue's reserved members out of it: its first ones by rank when
  -- nothing before them was skipped (one command), else one by one.
  local function take_out(e)
    local mine = e[10]
    if mine == nil or #mine == 0 then return end
    if e[11] then
      for _, m in ipairs(mine) do add('ZREM', e[1], m) end
    else
      writes[#writes + 1] = {'ZREMRANGEBYRANK', e[1], {0, #mine - 1}}
    end
  end
  while taken < max do
    while waiting and (#h == 0 or before(waiting, h[1])) do
      push(h, waiting)
      waiting = next_queue()
    end
    if #h == 0 then break end
    local top = h[1]
    local qk, member = top[1], top[3]
    local id = string.sub(member, 17)
    local t = redis.call('HMGET', P .. 't:' .. id, 'state', 'avoid', 'c', 'x', 'in')
    if t[1] ~= 'pending' then
      -- Not pending: a stale queue entry; drop it.
      add('ZREM', qk, member)
      dirtyq[top[6]] = true
      top[11] = true
    elseif t[2] == node then
      top[11] = true
    else
      taken = taken + 1
      top[10] = top[10] or {}
      top[10][#top[10] + 1] = member
      dirtyq[top[6]] = true
      rids[#rids + 1] = member
      local o = #out
      out[o + 1] = member
      out[o + 2] = top[5]
      out[o + 3] = t[3]
      -- Report, output, error: only when `c` says they are apart (its
      -- state byte has APART, 64) or `c` itself is a redirect.
      local c = t[3]
      if c and (string.byte(c, 1) == 126 or (string.byte(c, 2) or 0) >= 64) then
        local more = redis.call('HMGET', P .. 't:' .. id, 'r', 'o', 'err')
        out[o + 4], out[o + 5], out[o + 6] = more[1], more[2], more[3]
      else
        out[o + 4], out[o + 5], out[o + 6] = false, false, false
      end
      out[o + 7] = t[4]
      out[o + 8] = t[5]
      out[o + 9] = tenant
    end
    -- Advance this queue to its next member, from the page read ahead or a
    -- new page (members stay in place until finish(), so positions do not
    -- move).
    local pos, buf, bi = top[2] + 1, top[7], top[8] + 2
    if bi > #buf then
      if #buf < 2 * top[9] then
        buf = {}
      else
        local n = math.max(1, math.min(max - taken, 256))
        buf = redis.call('ZRANGE', qk, pos, pos + n - 1, 'WITHSCORES')
        top[9] = n
      end
      bi = 1
    end
    if bi > #buf then
      take_out(top)
      h[1] = h[#h]
      h[#h] = nil
    else
      top[2], top[3], top[4], top[5], top[7], top[8] = pos, buf[bi], tonumber(buf[bi + 1]), buf[bi + 1], buf, bi
    end
    if #h > 0 then sift(h, 1) end
  end
  for _, e in ipairs(h) do take_out(e) end
  cursor = upper
end
if #rids > 0 then
  writes[#writes + 1] = {'SET', rk, {table.concat(rids, ' ')}}
  add('ZADD', P .. 'rsvs', NOW, claim)
end
finish()
return out
"#;

/// The second half of a claim: for each chosen candidate still reserved by this
/// claim, re-checks the node (exists, Ready, free capacity) and commits the
/// Schedule (and Start) that Rust decided with the state machine; everything
/// else reserved goes back to its queue, in its old place.
///
/// ARGV: prefix, now, node, claim id, the count and (task, bucket, units, µs
/// per token, period µs) of the records' rate limits, the count and ids of
/// the other reserved tasks (to put back), record count, records (see
/// `commit_one`): what comes before the records is read once, so the records
/// are walked once. Returns one status per record: 1 stored, 0
/// missed, -2 refused (node not Ready or full), -3 no longer reserved, -5
/// held back by its rate limit (moved to the delayed set, in line behind the
/// others held back from the same bucket); then when the first task held
/// back is due (ms, 0 none).
///
/// A bucket is its theoretical arrival time in µs (field of `rl`), the
/// generic cell rate algorithm of `hive_core::task::RateLimit::take`.
const CLAIM_COMMIT: &str = r#"
local node, claim = ARGV[3], ARGV[4]
local limits = {}
local nl = tonumber(ARGV[5])
for k = 6, 5 + 5 * nl, 5 do
  limits[ARGV[k]] = {ARGV[k + 1], tonumber(ARGV[k + 2]), tonumber(ARGV[k + 3]), tonumber(ARGV[k + 4])}
end
local nb_at = 6 + 5 * nl  -- the count of reserved tasks to put back
local nb = tonumber(ARGV[nb_at])
local first = nb_at + nb + 2  -- the first record
local KRL = P .. 'rl'
local held = {}  -- bucket -> tokens held back in this claim
local earliest = 0  -- when the first task held back is due (ms)
-- Takes a task's tokens (true) or holds it back in line (false).
local function take(id)
  local r = limits[id]
  if not r then return true end
  local now_us = tonumber(NOW) * 1000
  local tat = tonumber(redis.call('HGET', KRL, r[1]) or '0')
  local new = math.max(tat, now_us) + r[2] * r[3]
  if new - now_us <= r[4] then
    redis.call('HSET', KRL, r[1], fmt(new))
    return true
  end
  local ahead = held[r[1]] or 0
  held[r[1]] = ahead + r[2]
  local at = math.ceil((new - r[4] + ahead * r[3]) / 1000)
  if earliest == 0 or at < earliest then earliest = at end
  add('ZADD', KDELAYED, fmt(at), id)
  work = true
  return false
end
LEASE_NODE = node
-- Only a claim that still finds its reservation may commit; the reservation
-- is deleted with the other writes, at the end.
local valid = redis.call('EXISTS', P .. 'rsv:' .. claim) == 1
writes[#writes + 1] = {'DEL', P .. 'rsv:' .. claim, {}}
add('ZREM', P .. 'rsvs', claim)
local nk = P .. 'n:' .. node
local n = redis.call('HMGET', nk, 'status', 'cap')
local free = 0
if n[1] == 'ready' then
  free = tonumber(n[2]) - redis.call('HLEN', P .. 'nl:' .. node)
end
local count = tonumber(ARGV[first - 1])
local i = first
local out = {}
local done = {}
-- Every record is a task this claim reserved (while the reservation holds).
for _ = 1, count do
  local id = ARGV[i]
  local status, nx
  if not valid or done[id] then
    status = -3
  else
    reserved[id] = true
    if free <= 0 then
      status = -2
    elseif limits[id] and redis.call('HGET', P .. 't:' .. id, 'seq') ~= ARGV[i + 1] then
      -- (Checked first so that a missed commit takes no tokens.)
      status = 0
    elseif limits[id] and not take(id) then
      status = -5
    else
      status, nx = commit_one(i)
      if status == 1 then free = free - 1 end
    end
    if status ~= 1 and status ~= -5 then unreserve(id) end
  end
  done[id] = true
  out[#out + 1] = status
  i = nx or rec_end(i)
end
local back = false
if valid then
  for k = nb_at + 1, nb_at + nb do
    local id = ARGV[k]
    if not done[id] then
      done[id] = true
      if unreserve(id) then back = true end
    end
  end
end
if back then work = true end
finish()
out[#out + 1] = earliest
return out
"#;

/// The first half of a sweep: marks nodes not seen since the cutoff Lost and
/// hands their leases to the reclaim list, puts stale claim reservations back,
/// promotes due backoffs. Returns: nodes lost, then the reclaim list (task,
/// entry) pairs.
///
/// ARGV: prefix, now, lost cutoff, reservation cutoff.
const SWEEP_PREPARE: &str = r#"
local lost = 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', P .. 'seen', '-inf', '(' .. ARGV[3])) do
  redis.call('ZREM', P .. 'seen', node)
  local nk = P .. 'n:' .. node
  local st = redis.call('HGET', nk, 'status')
  if st and st ~= 'lost' then
    redis.call('HSET', nk, 'status', 'lost')
    hand_over_leases(node)
    lost = lost + 1
  end
end
for _, claim in ipairs(redis.call('ZRANGEBYSCORE', P .. 'rsvs', '-inf', '(' .. ARGV[4])) do
  local rk = P .. 'rsv:' .. claim
  local ids = {}
  if redis.call('TYPE', rk).ok == 'set' then
    ids = redis.call('SMEMBERS', rk)
  else
    for member in string.gmatch(redis.call('GET', rk) or '', '%S+') do
      ids[#ids + 1] = string.sub(member, 17)
    end
  end
  for _, id in ipairs(ids) do
    if unreserve(id) then work = true end
  end
  redis.call('DEL', rk)
  redis.call('ZREM', P .. 'rsvs', claim)
end
promote(NOW)
local out = {lost}
local rc = redis.call('HGETALL', P .. 'reclaim')
for k = 1, #rc do out[#out + 1] = rc[k] end
finish()
return out
"#;

/// Registers a node. ARGV: prefix, now, node, spec, status, capacity,
/// registered, last seen. Returns 1, or 0 if the id exists.
const REGISTER_NODE: &str = r#"
local node = ARGV[3]
local nk = P .. 'n:' .. node
if redis.call('EXISTS', nk) == 1 then return 0 end
redis.call('HSET', nk, 'spec', ARGV[4], 'status', ARGV[5], 'cap', ARGV[6], 'reg', ARGV[7],
  'seen', ARGV[8])
redis.call('SADD', P .. 'nodes', node)
if ARGV[5] ~= 'lost' then redis.call('ZADD', P .. 'seen', ARGV[8], node) end
if ARGV[5] == 'ready' then work = true end
finish()
return 1
"#;

/// Node changes. ARGV: prefix, now, node, action ('touch' | 'ready' | 'draining'
/// | 'lost' | 'remove'). Returns {} when the node does not exist, else: spec,
/// status, registered, last seen, in flight (after the change), then the
/// reclaim entries of the leases it handed over (task, entry pairs).
const NODE_CHANGE: &str = r#"
local node, action = ARGV[3], ARGV[4]
local nk = P .. 'n:' .. node
local n = redis.call('HMGET', nk, 'spec', 'status', 'reg', 'seen')
if not n[1] then return {} end
local status, seen = n[2], n[4]
local handed = false
if action == 'touch' then
  if tonumber(seen) < tonumber(NOW) then seen = NOW end
  if status == 'lost' then
    status = 'ready'
    work = true
  end
elseif action == 'remove' then
  handed = true
else
  status = action
  seen = NOW
  if status == 'lost' then handed = true end
  if status == 'ready' then work = true end
end
local entries = {}
if handed then entries = hand_over_leases(node) end
if action == 'remove' then
  redis.call('DEL', nk)
  redis.call('SREM', P .. 'nodes', node)
  redis.call('ZREM', P .. 'seen', node)
else
  redis.call('HSET', nk, 'status', status, 'seen', seen)
  if status == 'lost' then
    redis.call('ZREM', P .. 'seen', node)
  else
    redis.call('ZADD', P .. 'seen', seen, node)
  end
end
local out = {n[1], status, n[3], seen, redis.call('HLEN', P .. 'nl:' .. node)}
for _, e in ipairs(entries) do out[#out + 1] = e end
finish()
return out
"#;

/// Acknowledges terminal events for a consumer. A task at or below the
/// consumer's mark leaves its unacknowledged set; one past the mark is
/// remembered in `ca` until the mark passes it.
/// ARGV: prefix, now, escaped tenant, tenant, escaped consumer, consumer, task ids…
const ACK_TERMINAL: &str = r#"
local et, ten, ec, consumer = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ak = P .. 'ca:' .. et .. ':' .. ec
local uk = P .. 'cu:' .. et .. ':' .. ec
local tk = P .. 'term:' .. et
local terminal = {succeeded = true, failed = true, cancelled = true, timed_out = true}
local mark = tonumber(redis.call('HGET', P .. 'cf:' .. et, consumer) or '0')
for k = 7, #ARGV do
  local t = redis.call('HMGET', P .. 't:' .. ARGV[k], 'ten', 'state')
  if t[1] == ten and terminal[t[2]] and redis.call('ZREM', uk, ARGV[k]) == 0 then
    local c = redis.call('ZSCORE', tk, ARGV[k])
    if c and tonumber(c) > mark then redis.call('SADD', ak, ARGV[k]) end
  end
end
return 1
"#;

/// Terminal events a consumer has not acknowledged, oldest first. Terminal
/// events past the consumer's mark are taken in (into its unacknowledged set,
/// unless already acknowledged) only until `limit` are waiting, at most
/// `budget` per call, so the work is O(limit + newly ended tasks), not
/// O(every terminal event since the oldest unacknowledged one).
/// ARGV: prefix, now, escaped tenant, escaped consumer, consumer, limit, budget.
/// Returns: 1 when the budget ran out before `limit` were found (call again),
/// else 0; then per event: cursor, packed feed entry.
const UNACKED_TERMINAL: &str = r#"
local et, ec, consumer = ARGV[3], ARGV[4], ARGV[5]
local limit, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('HSETNX', P .. 'cf:' .. et, consumer, '0')
local mark = redis.call('HGET', P .. 'cf:' .. et, consumer)
local ak = P .. 'ca:' .. et .. ':' .. ec
local uk = P .. 'cu:' .. et .. ':' .. ec
local tk = P .. 'term:' .. et
local more = 0
local moved = false
-- Retention trimmed the feed below `fl + 1`: nothing there is listed.
local fl = tonumber(redis.call('GET', P .. 'fo:' .. et) or '0')
if fl > 0 then
  redis.call('ZREMRANGEBYSCORE', uk, '-inf', fl)
  if tonumber(mark) < fl then
    mark = fl
    moved = true
  end
end
while redis.call('ZCARD', uk) < limit do
  if budget <= 0 then more = 1 break end
  local page = redis.call('ZRANGEBYSCORE', tk, '(' .. mark, '+inf', 'WITHSCORES', 'LIMIT', 0, math.min(256, budget))
  if #page == 0 then break end
  for k = 1, #page, 2 do
    if redis.call('SREM', ak, page[k]) == 0 then
      redis.call('ZADD', uk, page[k + 1], page[k])
    end
    mark = page[k + 1]
  end
  budget = budget - #page / 2
  moved = true
end
if moved then redis.call('HSET', P .. 'cf:' .. et, consumer, mark) end
local out = {more}
local got = redis.call('ZRANGE', uk, 0, limit - 1, 'WITHSCORES')
local fk = P .. 'f:' .. et
for k = 1, #got, 2 do
  local c = got[k + 1]
  local e = redis.call('LINDEX', fk, tonumber(c) - 1 - fl)
  if e then
    out[#out + 1] = c
    out[#out + 1] = e
  end
end
return out
"#;

/// Up to `limit` events of a task after a seq. ARGV: prefix, now, task, after,
/// limit. Returns {} for a missing task, else: tenant, then the events
/// (`{at} {kind}`) from seq after+1 on (a long event is read from the side
/// hash it redirects to); or tenant and the earliest kept seq (an integer)
/// when retention dropped events after `after`.
const READ_EVENTS: &str = r#"
local tk = P .. 't:' .. ARGV[3]
local t = redis.call('HMGET', tk, 'ten', 'seq', 'ef')
if not t[1] then return {} end
local from, last = tonumber(ARGV[4]) + 1, tonumber(t[2])
-- Retention kept only the events from `ef` on: an integer says so.
if t[3] and from < tonumber(t[3]) then return {t[1], tonumber(t[3])} end
local to = math.min(last, tonumber(ARGV[4]) + tonumber(ARGV[5]))
local out = {t[1]}
if from > to then return out end
local fields = {}
for s = from, to do fields[#fields + 1] = 'e' .. fmt(s) end
local step = 2000
for k = 1, #fields, step do
  local got = redis.call('HMGET', tk, unpack(fields, k, math.min(k + step - 1, #fields)))
  for _, e in ipairs(got) do
    if e and string.byte(e) == 126 then
      e = redis.call('HGET', P .. 'tx:' .. ARGV[3], string.sub(e, 2))
    end
    out[#out + 1] = e
  end
end
return out
"#;

/// Retention: compacts up to `limit` tasks of a tenant that ended before
/// `cutoff`, oldest first (its terminal events in feed order, from the
/// floor on; stops at the first that ended later). A compacted task keeps
/// its hash and terminal event; `ef` marks the first kept seq. The feed is
/// trimmed past the last compacted terminal event (`fo` counts the trimmed
/// entries), with the terminal index.
/// ARGV: prefix, now, escaped tenant, cutoff, limit.
/// Returns {tasks, events deleted, floor, more (1/0)}.
const COMPACT: &str = r#"
local et, cutoff, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local fok, fk, tk = P .. 'fo:' .. et, P .. 'f:' .. et, P .. 'term:' .. et
local fl = tonumber(redis.call('GET', fok) or '0')
local cand = redis.call('ZRANGEBYSCORE', tk, fl + 1, '+inf', 'WITHSCORES', 'LIMIT', 0, limit + 1)
local tasks, deleted, more, lastc = 0, 0, 0, nil
for k = 1, #cand, 2 do
  local id, c = cand[k], tonumber(cand[k + 1])
  local hk = P .. 't:' .. id
  local seq = tonumber(redis.call('HGET', hk, 'seq') or '0')
  local ev = redis.call('HGET', hk, 'e' .. fmt(seq))
  if ev and string.byte(ev) == 126 then
    ev = redis.call('HGET', P .. 'tx:' .. id, string.sub(ev, 2))
  end
  local at = ev and tonumber(string.match(ev, '^(%-?%d+)')) or nil
  if at == nil or at >= cutoff then break end
  if tasks == limit then
    more = 1
    break
  end
  local from = tonumber(redis.call('HGET', hk, 'ef') or '1')
  if seq > from then
    local fields = {}
    for s = from, seq - 1 do fields[#fields + 1] = 'e' .. fmt(s) end
    local side = {}
    local step = 2000
    for j = 1, #fields, step do
      local part = {unpack(fields, j, math.min(j + step - 1, #fields))}
      local got = redis.call('HMGET', hk, unpack(part))
      for _, e in ipairs(got) do
        if e and string.byte(e) == 126 then side[#side + 1] = string.sub(e, 2) end
      end
      deleted = deleted + redis.call('HDEL', hk, unpack(part))
    end
    for j = 1, #side, step do
      redis.call('HDEL', P .. 'tx:' .. id, unpack(side, j, math.min(j + step - 1, #side)))
    end
    redis.call('HSET', hk, 'ef', seq)
  end
  redis.call('ZADD', P .. 'cmp:' .. et, c, id)
  tasks = tasks + 1
  lastc = c
end
if lastc then
  redis.call('LTRIM', fk, lastc - fl, -1)
  redis.call('SET', fok, lastc)
  redis.call('ZREMRANGEBYSCORE', tk, '-inf', lastc)
  fl = lastc
end
local floor = 0
if fl > 0 then floor = fl + 1 end
return {tasks, deleted, floor, more}
"#;

/// Retention's second stage: deletes up to `limit` compacted tasks of a
/// tenant (`cmp:{tenant}`, by terminal cursor) that ended before `cutoff`,
/// oldest first: the task's hashes, its place in the tenant's list, its
/// idempotency key (if it still names this task).
/// ARGV: prefix, now, escaped tenant, cutoff, limit. Returns {deleted, more}.
const PURGE: &str = r#"
local et, cutoff, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local ck = P .. 'cmp:' .. et
local cand = redis.call('ZRANGE', ck, 0, limit)
local n, more = 0, 0
for _, id in ipairs(cand) do
  local hk = P .. 't:' .. id
  local t = redis.call('HMGET', hk, 'seq', 'x')
  if t[1] then
    local ev = redis.call('HGET', hk, 'e' .. t[1])
    if ev and string.byte(ev) == 126 then
      ev = redis.call('HGET', P .. 'tx:' .. id, string.sub(ev, 2))
    end
    local at = ev and tonumber(string.match(ev, '^(%-?%d+)')) or nil
    if at ~= nil and at >= cutoff then break end
    if n == limit then
      more = 1
      break
    end
    local x = t[2]
    if x and string.byte(x) == 126 then x = redis.call('HGET', P .. 'tx:' .. id, 'x1') end
    -- x: `{created} {spec} -{principal}` or `{created} {spec} {key length} {key}{principal}`.
    if x then
      local rest = string.match(x, '^%-?%d+ %S+ (.*)$')
      if rest and string.byte(rest) ~= 45 then
        local len, tail = string.match(rest, '^(%d+) (.*)$')
        if len then
          local key = string.sub(tail, 1, tonumber(len))
          local ik = P .. 'idem:' .. et
          if redis.call('HGET', ik, key) == id then redis.call('HDEL', ik, key) end
        end
      end
    end
    redis.call('DEL', hk, P .. 'tx:' .. id)
    redis.call('ZREM', P .. 'tl:' .. et, id)
    n = n + 1
  end
  redis.call('ZREM', ck, id)
end
return {n, more}
"#;

/// Creates or compare-and-set replaces a record and appends its events.
/// ARGV: prefix, now, escaped kind, escaped id, id, tenant, expected version,
/// status, body, events…
/// Returns {code, version, last seq}: code 1 ok, 0 conflict (version), -1 not
/// found, -2 another tenant, -3 exists (on create).
const WRITE_RECORD: &str = r#"
local ek, eid, id, ten, exp = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local rk = P .. 'r:' .. ek .. ':' .. eid
local cur = redis.call('HMGET', rk, 'ten', 'ver', 'seq')
local version, seq
if not cur[1] then
  if exp ~= 0 then return {-1, 0, 0} end
  version, seq = 1, 0
  redis.call('HSET', rk, 'ten', ten, 'created', NOW)
  redis.call('ZADD', P .. 'ri:' .. ek, 0, id)
else
  if exp == 0 then return {-3, tonumber(cur[2]), tonumber(cur[3])} end
  if tonumber(cur[2]) ~= exp then return {0, tonumber(cur[2]), tonumber(cur[3])} end
  if cur[1] ~= ten then return {-2, tonumber(cur[2]), tonumber(cur[3])} end
  version, seq = exp + 1, tonumber(cur[3])
end
for k = 10, #ARGV do
  seq = seq + 1
  redis.call('XADD', P .. 're:' .. ek .. ':' .. eid, fmt(seq) .. '-0', 'at', NOW, 'b', ARGV[k])
end
redis.call('HSET', rk, 'ver', fmt(version), 'status', ARGV[8], 'body', ARGV[9], 'updated', NOW,
  'seq', fmt(seq))
if #ARGV >= 10 then
  redis.call('PUBLISH', P .. 'ch:r:' .. ek .. ':' .. eid, fmt(seq))
end
return {1, version, seq}
"#;

/// One page of a record listing: scans ids after a cursor and keeps those that
/// pass the filters. ARGV: prefix, now, escaped kind, after ('' from the start),
/// tenant ('' any), limit, scan budget, statuses…
/// Returns: last scanned id ('' when the index is exhausted), then per record:
/// id, tenant, version, status, body, created, updated, last seq.
const LIST_RECORDS: &str = r#"
local ek, after, ten = ARGV[3], ARGV[4], ARGV[5]
local limit, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local statuses = {}
local any_status = true
for k = 8, #ARGV do
  statuses[ARGV[k]] = true
  any_status = false
end
local start = '-'
if after ~= '' then start = '(' .. after end
local ids = redis.call('ZRANGEBYLEX', P .. 'ri:' .. ek, start, '+', 'LIMIT', 0, budget)
local out = {''}
local found = 0
for _, id in ipairs(ids) do
  out[1] = id
  local r = redis.call('HMGET', P .. 'r:' .. ek .. ':' .. id:gsub('%%', '%%25'):gsub(':', '%%3A'),
    'ten', 'ver', 'status', 'body', 'created', 'updated', 'seq')
  if r[1] and (ten == '' or r[1] == ten) and (any_status or statuses[r[3]]) then
    out[#out + 1] = id
    for f = 1, 7 do out[#out + 1] = r[f] end
    found = found + 1
    if found >= limit then return out end
  end
end
if #ids < budget then out[1] = '' end
return out
"#;

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}\n{body}"))
}

/// The loaded scripts (hashed once; sent by EVALSHA, loaded on first use).
pub(super) struct Scripts {
    pub(super) submit: redis::Script,
    pub(super) commit: redis::Script,
    pub(super) claim_prepare: redis::Script,
    pub(super) claim_commit: redis::Script,
    pub(super) sweep_prepare: redis::Script,
    pub(super) register_node: redis::Script,
    pub(super) node_change: redis::Script,
    pub(super) ack_terminal: redis::Script,
    pub(super) unacked_terminal: redis::Script,
    pub(super) write_record: redis::Script,
    pub(super) list_records: redis::Script,
    pub(super) read_events: redis::Script,
    pub(super) compact: redis::Script,
    pub(super) purge: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            submit: script(SUBMIT),
            commit: script(COMMIT),
            claim_prepare: script(CLAIM_PREPARE),
            claim_commit: script(CLAIM_COMMIT),
            sweep_prepare: script(SWEEP_PREPARE),
            register_node: script(REGISTER_NODE),
            node_change: script(NODE_CHANGE),
            ack_terminal: script(ACK_TERMINAL),
            unacked_terminal: script(UNACKED_TERMINAL),
            write_record: script(WRITE_RECORD),
            list_records: script(LIST_RECORDS),
            read_events: script(READ_EVENTS),
            compact: script(COMPACT),
            purge: script(PURGE),
        }
    }
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripts")
    }
}
