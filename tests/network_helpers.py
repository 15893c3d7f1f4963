"""A tenant whose network is a MikroTik router (the RouterOS fake), a RADIUS NAS (the CoA peer)
and a FreeRADIUS database served by a real FreeRADIUS, for the network tests."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import sqlalchemy as sa
from headend import testing
from headend.catalog.models import InternetProfile
from headend.network.services import activate, save_router
from headend.plugins.services import configure_plugin
from headend.subscribers.services import add_package, create_subscriber
from headend_router_freeradius.schema import create_schema

from tests.invoicing_helpers import triple_play
from tests.peers.freeradius import FreeRadiusServer, radius_database_url, wipe_radius_tables
from tests.peers.radius_dae import DynamicAuthorizationServer
from tests.peers.routeros import RouterOSServer

_seq = itertools.count(1)
START = dt.date(2026, 3, 1)
RATE = "10M/50M 20M/100M 8M/40M 8/8"  # the package below, as Mikrotik-Rate-Limit


@pytest.fixture(scope="session")
def radius_engine(tmp_path_factory):
    with radius_database_url(testing.test_db_kind(), tmp_path_factory.mktemp("radius")) as url:
        engine = sa.create_engine(url)
        create_schema(engine)
        yield engine
        engine.dispose()


@pytest.fixture(scope="session")
def freeradius(radius_engine):
    with FreeRadiusServer(radius_engine.url.render_as_string(hide_password=False)) as server:
        yield server


@pytest.fixture
def radius(radius_engine):
    yield radius_engine
    wipe_radius_tables(radius_engine)


@pytest.fixture
def routeros():
    with RouterOSServer() as server:
        yield server


@pytest.fixture
def nas():
    with DynamicAuthorizationServer() as server:
        yield server


def enable_network(s, radius_engine, *, suspend_mode: str = "reject") -> None:
    configure_plugin(s, "mikrotik", True, {"timeout": "2"})
    configure_plugin(s, "freeradius", True, {
        "database_url": radius_engine.url.render_as_string(hide_password=False),
        "suspend_mode": suspend_mode, "coa_timeout": "1"})
    s.flush()


def mikrotik_router(s, server: RouterOSServer, name: str = "Core-1"):
    return save_router(s, name=name, kind="mikrotik", address=server.host,
                       api_port=server.port, username="admin", password="secret")


def radius_nas(s, nas: DynamicAuthorizationServer, name: str = "BRAS-1"):
    return save_router(s, name=name, kind="radius_nas", address="127.0.0.1",
                       radius_secret="testing123", coa_port=nas.port)


def internet_package(s, **profile):
    package = triple_play(s)
    values = dict(download_speed=50, upload_speed=10, speed_unit="Mbps", burst_download=100,
                  burst_upload=20, burst_threshold_download=40, burst_threshold_upload=8,
                  burst_time_seconds=8, throttled_download=2, throttled_upload=1)
    values.update(profile)
    s.add(InternetProfile(package=package, **values))
    s.flush()
    return package


def customer(s, package, *, status: str = "active"):
    """An active subscriber with the package; returns (subscriber, its Internet service)."""
    n = next(_seq)
    sub = create_subscriber(s, first_name="Net", last_name=f"User{n}", email=f"n{n}@x.test",
                            status=status)
    s.flush()
    subscription = add_package(s, sub.id, package.id, billing_cycle="monthly",
                               bill_start_date=START)
    subscription.status = status
    s.flush()
    return sub, subscription.services[0]


def activated(s, package, router=None, *, static_ip=None, username=None):
    sub, service = customer(s, package)
    activate(s, service.id, username=username or f"user{service.id}", password="s3cretPW",
             static_ip=static_ip, router_id=router.id if router else None)
    return sub, service
