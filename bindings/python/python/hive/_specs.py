"""Typed helpers for specs: each has ``to_dict()`` giving the JSON the engine
takes (the serde form of the Rust types), and is accepted wherever a dict is.

Durations may be given as seconds (``1.5``), ``datetime.timedelta`` or a
duration string (``"1500ms"``, ``"2s"``, ``"1h"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

Duration = Union[float, int, timedelta, str]
"""Seconds, a ``timedelta``, or a duration string such as ``"250ms"``."""


def duration(value: Duration) -> str:
    """A duration as the engine's string form (``"1500ms"``)."""
    if isinstance(value, str):
        return value
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"durations must not be negative, got {value!r}")
    micros = round(seconds * 1_000_000)
    return f"{micros // 1000}ms" if micros % 1000 == 0 else f"{micros}us"


def _put(out: Dict[str, Any], key: str, value: Optional[Duration]) -> None:
    if value is not None:
        out[key] = duration(value)


@dataclass(frozen=True)
class Timeouts:
    """A task's deadlines (each ``None`` keeps the engine's default)."""

    schedule_to_start: Optional[Duration] = None
    """How long a scheduled task may wait for its node to start it (default 60s)."""
    start_to_close: Optional[Duration] = None
    """How long one attempt may run (default 1h)."""
    heartbeat: Optional[Duration] = None
    """How long a running attempt may go without a heartbeat (default 30s)."""
    deadline: Optional[Duration] = None
    """The whole task's deadline from submission, across attempts (default none)."""

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        _put(out, "schedule_to_start", self.schedule_to_start)
        _put(out, "start_to_close", self.start_to_close)
        _put(out, "heartbeat", self.heartbeat)
        _put(out, "deadline", self.deadline)
        return out


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed, timed-out or lost attempt is tried again."""

    max_attempts: Union[int, str] = 3
    """Total attempts including the first, or ``"unlimited"``."""
    initial_interval: Duration = 1.0
    backoff_coefficient: float = 2.0
    max_interval: Optional[Duration] = None
    jitter: float = 0.1
    max_elapsed: Optional[Duration] = None
    retry_on_error: bool = True
    retry_on_timeout: bool = True
    retry_on_lost: bool = True
    non_retryable: Sequence[str] = ()
    """Error codes that are never retried (e.g. a handler exception's class name)."""
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per error code: ``max_attempts``, ``initial_interval``, ``backoff_coefficient``, ``max_interval``."""
    placement: str = "any"
    """``"any"`` or ``"avoid_previous_node"``."""

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    @classmethod
    def attempts(cls, n: int, initial_interval: Duration = 1.0) -> RetryPolicy:
        """``n`` attempts in total, no jitter."""
        return cls(max_attempts=n, initial_interval=initial_interval, jitter=0.0)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "max_attempts": self.max_attempts,
            "initial_interval": duration(self.initial_interval),
            "backoff_coefficient": self.backoff_coefficient,
            "jitter": self.jitter,
            "retry_on": {
                "error": self.retry_on_error,
                "timeout": self.retry_on_timeout,
                "lost": self.retry_on_lost,
            },
            "placement": self.placement,
        }
        _put(out, "max_interval", self.max_interval)
        _put(out, "max_elapsed", self.max_elapsed)
        if self.non_retryable:
            out["non_retryable"] = list(self.non_retryable)
        if self.overrides:
            overrides: Dict[str, Any] = {}
            for code, o in self.overrides.items():
                item = dict(o)
                for k in ("initial_interval", "max_interval"):
                    if item.get(k) is not None:
                        item[k] = duration(item[k])
                overrides[code] = item
            out["overrides"] = overrides
        return out


@dataclass(frozen=True)
class Quorum:
    """Trigger: at least ``min_succeeded`` parents succeeded (decided eagerly)."""

    min_succeeded: int

    def to_dict(self) -> Dict[str, Any]:
        return {"quorum": {"min_succeeded": self.min_succeeded}}


@dataclass(frozen=True)
class MapOver:
    """Fan out one child task per element of a list in a parent's output."""

    over: str
    """The parent step (added to ``depends_on``)."""
    path: str = ""
    """A JSON pointer to the list in that output (``""``: the output itself)."""

    def to_dict(self) -> Dict[str, Any]:
        return {"over": self.over, "path": self.path}


Trigger = Union[str, Quorum]
"""``"all_succeeded"`` (default), ``"all_done"``, ``"any_succeeded"``,
``"all_failed"`` or ``Quorum(n)``."""


@dataclass(frozen=True)
class Step:
    """One step of a workflow: a task template, its dependencies and rules."""

    id: str
    agent: str
    input: Any = None
    depends_on: Sequence[str] = ()
    trigger: Trigger = "all_succeeded"
    join: Optional[str] = None
    """``"collect"`` (default), ``"list"`` or ``"merge"``."""
    map: Optional[MapOver] = None
    retry: Union[RetryPolicy, Mapping[str, Any], None] = None
    timeouts: Union[Timeouts, Mapping[str, Any], None] = None
    labels: Optional[Mapping[str, str]] = None
    priority: int = 0

    def to_dict(self) -> Dict[str, Any]:
        depends: List[str] = list(self.depends_on)
        if self.map is not None and self.map.over not in depends:
            depends.append(self.map.over)
        out: Dict[str, Any] = {"id": self.id, "agent": self.agent, "input": self.input}
        if depends:
            out["depends_on"] = depends
        out["trigger"] = self.trigger.to_dict() if isinstance(self.trigger, Quorum) else self.trigger
        if self.join is not None:
            out["join"] = self.join
        if self.map is not None:
            out["map"] = self.map.to_dict()
        if self.retry is not None:
            out["retry"] = self.retry.to_dict() if isinstance(self.retry, RetryPolicy) else dict(self.retry)
        if self.timeouts is not None:
            out["timeouts"] = (
                self.timeouts.to_dict() if isinstance(self.timeouts, Timeouts) else dict(self.timeouts)
            )
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.priority:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True)
class Workflow:
    """A workflow: a DAG of steps, validated when submitted."""

    name: str
    steps: Sequence[Union[Step, Mapping[str, Any]]]
    idempotency_key: Optional[str] = None
    """Resubmitting with the same key (in the same tenant) returns the same workflow."""

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "name": self.name,
            "steps": [s.to_dict() if isinstance(s, Step) else dict(s) for s in self.steps],
        }
        if self.idempotency_key is not None:
            out["idempotency_key"] = self.idempotency_key
        return out
