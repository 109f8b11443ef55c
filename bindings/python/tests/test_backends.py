"""The same behaviours on the durable backends: SQLite always, PostgreSQL and
Redis when ``HIVE_TEST_POSTGRES_URL`` / ``HIVE_TEST_REDIS_URL`` are set (by
``scripts/test-all``). Without them these tests skip, saying why; under
``CI=true`` they fail instead."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest

import hive

DURABLE = pytest.mark.parametrize("backend", ["sqlite", "postgres", "redis"], indirect=True)


@DURABLE
async def test_tasks_retry_and_end_with_one_terminal_event(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    worker = hive.Worker("durable", capacity=8)

    @worker.handler(agent)
    async def flaky(ctx: hive.TaskContext) -> Dict[str, Any]:
        await ctx.log("stdout", f"attempt {ctx.attempt}")
        if ctx.input.get("fail_first") and ctx.attempt == 1:
            raise TimeoutError("first attempt times out")
        if ctx.input.get("never"):
            raise hive.NonRetryable("refused")
        return {"n": ctx.input["n"], "attempt": ctx.attempt}

    handle = await h.start_worker(alice, worker)
    retry = {"max_attempts": 3, "initial_interval": 0.05, "jitter": 0}
    subs = await h.submit_batch(
        alice,
        [{"agent": agent, "input": {"n": i, "fail_first": i == 1, "never": i == 2}, "retry": retry} for i in range(4)],
    )
    for i, s in enumerate(subs):
        events = [e async for e in h.events(alice, s.id)]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.is_terminal for e in events].count(True) == 1 and events[-1].is_terminal
        t = await h.get_task(alice, s.id)
        if i == 2:
            assert t.state == "failed" and t.error is not None and t.error.code == "NonRetryable"
        else:
            assert t.state == "succeeded" and t.output == {"n": i, "attempt": 2 if i == 1 else 1}
    unacked = await h.unacked_terminal(alice, "py")
    assert len(unacked) == 4
    await h.ack_terminal(alice, "py", [e.event.task_id for e in unacked])
    assert await h.unacked_terminal(alice, "py") == []
    await handle.shutdown()


@DURABLE
async def test_cancellation_and_bad_input(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    s = await h.submit(alice, agent=agent)
    await h.cancel(alice, s.id, "no")
    events = [e async for e in h.events(alice, s.id)]
    assert [e.type for e in events] == ["queued", "cancelled"]
    with pytest.raises(hive.InvalidSpec):
        await h.submit(alice, {"agent": agent, "retry": {"jitter": 5}})
    with pytest.raises(hive.NotFound):
        await h.get_task(hive.Principal.user("elsewhere", "x"), s.id)


@DURABLE
async def test_a_fork_join_workflow(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    worker = hive.Worker("wf", capacity=8)

    @worker.handler(agent)
    async def step(ctx: hive.TaskContext) -> Any:
        if isinstance(ctx.input, dict) and "parents" in ctx.input:
            return sorted(ctx.input["parents"])
        return ctx.input

    handle = await h.start_worker(alice, worker)
    spec = hive.Workflow(
        "fork-join",
        [
            hive.Step("a", agent, 1),
            hive.Step("b", agent, 2, depends_on=["a"]),
            hive.Step("c", agent, 3, depends_on=["a"]),
            hive.Step("join", agent, None, depends_on=["b", "c"], join="collect"),
        ],
    )
    sub = await h.submit_workflow(alice, spec)

    async def follow() -> List[hive.WorkflowEvent]:
        return [e async for e in h.workflow_events(alice, sub.id)]

    events = await asyncio.wait_for(follow(), 60)
    assert events[-1].type == "finished" and events[-1].state == "succeeded"
    view = await h.get_workflow(alice, sub.id)
    assert view.step("join").output == ["b", "c"]
    await handle.shutdown()
