"""Hive: an embeddable orchestrator for agent tasks and workflows.

An asyncio-native binding of the Rust engine. Every call that does I/O is an
awaitable; every call takes the calling ``Principal`` as its first argument::

    import asyncio
    import hive

    async def main() -> None:
        async with await hive.Hive.open("memory://") as h:
            alice = hive.Principal.user("acme", "alice")
            worker = hive.Worker("laptop", capacity=8)

            @worker.handler("summarize")
            async def summarize(ctx: hive.TaskContext) -> dict:
                return {"summary": ctx.input["text"][:20]}

            handle = await h.start_worker(alice, worker)
            task = await h.submit(alice, agent="summarize", input={"text": "…"})
            async for event in h.events(alice, task.id):   # ends after the terminal event
                print(event.seq, event.type)
            await handle.shutdown()

    asyncio.run(main())

Errors are ``hive.HiveError`` subclasses, one per engine error kind. The
engine runs on one runtime per process, started on first use; it does not
survive ``fork()`` (open Hive in the child instead), and it is drained and
stopped by an ``atexit`` hook before the interpreter exits.
"""

from __future__ import annotations

import atexit

from . import _hive
from ._audit import AuditEvent, AuditPage, AuditReport, ChainHead
from ._errors import (
    AlreadyTerminal,
    BackendError,
    BackendUnavailable,
    Conflict,
    Forbidden,
    HiveError,
    InvalidArgument,
    InvalidSpec,
    InvalidTransition,
    LeaseLost,
    NonRetryable,
    NotFound,
    OffsetExpired,
    Shutdown,
    TaskFailure,
    Timeout,
)
from ._hive import (
    Ack,
    Feed,
    FeedEvent,
    Hive,
    Node,
    Principal,
    StepView,
    Submitted,
    Task,
    TaskContext,
    TaskError,
    TaskEvent,
    TaskEvents,
    TaskPage,
    TokenInfo,
    WorkerHandle,
    WorkflowEvent,
    WorkflowEvents,
    WorkflowPage,
    WorkflowSubmitted,
    WorkflowSummary,
    WorkflowView,
    __version__,
)
from ._specs import Duration, MapOver, Quorum, RetryPolicy, Step, Timeouts, Trigger, Workflow
from ._worker import Handler, Worker

# Drain in-flight work and stop the runtime before the interpreter finalizes:
# registered at import, so it runs after the exit hooks of code importing hive.
atexit.register(_hive._shutdown)

__all__ = [
    "__version__",
    # engine
    "Hive",
    "Principal",
    # values
    "Ack",
    "Feed",
    "FeedEvent",
    "Node",
    "StepView",
    "Submitted",
    "Task",
    "TaskError",
    "TaskEvent",
    "TaskEvents",
    "TaskPage",
    "TokenInfo",
    "WorkflowEvent",
    "WorkflowEvents",
    "WorkflowPage",
    "WorkflowSubmitted",
    "WorkflowSummary",
    "WorkflowView",
    # audit answers
    "AuditEvent",
    "AuditPage",
    "AuditReport",
    "ChainHead",
    # workers
    "Handler",
    "TaskContext",
    "Worker",
    "WorkerHandle",
    # spec helpers
    "Duration",
    "MapOver",
    "Quorum",
    "RetryPolicy",
    "Step",
    "Timeouts",
    "Trigger",
    "Workflow",
    # errors
    "HiveError",
    "AlreadyTerminal",
    "BackendError",
    "BackendUnavailable",
    "Conflict",
    "Forbidden",
    "InvalidArgument",
    "InvalidSpec",
    "InvalidTransition",
    "LeaseLost",
    "NotFound",
    "OffsetExpired",
    "Shutdown",
    "Timeout",
    # raised by handlers
    "NonRetryable",
    "TaskFailure",
]
