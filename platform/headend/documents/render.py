"""Rendering invoices to PDF with the tenant's design, branding and InvoiceForm plugin.

Rendering only reads: it never runs inside a billing transaction (the documents queue, a PDF
request, the email job after the posting commit call it). Many invoices are read in batches
(`render_many`), so a print batch costs a few queries per chunk, not per invoice."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from headend.billing.models import Invoice
from headend.branding.services import branding_for
from headend.documents import data
from headend.documents.services import DEFAULT_FORM, current_design
from headend.plugins.interfaces import InvoiceForm
from headend.tenancy.context import current_scope


class RenderFailed(RuntimeError):
    """The form could not draw the invoice."""


def _tenant_id(session: Session) -> int:
    tenant_id = current_scope().tenant_id
    if not tenant_id:
        raise LookupError("rendering needs a tenant to act for")
    return tenant_id


def form_for(plugin_id: str | None) -> InvoiceForm:
    """The installed form `plugin_id`, or the default form when that one was uninstalled."""
    from headend.plugins.manager import current_manager

    manager = current_manager()
    form = manager.get(plugin_id or DEFAULT_FORM)
    if not isinstance(form, InvoiceForm):
        form = manager.get(DEFAULT_FORM)
    if not isinstance(form, InvoiceForm):
        raise RenderFailed(f"no invoice form is installed (the default is {DEFAULT_FORM!r})")
    return form


def draw(form: InvoiceForm, document: data.InvoiceDocument, branding: dict) -> bytes:
    try:
        return form.render(document, branding)
    except Exception as exc:  # a plugin's failure is the document's failure, named
        raise RenderFailed(f"invoice {document.number}: {form.plugin_id} failed: {exc}") \
            from exc


def render_many(session: Session, invoice_ids: list[int], chunk: int = 50
                ) -> Iterator[tuple[data.InvoiceDocument, bytes]]:
    """(document, PDF) for each of the acting tenant's invoices, in the order given, reading
    `chunk` invoices per query."""
    tenant_id = _tenant_id(session)
    design_row = current_design(session)
    form, design = form_for(design_row.form_plugin_id), data.design_of(design_row)
    branding = data.branding_mapping(branding_for(session, tenant_id))
    for start in range(0, len(invoice_ids), chunk):
        for document in data.documents(session, invoice_ids[start:start + chunk], design):
            yield document, draw(form, document, branding)


def invoice_pdf(session: Session, invoice_id: int) -> bytes:
    """The PDF of one invoice of the acting tenant (LookupError when it is not theirs)."""
    for _, pdf in render_many(session, [invoice_id]):
        return pdf
    raise LookupError(f"invoice {invoice_id} not found")


def preview_pdf(session: Session, design: data.Design, form_plugin_id: str,
                colors: dict[str, str] | None = None, today: dt.date | None = None) -> bytes:
    """The tenant's latest posted invoice (or a sample one) drawn with a design and colours
    that are not saved yet: the designer's live preview."""
    tenant_id = _tenant_id(session)
    branding = data.branding_mapping(branding_for(session, tenant_id)) | (colors or {})
    latest = session.scalar(select(Invoice.id).where(Invoice.status != "draft")
                            .order_by(Invoice.invoice_date.desc(), Invoice.id.desc()).limit(1))
    found = data.documents(session, [latest], design) if latest else []
    document = found[0] if found else data.sample(
        _currency(session, tenant_id), design, today or dt.date.today())
    return draw(form_for(form_plugin_id), document, branding)


def _currency(session: Session, tenant_id: int) -> str:
    from headend.tenancy.models import Tenant

    return session.get(Tenant, tenant_id).currency
