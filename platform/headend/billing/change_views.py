"""The subscription page's change forms: change package (preview, apply), call off a scheduled
downgrade, cancel, hibernate and resume. Rules live in `billing.changes`; these views parse
forms and show results."""

from __future__ import annotations

import datetime as dt

from flask import flash, redirect, render_template, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from markupsafe import Markup
from sqlalchemy import select

from headend.billing import changes, drafting
from headend.billing.views import _date
from headend.catalog.models import Package
from headend.db import db
from headend.errors import ValidationFailed
from headend.money import format_money, to_minor
from headend.subscribers.models import Subscription
from headend.tenancy import permissions as perms
from headend.ui import PermissionsMixin, decimal_text
from headend.views_base import commit_service, flash_errors, row_or_404


def _subscription(pk) -> Subscription:
    return row_or_404(Subscription, pk)


def _int(raw) -> int | None:
    return int(raw) if str(raw or "").isdigit() else None


def _today() -> dt.date:
    return dt.date.today()


def _can_write() -> bool:
    from flask import current_app

    return current_app.appbuilder.sm.has_access("can_write", perms.SUBSCRIPTIONS)


class SubscriptionChangeView(PermissionsMixin, BaseView):
    """Change package / cancel / hibernate / resume one subscription."""

    route_base = "/billing/subscription"
    class_permission_name = perms.SUBSCRIPTIONS
    method_permission_name = {"change": perms.READ, "apply_change": perms.WRITE,
                              "cancel": perms.WRITE, "hibernate": perms.WRITE,
                              "preview_credit": perms.READ,
                              "resume": perms.WRITE, "cancel_scheduled": perms.WRITE}
    pk_model = Subscription

    def _back(self, pk):
        return redirect(url_for("SubscriptionView.configure", pk=pk))

    def _write(self, pk, action, *args, success: str, **kwargs):
        """Run a change and commit; errors are flashed by field, nothing written."""
        _, errors = commit_service(action, pk, *args, subject="subscription", **kwargs)
        if errors:
            flash_errors(errors)
        else:
            flash(success, "success")
        return self._back(pk)

    def _dates(self, *names) -> tuple[list, dict]:
        errors: dict = {}
        values = [_date(request.values.get(name), name, errors, None) for name in names]
        return values, errors

    @expose("/<int:pk>/change")
    @has_access
    def change(self, pk):
        """GET preview: the explained lines of changing to `package_id` on `change_date`."""
        sub = _subscription(pk)
        (day,), errors = self._dates("change_date")
        day = day or _today()
        package_id = _int(request.args.get("package_id"))
        preview = None
        if not errors:
            try:
                preview = changes.preview_change(db.session, sub.id, package_id, day)
            except ValidationFailed as exc:
                errors.update(exc.errors)
        db.session.rollback()  # a preview never writes
        currency = drafting.currency(db.session)
        return self.render_template(
            "billing/subscription_change.html", subscription=sub, preview=preview,
            errors=errors, package_id=package_id, change_date=day, can_write=_can_write(),
            money=decimal_text, net=preview.net(currency) if preview else 0,
            money_minor=lambda minor: format_money(minor, currency))

    @expose("/<int:pk>/credit-preview")
    @has_access
    def preview_credit(self, pk):
        """GET preview: the credit for billed days of cancelling on `cancel_date`, or of
        hibernating from `start` to `until` (`what`), line by line."""
        sub = _subscription(pk)
        what = "Hibernation" if request.args.get("what") == "Hibernation" else "Cancellation"
        names = ("start", "until") if what == "Hibernation" else ("cancel_date",)
        dates, errors = self._dates(*names)
        start, end = dates[0] or _today(), dates[1] if what == "Hibernation" else None
        lines = []
        if not errors:
            try:
                lines = changes.preview_credit(db.session, sub.id, start, end, what)
            except ValidationFailed as exc:
                errors.update(exc.errors)
        db.session.rollback()  # a preview never writes
        currency = drafting.currency(db.session)
        return self.render_template(
            "billing/subscription_credit_preview.html", subscription=sub, what=what,
            lines=lines, errors=errors, start=start, end=end, money=decimal_text,
            credit=format_money(-sum(to_minor(line.amount, currency) for line in lines),
                                currency))

    @expose("/<int:pk>/change", methods=["POST"])
    @has_access
    def apply_change(self, pk):
        _subscription(pk)
        (day,), errors = self._dates("change_date")
        if errors or day is None:
            flash_errors(errors or {"change_date": ["is required"]})
            return self._back(pk)
        return self._write(pk, changes.change_package,
                           _int(request.form.get("package_id")), day,
                           success="Package change applied")

    @expose("/<int:pk>/scheduled-change/cancel", methods=["POST"])
    @has_access
    def cancel_scheduled(self, pk):
        _subscription(pk)
        return self._write(pk, changes.cancel_scheduled_change,
                           success="Scheduled package change called off")

    @expose("/<int:pk>/cancel", methods=["POST"])
    @has_access
    def cancel(self, pk):
        _subscription(pk)
        (day,), errors = self._dates("cancel_date")
        if errors or day is None:
            flash_errors(errors or {"cancel_date": ["is required"]})
            return self._back(pk)
        return self._write(pk, changes.cancel_subscription, day, success="Cancellation saved")

    @expose("/<int:pk>/hibernate", methods=["POST"])
    @has_access
    def hibernate(self, pk):
        _subscription(pk)
        (start, until), errors = self._dates("start", "until")
        if errors or start is None:
            flash_errors(errors or {"start": ["is required"]})
            return self._back(pk)
        return self._write(pk, changes.hibernate, start, until, success="Hibernation saved")

    @expose("/<int:pk>/resume", methods=["POST"])
    @has_access
    def resume(self, pk):
        _subscription(pk)
        (day,), errors = self._dates("on_date")
        if errors:
            flash_errors(errors)
            return self._back(pk)
        return self._write(pk, changes.resume, day or _today(), success="Subscription resumed")


def subscription_changes(subscription: Subscription) -> Markup:
    """The forms shown on the subscription page (writers only see the apply buttons)."""
    packages = db.session.scalars(select(Package).where(Package.id != subscription.package_id)
                                  .order_by(Package.name)).all()
    offered = [p for p in packages if subscription.billing_cycle in p.offered_cycles()]
    return Markup(render_template(
        "billing/_subscription_changes.html", subscription=subscription, packages=offered,
        scheduled=changes.scheduled_package(db.session, subscription),
        can_write=_can_write(), today=_today()))


def register(appbuilder):
    appbuilder.add_view_no_menu(SubscriptionChangeView)
    from flask import current_app

    current_app.jinja_env.globals["subscription_changes"] = subscription_changes
