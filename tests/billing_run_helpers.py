"""A small ISP for billing-run tests: one priced package, a tax rate, subscriptions in every
state the run must tell apart, and a fingerprint of everything a run writes."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal as D

import sqlalchemy as sa
from headend.billing.models import BilledPeriod, Invoice, InvoiceLine, InvoiceLineTax
from headend.catalog import models as cat
from headend.db import db
from headend.ledger.models import JournalEntry, Leg
from headend.subscribers.services import add_package, create_subscriber
from headend.tenancy.context import acting_as

RUN = dt.date(2026, 3, 1)
PRICE, SETUP = D("50.00"), D("10.00")
_seq = itertools.count(1)


def catalog(session) -> dict:
    """Fiber 50 (monthly 50.00, setup 10.00), an excluded package and a 10 % tax rate."""
    internet = cat.Service(name="Internet", type="internet")
    packages = {}
    for name, excluded in (("Fiber 50", False), ("Staff line", True)):
        package = cat.Package(name=name, price_monthly=PRICE, setup_fee=SETUP,
                              exclude_from_invoicing=excluded, tax_mode="subscriber")
        package.service_lines.append(cat.PackageServiceLine(service=internet, label="Internet"))
        session.add(package)
        packages[name] = package
    rate = cat.TaxRate(label="State tax", kind="percent", rate=D("10"))
    session.add(rate)
    session.flush()
    return {"fiber": packages["Fiber 50"].id, "excluded": packages["Staff line"].id,
            "rate": rate.id}


def subscription(session, cat_ids: dict, *, start=RUN, status="active", package="fiber",
                 taxed=True, **subscriber_fields) -> tuple[int, int]:
    """(subscriber id, subscription id) of a new subscriber with one subscription."""
    subscriber = create_subscriber(
        session, first_name="Ana", last_name=f"Run{next(_seq)}",
        status="active", tax_rate_ids=[cat_ids["rate"]] if taxed else None,
        **subscriber_fields)
    sub = add_package(session, subscriber.id, cat_ids[package], billing_cycle="monthly",
                      bill_start_date=start)
    sub.status = status
    session.flush()
    return subscriber.id, sub.id


def tenant_with_subscribers(app, make_tenant, name: str, count: int, start=RUN) -> int:
    """A tenant with `count` plain active Fiber subscriptions starting on `start`."""
    tenant = make_tenant(name)
    with app.app_context(), acting_as(tenant):
        ids = catalog(db.session)
        for _ in range(count):
            subscription(db.session, ids, start=start)
        db.session.commit()
    return tenant


def fingerprint(session) -> dict:
    """What a run wrote for the acting tenant, in numbers that must not depend on how it ran."""
    def scalar(stmt):
        return session.scalar(stmt)

    count = sa.func.count
    return {
        "invoices": scalar(sa.select(count()).select_from(Invoice)),
        "invoice_total": scalar(sa.select(sa.func.coalesce(sa.func.sum(Invoice.total), 0))),
        "lines": scalar(sa.select(count()).select_from(InvoiceLine)),
        "line_amounts": scalar(sa.select(sa.func.coalesce(sa.func.sum(InvoiceLine.amount), 0))),
        "line_taxes": scalar(sa.select(sa.func.coalesce(sa.func.sum(InvoiceLineTax.amount), 0))),
        "billed_periods": scalar(sa.select(count()).select_from(BilledPeriod)),
        "entries": scalar(sa.select(count()).select_from(JournalEntry)),
        "debits": scalar(sa.select(sa.func.coalesce(sa.func.sum(Leg.debit), 0))),
        "credits": scalar(sa.select(sa.func.coalesce(sa.func.sum(Leg.credit), 0))),
        "max_lines_per_charge": scalar(sa.select(sa.func.max(sa.literal_column("n"))).select_from(
            sa.select(count().label("n")).select_from(InvoiceLine)
            .where(InvoiceLine.subscription_id.is_not(None))
            .group_by(InvoiceLine.subscription_id, InvoiceLine.period_start, InvoiceLine.kind)
            .subquery())),
    }
