"""REST APIs: memos (read; POST issues a credit or debit memo through billing.memos, amounts in
integer minor units) and recurring lines (CRUD through the recurring-line validator)."""

from __future__ import annotations

import datetime as dt

from flask import request
from marshmallow import Schema, fields

from headend.billing import memos, recurring
from headend.billing.models import Memo, RecurringLine
from headend.errors import ValidationFailed
from headend.tenancy import permissions as perms
from headend.views_base import HeadendInterface, HeadendModelRestApi, commit_service

_MEMO = ["id", "number", "kind", "subscriber.id", "invoice.id", "memo_date", "description",
         "amount", "tax_total", "unapplied", "voided_at", "created_at"]
# Tax given back per rate / jurisdiction (credits of billed service); amount = net + tax_total.
_MEMO_SHOW = [*_MEMO, "taxes.jurisdiction", "taxes.rate", "taxes.amount"]
_POST_FIELDS = {"kind", "subscriber", "amount", "description", "memo_date", "invoice",
                "income_account"}


def _memo_date(value) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValidationFailed({"memo_date": "use YYYY-MM-DD"}) from None


class MemoApi(HeadendModelRestApi):
    """POST {"kind": "credit"|"debit", "subscriber": id, "amount": minor units (int),
    "description", "memo_date": "YYYY-MM-DD", "invoice": id (credit: settles it),
    "income_account": id}. Memos are never edited: void one and issue another."""

    resource_name = "memo"
    datamodel = HeadendInterface(Memo)
    class_permission_name = perms.BILLING
    include_route_methods = {"get", "get_list", "info", "post"}
    list_columns, show_columns = _MEMO, _MEMO_SHOW
    add_columns = ["kind", "subscriber", "amount", "description", "memo_date", "invoice",
                   "income_account"]  # describe the POST body in the OpenAPI spec
    search_columns = ["number", "kind", "subscriber", "memo_date", "invoice"]
    order_columns = ["number", "memo_date", "amount", "created_at"]
    base_order = ("created_at", "desc")

    def post_headless(self):
        return self._guarded(self._issue)

    def _issue(self):
        if not request.is_json or not isinstance(request.json, dict):
            return self.response_400(message="Request is not JSON")
        data = request.json
        unknown = set(data) - _POST_FIELDS
        if unknown:
            raise ValidationFailed({k: "is not accepted here" for k in sorted(unknown)})
        kind = data.get("kind")
        if kind not in memos.PREFIXES:
            raise ValidationFailed({"kind": "must be credit or debit"})
        issue = memos.credit_memo if kind == "credit" else memos.debit_memo
        memo, errors = commit_service(
            issue, data.get("subscriber"), data.get("amount"), data.get("description"),
            _memo_date(data.get("memo_date")), invoice_id=data.get("invoice"),
            income_account_id=data.get("income_account"), subject="memo")
        if errors:
            return self.response_422(message=errors)
        return self.response(201, id=memo.id, result={
            "number": memo.number, "kind": memo.kind, "amount": memo.amount,
            "tax_total": memo.tax_total, "unapplied": memo.unapplied, "invoice_id": memo.invoice_id,
            "posted_entry_id": memo.posted_entry_id})


_LINE = ["subscriber", "bill_to_subscriber", "item", "description", "kind", "quantity",
         "unit_price", "start_date", "end_date"]


class RecurringLineSchema(Schema):
    """A line as read back: flat ids, the unit price and quantity as exact decimal strings."""

    id = fields.Integer()
    subscriber_id = fields.Integer()
    bill_to_subscriber_id = fields.Integer(allow_none=True)
    item_id = fields.Integer(allow_none=True)
    description = fields.String()
    kind = fields.String()
    quantity = fields.Decimal(as_string=True)
    unit_price = fields.Decimal(as_string=True)
    start_date = fields.Date()
    end_date = fields.Date(allow_none=True)
    created_at = fields.DateTime()


class RecurringLineListSchema(RecurringLineSchema):
    """The same fields, registered once more under the list's name in the OpenAPI spec."""


class RecurringLineApi(HeadendModelRestApi):
    resource_name = "recurring_line"
    datamodel = HeadendInterface(RecurringLine)
    class_permission_name = perms.BILLING
    validator = staticmethod(recurring.validate_recurring_line)
    list_columns = show_columns = list(RecurringLineSchema._declared_fields)
    list_model_schema = RecurringLineListSchema()
    show_model_schema = RecurringLineSchema()
    add_columns = edit_columns = _LINE
    search_columns = ["subscriber", "kind", "start_date", "end_date"]
    order_columns = ["start_date", "end_date", "created_at"]

    def _init_model_schemas(self):
        super()._init_model_schemas()
        for name in ("quantity", "kind"):  # NOT NULL, with defaults (1, "charge")
            self.add_model_schema.fields[name].required = False


def register(appbuilder):
    appbuilder.add_api(MemoApi)
    appbuilder.add_api(RecurringLineApi)
