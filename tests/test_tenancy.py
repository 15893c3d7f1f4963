"""Tenant scoping: one mechanism, tested directly on the session."""

import pytest
from headend.audit.models import AuditLog
from headend.db import db
from headend.tenancy.context import acting_as
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
