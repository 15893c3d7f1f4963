"""Posting many payments at once: a bank deposit, a lockbox file, a day's cash and checks.

The same rules as `services.receive_payment`, one line after the other in the order given
(each settles its subscriber's open invoices oldest due first; the rest is account credit), but
set-based: the batch reads the subscribers, their open invoices and the transaction ids already
recorded with a query each, and writes payments, allocations, journal entries, invoice updates
and audit rows with a statement each. That is what lets an ISP post a month-end lockbox of
thousands of payments in seconds, and several workers post at once.

Exactly once: each line has a transaction id (a file import derives it from the file and the
line); a line whose id is already recorded is skipped and reported, so re-posting the same file
posts nothing twice. Two batches racing on the same id: the second waits for the first's commit
and then fails on the unique key as a whole - retrying it skips what the first posted.

Only methods whose gateway records money without a saved method (the manual gateway: cash,
check, bank transfer, other) can be batched; cards are charged one by one through their gateway.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.audit.models import AuditLog
from headend.billing.bulk import (
    BulkEntry,
    allocate_ids,
    forget,
    insert_rows,
    post_entries_bulk,
)
from headend.billing.models import Invoice
from headend.catalog.models import Account
from headend.catalog.services import ACCOUNTS_RECEIVABLE
from headend.db import among, utcnow
from headend.errors import ValidationFailed, raise_if, require
from headend.ledger.models import JournalEntry
from headend.ledger.services import LegSpec, refuse_closed_books
from headend.payments.models import PAYMENT_METHODS, Payment, PaymentAllocation
from headend.payments.services import (
    _STATUS,
    MAX_AMOUNT,
    METHOD_LABELS,
    OPEN_STATUSES,
    RECEIPT_SEQUENCE,
    _currency,
    _manager,
    _tenant_id,
    deposit_account,
    gateway_for,
)
from headend.plugins import events
from headend.plugins.interfaces import PaymentStatus
from headend.sequences import reserve
from headend.subscribers.models import Subscriber
from headend.tenancy.context import current_scope

MAX_LINES = 5000  # per batch (one transaction)
CHUNK = 1000  # payments per transaction when a file is imported


@dataclass(frozen=True)
class PaymentLine:
    """One payment of a batch. `account` (the subscriber's account number) is what a bank file
    carries; `subscriber_id` wins when both are given."""

    amount: int
    method: str
    received_on: dt.date
    subscriber_id: int | None = None
    account: str | None = None
    reference: str | None = None
    memo: str | None = None
    transaction_id: str | None = None


@dataclass(frozen=True)
class BatchResult:
    posted: list[int]  # payment ids, in line order
    skipped: list[str]  # transaction ids recorded before (by an earlier post of the same lines)
    amount: int  # minor units posted
    receipts: tuple[str, str] | None  # first and last receipt number

    @classmethod
    def combine(cls, results: list[BatchResult]) -> BatchResult:
        receipts = [r.receipts for r in results if r.receipts]
        return cls([i for r in results for i in r.posted], [t for r in results for t in r.skipped],
                   sum(r.amount for r in results),
                   (receipts[0][0], receipts[-1][1]) if receipts else None)

    def describe(self) -> str:
        text = f"{len(self.posted)} payments posted"
        if self.receipts:
            text += f" ({self.receipts[0]} to {self.receipts[1]})"
        if self.skipped:
            text += f", {len(self.skipped)} already recorded"
        return text


def line_transaction_id(source: bytes, line_no: int) -> str:
    """A file line's own transaction id: importing the same file again finds it recorded."""
    return f"file-{hashlib.sha256(source).hexdigest()[:24]}-{line_no}"


# --- checking ---------------------------------------------------------------------------------

def _line_errors(line: PaymentLine) -> dict[str, str]:
    """What is wrong with a line on its own (the batch checks the rest against the database)."""
    errors: dict[str, list[str]] = {}
    require(errors, "amount", isinstance(line.amount, int) and not isinstance(line.amount, bool)
            and 0 < line.amount <= MAX_AMOUNT, "must be a positive amount (integer minor units)")
    require(errors, "method", line.method in PAYMENT_METHODS,
            f"must be one of: {', '.join(PAYMENT_METHODS)}")
    require(errors, "received_on", isinstance(line.received_on, dt.date)
            and not isinstance(line.received_on, dt.datetime), "must be a date")
    for field, limit in (("reference", 120), ("memo", 255), ("transaction_id", 64)):
        value = getattr(line, field)
        require(errors, field, value is None or (isinstance(value, str) and len(value) <= limit),
                f"must be text of at most {limit} characters")
    if line.method == "check" and "reference" not in errors:
        require(errors, "reference", bool((line.reference or "").strip()),
                "a check needs its number")
    require(errors, "subscriber", line.subscriber_id is not None or bool(line.account),
            "name the subscriber (id or account number)")
    return {field: " ".join(reasons) for field, reasons in errors.items()}


def _subscribers(session: Session, lines: Sequence[PaymentLine]) -> tuple[dict, dict]:
    """(id -> status, account number -> id) of the subscribers the lines name (this tenant's)."""
    ids = {line.subscriber_id for line in lines if isinstance(line.subscriber_id, int)}
    accounts = {line.account for line in lines if line.subscriber_id is None and line.account}
    rows = session.execute(sa.select(Subscriber.id, Subscriber.status, Subscriber.account_number)
                           .where(sa.or_(among(Subscriber.id, list(ids)),
                                         Subscriber.account_number.in_(accounts)))).all()
    return {r.id: r.status for r in rows}, {r.account_number: r.id for r in rows}


def check_lines(session: Session, lines: Sequence[PaymentLine], allow_archived: bool = False
                ) -> tuple[list[int], set[str]]:
    """Each line's subscriber id, and the transaction ids already recorded; raises
    ValidationFailed naming every bad line ("lines.3.amount") before anything is written."""
    if not lines:
        raise ValidationFailed({"lines": "give at least one payment"})
    statuses, by_account = _subscribers(session, lines)
    errors: dict[str, str] = {}
    owners: list[int] = []
    seen: set[str] = set()
    for n, line in enumerate(lines):
        problems = _line_errors(line)
        owner = line.subscriber_id if line.subscriber_id is not None \
            else by_account.get(line.account)
        if "subscriber" not in problems and statuses.get(owner) is None:
            problems["subscriber"] = "does not exist"
        elif statuses.get(owner) == "archived" and not allow_archived:
            problems["subscriber"] = "is archived: confirm payments to archived accounts"
        if line.transaction_id is not None:
            if line.transaction_id in seen:
                problems["transaction_id"] = "appears twice in this batch"
            seen.add(line.transaction_id)
        errors.update({f"lines.{n}.{field}": reason for field, reason in problems.items()})
        owners.append(owner)
    raise_if(errors)
    for day in sorted({line.received_on for line in lines}):
        refuse_closed_books(session, day, "received_on")
    _gateways(session, {line.method for line in lines})
    recorded = set(session.scalars(sa.select(Payment.transaction_id)
                                   .where(Payment.transaction_id.in_(seen)))) if seen else set()
    return owners, recorded


def _gateways(session: Session, methods: set[str]) -> dict:
    """method -> Gateway, each one that records money without a saved method."""
    gateways = {}
    for method in sorted(methods):
        gateway = gateway_for(session, method)
        if gateway.plugin.saves_methods:
            raise ValidationFailed({"method": (
                f"{METHOD_LABELS[method]} payments go through {gateway.plugin.name}, which "
                "charges saved methods one at a time: they cannot be posted in a batch")})
        gateways[method] = gateway
    return gateways


# --- posting ------------------------------------------------------------------------------------

def _open_invoices(session: Session, owners: set[int]) -> dict[int, list[list[int]]]:
    """subscriber -> [[invoice id, total, amount paid], ...] oldest due first, the rows locked
    in id order (the lock order every payment path keeps, see payments.allocation)."""
    rows = session.execute(
        sa.select(Invoice.id, Invoice.subscriber_id, Invoice.total, Invoice.amount_paid,
                  Invoice.due_date, Invoice.invoice_date)
        .where(among(Invoice.subscriber_id, list(owners)), Invoice.status.in_(OPEN_STATUSES))
        .order_by(Invoice.id).with_for_update()).all()
    out: dict[int, list[list[int]]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r.due_date, r.invoice_date, r.id)):
        out[r.subscriber_id].append([r.id, r.total, r.amount_paid])
    return out


def receive_payments(session: Session, lines: Sequence[PaymentLine], *,
                     source: str = "import", allow_archived: bool = False) -> BatchResult:
    """Post every line as a processed payment in the caller's transaction (the caller
    commits), or raise ValidationFailed naming each bad line and write nothing."""
    _tenant_id()
    if len(lines) > MAX_LINES:
        raise ValidationFailed({"lines": f"give at most {MAX_LINES} payments at a time"})
    owners, recorded = check_lines(session, lines, allow_archived)
    todo = [(line, owner) for line, owner in zip(lines, owners, strict=True)
            if line.transaction_id not in recorded]
    skipped = [line.transaction_id for line in lines if line.transaction_id in recorded]
    if not todo:
        return BatchResult([], skipped, 0, None)
    gateways = _gateways(session, {line.method for line, _ in todo})
    currency = _currency(session)
    payment_ids = allocate_ids(session, Payment, len(todo))
    txids = [line.transaction_id or f"pay-{uuid.uuid4().hex}" for line, _ in todo]
    results = [gateways[line.method].plugin.purchase(
        gateways[line.method].settings, txid, line.amount, currency, line.method, None)
        for (line, _), txid in zip(todo, txids, strict=True)]

    invoices = _open_invoices(session, {owner for _, owner in todo})
    allocations, touched, unapplied = [], {}, []
    for (line, owner), pid, result in zip(todo, payment_ids, results, strict=True):
        left = line.amount if result.status == PaymentStatus.PROCESSED else 0
        for invoice in invoices.get(owner, ()):
            take = min(left, invoice[1] - invoice[2])
            if take > 0:
                invoice[2] += take
                left -= take
                touched[invoice[0]] = invoice
                allocations.append(dict(payment_id=pid, invoice_id=invoice[0], amount=take))
        unapplied.append(left)

    processed = [result.status == PaymentStatus.PROCESSED for result in results]
    first = reserve(session, RECEIPT_SEQUENCE, sum(processed)) if any(processed) else 0
    numbers = iter(f"R-{n:06d}" for n in range(first, first + sum(processed)))
    payments = [dict(
        id=pid, number=next(numbers) if ok else None, subscriber_id=owner, method=line.method,
        amount=line.amount, currency=currency, received_on=line.received_on,
        reference=(line.reference or "").strip() or None, memo=(line.memo or "").strip() or None,
        source=source, plugin_id=gateways[line.method].plugin_id, transaction_id=txid,
        provider_ref=result.provider_ref, saved_method_id=None,
        status=_STATUS.get(result.status, "failed"), decline_code=result.decline_code,
        message=(result.message or "")[:255] or None, unapplied=left, refunded=0,
        posted_entry_id=None, created_at=utcnow())
        for (line, owner), pid, txid, result, ok, left in zip(
            todo, payment_ids, txids, results, processed, unapplied, strict=True)]
    posted = [p for p, ok in zip(payments, processed, strict=True) if ok]
    entry_ids = allocate_ids(session, JournalEntry, len(posted))
    for payment, entry_id in zip(posted, entry_ids, strict=True):
        payment["posted_entry_id"] = entry_id
    post_entries_bulk(session, _entries(session, posted))
    insert_rows(session, Payment, payments)
    insert_rows(session, PaymentAllocation, allocations)
    _settle_invoices(session, touched.values())
    _audit(session, payments)
    _after_payments(session, {p["subscriber_id"] for p in posted})
    if posted and _manager().hook.payment_received.get_hookimpls():
        for payment in posted:
            events.fire("payment_received", tenant_id=_tenant_id(), payment_id=payment["id"])
    receipts = (posted[0]["number"], posted[-1]["number"]) if posted else None
    return BatchResult([p["id"] for p in posted], skipped,
                       sum(p["amount"] for p in posted), receipts)


def _entries(session: Session, posted: list[dict]) -> list[BulkEntry]:
    """Each payment's entry: DEBIT cash or undeposited funds / CREDIT AR with the subscriber."""
    codes = dict(session.execute(sa.select(Account.code, Account.id)).all())
    ar = codes[ACCOUNTS_RECEIVABLE]
    return [BulkEntry(
        id=p["posted_entry_id"], key=f"payment:{p['id']}", entry_date=p["received_on"],
        source_type="payment", source_id=p["id"],
        description=f"Payment {p['number']} ({_how(p)})", legs=(
            LegSpec(account_id=codes[deposit_account(p["method"])], debit=p["amount"]),
            LegSpec(account_id=ar, credit=p["amount"], subscriber_id=p["subscriber_id"])))
        for p in posted]


def _how(payment: dict) -> str:
    how = METHOD_LABELS.get(payment["method"], payment["method"])
    return f"{how} {payment['reference']}" if payment["reference"] else how


def _settle_invoices(session: Session, invoices) -> None:
    """Each touched invoice's amount paid and status, one statement for all of them."""
    rows = [{"id": inv_id, "amount_paid": paid,
             "status": "paid" if paid >= total else "partially_paid"}
            for inv_id, total, paid in invoices]
    if rows:
        session.execute(sa.update(Invoice), rows)
        forget(session, Invoice, [r["id"] for r in rows])


def _audit(session: Session, payments: list[dict]) -> None:
    """An audit row per payment, as the ORM would have written, in one statement."""
    scope, now = current_scope(), utcnow()
    session.execute(sa.insert(AuditLog), [dict(
        tenant_id=scope.tenant_id, at=now, actor_id=scope.actor_id,
        actor_name=scope.actor_name or "batch", action="create", entity="payment",
        entity_id=str(p["id"]), before=None, after={
            "number": p["number"], "subscriber_id": p["subscriber_id"], "amount": p["amount"],
            "method": p["method"], "received_on": p["received_on"].isoformat(),
            "reference": p["reference"], "transaction_id": p["transaction_id"],
            "status": p["status"]}) for p in payments])


def _after_payments(session: Session, owners: set[int]) -> None:
    """Restore at once the suspended subscribers the batch brought back within grace."""
    from headend.dunning.models import SubscriberCollection
    from headend.dunning.services import after_payment

    suspended = session.scalars(sa.select(SubscriberCollection.subscriber_id).where(
        among(SubscriberCollection.subscriber_id, list(owners)),
        SubscriberCollection.suspended_on.is_not(None))).all()
    for subscriber_id in sorted(suspended):
        after_payment(session, subscriber_id, dt.date.today())
