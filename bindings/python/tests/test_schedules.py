"""Schedules through the Python API: create on a calendar, fires as tasks,
pause/resume/trigger/update/delete, upcoming fire times, bad input."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from typing import Any, Dict

import pytest

import hive


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres", "redis"], indirect=True)
async def test_a_schedule_fires_tasks_and_follows_its_lifecycle(
    h: hive.Hive, alice: hive.Principal, agent: str
) -> None:
    s = await h.create_schedule(
        alice,
        "tick",
        every=1,
        task={"agent": agent, "input": {"from": "schedule"}},
        overlap="allow_all",
        catch_up=dt.timedelta(seconds=30),
    )
    assert s["id"] == "tick" and s["status"] == "active"
    assert s["spec"]["calendar"] == {"interval": {"every": "1s"}}
    upcoming = await h.upcoming_fires(alice, "tick", 3)
    assert len(upcoming) == 3
    assert [(b - a).total_seconds() for a, b in zip(upcoming, upcoming[1:])] == [1.0, 1.0]
    # The engine's supervisor fires due slots; run a pass by hand too.
    await asyncio.sleep(1.2)
    await h.run_schedules(hive.Principal.system())
    fired: Dict[str, Any] = await h.get_schedule(alice, "tick")
    assert fired["fired"] >= 1
    target = fired["recent"][-1]["target"]
    task = await h.get_task(alice, target)
    assert task.agent == agent
    assert task.input == {"from": "schedule"}
    assert task.idempotency_key is not None and task.idempotency_key.startswith("hive:schedule:")

    paused = await h.pause_schedule(alice, "tick", note="maintenance")
    assert paused["status"] == "paused" and paused["next_fire"] is None
    fire = await h.trigger_schedule(alice, "tick")
    assert fire["manual"] is True
    assert (await h.get_task(alice, fire["target"])).agent == agent
    resumed = await h.resume_schedule(alice, "tick")
    assert resumed["status"] == "active"

    updated = await h.update_schedule(
        alice, "tick", cron="0 9 * * MON-FRI", timezone="Europe/Berlin", task={"agent": agent}
    )
    assert updated["fired"] >= fired["fired"], "counters are kept"
    for nine in await h.upcoming_fires(alice, "tick", 7):
        local = nine.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5, local

    listed = await h.list_schedules(alice)
    assert [x["id"] for x in listed] == ["tick"]
    await h.delete_schedule(alice, "tick")
    with pytest.raises(hive.NotFound):
        await h.get_schedule(alice, "tick")
    assert await h.list_schedules(alice) == []


async def test_bad_schedules_raise_invalid_spec_naming_the_field(h: hive.Hive, alice: hive.Principal) -> None:
    task = {"agent": "a"}
    cases = [
        (dict(cron="61 * * * *", task=task), "calendar.expr"),
        (dict(cron="* * * * *", timezone="Mars/Base", task=task), "calendar.timezone"),
        (dict(task=task), "calendar"),
        (dict(cron="* * * * *", every=5, task=task), "calendar"),
        (dict(every=0.5, task=task), "calendar.every"),
        (dict(every=60), "action"),
        (dict(every=60, task={"agent": ""}), "action.task.agent"),
        (dict(every=60, task=task, overlap="sometimes"), "overlap"),
        (dict(every=60, task=task, max_fires=0), "max_fires"),
        (dict(every=60, task=task, end_at=dt.datetime(2030, 1, 1)), "end_at"),
    ]
    for kwargs, field in cases:
        with pytest.raises(hive.InvalidSpec) as e:
            await h.create_schedule(alice, "bad", **kwargs)  # type: ignore[arg-type]
        assert e.value.field == field, (kwargs, e.value)
    with pytest.raises(hive.InvalidSpec):
        await h.create_schedule(alice, "has space", every=60, task=task)
    assert await h.list_schedules(alice) == []
    with pytest.raises(hive.InvalidArgument):
        await h.list_schedules(alice, statuses=["sleeping"])
