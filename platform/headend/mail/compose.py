"""The words of each email: subject, plain text and simple HTML in the tenant's branding, from
the templates in templates/mail/. Built in bulk (a billing run's chunk at a time): one query per
kind of data, never one per message."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from headend.billing.models import Invoice
from headend.branding.services import BrandingView, branding_for
from headend.catalog.models import Account
from headend.catalog.services import ACCOUNTS_RECEIVABLE
from headend.db import among
from headend.dunning.models import Notice
from headend.ledger.models import Leg
from headend.money import format_money
from headend.payments.models import Payment
from headend.subscribers.models import Subscriber

# Invoices in these states are emailed; drafts (still waiting for taxes) and voids are not.
SENDABLE_INVOICES = ("open", "partially_paid", "paid")
NOTICE_SUBJECTS = {
    "failed_payment": "Your automatic payment was declined",
    "upcoming_suspension": "Your service will be suspended soon",
}
METHODS = {"card": "card", "echeck": "eCheck", "cash": "cash", "check": "check"}


@dataclass(frozen=True)
class Message:
    """An email to queue: what OutboundEmail stores, keyed for exactly-once."""

    kind: str
    key: str
    to: str
    subject: str
    body_text: str
    body_html: str
    subscriber_id: int | None = None
    invoice_id: int | None = None
    payment_id: int | None = None
    notice_id: int | None = None


def render(kind: str, brand: BrandingView, **context) -> tuple[str, str]:
    """(plain text, HTML) of templates/mail/<kind>.txt and .html."""
    env = current_app.jinja_env
    values = dict(context, brand=brand)
    return (env.get_template(f"mail/{kind}.txt").render(**values),
            env.get_template(f"mail/{kind}.html").render(**values))


def _balances(session: Session, subscriber_ids) -> dict[int, int]:
    """What each subscriber owes (AR legs), in one grouped query."""
    if not subscriber_ids:
        return {}
    rows = session.execute(
        sa.select(Leg.subscriber_id, sa.func.sum(Leg.debit - Leg.credit))
        .join(Account, Leg.account_id == Account.id)
        .where(Account.code == ACCOUNTS_RECEIVABLE, among(Leg.subscriber_id, subscriber_ids))
        .group_by(Leg.subscriber_id))
    return {sub_id: int(total or 0) for sub_id, total in rows}


def invoice_messages(session: Session, tenant_id: int, invoice_ids) -> list[Message]:
    """One email per posted invoice whose subscriber has an address (the PDF is attached when
    it is sent)."""
    rows = session.execute(
        sa.select(Invoice, Subscriber).join(Subscriber, Invoice.subscriber_id == Subscriber.id)
        .where(among(Invoice.id, list(invoice_ids)), Invoice.status.in_(SENDABLE_INVOICES),
               Invoice.tax_status == "ok", Subscriber.email.is_not(None),
               Subscriber.email != "")
        .order_by(Invoice.id)).all()
    if not rows:
        return []
    brand = branding_for(session, tenant_id)
    balances = _balances(session, {sub.id for _, sub in rows})
    out = []
    for invoice, sub in rows:
        money = {"total": format_money(invoice.total, invoice.currency),
                 "due": format_money(invoice.balance_due, invoice.currency),
                 "balance": format_money(balances.get(sub.id, 0), invoice.currency)}
        text, html = render("invoice", brand, invoice=invoice, subscriber=sub, money=money)
        out.append(Message(
            "invoice", f"invoice:{invoice.id}", sub.email,
            f"Invoice {invoice.number} from {brand.display_name}", text, html,
            subscriber_id=sub.id, invoice_id=invoice.id))
    return out


def receipt_messages(session: Session, tenant_id: int, payment_ids) -> list[Message]:
    """One receipt per processed payment whose subscriber has an address."""
    rows = session.execute(
        sa.select(Payment, Subscriber).join(Subscriber, Payment.subscriber_id == Subscriber.id)
        .where(among(Payment.id, list(payment_ids)), Payment.status == "processed",
               Subscriber.email.is_not(None), Subscriber.email != "")
        .order_by(Payment.id)).all()
    if not rows:
        return []
    brand = branding_for(session, tenant_id)
    out = []
    for payment, sub in rows:
        number = payment.number or str(payment.id)
        text, html = render(
            "receipt", brand, payment=payment, subscriber=sub, number=number,
            amount=format_money(payment.amount, payment.currency),
            method=METHODS.get(payment.method, payment.method))
        out.append(Message(
            "receipt", f"receipt:{payment.id}", sub.email,
            f"Receipt {number}: payment received by {brand.display_name}", text, html,
            subscriber_id=sub.id, payment_id=payment.id))
    return out


def notice_messages(session: Session, tenant_id: int, notices: list[Notice]) -> list[Message]:
    """One email per notice (the collections job's words, in the tenant's layout)."""
    if not notices:
        return []
    brand = branding_for(session, tenant_id)
    subscribers = {s.id: s for s in session.scalars(sa.select(Subscriber).where(
        among(Subscriber.id, list({n.subscriber_id for n in notices}))))}
    out = []
    for notice in notices:
        sub = subscribers.get(notice.subscriber_id)
        if sub is None or not sub.email:
            continue
        text, html = render("notice", brand, notice=notice, subscriber=sub)
        out.append(Message(
            notice.kind, f"notice:{notice.id}", sub.email,
            f"{NOTICE_SUBJECTS.get(notice.kind, 'A notice')} - {brand.display_name}", text,
            html, subscriber_id=sub.id, invoice_id=None, payment_id=notice.payment_id,
            notice_id=notice.id))
    return out


def test_message(session: Session, tenant_id: int, to: str, now: dt.datetime) -> Message:
    brand = branding_for(session, tenant_id)
    text, html = render("test", brand, now=now)
    return Message("test", f"test:{now:%Y%m%d%H%M%S%f}", to,
                   f"Test email from {brand.display_name}", text, html)
