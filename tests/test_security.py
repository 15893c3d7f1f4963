"""Configuration safety, API authentication and the audit trail of a real request."""

import pytest
from click.testing import CliRunner
from headend.app import ConfigError, create_app
from headend.audit.models import AuditLog
from headend.catalog.models import Item
from headend.cli import main
from headend.testing import PASSWORD, app_settings, login
from sqlalchemy import select

ITEM = {"code": "RTR-1", "name": "Router", "type": "equipment", "price": "89.00",
        "recurring": False, "taxable": True, "active": True}


def test_production_refuses_the_development_key(database_url):
    with pytest.raises(ConfigError, match="HEADEND_SECRET_KEY"):
        create_app(overrides={**app_settings(database_url), "HEADEND_ENV": "production",
                              "SECRET_KEY": "headend-development-key-not-for-production"})


def test_production_refuses_to_start_without_its_public_address(database_url):
    with pytest.raises(ConfigError, match="HEADEND_PUBLIC_URL"):
        create_app(overrides={**app_settings(database_url), "HEADEND_ENV": "production",
                              "SECRET_KEY": "a-real-secret"})


def test_production_starts_with_its_own_key_and_address(database_url):
    app = create_app(overrides={**app_settings(database_url), "HEADEND_ENV": "production",
                                "SECRET_KEY": "a-real-secret",
                                "HEADEND_PUBLIC_URL": "https://billing.example.net"})
    assert app.config["HEADEND_ENV"] == "production"


def test_config_file_is_loaded_by_path(tmp_path, database_url):
    path = tmp_path / "site.py"
    path.write_text("APP_NAME = 'Valley ISP Billing'\n")
    app = create_app(str(path), overrides={"SQLALCHEMY_DATABASE_URI": database_url})
    assert app.config["APP_NAME"] == "Valley ISP Billing"


def test_api_write_with_only_a_browser_cookie_is_refused(app, make_tenant, make_user, ctx):
    client = login(app.test_client(), make_user(make_tenant(), "Admin"))
    resp = client.post("/api/v1/item/", json=ITEM)
    assert resp.status_code == 401
    assert ctx.scalar(select(Item).where(Item.code == "RTR-1")) is None


def test_api_key_authenticates_writes(app, make_tenant, make_user, ctx):
    username = make_user(make_tenant(), "Billing")
    result = CliRunner().invoke(main, ["create-api-key", "--username", username,
                                       "--name", "crm sync"], obj={},
                                catch_exceptions=False,
                                env={"HEADEND_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
                                     # API key lookup hashes are keyed by the secret key
                                     "HEADEND_SECRET_KEY": app.config["SECRET_KEY"]})
    key = result.output.strip()
    assert key.startswith("sst_")
    client = app.test_client()
    resp = client.post("/api/v1/item/", json=ITEM, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    resp = client.post("/api/v1/item/", json=ITEM, headers={"Authorization": "Bearer sst_bogus"})
    assert resp.status_code == 401


def test_readonly_role_cannot_write(app, make_tenant, api_as):
    client, headers = api_as(make_tenant(), "ReadOnly")
    assert client.get("/api/v1/item/", headers=headers).status_code == 200
    assert client.post("/api/v1/item/", json=ITEM, headers=headers).status_code == 403


def test_audit_rows_name_actor_and_before_after(app, make_tenant, api_as, ctx):
    tenant = make_tenant()
    client, headers = api_as(tenant, "Billing")
    item_id = client.post("/api/v1/item/", json=ITEM, headers=headers).get_json()["id"]
    resp = client.put(f"/api/v1/item/{item_id}", json={"price": "79.50"}, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert client.delete(f"/api/v1/item/{item_id}", headers=headers).status_code == 200
    rows = ctx.scalars(select(AuditLog).where(AuditLog.entity == "item",
                                              AuditLog.entity_id == str(item_id))
                       .order_by(AuditLog.id)).all()
    assert [r.action for r in rows] == ["create", "update", "delete"]
    assert all(r.actor_name.startswith("billing-") and r.tenant_id == tenant for r in rows)
    assert rows[1].before == {"price": "89.0000"} and rows[1].after == {"price": "79.5000"}
    assert rows[2].before["code"] == "RTR-1" and rows[2].after is None


def test_password_is_never_audited(app, make_user, ctx):
    make_user(None)
    rows = ctx.scalars(select(AuditLog).where(AuditLog.entity == "ab_user")).all()
    assert rows and all(r.after["password"] == "***" for r in rows)
    assert PASSWORD not in str([r.after for r in rows])


def test_linking_tax_rates_to_a_subscriber_is_audited(app, make_tenant, ctx):
    from decimal import Decimal

    from headend.catalog.models import TaxRate
    from headend.subscribers.services import create_subscriber
    from headend.tenancy.context import acting_as

    tenant = make_tenant()
    with acting_as(tenant):
        rate = TaxRate(label="State", kind="percent", rate=Decimal("6.25"))
        sub = create_subscriber(ctx, first_name="Ana", last_name="Silva")
        ctx.add(rate)
        ctx.commit()
        sub.tax_rates.append(rate)
        ctx.commit()
    row = ctx.scalars(select(AuditLog).where(AuditLog.entity == "subscriber",
                                             AuditLog.action == "update")).one()
    assert row.before == {"tax_rates": []} and row.after == {"tax_rates": [str(rate.id)]}
