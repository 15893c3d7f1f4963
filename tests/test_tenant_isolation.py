"""Every registered view and API that takes a row id answers 404 for another tenant's row.

The routes are discovered from the app's URL map, so a new view is covered the moment it is
registered; a model without a factory in tests/factories.py fails the test instead of being
skipped.
"""

from __future__ import annotations

import pytest
from headend.db import TenantOwned, db
from headend.tenancy.context import acting_as
from headend.tenancy.scoping import TenantScoped
from headend.testing import api_token, login

from tests.factories import make_row

SKIP_METHODS = {"HEAD", "OPTIONS"}


def _views_by_endpoint(app):
    return {type(v).__name__: v for v in app.appbuilder.baseviews}


def _permitted(view, rule) -> bool:
    """Whether any role could reach the route at all (else FAB answers 403 for every row)."""
    method = rule.endpoint.split(".")[-1]
    name = (getattr(view, "method_permission_name", None) or {}).get(method, method)
    return f"can_{name}" in view.base_permissions


def _row_routes(app):
    """(rule, view, model) for every route with a <pk> on a tenant-scoped model."""
    views = _views_by_endpoint(app)
    routes, unowned = [], []
    for rule in app.url_map.iter_rules():
        if "pk" not in rule.arguments:
            continue
        view = views.get(rule.endpoint.split(".")[0])
        if view is None:
            continue
        model = getattr(getattr(view, "datamodel", None), "obj", None) or getattr(
            view, "pk_model", None)
        if model is None:
            unowned.append(rule.rule)
            continue
        if issubclass(model, (TenantOwned, TenantScoped)) and _permitted(view, rule):
            routes.append((rule, view, model))
    assert not unowned, f"routes with <pk> but no datamodel or pk_model: {unowned}"
    return routes


def _url(rule, pk, view=None):
    url = rule.rule.replace("<pk>", str(pk)).replace("<int:pk>", str(pk))
    if "<string:name>" in url:  # FAB's per-row actions: walk a real one
        url = url.replace("<string:name>", next(iter(view.actions)))
    return url


@pytest.fixture
def two_tenants(app, make_tenant):
    a, b = make_tenant("Tenant A", "tenant-a"), make_tenant("Tenant B", "tenant-b")
    rows = {}
    with app.app_context():
        for tenant in (a, b):
            with acting_as(tenant):
                for model in {m for _, _, m in _row_routes(app)}:
                    rows[(tenant, model)] = make_row(db.session, model).id
                db.session.commit()
    return a, b, rows


def test_row_routes_are_discovered(app):
    models = {m.__name__ for _, _, m in _row_routes(app)}
    # The walker must actually see the domains, or it would prove nothing.
    assert {"Package", "Item", "Subscriber", "Subscription"} <= models, models


def test_ui_answers_404_for_another_tenants_row(app, two_tenants, make_user):
    a, b, rows = two_tenants
    client = login(app.test_client(), make_user(a, "Admin"))
    checked = 0
    for rule, view, model in _row_routes(app):
        if rule.rule.startswith("/api/") or ("name" in rule.arguments and not view.actions):
            continue
        mutation = {"delete", "action"} & set(rule.endpoint.split(".")[1:])
        method = "GET" if "GET" in rule.methods and not mutation else "POST"
        resp = client.open(_url(rule, rows[(b, model)], view), method=method)
        assert resp.status_code == 404, f"{method} {rule.rule} on B's row -> {resp.status_code}"
        checked += 1
        if method == "GET":
            own = client.get(_url(rule, rows[(a, model)], view))
            assert own.status_code in (200, 302), f"GET {rule.rule} own row -> {own.status_code}"
    assert checked


def test_api_answers_404_for_another_tenants_row(app, two_tenants, make_user):
    a, b, rows = two_tenants
    client = app.test_client()
    headers = api_token(client, make_user(a, "Admin"))
    checked = 0
    for rule, _view, model in _row_routes(app):
        if not rule.rule.startswith("/api/"):
            continue
        for method in sorted(rule.methods - SKIP_METHODS):
            resp = client.open(_url(rule, rows[(b, model)]), method=method, headers=headers,
                               json={} if method in ("PUT", "POST") else None)
            assert resp.status_code == 404, f"{method} {rule.rule} on B's row -> {resp.status_code}"
            checked += 1
        own = client.get(_url(rule, rows[(a, model)]), headers=headers)
        assert own.status_code == 200, f"GET {rule.rule} own row -> {own.status_code}"
    assert checked


def test_lists_show_only_own_rows(app, two_tenants, make_user):
    a, b, rows = two_tenants
    client = app.test_client()
    headers = api_token(client, make_user(a, "Admin"))
    for api in app.appbuilder.baseviews:
        model = getattr(getattr(api, "datamodel", None), "obj", None)
        if not (model and issubclass(model, TenantOwned) and hasattr(api, "resource_name")):
            continue
        resp = client.get(f"/api/v1/{api.resource_name}/?q=(page_size:100)", headers=headers)
        assert resp.status_code == 200, api.resource_name
        ids = set(resp.get_json()["ids"])
        assert rows[(b, model)] not in ids, api.resource_name
        assert rows[(a, model)] in ids, api.resource_name
