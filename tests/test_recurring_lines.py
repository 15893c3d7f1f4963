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


# --- the profile box and the API ----------------------------------------------------------------

def _web_subscriber(app, tenant, *, subscribed=False) -> int:
    """A subscriber; `subscribed` gives it a package from today, so there is a period to bill."""
    from headend.db import db
    from headend.tenancy.context import acting_as

    from tests import invoicing_helpers as inv

    with app.app_context(), acting_as(tenant):
        if not subscribed:
            sub = subscriber(db.session)
        else:
            row = inv.subscriber(db.session)
            inv.subscribe(db.session, row, inv.triple_play(db.session), start=dt.date.today())
            sub = row.id
        db.session.commit()
        return sub


def _lines(app, tenant) -> list[RecurringLine]:
    from headend.db import db
    from headend.tenancy.context import acting_as

    with app.app_context(), acting_as(tenant):
        lines = list(db.session.scalars(select(RecurringLine).order_by(RecurringLine.id)))
        db.session.expunge_all()
        return lines


_FORM = {"description": "Loyalty discount", "kind": "discount", "quantity": "1",
         "unit_price": "3.50", "start_date": "2024-01-01", "end_date": ""}


def test_profile_box_adds_previews_and_deletes(app, make_tenant, login_as):
    t = make_tenant()
    sub = _web_subscriber(app, t, subscribed=True)
    c = login_as(t, "Billing")
    page = c.get(f"/subscriberview/profile/{sub}").get_data(as_text=True)
    assert 'id="recurring-lines"' in page and "No recurring lines." in page
    resp = c.post(f"/billing/recurring/add/{sub}", data=_FORM)
    assert resp.status_code == 302 and f"/subscriberview/profile/{sub}" in resp.location
    [line] = _lines(app, t)
    assert (line.subscriber_id, line.kind, line.unit_price, line.end_date) == (
        sub, "discount", D("3.5"), None)
    page = c.get(f"/subscriberview/profile/{sub}").get_data(as_text=True)
    assert f'data-recurring-line="{line.id}"' in page and "Loyalty discount" in page
    preview = c.get(f"/billing/subscriber/{sub}/preview").get_data(as_text=True)
    assert "Loyalty discount" in preview

    c.post(f"/billing/recurring/add/{sub}",
           data=_FORM | {"end_date": "2023-12-01", "unit_price": "x"})
    flashed = c.get(f"/subscriberview/profile/{sub}").get_data(as_text=True)
    assert "must be after the start date" in flashed and "must be a number" in flashed
    assert len(_lines(app, t)) == 1

    assert c.post(f"/billing/recurring/delete/{line.id}").status_code == 302
    assert _lines(app, t) == []


def test_profile_box_line_is_invoiced_now(app, make_tenant, login_as):
    t = make_tenant()
    sub = _web_subscriber(app, t, subscribed=True)
    c = login_as(t, "Billing")
    c.post(f"/billing/recurring/add/{sub}",
           data=_FORM | {"kind": "charge", "description": "Static IP", "unit_price": "5"})
    resp = c.post(f"/billing/subscriber/{sub}/invoice-now")
    assert resp.status_code == 302 and "/invoiceview/detail/" in resp.location, resp.location
    assert "Static IP" in c.get(resp.location).get_data(as_text=True)


def test_profile_box_read_only_and_other_tenant(app, make_tenant, login_as):
    t, other = make_tenant(), make_tenant("Other", "other")
    sub, theirs = _web_subscriber(app, t), _web_subscriber(app, other)
    reader = login_as(t, "ReadOnly")
    page = reader.get(f"/subscriberview/profile/{sub}").get_data(as_text=True)
    assert 'id="recurring-lines"' in page and 'id="add-recurring-line"' not in page
    assert reader.post(f"/billing/recurring/add/{sub}", data=_FORM).status_code in (302, 403)
    assert _lines(app, t) == []
    writer = login_as(t, "Billing")
    assert writer.post(f"/billing/recurring/add/{theirs}", data=_FORM).status_code == 404
    other_writer = login_as(other, "Billing")
    other_writer.post(f"/billing/recurring/add/{theirs}", data=_FORM)
    [line] = _lines(app, other)
    assert writer.post(f"/billing/recurring/delete/{line.id}").status_code == 404
    assert len(_lines(app, other)) == 1


def _subscriber_filter(sub: int) -> str:
    return f"?q=(filters:!((col:subscriber,opr:rel_o_m,value:{sub})))"


def test_api_lists_a_subscribers_lines_creates_and_deletes(app, make_tenant, api_as):
    t, other = make_tenant(), make_tenant("Other", "other")
    sub, second, theirs = (_web_subscriber(app, t), _web_subscriber(app, t),
                           _web_subscriber(app, other))
    c, headers = api_as(t, "Billing")
    body = {"subscriber": sub, "description": "Static IP", "unit_price": "5",
            "start_date": "2024-01-01", "end_date": "2024-06-01"}
    created = c.post("/api/v1/recurring_line/", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    line_id = created.get_json()["id"]
    c.post("/api/v1/recurring_line/", json=body | {"subscriber": second}, headers=headers)
    listed = c.get("/api/v1/recurring_line/" + _subscriber_filter(sub), headers=headers)
    assert [row["id"] for row in listed.get_json()["result"]] == [line_id]
    bad = c.post("/api/v1/recurring_line/", json=body | {"subscriber": theirs, "unit_price": ""},
                 headers=headers)
    assert bad.status_code == 422 and {"subscriber", "unit_price"} <= set(
        bad.get_json()["message"])
    reader, reader_headers = api_as(t, "ReadOnly")
    assert reader.post("/api/v1/recurring_line/", json=body,
                       headers=reader_headers).status_code in (401, 403)
    assert reader.delete(f"/api/v1/recurring_line/{line_id}",
                         headers=reader_headers).status_code in (401, 403)
    outsider, outsider_headers = api_as(other, "Billing")
    assert outsider.delete(f"/api/v1/recurring_line/{line_id}",
                           headers=outsider_headers).status_code == 404
    assert c.delete(f"/api/v1/recurring_line/{line_id}", headers=headers).status_code == 200
    assert [line.subscriber_id for line in _lines(app, t)] == [second]
