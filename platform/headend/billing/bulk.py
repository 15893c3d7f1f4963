"""Set-based writing shared by the billing run and the collections job: pre-allocated ids, one
COPY (PostgreSQL) or multi-row INSERT per table, stamped with the acting tenant, and journal
entries posted in bulk under `post_entry`'s rules.

Bulk writes bypass the ORM: no per-row audit, no flush-time checks. Callers write their own
summary audit rows and rely on unique keys (entry keys, their own) for exactly-once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from headend.catalog.models import Account
from headend.catalog.services import ACCOUNTS_RECEIVABLE
from headend.db import utcnow
from headend.errors import raise_if
from headend.ledger.models import JournalEntry, Leg
from headend.ledger.services import LegSpec, check_books_open, ledger_settings
from headend.tenancy.context import current_scope
from headend.tenancy.scoping import TenantScopeError


@dataclass(frozen=True)
class BulkEntry:
    """A journal entry for `post_entries_bulk`; `id` is pre-allocated by the caller."""

    id: int
    key: str
    entry_date: dt.date
    source_type: str
    source_id: int
    description: str
    legs: tuple[LegSpec, ...]


def insert_rows(session: Session, model, rows: list[dict]) -> None:
    """Insert `rows` (dicts with the same keys) for the acting tenant in one statement.

    PostgreSQL: one COPY (an order of magnitude faster than executemany, and one statement, so
    statement-level triggers fire once); the tenant id is the acting scope's, as the ORM
    stamps it. Elsewhere: the ORM bulk INSERT (stamped by the scoping mechanism), with
    `render_nulls` so that rows with and without NULLs still batch together.
    """
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(sa.insert(model), rows, execution_options={"render_nulls": True})
        return
    tenant_id = current_scope().tenant_id
    if tenant_id is None:
        raise TenantScopeError(f"{model.__name__}: choose a tenant to act for")
    copy_rows(session, model.__table__, [{**row, "tenant_id": tenant_id} for row in rows])


def copy_rows(session: Session, table: sa.Table, rows: list[dict]) -> None:
    """Insert `rows` (dicts with the same keys) into `table` as they are: one COPY on
    PostgreSQL (values through the columns' bind processors), one executemany elsewhere."""
    if not rows:
        return
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        session.execute(table.insert(), rows)
        return
    names = list(rows[0])
    processed = [(i, proc) for i, proc in enumerate(
        table.c[n].type._cached_bind_processor(bind.dialect) for n in names) if proc]
    columns = ", ".join(f'"{n}"' for n in names)
    statement = f'COPY "{table.name}" ({columns}) FROM STDIN'
    raw = session.connection().connection.driver_connection
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = list(row.values())
                for i, proc in processed:
                    if values[i] is not None:
                        values[i] = proc(values[i])
                copy.write_row(values)
    except psycopg.errors.IntegrityError as exc:  # as the ORM path raises it
        raise IntegrityError(statement, None, exc) from exc


def forget(session: Session, model, ids) -> None:
    """Expire the loaded copies of rows a bulk statement changed: the next read reloads."""
    for row_id in ids:
        obj = session.identity_map.get(identity_key(model, row_id))
        if obj is not None:
            session.expire(obj)


def allocate_ids(session: Session, model, n: int) -> list[int]:
    """`n` fresh primary keys: from the sequence on PostgreSQL; past max(id) on SQLite, where
    the caller already holds the database's write lock (it has written in this transaction)."""
    if n == 0:
        return []
    table = model.__table__
    if session.get_bind().dialect.name == "postgresql":
        return list(session.scalars(sa.text(
            f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) "
            "FROM generate_series(1, :n)"), {"n": n}))
    start = session.scalar(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))) + 1
    return list(range(start, start + n))


def post_entries_bulk(session: Session, entries: list[BulkEntry]) -> None:
    """Post many balanced entries with two multi-row INSERTs, under the same rules as
    `post_entry`: legs one-sided and non-negative on active accounts of this tenant, AR legs
    naming their subscriber, debits equal to credits, no date in closed books ("warn" books get
    one recorded warning per date). Keys must be new: a key already posted is an
    IntegrityError for the caller's transaction (the billing run's exactly-once guard)."""
    if not entries:
        return
    overrides = check_entries(session, entries)
    now = utcnow()
    insert_rows(session, JournalEntry, [dict(
        id=e.id, entry_date=e.entry_date, posted_at=now, source_type=e.source_type,
        source_id=e.source_id, description=e.description[:255], key=e.key, reverses_id=None,
        closed_books_override=e.entry_date in overrides) for e in entries])
    insert_rows(session, Leg, [dict(
        entry_id=e.id, account_id=leg.account_id, subscriber_id=leg.subscriber_id,
        debit=leg.debit, credit=leg.credit, tax_rate_id=leg.tax_rate_id,
        jurisdiction=leg.jurisdiction, memo=leg.memo) for e in entries for leg in e.legs])


def check_entries(session: Session, entries: list[BulkEntry]) -> set[dt.date]:
    """Refuse (ValidationFailed) entries that break `post_entry`'s rules; the dates among
    theirs that fall in books closed with "warn" (each warned once)."""
    errors: dict[str, list[str]] = {}
    account_ids = {leg.account_id for e in entries for leg in e.legs}
    active = dict(session.execute(sa.select(Account.id, Account.active)
                                  .where(Account.id.in_(account_ids))).all())
    ar = session.scalar(sa.select(Account.id).where(Account.code == ACCOUNTS_RECEIVABLE))
    for e in entries:
        for problem in _entry_problems(e, active, ar):
            errors.setdefault("legs", []).append(f"{e.key}: {problem}")
    raise_if(errors)
    return _closed_books_dates(session, {e.entry_date for e in entries})


def _entry_problems(e: BulkEntry, active: dict[int, bool], ar: int | None):
    """What breaks `post_entry`'s rules in `e` (messages made only for a broken entry)."""
    if not e.legs:
        yield "an entry needs legs"
    for leg in e.legs:
        if leg.account_id is None or leg.account_code is not None:
            yield "bulk legs name their account by id"
        if leg.debit < 0 or leg.credit < 0 or (leg.debit > 0) == (leg.credit > 0):
            yield "each leg has one positive side"
        if active.get(leg.account_id) is not True:
            yield f"account {leg.account_id} is missing or inactive"
        if leg.account_id == ar and leg.subscriber_id is None:
            yield "a receivable needs its subscriber"
    debits, credits = sum(x.debit for x in e.legs), sum(x.credit for x in e.legs)
    if debits != credits:
        yield f"unbalanced: debits {debits} and credits {credits} differ"


def _closed_books_dates(session: Session, dates: set[dt.date]) -> set[dt.date]:
    """The dates in books closed with "warn" (warned once each); raises for "block"."""
    settings = ledger_settings(session)
    if settings is None or settings.closing_date is None:
        return set()
    closed = {d for d in dates if d <= settings.closing_date}
    for day in sorted(closed):
        check_books_open(session, day)
    return closed
