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
