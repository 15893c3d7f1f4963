"""Subscriber, subscription and note REST APIs."""

import prison
from headend.db import db
from headend.subscribers.models import ServiceInstance, Subscriber, Subscription
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.subscribers_helpers import make_package, make_subscriber, make_tax_rate


def _count(app, model):
    with app.app_context(), acting_as(None):
        return db.session.scalar(select(func.count()).select_from(model))


def test_create_subscriber_over_the_api(app, make_tenant, api_as):
    t = make_tenant()
    c, h = api_as(t, "Billing")
    resp = c.post("/api/v1/subscriber/", headers=h, json={
        "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.net",
        "latitude": "39.7817213", "longitude": "-89.6501481"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    resp2 = c.post("/api/v1/subscriber/", headers=h, json={"company": "Bakery Ltd"})
    assert resp2.status_code == 201
    got = c.get(f"/api/v1/subscriber/{resp.get_json()['id']}", headers=h).get_json()["result"]
    assert got["account_number"] == "000001" and got["status"] == "prospect"
    with app.app_context(), acting_as(t):
        numbers = sorted(s.account_number for s in db.session.scalars(select(Subscriber)))
    assert numbers == ["000001", "000002"]


def test_bad_subscriber_is_422_naming_fields(app, make_tenant, api_as):
    t = make_tenant()
    make_tax_rate(app, t, required=True)
    c, h = api_as(t, "Admin")
    resp = c.post("/api/v1/subscriber/", headers=h, json={
        "first_name": "Ada", "email": "x", "bill_day": 31})
    assert resp.status_code == 422
    message = resp.get_json()["message"]
    assert {"last_name", "email", "bill_day", "tax_rates"} <= set(message)
    assert _count(app, Subscriber) == 0


def test_api_search(app, make_tenant, api_as):
    t = make_tenant()
    make_subscriber(app, t)
    make_subscriber(app, t, first_name="Grace", last_name="Hopper", phone="555-0199")
    c, h = api_as(t, "ReadOnly")
    q = prison.dumps({"filters": [{"col": "search_text", "opr": "search", "value": "hopper 0199"}]})
    resp = c.get("/api/v1/subscriber/", headers=h, query_string={"q": q})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert [r["last_name"] for r in resp.get_json()["result"]] == ["Hopper"]


def test_add_package_over_the_api(app, make_tenant, api_as):
    t = make_tenant()
    pkg = make_package(app, t, lines=(("Internet", 2),))
    sid = make_subscriber(app, t)
    c, h = api_as(t, "Billing")
    resp = c.post("/api/v1/subscription/", headers=h, json={
        "subscriber": sid, "package": pkg, "billing_cycle": "monthly", "quantity": 2})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["result"]["status"] == "pending" and len(body["result"]["services"]) == 4
    assert _count(app, ServiceInstance) == 4
    shown = c.get(f"/api/v1/subscription/{body['id']}", headers=h).get_json()["result"]
    assert shown["package"]["name"] == "Fiber 100"


def test_api_refuses_custom_price_and_unoffered_cycle(app, make_tenant, api_as):
    t = make_tenant()
    pkg = make_package(app, t, custom=False)
    sid = make_subscriber(app, t)
    c, h = api_as(t, "Admin")
    resp = c.post("/api/v1/subscription/", headers=h, json={
        "subscriber": sid, "package": pkg, "billing_cycle": "monthly", "custom_price": "9.99"})
    assert resp.status_code == 422
    assert resp.get_json()["message"] == {
        "custom_price": ["this package does not allow custom pricing"]}
    resp = c.post("/api/v1/subscription/", headers=h, json={
        "subscriber": sid, "package": pkg, "billing_cycle": "quarterly"})
    assert resp.status_code == 422 and "billing_cycle" in resp.get_json()["message"]
    assert _count(app, Subscription) == 0 and _count(app, ServiceInstance) == 0


def test_api_cannot_reach_another_tenants_rows(app, make_tenant, api_as):
    a, b = make_tenant("A Net"), make_tenant("B Net")
    pkg = make_package(app, a)
    theirs = make_subscriber(app, b)
    c, h = api_as(a, "Admin")
    assert c.get(f"/api/v1/subscriber/{theirs}", headers=h).status_code == 404
    resp = c.post("/api/v1/subscription/", headers=h, json={
        "subscriber": theirs, "package": pkg, "billing_cycle": "monthly"})
    assert resp.status_code == 422 and "subscriber" in resp.get_json()["message"]


def test_support_writes_notes_over_the_api(app, make_tenant, api_as):
    t = make_tenant()
    sid = make_subscriber(app, t)
    c, h = api_as(t, "Support")
    resp = c.post("/api/v1/subscriber_note/", headers=h, json={"subscriber": sid,
                                                                "body": "Router replaced"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    resp = c.post("/api/v1/subscriber_note/", headers=h, json={"subscriber": sid, "body": " "})
    assert resp.status_code == 422 and "body" in resp.get_json()["message"]
    assert c.post("/api/v1/subscriber/", headers=h, json={"company": "X"}).status_code == 403
