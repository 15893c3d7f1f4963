"""Collections pages: the Collections settings form, the overdue-accounts page with the AR
aging chart, and on the subscriber profile a Collections box (autopay and overrides, promises
to pay, the Logs section). Rules live in headend.dunning.services; these parse forms."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import partial

from flask import flash, redirect, render_template, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from markupsafe import Markup
from sqlalchemy import select

from headend.billing import drafting
from headend.db import db
from headend.dunning import reports, services
from headend.dunning.collect import overdue_subscribers
from headend.dunning.models import ACTIONS, LATE_FEE_KINDS, ScheduledAction
from headend.money import format_money, parse_decimal
from headend.payments.models import SavedPaymentMethod
from headend.subscribers.models import Subscriber
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.ui import PermissionsMixin, add_view
from headend.views_base import commit_service, flash_errors, row_or_404

CATEGORY = "Billing"
NO_TENANT = "Choose a tenant to act for (Platform > Act for tenant) first."
INT_FIELDS = ("retry_count", "retry_interval_days", "late_fee_days", "rebill_fee_days",
              "grace_days", "suspension_notice_days", "writeoff_days")
OPTIONAL_INTS = ("late_fee_days", "rebill_fee_days")
MONEY_FIELDS = ("late_fee_amount", "late_fee_max", "rebill_fee_amount", "grace_amount",
                "writeoff_threshold")
FLAGS = ("auto_suspend", "auto_restore", "writeoff_enabled")


def can(permission: str) -> bool:
    from flask import current_app

    return current_app.appbuilder.sm.has_access(permission, perms.COLLECTIONS)


def _money(minor) -> str:
    return format_money(minor or 0, drafting.currency(db.session))


def parse_int(raw, field: str, errors: dict, *, optional: bool = False) -> int | None:
    text = "" if raw is None else str(raw).strip()
    if not text and optional:
        return None
    try:
        return int(text)
    except ValueError:
        errors[field] = ["must be a whole number"]
        return None


def parse_money(raw, field: str, errors: dict) -> Decimal | None:
    text = "" if raw is None else str(raw).strip()
    if not text:
        return None
    try:
        return parse_decimal(text)
    except ValueError as exc:
        errors[field] = [str(exc)]
        return None


_commit = partial(commit_service, subject="collections")


class CollectionSettingsView(PermissionsMixin, BaseView):
    route_base = "/collections/settings"
    class_permission_name = perms.COLLECTIONS
    method_permission_name = {"settings": perms.READ, "save": perms.WRITE}
    default_view = "settings"

    def _page(self, values, errors=None):
        return self.render_template("dunning/settings.html", values=values, errors=errors or {},
                                    can_write=can("can_write"),
                                    choices={"late_fee_kind": LATE_FEE_KINDS})

    @expose("/")
    @has_access
    def settings(self):
        if current_scope().all_tenants:
            flash(NO_TENANT, "warning")
            return self._page({})
        row = services.collection_settings(db.session)
        values = {f: getattr(row, f) for f in services.SETTINGS_FIELDS}
        db.session.commit()  # the row created on first use
        return self._page(values)

    @expose("/", methods=["POST"])
    @has_access
    def save(self):
        form = request.form
        errors: dict = {}
        values = {name: parse_int(form.get(name), name, errors, optional=name in OPTIONAL_INTS)
                  for name in INT_FIELDS}
        values.update({name: parse_money(form.get(name), name, errors)
                       for name in MONEY_FIELDS})
        if values["grace_amount"] is None and "grace_amount" not in errors:
            values["grace_amount"] = Decimal(0)
        values.update({name: bool(form.get(name)) for name in FLAGS})
        values["late_fee_kind"] = (form.get("late_fee_kind") or "").strip()
        if current_scope().all_tenants:
            flash(NO_TENANT, "danger")
            return self._page(form, errors)
        if not errors:
            _, errors = _commit(services.update_collection_settings, **values)
        if errors:
            return self._page({**form, **{f: values[f] for f in FLAGS}}, errors)
        flash("Collection settings saved", "success")
        return redirect(url_for("CollectionSettingsView.settings"))


class CollectionsView(PermissionsMixin, BaseView):
    """Overdue accounts (most overdue first) with the next step the job takes, and the AR
    aging chart."""

    route_base = "/collections"
    class_permission_name = perms.COLLECTIONS
    method_permission_name = {"overdue": perms.READ}
    default_view = "overdue"
    LIMIT = 500

    @expose("/")
    @has_access
    def overdue(self):
        if current_scope().all_tenants:
            flash(NO_TENANT, "warning")
            return self.render_template("dunning/overdue.html", rows=[], names={}, aging=[],
                                        money=_money, today=dt.date.today(), limit=self.LIMIT)
        today = dt.date.today()
        settings = services.collection_settings(db.session)
        rows = overdue_subscribers(db.session, settings, today, limit=self.LIMIT)
        names = {s.id: s for s in db.session.scalars(select(Subscriber).where(
            Subscriber.id.in_([r.subscriber_id for r in rows])))} if rows else {}
        aging = reports.ar_aging(db.session, today)
        db.session.commit()
        return self.render_template("dunning/overdue.html", rows=rows, names=names,
                                    aging=aging, money=_money, today=today, limit=self.LIMIT)


class SubscriberCollectionsView(PermissionsMixin, BaseView):
    """The profile's Collections box posts here: autopay and overrides, promises to pay."""

    route_base = "/collections/subscriber"
    class_permission_name = perms.COLLECTIONS
    method_permission_name = {"overrides": perms.WRITE, "promise": perms.WRITE,
                              "suspend_now": perms.WRITE, "restore_now": perms.WRITE}
    pk_model = Subscriber

    def _subscriber(self, pk) -> Subscriber:
        return row_or_404(Subscriber, pk)

    def _back(self, pk):
        return redirect(url_for("SubscriberView.profile", pk=pk) + "#collections")

    @expose("/<int:pk>/overrides", methods=["POST"])
    @has_access
    def overrides(self, pk):
        sub = self._subscriber(pk)
        form, errors = request.form, {}
        values = {
            "autopay": bool(form.get("autopay")),
            "autopay_method_id": parse_int(form.get("autopay_method_id"), "autopay_method_id",
                                           errors, optional=True),
            "grace_days": parse_int(form.get("grace_days"), "grace_days", errors,
                                    optional=True),
            "grace_amount": parse_money(form.get("grace_amount"), "grace_amount", errors),
            "never_suspend": bool(form.get("never_suspend")),
            "no_late_fees": bool(form.get("no_late_fees")),
        }
        if not errors:
            _, errors = _commit(services.update_subscriber_collection, sub.id, **values)
        if errors:
            flash_errors(errors)
        else:
            flash("Collections settings saved", "success")
        return self._back(sub.id)

    @expose("/<int:pk>/promise", methods=["POST"])
    @has_access
    def promise(self, pk):
        sub = self._subscriber(pk)
        form, errors = request.form, {}
        raw = (form.get("not_before") or "").strip()
        try:
            not_before = dt.date.fromisoformat(raw)
        except ValueError:
            not_before = None
            errors["not_before"] = ["must be a date (YYYY-MM-DD)"]
        if not errors:
            _, errors = _commit(services.schedule_action, sub.id, form.get("action"),
                                not_before, dt.date.today(), reason=form.get("reason"),
                                created_by=current_scope().actor_name)
        if errors:
            flash_errors(errors)
        else:
            flash("Promise to pay recorded", "success")
        return self._back(sub.id)


    def _staff_action(self, pk, action, done: str):
        sub = self._subscriber(pk)
        ids, errors = _commit(action, sub.id, dt.date.today(),
                              actor=current_scope().actor_name)
        if errors:
            flash_errors(errors)
        else:
            flash(done.format(n=len(ids)), "success")
        return self._back(sub.id)

    @expose("/<int:pk>/suspend", methods=["POST"])
    @has_access
    def suspend_now(self, pk):
        return self._staff_action(pk, services.suspend_now,
                                  "Service suspended ({n} subscriptions)")

    @expose("/<int:pk>/restore", methods=["POST"])
    @has_access
    def restore_now(self, pk):
        return self._staff_action(pk, services.restore_now,
                                  "Service restored ({n} subscriptions)")


class PromiseView(PermissionsMixin, BaseView):
    route_base = "/collections/promise"
    class_permission_name = perms.COLLECTIONS
    method_permission_name = {"cancel": perms.WRITE}
    pk_model = ScheduledAction

    @expose("/<int:pk>/cancel", methods=["POST"])
    @has_access
    def cancel(self, pk):
        row = row_or_404(ScheduledAction, pk)
        subscriber_id = row.subscriber_id
        _, errors = _commit(services.cancel_action, row.id)
        if errors:
            flash_errors(errors)
        else:
            flash("Promise to pay cancelled", "success")
        return redirect(url_for("SubscriberView.profile", pk=subscriber_id) + "#collections")


def collections_box(sub: Subscriber) -> Markup:
    """The profile's Collections box: autopay and overrides, overdue now, promises to pay and
    the Logs section (what collections did, when)."""
    if not can("can_read"):
        return Markup("")
    session = db.session
    today = dt.date.today()
    row = services.subscriber_collection(session, sub.id, create=False)
    methods = list(session.scalars(select(SavedPaymentMethod).where(
        SavedPaymentMethod.subscriber_id == sub.id, SavedPaymentMethod.removed_at.is_(None))))
    promises = list(session.scalars(select(ScheduledAction).where(
        ScheduledAction.subscriber_id == sub.id, ScheduledAction.cancelled_at.is_(None),
        ScheduledAction.not_before > today).order_by(ScheduledAction.not_before)))
    return Markup(render_template(
        "dunning/_profile_box.html", sub=sub, row=row, methods=methods, promises=promises,
        actions=ACTIONS, can_write=can("can_write"), today=today,
        overdue=services.overdue_amount(session, sub.id, today),
        log=reports.subscriber_log(session, sub.id), money=_money))


def register(appbuilder):
    add_view(appbuilder, CollectionsView, "Collections", category=CATEGORY, icon="fa-gavel")
    add_view(appbuilder, CollectionSettingsView, "Collection settings", category=CATEGORY,
             icon="fa-sliders")
    appbuilder.add_view_no_menu(SubscriberCollectionsView)
    appbuilder.add_view_no_menu(PromiseView)
    from flask import current_app

    current_app.jinja_env.globals["collections_box"] = collections_box
