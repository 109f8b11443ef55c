"""Python half of the native machinery (used by ``hive._hive``; not public)."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any, AsyncGenerator, Awaitable, Callable, Dict, Optional

from ._errors import TaskFailure


async def _guard(bridge: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        bridge.close()


def loop_guard(bridge: Any) -> AsyncGenerator[None, None]:
    """An async generator, started, that closes ``bridge`` when the running
    loop shuts down its async generators (``asyncio.run`` and ``asyncio.Runner``
    do, after every task has finished)."""
    agen = _guard(bridge)
    step = agen.asend(None)
    try:
        step.send(None)
    except StopIteration:
        pass
    return agen


def _details(exc: BaseException) -> Dict[str, Any]:
    kind = type(exc)
    return {
        "exception": f"{kind.__module__}.{kind.__qualname__}",
        "traceback": "".join(traceback.format_exception(kind, exc, exc.__traceback__)),
    }


async def run_handler(fn: Callable[[Any], Awaitable[Any]], ctx: Any) -> None:
    """Runs one attempt and answers for it: the result, or the exception as
    the attempt's failure (code = the exception's class name)."""
    try:
        result = await fn(ctx)
    except asyncio.CancelledError:
        ctx._fail("CancelledError", "the handler was cancelled")
        raise
    except TaskFailure as exc:
        retry_after: Optional[float] = exc.retry_after
        ctx._fail(exc.code, exc.message, not exc.retryable, exc.details, retry_after)
    except BaseException as exc:
        ctx._fail(type(exc).__name__, str(exc) or repr(exc), False, _details(exc))
        if not isinstance(exc, Exception):
            raise
    else:
        ctx._succeed(result)
