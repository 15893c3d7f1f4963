"""The changes over the REST API (JWT; Subscriptions read to preview, write to change; 422 naming
fields; 404 for another tenant's subscription) and the scheduled downgrade on the subscription
page, shown by name and date and called off from there or from the API."""

import datetime as dt
from decimal import Decimal as D

import pytest
from headend.billing.changes import change_package
from headend.billing.invoicing import invoice_now
from headend.billing.models import Invoice, Memo
from headend.db import db
from headend.subscribers.models import Subscription
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.invoicing_helpers import fixed_day_one, subscribe, subscriber, triple_play

TODAY = dt.date.today()
FIRST = TODAY.replace(day=1)
NEXT_MONTH = (FIRST + dt.timedelta(days=32)).replace(day=1)
BASE = "/api/v1/subscription_change"


def _package(s, price, **over):
    return triple_play(s, price_monthly=D(price), setup_fee=None, **over)


@pytest.fixture
def setup(app, make_tenant):
    """A tenant with one subscription on Plus (69.99) billed this month, Basic (49.99) and
    Premium (89.99) offered, and another tenant; ids only."""
    t, other = make_tenant("Changes API A"), make_tenant("Changes API B")
    with app.app_context(), acting_as(t):
        s = db.session
        fixed_day_one(s)
        sub = subscriber(s)
        plus = _package(s, "69.99", hibernation_allowed=True)
        basic, premium = _package(s, "49.99"), _package(s, "89.99")
        subscription = subscribe(s, sub, plus, start=FIRST, status="active")
        invoice_now(s, sub.id, FIRST)
        s.commit()
        ids = {"tenant": t, "other": other, "pk": subscription.id, "basic": basic.id,
               "basic_name": basic.name, "premium": premium.id, "subscriber": sub.id}
        s.remove()
    return ids


def _row(app, tenant, pk) -> Subscription:
    with app.app_context(), acting_as(tenant):
        row = db.session.get(Subscription, pk)
        db.session.expunge(row)
        db.session.remove()
    return row


def _count(app, tenant, model) -> int:
    with app.app_context(), acting_as(tenant):
        n = db.session.scalar(select(func.count(model.id)))
        db.session.remove()
    return n


def test_preview_then_apply_an_upgrade(app, setup, api_as):
    client, headers = api_as(setup["tenant"], "Billing")
    pk = setup["pk"]
    preview = client.get(f"{BASE}/{pk}/package-change?package_id={setup['premium']}"
                         f"&change_date={TODAY}", headers=headers)
    assert preview.status_code == 200, preview.get_json()
    result = preview.get_json()["result"]
    assert result["kind"] == "upgrade" and (result["old_price"], result["new_price"]) == (
        "69.99", "89.99")
    assert [line["amount"] < 0 for line in result["lines"]] == [True, False]
    assert result["net"] == sum(line["amount"] for line in result["lines"]) >= 0
    assert _count(app, setup["tenant"], Invoice) == 1  # a preview writes nothing
    applied = client.post(f"{BASE}/{pk}/package-change", headers=headers,
                          json={"package_id": setup["premium"], "change_date": str(TODAY)})
    assert applied.status_code == 200, applied.get_json()
    body = applied.get_json()["result"]
    assert body["subscription"]["package_id"] == setup["premium"]
    assert body["invoice"]["total"] == result["net"] and body["memo"] is None
    assert _count(app, setup["tenant"], Invoice) == 2


def test_a_deferred_downgrade_is_scheduled_and_called_off(app, setup, api_as):
    client, headers = api_as(setup["tenant"], "Billing")
    pk = setup["pk"]
    applied = client.post(f"{BASE}/{pk}/package-change", headers=headers,
                          json={"package_id": setup["basic"], "change_date": str(TODAY)})
    scheduled = applied.get_json()["result"]
    assert scheduled["kind"] == "deferred_downgrade"
    assert scheduled["subscription"]["scheduled_package_id"] == setup["basic"]
    assert scheduled["subscription"]["scheduled_change_on"] == str(NEXT_MONTH)
    off = client.delete(f"{BASE}/{pk}/scheduled-change", headers=headers)
    assert off.status_code == 200
    assert off.get_json()["result"]["subscription"]["scheduled_package_id"] is None
    row = _row(app, setup["tenant"], pk)
    assert (row.scheduled_package_id, row.scheduled_change_on) == (None, None)
    again = client.delete(f"{BASE}/{pk}/scheduled-change", headers=headers)
    assert again.status_code == 422 and "scheduled_change" in again.get_json()["message"]


def test_cancel_hibernate_and_resume(app, setup, api_as):
    client, headers = api_as(setup["tenant"], "Billing")
    pk = setup["pk"]
    hibernated = client.post(f"{BASE}/{pk}/hibernate", headers=headers,
                             json={"start": str(TODAY)})
    assert hibernated.status_code == 200, hibernated.get_json()
    body = hibernated.get_json()["result"]
    assert body["subscription"]["status"] == "hibernating"
    assert body["subscription"]["hibernate_until"] is None
    assert body["memo"]["amount"] > 0  # today to the month's end was billed: credited
    resumed = client.post(f"{BASE}/{pk}/resume", headers=headers, json={})
    assert resumed.status_code == 200, resumed.get_json()
    body = resumed.get_json()["result"]
    assert body["subscription"]["status"] == "active"
    # Resumed the same day it began: every credited day is charged back.
    assert body["invoice"]["total"] == hibernated.get_json()["result"]["memo"]["amount"]
    cancelled = client.post(f"{BASE}/{pk}/cancel", headers=headers,
                            json={"cancel_date": str(NEXT_MONTH)})
    assert cancelled.status_code == 200
    body = cancelled.get_json()["result"]
    assert body["subscription"]["cancel_on"] == str(NEXT_MONTH) and body["memo"] is None
    assert body["subscription"]["status"] == "active"  # the daily job cancels it on the day


@pytest.mark.parametrize("route, body, field", [
    ("package-change", {"package_id": "x", "change_date": str(TODAY)}, "package_id"),
    ("package-change", {"package_id": 1, "change_date": "tomorrow"}, "change_date"),
    ("package-change", {"package_id": 1, "change_date": str(TODAY), "cycle": "annual"},
     "cycle"),
    ("package-change", {"package_id": 999999, "change_date": str(TODAY)}, "package"),
    ("package-change", {"package_id": "basic", "change_date": str(NEXT_MONTH + dt.timedelta(
        days=40))}, "change_date"),
    ("cancel", {}, "cancel_date"),
    ("cancel", {"cancel_date": "2000-01-01"}, "cancel_date"),
    ("hibernate", {"start": str(TODAY)}, "package"),  # the package stops allowing it
    ("hibernate", {"start": str(TODAY), "until": "never"}, "until"),
    ("resume", {}, "status"),
])
def test_bad_input_is_a_422_naming_the_field_and_writes_nothing(
        app, setup, api_as, route, body, field):
    client, headers = api_as(setup["tenant"], "Billing")
    pk = setup["pk"]
    if body.get("package_id") == "basic":
        body = {**body, "package_id": setup["basic"]}
    if route == "hibernate" and field == "package":
        with app.app_context(), acting_as(setup["tenant"]):
            db.session.get(Subscription, pk).package.hibernation_allowed = False
            db.session.commit()
            db.session.remove()
    resp = client.post(f"{BASE}/{pk}/{route}", headers=headers, json=body)
    assert resp.status_code == 422, resp.get_json()
    assert field in resp.get_json()["message"]
    row = _row(app, setup["tenant"], pk)
    assert (row.status, row.cancel_on, row.hibernate_from, row.scheduled_package_id) == (
        "active", None, None, None)
    assert _count(app, setup["tenant"], Invoice) == 1
    assert _count(app, setup["tenant"], Memo) == 0


def test_another_tenants_subscription_is_a_404_everywhere(app, setup, api_as):
    client, headers = api_as(setup["other"], "Admin")
    pk = setup["pk"]
    assert client.get(f"{BASE}/{pk}/package-change?package_id={setup['basic']}",
                      headers=headers).status_code == 404
    for route, body in (("package-change", {"package_id": setup["basic"],
                                            "change_date": str(TODAY)}),
                        ("cancel", {"cancel_date": str(TODAY)}),
                        ("hibernate", {"start": str(TODAY)}), ("resume", {})):
        assert client.post(f"{BASE}/{pk}/{route}", headers=headers,
                           json=body).status_code == 404, route
    assert client.delete(f"{BASE}/{pk}/scheduled-change", headers=headers).status_code == 404
    assert _row(app, setup["tenant"], pk).status == "active"


def test_writes_need_the_subscriptions_write_permission_and_a_token(app, setup, api_as,
                                                                   login_as):
    client, headers = api_as(setup["tenant"], "ReadOnly")
    pk = setup["pk"]
    assert client.get(f"{BASE}/{pk}/package-change?package_id={setup['premium']}",
                      headers=headers).status_code == 200  # previewing is reading
    refused = client.post(f"{BASE}/{pk}/cancel", headers=headers,
                          json={"cancel_date": str(TODAY)})
    assert refused.status_code == 403
    browser = login_as(setup["tenant"], "Admin")  # a session cookie is not enough
    assert browser.post(f"{BASE}/{pk}/cancel",
                        json={"cancel_date": str(TODAY)}).status_code == 401
    assert _row(app, setup["tenant"], pk).cancel_on is None


def test_the_subscription_page_shows_the_scheduled_downgrade_and_calls_it_off(
        app, setup, login_as):
    with app.app_context(), acting_as(setup["tenant"]):
        change_package(db.session, setup["pk"], setup["basic"], TODAY)
        db.session.commit()
        db.session.remove()
    pk = setup["pk"]
    page = login_as(setup["tenant"], "Billing").get(f"/subscriptionview/configure/{pk}")
    text = page.get_data(as_text=True)
    assert f"Downgrade to {setup['basic_name']} on {NEXT_MONTH}" in text
    assert 'id="cancel-scheduled-form"' in text
    readonly = login_as(setup["tenant"], "ReadOnly")
    assert 'id="cancel-scheduled-form"' not in readonly.get(
        f"/subscriptionview/configure/{pk}").get_data(as_text=True)
    assert readonly.post(f"/billing/subscription/{pk}/scheduled-change/cancel"
                         ).status_code in (302, 403)
    assert _row(app, setup["tenant"], pk).scheduled_package_id == setup["basic"]
    other = login_as(setup["other"], "Billing")
    assert other.post(f"/billing/subscription/{pk}/scheduled-change/cancel").status_code == 404
    billing = login_as(setup["tenant"], "Billing")
    resp = billing.post(f"/billing/subscription/{pk}/scheduled-change/cancel")
    assert resp.status_code == 302
    row = _row(app, setup["tenant"], pk)
    assert (row.scheduled_package_id, row.scheduled_change_on) == (None, None)
    assert "Downgrade to" not in billing.get(
        f"/subscriptionview/configure/{pk}").get_data(as_text=True)


def test_an_ended_hibernation_lets_the_page_offer_a_new_one(app, setup, login_as):
    with app.app_context(), acting_as(setup["tenant"]):
        row = db.session.get(Subscription, setup["pk"])
        row.hibernate_from, row.hibernate_until = dt.date(2020, 1, 1), dt.date(2020, 2, 1)
        db.session.commit()
        db.session.remove()
    page = login_as(setup["tenant"], "Billing").get(
        f"/subscriptionview/configure/{setup['pk']}").get_data(as_text=True)
    assert 'id="hibernate-form"' in page and 'id="resume-form"' not in page
    assert 'id="hibernation"' not in page
