# Replays a MONITOR capture of a hive-bench run against a scratch Redis and
# prints the server's time per task of each script and command (SLOWLOG of
# every call) and its CPU per task (issue 19: how the Redis time of a commit
# was split into arguments, reading and staging, and writes).
#
#   redis-cli -p 56380 SCRIPT FLUSH     # so that the capture has the bodies
#   redis-cli -p 56380 MONITOR > mon.txt &
#   hive-bench --backend redis --no-latency --tasks 20000; kill %1
#   redis-server --port 56390 --save '' --daemonize yes   # the scratch server
#   python3 docs/redis-replay.py mon.txt 20000 [variant.py]
#
# A variant is a Python file with `change(name, body) -> body`, called for each
# script (`claim_prepare`, `claim_commit`, `commit`, `submit`, or `script`)
# with its Lua body as bytes: the replay then runs the changed body in its
# place. A change that alters what later commands see (a write left out, say)
# changes their cost too; read only the changed script's figure.
# Every call is logged, which adds its own cost to commands logged one by one
# (the HSETs inside a submit's MULTI/EXEC): compare scripts with scripts.
# The replay runs on port 56390 (REPLAY_PORT) and FLUSHes it.
import collections
import hashlib
import importlib.util
import os
import re
import sys

import redis

# Commands that only listen or inspect: not replayed.
SKIP = {b'SUBSCRIBE', b'UNSUBSCRIBE', b'PSUBSCRIBE', b'INFO', b'CONFIG', b'SCAN',
        b'UNLINK', b'CLIENT', b'HELLO', b'PING', b'SELECT'}
# A line of each script's body that names it (see hive-store/src/redis/lua.rs).
MARKERS = (
    (b'local node, claim = ARGV[3], ARGV[5]', 'claim_prepare'),
    (b'local node, claim = ARGV[3], ARGV[4]', 'claim_commit'),
    (b'  i = nx or rec_end(i)\nend\nlocal ns', 'commit'),
    (b'local queued = ARGV[3]', 'submit'),
)
ESCAPES = {'n': b'\n', 'r': b'\r', 't': b'\t', 'a': b'\a', 'b': b'\b', '"': b'"', '\\': b'\\'}
LINE = re.compile(r'^[0-9.]+ \[\d+ ([^\]]+)\] (.*)$')


def parse_args(s):
    """The arguments of one MONITOR line, unescaped as redis-cli escapes them."""
    out, i = [], 0
    while i < len(s):
        if s[i] == ' ':
            i += 1
            continue
        assert s[i] == '"', s[i:i + 40]
        i += 1
        buf = bytearray()
        while s[i] != '"':
            if s[i] == '\\' and s[i + 1] == 'x':
                buf.append(int(s[i + 2:i + 4], 16))
                i += 4
            elif s[i] == '\\':
                buf += ESCAPES[s[i + 1]]
                i += 2
            else:
                buf += s[i].encode('latin-1')
                i += 1
        i += 1
        out.append(bytes(buf))
    return out


def client_commands(path):
    """The commands clients sent, in the order the server ran them."""
    with open(path, encoding='latin-1') as f:
        for line in f:
            m = LINE.match(line.rstrip('\n'))
            if not m or m.group(1) == 'lua':  # run by a script, not sent
                continue
            args = parse_args(m.group(2))
            if args[0].upper() not in SKIP:
                yield args


def script_name(body):
    for marker, name in MARKERS:
        if marker in body:
            return name
    return 'script'


cmds = list(client_commands(sys.argv[1]))
tasks = int(sys.argv[2])
variant = None
if len(sys.argv) > 3:
    spec = importlib.util.spec_from_file_location('variant', sys.argv[3])
    variant = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(variant)
r = redis.Redis(port=int(os.environ.get('REPLAY_PORT', '56390')))
r.flushall()
r.script_flush()
# Each captured script (by the SHA the capture calls it by) is loaded, changed
# or not, and called by its new SHA.
remap, names = {}, {}
for a in cmds:
    if a[0].upper() == b'SCRIPT' and a[1].upper() == b'LOAD':
        name = script_name(a[2])
        body = variant.change(name, a[2]) if variant else a[2]
        sha = r.script_load(body)
        sha = sha.encode() if isinstance(sha, str) else sha
        remap[hashlib.sha1(a[2]).hexdigest().encode()] = sha
        names[sha] = name
slowlog = (r.config_get('slowlog-log-slower-than'), r.config_get('slowlog-max-len'))
r.config_set('slowlog-log-slower-than', 0)
r.config_set('slowlog-max-len', 1000000)
r.slowlog_reset()


def cpu():
    i = r.info('cpu')
    return i['used_cpu_user'] + i['used_cpu_sys']


before = cpu()
pipe = r.pipeline(transaction=False)
sent = 0
for a in cmds:
    if a[0].upper() == b'SCRIPT':
        continue
    if a[0].upper() == b'EVALSHA' and a[1] in remap:
        a = [a[0], remap[a[1]]] + a[2:]
    pipe.execute_command(*a)
    sent += 1
    if sent % 50 == 0:
        pipe.execute(raise_on_error=False)
pipe.execute(raise_on_error=False)
used = cpu() - before
per = collections.defaultdict(int)
for e in r.slowlog_get(1000000):
    cmd = e['command']
    parts = (cmd.decode('latin-1') if isinstance(cmd, bytes) else cmd).split(' ')
    name = parts[0].upper()
    if name == 'EVALSHA':
        name = names.get(parts[1].encode(), parts[1][:8])
    per[name] += e['duration']
top = sorted(per.items(), key=lambda kv: -kv[1])[:8]
print(f"redis-replay tasks={tasks} cpu_us_per_task={used * 1e6 / tasks:.1f} "
      + ' '.join(f"{k.lower()}_us_per_task={us / tasks:.2f}" for k, us in top))
r.config_set('slowlog-log-slower-than', slowlog[0]['slowlog-log-slower-than'])
r.config_set('slowlog-max-len', slowlog[1]['slowlog-max-len'])
