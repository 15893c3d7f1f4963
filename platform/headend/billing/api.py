"""REST API of invoices: read them (with lines and taxes), create a custom invoice through
`new_invoice`, void one. Amounts are integer minor units; refused input answers 422 naming fields.
"""

from __future__ import annotations

import datetime as dt

from flask import request
from flask_appbuilder.api import expose, protect, safe
from marshmallow import Schema, fields

from headend.billing import invoicing
from headend.billing.models import Invoice
from headend.tenancy import permissions as perms
from headend.views_base import HeadendInterface, HeadendModelRestApi, commit_service

_INVOICE = ["id", "number", "subscriber_id", "invoice_date", "due_date", "status", "source",
            "currency", "subtotal", "tax_total", "total", "amount_paid", "balance_due",
            "tax_status"]


class LineTaxSchema(Schema):
    tax_rate_id = fields.Integer(allow_none=True)
    jurisdiction = fields.String()
    rate = fields.Decimal(as_string=True)
    amount = fields.Integer()


class LineSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    description = fields.String()
    explanation = fields.String(allow_none=True)
    item_id = fields.Integer(allow_none=True)
    subscription_id = fields.Integer(allow_none=True)
    for_subscriber_id = fields.Integer(allow_none=True)
    period_start = fields.Date(allow_none=True)
    period_end = fields.Date(allow_none=True)
    quantity = fields.Decimal(as_string=True)
    unit_price = fields.Decimal(as_string=True)
    amount = fields.Integer()
    tax = fields.Integer()
    taxes = fields.List(fields.Nested(LineTaxSchema))


class InvoiceSchema(Schema):
    id = fields.Integer()
    number = fields.String(allow_none=True)
    subscriber_id = fields.Integer()
    invoice_date = fields.Date()
    due_date = fields.Date()
    status = fields.String()
    source = fields.String()
    currency = fields.String()
    subtotal = fields.Integer()
    tax_total = fields.Integer()
    total = fields.Integer()
    amount_paid = fields.Integer()
    balance_due = fields.Integer()
    tax_status = fields.String()
    memo = fields.String(allow_none=True)
    lines = fields.List(fields.Nested(LineSchema))


def _date(value, errors: dict):
    if value in (None, ""):
        return dt.date.today()
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        errors["invoice_date"] = ["must be a date (YYYY-MM-DD)"]
        return None


class InvoiceApi(HeadendModelRestApi):
    resource_name = "invoice"
    datamodel = HeadendInterface(Invoice)
    class_permission_name = perms.BILLING
    method_permission_name = {**perms.METHOD_PERMISSIONS, "void": perms.WRITE}
    include_route_methods = {"get", "get_list", "info", "post", "void"}
    list_columns = ["id", "number", "subscriber.id", "invoice_date", "due_date", "status",
                    "total", "tax_total", "amount_paid", "currency", "tax_status"]
    show_model_schema = InvoiceSchema()
    add_columns = ["subscriber", "invoice_date", "memo"]  # what `info` describes; lines: post
    search_columns = ["number", "subscriber", "invoice_date", "due_date", "status"]
    order_columns = ["number", "invoice_date", "due_date", "total", "status"]

    def _run(self, call, *args, status=200, **kwargs):
        invoice, errors = commit_service(call, *args, subject="invoice", **kwargs)
        if errors:
            return self.response_422(message=errors)
        return self.response(status, id=invoice.id, result=InvoiceSchema().dump(invoice))

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self):
        """Create and post a custom invoice.
        ---
        post:
          description: >-
            {"subscriber_id", "invoice_date" (YYYY-MM-DD, on or before the bill date),
            "lines": [{"item_id" | "description", "quantity", "unit_price", "kind"}]}
          responses:
            201: {description: the posted invoice}
            422: {description: refused input, by field}
        """
        body = request.get_json(silent=True) or {}
        errors: dict = {}
        invoice_date = _date(body.get("invoice_date"), errors)
        subscriber_id = body.get("subscriber_id")
        if not isinstance(subscriber_id, int) or isinstance(subscriber_id, bool):
            errors["subscriber_id"] = ["must be a subscriber id"]
        lines = body.get("lines")
        if not isinstance(lines, list) or not all(isinstance(x, dict) for x in lines):
            errors["lines"] = ["must be a list of lines"]
        if errors:
            return self.response_422(message=errors)
        return self._run(invoicing.new_invoice, subscriber_id, invoice_date, lines,
                         memo=body.get("memo"), status=201)

    # Not named <pk>: the isolation walker GETs every <pk> route, and voiding is POST only
    # (tests/test_invoicing_web.py checks another tenant's invoice answers 404 here).
    @expose("/<int:invoice_id>/void", methods=["POST"])
    @protect()
    @safe
    def void(self, invoice_id):
        """Void a posted invoice (a reversing entry; the number is kept).
        ---
        post:
          parameters:
          - {in: path, name: invoice_id, schema: {type: integer}}
          responses:
            200: {description: the voided invoice}
            404: {description: no such invoice}
            422: {description: refused, by field}
        """
        invoice = self.datamodel.get(invoice_id, self._base_filters)
        if invoice is None:
            return self.response_404()
        return self._run(invoicing.void_invoice, invoice.id)


def register(appbuilder):
    appbuilder.add_api(InvoiceApi)
