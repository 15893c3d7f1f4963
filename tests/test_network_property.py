"""Property: whatever happens to a few subscribers between reconciles - (re)activation with a
new password or router, deactivation, suspension and restore, a package speed change, a new
static address, hand edits and deletions on the router, rows edited in RADIUS by hand - one
reconcile makes the MikroTik router and the RADIUS tables equal to the desired state computed
from billing, and a second reconcile writes nothing.

Every example builds its own network in the tenant's transaction and rolls it back at the end
(the `books` fixture lives across examples), on a fresh RouterOS fake and an emptied RADIUS
database, so examples never see each other's state."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

import librouteros
import sqlalchemy as sa
from headend.dunning.services import restore_now, suspend_now
from headend.network.desired import (
    SUSPENDED_GROUP,
    mikrotik_entries,
    radius_entries,
    service_states,
)
from headend.network.reconcile import reconcile, router_mapping
from headend.network.services import activate, deactivate
from headend.plugins.services import plugin_settings
from headend.subscribers.models import ServiceInstance
from headend_router_freeradius import FreeradiusDriver
from headend_router_freeradius.schema import radcheck, radreply, radusergroup
from headend_router_mikrotik import MikrotikDriver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import network_helpers as peers
from tests.network_helpers import customer, enable_network, internet_package, mikrotik_router
from tests.peers.freeradius import wipe_radius_tables
from tests.peers.routeros import RouterOSServer

# fixtures
radius, radius_engine = peers.radius, peers.radius_engine

SUBSCRIBERS = 4
POOL = (None, "10.9.0.1", "10.9.0.2", "10.9.0.3")  # fewer addresses than subscribers
SPEEDS = ((50, 10), (100, 20), (25, 5), (300, 100))  # (down, up) Mbps
TODAY = dt.date(2026, 3, 10)
MENUS = ("/queue/simple", "/ppp/secret", "/ip/firewall/address-list")
FOREIGN = {"name": "by-hand", "target": "10.99.0.1/32", "max-limit": "5000000/5000000"}
EVENTS = ("activate", "deactivate", "suspend", "restore", "speed", "static_ip", "router_edit",
          "router_delete", "radius_edit", "reconcile")

events = st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(0, SUBSCRIBERS - 1),
                            st.integers(0, 3)), max_size=12)


@dataclass
class World:
    """One example's network: the tenant session, the router and its fake, the packages, and
    per subscriber (subscriber, Internet service)."""

    s: object
    server: RouterOSServer
    radius: sa.Engine
    router: object
    packages: list
    customers: list


def build(s, server: RouterOSServer, radius_engine: sa.Engine) -> World:
    """Both drivers on; subscribers 0 and 2 on the router, 1 and 3 RADIUS-only, on two
    packages; two static addresses; a queue made by hand that Headend must never touch."""
    enable_network(s, radius_engine)
    router = mikrotik_router(s, server)
    packages = [internet_package(s), internet_package(s, download_speed=100, upload_speed=20)]
    customers = []
    for n in range(SUBSCRIBERS):
        sub, service = customer(s, packages[n // 2])
        activate(s, service.id, username=f"user{n}", password="first-pw",
                 static_ip=POOL[n + 1] if n < 2 else None,
                 router_id=router.id if n % 2 == 0 else None)
        customers.append((sub, service))
    server.load("/queue/simple", [FOREIGN])
    return World(s, server, radius_engine, router, packages, customers)


# --- events ---------------------------------------------------------------------------------

def apply(world: World, kind: str, who: int, value: int) -> None:
    s = world.s
    sub, service = world.customers[who]
    if kind == "activate":  # the activation form again: a new password, maybe another router
        activate(s, service.id, username=service.username, password=f"pw-{value}-secret",
                 static_ip=service.static_ip,
                 router_id=world.router.id if value % 2 == 0 else None)
    elif kind == "deactivate":
        deactivate(s, service.id)
    elif kind == "suspend" and sub.status == "active":
        suspend_now(s, sub.id, TODAY)
    elif kind == "restore" and sub.status == "suspended":
        restore_now(s, sub.id, TODAY)
    elif kind == "speed":
        profile = world.packages[who % 2].internet_profile
        profile.download_speed, profile.upload_speed = SPEEDS[value]
        s.flush()
    elif kind == "static_ip" and service.status == "active" and _free(s, POOL[value], service):
        activate(s, service.id, username=service.username, password=service.password,
                 static_ip=POOL[value], router_id=service.router_id)
    elif kind == "router_edit":
        _edit_on_router(world.server, who, value)
    elif kind == "router_delete":
        _delete_on_router(world.server, who, value % len(MENUS))
    elif kind == "radius_edit":
        _edit_radius(world.radius, f"user{who}", value)
    elif kind == "reconcile":
        reconcile(s)


def _free(s, address: str | None, service: ServiceInstance) -> bool:
    return address is None or s.scalar(sa.select(ServiceInstance.id).where(
        ServiceInstance.static_ip == address, ServiceInstance.id != service.id)) is None


@contextlib.contextmanager
def by_hand(server: RouterOSServer):
    """An engineer's own API session on the router (the real client library)."""
    api = librouteros.connect(server.host, "admin", "secret", port=server.port)
    try:
        yield api
    finally:
        api.close()


def _managed(server: RouterOSServer, menu: str) -> list[dict]:
    return [r for r in server.rows(menu) if r.get("comment", "").startswith("headend:")]


def _edit_on_router(server: RouterOSServer, who: int, value: int) -> None:
    """Drift: a queue's limit or state, or a secret's password or state, changed by hand."""
    menu, values = ((MENUS[0], {"max-limit": "1M/1M"}), (MENUS[0], {"disabled": "yes"}),
                    (MENUS[1], {"password": "by-hand"}), (MENUS[1], {"disabled": "yes"}))[value]
    rows = _managed(server, menu)
    if rows:
        with by_hand(server) as api:
            api.path(*menu.strip("/").split("/")).update(
                **{".id": rows[who % len(rows)][".id"]}, **values)


def _delete_on_router(server: RouterOSServer, who: int, menu: int) -> None:
    rows = _managed(server, MENUS[menu])
    if rows:
        with by_hand(server) as api:
            api.path(*MENUS[menu].strip("/").split("/")).remove(rows[who % len(rows)][".id"])


def _edit_radius(engine: sa.Engine, username: str, value: int) -> None:
    """Drift in the RADIUS database: a changed rate, a deleted password, a stray user, or a
    suspension group nobody asked for."""
    with engine.begin() as conn:
        if value == 0:
            conn.execute(radreply.update().where(radreply.c.username == username)
                         .values(value="1M/1M"))
        elif value == 1:
            conn.execute(radcheck.delete().where(radcheck.c.username == username))
        elif value == 2:
            conn.execute(radcheck.insert().values(username=f"ghost-{username}",
                                                  attribute="Cleartext-Password", op=":=",
                                                  value="x"))
        else:
            conn.execute(radusergroup.insert().values(username=username,
                                                      groupname=SUSPENDED_GROUP, priority=1))


# --- what must hold -------------------------------------------------------------------------

def _as_dict(entries) -> dict[str, dict[str, str]]:
    out = {e.key: dict(e.attributes) for e in entries}
    assert len(out) == len(entries), "a target reported one key twice"
    return out


def actual_and_desired(world: World) -> tuple[dict, dict, dict, dict]:
    """(router actual, router desired, RADIUS actual, RADIUS desired), read by the drivers
    and computed from billing state."""
    s = world.s
    mikrotik, freeradius = plugin_settings(s, "mikrotik"), plugin_settings(s, "freeradius")
    states = service_states(s)
    on_router = [x for x in states if x.router_id == world.router.id]
    elsewhere = [x for x in states if x.router_id != world.router.id]
    return (
        _as_dict(MikrotikDriver().read_state(mikrotik, router_mapping(world.router))),
        _as_dict(mikrotik_entries(on_router, mikrotik["suspended_list"])),
        _as_dict(FreeradiusDriver().read_state(freeradius, {})),
        _as_dict(radius_entries(elsewhere)),
    )


def check_billing_reached_the_network(world: World, router: dict, radius: dict) -> None:
    """Independently of desired.py: each active service is on exactly the target its router
    says, with its password, speed and address, disabled or grouped when suspended."""
    for sub, service in world.customers:
        name = service.username
        keys = {k for k in (*router, *radius) if k.partition(":")[2] == name}
        if service.status != "active":
            assert not keys, f"{name} is inactive yet on a target: {keys}"
            continue
        profile = service.subscription.package.internet_profile
        down, up = profile.download_speed, profile.upload_speed
        suspended = sub.status == "suspended"
        if service.router_id == world.router.id:
            queue, secret = router[f"queue:{name}"], router[f"secret:{name}"]
            assert queue["max-limit"] == f"{up * 1_000_000}/{down * 1_000_000}"
            assert secret["password"] == service.password
            assert queue["disabled"] == secret["disabled"] == str(suspended).lower()
            assert secret.get("remote-address") == service.static_ip
            assert (f"suspended:{service.static_ip}" in router) == bool(
                suspended and service.static_ip)
            assert not any(k.startswith(("check:", "reply:", "group:")) for k in keys)
        else:
            assert radius[f"check:{name}"] == {"Cleartext-Password": service.password}
            reply = radius[f"reply:{name}"]
            assert reply["Mikrotik-Rate-Limit"].startswith(f"{up}M/{down}M ")
            assert reply.get("Framed-IP-Address") == service.static_ip
            assert (f"group:{name}" in radius) == suspended
            assert not any(k.startswith(("queue:", "secret:")) for k in keys)


def radius_rows(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for table in (radcheck, radreply, radusergroup)
                for row in conn.execute(sa.select(table).order_by(table.c.id))]


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=events)
def test_one_reconcile_makes_the_network_equal_billing_and_a_second_does_nothing(
        books, radius, history):
    s = books
    wipe_radius_tables(radius)
    with RouterOSServer() as server:
        try:
            world = build(s, server, radius)
            assert [r.status for r in reconcile(s)] == ["ok", "ok"]
            for kind, who, value in history:
                apply(world, kind, who, value)

            results = reconcile(s)
            assert [(r.status, r.error) for r in results] == [("ok", None)] * 2
            router, router_wanted, in_radius, radius_wanted = actual_and_desired(world)
            assert router == router_wanted
            assert in_radius == radius_wanted
            check_billing_reached_the_network(world, router, in_radius)
            foreign = [r for r in server.rows("/queue/simple") if r["name"] == "by-hand"]
            assert [{k: r[k] for k in FOREIGN} for r in foreign] == [FOREIGN]

            writes, rows = len(server.writes), radius_rows(radius)
            again = reconcile(s)
            assert [r.describe() for r in again] == ["radius: nothing to do",
                                                     "router Core-1: nothing to do"]
            assert len(server.writes) == writes
            assert radius_rows(radius) == rows
        finally:
            s.rollback()
