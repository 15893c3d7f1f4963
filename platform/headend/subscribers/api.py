"""REST APIs: subscribers (with free-text search), subscriptions, notes."""

from __future__ import annotations

import datetime as dt

from flask import request

from headend.db import db
from headend.errors import ValidationFailed
from headend.subscribers import services
from headend.subscribers.models import (
    PACKAGE_TAX_FIELDS,
    Subscriber,
    SubscriberNote,
    Subscription,
)
from headend.subscribers.views import SearchTextFilter, note_by_current_user
from headend.tenancy import permissions as perms
from headend.views_base import WRITE_ERRORS, HeadendInterface, HeadendModelRestApi, WriteRefused

_SUBSCRIBER_FIELDS = [
    "account_number", "first_name", "last_name", "company", "customer_type", "email", "phone",
    "mobile", "service_line1", "service_line2", "service_city", "service_region",
    "service_postal_code", "service_country", "latitude", "longitude", "billing_same_as_service",
    "billing_line1", "billing_line2", "billing_city", "billing_region", "billing_postal_code",
    "billing_country", "status", "tax_exempt", "tax_exemption_code", "tax_rates",
    "billing_cycle", "bill_day", "paper_invoice", "parent",
]
_SUBSCRIPTION_FIELDS = ["quantity", "custom_price", "billing_cycle", "bill_day",
                        "bill_start_date", "status"]


class SubscriberApi(HeadendModelRestApi):
    """Search with `q=(filters:!((col:search_text,opr:search,value:'smith 555')))`."""

    resource_name = "subscriber"
    datamodel = HeadendInterface(Subscriber)
    class_permission_name = perms.SUBSCRIBERS
    validator = staticmethod(services.prepare_subscriber)
    delete_guard = staticmethod(services.guard_subscriber_delete)
    list_columns = ["id", "account_number", "first_name", "last_name", "company", "status",
                    "service_city", "email", "phone", "created_at"]
    show_columns = ["id", *_SUBSCRIBER_FIELDS, "created_at"]
    add_columns = edit_columns = _SUBSCRIBER_FIELDS
    search_columns = ["account_number", "last_name", "first_name", "company", "email", "phone",
                      "service_city", "service_postal_code", "status", "search_text"]
    search_filters = {"search_text": [SearchTextFilter]}
    order_columns = ["account_number", "last_name", "company", "status", "created_at"]
    base_order = ("account_number", "asc")

    def _init_model_schemas(self):
        super()._init_model_schemas()
        # NOT NULL in the table, but numbered automatically when left out.
        self.add_model_schema.fields["account_number"].required = False

    def pre_add(self, item):
        super().pre_add(item)
        db.session.add(item)
        db.session.flush()
        services.subscriber_created(db.session, item)


class SubscriptionApi(HeadendModelRestApi):
    """POST puts a package on a subscriber exactly as the profile's "+" does (add_package)."""

    resource_name = "subscription"
    datamodel = HeadendInterface(Subscription)
    class_permission_name = perms.SUBSCRIPTIONS
    validator = staticmethod(services.validate_subscription)
    list_columns = ["id", "subscriber.id", "package.id", "package.name", *_SUBSCRIPTION_FIELDS,
                    "created_at"]
    show_columns = [*list_columns, *PACKAGE_TAX_FIELDS, "services.id", "services.label",
                    "services.status"]
    # POST is add_package (see post_headless); these only describe it in the OpenAPI spec.
    add_columns = ["subscriber", "package", *_SUBSCRIPTION_FIELDS[:-1]]
    # Quantity and status change services and billing: they get their own flows (not PUT).
    # The tax settings: a copy of the package's, taken when it was added (see billing.taxes).
    edit_columns = ["custom_price", "billing_cycle", "bill_day", "bill_start_date",
                    *PACKAGE_TAX_FIELDS]
    search_columns = ["subscriber", "package", "status", "billing_cycle"]

    def post_headless(self):
        return self._guarded(self._add_package)

    def _add_package(self):
        if not request.is_json or not isinstance(request.json, dict):
            return self.response_400(message="Request is not JSON")
        data = request.json
        unknown = set(data) - {"subscriber", "package", "quantity", "custom_price",
                               "billing_cycle", "bill_day", "bill_start_date"}
        if unknown:
            raise ValidationFailed({k: "is not accepted here" for k in sorted(unknown)})
        try:
            subscription = services.add_package(
                db.session, data.get("subscriber"), data.get("package"),
                quantity=data.get("quantity", 1), billing_cycle=data.get("billing_cycle"),
                custom_price=data.get("custom_price"), bill_day=data.get("bill_day"),
                bill_start_date=_date(data.get("bill_start_date")),
            )
            db.session.commit()
        except WRITE_ERRORS as exc:
            db.session.rollback()
            raise WriteRefused(exc) from exc
        return self.response(201, id=subscription.id, result={
            "status": subscription.status,
            "billing_cycle": subscription.billing_cycle,
            "quantity": subscription.quantity,
            "services": [{"id": s.id, "label": s.label, "status": s.status}
                         for s in subscription.services],
        })


def _date(value) -> dt.date | None:
    if value in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed({"bill_start_date": "use YYYY-MM-DD"}) from exc


class SubscriberNoteApi(HeadendModelRestApi):
    resource_name = "subscriber_note"
    datamodel = HeadendInterface(SubscriberNote)
    class_permission_name = perms.NOTES
    validator = staticmethod(note_by_current_user)
    list_columns = ["id", "subscriber.id", "body", "author", "created_at"]
    show_columns = list_columns
    add_columns = ["subscriber", "body"]
    edit_columns = ["body"]
    search_columns = ["subscriber", "author"]
    base_order = ("created_at", "desc")


def register(appbuilder):
    appbuilder.add_api(SubscriberApi)
    appbuilder.add_api(SubscriptionApi)
    appbuilder.add_api(SubscriberNoteApi)
