"""Portal logins of subscribers and the one-time tokens that invite them or reset a password."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from headend.db import Model, TenantOwned, utcnow

TOKEN_PURPOSES = ("invite", "reset")


class PortalAccount(TenantOwned, Model):
    """A subscriber's login; the login name is unique per tenant (usually the email)."""

    __tablename__ = "portal_account"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "login", name="uq_portal_account_login"),
        sa.UniqueConstraint("tenant_id", "subscriber_id", name="uq_portal_account_subscriber"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="CASCADE"))
    login: Mapped[str] = mapped_column(sa.String(254))  # lowercased
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))  # None until invited in
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column()


class PortalToken(TenantOwned, Model):
    """An emailed one-time token; only its SHA-256 is stored."""

    __tablename__ = "portal_token"
    __table_args__ = (sa.UniqueConstraint("token_hash", name="uq_portal_token_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("portal_account.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(sa.String(10))
    token_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    used_at: Mapped[dt.datetime | None] = mapped_column()


class PortalLoginFailure(TenantOwned, Model):
    """A failed portal login, kept for the throttle window: counted in the database so every
    worker process sees the same count, per login name (whether or not an account has it) and
    per client address (one address trying a password on many logins)."""

    __tablename__ = "portal_login_failure"
    __table_args__ = (
        sa.Index("ix_portal_login_failure_login", "tenant_id", "login", "failed_at"),
        sa.Index("ix_portal_login_failure_address", "tenant_id", "address", "failed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(sa.String(254))  # lowercased, as typed
    address: Mapped[str | None] = mapped_column(sa.String(64))  # the client's, behind proxies
    failed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
