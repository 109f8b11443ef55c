"""Tasks through the Python API: the event contract, retries, failures,
cancellation, bad input."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any, Dict, List, Optional

import pytest

import hive

FAST_RETRY = {"max_attempts": 3, "initial_interval": 0.05, "jitter": 0}


async def collect(h: hive.Hive, p: hive.Principal, task_id: str, after: int = 0) -> List[hive.TaskEvent]:
    async def run() -> List[hive.TaskEvent]:
        return [e async for e in h.events(p, task_id, after)]

    return await asyncio.wait_for(run(), 30)


def coalesced(events: List[hive.TaskEvent]) -> List[hive.TaskEvent]:
    """The stream as stored: a heartbeat handed out again (same seq, a later
    beat replaced it) counts once, as its latest copy."""
    out: List[hive.TaskEvent] = []
    for e in events:
        if out and out[-1].seq == e.seq:
            assert e.type == "heartbeat" and out[-1].type == "heartbeat", (out[-1], e)
            out[-1] = e
        else:
            out.append(e)
    return out


def assert_stream(events: List[hive.TaskEvent], first_seq: int = 1) -> None:
    """seq runs without gaps (a replaced heartbeat may come again), exactly one
    terminal event, and it is the last."""
    assert events, "no events"
    events = coalesced(events)
    assert [e.seq for e in events] == list(range(first_seq, first_seq + len(events)))
    assert [e.is_terminal for e in events].count(True) == 1
    assert events[-1].is_terminal


async def start(h: hive.Hive, p: hive.Principal, worker: hive.Worker) -> hive.WorkerHandle:
    return await asyncio.wait_for(h.start_worker(p, worker), 10)


async def test_event_streams_end_with_one_terminal_event(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    worker = hive.Worker("w", capacity=4)

    @worker.handler(agent)
    async def echo(ctx: hive.TaskContext) -> Dict[str, Any]:
        await ctx.log("stdout", f"attempt {ctx.attempt}")
        return {"echo": ctx.input, "task": ctx.task_id, "agent": ctx.agent}

    handle = await start(h, alice, worker)
    ids = [(await h.submit(alice, agent=agent, input={"n": i})).id for i in range(5)]
    for i, task_id in enumerate(ids):
        events = await collect(h, alice, task_id)
        assert_stream(events)
        assert [e.type for e in events] == ["queued", "scheduled", "started", "log", "succeeded"]
        assert events[-1].output == {"echo": {"n": i}, "task": task_id, "agent": agent}
        assert events[3].data == {"stream": "stdout", "line": "attempt 1"}
        assert events[2].attempt == 1
        # Subscribing after the end yields nothing and ends at once.
        assert await collect(h, alice, task_id, after=events[-1].seq) == []
        # Resuming in the middle replays the rest.
        rest = await collect(h, alice, task_id, after=2)
        assert_stream(rest, first_seq=3)
        task = await h.get_task(alice, task_id)
        assert task.state == "succeeded" and task.is_terminal
        assert task.last_seq == events[-1].seq
        assert task.output == events[-1].output
        assert task.created_at.tzinfo is not None
        assert task.to_dict()["state"] == "succeeded"
    await handle.shutdown()
    assert not handle.running


async def test_retries_then_success(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    calls: List[int] = []
    worker = hive.Worker("w")

    @worker.handler(agent)
    async def flaky(ctx: hive.TaskContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"busy {ctx.attempt}")
        return "ok"

    handle = await start(h, alice, worker)
    task = await h.submit(alice, agent=agent, retry=hive.RetryPolicy.attempts(3, 0.05))
    events = await collect(h, alice, task.id)
    assert_stream(events)
    failed = [e for e in events if e.type == "attempt_failed"]
    assert len(failed) == 2
    err = failed[0].error
    assert err is not None and err.code == "ConnectionError" and err.message == "busy 1"
    assert events[-1].type == "succeeded" and events[-1].output == "ok"
    assert calls == [1, 2, 3]
    assert (await h.get_task(alice, task.id)).attempt == 3
    await handle.shutdown()


async def test_retries_exhausted_fail_with_the_exception_class_as_code(
    h: hive.Hive, alice: hive.Principal, agent: str
) -> None:
    worker = hive.Worker("w")

    class QuotaExceeded(Exception):
        pass

    @worker.handler(agent)
    async def broken(ctx: hive.TaskContext) -> None:
        raise QuotaExceeded("no quota left")

    handle = await start(h, alice, worker)
    task = await h.submit(alice, {"agent": agent, "retry": FAST_RETRY})
    done = await h.wait(alice, task.id, timeout=30)
    assert done.state == "failed"
    assert done.attempt == 3
    assert done.error is not None
    assert done.error.code == "QuotaExceeded"
    assert done.error.message == "no quota left"
    assert not done.error.non_retryable
    details = done.error.details
    assert isinstance(details, dict) and "QuotaExceeded: no quota left" in details["traceback"]
    events = await collect(h, alice, task.id)
    assert_stream(events)
    assert [e.type for e in events].count("attempt_failed") == 2
    assert events[-1].type == "failed"
    await handle.shutdown()


async def test_non_retryable_failures_end_the_task_at_once(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    worker = hive.Worker("w")

    class BadInput(hive.NonRetryable):
        pass

    @worker.handler(agent)
    async def judge(ctx: hive.TaskContext) -> None:
        kind = ctx.input["kind"]
        if kind == "plain":
            raise hive.NonRetryable("cannot be done")
        if kind == "sub":
            raise BadInput("field x is missing", details={"field": "x"})
        if kind == "explicit":
            raise hive.TaskFailure("rate_limited", "slow down", retryable=False)
        raise hive.TaskFailure("transient", "try again", retry_after=0.01)

    handle = await start(h, alice, worker)
    retry = {"max_attempts": 5, "initial_interval": 0.02, "jitter": 0}
    expected = {
        "plain": ("NonRetryable", "cannot be done", True, 1),
        "sub": ("BadInput", "field x is missing", True, 1),
        "explicit": ("rate_limited", "slow down", True, 1),
        "retryable": ("transient", "try again", False, 5),
    }
    for kind, (code, message, non_retryable, attempts) in expected.items():
        s = await h.submit(alice, agent=agent, input={"kind": kind}, retry=retry)
        t = await h.wait(alice, s.id, timeout=30)
        assert t.state == "failed", kind
        assert t.error is not None
        assert (t.error.code, t.error.message, t.error.non_retryable) == (code, message, non_retryable)
        assert t.attempt == attempts, kind
        if kind == "sub":
            assert t.error.details == {"field": "x"}
    await handle.shutdown()


async def test_non_json_output_fails_without_retry(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    worker = hive.Worker("w")

    @worker.handler(agent)
    async def bad(ctx: hive.TaskContext) -> Any:
        return {"ok": {1, 2}}

    handle = await start(h, alice, worker)
    s = await h.submit(alice, agent=agent, retry=FAST_RETRY)
    t = await h.wait(alice, s.id, timeout=30)
    assert t.state == "failed" and t.attempt == 1
    assert t.error is not None and t.error.code == "invalid_output" and t.error.non_retryable
    assert "ok" in t.error.message
    await handle.shutdown()


async def test_logs_progress_and_heartbeats(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    worker = hive.Worker("w", heartbeat_interval=0.05)
    progressed = asyncio.Event()

    @worker.handler(agent)
    async def chatty(ctx: hive.TaskContext) -> int:
        await ctx.log("stderr", "warming up")
        await ctx.heartbeat({"pct": 10})
        # Rides with the worker's next periodic heartbeat.
        ctx.set_progress({"pct": 50})
        await asyncio.wait_for(progressed.wait(), 10)
        assert not ctx.cancelled
        assert ctx.tenant == alice.tenant and ctx.owner == "alice"
        assert ctx.labels == {}
        return 42

    handle = await start(h, alice, worker)
    s = await h.submit(alice, agent=agent, timeouts={"heartbeat": "1s"})
    events: List[hive.TaskEvent] = []
    async for e in h.events(alice, s.id):
        events.append(e)
        if e.type == "heartbeat" and e.data.get("progress") == {"pct": 50}:
            progressed.set()
    assert_stream(events)
    # Every beat after the log line is one stored event, replaced in place.
    stored = coalesced(events)
    assert [e.type for e in stored] == ["queued", "scheduled", "started", "log", "heartbeat", "succeeded"]
    assert stored[3].data == {"stream": "stderr", "line": "warming up"}
    assert stored[4].data["progress"] == {"pct": 50}
    progress = [e.data.get("progress") for e in events if e.type == "heartbeat"]
    assert progress[-1] == {"pct": 50} and set(map(str, progress)) <= {"None", str({"pct": 10}), str({"pct": 50})}
    assert events[-1].output == 42
    replay = await collect(h, alice, s.id)
    assert [e.seq for e in replay] == [1, 2, 3, 4, 5, 6]
    assert replay[4].data["progress"] == {"pct": 50}
    await handle.shutdown()


async def test_cancel_a_pending_task(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    s = await h.submit(alice, agent=agent, input=None)
    ack = await h.cancel(alice, s.id, "changed my mind")
    assert ack.state == "cancelled" and ack.seq == 2
    events = await collect(h, alice, s.id)
    assert_stream(events)
    assert events[-1].type == "cancelled"
    assert events[-1].data == {"by": "alice", "reason": "changed my mind"}
    with pytest.raises(hive.AlreadyTerminal) as err:
        await h.cancel(alice, s.id)
    assert err.value.state == "cancelled" and err.value.task_id == s.id and err.value.seq == 2


async def test_cancel_a_running_task_cancels_its_coroutine(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    worker = hive.Worker("w", heartbeat_interval=0.05)

    @worker.handler(agent)
    async def forever(ctx: hive.TaskContext) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    handle = await start(h, alice, worker)
    s = await h.submit(alice, agent=agent, timeouts=hive.Timeouts(heartbeat=1.0))
    await asyncio.wait_for(started.wait(), 10)
    await h.cancel(alice, s.id, "stop")
    # The worker's next heartbeat learns the lease is gone and cancels the coroutine.
    await asyncio.wait_for(cancelled.wait(), 10)
    events = await collect(h, alice, s.id)
    assert_stream(events)
    assert events[-1].type == "cancelled"
    await handle.shutdown()


async def test_idempotency_keys_return_the_same_task(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    a = await h.submit(alice, agent=agent, idempotency_key="k1")
    b = await h.submit(alice, {"agent": agent, "idempotency_key": "k1"})
    assert a.created and not b.created and a.id == b.id
    t = await h.get_task(alice, a.id)
    assert t.idempotency_key == "k1"


async def test_submit_batch_and_list(h: hive.Hive, alice: hive.Principal, bob: hive.Principal, agent: str) -> None:
    subs = await h.submit_batch(alice, [{"agent": agent, "input": i, "labels": {"gpu": "no"}} for i in range(7)])
    assert len(subs) == 7 and all(s.created for s in subs)
    await h.submit(bob, agent=agent)
    page = await h.list_tasks(alice, owner="alice", limit=5)
    assert len(page) == 5 and page.next is not None
    rest = await h.list_tasks(alice, owner="alice", after=page.next)
    ids = [t.id for t in page] + [t.id for t in rest.items]
    assert ids == [s.id for s in subs]
    assert rest.next is None or len(rest) == 2
    assert len(await h.list_tasks(alice, states=["pending"], agent=agent)) == 8
    assert len(await h.list_tasks(alice, labels={"gpu": "no"})) == 7
    assert len(await h.list_tasks(alice, states=["succeeded"])) == 0
    with pytest.raises(hive.InvalidArgument):
        await h.list_tasks(alice, states=["sleeping"])


async def test_bad_input_raises_the_right_exception(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    cases: List[Any] = [
        ({"agent": ""}, "agent"),
        ({"agent": "a b"}, "agent"),
        ({"input": 1}, "agent"),
        ({"agent": agent, "retry": {"max_attempts": "often"}}, "retry.max_attempts"),
        ({"agent": agent, "retry": {"backoff_coefficient": 0.5}}, "retry.backoff_coefficient"),
        ({"agent": agent, "timeouts": {"heartbeat": 0}}, "timeouts.heartbeat"),
        ({"agent": agent, "timeouts": {"heartbeat": "soon"}}, "timeouts.heartbeat"),
        ({"agent": agent, "colour": "blue"}, "colour"),
        ({"agent": agent, "input": {"when": {1, 2}}}, "input.when"),
        ({"agent": agent, "input": float("nan")}, "input"),
        ({"agent": agent, "input": {1: "x"}}, "input"),
        ({"agent": agent, "idempotency_key": "hive:reserved"}, "idempotency_key"),
    ]
    for spec, field in cases:
        with pytest.raises(hive.InvalidSpec) as err:
            await h.submit(alice, spec)
        assert err.value.field == field, (spec, err.value.field, err.value.detail)
        assert err.value.detail
        assert isinstance(err.value, ValueError) and isinstance(err.value, hive.HiveError)
        assert err.value.kind == "invalid_spec"
    # One bad spec refuses the whole batch, and says which.
    with pytest.raises(hive.InvalidSpec) as err:
        await h.submit_batch(alice, [{"agent": agent}, {"agent": agent, "priority": "high"}])
    assert err.value.field == "[1].priority"
    assert len(await h.list_tasks(alice)) == 0
    with pytest.raises(hive.InvalidArgument):
        await h.get_task(alice, "not-a-task-id")
    with pytest.raises(hive.NotFound) as nf:
        await h.get_task(alice, "01900000-0000-7000-8000-000000000000")
    assert nf.value.resource == "task" and isinstance(nf.value, LookupError)
    with pytest.raises(TypeError):
        await h.submit("alice", agent=agent)  # type: ignore[arg-type]
    with pytest.raises(hive.InvalidArgument):
        await hive.Hive.open("ftp://nowhere")
    with pytest.raises(hive.InvalidArgument):
        alice.with_scopes(["task:fly"])
    with pytest.raises(TypeError):
        hive.Worker("w").add_handler(agent, lambda ctx: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(hive.InvalidArgument):
        await h.start_worker(alice, hive.Worker("empty"))


async def test_tenants_are_isolated_and_scopes_enforced(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    s = await h.submit(alice, agent=agent)
    mallory = hive.Principal.user("another-tenant", "mallory")
    with pytest.raises(hive.NotFound):
        await h.get_task(mallory, s.id)
    with pytest.raises(hive.NotFound):
        async for _ in h.events(mallory, s.id):
            pass
    reader = alice.with_scopes(["task:read"])
    assert reader.scopes == ["task:read"] and reader != alice and reader.tenant == alice.tenant
    with pytest.raises(hive.Forbidden) as err:
        await h.submit(reader, agent=agent)
    assert err.value.action
    with pytest.raises(hive.Forbidden):
        await h.start_worker(alice, _system_worker(agent))
    assert hive.Principal.user("a", "b") == hive.Principal.user("a", "b")
    assert len({hive.Principal.user("a", "b"), hive.Principal.user("a", "b")}) == 1
    assert repr(alice) == f"Principal.user({alice.tenant!r}, 'alice')"
    assert hive.Principal.system().kind == "system"
    assert "audit:read" in hive.Principal.operator("t", "o").scopes
    assert hive.Principal.admin("t", "a").kind == "admin"


def _system_worker(agent: str) -> hive.Worker:
    w = hive.Worker("sys", system=True)

    @w.handler(agent)
    async def noop(ctx: hive.TaskContext) -> None:
        return None

    return w


async def test_system_workers_run_every_tenants_tasks(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    handle = await start(h, hive.Principal.system(), _system_worker(agent))
    other = hive.Principal.user("other-tenant", "carol")
    a = await h.submit(alice, agent=agent)
    b = await h.submit(other, agent=agent)
    assert (await h.wait(alice, a.id, timeout=30)).state == "succeeded"
    assert (await h.wait(other, b.id, timeout=30)).state == "succeeded"
    nodes = await h.list_nodes(alice)
    assert any(n.id == handle.node_id and n.system for n in nodes)
    node = await h.get_node(hive.Principal.system(), handle.node_id)
    assert node.status == "ready" and node.capacity == 64
    await handle.shutdown()


async def test_wait_times_out(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    s = await h.submit(alice, agent=agent)
    with pytest.raises(hive.Timeout) as err:
        await h.wait(alice, s.id, timeout=0.05)
    assert err.value.temporary and err.value.seconds == pytest.approx(0.05)


async def test_feed_and_named_consumers(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    worker = hive.Worker("w")

    @worker.handler(agent)
    async def ok(ctx: hive.TaskContext) -> int:
        return int(ctx.input)

    handle = await start(h, alice, worker)
    subs = await h.submit_batch(alice, [{"agent": agent, "input": i} for i in range(3)])
    for s in subs:
        await h.wait(alice, s.id, timeout=30)

    feed = h.feed(alice, 0)
    seen: List[hive.FeedEvent] = []
    async for e in feed:
        seen.append(e)
        if len(seen) == 12:
            break
    assert [e.cursor for e in seen] == list(range(1, 13))
    assert feed.cursor == 12
    assert sum(e.event.is_terminal for e in seen) == 3

    terminal = h.feed(alice, 0, terminal_only=True)
    batch = await asyncio.wait_for(terminal.next_batch(10), 10)
    assert sorted(e.event.task_id for e in batch) == sorted(s.id for s in subs)
    assert all(e.event.type == "succeeded" for e in batch)
    assert terminal.cursor == 12

    page = await h.read_feed(alice, cursor=10, limit=5)
    assert [e.cursor for e in page] == [11, 12]

    unacked = await h.unacked_terminal(alice, "notifier")
    assert len(unacked) == 3
    await h.ack_terminal(alice, "notifier", [unacked[0].event.task_id])
    left = await h.unacked_terminal(alice, "notifier")
    assert [e.event.task_id for e in left] == [e.event.task_id for e in unacked[1:]]
    assert len(await h.unacked_terminal(alice, "another")) == 3
    with pytest.raises(hive.InvalidArgument):
        await h.ack_terminal(alice, "", [])
    await handle.shutdown()


async def test_feed_cursor_resumes_without_loss(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    subs = await h.submit_batch(alice, [{"agent": agent} for _ in range(5)])
    feed = h.feed(alice)
    first = await feed.next_batch(2)
    assert [e.cursor for e in first] == [1, 2]
    resumed = h.feed(alice, feed.cursor)
    rest = await resumed.next_batch(100)
    assert [e.cursor for e in rest] == [3, 4, 5]
    assert [e.event.task_id for e in first + rest] == [s.id for s in subs]


async def test_a_cancelled_await_loses_no_event(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    s = await h.submit(alice, agent=agent)
    events = h.events(alice, s.id)
    first = await events.__anext__()
    assert first.type == "queued"
    # Nothing more comes while no worker runs: the await is cancelled.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(events.__anext__(), 0.2)
    await h.cancel(alice, s.id)
    # The same iterator goes on from where it was.
    rest = [e async for e in events]
    assert [e.type for e in rest] == ["cancelled"]
    assert events.position == 2


async def test_cancelling_a_consumer_does_not_affect_the_task(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    gate = asyncio.Event()
    worker = hive.Worker("w")

    @worker.handler(agent)
    async def slow(ctx: hive.TaskContext) -> str:
        await gate.wait()
        return "done"

    handle = await start(h, alice, worker)
    s = await h.submit(alice, agent=agent)

    async def consume() -> None:
        async for _ in h.events(alice, s.id):
            pass

    consumer = asyncio.ensure_future(consume())
    await asyncio.sleep(0.1)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    gate.set()
    t = await h.wait(alice, s.id, timeout=30)
    assert t.state == "succeeded" and t.output == "done"
    await handle.shutdown()


async def test_closed_engines_refuse_calls(alice: hive.Principal, agent: str) -> None:
    async with await hive.Hive.open("memory://") as h:
        assert not h.closed and h.url == "memory://"
        await h.submit(alice, agent=agent)
    assert h.closed
    with pytest.raises(hive.Shutdown):
        await h.submit(alice, agent=agent)
    await h.close()


def test_exceptions_pickle_with_their_fields() -> None:
    e = hive.InvalidSpec("invalid spec: retry: bad", field="retry", detail="bad")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is hive.InvalidSpec and back.field == "retry" and back.detail == "bad"
    assert str(back) == "invalid spec: retry: bad"
    o = hive.OffsetExpired("gone", requested=3, earliest=10)
    assert o.earliest == 10 and o.kind == "offset_expired"
    assert issubclass(hive.BackendUnavailable, hive.HiveError) and hive.BackendUnavailable.temporary


def test_calls_are_coroutines(agent: str) -> None:
    """Nothing runs until awaited; asyncio.run, create_task and gather take them."""
    opening = hive.Hive.open("memory://")
    assert asyncio.iscoroutine(opening)
    h = asyncio.run(opening)
    alice = hive.Principal.user("t", "alice")

    async def main() -> List[str]:
        never = h.submit(alice, agent=agent)
        never.close()  # never awaited: nothing was submitted
        task = asyncio.create_task(h.submit(alice, agent=agent))
        both = await asyncio.gather(h.submit(alice, agent=agent), task)
        page = await h.list_tasks(alice)
        await h.close()
        assert sorted(t.id for t in page) == sorted(s.id for s in both)
        return [s.id for s in both]

    assert len(asyncio.run(main())) == 2
    with pytest.raises(RuntimeError, match="event loop"):
        hive.Hive.open("memory://").send(None)


async def test_typed_helpers_match_the_dict_form(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    retry = hive.RetryPolicy(max_attempts="unlimited", initial_interval=0.5, max_elapsed=60, non_retryable=["Fatal"])
    timeouts = hive.Timeouts(heartbeat=5, start_to_close=120.5, deadline="1h")
    s = await h.submit(alice, agent=agent, retry=retry, timeouts=timeouts, priority=3, labels={"zone": "eu"})
    spec: Dict[str, Any] = (await h.get_task(alice, s.id)).spec
    assert spec["retry"]["max_attempts"] == "unlimited"
    assert spec["retry"]["initial_interval"] == "500ms"
    assert spec["retry"]["non_retryable"] == ["Fatal"]
    assert spec["timeouts"]["heartbeat"] == "5s"
    assert spec["timeouts"]["deadline"] == "1h"
    assert spec["priority"] == 3 and spec["labels"] == {"zone": "eu"}
    t: Optional[hive.Task] = await h.get_task(alice, s.id)
    assert t is not None and t.priority == 3 and t.labels == {"zone": "eu"}


async def test_api_tokens(h: hive.Hive, tenant: str, agent: str) -> None:
    admin = hive.Principal.admin(tenant, "root")
    token, info = await h.issue_token(admin, "ci-bot", "user", ttl=3600, description="for CI")
    assert token.startswith("hive_") and info.principal_id == "ci-bot" and info.kind == "user"
    assert info.expires_at is not None and info.revoked_at is None and info.tenant == tenant
    bot = await h.resolve_token(token)
    assert bot == info.to_principal()
    assert (bot.tenant, bot.id, bot.kind) == (tenant, "ci-bot", "user")
    s = await h.submit(bot, agent=agent)
    assert (await h.get_task(admin, s.id)).owner == "ci-bot"
    reader, _ = await h.issue_token(admin, "reader", scopes=["task:read"])
    with pytest.raises(hive.Forbidden):
        await h.submit(await h.resolve_token(reader), agent=agent)
    assert [t.principal_id for t in await h.list_tokens(admin)] == ["ci-bot", "reader"]
    revoked = await h.revoke_token(admin, info.id)
    assert revoked.revoked_at is not None
    with pytest.raises(hive.Forbidden):
        await h.resolve_token(token)
    with pytest.raises(hive.Forbidden):
        await h.resolve_token("hive_nonsense")
    with pytest.raises(hive.Forbidden):
        await h.issue_token(hive.Principal.user(tenant, "alice"), "x")
    with pytest.raises(hive.InvalidArgument):
        await h.issue_token(admin, "x", "emperor")


async def test_engine_settings(tenant: str) -> None:
    config = {"sweep_interval": 0.05, "node_heartbeat_interval": "100ms", "max_submit_batch": 2}
    async with await hive.Hive.open("memory://", config=config) as h:
        alice = hive.Principal.user(tenant, "alice")
        with pytest.raises(hive.InvalidArgument):
            await h.submit_batch(alice, [{"agent": "a"}] * 3)
        # A deadline is enforced within one (short) sweep.
        s = await h.submit(alice, agent="nobody-runs-this", timeouts={"deadline": 0.1})
        t = await h.wait(alice, s.id, timeout=10)
        assert t.state == "timed_out"
    with pytest.raises(hive.InvalidArgument):
        await hive.Hive.open("memory://", config={"sweep_intervall": 1})


async def test_delayed_tasks_wait_for_their_time(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    import datetime as dt
    import time

    worker = hive.Worker("delayed", capacity=4)

    @worker.handler(agent)
    async def echo(ctx: hive.TaskContext) -> Any:
        return ctx.input

    handle = await start(h, alice, worker)
    t0 = time.time()
    by_delay = await h.submit(alice, agent=agent, input=1, delay=0.6)
    by_timedelta = await h.submit(alice, agent=agent, input=2, delay=dt.timedelta(milliseconds=600))
    at = dt.datetime.fromtimestamp(t0 + 0.6, dt.timezone.utc)
    by_time = await h.submit(alice, agent=agent, input=3, not_before=at)
    by_dict = await h.submit(alice, {"agent": agent, "input": 4, "delay": "600ms"})
    waiting = await h.get_task(alice, by_time.id)
    assert waiting.state == "pending"
    assert abs(waiting.available_at.timestamp() - (t0 + 0.6)) < 0.01
    for s in (by_delay, by_timedelta, by_time, by_dict):
        done = await h.wait(alice, s.id, timeout=20)
        assert done.state == "succeeded"
        started = next(e for e in await collect(h, alice, s.id) if e.type == "started")
        assert started.at.timestamp() >= t0 + 0.59, "started before its time"
    # Bad input: a clear InvalidSpec naming the field, nothing stored.
    before = len((await h.list_tasks(alice)).items)
    with pytest.raises(hive.InvalidSpec, match="not_before"):
        await h.submit(alice, agent=agent, not_before=dt.datetime(2030, 1, 1))
    with pytest.raises(hive.InvalidSpec, match="delay"):
        await h.submit(alice, agent=agent, delay=1, not_before=at)
    with pytest.raises(hive.InvalidSpec, match="delay"):
        await h.submit(alice, agent=agent, delay=-1)
    with pytest.raises(hive.InvalidSpec, match="not_before"):
        await h.submit(alice, agent=agent, not_before="tomorrow")  # type: ignore[arg-type]
    assert len((await h.list_tasks(alice)).items) == before
    await handle.shutdown()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres", "redis"], indirect=True)
async def test_concurrency_keys_and_rate_limits(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    import time

    running: Dict[str, int] = {}
    most: Dict[str, int] = {}
    starts: List[Any] = []
    worker = hive.Worker("limited", capacity=8)

    @worker.handler(agent)
    async def work(ctx: hive.TaskContext) -> Any:
        key = ctx.input["customer"]
        starts.append((key, time.time()))
        running[key] = running.get(key, 0) + 1
        most[key] = max(most.get(key, 0), running[key])
        await asyncio.sleep(0.05)
        running[key] -= 1
        return key

    # Six tasks of one customer, two of another, one slot per customer: the
    # key is read from the input.
    limit = {"key_from": "/customer", "max_running": 1}
    ids = [(await h.submit(alice, agent=agent, input={"customer": "c1", "i": i}, concurrency=limit)).id for i in range(6)]
    ids += [(await h.submit(alice, agent=agent, input={"customer": "c2", "i": i}, concurrency=limit)).id for i in range(2)]
    handle = await start(h, alice, worker)
    for i in ids:
        assert (await h.wait(alice, i, timeout=30)).state == "succeeded"
    assert most == {"c1": 1, "c2": 1}, most

    # A full key with cancel_newest: the newest task is cancelled.
    await handle.shutdown()
    newest = {"key": "solo", "max_running": 1, "strategy": "cancel_newest"}
    first = await h.submit(alice, agent=agent, input={"customer": "solo"}, concurrency=newest)
    second = await h.submit(alice, agent=agent, input={"customer": "solo"}, concurrency=newest)
    assert (await h.get_task(alice, second.id)).state == "cancelled"
    assert (await h.get_task(alice, first.id)).state == "pending"

    # A rate limit of 2 per 0.5 s: four tasks take at least 0.5 s to start.
    starts.clear()
    rate = {"key": "llm", "limit": 2, "per": 0.5}
    t0 = time.time()
    handle = await start(h, alice, worker)
    limited = [(await h.submit(alice, agent=agent, input={"customer": f"r{i}"}, rate_limit=rate)).id for i in range(4)]
    for i in limited:
        assert (await h.wait(alice, i, timeout=30)).state == "succeeded"
    later = sorted(at for key, at in starts if key.startswith("r") and at >= t0)
    assert len(later) == 4
    # A burst of two, then one per 0.25 s.
    assert later[3] - later[0] >= 0.45, later
    await handle.shutdown()

    # Bad input: InvalidSpec naming the field, nothing stored.
    before = len((await h.list_tasks(alice)).items)
    with pytest.raises(hive.InvalidSpec, match="concurrency.max_running"):
        await h.submit(alice, agent=agent, concurrency={"key": "k", "max_running": 0})
    with pytest.raises(hive.InvalidSpec, match="concurrency.key_from"):
        await h.submit(alice, agent=agent, input={}, concurrency={"key_from": "/nope"})
    with pytest.raises(hive.InvalidSpec, match="rate_limit.per"):
        await h.submit(alice, agent=agent, rate_limit={"key": "k", "limit": 1, "per": 0})
    with pytest.raises(hive.InvalidSpec, match="concurrency"):
        await h.submit(alice, agent=agent, concurrency="customer")  # type: ignore[arg-type]
    assert len((await h.list_tasks(alice)).items) == before
