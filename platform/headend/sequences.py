"""Per-tenant number sequences (account numbers, invoice numbers, memo numbers).

One row per tenant and sequence name, bumped by one atomic UPDATE ... RETURNING: concurrent
callers queue on the row lock and each gets its own number, with no gaps from failed inserts of
other sequences. The first call of a tenant creates the row inside a savepoint.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from headend.db import Model, TenantOwned


class TenantSequence(TenantOwned, Model):
    __tablename__ = "tenant_sequence"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name", name="uq_tenant_sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))
    last_value: Mapped[int] = mapped_column(sa.BigInteger, default=0)


def _bump(session: Session, name: str, count: int) -> int | None:
    return session.scalar(
        sa.update(TenantSequence)
        .where(TenantSequence.name == name)
        .values(last_value=TenantSequence.last_value + count)
        .returning(TenantSequence.last_value)
        .execution_options(synchronize_session=False)
    )


def reserve(session: Session, name: str, count: int = 1) -> int:
    """Reserve `count` consecutive values of the current tenant's sequence `name`; returns the
    first (a billing run numbers a whole chunk of invoices with one statement)."""
    last = _bump(session, name, count)
    if last is None:
        try:
            with session.begin_nested():
                session.add(TenantSequence(name=name, last_value=0))
        except IntegrityError:
            pass  # another transaction created it first: bump that one
        last = _bump(session, name, count)
    return last - count + 1


def next_value(session: Session, name: str) -> int:
    """The current tenant's next value of sequence `name` (1, 2, 3, ...)."""
    return reserve(session, name)
