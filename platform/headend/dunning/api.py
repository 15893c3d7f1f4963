"""REST API of collections: the tenant's settings, a subscriber's autopay and overrides and
promises to pay, overdue accounts and AR aging (`headend.dunning.services` decides).

JWT or API key only (no browser cookie); the Collections resource: read for GETs, write for the
rest. Amounts read back are exact decimal strings (settings) or integer minor units (overdue,
aging); dates "YYYY-MM-DD". Refused input answers 422 naming the fields, nothing written;
another tenant's subscriber or promise is a 404.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask import request
from flask_appbuilder.api import BaseApi, expose, protect, safe
from sqlalchemy import select

from headend.db import db
from headend.dunning import reports, services
from headend.dunning.collect import overdue_subscribers
from headend.dunning.models import ScheduledAction
from headend.money import parse_decimal
from headend.subscribers.models import Subscriber
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.ui import PermissionsMixin
from headend.views_base import commit_service

_MONEY = {"late_fee_amount", "late_fee_max", "rebill_fee_amount", "grace_amount",
          "writeoff_threshold"}


def _json(value):
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _settings_json(row) -> dict:
    return {name: _json(getattr(row, name)) for name in services.SETTINGS_FIELDS}


def _overrides_json(sub: Subscriber, row) -> dict:
    fields = {name: _json(getattr(row, name)) if row is not None else None
              for name in services.OVERRIDE_FIELDS}
    fields["autopay"] = bool(fields["autopay"])
    fields["never_suspend"] = bool(fields["never_suspend"])
    fields["no_late_fees"] = bool(fields["no_late_fees"])
    return {"subscriber_id": sub.id, **fields,
            "suspended_on": _json(row.suspended_on) if row is not None else None,
            "archived_on": _json(row.archived_on) if row is not None else None}


def _promise_json(row: ScheduledAction) -> dict:
    return {"id": row.id, "subscriber_id": row.subscriber_id, "action": row.action,
            "not_before": row.not_before.isoformat(), "reason": row.reason,
            "created_by": row.created_by, "cancelled": row.cancelled_at is not None}


def _parse_money(body: dict, errors: dict) -> dict:
    values = {}
    for name in _MONEY & set(body):
        value = body[name]
        if value is None:
            values[name] = None
            continue
        try:
            values[name] = parse_decimal(value)
        except ValueError as exc:
            errors[name] = [str(exc)]
    return values


def _body() -> dict:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


class CollectionsApi(PermissionsMixin, BaseApi):
    resource_name = "collections"
    class_permission_name = perms.COLLECTIONS
    method_permission_name = {"get_settings": perms.READ, "put_settings": perms.WRITE,
                              "overdue": perms.READ, "aging": perms.READ}
    allow_browser_login = False  # writes need a JWT or an API key, never a bare cookie

    def _tenant_or_422(self):
        if current_scope().all_tenants:
            return self.response_422(message={"tenant": ["choose a tenant to act for"]})
        return None

    @expose("/settings", methods=["GET"])
    @protect()
    @safe
    def get_settings(self):
        """The tenant's collection settings.
        ---
        get:
          responses:
            200: {description: the settings; amounts as exact decimal strings}
        """
        refused = self._tenant_or_422()
        if refused:
            return refused
        row = services.collection_settings(db.session)
        db.session.commit()
        return self.response(200, result=_settings_json(row))

    @expose("/settings", methods=["PUT"])
    @protect()
    @safe
    def put_settings(self):
        """Change some collection settings; a refused value changes nothing.
        ---
        put:
          requestBody:
            content:
              application/json:
                schema: {type: object}
          responses:
            200: {description: the settings as saved}
            422: {description: refused input, by field}
        """
        refused = self._tenant_or_422()
        if refused:
            return refused
        body = _body()
        errors = {k: ["is not a collection setting"]
                  for k in sorted(set(body) - set(services.SETTINGS_FIELDS))}
        values = {k: v for k, v in body.items() if k in services.SETTINGS_FIELDS}
        values.update(_parse_money(body, errors))
        if errors:
            return self.response_422(message=errors)
        row, errors = commit_service(services.update_collection_settings, **values,
                                     subject="collections")
        if errors:
            return self.response_422(message=errors)
        return self.response(200, result=_settings_json(row))

    @expose("/overdue", methods=["GET"])
    @protect()
    @safe
    def overdue(self):
        """Overdue subscribers, most overdue first, with the next action and its date.
        ---
        get:
          responses:
            200:
              description: "rows: subscriber_id, status, overdue (minor units), days,
                oldest_due, next_action, next_date, deferred_until"
        """
        refused = self._tenant_or_422()
        if refused:
            return refused
        today = dt.date.today()
        rows = overdue_subscribers(db.session, services.collection_settings(db.session), today,
                                   limit=1000)
        db.session.commit()
        return self.response(200, result=[{
            "subscriber_id": r.subscriber_id, "status": r.status, "overdue": r.overdue,
            "days": r.days, "oldest_due": r.oldest_due.isoformat(),
            "next_action": r.next_action, "next_date": _json(r.next_date),
            "deferred_until": _json(r.deferred_until)} for r in rows])

    @expose("/aging", methods=["GET"])
    @protect()
    @safe
    def aging(self):
        """AR aging: the balance due of open invoices by days past due (minor units).
        ---
        get:
          responses:
            200: {description: "buckets current, 1-30, 31-60, 61-90, 90+"}
        """
        return self.response(200, result=[
            {"bucket": b, "amount": a} for b, a in reports.ar_aging(db.session, dt.date.today())])


class SubscriberCollectionApi(PermissionsMixin, BaseApi):
    """A subscriber's autopay, overrides and promises to pay (`<pk>`: the subscriber)."""

    resource_name = "subscriber_collection"
    class_permission_name = perms.COLLECTIONS
    method_permission_name = {"get": perms.READ, "put": perms.WRITE, "promises": perms.READ,
                              "promise": perms.WRITE, "suspend": perms.WRITE,
                              "restore": perms.WRITE}
    allow_browser_login = False
    pk_model = Subscriber

    def _subscriber(self, pk) -> Subscriber | None:
        return db.session.scalar(select(Subscriber).where(Subscriber.id == pk))

    def _answer(self, sub: Subscriber, status: int = 200):
        row = services.subscriber_collection(db.session, sub.id, create=False)
        today = dt.date.today()
        promises = db.session.scalars(select(ScheduledAction).where(
            ScheduledAction.subscriber_id == sub.id).order_by(ScheduledAction.id)).all()
        return self.response(status, result={
            **_overrides_json(sub, row),
            "overdue": services.overdue_amount(db.session, sub.id, today),
            "promises": [_promise_json(p) for p in promises]})

    @expose("/<int:pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk):
        """The subscriber's autopay, overrides, overdue amount and promises to pay.
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the subscriber's collections}
            404: {description: no such subscriber}
        """
        sub = self._subscriber(pk)
        return self.response_404() if sub is None else self._answer(sub)

    @expose("/<int:pk>", methods=["PUT"])
    @protect()
    @safe
    def put(self, pk):
        """Set autopay (with a saved method) and overrides; null: the tenant's value.
        ---
        put:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    autopay: {type: boolean}
                    autopay_method_id: {type: integer, nullable: true}
                    grace_days: {type: integer, nullable: true}
                    grace_amount: {type: string, nullable: true}
                    never_suspend: {type: boolean}
                    no_late_fees: {type: boolean}
          responses:
            200: {description: the subscriber's collections as saved}
            404: {description: no such subscriber}
            422: {description: refused input, by field}
        """
        sub = self._subscriber(pk)
        if sub is None:
            return self.response_404()
        body = _body()
        errors = {k: ["is not a collection override"]
                  for k in sorted(set(body) - set(services.OVERRIDE_FIELDS))}
        values = {k: v for k, v in body.items() if k in services.OVERRIDE_FIELDS}
        if "grace_amount" in body and body["grace_amount"] is not None:
            try:
                values["grace_amount"] = parse_decimal(body["grace_amount"])
            except ValueError as exc:
                errors["grace_amount"] = [str(exc)]
        if errors:
            return self.response_422(message=errors)
        _, errors = commit_service(services.update_subscriber_collection, sub.id, **values,
                                   subject="collections")
        if errors:
            return self.response_422(message=errors)
        return self._answer(sub)

    @expose("/<int:pk>/promise", methods=["GET"])
    @protect()
    @safe
    def promises(self, pk):
        """The subscriber's promises to pay, cancelled ones too.
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the promises, oldest first}
            404: {description: no such subscriber}
        """
        sub = self._subscriber(pk)
        if sub is None:
            return self.response_404()
        return self.response(200, result=[_promise_json(p) for p in db.session.scalars(
            select(ScheduledAction).where(ScheduledAction.subscriber_id == sub.id)
            .order_by(ScheduledAction.id))])

    @expose("/<int:pk>/promise", methods=["POST"])
    @protect()
    @safe
    def promise(self, pk):
        """A promise to pay: no suspension (or late fee) before `not_before`.
        ---
        post:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    action: {type: string, enum: [suspend, late_fee]}
                    not_before: {type: string, format: date}
                    reason: {type: string}
          responses:
            201: {description: the promise}
            404: {description: no such subscriber}
            422: {description: refused input, by field}
        """
        sub = self._subscriber(pk)
        if sub is None:
            return self.response_404()
        body = _body()
        errors = {k: ["is not accepted here"]
                  for k in sorted(set(body) - {"action", "not_before", "reason"})}
        try:
            not_before = dt.date.fromisoformat(str(body.get("not_before")))
        except ValueError:
            not_before = None
            errors["not_before"] = ["must be a date (YYYY-MM-DD)"]
        if errors:
            return self.response_422(message=errors)
        row, errors = commit_service(services.schedule_action, sub.id, body.get("action"),
                                     not_before, dt.date.today(), reason=body.get("reason"),
                                     created_by=current_scope().actor_name, subject="promise")
        if errors:
            return self.response_422(message=errors)
        return self.response(201, result=_promise_json(row))


    def _staff_action(self, subscriber_id, action):
        sub = self._subscriber(subscriber_id)
        if sub is None:
            return self.response_404()
        ids, errors = commit_service(action, sub.id, dt.date.today(),
                                     actor=current_scope().actor_name, subject="subscriber")
        if errors:
            return self.response_422(message=errors)
        return self.response(200, result={"subscriber_id": sub.id, "status": sub.status,
                                          "subscription_ids": ids})

    # Not named <pk>: POST-only actions, which the isolation walker cannot read back with a
    # GET (tests/test_dunning_web.py checks their 404 for another tenant).
    @expose("/<int:subscriber_id>/suspend", methods=["POST"])
    @protect()
    @safe
    def suspend(self, subscriber_id):
        """Suspend an active subscriber now (staff): its active subscriptions too. No payment
        lifts it; only restore does.
        ---
        post:
          parameters:
          - {in: path, name: subscriber_id, required: true, schema: {type: integer}}
          responses:
            200: {description: "status, and subscription_ids: the subscriptions suspended"}
            404: {description: no such subscriber}
            422: {description: the subscriber is not active}
        """
        return self._staff_action(subscriber_id, services.suspend_now)

    @expose("/<int:subscriber_id>/restore", methods=["POST"])
    @protect()
    @safe
    def restore(self, subscriber_id):
        """Restore a suspended subscriber now (staff), whatever is owed: the subscriptions the
        collections job suspended, or every suspended one after a staff suspension.
        ---
        post:
          parameters:
          - {in: path, name: subscriber_id, required: true, schema: {type: integer}}
          responses:
            200: {description: "status, and subscription_ids: the subscriptions restored"}
            404: {description: no such subscriber}
            422: {description: the subscriber is not suspended}
        """
        return self._staff_action(subscriber_id, services.restore_now)


class PromiseApi(PermissionsMixin, BaseApi):
    """A promise to pay (`<pk>`): read it, or cancel it with DELETE."""

    resource_name = "promise_to_pay"
    class_permission_name = perms.COLLECTIONS
    method_permission_name = {"get": perms.READ, "cancel": perms.WRITE}
    allow_browser_login = False
    pk_model = ScheduledAction

    def _row(self, pk):
        return db.session.scalar(select(ScheduledAction).where(ScheduledAction.id == pk))

    @expose("/<int:pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk):
        """One promise to pay.
        ---
        get:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the promise}
            404: {description: no such promise}
        """
        row = self._row(pk)
        return self.response_404() if row is None else self.response(
            200, result=_promise_json(row))

    @expose("/<int:pk>", methods=["DELETE"])
    @protect()
    @safe
    def cancel(self, pk):
        """Cancel a promise to pay (kept, marked cancelled).
        ---
        delete:
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: the promise, cancelled}
            404: {description: no such promise}
            422: {description: already cancelled}
        """
        row = self._row(pk)
        if row is None:
            return self.response_404()
        _, errors = commit_service(services.cancel_action, row.id, subject="promise")
        if errors:
            return self.response_422(message=errors)
        return self.response(200, result=_promise_json(row))


def register(appbuilder):
    appbuilder.add_api(CollectionsApi)
    appbuilder.add_api(SubscriberCollectionApi)
    appbuilder.add_api(PromiseApi)
