"""The seed's "Triple Play" built through the admin UI and the REST API, and bad input refused."""

import contextlib
from decimal import Decimal

import pytest
from headend.catalog import models as m
from headend.db import db
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

PRICES = {"setup_fee": "49.99", "price_monthly": "119.99", "price_quarterly": "349.99",
          "price_semiannual": "689.99", "price_annual": "1319.99"}
PACKAGE_FORM = {"name": "Triple Play", "customer_type": "both",
                "account_manager_visibility": "visible", "tax_mode": "subscriber",
                "custom_tax_kind": "", "active": "y", **PRICES}
SERVICES = [("Internet", "internet", "50"), ("TV", "tv", ""), ("VoIP", "voip", "")]


@contextlib.contextmanager
def scoped(app, tenant):
    """A session acting for `tenant`, outside any request (requests derive their own scope)."""
    with app.app_context(), acting_as(tenant):
        yield db.session
        db.session.remove()


def counts(app, tenant, *models):
    with scoped(app, tenant) as ctx:
        return [ctx.scalar(select(func.count()).select_from(model)) for model in models]


def one(app, tenant, stmt):
    with scoped(app, tenant) as ctx:
        return ctx.scalar(stmt)


def assert_triple_play(app, tenant):
    with scoped(app, tenant) as ctx:
        package = ctx.scalar(select(m.Package).where(m.Package.name == "Triple Play"))
        assert package.setup_fee == Decimal("49.99")
        assert package.offered_cycles() == {
            "monthly": Decimal("119.99"), "quarterly": Decimal("349.99"),
            "semiannual": Decimal("689.99"), "annual": Decimal("1319.99")}
        assert [(line.label, line.service.type, line.fcc_technology_code)
                for line in package.service_lines] == [
            ("Internet", "internet", 50), ("TV", "tv", None), ("VoIP", "voip", None)]
        [inclusion] = package.inclusions
        assert inclusion.item.code == "ROUTER" and not inclusion.recurring_price
        assert package.internet_profile.download_speed == 300


def test_triple_play_through_the_ui(app, make_tenant, login_as):
    tenant = make_tenant()
    c = login_as(tenant, "Admin")
    account = one(app, tenant, select(m.Account.id).where(m.Account.code == "4300"))

    def post(url, data):
        resp = c.post(url, data=data)
        assert resp.status_code == 302, resp.get_data(as_text=True)[-2000:]

    post("/itemview/add", {"code": "ROUTER", "name": "Wi-Fi router", "type": "equipment",
                           "price": "5.00", "recurring": "y", "income_account": account,
                           "taxable": "y", "active": "y"})
    post("/packageview/add", PACKAGE_FORM)
    package = one(app, tenant, select(m.Package.id))
    for position, (name, kind, code) in enumerate(SERVICES):
        post("/serviceview/add", {"name": name, "type": kind})
        service = one(app, tenant, select(m.Service.id).where(m.Service.name == name))
        post("/packageservicelineview/add", {
            "package": package, "service": service, "label": name, "quantity": "1",
            "fcc_technology_code": code, "position": str(position)})
    item = one(app, tenant, select(m.Item.id))
    post("/packageinclusionview/add", {"package": package, "item": item, "quantity": "1",
                                       "recurring_price": ""})
    post("/internetprofileview/add", {"package": package, "download_speed": "300",
                                      "upload_speed": "300", "speed_unit": "Mbps",
                                      "usage_billing_basis": "MB"})
    assert_triple_play(app, tenant)
    assert c.get(f"/packageview/show/{package}").status_code == 200
    assert c.get("/packageview/list/").status_code == 200
    profile = one(app, tenant, select(m.InternetProfile.id))
    assert c.post("/internetprofileview/action_post", data={
        "action": "restore_defaults", "rowid": [str(profile)]}).status_code == 302
    assert one(app, tenant, select(m.InternetProfile.download_speed)) == 25


def test_triple_play_through_the_api(app, make_tenant, api_as):
    tenant = make_tenant()
    c, headers = api_as(tenant, "Billing")
    account = one(app, tenant, select(m.Account.id).where(m.Account.code == "4300"))

    def post(resource, body):
        resp = c.post(f"/api/v1/{resource}/", json=body, headers=headers)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()["id"]

    item = post("item", {"code": "ROUTER", "name": "Wi-Fi router", "type": "equipment",
                         "price": "5.00", "recurring": True, "income_account": account})
    package = post("package", {**PACKAGE_FORM, "active": True, "custom_tax_kind": None})
    for position, (name, kind, code) in enumerate(SERVICES):
        service = post("service", {"name": name, "type": kind})
        post("package_service_line", {"package": package, "service": service, "label": name,
                                      "fcc_technology_code": int(code) if code else None,
                                      "position": position})
    post("package_inclusion", {"package": package, "item": item, "quantity": 1})
    post("internet_profile", {"package": package, "download_speed": 300, "upload_speed": 300})
    assert_triple_play(app, tenant)
    shown = c.get(f"/api/v1/package/{package}", headers=headers).get_json()["result"]
    assert shown["price_annual"] in ("1319.99", "1319.9900")
    assert [line["label"] for line in shown["service_lines"]] == ["Internet", "TV", "VoIP"]
    assert shown["internet_profile"]["download_speed"] == 300


@pytest.mark.parametrize("value", ["0.0001", "12345678.9999"])
def test_api_decimals_round_trip(make_tenant, api_as, value):
    c, headers = api_as(make_tenant(), "Admin")
    resp = c.post("/api/v1/item/", json={"code": "X", "name": "X", "type": "fee",
                                         "price": value}, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    shown = c.get(f"/api/v1/item/{resp.get_json()['id']}", headers=headers).get_json()
    assert Decimal(str(shown["result"]["price"])) == Decimal(value)


def _seed_item_and_package(app, tenant):
    with scoped(app, tenant) as ctx:
        internet = m.Service(name="Internet", type="internet")
        package = m.Package(name="Triple Play", price_monthly=Decimal("119.99"))
        line = m.PackageServiceLine(package=package, service=internet, label="Internet")
        ctx.add_all([m.Item(code="ROUTER", name="Router", type="equipment",
                            price=Decimal(5)), internet, package, line])
        ctx.commit()
        return package.id, internet.id, line.id


ITEM = {"name": "Thing", "type": "fee"}
# (resource, form data, JSON body, field, UI message, counted model)
BAD = [
    ("item", {**ITEM, "code": "A", "price": "-1"}, {**ITEM, "code": "A", "price": "-1"},
     "price", "cannot be negative", m.Item),
    ("item", {**ITEM, "code": "A", "price": "abc"}, {**ITEM, "code": "A", "price": "abc"},
     "price", "Not a valid decimal value", m.Item),
    ("item", {**ITEM, "code": "ROUTER", "price": "1"}, {**ITEM, "code": "ROUTER", "price": "1"},
     "code", "already used by another item", m.Item),
    ("package", {**PACKAGE_FORM, "name": "P2", "price_monthly": "-5"},
     {"name": "P2", "price_monthly": "-5"}, "price_monthly", "cannot be negative", m.Package),
]


@pytest.mark.parametrize("resource,form,body,field,message,model", BAD)
def test_bad_input_refused_in_ui_and_api(app, make_tenant, login_as, api_as, resource, form,
                                         body, field, message, model):
    tenant = make_tenant()
    _seed_item_and_package(app, tenant)
    before = counts(app, tenant, model)
    resp = login_as(tenant, "Admin").post(f"/{resource}view/add", data=form)
    assert resp.status_code == 200
    assert message in resp.get_data(as_text=True)
    c, headers = api_as(tenant, "Admin")
    resp = c.post(f"/api/v1/{resource}/", json=body, headers=headers)
    assert resp.status_code == 422 and field in resp.get_json()["message"], resp.get_json()
    assert counts(app, tenant, model) == before


def test_unknown_fcc_code_and_low_burst_refused(app, make_tenant, login_as, api_as):
    tenant = make_tenant()
    package, service, _ = _seed_item_and_package(app, tenant)
    ui = login_as(tenant, "Admin")
    c, headers = api_as(tenant, "Admin")
    line = {"package": package, "service": service, "label": "Fiber", "quantity": 1,
            "fcc_technology_code": 99}
    resp = ui.post("/packageservicelineview/add", data={**line, "position": 0})
    assert resp.status_code == 200 and "is not an FCC BDC" in resp.get_data(as_text=True)
    resp = c.post("/api/v1/package_service_line/", json=line, headers=headers)
    assert resp.status_code == 422 and "fcc_technology_code" in resp.get_json()["message"]
    profile = {"package": package, "download_speed": 100, "upload_speed": 20,
               "burst_download": 50, "burst_upload": 40, "burst_threshold_download": 80,
               "burst_threshold_upload": 10, "burst_time_seconds": 8}
    resp = ui.post("/internetprofileview/add",
                   data={**profile, "speed_unit": "Mbps", "usage_billing_basis": "MB"})
    assert resp.status_code == 200
    assert "must be above the base download speed" in resp.get_data(as_text=True)
    resp = c.post("/api/v1/internet_profile/", json=profile, headers=headers)
    assert resp.status_code == 422 and "burst_download" in resp.get_json()["message"]
    assert counts(app, tenant, m.PackageServiceLine, m.InternetProfile) == [1, 0]


def test_service_line_in_use_cannot_be_removed(app, make_tenant, login_as, api_as):
    from headend.subscribers.models import ServiceInstance, Subscriber, Subscription

    tenant = make_tenant()
    package, _, line = _seed_item_and_package(app, tenant)
    with scoped(app, tenant) as ctx:
        sub = Subscription(subscriber=Subscriber(account_number="1001"), package_id=package,
                           status="active")
        ctx.add(ServiceInstance(subscription=sub, package_service_line_id=line, label="Net"))
        ctx.commit()
    ui = login_as(tenant, "Admin")
    resp = ui.post(f"/packageservicelineview/delete/{line}", follow_redirects=True)
    assert "used by 1 active subscription" in resp.get_data(as_text=True)
    c, headers = api_as(tenant, "Admin")
    resp = c.delete(f"/api/v1/package_service_line/{line}", headers=headers)
    assert resp.status_code == 422 and "service_lines" in resp.get_json()["message"]
    assert counts(app, tenant, m.PackageServiceLine) == [1]


def test_other_tenants_catalog_is_invisible(app, make_tenant, api_as):
    mine, theirs = make_tenant("Mine"), make_tenant("Theirs")
    package, _, _ = _seed_item_and_package(app, theirs)
    c, headers = api_as(mine, "ReadOnly")
    assert c.get(f"/api/v1/package/{package}", headers=headers).status_code == 404
    assert c.post("/api/v1/service/", json={"name": "X", "type": "tv"},
                  headers=headers).status_code in (401, 403)
