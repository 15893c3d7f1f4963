"""Taxing an invoice through the tenant's tax engine (a plugin behind TaxEngine).

The core decides which of the tenant's rates apply to each line; the engine does the arithmetic
(simple_tax) or its own jurisdiction lookup (avalara). A package's lines follow the tax option
of their SUBSCRIPTION (TaxSettings), a copy of the package's taken when the subscription is
added or changes package: editing a package taxes new subscriptions only, until the package's
"Apply" (`apply_package_taxes`) pushes its settings to all its active subscriptions.
- tax mode "none": the line is not taxed;
- "subscriber": the rates on the subscriber whose service it is, unless that subscriber is tax
  exempt (the exemption code goes to the engine, which then taxes nothing);
- "custom": the subscription's own rate (named after its package), the cycle rate on recurring
  lines, the setup rate on the setup line.
Lines of no package (items, fees, recurring custom lines) follow the subscriber's settings.

An engine that cannot be reached (TaxEngineUnavailable) is retried a few times in-process; after
that the invoice stays a draft with tax_status "waiting" and `retry_waiting_taxes` posts it
later. Posting to the engine is idempotent by document code (our invoice number), so a retry after
a timeout that did record the document adjusts it instead of recording a second one.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from headend.billing.models import Invoice, InvoiceLine, InvoiceLineTax
from headend.catalog.models import Package
from headend.catalog.services import LIVE_STATUSES
from headend.errors import NotFound, ValidationFailed
from headend.plugins.interfaces import (
    TaxEngine,
    TaxEngineRejected,
    TaxEngineUnavailable,
    TaxLine,
    TaxRateSpec,
    TaxRequest,
    TaxResult,
)
from headend.subscribers.models import PACKAGE_TAX_FIELDS, Subscriber, Subscription

# In-process attempts before the invoice waits, and the pauses between them (seconds).
BACKOFF = (0.0, 0.2, 0.5)
_CYCLE_KINDS = ("recurring", "proration", "inclusion", "hibernation")


@dataclass(frozen=True)
class TaxSettings:
    """The tax option a subscription's package lines are taxed by (PACKAGE_TAX_FIELDS), with
    the package name that labels a custom tax."""

    package_name: str
    tax_mode: str = "subscriber"
    custom_tax_kind: str | None = None
    custom_tax_cycle_rate: Decimal | None = None
    custom_tax_setup_rate: Decimal | None = None

    @classmethod
    def from_subscription(cls, subscription, package_name: str) -> TaxSettings:
        return cls(package_name, *(getattr(subscription, f) for f in PACKAGE_TAX_FIELDS))

    @classmethod
    def from_package(cls, package) -> TaxSettings:
        return cls(package.name, *(getattr(package, f) for f in PACKAGE_TAX_FIELDS))

    @classmethod
    def for_charge(cls, subscription, package) -> TaxSettings:
        """What taxes `package`'s charges on `subscription`: the subscription's own settings,
        except for a package it has not taken yet (a deferred downgrade billing its first
        period), whose settings it takes with that package."""
        if package.id == subscription.package_id:
            return cls.from_subscription(subscription, package.name)
        return cls.from_package(package)

    @property
    def taxed(self) -> bool:
        return self.tax_mode != "none"


@dataclass(frozen=True)
class Engine:
    engine: TaxEngine
    settings: dict


def engine_for(session: Session, plugin_id: str) -> Engine:
    """The tenant's chosen engine with its settings; an uninstalled one is a named error."""
    from headend.plugins.manager import current_manager
    from headend.plugins.services import plugin_settings

    engine = current_manager().get(plugin_id)
    if engine is None or engine.kind != "tax_engine":
        raise ValidationFailed({"tax_engine": f"{plugin_id!r} is not an installed tax engine"})
    return Engine(engine, plugin_settings(session, plugin_id, engine))


def tax_address(sub: Subscriber) -> dict[str, str]:
    prefix = "service" if sub.billing_same_as_service else "billing"
    get = lambda name: getattr(sub, f"{prefix}_{name}") or ""  # noqa: E731
    return {"line1": get("line1"), "city": get("city"), "region": get("region"),
            "country": get("country") or "US", "postal_code": get("postal_code")}


def _subscriber_rates(sub: Subscriber) -> tuple[tuple[TaxRateSpec, ...], str]:
    if sub.tax_exempt:
        return (), sub.tax_exemption_code or "EXEMPT"
    return tuple(TaxRateSpec(r.label, r.kind, r.rate, r.id) for r in sub.tax_rates
                 if r.active), ""


def _custom_rates(settings: TaxSettings, line: InvoiceLine) -> tuple[TaxRateSpec, ...]:
    rate = settings.custom_tax_setup_rate if line.kind == "setup" \
        else settings.custom_tax_cycle_rate
    if rate is None or not settings.custom_tax_kind:
        return ()
    label = f"{settings.package_name} {'setup ' if line.kind == 'setup' else ''}tax"
    return (TaxRateSpec(label, settings.custom_tax_kind, rate, None),)


def line_rates(line: InvoiceLine, subscriber: Subscriber, settings: TaxSettings | None
                ) -> tuple[tuple[TaxRateSpec, ...], str] | None:
    """The rates and exemption code a line is sent with; None: the line is not taxed at all.
    `settings`: those of the line's subscription (None for a line of no package).

    A taxable line goes to the engine even without rates: engines with their own jurisdiction
    tables (AvaTax) tax it from the address.
    """
    if not line.taxable or line.amount == 0:
        return None
    if settings is None or settings.tax_mode == "subscriber":
        rates, exemption = _subscriber_rates(subscriber)
    elif settings.tax_mode == "custom":
        rates, exemption = _custom_rates(settings, line), ""
    else:
        return None
    if line.amount < 0:  # a credit gives back percent taxes; flat taxes are per charge
        rates = tuple(r for r in rates if r.kind == "percent")
    elif line.kind == "setup" and settings is not None and settings.tax_mode == "subscriber":
        # A subscriber's flat taxes (a 911 fee) are per billing cycle, not per one-time fee;
        # the custom mode has its own setup-fee rate for that.
        rates = tuple(r for r in rates if r.kind == "percent")
    return rates, exemption


def build_request(session: Session, invoice: Invoice, document_code: str,
                  rounding: str) -> tuple[TaxRequest, dict[int, InvoiceLine]]:
    """The engine's view of `invoice`: one TaxLine per line that may carry tax."""
    settings = _tax_settings(session, {ln.subscription_id for ln in invoice.lines})
    subscribers = _subscribers(session, {ln.for_subscriber_id or invoice.subscriber_id
                                         for ln in invoice.lines} | {invoice.subscriber_id})
    lines, by_number = [], {}
    for n, line in enumerate(invoice.lines, start=1):
        own = settings.get(line.subscription_id)
        taxed = line_rates(line, subscribers[line.for_subscriber_id or invoice.subscriber_id],
                           own.for_period(line.period_start) if own else None)
        if taxed is None:
            continue
        rates, exemption = taxed
        lines.append(TaxLine(number=n, amount=line.amount, quantity=line.quantity,
                             item_code=(line.item.code if line.item else line.kind)[:50],
                             exemption_code=exemption, rates=rates))
        by_number[n] = line
    payer = subscribers[invoice.subscriber_id]
    request = TaxRequest(document_code=document_code, customer_code=payer.account_number,
                         date=invoice.invoice_date, currency=invoice.currency,
                         address=tax_address(payer), lines=tuple(lines), rounding=rounding)
    return request, by_number


@dataclass(frozen=True)
class _SubscriptionTaxes:
    """A subscription's tax settings, and those of the package a deferred downgrade switches it
    to from `scheduled_on` (until the billing applies it)."""

    own: TaxSettings
    scheduled_on: dt.date | None = None
    scheduled: TaxSettings | None = None

    def for_period(self, start: dt.date | None) -> TaxSettings:
        """What taxes a line of the period starting on `start` (the package billing it)."""
        if self.scheduled is not None and start is not None and start >= self.scheduled_on:
            return self.scheduled
        return self.own


def _tax_settings(session: Session, subscription_ids: set) -> dict[int, _SubscriptionTaxes]:
    """Each subscription's tax settings, by subscription id."""
    subscription_ids.discard(None)
    if not subscription_ids:
        return {}
    rows = session.execute(
        select(Subscription.id, Package.name, Subscription.scheduled_package_id,
               Subscription.scheduled_change_on,
               *(getattr(Subscription, f) for f in PACKAGE_TAX_FIELDS))
        .join(Package, Subscription.package_id == Package.id)
        .where(Subscription.id.in_(subscription_ids))).all()
    later = {p.id: TaxSettings.from_package(p) for p in session.scalars(select(Package).where(
        Package.id.in_({row[2] for row in rows if row[2] is not None})))}
    return {sub_id: _SubscriptionTaxes(TaxSettings(name, *values), scheduled_on,
                                       later.get(scheduled_id) if scheduled_on else None)
            for sub_id, name, scheduled_id, scheduled_on, *values in rows}


def _subscribers(session: Session, ids: set) -> dict[int, Subscriber]:
    return {s.id: s for s in session.scalars(select(Subscriber).where(Subscriber.id.in_(ids)))}


def store(invoice: Invoice, result: TaxResult, by_number: dict[int, InvoiceLine]) -> None:
    """Put the engine's taxes on the lines (replacing any earlier ones) and total them."""
    for line in invoice.lines:
        line.tax = 0
        line.taxes.clear()
    for line_result in result.lines:
        line = by_number.get(line_result.number)
        if line is None:
            continue
        line.tax = line_result.tax
        line.taxes.extend(
            InvoiceLineTax(tax_rate_id=d.tax_rate_id, jurisdiction=d.jurisdiction[:120],
                           rate=d.rate, amount=d.tax)
            for d in line_result.details if d.tax)
    invoice.tax_total = sum(line.tax for line in invoice.lines)
    invoice.subtotal = sum(line.amount for line in invoice.lines)
    invoice.total = invoice.subtotal + invoice.tax_total


def call_with_backoff(call: Callable[[], TaxResult], backoff=BACKOFF,
                      sleep=time.sleep) -> TaxResult | None:
    """`call` retried while the engine is unavailable; None when every attempt failed."""
    for pause in backoff:
        if pause:
            sleep(pause)
        try:
            return call()
        except TaxEngineUnavailable:
            continue
    return None


def rejected(exc: TaxEngineRejected) -> ValidationFailed:
    return ValidationFailed({"tax_engine": f"the tax engine refused the invoice: {exc}"})


def quote(session: Session, invoice: Invoice, plugin_id: str, rounding: str) -> TaxResult | None:
    """Taxes of a draft without recording anything with the engine (None: unavailable)."""
    chosen = engine_for(session, plugin_id)
    request, by_number = build_request(session, invoice, f"draft-{invoice.id or 0}", rounding)
    if not request.lines:
        result = TaxResult(0)
    else:
        try:
            result = call_with_backoff(lambda: chosen.engine.quote(chosen.settings, request),
                                       backoff=(0.0,))
        except TaxEngineRejected as exc:
            raise rejected(exc) from exc
        if result is None:
            return None
    store(invoice, result, by_number)
    return result


def post(session: Session, invoice: Invoice, plugin_id: str, rounding: str,
         backoff=BACKOFF) -> bool:
    """Record the taxes of a numbered invoice with the engine and put them on its lines.

    False when the engine stayed unavailable: nothing on the invoice changed but its attempts.
    """
    chosen = engine_for(session, plugin_id)
    request, by_number = build_request(session, invoice, invoice.number, rounding)
    invoice.tax_attempts = (invoice.tax_attempts or 0) + 1
    if not request.lines:
        store(invoice, TaxResult(0), by_number)
        return True
    try:
        result = call_with_backoff(lambda: chosen.engine.post(chosen.settings, request),
                                   backoff=backoff)
    except TaxEngineRejected as exc:
        raise rejected(exc) from exc
    if result is None:
        return False
    store(invoice, result, by_number)
    invoice.tax_engine_ref = result.engine_ref
    return True


def void(session: Session, invoice: Invoice, plugin_id: str) -> None:
    """Void the invoice's document with the engine; unreachable → refuse the void for now."""
    chosen = engine_for(session, plugin_id)
    try:
        chosen.engine.void(chosen.settings, invoice.number)
    except TaxEngineUnavailable as exc:
        raise ValidationFailed({"tax_engine": (
            f"the tax engine is unavailable ({exc}); nothing was voided, try again later")}
        ) from exc
    except TaxEngineRejected as exc:
        raise rejected(exc) from exc


# --- a package's "Apply" -------------------------------------------------------------------

@dataclass(frozen=True)
class AppliedTaxes:
    live: int  # the package's subscriptions that are billed (LIVE_STATUSES)
    updated: int  # those whose settings differed and were changed


def _live_of(package_id: int):
    return (Subscription.package_id == package_id, Subscription.status.in_(LIVE_STATUSES))


def live_subscription_count(session: Session, package_id: int) -> int:
    """How many subscriptions the package's "Apply" reaches."""
    return session.scalar(select(func.count(Subscription.id)).where(*_live_of(package_id)))


def apply_package_taxes(session: Session, package_id) -> AppliedTaxes:
    """The package's "Apply": its tax settings onto every subscription of it that is billed
    (pending, active, hibernating, suspended; a cancelled one keeps its history). Only rows
    that differ are written, through the ORM, so each change is audited with before/after."""
    package = session.scalar(select(Package).where(Package.id == package_id)) \
        if isinstance(package_id, int) and not isinstance(package_id, bool) else None
    if package is None:
        raise NotFound(f"package {package_id}")
    differs = or_(*(getattr(Subscription, f).is_distinct_from(getattr(package, f))
                    for f in PACKAGE_TAX_FIELDS))
    stale = session.scalars(select(Subscription).where(*_live_of(package.id), differs)
                            .order_by(Subscription.id)).all()
    updated = sum(sub.take_package_taxes(package) for sub in stale)
    session.flush()
    return AppliedTaxes(live_subscription_count(session, package.id), updated)
