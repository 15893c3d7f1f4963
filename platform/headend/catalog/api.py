"""Catalog REST API under /api/v1/<resource>/; every write goes through catalog.services."""

from __future__ import annotations

from flask_appbuilder.api import expose, protect, safe

from headend.billing import taxes
from headend.catalog import models as m
from headend.catalog import services
from headend.db import db
from headend.tenancy import permissions as perms
from headend.views_base import WRITE_ERRORS, HeadendInterface, HeadendModelRestApi

_LINE = ["id", "label", "quantity", "fcc_technology_code", "position"]
_INCLUSION = ["id", "quantity", "recurring_price"]
_PACKAGE = [
    "name", "description", "setup_fee", "price_monthly", "price_quarterly", "price_semiannual",
    "price_annual", "allow_custom_pricing", "exclude_from_invoicing", "customer_type",
    "signup_enabled", "signup_requires_payment", "acp_participation", "request_additional_info",
    "additional_info_prompt", "activate_after_signup", "invoice_after_signup", "location_id",
    "account_manager_visibility", "devices_required", "max_devices", "hibernation_allowed",
    "hibernation_fee", "hibernation_max_days", "tax_mode", "custom_tax_kind",
    "custom_tax_cycle_rate", "custom_tax_setup_rate", "active",
]
_PROFILE = ["package", *m.INTERNET_PROFILE_DEFAULTS]


class CatalogApi(HeadendModelRestApi):
    class_permission_name = perms.CATALOG


class AccountApi(CatalogApi):
    resource_name = "account"
    datamodel = HeadendInterface(m.Account)
    validator = staticmethod(services.validate_account)
    delete_guard = staticmethod(services.guard_account_delete)
    add_columns = edit_columns = ["code", "name", "type", "parent", "active"]
    list_columns = show_columns = ["id", "code", "name", "type", "parent.id", "active"]
    search_columns = ["code", "name", "type", "active"]
    order_columns = ["code", "name", "type"]


class TaxRateApi(CatalogApi):
    resource_name = "tax_rate"
    datamodel = HeadendInterface(m.TaxRate)
    validator = staticmethod(services.validate_tax_rate)
    delete_guard = staticmethod(services.guard_tax_rate_delete)
    add_columns = edit_columns = ["label", "kind", "rate", "require_on_new_subscriber", "active"]
    list_columns = show_columns = ["id", *add_columns]
    search_columns = ["label", "kind", "active"]


class ItemApi(CatalogApi):
    resource_name = "item"
    datamodel = HeadendInterface(m.Item)
    validator = staticmethod(services.validate_item)
    delete_guard = staticmethod(services.guard_item_delete)
    add_columns = edit_columns = [
        "code", "name", "type", "price", "recurring", "income_account", "taxable", "active",
    ]
    list_columns = show_columns = [
        "id", "code", "name", "type", "price", "recurring", "income_account.id", "taxable",
        "active",
    ]
    search_columns = ["code", "name", "type", "active"]
    order_columns = ["code", "name", "price"]


class ServiceApi(CatalogApi):
    resource_name = "service"
    datamodel = HeadendInterface(m.Service)
    validator = staticmethod(services.validate_service)
    delete_guard = staticmethod(services.guard_service_delete)
    add_columns = edit_columns = ["name", "type", "description"]
    list_columns = show_columns = ["id", *add_columns]
    search_columns = ["name", "type"]


class PackageApi(CatalogApi):
    resource_name = "package"
    datamodel = HeadendInterface(m.Package)
    validator = staticmethod(services.validate_package)
    delete_guard = staticmethod(services.guard_package_delete)
    add_columns = edit_columns = _PACKAGE
    list_columns = ["id", "name", "setup_fee", "price_monthly", "price_quarterly",
                    "price_semiannual", "price_annual", "customer_type", "active"]
    show_columns = [
        "id", *_PACKAGE,
        *(f"service_lines.{c}" for c in _LINE),
        *(f"inclusions.{c}" for c in _INCLUSION),
        *(f"internet_profile.{c}" for c in ["id", *m.INTERNET_PROFILE_DEFAULTS]),
    ]
    search_columns = ["name", "customer_type", "active"]
    order_columns = ["name", "price_monthly"]
    method_permission_name = {**perms.METHOD_PERMISSIONS, "apply_taxes": perms.WRITE}

    # Not named <pk>: the isolation walker GETs every <pk> route, and this is POST only
    # (tests/test_package_tax_apply.py checks another tenant's package answers 404 here).
    @expose("/<int:package_id>/apply-taxes", methods=["POST"])
    @protect()
    @safe
    def apply_taxes(self, package_id):
        """Apply the package's tax settings to all its active subscriptions.
        ---
        post:
          description: >-
            New subscriptions take the package's tax settings; this pushes them to its
            pending, active, hibernating and suspended subscriptions (not cancelled ones).
          parameters:
          - {in: path, name: package_id, schema: {type: integer}}
          responses:
            200: {description: '{"active": subscriptions reached, "updated": those changed}'}
            404: {description: no such package}
        """
        package = self.datamodel.get(package_id, self._base_filters)
        if package is None:
            return self.response_404()
        try:
            applied = taxes.apply_package_taxes(db.session, package.id)
            db.session.commit()
        except WRITE_ERRORS:
            db.session.rollback()
            return self.response_422(message={"package": ["the database refused the change"]})
        return self.response(200, active=applied.live, updated=applied.updated)


class PackageServiceLineApi(CatalogApi):
    resource_name = "package_service_line"
    datamodel = HeadendInterface(m.PackageServiceLine)
    validator = staticmethod(services.validate_service_line)
    delete_guard = staticmethod(services.guard_service_line_delete)
    add_columns = edit_columns = [
        "package", "service", "label", "quantity", "fcc_technology_code", "position",
    ]
    list_columns = show_columns = [
        "id", "package.id", "service.id", "label", "quantity", "fcc_technology_code", "position",
    ]
    search_columns = ["package_id", "label", "fcc_technology_code"]


class PackageInclusionApi(CatalogApi):
    resource_name = "package_inclusion"
    datamodel = HeadendInterface(m.PackageInclusion)
    validator = staticmethod(services.validate_inclusion)
    add_columns = edit_columns = ["package", "item", "quantity", "recurring_price"]
    list_columns = show_columns = ["id", "package.id", "item.id", "quantity", "recurring_price"]
    search_columns = ["package_id", "item_id"]


class InternetProfileApi(CatalogApi):
    resource_name = "internet_profile"
    datamodel = HeadendInterface(m.InternetProfile)
    validator = staticmethod(services.validate_internet_profile)
    add_columns = edit_columns = _PROFILE
    list_columns = show_columns = ["id", "package.id", *m.INTERNET_PROFILE_DEFAULTS]
    search_columns = ["package_id"]


APIS = (AccountApi, TaxRateApi, ItemApi, ServiceApi, PackageApi, PackageServiceLineApi,
        PackageInclusionApi, InternetProfileApi)


def register(appbuilder):
    for api in APIS:
        appbuilder.add_api(api)
