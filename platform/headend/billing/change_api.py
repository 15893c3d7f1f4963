"""REST API of subscription changes: preview and apply a package change, call off a scheduled
downgrade, cancel, hibernate and resume (`billing.changes` decides everything).

JWT or API key only (no browser cookie); the Subscriptions resource: read to preview, write for
the rest. Dates are "YYYY-MM-DD"; amounts are integer minor units, prices exact decimal strings.
Refused input answers 422 naming the fields; another tenant's subscription is a 404.

The routes take `subscription_id`, not `<pk>`: they are actions on a subscription (POST or a
GET that needs its query), not rows the isolation walker could read back with a bare GET;
tests/test_subscription_changes_api.py checks their 404 for another tenant.
"""

from __future__ import annotations

import datetime as dt

from flask import request
from flask_appbuilder.api import BaseApi, expose, protect, safe
from sqlalchemy import select

from headend.billing import changes, drafting, proration
from headend.billing.models import Invoice, Memo
from headend.db import db
from headend.errors import ValidationFailed
from headend.subscribers.models import Subscription
from headend.tenancy import permissions as perms
from headend.ui import PermissionsMixin, decimal_text
from headend.views_base import commit_service


def _date(body: dict, name: str, errors: dict, *, required: bool = True,
          default: dt.date | None = None) -> dt.date | None:
    value = body.get(name)
    if value in (None, ""):
        if required and default is None:
            errors[name] = ["is required (YYYY-MM-DD)"]
        return default
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        errors[name] = ["must be a date (YYYY-MM-DD)"]
        return None


def _subscription_json(sub: Subscription) -> dict:
    def iso(day):
        return day.isoformat() if day else None

    return {"id": sub.id, "status": sub.status, "package_id": sub.package_id,
            "scheduled_package_id": sub.scheduled_package_id,
            "scheduled_change_on": iso(sub.scheduled_change_on), "cancel_on": iso(sub.cancel_on),
            "hibernate_from": iso(sub.hibernate_from),
            "hibernate_until": iso(sub.hibernate_until)}


def _invoice_json(invoice: Invoice | None) -> dict | None:
    if invoice is None:
        return None
    return {"id": invoice.id, "number": invoice.number, "status": invoice.status,
            "invoice_date": invoice.invoice_date.isoformat(), "subtotal": invoice.subtotal,
            "tax_total": invoice.tax_total, "total": invoice.total}


def _memo_json(memo: Memo | None) -> dict | None:
    if memo is None:
        return None
    return {"id": memo.id, "number": memo.number, "memo_date": memo.memo_date.isoformat(),
            "net": memo.net, "tax_total": memo.tax_total, "amount": memo.amount,
            "unapplied": memo.unapplied}


def _change_json(change: changes.Change, currency: str) -> dict:
    return {
        "kind": change.kind, "old_price": decimal_text(change.old_price),
        "new_price": decimal_text(change.new_price), "explanation": change.explanation,
        "effective_date": change.effective_date.isoformat() if change.effective_date else None,
        "net": change.net(currency),
        "lines": [{"description": line.description, "amount": minor.amount,
                   "exact_amount": decimal_text(line.amount),
                   "period_start": line.period.start.isoformat(),
                   "period_end": line.period.end.isoformat(), "explanation": line.explanation}
                  for line, minor in zip(change.lines, proration.to_minor_lines(
                      change.lines, currency), strict=True)],
    }


class SubscriptionChangeApi(PermissionsMixin, BaseApi):
    resource_name = "subscription_change"
    class_permission_name = perms.SUBSCRIPTIONS
    method_permission_name = {"preview": perms.READ, "change_package": perms.WRITE,
                              "cancel_scheduled": perms.WRITE, "cancel": perms.WRITE,
                              "hibernate": perms.WRITE, "resume": perms.WRITE}
    allow_browser_login = False  # writes need a JWT or an API key, never a bare cookie

    def _body(self) -> dict:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}

    def _run(self, subscription_id: int, allowed: set[str], parse, call, answer):
        """404 for a subscription this tenant cannot see; 422 for unknown fields, bad input or
        a refused change (nothing written); else commit and answer 200 with `answer(result)`."""
        sub = db.session.scalar(select(Subscription).where(Subscription.id == subscription_id))
        if sub is None:
            return self.response_404()
        body = self._body()
        errors: dict = {k: ["is not accepted here"] for k in sorted(set(body) - allowed)}
        args = parse(body, errors)
        if errors:
            return self.response_422(message=errors)
        result, errors = commit_service(call, sub.id, *args, subject="subscription")
        if errors:
            return self.response_422(message=errors)
        return self.response(200, **answer(result, sub))

    @expose("/<int:subscription_id>/package-change", methods=["GET"])
    @protect()
    @safe
    def preview(self, subscription_id):
        """What changing the package would charge or schedule; writes nothing.
        ---
        get:
          parameters:
          - {in: path, name: subscription_id, required: true, schema: {type: integer}}
          - {in: query, name: package_id, required: true, schema: {type: integer}}
          - {in: query, name: change_date, schema: {type: string, format: date}}
          responses:
            200: {description: the change's kind, explained lines and net (minor units)}
            404: {description: no such subscription}
            422: {description: refused input, by field}
        """
        sub = db.session.scalar(select(Subscription).where(Subscription.id == subscription_id))
        if sub is None:
            return self.response_404()
        errors: dict = {}
        day = _date(request.args, "change_date", errors, default=dt.date.today())
        raw = request.args.get("package_id", "")
        if not raw.isdigit():
            errors["package_id"] = ["must be a package id"]
        if errors:
            return self.response_422(message=errors)
        try:
            change = changes.preview_change(db.session, sub.id, int(raw), day)
        except ValidationFailed as exc:
            return self.response_422(message=exc.errors)
        finally:
            db.session.rollback()  # a preview never writes
        return self.response(200, result=_change_json(change, drafting.currency(db.session)))

    @expose("/<int:subscription_id>/package-change", methods=["POST"])
    @protect()
    @safe
    def change_package(self, subscription_id):
        """Change the package: upgrade now (invoice), downgrade now (credit memo with its tax)
        or schedule the downgrade for the period's end, per Invoice Defaults.
        ---
        post:
          parameters:
          - {in: path, name: subscription_id, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    package_id: {type: integer}
                    change_date: {type: string, format: date}
          responses:
            200: {description: what was done, with the invoice or credit memo it posted}
            404: {description: no such subscription}
            422: {description: refused input, by field}
        """
        def parse(body, errors):
            package_id = body.get("package_id")
            if not isinstance(package_id, int) or isinstance(package_id, bool):
                errors["package_id"] = ["must be a package id"]
            return package_id, _date(body, "change_date", errors)

        return self._run(
            subscription_id, {"package_id", "change_date"}, parse, changes.change_package,
            lambda change, sub: {"result": {
                **_change_json(change, drafting.currency(db.session)),
                "subscription": _subscription_json(sub),
                "invoice": _invoice_json(change.invoice), "memo": _memo_json(change.memo)}})

    @expose("/<int:subscription_id>/scheduled-change", methods=["DELETE"])
    @protect()
    @safe
    def cancel_scheduled(self, subscription_id):
        """Call off a scheduled (deferred) downgrade.
        ---
        delete:
          parameters:
          - {in: path, name: subscription_id, required: true, schema: {type: integer}}
          responses:
            200: {description: the subscription, with nothing scheduled}
            404: {description: no such subscription}
            422: {description: nothing is scheduled}
        """
        return self._run(subscription_id, set(), lambda body, errors: (),
                         changes.cancel_scheduled_change,
                         lambda _, sub: {"result": {"subscription": _subscription_json(sub)}})

    @expose("/<int:subscription_id>/cancel", methods=["POST"])
    @protect()
    @safe
    def cancel(self, subscription_id):
        """Cancel on `cancel_date` (a future date is applied on the day by the daily job).
        ---
        post:
          parameters:
          - {in: path, name: subscription_id, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    cancel_date: {type: string, format: date}
          responses:
            200: {description: the subscription and the credit memo of unused days, if any}
            404: {description: no such subscription}
            422: {description: refused input, by field}
        """
        return self._run(
            subscription_id, {"cancel_date"},
            lambda body, errors: (_date(body, "cancel_date", errors),),
            changes.cancel_subscription,
            lambda memo, sub: {"result": {"subscription": _subscription_json(sub),
                                          "memo": _memo_json(memo)}})

    @expose("/<int:subscription_id>/hibernate", methods=["POST"])
    @protect()
    @safe
    def hibernate(self, subscription_id):
        """Hibernate from `start` until `until` (exclusive; leave it out: until resumed).
        ---
        post:
          parameters:
          - {in: path, name: subscription_id, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    start: {type: string, format: date}
                    until: {type: string, format: date}
          responses:
            200: {description: the subscription and the credit memo of billed days, if any}
            404: {description: no such subscription}
            422: {description: refused input, by field}
        """
        return self._run(
            subscription_id, {"start", "until"},
            lambda body, errors: (_date(body, "start", errors),
                                  _date(body, "until", errors, required=False)),
            changes.hibernate,
            lambda memo, sub: {"result": {"subscription": _subscription_json(sub),
                                          "memo": _memo_json(memo)}})

    @expose("/<int:subscription_id>/resume", methods=["POST"])
    @protect()
    @safe
    def resume(self, subscription_id):
        """End the hibernation on `on_date` (default today); credited days from then on are
        charged back by an invoice dated `on_date`.
        ---
        post:
          parameters:
          - {in: path, name: subscription_id, required: true, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    on_date: {type: string, format: date}
          responses:
            200: {description: the subscription and the invoice of charged-back days, if any}
            404: {description: no such subscription}
            422: {description: refused input, by field}
        """
        return self._run(
            subscription_id, {"on_date"},
            lambda body, errors: (_date(body, "on_date", errors, default=dt.date.today()),),
            changes.resume,
            lambda invoice, sub: {"result": {"subscription": _subscription_json(sub),
                                             "invoice": _invoice_json(invoice)}})


def register(appbuilder):
    appbuilder.add_api(SubscriptionChangeApi)
