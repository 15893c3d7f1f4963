"""Demo data: two ISPs with the seed catalog, 200 subscribers each (billed, paid, some late,
their Internet service provisioned into a local RADIUS database), their branding, a user per
role, and one subscriber per ISP who can sign in to the portal."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal as D

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from headend.billing.run import bill_run
from headend.catalog.models import (
    Account,
    InternetProfile,
    Item,
    Package,
    PackageInclusion,
    PackageServiceLine,
    Service,
    TaxRate,
)
from headend.subscribers.services import add_package, create_subscriber
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant
from headend.tenancy.permissions import TENANT_ROLES
from headend.tenancy.services import create_tenant

PASSWORD = "headend-demo"
TENANTS = (("Valley Fiber", "valley"), ("Summit Wireless", "summit"))
SUBSCRIBERS_PER_TENANT = 200
MONTHS_OF_HISTORY = 3  # billed, mostly paid, before this month

SERVICES = (
    ("Internet", "internet"), ("TV", "tv"), ("VoIP", "voip"), ("Email", "email"),
)
ITEMS = (
    # code, name, type, price, recurring, income account code
    ("RTR-AC1200", "Wi-Fi router AC1200", "equipment", D("89.00"), False, "4300"),
    ("RTR-RENT", "Router rental", "equipment", D("7.00"), True, "4300"),
    ("STB-HD", "HD set-top box", "equipment", D("5.00"), True, "4300"),
    ("INSTALL", "Professional installation", "fee", D("99.00"), False, "4400"),
    ("PAPER", "Paper invoice fee", "fee", D("2.50"), False, "4700"),
    ("LOYALTY", "Loyalty discount", "discount", D("10.00"), True, "4900"),
)
# name, (setup, monthly, quarterly, semiannual, annual), lines, (down, up Mbps), inclusions
PACKAGES = (
    ("Internet 100", (D("49.99"), D("49.99"), D("144.99"), D("284.99"), D("559.99")),
     [("Internet", "Internet 100", 70)], (100, 20), []),
    ("Fiber 500", (D("49.99"), D("69.99"), D("204.99"), D("404.99"), D("799.99")),
     [("Internet", "Fiber 500", 50)], (500, 500), [("RTR-AC1200", None)]),
    ("TV Basic", (None, D("29.99"), None, None, None), [("TV", "TV Basic", None)], None,
     [("STB-HD", D("5.00"))]),
    ("Voice Line", (D("19.99"), D("19.99"), D("57.99"), None, D("219.99")),
     [("VoIP", "Phone line", None)], None, []),
    ("Triple Play", (D("49.99"), D("119.99"), D("349.99"), D("689.99"), D("1319.99")),
     [("Internet", "Internet 300", 50), ("TV", "TV Plus", None), ("VoIP", "Phone line", None)],
     (300, 100), [("RTR-AC1200", None)]),
)
FIRST = ("Ana", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kira",
         "Luis", "Maya", "Nils", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara")
LAST = ("Alvarez", "Brown", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ito",
        "Jensen", "Kowalski", "Lopez", "Murphy", "Nguyen", "Okafor", "Patel", "Rossi", "Silva")
STREETS = ("Oak St", "Maple Ave", "Ridge Rd", "River Ln", "Summit Dr", "Pine Ct", "Main St")
# slug -> primary and accent colours, street address
BRANDS = {"valley": ("#1f4e79", "#f0a500", "100 Valley Rd\nSpringfield, CO 80110"),
          "summit": ("#2e6b30", "#e8702a", "7 Tower Hill\nRiverton, CO 80220")}


def demo_loaded(session: Session) -> bool:
    return session.scalar(select(Tenant.id).where(Tenant.slug == TENANTS[0][1])) is not None


def _catalog(session: Session) -> dict[str, Package]:
    accounts = {a.code: a for a in session.scalars(select(Account))}
    services = {}
    for name, kind in SERVICES:
        services[name] = Service(name=name, type=kind, description=f"{name} service")
        session.add(services[name])
    items = {}
    for code, name, kind, price, recurring, income in ITEMS:
        items[code] = Item(code=code, name=name, type=kind, price=price, recurring=recurring,
                           income_account=accounts.get(income), taxable=kind != "discount",
                           active=True)
        session.add(items[code])
    for label, kind, rate in (("State sales tax", "percent", D("6.25")),
                              ("911 fee", "flat", D("0.75"))):
        session.add(TaxRate(label=label, kind=kind, rate=rate, require_on_new_subscriber=False,
                            active=True))
    packages = {}
    for name, prices, lines, speeds, inclusions in PACKAGES:
        setup, monthly, quarterly, semiannual, annual = prices
        package = Package(
            name=name, description=f"{name} for homes and small offices", setup_fee=setup,
            price_monthly=monthly, price_quarterly=quarterly, price_semiannual=semiannual,
            price_annual=annual, allow_custom_pricing=name != "Triple Play",
            exclude_from_invoicing=False, customer_type="both", signup_enabled=True,
            tax_mode="subscriber", active=True,
        )
        for position, (service, label, fcc) in enumerate(lines):
            package.service_lines.append(PackageServiceLine(
                service=services[service], label=label, quantity=1, fcc_technology_code=fcc,
                position=position))
        for code, price in inclusions:
            package.inclusions.append(PackageInclusion(item=items[code], quantity=1,
                                                       recurring_price=price))
        if speeds:
            package.internet_profile = InternetProfile(
                download_speed=speeds[0], upload_speed=speeds[1], speed_unit="Mbps")
        session.add(package)
        packages[name] = package
    session.flush()
    return packages


def _subscribers(session: Session, packages: dict[str, Package], rnd: random.Random, bar) -> None:
    names = list(packages)
    taxes = list(session.scalars(select(TaxRate.id)))
    for n in range(SUBSCRIBERS_PER_TENANT):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        business = n % 9 == 0
        subscriber = create_subscriber(
            session, first_name=first, last_name=last,
            company=f"{last} {rnd.choice(('Bakery', 'Dental', 'Farms', 'Garage'))}"
            if business else None,
            customer_type="business" if business else "residential",
            email=f"{first}.{last}.{n}@example.net".lower(),
            phone=f"555-{rnd.randrange(100, 999)}-{rnd.randrange(1000, 9999)}",
            service_line1=f"{rnd.randrange(1, 9999)} {rnd.choice(STREETS)}",
            service_city=rnd.choice(("Springfield", "Riverton", "Lakeside", "Hillview")),
            service_region="CO", service_postal_code=f"80{rnd.randrange(100, 999)}",
            service_country="US", billing_same_as_service=True,
            status=rnd.choice(("active",) * 9 + ("prospect",)),
            billing_cycle="monthly", bill_day=1 + n % 28, paper_invoice=n % 10 == 0,
            tax_rate_ids=taxes, tax_exempt=n % 25 == 0,
            tax_exemption_code=f"EX-{n:04d}" if n % 25 == 0 else None,
        )
        if subscriber.status != "prospect":
            subscription = add_package(
                session, subscriber.id, packages[rnd.choice(names)].id, billing_cycle="monthly",
                bill_start_date=_history_start())
            # Seeded as long-standing customers: provisioned already, as their account says.
            subscription.status = subscriber.status
            for service in subscription.services:
                service.status = subscriber.status
        bar.update(1)


def _history_start() -> dt.date:
    day = dt.date.today().replace(day=1)
    for _ in range(MONTHS_OF_HISTORY):
        day = (day - dt.timedelta(days=1)).replace(day=1)
    return day


def month_starts() -> list[dt.date]:
    """The first of each month from the history's start to this month's."""
    days, day = [], _history_start()
    while day <= dt.date.today():
        days.append(day)
        day = (day + dt.timedelta(days=32)).replace(day=1)
    return days


def _history(session: Session, slug: str, rnd: random.Random) -> None:
    """Bill each month as the nightly run did and pay the invoices within their terms, at the
    counter (cash or check) - a few in part, a few with a little extra left as account credit,
    and a few late payers not at all lately; then today's collections: late fees, and
    suspensions for the late payers."""
    from headend.billing.models import Invoice
    from headend.dunning.collect import run_collections
    from headend.dunning.services import collection_settings
    from headend.payments.services import receive_payment
    from headend.plugins.services import configure_plugin

    tenant_id = session.scalar(select(Tenant.id).where(Tenant.slug == slug))
    today = dt.date.today()
    with acting_as(tenant_id, None, "demo"):
        configure_plugin(session, "manual", True, {})
        settings = collection_settings(session)
        settings.late_fee_days, settings.late_fee_amount = 10, D("5.00")
        settings.grace_days, settings.grace_amount = 30, D("10.00")
        session.commit()
    months = month_starts()
    for month in months:
        bill_run(session, month, tenant_slug=slug)
        behind = month >= months[-3]  # the late payers have paid nothing for three months
        with acting_as(tenant_id, None, "demo"):
            for n, invoice in enumerate(session.scalars(
                    select(Invoice).where(Invoice.status == "open",
                                          Invoice.invoice_date == month)
                    .order_by(Invoice.id)).all()):
                who = invoice.subscriber_id
                paid_on = invoice.invoice_date + dt.timedelta(days=rnd.randrange(1, 20))
                if paid_on > today or (behind and who % 13 == 0):
                    continue
                method = "check" if n % 3 else "cash"
                amount = invoice.balance_due
                if who % 29 == 0:
                    amount //= 2
                elif who % 31 == 0:
                    amount += 1000
                receive_payment(session, who, amount, method, paid_on,
                                reference=f"{1040 + n}" if method == "check" else None,
                                invoice_ids=[invoice.id],
                                transaction_id=f"demo-{invoice.id}")
            session.commit()
    with acting_as(tenant_id, None, "demo"):
        run_collections(session, today, after_step=session.commit)
        session.commit()


def radius_url(app, slug: str) -> str:
    """The demo's RADIUS database: a SQLite file in DEMO_RADIUS_DIR (default: the working
    directory), which a FreeRADIUS with the sql module can serve as it is."""
    from pathlib import Path

    folder = Path(app.config.get("DEMO_RADIUS_DIR") or ".").resolve()
    return f"sqlite:///{folder / f'radius-{slug}.db'}"


def _network(session: Session, slug: str, url: str, rnd: random.Random) -> None:
    """FreeRADIUS on for the tenant, every Internet service provisioned (credentials from the
    tenant's pattern), and a month of daily usage for the charts. The commit's reconcile
    writes the RADIUS rows."""
    from headend.network.models import UsageDaily
    from headend.network.services import activate, autofill
    from headend.plugins.services import configure_plugin
    from headend.subscribers.models import ServiceInstance

    tenant_id = session.scalar(select(Tenant.id).where(Tenant.slug == slug))
    today = dt.date.today()
    with acting_as(tenant_id, None, "demo"):
        configure_plugin(session, "freeradius", True, {"database_url": url})
        services = session.scalars(
            select(ServiceInstance).join(PackageServiceLine).join(Service)
            .where(Service.type == "internet", ServiceInstance.status == "active")
            .order_by(ServiceInstance.id)).all()
        for n, service in enumerate(services):
            username, password = autofill(session, service.id)
            activate(session, service.id, username=username, password=password,
                     static_ip=f"100.64.{n // 250}.{n % 250 + 2}" if n % 7 == 0 else None)
            heavy = rnd.random() < 0.1
            session.add_all(UsageDaily(
                service_id=service.id, day=today - dt.timedelta(days=k),
                download_bytes=rnd.randrange(2, 40 if heavy else 12) * 250_000_000,
                upload_bytes=rnd.randrange(1, 8) * 50_000_000,
                session_seconds=rnd.randrange(4, 24) * 3600) for k in range(30))
        session.commit()


def _branding(session: Session, name: str, slug: str) -> None:
    from headend.branding.services import save_branding

    primary, accent, address = BRANDS[slug]
    save_branding(session, display_name=name, primary_color=primary, accent_color=accent,
                  address=address, phone="555-0100", email=f"billing@{slug}.example",
                  website=f"https://{slug}.example", contact_phone="555-0199",
                  contact_email=f"help@{slug}.example", contact_hours="Mon-Sat 8:00-20:00",
                  contact_message="Outage? Check our status page before you call.")


def _portal_login(session: Session) -> str:
    """The first active subscriber with an email signs in to the portal with PASSWORD."""
    from werkzeug.security import generate_password_hash

    from headend.portal.models import PortalAccount
    from headend.subscribers.models import Subscriber

    subscriber = session.scalars(select(Subscriber).where(
        Subscriber.status == "active", Subscriber.email.is_not(None))
        .order_by(Subscriber.id)).first()
    session.add(PortalAccount(subscriber_id=subscriber.id, login=subscriber.email.lower(),
                              password_hash=generate_password_hash(PASSWORD)))
    session.flush()
    return subscriber.email.lower()


def load_demo(app) -> list[tuple[str, str, str]]:
    """Load everything; returns (username, role, tenant) for the printed login table."""
    from headend.db import db

    rnd = random.Random(2026)
    logins = [("operator", "Operator", "all tenants")]
    with app.app_context():
        sm = app.appbuilder.sm
        sm.add_user("operator", "Platform", "Operator", "operator@headend.example",
                    sm.find_role(app.config["AUTH_ROLE_ADMIN"]), PASSWORD)
        with click.progressbar(length=SUBSCRIBERS_PER_TENANT * len(TENANTS),
                               label="Loading demo subscribers") as bar:
            for name, slug in TENANTS:
                with acting_as(None):
                    tenant = create_tenant(db.session, name, slug)
                    db.session.flush()
                with acting_as(tenant.id, None, "demo"):
                    _branding(db.session, name, slug)
                    packages = _catalog(db.session)
                    _subscribers(db.session, packages, rnd, bar)
                    portal_login = _portal_login(db.session)
                db.session.commit()
                # Invoices, by the same billing run the nightly job uses, and their payments.
                _history(db.session, slug, rnd)
                _network(db.session, slug, radius_url(app, slug), rnd)
                for role in TENANT_ROLES:
                    username = f"{slug}-{role.lower()}"
                    user = sm.add_user(username, name.split()[0], role,
                                       f"{username}@headend.example", sm.find_role(role),
                                       PASSWORD)
                    user.tenant_id = tenant.id
                    logins.append((username, role, name))
                logins.append((portal_login, f"Subscriber: /portal/{slug}/login", name))
                db.session.commit()
    return logins
