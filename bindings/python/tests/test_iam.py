"""Node sharing and the audit trail, through the Python API."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest

import hive


async def test_a_shared_user_node_runs_its_owners_and_the_shared_users_work_only(
    h: hive.Hive, tenant: str, agent: str
) -> None:
    alice = hive.Principal.user(tenant, "alice")
    bob = hive.Principal.user(tenant, "bob")
    carol = hive.Principal.user(tenant, "carol")
    worker = hive.Worker("alice-laptop", capacity=4, share_with=[bob])
    ran: List[str] = []

    @worker.handler(agent)
    async def run(ctx: hive.TaskContext) -> Dict[str, Any]:
        ran.append(ctx.task_id)
        return {"ok": True}

    handle = await h.start_worker(alice, worker)
    try:
        node = await h.get_node(alice, handle.node_id)
        assert node.shared_with == [f"user:{tenant}/bob"]
        assert not node.system
        a = await h.submit(alice, agent=agent)
        b = await h.submit(bob, agent=agent)
        c = await h.submit(carol, agent=agent)
        assert (await h.wait(alice, a.id, timeout=10)).state == "succeeded"
        assert (await h.wait(bob, b.id, timeout=10)).state == "succeeded"
        # Carol's task has no eligible node: it stays pending, it never lands here.
        await asyncio.sleep(0.3)
        assert (await h.get_task(carol, c.id)).state == "pending"
        assert sorted(ran) == sorted([a.id, b.id])
    finally:
        await handle.shutdown()


async def test_share_targets_are_checked_before_anything_starts(tenant: str) -> None:
    bob = hive.Principal.user(tenant, "bob")
    w = hive.Worker("w", share_with=[bob, f"tenant:{tenant}", f"user:{tenant}/dave"])
    assert [t["type"] for t in w.shared_with] == ["user", "tenant", "user"]
    for bad in ["bob", "user:bob", "tenant:", "user:a/b/c", "group:x", ""]:
        with pytest.raises(ValueError, match="share target"):
            hive.Worker("w", share_with=[bad])
    with pytest.raises(TypeError):
        hive.Worker("w", share_with=[42])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="system node"):
        hive.Worker("w", system=True, share_with=[bob])


async def test_the_audit_trail_lists_pages_filters_and_verifies(
    h: hive.Hive, tenant: str, agent: str
) -> None:
    alice = hive.Principal.user(tenant, "alice")
    olga = hive.Principal.operator(tenant, "olga")
    await h.submit(alice, agent=agent)
    await h.submit_batch(alice, [{"agent": agent}, {"agent": agent}])
    # A user has no audit:read; the refusal is itself audited.
    with pytest.raises(hive.Forbidden):
        await h.list_audit(alice)
    submits = await h.list_audit(olga, action="task.submit")
    assert [(e["actor"], e["outcome"]) for e in submits["events"]] == [
        ("alice", "allowed"),
        ("alice", "allowed"),
    ]
    assert all(e["tenant"] == tenant for e in submits["events"])
    denied = await h.list_audit(olga, outcome="denied")
    assert [(e["actor"], e["action"]) for e in denied["events"]] == [("alice", "audit.read")]
    # Pages follow the chain: each event names the previous event's hash.
    first = await h.list_audit(olga, limit=1)
    assert len(first["events"]) == 1 and first["events"][0]["seq"] == 1
    after = first["next_after_seq"]
    assert after == 1
    second = await h.list_audit(olga, after=after, limit=1)
    assert second["events"][0]["seq"] == 2
    assert second["events"][0]["prev_hash"] == first["events"][0]["hash"]
    everything = await h.list_audit(olga, limit=1000)
    assert everything["next_after_seq"] is None
    report = await h.verify_audit(olga)
    assert report["ok"] and report["first_broken"] is None and report["broken"] is None
    # verify reads the chain as it stood, and verifying is itself audited.
    assert report["checked"] >= len(everything["events"])
    head = report["head"]
    assert head is not None and head["seq"] == report["checked"]
    # Another tenant's trail does not exist for an operator; bad filters are refused.
    with pytest.raises(hive.NotFound):
        await h.list_audit(olga, tenant=f"{tenant}-other")
    with pytest.raises(hive.NotFound):
        await h.verify_audit(olga, f"{tenant}-other")
    with pytest.raises(hive.InvalidArgument):
        await h.list_audit(olga, outcome="maybe")
    with pytest.raises(hive.Forbidden):
        await h.verify_audit(alice)
