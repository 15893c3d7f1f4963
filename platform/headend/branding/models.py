"""One Branding row per tenant (absent: defaults from headend.branding.services)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from headend.db import Model, TenantOwned, utcnow

LOGO_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif")
LOGO_MAX_BYTES = 512 * 1024


class Branding(TenantOwned, Model):
    __tablename__ = "branding"
    __table_args__ = (sa.UniqueConstraint("tenant_id", name="uq_branding"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    display_name: Mapped[str | None] = mapped_column(sa.String(120))  # None: the tenant's name
    logo: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    logo_media_type: Mapped[str | None] = mapped_column(sa.String(20))
    primary_color: Mapped[str] = mapped_column(sa.String(7), default="#1f4e79")
    accent_color: Mapped[str] = mapped_column(sa.String(7), default="#f0a500")
    # primary information: the company as it appears at the top of every document
    address: Mapped[str | None] = mapped_column(sa.Text)
    phone: Mapped[str | None] = mapped_column(sa.String(40))
    email: Mapped[str | None] = mapped_column(sa.String(254))
    website: Mapped[str | None] = mapped_column(sa.String(255))
    tax_id: Mapped[str | None] = mapped_column(sa.String(60))
    # billing information: where payments and billing questions go (remittance stub)
    billing_name: Mapped[str | None] = mapped_column(sa.String(120))
    billing_address: Mapped[str | None] = mapped_column(sa.Text)
    billing_phone: Mapped[str | None] = mapped_column(sa.String(40))
    billing_email: Mapped[str | None] = mapped_column(sa.String(254))
    # "contact us": what the portal and the signup page show
    contact_phone: Mapped[str | None] = mapped_column(sa.String(40))
    contact_email: Mapped[str | None] = mapped_column(sa.String(254))
    contact_hours: Mapped[str | None] = mapped_column(sa.String(120))
    contact_message: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
