"""Recurring custom lines: a charge or discount added to every invoice of a subscriber from its
start date until its (exclusive) end date. The invoicing engine and the billing run read them
through `active_recurring_lines`; the amount on each invoice is quantity x unit price, a
discount subtracting it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing.models import RecurringLine
from headend.billing.periods import Period
from headend.catalog.models import Item
from headend.errors import ValidationFailed, raise_if, require
from headend.money import parse_decimal
from headend.subscribers.models import Subscriber

RECURRING_KINDS = ("charge", "discount")
FIELDS = ("subscriber_id", "bill_to_subscriber_id", "item_id", "description", "kind",
          "quantity", "unit_price", "start_date", "end_date")


def _related_id(line: RecurringLine, relation: str):
    """The related id whether the caller set the relationship (forms, API) or only the id."""
    target = getattr(line, relation)
    return target.id if target is not None else getattr(line, f"{relation}_id")


def _exists(session: Session, model, pk) -> bool:
    if not isinstance(pk, int) or isinstance(pk, bool):
        return False
    with session.no_autoflush:  # scoped SELECT: another tenant's row does not exist
        return session.scalar(sa.select(model.id).where(model.id == pk)) is not None


def _decimal(errors: dict, field: str, value, *, positive: bool) -> Decimal | None:
    if value is None or value == "":
        require(errors, field, False, "is required")
        return None
    try:
        number = parse_decimal(value, places=4)
    except ValueError as exc:
        require(errors, field, False, str(exc))
        return None
    require(errors, field, number > 0 or not positive, "must be more than zero")
    return number


def _is_date(value) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def validate_recurring_line(session: Session, line: RecurringLine) -> None:
    """The rules for a recurring line; normalises the decimals it accepts."""
    errors: dict[str, list[str]] = {}
    subscriber_id = _related_id(line, "subscriber")
    require(errors, "subscriber", _exists(session, Subscriber, subscriber_id), "does not exist")
    bill_to = _related_id(line, "bill_to_subscriber")
    if bill_to is not None:
        require(errors, "bill_to_subscriber", _exists(session, Subscriber, bill_to),
                "does not exist")
        require(errors, "bill_to_subscriber", bill_to != subscriber_id,
                "leave empty to bill the subscriber itself")
    item_id = _related_id(line, "item")
    if item_id is not None:
        require(errors, "item", _exists(session, Item, item_id), "does not exist")
    require(errors, "description", bool((line.description or "").strip())
            and len(line.description) <= 255, "is required (at most 255 characters)")
    line.kind = line.kind or "charge"
    require(errors, "kind", line.kind in RECURRING_KINDS,
            f"must be one of: {', '.join(RECURRING_KINDS)}")
    quantity = _decimal(errors, "quantity", Decimal(1) if line.quantity is None
                        else line.quantity, positive=True)
    price = _decimal(errors, "unit_price", line.unit_price, positive=False)
    require(errors, "start_date", _is_date(line.start_date), "must be a date")
    if line.end_date is not None:
        require(errors, "end_date", _is_date(line.end_date), "must be a date")
        require(errors, "end_date", not (_is_date(line.end_date) and _is_date(line.start_date))
                or line.end_date > line.start_date, "must be after the start date")
    raise_if(errors)
    line.quantity, line.unit_price = quantity, price
    line.description = line.description.strip()


def _line(session: Session, line_id) -> RecurringLine:
    line = None
    if isinstance(line_id, int) and not isinstance(line_id, bool):
        line = session.scalar(sa.select(RecurringLine).where(RecurringLine.id == line_id))
    if line is None:
        raise ValidationFailed({"recurring_line": "does not exist"})
    return line


def _set(line: RecurringLine, fields: dict) -> None:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValidationFailed({k: "is not a field of a recurring line" for k in sorted(unknown)})
    for key, value in fields.items():
        setattr(line, key, value)


def create_recurring_line(session: Session, **fields) -> RecurringLine:
    line = RecurringLine()
    _set(line, fields)
    validate_recurring_line(session, line)
    session.add(line)
    session.flush()
    return line


def update_recurring_line(session: Session, line_id: int, **changes) -> RecurringLine:
    """Change a line; refused changes leave the stored row as it was."""
    line = _line(session, line_id)
    with session.no_autoflush:
        try:
            _set(line, changes)
            validate_recurring_line(session, line)
        except ValidationFailed:
            session.expire(line)
            raise
    session.flush()
    return line


def delete_recurring_line(session: Session, line_id: int) -> None:
    """Lines already invoiced stay on their invoices (invoice lines are copies)."""
    session.delete(_line(session, line_id))
    session.flush()


def active_recurring_lines(session: Session, subscriber_ids: Iterable[int],
                           period: Period) -> list[RecurringLine]:
    """The lines of these subscribers that overlap `period` (both ends exclusive): started
    before the period ends and not ended by its start. `bill_to_subscriber_id` says whose
    invoice each one goes on."""
    ids = list(subscriber_ids)
    if not ids:
        return []
    return list(session.scalars(
        sa.select(RecurringLine)
        .where(RecurringLine.subscriber_id.in_(ids), RecurringLine.start_date < period.end,
               sa.or_(RecurringLine.end_date.is_(None), RecurringLine.end_date > period.start))
        .order_by(RecurringLine.subscriber_id, RecurringLine.id)))
