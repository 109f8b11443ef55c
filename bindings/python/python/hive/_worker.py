"""``hive.Worker``: an in-process worker node and its handlers."""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar, Union

from ._hive import Principal, TaskContext

Handler = Callable[[TaskContext], Awaitable[Any]]
"""A handler: ``async def handler(ctx: hive.TaskContext) -> <JSON-compatible>``."""

H = TypeVar("H", bound=Handler)


def _seconds(value: Union[float, timedelta], what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return seconds


ShareTarget = Union[str, Principal]
"""Someone a user node is shared with: a ``Principal`` (that user),
``"user:TENANT/PRINCIPAL"`` or ``"tenant:TENANT"`` (every principal of it)."""


def _share_target(target: ShareTarget) -> Dict[str, str]:
    if isinstance(target, Principal):
        return {"type": "user", "tenant": target.tenant, "principal": target.id}
    if not isinstance(target, str):
        raise TypeError(f"a share target is a Principal or a string, got {target!r}")
    kind, sep, rest = target.partition(":")
    if sep and kind == "tenant" and rest and "/" not in rest:
        return {"type": "tenant", "tenant": rest}
    if sep and kind == "user":
        tenant, slash, principal = rest.partition("/")
        if slash and tenant and principal and "/" not in principal:
            return {"type": "user", "tenant": tenant, "principal": principal}
    raise ValueError(
        f"share target {target!r} is not 'tenant:TENANT' or 'user:TENANT/PRINCIPAL'"
    )


class Worker:
    """An in-process worker node: a name, a capacity and the handlers it runs.

    Register handlers with the decorator, then start it on an engine::

        worker = hive.Worker("laptop", capacity=8)

        @worker.handler("summarize")
        async def summarize(ctx: hive.TaskContext) -> dict[str, Any]:
            await ctx.log("stdout", "working")
            return {"summary": ctx.input["text"][:40]}

        handle = await h.start_worker(alice, worker)
        ...
        await handle.shutdown()

    Handlers run as asyncio tasks on the event loop ``start_worker`` was awaited
    on, at most ``capacity`` at once. What a handler returns (JSON-compatible)
    is the task's output; an exception fails the attempt (code = its class
    name, message = ``str(exc)``), retried by the task's policy unless it is a
    ``hive.NonRetryable`` (or a ``hive.TaskFailure`` with ``retryable=False``).
    If the task is cancelled or times out meanwhile, the handler's coroutine is
    cancelled.

    ``system=True`` makes a node that runs any tenant's tasks (the principal
    starting it needs ``system:admin``, e.g. ``Principal.system()``); otherwise
    the node belongs to the principal that starts it and runs only its tasks,
    and those of whoever it is shared with: ``share_with=[bob, "tenant:acme"]``
    (a system node cannot be shared; it already runs everyone's work).
    """

    def __init__(
        self,
        name: str,
        *,
        capacity: int = 64,
        labels: Optional[Mapping[str, str]] = None,
        system: bool = False,
        share_with: Optional[Iterable[ShareTarget]] = None,
        claim_batch: int = 256,
        heartbeat_interval: Union[float, timedelta, None] = None,
        shutdown_grace: Union[float, timedelta] = 30.0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if claim_batch < 1:
            raise ValueError(f"claim_batch must be at least 1, got {claim_batch}")
        self.name = name
        self.capacity = capacity
        self.labels: Dict[str, str] = dict(labels or {})
        self.system = system
        self.shared_with: List[Dict[str, str]] = [_share_target(t) for t in share_with or ()]
        if system and self.shared_with:
            raise ValueError("a system node runs every tenant's tasks: it cannot be shared")
        self.claim_batch = claim_batch
        self.heartbeat_interval: Optional[float] = (
            None if heartbeat_interval is None else _seconds(heartbeat_interval, "heartbeat_interval")
        )
        self.shutdown_grace = _seconds(shutdown_grace, "shutdown_grace")
        self._handlers: Dict[str, Handler] = {}

    def handler(self, agent: str) -> Callable[[H], H]:
        """Decorator: registers an ``async def`` as the handler of ``agent``."""

        def register(fn: H) -> H:
            self.add_handler(agent, fn)
            return fn

        return register

    def add_handler(self, agent: str, fn: Handler) -> None:
        """Registers ``fn`` (an ``async def``) as the handler of ``agent``."""
        if not agent:
            raise ValueError("the agent name must not be empty")
        call = getattr(fn, "__call__", None)
        if not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)):
            raise TypeError(
                f"the handler of {agent!r} must be an async function (async def), got {fn!r}"
            )
        self._handlers[agent] = fn

    @property
    def agents(self) -> List[str]:
        """The agents this worker has handlers for."""
        return list(self._handlers)

    def _spec(self) -> Dict[str, Any]:
        handlers: List[Tuple[str, Handler]] = list(self._handlers.items())
        return {
            "name": self.name,
            "capacity": self.capacity,
            "claim_batch": self.claim_batch,
            "labels": self.labels,
            "system": self.system,
            "shared_with": self.shared_with,
            "heartbeat_interval": self.heartbeat_interval,
            "shutdown_grace": self.shutdown_grace,
            "handlers": handlers,
        }

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, capacity={self.capacity}, agents={self.agents!r})"
