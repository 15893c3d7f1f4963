"""Invoicing: tenant invoice defaults, invoices and their lines, memos, recurring custom lines,
and the billed-period key that makes every billing run charge a subscription-period once.

Posted amounts are BIGINT minor units; quantities and unit prices are exact decimals.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from headend.db import ExactDecimal, Model, TenantOwned, utcnow

BILLING_MODES = ("anniversary", "fixed")
PRORATION_BASES = ("actual_days", "thirty_day")
TAX_ROUNDINGS = ("line", "invoice")
DOWNGRADE_POLICIES = ("deferred", "immediate")
INVOICE_STATUSES = ("draft", "open", "partially_paid", "paid", "void")
TAX_STATUSES = ("ok", "waiting")  # waiting: the tax engine was unavailable; retried later
LINE_KINDS = ("recurring", "setup", "inclusion", "proration", "item", "equipment", "discount",
              "fee", "usage", "hibernation")
INVOICE_SOURCES = ("manual", "invoice_now", "billing_run")
MEMO_KINDS = ("credit", "debit")


class InvoiceDefaults(TenantOwned, Model):
    """How a tenant invoices; one row per tenant, created with defaults on first use."""

    __tablename__ = "invoice_defaults"
    __table_args__ = (sa.UniqueConstraint("tenant_id", name="uq_invoice_defaults_tenant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    billing_mode: Mapped[str] = mapped_column(sa.String(12), default="anniversary")
    bill_day: Mapped[int] = mapped_column(default=1)  # fixed mode: the day every period starts
    days_in_advance: Mapped[int] = mapped_column(default=0)
    due_days: Mapped[int] = mapped_column(default=15)  # net terms after the invoice date
    proration_basis: Mapped[str] = mapped_column(sa.String(12), default="actual_days")
    prorate_first_period: Mapped[bool] = mapped_column(default=True)
    downgrade_policy: Mapped[str] = mapped_column(sa.String(10), default="deferred")
    credit_unused_on_cancel: Mapped[bool] = mapped_column(default=True)
    tax_rounding: Mapped[str] = mapped_column(sa.String(8), default="line")
    tax_engine: Mapped[str] = mapped_column(sa.String(60), default="simple_tax")
    # str.format fields: {year}, {month}, {seq}; e.g. "INV-{year}-{seq:06d}"
    number_format: Mapped[str] = mapped_column(sa.String(60), default="INV-{year}-{seq:06d}")
    invoiced_statuses: Mapped[str] = mapped_column(sa.String(120), default="active,suspended")
    paper_invoice_fee: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    paper_invoice_item_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("item.id", ondelete="RESTRICT"))

    paper_invoice_item = relationship("Item")

    def statuses(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.invoiced_statuses.split(",") if s.strip())


class Invoice(TenantOwned, Model):
    __tablename__ = "invoice"
    tenant_id_index = False  # uq_invoice_number and ix_invoice_* lead with tenant_id
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "number", name="uq_invoice_number"),
        sa.Index("ix_invoice_subscriber_date", "tenant_id", "subscriber_id", "invoice_date"),
        sa.Index("ix_invoice_status_due", "tenant_id", "status", "due_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(sa.String(40))  # given when posted; kept on void
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"))  # who is billed (bill-to)
    invoice_date: Mapped[dt.date] = mapped_column(sa.Date)
    due_date: Mapped[dt.date] = mapped_column(sa.Date)
    # Indexed by ix_invoice_status_due (tenant_id, status, due_date): status is only ever
    # queried within a tenant.
    status: Mapped[str] = mapped_column(sa.String(16), default="draft")
    source: Mapped[str] = mapped_column(sa.String(16), default="manual")
    currency: Mapped[str] = mapped_column(sa.String(3))
    subtotal: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    tax_total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # Applied credits and (later) payments; balance due = total - amount_paid.
    amount_paid: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    tax_status: Mapped[str] = mapped_column(sa.String(10), default="ok")
    tax_attempts: Mapped[int] = mapped_column(default=0)
    tax_engine_ref: Mapped[str | None] = mapped_column(sa.String(120))
    memo: Mapped[str | None] = mapped_column(sa.Text)
    posted_entry_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("journal_entry.id", ondelete="RESTRICT"))
    posted_at: Mapped[dt.datetime | None] = mapped_column()
    voided_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    subscriber = relationship("Subscriber")
    lines: Mapped[list[InvoiceLine]] = relationship(
        back_populates="invoice", order_by="InvoiceLine.position, InvoiceLine.id",
        cascade="all, delete-orphan")

    @property
    def balance_due(self) -> int:
        return 0 if self.status == "void" else self.total - self.amount_paid

    def __repr__(self) -> str:
        return self.number or f"draft #{self.id}"


class InvoiceLine(TenantOwned, Model):
    __tablename__ = "invoice_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    kind: Mapped[str] = mapped_column(sa.String(16), default="item")
    description: Mapped[str] = mapped_column(sa.String(255))
    explanation: Mapped[str | None] = mapped_column(sa.Text)  # proration, in words
    item_id: Mapped[int | None] = mapped_column(sa.ForeignKey("item.id", ondelete="RESTRICT"))
    subscription_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subscription.id", ondelete="RESTRICT"), index=True)
    # Whose charge it is when billed to another account (grouping on the parent's invoice).
    for_subscriber_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"))
    period_start: Mapped[dt.date | None] = mapped_column(sa.Date)
    period_end: Mapped[dt.date | None] = mapped_column(sa.Date)  # exclusive
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal(4), default=Decimal(1))
    unit_price: Mapped[Decimal] = mapped_column(ExactDecimal(4), default=Decimal(0))
    amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # minor units, signed
    income_account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("account.id", ondelete="RESTRICT"))
    taxable: Mapped[bool] = mapped_column(default=True)
    tax: Mapped[int] = mapped_column(sa.BigInteger, default=0)

    invoice: Mapped[Invoice] = relationship(back_populates="lines")
    item = relationship("Item")
    income_account = relationship("Account")
    taxes: Mapped[list[InvoiceLineTax]] = relationship(
        back_populates="line", cascade="all, delete-orphan", order_by="InvoiceLineTax.id")


class InvoiceLineTax(TenantOwned, Model):
    """One tax on one line, per label or jurisdiction: what the tax-liability legs post."""

    __tablename__ = "invoice_line_tax"

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(
        sa.ForeignKey("invoice_line.id", ondelete="CASCADE"), index=True)
    tax_rate_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("tax_rate.id", ondelete="RESTRICT"))
    jurisdiction: Mapped[str] = mapped_column(sa.String(120))
    rate: Mapped[Decimal] = mapped_column(ExactDecimal(6))
    amount: Mapped[int] = mapped_column(sa.BigInteger)

    line: Mapped[InvoiceLine] = relationship(back_populates="taxes")


class BilledPeriod(TenantOwned, Model):
    """A subscription-period that has been charged: the unique key behind "exactly once"."""

    __tablename__ = "billed_period"
    tenant_id_index = False  # uq_billed_period leads with tenant_id
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "subscription_id", "period_start",
                            name="uq_billed_period"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscription.id", ondelete="RESTRICT"))
    period_start: Mapped[dt.date] = mapped_column(sa.Date)
    period_end: Mapped[dt.date] = mapped_column(sa.Date)
    invoice_id: Mapped[int] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="CASCADE"), index=True)


class Memo(TenantOwned, Model):
    """A credit memo (lowers what the subscriber owes) or a debit memo (raises it)."""

    __tablename__ = "memo"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(sa.String(40))
    kind: Mapped[str] = mapped_column(sa.String(8))
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="RESTRICT"), index=True)  # applied to, if chosen
    memo_date: Mapped[dt.date] = mapped_column(sa.Date)
    description: Mapped[str] = mapped_column(sa.String(255))
    amount: Mapped[int] = mapped_column(sa.BigInteger)  # minor units, positive: the total
    # Sales tax given back (credit) with the amount, per rate in `taxes`; net = amount - tax.
    tax_total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    unapplied: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # credit left on account
    income_account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("account.id", ondelete="RESTRICT"))
    posted_entry_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("journal_entry.id", ondelete="RESTRICT"))
    voided_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    subscriber = relationship("Subscriber")
    invoice = relationship("Invoice")
    income_account = relationship("Account")
    taxes: Mapped[list[MemoTax]] = relationship(
        back_populates="memo", cascade="all, delete-orphan", order_by="MemoTax.id")

    @property
    def net(self) -> int:
        """The amount before tax (what the income account is debited or credited)."""
        return self.amount - (self.tax_total or 0)


class MemoTax(TenantOwned, Model):
    """Tax a memo gives back, per rate or jurisdiction: what its tax-liability legs post.
    `amount` is positive when tax is returned to the subscriber."""

    __tablename__ = "memo_tax"

    id: Mapped[int] = mapped_column(primary_key=True)
    memo_id: Mapped[int] = mapped_column(sa.ForeignKey("memo.id", ondelete="CASCADE"),
                                         index=True)
    tax_rate_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("tax_rate.id", ondelete="RESTRICT"))
    jurisdiction: Mapped[str] = mapped_column(sa.String(120))
    rate: Mapped[Decimal] = mapped_column(ExactDecimal(6))
    amount: Mapped[int] = mapped_column(sa.BigInteger)

    memo: Mapped[Memo] = relationship(back_populates="taxes")


class RecurringLine(TenantOwned, Model):
    """A custom charge or discount added to every invoice of a subscriber until its end date."""

    __tablename__ = "recurring_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"), index=True)
    bill_to_subscriber_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"))
    item_id: Mapped[int | None] = mapped_column(sa.ForeignKey("item.id", ondelete="RESTRICT"))
    description: Mapped[str] = mapped_column(sa.String(255))
    kind: Mapped[str] = mapped_column(sa.String(10), default="charge")  # charge / discount
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal(4), default=Decimal(1))
    unit_price: Mapped[Decimal] = mapped_column(ExactDecimal(4))  # positive; discount subtracts
    start_date: Mapped[dt.date] = mapped_column(sa.Date)
    end_date: Mapped[dt.date | None] = mapped_column(sa.Date)  # exclusive; None = open-ended
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    subscriber = relationship("Subscriber", foreign_keys=[subscriber_id])
    bill_to_subscriber = relationship("Subscriber", foreign_keys=[bill_to_subscriber_id])
    item = relationship("Item")


class MemoApplication(TenantOwned, Model):
    """How much of a credit memo settled which invoice: what voiding the memo (or the invoice)
    gives back. A memo's credit may be spread over several invoices."""

    __tablename__ = "memo_application"
    __table_args__ = (sa.UniqueConstraint("memo_id", "invoice_id", name="uq_memo_application"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    memo_id: Mapped[int] = mapped_column(sa.ForeignKey("memo.id", ondelete="CASCADE"),
                                         index=True)
    invoice_id: Mapped[int] = mapped_column(sa.ForeignKey("invoice.id", ondelete="CASCADE"),
                                            index=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger)  # minor units, positive
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
