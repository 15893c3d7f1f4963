"""Per-tenant SMTP settings and the outbox: one row per message, with its delivery record."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from headend.db import Model, TenantOwned, utcnow

SECURITY = ("none", "starttls", "tls")
KINDS = ("invoice", "receipt", "failed_payment", "upcoming_suspension", "portal_invite",
         "password_reset", "signup_welcome", "test")
# "sending": claimed by one delivery (never by two); "failed" with next_attempt_at set is retried
# automatically then, without it it waits for staff ("Retry").
STATUSES = ("queued", "sending", "sent", "failed")


class MailSettings(TenantOwned, Model):
    """The tenant's SMTP server; the password is sealed (headend.secrets), never shown back."""

    __tablename__ = "mail_settings"
    __table_args__ = (sa.UniqueConstraint("tenant_id", name="uq_mail_settings"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=False)
    host: Mapped[str | None] = mapped_column(sa.String(255))
    port: Mapped[int] = mapped_column(default=587)
    security: Mapped[str] = mapped_column(sa.String(10), default="starttls")
    username: Mapped[str | None] = mapped_column(sa.String(254))
    secret_config: Mapped[str | None] = mapped_column(sa.Text)  # {"password"}
    from_address: Mapped[str | None] = mapped_column(sa.String(254))
    from_name: Mapped[str | None] = mapped_column(sa.String(120))
    reply_to: Mapped[str | None] = mapped_column(sa.String(254))
    # what is sent without staff asking
    email_invoices: Mapped[bool] = mapped_column(default=True)  # on posting, PDF attached
    # since when invoices are emailed (mail on, invoices on): what the sweep may catch up on
    invoices_since: Mapped[dt.datetime | None] = mapped_column()
    email_receipts: Mapped[bool] = mapped_column(default=True)
    email_notices: Mapped[bool] = mapped_column(default=True)  # failed payment, suspension


class OutboundEmail(TenantOwned, Model):
    """A message to send; `key` makes each one once (e.g. "invoice:42", "receipt:7")."""

    __tablename__ = "outbound_email"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "key", name="uq_outbound_email_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(24))
    key: Mapped[str] = mapped_column(sa.String(120))
    to_address: Mapped[str] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(255))
    body_text: Mapped[str] = mapped_column(sa.Text)
    body_html: Mapped[str | None] = mapped_column(sa.Text)
    subscriber_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="SET NULL"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(  # attached as PDF when set
        sa.ForeignKey("invoice.id", ondelete="SET NULL"), index=True)
    payment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("payment.id", ondelete="SET NULL"))
    notice_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("notice.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(sa.String(10), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    attempted_at: Mapped[dt.datetime | None] = mapped_column()  # the last attempt's start
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column()  # a failed row's retry
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column()
