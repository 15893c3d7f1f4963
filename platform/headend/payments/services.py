"""Receiving money, giving it back, and keeping cards: plain Python over a session.

Ledger: a processed payment posts DEBIT 1000 Cash (cash) or 1010 Undeposited Funds (every other
method: checks, cards, eCheck, transfers are not money in the bank until they are deposited or
the processor pays out, which is when staff move them to the bank account) / CREDIT 1200 Accounts
Receivable with the subscriber. A refund posts the mirror for its amount on the same two
accounts. The entries are keyed `payment:{id}` / `refund:{id}`, so posting twice is impossible.

Allocation: a processed payment settles the chosen invoices in the order given, else the
subscriber's open invoices oldest due first; what is left is `unapplied` account credit, which
`billing.memos.apply_account_credit` spends on the next invoice exactly as credit memos are.
A refund gives back the unapplied credit first, then takes money off the newest invoices.

Gateways: each call carries our transaction id, which the gateway hands its provider as the
idempotency key, and the Payment row is unique by it: asking twice, or two workers at once,
gives one payment and one charge. A decline is a Payment with status "failed" (and the
provider's decline code), never an exception; "undefined" (the answer was lost) and "pending"
are settled later by `reconcile_undefined` or by the provider's webhook.

Each call writes inside one savepoint; the caller commits (as with ledger.post_entry).
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from headend.billing.models import Invoice
from headend.catalog.services import ACCOUNTS_RECEIVABLE, CASH, UNDEPOSITED_FUNDS
from headend.errors import DomainError, NotFound, ValidationFailed, raise_if, require
from headend.ledger.models import JournalEntry
from headend.ledger.services import LegSpec, ledger_settings, post_entry, refuse_closed_books
from headend.payments.allocation import allocate, unallocate
from headend.payments.models import (
    PAYMENT_METHODS,
    PAYMENT_SOURCES,
    GatewayEvent,
    GatewayRoute,
    Payment,
    PaymentAllocation,
    Refund,
    SavedPaymentMethod,
)
from headend.plugins import events
from headend.plugins.interfaces import (
    GatewayUnavailable,
    PaymentGateway,
    PaymentResult,
    PaymentStatus,
)
from headend.plugins.models import PluginConfiguration
from headend.sequences import next_value
from headend.subscribers.models import Subscriber
from headend.tenancy.context import current_scope
from headend.tenancy.models import Tenant

RECEIPT_SEQUENCE = "receipt"
OPEN_STATUSES = ("open", "partially_paid")
MANUAL = "manual"  # takes cash, check, bank transfer and other when no route says otherwise
MAX_AMOUNT = 10**12
METHOD_LABELS = {"card": "card", "echeck": "eCheck", "cash": "cash", "check": "check",
                 "bank_transfer": "bank transfer", "other": "other"}
# A gateway's answer as the status we record.
_STATUS = {PaymentStatus.PROCESSED: "processed", PaymentStatus.PENDING: "pending",
           PaymentStatus.UNDEFINED: "undefined", PaymentStatus.ERROR: "failed",
           PaymentStatus.CANCELLED: "failed"}
UNSETTLED = ("pending", "undefined")
# How old an unsettled payment must be before reconciliation asks about it.
SETTLE_AFTER = dt.timedelta(minutes=5)


class GatewayDown(DomainError):
    """The provider could not be reached for a call that is not a payment (saving or removing
    a card): nothing changed, try again later. Views answer 503."""


@dataclass(frozen=True)
class Gateway:
    plugin: PaymentGateway
    settings: Mapping

    @property
    def plugin_id(self) -> str:
        return self.plugin.plugin_id


# --- gateways per method ---------------------------------------------------------------------

def _tenant_id() -> int:
    tenant_id = current_scope().tenant_id
    if tenant_id is None:
        raise ValidationFailed({"tenant": "choose a tenant to act for (Platform > Act for "
                                          "tenant)"})
    return tenant_id


def _manager():
    from headend.plugins.manager import current_manager

    return current_manager()


# The acting tenant's payment set-up, read once per session: a job charging thousands of
# invoices (or a worker posting payments) reads its currency, routes, enabled plugins and
# gateway settings once, not five queries per payment. A session that writes a plugin
# configuration, a route or a tenant, or rolls back, reads them again; another session's
# change is seen by the next request or job.
_SETUP = "headend.payments.setup"
_SETUP_MODELS = (PluginConfiguration, GatewayRoute, Tenant)


@dataclass(frozen=True)
class _Setup:
    currency: str
    chosen: dict[str, str]  # billing method -> plugin_id, as routed by the tenant
    enabled: frozenset[str]
    settings: dict[str, Mapping]  # plugin_id -> its settings, filled when first asked for


def _setup(session: Session) -> _Setup:
    tenant_id = _tenant_id()
    cache = session.info.setdefault(_SETUP, {})
    if tenant_id not in cache:
        cache[tenant_id] = _Setup(
            currency=session.get(Tenant, tenant_id).currency,
            chosen=dict(session.execute(
                sa.select(GatewayRoute.method, GatewayRoute.plugin_id)).all()),
            enabled=frozenset(_manager().enabled_ids(tenant_id)), settings={})
    return cache[tenant_id]


@sa.event.listens_for(Session, "after_flush")
def _forget_changed_setup(session: Session, flush_context) -> None:
    if _SETUP in session.info and any(isinstance(obj, _SETUP_MODELS) for obj in itertools.chain(
            session.new, session.dirty, session.deleted)):
        del session.info[_SETUP]


@sa.event.listens_for(Session, "after_soft_rollback")
def _forget_setup(session: Session, previous_transaction) -> None:
    session.info.pop(_SETUP, None)


def enabled_gateways(session: Session) -> list[PaymentGateway]:
    """The payment_gateway plugins the acting tenant has enabled."""
    return _manager().plugins_for(_tenant_id(), PaymentGateway.kind)


def _gateway(session: Session, plugin_id: str, field: str) -> Gateway:
    """An installed gateway the tenant enabled, with its settings; else an error on `field`."""
    from headend.plugins.services import plugin_settings

    plugin = _manager().get(plugin_id)
    if plugin is None or plugin.kind != PaymentGateway.kind:
        raise ValidationFailed({field: f"the gateway {plugin_id!r} is not installed"})
    setup = _setup(session)
    if plugin_id not in setup.enabled:
        raise ValidationFailed({field: f"the gateway {plugin.name} is not enabled (Plugins)"})
    if plugin_id not in setup.settings:
        setup.settings[plugin_id] = plugin_settings(session, plugin_id, plugin)
    return Gateway(plugin, setup.settings[plugin_id])


def routes(session: Session) -> dict[str, str | None]:
    """Which plugin takes each billing method now: the tenant's route, else the manual
    gateway's default for its methods when it is enabled, else None."""
    setup = _setup(session)
    manual = _manager().get(MANUAL)
    manual_on = manual is not None and MANUAL in setup.enabled
    return {method: setup.chosen.get(method) or (
        MANUAL if manual_on and method in manual.methods else None)
        for method in PAYMENT_METHODS}


def gateway_for(session: Session, method: str) -> Gateway:
    """The tenant's routed, enabled gateway for a billing method, with its settings."""
    if method not in PAYMENT_METHODS:
        raise ValidationFailed({"method": f"must be one of: {', '.join(PAYMENT_METHODS)}"})
    plugin_id = routes(session)[method]
    if plugin_id is None:
        raise ValidationFailed({"method": (
            f"no payment gateway takes {METHOD_LABELS[method]} payments: choose one on the "
            "Payment gateways page")})
    gateway = _gateway(session, plugin_id, "method")
    if method not in gateway.plugin.methods:
        raise ValidationFailed({"method": f"{gateway.plugin.name} does not take "
                                          f"{METHOD_LABELS[method]} payments"})
    return gateway


def set_route(session: Session, method: str, plugin_id: str | None) -> GatewayRoute | None:
    """Send a billing method to one enabled gateway that takes it (None: back to the
    default)."""
    if method not in PAYMENT_METHODS:
        raise ValidationFailed({"method": f"must be one of: {', '.join(PAYMENT_METHODS)}"})
    _tenant_id()
    route = session.scalar(sa.select(GatewayRoute).where(GatewayRoute.method == method))
    if not plugin_id:
        if route is not None:
            session.delete(route)
            session.flush()
        return None
    gateway = _gateway(session, plugin_id, method)
    if method not in gateway.plugin.methods:
        raise ValidationFailed({method: f"{gateway.plugin.name} does not take "
                                        f"{METHOD_LABELS[method]} payments"})
    if route is None:
        route = GatewayRoute(method=method)
        session.add(route)
    route.plugin_id = plugin_id
    session.flush()
    return route


# --- small helpers ---------------------------------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_date(value) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def _one(session: Session, model, pk, *, lock: bool = False):
    """This tenant's row `pk` (a SELECT, so scoping applies), locked and re-read if asked."""
    if not _is_int(pk):
        return None
    stmt = sa.select(model).where(model.id == pk)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalar(stmt)


def _text(errors: dict, field: str, value, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > limit:
        errors.setdefault(field, []).append(f"must be text of at most {limit} characters")
        return None
    return value.strip() or None


def _open_day(session: Session, day: dt.date) -> dt.date:
    """`day`, or the first day after closed books (for money settled after they closed)."""
    settings = ledger_settings(session)
    if settings is not None and settings.closing_date is not None \
            and day <= settings.closing_date and settings.closing_mode == "block":
        return settings.closing_date + dt.timedelta(days=1)
    return day


def _currency(session: Session) -> str:
    return _setup(session).currency


def deposit_account(method: str) -> str:
    """Cash goes to the till; everything else waits in undeposited funds."""
    return CASH if method == "cash" else UNDEPOSITED_FUNDS


def describe(payment: Payment) -> str:
    """How the payment reads in the account history: "R-000012 (check 1042)"."""
    how = METHOD_LABELS.get(payment.method, payment.method)
    if payment.saved_method is not None and payment.saved_method.last4:
        how = f"{payment.saved_method.brand or how} ending {payment.saved_method.last4}"
    elif payment.reference:
        how = f"{how} {payment.reference}"
    return f"{payment.number} ({how})"


def get_payment(session: Session, payment_id) -> Payment:
    payment = _one(session, Payment, payment_id)
    if payment is None:
        raise NotFound(f"no payment {payment_id}")
    return payment


def _by_transaction(session: Session, model, transaction_id: str):
    return session.scalar(sa.select(model).where(model.transaction_id == transaction_id))


def refundable(session: Session, payment: Payment) -> int:
    """What can still be given back: the amount less processed refunds and those whose
    outcome is not known yet (they may still go through)."""
    if payment.status != "processed":
        return 0
    waiting = session.scalar(sa.select(sa.func.coalesce(sa.func.sum(Refund.amount), 0)).where(
        Refund.payment_id == payment.id, Refund.status.in_(UNSETTLED)))
    return payment.amount - payment.refunded - int(waiting)


# --- receiving a payment ---------------------------------------------------------------------

def _validate_payment(session, subscriber_id, amount, method, received_on, reference,
                      invoice_ids, saved_method_id, source, transaction_id, memo,
                      allow_archived) -> tuple[Subscriber, SavedPaymentMethod | None, dict]:
    errors: dict[str, list[str]] = {}
    require(errors, "amount", _is_int(amount) and 0 < amount <= MAX_AMOUNT,
            "must be a positive amount (integer minor units)")
    require(errors, "method", method in PAYMENT_METHODS,
            f"must be one of: {', '.join(PAYMENT_METHODS)}")
    require(errors, "received_on", _is_date(received_on), "must be a date")
    require(errors, "source", source in PAYMENT_SOURCES,
            f"must be one of: {', '.join(PAYMENT_SOURCES)}")
    require(errors, "transaction_id", transaction_id is None or (
        isinstance(transaction_id, str) and 0 < len(transaction_id) <= 64),
        "must be text of at most 64 characters")
    texts = {"reference": _text(errors, "reference", reference, 120),
             "memo": _text(errors, "memo", memo, 255)}
    if method == "check" and "reference" not in errors:
        require(errors, "reference", bool(texts["reference"]), "a check needs its number")
    require(errors, "invoice_ids", invoice_ids is None or (
        isinstance(invoice_ids, list | tuple) and all(map(_is_int, invoice_ids))),
        "must be a list of invoice ids")
    subscriber = _one(session, Subscriber, subscriber_id)
    require(errors, "subscriber", subscriber is not None, "does not exist")
    if subscriber is not None and subscriber.status == "archived" and not allow_archived:
        errors.setdefault("subscriber", []).append(
            "is archived: confirm the payment to an archived account to record it")
    saved = None
    if saved_method_id is not None:
        saved = _one(session, SavedPaymentMethod, saved_method_id)
        require(errors, "saved_method", saved is not None and saved.removed_at is None
                and saved.subscriber_id == subscriber_id,
                "is not a saved payment method of this subscriber")
        if saved is not None and "saved_method" not in errors:
            require(errors, "saved_method", saved.method == method,
                    f"is a saved {METHOD_LABELS.get(saved.method, saved.method)}, not "
                    f"{METHOD_LABELS.get(method, method)}")
    raise_if(errors)
    refuse_closed_books(session, received_on, "received_on")
    return subscriber, saved, texts


def _payment_gateway(session: Session, method: str, saved: SavedPaymentMethod | None
                     ) -> Gateway:
    """A saved method is charged through the gateway that keeps it; otherwise the method's
    routed gateway, which must not need a saved method."""
    if saved is not None:
        return _gateway(session, saved.plugin_id, "saved_method")
    gateway = gateway_for(session, method)
    if gateway.plugin.saves_methods:
        raise ValidationFailed({"saved_method": (
            f"{METHOD_LABELS[method]} payments through {gateway.plugin.name} charge a saved "
            "payment method: choose one (add a card first)")})
    return gateway


def _claim(session: Session, payment: Payment) -> Payment:
    """Insert the payment, or return the one already recorded under its transaction id (a
    concurrent insert waits for the first one's commit, then finds it)."""
    try:
        with session.begin_nested():
            session.add(payment)
    except IntegrityError:
        existing = _by_transaction(session, Payment, payment.transaction_id)
        if existing is None:
            raise
        return existing
    return payment


def _chosen_invoices(session: Session, subscriber_id: int, invoice_ids) -> list[Invoice]:
    """The invoices the payment settles: the chosen ones in the order given, else the
    subscriber's open invoices, oldest due first. Locked in id order, as every payment path
    locks invoices (payments.allocation), whatever order they settle in."""
    if invoice_ids is None:
        return sorted(session.scalars(
            sa.select(Invoice)
            .where(Invoice.subscriber_id == subscriber_id, Invoice.status.in_(OPEN_STATUSES))
            .order_by(Invoice.id)
            .with_for_update().execution_options(populate_existing=True)),
            key=lambda inv: (inv.due_date, inv.invoice_date, inv.id))
    wanted = list(dict.fromkeys(invoice_ids))
    found = {inv.id: inv for inv in session.scalars(
        sa.select(Invoice).where(Invoice.id.in_(wanted)).order_by(Invoice.id)
        .with_for_update().execution_options(populate_existing=True))}
    errors: dict[str, list[str]] = {}
    for invoice_id in wanted:
        invoice = found.get(invoice_id)
        if invoice is None:
            require(errors, "invoice_ids", False, f"invoice {invoice_id} does not exist")
        elif invoice.subscriber_id != subscriber_id:
            require(errors, "invoice_ids", False,
                    f"invoice {invoice.number} belongs to another subscriber")
        elif invoice.status not in OPEN_STATUSES:
            require(errors, "invoice_ids", False,
                    f"invoice {invoice.number or invoice.id} is "
                    f"{invoice.status.replace('_', ' ')}, not open")
    raise_if(errors)
    return [found[invoice_id] for invoice_id in wanted]


def _record(target, result: PaymentResult) -> None:
    """Keep what the gateway said on a Payment or Refund."""
    target.status = _STATUS.get(result.status, "failed")
    target.provider_ref = result.provider_ref or target.provider_ref
    if hasattr(target, "decline_code"):
        target.decline_code = (result.decline_code or None) and result.decline_code[:60]
    target.message = (result.message or "")[:255] or None


def _post_payment(session: Session, payment: Payment, invoices: Sequence[Invoice],
                  entry_date: dt.date) -> None:
    """Allocate, number and post a payment the gateway reported processed (it has no
    allocation yet: it was pending, undefined or new).

    The receipt number bumps the tenant's receipt sequence, whose row lock every other payment
    of the tenant then waits for until this transaction commits; so the allocations and the
    restore check (a suspended subscriber back within grace) come before it, and only the
    ledger entry, whose description carries the number, after."""
    from headend.dunning.services import after_payment

    payment.status = "processed"
    payment.unapplied = payment.amount
    for invoice in invoices:
        amount = min(payment.unapplied, invoice.balance_due)
        if amount > 0:
            allocate(session, payment, invoice, amount, first=True)
    after_payment(session, payment.subscriber_id, dt.date.today())
    if payment.number is None:
        payment.number = f"R-{next_value(session, RECEIPT_SEQUENCE):06d}"
    with session.no_autoflush:  # the number is written with the entry, in one flush
        entry = post_entry(
            session, key=f"payment:{payment.id}", entry_date=entry_date, source_type="payment",
            source_id=payment.id, description=f"Payment {describe(payment)}"[:255], legs=[
                LegSpec(deposit_account(payment.method), debit=payment.amount),
                LegSpec(ACCOUNTS_RECEIVABLE, credit=payment.amount,
                        subscriber_id=payment.subscriber_id)])
    payment.posted_entry_id = entry.id
    session.flush()


def _payment_received(payment: Payment) -> None:
    """Tell the plugins, when one listens (finding which ones are on costs a query)."""
    if _manager().hook.payment_received.get_hookimpls():
        events.fire("payment_received", tenant_id=payment.tenant_id, payment_id=payment.id)


def receive_payment(session: Session, subscriber_id: int, amount: int, method: str,
                    received_on: dt.date, *, reference: str | None = None,
                    invoice_ids: Sequence[int] | None = None,
                    saved_method_id: int | None = None, source: str = "manual",
                    transaction_id: str | None = None, memo: str | None = None,
                    allow_archived: bool = False) -> Payment:
    """Take `amount` minor units from the subscriber through the method's gateway.

    Returns the Payment: "processed" (posted, allocated, receipt numbered), "failed" (declined:
    decline_code and message say why, nothing posted), "pending" or "undefined" (nothing posted
    until the provider tells). The same transaction_id again returns the first Payment.
    """
    if isinstance(transaction_id, str):
        existing = _by_transaction(session, Payment, transaction_id)
        if existing is not None:
            return existing
    with session.begin_nested():
        subscriber, saved, texts = _validate_payment(
            session, subscriber_id, amount, method, received_on, reference, invoice_ids,
            saved_method_id, source, transaction_id, memo, allow_archived)
        gateway = _payment_gateway(session, method, saved)
        currency = _currency(session)
        new = Payment(  # the loaded rows, not their ids: the tenant check needs no query
            subscriber=subscriber, method=method, amount=amount, currency=currency,
            received_on=received_on, reference=texts["reference"], memo=texts["memo"],
            source=source, plugin_id=gateway.plugin_id,
            transaction_id=transaction_id or f"pay-{uuid.uuid4().hex}",
            saved_method=saved, status="pending", unapplied=0, refunded=0)
        payment = _claim(session, new)
        if payment is not new:
            return payment  # recorded meanwhile by a concurrent call
        invoices = _chosen_invoices(session, subscriber.id, invoice_ids)
        result = gateway.plugin.purchase(
            gateway.settings, payment.transaction_id, amount, currency,
            saved.provider_ref if saved else method, saved.customer_ref if saved else None)
        _record(payment, result)
        if payment.status == "processed":
            _post_payment(session, payment, invoices, received_on)
            _payment_received(payment)
        session.flush()
    return payment


@dataclass(frozen=True)
class AllocationPreview:
    """What a payment of `amount` would settle, and the account credit it would leave."""

    invoices: list[tuple[Invoice, int]]
    credit: int


def allocation_preview(session: Session, subscriber_id: int, amount: int,
                       invoice_ids: Sequence[int] | None = None) -> AllocationPreview:
    """The allocation `receive_payment` would make now (reads only, locks nothing)."""
    if invoice_ids is None:
        invoices = open_invoices(session, subscriber_id)
    else:
        invoices = [inv for inv in open_invoices(session, subscriber_id)
                    if inv.id in set(invoice_ids)]
        invoices.sort(key=lambda inv: list(invoice_ids).index(inv.id))
    left, rows = max(amount, 0), []
    for invoice in invoices:
        take = min(left, invoice.balance_due)
        if take > 0:
            rows.append((invoice, take))
            left -= take
    return AllocationPreview(rows, left)


def open_invoices(session: Session, subscriber_id: int) -> list[Invoice]:
    """The subscriber's open invoices, oldest due first (the order payments settle them)."""
    return list(session.scalars(
        sa.select(Invoice)
        .where(Invoice.subscriber_id == subscriber_id, Invoice.status.in_(OPEN_STATUSES))
        .order_by(Invoice.due_date, Invoice.invoice_date, Invoice.id)))


def _settle_later(session: Session, payment: Payment, result: PaymentResult) -> bool:
    """Apply a later answer (webhook, reconciliation) to a pending or undefined payment;
    whether it changed. Processed posts on its date (or the first open day) and settles the
    invoice an autopay charge was made for first, then the subscriber's open invoices oldest
    first. An autopay charge's attempt follows it."""
    from headend.dunning.autopay import follow_payment
    from headend.dunning.models import AutopayAttempt

    status = _STATUS.get(result.status, "failed")
    if payment.status not in UNSETTLED or status in UNSETTLED:
        return False
    _record(payment, result)
    if status == "processed":
        charged_for = session.scalar(sa.select(AutopayAttempt.invoice_id)
                                     .where(AutopayAttempt.payment_id == payment.id))
        invoices = sorted(_chosen_invoices(session, payment.subscriber_id, None),
                          key=lambda inv: inv.id != charged_for)  # stable: the rest by age
        _post_payment(session, payment, invoices, _open_day(session, payment.received_on))
        _payment_received(payment)
    follow_payment(session, payment)
    session.flush()
    return True


# --- refunds ---------------------------------------------------------------------------------

def _post_refund(session: Session, refund: Refund, payment: Payment,
                 entry_date: dt.date) -> None:
    """Post the reversing legs for the refund's amount and take the money off the payment:
    unapplied credit first, then the newest invoices (which reopen)."""
    refund.status = "processed"
    what = "Void" if refund.reversal == "void" else "Refund"
    entry = post_entry(
        session, key=f"refund:{refund.id}", entry_date=entry_date, source_type="refund",
        source_id=refund.id,
        description=f"{what} of payment {describe(payment)}"[:255],
        legs=[LegSpec(ACCOUNTS_RECEIVABLE, debit=refund.amount,
                      subscriber_id=payment.subscriber_id),
              LegSpec(deposit_account(payment.method), credit=refund.amount)])
    refund.posted_entry_id = entry.id
    left = refund.amount
    from_credit = min(left, payment.unapplied)
    payment.unapplied -= from_credit
    left -= from_credit
    allocations = session.scalars(
        sa.select(PaymentAllocation).join(Invoice, Invoice.id == PaymentAllocation.invoice_id)
        .where(PaymentAllocation.payment_id == payment.id)
        .order_by(Invoice.invoice_date.desc(), Invoice.id.desc())).all()
    for allocation in allocations:
        if left <= 0:
            break
        invoice = _one(session, Invoice, allocation.invoice_id, lock=True)
        amount = min(left, allocation.amount)
        unallocate(session, allocation, invoice, amount)
        left -= amount
    payment.refunded += refund.amount
    if payment.refunded >= payment.amount and refund.reversal == "void":
        payment.status = "voided"
    session.flush()


def refund_payment(session: Session, payment_id: int, amount: int, refunded_on: dt.date,
                   reason: str | None = None, *, transaction_id: str | None = None) -> Refund:
    """Give back `amount` minor units of a processed payment through its gateway (which voids
    an unsettled card charge and says so). Returns the Refund: "processed" (reversing entry
    posted, invoices reopened as needed), "failed" (nothing posted) or pending/undefined."""
    if isinstance(transaction_id, str):
        existing = _by_transaction(session, Refund, transaction_id)
        if existing is not None:
            return existing
    with session.begin_nested():
        # Write first (a no-op UPDATE): locks the payment on PostgreSQL, takes SQLite's lock.
        if _is_int(payment_id):
            session.execute(sa.update(Payment).where(Payment.id == payment_id)
                            .values(refunded=Payment.refunded)
                            .execution_options(synchronize_session=False))
        payment = _one(session, Payment, payment_id, lock=True)
        if payment is None:
            raise NotFound(f"no payment {payment_id}")
        errors: dict[str, list[str]] = {}
        left = refundable(session, payment)
        require(errors, "payment", payment.status == "processed",
                f"is {payment.status}: only a processed payment can be refunded")
        require(errors, "amount", _is_int(amount) and amount > 0,
                "must be a positive amount (integer minor units)")
        if "payment" not in errors and "amount" not in errors:
            require(errors, "amount", amount <= left,
                    f"is more than the {left} minor units that can still be refunded")
        require(errors, "refunded_on", _is_date(refunded_on), "must be a date")
        require(errors, "transaction_id", transaction_id is None or (
            isinstance(transaction_id, str) and 0 < len(transaction_id) <= 64),
            "must be text of at most 64 characters")
        reason = _text(errors, "reason", reason, 255)
        raise_if(errors)
        refuse_closed_books(session, refunded_on, "refunded_on")
        gateway = _gateway(session, payment.plugin_id, "payment")
        refund = Refund(payment_id=payment.id, amount=amount, refunded_on=refunded_on,
                        reason=reason, status="pending",
                        transaction_id=transaction_id or f"refund-{uuid.uuid4().hex}")
        session.add(refund)
        session.flush()
        result = gateway.plugin.refund(gateway.settings, refund.transaction_id,
                                       payment.provider_ref or "", amount, payment.currency)
        _record(refund, result)
        refund.reversal = result.reversal
        if refund.status == "processed":
            _post_refund(session, refund, payment, refunded_on)
        session.flush()
    return refund


def void_payment(session: Session, payment_id: int, voided_on: dt.date,
                 reason: str | None = None) -> Refund:
    """Give back everything still refundable and mark the payment voided (a manual payment
    recorded by mistake, a check that bounced)."""
    payment = get_payment(session, payment_id)
    refund = refund_payment(session, payment.id, refundable(session, payment), voided_on,
                            reason or "void")
    if refund.status == "processed":
        payment.status = "voided"
        session.flush()
    return refund


def _settle_refund_later(session: Session, refund: Refund, result: PaymentResult) -> bool:
    status = _STATUS.get(result.status, "failed")
    if refund.status not in UNSETTLED or status in UNSETTLED:
        return False
    _record(refund, result)
    refund.reversal = result.reversal or refund.reversal
    if status == "processed":
        payment = _one(session, Payment, refund.payment_id, lock=True)
        _post_refund(session, refund, payment, _open_day(session, refund.refunded_on))
    session.flush()
    return True


# --- reconciling what the provider has not told yet ------------------------------------------

def reconcile_undefined(session: Session, settle_after: dt.timedelta = SETTLE_AFTER, *,
                        after_each: Callable[[], None] | None = None) -> dict[str, int]:
    """Ask each gateway about the tenant's payments and refunds whose outcome is unknown or
    pending, and settle those it now knows; returns how many of each were settled.

    Only those recorded at least `settle_after` ago: a request whose answer was lost may still
    be under way at the provider, which would then say it has no such payment. One row at a
    time: it is locked (skipped when a webhook is settling it), asked about, settled, and
    `after_each` runs (the job commits there), so no lock is held across more than one call
    to a provider."""
    from headend.db import utcnow

    done = {"payments": 0, "refunds": 0}
    before = utcnow() - settle_after
    for model, settle, key in ((Payment, _settle_later, "payments"),
                               (Refund, _settle_refund_later, "refunds")):
        ids = session.scalars(sa.select(model.id).where(
            model.status.in_(UNSETTLED), model.created_at <= before).order_by(model.id)).all()
        for row_id in ids:
            stmt = (sa.select(model).where(model.id == row_id, model.status.in_(UNSETTLED))
                    .with_for_update(skip_locked=True)
                    .execution_options(populate_existing=True))
            if model is Refund:
                stmt = stmt.options(selectinload(Refund.payment))
            row = session.scalar(stmt)
            if row is None:
                continue  # settled meanwhile, or being settled by a webhook
            plugin_id = row.plugin_id if model is Payment else row.payment.plugin_id
            try:
                gateway = _gateway(session, plugin_id, "payment")
            except ValidationFailed:
                continue  # its gateway was switched off: it waits until it is back
            result = gateway.plugin.get_payment_info(gateway.settings, row.transaction_id,
                                                     row.provider_ref)
            with session.begin_nested():
                done[key] += settle(session, row, result)
            if after_each is not None:
                after_each()
    return done


# --- webhooks --------------------------------------------------------------------------------

def handle_webhook(session: Session, plugin_id: str, headers: Mapping[str, str],
                   body: bytes) -> str:
    """Verify a provider notification and apply it, recording its event id in the same
    transaction; returns what happened ("applied", "duplicate", "ignored", "unknown").

    NotFound when the gateway is not installed or not enabled; ValidationFailed (signature)
    when the plugin refuses the notification; GatewayDown when it could not ask the provider.
    """
    plugin = _manager().get(plugin_id)
    if plugin is None or plugin.kind != PaymentGateway.kind \
            or plugin_id not in _manager().enabled_ids(_tenant_id()):
        raise NotFound(f"no enabled gateway {plugin_id!r}")
    gateway = _gateway(session, plugin_id, "plugin")
    try:
        result = plugin.handle_webhook(gateway.settings, None, headers, body)
    except GatewayUnavailable as exc:
        raise GatewayDown(str(exc)) from exc
    except ValueError as exc:
        raise ValidationFailed({"signature": str(exc)}) from exc
    if result is None:
        return "ignored"
    if result.event_id:
        if session.scalar(sa.select(GatewayEvent.id).where(
                GatewayEvent.plugin_id == plugin_id,
                GatewayEvent.event_id == result.event_id)) is not None:
            return "duplicate"
        try:
            with session.begin_nested():
                session.add(GatewayEvent(plugin_id=plugin_id, event_id=result.event_id[:120],
                                         transaction_id=result.transaction_id[:64],
                                         status=str(result.status)[:12]))
        except IntegrityError:
            return "duplicate"  # delivered twice at once: the other delivery does the work
    with session.begin_nested():
        outcome = _apply_notification(session, result)
    return outcome


def _apply_notification(session: Session, result: PaymentResult) -> str:
    refund = session.scalar(sa.select(Refund).where(
        Refund.transaction_id == result.transaction_id)
        .with_for_update().execution_options(populate_existing=True))
    if refund is not None:
        return "applied" if _settle_refund_later(session, refund, result) else "unchanged"
    payment = session.scalar(sa.select(Payment).where(
        Payment.transaction_id == result.transaction_id)
        .with_for_update().execution_options(populate_existing=True))
    if payment is None:
        return "unknown"
    if result.reversal == "refund" and result.status == PaymentStatus.PROCESSED:
        return "applied" if _refunded_elsewhere(session, payment, result) else "unchanged"
    return "applied" if _settle_later(session, payment, result) else "unchanged"


def _refunded_elsewhere(session: Session, payment: Payment, result: PaymentResult) -> bool:
    """A refund made at the provider (its dashboard): record it as ours, once per provider
    refund, for what is still refundable."""
    if payment.status != "processed" or (result.provider_ref and session.scalar(
            sa.select(Refund.id).where(Refund.provider_ref == result.provider_ref))):
        return False
    amount = min(result.amount, refundable(session, payment))
    if amount <= 0:
        return False
    refund = Refund(payment_id=payment.id, amount=amount,
                    refunded_on=_open_day(session, dt.date.today()),
                    reason="refunded at the payment provider", status="pending",
                    transaction_id=f"ext-{result.provider_ref or uuid.uuid4().hex}"[:64],
                    provider_ref=result.provider_ref, reversal="refund")
    session.add(refund)
    session.flush()
    _post_refund(session, refund, payment, refund.refunded_on)
    return True


# --- saved payment methods -------------------------------------------------------------------

def saved_methods(session: Session, subscriber_id: int) -> list[SavedPaymentMethod]:
    return list(session.scalars(
        sa.select(SavedPaymentMethod)
        .where(SavedPaymentMethod.subscriber_id == subscriber_id,
               SavedPaymentMethod.removed_at.is_(None))
        .order_by(SavedPaymentMethod.is_default.desc(), SavedPaymentMethod.id)))


def customer_code(session: Session, subscriber: Subscriber) -> str:
    """Unique per provider account even when tenants share one: "<tenant slug>-<account>"."""
    return f"{session.get(Tenant, subscriber.tenant_id).slug}-{subscriber.account_number}"


def save_card(session: Session, subscriber_id: int, token: str, method: str = "card",
              make_default: bool = True) -> SavedPaymentMethod:
    """Attach a token made by the provider's browser library to the subscriber's customer
    at the method's gateway (the customer is created once), and keep its description."""
    errors: dict[str, list[str]] = {}
    subscriber = _one(session, Subscriber, subscriber_id)
    require(errors, "subscriber", subscriber is not None, "does not exist")
    require(errors, "token", isinstance(token, str) and 0 < len(token.strip()) <= 255,
            "is required")
    require(errors, "method", method in PAYMENT_METHODS,
            f"must be one of: {', '.join(PAYMENT_METHODS)}")
    raise_if(errors)
    gateway = gateway_for(session, method)
    if not gateway.plugin.saves_methods:
        raise ValidationFailed({"method": f"{gateway.plugin.name} does not keep payment "
                                          "methods"})
    with session.begin_nested():
        customer_ref = session.scalar(
            sa.select(SavedPaymentMethod.customer_ref)
            .where(SavedPaymentMethod.subscriber_id == subscriber.id,
                   SavedPaymentMethod.plugin_id == gateway.plugin_id,
                   SavedPaymentMethod.customer_ref.is_not(None)).limit(1))
        try:
            if customer_ref is None:
                customer_ref = gateway.plugin.create_customer(
                    gateway.settings, customer_code(session, subscriber),
                    subscriber.display_name, subscriber.email or "")
            kept = gateway.plugin.save_method(gateway.settings, customer_ref, token.strip())
        except GatewayUnavailable as exc:
            raise GatewayDown(f"{gateway.plugin.name} could not be reached: nothing was "
                              "saved, try again later") from exc
        except ValueError as exc:
            raise ValidationFailed({"token": str(exc) or "was refused"}) from exc
        saved = session.scalar(sa.select(SavedPaymentMethod).where(
            SavedPaymentMethod.plugin_id == gateway.plugin_id,
            SavedPaymentMethod.provider_ref == kept.provider_ref))
        if saved is None:
            saved = SavedPaymentMethod(subscriber_id=subscriber.id, plugin_id=gateway.plugin_id,
                                       provider_ref=kept.provider_ref)
            session.add(saved)
        saved.customer_ref, saved.method, saved.removed_at = customer_ref, kept.method, None
        saved.brand, saved.last4 = kept.brand[:30], kept.last4[:4]
        saved.exp_month, saved.exp_year = kept.exp_month, kept.exp_year
        session.flush()
        if make_default or not any(m.is_default for m in saved_methods(session, subscriber.id)):
            set_default(session, saved.id)
    return saved


def _saved(session: Session, saved_id) -> SavedPaymentMethod:
    saved = _one(session, SavedPaymentMethod, saved_id, lock=True)
    if saved is None or saved.removed_at is not None:
        raise NotFound(f"no saved payment method {saved_id}")
    return saved


def set_default(session: Session, saved_id: int) -> SavedPaymentMethod:
    """The subscriber's one default payment method (what autopay charges unless told)."""
    saved = _saved(session, saved_id)
    session.execute(sa.update(SavedPaymentMethod)
                    .where(SavedPaymentMethod.subscriber_id == saved.subscriber_id,
                           SavedPaymentMethod.id != saved.id)
                    .values(is_default=False).execution_options(synchronize_session="fetch"))
    saved.is_default = True
    session.flush()
    return saved


def remove_method(session: Session, saved_id: int) -> SavedPaymentMethod:
    """Detach the method at the provider and stop offering it (the row stays: payments made
    with it refer to it)."""
    from headend.db import utcnow

    saved = _saved(session, saved_id)
    try:
        gateway = _gateway(session, saved.plugin_id, "saved_method")
        gateway.plugin.remove_method(gateway.settings, saved.provider_ref)
    except GatewayUnavailable as exc:
        raise GatewayDown("the payment provider could not be reached: nothing was removed, "
                          "try again later") from exc
    saved.removed_at, saved.is_default = utcnow(), False
    session.flush()
    return saved


def ledger_entry(session: Session, entry_id: int | None) -> JournalEntry | None:
    return _one(session, JournalEntry, entry_id) if entry_id else None
