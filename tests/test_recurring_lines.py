"""Recurring custom lines: validation, CRUD and which lines overlap a billing period."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from headend.billing import recurring
from headend.billing.models import RecurringLine
from headend.billing.periods import Period
from headend.catalog.models import Item
from headend.errors import ValidationFailed
from sqlalchemy import func, select

from tests.ledger_helpers import subscriber

JAN, FEB, MAR = dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1)


def _line(session, sub, **kw):
    fields = dict(subscriber_id=sub, description="Static IP", kind="charge",
                  unit_price=D("5.00"), start_date=JAN) | kw
    return recurring.create_recurring_line(session, **fields)


def test_create_normalises_and_stores(books):
    sub = subscriber(books)
    line = _line(books, sub, unit_price="4.9950", quantity="2", description="  IP  ")
    books.commit()
    assert (line.unit_price, line.quantity, line.description) == (D("4.995"), D(2), "IP")
    assert line.end_date is None and line.kind == "charge"


@pytest.mark.parametrize("changes, field", [
    ({"unit_price": "-1"}, "unit_price"),
    ({"unit_price": "1.00001"}, "unit_price"),
    ({"unit_price": 1.5}, "unit_price"),
    ({"unit_price": None}, "unit_price"),
    ({"quantity": "0"}, "quantity"),
    ({"kind": "gift"}, "kind"),
    ({"description": " "}, "description"),
    ({"start_date": None}, "start_date"),
    ({"end_date": JAN}, "end_date"),
    ({"end_date": dt.date(2023, 12, 31)}, "end_date"),
    ({"subscriber_id": 999999}, "subscriber"),
    ({"bill_to_subscriber_id": 999999}, "bill_to_subscriber"),
    ({"item_id": 999999}, "item"),
    ({"colour": "red"}, "colour"),
])
def test_bad_lines_are_refused_naming_the_field(books, changes, field):
    sub = subscriber(books)
    with pytest.raises(ValidationFailed) as exc:
        _line(books, sub, **changes)
    assert field in exc.value.errors
    books.commit()
    assert books.scalar(select(func.count()).select_from(RecurringLine)) == 0


def test_zero_price_item_and_bill_to_are_accepted(books):
    sub, parent = subscriber(books), subscriber(books)
    item = Item(code="IP", name="Static IP", type="fee", price=D("5"))
    books.add(item)
    books.flush()
    line = _line(books, sub, unit_price="0", item_id=item.id, bill_to_subscriber_id=parent,
                 kind="discount")
    assert line.unit_price == 0 and line.item_id == item.id
    with pytest.raises(ValidationFailed) as exc:
        _line(books, sub, bill_to_subscriber_id=sub)
    assert "bill_to_subscriber" in exc.value.errors


def test_another_tenants_item_and_subscriber_do_not_exist(app, books, make_tenant):
    from headend.db import db
    from headend.tenancy.context import acting_as

    other = make_tenant("Other")
    with acting_as(other):
        foreign_sub = subscriber(db.session)
        item = Item(code="X", name="X", type="fee", price=D("1"))
        db.session.add(item)
        db.session.commit()
        item_id = item.id
    sub = subscriber(books)
    with pytest.raises(ValidationFailed) as exc:
        _line(books, sub, item_id=item_id, bill_to_subscriber_id=foreign_sub)
    assert {"item", "bill_to_subscriber"} <= set(exc.value.errors)


def test_update_and_delete(books):
    sub = subscriber(books)
    line = _line(books, sub)
    books.commit()
    recurring.update_recurring_line(books, line.id, unit_price="7.5", end_date=MAR)
    books.commit()
    assert (line.unit_price, line.end_date) == (D("7.5"), MAR)
    with pytest.raises(ValidationFailed):
        recurring.update_recurring_line(books, line.id, end_date=JAN)
    books.commit()
    books.expire_all()
    assert books.get(RecurringLine, line.id).end_date == MAR
    recurring.delete_recurring_line(books, line.id)
    books.commit()
    with pytest.raises(ValidationFailed):
        recurring.delete_recurring_line(books, line.id)


def test_active_lines_overlap_the_period(books):
    sub, other = subscriber(books), subscriber(books)
    ids = {}
    ids["open"] = _line(books, sub, start_date=JAN).id
    ids["ends_at_feb_start"] = _line(books, sub, start_date=JAN, end_date=FEB).id
    ids["ends_a_day_in"] = _line(books, sub, start_date=JAN, end_date=dt.date(2024, 2, 2)).id
    ids["starts_at_mar"] = _line(books, sub, start_date=MAR).id
    ids["starts_last_day"] = _line(books, sub, start_date=dt.date(2024, 2, 29)).id
    ids["inside"] = _line(books, sub, start_date=dt.date(2024, 2, 10),
                          end_date=dt.date(2024, 2, 12)).id
    ids["other"] = _line(books, other, start_date=JAN).id
    books.commit()
    got = {line.id for line in recurring.active_recurring_lines(books, [sub], Period(FEB, MAR))}
    assert got == {ids[k] for k in ("open", "ends_a_day_in", "starts_last_day", "inside")}
    got = {line.id for line in recurring.active_recurring_lines(books, [sub, other],
                                                                Period(MAR, dt.date(2024, 4, 1)))}
    assert got == {ids["open"], ids["starts_at_mar"], ids["starts_last_day"], ids["other"]}
    assert recurring.active_recurring_lines(books, [], Period(FEB, MAR)) == []
