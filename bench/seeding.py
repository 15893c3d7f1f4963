"""What the benchmarks share: the PostgreSQL server they use and a fast seed of one tenant's
subscribers, each with one active monthly subscription of a demo package (core multi-row
inserts, with progress bars)."""

from __future__ import annotations

import datetime as dt
import random

import click
import sqlalchemy as sa
from headend.catalog.models import TaxRate
from headend.demo import _catalog
from headend.sequences import TenantSequence
from headend.subscribers.models import (
    ServiceInstance,
    Subscriber,
    Subscription,
    subscriber_tax_rate,
)

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
BATCH = 5000


def admin(statement: str) -> None:
    """Run a statement (CREATE/DROP DATABASE) on the server's maintenance database."""
    engine = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def insert_batches(session, model, rows, bar) -> None:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            session.execute(sa.insert(model), batch)
            bar.update(len(batch))
            batch = []
    if batch:
        session.execute(sa.insert(model), batch)
        bar.update(len(batch))


def seed_subscriptions(session, count: int, start: dt.date, rnd: random.Random) -> None:
    """`count` active subscribers of the acting tenant (taxed with all its rates), each with one
    monthly subscription of a random demo package billed from `start`, and its services."""
    packages = list(_catalog(session).values())
    rates = session.scalars(sa.select(TaxRate.id)).all()
    session.commit()
    lines = {p.id: [(line.id, line.label) for line in p.service_lines] for p in packages}
    with click.progressbar(length=count, label="subscribers") as bar:
        insert_batches(session, Subscriber, ({
            "account_number": f"{n:08d}", "first_name": "Bench", "last_name": f"Sub{n}",
            "email": f"sub{n}@example.net", "status": "active",
            "customer_type": "residential", "billing_cycle": "monthly", "bill_day": 1,
            "service_country": "US", "search_text": f"{n:08d} bench sub{n}",
            "billing_same_as_service": True, "tax_exempt": False, "paper_invoice": False,
            "bill_all_to_parent": False} for n in range(1, count + 1)), bar)
    session.add(TenantSequence(name="subscriber_account", last_value=count))
    session.commit()
    subscriber_ids = session.scalars(sa.select(Subscriber.id).order_by(Subscriber.id)).all()
    session.execute(subscriber_tax_rate.insert(), [
        {"subscriber_id": s, "tax_rate_id": r} for s in subscriber_ids for r in rates])
    chosen = [rnd.choice(packages) for _ in subscriber_ids]
    with click.progressbar(length=count, label="subscriptions") as bar:
        insert_batches(session, Subscription, ({
            "subscriber_id": s, "package_id": p.id, "quantity": 1, "status": "active",
            "billing_cycle": "monthly", "bill_start_date": start}
            for s, p in zip(subscriber_ids, chosen, strict=True)), bar)
    session.commit()
    subs = session.execute(sa.select(Subscription.id, Subscription.package_id)).all()
    with click.progressbar(length=len(subs), label="service instances") as bar:
        insert_batches(session, ServiceInstance, ({
            "subscription_id": sub_id, "package_service_line_id": line_id,
            "label": label, "status": "active"}
            for sub_id, package_id in subs for line_id, label in lines[package_id]), bar)
    session.commit()
    session.execute(sa.text("ANALYZE"))
    session.commit()
