"""Flush-time guards: every new entry balances, and posted entries and legs never change.

The posting service is the only writer, but this holds for any ORM code on any database. On
PostgreSQL the database enforces the same rules again (migration 0003), even for raw SQL.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from headend.errors import DomainError
from headend.ledger.models import JournalEntry, Leg


class LedgerGuardError(DomainError):
    """A write that would leave the books unbalanced or change what was posted."""


@event.listens_for(Session, "before_flush")
def _guard_ledger(session: Session, flush_context, instances) -> None:
    new_entries = {obj for obj in session.new if isinstance(obj, JournalEntry)}
    for obj in session.new:
        if isinstance(obj, Leg) and obj.entry not in new_entries:
            raise LedgerGuardError("a leg can only be posted with its new journal entry")
    for obj in session.dirty:
        if isinstance(obj, (JournalEntry, Leg)) and session.is_modified(
                obj, include_collections=False):
            raise LedgerGuardError(
                f"posted {obj.__tablename__} rows are immutable: post a reversing entry")
    for obj in session.deleted:
        if isinstance(obj, (JournalEntry, Leg)):
            raise LedgerGuardError(
                f"posted {obj.__tablename__} rows cannot be deleted: post a reversing entry")
    for entry in new_entries:
        debits = sum(leg.debit or 0 for leg in entry.legs)
        credits = sum(leg.credit or 0 for leg in entry.legs)
        if not entry.legs or debits != credits:
            raise LedgerGuardError(
                f"journal entry {entry.key!r} is unbalanced or empty "
                f"(debits {debits}, credits {credits})")
