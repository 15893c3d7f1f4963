"""Subscriber list, search and profile latency with 100k subscribers on PostgreSQL.

    .venv/bin/python bench/lists.py [--subscribers 100000] [--requests 60]

Creates (and at the end drops) the database `headend_bench` on 127.0.0.1:5432, seeds one tenant
with N subscribers (plus a second tenant with N/10, so scoping has something to skip), then times
in-process requests of a logged-in tenant admin and prints p50/p95 per page. Target: p95 <= 150 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import click
import sqlalchemy as sa
from headend.app import create_app
from headend.db import db
from headend.migrate import upgrade
from headend.sequences import TenantSequence
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from headend.tenancy.services import create_tenant
from headend.testing import PASSWORD, app_settings, login

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
NAME = "headend_bench"
FIRST = ("Ana", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jon")
LAST = ("Alvarez", "Brown", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ito",
        "Jensen", "Kowalski", "Lopez", "Murphy", "Nguyen", "Okafor", "Patel", "Rossi", "Silva")


def _recreate_database() -> str:
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{NAME}"'))
    admin.dispose()
    return f"{SERVER}/{NAME}"


def _drop_database() -> None:
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)'))
    admin.dispose()


def _rows(tenant_id: int, count: int, rnd: random.Random):
    for n in range(1, count + 1):
        s = Subscriber(
            tenant_id=tenant_id, account_number=f"{n:08d}", first_name=rnd.choice(FIRST),
            last_name=rnd.choice(LAST), email=f"user{n}.{tenant_id}@example.net",
            phone=f"555-{rnd.randrange(100, 999)}-{rnd.randrange(1000, 9999)}",
            service_line1=f"{rnd.randrange(1, 9999)} Main St", service_city="Springfield",
            service_region="CO", service_postal_code=f"80{rnd.randrange(100, 999)}",
            service_country="US", status=rnd.choice(("active", "active", "suspended")),
            customer_type="residential", billing_cycle="monthly", bill_day=1 + n % 28,
        )
        yield {c.key: getattr(s, c.key) for c in sa.inspect(Subscriber).column_attrs
               if c.key != "id"} | {"search_text": s.compute_search_text(),
                                    "billing_same_as_service": True, "tax_exempt": False,
                                    "paper_invoice": False}


def seed(app, count: int) -> tuple[int, list[int]]:
    rnd = random.Random(7)
    with app.app_context(), acting_as(None):
        tenants = [create_tenant(db.session, "Bench ISP", "bench"),
                   create_tenant(db.session, "Other ISP", "other")]
        db.session.commit()
        for tenant, n in zip(tenants, (count, count // 10), strict=True):
            with click.progressbar(length=n, label=f"seeding {tenant.name}") as bar:
                batch = []
                for row in _rows(tenant.id, n, rnd):
                    batch.append(row)
                    if len(batch) == 5000:
                        db.session.execute(sa.insert(Subscriber), batch)
                        bar.update(len(batch))
                        batch = []
                if batch:
                    db.session.execute(sa.insert(Subscriber), batch)
                    bar.update(len(batch))
            db.session.add(TenantSequence(tenant_id=tenant.id, name="subscriber_account",
                                          last_value=n))
        db.session.commit()
        db.session.execute(sa.text("ANALYZE"))
        ids = db.session.scalars(sa.select(Subscriber.id).where(
            Subscriber.tenant_id == tenants[0].id).limit(2000)).all()
        sm = app.appbuilder.sm
        user = sm.add_user("bench-admin", "Bench", "Admin", "bench@example.net",
                           sm.find_role("Admin"), PASSWORD)
        user.tenant_id = tenants[0].id
        db.session.commit()
        return tenants[0].id, ids


def timed(client, url: str, runs: int) -> list[float]:
    client.get(url)  # warm caches and templates
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        resp = client.get(url)
        out.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == 200, (url, resp.status_code)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    url = _recreate_database()
    app = create_app(overrides=app_settings(url) | {"TESTING": False})
    upgrade(app)
    t0 = time.perf_counter()
    _, ids = seed(app, args.subscribers)
    print(f"seeded {args.subscribers:,} subscribers in {time.perf_counter() - t0:.1f} s")

    client = login(app.test_client(), "bench-admin")
    rnd = random.Random(1)
    pages = {
        "subscriber list, first page": lambda: "/subscriberview/list/",
        "search 'garcia'": lambda: "/subscriberview/list/?q=garcia",
        "search by phone digits": lambda: "/subscriberview/list/?q=555-12",
        "profile page": lambda: f"/subscriberview/profile/{rnd.choice(ids)}",
    }
    print(f"\n{'page':<30} {'p50 ms':>8} {'p95 ms':>8}   ({args.requests} requests each)")
    for name, make_url in pages.items():
        samples = []
        for _ in range(args.requests):
            samples += timed(client, make_url(), 1)
        p50 = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20)[18]
        flag = "" if p95 <= 150 else "  OVER TARGET"
        print(f"{name:<30} {p50:8.1f} {p95:8.1f}{flag}")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if not args.keep:
        _drop_database()


if __name__ == "__main__":
    main()
