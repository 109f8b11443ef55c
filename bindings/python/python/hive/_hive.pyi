"""Type stubs of ``hive._hive``, the native half of the ``hive`` package.

Every method documented as awaitable returns a coroutine-like ``Call``: its
arguments are checked when it is called, and its I/O starts when it is first
awaited (``await``, ``asyncio.run``, ``asyncio.create_task``, ``gather``).
"""

from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Awaitable, Dict, Generator, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, final

from hive._audit import AuditPage, AuditReport
from hive._specs import RetryPolicy, Timeouts, Workflow
from hive._worker import Worker

__version__: str
__all__ = [
    "__version__", "Hive", "Principal", "Submitted", "Ack", "TaskError", "Task", "TaskPage",
    "TaskEvent", "FeedEvent", "WorkflowSubmitted", "WorkflowView", "StepView", "WorkflowSummary",
    "WorkflowPage", "WorkflowEvent", "Node", "TokenInfo", "TaskEvents", "WorkflowEvents", "Feed", "TaskContext",
    "WorkerHandle", "_Bridge", "Call", "_shutdown",
]

@final
class Call:
    """The awaitable a Hive call returns (a coroutine: send/throw/close)."""

    def __await__(self) -> Generator[Any, Any, Any]: ...
    def __iter__(self) -> Generator[Any, Any, Any]: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any) -> Any: ...
    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any: ...
    def close(self) -> None: ...

@final
class Principal:
    """Who is calling. Every engine call takes one as its first argument."""

    @staticmethod
    def user(tenant: str, id: str) -> Principal:
        """A user of ``tenant`` with the default user scopes."""
    @staticmethod
    def operator(tenant: str, id: str) -> Principal:
        """An operator of ``tenant``: may also cancel others' tasks and read the audit."""
    @staticmethod
    def admin(tenant: str, id: str) -> Principal:
        """An admin of ``tenant``."""
    @staticmethod
    def system() -> Principal:
        """Hive itself: every scope, across tenants (needed for system nodes)."""
    def with_scopes(self, scopes: Sequence[str]) -> Principal:
        """The same principal with exactly these scopes (``"task:submit"``, …)."""
    @property
    def tenant(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str:
        """``user``, ``operator``, ``admin``, ``worker`` or ``system``."""
    @property
    def scopes(self) -> List[str]: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Submitted:
    """The answer to a submission."""

    @property
    def id(self) -> str:
        """The task's id (the existing task's, for a reused idempotency key)."""
    @property
    def created(self) -> bool:
        """``False`` when an existing task was returned for the idempotency key."""
    @property
    def last_seq(self) -> int:
        """The task's last event seq when answered: iterate events after it."""

@final
class Ack:
    """An acknowledged transition: the seq of its event and the state after it."""

    @property
    def seq(self) -> int: ...
    @property
    def state(self) -> str: ...

@final
class TaskError:
    """The error a task (or an attempt) ended with."""

    @property
    def code(self) -> str:
        """A short code: a handler exception's class name, ``timeout``, ``lost``, …"""
    @property
    def message(self) -> str: ...
    @property
    def non_retryable(self) -> bool: ...
    @property
    def details(self) -> Any:
        """Structured details (for a Python exception: its type and traceback)."""
    @property
    def retry_after(self) -> Optional[float]:
        """The handler's suggested delay before the next attempt, in seconds."""
    def to_dict(self) -> Dict[str, Any]: ...

@final
class Task:
    """A snapshot of a task; iterate ``events(…, after=last_seq)`` to miss nothing."""

    @property
    def id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def owner(self) -> str:
        """The principal that submitted it."""
    @property
    def agent(self) -> str: ...
    @property
    def input(self) -> Any: ...
    @property
    def labels(self) -> Dict[str, str]: ...
    @property
    def priority(self) -> int: ...
    @property
    def idempotency_key(self) -> Optional[str]: ...
    @property
    def spec(self) -> Dict[str, Any]:
        """The spec as submitted (JSON form)."""
    @property
    def state(self) -> str:
        """``pending``, ``scheduled``, ``running``, ``succeeded``, ``failed``, ``cancelled`` or ``timed_out``."""
    @property
    def is_terminal(self) -> bool: ...
    @property
    def attempt(self) -> int: ...
    @property
    def node_id(self) -> Optional[str]: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def available_at(self) -> datetime: ...
    @property
    def output(self) -> Any: ...
    @property
    def error(self) -> Optional[TaskError]: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class TaskPage:
    """A page of tasks; pass ``next`` as ``after`` for the next page."""

    @property
    def items(self) -> List[Task]: ...
    @property
    def next(self) -> Optional[str]: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Task]: ...

@final
class TaskEvent:
    """One event of a task; ``data`` holds the kind's fields."""

    @property
    def task_id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def seq(self) -> int:
        """Position in the task's stream: 1, 2, 3… without gaps."""
    @property
    def at(self) -> datetime: ...
    @property
    def type(self) -> str:
        """``queued``, ``scheduled``, ``started``, ``heartbeat``, ``log``, ``attempt_failed``,
        or a terminal ``succeeded``, ``failed``, ``cancelled``, ``timed_out``."""
    @property
    def is_terminal(self) -> bool: ...
    @property
    def data(self) -> Dict[str, Any]: ...
    @property
    def output(self) -> Any: ...
    @property
    def error(self) -> Optional[TaskError]: ...
    @property
    def attempt(self) -> Optional[int]: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class FeedEvent:
    """A task event in a tenant's feed, with its cursor."""

    @property
    def cursor(self) -> int: ...
    @property
    def event(self) -> TaskEvent: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class TaskEvents:
    """A task's events, replayed then live; ``async for`` ends after the terminal one."""

    def __aiter__(self) -> TaskEvents: ...
    def __anext__(self) -> Awaitable[TaskEvent]: ...
    @property
    def position(self) -> int:
        """The seq of the last event handed out."""

@final
class Feed:
    """A tenant's feed after a cursor, replayed then live; never ends by itself."""

    def __aiter__(self) -> Feed: ...
    def __anext__(self) -> Awaitable[FeedEvent]: ...
    async def next_batch(self, max: int = 1000) -> List[FeedEvent]:
        """Up to ``max`` events: those available now, or the next to arrive."""
    @property
    def cursor(self) -> int:
        """The cursor to resume from."""

@final
class WorkflowSubmitted:
    @property
    def id(self) -> str: ...
    @property
    def created(self) -> bool: ...

@final
class StepView:
    """One step of a workflow, as ``get_workflow`` shows it."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str:
        """``waiting``, ``running``, ``succeeded``, ``failed``, ``cancelled``, ``timed_out`` or ``skipped``."""
    @property
    def task_ids(self) -> List[str]: ...
    @property
    def attempts(self) -> int: ...
    @property
    def started_at(self) -> Optional[datetime]: ...
    @property
    def ended_at(self) -> Optional[datetime]: ...
    @property
    def output(self) -> Any: ...
    @property
    def error(self) -> Optional[TaskError]: ...
    @property
    def skip_reason(self) -> Optional[str]: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class WorkflowView:
    """A workflow with every step."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def state(self) -> str:
        """``running``, ``succeeded``, ``failed`` or ``cancelled``."""
    @property
    def is_terminal(self) -> bool: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def ended_at(self) -> Optional[datetime]: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def steps(self) -> List[StepView]: ...
    def step(self, id: str) -> StepView:
        """The step with this id (``KeyError`` if there is none)."""
    def to_dict(self) -> Dict[str, Any]: ...

@final
class WorkflowSummary:
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def ended_at(self) -> Optional[datetime]: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class WorkflowPage:
    @property
    def items(self) -> List[WorkflowSummary]: ...
    @property
    def next(self) -> Optional[str]: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[WorkflowSummary]: ...

@final
class WorkflowEvent:
    """``started``, ``step`` (a step changed state) or the terminal ``finished``."""

    @property
    def workflow_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def type(self) -> str: ...
    @property
    def step(self) -> Optional[str]: ...
    @property
    def state(self) -> Optional[str]: ...
    @property
    def task_ids(self) -> List[str]: ...
    @property
    def is_terminal(self) -> bool: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class WorkflowEvents:
    """A workflow's events, replayed then live; ``async for`` ends after ``finished``."""

    def __aiter__(self) -> WorkflowEvents: ...
    def __anext__(self) -> Awaitable[WorkflowEvent]: ...
    @property
    def position(self) -> int: ...

@final
class Node:
    """A worker node."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str:
        """``ready``, ``draining`` or ``lost``."""
    @property
    def system(self) -> bool: ...
    @property
    def tenant(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def labels(self) -> Dict[str, str]: ...
    @property
    def shared_with(self) -> List[str]:
        """Who else may run work on it: ``tenant:NAME`` or ``user:TENANT/PRINCIPAL``."""
    @property
    def registered_at(self) -> datetime: ...
    @property
    def last_seen(self) -> datetime: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class TokenInfo:
    """An API token without its secret."""

    @property
    def id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def principal_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def scopes(self) -> List[str]: ...
    @property
    def description(self) -> str: ...
    @property
    def issued_by(self) -> str: ...
    @property
    def issued_at(self) -> datetime: ...
    @property
    def expires_at(self) -> Optional[datetime]: ...
    @property
    def revoked_at(self) -> Optional[datetime]: ...
    def to_principal(self) -> Principal: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class TaskContext:
    """What a handler gets: the task's input and ways to log, report progress
    and heartbeat. The handler's return value is the task's output."""

    @property
    def task_id(self) -> str: ...
    @property
    def attempt(self) -> int:
        """The attempt number (1-based)."""
    @property
    def agent(self) -> str: ...
    @property
    def input(self) -> Any: ...
    @property
    def tenant(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def labels(self) -> Dict[str, str]: ...
    @property
    def cancelled(self) -> bool:
        """Whether the attempt should stop (its coroutine is cancelled too)."""
    async def log(self, stream: str, line: str) -> None:
        """Appends a ``log`` event to the task's stream."""
    def set_progress(self, progress: Any) -> None:
        """Sets the progress the worker's heartbeats carry from now on.

        Consecutive heartbeats of an attempt are stored as one event (the
        latest), so a replay shows the latest progress; a live subscriber
        sees each beat (the same ``seq`` again, with a later time)."""
    async def heartbeat(self, progress: Any = None) -> None:
        """Heartbeats now; raises ``hive.LeaseLost`` if the attempt should stop."""
    def _succeed(self, result: Any) -> bool: ...
    def _fail(
        self,
        code: str,
        message: str,
        non_retryable: bool = False,
        details: Any = None,
        retry_after: Optional[float] = None,
    ) -> bool: ...

@final
class WorkerHandle:
    """A running in-process worker (from ``Hive.start_worker``)."""

    @property
    def node_id(self) -> str: ...
    @property
    def running(self) -> bool: ...
    async def shutdown(self) -> None:
        """Stops claiming, lets in-flight handlers finish (up to the worker's
        ``shutdown_grace``), reports them and removes the node."""

@final
class Hive:
    """An embedded Hive engine on the backend a URL names.

    Open it with ``await Hive.open(url)`` (or ``async with await Hive.open(url)
    as h``), close it with ``await h.close()``. Every call takes the calling
    ``Principal`` as its first argument.
    """

    @classmethod
    async def open(cls, url: str, *, config: Optional[Mapping[str, Any]] = None) -> Hive:
        """Opens ``memory://``, ``sqlite:///path``, ``postgres://…`` or ``redis://…``;
        ``config`` sets engine settings (the JSON of Rust's ``HiveConfig``)."""
    @property
    def url(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    async def close(self, *, graceful: bool = True) -> None:
        """Stops this engine's workers, then the engine: gracefully (in-flight
        handlers finish, up to ``shutdown_grace``) or, with ``graceful=False``,
        at once (handlers cancelled, their tasks back in the queue)."""
    async def __aenter__(self) -> Hive: ...
    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> None:
        """Closes gracefully on a normal exit, at once on an exception
        (Ctrl-C, cancellation)."""
    async def submit(
        self,
        principal: Principal,
        spec: Optional[Mapping[str, Any]] = None,
        /,
        *,
        agent: Optional[str] = None,
        input: Any = None,
        labels: Optional[Mapping[str, str]] = None,
        priority: Optional[int] = None,
        timeouts: Union[Timeouts, Mapping[str, Any], None] = None,
        retry: Union[RetryPolicy, Mapping[str, Any], None] = None,
        idempotency_key: Optional[str] = None,
        delay: Union[str, float, timedelta, None] = None,
        not_before: Union[datetime, float, None] = None,
        concurrency: Optional[Mapping[str, Any]] = None,
        rate_limit: Optional[Mapping[str, Any]] = None,
    ) -> Submitted:
        """Submits one task from a spec dict and/or keywords (keywords win).

        ``delay`` (a duration) or ``not_before`` (a timezone-aware datetime, or
        seconds since the epoch) delays the task: it stays ``pending`` and no
        worker takes it before then.

        ``concurrency={"key": "customer-7" | "key_from": "/customer",
        "max_running": 2, "strategy": "queue" | "cancel_newest" |
        "cancel_in_progress"}`` limits how many tasks of the tenant with the
        same key run at once; ``rate_limit={"key": "llm", "limit": 100,
        "per": 1.0, "units": 1}`` how fast they are claimed."""
    async def submit_batch(self, principal: Principal, specs: Sequence[Mapping[str, Any]]) -> List[Submitted]:
        """Submits many tasks; one invalid spec refuses the whole batch."""
    async def get_task(self, principal: Principal, task_id: str) -> Task: ...
    async def list_tasks(
        self,
        principal: Principal,
        *,
        states: Optional[Sequence[str]] = None,
        agent: Optional[str] = None,
        owner: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> TaskPage: ...
    async def cancel(self, principal: Principal, task_id: str, reason: str = "") -> Ack:
        """Cancels a task that has not ended (an ended one raises ``AlreadyTerminal``)."""
    async def wait(self, principal: Principal, task_id: str, timeout: Optional[float] = None) -> Task:
        """Waits until the task has ended and returns it (``hive.Timeout`` after ``timeout`` s)."""
    def events(self, principal: Principal, task_id: str, after: int = 0) -> TaskEvents:
        """The task's events after seq ``after``; ``async for`` ends after the terminal one."""
    def feed(self, principal: Principal, cursor: int = 0, *, terminal_only: bool = False) -> Feed:
        """The tenant's feed after ``cursor``, replayed then live."""
    async def read_feed(self, principal: Principal, cursor: int = 0, limit: int = 1000) -> List[FeedEvent]: ...
    async def ack_terminal(self, principal: Principal, consumer: str, task_ids: Sequence[str]) -> None: ...
    async def unacked_terminal(self, principal: Principal, consumer: str, limit: int = 100) -> List[FeedEvent]: ...
    async def submit_workflow(self, principal: Principal, spec: Union[Workflow, Mapping[str, Any]]) -> WorkflowSubmitted: ...
    async def get_workflow(self, principal: Principal, workflow_id: str) -> WorkflowView: ...
    async def list_workflows(
        self,
        principal: Principal,
        *,
        states: Optional[Sequence[str]] = None,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> WorkflowPage: ...
    async def cancel_workflow(self, principal: Principal, workflow_id: str, reason: str = "") -> None: ...
    def workflow_events(self, principal: Principal, workflow_id: str, after: int = 0) -> WorkflowEvents: ...
    async def start_worker(self, principal: Principal, worker: Worker) -> WorkerHandle:
        """Registers a node for ``worker`` and runs its handlers on the current event loop."""
    async def list_nodes(self, principal: Principal) -> List[Node]: ...
    async def get_node(self, principal: Principal, node_id: str) -> Node: ...
    async def drain_node(self, principal: Principal, node_id: str) -> Node: ...
    async def issue_token(
        self,
        principal: Principal,
        principal_id: str,
        kind: str = "user",
        *,
        tenant: Optional[str] = None,
        scopes: Optional[Sequence[str]] = None,
        ttl: Optional[float] = None,
        description: str = "",
    ) -> Tuple[str, TokenInfo]:
        """Issues an API token (the caller needs ``tenant:admin``); returns the
        secret token, shown only once, and its info."""
    async def resolve_token(self, token: str) -> Principal:
        """The principal a token stands for (``Forbidden`` for any invalid token)."""
    async def revoke_token(self, principal: Principal, token_id: str) -> TokenInfo: ...
    async def list_tokens(self, principal: Principal) -> List[TokenInfo]: ...
    async def list_audit(
        self,
        principal: Principal,
        *,
        tenant: Optional[str] = None,
        action: Optional[str] = None,
        actor: Optional[str] = None,
        outcome: Optional[str] = None,
        after: int = 0,
        limit: int = 100,
    ) -> AuditPage:
        """A page of the tenant's audit trail, oldest first (needs ``audit:read``;
        another ``tenant`` needs ``system:admin``). ``outcome``: ``allowed``,
        ``denied`` or ``refused``; pass ``next_after_seq`` as ``after`` for the next page."""
    async def verify_audit(self, principal: Principal, tenant: Optional[str] = None) -> AuditReport:
        """Walks the tenant's whole hash chain and reports the first broken link
        (needs ``audit:read``)."""
    async def create_schedule(
        self,
        principal: Principal,
        id: str,
        *,
        cron: Optional[str] = None,
        timezone: Optional[str] = None,
        every: Union[str, float, timedelta, None] = None,
        anchor: Union[datetime, float, None] = None,
        task: Optional[Mapping[str, Any]] = None,
        workflow: Any = None,
        overlap: Optional[str] = None,
        catch_up: Union[str, float, timedelta, None] = None,
        jitter: Union[str, float, timedelta, None] = None,
        start_at: Union[datetime, float, None] = None,
        end_at: Union[datetime, float, None] = None,
        max_fires: Optional[int] = None,
        paused: bool = False,
        note: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Creates a schedule that submits ``task`` or ``workflow`` on a ``cron``
        calendar (read in ``timezone``) or ``every`` a duration; returns it as a
        dict (times in epoch milliseconds). ``overlap``: skip, buffer_one,
        cancel_previous or allow_all; ``catch_up``: a window or ``"latest"``."""
    async def update_schedule(
        self,
        principal: Principal,
        id: str,
        *,
        cron: Optional[str] = None,
        timezone: Optional[str] = None,
        every: Union[str, float, timedelta, None] = None,
        anchor: Union[datetime, float, None] = None,
        task: Optional[Mapping[str, Any]] = None,
        workflow: Any = None,
        overlap: Optional[str] = None,
        catch_up: Union[str, float, timedelta, None] = None,
        jitter: Union[str, float, timedelta, None] = None,
        start_at: Union[datetime, float, None] = None,
        end_at: Union[datetime, float, None] = None,
        max_fires: Optional[int] = None,
        paused: bool = False,
        note: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Replaces a schedule's spec; its counters and last fires are kept."""
    async def get_schedule(self, principal: Principal, id: str) -> Dict[str, Any]: ...
    async def list_schedules(
        self,
        principal: Principal,
        *,
        statuses: Optional[Sequence[str]] = None,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> List[Dict[str, Any]]: ...
    async def pause_schedule(self, principal: Principal, id: str, note: Optional[str] = None) -> Dict[str, Any]: ...
    async def resume_schedule(self, principal: Principal, id: str) -> Dict[str, Any]: ...
    async def delete_schedule(self, principal: Principal, id: str) -> None: ...
    async def trigger_schedule(self, principal: Principal, id: str) -> Dict[str, Any]:
        """Fires the schedule now; returns the fire (``slot``, ``target``, ``manual``)."""
    async def upcoming_fires(self, principal: Principal, id: str, n: int = 10) -> List[datetime]: ...
    async def run_schedules(self, principal: Principal) -> Dict[str, Any]:
        """Fires every due slot now (the supervisor does this each sweep)."""

@final
class _Bridge:
    def _on_readable(self) -> None: ...
    def _flush(self) -> None: ...
    def close(self) -> None: ...

def _shutdown(grace: float = 5.0) -> None:
    """Drains and stops everything before the interpreter exits (atexit hook)."""
