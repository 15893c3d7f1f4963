"""The demo data the first README command loads."""

import re

import sqlalchemy as sa
from click.testing import CliRunner
from headend.billing.models import BilledPeriod, Invoice
from headend.catalog.models import Package
from headend.cli import main
from headend.db import db
from headend.demo import SUBSCRIBERS_PER_TENANT, TENANTS, month_starts
from headend.network.models import UsageDaily
from headend.payments.models import Payment
from headend.subscribers.models import ServiceInstance, Subscriber, Subscription
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant
from headend.tenancy.permissions import TENANT_ROLES
from headend.testing import login
from sqlalchemy import func, select


def test_demo_loads_once_and_every_role_can_log_in(app, tmp_path):
    env = {"HEADEND_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "HEADEND_DEMO_RADIUS_DIR": str(tmp_path),
           "HEADEND_SECRET_KEY": app.config["SECRET_KEY"]}
    result = CliRunner().invoke(main, ["demo", "--if-empty"], env=env, catch_exceptions=False)
    assert "operator" in result.output and "valley-readonly" in result.output
    again = CliRunner().invoke(main, ["demo", "--if-empty"], env=env, catch_exceptions=False)
    assert "already loaded" in again.output
    with app.app_context(), acting_as(None):
        assert db.session.scalar(select(func.count()).select_from(Tenant)) == len(TENANTS)
        assert db.session.scalar(select(func.count()).select_from(Subscriber)) == \
            SUBSCRIBERS_PER_TENANT * len(TENANTS)
        triple = db.session.scalars(select(Package).where(Package.name == "Triple Play")).first()
        assert {line.service.type for line in triple.service_lines} == {"internet", "tv", "voip"}
        assert set(triple.offered_cycles()) == {"monthly", "quarterly", "semiannual", "annual"}
        active = db.session.scalars(select(Subscription).where(
            Subscription.status == "active")).first()
        assert active.subscriber.status == "active"
        # Every month of the history is billed once for every provisioned subscription, by
        # the billing run.
        billed = db.session.scalar(select(func.count()).select_from(BilledPeriod))
        live = db.session.scalar(select(func.count()).select_from(Subscription).where(
            Subscription.status.in_(("active", "suspended"))))
        assert billed == live * len(month_starts()) > 0
        # The late payers were charged late fees and suspended by today's collections.
        assert db.session.scalar(select(func.count()).select_from(Invoice).where(
            Invoice.source == "late_fee")) > 0
        assert db.session.scalar(select(func.count()).select_from(Subscriber).where(
            Subscriber.status == "suspended")) > 0
        assert db.session.scalar(select(func.count()).select_from(Invoice).where(
            Invoice.status == "open")) > 0
        # Most invoices were paid at the counter, by cash or check.
        methods = set(db.session.scalars(select(Payment.method).where(
            Payment.status == "processed")))
        assert methods == {"cash", "check"}
        assert db.session.scalar(select(func.count()).select_from(Invoice).where(
            Invoice.status == "paid")) > 0
        # Every Internet service is provisioned into the tenant's RADIUS database (the
        # suspended ones in the suspended group), with a month of usage for the charts.
        for slug in ("valley", "summit"):
            tenant = db.session.scalar(select(Tenant.id).where(Tenant.slug == slug))
            with acting_as(tenant):
                activated = db.session.scalar(select(func.count()).select_from(
                    ServiceInstance).where(ServiceInstance.username.is_not(None)))
                suspended = db.session.scalar(select(func.count()).select_from(
                    ServiceInstance).join(Subscription).where(
                    ServiceInstance.username.is_not(None), Subscription.status == "suspended"))
                assert db.session.scalar(select(func.count()).select_from(UsageDaily)) == \
                    30 * activated
            radius = sa.create_engine(f"sqlite:///{tmp_path / f'radius-{slug}.db'}")
            with radius.connect() as conn:
                checks = conn.scalar(sa.text("SELECT count(*) FROM radcheck"))
                groups = conn.scalar(sa.text(
                    "SELECT count(*) FROM radusergroup WHERE groupname = 'headend-suspended'"))
            radius.dispose()
            assert (checks, groups) == (activated, suspended) and activated > 100
    for slug in ("valley", "summit"):
        for role in TENANT_ROLES:
            client = login(app.test_client(), f"{slug}-{role.lower()}", "headend-demo")
            assert client.get("/subscriberview/list/").status_code == 200
    operator = login(app.test_client(), "operator", "headend-demo")
    assert "Summit Wireless" in operator.get("/tenantview/list/").get_data(as_text=True)

    # each ISP's public pages: its signup page, and the printed subscriber's portal
    for slug, name in (("valley", "Valley Fiber"), ("summit", "Summit Wireless")):
        signup = app.test_client().get(f"/signup/{slug}/").get_data(as_text=True)
        assert name in signup and "Triple Play" in signup
        portal_login = re.search(rf"^\s*(\S+@example\.net)\s.*/portal/{slug}/login",
                                 result.output, re.M).group(1)
        subscriber = app.test_client()
        subscriber.post(f"/portal/{slug}/login",
                        data={"login": portal_login, "password": "headend-demo"})
        overview = subscriber.get(f"/portal/{slug}/")
        assert overview.status_code == 200 and "Balance" in overview.get_data(as_text=True)
