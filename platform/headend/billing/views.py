"""Billing pages: invoices (list, detail, new, edit, void, delete), Invoice Defaults, and a
subscriber's billing preview, Invoice Now and Update Billing Cycle. Rules live in the services
(billing.invoicing, billing.defaults); these views parse forms and show results."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from functools import partial

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from markupsafe import Markup
from sqlalchemy import select

from headend.billing import defaults as defaults_service
from headend.billing import drafting, invoicing
from headend.billing.models import (
    BILLING_MODES,
    DOWNGRADE_POLICIES,
    PRORATION_BASES,
    TAX_ROUNDINGS,
    Invoice,
)
from headend.catalog.models import CYCLES, Item
from headend.db import db
from headend.errors import ValidationFailed
from headend.ledger.services import subscriber_balance
from headend.money import format_money, parse_decimal
from headend.subscribers.models import Subscriber
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.ui import LinkedListMixin, PermissionsMixin, add_view, labels_for, titled
from headend.views_base import (
    HeadendInterface,
    HeadendModelView,
    commit_service,
    flash_errors,
    row_or_404,
)

CATEGORY = "Billing"
NO_TENANT = "Choose a tenant to act for (Platform > Act for tenant) first."
NEW_LINES = 5  # blank line rows on the new-invoice form


def can_write() -> bool:
    from flask import current_app

    return current_app.appbuilder.sm.has_access("can_write", perms.BILLING)


def _money(minor, currency: str | None = None) -> str:
    return format_money(minor or 0, currency or drafting.currency(db.session))


def _date(raw: str | None, field: str, errors: dict, default: dt.date | None = None):
    raw = (raw or "").strip()
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        errors[field] = ["must be a date (YYYY-MM-DD)"]
        return None


_commit = partial(commit_service, subject="invoice")


def _taxes_by_label(invoice: Invoice) -> list[tuple[str, int]]:
    totals: dict[str, int] = defaultdict(int)
    for line in invoice.lines:
        for tax in line.taxes:
            totals[tax.jurisdiction] += tax.amount
    return sorted(totals.items())


def _groups(invoice: Invoice) -> list[tuple[Subscriber | None, list]]:
    """Lines by the account whose charges they are (bill-to-another shows each account)."""
    groups: dict[int | None, list] = {}
    for line in invoice.lines:
        key = line.for_subscriber_id if line.for_subscriber_id != invoice.subscriber_id \
            else None
        groups.setdefault(key, []).append(line)
    return [(db.session.get(Subscriber, key) if key else None, lines)
            for key, lines in groups.items()]


def _span(line) -> str:
    """A line's period for people: first and last day covered (the stored end is exclusive)."""
    if line.period_start is None:
        return ""
    last = line.period_end - dt.timedelta(days=1)
    return str(last) if last == line.period_start else f"{line.period_start} – {last}"


def _number_text(value):
    return value or "draft"


@titled("Invoices", "invoice")
class InvoiceView(LinkedListMixin, HeadendModelView):
    datamodel = HeadendInterface(Invoice)
    class_permission_name = perms.BILLING
    method_permission_name = {**perms.METHOD_PERMISSIONS, "detail": perms.READ,
                              "new": perms.WRITE, "void": perms.WRITE,
                              "delete_draft": perms.WRITE, "edit_lines": perms.WRITE}
    include_route_methods = {"list", "show", "detail", "new", "void", "delete_draft",
                             "edit_lines"}
    list_columns = ["number", "subscriber", "invoice_date", "due_date", "total", "status",
                    "balance_due"]
    label_columns = labels_for(Invoice, number="Number", invoice_date="Date",
                               due_date="Due", balance_due="Balance due")
    formatters_columns = {"total": _money, "balance_due": _money, "number": _number_text}
    search_columns = ["number", "invoice_date", "due_date", "status"]
    order_columns = ["number", "invoice_date", "due_date", "total", "status"]
    base_order = ("invoice_date", "desc")
    link_columns = ("number",)
    link_endpoint = "InvoiceView.detail"

    def _invoice(self, pk) -> Invoice:
        if not str(pk).isdigit():
            abort(404)
        invoice = db.session.scalar(select(Invoice).where(Invoice.id == int(pk)))
        if invoice is None:
            abort(404)
        return invoice

    @expose("/show/<pk>")
    @has_access
    def show(self, pk):
        return redirect(url_for("InvoiceView.detail", pk=self._invoice(pk).id))

    @expose("/detail/<int:pk>")
    @has_access
    def detail(self, pk):
        invoice = self._invoice(pk)
        return self.render_template(
            "billing/invoice.html", invoice=invoice, groups=_groups(invoice),
            taxes=_taxes_by_label(invoice), can_write=can_write(), span=_span,
            money=lambda minor: _money(minor, invoice.currency))

    @expose("/void/<int:pk>", methods=["POST"])
    @has_access
    def void(self, pk):
        invoice = self._invoice(pk)
        _, errors = _commit(invoicing.void_invoice, invoice.id)
        if errors:
            flash_errors(errors)
        else:
            flash(f"Invoice {invoice.number} voided", "success")
        return redirect(url_for("InvoiceView.detail", pk=pk))

    @expose("/delete_draft/<int:pk>", methods=["POST"])
    @has_access
    def delete_draft(self, pk):
        invoice = self._invoice(pk)
        _, errors = _commit(invoicing.delete_draft, invoice.id)
        if errors:
            flash_errors(errors)
            return redirect(url_for("InvoiceView.detail", pk=pk))
        flash("Draft deleted", "success")
        return redirect(url_for("InvoiceView.list"))

    @expose("/edit_lines/<int:pk>", methods=["GET", "POST"])
    @has_access
    def edit_lines(self, pk):
        invoice = self._invoice(pk)
        errors: dict = {}
        if request.method == "POST":
            lines = [{"id": line.id, "quantity": request.form.get(f"quantity-{line.id}"),
                      "unit_price": request.form.get(f"unit_price-{line.id}")}
                     for line in invoice.lines if not request.form.get(f"remove-{line.id}")]
            lines += _form_lines(1)
            _, errors = _commit(invoicing.edit_invoice, invoice.id, lines)
            if not errors:
                flash(f"Invoice {invoice.number} changed; the difference was posted", "success")
                return redirect(url_for("InvoiceView.detail", pk=pk))
            invoice = self._invoice(pk)
        return self.render_template("billing/invoice_edit.html", invoice=invoice,
                                    errors=errors, items=_items(), kinds=invoicing.CUSTOM_KINDS)

    @expose("/new", methods=["GET", "POST"])
    @has_access
    def new(self):
        errors: dict = {}
        form = request.form if request.method == "POST" else request.args
        account = (form.get("account_number") or "").strip()
        if request.method == "POST":
            if current_scope().all_tenants:
                flash(NO_TENANT, "danger")
            sub = db.session.scalar(select(Subscriber).where(
                Subscriber.account_number == account)) if account else None
            invoice_date = _date(form.get("invoice_date"), "invoice_date", errors,
                                 dt.date.today())
            if sub is None:
                errors["account_number"] = ["no such subscriber"]
            if not errors:
                invoice, errors = _commit(invoicing.new_invoice, sub.id, invoice_date,
                                          _form_lines(NEW_LINES), memo=form.get("memo"))
                if not errors:
                    flash(f"Invoice {invoice.number or ''} created", "success")
                    return redirect(url_for("InvoiceView.detail", pk=invoice.id))
        return self.render_template(
            "billing/invoice_new.html", errors=errors, form=form, account=account,
            items=_items(), kinds=invoicing.CUSTOM_KINDS, rows=range(1, NEW_LINES + 1),
            today=dt.date.today().isoformat())


def _items() -> list[Item]:
    return list(db.session.scalars(select(Item).where(Item.active.is_(True))
                                   .order_by(Item.code).limit(500)))


def _form_lines(count: int) -> list[dict]:
    """The filled rows of the line inputs item-N, description-N, quantity-N, unit_price-N."""
    lines = []
    for n in range(1, count + 1):
        row = {name: (request.form.get(f"new-{name}-{n}") or "").strip()
               for name in ("item_id", "description", "quantity", "unit_price", "kind")}
        if not (row["item_id"] or row["description"]):
            continue
        lines.append({k: v for k, v in row.items() if v})
    return lines


class InvoiceDefaultsView(PermissionsMixin, BaseView):
    route_base = "/billing/defaults"
    class_permission_name = perms.BILLING
    method_permission_name = {"defaults": perms.READ, "save": perms.WRITE}
    default_view = "defaults"
    FIELDS = ("billing_mode", "bill_day", "days_in_advance", "due_days", "proration_basis",
              "prorate_first_period", "downgrade_policy", "credit_unused_on_cancel",
              "tax_rounding", "tax_engine", "number_format", "invoiced_statuses",
              "paper_invoice_fee")

    def _page(self, values, errors=None):
        from headend.plugins.manager import current_manager

        return self.render_template(
            "billing/defaults.html", values=values, errors=errors or {},
            can_write=can_write(), choices={
                "billing_mode": BILLING_MODES, "proration_basis": PRORATION_BASES,
                "downgrade_policy": DOWNGRADE_POLICIES, "tax_rounding": TAX_ROUNDINGS,
                "tax_engine": [p.plugin_id for p in current_manager().of_kind("tax_engine")]})

    @expose("/")
    @has_access
    def defaults(self):
        if current_scope().all_tenants:
            flash(NO_TENANT, "warning")
            return self._page({})
        row = drafting.settings(db.session)
        return self._page({f: getattr(row, f) for f in self.FIELDS})

    @expose("/", methods=["POST"])
    @has_access
    def save(self):
        form = request.form
        values, errors = {}, {}
        for name in ("bill_day", "days_in_advance", "due_days"):
            try:
                values[name] = int(form.get(name, ""))
            except ValueError:
                errors[name] = ["must be a whole number"]
        for name in ("prorate_first_period", "credit_unused_on_cancel"):
            values[name] = bool(form.get(name))
        for name in ("billing_mode", "proration_basis", "downgrade_policy", "tax_rounding",
                     "tax_engine", "number_format", "invoiced_statuses"):
            values[name] = (form.get(name) or "").strip()
        fee = (form.get("paper_invoice_fee") or "").strip()
        try:
            values["paper_invoice_fee"] = parse_decimal(fee) if fee else None
        except ValueError as exc:
            errors["paper_invoice_fee"] = [str(exc)]
        if current_scope().all_tenants:
            flash(NO_TENANT, "danger")
            return self._page(form, errors)
        if not errors:
            _, errors = _commit(defaults_service.update_invoice_defaults, **values)
        if errors:
            return self._page({**form, "prorate_first_period": values["prorate_first_period"],
                               "credit_unused_on_cancel": values["credit_unused_on_cancel"]},
                              errors)
        flash("Invoice defaults saved", "success")
        return redirect(url_for("InvoiceDefaultsView.defaults"))


class SubscriberBillingView(PermissionsMixin, BaseView):
    """A subscriber's billing: preview of the next invoice, Invoice Now, Update Billing Cycle."""

    route_base = "/billing/subscriber"
    class_permission_name = perms.BILLING
    method_permission_name = {"preview": perms.READ, "invoice_now": perms.WRITE,
                              "billing_cycle": perms.WRITE}
    pk_model = Subscriber

    def _subscriber(self, pk) -> Subscriber:
        return row_or_404(Subscriber, pk)

    def _on_date(self, errors) -> dt.date:
        return _date(request.values.get("on"), "on", errors, dt.date.today()) \
            or dt.date.today()

    @expose("/<int:pk>/preview")
    @has_access
    def preview(self, pk):
        sub = self._subscriber(pk)
        errors: dict = {}
        on = self._on_date(errors)
        preview = None
        try:
            preview = invoicing.billing_preview(db.session, sub.id, on)
        except ValidationFailed as exc:
            errors.update(exc.errors)
        db.session.rollback()  # a preview never writes
        cycle = None
        if request.args.get("cycle"):
            cycle = self._cycle_change(sub, errors, apply=False)
            db.session.rollback()
        return self.render_template(
            "billing/preview.html", sub=sub, preview=preview, on=on, errors=errors,
            can_write=can_write(), cycles=CYCLES, cycle=cycle,
            money=lambda minor: _money(minor, preview.currency if preview else None))

    def _cycle_change(self, sub, errors, apply: bool):
        values = request.values
        change_date = _date(values.get("change_date"), "change_date", errors, dt.date.today())
        try:
            bill_day = int(values.get("bill_day", ""))
        except ValueError:
            errors["bill_day"] = ["must be a whole number"]
            return None
        if errors:
            return None
        try:
            return defaults_service.update_billing_cycle(
                db.session, sub.id, values.get("cycle", ""), bill_day, change_date,
                apply=apply)
        except ValidationFailed as exc:
            errors.update(exc.errors)
            return None

    @expose("/<int:pk>/billing-cycle", methods=["POST"])
    @has_access
    def billing_cycle(self, pk):
        sub = self._subscriber(pk)
        errors: dict = {}
        change = self._cycle_change(sub, errors, apply=True)
        if errors or change is None:
            db.session.rollback()
            flash_errors(errors)
        else:
            db.session.commit()
            flash(f"Billing cycle changed to {sub.billing_cycle}, bill day {sub.bill_day}",
                  "success")
        return redirect(url_for("SubscriberView.profile", pk=pk))

    @expose("/<int:pk>/invoice-now", methods=["POST"])
    @has_access
    def invoice_now(self, pk):
        sub = self._subscriber(pk)
        errors: dict = {}
        on = self._on_date(errors)
        invoice, errors = _commit(invoicing.invoice_now, sub.id, on) if not errors \
            else (None, errors)
        if errors:
            flash_errors(errors)
        elif invoice is None:
            flash("Nothing is due: every period up to today is already invoiced", "info")
        else:
            if invoice.tax_status == "waiting":
                flash("The tax engine is unavailable: the invoice waits and posts when it "
                      "answers", "warning")
            else:
                flash(f"Invoice {invoice.number} posted", "success")
            return redirect(url_for("InvoiceView.detail", pk=invoice.id))
        return redirect(url_for("SubscriberView.profile", pk=pk))


def billing_box(sub: Subscriber) -> Markup:
    """The profile's Billing box: balance due, preview link, Invoice Now (for writers)."""
    from flask import render_template

    invoices = list(db.session.scalars(select(Invoice).where(
        Invoice.subscriber_id == sub.id).order_by(Invoice.invoice_date.desc(),
                                                  Invoice.id.desc()).limit(5)))
    return Markup(render_template(
        "billing/_profile_box.html", sub=sub, invoices=invoices,
        can_read=current_app_has("can_read"), can_write=can_write(),
        balance=subscriber_balance(db.session, sub.id),
        money=_money))


def current_app_has(permission: str) -> bool:
    from flask import current_app

    return current_app.appbuilder.sm.has_access(permission, perms.BILLING)


def register(appbuilder):
    add_view(appbuilder, InvoiceView, "Invoices", category=CATEGORY, icon="fa-file-text-o")
    add_view(appbuilder, InvoiceDefaultsView, "Invoice defaults", category=CATEGORY,
             icon="fa-cogs")
    appbuilder.add_view_no_menu(SubscriberBillingView)
    from flask import current_app

    current_app.jinja_env.globals["billing_box"] = billing_box
