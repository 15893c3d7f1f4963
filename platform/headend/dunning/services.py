"""Collections rules in plain Python: the tenant's settings, per-subscriber overrides, promises
to pay, suspension and restore, and `after_payment` (called by the payments service inside the
payment's transaction).

What is overdue is derived from the invoices (the balance due of open or partly paid invoices
whose due date has passed), never a counter. A subscriber is suspended by the collections job
(`headend.dunning.collect`) and restored here, the moment a payment brings what is overdue back
within the grace amount. Only suspensions the job made are restored automatically
(`SubscriberCollection.suspended_on`); a suspension by staff ("Suspend now") stays until staff
lift it ("Restore now").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from headend.billing import drafting
from headend.billing.models import Invoice
from headend.db import utcnow
from headend.dunning.models import (
    ACTIONS,
    LATE_FEE_KINDS,
    CollectionSettings,
    Notice,
    ScheduledAction,
    SubscriberCollection,
    archived_on_for,
)
from headend.errors import ValidationFailed, raise_if, require
from headend.money import to_minor
from headend.payments.models import SavedPaymentMethod
from headend.plugins import events
from headend.subscribers.models import Subscriber, Subscription

OPEN_STATUSES = ("open", "partially_paid")  # invoices that still ask for money
MAX_DAYS = 3650
MAX_RETRIES = 10


# --- settings ---------------------------------------------------------------------------------

def collection_settings(session: Session) -> CollectionSettings:
    """The acting tenant's collection settings; the first call creates the row (race-safe: the
    unique key on tenant_id decides, the loser reads the winner's row)."""
    row = session.scalar(select(CollectionSettings))
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = CollectionSettings()
            session.add(row)
    except IntegrityError:
        row = session.scalar(select(CollectionSettings))
    return row


def _days(errors: dict, row, name: str, *, optional: bool = False, low: int = 0,
          high: int = MAX_DAYS) -> None:
    value = getattr(row, name)
    if value is None and optional:
        return
    require(errors, name, isinstance(value, int) and not isinstance(value, bool)
            and low <= value <= high, f"must be a whole number between {low} and {high}")


def _amount(errors: dict, row, name: str, *, optional: bool = True) -> None:
    value = getattr(row, name)
    if value is None:
        require(errors, name, optional, "is required")
        return
    require(errors, name, isinstance(value, Decimal) and value >= 0, "cannot be negative")


def validate_collection_settings(row: CollectionSettings) -> None:
    """Every field in range; errors name the field.

    A late fee needs its days and an amount; a percent fee is at most 100 % and its maximum is
    optional (no maximum: the percentage alone). Write-off needs a threshold, so that turning
    it on never writes off a large balance by surprise.
    """
    errors: dict[str, list[str]] = {}
    _days(errors, row, "retry_count", high=MAX_RETRIES)
    _days(errors, row, "retry_interval_days", low=1, high=90)
    _days(errors, row, "late_fee_days", optional=True)
    require(errors, "late_fee_kind", row.late_fee_kind in LATE_FEE_KINDS,
            f"must be one of: {', '.join(LATE_FEE_KINDS)}")
    _amount(errors, row, "late_fee_amount", optional=row.late_fee_days is None)
    _amount(errors, row, "late_fee_max")
    if row.late_fee_kind == "percent" and isinstance(row.late_fee_amount, Decimal):
        require(errors, "late_fee_amount", row.late_fee_amount <= 100,
                "a percentage cannot exceed 100")
    _days(errors, row, "rebill_fee_days", optional=True)
    _amount(errors, row, "rebill_fee_amount", optional=row.rebill_fee_days is None)
    _days(errors, row, "grace_days")
    _amount(errors, row, "grace_amount", optional=False)
    _days(errors, row, "suspension_notice_days", high=90)
    _days(errors, row, "writeoff_days")
    _amount(errors, row, "writeoff_threshold", optional=not row.writeoff_enabled)
    for name in ("auto_suspend", "auto_restore", "writeoff_enabled"):
        require(errors, name, isinstance(getattr(row, name), bool), "must be true or false")
    raise_if(errors)


SETTINGS_FIELDS = ("retry_count", "retry_interval_days", "late_fee_days", "late_fee_kind",
                   "late_fee_amount", "late_fee_max", "rebill_fee_days", "rebill_fee_amount",
                   "grace_days", "grace_amount", "auto_suspend", "auto_restore",
                   "suspension_notice_days", "writeoff_enabled", "writeoff_threshold",
                   "writeoff_days")


def update_collection_settings(session: Session, **values) -> CollectionSettings:
    """Change the acting tenant's settings; nothing changes when a value is refused."""
    unknown = [name for name in values if name not in SETTINGS_FIELDS]
    raise_if({name: ["is not a collection setting"] for name in unknown})
    row = collection_settings(session)
    before = {k: getattr(row, k) for k in values}
    for name, value in values.items():
        setattr(row, name, value)
    try:
        validate_collection_settings(row)
    except ValidationFailed:
        for name, value in before.items():
            setattr(row, name, value)
        raise
    session.flush()
    return row


# --- per subscriber ---------------------------------------------------------------------------

def _subscriber(session: Session, subscriber_id) -> Subscriber:
    sub = session.scalar(select(Subscriber).where(Subscriber.id == subscriber_id)) \
        if isinstance(subscriber_id, int) and not isinstance(subscriber_id, bool) else None
    if sub is None:
        raise ValidationFailed({"subscriber": "no such subscriber"})
    return sub


def subscriber_collection(session: Session, subscriber_id: int, *,
                          create: bool = True) -> SubscriberCollection | None:
    """The subscriber's overrides row (created on first use unless `create` is False)."""
    row = session.scalar(select(SubscriberCollection).where(
        SubscriberCollection.subscriber_id == subscriber_id))
    if row is not None or not create:
        return row
    sub = _subscriber(session, subscriber_id)
    try:
        with session.begin_nested():
            row = SubscriberCollection(subscriber_id=sub.id, tenant_id=sub.tenant_id,
                                       archived_on=archived_on_for(sub))
            session.add(row)
    except IntegrityError:
        row = session.scalar(select(SubscriberCollection).where(
            SubscriberCollection.subscriber_id == subscriber_id))
    return row


OVERRIDE_FIELDS = ("autopay", "autopay_method_id", "grace_days", "grace_amount",
                   "never_suspend", "no_late_fees")


def update_subscriber_collection(session: Session, subscriber_id: int,
                                 **values) -> SubscriberCollection:
    """Set a subscriber's autopay and overrides (None: the tenant's value); refused values
    change nothing. Autopay needs a saved method of this subscriber that is still on file."""
    unknown = [name for name in values if name not in OVERRIDE_FIELDS]
    raise_if({name: ["is not a collection override"] for name in unknown})
    sub = _subscriber(session, subscriber_id)
    row = subscriber_collection(session, sub.id)
    merged = {name: values.get(name, getattr(row, name)) for name in OVERRIDE_FIELDS}
    errors: dict[str, list[str]] = {}
    _days(errors, _Values(merged), "grace_days", optional=True)
    _amount(errors, _Values(merged), "grace_amount")
    method_id = merged["autopay_method_id"]
    if method_id is not None:
        method = session.scalar(select(SavedPaymentMethod).where(
            SavedPaymentMethod.id == method_id, SavedPaymentMethod.subscriber_id == sub.id,
            SavedPaymentMethod.removed_at.is_(None))) \
            if isinstance(method_id, int) and not isinstance(method_id, bool) else None
        require(errors, "autopay_method_id", method is not None,
                "must be a saved payment method of this subscriber")
    require(errors, "autopay_method_id", not merged["autopay"] or method_id is not None,
            "autopay needs a saved payment method")
    for name in ("autopay", "never_suspend", "no_late_fees"):
        require(errors, name, isinstance(merged[name], bool), "must be true or false")
    raise_if(errors)
    for name, value in merged.items():
        setattr(row, name, value)
    session.flush()
    return row


class _Values:
    def __init__(self, values: dict):
        self.__dict__.update(values)


# --- promises to pay --------------------------------------------------------------------------

def schedule_action(session: Session, subscriber_id, action: str, not_before, today: dt.date,
                    reason: str | None = None, created_by: str | None = None
                    ) -> ScheduledAction:
    """A promise to pay: the collections job does not take `action` ("suspend" or "late_fee")
    for the subscriber before `not_before`, which must be after today."""
    sub = _subscriber(session, subscriber_id)
    errors: dict[str, list[str]] = {}
    require(errors, "action", action in ACTIONS, f"must be one of: {', '.join(ACTIONS)}")
    ok_date = isinstance(not_before, dt.date) and not isinstance(not_before, dt.datetime)
    require(errors, "not_before", ok_date, "must be a date")
    if ok_date:
        require(errors, "not_before", not_before > today,
                f"must be after today ({today:%Y-%m-%d})")
        require(errors, "not_before", not_before <= today + dt.timedelta(days=366),
                "cannot be more than a year away")
    reason = (reason or "").strip()
    require(errors, "reason", 0 < len(reason) <= 255, "is required (at most 255 characters)")
    raise_if(errors)
    row = ScheduledAction(subscriber_id=sub.id, action=action, not_before=not_before,
                          reason=reason, created_by=created_by)
    session.add(row)
    session.flush()
    return row


def cancel_action(session: Session, action_id) -> ScheduledAction:
    row = session.scalar(select(ScheduledAction).where(ScheduledAction.id == action_id)) \
        if isinstance(action_id, int) and not isinstance(action_id, bool) else None
    if row is None:
        raise ValidationFailed({"scheduled_action": "no such promise to pay"})
    if row.cancelled_at is not None:
        raise ValidationFailed({"scheduled_action": "is already cancelled"})
    row.cancelled_at = utcnow()
    session.flush()
    return row


def deferred(action: str, today: dt.date, subscriber_id_column):
    """A correlated EXISTS: a live promise defers `action` for that subscriber past today."""
    return select(ScheduledAction.id).where(
        ScheduledAction.subscriber_id == subscriber_id_column, ScheduledAction.action == action,
        ScheduledAction.not_before > today, ScheduledAction.cancelled_at.is_(None)).exists()


# --- what is overdue --------------------------------------------------------------------------

def overdue_amount(session: Session, subscriber_id: int, today: dt.date) -> int:
    """The balance due of the subscriber's invoices whose due date has passed (minor units)."""
    return int(session.scalar(select(
        func.coalesce(func.sum(Invoice.total - Invoice.amount_paid), 0)).where(
        Invoice.subscriber_id == subscriber_id, Invoice.status.in_(OPEN_STATUSES),
        Invoice.due_date < today)))


@dataclass(frozen=True)
class Rules:
    """A subscriber's effective rules: the override where there is one, else the tenant's."""

    grace_days: int
    grace_amount: int  # minor units
    never_suspend: bool


def rules_for(settings: CollectionSettings, row: SubscriberCollection | None,
              currency: str) -> Rules:
    grace_days = row.grace_days if row is not None and row.grace_days is not None \
        else settings.grace_days
    amount = row.grace_amount if row is not None and row.grace_amount is not None \
        else settings.grace_amount
    return Rules(grace_days, to_minor(amount or Decimal(0), currency),
                 bool(row and row.never_suspend))


# --- suspension and restore -------------------------------------------------------------------

def restore(session: Session, subscriber: Subscriber, row: SubscriberCollection,
            today: dt.date) -> list[int]:
    """Undo the job's suspension: the subscriber back to active, the subscriptions it
    suspended (still suspended) back to active, `service_restored` for each, a notice."""
    ids = list(row.suspended_subscription_ids or [])
    restored = list(session.scalars(select(Subscription).where(
        Subscription.id.in_(ids), Subscription.status == "suspended"))) if ids else []
    for sub in restored:
        sub.status = "active"
    subscriber.status = "active"
    key = f"restored:{subscriber.id}:{row.suspended_on}"
    row.suspended_on, row.suspended_subscription_ids = None, None
    session.add(Notice(kind="restored", key=key, subscriber_id=subscriber.id,
                       message=f"Service restored on {today:%Y-%m-%d}."))
    session.flush()
    for sub in restored:
        events.fire("service_restored", tenant_id=subscriber.tenant_id, subscription_id=sub.id)
    return [s.id for s in restored]


def after_payment(session: Session, subscriber_id: int, today: dt.date) -> list[int]:
    """Called by the payments service after a processed payment, inside its transaction:
    restore the subscriber at once if the collections job suspended them and what is still
    overdue is now within their grace amount (and the tenant restores automatically).
    Returns the restored subscription ids (empty: nothing to restore)."""
    row = session.scalar(select(SubscriberCollection).where(
        SubscriberCollection.subscriber_id == subscriber_id,
        SubscriberCollection.suspended_on.is_not(None)).with_for_update())
    if row is None:
        return []
    subscriber = _subscriber(session, subscriber_id)
    settings = collection_settings(session)
    rules = rules_for(settings, row, drafting.currency(session))
    if subscriber.status != "suspended" or not settings.auto_restore \
            or overdue_amount(session, subscriber_id, today) > rules.grace_amount:
        return []
    return restore(session, subscriber, row, today)


# --- staff: suspend now, restore now ----------------------------------------------------------

def _staff_change(session: Session, subscriber: Subscriber, subscriptions: list,
                  kind: str, today: dt.date, actor: str | None) -> list[int]:
    """Staff's suspension ("suspended") or restore ("restored") of the subscriber and these
    subscriptions: their statuses, a notice saying who (its key is per action: several on
    one day are several notices), then `service_suspended` / `service_restored` for each."""
    status = "suspended" if kind == "suspended" else "active"
    for sub in subscriptions:
        sub.status = status
    subscriber.status = status
    session.add(Notice(kind=kind, key=f"{kind}:{subscriber.id}:staff:{utcnow():%Y%m%d%H%M%S%f}",
                       subscriber_id=subscriber.id,
                       message=f"Service {kind} on {today:%Y-%m-%d} by {actor or 'staff'}."))
    session.flush()
    for sub in subscriptions:
        events.fire(f"service_{kind}", tenant_id=subscriber.tenant_id, subscription_id=sub.id)
    return [s.id for s in subscriptions]


def _locked_subscriber(session: Session, subscriber_id) -> Subscriber:
    _subscriber(session, subscriber_id)
    return session.scalar(select(Subscriber).where(Subscriber.id == subscriber_id)
                          .with_for_update().execution_options(populate_existing=True))


def suspend_now(session: Session, subscriber_id: int, today: dt.date,
                actor: str | None = None) -> list[int]:
    """Staff suspend an active subscriber at once, whatever is owed: the subscriber and its
    active subscriptions become "suspended", `service_suspended` fires for each, a
    "suspended" notice says who did it. Not remembered as the job's suspension, so no payment
    lifts it: only Restore now does. Returns the suspended subscription ids."""
    subscriber = _locked_subscriber(session, subscriber_id)
    if subscriber.status != "active":
        raise ValidationFailed({"status": f"only an active subscriber can be suspended; this "
                                          f"one is {subscriber.status}"})
    return _staff_change(session, subscriber, [
        s for s in subscriber.subscriptions if s.status == "active"], "suspended", today, actor)


def restore_now(session: Session, subscriber_id: int, today: dt.date,
                actor: str | None = None) -> list[int]:
    """Staff lift a suspension at once, whatever is owed; returns the restored subscription
    ids, each told by `service_restored`.

    A suspension by the collections job restores exactly the subscriptions the job suspended
    (as a payment would); a suspension by staff, or a status set by hand, restores every
    suspended subscription of the subscriber (nothing but a suspension makes one suspended).
    While the account stays past grace the next collections run suspends it again: record a
    promise to pay to keep it restored."""
    subscriber = _locked_subscriber(session, subscriber_id)
    if subscriber.status != "suspended":
        raise ValidationFailed({"status": f"only a suspended subscriber can be restored; this "
                                          f"one is {subscriber.status}"})
    row = subscriber_collection(session, subscriber.id, create=False)
    if row is not None and row.suspended_on is not None:
        return restore(session, subscriber, row, today)
    return _staff_change(session, subscriber, list(session.scalars(select(Subscription).where(
        Subscription.subscriber_id == subscriber.id, Subscription.status == "suspended"))),
        "restored", today, actor)
