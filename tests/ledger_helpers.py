"""A tenant acting in an app context, with subscribers, for the ledger tests."""

from __future__ import annotations

import datetime as dt
import itertools

from headend.ledger.services import LegSpec, post_entry
from headend.subscribers.services import create_subscriber

_seq = itertools.count(1)
JAN = dt.date(2024, 1, 15)


def subscriber(session) -> int:
    n = next(_seq)
    return create_subscriber(
        session, first_name="Ana", last_name=f"Ledger{n}", email=f"l{n}@x.test"
    ).id


def invoice(session, sub_id: int, amount: int, *, key=None, day=JAN, tax: int = 0):
    """Post what an invoice posts: AR debit, income credit, tax liability credit."""
    legs = [
        LegSpec("1200", debit=amount + tax, subscriber_id=sub_id),
        LegSpec("4000", credit=amount),
    ]
    if tax:
        legs.append(LegSpec("2200", credit=tax, jurisdiction="State"))
    return post_entry(
        session,
        key=key or f"inv-{next(_seq)}",
        entry_date=day,
        source_type="invoice",
        source_id=next(_seq),
        description="Invoice",
        legs=legs,
    )


def payment(session, sub_id: int, amount: int, *, day=JAN):
    return post_entry(
        session,
        key=f"pay-{next(_seq)}",
        entry_date=day,
        source_type="payment",
        source_id=next(_seq),
        description="Payment",
        legs=[LegSpec("1000", debit=amount), LegSpec("1200", credit=amount, subscriber_id=sub_id)],
    )
