"""The network as staff and API clients see it: routers and NAS (secrets never shown back), the
profile's Network box (Autofill with and without JavaScript, Activate and Deactivate driving
the RouterOS fake and a real FreeRADIUS, refused input by field, the usage chart), the preview
(drift, an unreachable router) and Apply now, the change log, the settings, permissions,
another tenant's rows, acting for all tenants, CSRF and the REST API."""

from __future__ import annotations

import contextlib
import datetime as dt
import re

import librouteros
import pytest
import sqlalchemy as sa
from headend.app import create_app
from headend.catalog.models import InternetProfile, Package
from headend.db import db, utcnow
from headend.network.models import NetworkChange, NetworkSettings, Router, UsageDaily
from headend.network.reconcile import reconcile
from headend.secrets import unseal
from headend.subscribers.models import ServiceInstance
from headend.tenancy.context import acting_as
from headend.testing import PASSWORD, app_settings, login
from pyrad import packet

from tests import network_helpers as peers
from tests.network_helpers import (
    activated,
    customer,
    enable_network,
    internet_package,
    mikrotik_router,
    radius_nas,
)

# fixtures
freeradius, nas, radius, radius_engine, routeros = (
    peers.freeradius, peers.nas, peers.radius, peers.radius_engine, peers.routeros)

# the secrets given to routers here (Core-1's "secret" is a word the pages use: not listed)
PASSWORDS = ("testing123", "pw-Edge-2", "nas-secret-9")


def _in(app, tenant, work):
    with app.app_context(), acting_as(tenant):
        result = work(db.session)
        db.session.commit()
        return result


@pytest.fixture
def isp(app, make_tenant, radius, routeros, nas):
    """A tenant with both drivers on, MikroTik router Core-1 (the RouterOS fake), NAS BRAS-1
    and the Internet package: {"tenant", "router", "nas", "package"} (ids)."""
    tenant = make_tenant("Network ISP", "network-isp")

    def setup(s):
        enable_network(s, radius)
        return {"tenant": tenant, "router": mikrotik_router(s, routeros).id,
                "nas": radius_nas(s, nas).id, "package": internet_package(s).id}
    return _in(app, tenant, setup)


def _customer(app, isp):
    """A pending Internet service: (subscriber id, account number, service id)."""
    def make(s):
        sub, service = customer(s, s.get(Package, isp["package"]))
        return sub.id, sub.account_number, service.id
    return _in(app, isp["tenant"], make)


def _activated(app, isp, username, *, on_router=True, static_ip=None):
    """An active service, reconciled onto the network: (subscriber id, service id)."""
    def make(s):
        router = s.get(Router, isp["router"]) if on_router else None
        sub, service = activated(s, s.get(Package, isp["package"]), router,
                                 static_ip=static_ip, username=username)
        return sub.id, service.id
    ids = _in(app, isp["tenant"], make)
    _in(app, isp["tenant"], reconcile)
    return ids


def _row(app, tenant, model, pk):
    """A row as stored now, detached (to read its columns after the session ends)."""
    def read(s):
        row = s.get(model, pk)
        s.expunge(row)
        return row
    return _in(app, tenant, read)


def _secrets(app, tenant, router_id) -> dict:
    return _in(app, tenant, lambda s: unseal(s.get(Router, router_id).secret_config))


def _service(app, tenant, service_id) -> ServiceInstance:
    return _row(app, tenant, ServiceInstance, service_id)


def _queues(server) -> dict[str, dict]:
    return {row["name"]: row for row in server.rows("/queue/simple")}


def _text(resp) -> str:
    return resp.get_data(as_text=True)


def _flashes(client) -> list[str]:
    """The messages flashed since the last call (taken, as a rendered page would)."""
    with client.session_transaction() as session:
        return [message for _, message in session.pop("_flashes", [])]


@contextlib.contextmanager
def _router_api(server):
    api = librouteros.connect(server.host, "admin", "secret", port=server.port)
    try:
        yield api
    finally:
        api.close()


def _router_form(**values) -> dict:
    return {"name": "Edge-2", "kind": "mikrotik", "address": "127.0.0.1", "api_port": "8729",
            "username": "admin", "password": "pw-Edge-2", "radius_secret": "",
            "coa_port": "3799", **values}


# --- Network > Routers -------------------------------------------------------------------------

def test_router_crud_keeps_secrets_write_only(app, isp, login_as):
    tenant = isp["tenant"]
    c = login_as(tenant, "Technician")
    assert c.post("/network/routers/add", data=_router_form()).status_code == 302
    edge = _row(app, tenant, Router, _in(app, tenant, lambda s: s.scalar(
        sa.select(Router.id).where(Router.name == "Edge-2"))))
    assert (edge.kind, edge.api_port, edge.username) == ("mikrotik", 8729, "admin")
    assert _secrets(app, tenant, edge.id) == {"password": "pw-Edge-2"}
    listing = _text(c.get("/network/routers/"))
    assert "Edge-2" in listing and "Core-1" in listing and "BRAS-1" in listing
    form = _text(c.get(f"/network/routers/{edge.id}/edit"))
    assert 'value="admin"' in form and "Stored. Leave blank to keep" in form
    for page in (listing, form):
        assert not any(secret in page for secret in PASSWORDS)
    # a blank password keeps the stored one; the active box unticked deactivates
    resp = c.post(f"/network/routers/{edge.id}/edit",
                  data=_router_form(address="127.0.0.2", password=""))
    assert resp.status_code == 302
    edge = _row(app, tenant, Router, edge.id)
    assert (edge.address, edge.active) == ("127.0.0.2", False)
    assert _secrets(app, tenant, edge.id) == {"password": "pw-Edge-2"}
    # Deactivate from the list keeps everything else
    assert c.post(f"/network/routers/{isp['nas']}/deactivate").status_code == 302
    assert _row(app, tenant, Router, isp["nas"]).active is False
    assert _secrets(app, tenant, isp["nas"]) == {"radius_secret": "testing123"}


def test_bad_router_input_is_shown_by_field_and_saves_nothing(app, isp, login_as):
    c = login_as(isp["tenant"], "Admin")
    resp = c.post("/network/routers/add", data=_router_form(
        name="Core-1", kind="cisco", address="", api_port="eighty", password="pw-Edge-2"))
    assert resp.status_code == 200
    page = _text(resp)
    for field, message in (("name", "is already the name of another router"),
                           ("kind", "must be one of"), ("address", "is required"),
                           ("api_port", "must be a port number")):
        assert re.search(f'data-error-for="{field}">{message}', page), field
    assert "pw-Edge-2" not in page  # the typed password is not sent back either
    resp = c.post("/network/routers/add", data=_router_form(kind="radius_nas", name="NAS-2"))
    assert 'data-error-for="radius_secret">a NAS needs its RADIUS secret' in _text(resp)
    assert _in(app, isp["tenant"], lambda s: s.scalar(
        sa.select(sa.func.count()).select_from(Router))) == 2


def test_support_reads_the_network_but_cannot_change_it(app, isp, login_as):
    tenant = isp["tenant"]
    _, _, service_id = _customer(app, isp)
    c = login_as(tenant, "Support")
    listing = _text(c.get("/network/routers/"))
    assert "Core-1" in listing and 'id="add-router"' not in listing
    assert c.get("/network/preview/").status_code == 200
    for url, data in (("/network/routers/add", _router_form()),
                      (f"/network/routers/{isp['router']}/deactivate", {}),
                      (f"/network/service/{service_id}/activate",
                       {"username": "eve", "password": "s3cretPW"}),
                      ("/network/settings/", {"username_pattern": "{n}",
                                              "password_length": "8"})):
        assert c.post(url, data=data).status_code == 403, url
    assert _in(app, tenant, lambda s: (
        s.scalar(sa.select(sa.func.count()).select_from(Router)),
        s.get(Router, isp["router"]).active, s.get(ServiceInstance, service_id).status,
        s.scalar(sa.select(NetworkSettings.username_pattern)) or "{account}-{n}")) == (
        2, True, "pending", "{account}-{n}")


# --- the profile's Network box: Autofill, Activate, Deactivate --------------------------------

def test_autofill_then_activate_provisions_the_router(app, isp, login_as, routeros):
    tenant, router = isp["tenant"], isp["router"]
    sub, account, service_id = _customer(app, isp)
    c = login_as(tenant, "Technician")
    profile = _text(c.get(f"/subscriberview/profile/{sub}"))
    assert 'id="network"' in profile and f'id="activate-{service_id}"' in profile
    assert f'data-autofill-url="/network/service/{service_id}/autofill"' in profile
    # the button's JSON
    filled = c.post(f"/network/service/{service_id}/autofill")
    assert filled.status_code == 200 and filled.headers["Cache-Control"] == "no-store"
    username, password = filled.get_json()["username"], filled.get_json()["password"]
    assert username == f"{account}-1" and len(password) == 12
    # without JavaScript: the form's Autofill button re-renders it filled, the rest kept
    page = _text(c.post(f"/network/service/{service_id}/activate", data={
        "autofill": "1", "username": "", "password": "", "static_ip": "10.1.0.7",
        "router_id": str(router)}))
    assert f'name="username" value="{account}-1"' in page
    typed = re.search(r'name="password" value="([^"]+)"', page).group(1)
    assert len(typed) == 12 and 'value="10.1.0.7"' in page
    assert re.search(f'<option value="{router}" selected>Core-1', page)
    assert _service(app, tenant, service_id).username is None  # Autofill saved nothing
    resp = c.post(f"/network/service/{service_id}/activate", data={
        "username": username, "password": password, "static_ip": "10.1.0.7",
        "router_id": str(router)})
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith(f"/subscriberview/profile/{sub}#network")
    # the reconcile requested before the commit ran after it (inline jobs here)
    queue = _queues(routeros)[username]
    assert (queue["target"], queue["max-limit"]) == ("10.1.0.7/32", "10000000/50000000")
    secret = next(r for r in routeros.rows("/ppp/secret") if r["name"] == username)
    assert secret["password"] == password
    profile = _text(c.get(f"/subscriberview/profile/{sub}"))
    box = profile[profile.index('id="network"'):]
    assert f'data-service-id="{service_id}" data-status="active"' in box
    assert "50M down / 10M up" in box and "Core-1" in box
    assert f'id="deactivate-{service_id}"' in box and f'id="activate-{service_id}"' not in box


def test_activation_with_a_taken_static_ip_is_refused_by_field(app, isp, login_as, routeros):
    tenant = isp["tenant"]
    _activated(app, isp, "alice", static_ip="10.1.0.7")
    _, _, service_id = _customer(app, isp)
    writes = len(routeros.writes)
    c = login_as(tenant, "Technician")
    resp = c.post(f"/network/service/{service_id}/activate", data={
        "username": "bob", "password": "s3cretPW", "static_ip": "10.1.0.7",
        "router_id": str(isp["router"])})
    assert resp.status_code == 200
    page = _text(resp)
    assert re.search(r'data-error-for="static_ip">is already assigned', page)
    assert 'name="username" value="bob"' in page  # the input is kept
    service = _service(app, tenant, service_id)
    assert (service.status, service.username, service.static_ip) == ("pending", None, None)
    assert len(routeros.writes) == writes and "bob" not in _queues(routeros)


def test_deactivate_removes_the_service_from_the_router(app, isp, login_as, routeros):
    tenant = isp["tenant"]
    sub, service_id = _activated(app, isp, "alice")
    assert "alice" in _queues(routeros)
    c = login_as(tenant, "Technician")
    resp = c.post(f"/network/service/{service_id}/deactivate")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("#network")
    assert _queues(routeros) == {} and routeros.rows("/ppp/secret") == []
    assert _service(app, tenant, service_id).status == "inactive"
    box = _text(c.get(f"/subscriberview/profile/{sub}"))
    # an inactive service can be activated again, its credentials offered back
    assert f'id="activate-{service_id}"' in box and 'name="username" value="alice"' in box


def test_activation_through_radius_and_a_package_without_overrides(app, isp, login_as,
                                                                  freeradius):
    tenant = isp["tenant"]
    _, _, service_id = _customer(app, isp)
    c = login_as(tenant, "Admin")
    resp = c.post(f"/network/service/{service_id}/activate", data={
        "username": "carol", "password": "s3cretPW", "router_id": str(isp["nas"]),
        "download_override": "100"})
    page = _text(resp)  # the package shows no override fields: the error is above the form
    assert 'data-error-for="download_override">Download override: the package does not ' \
        'allow speed overrides' in page
    resp = c.post(f"/network/service/{service_id}/activate", data={
        "username": "carol", "password": "s3cretPW", "router_id": str(isp["nas"])})
    assert resp.status_code == 302
    code, attributes = freeradius.authenticate("carol", "s3cretPW")
    assert code == packet.AccessAccept and attributes["Mikrotik-Rate-Limit"] == [peers.RATE]


def test_the_profile_charts_30_days_of_usage_and_totals_the_period(app, isp, login_as):
    tenant = isp["tenant"]
    sub, service_id = _activated(app, isp, "alice")
    today = utcnow().date()

    def usage(s):
        s.scalar(sa.select(InternetProfile)).data_limit_gb = 10
        s.add(UsageDaily(service_id=service_id, day=today, download_bytes=2_000_000_000,
                         upload_bytes=500_000_000, session_seconds=3600))
        s.add(UsageDaily(service_id=service_id, day=today - dt.timedelta(days=40),
                         download_bytes=5_000_000_000, upload_bytes=0, session_seconds=60))
    _in(app, tenant, usage)
    page = _text(login_as(tenant, "ReadOnly").get(f"/subscriberview/profile/{sub}"))
    chart = page[page.index(f'data-testid="usage-chart-{service_id}"'):]
    chart = chart[:chart.index("</svg>")]
    assert f"<title>{today}: 2.00 GB download</title>" in chart
    assert f"<title>{today}: 0.50 GB upload</title>" in chart
    assert chart.count('class="usage-down"') == 30 and "5.00 GB" not in chart
    period = re.search(f'id="period-usage-{service_id}">(.*?)</div>', page, re.S).group(1)
    assert "<b>2.00 GB</b> download, <b>0.50 GB</b> upload, <b>2.50 GB</b> in all" in period
    assert "2.50 GB of the 10.00 GB data cap" in period
    assert f'id="deactivate-{service_id}"' not in page  # read-only staff: no buttons


# --- Network > Preview and Changes -------------------------------------------------------------

def test_preview_lists_a_hand_made_drift_and_apply_repairs_it(app, isp, login_as, routeros):
    tenant = isp["tenant"]
    _activated(app, isp, "alice")
    queue = _queues(routeros)["alice"]
    with _router_api(routeros) as api:
        api.path("queue", "simple").update(**{".id": queue[".id"], "max-limit": "1M/1M"})
    c = login_as(tenant, "Technician")
    page = _text(c.get("/network/preview/"))
    router = page[page.index('data-target="router Core-1"'):]
    assert router.startswith('data-target="router Core-1" data-status="ok"')
    assert "0 to add, 1 to change, 0 to remove" in router
    assert "change queue:alice" in router and "10000000/50000000" in router
    assert 'id="apply-now"' in page and "s3cretPW" not in page
    assert _queues(routeros)["alice"]["max-limit"] == "1000000/1000000"  # a preview only
    resp = c.post("/network/preview/apply")
    assert resp.status_code == 302
    assert "router Core-1: 0 to add, 1 to change, 0 to remove" in _flashes(c)
    assert _queues(routeros)["alice"]["max-limit"] == "10000000/50000000"
    changes = _text(c.get("/network/changes/list/"))
    assert "queue:alice" in changes and "secret:alice" in changes and "applied" in changes


def test_an_unreachable_router_is_red_in_the_preview_while_radius_is_applied(
        app, isp, login_as, routeros, freeradius):
    tenant = isp["tenant"]
    routeros.take_down()
    _activated(app, isp, "alice")
    _activated(app, isp, "carol", on_router=False)
    c = login_as(tenant, "Technician")
    page = _text(c.get("/network/preview/"))
    router = page[page.index('data-target="router Core-1"'):]
    assert router.startswith('data-target="router Core-1" data-status="unreachable"')
    assert re.search(r'label-danger">unreachable</span> <span class="text-danger target-error">'
                     r'\S', router)
    assert 'data-target="radius" data-status="ok"' in page
    assert c.post("/network/preview/apply").status_code == 302
    flashed = _flashes(c)
    assert any(m.startswith("router Core-1: unreachable - ") for m in flashed)
    assert any(m.startswith("radius: ") for m in flashed)
    assert freeradius.authenticate("carol", "s3cretPW")[0] == packet.AccessAccept
    listing = _text(c.get("/network/routers/"))
    assert 'label-danger">unreachable' in listing


def test_the_change_log_is_newest_first_and_filters_by_key(app, isp, login_as):
    tenant = isp["tenant"]
    _activated(app, isp, "alice")
    _activated(app, isp, "bob")
    c = login_as(tenant, "ReadOnly")
    page = _text(c.get("/network/changes/list/"))
    assert page.index("queue:bob") < page.index("queue:alice")  # bob came later
    by_key = _text(c.get("/network/changes/list/?_flt_0_key=queue:alice"))
    assert "queue:alice" in by_key and "bob" not in by_key and "secret:alice" not in by_key
    failed = _text(c.get("/network/changes/list/?_flt_0_result=failed"))
    assert "queue:alice" not in failed
    change = _in(app, tenant, lambda s: s.scalar(sa.select(NetworkChange.id).where(
        NetworkChange.key == "secret:alice")))
    shown = _text(c.get(f"/network/changes/show/{change}"))
    assert "service=pppoe" in shown and "s3cretPW" not in shown


# --- Network > Settings ------------------------------------------------------------------------

def test_settings_change_what_autofill_makes(app, isp, login_as):
    tenant = isp["tenant"]
    _, _, service_id = _customer(app, isp)
    c = login_as(tenant, "Technician")
    resp = c.post("/network/settings/", data={"username_pattern": "{bogus}",
                                              "password_length": "5"})
    page = _text(resp)
    assert re.search(r'data-error-for="username_pattern">use the fields', page)
    assert re.search(r'data-error-for="password_length">must be a whole number from 6 to 64',
                     page)
    resp = c.post("/network/settings/", data={"username_pattern": "{account} {n}",
                                              "password_length": "16"})
    assert 'data-error-for="username_pattern">use the fields' in _text(resp)
    assert _in(app, tenant, lambda s: s.scalar(sa.select(NetworkSettings.username_pattern))
               ) in (None, "{account}-{n}")
    resp = c.post("/network/settings/", data={"username_pattern": "{last}.{n}",
                                              "password_length": "16"})
    assert resp.status_code == 302
    assert "e.g. <code>doe.1</code>" in _text(c.get("/network/settings/"))
    filled = c.post(f"/network/service/{service_id}/autofill").get_json()
    assert re.fullmatch(r"user\d+\.1", filled["username"]) and len(filled["password"]) == 16


# --- tenancy, acting for all tenants, CSRF -----------------------------------------------------

def test_another_tenants_router_and_service_are_not_found(app, isp, make_tenant, login_as):
    _, _, service_id = _customer(app, isp)
    c = login_as(make_tenant("Other ISP", "other-isp"), "Admin")
    assert c.get(f"/network/routers/{isp['router']}/edit").status_code == 404
    assert c.post(f"/network/routers/{isp['router']}/edit",
                  data=_router_form()).status_code == 404
    assert c.post(f"/network/routers/{isp['router']}/deactivate").status_code == 404
    for action in ("activate", "deactivate", "autofill"):
        resp = c.post(f"/network/service/{service_id}/{action}",
                      data={"username": "x1", "password": "s3cretPW"})
        assert resp.status_code == 404, action
    assert "Core-1" not in _text(c.get("/network/routers/"))
    assert _service(app, isp["tenant"], service_id).status == "pending"


def test_acting_for_all_tenants_is_refused_on_every_page(app, isp, make_user):
    _, _, service_id = _customer(app, isp)
    _activated(app, isp, "alice")
    change = _in(app, isp["tenant"], lambda s: s.scalar(sa.select(sa.func.min(NetworkChange.id))))
    c = login(app.test_client(), make_user(None))
    for url in ("/network/routers/", "/network/preview/", "/network/changes/list/",
                f"/network/changes/show/{change}", "/network/settings/",
                "/network/routers/add"):
        page = _text(c.get(url))
        assert 'id="no-tenant"' in page and "Core-1" not in page, url
    for url in ("/network/preview/apply", f"/network/routers/{isp['router']}/deactivate",
                f"/network/service/{service_id}/deactivate"):
        c.post(url)
        assert any("Choose a tenant to act for" in m for m in _flashes(c)), url
    resp = c.post(f"/network/service/{service_id}/activate",
                  data={"username": "x1", "password": "s3cretPW"})
    assert 'id="no-tenant"' in _text(resp)
    assert c.post(f"/network/service/{service_id}/autofill").status_code == 409
    assert _in(app, isp["tenant"], lambda s: (s.get(Router, isp["router"]).active, s.get(
        ServiceInstance, service_id).status)) == (True, "pending")


def test_apply_now_needs_the_csrf_token(app, isp, database_url, make_user, routeros):
    csrf_app = create_app(overrides={**app_settings(database_url), "WTF_CSRF_ENABLED": True})
    _activated(app, isp, "alice")
    with _router_api(routeros) as api:
        api.path("queue", "simple").update(**{".id": _queues(routeros)["alice"][".id"],
                                              "max-limit": "1M/1M"})
    client = csrf_app.test_client()
    page = _text(client.get("/login/"))
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert client.post("/login/", data={"username": make_user(isp["tenant"], "Technician"),
                                        "password": PASSWORD,
                                        "csrf_token": token}).status_code == 302
    assert client.post("/network/preview/apply").status_code == 400
    assert _queues(routeros)["alice"]["max-limit"] == "1000000/1000000"
    preview = _text(client.get("/network/preview/"))
    form = preview[preview.index('id="apply-now"'):]
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/network/preview/apply", data={"csrf_token": token}).status_code == 302
    assert _queues(routeros)["alice"]["max-limit"] == "10000000/50000000"


# --- the REST API ------------------------------------------------------------------------------

def test_router_api_keeps_secrets_write_only(app, isp, api_as, make_tenant):
    tenant = isp["tenant"]
    c, headers = api_as(tenant, "Technician")
    resp = c.post("/api/v1/router/", headers=headers, json={
        "name": "NAS-2", "kind": "radius_nas", "address": "127.0.0.1",
        "radius_secret": "nas-secret-9", "coa_port": 3800})
    assert resp.status_code == 201, _text(resp)
    nas_id = resp.get_json()["id"]
    assert resp.get_json()["result"]["coa_port"] == 3800
    resp = c.put(f"/api/v1/router/{nas_id}", headers=headers,
                 json={"address": "127.0.0.9", "radius_secret": ""})
    assert resp.status_code == 200 and resp.get_json()["result"]["address"] == "127.0.0.9"
    assert _secrets(app, tenant, nas_id) == {"radius_secret": "nas-secret-9"}
    for url in ("/api/v1/router/", f"/api/v1/router/{nas_id}",
                f"/api/v1/router/{isp['router']}"):
        body = _text(c.get(url, headers=headers))
        assert "NAS-2" in body or "Core-1" in body
        assert "secret_config" not in body and not any(s in body for s in PASSWORDS)
    resp = c.post("/api/v1/router/", headers=headers, json={
        "name": "", "kind": "cisco", "address": "x", "api_port": "8728", "active": "yes"})
    assert resp.status_code == 422
    assert set(resp.get_json()["message"]) == {"active"}
    resp = c.post("/api/v1/router/", headers=headers, json={
        "name": "", "kind": "cisco", "address": "x", "api_port": "8728", "enable": True})
    assert set(resp.get_json()["message"]) == {"enable"}
    resp = c.post("/api/v1/router/", headers=headers,
                  json={"name": "", "kind": "cisco", "address": "x", "api_port": "8728"})
    assert resp.status_code == 422
    assert set(resp.get_json()["message"]) == {"name", "kind", "api_port"}
    resp = c.post("/api/v1/router/", headers=headers, json={})
    assert resp.status_code == 422
    assert set(resp.get_json()["message"]) == {"name", "kind", "address"}
    support, support_headers = api_as(tenant, "Support")
    assert support.get("/api/v1/router/", headers=support_headers).status_code == 200
    assert support.post("/api/v1/router/", headers=support_headers,
                        json={"name": "X"}).status_code == 403
    other, other_headers = api_as(make_tenant("Other ISP", "other-isp"), "Admin")
    assert other.get(f"/api/v1/router/{nas_id}", headers=other_headers).status_code == 404
    assert other.put(f"/api/v1/router/{nas_id}", headers=other_headers,
                     json={"name": "Mine"}).status_code == 404


def test_service_api_autofill_activate_deactivate(app, isp, api_as, make_tenant, routeros):
    tenant = isp["tenant"]
    _activated(app, isp, "alice", static_ip="10.1.0.7")
    _, account, service_id = _customer(app, isp)
    c, headers = api_as(tenant, "Technician")
    filled = c.post(f"/api/v1/service_instance/{service_id}/autofill", headers=headers)
    assert filled.status_code == 200
    username = filled.get_json()["result"]["username"]
    assert username == f"{account}-1"
    resp = c.post(f"/api/v1/service_instance/{service_id}/activate", headers=headers, json={
        "username": "alice", "password": "short", "static_ip": "10.1.0.7",
        "router": isp["router"]})
    assert resp.status_code == 422
    assert set(resp.get_json()["message"]) == {"username", "password", "static_ip"}
    resp = c.post(f"/api/v1/service_instance/{service_id}/activate", headers=headers,
                  json={"username": username, "password": "s3cretPW", "speed": 5})
    assert resp.status_code == 422 and set(resp.get_json()["message"]) == {"speed"}
    assert _service(app, tenant, service_id).status == "pending"
    resp = c.post(f"/api/v1/service_instance/{service_id}/activate", headers=headers, json={
        "username": username, "password": "s3cretPW", "static_ip": "10.1.0.8",
        "router": isp["router"]})
    assert resp.status_code == 200, _text(resp)
    result = resp.get_json()["result"]
    assert (result["status"], result["static_ip"], result["router_id"]) == (
        "active", "10.1.0.8", isp["router"])
    assert "password" not in result
    assert _queues(routeros)[username]["target"] == "10.1.0.8/32"
    resp = c.post(f"/api/v1/service_instance/{service_id}/deactivate", headers=headers)
    assert resp.status_code == 200 and resp.get_json()["result"]["status"] == "inactive"
    assert set(_queues(routeros)) == {"alice"}
    assert c.post("/api/v1/service_instance/999999/activate", headers=headers,
                  json={}).status_code == 404
    other, other_headers = api_as(make_tenant("Other ISP", "other-isp"), "Admin")
    for action in ("autofill", "activate", "deactivate"):
        assert other.post(f"/api/v1/service_instance/{service_id}/{action}", headers=other_headers,
                          json={}).status_code == 404, action
    support, support_headers = api_as(tenant, "Support")
    assert support.post(f"/api/v1/service_instance/{service_id}/deactivate",
                        headers=support_headers).status_code == 403


def test_network_api_previews_and_reconciles(app, isp, api_as, routeros):
    tenant = isp["tenant"]
    _activated(app, isp, "alice")
    with _router_api(routeros) as api:
        api.path("queue", "simple").update(**{".id": _queues(routeros)["alice"][".id"],
                                              "max-limit": "1M/1M"})
    c, headers = api_as(tenant, "ReadOnly")
    resp = c.get("/api/v1/network/preview", headers=headers)
    assert resp.status_code == 200
    targets = {t["target"]: t for t in resp.get_json()["result"]}
    router = targets["router Core-1"]
    assert (router["status"], router["changed"]) == ("ok", 1)
    assert router["changes"][0].startswith("change queue:alice")
    assert targets["radius"]["status"] == "ok"
    assert c.post("/api/v1/network/reconcile", headers=headers).status_code == 403
    writer, writer_headers = api_as(tenant, "Technician")
    resp = writer.post("/api/v1/network/reconcile", headers=writer_headers)
    assert resp.status_code == 200
    summaries = [t["summary"] for t in resp.get_json()["result"]]
    assert "router Core-1: 0 to add, 1 to change, 0 to remove" in summaries
    assert _queues(routeros)["alice"]["max-limit"] == "10000000/50000000"
    assert c.post("/api/v1/network/reconcile").status_code == 401  # no token, no write
