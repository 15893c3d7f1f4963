"""A subscriber paying and managing their own cards in the portal: pay an invoice or the whole
balance with a saved method or a new card, add, remove and choose the default card, and turn
autopay on or off (autopay charges the default card).

All through headend.payments.services and headend.dunning.services; what is added here is that
the subscriber can only touch their own rows, and that a form submitted twice charges once: the
transaction id (the gateway's idempotency key) is derived from the form's nonce and the account,
so a second submit finds the first payment, and no one can name another account's payment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.dunning.services import subscriber_collection, update_subscriber_collection
from headend.errors import NotFound, ValidationFailed
from headend.ledger.services import subscriber_balance
from headend.payments import services as payments
from headend.payments.models import Payment, SavedPaymentMethod
from headend.portal.statements import own_invoice

NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def transaction_id(account_id: int, nonce: str) -> str:
    """Our transaction id for the pay form `nonce` of a portal account (at most 64 chars)."""
    if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
        raise ValidationFailed({"nonce": "the form is out of date: reload the page"})
    return "portal-" + hashlib.sha256(f"{account_id}:{nonce}".encode()).hexdigest()[:48]


def own_method(session: Session, subscriber_id: int, method_id) -> SavedPaymentMethod:
    method = session.scalar(sa.select(SavedPaymentMethod).where(
        SavedPaymentMethod.id == method_id, SavedPaymentMethod.subscriber_id == subscriber_id,
        SavedPaymentMethod.removed_at.is_(None))) if isinstance(method_id, int) else None
    if method is None:
        raise NotFound(f"no saved payment method {method_id}")
    return method


def amount_due(session: Session, subscriber_id: int, invoice_id: int | None) -> int:
    """What "pay now" charges: the invoice's balance due, or the whole account balance."""
    if invoice_id is None:
        return max(subscriber_balance(session, subscriber_id), 0)
    invoice = own_invoice(session, subscriber_id, invoice_id)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    return invoice.balance_due if invoice.status in payments.OPEN_STATUSES else 0


def pay(session: Session, subscriber_id: int, account_id: int, nonce: str, *,
        invoice_id: int | None = None, saved_method_id: int | None = None,
        card_token: str | None = None, today: dt.date | None = None) -> Payment:
    """Charge an invoice's balance due (or the whole balance) to a saved method or a new card
    (which is kept, as the subscriber's card for next time). Returns the Payment: processed,
    failed (declined: its decline code and message say why) or pending/undefined. The same
    nonce again returns the first Payment and charges nothing."""
    tx = transaction_id(account_id, nonce)
    done = session.scalar(sa.select(Payment).where(Payment.transaction_id == tx))
    if done is not None:
        if done.subscriber_id != subscriber_id:
            raise NotFound("no such payment")
        return done
    if session.scalar(sa.select(Payment.id).where(
            Payment.subscriber_id == subscriber_id,
            Payment.status.in_(("pending", "undefined"))).limit(1)) is not None:
        # its amount is not posted yet: paying "what is due" again would charge it twice
        raise ValidationFailed({"amount": "a payment of yours is still being processed: "
                                          "wait for its result before paying again"})
    amount = amount_due(session, subscriber_id, invoice_id)
    if amount <= 0:
        raise ValidationFailed({"amount": "nothing is owed on this" if invoice_id else
                                "your balance is paid: nothing is owed"})
    if card_token:
        method = payments.save_card(session, subscriber_id, card_token, make_default=False)
    elif saved_method_id is not None:
        try:
            method = own_method(session, subscriber_id, saved_method_id)
        except NotFound as exc:
            raise ValidationFailed({"saved_method": "choose one of your cards"}) from exc
    else:
        raise ValidationFailed({"saved_method": "choose a card, or enter a new one"})
    payment = payments.receive_payment(
        session, subscriber_id, amount, method.method, today or dt.date.today(),
        invoice_ids=[invoice_id] if invoice_id is not None else None,
        saved_method_id=method.id, source="portal", transaction_id=tx)
    if payment.subscriber_id != subscriber_id:  # cannot happen: tx is this account's own
        raise NotFound("no such payment")
    return payment


def add_card(session: Session, subscriber_id: int, card_token: str,
             make_default: bool = False) -> SavedPaymentMethod:
    saved = payments.save_card(session, subscriber_id, card_token, make_default=make_default)
    if saved.is_default:
        _follow_default(session, subscriber_id)
    return saved


def make_default(session: Session, subscriber_id: int, method_id: int) -> SavedPaymentMethod:
    saved = payments.set_default(session, own_method(session, subscriber_id, method_id).id)
    _follow_default(session, subscriber_id)
    return saved


def remove_card(session: Session, subscriber_id: int, method_id: int) -> SavedPaymentMethod:
    """Remove the card; when it was the default another one becomes the default, and autopay
    moves to it (or stops, when no card is left)."""
    removed = payments.remove_method(session, own_method(session, subscriber_id, method_id).id)
    left = payments.saved_methods(session, subscriber_id)
    if left and not any(m.is_default for m in left):
        payments.set_default(session, left[0].id)
    _follow_default(session, subscriber_id)
    return removed


def _default(session: Session, subscriber_id: int) -> SavedPaymentMethod | None:
    return next((m for m in payments.saved_methods(session, subscriber_id) if m.is_default),
                None)


def _follow_default(session: Session, subscriber_id: int) -> None:
    """Autopay, when on, charges the default card: keep it pointing there (off when none)."""
    row = subscriber_collection(session, subscriber_id, create=False)
    if row is None or not row.autopay:
        return
    default = _default(session, subscriber_id)
    update_subscriber_collection(session, subscriber_id, autopay=default is not None,
                                 autopay_method_id=default.id if default else None)


def autopay_on(session: Session, subscriber_id: int) -> bool:
    row = subscriber_collection(session, subscriber_id, create=False)
    return bool(row and row.autopay)


def set_autopay(session: Session, subscriber_id: int, on: bool) -> None:
    """Turn autopay on (charging the default card) or off."""
    if not on:
        if autopay_on(session, subscriber_id):
            update_subscriber_collection(session, subscriber_id, autopay=False)
        return
    default = _default(session, subscriber_id)
    if default is None:
        raise ValidationFailed({"autopay": "add a card first: autopay charges your default card"})
    update_subscriber_collection(session, subscriber_id, autopay=True,
                                 autopay_method_id=default.id)
