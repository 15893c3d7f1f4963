"""Tenant scoping: one mechanism, tested directly on the session."""

import pytest
from headend.audit.models import AuditLog
from headend.db import db
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant
from headend.tenancy.scoping import TenantScopeError
from headend.tenancy.services import create_tenant
from sqlalchemy import select


def test_new_tenant_is_audited_and_listed(ctx):
    tenant = create_tenant(ctx, "Valley Wireless", "valley")
    ctx.commit()
    rows = ctx.scalars(select(AuditLog).where(AuditLog.entity == "tenant")).all()
    assert [r.action for r in rows] == ["create"]
    assert rows[0].after["slug"] == "valley"
    assert rows[0].tenant_id == tenant.id


def test_operator_home_page_and_login(app, make_user, client):
    from headend.testing import login

    login(client, make_user(None))
    assert client.get("/").status_code == 200
    assert client.get("/tenantview/list/").status_code == 200


def test_tenant_user_cannot_open_tenant_admin(app, make_tenant, login_as):
    c = login_as(make_tenant(), "Admin")
    assert c.get("/tenantview/list/").status_code in (302, 403)


def test_duplicate_tenant_slug_is_refused(ctx):
    from headend.errors import ValidationFailed

    create_tenant(ctx, "One", "one")
    with pytest.raises(ValidationFailed) as err:
        create_tenant(ctx, "Two", "one")
    assert "slug" in err.value.errors


def test_acting_tenant_sees_only_its_audit_rows(ctx):
    a = create_tenant(ctx, "A", "aa")
    b = create_tenant(ctx, "B", "bb")
    ctx.commit()
    with acting_as(a.id):
        ids = {r.tenant_id for r in db.session.scalars(select(AuditLog))}
    assert ids <= {a.id} and ids
    assert b.id not in ids


def test_operator_acts_for_one_tenant_then_all(app, make_tenant, make_user, client):
    from headend.catalog.models import Item
    from headend.testing import login

    a, b = make_tenant("A", "aa"), make_tenant("B", "bb")
    login(client, make_user(None))
    form = {"code": "OP-1", "name": "Router", "type": "equipment", "price": "10"}
    # Acting for every tenant, a new row has no tenant to belong to: refused, nothing written.
    resp = client.post("/itemview/add", data=form, follow_redirects=True)
    assert "choose a tenant" in resp.get_data(as_text=True)
    assert client.post("/tenancy/act", data={"tenant_id": b}).status_code == 302
    resp = client.post("/itemview/add", data=form)
    assert resp.status_code == 302
    with app.app_context(), acting_as(None):
        assert [i.tenant_id for i in db.session.scalars(select(Item))] == [b]
    assert a != b


def _two_tenants(make_tenant):
    return make_tenant("A", "aa"), make_tenant("B", "bb")


def test_row_cannot_move_tenant_even_after_commit(app, make_tenant):
    from headend.catalog.models import Service

    a, b = _two_tenants(make_tenant)
    with app.app_context(), acting_as(None):
        service = Service(name="TV", type="tv", tenant_id=a)
        db.session.add(service)
        db.session.commit()  # expires tenant_id: the move must still be seen
        service.tenant_id = b
        with pytest.raises(TenantScopeError, match="cannot change tenant"):
            db.session.commit()
        db.session.rollback()
        assert db.session.get(Service, service.id).tenant_id == a


def test_bulk_insert_is_stamped_and_guarded(app, make_tenant):
    import sqlalchemy as sa
    from headend.catalog.models import Service

    a, b = _two_tenants(make_tenant)
    with app.app_context(), acting_as(a):
        db.session.execute(sa.insert(Service), [{"name": "TV", "type": "tv"}])
        with pytest.raises(TenantScopeError, match="another tenant"):
            db.session.execute(sa.insert(Service),
                               [{"name": "X", "type": "tv", "tenant_id": b}])
        db.session.rollback()
        db.session.execute(sa.insert(Service), [{"name": "TV", "type": "tv"}])
        db.session.commit()
    with app.app_context(), acting_as(None):
        assert [s.tenant_id for s in db.session.scalars(select(Service))] == [a]


def test_no_row_may_point_at_another_tenants_row(app, make_tenant):
    from decimal import Decimal

    from headend.catalog.models import Account, Item, TaxRate
    from headend.subscribers.models import Subscriber

    a, b = _two_tenants(make_tenant)
    with app.app_context(), acting_as(None):  # an operator sees both tenants' rows
        account_b = db.session.scalars(select(Account).where(Account.tenant_id == b)).first()
        item = Item(tenant_id=a, code="R", name="Router", type="equipment", price=Decimal(1),
                    income_account=account_b)
        db.session.add(item)
        with pytest.raises(TenantScopeError, match="income_account"):
            db.session.flush()
        db.session.rollback()
        item = Item(tenant_id=a, code="R", name="Router", type="equipment", price=Decimal(1),
                    income_account_id=account_b.id)
        db.session.add(item)
        with pytest.raises(TenantScopeError, match="another tenant"):
            db.session.flush()
        db.session.rollback()
        rate_b = TaxRate(tenant_id=b, label="Tax", kind="percent", rate=Decimal(5))
        sub = Subscriber(tenant_id=a, account_number="1", first_name="A", last_name="B")
        db.session.add_all([rate_b, sub])
        db.session.flush()
        sub.tax_rates.append(rate_b)
        with pytest.raises(TenantScopeError, match="tax_rates"):
            db.session.flush()
        db.session.rollback()


def test_a_deactivated_tenants_staff_cannot_log_in_or_use_tokens(app, make_tenant, make_user):
    from headend.tenancy.models import Tenant
    from headend.testing import PASSWORD, api_token

    tenant = make_tenant()
    username = make_user(tenant, "Admin")
    client = app.test_client()
    headers = api_token(client, username)
    with app.app_context(), acting_as(None):
        db.session.get(Tenant, tenant).active = False
        db.session.commit()
    resp = client.post("/login/", data={"username": username, "password": PASSWORD})
    assert "/login" in resp.headers["Location"]  # back to the login form, not into the app
    assert client.get("/api/v1/item/", headers=headers).get_json()["count"] == 0


def test_operator_creates_a_tenant_with_its_chart_in_the_ui(app, make_user, client):
    from headend.catalog.models import Account
    from headend.testing import login

    login(client, make_user(None))
    resp = client.post("/tenantview/add", data={"name": "Hilltop Net", "slug": "hilltop",
                                                "currency": "USD", "timezone": "UTC",
                                                "active": "y"})
    assert resp.status_code == 302
    with app.app_context(), acting_as(None):
        tenant = db.session.scalar(select(Tenant).where(Tenant.slug == "hilltop"))
        codes = set(db.session.scalars(select(Account.code).where(
            Account.tenant_id == tenant.id)))
    assert {"1200", "2200", "4000"} <= codes
    resp = client.post("/tenantview/add", data={"name": "Other", "slug": "other",
                                                "currency": "usd", "timezone": "UTC"})
    assert resp.status_code == 200 and "3-letter ISO 4217" in resp.get_data(as_text=True)
    with app.app_context(), acting_as(None):
        assert db.session.scalar(select(Tenant).where(Tenant.slug == "other")) is None
