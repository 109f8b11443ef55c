"""The shapes of audit-trail answers (``Hive.list_audit``, ``Hive.verify_audit``).

They are plain dicts at runtime; these ``TypedDict`` classes give them types.
"""

from __future__ import annotations

from typing import Any, List, Optional, TypedDict


class AuditEvent(TypedDict):
    """One audited attempt, numbered and hash-chained within its tenant."""

    seq: int
    """Position in the tenant's chain: 1, 2, 3… without gaps."""
    at: int
    """When, in milliseconds since the UNIX epoch (UTC)."""
    tenant: str
    actor: str
    actor_kind: str
    """``user``, ``operator``, ``admin``, ``worker`` or ``system``."""
    action: str
    """What was attempted (``task.submit``, ``token.issue``…)."""
    resource: str
    """On what (``task/<id>``, ``token/<id>``, ``tenant/<name>``, ``system``)."""
    outcome: str
    """``allowed``, ``denied`` or ``refused`` (authorized, but invalid)."""
    details: Any
    """The rest: a denial's reason, the number of tasks submitted…"""
    prev_hash: str
    hash: str


class AuditPage(TypedDict):
    """A page of a tenant's trail, oldest first."""

    events: List[AuditEvent]
    next_after_seq: Optional[int]
    """Pass as ``after`` for the next page; ``None`` at the end of the trail."""


class ChainHead(TypedDict):
    """The last event of an intact chain."""

    seq: int
    hash: str


class AuditReport(TypedDict):
    """What verifying a tenant's chain found."""

    ok: bool
    checked: int
    """Events checked and found intact, from seq 1 up to the first broken link."""
    first_broken: Optional[int]
    broken: Optional[str]
    """``missing``, ``malformed``, ``seq_mismatch``, ``prev_hash_mismatch``,
    ``hash_mismatch``, ``truncated`` or ``head_mismatch``."""
    reason: Optional[str]
    head: Optional[ChainHead]
