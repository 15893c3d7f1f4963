"""Creating tenants: a tenant is born with its default chart of accounts."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from headend.errors import raise_if, require
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,58}$")


def validate_tenant(session: Session, tenant: Tenant) -> None:
    errors: dict = {}
    require(errors, "name", bool((tenant.name or "").strip()), "is required")
    require(errors, "slug", bool(_SLUG.match(tenant.slug or "")),
            "use 2-60 lowercase letters, digits and dashes")
    require(errors, "currency", bool(re.fullmatch(r"[A-Z]{3}", tenant.currency or "")),
            "must be a 3-letter ISO 4217 code such as USD")
    for field in ("name", "slug"):
        value = getattr(tenant, field)
        clash = session.scalar(
            select(Tenant.id).where(getattr(Tenant, field) == value, Tenant.id != tenant.id)
        ) if value else None
        require(errors, field, clash is None, "is already used by another tenant")
    raise_if(errors)


def tenant_created(session: Session, tenant: Tenant) -> None:
    """Everything a new tenant starts with; called in the transaction that inserts it."""
    from headend.catalog.services import create_default_chart
    from headend.plugins import events

    with acting_as(tenant.id):
        create_default_chart(session)
        events.fire("tenant_created", tenant_id=tenant.id)


def create_tenant(session: Session, name: str, slug: str, currency: str = "USD",
                  timezone: str = "UTC") -> Tenant:
    tenant = Tenant(name=name, slug=slug, currency=currency, timezone=timezone, active=True)
    validate_tenant(session, tenant)
    session.add(tenant)
    session.flush()
    tenant_created(session, tenant)
    return tenant
