"""Documents pages: Invoice design (with a live PDF preview of unsaved values), an invoice as
PDF, Print batch (a period's invoices merged by a documents job, with progress) and the paper
invoice list. Rules live in headend.documents.services, .batch and .render."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from flask import abort, current_app, flash, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from sqlalchemy import select
from sqlalchemy.orm import undefer

from headend.billing.models import Invoice
from headend.branding.services import COLOR_FIELDS, branding_for, validate_branding
from headend.db import db
from headend.documents import batch as batches
from headend.documents.data import Design
from headend.documents.jobs import enqueue_print_batch
from headend.documents.models import COLUMNS, PrintBatch
from headend.documents.render import RenderFailed, invoice_pdf, preview_pdf
from headend.documents.services import current_design, form_choices, preview_design
from headend.errors import ValidationFailed
from headend.money import format_money
from headend.subscribers.models import Subscriber
from headend.tenancy import permissions as perms
from headend.tenancy.context import acting_as, current_scope
from headend.ui import PermissionsMixin, add_view
from headend.views_base import (
    NO_TENANT,
    acting,
    commit_service,
    flash_errors,
    pdf_response,
    row_or_404,
)

CATEGORY = "Documents"
COLUMN_LABELS = {"quantity": "Quantity", "unit_price": "Unit price", "period": "Period",
                 "tax": "Tax"}
PAPER_PAGE = 100


def can_write() -> bool:
    return current_app.appbuilder.sm.has_access("can_write", perms.DOCUMENTS)



# --- Documents > Invoice design ----------------------------------------------------------------

def design_values(source) -> dict:
    """The designer's fields from a form (or query string) as the services take them."""
    return {
        "form_plugin_id": source.get("form_plugin_id", ""),
        "header_text": source.get("header_text", ""),
        "footer_text": source.get("footer_text", ""),
        "marketing_message": source.get("marketing_message", ""),
        "remittance_stub": source.get("remittance_stub") in ("y", "on", "1", "true"),
        "show_usage": source.get("show_usage") in ("y", "on", "1", "true"),
        "columns": [c for c in source.getlist("columns") if c],
    }


def color_values(source) -> dict:
    return {name: source.get(name, "").strip() for name in COLOR_FIELDS if name in source}


def saved_values() -> dict:
    row = current_design(db.session)
    brand = branding_for(db.session, current_scope().tenant_id)
    return {"form_plugin_id": row.form_plugin_id, "header_text": row.header_text or "",
            "footer_text": row.footer_text or "",
            "marketing_message": row.marketing_message or "",
            "remittance_stub": row.remittance_stub, "show_usage": row.show_usage,
            "columns": list(row.columns or ()), "primary_color": brand.primary_color,
            "accent_color": brand.accent_color}


def save_design_and_colors(session, tenant_id: int, design: dict, colors: dict):
    """One transaction: the design and the two brand colours the designer shows."""
    from headend.branding.services import save_branding
    from headend.documents.services import save_design

    errors = validate_branding(colors)
    try:
        row = save_design(session, tenant_id, **design)
    except ValidationFailed as exc:
        exc.errors.update(errors)
        raise
    if errors:
        raise ValidationFailed(errors)
    if colors:
        save_branding(session, **colors)
    return row


class InvoiceDesignView(PermissionsMixin, BaseView):
    """How the tenant's invoices look: form, texts, stub, columns, usage, colours; the preview
    draws the unsaved values on the latest invoice (or a sample one)."""

    route_base = "/documents/design"
    class_permission_name = perms.DOCUMENTS
    default_view = "index"
    method_permission_name = {"index": perms.READ, "save": perms.WRITE, "preview": perms.READ}

    @expose("/")
    @has_access
    def index(self):
        if not acting():
            flash(NO_TENANT, "warning")
            return self._page({}, {})
        return self._page(saved_values(), {})

    @expose("/", methods=["POST"])
    @has_access
    def save(self):
        values = design_values(request.form) | color_values(request.form)
        if not acting():
            flash(NO_TENANT, "danger")
            return self._page(values, {})
        design = {k: v for k, v in values.items() if k not in COLOR_FIELDS}
        colors = {k: v for k, v in values.items() if k in COLOR_FIELDS}
        _, errors = commit_service(save_design_and_colors, current_scope().tenant_id, design,
                                   colors, subject="design")
        if errors:
            return self._page(values, errors)
        flash("Invoice design saved", "success")
        return redirect(url_for("InvoiceDesignView.index"))

    @expose("/preview.pdf")
    @has_access
    def preview(self):
        """The PDF the unsaved values (the query string) would make; nothing is written."""
        if not acting():
            abort(404)
        values = design_values(request.args)
        colors = color_values(request.args)
        errors = validate_branding(colors)
        try:
            design: Design = preview_design(db.session, current_scope().tenant_id, values)
            if errors:
                raise ValidationFailed(errors)
            content = preview_pdf(db.session, design, values["form_plugin_id"], colors)
        except ValidationFailed as exc:
            return jsonify(message=exc.errors), 422
        except RenderFailed as exc:
            return jsonify(message={"form_plugin_id": [str(exc)]}), 422
        finally:
            db.session.rollback()
        return pdf_response(content, "preview.pdf")

    def _page(self, values, errors):
        forms = form_choices(current_scope().tenant_id) if acting() else []
        return self.render_template(
            "documents/design.html", values=values, errors=errors, acting=acting(),
            forms=forms, columns=COLUMNS, column_labels=COLUMN_LABELS, can_write=can_write())


# --- an invoice as PDF -------------------------------------------------------------------------

class InvoicePdfView(PermissionsMixin, BaseView):
    """One invoice as PDF, drawn with the tenant's design (the invoice page's PDF button)."""

    route_base = "/documents/invoice"
    class_permission_name = perms.DOCUMENTS
    pk_model = Invoice
    method_permission_name = {"pdf": perms.READ}

    @expose("/<int:pk>.pdf")
    @has_access
    def pdf(self, pk):
        invoice = row_or_404(Invoice, pk)
        try:
            # an operator acting for every tenant draws it as the invoice's tenant
            with acting_as(invoice.tenant_id, actor_name=current_scope().actor_name):
                content = invoice_pdf(db.session, invoice.id)
        except RenderFailed as exc:
            db.session.rollback()
            flash(str(exc), "danger")
            return redirect(url_for("InvoiceView.detail", pk=invoice.id))
        filename = f"{invoice.number or f'draft-{invoice.id}'}.pdf"
        return pdf_response(content, filename, download=request.args.get("download") == "1")


# --- Documents > Print batch -------------------------------------------------------------------

def month_bounds(today: dt.date) -> tuple[dt.date, dt.date]:
    first = today.replace(day=1)
    return first, (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)


class PrintBatchView(PermissionsMixin, BaseView):
    """Pick a period and filters; a documents job renders and merges the invoices while the page
    shows its progress, then the merged PDF downloads."""

    route_base = "/documents/print"
    class_permission_name = perms.DOCUMENTS
    pk_model = PrintBatch
    default_view = "index"
    method_permission_name = {"index": perms.READ, "create": perms.WRITE, "show": perms.READ,
                              "progress": perms.READ, "download": perms.READ,
                              "again": perms.WRITE}

    @expose("/")
    @has_access
    def index(self):
        first, last = month_bounds(dt.date.today())
        values = {"date_from": first.isoformat(), "date_to": last.isoformat(),
                  "status": "all", "paper_only": False}
        return self._page(values, {})

    @expose("/", methods=["POST"])
    @has_access
    def create(self):
        values = {"date_from": request.form.get("date_from", ""),
                  "date_to": request.form.get("date_to", ""),
                  "status": request.form.get("status", "all"),
                  "paper_only": request.form.get("paper_only") in ("y", "on", "1")}
        if not acting():
            flash(NO_TENANT, "danger")
            return self._page(values, {})
        made, errors = commit_service(batches.create_batch, **values,
                                      created_by=current_scope().actor_name, subject="batch")
        if errors:
            return self._page(values, errors)
        enqueue_print_batch(current_scope().tenant_id, made.id)
        return redirect(url_for("PrintBatchView.show", pk=made.id))

    def _page(self, values, errors):
        recent = db.session.scalars(select(PrintBatch).order_by(PrintBatch.id.desc())
                                    .limit(20)).all() if acting() else []
        return self.render_template(
            "documents/print.html", values=values, errors=errors, acting=acting(),
            recent=recent, statuses=batches.STATUS_FILTERS, can_write=can_write(),
            stalled=batches.stalled)

    @expose("/<int:pk>")
    @has_access
    def show(self, pk):
        batch = row_or_404(PrintBatch, pk)
        return self.render_template("documents/batch.html", batch=batch,
                                    progress=batches.progress(batch), can_write=can_write())

    @expose("/<int:pk>/again", methods=["POST"])
    @has_access
    def again(self, pk):
        """A failed batch, or one whose job was lost, queued and run again."""
        batch = row_or_404(PrintBatch, pk)
        _, errors = commit_service(batches.run_again, batch.id, subject="batch")
        if errors:
            flash_errors(errors)
        else:
            enqueue_print_batch(batch.tenant_id, batch.id)
        return redirect(url_for("PrintBatchView.show", pk=batch.id))

    @expose("/<int:pk>/progress")
    @has_access
    def progress(self, pk):
        batch = row_or_404(PrintBatch, pk)
        body = batches.progress(batch)
        if batch.status == "done" and batch.total:
            body["download"] = url_for("PrintBatchView.download", pk=batch.id)
        response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        return response

    @expose("/<int:pk>/download")
    @has_access
    def download(self, pk):
        batch = db.session.scalar(select(PrintBatch).where(PrintBatch.id == pk)
                                  .options(undefer(PrintBatch.pdf)))
        if batch is None:
            abort(404)
        if not batch.pdf:
            flash("This batch has no PDF (yet): see its status", "warning")
            return redirect(url_for("PrintBatchView.show", pk=batch.id))
        return pdf_response(batch.pdf, f"print-batch-{batch.id}.pdf", download=True)


# --- Documents > Paper invoices ------------------------------------------------------------------

def paper_rows(page: int) -> tuple[list[tuple[Subscriber, Invoice | None]], int]:
    """Subscribers who get paper invoices with their latest posted invoice, by account."""
    total = db.session.scalar(select(sa.func.count(Subscriber.id))
                              .where(Subscriber.paper_invoice.is_(True)))
    subs = db.session.scalars(
        select(Subscriber).where(Subscriber.paper_invoice.is_(True))
        .order_by(Subscriber.account_number).offset(page * PAPER_PAGE).limit(PAPER_PAGE)).all()
    ranked = (select(Invoice.id, sa.func.row_number().over(
        partition_by=Invoice.subscriber_id,
        order_by=(Invoice.invoice_date.desc(), Invoice.id.desc())).label("n"))
        .where(Invoice.subscriber_id.in_([s.id for s in subs]), Invoice.status != "draft")
        .subquery())
    latest = {i.subscriber_id: i for i in db.session.scalars(
        select(Invoice).join(ranked, ranked.c.id == Invoice.id).where(ranked.c.n == 1))}
    return [(s, latest.get(s.id)) for s in subs], total or 0


class PaperInvoiceView(PermissionsMixin, BaseView):
    """Subscribers with paper invoices and their latest invoice (print it from here)."""

    route_base = "/documents/paper"
    class_permission_name = perms.DOCUMENTS
    default_view = "index"
    method_permission_name = {"index": perms.READ}

    @expose("/")
    @has_access
    def index(self):
        page = max(request.args.get("page", 0, type=int), 0)
        rows, total = paper_rows(page) if acting() else ([], 0)
        if not acting():
            flash(NO_TENANT, "warning")
        return self.render_template("documents/paper.html", rows=rows, total=total, page=page,
                                    per_page=PAPER_PAGE, acting=acting(), money=format_money)


def register(appbuilder):
    add_view(appbuilder, InvoiceDesignView, "Invoice design", category=CATEGORY,
             icon="fa-file-text-o")
    add_view(appbuilder, PrintBatchView, "Print batch", category=CATEGORY, icon="fa-print")
    add_view(appbuilder, PaperInvoiceView, "Paper invoices", category=CATEGORY,
             icon="fa-envelope-o")
    appbuilder.add_view_no_menu(InvoicePdfView)
