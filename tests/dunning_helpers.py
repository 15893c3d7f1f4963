"""A tenant with subscribers owing invoices, for the collections tests (built with the real
services: invoices are posted through the invoicing service)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal as D

from headend import hookimpl
from headend.billing.invoicing import new_invoice
from headend.dunning.services import update_collection_settings
from headend.ledger.models import JournalEntry, Leg
from headend.subscribers.services import add_package, create_subscriber
from sqlalchemy import select

from tests.invoicing_helpers import triple_play

_seq = itertools.count(1)
MAR1 = dt.date(2026, 3, 1)  # invoice date; due MAR16 with the default 15 days' terms
MAR16 = dt.date(2026, 3, 16)


def day(n: int) -> dt.date:
    """`n` days after the due date MAR16."""
    return MAR16 + dt.timedelta(days=n)


def active_subscriber(s, **over):
    """An active subscriber with one active subscription."""
    n = next(_seq)
    sub = create_subscriber(s, first_name="Dee", last_name=f"Linquent{n}",
                            email=f"d{n}@x.test", status="active", **over)
    s.flush()
    subscription = add_package(s, sub.id, triple_play(s).id, billing_cycle="monthly",
                               bill_start_date=MAR1)
    subscription.status = "active"
    s.flush()
    return sub


def owe(s, sub, amount: str, on: dt.date = MAR1):
    """A posted invoice of one line for `amount` dated `on` (due 15 days later)."""
    return new_invoice(s, sub.id, on, [{"description": "Service", "unit_price": amount}],
                       today=on)


def rules(s, **values):
    base = dict(late_fee_days=None, rebill_fee_days=None, grace_days=10,
                grace_amount=D("0"), suspension_notice_days=3)
    base.update(values)
    return update_collection_settings(s, **base)


def legs_of(s, source_type: str, source_id: int) -> list[tuple[str, int, int, int | None]]:
    """(account code, debit, credit, subscriber) of a document's postings."""
    from headend.catalog.models import Account

    return sorted(s.execute(
        select(Account.code, Leg.debit, Leg.credit, Leg.subscriber_id)
        .join(Leg, Leg.account_id == Account.id).join(JournalEntry, Leg.entry_id == JournalEntry.id)
        .where(JournalEntry.source_type == source_type, JournalEntry.source_id == source_id)
    ).tuples().all())


class ServiceListener:
    """A pure listener plugin: hears every tenant's suspension and restore events."""

    def __init__(self):
        self.events = []

    @hookimpl
    def service_suspended(self, tenant_id, subscription_id):
        self.events.append(("suspended", subscription_id))

    @hookimpl
    def service_restored(self, tenant_id, subscription_id):
        self.events.append(("restored", subscription_id))
