"""The exceptions Hive raises, one per kind of engine error, and the two a
handler may raise to choose how its attempt fails."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar, Dict, Optional, Tuple, Type, Union


def _rebuild(cls: Type[HiveError], message: str, details: Dict[str, Any]) -> HiveError:
    return cls(message, **details)


class HiveError(Exception):
    """Base class of every error the engine raises.

    ``kind`` is the engine's stable name for the error (``not_found``,
    ``invalid_spec``, …); ``temporary`` says whether the same call may succeed
    if retried later. Subclasses carry the error's fields as attributes.
    """

    kind: ClassVar[str] = "error"
    temporary: ClassVar[bool] = False

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self._details = dict(details)
        for name, value in details.items():
            setattr(self, name, value)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._details))


class NotFound(HiveError, LookupError):
    """The object does not exist, or belongs to another tenant."""

    kind = "not_found"
    resource: str = ""
    """What kind of object (``task``, ``workflow``, ``node``)."""
    id: str = ""
    """Its id, as given."""


class Forbidden(HiveError):
    """The principal is not allowed to do this (the refusal is audited)."""

    kind = "forbidden"
    action: str = ""
    reason: str = ""


class InvalidSpec(HiveError, ValueError):
    """A task, workflow or node spec is invalid; nothing was stored."""

    kind = "invalid_spec"
    field: str = ""
    """The offending field, as a path (``retry.backoff_coefficient``, ``[3].input``)."""
    detail: str = ""
    """What is wrong with it and what is allowed."""


class InvalidArgument(HiveError, ValueError):
    """An argument other than a spec is invalid (a malformed id, a bad URL)."""

    kind = "invalid_argument"


class InvalidTransition(HiveError):
    """The operation is not allowed from the task's current state."""

    kind = "invalid_transition"
    task_id: str = ""
    state: str = ""
    op: str = ""


class AlreadyTerminal(HiveError):
    """The task already ended; a second, different terminal report is refused."""

    kind = "already_terminal"
    task_id: str = ""
    state: str = ""
    seq: int = 0


class LeaseLost(HiveError):
    """The attempt's lease was taken away (cancelled, timed out, requeued):
    stop working on it; its result is discarded."""

    kind = "lease_lost"
    task_id: str = ""


class Conflict(HiveError):
    """A conflicting object exists or a precondition failed."""

    kind = "conflict"


class OffsetExpired(HiveError):
    """The requested offset was dropped by retention; resume from ``earliest``."""

    kind = "offset_expired"
    requested: int = 0
    earliest: int = 0


class BackendUnavailable(HiveError):
    """The backend cannot be reached right now; retrying later may succeed."""

    kind = "backend_unavailable"
    temporary = True


class BackendError(HiveError):
    """The backend failed in a way retrying will not fix."""

    kind = "backend"


class Timeout(HiveError):
    """An operation did not finish in time."""

    kind = "timeout"
    temporary = True
    seconds: float = 0.0


class Shutdown(HiveError):
    """The engine (or the event loop the call was made on) is shutting down."""

    kind = "shutdown"


class TaskFailure(Exception):
    """Raise from a handler to fail the attempt with a code of your choosing.

    Any other exception fails the attempt too, with the exception's class
    name as the code. ``retryable=False`` ends the task at once (``failed``)
    whatever its retry policy; ``retry_after`` suggests the delay before the
    next attempt (clamped by the policy's ``max_interval``).
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        retryable: bool = True,
        details: Any = None,
        retry_after: Union[float, timedelta, None] = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.details = details
        self.retry_after: Optional[float] = (
            retry_after.total_seconds() if isinstance(retry_after, timedelta) else retry_after
        )

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


class NonRetryable(TaskFailure):
    """Raise from a handler to fail the task without retrying.

    The code is ``code`` if given, else the exception's class name, so
    ``class BadInput(hive.NonRetryable)`` fails tasks with code ``BadInput``.
    """

    def __init__(self, message: str = "", *, code: Optional[str] = None, details: Any = None) -> None:
        super().__init__(code or type(self).__name__, message, retryable=False, details=details)


for _cls in (
    HiveError, NotFound, Forbidden, InvalidSpec, InvalidArgument, InvalidTransition,
    AlreadyTerminal, LeaseLost, Conflict, OffsetExpired, BackendUnavailable, BackendError,
    Timeout, Shutdown, TaskFailure, NonRetryable,
):
    _cls.__module__ = "hive"
del _cls
