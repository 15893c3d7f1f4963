"""Routers and NAS, the tenant's provisioning settings, the record of every change the
reconciler made (or tried) on a target, and usage: daily traffic per service, what was counted
of each accounting session, and usage billed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

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
    what the usage chart, data caps and usage-based billing read. Keyed by what it is, with no
    surrogate id, separate index or foreign key (each a cost per row: the usage import upserts
    a hundred thousand at once). Services are cancelled, not deleted; a deleted one's rows stay
    behind unread (usage is only ever read by service)."""

    __tablename__ = "usage_daily"
    # room on each page for the new version of a row: an upsert of today's row is then a HOT
    # update (no index entry written), as is a session's counted row
    __table_args__ = {"postgresql_with": {"fillfactor": 80}}

    tenant_id: Mapped[int] = mapped_column(primary_key=True)  # tenants are never deleted
    service_id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[dt.date] = mapped_column(sa.Date, primary_key=True)
    download_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    upload_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    session_seconds: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class UsageSession(TenantOwned, Model):
    """What has been counted of one accounting session (radacct.acctuniqueid): an interim
    update or a replayed record adds only what goes beyond it, so nothing counts twice.

    Bookkeeping of the import alone, one row per session, upserted by the hundred thousand:
    keyed by (tenant, session) with no foreign keys (each would be a trigger per row) - a
    deleted service's rows are left to the pruning of sessions not updated for PRUNE_AFTER."""

    __tablename__ = "usage_session"
    __table_args__ = {"postgresql_with": {"fillfactor": 80}}

    tenant_id: Mapped[int] = mapped_column(primary_key=True)
    unique_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    service_id: Mapped[int] = mapped_column()
    download_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    upload_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    session_seconds: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column()


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


@sa.event.listens_for(Session, "before_flush")
def _cancel_services(session: Session, flush_context, instances) -> None:
    """A subscription that becomes cancelled takes its services with it ("cancelled"), however
    it was cancelled - at once, on its date by the daily job, through the API: the network
    record says what the reconciler does (removes it), and the service cannot be re-activated
    by mistake. Its credentials stay for the record."""
    from headend.subscribers.models import ServiceInstance, Subscription

    ended = [sub.id for sub in session.dirty if isinstance(sub, Subscription)
             and sub.status == "cancelled" and sa.inspect(sub).attrs.status.history.deleted]
    if not ended:
        return
    with session.no_autoflush:
        for service in session.scalars(sa.select(ServiceInstance).where(
                ServiceInstance.subscription_id.in_(ended),
                ServiceInstance.status != "cancelled")):
            service.status = "cancelled"
