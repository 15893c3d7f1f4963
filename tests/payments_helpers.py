"""Gateways switched on for a tenant, and readers of what a payment left behind, for the
payments tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time

import stripe
from headend.ledger.models import Leg
from headend.plugins.services import configure_plugin
from sqlalchemy import func, select

from tests.peers.stripe import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET

JAN = dt.date(2024, 1, 15)
FEB = dt.date(2024, 2, 15)
MAR = dt.date(2024, 3, 15)


def enable_manual(session) -> None:
    configure_plugin(session, "manual", True, {})
    session.flush()


def enable_stripe(session, url: str, *, timeout: int = 5, route: bool = True) -> None:
    """The Stripe plugin on, pointed at localstripe, taking card payments."""
    from headend.payments.services import set_route

    configure_plugin(session, "stripe", True, {
        "secret_key": SECRET_KEY, "publishable_key": PUBLISHABLE_KEY,
        "webhook_secret": WEBHOOK_SECRET, "api_base": url, "timeout": str(timeout)})
    if route:
        set_route(session, "card", "stripe")
    session.flush()


def sdk(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": url}, max_network_retries=0)


def card_token(url: str, number: str = "4242424242424242") -> str:
    """What Stripe.js hands the browser for a card: a PaymentMethod id."""
    return sdk(url).v1.payment_methods.create({"type": "card", "card": {
        "number": number, "exp_month": 4, "exp_year": 2031, "cvc": "123"}}).id


def legs(session, entry_id) -> list[tuple]:
    """(account code, debit, credit, subscriber) of an entry, in posting order."""
    return [(leg.account.code, leg.debit, leg.credit, leg.subscriber_id)
            for leg in session.scalars(select(Leg).where(Leg.entry_id == entry_id)
                                       .order_by(Leg.id))]


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> dict:
    """The Stripe-Signature header of a webhook body, signed now (or at `at`)."""
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), b"%d." % at + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={at},v1={mac}", "Content-Type": "application/json"}


def event(kind: str, obj: dict, event_id: str) -> bytes:
    """A Stripe event's body."""
    return json.dumps({"id": event_id, "object": "event", "type": kind,
                       "data": {"object": obj}}).encode()
