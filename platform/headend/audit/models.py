"""The audit log: one row per create, update and delete of a domain row."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from headend.db import Model, utcnow
from headend.tenancy.scoping import TenantScoped


class AuditLog(TenantScoped, Model):
    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_entity", "entity", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # NULL for platform-level rows (tenants, operators); tenant users never see those.
    tenant_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("tenant.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(nullable=True)
    actor_name: Mapped[str] = mapped_column(sa.String(128))
    action: Mapped[str] = mapped_column(sa.String(10))  # create / update / delete
    entity: Mapped[str] = mapped_column(sa.String(64))
    entity_id: Mapped[str] = mapped_column(sa.String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
