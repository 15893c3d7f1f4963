"""Admin pages: subscriber list and forms, the profile, adding a package, notes."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from flask import abort, flash, jsonify, redirect, request, url_for
from flask_appbuilder import expose, has_access
from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
from flask_appbuilder.models.filters import BaseFilter
from markupsafe import Markup
from wtforms import BooleanField, DecimalField, SelectField, StringField
from wtforms.validators import Length, Optional

from headend.catalog.models import CYCLES, TAX_KINDS, TAX_MODES, Package
from headend.db import db
from headend.errors import NotFound, ValidationFailed
from headend.ledger.services import subscriber_balance
from headend.money import from_minor
from headend.subscribers import services
from headend.subscribers.models import (
    CUSTOMER_TYPES,
    PACKAGE_TAX_FIELDS,
    SUBSCRIBER_STATUSES,
    Subscriber,
    SubscriberNote,
    Subscription,
)
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.tenancy.models import Tenant
from headend.ui import (
    LinkedListMixin,
    add_view,
    decimal_text,
    formatters_for,
    labels_for,
    row_by_key_field,
    titled,
)
from headend.views_base import HeadendInterface, HeadendModelView

_CONTACT = ["account_number", "first_name", "last_name", "company", "customer_type", "email",
            "phone", "mobile", "status"]
_SERVICE_ADDRESS = ["service_line1", "service_line2", "service_city", "service_region",
                    "service_postal_code", "service_country", "latitude", "longitude"]
_BILLING_ADDRESS = ["billing_same_as_service", "billing_line1", "billing_line2", "billing_city",
                    "billing_region", "billing_postal_code", "billing_country"]
_BILLING_OPTIONS = ["billing_cycle", "bill_day", "paper_invoice"]
_TAX = ["tax_exempt", "tax_exemption_code", "tax_rates"]
_FIELDSETS = [
    ("Contact", {"fields": _CONTACT}),
    ("Service address", {"fields": _SERVICE_ADDRESS}),
    ("Billing address", {"fields": _BILLING_ADDRESS, "expanded": False}),
    ("Billing options", {"fields": _BILLING_OPTIONS}),
    ("Tax", {"fields": _TAX}),
    ("Parent account", {"fields": ["parent"], "expanded": False}),
]


def _choice_text(value: str | None) -> str:
    return value.replace("semiannual", "semi-annual").capitalize() if value else "—"


def _choices(values) -> list[tuple[str, str]]:
    return [(v, _choice_text(v)) for v in values]


# Lists and show pages name a choice the way the form offers it ("Semi-annual", "Prospect").
_CHOICE_FORMATTERS = dict.fromkeys(("customer_type", "status", "billing_cycle"), _choice_text)


def _select_fields() -> dict:
    return {
        "account_number": StringField(
            "Account number", validators=[Optional(), Length(max=30)],
            description="Leave empty to number the account automatically"),
        "customer_type": SelectField("Customer type", choices=_choices(CUSTOMER_TYPES)),
        "status": SelectField("Status", choices=_choices(SUBSCRIBER_STATUSES)),
        "billing_cycle": SelectField("Billing cycle", choices=_choices(CYCLES)),
        # NOT NULL booleans: FAB would make them required, i.e. always ticked.
        "billing_same_as_service": BooleanField("Billing address same as service address"),
        "paper_invoice": BooleanField("Paper invoice"),
        "tax_exempt": BooleanField("Tax exempt"),
        "parent": row_by_key_field(Subscriber, "account_number", "Parent account",
                                "Account number of the parent account, if any"),
    }


def _currency_of(tenant_id: int) -> str:
    tenant = db.session.get(Tenant, tenant_id)
    return tenant.currency if tenant else "USD"


def current_user_has(permission: str, resource: str) -> bool:
    from flask import current_app

    return current_app.appbuilder.sm.has_access(permission, resource)


class SearchTextFilter(BaseFilter):
    """The free-text search box of the subscriber list, answered by the search service."""

    name = "Matches"
    arg_name = "search"

    def apply(self, query, value):
        return query.filter(services.search_clause(value))


def _profile_link(subscriber: Subscriber | None):
    if subscriber is None:
        return "—"
    return Markup('<a href="{}">{}</a>').format(
        url_for("SubscriberView.profile", pk=subscriber.id), subscriber)


@titled("Subscribers", "subscriber")
class SubscriberView(LinkedListMixin, HeadendModelView):
    datamodel = HeadendInterface(Subscriber)
    class_permission_name = perms.SUBSCRIBERS
    method_permission_name = {**perms.METHOD_PERMISSIONS, "profile": perms.READ}
    validator = staticmethod(services.prepare_subscriber)
    delete_guard = staticmethod(services.guard_subscriber_delete)
    list_template = "subscribers/list.html"
    show_template = "subscribers/show.html"
    list_columns = ["account_number", "first_name", "last_name", "company", "status",
                    "service_city", "email", "phone"]
    link_columns = ("account_number", "first_name", "last_name")
    link_endpoint = "SubscriberView.profile"
    label_columns = labels_for(
        Subscriber, service_city="City", parent="Parent account", created_at="Created",
        service_line1="Address line 1", service_line2="Address line 2",
        billing_line1="Billing line 1", billing_line2="Billing line 2")
    formatters_columns = formatters_for(Subscriber) | _CHOICE_FORMATTERS
    order_columns = ["account_number", "last_name", "company", "status", "service_city"]
    base_order = ("account_number", "asc")
    search_columns = ["account_number", "last_name", "first_name", "company", "email", "phone",
                      "service_city", "service_postal_code", "status"]
    add_columns = [c for _, fs in _FIELDSETS for c in fs["fields"]]
    edit_columns = add_columns
    show_columns = add_columns + ["created_at"]
    add_fieldsets = edit_fieldsets = _FIELDSETS
    show_fieldsets = _FIELDSETS + [("Record", {"fields": ["created_at"]})]
    add_form_extra_fields = edit_form_extra_fields = _select_fields()

    def _get_list_widget(self, filters, **kwargs):
        q = request.args.get("q", "").strip()
        if q:
            filters = filters.copy().add_filter("search_text", SearchTextFilter, q)
        return super()._get_list_widget(filters=filters, **kwargs)

    def pre_add(self, item):
        # Announced in the transaction that inserts it (FAB commits in add()).
        db.session.add(item)
        db.session.flush()
        services.subscriber_created(db.session, item)

    @expose("/profile/<int:pk>")
    @has_access
    def profile(self, pk):
        sub = self.datamodel.get(pk, self._base_filters)
        if sub is None:
            abort(404)
        currency = _currency_of(sub.tenant_id)
        return self.render_template(
            "subscribers/profile.html", sub=sub,
            balance=f"{from_minor(subscriber_balance(db.session, sub.id), currency):,}",
            currency=currency,
            can_add_package=current_user_has("can_write", perms.SUBSCRIPTIONS),
            can_add_note=current_user_has("can_write", perms.NOTES),
            unit_price=_display_unit_price, money=decimal_text,
        )


def _display_unit_price(subscription: Subscription) -> Decimal | None:
    try:
        return services.unit_price(subscription.package, subscription.billing_cycle,
                                   subscription.custom_price)
    except KeyError:
        return None  # the package no longer offers this cycle


def _form_decimal(raw: str | None) -> Decimal | None:
    try:
        return Decimal(raw) if raw not in (None, "") else None
    except InvalidOperation:
        return None


def _preview_json(package: Package, cycle: str, quantity, custom_price) -> dict:
    try:
        qty = max(int(quantity or 1), 1)
    except ValueError:
        qty = 1
    if cycle not in package.offered_cycles():
        return {}
    preview = services.price_preview(package, cycle, qty, _form_decimal(custom_price))
    return {k: str(v) if k == "quantity" else decimal_text(v) for k, v in preview.items()}


def _package_json(package: Package) -> dict:
    return {
        "id": package.id, "name": package.name,
        "allow_custom_pricing": package.allow_custom_pricing,
        "setup_fee": decimal_text(package.setup_fee or Decimal(0)),
        # A list, not an object: JSON objects come back with sorted keys, cycles keep CYCLES order.
        "cycles": [[cycle, decimal_text(price)]
                   for cycle, price in package.offered_cycles().items()],
    }


_TAX_MODE_TEXT = {"none": "Not taxed", "subscriber": "Subscriber's tax rates",
                  "custom": "Custom rate"}


def _tax_fields() -> dict:
    """The subscription's own copy of its package's Taxes settings."""
    def rate(label):
        return DecimalField(label, places=None, validators=[Optional()],
                            widget=BS3TextFieldWidget())
    return {
        "tax_mode": SelectField("Tax mode", choices=[(m, _TAX_MODE_TEXT[m]) for m in TAX_MODES]),
        "custom_tax_kind": SelectField("Custom tax kind",
                                       choices=[("", "—"), *_choices(TAX_KINDS)],
                                       coerce=lambda v: v or None, validate_choice=False),
        "custom_tax_cycle_rate": rate("Custom tax rate per cycle"),
        "custom_tax_setup_rate": rate("Custom tax rate on setup"),
    }


@titled("Subscriptions", "subscription")
class SubscriptionView(HeadendModelView):
    datamodel = HeadendInterface(Subscription)
    formatters_columns = formatters_for(Subscription) | _CHOICE_FORMATTERS | {
        "subscriber": _profile_link, "tax_mode": lambda m: _TAX_MODE_TEXT.get(m, m)}
    label_columns = labels_for(Subscription, created_at="Created")
    description_columns = {"tax_mode": "Taken from the package when the subscription was added "
                                       "(or by the package's \"Apply tax settings\")"}
    class_permission_name = perms.SUBSCRIPTIONS
    method_permission_name = {**perms.METHOD_PERMISSIONS, "add_package": perms.WRITE,
                              "packages": perms.READ, "preview": perms.READ,
                              "configure": perms.READ}
    validator = staticmethod(services.validate_subscription)
    list_columns = ["subscriber", "package", "billing_cycle", "quantity", "custom_price",
                    "status", "created_at"]
    show_columns = ["subscriber", "package", "billing_cycle", "quantity", "custom_price",
                    "bill_day", "bill_start_date", "status", *PACKAGE_TAX_FIELDS, "services",
                    "created_at"]
    search_columns = ["status", "billing_cycle"]
    # Quantity and status change services and billing: they get their own flows (not here).
    edit_columns = ["custom_price", "billing_cycle", "bill_day", "bill_start_date",
                    *PACKAGE_TAX_FIELDS]
    edit_form_extra_fields = {
        "billing_cycle": SelectField("Billing cycle", choices=_choices(CYCLES)),
        **_tax_fields(),
    }

    @expose("/add/", methods=["GET", "POST"])
    @has_access
    def add(self):
        """Subscriptions are added from a subscriber's profile, where the package is chosen."""
        flash("Add a package from the subscriber's profile (the + of Packages and Services)",
              "info")
        return redirect(url_for("SubscriberView.list"))

    @expose("/packages")
    @has_access
    def packages(self):
        found = services.offerable_packages(db.session, request.args.get("q", ""))
        return jsonify([_package_json(p) for p in found])

    @expose("/preview")
    @has_access
    def preview(self):
        package = db.session.get(Package, request.args.get("package_id", type=int) or 0)
        if package is None:
            return jsonify({}), 404
        return jsonify(_preview_json(package, request.args.get("billing_cycle", ""),
                                     request.args.get("quantity"),
                                     request.args.get("custom_price")))

    @expose("/add_package/<int:subscriber_pk>", methods=["GET", "POST"])
    @has_access
    def add_package(self, subscriber_pk):
        try:
            subscriber = services.get_subscriber(db.session, subscriber_pk)
        except NotFound:
            abort(404)
        values = request.form if request.method == "POST" else request.args
        errors: dict = {}
        if request.method == "POST":
            try:
                subscription = services.add_package(
                    db.session, subscriber.id, values.get("package_id", type=int),
                    quantity=values.get("quantity", "1"),
                    billing_cycle=values.get("billing_cycle") or None,
                    custom_price=values.get("custom_price") or None,
                )
                db.session.commit()
            except ValidationFailed as exc:
                db.session.rollback()
                errors = exc.errors
            else:
                flash(f"{subscription.package.name} added (pending): configure its services",
                      "success")
                return redirect(url_for("SubscriptionView.configure", pk=subscription.id))
        q = values.get("q", "")
        choices = services.offerable_packages(db.session, q, limit=50)
        package_id = values.get("package_id", type=int)
        chosen = db.session.get(Package, package_id) if package_id else None
        if chosen is not None and chosen not in choices:
            choices.insert(0, chosen)
        cycle = values.get("billing_cycle") or ""
        if chosen is not None and cycle not in chosen.offered_cycles():
            offered = chosen.offered_cycles()
            cycle = subscriber.billing_cycle if subscriber.billing_cycle in offered else \
                next(iter(offered), "")
        preview = _preview_json(chosen, cycle, values.get("quantity"),
                                values.get("custom_price")) if chosen else {}
        return self.render_template(
            "subscribers/add_package.html", sub=subscriber, packages=choices, chosen=chosen,
            package_json={p.id: _package_json(p) for p in choices}, cycle=cycle,
            quantity=values.get("quantity", "1"), custom_price=values.get("custom_price", ""),
            q=q, errors=errors, preview=preview, money=decimal_text,
        )

    @expose("/configure/<int:pk>")
    @has_access
    def configure(self, pk):
        subscription = self.datamodel.get(pk, self._base_filters)
        if subscription is None:
            abort(404)
        return self.render_template("subscribers/configure.html", subscription=subscription,
                                    unit_price=_display_unit_price(subscription),
                                    money=decimal_text)


def note_by_current_user(session, note: SubscriberNote) -> None:
    """Validator of notes written through the admin or the API: the writer is the author, and
    only the author edits a note (it would otherwise carry their name on someone else's words).
    """
    actor = current_scope().actor_name
    if note.id is None:
        note.author = actor
    elif note.author != actor:
        raise ValidationFailed({"body": f"only its author ({note.author}) can change this note"})
    services.validate_note(session, note)


@titled("Notes", "note")
class SubscriberNoteView(HeadendModelView):
    datamodel = HeadendInterface(SubscriberNote)
    formatters_columns = {"subscriber": _profile_link}
    label_columns = labels_for(SubscriberNote, body="Note", created_at="Written")
    class_permission_name = perms.NOTES
    method_permission_name = {**perms.METHOD_PERMISSIONS, "add_for": perms.WRITE}
    validator = staticmethod(note_by_current_user)
    list_columns = ["subscriber", "body", "author", "created_at"]
    show_columns = list_columns
    add_columns = ["subscriber", "body"]
    edit_columns = ["body"]
    add_form_extra_fields = {
        "subscriber": row_by_key_field(Subscriber, "account_number", "Account number")}
    search_columns = ["author", "created_at"]
    base_order = ("created_at", "desc")

    @expose("/add_for/<int:subscriber_pk>", methods=["POST"])
    @has_access
    def add_for(self, subscriber_pk):
        """The add-note form of the subscriber profile."""
        try:
            services.add_note(db.session, subscriber_pk, request.form.get("body", ""),
                              current_scope().actor_name)
            db.session.commit()
            flash("Note added", "success")
        except NotFound:
            abort(404)
        except ValidationFailed as exc:
            db.session.rollback()
            flash("Note not added: " + "; ".join(" ".join(v) for v in exc.errors.values()),
                  "danger")
        return redirect(url_for("SubscriberView.profile", pk=subscriber_pk) + "#notes")


def register(appbuilder):
    add_view(appbuilder, SubscriberView, "Subscribers", category="Subscribers",
             icon="fa-users")
    add_view(appbuilder, SubscriptionView, "Subscriptions", category="Subscribers",
             icon="fa-cubes")
    add_view(appbuilder, SubscriberNoteView, "Notes", category="Subscribers",
             icon="fa-sticky-note")
