"""Every signup attempt, kept for rate limiting and for staff to see what happened."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from headend.db import Model, TenantOwned, utcnow

STATUSES = ("started", "completed", "refused", "failed")


class SignupAttempt(TenantOwned, Model):
    """A completed signup's row carries its form's one-time id (`form_id`), written in the
    signup's own transaction: the same form sent twice signs up once."""

    __tablename__ = "signup_attempt"
    __table_args__ = (sa.Index("ix_signup_attempt_ip", "tenant_id", "ip", "created_at"),
                      sa.UniqueConstraint("tenant_id", "form_id", name="uq_signup_form"))

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ip: Mapped[str] = mapped_column(sa.String(45))
    package_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("package.id", ondelete="SET NULL"))
    email: Mapped[str | None] = mapped_column(sa.String(254))
    status: Mapped[str] = mapped_column(sa.String(10), default="started")
    form_id: Mapped[str | None] = mapped_column(sa.String(48))
    reason: Mapped[str | None] = mapped_column(sa.Text)  # why refused or failed
    subscriber_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="SET NULL"))
    payment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("payment.id", ondelete="SET NULL"))
