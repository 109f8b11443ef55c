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
import os
import sys
import time
import uuid

import redis

r = redis.Redis(port=int(os.environ.get('REDIS_PORT', '56380')))
P = 'floor:'
TWO_PHASE = '--two-phase' in sys.argv
args_n = [a for a in sys.argv[1:] if not a.startswith('--')]
B = 1000
N = max(1, (int(args_n[0]) if args_n else 20000) // B) * B
Q = 'ce74622b69a0f69a559a5b6bb48ccce1d1c9b0a24b76a6a3a1db9a8202b331ae'
core = os.urandom(50)
lease_node = str(uuid.uuid4())
# The write half of a claim, the same in both variants: a compare-and-set on
# `seq`, the task hash's new fields with Scheduled and Started, and the feed,
# lease and deadline writes batched to the end (`ARGV[1..3]`: prefix, now, node).
CLAIM_WRITES = """
local P, now, node = ARGV[1], ARGV[2], ARGV[3]
local feed, nl, dl = {}, {}, {}
-- The store reads the feed's length for the new events' cursors; so does this.
local cursor = redis.call('LLEN', P .. 'f:bench')
local function claimed(id, expected, c, e2, e3, f2, f3)
  local tk = P .. 't:' .. id
  if redis.call('HGET', tk, 'seq') ~= expected then return end
  redis.call('HSET', tk, 'seq', '3', 'state', 'running', 'c', c, 'e2', e2, 'e3', e3)
  feed[#feed + 1] = f2
  feed[#feed + 1] = f3
  nl[#nl + 1] = id
  nl[#nl + 1] = node
  dl[#dl + 1] = now
  dl[#dl + 1] = id
end
local function write_claims()
  if #feed == 0 then return end
  redis.call('RPUSH', P .. 'f:bench', unpack(feed))
  redis.call('HSET', P .. 'nl:' .. node, unpack(nl))
  redis.call('ZADD', P .. 'dl', unpack(dl))
end
"""
# One script: takes the queue's first `max` tasks and decides the claim itself.
CLAIM = r.script_load(CLAIM_WRITES + """
local max, q = tonumber(ARGV[4]), P .. 'q:' .. ARGV[5]
local ms = redis.call('ZRANGE', q, 0, max - 1)
for _, m in ipairs(ms) do
  local id = string.sub(m, 17)
  local s, st = now .. ' s ' .. node, now .. ' r ' .. node .. ' 1'
  claimed(id, '1', ARGV[6], s, st, id .. ' 2 ' .. s, id .. ' 3 ' .. st)
end
if #ms > 0 then redis.call('ZREMRANGEBYRANK', q, 0, #ms - 1) end
write_claims()
return ms
""")
# Hive's two phases: reserve and return what the client decides on ...
PREP = r.script_load("""
local P, max = ARGV[1], tonumber(ARGV[2])
local q = P .. 'q:' .. ARGV[3]
local ms = redis.call('ZRANGE', q, 0, max - 1)
local out = {}
for _, m in ipairs(ms) do
  local t = redis.call('HMGET', P .. 't:' .. string.sub(m, 17), 'state', 'avoid', 'c', 'x', 'in')
  out[#out + 1] = m
  out[#out + 1] = t[3]
  out[#out + 1] = t[4]
end
if #ms > 0 then redis.call('ZREMRANGEBYRANK', q, 0, #ms - 1) end
redis.call('SET', P .. 'rsv', table.concat(ms, ' '))
return out
""")
# ... then commit what it decided: records of (id, expected seq, core, e2, e3,
# feed entry 2, feed entry 3).
COMMIT = r.script_load(CLAIM_WRITES + """
for i = 4, #ARGV, 7 do
  claimed(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
end
redis.call('DEL', P .. 'rsv')
write_claims()
return 1
""")
REPORT = r.script_load("""
local P, now, node = ARGV[1], ARGV[2], ARGV[3]
local feed, ids, term = {}, {}, {}
local cursor = redis.call('LLEN', P .. 'f:bench')
for i = 5, #ARGV, 3 do
  local id = ARGV[i]
  local tk = P .. 't:' .. id
  if redis.call('HGET', tk, 'seq') == ARGV[i + 1] then
    redis.call('HSET', tk, 'seq', '4', 'state', 'succeeded', 'c', ARGV[4], 'e4', ARGV[i + 2])
    feed[#feed + 1] = id .. ' 4 ' .. ARGV[i + 2]
    ids[#ids + 1] = id
    cursor = cursor + 1
    term[#term + 1] = cursor
    term[#term + 1] = id
  end
end
if #ids > 0 then
  redis.call('RPUSH', P .. 'f:bench', unpack(feed))
  redis.call('HDEL', P .. 'nl:' .. node, unpack(ids))
  redis.call('ZREM', P .. 'dl', unpack(ids))
  redis.call('ZADD', P .. 'term:bench', unpack(term))
end
return #ids
""")


def cpu():
    i = r.info('cpu')
    return i['used_cpu_user'] + i['used_cpu_sys']


for k in r.scan_iter(P + '*'):
    r.delete(k)
t0 = cpu()
order = 0
read = 0
for _ in range(N // B):
    ids = [str(uuid.uuid4()) for _ in range(B)]
    now = str(int(time.time() * 1000))
    p = r.pipeline(transaction=True)
    members = {}
    for id in ids:
        order += 1
        m = '%016d' % order + id
        members[m] = 0
        p.hset(P + 't:' + id, mapping={'ten': 'bench', 'x': now + ' 699c6e5b36c308e7cf2a2b65ef22c7ad -bench', 'in': 'null',
               'c': core, 'seq': '1', 'state': 'pending', 'q': Q, 'prio': '0', 'qm': m, 'e1': now + ' q'})
    p.zadd(P + 'q:' + Q, members)
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
        r.evalsha(COMMIT, 0, P, now, lease_node, *args)
    else:
        got = r.evalsha(CLAIM, 0, P, now, lease_node, B, Q, core)
    args = []
    for m in got:
        id = m[16:].decode()
        args += [id, '3', now + ' {"type":"succeeded","output":null}']
    r.evalsha(REPORT, 0, P, now, lease_node, core, *args)
    # the feed reader: every entry once
    n = r.llen(P + 'f:bench')
    r.lrange(P + 'f:bench', read, n - 1)
    read = n
t1 = cpu()
# Every task went through its whole life (its Succeeded is in the terminal index).
ended = r.zcard(P + 'term:bench')
assert ended == N, f"{ended} of {N} tasks ended"
print(f"redis-floor claim={'two-phase' if TWO_PHASE else 'one-script'} tasks={N} redis_cpu_us_per_task={(t1 - t0) * 1e6 / N:.1f}")
for k in r.scan_iter(P + '*', count=10000):
    r.delete(k)
