"""The "Recurring lines" box of the subscriber profile: the subscriber's recurring charges and
discounts, a small add form and delete buttons. Rules live in billing.recurring."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from markupsafe import Markup
from sqlalchemy import select

from headend.billing import recurring
from headend.billing.models import RecurringLine
from headend.billing.views import _date, _items, can_write
from headend.db import db
from headend.subscribers.models import Subscriber
from headend.tenancy import permissions as perms
from headend.ui import PermissionsMixin
from headend.views_base import commit_service, flash_errors, row_or_404


def _optional_id(raw, field: str, errors: dict) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        errors[field] = ["must be a number from the list"]
        return None
    return int(raw)


class SubscriberRecurringView(PermissionsMixin, BaseView):
    """Add (for a subscriber) and delete (one line) from the profile; both go back to it."""

    route_base = "/billing/recurring"
    class_permission_name = perms.BILLING
    method_permission_name = {"add": perms.WRITE, "delete": perms.WRITE}
    pk_model = RecurringLine

    @expose("/add/<int:subscriber_pk>", methods=["POST"])
    @has_access
    def add(self, subscriber_pk):
        sub = row_or_404(Subscriber, subscriber_pk)
        form, errors = request.form, {}
        fields = {
            "subscriber_id": sub.id,
            "bill_to_subscriber_id": _optional_id(form.get("bill_to_subscriber_id"),
                                                  "bill_to_subscriber", errors),
            "item_id": _optional_id(form.get("item_id"), "item", errors),
            "description": form.get("description", ""),
            "kind": form.get("kind") or "charge",
            "quantity": form.get("quantity") or "1",
            "unit_price": form.get("unit_price", ""),
            "start_date": _date(form.get("start_date"), "start_date", errors),
            "end_date": _date(form.get("end_date"), "end_date", errors),
        }
        if not errors:
            _, errors = commit_service(recurring.create_recurring_line, subject="recurring_line",
                                       **fields)
        if errors:
            flash_errors(errors)
        else:
            flash("Recurring line added", "success")
        return redirect(url_for("SubscriberView.profile", pk=sub.id) + "#recurring-lines")

    @expose("/delete/<int:pk>", methods=["POST"])
    @has_access
    def delete(self, pk):
        line = row_or_404(RecurringLine, pk)
        subscriber_id = line.subscriber_id
        _, errors = commit_service(recurring.delete_recurring_line, line.id,
                                   subject="recurring_line")
        if errors:
            flash_errors(errors)
        else:
            flash("Recurring line deleted", "success")
        return redirect(url_for("SubscriberView.profile", pk=subscriber_id) + "#recurring-lines")


def recurring_box(sub: Subscriber) -> Markup:
    """The profile's Recurring lines box (the form and delete buttons for BILLING writers)."""
    lines = list(db.session.scalars(select(RecurringLine).where(
        RecurringLine.subscriber_id == sub.id).order_by(RecurringLine.start_date,
                                                        RecurringLine.id)))
    writer = can_write()
    return Markup(render_template(
        "billing/_recurring_box.html", sub=sub, lines=lines, can_write=writer,
        items=_items() if writer else [], kinds=recurring.RECURRING_KINDS))


def register(appbuilder):
    appbuilder.add_view_no_menu(SubscriberRecurringView)
    current_app.jinja_env.globals["recurring_box"] = recurring_box
