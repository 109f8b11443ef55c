"""Fixtures: an engine per test on each backend, a fresh tenant per test.

Backends: ``memory://`` and a throwaway SQLite file always; PostgreSQL and
Redis when ``HIVE_TEST_POSTGRES_URL`` / ``HIVE_TEST_REDIS_URL`` are set. A
backend that is not available (URL unset, not built into this wheel, server
unreachable) is skipped with the reason, except under ``CI=true``, where it
fails the test instead.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator, List

import pytest

import hive

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skips the test, or fails it under CI=true."""
    if CI:
        pytest.fail(f"backend unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def backend_urls(tmp: Path) -> List[str]:
    return ["memory://", f"sqlite://{tmp / 'hive.db'}"]


BACKENDS = ["memory", "sqlite", "postgres", "redis"]


def url_for(backend: str, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'hive.db'}"
    var = f"HIVE_TEST_{backend.upper()}_URL"
    url = os.environ.get(var)
    if not url:
        unavailable(f"{var} is not set (scripts/test-all starts {backend} and sets it)")
        raise AssertionError("unreachable")
    return url


async def open_backend(url: str) -> hive.Hive:
    try:
        return await hive.Hive.open(url)
    except hive.InvalidArgument as e:
        if "not enabled in this build" in str(e) or "not built" in str(e):
            unavailable(f"{url.split(':')[0]} backend is not built into this wheel: {e}")
        raise
    except hive.BackendUnavailable as e:
        unavailable(f"{url} is unreachable: {e}")
        raise


@pytest.fixture(params=["memory"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend of the engine fixture (memory unless a test parametrizes it)."""
    return str(request.param)


@pytest.fixture
async def h(backend: str, tmp_path: Path) -> AsyncIterator[hive.Hive]:
    engine = await open_backend(url_for(backend, tmp_path))
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def alice(tenant: str) -> hive.Principal:
    return hive.Principal.user(tenant, "alice")


@pytest.fixture
def bob(tenant: str) -> hive.Principal:
    return hive.Principal.user(tenant, "bob")


@pytest.fixture
def agent() -> str:
    """An agent name unique to the test (durable backends are shared)."""
    return f"agent-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tmp_db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "hive.db"
