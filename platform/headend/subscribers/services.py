"""Subscriber and subscription rules: validation, account numbers, search, adding packages."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from headend.catalog.models import CYCLES, Package, TaxRate
from headend.catalog.services import check_tax_settings
from headend.errors import NotFound, ValidationFailed, raise_if, require
from headend.money import parse_decimal
from headend.plugins import events
from headend.sequences import next_value
from headend.subscribers.models import (
    CUSTOMER_TYPES,
    SUBSCRIBER_STATUSES,
    ServiceInstance,
    Subscriber,
    SubscriberNote,
    Subscription,
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ACCOUNT_DIGITS = 6
# Packages an account manager may not pick for a subscriber.
_HIDDEN = "hidden"


# --- subscribers -------------------------------------------------------------------------------

def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _parent_id(sub: Subscriber) -> int | None:
    """The parent as the form or API set it: the relationship is current before a flush, the
    id column only after."""
    state = sa.inspect(sub)
    if "parent" in state.dict:
        parent = state.dict["parent"]
        return parent.id if parent is not None else None
    return sub.parent_id


def _creates_cycle(session: Session, sub: Subscriber) -> bool:
    """True when following parents from sub.parent_id leads back to sub."""
    seen = set()
    current = _parent_id(sub)
    while current is not None and current not in seen:
        if sub.id is not None and current == sub.id:
            return True
        seen.add(current)
        current = session.scalar(select(Subscriber.parent_id).where(Subscriber.id == current))
    return current is not None


def validate_subscriber(session: Session, sub: Subscriber) -> None:
    errors: dict = {}
    has_person = not _blank(sub.first_name) and not _blank(sub.last_name)
    require(errors, "last_name", has_person or not _blank(sub.company),
            "give a first and last name, or a company")
    if not _blank(sub.email):
        require(errors, "email", bool(_EMAIL.match(sub.email.strip())), "is not an email address")
    require(errors, "customer_type", sub.customer_type in CUSTOMER_TYPES,
            f"must be one of {', '.join(CUSTOMER_TYPES)}")
    require(errors, "status", sub.status in SUBSCRIBER_STATUSES,
            f"must be one of {', '.join(SUBSCRIBER_STATUSES)}")
    require(errors, "bill_day", sub.bill_day is not None and 1 <= sub.bill_day <= 28,
            "must be between 1 and 28")
    require(errors, "billing_cycle", sub.billing_cycle in CYCLES,
            f"must be one of {', '.join(CYCLES)}")
    for field, limit in (("latitude", 90), ("longitude", 180)):
        value = getattr(sub, field)
        require(errors, field, value is None or -limit <= value <= limit,
                f"must be between -{limit} and {limit}")
    parent_id = _parent_id(sub)
    if parent_id is not None:
        exists = session.scalar(select(Subscriber.id).where(Subscriber.id == parent_id))
        require(errors, "parent", exists is not None, "no such subscriber")
        require(errors, "parent", sub.id is None or parent_id != sub.id,
                "an account cannot be its own parent")
        if "parent" not in errors:
            require(errors, "parent", not _creates_cycle(session, sub),
                    "this parent would make a loop of parent accounts")
    require(errors, "account_number", sub.id is None or not _blank(sub.account_number),
            "is required")
    if not _blank(sub.account_number):
        clash = session.scalar(select(Subscriber.id).where(
            Subscriber.account_number == sub.account_number,
            Subscriber.id != sub.id if sub.id is not None else sa.true(),
        ))
        require(errors, "account_number", clash is None, "is already used")
    if sub.id is None and not sub.tax_exempt and not sub.tax_rates:
        required = session.scalar(
            select(TaxRate.id).where(TaxRate.require_on_new_subscriber.is_(True)).limit(1)
        )
        require(errors, "tax_rates", required is None,
                "choose a tax rate, or mark the subscriber tax exempt")
    if sub.tax_exempt:
        require(errors, "tax_exemption_code", not _blank(sub.tax_exemption_code),
                "is required for a tax-exempt subscriber")
    raise_if(errors)


ACCOUNT_SEQUENCE = "subscriber_account"


def next_account_number(session: Session) -> str:
    """The tenant's next free account number, zero-padded, from its "subscriber_account"
    sequence; numbers typed in by hand are skipped. Call it before the new subscriber is added
    to the session (the first call of a tenant flushes a savepoint)."""
    while True:
        number = next_value(session, ACCOUNT_SEQUENCE)
        candidate = str(number).zfill(ACCOUNT_DIGITS)
        taken = session.scalar(select(Subscriber.id).where(Subscriber.account_number == candidate))
        if taken is None:
            return candidate


def assign_account_number(session: Session, sub: Subscriber) -> None:
    if _blank(sub.account_number):
        sub.account_number = next_account_number(session)
    else:
        sub.account_number = sub.account_number.strip()


def subscriber_created(session: Session, sub: Subscriber) -> None:
    """Announce a new subscriber to plugins, once it has its id."""
    events.fire("subscriber_created", tenant_id=sub.tenant_id, subscriber_id=sub.id)


def apply_defaults(sub: Subscriber) -> None:
    for field, default in (("customer_type", "residential"), ("status", "prospect"),
                           ("billing_cycle", "monthly"), ("bill_day", 1),
                           ("billing_same_as_service", True), ("tax_exempt", False),
                           ("paper_invoice", False)):
        if getattr(sub, field) is None:
            setattr(sub, field, default)


def prepare_subscriber(session: Session, sub: Subscriber) -> None:
    """The validator of every subscriber write; a new one also gets defaults and a number."""
    if sub.id is None:
        apply_defaults(sub)
    with session.no_autoflush:
        validate_subscriber(session, sub)
    if sub.id is None:
        assign_account_number(session, sub)


def create_subscriber(session: Session, **fields) -> Subscriber:
    tax_rate_ids = fields.pop("tax_rate_ids", None)
    sub = Subscriber(**fields)
    if tax_rate_ids:
        sub.tax_rates = list(session.scalars(select(TaxRate).where(TaxRate.id.in_(tax_rate_ids))))
    prepare_subscriber(session, sub)
    session.add(sub)
    session.flush()
    subscriber_created(session, sub)
    return sub


def guard_subscriber_delete(session: Session, sub: Subscriber) -> None:
    if sub.subscriptions:
        raise ValidationFailed({"subscriptions": "cancel and remove its subscriptions first"})
    child = session.scalar(select(Subscriber.id).where(Subscriber.parent_id == sub.id).limit(1))
    if child is not None:
        raise ValidationFailed({"parent": "other accounts have this one as parent"})


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_clause(q: str):
    """Every word of `q` must occur in the subscriber's search text (digits-only for phones)."""
    words = []
    for word in (q or "").lower().split():
        if re.fullmatch(r"[\d()+.\-]+", word) and re.search(r"\d", word):
            word = re.sub(r"\D", "", word)
        words.append(word)
    if not words:
        return sa.true()
    return sa.and_(*(
        Subscriber.search_text.like(f"%{_like_escape(w)}%", escape="\\") for w in words
    ))


def search_subscribers(session: Session, q: str, limit: int = 25,
                       offset: int = 0) -> list[Subscriber]:
    stmt = (select(Subscriber).where(search_clause(q))
            .order_by(Subscriber.account_number).limit(limit).offset(offset))
    return list(session.scalars(stmt))


def get_subscriber(session: Session, subscriber_id: int) -> Subscriber:
    sub = session.scalar(select(Subscriber).where(Subscriber.id == subscriber_id))
    if sub is None:
        raise NotFound(f"subscriber {subscriber_id}")
    return sub


# --- notes ---------------------------------------------------------------------------------------

def validate_note(session: Session, note: SubscriberNote) -> None:
    errors: dict = {}
    require(errors, "body", not _blank(note.body), "is required")
    exists = note.subscriber_id is not None and session.scalar(
        select(Subscriber.id).where(Subscriber.id == note.subscriber_id))
    require(errors, "subscriber", bool(exists) or note.subscriber is not None,
            "no such subscriber")
    raise_if(errors)


def add_note(session: Session, subscriber_id: int, body: str, author: str) -> SubscriberNote:
    get_subscriber(session, subscriber_id)
    note = SubscriberNote(subscriber_id=subscriber_id, body=(body or "").strip(), author=author)
    validate_note(session, note)
    session.add(note)
    session.flush()
    return note


# --- subscriptions -------------------------------------------------------------------------------

def _decimal(value, field: str, errors: dict) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return parse_decimal(value, places=4)
    except ValueError as exc:
        errors.setdefault(field, []).append(str(exc))
        return None


def _int(value, field: str, errors: dict) -> int | None:
    try:
        if isinstance(value, (bool, float)):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        errors.setdefault(field, []).append("must be a whole number")
        return None


def offerable_packages(session: Session, q: str = "", limit: int = 20) -> list[Package]:
    """Active packages an account manager may add, filtered by a name fragment."""
    stmt = select(Package).where(Package.active.is_(True),
                                 Package.account_manager_visibility != _HIDDEN)
    if q.strip():
        stmt = stmt.where(sa.func.lower(Package.name).like(
            f"%{_like_escape(q.strip().lower())}%", escape="\\"))
    return list(session.scalars(stmt.order_by(Package.name).limit(limit)))


def validate_subscription(session: Session, sub: Subscription) -> None:
    """The rules of a package on a subscriber, for new and edited subscriptions alike."""
    errors: dict = {}
    subscriber = session.scalar(select(Subscriber).where(Subscriber.id == sub.subscriber_id)) \
        if sub.subscriber_id is not None else sub.subscriber
    require(errors, "subscriber", subscriber is not None, "no such subscriber")
    package = session.scalar(select(Package).where(Package.id == sub.package_id)) \
        if sub.package_id is not None else sub.package
    require(errors, "package", package is not None, "no such package")
    require(errors, "quantity",
            sub.quantity is not None and 1 <= sub.quantity <= MAX_SUBSCRIPTION_QUANTITY,
            f"must be between 1 and {MAX_SUBSCRIPTION_QUANTITY}")
    require(errors, "bill_day", sub.bill_day is None or 1 <= sub.bill_day <= 28,
            "must be between 1 and 28")
    if package is not None:
        if sub.id is None:
            require(errors, "package",
                    package.active and package.account_manager_visibility != _HIDDEN,
                    "this package is not offered")
            if subscriber is not None:
                require(errors, "package",
                        package.customer_type in ("both", subscriber.customer_type),
                        f"this package is not sold to {subscriber.customer_type} subscribers")
        offered = package.offered_cycles()
        require(errors, "billing_cycle", sub.billing_cycle in offered,
                "this package is not offered on that cycle"
                + (f" (choose {', '.join(offered)})" if offered else ""))
        if sub.custom_price is not None:
            require(errors, "custom_price", package.allow_custom_pricing,
                    "this package does not allow custom pricing")
            _decimal(sub.custom_price, "custom_price", errors)
    check_tax_settings(errors, sub)
    raise_if(errors)


# Each unit becomes service instances with their own credentials: a bound keeps one request
# from creating an unbounded number of rows.
MAX_SUBSCRIPTION_QUANTITY = 100


def instantiate_services(session: Session, subscription: Subscription,
                         package: Package) -> list[ServiceInstance]:
    """One pending ServiceInstance per unit: line quantity x subscription quantity."""
    instances = []
    for line in package.service_lines:
        units = line.quantity * subscription.quantity
        for n in range(1, units + 1):
            label = line.label if units == 1 else f"{line.label} #{n}"
            instances.append(ServiceInstance(subscription=subscription, service_line=line,
                                             package_service_line_id=line.id, label=label,
                                             status="pending"))
    session.add_all(instances)
    return instances


def subscription_added(session: Session, subscription: Subscription) -> None:
    """Everything a new subscription starts with; called in the transaction that inserts it."""
    package = session.get(Package, subscription.package_id)
    instantiate_services(session, subscription, package)
    session.flush()
    events.fire("subscription_added", tenant_id=subscription.tenant_id,
                subscription_id=subscription.id)


def add_package(session: Session, subscriber_id, package_id, *, quantity=1, billing_cycle=None,
                custom_price=None, bill_start_date: dt.date | None = None,
                bill_day=None) -> Subscription:
    """Put a package on a subscriber as a PENDING subscription with its service instances."""
    errors: dict = {}
    subscriber_id = _int(subscriber_id, "subscriber", errors)
    package_id = _int(package_id, "package", errors) if package_id not in (None, "") else None
    quantity = _int(quantity, "quantity", errors)
    price = _decimal(custom_price, "custom_price", errors)
    bill_day = None if bill_day in (None, "") else _int(bill_day, "bill_day", errors)
    raise_if(errors)
    package = session.scalar(select(Package).where(Package.id == package_id)) \
        if package_id not in (None, "") else None
    if billing_cycle in (None, "") and package is not None:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.id == subscriber_id))
        offered = package.offered_cycles()
        preferred = subscriber.billing_cycle if subscriber is not None else None
        billing_cycle = preferred if preferred in offered else next(iter(offered), None)
    subscription = Subscription(
        subscriber_id=subscriber_id, package_id=package.id if package else None,
        quantity=quantity, custom_price=price, billing_cycle=billing_cycle, bill_day=bill_day,
        bill_start_date=bill_start_date, status="pending",
    )
    if package is not None:
        subscription.take_package_taxes(package)
    validate_subscription(session, subscription)
    session.add(subscription)
    session.flush()
    subscription_added(session, subscription)
    return subscription


def unit_price(package: Package, cycle: str, custom_price: Decimal | None = None) -> Decimal:
    if custom_price is not None and package.allow_custom_pricing:
        return custom_price
    return package.offered_cycles()[cycle]


def price_preview(package: Package, cycle: str, quantity: int = 1,
                  custom_price: Decimal | None = None) -> dict:
    """What the subscription will cost per cycle, before it is created."""
    unit = unit_price(package, cycle, custom_price)
    return {
        "unit_price": unit,
        "quantity": quantity,
        "line_total": unit * quantity,
        "setup_fee": package.setup_fee or Decimal(0),
    }
