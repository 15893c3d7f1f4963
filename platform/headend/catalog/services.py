"""Catalog rules: what a valid account, tax rate, item, service or package is.

Validators take the session and the (unsaved or edited) object and raise ValidationFailed naming
each bad field; nothing here commits. Queries are tenant-scoped by headend.tenancy.scoping.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from headend.catalog import fcc
from headend.catalog.models import (
    ACCOUNT_TYPES,
    CUSTOMER_TYPES,
    CYCLES,
    INTERNET_PROFILE_DEFAULTS,
    ITEM_TYPES,
    SERVICE_TYPES,
    SPEED_UNITS,
    TAX_KINDS,
    TAX_MODES,
    USAGE_BASES,
    VISIBILITIES,
    Account,
    InternetProfile,
    Item,
    Package,
    PackageInclusion,
    PackageServiceLine,
    Service,
    TaxRate,
)
from headend.errors import ValidationFailed, raise_if, require
from headend.money import parse_decimal

# Subscriptions in these states hold their service lines (and so their package).
LIVE_STATUSES = ("pending", "active", "hibernating", "suspended")

# A package line's units each become a service instance per subscription unit: keep it bounded.
MAX_LINE_QUANTITY = 100

# Well-known accounts other domains post to.
CASH, UNDEPOSITED_FUNDS, ACCOUNTS_RECEIVABLE = "1000", "1010", "1200"
CUSTOMER_CREDITS, SALES_TAX_PAYABLE = "2100", "2200"
DEFAULT_CHART: tuple[tuple[str, str, str], ...] = (
    (CASH, "Cash", "asset"),
    (UNDEPOSITED_FUNDS, "Undeposited Funds", "asset"),
    (ACCOUNTS_RECEIVABLE, "Accounts Receivable", "asset"),
    ("1500", "Customer Equipment", "asset"),
    ("2000", "Accounts Payable", "liability"),
    (CUSTOMER_CREDITS, "Customer Deposits and Credits", "liability"),
    (SALES_TAX_PAYABLE, "Sales Tax Payable", "liability"),
    ("3000", "Owner's Equity", "equity"),
    ("3900", "Retained Earnings", "equity"),
    ("4000", "Internet Service Income", "income"),
    ("4100", "TV Service Income", "income"),
    ("4200", "VoIP Service Income", "income"),
    ("4300", "Equipment Rental and Sales", "income"),
    ("4400", "Setup and Installation Fees", "income"),
    ("4500", "Late Fee Income", "income"),
    ("4600", "Usage Overage Income", "income"),
    ("4700", "Service Fees (paper invoice, re-billing)", "income"),
    ("4900", "Discounts Given", "income"),
    ("6000", "Bad Debt Expense", "expense"),
    ("6100", "Payment Processing Fees", "expense"),
)


def create_default_chart(session: Session) -> dict[str, Account]:
    """Give the current tenant the chart an ISP needs on day one; existing codes are kept."""
    have = {a.code: a for a in session.scalars(select(Account))}
    for code, name, kind in DEFAULT_CHART:
        if code not in have:
            have[code] = Account(code=code, name=name, type=kind, active=True)
            session.add(have[code])
    session.flush()
    return have


# --- field checks --------------------------------------------------------------------------

def _decimal(errors: dict, field: str, value, *, places: int = 4, required: bool = False,
             maximum: Decimal | None = None) -> Decimal | None:
    """A non-negative exact decimal with at most `places` places, or an error under `field`."""
    if value is None or value == "":
        require(errors, field, not required, "is required")
        return None
    try:
        return parse_decimal(value, places=places, maximum=maximum)
    except ValueError as exc:
        errors.setdefault(field, []).append(str(exc))
        return None


def _with_defaults(obj):
    """Fill unset NOT NULL columns with their scalar defaults, so rules see what will be stored
    (an API body may leave out a field that has a default)."""
    for col in sa.inspect(type(obj)).columns:
        default = col.default
        if (not col.nullable and default is not None and default.is_scalar
                and col.key in vars(type(obj)) and getattr(obj, col.key) is None):
            setattr(obj, col.key, default.arg)
    return obj


def _text(errors: dict, field: str, value) -> None:
    require(errors, field, bool((value or "").strip()), "is required")


def _choice(errors: dict, field: str, value, choices) -> None:
    require(errors, field, value in choices, f"must be one of: {', '.join(choices)}")


def _count(errors: dict, field: str, value, *, minimum: int = 1, maximum: int | None = None,
           required: bool = True) -> None:
    if value is None:
        require(errors, field, not required, "is required")
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if maximum is None:
        require(errors, field, ok, f"must be a whole number of at least {minimum}")
    else:
        require(errors, field, ok and value <= maximum,
                f"must be a whole number from {minimum} to {maximum}")


def _unique(session: Session, errors: dict, obj, field: str, message: str) -> None:
    model = type(obj)
    value = getattr(obj, field)
    if not value:
        return
    with session.no_autoflush:
        clash = session.scalar(
            select(model.id).where(getattr(model, field) == value,
                                   model.id.is_distinct_from(obj.id)))
    require(errors, field, clash is None, message)


def _related(session: Session, obj, relation: str, model):
    """The related row, whether the caller set the relationship or only its id (scoped)."""
    target = getattr(obj, relation)
    if target is not None:
        return target
    target_id = getattr(obj, f"{relation}_id")
    if target_id is None:
        return None
    with session.no_autoflush:
        return session.scalar(select(model).where(model.id == target_id))


# --- validators ----------------------------------------------------------------------------

def validate_account(session: Session, account: Account) -> None:
    errors: dict = {}
    _with_defaults(account)
    _text(errors, "code", account.code)
    _text(errors, "name", account.name)
    _choice(errors, "type", account.type, ACCOUNT_TYPES)
    _unique(session, errors, account, "code", "is already used by another account")
    parent = _related(session, account, "parent", Account)
    if account.parent_id is not None and parent is None:
        errors.setdefault("parent", []).append("does not exist")
    seen = set()
    node = parent
    while node is not None:
        if node is account or (account.id is not None and node.id == account.id):
            errors.setdefault("parent", []).append("would make the account its own ancestor")
            break
        if node.id in seen:
            break
        seen.add(node.id)
        node = node.parent
    if parent is not None and account.type in ACCOUNT_TYPES:
        require(errors, "parent", parent.type == account.type,
                f"must be an {account.type} account like its child")
    raise_if(errors)


def validate_tax_rate(session: Session, rate: TaxRate) -> None:
    errors: dict = {}
    _with_defaults(rate)
    _text(errors, "label", rate.label)
    _choice(errors, "kind", rate.kind, TAX_KINDS)
    _decimal(errors, "rate", rate.rate, places=6, required=True,
             maximum=Decimal(100) if rate.kind == "percent" else None)
    raise_if(errors)


def validate_item(session: Session, item: Item) -> None:
    errors: dict = {}
    _with_defaults(item)
    _text(errors, "code", item.code)
    _text(errors, "name", item.name)
    _choice(errors, "type", item.type, ITEM_TYPES)
    _decimal(errors, "price", item.price, required=True)
    _unique(session, errors, item, "code", "is already used by another item")
    account = _related(session, item, "income_account", Account)
    if item.income_account_id is not None and account is None:
        errors.setdefault("income_account", []).append("does not exist")
    if account is not None:
        require(errors, "income_account", account.type == "income", "must be an income account")
    raise_if(errors)


def validate_service(session: Session, service: Service) -> None:
    errors: dict = {}
    _with_defaults(service)
    _text(errors, "name", service.name)
    _choice(errors, "type", service.type, SERVICE_TYPES)
    raise_if(errors)


def validate_package(session: Session, package: Package) -> None:
    errors: dict = {}
    _with_defaults(package)
    _text(errors, "name", package.name)
    _unique(session, errors, package, "name", "is already used by another package")
    _decimal(errors, "setup_fee", package.setup_fee)
    prices = {c: _decimal(errors, f"price_{c}", getattr(package, f"price_{c}")) for c in CYCLES}
    cycle_errors = any(f"price_{c}" in errors for c in CYCLES)
    if not cycle_errors and all(p is None for p in prices.values()):
        errors.setdefault("price_monthly", []).append(
            "offer at least one billing cycle: give a monthly, quarterly, semiannual or "
            "annual price"
        )
    _choice(errors, "customer_type", package.customer_type, CUSTOMER_TYPES)
    _choice(errors, "account_manager_visibility", package.account_manager_visibility,
            VISIBILITIES)
    if package.request_additional_info:
        _text(errors, "additional_info_prompt", package.additional_info_prompt)
    _count(errors, "max_devices", package.max_devices, required=False)
    _decimal(errors, "hibernation_fee", package.hibernation_fee)
    _count(errors, "hibernation_max_days", package.hibernation_max_days, required=False)
    check_tax_settings(errors, package)
    raise_if(errors)


def check_tax_settings(errors: dict, owner) -> None:
    """The tax option of a package, or of a subscription that carries its own copy of it."""
    _choice(errors, "tax_mode", owner.tax_mode, TAX_MODES)
    if owner.tax_mode == "custom":
        _choice(errors, "custom_tax_kind", owner.custom_tax_kind, TAX_KINDS)
        cap = Decimal(100) if owner.custom_tax_kind == "percent" else None
        for field in ("custom_tax_cycle_rate", "custom_tax_setup_rate"):
            _decimal(errors, field, getattr(owner, field), places=6, required=True, maximum=cap)


def validate_service_line(session: Session, line: PackageServiceLine) -> None:
    errors: dict = {}
    _with_defaults(line)
    require(errors, "package", _related(session, line, "package", Package) is not None,
            "is required")
    require(errors, "service", _related(session, line, "service", Service) is not None,
            "is required")
    _text(errors, "label", line.label)
    _count(errors, "quantity", line.quantity, maximum=MAX_LINE_QUANTITY)
    code = line.fcc_technology_code
    if code is not None:
        require(errors, "fcc_technology_code", fcc.is_known(code),
                f"{code} is not an FCC BDC fixed technology code "
                f"({', '.join(str(c) for c in fcc.FIXED_TECHNOLOGY_CODES)})")
    raise_if(errors)


def validate_inclusion(session: Session, inclusion: PackageInclusion) -> None:
    errors: dict = {}
    _with_defaults(inclusion)
    require(errors, "package", _related(session, inclusion, "package", Package) is not None,
            "is required")
    require(errors, "item", _related(session, inclusion, "item", Item) is not None,
            "is required")
    _count(errors, "quantity", inclusion.quantity, maximum=MAX_LINE_QUANTITY)
    _decimal(errors, "recurring_price", inclusion.recurring_price)
    raise_if(errors)


_BURST = ("burst_download", "burst_upload", "burst_threshold_download", "burst_threshold_upload",
          "burst_time_seconds")


def validate_internet_profile(session: Session, profile: InternetProfile) -> None:
    errors: dict = {}
    _with_defaults(profile)
    package = _related(session, profile, "package", Package)
    require(errors, "package", package is not None, "is required")
    if package is not None:
        with session.no_autoflush:
            other = session.scalar(select(InternetProfile.id).where(
                InternetProfile.package_id == package.id,
                InternetProfile.id.is_distinct_from(profile.id)))
        require(errors, "package", other is None, "already has an Internet profile")
    for field in ("download_speed", "upload_speed"):
        _count(errors, field, getattr(profile, field))
    _choice(errors, "speed_unit", profile.speed_unit, SPEED_UNITS)
    _check_burst(errors, profile)
    _check_throttle(errors, profile)
    _choice(errors, "usage_billing_basis", profile.usage_billing_basis, USAGE_BASES)
    _decimal(errors, "usage_included_amount", profile.usage_included_amount)
    _decimal(errors, "usage_price_per_unit", profile.usage_price_per_unit,
             required=bool(profile.usage_billing_enabled))
    raise_if(errors)


def _check_burst(errors: dict, profile: InternetProfile) -> None:
    given = [f for f in _BURST if getattr(profile, f) is not None]
    if not given:
        return
    if len(given) != len(_BURST):
        for field in _BURST:
            if getattr(profile, field) is None:
                errors.setdefault(field, []).append(
                    "burst needs all of speed, threshold and time, or none of them")
        return
    for field in _BURST:
        _count(errors, field, getattr(profile, field))
    if any(f in errors for f in _BURST):
        return
    for direction in ("download", "upload"):
        base = getattr(profile, f"{direction}_speed")
        if not isinstance(base, int):
            continue
        require(errors, f"burst_{direction}", getattr(profile, f"burst_{direction}") > base,
                f"must be above the base {direction} speed ({base})")
        require(errors, f"burst_threshold_{direction}",
                getattr(profile, f"burst_threshold_{direction}") <= base,
                f"cannot exceed the base {direction} speed ({base})")


def _check_throttle(errors: dict, profile: InternetProfile) -> None:
    _count(errors, "data_limit_gb", profile.data_limit_gb, required=False)
    throttled = [d for d in ("download", "upload")
                 if getattr(profile, f"throttled_{d}") is not None]
    if (throttled or profile.disconnect_at_limit) and profile.data_limit_gb is None:
        errors.setdefault("data_limit_gb", []).append(
            "is required to throttle or disconnect at a limit")
    for direction in throttled:
        field, base = f"throttled_{direction}", getattr(profile, f"{direction}_speed")
        _count(errors, field, getattr(profile, field))
        if field not in errors and isinstance(base, int):
            require(errors, field, getattr(profile, field) < base,
                    f"must be below the base {direction} speed ({base})")


def restore_internet_profile_defaults(session: Session, package: Package) -> InternetProfile:
    """'Restore defaults': the package's Internet profile back to INTERNET_PROFILE_DEFAULTS."""
    profile = package.internet_profile
    if profile is None:
        profile = InternetProfile(package=package)
        session.add(profile)
    for field, value in INTERNET_PROFILE_DEFAULTS.items():
        setattr(profile, field, value)
    validate_internet_profile(session, profile)
    session.flush()
    return profile


def new_internet_profile(package: Package) -> InternetProfile:
    """A profile for `package` starting from the defaults (the caller adds and validates it)."""
    return InternetProfile(package=package, **INTERNET_PROFILE_DEFAULTS)


# --- delete guards -------------------------------------------------------------------------

def _subscription_models():
    """The subscriber domain's models, imported late: the catalog must not depend on it."""
    try:
        from headend.subscribers.models import ServiceInstance, Subscription
    except ImportError:
        return None, None
    return ServiceInstance, Subscription


def guard_service_line_delete(session: Session, line: PackageServiceLine) -> None:
    """A service line live subscriptions still deliver cannot be removed."""
    ServiceInstance, Subscription = _subscription_models()
    if ServiceInstance is None:
        return
    used = session.scalar(
        select(func.count(func.distinct(Subscription.id)))
        .join(ServiceInstance, ServiceInstance.subscription_id == Subscription.id)
        .where(ServiceInstance.package_service_line_id == line.id,
               Subscription.status.in_(LIVE_STATUSES))
    )
    if used:
        raise ValidationFailed({"service_lines": (
            f"service line '{line.label}' is used by {used} active subscription"
            f"{'s' if used != 1 else ''}; cancel or move them first")})


def guard_package_delete(session: Session, package: Package) -> None:
    """A package that any subscription (even a cancelled one, for its history) points at stays."""
    _, Subscription = _subscription_models()
    used = session.scalar(
        select(func.count(Subscription.id)).where(Subscription.package_id == package.id)
    ) if Subscription is not None else 0
    if used:
        raise ValidationFailed({"package": (
            f"package '{package.name}' has {used} subscription{'s' if used != 1 else ''}; "
            "deactivate it instead")})
    for line in package.service_lines:
        guard_service_line_delete(session, line)


# Uses are counted up to this many: an account can carry millions of ledger legs.
USE_COUNT_CAP = 1000


def _refuse_if_used(session: Session, field: str, label: str, uses) -> None:
    for model, column, what in uses:
        count = session.scalar(select(func.count()).select_from(
            select(model.id).where(column).limit(USE_COUNT_CAP).subquery()))
        if count:
            shown = f"{count}+" if count == USE_COUNT_CAP else str(count)
            raise ValidationFailed({field: f"{label} is used by {shown} {what}; deactivate it "
                                           "instead"})


def _posting_models():
    """Ledger legs and invoice lines, imported late: the ledger and billing depend on the
    catalog, not the other way round."""
    from headend.billing.models import InvoiceLine
    from headend.ledger.models import Leg
    return Leg, InvoiceLine


def guard_item_delete(session: Session, item: Item) -> None:
    _, InvoiceLine = _posting_models()
    _refuse_if_used(session, "item", f"item '{item.code}'", [
        (PackageInclusion, PackageInclusion.item_id == item.id, "package inclusion(s)"),
        (InvoiceLine, InvoiceLine.item_id == item.id, "invoice line(s)")])


def guard_tax_rate_delete(session: Session, rate: TaxRate) -> None:
    """A rate subscribers carry, or that taxed anything, stays (its history needs it)."""
    Leg, _ = _posting_models()
    from headend.billing.models import InvoiceLineTax
    from headend.subscribers.models import Subscriber

    _refuse_if_used(session, "tax_rate", f"tax rate '{rate.label}'", [
        (Subscriber, Subscriber.tax_rates.any(TaxRate.id == rate.id), "subscriber(s)"),
        (InvoiceLineTax, InvoiceLineTax.tax_rate_id == rate.id, "invoice line tax(es)"),
        (Leg, Leg.tax_rate_id == rate.id, "ledger leg(s)")])


def guard_service_delete(session: Session, service: Service) -> None:
    _refuse_if_used(session, "service", f"service '{service.name}'", [
        (PackageServiceLine, PackageServiceLine.service_id == service.id, "package line(s)")])


def guard_account_delete(session: Session, account: Account) -> None:
    """Postings are history: an account with ledger legs or invoice lines stays (on PostgreSQL
    a trigger of migration 0004 refuses the delete too; this says why, per field)."""
    Leg, InvoiceLine = _posting_models()
    _refuse_if_used(session, "account", f"account {account.code}", [
        (Item, Item.income_account_id == account.id, "item(s)"),
        (Account, Account.parent_id == account.id, "sub-account(s)"),
        (Leg, Leg.account_id == account.id, "ledger leg(s)"),
        (InvoiceLine, InvoiceLine.income_account_id == account.id, "invoice line(s)")])
