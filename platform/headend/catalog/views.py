"""Catalog admin pages: packages (with their lines, inclusions and Internet profile), items,
services, the chart of accounts and tax rates. Rules live in catalog.services."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import expose, has_access
from flask_appbuilder.actions import action
from flask_appbuilder.fieldwidgets import BS3TextFieldWidget, Select2Widget
from wtforms import DecimalField, SelectField
from wtforms.validators import Optional

from headend.billing import taxes
from headend.catalog import fcc, services
from headend.catalog import models as m
from headend.db import db
from headend.errors import ValidationFailed
from headend.tenancy import permissions as perms
from headend.ui import (
    LinkedListMixin,
    add_view,
    add_view_no_menu,
    decimal_text,
    formatters_for,
    labels_for,
    optional_checkboxes,
    titled,
)
from headend.views_base import WRITE_ERRORS, HeadendInterface, HeadendModelView

CATEGORY = "Catalog"


def _or_none(value):
    return value or None


def _select(label: str, values, coerce=str, *, default=None) -> SelectField:
    return SelectField(
        label,
        choices=[(v, v.replace("_", " ")) for v in values],
        default=default,
        widget=Select2Widget(),
        validate_choice=False,
        coerce=coerce,
    )


def _decimal(label: str) -> DecimalField:
    # places=None: show exactly what is stored (WTForms would round the display to 2 places).
    return DecimalField(label, places=None, validators=[Optional()], widget=BS3TextFieldWidget())


def _fcc_text(code: int | None) -> str:
    if code is None:
        return "—"
    return f"{code} {fcc.FIXED_TECHNOLOGY_CODES.get(code, '')}".strip()


def _column_default(model, name: str):
    default = sa.inspect(model).columns[name].default
    return default.arg if default is not None and default.is_scalar else None


def _fields(model, *, selects: dict | None = None, decimals: dict | None = None) -> dict:
    fields = optional_checkboxes(model)
    # A select starts on the column's default (a new package is "both" customer types and taxed
    # per subscriber), not on its first choice.
    fields |= {name: _select(*spec, default=_column_default(model, name))
               for name, spec in (selects or {}).items()}
    fields.update({name: _decimal(label) for name, label in (decimals or {}).items()})
    return fields


class CatalogView(HeadendModelView):
    class_permission_name = perms.CATALOG


@titled("Chart of accounts", "account")
class AccountView(CatalogView):
    datamodel = HeadendInterface(m.Account)
    formatters_columns = formatters_for(m.Account)
    label_columns = labels_for(m.Account)
    validator = staticmethod(services.validate_account)
    delete_guard = staticmethod(services.guard_account_delete)
    list_columns = ["code", "name", "type", "parent", "active"]
    add_columns = edit_columns = show_columns = ["code", "name", "type", "parent", "active"]
    search_columns = ["code", "name", "type", "active"]
    order_columns = ["code", "name", "type"]
    base_order = ("code", "asc")
    add_form_extra_fields = edit_form_extra_fields = _fields(
        m.Account, selects={"type": ("Type", m.ACCOUNT_TYPES)}
    )


@titled("Tax rates", "tax rate")
class TaxRateView(CatalogView):
    datamodel = HeadendInterface(m.TaxRate)
    formatters_columns = formatters_for(m.TaxRate)
    validator = staticmethod(services.validate_tax_rate)
    delete_guard = staticmethod(services.guard_tax_rate_delete)
    list_columns = ["label", "kind", "rate", "require_on_new_subscriber", "active"]
    add_columns = edit_columns = show_columns = list_columns
    search_columns = ["label", "kind", "active"]
    label_columns = labels_for(m.TaxRate, rate="Rate (percent, or flat amount)")
    add_form_extra_fields = edit_form_extra_fields = _fields(
        m.TaxRate,
        selects={"kind": ("Kind", m.TAX_KINDS)},
        decimals={"rate": "Rate (percent, or flat amount)"},
    )


@titled("Items", "item")
class ItemView(CatalogView):
    datamodel = HeadendInterface(m.Item)
    formatters_columns = formatters_for(m.Item)
    label_columns = labels_for(m.Item)
    validator = staticmethod(services.validate_item)
    delete_guard = staticmethod(services.guard_item_delete)
    list_columns = ["code", "name", "type", "price", "recurring", "taxable", "active"]
    add_columns = edit_columns = show_columns = [
        "code",
        "name",
        "type",
        "price",
        "recurring",
        "income_account",
        "taxable",
        "active",
    ]
    search_columns = ["code", "name", "type", "active"]
    base_order = ("code", "asc")
    add_form_extra_fields = edit_form_extra_fields = _fields(
        m.Item, selects={"type": ("Type", m.ITEM_TYPES)}, decimals={"price": "Price"}
    )


@titled("Services", "service")
class ServiceView(CatalogView):
    datamodel = HeadendInterface(m.Service)
    formatters_columns = formatters_for(m.Service)
    label_columns = labels_for(m.Service)
    validator = staticmethod(services.validate_service)
    delete_guard = staticmethod(services.guard_service_delete)
    list_columns = ["name", "type", "description"]
    add_columns = edit_columns = show_columns = list_columns
    search_columns = ["name", "type"]
    add_form_extra_fields = edit_form_extra_fields = _fields(
        m.Service, selects={"type": ("Type", m.SERVICE_TYPES)}
    )


@titled("Service lines", "service line")
class PackageServiceLineView(CatalogView):
    datamodel = HeadendInterface(m.PackageServiceLine)
    validator = staticmethod(services.validate_service_line)
    delete_guard = staticmethod(services.guard_service_line_delete)
    formatters_columns = formatters_for(m.PackageServiceLine) | {
        "fcc_technology_code": _fcc_text,
    }
    # Shown as a tab of its package, so the package column would only repeat it.
    list_columns = ["label", "service", "quantity", "fcc_technology_code"]
    add_columns = edit_columns = show_columns = [
        "package",
        "service",
        "label",
        "quantity",
        "fcc_technology_code",
        "position",
    ]
    search_columns = ["label", "fcc_technology_code"]
    label_columns = labels_for(m.PackageServiceLine, fcc_technology_code="FCC technology code")
    add_form_extra_fields = edit_form_extra_fields = {
        "fcc_technology_code": SelectField(
            "FCC technology code",
            choices=fcc.choices(),
            widget=Select2Widget(),
            validate_choice=False,
            coerce=lambda v: int(v) if v not in (None, "", "None") else None,
        ),
    }


@titled("Inclusions", "inclusion")
class PackageInclusionView(CatalogView):
    datamodel = HeadendInterface(m.PackageInclusion)
    label_columns = labels_for(m.PackageInclusion)
    validator = staticmethod(services.validate_inclusion)
    add_columns = edit_columns = show_columns = ["package", "item", "quantity", "recurring_price"]
    list_columns = ["item", "quantity", "recurring_price"]  # a tab of its package
    search_columns = ["quantity"]
    description_columns = {"recurring_price": "Leave empty or 0 to include the item for free."}
    formatters_columns = formatters_for(m.PackageInclusion) | {
        "recurring_price": lambda price: decimal_text(price) if price else "Free",
    }
    add_form_extra_fields = edit_form_extra_fields = _fields(
        m.PackageInclusion, decimals={"recurring_price": "Recurring price"}
    )


_PROFILE_SPEED = ["package", "download_speed", "upload_speed", "speed_unit"]
_PROFILE_BURST = [
    "burst_download",
    "burst_upload",
    "burst_threshold_download",
    "burst_threshold_upload",
    "burst_time_seconds",
]
_PROFILE_THROTTLE = [
    "data_limit_gb",
    "throttled_download",
    "throttled_upload",
    "disconnect_at_limit",
    "allow_subscriber_overrides",
    "count_upload_in_usage",
]
_PROFILE_USAGE = [
    "usage_billing_enabled",
    "usage_billing_basis",
    "usage_included_amount",
    "usage_price_per_unit",
    "usage_disconnect_on_exceed",
    "usage_show_on_invoice",
    "usage_allow_subscriber_custom",
]
_PROFILE_FIELDSETS = [
    ("Speed", {"fields": _PROFILE_SPEED}),
    ("Burst", {"fields": _PROFILE_BURST, "expanded": True}),
    ("Throttling", {"fields": _PROFILE_THROTTLE, "expanded": True}),
    ("Usage-based billing", {"fields": _PROFILE_USAGE, "expanded": False}),
]


@titled("Internet profile", "Internet profile")
class InternetProfileView(CatalogView):
    datamodel = HeadendInterface(m.InternetProfile)
    formatters_columns = formatters_for(m.InternetProfile)
    label_columns = labels_for(m.InternetProfile)
    validator = staticmethod(services.validate_internet_profile)
    method_permission_name = {**perms.METHOD_PERMISSIONS, "restore_defaults": perms.WRITE}
    list_columns = ["download_speed", "upload_speed", "speed_unit", "data_limit_gb"]
    add_fieldsets = edit_fieldsets = show_fieldsets = _PROFILE_FIELDSETS
    search_columns = ["download_speed", "upload_speed"]
    add_form_extra_fields = edit_form_extra_fields = _fields(
        m.InternetProfile,
        selects={
            "speed_unit": ("Speed unit", m.SPEED_UNITS),
            "usage_billing_basis": ("Usage billing basis", m.USAGE_BASES),
        },
        decimals={
            "usage_included_amount": "Usage included amount",
            "usage_price_per_unit": "Usage price per unit",
        },
    )

    @action(
        "restore_defaults", "Restore defaults", "Put the default Internet settings back?", "fa-undo"
    )
    def restore_defaults(self, items):
        profiles = items if isinstance(items, list) else [items]
        try:
            for profile in profiles:
                services.restore_internet_profile_defaults(db.session, profile.package)
            db.session.commit()
            flash(f"Defaults restored on {len(profiles)} profile(s)", "success")
        except ValidationFailed as exc:
            db.session.rollback()
            flash(str(exc), "danger")
        return redirect(request.referrer or self.get_redirect())


_GENERAL = [
    "name",
    "description",
    "setup_fee",
    "price_monthly",
    "price_quarterly",
    "price_semiannual",
    "price_annual",
    "allow_custom_pricing",
    "exclude_from_invoicing",
    "active",
]
_OPTIONS = [
    "customer_type",
    "signup_enabled",
    "signup_requires_payment",
    "acp_participation",
    "request_additional_info",
    "additional_info_prompt",
    "activate_after_signup",
    "invoice_after_signup",
    "location_id",
    "account_manager_visibility",
    "devices_required",
    "max_devices",
    "hibernation_allowed",
    "hibernation_fee",
    "hibernation_max_days",
]
_TAXES = ["tax_mode", "custom_tax_kind", "custom_tax_cycle_rate", "custom_tax_setup_rate"]


@titled("Packages", "package")
class PackageView(LinkedListMixin, CatalogView):
    datamodel = HeadendInterface(m.Package)
    formatters_columns = formatters_for(m.Package)
    link_columns = ("name",)
    show_template = "catalog/package_show.html"
    method_permission_name = {**perms.METHOD_PERMISSIONS, "apply_taxes": perms.WRITE}
    validator = staticmethod(services.validate_package)
    delete_guard = staticmethod(services.guard_package_delete)
    related_views = [PackageServiceLineView, PackageInclusionView, InternetProfileView]
    list_columns = ["name", "price_monthly", "price_annual", "setup_fee", "customer_type", "active"]
    add_fieldsets = edit_fieldsets = show_fieldsets = [
        ("General", {"fields": _GENERAL}),
        ("Options", {"fields": _OPTIONS, "expanded": False}),
        ("Taxes", {"fields": _TAXES, "expanded": False}),
    ]
    search_columns = ["name", "customer_type", "active"]
    base_order = ("name", "asc")
    description_columns = {"tax_mode": (
        "New subscriptions take these tax settings; existing ones keep theirs until "
        "\"Apply tax settings\" on the package page pushes these to them.")}
    label_columns = labels_for(
        m.Package,
        price_semiannual="Price semi-annual",
        acp_participation="ACP participation",
        location_id="Location",
    )
    add_form_extra_fields = edit_form_extra_fields = _fields(
        m.Package,
        selects={
            "customer_type": ("Customer type", m.CUSTOMER_TYPES),
            "account_manager_visibility": ("Account manager visibility", m.VISIBILITIES),
            "tax_mode": ("Tax mode", m.TAX_MODES),
            "custom_tax_kind": ("Custom tax kind", ("",) + m.TAX_KINDS, _or_none),
        },
        decimals={
            "setup_fee": "Setup fee",
            "price_monthly": "Price monthly",
            "price_quarterly": "Price quarterly",
            "price_semiannual": "Price semi-annual",
            "price_annual": "Price annual",
            "hibernation_fee": "Hibernation fee",
            "custom_tax_cycle_rate": "Custom tax rate per cycle",
            "custom_tax_setup_rate": "Custom tax rate on setup",
        },
    )

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        """FAB's show page, plus how many subscriptions the tax "Apply" would reach."""
        pk = self._deserialize_pk_if_composite(pk)
        widgets = self._show(pk)
        return self.render_template(
            self.show_template, pk=pk, title=self.show_title, widgets=widgets,
            related_views=self._related_views,
            live_subscriptions=taxes.live_subscription_count(db.session, int(pk)))

    @expose("/apply_taxes/<pk>", methods=["POST"])
    @has_access
    def apply_taxes(self, pk):
        """The Taxes "Apply": this package's tax settings onto all its active subscriptions."""
        if not str(pk).isdigit() or not self._visible(pk):
            abort(404)
        try:
            applied = taxes.apply_package_taxes(db.session, int(pk))
            db.session.commit()
        except WRITE_ERRORS:
            db.session.rollback()
            flash("The database refused the change; no subscription was changed.", "danger")
        else:
            flash(f"Tax settings applied: {applied.updated} of {applied.live} active "
                  f"subscription{'s' if applied.live != 1 else ''} updated", "success")
        return redirect(url_for("PackageView.show", pk=pk))


def register(appbuilder):
    for view in (PackageServiceLineView, PackageInclusionView, InternetProfileView):
        add_view_no_menu(appbuilder, view)
    add_view(
        appbuilder,
        PackageView,
        "Packages",
        category=CATEGORY,
        icon="fa-cubes",
        category_icon="fa-book",
    )
    add_view(appbuilder, ServiceView, "Services", category=CATEGORY, icon="fa-plug")
    add_view(appbuilder, ItemView, "Items", category=CATEGORY, icon="fa-tag")
    add_view(appbuilder, TaxRateView, "Tax rates", category=CATEGORY, icon="fa-percent")
    add_view(appbuilder, AccountView, "Chart of accounts", category=CATEGORY, icon="fa-list-ol")
