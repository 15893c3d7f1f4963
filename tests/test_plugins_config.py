"""Per-tenant plugin configuration: validation, encryption at rest, redaction, isolation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from headend import hookimpl
from headend.audit.models import AuditLog
from headend.errors import ValidationFailed
from headend.plugins import services
from headend.plugins.interfaces import ConfigSchema, Field, TaxEngine, TaxResult
from headend.plugins.models import PluginConfiguration
from headend.tenancy.context import acting_as

KEY = "lic-PLAINTEXT-9f2c"


class KeyedTax(TaxEngine):
    plugin_id = "keyed_tax"
    name = "Keyed tax"
    version = "2.1"
    config_schema = ConfigSchema((
        Field("company", required=True),
        Field("license_key", required=True, secret=True),
        Field("commit", "bool", default=False),
    ))

    def quote(self, settings, request):
        return TaxResult(0)

    def post(self, settings, request):
        return TaxResult(0)

    def void(self, settings, document_code):
        return None


class KeyedPlugin:
    @hookimpl
    def register_tax_engines(self):
        return [KeyedTax()]


@pytest.fixture
def keyed(app):
    pm = app.extensions["headend_plugins"]
    plugin = KeyedPlugin()
    pm.register(plugin, name="keyed")
    yield pm.get("keyed_tax")
    pm.unregister(plugin)


def _raw_rows(session):
    return session.execute(sa.text(
        "SELECT tenant_id, config, secret_config FROM plugin_configuration"
    )).all()


def test_secret_is_encrypted_at_rest_and_decrypted_for_plugin_code(ctx, keyed, make_tenant):
    tenant = make_tenant()
    with acting_as(tenant):
        services.configure_plugin(ctx, "keyed_tax", True,
                                  {"company": "ACME", "license_key": KEY, "commit": True})
        ctx.commit()
        assert services.plugin_settings(ctx, "keyed_tax") == {
            "company": "ACME", "license_key": KEY, "commit": True}
        assert services.public_settings(ctx, "keyed_tax")["license_key"] == services.REDACTED
    (row,) = _raw_rows(ctx)
    assert KEY not in str(row.config) and KEY not in row.secret_config
    audit = ctx.scalars(sa.select(AuditLog).where(AuditLog.entity == "plugin_configuration"))
    assert all(KEY not in str(a.after) for a in audit)


def test_blank_secret_keeps_value_and_required_fields_block_enabling(ctx, keyed, make_tenant):
    with acting_as(make_tenant()):
        with pytest.raises(ValidationFailed) as err:
            services.configure_plugin(ctx, "keyed_tax", True, {"company": ""})
        assert set(err.value.errors) == {"company", "license_key"}
        services.configure_plugin(ctx, "keyed_tax", False, {"company": "ACME"})  # saved, off
        services.configure_plugin(ctx, "keyed_tax", True, {"company": "ACME", "license_key": KEY})
        token = services.configuration(ctx, "keyed_tax").secret_config
        services.configure_plugin(ctx, "keyed_tax", True, {"company": "B", "license_key": ""})
        row = services.configuration(ctx, "keyed_tax")
        assert row.secret_config == token  # unchanged secrets are not re-encrypted
        assert services.plugin_settings(ctx, "keyed_tax")["license_key"] == KEY
        services.set_enabled(ctx, "keyed_tax", False)
        assert services.plugin_settings(ctx, "keyed_tax")["company"] == "B"
        with pytest.raises(ValidationFailed) as err:
            services.configure_plugin(ctx, "no_such_plugin", True, {})
        assert "plugin_id" in err.value.errors


def test_another_tenants_configuration_is_invisible(ctx, keyed, make_tenant):
    a, b = make_tenant("Alpha Net"), make_tenant("Beta Net")
    with acting_as(a):
        services.configure_plugin(ctx, "keyed_tax", True, {"company": "A", "license_key": KEY})
        ctx.commit()
    with acting_as(b):
        assert services.configuration(ctx, "keyed_tax") is None
        assert ctx.scalars(sa.select(PluginConfiguration)).all() == []
        assert services.plugin_settings(ctx, "keyed_tax")["license_key"] is None
        services.configure_plugin(ctx, "keyed_tax", False, {"company": "B"})
        ctx.commit()
    with acting_as(a):
        assert services.plugin_settings(ctx, "keyed_tax")["company"] == "A"
    assert {r.tenant_id for r in _raw_rows(ctx)} == {a, b}


def test_plugins_page_configures_and_never_shows_the_secret(app, keyed, make_tenant, login_as):
    tenant = make_tenant()
    c = login_as(tenant, "Admin")
    page = c.get("/plugins/")
    assert page.status_code == 200 and b"Keyed tax" in page.data and b"tax engine" in page.data
    resp = c.post("/plugins/configure/keyed_tax", data={"enabled": "y", "company": ""})
    assert resp.status_code == 200 and b"is required" in resp.data
    resp = c.post("/plugins/configure/keyed_tax",
                  data={"enabled": "y", "company": "ACME", "license_key": KEY})
    assert resp.status_code == 302
    form = c.get("/plugins/configure/keyed_tax").get_data(as_text=True)
    assert KEY not in form and services.REDACTED in form and 'value="ACME"' in form
    resp = c.post("/plugins/configure/keyed_tax", data={"enabled": "y", "company": "ACME",
                                                        "license_key": ""})
    assert resp.status_code == 302
    with app.app_context(), acting_as(tenant):
        from headend.db import db

        assert services.plugin_settings(db.session, "keyed_tax")["license_key"] == KEY
    assert c.post("/plugins/toggle/keyed_tax", data={"enabled": "0"}).status_code == 302
    with app.app_context():
        assert app.extensions["headend_plugins"].plugins_for(tenant, "tax_engine") == []
    assert c.get("/plugins/configure/nope").status_code == 404


def test_read_only_staff_see_the_list_but_cannot_configure(keyed, make_tenant, login_as):
    c = login_as(make_tenant(), "ReadOnly")
    assert c.get("/plugins/").status_code == 200
    resp = c.post("/plugins/toggle/keyed_tax", data={"enabled": "1"})
    assert resp.status_code in (302, 403)
    assert c.get("/plugins/configure/keyed_tax").status_code in (302, 403)


def test_api_redacts_secrets_and_validates(app, keyed, make_tenant, api_as):
    tenant = make_tenant()
    c, headers = api_as(tenant, "Admin")
    resp = c.put("/api/v1/plugins/keyed_tax", headers=headers,
                 json={"enabled": True, "settings": {"company": "ACME"}})
    assert resp.status_code == 422 and "license_key" in resp.get_json()["message"]
    resp = c.put("/api/v1/plugins/keyed_tax", headers=headers, json={
        "enabled": True, "settings": {"company": "ACME", "license_key": KEY}})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    listed = c.get("/api/v1/plugins/", headers=headers)
    assert listed.status_code == 200 and KEY not in listed.get_data(as_text=True)
    (entry,) = [e for e in listed.get_json()["result"] if e["plugin_id"] == "keyed_tax"]
    assert entry["enabled"] is True
    assert entry["settings"] == {"company": "ACME", "license_key": services.REDACTED,
                                 "commit": False}
    assert c.get("/api/v1/plugins/").status_code == 401


def test_secrets_under_a_changed_key_must_be_entered_again(app, ctx, keyed, make_tenant):
    from headend import secrets

    with acting_as(make_tenant()):
        services.configure_plugin(ctx, "keyed_tax", True, {"company": "A", "license_key": KEY})
        row = services.configuration(ctx, "keyed_tax")
        row.secret_config = secrets.seal({"license_key": KEY}, {"SECRET_KEY": "another key"})
        ctx.flush()
        with pytest.raises(secrets.SecretsUnreadable):
            services.plugin_settings(ctx, "keyed_tax")
        assert services.public_settings(ctx, "keyed_tax")["license_key"] is None
        with pytest.raises(ValidationFailed) as err:
            services.configure_plugin(ctx, "keyed_tax", True, {"company": "A"})
        assert list(err.value.errors) == ["license_key"]
        services.configure_plugin(ctx, "keyed_tax", True, {"company": "A", "license_key": "new"})
        assert services.plugin_settings(ctx, "keyed_tax")["license_key"] == "new"


def test_operator_acting_for_all_tenants_can_list_but_not_configure(
        app, ctx, keyed, make_user):
    from headend.testing import login

    c = login(app.test_client(), make_user(None))
    page = c.get("/plugins/")
    assert page.status_code == 200 and b"choose a tenant to act for" in page.data
    assert c.post("/plugins/toggle/keyed_tax", data={"enabled": "1"}).status_code == 302
    assert ctx.scalars(sa.select(PluginConfiguration)).all() == []
