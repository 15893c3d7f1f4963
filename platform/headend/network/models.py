"""Routers and NAS, the tenant's provisioning settings, the record of every change the
reconciler made (or tried) on a target, and usage: daily traffic per service, what was counted
of each accounting session, and usage billed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from headend.db import ExactDecimal, Model, TenantOwned, utcnow

# mikrotik: a RouterOS router Headend writes queues, PPP secrets and address lists to (API).
# radius_nas: a NAS that authenticates against the tenant's FreeRADIUS and takes CoA/Disconnect.
ROUTER_KINDS = ("mikrotik", "radius_nas")
TARGET_STATUSES = ("ok", "unreachable", "error")


class Router(TenantOwned, Model):
    """A router or RADIUS NAS; its API password and RADIUS secret are sealed (headend.secrets)."""

    __tablename__ = "router"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name", name="uq_router_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    kind: Mapped[str] = mapped_column(sa.String(20))
    address: Mapped[str] = mapped_column(sa.String(255))
    api_port: Mapped[int] = mapped_column(default=8728)
    username: Mapped[str | None] = mapped_column(sa.String(64))
    secret_config: Mapped[str | None] = mapped_column(sa.Text)  # {"password", "radius_secret"}
    coa_port: Mapped[int] = mapped_column(default=3799)
    active: Mapped[bool] = mapped_column(default=True)
    # the last reconcile of this target
    status: Mapped[str | None] = mapped_column(sa.String(12))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    reconciled_at: Mapped[dt.datetime | None] = mapped_column()

    def __repr__(self) -> str:
        return self.name


class NetworkSettings(TenantOwned, Model):
    """How credentials are made: the username pattern ({account}, {n}: the service's number
    on the account, {first}, {last}) and the password length."""

    __tablename__ = "network_settings"
    __table_args__ = (sa.UniqueConstraint("tenant_id", name="uq_network_settings"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username_pattern: Mapped[str] = mapped_column(sa.String(60), default="{account}-{n}")
    password_length: Mapped[int] = mapped_column(default=12)
    # the last reconcile of the RADIUS database
    radius_status: Mapped[str | None] = mapped_column(sa.String(12))
    radius_error: Mapped[str | None] = mapped_column(sa.Text)
    radius_reconciled_at: Mapped[dt.datetime | None] = mapped_column()


class NetworkChange(TenantOwned, Model):
    """One change the reconciler applied to a target, or failed to: what an engineer reads to
    know what happened to a subscriber's queue or RADIUS rows, and when."""

    __tablename__ = "network_change"
    __table_args__ = (sa.Index("ix_network_change_key", "tenant_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    target: Mapped[str] = mapped_column(sa.String(90))  # "router Core-1" / "radius"
    router_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("router.id", ondelete="SET NULL"))
    key: Mapped[str] = mapped_column(sa.String(120))  # "queue:alice", "group:bob"
    action: Mapped[str] = mapped_column(sa.String(12))  # add/change/remove/disconnect/rate
    attributes: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)  # secrets left out
    result: Mapped[str] = mapped_column(sa.String(12))  # applied / failed
    error: Mapped[str | None] = mapped_column(sa.Text)


class UsageDaily(TenantOwned, Model):
    """A service's traffic and online time on one day (UTC), summed from RADIUS accounting:
    what the usage chart, data caps and usage-based billing read."""

    __tablename__ = "usage_daily"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "service_id", "day",
                                          name="uq_usage_daily"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(
        sa.ForeignKey("service_instance.id", ondelete="CASCADE"), index=True)
    day: Mapped[dt.date] = mapped_column(sa.Date)
    download_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    upload_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    session_seconds: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class UsageSession(TenantOwned, Model):
    """What has been counted of one accounting session (radacct.acctuniqueid): an interim
    update or a replayed record adds only what goes beyond it, so nothing counts twice."""

    __tablename__ = "usage_session"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "unique_id", name="uq_usage_session"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    unique_id: Mapped[str] = mapped_column(sa.String(64))
    service_id: Mapped[int] = mapped_column(
        sa.ForeignKey("service_instance.id", ondelete="CASCADE"), index=True)
    download_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    upload_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    session_seconds: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[dt.datetime | None] = mapped_column()


class UsageCursor(TenantOwned, Model):
    """Where the tenant's last usage import stopped in the accounting records (their update
    time and id), so the next one reads only what changed since."""

    __tablename__ = "usage_cursor"
    __table_args__ = (sa.UniqueConstraint("tenant_id", name="uq_usage_cursor"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    updated_after: Mapped[dt.datetime | None] = mapped_column()
    imported_at: Mapped[dt.datetime | None] = mapped_column()


class UsageCharge(TenantOwned, Model):
    """Usage billed for one service and usage period (in arrears, on the next invoice): at
    most one per period, so a rerun of the billing run never bills usage twice."""

    __tablename__ = "usage_charge"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "service_id", "period_start",
                                          name="uq_usage_charge"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(
        sa.ForeignKey("service_instance.id", ondelete="RESTRICT"), index=True)
    period_start: Mapped[dt.date] = mapped_column(sa.Date)
    period_end: Mapped[dt.date] = mapped_column(sa.Date)  # inclusive
    used: Mapped[Decimal] = mapped_column(ExactDecimal(4))  # in the basis' units
    included: Mapped[Decimal] = mapped_column(ExactDecimal(4))
    billed_units: Mapped[Decimal] = mapped_column(ExactDecimal(4))
    unit_price: Mapped[Decimal] = mapped_column(ExactDecimal(4))
    amount: Mapped[Decimal] = mapped_column(ExactDecimal(4))  # before tax
    invoice_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="SET NULL"), index=True)
