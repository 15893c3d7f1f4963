"""Read-only REST API of journal entries: the ledger is written only by posting services."""

from __future__ import annotations

from marshmallow import Schema, fields

from headend.ledger.models import JournalEntry
from headend.tenancy import permissions as perms
from headend.views_base import HeadendInterface, HeadendModelRestApi

_ENTRY = ["id", "entry_date", "posted_at", "source_type", "source_id", "description", "key",
          "closed_books_override"]


class LegSchema(Schema):
    id = fields.Integer()
    account_id = fields.Integer()
    account_code = fields.Function(lambda leg: leg.account.code)
    subscriber_id = fields.Integer(allow_none=True)
    debit = fields.Integer()
    credit = fields.Integer()
    tax_rate_id = fields.Integer(allow_none=True)
    jurisdiction = fields.String(allow_none=True)
    memo = fields.String(allow_none=True)


class JournalEntrySchema(Schema):
    """An entry with its legs; amounts are integer minor units of the tenant's currency."""

    id = fields.Integer()
    entry_date = fields.Date()
    posted_at = fields.DateTime()
    source_type = fields.String()
    source_id = fields.Integer()
    description = fields.String()
    key = fields.String()
    reverses_id = fields.Integer(allow_none=True)
    closed_books_override = fields.Boolean()
    legs = fields.List(fields.Nested(LegSchema))


class JournalEntryApi(HeadendModelRestApi):
    resource_name = "journal_entry"
    datamodel = HeadendInterface(JournalEntry)
    class_permission_name = perms.LEDGER
    include_route_methods = {"get", "get_list", "info"}
    list_columns = [*_ENTRY, "reverses.id"]
    show_columns = _ENTRY
    show_model_schema = JournalEntrySchema()
    search_columns = ["entry_date", "source_type", "source_id", "key"]
    order_columns = ["entry_date", "posted_at", "source_type", "source_id"]


def register(appbuilder):
    appbuilder.add_api(JournalEntryApi)
