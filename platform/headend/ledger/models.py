"""Journal entries and their legs (amounts in integer minor units), and each tenant's closed books.

Posted rows are immutable: a correction is a reversing entry. `headend.ledger.guards` enforces
that and the balance of every new entry at flush time; on PostgreSQL migration 0003 adds
triggers that enforce the same in the database itself.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from headend.catalog.models import Account
from headend.db import Model, TenantOwned, utcnow

CLOSING_MODES = ("block", "warn")


class JournalEntry(TenantOwned, Model):
    """One balanced posting of a source document (invoice, memo, void...)."""

    __tablename__ = "journal_entry"
    tenant_id_index = False  # led by uq_journal_entry_tenant_key and ix_journal_entry_*
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "key", name="uq_journal_entry_tenant_key"),
        sa.Index("ix_journal_entry_source", "tenant_id", "source_type", "source_id"),
        sa.Index("ix_journal_entry_date", "tenant_id", "entry_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_date: Mapped[dt.date] = mapped_column(sa.Date)
    posted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source_type: Mapped[str] = mapped_column(sa.String(30))
    source_id: Mapped[int] = mapped_column(sa.BigInteger)
    description: Mapped[str] = mapped_column(sa.String(255))
    key: Mapped[str] = mapped_column(sa.String(120))
    # At most one reversal per entry: the database, not luck, stops a second one.
    reverses_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("journal_entry.id", ondelete="RESTRICT"), unique=True
    )
    # Posted on or before the closing date because the tenant chose "warn".
    closed_books_override: Mapped[bool] = mapped_column(default=False)

    legs: Mapped[list[Leg]] = relationship(back_populates="entry", order_by="Leg.id")
    reverses: Mapped[JournalEntry | None] = relationship(remote_side=[id])

    def __repr__(self) -> str:
        return f"{self.entry_date} {self.description}"


class Leg(TenantOwned, Model):
    """One debit or one credit of an entry on one account."""

    __tablename__ = "ledger_leg"
    tenant_id_index = False  # ix_ledger_leg_subscriber leads with tenant_id
    __table_args__ = (
        sa.CheckConstraint("debit >= 0", name="ck_ledger_leg_debit_not_negative"),
        sa.CheckConstraint("credit >= 0", name="ck_ledger_leg_credit_not_negative"),
        sa.CheckConstraint("(debit > 0 AND credit = 0) OR (debit = 0 AND credit > 0)",
                           name="ck_ledger_leg_one_side"),
        sa.Index("ix_ledger_leg_subscriber", "tenant_id", "subscriber_id", "account_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        sa.ForeignKey("journal_entry.id", ondelete="RESTRICT"), index=True
    )
    account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("account.id", ondelete="RESTRICT"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT")
    )
    debit: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    credit: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    tax_rate_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("tax_rate.id", ondelete="RESTRICT"), index=True
    )
    jurisdiction: Mapped[str | None] = mapped_column(sa.String(120))
    memo: Mapped[str | None] = mapped_column(sa.String(255))

    entry: Mapped[JournalEntry] = relationship(back_populates="legs")
    account: Mapped[Account] = relationship()

    def __repr__(self) -> str:
        side = f"Dr {self.debit}" if self.debit else f"Cr {self.credit}"
        return f"{self.account} {side}"


class LedgerSettings(TenantOwned, Model):
    """Closed books: nothing posts on or before `closing_date` ("block"), or only with a
    recorded warning ("warn")."""

    __tablename__ = "ledger_settings"
    __table_args__ = (sa.UniqueConstraint("tenant_id", name="uq_ledger_settings_tenant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    closing_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    closing_mode: Mapped[str] = mapped_column(sa.String(10), default="block")


# The flush-time guards live next to the models so that importing the models arms them.
from headend.ledger import guards  # noqa: E402, F401
