"""Money received: payments, how they settle invoices, refunds, saved payment methods, which
gateway takes which billing method, and the gateway notifications already handled.

Amounts are BIGINT minor units in the tenant's currency. Every payment and refund carries our
own transaction id (unique per tenant), which the gateway passes to its provider as the
idempotency key: retrying a call, or two workers making it at once, can never charge twice.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from headend.db import Model, TenantOwned, utcnow
from headend.plugins.interfaces import BILLING_METHODS

PAYMENT_METHODS = BILLING_METHODS  # card, echeck, cash, check, bank_transfer, other
# pending: the provider will tell (webhook / reconcile); undefined: outcome unknown (timeout),
# reconciled through get_payment_info, never retried blind; failed: declined or refused.
PAYMENT_STATUSES = ("pending", "processed", "failed", "undefined", "voided")
PAYMENT_SOURCES = ("manual", "autopay", "portal", "signup")
REFUND_STATUSES = ("pending", "processed", "failed", "undefined")


class GatewayRoute(TenantOwned, Model):
    """Which installed gateway plugin takes a billing method for this tenant (card -> stripe,
    cash/check -> manual). Set on the Plugins page."""

    __tablename__ = "gateway_route"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "method", name="uq_gateway_route"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    method: Mapped[str] = mapped_column(sa.String(20))
    plugin_id: Mapped[str] = mapped_column(sa.String(60))


class SavedPaymentMethod(TenantOwned, Model):
    """A card or bank account kept by the provider for a subscriber; we keep its description
    and the provider's references only, never the number."""

    __tablename__ = "saved_payment_method"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "plugin_id", "provider_ref", name="uq_saved_method"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"), index=True)
    plugin_id: Mapped[str] = mapped_column(sa.String(60))
    customer_ref: Mapped[str | None] = mapped_column(sa.String(120))
    provider_ref: Mapped[str] = mapped_column(sa.String(120))
    method: Mapped[str] = mapped_column(sa.String(20))  # card / echeck
    brand: Mapped[str] = mapped_column(sa.String(30), default="")
    last4: Mapped[str] = mapped_column(sa.String(4), default="")
    exp_month: Mapped[int | None] = mapped_column()
    exp_year: Mapped[int | None] = mapped_column()
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[dt.datetime | None] = mapped_column()

    subscriber = relationship("Subscriber")

    def __str__(self) -> str:
        label = f"{self.brand or self.method} ending {self.last4}" if self.last4 else self.method
        return f"{label} (exp {self.exp_month:02d}/{self.exp_year})" if self.exp_year else label


class Payment(TenantOwned, Model):
    """Money received from (or charged to) a subscriber. Once processed it posts one balanced
    entry (cash or undeposited funds against AR) and settles invoices through its allocations;
    what no invoice took stays `unapplied` as account credit."""

    __tablename__ = "payment"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "transaction_id", name="uq_payment_transaction"),
        sa.Index("ix_payment_subscriber_date", "tenant_id", "subscriber_id", "received_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(sa.String(40))  # receipt number
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"), index=True)
    method: Mapped[str] = mapped_column(sa.String(20))
    amount: Mapped[int] = mapped_column(sa.BigInteger)  # minor units, positive
    currency: Mapped[str] = mapped_column(sa.String(3))
    received_on: Mapped[dt.date] = mapped_column(sa.Date)
    reference: Mapped[str | None] = mapped_column(sa.String(120))  # check number, bank ref
    memo: Mapped[str | None] = mapped_column(sa.String(255))
    source: Mapped[str] = mapped_column(sa.String(12), default="manual")
    plugin_id: Mapped[str] = mapped_column(sa.String(60))  # the gateway that took it
    transaction_id: Mapped[str] = mapped_column(sa.String(64))  # ours: the idempotency key
    provider_ref: Mapped[str | None] = mapped_column(sa.String(120))
    saved_method_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("saved_payment_method.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(sa.String(12), default="pending", index=True)
    decline_code: Mapped[str | None] = mapped_column(sa.String(60))
    message: Mapped[str | None] = mapped_column(sa.String(255))
    unapplied: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # left as account credit
    refunded: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # given back so far
    posted_entry_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("journal_entry.id", ondelete="RESTRICT"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    subscriber = relationship("Subscriber")
    saved_method = relationship("SavedPaymentMethod")
    allocations: Mapped[list[PaymentAllocation]] = relationship(
        back_populates="payment", cascade="all, delete-orphan", order_by="PaymentAllocation.id")
    refunds: Mapped[list[Refund]] = relationship(
        back_populates="payment", order_by="Refund.id")


class PaymentAllocation(TenantOwned, Model):
    """How much of a payment settled which invoice (what a refund or void gives back)."""

    __tablename__ = "payment_allocation"
    __table_args__ = (
        sa.UniqueConstraint("payment_id", "invoice_id", name="uq_payment_allocation"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("payment.id", ondelete="CASCADE"), index=True)
    invoice_id: Mapped[int] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="RESTRICT"), index=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger)

    payment: Mapped[Payment] = relationship(back_populates="allocations")
    invoice = relationship("Invoice")


class Refund(TenantOwned, Model):
    """Money given back on a payment, in full or in part (a void when the provider released
    an unsettled charge). Posts the reversing entry and reopens invoices as needed."""

    __tablename__ = "refund"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "transaction_id", name="uq_refund_transaction"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("payment.id", ondelete="RESTRICT"), index=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    refunded_on: Mapped[dt.date] = mapped_column(sa.Date)
    reason: Mapped[str | None] = mapped_column(sa.String(255))
    transaction_id: Mapped[str] = mapped_column(sa.String(64))
    provider_ref: Mapped[str | None] = mapped_column(sa.String(120))
    reversal: Mapped[str | None] = mapped_column(sa.String(8))  # "void" or "refund"
    status: Mapped[str] = mapped_column(sa.String(12), default="pending")
    message: Mapped[str | None] = mapped_column(sa.String(255))
    posted_entry_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("journal_entry.id", ondelete="RESTRICT"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    payment: Mapped[Payment] = relationship(back_populates="refunds")


class GatewayEvent(TenantOwned, Model):
    """A provider notification already handled: the webhook's work and this row commit
    together, so a redelivered event is recognised and changes nothing."""

    __tablename__ = "gateway_event"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "plugin_id", "event_id", name="uq_gateway_event"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plugin_id: Mapped[str] = mapped_column(sa.String(60))
    event_id: Mapped[str] = mapped_column(sa.String(120))
    transaction_id: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str | None] = mapped_column(sa.String(12))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
