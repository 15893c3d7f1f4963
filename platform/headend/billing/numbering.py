"""Invoice numbers: the tenant's "invoice" sequence, formatted by its `number_format`
({year}, {month}, {seq}); gapless per tenant, safe under concurrent posting."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from headend.sequences import next_value, reserve

INVOICE_SEQUENCE = "invoice"


def format_number(number_format: str, seq: int, on: dt.date) -> str:
    return number_format.format(year=on.year, month=on.month, seq=seq)


def next_invoice_number(session: Session, number_format: str, on: dt.date) -> str:
    return format_number(number_format, next_value(session, INVOICE_SEQUENCE), on)


def reserve_invoice_numbers(session: Session, count: int) -> int:
    """The first of `count` consecutive sequence numbers (a billing run numbers a chunk)."""
    return reserve(session, INVOICE_SEQUENCE, count)
