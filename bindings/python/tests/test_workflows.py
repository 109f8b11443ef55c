"""Workflows through the Python API: a fork-join from a dict and from the
typed helpers, validation errors, cancellation, event streams."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest

import hive


def fork_join(agent: str, name: str = "report") -> Dict[str, Any]:
    """fetch → (summarize over each doc, count) → report (all_done, collect)."""
    return {
        "name": name,
        "steps": [
            {"id": "fetch", "agent": f"{agent}-fetch", "input": {"n": 3}},
            {"id": "each", "agent": f"{agent}-summarize", "depends_on": ["fetch"],
             "map": {"over": "fetch", "path": "/docs"}},
            {"id": "count", "agent": f"{agent}-count", "depends_on": ["fetch"]},
            {"id": "translate", "agent": f"{agent}-translate", "depends_on": ["fetch"],
             "retry": {"max_attempts": 1}},
            {"id": "report", "agent": f"{agent}-report", "depends_on": ["each", "count", "translate"],
             "trigger": "all_done", "join": "collect"},
        ],
    }


def workers(agent: str, joined: List[Any]) -> hive.Worker:
    w = hive.Worker("wf", capacity=16)

    @w.handler(f"{agent}-fetch")
    async def fetch(ctx: hive.TaskContext) -> Dict[str, Any]:
        return {"docs": [f"doc number {i}" for i in range(ctx.input["n"])]}

    @w.handler(f"{agent}-summarize")
    async def summarize(ctx: hive.TaskContext) -> str:
        return str(ctx.input["item"]).upper()

    @w.handler(f"{agent}-count")
    async def count(ctx: hive.TaskContext) -> int:
        return len(ctx.input["parents"]["fetch"]["output"]["docs"])

    @w.handler(f"{agent}-translate")
    async def translate(ctx: hive.TaskContext) -> None:
        raise hive.NonRetryable("no model")

    @w.handler(f"{agent}-report")
    async def report(ctx: hive.TaskContext) -> Dict[str, bool]:
        joined.append(ctx.input)
        return {"reported": True}

    return w


async def run_fork_join(h: hive.Hive, p: hive.Principal, spec: Any, agent: str) -> None:
    joined: List[Any] = []
    handle = await h.start_worker(p, workers(agent, joined))
    sub = await h.submit_workflow(p, spec)
    assert sub.created

    async def follow() -> List[hive.WorkflowEvent]:
        return [e async for e in h.workflow_events(p, sub.id)]

    events = await asyncio.wait_for(follow(), 60)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "started"
    assert events[-1].type == "finished" and events[-1].is_terminal
    assert [e.is_terminal for e in events].count(True) == 1
    # translate failed, but the only leaf (report, all_done) ran and succeeded.
    assert events[-1].state == "succeeded"
    step_states = {e.step: e.state for e in events if e.type == "step"}
    assert step_states["translate"] == "failed" and step_states["report"] == "succeeded"

    view = await h.get_workflow(p, sub.id)
    assert view.state == "succeeded" and view.is_terminal and view.name == "report"
    assert [s.id for s in view.steps] == ["fetch", "each", "count", "translate", "report"]
    each = view.step("each")
    assert each.state == "succeeded" and len(each.task_ids) == 3
    assert [c["output"] for c in each.output] == ["DOC NUMBER 0", "DOC NUMBER 1", "DOC NUMBER 2"]
    assert [c["index"] for c in each.output] == [0, 1, 2]
    assert view.step("translate").error is not None
    assert view.step("report").attempts == 1
    assert view.last_seq == events[-1].seq
    with pytest.raises(KeyError):
        view.step("nope")

    (join_input,) = joined
    parents = join_input["parents"]
    assert list(parents) == ["each", "count", "translate"]
    assert parents["count"] == {"state": "succeeded", "output": 3}
    assert parents["translate"]["state"] == "failed"
    assert parents["translate"]["error"]["code"] == "NonRetryable"

    listed = await h.list_workflows(p)
    assert [w.id for w in listed] == [sub.id]
    assert len(await h.list_workflows(p, states=["running"])) == 0
    await handle.shutdown()


async def test_fork_join_from_a_dict(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    await run_fork_join(h, alice, fork_join(agent), agent)


async def test_fork_join_from_typed_helpers(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    spec = hive.Workflow(
        "report",
        [
            hive.Step("fetch", f"{agent}-fetch", {"n": 3}),
            hive.Step("each", f"{agent}-summarize", map=hive.MapOver("fetch", "/docs")),
            hive.Step("count", f"{agent}-count", depends_on=["fetch"]),
            hive.Step("translate", f"{agent}-translate", depends_on=["fetch"], retry=hive.RetryPolicy.none()),
            hive.Step("report", f"{agent}-report", depends_on=["each", "count", "translate"],
                      trigger="all_done", join="collect"),
        ],
    )
    d = spec.to_dict()
    assert d["steps"][1]["depends_on"] == ["fetch"] and d["steps"][1]["map"] == {"over": "fetch", "path": "/docs"}
    await run_fork_join(h, alice, spec, agent)


async def test_quorum_join_and_idempotency(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    w = hive.Worker("q")

    @w.handler(agent)
    async def work(ctx: hive.TaskContext) -> Any:
        if ctx.input.get("fail"):
            raise hive.NonRetryable("no")
        return ctx.input

    handle = await h.start_worker(alice, w)
    spec = hive.Workflow(
        "quorum",
        [
            hive.Step("a", agent, {"v": 1}),
            hive.Step("b", agent, {"fail": True}),
            hive.Step("c", agent, {"v": 3}),
            hive.Step("vote", agent, {"v": "joined"}, depends_on=["a", "b", "c"], trigger=hive.Quorum(2), join="merge"),
        ],
        idempotency_key="once",
    )
    first = await h.submit_workflow(alice, spec)
    again = await h.submit_workflow(alice, spec)
    assert first.created and not again.created and first.id == again.id
    events = [e async for e in h.workflow_events(alice, first.id)]
    assert events[-1].type == "finished"
    view = await h.get_workflow(alice, first.id)
    assert view.step("vote").state == "succeeded"
    await handle.shutdown()


async def test_invalid_workflows_are_refused(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    cycle = {
        "name": "loop",
        "steps": [
            {"id": "a", "agent": agent, "depends_on": ["b"]},
            {"id": "b", "agent": agent, "depends_on": ["a"]},
        ],
    }
    with pytest.raises(hive.InvalidSpec) as err:
        await h.submit_workflow(alice, cycle)
    assert "cycle" in err.value.detail
    assert "a" in err.value.detail and "b" in err.value.detail
    with pytest.raises(hive.InvalidSpec) as err:
        await h.submit_workflow(alice, {"name": "x", "steps": [{"id": "a", "agent": agent, "depends_on": ["zz"]}]})
    assert "zz" in err.value.detail
    with pytest.raises(hive.InvalidSpec) as err:
        await h.submit_workflow(alice, {"name": "x", "steps": [{"id": "a", "agent": agent, "trigger": "sometimes"}]})
    assert err.value.field.startswith("steps[0].trigger")
    with pytest.raises(hive.InvalidSpec):
        await h.submit_workflow(alice, {"name": "x", "steps": "nope"})
    with pytest.raises(hive.InvalidSpec):
        await h.submit_workflow(alice, [1, 2])  # type: ignore[arg-type]
    assert len(await h.list_workflows(alice)) == 0
    with pytest.raises(hive.NotFound):
        await h.get_workflow(alice, "01900000-0000-7000-8000-000000000000")
    with pytest.raises(hive.InvalidArgument):
        await h.get_workflow(alice, "nope")


async def test_cancel_a_workflow(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    spec = {"name": "stuck", "steps": [{"id": "a", "agent": agent}, {"id": "b", "agent": agent, "depends_on": ["a"]}]}
    sub = await h.submit_workflow(alice, spec)
    await h.cancel_workflow(alice, sub.id, "no worker for it")
    events = [e async for e in h.workflow_events(alice, sub.id)]
    assert events[-1].type == "finished" and events[-1].state == "cancelled"
    view = await h.get_workflow(alice, sub.id)
    assert view.state == "cancelled" and {s.state for s in view.steps} == {"cancelled"}
    task_id = view.step("a").task_ids[0]
    assert (await h.wait(alice, task_id, timeout=10)).state == "cancelled"
    with pytest.raises(hive.Conflict):
        await h.cancel_workflow(alice, sub.id)
