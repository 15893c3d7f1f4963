"""Pages for credit/debit memos (list, show, the two "new" forms, void) and recurring custom
lines. Rules live in billing.memos and billing.recurring; these only read forms and render."""

from __future__ import annotations

import datetime as dt

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import expose, has_access
from flask_appbuilder.fieldwidgets import BS3TextFieldWidget, Select2Widget
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from wtforms import DecimalField, IntegerField, SelectField
from wtforms.validators import InputRequired, Optional

from headend.billing import memos, recurring
from headend.billing.models import Invoice, Memo, RecurringLine
from headend.catalog.models import Account
from headend.db import db
from headend.errors import ValidationFailed
from headend.money import exponent, format_money, parse_decimal, to_minor
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.tenancy.models import Tenant
from headend.ui import (
    LinkedListMixin,
    add_view,
    decimal_text,
    formatters_for,
    labels_for,
    titled,
)
from headend.views_base import HeadendInterface, HeadendModelView

CATEGORY = "Billing"
KIND_TITLES = {"credit": "credit memo", "debit": "debit memo"}


def tenant_currency() -> str:
    tenant = db.session.get(Tenant, current_scope().tenant_id or 0)
    return tenant.currency if tenant else "USD"


def _money(minor) -> str:
    return "—" if minor is None else format_money(minor, tenant_currency())


def _taxes_text(rows) -> str:
    """The tax a memo gives back, per rate (percent taxes only): "State tax 6.25 %: $2.12"."""
    if not rows:
        return "—"
    return "; ".join(f"{row.jurisdiction} {decimal_text(row.rate)} %: {_money(row.amount)}"
                     for row in rows)


def amount_to_minor(raw, currency: str) -> int:
    """A decimal amount typed by a person, in exact minor units (never rounded: more places
    than the currency has is an error)."""
    return to_minor(parse_decimal(raw, places=exponent(currency)), currency)


@titled("Memos", "memo")
class MemoView(LinkedListMixin, HeadendModelView):
    route_base = "/memos"
    datamodel = HeadendInterface(Memo)
    class_permission_name = perms.BILLING
    method_permission_name = {**perms.METHOD_PERMISSIONS, "new": perms.WRITE,
                              "void": perms.WRITE}
    include_route_methods = {"list", "show", "new", "void"}
    show_template = "billing/memo_show.html"
    list_template = "billing/memo_list.html"
    link_columns = ("number",)
    label_columns = labels_for(Memo, memo_date="Date", invoice="Applied to invoice",
                               unapplied="Account credit left", voided_at="Voided",
                               net="Net", tax_total="Tax", amount="Total",
                               taxes="Tax given back")
    formatters_columns = formatters_for(Memo) | {
        "amount": _money, "unapplied": _money, "net": _money, "tax_total": _money,
        "taxes": _taxes_text}
    list_columns = ["number", "kind", "subscriber", "memo_date", "description", "amount",
                    "unapplied", "voided_at"]
    show_columns = ["number", "kind", "subscriber", "memo_date", "description", "net",
                    "tax_total", "amount", "taxes", "invoice", "unapplied", "income_account",
                    "posted_entry_id", "voided_at", "created_at"]
    search_columns = ["number", "kind", "memo_date", "description"]
    order_columns = ["number", "memo_date", "amount", "created_at"]
    base_order = ("created_at", "desc")

    def _form_page(self, kind: str, values: dict, errors: dict):
        subscriber_id = values.get("subscriber_id", "")
        invoices = []
        if str(subscriber_id).isdigit():
            invoices = db.session.scalars(select(Invoice).where(
                Invoice.subscriber_id == int(subscriber_id),
                Invoice.status.in_(memos.OPEN_STATUSES)).order_by(Invoice.invoice_date)).all()
        accounts = db.session.scalars(select(Account).where(
            Account.type == "income", Account.active.is_(True)).order_by(Account.code)).all()
        return self.render_template(
            "billing/memo_form.html", kind=kind, title=f"New {KIND_TITLES[kind]}",
            values=values, errors=errors, invoices=invoices, accounts=accounts,
            currency=tenant_currency(), money=_money,
            default_account=memos.CREDIT_INCOME if kind == "credit" else memos.DEBIT_INCOME)

    @expose("/new/<string:kind>", methods=["GET", "POST"])
    @has_access
    def new(self, kind):
        if kind not in KIND_TITLES:
            abort(404)
        if request.method == "GET":
            values = request.args.to_dict()
            values.setdefault("subscriber_id", values.pop("subscriber", ""))
            values.setdefault("memo_date", dt.date.today().isoformat())
            return self._form_page(kind, values, {})
        values = request.form.to_dict()
        try:
            memo = _issue(kind, values)
            db.session.commit()
        except ValidationFailed as exc:
            db.session.rollback()
            return self._form_page(kind, values, exc.errors)
        except SQLAlchemyError:
            db.session.rollback()
            flash("The database refused the memo; nothing was saved.", "danger")
            return self._form_page(kind, values, {})
        flash(f"{KIND_TITLES[kind].capitalize()} {memo.number} issued", "success")
        return redirect(url_for("MemoView.show", pk=memo.id))

    @expose("/void/<int:pk>", methods=["POST"])
    @has_access
    def void(self, pk):
        if not self._visible(pk):
            abort(404)
        try:
            memo = memos.void_memo(db.session, pk)
            db.session.commit()
            flash(f"Memo {memo.number} voided", "success")
        except ValidationFailed as exc:
            db.session.rollback()
            for field, messages in exc.errors.items():
                flash(f"{field.replace('_', ' ').capitalize()}: {' '.join(messages)}", "danger")
        except SQLAlchemyError:
            db.session.rollback()
            flash("The database refused the void; nothing was changed.", "danger")
        return redirect(url_for("MemoView.show", pk=pk))


def _form_int(values: dict, field: str, errors: dict, *, required: bool) -> int | None:
    raw = (values.get(field) or "").strip()
    if not raw:
        if required:
            errors[field.removesuffix("_id")] = ["is required"]
        return None
    if not raw.isdigit():
        errors[field.removesuffix("_id")] = ["must be a number"]
        return None
    return int(raw)


def _issue(kind: str, values: dict) -> Memo:
    """Read the form into the memo service's arguments; every refusal names its field."""
    errors: dict[str, list[str]] = {}
    subscriber_id = _form_int(values, "subscriber_id", errors, required=True)
    invoice_id = _form_int(values, "invoice_id", errors, required=False)
    account_id = _form_int(values, "income_account_id", errors, required=False)
    amount = memo_date = None
    try:
        amount = amount_to_minor(values.get("amount") or "", tenant_currency())
    except ValueError as exc:
        errors["amount"] = [str(exc)]
    try:
        memo_date = dt.date.fromisoformat((values.get("memo_date") or "").strip())
    except ValueError:
        errors["memo_date"] = ["must be a date (YYYY-MM-DD)"]
    if errors:
        raise ValidationFailed(errors)
    issue = memos.credit_memo if kind == "credit" else memos.debit_memo
    return issue(db.session, subscriber_id, amount, values.get("description") or "", memo_date,
                 invoice_id=invoice_id, income_account_id=account_id)


# --- recurring lines -------------------------------------------------------------------------

# The form asks for subscriber numbers (a select of every subscriber would not scale).
_FORM_NAMES = {"subscriber": "subscriber_id", "bill_to_subscriber": "bill_to_subscriber_id"}


def _validate_form_line(session, line: RecurringLine) -> None:
    try:
        recurring.validate_recurring_line(session, line)
    except ValidationFailed as exc:
        raise ValidationFailed({_FORM_NAMES.get(k, k): v for k, v in exc.errors.items()}) \
            from None


def _decimal_field(label: str, required: bool) -> DecimalField:
    return DecimalField(label, places=None, widget=BS3TextFieldWidget(),
                        validators=[InputRequired() if required else Optional()])


_LINE_FIELDS = {
    "subscriber_id": IntegerField("Subscriber no.", validators=[InputRequired()],
                                  widget=BS3TextFieldWidget()),
    "bill_to_subscriber_id": IntegerField(
        "Bill to subscriber no.", validators=[Optional()], widget=BS3TextFieldWidget(),
        description="Leave empty to bill the subscriber itself"),
    "kind": SelectField("Kind", choices=[(k, k) for k in recurring.RECURRING_KINDS],
                        widget=Select2Widget()),
    "quantity": _decimal_field("Quantity", False),
    "unit_price": _decimal_field("Unit price", True),
}


@titled("Recurring lines", "recurring line")
class RecurringLineView(HeadendModelView):
    route_base = "/recurring-lines"
    datamodel = HeadendInterface(RecurringLine)
    class_permission_name = perms.BILLING
    validator = staticmethod(_validate_form_line)
    label_columns = labels_for(RecurringLine, subscriber_id="Subscriber no.",
                               bill_to_subscriber_id="Bill to subscriber no.",
                               end_date="End date (exclusive)")
    formatters_columns = formatters_for(RecurringLine)
    list_columns = ["subscriber", "description", "kind", "quantity", "unit_price", "start_date",
                    "end_date", "bill_to_subscriber_id"]
    show_columns = ["subscriber", "bill_to_subscriber_id", "item", "description", "kind",
                    "quantity", "unit_price", "start_date", "end_date", "created_at"]
    add_columns = edit_columns = ["subscriber_id", "bill_to_subscriber_id", "item", "description",
                                  "kind", "quantity", "unit_price", "start_date", "end_date"]
    add_form_extra_fields = edit_form_extra_fields = _LINE_FIELDS
    search_columns = ["description", "kind", "start_date", "end_date"]
    order_columns = ["description", "start_date", "end_date"]
    base_order = ("start_date", "desc")


def register(appbuilder):
    add_view(appbuilder, MemoView, "Memos", category=CATEGORY, icon="fa-file-text-o")
    add_view(appbuilder, RecurringLineView, "Recurring lines", category=CATEGORY,
             icon="fa-repeat")
