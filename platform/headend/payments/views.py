"""Payment pages: the list and detail, refund and void forms, the printable receipt, "Receive
payment" and "Payment methods" on the subscriber profile, and which gateway takes each billing
method. Rules live in payments.services; these views read forms and render results."""

from __future__ import annotations

import datetime as dt
import uuid

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from markupsafe import Markup
from sqlalchemy import select

from headend.billing.memo_views import amount_to_minor, tenant_currency
from headend.billing.memos import account_credit
from headend.db import db
from headend.errors import NotFound, ValidationFailed
from headend.ledger.models import Leg
from headend.money import format_money
from headend.payments import services
from headend.payments.models import PAYMENT_METHODS, Payment, SavedPaymentMethod
from headend.subscribers.models import Subscriber
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.tenancy.models import Tenant
from headend.ui import (
    LinkedListMixin,
    PermissionsMixin,
    add_view,
    formatters_for,
    labels_for,
    titled,
)
from headend.views_base import (
    HeadendInterface,
    HeadendModelView,
    commit_service,
    flash_errors,
    row_or_404,
)

CATEGORY = "Billing"
NO_TENANT = "Choose a tenant to act for (Platform > Act for tenant) first."


def can(permission: str, resource: str = perms.PAYMENTS) -> bool:
    return current_app.appbuilder.sm.has_access(permission, resource)


def _money(minor) -> str:
    return "—" if minor is None else format_money(minor, tenant_currency())


def _method_text(method) -> str:
    return services.METHOD_LABELS.get(method, method or "—")


def _date(raw, field: str, errors: dict) -> dt.date | None:
    try:
        return dt.date.fromisoformat((raw or "").strip())
    except ValueError:
        errors[field] = ["must be a date (YYYY-MM-DD)"]
        return None


def _amount(raw, errors: dict) -> int | None:
    try:
        return amount_to_minor(raw or "", tenant_currency())
    except ValueError as exc:
        errors["amount"] = [str(exc)]
        return None


def _ids(values: list[str], field: str, errors: dict) -> list[int]:
    if not all(v.strip().isdigit() for v in values):
        errors[field] = ["must be invoice numbers from the list"]
        return []
    return [int(v) for v in values]


@titled("Payments", "payment")
class PaymentView(LinkedListMixin, HeadendModelView):
    """Payments (filters: date, method, status, subscriber no.); the detail page carries the
    allocations, refunds, ledger entry, receipt, and the refund and void forms."""

    route_base = "/payments"
    datamodel = HeadendInterface(Payment)
    class_permission_name = perms.PAYMENTS
    method_permission_name = {**perms.METHOD_PERMISSIONS, "refund": perms.WRITE,
                              "void": perms.WRITE, "receipt": perms.READ}
    include_route_methods = {"list", "show", "refund", "void", "receipt"}
    link_columns = ("number",)
    label_columns = labels_for(Payment, number="Receipt", received_on="Date",
                               subscriber_id="Subscriber no.", reference="Reference / check no.",
                               unapplied="Account credit left")
    formatters_columns = formatters_for(Payment) | {
        "amount": _money, "unapplied": _money, "refunded": _money, "method": _method_text}
    list_columns = ["number", "received_on", "subscriber", "method", "reference", "amount",
                    "status", "unapplied", "refunded", "source"]
    search_columns = ["received_on", "method", "status", "subscriber_id", "number", "reference",
                      "source"]
    order_columns = ["number", "received_on", "amount", "status", "created_at"]
    base_order = ("created_at", "desc")

    def _payment(self, pk) -> Payment:
        return row_or_404(Payment, pk)

    @expose("/show/<pk>")
    @has_access
    def show(self, pk):
        if not str(pk).isdigit():
            abort(404)
        payment = self._payment(int(pk))
        entries = [services.ledger_entry(db.session, payment.posted_entry_id)] + [
            services.ledger_entry(db.session, r.posted_entry_id) for r in payment.refunds]
        legs = {e.id: db.session.scalars(select(Leg).where(Leg.entry_id == e.id)
                                         .order_by(Leg.id)).all() for e in entries if e}
        return self.render_template(
            "payments/show.html", payment=payment, entries=[e for e in entries if e],
            legs=legs, money=_money, method_text=_method_text, can_write=can("can_write"),
            refundable=services.refundable(db.session, payment),
            today=dt.date.today().isoformat())

    @expose("/refund/<int:pk>", methods=["GET", "POST"])
    @has_access
    def refund(self, pk):
        payment = self._payment(pk)
        values = request.form.to_dict() if request.method == "POST" else {
            "refunded_on": dt.date.today().isoformat(),
            "transaction_id": f"refund-{uuid.uuid4().hex}"}
        errors: dict = {}
        if request.method == "POST":
            amount = _amount(values.get("amount"), errors)
            refunded_on = _date(values.get("refunded_on"), "refunded_on", errors)
            if not errors:
                refund, errors = commit_service(
                    services.refund_payment, payment.id, amount, refunded_on,
                    values.get("reason") or None,
                    transaction_id=values.get("transaction_id") or None, subject="refund")
                if not errors:
                    _flash_refund(refund)
                    return redirect(url_for("PaymentView.show", pk=payment.id))
        return self.render_template(
            "payments/refund.html", payment=payment, values=values, errors=errors,
            money=_money, currency=tenant_currency(),
            refundable=services.refundable(db.session, payment))

    @expose("/void/<int:pk>", methods=["POST"])
    @has_access
    def void(self, pk):
        payment = self._payment(pk)
        errors: dict = {}
        voided_on = _date(request.form.get("voided_on") or dt.date.today().isoformat(),
                          "voided_on", errors)
        if not errors:
            refund, errors = commit_service(services.void_payment, payment.id, voided_on,
                                            request.form.get("reason") or None, subject="void")
            if not errors:
                _flash_refund(refund)
        flash_errors(errors)
        return redirect(url_for("PaymentView.show", pk=payment.id))

    @expose("/receipt/<int:pk>")
    @has_access
    def receipt(self, pk):
        payment = self._payment(pk)
        if payment.status not in ("processed", "voided"):
            abort(404)
        tenant = db.session.get(Tenant, payment.tenant_id)
        return render_template("payments/receipt.html", payment=payment, tenant=tenant,
                               money=_money, method_text=_method_text,
                               description=services.describe(payment))


def _flash_refund(refund) -> None:
    what = "Void" if refund.reversal == "void" else "Refund"
    if refund.status == "processed":
        flash(f"{what} of {_money(refund.amount)} done", "success")
    elif refund.status == "failed":
        flash(f"The gateway refused the refund: {refund.message or 'no reason given'}. "
              "Nothing was given back.", "danger")
    else:
        flash(f"The refund is {refund.status}: it is settled when the gateway tells",
              "warning")


class SubscriberPaymentsView(PermissionsMixin, BaseView):
    """A subscriber's "Receive payment" form and adding a card."""

    route_base = "/payments/subscriber"
    class_permission_name = perms.PAYMENTS
    method_permission_name = {"receive": perms.WRITE, "add_card": perms.WRITE}
    pk_model = Subscriber

    def _subscriber(self, pk) -> Subscriber:
        return row_or_404(Subscriber, pk)

    @expose("/<int:pk>/receive", methods=["GET", "POST"])
    @has_access
    def receive(self, pk):
        sub = self._subscriber(pk)
        errors: dict = {}
        if request.method == "GET":
            values = {"received_on": dt.date.today().isoformat(), "method": "cash",
                      "transaction_id": f"pay-{uuid.uuid4().hex}", **request.args.to_dict()}
            chosen = request.args.getlist("invoice_ids")
            return self._page(sub, values, chosen, errors, preview=bool(values.get("amount")))
        values, chosen = request.form.to_dict(), request.form.getlist("invoice_ids")
        if current_scope().all_tenants:
            flash(NO_TENANT, "danger")
            return self._page(sub, values, chosen, errors)
        amount = _amount(values.get("amount"), errors)
        received_on = _date(values.get("received_on"), "received_on", errors)
        invoice_ids = _ids(chosen, "invoice_ids", errors) or None
        saved = (values.get("saved_method_id") or "").strip()
        if saved and not saved.isdigit():
            errors["saved_method"] = ["choose a saved payment method"]
        if errors:
            return self._page(sub, values, chosen, errors)
        payment, errors = commit_service(
            services.receive_payment, sub.id, amount, values.get("method") or "", received_on,
            reference=values.get("reference") or None, invoice_ids=invoice_ids,
            saved_method_id=int(saved) if saved and values.get("method") in (
                "card", "echeck") else None,
            transaction_id=values.get("transaction_id") or None,
            memo=values.get("memo") or None,
            allow_archived=values.get("allow_archived") == "y", subject="payment")
        if errors:
            return self._page(sub, values, chosen, errors)
        _flash_payment(payment)
        return redirect(url_for("PaymentView.show", pk=payment.id))

    def _page(self, sub, values, chosen, errors, preview: bool = False):
        invoices = services.open_invoices(db.session, sub.id)
        forecast = None
        if preview:
            preview_errors: dict = {}
            amount = _amount(values.get("amount"), preview_errors)
            ids = _ids(chosen, "invoice_ids", preview_errors) or None
            if amount is not None and not preview_errors:
                forecast = services.allocation_preview(db.session, sub.id, amount, ids)
            errors = {**preview_errors, **errors}
        try:
            routes = services.routes(db.session)
        except ValidationFailed:
            routes = {}
        return self.render_template(
            "payments/receive.html", sub=sub, values=values, errors=errors,
            chosen={str(c) for c in chosen}, invoices=invoices, forecast=forecast,
            methods=[m for m in PAYMENT_METHODS if routes.get(m)],
            all_methods=PAYMENT_METHODS, method_text=_method_text,
            cards=services.saved_methods(db.session, sub.id), money=_money,
            currency=tenant_currency(), credit=account_credit(db.session, sub.id))

    @expose("/<int:pk>/cards", methods=["POST"])
    @has_access
    def add_card(self, pk):
        sub = self._subscriber(pk)
        try:
            saved, errors = commit_service(
                services.save_card, sub.id, request.form.get("token") or "",
                request.form.get("method") or "card",
                make_default=request.form.get("make_default") == "y", subject="card")
        except services.GatewayDown as exc:
            db.session.rollback()
            flash(str(exc), "danger")
        else:
            if errors:
                flash_errors(errors)
            else:
                flash(f"{saved} saved", "success")
        return redirect(url_for("SubscriberView.profile", pk=sub.id) + "#payment-methods")


def _flash_payment(payment: Payment) -> None:
    if payment.status == "processed":
        credit = f"; {_money(payment.unapplied)} left as account credit" \
            if payment.unapplied else ""
        flash(f"Payment {payment.number} of {_money(payment.amount)} recorded{credit}",
              "success")
    elif payment.status == "failed":
        flash(f"Declined ({payment.decline_code or 'refused'}): {payment.message or ''} "
              "Nothing was posted.", "danger")
    else:
        flash(f"The payment is {payment.status}: it posts when the gateway confirms it",
              "warning")


class SavedMethodView(PermissionsMixin, BaseView):
    """Removing a saved payment method, or making it the subscriber's default."""

    route_base = "/payments/methods"
    class_permission_name = perms.PAYMENTS
    method_permission_name = {"remove": perms.WRITE, "make_default": perms.WRITE}
    pk_model = SavedPaymentMethod

    def _act(self, pk, act, done: str):
        saved = db.session.scalar(select(SavedPaymentMethod).where(
            SavedPaymentMethod.id == pk, SavedPaymentMethod.removed_at.is_(None)))
        if saved is None:
            abort(404)
        subscriber_id = saved.subscriber_id
        try:
            act(db.session, saved.id)
            db.session.commit()
            flash(done, "success")
        except (ValidationFailed, NotFound, services.GatewayDown) as exc:
            db.session.rollback()
            flash(str(exc), "danger")
        return redirect(url_for("SubscriberView.profile", pk=subscriber_id) + "#payment-methods")

    @expose("/<int:pk>/remove", methods=["POST"])
    @has_access
    def remove(self, pk):
        return self._act(pk, services.remove_method, "Payment method removed")

    @expose("/<int:pk>/default", methods=["POST"])
    @has_access
    def make_default(self, pk):
        return self._act(pk, services.set_default, "Default payment method changed")


class GatewayRoutesView(PermissionsMixin, BaseView):
    """Which enabled gateway takes each billing method (next to the Plugins page)."""

    route_base = "/payments/gateways"
    class_permission_name = perms.PLUGINS
    default_view = "index"
    method_permission_name = {"index": perms.READ, "save": perms.WRITE}

    @expose("/")
    @has_access
    def index(self, errors: dict | None = None):
        if current_scope().all_tenants:
            flash(NO_TENANT, "warning")
            return self.render_template("payments/gateways.html", rows=[], errors={},
                                        acting=False, can_write=False)
        current = services.routes(db.session)
        gateways = services.enabled_gateways(db.session)
        rows = [{"method": m, "label": _method_text(m), "current": current[m],
                 "choices": [g for g in gateways if m in g.methods]} for m in PAYMENT_METHODS]
        return self.render_template("payments/gateways.html", rows=rows, errors=errors or {},
                                    acting=True, can_write=can("can_write", perms.PLUGINS))

    @expose("/", methods=["POST"])
    @has_access
    def save(self):
        if current_scope().all_tenants:
            flash(NO_TENANT, "danger")
            return redirect(url_for("GatewayRoutesView.index"))
        errors: dict = {}
        for method in PAYMENT_METHODS:
            if method not in request.form:
                continue
            try:
                with db.session.begin_nested():
                    services.set_route(db.session, method, request.form[method] or None)
            except ValidationFailed as exc:
                errors.update(exc.errors)
        if errors:
            db.session.rollback()
            return self.index(errors)
        db.session.commit()
        flash("Payment gateways saved", "success")
        return redirect(url_for("GatewayRoutesView.index"))


def payments_box(sub: Subscriber) -> Markup:
    """The profile's Payments and Payment methods sections."""
    if not can("can_read"):
        return Markup("")
    recent = list(db.session.scalars(select(Payment).where(
        Payment.subscriber_id == sub.id).order_by(Payment.received_on.desc(),
                                                  Payment.id.desc()).limit(5)))
    publishable_key = None
    try:
        card = services.gateway_for(db.session, "card")
        publishable_key = card.settings.get("publishable_key")
        takes_cards = card.plugin.saves_methods
    except ValidationFailed:
        takes_cards = False
    return Markup(render_template(
        "payments/_profile_box.html", sub=sub, payments=recent,
        cards=services.saved_methods(db.session, sub.id), takes_cards=takes_cards,
        publishable_key=publishable_key, can_write=can("can_write"), money=_money,
        method_text=_method_text, credit=account_credit(db.session, sub.id)))


def register(appbuilder):
    add_view(appbuilder, PaymentView, "Payments", category=CATEGORY, icon="fa-money")
    appbuilder.add_view_no_menu(SubscriberPaymentsView)
    appbuilder.add_view_no_menu(SavedMethodView)
    add_view(appbuilder, GatewayRoutesView, "Payment gateways", category="Settings",
             icon="fa-credit-card")
    current_app.jinja_env.globals["payments_box"] = payments_box

