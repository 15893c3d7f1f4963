"""Catalog rows and subscribers for the subscriber tests, created directly with the models."""

from decimal import Decimal

from headend.catalog.models import Package, PackageServiceLine, Service, TaxRate
from headend.db import db
from headend.subscribers.services import create_subscriber
from headend.tenancy.context import acting_as


def make_package(app, tenant_id, name="Fiber 100", *, custom=False, lines=(("Internet", 1),),
                 monthly="49.99", annual="499.00", quarterly=None, setup_fee="25.00",
                 active=True, customer_type="both"):
    with app.app_context(), acting_as(tenant_id):
        internet = Service(name=f"{name} service", type="internet")
        package = Package(
            name=name, allow_custom_pricing=custom, active=active, customer_type=customer_type,
            price_monthly=Decimal(monthly) if monthly else None,
            price_quarterly=Decimal(quarterly) if quarterly else None,
            price_annual=Decimal(annual) if annual else None,
            setup_fee=Decimal(setup_fee) if setup_fee else None,
        )
        for label, qty in lines:
            package.service_lines.append(
                PackageServiceLine(service=internet, label=label, quantity=qty))
        db.session.add(package)
        db.session.commit()
        return package.id


def make_tax_rate(app, tenant_id, label="State tax", required=True):
    with app.app_context(), acting_as(tenant_id):
        rate = TaxRate(label=label, kind="percent", rate=Decimal("6.25"),
                       require_on_new_subscriber=required)
        db.session.add(rate)
        db.session.commit()
        return rate.id


def make_subscriber(app, tenant_id, **fields):
    values = dict(first_name="Ada", last_name="Lovelace", email="ada@example.net",
                  phone="555-0100", service_line1="12 Analytical Way", service_city="Springfield",
                  service_postal_code="62704")
    values.update(fields)
    with app.app_context(), acting_as(tenant_id):
        sub = create_subscriber(db.session, **values)
        db.session.commit()
        return sub.id
