"""Chasing late payers: the tenant's collection rules and per-subscriber overrides, autopay
attempts, fees applied once per invoice, promises to pay, write-offs and notices.

The daily collections job is a pure function of these rows, the invoices and the date: every
effect has a unique key (an attempt number, a fee kind per invoice, a notice key), so running
it twice, or twice at once, does each thing once.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from headend.db import ExactDecimal, Model, TenantOwned, utcnow

FEE_KINDS = ("late_fee", "rebill_fee")
LATE_FEE_KINDS = ("fixed", "percent")
ACTIONS = ("suspend", "late_fee")  # what a promise to pay can push to a later date
NOTICE_KINDS = ("payment_receipt", "failed_payment", "upcoming_suspension", "suspended",
                "restored")


class CollectionSettings(TenantOwned, Model):
    """How a tenant collects; one row per tenant, created with defaults on first use.

    The documented sequence: an invoice falls due -> autopay charges it (retried
    `retry_count` times every `retry_interval_days`) -> `late_fee_days` after the due date a
    late fee -> `grace_days` after the due date the subscriber is suspended, unless what is
    overdue is within `grace_amount` -> a payment that brings it back within the grace amount
    restores them at once.
    """

    __tablename__ = "collection_settings"
    __table_args__ = (sa.UniqueConstraint("tenant_id", name="uq_collection_settings_tenant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    retry_count: Mapped[int] = mapped_column(default=3)  # autopay attempts after the first
    retry_interval_days: Mapped[int] = mapped_column(default=3)
    late_fee_days: Mapped[int | None] = mapped_column()  # None: no late fees
    late_fee_kind: Mapped[str] = mapped_column(sa.String(8), default="fixed")
    late_fee_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))  # money or %
    late_fee_max: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))  # cap for percent
    rebill_fee_days: Mapped[int | None] = mapped_column()  # a second, fixed fee; None: off
    rebill_fee_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    grace_days: Mapped[int] = mapped_column(default=10)
    grace_amount: Mapped[Decimal] = mapped_column(ExactDecimal(4), default=Decimal(0))
    auto_suspend: Mapped[bool] = mapped_column(default=True)
    auto_restore: Mapped[bool] = mapped_column(default=True)
    suspension_notice_days: Mapped[int] = mapped_column(default=3)  # notice before suspending
    writeoff_enabled: Mapped[bool] = mapped_column(default=False)
    writeoff_threshold: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))  # at most
    writeoff_days: Mapped[int] = mapped_column(default=90)  # after the subscriber's archive


class SubscriberCollection(TenantOwned, Model):
    """A subscriber's autopay choice and overrides of the tenant's collection rules
    (None: the tenant's value)."""

    __tablename__ = "subscriber_collection"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "subscriber_id", name="uq_subscriber_collection"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="CASCADE"), index=True)
    autopay: Mapped[bool] = mapped_column(default=False)
    autopay_method_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("saved_payment_method.id", ondelete="SET NULL"))
    grace_days: Mapped[int | None] = mapped_column()
    grace_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    never_suspend: Mapped[bool] = mapped_column(default=False)
    no_late_fees: Mapped[bool] = mapped_column(default=False)
    archived_on: Mapped[dt.date | None] = mapped_column(sa.Date)  # when the status became archived
    # Set while the collections job has the subscriber suspended, with the subscriptions it
    # suspended (restored to active by a payment); a suspension by staff is never auto-restored.
    suspended_on: Mapped[dt.date | None] = mapped_column(sa.Date)
    suspended_subscription_ids: Mapped[list | None] = mapped_column(sa.JSON)

    subscriber = relationship("Subscriber")
    autopay_method = relationship("SavedPaymentMethod")


class AutopayAttempt(TenantOwned, Model):
    """One charge of a due invoice to the subscriber's saved method, with its outcome; the
    unique (invoice, attempt) key makes a rerun of the job charge nothing twice."""

    __tablename__ = "autopay_attempt"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "invoice_id", "attempt", name="uq_autopay_attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="RESTRICT"), index=True)
    attempt: Mapped[int] = mapped_column()  # 1 = the first charge on the due date
    attempted_on: Mapped[dt.date] = mapped_column(sa.Date)
    payment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("payment.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(sa.String(12))  # a payment status
    decline_code: Mapped[str | None] = mapped_column(sa.String(60))
    message: Mapped[str | None] = mapped_column(sa.String(255))
    next_attempt_on: Mapped[dt.date | None] = mapped_column(sa.Date)

    invoice = relationship("Invoice")
    payment = relationship("Payment")


class AppliedFee(TenantOwned, Model):
    """A late or re-billing fee charged for an overdue invoice: once per invoice and kind."""

    __tablename__ = "applied_fee"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "invoice_id", "kind", name="uq_applied_fee"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="RESTRICT"), index=True)  # the overdue one
    kind: Mapped[str] = mapped_column(sa.String(12))
    # The invoice that charges the fee (set in the same transaction that claims the row: the
    # claim comes first so a concurrent run gives up before numbering or posting anything).
    fee_invoice_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="RESTRICT"))
    amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # minor units
    applied_on: Mapped[dt.date] = mapped_column(sa.Date)

    invoice = relationship("Invoice", foreign_keys=[invoice_id])
    fee_invoice = relationship("Invoice", foreign_keys=[fee_invoice_id])


class ScheduledAction(TenantOwned, Model):
    """A promise to pay: the collections job does not take `action` for this subscriber
    before `not_before` (a later date for the suspension or the late fee)."""

    __tablename__ = "scheduled_action"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(sa.String(12))
    not_before: Mapped[dt.date] = mapped_column(sa.Date)
    reason: Mapped[str | None] = mapped_column(sa.String(255))
    created_by: Mapped[str | None] = mapped_column(sa.String(120))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column()

    subscriber = relationship("Subscriber")


class WriteOff(TenantOwned, Model):
    """An archived subscriber's balance moved to bad-debt expense (one per archive)."""

    __tablename__ = "write_off"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "subscriber_id", "archived_on", name="uq_write_off"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"), index=True)
    archived_on: Mapped[dt.date] = mapped_column(sa.Date)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    written_on: Mapped[dt.date] = mapped_column(sa.Date)
    posted_entry_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("journal_entry.id", ondelete="RESTRICT"))

    subscriber = relationship("Subscriber")


class Notice(TenantOwned, Model):
    """Something to tell a subscriber (receipt, failed payment, upcoming suspension); the
    email issue sends them. `key` makes each notice once (e.g. failed_payment:invoice:attempt)."""

    __tablename__ = "notice"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "key", name="uq_notice_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(24))
    key: Mapped[str] = mapped_column(sa.String(120))
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="CASCADE"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="SET NULL"))
    payment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("payment.id", ondelete="SET NULL"))
    message: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column()

    subscriber = relationship("Subscriber")


@event.listens_for(Session, "before_flush")
def _track_archived(session: Session, flush_context, instances) -> None:
    """Keep SubscriberCollection.archived_on the day a subscriber's status became "archived"
    (None again when it leaves it), wherever the status is changed: form, API or service.
    The write-off counts its days from there."""
    from headend.subscribers.models import Subscriber

    changed = []
    for obj in list(session.new) + list(session.dirty):
        if isinstance(obj, Subscriber):
            history = sa.inspect(obj).attrs.status.history
            if history.added and (obj.status == "archived") != (
                    bool(history.deleted) and history.deleted[0] == "archived"):
                changed.append(obj)
    for sub in changed:
        archived = archived_on_for(sub)
        row = None
        if sub.id is not None:
            with session.no_autoflush:
                row = session.scalar(sa.select(SubscriberCollection).where(
                    SubscriberCollection.subscriber_id == sub.id))
        if row is None and archived is None:
            continue
        if row is None:
            row = SubscriberCollection(subscriber=sub, tenant_id=sub.tenant_id)
            session.add(row)
        row.archived_on = archived


def archived_on_for(sub) -> dt.date | None:
    """Today for an archived subscriber (the day it is seen archived), else None."""
    return dt.date.today() if sub.status == "archived" else None
