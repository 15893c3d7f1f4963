"""Which plugins a tenant uses, and their settings (secrets encrypted, see headend.secrets)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from headend.db import Model, TenantOwned, utcnow


class PluginConfiguration(TenantOwned, Model):
    __tablename__ = "plugin_configuration"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "plugin_id", name="uq_plugin_configuration_tenant"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    plugin_id: Mapped[str] = mapped_column(sa.String(100))
    enabled: Mapped[bool] = mapped_column(default=False)
    # Non-secret settings as JSON (decimals as strings).
    config: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    # A Fernet token of the secret settings' JSON; the audit log never records it.
    secret_config: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return self.plugin_id
