"""Package changes, cancellation and hibernation, by hand-computed numbers, on both databases."""

import datetime as dt
from decimal import Decimal as D

import pytest
from headend.billing.changes import (
    cancel_subscription,
    change_package,
    hibernate,
    preview_change,
    preview_credit,
    resume,
)
from headend.billing.defaults import update_invoice_defaults
from headend.billing.invoicing import invoice_now
from headend.billing.models import Memo
from headend.errors import ValidationFailed
from sqlalchemy import func, select

from tests.invoicing_helpers import (
    balance,
    counts,
    fixed_day_one,
    legs_sum,
    lines_of,
    subscribe,
    subscriber,
    triple_play,
)

JAN1, JAN11, FEB1, MAR1 = (dt.date(2026, 1, 1), dt.date(2026, 1, 11), dt.date(2026, 2, 1),
                           dt.date(2026, 3, 1))


def _package(s, price, **over):
    return triple_play(s, price_monthly=D(price), setup_fee=None, **over)


def _billed_january(s, price="49.99", **package):
    """A subscriber on a `price` package, January (a full 31-day period) invoiced."""
    fixed_day_one(s)
    sub = subscriber(s)
    subscription = subscribe(s, sub, _package(s, price, **package), start=JAN1, status="active")
    invoice = invoice_now(s, sub.id, JAN1)
    assert lines_of(invoice) == [("recurring", to_minor(price), 0), ("inclusion", 0, 0)]
    return sub, subscription


def to_minor(price: str) -> int:
    return int(D(price) * 100)


def _memos(s) -> int:
    return s.scalar(select(func.count(Memo.id)))


def test_mid_period_upgrade_credits_the_old_and_charges_the_new_price(books):
    s = books
    sub, subscription = _billed_january(s)
    plus = _package(s, "69.99")
    preview = preview_change(s, subscription.id, plus.id, JAN11)
    # Jan 11 - Jan 31 is 21 of 31 days: 49.99 x 21/31 = 33.86419.. -> 33.8642 (33.86);
    # 69.99 x 21/31 = 1469.79/31 = 47.41258.. -> 47.4126 (47.41).
    assert [line.amount for line in preview.lines] == [D("-33.8642"), D("47.4126")]
    assert "21 of 31 days" in preview.lines[0].explanation
    assert counts(s) == (1, 1, 1)  # the preview wrote nothing
    change = change_package(s, subscription.id, plus.id, JAN11)
    assert change.kind == "upgrade" and subscription.package_id == plus.id
    invoice = change.invoice
    assert lines_of(invoice) == [("proration", -3386, 0), ("proration", 4741, 0)]
    assert invoice.total == 1355 and invoice.status == "open"
    assert balance(s, sub) == 4999 + 1355 and legs_sum(s) == 0
    february = invoice_now(s, sub.id, FEB1)
    assert lines_of(february) == [("recurring", 6999, 0), ("inclusion", 0, 0)]
    assert plus.name in february.lines[0].description


def test_deferred_downgrade_bills_the_new_price_from_the_next_period(books):
    s = books
    sub, subscription = _billed_january(s, "69.99")
    basic = _package(s, "49.99")
    before = counts(s)
    change = change_package(s, subscription.id, basic.id, JAN11)
    assert change.kind == "deferred_downgrade" and change.lines == []
    assert "starts on Feb 1, 2026" in change.explanation
    assert counts(s) == before and balance(s, sub) == 6999
    assert (subscription.scheduled_package_id, subscription.scheduled_change_on) == \
        (basic.id, FEB1)
    assert subscription.package_id != basic.id
    february = invoice_now(s, sub.id, FEB1)
    assert lines_of(february) == [("recurring", 4999, 0), ("inclusion", 0, 0)]
    assert subscription.package_id == basic.id
    assert (subscription.scheduled_package_id, subscription.scheduled_change_on) == (None, None)



def test_the_billing_run_applies_a_deferred_downgrade(books):
    from headend.billing.models import Invoice
    from headend.billing.run import bill_run
    from headend.tenancy.context import acting_as

    s = books
    sub, subscription = _billed_january(s, "69.99")
    basic = _package(s, "49.99")
    change_package(s, subscription.id, basic.id, JAN11)
    s.commit()
    with acting_as(None):
        bill_run(s, FEB1)
    february = s.scalars(select(Invoice).where(Invoice.source == "billing_run")).one()
    assert lines_of(february) == [("recurring", 4999, 0), ("inclusion", 0, 0)]
    s.refresh(subscription)
    assert subscription.package_id == basic.id and subscription.scheduled_package_id is None

def test_immediate_downgrade_policy_credits_the_difference_with_a_memo(books):
    s = books
    sub, subscription = _billed_january(s, "69.99")
    update_invoice_defaults(s, downgrade_policy="immediate")
    basic = _package(s, "49.99")
    change = change_package(s, subscription.id, basic.id, JAN11)
    assert change.kind == "immediate_downgrade" and change.invoice is None
    assert change.memo.amount == 4741 - 3386 and subscription.package_id == basic.id
    assert balance(s, sub) == 6999 - 1355 and legs_sum(s) == 0


def test_cancellation_credits_the_unused_days(books):
    s = books
    sub, subscription = _billed_january(s)
    memo = cancel_subscription(s, subscription.id, JAN11, today=JAN11)
    assert memo.amount == 3386 and subscription.status == "cancelled"
    assert subscription.cancel_on == JAN11
    assert balance(s, sub) == 4999 - 3386 and legs_sum(s) == 0
    assert invoice_now(s, sub.id, FEB1) is None


def test_credit_previews_write_nothing_and_match_the_memo(books):
    s = books
    sub, subscription = _billed_january(s, hibernation_allowed=True)
    # Cancelling on Jan 11 credits Jan 11 - Jan 31, 21 of 31 days:
    # 49.99 x 21/31 = 1049.79/31 = 33.86419.. -> -33.8642 (33.86).
    lines = preview_credit(s, subscription.id, JAN11)
    assert [line.amount for line in lines] == [D("-33.8642")]
    assert "21 of 31 days" in lines[0].explanation
    held = preview_credit(s, subscription.id, JAN11, FEB1, "Hibernation")
    assert [line.amount for line in held] == [D("-33.8642")]
    assert counts(s) == (1, 1, 1) and _memos(s) == 0  # nothing written
    assert subscription.status == "active" and subscription.cancel_on is None
    assert subscription.hibernate_from is None
    with pytest.raises(ValidationFailed) as failed:
        preview_credit(s, subscription.id, dt.date(2025, 12, 31))
    assert "cancel_date" in failed.value.errors
    update_invoice_defaults(s, credit_unused_on_cancel=False)
    assert preview_credit(s, subscription.id, JAN11) == []
    update_invoice_defaults(s, credit_unused_on_cancel=True)
    assert cancel_subscription(s, subscription.id, JAN11, today=JAN11).amount == 3386


def test_cancellation_without_credit_and_in_the_future(books):
    s = books
    sub, subscription = _billed_january(s)
    update_invoice_defaults(s, credit_unused_on_cancel=False)
    assert cancel_subscription(s, subscription.id, JAN11, today=dt.date(2026, 1, 5)) is None
    assert subscription.status == "active" and subscription.cancel_on == JAN11
    assert balance(s, sub) == 4999 and _memos(s) == 0
    assert invoice_now(s, sub.id, FEB1) is None


def test_hibernation_next_invoice_has_the_credit_and_the_fee(books):
    s = books
    sub, subscription = _billed_january(s, hibernation_allowed=True,
                                        hibernation_fee=D("5.00"), hibernation_max_days=90)
    assert hibernate(s, subscription.id, FEB1, MAR1, today=FEB1) is None
    assert subscription.status == "hibernating"
    february = invoice_now(s, sub.id, FEB1)
    assert lines_of(february) == [("recurring", 4999, 0), ("inclusion", 0, 0),
                                  ("hibernation", -4999, 0), ("hibernation", 500, 0)]
    resume(s, subscription.id, MAR1, today=MAR1)
    assert subscription.status == "active" and subscription.hibernate_until == MAR1
    march = invoice_now(s, sub.id, MAR1)
    assert lines_of(march) == [("recurring", 4999, 0), ("inclusion", 0, 0)]


def test_hibernating_inside_the_billed_period_credits_those_days(books):
    s = books
    sub, subscription = _billed_january(s, hibernation_allowed=True)
    memo = hibernate(s, subscription.id, JAN11, None, today=JAN11)
    assert memo.amount == 3386 and balance(s, sub) == 4999 - 3386


@pytest.mark.parametrize("case, field", [
    ("same_package", "package"), ("outside_period", "change_date"),
    ("cycle_not_offered", "package"), ("custom_price", "custom_price"),
    ("no_package", "package"), ("other_cycle", "cycle")])
def test_bad_package_changes_name_the_field_and_write_nothing(books, case, field):
    s = books
    sub, subscription = _billed_january(s, allow_custom_pricing=True)
    target, day, kwargs = _package(s, "69.99").id, JAN11, {}
    if case == "same_package":
        target = subscription.package_id
    elif case == "outside_period":
        day = FEB1
    elif case == "cycle_not_offered":
        target = triple_play(s, price_monthly=None).id
    elif case == "custom_price":
        subscription.custom_price = D("40.00")
        s.flush()
    elif case == "no_package":
        target = 999999
    elif case == "other_cycle":
        kwargs = {"cycle": "annual"}
    before = (counts(s), subscription.package_id, subscription.scheduled_package_id)
    with pytest.raises(ValidationFailed) as failed:
        change_package(s, subscription.id, target, day, **kwargs)
    assert field in failed.value.errors
    assert (counts(s), subscription.package_id, subscription.scheduled_package_id) == before


@pytest.mark.parametrize("allowed, start, until, field", [
    (False, FEB1, MAR1, "package"), (True, MAR1, FEB1, "until"),
    (True, FEB1, dt.date(2026, 6, 1), "until"), (True, dt.date(2025, 12, 1), MAR1, "start")])
def test_bad_hibernation_names_the_field_and_writes_nothing(books, allowed, start, until, field):
    s = books
    sub, subscription = _billed_january(s, hibernation_allowed=allowed,
                                        hibernation_max_days=90)
    with pytest.raises(ValidationFailed) as failed:
        hibernate(s, subscription.id, start, until, today=JAN11)
    assert field in failed.value.errors
    assert subscription.status == "active" and subscription.hibernate_from is None
    assert _memos(s) == 0


def test_bad_cancellation_names_the_field(books):
    s = books
    sub, subscription = _billed_january(s)
    with pytest.raises(ValidationFailed) as failed:
        cancel_subscription(s, subscription.id, dt.date(2025, 12, 31), today=JAN11)
    assert "cancel_date" in failed.value.errors
    assert subscription.cancel_on is None and _memos(s) == 0


def test_the_subscription_page_previews_and_applies_changes(app, make_tenant, login_as):
    from headend.billing.models import Invoice
    from headend.db import db
    from headend.subscribers.models import Subscription
    from headend.tenancy.context import acting_as

    today = dt.date.today()
    first = today.replace(day=1)
    next_month = (first + dt.timedelta(days=32)).replace(day=1)
    t, other = make_tenant("Changes A"), make_tenant("Changes B")
    with app.app_context(), acting_as(t):
        s = db.session
        fixed_day_one(s)
        sub = subscriber(s)
        basic = _package(s, "49.99", hibernation_allowed=True)
        plus = _package(s, "69.99")
        subscription = subscribe(s, sub, basic, start=first, status="active")
        invoice_now(s, sub.id, first)
        s.commit()
        pk, plus_id, plus_name = subscription.id, plus.id, plus.name
    client = login_as(t, "Billing")
    page = client.get(f"/subscriptionview/configure/{pk}").get_data(as_text=True)
    assert 'id="change-package-form"' in page and plus_name in page
    assert 'id="cancel-form"' in page and 'id="hibernate-form"' in page
    assert 'id="preview-cancel"' in page and 'id="preview-hibernate"' in page
    # Cancelling on the period's first day credits all of it: 49.99.
    credit = client.get(f"/billing/subscription/{pk}/credit-preview?what=Cancellation"
                        f"&cancel_date={first}").get_data(as_text=True)
    assert 'id="credit-total">49.99 ' in credit and "Total credit (before tax)" in credit
    held = client.get(f"/billing/subscription/{pk}/credit-preview?what=Hibernation"
                      f"&start={first}&until={next_month}").get_data(as_text=True)
    assert 'id="credit-total">49.99 ' in held
    with app.app_context(), acting_as(t):
        assert db.session.get(Subscription, pk).status == "active"
        assert db.session.scalar(select(func.count(Memo.id))) == 0
    preview = client.get(f"/billing/subscription/{pk}/change?package_id={plus_id}"
                         f"&change_date={today}").get_data(as_text=True)
    assert "Credit: unused" in preview and 'id="apply-change"' in preview
    bad = client.get(f"/billing/subscription/{pk}/change?package_id={plus_id}"
                     f"&change_date={next_month}").get_data(as_text=True)
    assert 'data-field="change_date"' in bad
    resp = client.post(f"/billing/subscription/{pk}/change",
                       data={"package_id": plus_id, "change_date": str(today)})
    assert resp.status_code == 302
    client.post(f"/billing/subscription/{pk}/hibernate", data={"start": str(next_month)})
    with app.app_context(), acting_as(t):
        row = db.session.get(Subscription, pk)
        assert row.package_id == plus_id and row.hibernate_from is None  # Plus has none
        assert db.session.scalar(select(func.count(Invoice.id))) == 2
    client.post(f"/billing/subscription/{pk}/cancel", data={"cancel_date": str(today)})
    with app.app_context(), acting_as(t):
        assert db.session.get(Subscription, pk).status == "cancelled"
    assert login_as(other, "Billing").get(
        f"/billing/subscription/{pk}/change?package_id={plus_id}").status_code == 404
