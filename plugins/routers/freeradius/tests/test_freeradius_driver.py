"""The FreeRADIUS driver against a real FreeRADIUS 3.2 with its stock SQL queries (on the run's
database kind, HEADEND_TEST_DB) and the RFC 5176 NAS peer: what the driver writes is judged by
what FreeRADIUS answers a NAS, and what it reads back must equal what the core asked for.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from headend import testing
from headend.plugins.interfaces import RouterDiff, RouterEntry, RouterUnavailable
from headend_router_freeradius import FreeradiusDriver
from headend_router_freeradius.driver import RequestRefused
from headend_router_freeradius.schema import (
    create_schema,
    metadata,
    radcheck,
    radgroupcheck,
    radgroupreply,
    radreply,
    radusergroup,
)
from pyrad import packet

from tests.peers.freeradius import FreeRadiusServer, radius_database_url, wipe_radius_tables
from tests.peers.radius_dae import DynamicAuthorizationServer

DRIVER = FreeradiusDriver()
RATE = "5M/25M 10M/50M 4M/20M 8/8"
SUSPENDED, THROTTLED = "headend-suspended", "headend-throttled"


@pytest.fixture(scope="session")
def radius_url(tmp_path_factory):
    """The session's RADIUS database (a PostgreSQL database of its own, or a SQLite file)."""
    directory = tmp_path_factory.mktemp("radius-driver")
    with radius_database_url(testing.test_db_kind(), directory) as url:
        yield url


@pytest.fixture(scope="session")
def radius_engine(radius_url):
    """The test's own view of the RADIUS database, for hand edits and checks."""
    engine = sa.create_engine(radius_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def freeradius(radius_engine, radius_url):
    with FreeRadiusServer(radius_url) as server:
        yield server


@pytest.fixture
def settings(radius_engine, radius_url):
    """The driver's settings for the session's database, emptied after the test."""
    yield {"database_url": radius_url}
    wipe_radius_tables(radius_engine)


@pytest.fixture
def nas():
    """The CoA/Disconnect listener of a NAS with alice online in session s-2."""
    with DynamicAuthorizationServer() as server:
        server.sessions["alice"] = {"Acct-Session-Id": "s-2", "Mikrotik-Rate-Limit": "10M/50M"}
        yield server


def router(nas: DynamicAuthorizationServer | None = None, secret: str = "testing123") -> dict:
    return {"id": 1, "name": "nas-1", "address": "127.0.0.1", "api_port": 8728,
            "username": "admin", "password": "", "radius_secret": secret,
            "coa_port": nas.port if nas else 3799}


def subscriber(username: str, password: str = "s3cret", rate: str = RATE,
               ip: str | None = None, group: str | None = None) -> list[RouterEntry]:
    """The entries the core wants for one subscriber."""
    reply = {"Mikrotik-Rate-Limit": rate} | ({"Framed-IP-Address": ip} if ip else {})
    entries = [RouterEntry(f"check:{username}", {"Cleartext-Password": password}),
               RouterEntry(f"reply:{username}", reply)]
    if group:
        entries.append(RouterEntry(f"group:{username}", {"groupname": group}))
    return entries


def apply(settings, add=(), change=(), remove=()) -> None:
    DRIVER.apply_diff(settings, router(), RouterDiff(tuple(add), tuple(change), tuple(remove)))


def state(settings) -> list[RouterEntry]:
    return sorted(DRIVER.read_state(settings, router()), key=lambda entry: entry.key)


def by_key(entries) -> dict[str, dict[str, str]]:
    return {entry.key: dict(entry.attributes) for entry in entries}


def rows(engine: sa.Engine, table: sa.Table, *columns: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(
            sa.select(*(table.c[name] for name in columns)).order_by(table.c.id))]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the driver as a plugin --------------------------------------------------------------------

def test_the_plugin_declares_its_settings_with_the_database_url_secret():
    schema = DRIVER.config_schema
    assert (DRIVER.plugin_id, DRIVER.name, DRIVER.kind) == (
        "freeradius", "FreeRADIUS (SQL)", "router_driver")
    assert schema.secret_names == {"database_url"}
    assert schema.with_defaults({}) == {"database_url": None, "suspend_mode": "reject",
                                        "walled_garden_list": "headend-walled-garden",
                                        "coa_timeout": 3}
    plain, secret = schema.validate({"database_url": "sqlite:///r.db", "coa_timeout": "5",
                                     "suspend_mode": "walled_garden"})
    assert secret == {"database_url": "sqlite:///r.db"}
    assert plain == {"coa_timeout": 5, "suspend_mode": "walled_garden"}


def test_first_use_creates_the_freeradius_tables(tmp_path):
    with radius_database_url(testing.test_db_kind(), tmp_path) as url:
        assert DRIVER.read_state({"database_url": url}, router()) == []

        engine = sa.create_engine(url)
        try:
            assert set(metadata.tables) <= set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_an_unreachable_database_is_reported_unavailable_and_nothing_is_written(kind, tmp_path):
    url = (f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/radius"
           if kind == "postgresql" else f"sqlite:///{tmp_path / 'missing' / 'radius.db'}")

    with pytest.raises(RouterUnavailable, match="RADIUS database .* cannot be reached"):
        DRIVER.read_state({"database_url": url}, router())
    with pytest.raises(RouterUnavailable):
        apply({"database_url": url}, add=subscriber("alice"))
    with pytest.raises(RouterUnavailable):
        DRIVER.read_usage({"database_url": url}, None, 10)


def test_a_key_of_another_kind_is_refused_before_anything_is_written(settings, radius_engine):
    with pytest.raises(ValueError, match="queue:alice"):
        apply(settings, add=[*subscriber("bob"), RouterEntry("queue:alice", {"name": "alice"})])

    assert state(settings) == []
    assert rows(radius_engine, radgroupcheck, "groupname") == []


# --- provisioning, judged by FreeRADIUS ----------------------------------------------------------

def test_an_added_subscriber_is_accepted_with_exactly_its_reply(freeradius, settings):
    apply(settings, add=subscriber("alice", ip="10.20.0.7"))

    code, attributes = freeradius.authenticate("alice", "s3cret")

    assert code == packet.AccessAccept
    assert attributes == {"Mikrotik-Rate-Limit": [RATE], "Framed-IP-Address": ["10.20.0.7"]}
    assert freeradius.authenticate("alice", "guess") == (packet.AccessReject, {})


def test_read_state_returns_exactly_what_was_applied(settings, radius_engine):
    desired = [*subscriber("alice", ip="10.20.0.7"), *subscriber("bob", rate="10M/50M"),
               *subscriber("carol", group=SUSPENDED), *subscriber("dave", group=THROTTLED)]

    apply(settings, add=desired)

    assert state(settings) == sorted(desired, key=lambda entry: entry.key)
    # Applying the same additions again (a retried job) writes the same rows once.
    apply(settings, add=desired)
    assert state(settings) == sorted(desired, key=lambda entry: entry.key)
    assert len(rows(radius_engine, radcheck, "username")) == 4
    assert rows(radius_engine, radreply, "op") == [(":=",)] * 5


def test_a_change_replaces_the_reply(freeradius, settings):
    apply(settings, add=subscriber("alice", ip="10.20.0.7"))
    changed = RouterEntry("reply:alice", {"Mikrotik-Rate-Limit": "20M/100M"})

    apply(settings, change=[changed])

    assert freeradius.authenticate("alice", "s3cret") == (
        packet.AccessAccept, {"Mikrotik-Rate-Limit": ["20M/100M"]})
    assert by_key(state(settings))["reply:alice"] == {"Mikrotik-Rate-Limit": "20M/100M"}


def test_a_new_password_replaces_the_old_one(freeradius, settings):
    apply(settings, add=subscriber("alice"))

    apply(settings, change=[RouterEntry("check:alice", {"Cleartext-Password": "n3w"})])

    assert freeradius.authenticate("alice", "s3cret")[0] == packet.AccessReject
    assert freeradius.authenticate("alice", "n3w")[0] == packet.AccessAccept


def test_a_suspended_subscriber_is_rejected_until_the_group_is_removed(freeradius, settings,
                                                                      radius_engine):
    apply(settings, add=subscriber("bob", group=SUSPENDED))

    assert freeradius.authenticate("bob", "s3cret") == (packet.AccessReject, {})
    assert rows(radius_engine, radgroupcheck, "groupname", "attribute", "op", "value") == [
        (SUSPENDED, "Auth-Type", ":=", "Reject")]
    assert rows(radius_engine, radgroupreply, "groupname") == []

    apply(settings, remove=["group:bob"])

    assert freeradius.authenticate("bob", "s3cret") == (
        packet.AccessAccept, {"Mikrotik-Rate-Limit": [RATE]})


def test_walled_garden_mode_accepts_a_suspended_subscriber_onto_the_address_list(
        freeradius, settings, radius_engine):
    garden = settings | {"suspend_mode": "walled_garden", "walled_garden_list": "garden"}

    apply(garden, add=subscriber("bob", ip="10.20.0.9", group=SUSPENDED))

    assert freeradius.authenticate("bob", "s3cret") == (packet.AccessAccept, {
        "Mikrotik-Rate-Limit": [RATE], "Framed-IP-Address": ["10.20.0.9"],
        "Mikrotik-Address-List": ["garden"]})
    assert rows(radius_engine, radgroupcheck, "groupname") == []
    assert rows(radius_engine, radgroupreply, "groupname", "attribute", "op", "value") == [
        (SUSPENDED, "Mikrotik-Address-List", ":=", "garden")]

    apply(settings)  # the tenant went back to reject mode: only the definitions change

    assert freeradius.authenticate("bob", "s3cret") == (packet.AccessReject, {})
    assert rows(radius_engine, radgroupreply, "groupname") == []


def test_a_throttled_subscriber_gets_only_its_own_reply(freeradius, settings, radius_engine):
    with radius_engine.begin() as conn:  # a stray definition made by hand
        conn.execute(radgroupreply.insert(), [{"groupname": THROTTLED, "op": ":=",
                                               "attribute": "Session-Timeout", "value": "60"}])

    apply(settings, add=subscriber("dave", rate="1M/2M", group=THROTTLED))

    assert freeradius.authenticate("dave", "s3cret") == (
        packet.AccessAccept, {"Mikrotik-Rate-Limit": ["1M/2M"]})
    assert rows(radius_engine, radgroupreply, "groupname") == []


def test_a_removed_subscriber_is_rejected_and_gone(freeradius, settings):
    apply(settings, add=[*subscriber("alice"), *subscriber("erin", group=SUSPENDED)])

    apply(settings, remove=["check:erin", "reply:erin", "group:erin"])

    assert freeradius.authenticate("erin", "s3cret") == (packet.AccessReject, {})
    assert freeradius.authenticate("alice", "s3cret")[0] == packet.AccessAccept
    assert state(settings) == sorted(subscriber("alice"), key=lambda entry: entry.key)


def test_a_failed_apply_leaves_the_database_as_it_was(freeradius, settings):
    apply(settings, add=subscriber("alice"))
    before = state(settings)
    broken = RouterEntry("check:bob", {"Cleartext-Password": None})  # NOT NULL fails

    with pytest.raises(sa.exc.IntegrityError):
        apply(settings, change=[RouterEntry("reply:alice", {"Mikrotik-Rate-Limit": "1M/1M"})],
              add=[broken], remove=["check:alice"])

    assert state(settings) == before
    assert freeradius.authenticate("alice", "s3cret") == (
        packet.AccessAccept, {"Mikrotik-Rate-Limit": [RATE]})


# --- drift ---------------------------------------------------------------------------------------

def test_a_reply_edited_by_hand_shows_in_read_state_and_is_repaired(freeradius, settings,
                                                                   radius_engine):
    desired = subscriber("alice", ip="10.20.0.7")
    apply(settings, add=desired)
    with radius_engine.begin() as conn:
        conn.execute(radreply.update().where(radreply.c.attribute == "Mikrotik-Rate-Limit")
                     .values(value="100M/100M"))

    assert by_key(state(settings))["reply:alice"] == {
        "Mikrotik-Rate-Limit": "100M/100M", "Framed-IP-Address": "10.20.0.7"}
    assert freeradius.authenticate("alice", "s3cret")[1]["Mikrotik-Rate-Limit"] == ["100M/100M"]

    apply(settings, change=[desired[1]])

    assert state(settings) == sorted(desired, key=lambda entry: entry.key)
    assert freeradius.authenticate("alice", "s3cret")[1]["Mikrotik-Rate-Limit"] == [RATE]


def test_rows_made_by_hand_never_read_as_what_the_core_wants(settings, radius_engine):
    apply(settings, add=[*subscriber("alice"), *subscriber("bob")])
    with radius_engine.begin() as conn:
        conn.execute(radcheck.update().where(radcheck.c.username == "alice").values(op="=="))
        conn.execute(radreply.insert(), [{"username": "bob", "attribute": "Mikrotik-Rate-Limit",
                                          "op": ":=", "value": "1G/1G"}])
        conn.execute(radusergroup.insert(), [{"username": "mallory", "groupname": "vip"}])

    actual = by_key(state(settings))

    assert actual["check:alice"] == {"Cleartext-Password ==": "s3cret"}
    assert actual["reply:bob"] == {"Mikrotik-Rate-Limit": f"{RATE}\n1G/1G"}
    assert actual["group:mallory"] == {"groupname": "vip"}


# --- CoA and Disconnect --------------------------------------------------------------------------

def test_disconnect_names_the_newest_open_session_from_radacct(freeradius, settings, nas):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    for session_id, offset, status in (("s-0", 0, "Start"), ("s-0", 1, "Stop"),
                                       ("s-1", 1, "Start"), ("s-2", 2, "Start")):
        assert freeradius.account("alice", status, session_id, 0, 0,
                                  event_time=start + timedelta(hours=offset))[0] == (
            packet.AccountingResponse)

    DRIVER.disconnect(settings, router(nas), "alice")

    assert nas.received == [(packet.DisconnectRequest,
                             {"User-Name": "alice", "Acct-Session-Id": "s-2"})]
    assert "alice" not in nas.sessions


def test_disconnect_without_a_session_is_not_an_error(settings, nas):
    DRIVER.disconnect(settings, router(nas), "bob")  # NAKed with 503: nobody to disconnect

    assert nas.received == [(packet.DisconnectRequest, {"User-Name": "bob"})]


def test_change_rate_changes_the_live_session(settings, nas):
    DRIVER.change_rate(settings, router(nas), "alice", "20M/100M")

    assert nas.sessions["alice"]["Mikrotik-Rate-Limit"] == "20M/100M"
    assert nas.received == [(packet.CoARequest, {"User-Name": "alice",
                                                 "Mikrotik-Rate-Limit": "20M/100M"})]
    DRIVER.change_rate(settings, router(nas), "bob", "1M/1M")  # not online: NAK 503, fine


@pytest.mark.parametrize("fault", ["silent", "another secret"])
def test_a_nas_that_does_not_answer_raises_after_one_try(settings, nas, fault):
    nas.silent = fault == "silent"
    target = router(nas, secret="testing123" if nas.silent else "not-the-secret")
    quick = settings | {"coa_timeout": 1}

    started = time.monotonic()
    with pytest.raises(RouterUnavailable, match="nas-1"):
        DRIVER.change_rate(quick, target, "alice", "20M/100M")
    with pytest.raises(RouterUnavailable):
        DRIVER.disconnect(quick, target, "alice")

    assert time.monotonic() - started < 4
    assert len(nas.received) + len(nas.discarded) == 2  # each request was sent once
    assert nas.sessions["alice"]["Mikrotik-Rate-Limit"] == "10M/50M"


class RefusingNas(DynamicAuthorizationServer):
    """A NAS whose policy forbids dynamic authorization (Error-Cause 501)."""

    def _apply(self, code, attributes):
        return "Administratively-Prohibited"


def test_a_nak_other_than_no_session_raises(settings):
    with RefusingNas() as refusing:
        with pytest.raises(RequestRefused, match="501"):
            DRIVER.change_rate(settings, router(refusing), "alice", "20M/100M")
        with pytest.raises(RequestRefused, match="Disconnect-Request"):
            DRIVER.disconnect(settings, router(refusing), "alice")


# --- scale ---------------------------------------------------------------------------------------

def test_ten_thousand_subscribers_are_applied_and_read_back(freeradius, settings):
    desired = [entry for n in range(10_000) for entry in subscriber(
        f"user{n:05d}", password=f"pw{n}", ip=f"10.{n // 250}.{n % 250}.1",
        group=SUSPENDED if n % 10 == 0 else None)]
    timings = {}

    started = time.perf_counter()
    apply(settings, add=desired)
    timings["apply 21,000 added entries"] = time.perf_counter() - started
    started = time.perf_counter()
    actual = state(settings)
    timings["read_state"] = time.perf_counter() - started
    changes = [RouterEntry(entry.key, {**entry.attributes, "Mikrotik-Rate-Limit": "1M/2M"})
               for entry in desired if entry.key.startswith("reply:")]
    started = time.perf_counter()
    apply(settings, change=changes)
    timings["apply 10,000 changed replies"] = time.perf_counter() - started

    assert actual == sorted(desired, key=lambda entry: entry.key)
    assert freeradius.authenticate("user04321", "pw4321") == (packet.AccessAccept, {
        "Mikrotik-Rate-Limit": ["1M/2M"], "Framed-IP-Address": ["10.17.71.1"]})
    assert freeradius.authenticate("user04320", "pw4320")[0] == packet.AccessReject
    started = time.perf_counter()
    apply(settings, remove=[entry.key for entry in desired])
    timings["apply 21,000 removals"] = time.perf_counter() - started
    assert state(settings) == []
    print(f"\n[{testing.test_db_kind()}] " + "; ".join(
        f"{name}: {seconds:.2f} s" for name, seconds in timings.items()))
