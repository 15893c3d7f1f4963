"""Tenants (an ISP or a reseller's brand) and the staff users that belong to them."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from flask_appbuilder.security.sqla.models import User
from sqlalchemy.orm import Mapped, mapped_column, relationship

from headend.db import Model, utcnow


class Tenant(Model):
    __tablename__ = "tenant"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120), unique=True)
    slug: Mapped[str] = mapped_column(sa.String(60), unique=True)
    currency: Mapped[str] = mapped_column(sa.String(3), default="USD")
    timezone: Mapped[str] = mapped_column(sa.String(60), default="UTC")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return self.name


class TenantUser(User):
    """A FAB user extended with the tenant it works for; operators have no tenant."""

    __tablename__ = "ab_user"

    tenant_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("tenant.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    tenant: Mapped[Tenant | None] = relationship(Tenant, foreign_keys=[tenant_id])
