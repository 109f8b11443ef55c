# The floor of Hive's Redis work per task (issue 19): the keys, value sizes
# and batched writes the store makes for a task's life (submit in MULTI/EXEC,
# claim with Scheduled and Started, a Succeeded report, the feed read once),
# with the least Lua possible, driven from Python (its own CPU does not count).
# It leaves out what the store also does: the ready-queue head index, the work
# epoch and its publishes, node checks, queue eligibility, idempotency keys,
# the reservation sweep list, compare-and-set inside a call. Prints the Redis
# server's CPU per task (INFO used_cpu_user + used_cpu_sys).
#
#   pip install redis && python3 docs/redis-floor.py 20000 [--two-phase]
#
# Without --two-phase the claim is one script that decides the transition
# itself; with it, the claim is Hive's shape: a first script reserves and
# returns each task's core, the client decides, a second script commits.
# Redis at port 56380 (REDIS_PORT), keys under `floor:` (deleted after).
# The floor of Hive's Redis work per task: the same keys, values and batched
# writes as the store, with the least Lua possible (claim in one script, no
# reservation, no Rust in between). Prints Redis CPU per task.
import redis, os, time, uuid, sys
r = redis.Redis(port=int(os.environ.get('REDIS_PORT', '56380')))
P = 'floor:'
TWO_PHASE = '--two-phase' in sys.argv
args_n = [a for a in sys.argv[1:] if not a.startswith('--')]
N = int(args_n[0]) if args_n else 20000
B = 1000
Q = 'ce74622b69a0f69a559a5b6bb48ccce1d1c9b0a24b76a6a3a1db9a8202b331ae'
core = os.urandom(50)
lease_node = str(uuid.uuid4())
CLAIM = r.script_load("""
local P, now, node, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local q = P .. 'q:' .. ARGV[5]
local ms = redis.call('ZRANGE', q, 0, max - 1)
local feed, nl, dl = {}, {}, {}
local c = redis.call('LLEN', P .. 'f:bench')
for i, m in ipairs(ms) do
  local id = string.sub(m, 17)
  local tk = P .. 't:' .. id
  if redis.call('HGET', tk, 'seq') == '1' then
    local s = now .. ' s ' .. node
    local st = now .. ' r ' .. node .. ' 1'
    redis.call('HSET', tk, 'seq', '3', 'state', 'running', 'c', ARGV[6], 'e2', s, 'e3', st)
    feed[#feed + 1] = id .. ' 2 ' .. s
    feed[#feed + 1] = id .. ' 3 ' .. st
    nl[#nl + 1] = id
    nl[#nl + 1] = node
    dl[#dl + 1] = now
    dl[#dl + 1] = id
  end
end
if #ms > 0 then
  redis.call('ZREMRANGEBYRANK', q, 0, #ms - 1)
  redis.call('RPUSH', P .. 'f:bench', unpack(feed))
  redis.call('HSET', P .. 'nl:' .. node, unpack(nl))
  redis.call('ZADD', P .. 'dl', unpack(dl))
end
return ms
""")
PREP = r.script_load("""
local P, max = ARGV[1], tonumber(ARGV[2])
local q = P .. 'q:' .. ARGV[3]
local ms = redis.call('ZRANGE', q, 0, max - 1)
local out = {}
for i, m in ipairs(ms) do
  local id = string.sub(m, 17)
  local t = redis.call('HMGET', P .. 't:' .. id, 'state', 'avoid', 'c', 'x', 'in')
  out[#out + 1] = m
  out[#out + 1] = t[3]
  out[#out + 1] = t[4]
end
if #ms > 0 then redis.call('ZREMRANGEBYRANK', q, 0, #ms - 1) end
redis.call('SET', P .. 'rsv', table.concat(ms, ' '))
return out
""")
COMMIT2 = r.script_load("""
local P, now, node = ARGV[1], ARGV[2], ARGV[3]
local feed, nl, dl = {}, {}, {}
for i = 4, #ARGV, 7 do
  local id = ARGV[i]
  local tk = P .. 't:' .. id
  if redis.call('HGET', tk, 'seq') == ARGV[i + 1] then
    redis.call('HSET', tk, 'seq', '3', 'state', 'running', 'c', ARGV[i + 2], 'e2', ARGV[i + 3], 'e3', ARGV[i + 4])
    feed[#feed + 1] = ARGV[i + 5]
    feed[#feed + 1] = ARGV[i + 6]
    nl[#nl + 1] = id
    nl[#nl + 1] = node
    dl[#dl + 1] = now
    dl[#dl + 1] = id
  end
end
redis.call('DEL', P .. 'rsv')
redis.call('RPUSH', P .. 'f:bench', unpack(feed))
redis.call('HSET', P .. 'nl:' .. node, unpack(nl))
redis.call('ZADD', P .. 'dl', unpack(dl))
return 1
""")
REPORT = r.script_load("""
local P, now, node = ARGV[1], ARGV[2], ARGV[3]
local feed, ids, term = {}, {}, {}
local c = redis.call('LLEN', P .. 'f:bench')
for i = 5, #ARGV, 3 do
  local id = ARGV[i]
  local tk = P .. 't:' .. id
  if redis.call('HGET', tk, 'seq') == ARGV[i + 1] then
    redis.call('HSET', tk, 'seq', '4', 'state', 'succeeded', 'c', ARGV[4], 'e4', ARGV[i + 2])
    feed[#feed + 1] = id .. ' 4 ' .. ARGV[i + 2]
    ids[#ids + 1] = id
    c = c + 1
    term[#term + 1] = c
    term[#term + 1] = id
  end
end
redis.call('RPUSH', P .. 'f:bench', unpack(feed))
redis.call('HDEL', P .. 'nl:' .. node, unpack(ids))
redis.call('ZREM', P .. 'dl', unpack(ids))
redis.call('ZADD', P .. 'term:bench', unpack(term))
return #ids
""")
def cpu():
    i = r.info('cpu'); return i['used_cpu_user'] + i['used_cpu_sys']
for k in r.scan_iter(P + '*'): r.delete(k)
t0 = cpu(); order = 0; read = 0
for b in range(N // B):
    ids = [str(uuid.uuid4()) for _ in range(B)]
    now = str(int(time.time() * 1000))
    p = r.pipeline(transaction=True)
    for id in ids:
        order += 1
        m = '%016d' % order + id
        p.hset(P + 't:' + id, mapping={'ten': 'bench', 'x': now + ' 699c6e5b36c308e7cf2a2b65ef22c7ad -bench', 'in': 'null',
               'c': core, 'seq': '1', 'state': 'pending', 'q': Q, 'prio': '0', 'qm': m, 'e1': now + ' q'})
    p.zadd(P + 'q:' + Q, {('%016d' % (order - B + 1 + i)) + id: 0 for i, id in enumerate(ids)})
    p.zadd(P + 'tl:bench', {id: 0 for id in ids})
    p.rpush(P + 'f:bench', *[id + ' 1 ' + now + ' q' for id in ids])
    p.execute()
    if TWO_PHASE:
        # The claim as Hive does it: the server reserves and returns each
        # task's core, the client decides, the server commits what it decided.
        out = r.evalsha(PREP, 0, P, B, Q)
        got = out[0::3]
        args = []
        for m in got:
            id = m[16:].decode()
            s2 = now + ' s ' + lease_node
            s3 = now + ' r ' + lease_node + ' 1'
            args += [id, '1', core, s2, s3, id + ' 2 ' + s2, id + ' 3 ' + s3]
        r.evalsha(COMMIT2, 0, P, now, lease_node, *args)
    else:
        got = r.evalsha(CLAIM, 0, P, now, lease_node, B, Q, core)
    args = []
    for m in got:
        id = m[16:].decode()
        args += [id, '3', now + ' {"type":"succeeded","output":null}']
    r.evalsha(REPORT, 0, P, now, lease_node, core, *args)
    # the feed reader: every entry once
    n = r.llen(P + 'f:bench')
    r.lrange(P + 'f:bench', read, n - 1); read = n
t1 = cpu()
print(f"redis-floor claim={'two-phase' if TWO_PHASE else 'one-script'} tasks={N} redis_cpu_us_per_task={(t1 - t0) * 1e6 / N:.1f}")
for k in r.scan_iter(P + '*', count=10000): r.delete(k)
