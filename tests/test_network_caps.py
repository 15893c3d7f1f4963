"""Data caps (throttle or cut at the limit, back at the next period, per-subscriber overrides,
upload excluded when the package says so) through the reconciler and a real FreeRADIUS with
CoA to the NAS peer; usage-based billing in arrears on the next invoice, by the billing run and
by Invoice Now, once per period, given back by a void. Usage rows are written as the import
leaves them (the import itself is tested in test_network_usage.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from headend.billing.invoicing import invoice_now, void_invoice
from headend.billing.models import Invoice, InvoiceLine
from headend.billing.run import bill_run
from headend.network.caps import GB
from headend.network.desired import service_states
from headend.network.models import UsageCharge, UsageDaily
from headend.network.reconcile import reconcile
from headend.network.usage_billing import rate_usage
from headend.tenancy.context import acting_as
from pyrad import packet

from tests import network_helpers as peers
from tests.network_helpers import START, activated, enable_network, internet_package, radius_nas

freeradius, nas, radius, radius_engine, routeros = (
    peers.freeradius, peers.nas, peers.radius, peers.radius_engine, peers.routeros)

MID_MARCH, APRIL = dt.date(2026, 3, 20), dt.date(2026, 4, 1)


@pytest.fixture
def net(books, radius, nas):
    s = books
    enable_network(s, radius)
    s.info["nas"] = radius_nas(s, nas)
    s.commit()
    return s


def _use(s, service, day, download, upload=0, seconds=0):
    s.add(UsageDaily(service_id=service.id, day=day, download_bytes=download,
                     upload_bytes=upload, session_seconds=seconds))
    s.flush()


def _standing(s, today):
    return {st.username: (st.standing, st.rate.radius()) for st in service_states(s, today=today)}


def test_past_the_cap_a_service_is_throttled_live_until_the_next_period(net, freeradius, nas):
    s = net
    package = internet_package(s, data_limit_gb=10)
    _, service = activated(s, package, s.info["nas"], username="heavy")
    s.commit()
    nas.sessions["heavy"] = {"Acct-Session-Id": "h1", "Mikrotik-Rate-Limit": peers.RATE}
    _use(s, service, dt.date(2026, 3, 5), 6 * GB)
    assert _standing(s, MID_MARCH)["heavy"][0] == "active"
    _use(s, service, dt.date(2026, 3, 6), 4 * GB)  # 10 GB: the cap is reached
    assert _standing(s, MID_MARCH) == {"heavy": ("throttled", "1M/2M")}
    reconcile(s, today=MID_MARCH)
    s.commit()
    assert nas.sessions["heavy"]["Mikrotik-Rate-Limit"] == "1M/2M"  # CoA, still online
    code, attributes = freeradius.authenticate("heavy", "s3cretPW")
    assert (code, attributes["Mikrotik-Rate-Limit"]) == (packet.AccessAccept, ["1M/2M"])
    # April: a new usage period, full speed again
    assert _standing(s, APRIL) == {"heavy": ("active", peers.RATE)}
    reconcile(s, today=APRIL)
    s.commit()
    assert nas.sessions["heavy"]["Mikrotik-Rate-Limit"] == peers.RATE


def test_the_usage_import_throttles_a_service_that_passed_its_cap(net, freeradius, nas):
    """End to end: accounting from the NAS through FreeRADIUS into radacct, the import, and the
    reconcile its commit asks for."""
    from headend.network.usage import import_usage

    s = net
    package = internet_package(s, data_limit_gb=10)
    _, service = activated(s, package, s.info["nas"], username="streamer")
    s.commit()
    nas.sessions["streamer"] = {"Acct-Session-Id": "st1", "Mikrotik-Rate-Limit": peers.RATE}
    eleven = 11 * GB
    for status in ("Start", "Interim-Update"):
        done = eleven if status != "Start" else 0
        freeradius.account("streamer", status, "st1", 0, done % 2**32,
                           output_gigawords=done // 2**32, session_time=600)
    assert import_usage(s).records >= 1  # commits; the reconcile runs after it
    assert nas.sessions["streamer"]["Mikrotik-Rate-Limit"] == "1M/2M"
    assert freeradius.authenticate("streamer", "s3cretPW")[1]["Mikrotik-Rate-Limit"] == [
        "1M/2M"]


def test_a_package_that_cuts_at_the_cap_disconnects_and_refuses(net, freeradius, nas):
    s = net
    package = internet_package(s, data_limit_gb=1, disconnect_at_limit=True)
    _, service = activated(s, package, s.info["nas"], username="cut")
    s.commit()
    nas.sessions["cut"] = {"Acct-Session-Id": "c1", "Mikrotik-Rate-Limit": peers.RATE}
    _use(s, service, dt.date(2026, 3, 5), GB)
    reconcile(s, today=MID_MARCH)
    s.commit()
    assert "cut" not in nas.sessions
    assert freeradius.authenticate("cut", "s3cretPW")[0] == packet.AccessReject
    reconcile(s, today=APRIL)
    s.commit()
    assert freeradius.authenticate("cut", "s3cretPW")[0] == packet.AccessAccept


def test_overrides_and_upload_exclusion(net):
    s = net
    package = internet_package(s, data_limit_gb=10, allow_subscriber_overrides=True,
                               count_upload_in_usage=False)
    _, bigger = activated(s, package, username="bigger")
    bigger.data_limit_gb_override = 50
    _, uploader = activated(s, package, username="uploader")
    for service in (bigger, uploader):
        _use(s, service, dt.date(2026, 3, 5), 11 * GB if service is bigger else GB, 20 * GB)
    assert _standing(s, MID_MARCH) == {"bigger": ("active", peers.RATE),
                                       "uploader": ("active", peers.RATE)}
    bigger.data_limit_gb_override = 10
    s.flush()
    assert _standing(s, MID_MARCH)["bigger"][0] == "throttled"


# --- usage-based billing ----------------------------------------------------------------------

def _usage_package(s, **over):
    values = dict(usage_billing_enabled=True, usage_billing_basis="MB",
                  usage_included_amount=D("1000"), usage_price_per_unit=D("0.01"))
    values.update(over)
    return internet_package(s, **values)


def _usage_lines(s, invoice_id):
    return s.execute(sa.select(InvoiceLine.description, InvoiceLine.quantity,
                               InvoiceLine.amount).where(InvoiceLine.invoice_id == invoice_id,
                                                         InvoiceLine.kind == "usage")).all()


def test_the_billing_run_bills_usage_over_the_included_amount_once(app, books):
    s = books
    package = _usage_package(s)
    sub, service = activated(s, package, username="metered")
    slug = s.scalar(sa.text("SELECT slug FROM tenant WHERE id = :t"), {"t": s.info["tenant"]})
    s.commit()
    with acting_as(None):
        bill_run(s, START, tenant_slug=slug)  # March, in advance: no usage yet
    _use(s, service, dt.date(2026, 3, 10), 1_500_000_000, 500_000_000)  # 2000 MB
    _use(s, service, dt.date(2026, 4, 2), 9 * GB)  # April's: billed with May
    s.commit()
    with acting_as(None):
        bill_run(s, APRIL, tenant_slug=slug)
        bill_run(s, APRIL, tenant_slug=slug)  # a rerun bills nothing twice
    april = s.scalar(sa.select(Invoice).where(Invoice.subscriber_id == sub.id,
                                              Invoice.invoice_date == APRIL))
    (line,) = _usage_lines(s, april.id)
    assert line.description == ("Internet usage Mar 01 - Mar 31, 2026: 2000 MB used, "
                                "1000 included")
    assert (line.quantity, line.amount) == (D("1000"), 1000)
    (charge,) = s.scalars(sa.select(UsageCharge)).all()
    assert (charge.invoice_id, charge.used, charge.amount) == (april.id, D("2000"), D("10"))
    assert s.scalar(sa.select(sa.func.count()).select_from(InvoiceLine)
                    .where(InvoiceLine.kind == "usage")) == 1


def test_invoice_now_carries_usage_and_a_void_gives_it_back(books):
    s = books
    package = _usage_package(s, usage_billing_basis="hours", usage_included_amount=D("10"),
                             usage_price_per_unit=D("2.00"), usage_allow_subscriber_custom=True)
    sub, service = activated(s, package, username="hourly")
    service.usage_price_override = D("1.50")
    invoice_now(s, sub.id, START)
    _use(s, service, dt.date(2026, 3, 3), 10**6, seconds=12 * 3600)  # 12 hours
    assert [c.billed_units for c in rate_usage(s, APRIL)] == [D("2")]
    assert rate_usage(s, APRIL) == []  # rated once
    first = invoice_now(s, sub.id, APRIL)
    (line,) = _usage_lines(s, first.id)
    assert (line.quantity, line.amount) == (D("2"), 300)
    void_invoice(s, first.id, APRIL)
    again = invoice_now(s, sub.id, APRIL)
    assert [ln.amount for ln in _usage_lines(s, again.id)] == [300]


def test_usage_billing_can_cut_service_once_the_included_amount_is_used(net, freeradius):
    s = net
    package = _usage_package(s, usage_disconnect_on_exceed=True)
    _, service = activated(s, package, s.info["nas"], username="prepaid")
    s.commit()
    _use(s, service, dt.date(2026, 3, 5), 999_000_000)
    assert _standing(s, MID_MARCH)["prepaid"][0] == "active"
    _use(s, service, dt.date(2026, 3, 6), 2_000_000)
    assert _standing(s, MID_MARCH)["prepaid"][0] == "suspended"
    reconcile(s, today=MID_MARCH)
    s.commit()
    assert freeradius.authenticate("prepaid", "s3cretPW")[0] == packet.AccessReject
