"""REST APIs of payments, refunds and saved payment methods. Amounts are integer minor units;
writes go through payments.services (a JWT or an API key, never a bare cookie), refused input
answers 422 naming fields, another tenant's row is a 404.

A declined card is not an error of the request: the payment is recorded with status "failed"
and its decline_code, and answered 201 like any other. The same transaction_id again answers
200 with the payment first recorded under it.
"""

from __future__ import annotations

import datetime as dt

from flask_appbuilder.api import expose, protect, safe
from marshmallow import Schema, fields

from headend.db import db
from headend.errors import NotFound, ValidationFailed, raise_if
from headend.payments import services
from headend.payments.batch import PaymentLine, receive_payments
from headend.payments.models import Payment, Refund, SavedPaymentMethod
from headend.tenancy import permissions as perms
from headend.views_base import (
    HeadendInterface,
    HeadendModelRestApi,
    commit_or_raise,
    json_body,
)


class AllocationSchema(Schema):
    invoice_id = fields.Integer()
    amount = fields.Integer()


class RefundSchema(Schema):
    id = fields.Integer()
    payment_id = fields.Integer()
    amount = fields.Integer()
    refunded_on = fields.Date()
    reason = fields.String(allow_none=True)
    status = fields.String()
    reversal = fields.String(allow_none=True)
    message = fields.String(allow_none=True)
    transaction_id = fields.String()
    provider_ref = fields.String(allow_none=True)
    posted_entry_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()


class PaymentRefundSchema(RefundSchema):
    """A payment's refunds, named apart from RefundApi's own schema in the OpenAPI spec."""


class PaymentSchema(Schema):
    id = fields.Integer()
    number = fields.String(allow_none=True)
    subscriber_id = fields.Integer()
    received_on = fields.Date()
    method = fields.String()
    amount = fields.Integer()
    currency = fields.String()
    status = fields.String()
    decline_code = fields.String(allow_none=True)
    message = fields.String(allow_none=True)
    reference = fields.String(allow_none=True)
    memo = fields.String(allow_none=True)
    source = fields.String()
    plugin_id = fields.String()
    transaction_id = fields.String()
    provider_ref = fields.String(allow_none=True)
    saved_method_id = fields.Integer(allow_none=True)
    unapplied = fields.Integer()
    refunded = fields.Integer()
    posted_entry_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    allocations = fields.List(fields.Nested(AllocationSchema))
    refunds = fields.List(fields.Nested(PaymentRefundSchema))


class SavedMethodSchema(Schema):
    id = fields.Integer()
    subscriber_id = fields.Integer()
    plugin_id = fields.String()
    method = fields.String()
    brand = fields.String()
    last4 = fields.String()
    exp_month = fields.Integer(allow_none=True)
    exp_year = fields.Integer(allow_none=True)
    is_default = fields.Boolean()
    removed_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class PaymentListSchema(PaymentSchema):
    """The same fields, registered once more under the list's name in the OpenAPI spec."""


class RefundListSchema(RefundSchema):
    """The same fields, under the list's name."""


class SavedMethodListSchema(SavedMethodSchema):
    """The same fields, under the list's name."""



def _date(data: dict, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(data.get(field))
    except (TypeError, ValueError):
        raise ValidationFailed({field: "must be a date (YYYY-MM-DD)"}) from None



class _Api(HeadendModelRestApi):
    class_permission_name = perms.PAYMENTS

    def _write(self, call):
        try:
            return self._guarded(call)
        except services.GatewayDown as exc:
            db.session.rollback()
            return self.response(503, message=str(exc))


_PAYMENT_FIELDS = {"subscriber", "amount", "method", "received_on", "reference", "invoices",
                   "saved_method", "transaction_id", "memo", "allow_archived"}


class PaymentApi(_Api):
    """POST {"subscriber": id, "amount": minor units, "method", "received_on": "YYYY-MM-DD",
    "reference" (a check's number), "invoices": [ids] (else oldest first), "saved_method": id
    (card/eCheck), "transaction_id" (your idempotency key), "memo", "allow_archived"}."""

    resource_name = "payment"
    datamodel = HeadendInterface(Payment)
    include_route_methods = {"get", "get_list", "info", "post", "post_batch"}
    method_permission_name = {**perms.METHOD_PERMISSIONS, "post_batch": perms.WRITE}
    list_columns = show_columns = list(PaymentSchema._declared_fields)
    list_model_schema = PaymentListSchema()
    show_model_schema = PaymentSchema()
    add_columns = ["subscriber", "amount", "method", "received_on", "reference", "memo",
                   "transaction_id"]  # described by `info`; invoices / saved_method too
    search_columns = ["number", "subscriber", "received_on", "method", "status", "source",
                      "transaction_id"]
    order_columns = ["number", "received_on", "amount", "status", "created_at"]
    base_order = ("created_at", "desc")

    def post_headless(self):
        return self._write(self._receive)

    def _receive(self):
        data = json_body(_PAYMENT_FIELDS)
        received_on = _date(data, "received_on")
        transaction_id = data.get("transaction_id")
        replay = isinstance(transaction_id, str) and db.session.query(
            Payment.id).filter(Payment.transaction_id == transaction_id).first() is not None
        payment = commit_or_raise(
            services.receive_payment, data.get("subscriber"), data.get("amount"),
            data.get("method"), received_on, reference=data.get("reference"),
            invoice_ids=data.get("invoices"), saved_method_id=data.get("saved_method"),
            source="manual", transaction_id=transaction_id, memo=data.get("memo"),
            allow_archived=data.get("allow_archived") is True, subject="payment")
        return self.response(200 if replay else 201, id=payment.id,
                             result=PaymentSchema().dump(payment))


    @expose("/batch", methods=["POST"])
    @protect()
    @safe
    def post_batch(self):
        """Post many payments at once (a deposit, a lockbox file): all or nothing.
        ---
        post:
          description: >-
            Each line settles its subscriber's open invoices oldest first, in the order
            given. A transaction_id already recorded is skipped and listed in skipped; a bad
            line refuses the whole batch with 422 naming it (lines.3.amount).
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    allow_archived: {type: boolean}
                    payments:
                      type: array
                      items:
                        type: object
                        properties:
                          subscriber: {type: integer}
                          account: {type: string, description: the account number}
                          amount: {type: integer, description: minor units}
                          method: {type: string, enum: [cash, check, bank_transfer, other]}
                          received_on: {type: string, format: date}
                          reference: {type: string}
                          memo: {type: string}
                          transaction_id: {type: string}
          responses:
            201: {description: posted}
            422: {description: refused; nothing written}
        """
        return self._write(self._receive_batch)

    def _receive_batch(self):
        data = json_body({"payments", "allow_archived"})
        rows = data.get("payments")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValidationFailed({"payments": "must be a list of payment objects"})
        lines, errors = [], {}
        for n, row in enumerate(rows):
            unknown = set(row) - _LINE_FIELDS
            errors.update({f"lines.{n}.{k}": "is not accepted here" for k in sorted(unknown)})
            try:
                received_on = dt.date.fromisoformat(row.get("received_on"))
            except (TypeError, ValueError):
                errors[f"lines.{n}.received_on"] = "must be a date (YYYY-MM-DD)"
                continue
            lines.append(PaymentLine(
                amount=row.get("amount"), method=row.get("method"), received_on=received_on,
                subscriber_id=row.get("subscriber"), account=row.get("account"),
                reference=row.get("reference"), memo=row.get("memo"),
                transaction_id=row.get("transaction_id")))
        raise_if(errors)
        result = commit_or_raise(receive_payments, lines, source="import",
                         allow_archived=data.get("allow_archived") is True, subject="payment")
        return self.response(201, result={
            "posted": result.posted, "skipped": result.skipped, "amount": result.amount,
            "receipts": list(result.receipts) if result.receipts else None})


_LINE_FIELDS = {"subscriber", "account", "amount", "method", "received_on", "reference", "memo",
                "transaction_id"}


class RefundApi(_Api):
    """POST {"payment": id, "amount": minor units (at most what is still refundable),
    "refunded_on": "YYYY-MM-DD", "reason", "transaction_id"}; "void": true gives back
    everything and marks the payment voided."""

    resource_name = "refund"
    datamodel = HeadendInterface(Refund)
    include_route_methods = {"get", "get_list", "info", "post"}
    list_columns = show_columns = list(RefundSchema._declared_fields)
    list_model_schema = RefundListSchema()
    show_model_schema = RefundSchema()
    add_columns = ["payment", "amount", "refunded_on", "reason", "transaction_id"]
    search_columns = ["payment", "refunded_on", "status", "transaction_id"]
    order_columns = ["refunded_on", "amount", "created_at"]
    base_order = ("created_at", "desc")

    def post_headless(self):
        return self._write(self._refund)

    def _refund(self):
        data = json_body({"payment", "amount", "refunded_on", "reason", "transaction_id", "void"})
        refunded_on = _date(data, "refunded_on")
        try:
            if data.get("void") is True:
                refund = commit_or_raise(services.void_payment, data.get("payment"), refunded_on,
                                 data.get("reason"), subject="refund")
            else:
                refund = commit_or_raise(services.refund_payment, data.get("payment"),
                                 data.get("amount"), refunded_on, data.get("reason"),
                                 transaction_id=data.get("transaction_id"), subject="refund")
        except NotFound:
            db.session.rollback()
            raise ValidationFailed({"payment": "does not exist"}) from None
        return self.response(201, id=refund.id, result=RefundSchema().dump(refund))


class SavedMethodApi(_Api):
    """POST {"subscriber": id, "token": the provider's token (e.g. Stripe's pm_...), "method":
    "card", "make_default": true}; DELETE removes it at the provider too."""

    resource_name = "saved_payment_method"
    datamodel = HeadendInterface(SavedPaymentMethod)
    include_route_methods = {"get", "get_list", "info", "post", "delete"}
    list_columns = show_columns = list(SavedMethodSchema._declared_fields)
    list_model_schema = SavedMethodListSchema()
    show_model_schema = SavedMethodSchema()
    add_columns = ["subscriber", "method", "is_default"]  # plus "token"
    search_columns = ["subscriber", "method", "is_default"]
    order_columns = ["created_at"]
    base_order = ("created_at", "desc")

    def post_headless(self):
        return self._write(self._save)

    def _save(self):
        data = json_body({"subscriber", "token", "method", "make_default"})
        saved = commit_or_raise(services.save_card, data.get("subscriber"), data.get("token"),
                        data.get("method") or "card",
                        make_default=data.get("make_default", True) is not False,
                        subject="saved_method")
        return self.response(201, id=saved.id, result=SavedMethodSchema().dump(saved))

    @expose("/<int:pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk):
        """Remove a saved payment method (detached at the provider; payments keep it).
        ---
        delete:
          parameters:
          - {in: path, name: pk, schema: {type: integer}}
          responses:
            200: {description: removed}
            404: {description: no such saved method}
            503: {description: the provider could not be reached}
        """
        saved = self.datamodel.get(pk, self._base_filters)
        if saved is None or saved.removed_at is not None:
            return self.response_404()

        def remove():
            commit_or_raise(services.remove_method, saved.id, subject="saved_method")
            return self.response(200, message="removed")

        return self._write(remove)


def register(appbuilder):
    appbuilder.add_api(PaymentApi)
    appbuilder.add_api(RefundApi)
    appbuilder.add_api(SavedMethodApi)
