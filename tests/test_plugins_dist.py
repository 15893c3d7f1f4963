"""A real installed plugin distribution (tests/plugin_dist/headend_hello), found by entry point.

It is pip-installed into a temporary --target directory put on sys.path, so the venv is never
touched; the directory leaves sys.path when the module's tests end.
"""

from __future__ import annotations

import datetime as dt
import importlib
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import sqlalchemy as sa
from headend.app import create_app
from headend.db import db
from headend.plugins import services
from headend.plugins.interfaces import TaxLine, TaxRequest
from headend.tenancy.context import acting_as
from headend.testing import app_settings, login

DIST = Path(__file__).parent / "plugin_dist" / "headend_hello"
KEY = "hello-LICENSE-plaintext-77"


def _builds_offline() -> bool:
    """Can the venv's setuptools build a wheel without fetching build tools from PyPI?"""
    if importlib.util.find_spec("wheel") is not None:
        return True
    major, minor = (int(p) for p in metadata.version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1)


@pytest.fixture(scope="module")
def hello(app, tmp_path_factory):
    src = tmp_path_factory.mktemp("src") / "headend_hello"
    shutil.copytree(DIST, src)  # building writes build/ and egg-info next to the sources
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-input",
           "--disable-pip-version-check", "--target", str(target), str(src)]
    if _builds_offline():
        cmd.insert(4, "--no-build-isolation")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m == "headend_hello" or m.startswith("headend_hello.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _app(database_url, **overrides):
    return create_app(overrides={**app_settings(database_url), **overrides})


def test_installed_plugin_is_discovered_through_its_entry_point(hello, database_url):
    (ep,) = [e for e in metadata.entry_points(group="headend") if e.name == "hello"]
    assert ep.value == "headend_hello"
    pm = _app(database_url).extensions["headend_plugins"]
    assert pm.get_plugin("hello") is not None
    tax = pm.get("hello_tax")
    assert (tax.kind, tax.version, tax.name) == ("tax_engine", "0.1.0", "Hello flat tax")


def test_allowlist_excludes_or_admits_the_plugin(hello, database_url):
    excluded = _app(database_url, HEADEND_PLUGIN_ALLOWLIST="stripe,avatax")
    assert excluded.extensions["headend_plugins"].get("hello_tax") is None
    admitted = _app(database_url, HEADEND_PLUGIN_ALLOWLIST="stripe, hello")
    assert admitted.extensions["headend_plugins"].get("hello_tax") is not None


def test_enable_and_configure_for_a_tenant_keeps_the_secret_secret(
        hello, database_url, make_tenant, make_user):
    app = _app(database_url)
    tenant, other = make_tenant("Hello Net"), make_tenant("Other Net")
    c = login(app.test_client(), make_user(tenant, "Admin"))
    resp = c.post("/plugins/configure/hello_tax", data={
        "enabled": "y", "api_url": "https://tax.example", "license_key": KEY, "rate": "0.0725",
        "mode": "production"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    for page in ("/plugins/", "/plugins/configure/hello_tax"):
        html = c.get(page).get_data(as_text=True)
        assert "Hello flat tax" in html and KEY not in html
    assert services.REDACTED in c.get("/plugins/configure/hello_tax").get_data(as_text=True)

    with app.app_context():
        raw = db.session.execute(sa.text(
            "SELECT tenant_id, enabled, config, secret_config FROM plugin_configuration")).all()
        assert [(r.tenant_id, bool(r.enabled)) for r in raw] == [(tenant, True)]
        assert KEY not in str(raw[0].config) and KEY not in raw[0].secret_config
        pm = app.extensions["headend_plugins"]
        (tax,) = pm.plugins_for(tenant, "tax_engine")
        assert pm.plugins_for(other, "tax_engine") == []
        with acting_as(tenant):
            settings = services.plugin_settings(db.session, "hello_tax")
        assert settings["license_key"] == KEY and settings["mode"] == "production"
        request = TaxRequest("INV-1", "C-1", dt.date(2026, 1, 1), "USD", {},
                             (TaxLine(1, 10_000), TaxLine(2, 1_999)))
        assert tax.quote(settings, request).total_tax == 725 + 145

    with app.test_client() as api:
        from headend.testing import api_token

        headers = api_token(api, make_user(tenant, "Admin"))
        resp = api.get("/api/v1/plugins/", headers=headers)
        assert KEY not in resp.get_data(as_text=True)
        (entry,) = [e for e in resp.get_json()["result"] if e["plugin_id"] == "hello_tax"]
        assert entry["settings"]["license_key"] == services.REDACTED
        other_headers = api_token(api, make_user(other, "Admin"))
        listed = api.get("/api/v1/plugins/", headers=other_headers).get_json()["result"]
        (entry,) = [e for e in listed if e["plugin_id"] == "hello_tax"]
        assert entry["enabled"] is False and entry["settings"]["license_key"] is None
