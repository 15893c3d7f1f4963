"""The tenant's invoice design and the batch prints it asked for."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from headend.db import Model, TenantOwned, utcnow

# the line-table columns an invoice design may show (description and amount always show)
COLUMNS = ("quantity", "unit_price", "period", "tax")
BATCH_STATUSES = ("queued", "running", "done", "failed")


class InvoiceDesign(TenantOwned, Model):
    """How the tenant's invoices look; the form plugin draws them, branding gives name/logo."""

    __tablename__ = "invoice_design"
    __table_args__ = (sa.UniqueConstraint("tenant_id", name="uq_invoice_design"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    form_plugin_id: Mapped[str] = mapped_column(sa.String(60), default="classic")
    header_text: Mapped[str | None] = mapped_column(sa.Text)
    footer_text: Mapped[str | None] = mapped_column(sa.Text)
    marketing_message: Mapped[str | None] = mapped_column(sa.Text)
    remittance_stub: Mapped[bool] = mapped_column(default=True)
    columns: Mapped[list[Any]] = mapped_column(sa.JSON, default=lambda: list(COLUMNS))
    show_usage: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PrintBatch(TenantOwned, Model):
    """A merged PDF of many invoices, built by a job on the documents queue with progress."""

    __tablename__ = "print_batch"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    created_by: Mapped[str] = mapped_column(sa.String(120), default="system")
    criteria: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)  # period, paper only
    status: Mapped[str] = mapped_column(sa.String(10), default="queued")
    total: Mapped[int] = mapped_column(default=0)
    done: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    pdf: Mapped[bytes | None] = mapped_column(sa.LargeBinary, deferred=True)
    # When its job last showed life (claimed it, committed progress): a batch queued or running
    # without progress for long lost its worker (`batch.stalled`).
    progress_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
