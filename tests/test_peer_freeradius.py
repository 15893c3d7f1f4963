"""The RADIUS test peers the FreeRADIUS driver stands on: Headend's FreeRADIUS tables
(`create_schema`) under a real FreeRADIUS with its stock SQL queries, on the run's database kind
(HEADEND_TEST_DB: a PostgreSQL database of its own, or a SQLite file), and the RFC 5176
CoA/Disconnect peer driven by pyrad's client.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from headend_router_freeradius.schema import (
    create_schema,
    metadata,
    radacct,
    radcheck,
    radgroupcheck,
    radgroupreply,
    radpostauth,
    radreply,
    radusergroup,
)
from pyrad import packet
from pyrad.client import Client, Timeout

from tests import network_helpers as peers
from tests.peers.radius_dae import DynamicAuthorizationServer

RATE_LIMIT = "10M/50M 20M/100M 8M/40M 8/8"
GIB = 2**30


# the session's RADIUS database (the run's kind), a real FreeRADIUS on it, emptied per test
freeradius, radius, radius_engine = peers.freeradius, peers.radius, peers.radius_engine


def _insert(engine: sa.Engine, table: sa.Table, *rows: dict) -> None:
    with engine.begin() as conn:
        conn.execute(table.insert(), list(rows))


def _subscriber(engine: sa.Engine, username: str, password: str, *groups: str) -> None:
    _insert(engine, radcheck, {"username": username, "attribute": "Cleartext-Password",
                               "op": ":=", "value": password})
    _insert(engine, radreply,
            {"username": username, "attribute": "Mikrotik-Rate-Limit", "op": ":=",
             "value": RATE_LIMIT},
            {"username": username, "attribute": "Framed-IP-Address", "op": ":=",
             "value": "10.20.0.7"})
    for group in groups:
        _insert(engine, radusergroup, {"username": username, "groupname": group, "priority": 1})


def _rows(engine: sa.Engine, table: sa.Table) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(table.select().order_by(table.c[0]))]


def test_create_schema_makes_the_tables_freeradius_queries_use_and_can_run_again(radius):
    create_schema(radius)  # the fixture already did: nothing to do the second time

    inspector = sa.inspect(radius)
    assert set(metadata.tables) <= set(inspector.get_table_names())
    unique = [c["column_names"] for c in inspector.get_unique_constraints("radacct")]
    assert ["acctuniqueid"] in unique
    columns = {c["name"]: c["type"] for c in inspector.get_columns("radacct")}
    if radius.dialect.name == "postgresql":
        assert {str(columns[n]) for n in ("nasipaddress", "framedipaddress")} == {"INET"}
        assert str(columns["acctinputoctets"]) == "BIGINT"
        assert columns["acctstarttime"].timezone


def test_a_subscriber_is_accepted_with_exactly_its_reply_attributes(freeradius, radius):
    _subscriber(radius, "alice", "s3cret")

    code, attributes = freeradius.authenticate("alice", "s3cret")

    assert code == packet.AccessAccept
    assert attributes == {"Mikrotik-Rate-Limit": [RATE_LIMIT], "Framed-IP-Address": ["10.20.0.7"]}
    logged = _rows(radius, radpostauth)
    assert [(row["username"], row["reply"]) for row in logged] == [("alice", "Access-Accept")]
    assert abs(logged[0]["authdate"] - datetime.now(UTC)) < timedelta(minutes=1)


def test_a_wrong_password_or_an_unknown_user_is_rejected(freeradius, radius):
    _subscriber(radius, "alice", "s3cret")

    assert freeradius.authenticate("alice", "guess") == (packet.AccessReject, {})
    assert freeradius.authenticate("mallory", "s3cret") == (packet.AccessReject, {})
    assert [row["reply"] for row in _rows(radius, radpostauth)] == ["Access-Reject"] * 2


def test_a_subscriber_in_the_suspended_group_is_rejected_until_taken_out(freeradius, radius):
    _insert(radius, radgroupcheck, {"groupname": "suspended", "attribute": "Auth-Type",
                                    "op": ":=", "value": "Reject"})
    _subscriber(radius, "bob", "s3cret", "suspended")

    assert freeradius.authenticate("bob", "s3cret") == (packet.AccessReject, {})

    with radius.begin() as conn:
        conn.execute(radusergroup.delete().where(radusergroup.c.username == "bob"))
    assert freeradius.authenticate("bob", "s3cret")[0] == packet.AccessAccept


def test_a_group_reply_adds_the_walled_garden_address_list(freeradius, radius):
    _insert(radius, radgroupreply, {"groupname": "walled-garden",
                                    "attribute": "Mikrotik-Address-List", "op": ":=",
                                    "value": "walled-garden"})
    _subscriber(radius, "carol", "s3cret", "walled-garden")

    code, attributes = freeradius.authenticate("carol", "s3cret")

    assert code == packet.AccessAccept
    assert attributes == {"Mikrotik-Rate-Limit": [RATE_LIMIT], "Framed-IP-Address": ["10.20.0.7"],
                          "Mikrotik-Address-List": ["walled-garden"]}


def test_a_session_is_one_radacct_row_counting_gigawords_and_replays_change_nothing(
        freeradius, radius):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    session = {"username": "alice", "session_id": "81a00001", "framed_ip": "10.20.0.7"}
    sequence = [
        dict(status="Start", input_octets=0, output_octets=0, event_time=start),
        # 3 GiB down and 0.5 GiB up after 10 minutes: no gigawords yet.
        dict(status="Interim-Update", input_octets=3 * GIB, output_octets=GIB // 2,
             session_time=600, event_time=start + timedelta(minutes=10)),
        # 5 GiB = 1 gigaword (4 GiB) + 1 GiB; 9 GiB = 2 gigawords + 1 GiB.
        dict(status="Stop", input_gigawords=1, input_octets=GIB, output_gigawords=2,
             output_octets=GIB, session_time=1200, event_time=start + timedelta(minutes=20),
             terminate_cause="User-Request"),
    ]
    for step in sequence[:2]:
        assert freeradius.account(**session, **step)[0] == packet.AccountingResponse
    [open_row] = _rows(radius, radacct)
    assert (open_row["acctinputoctets"], open_row["acctstoptime"]) == (3 * GIB, None)

    assert freeradius.account(**session, **sequence[2])[0] == packet.AccountingResponse

    [row] = _rows(radius, radacct)
    assert row["radacctid"] == open_row["radacctid"]
    assert (row["username"], row["acctsessionid"], row["framedipaddress"]) == (
        "alice", "81a00001", "10.20.0.7")
    assert (row["acctinputoctets"], row["acctoutputoctets"]) == (5 * GIB, 9 * GIB)
    assert (row["acctstarttime"], row["acctstoptime"]) == (start, start + timedelta(minutes=20))
    assert (row["acctsessiontime"], row["acctterminatecause"]) == (1200, "User-Request")

    # The NAS did not get our answer to the Stop and sends it again; then the whole session.
    assert freeradius.account(**session, **sequence[2])[0] == packet.AccountingResponse
    assert _rows(radius, radacct) == [row]
    for step in sequence:
        assert freeradius.account(**session, **step)[0] == packet.AccountingResponse
    assert _rows(radius, radacct) == [row]


@pytest.fixture
def nas():
    """The CoA/Disconnect listener of a NAS with alice online."""
    with DynamicAuthorizationServer() as server:
        server.sessions["alice"] = {"Acct-Session-Id": "81a00001",
                                    "Mikrotik-Rate-Limit": "10M/50M"}
        yield server


def _client(nas: DynamicAuthorizationServer, secret: str = "testing123",
            timeout: float = 1, retries: int = 1) -> Client:
    client = Client(server="127.0.0.1", coaport=nas.port, secret=secret.encode(),
                    dict=nas.dictionary)
    client.timeout, client.retries = timeout, retries
    return client


def test_coa_changes_the_rate_limit_of_the_session(nas):
    client = _client(nas)
    request = client.CreateCoAPacket(User_Name="alice", Acct_Session_Id="81a00001")
    request["Mikrotik-Rate-Limit"] = "20M/100M"

    reply = client.SendPacket(request)

    assert reply.code == packet.CoAACK
    assert nas.sessions["alice"]["Mikrotik-Rate-Limit"] == "20M/100M"
    assert nas.received == [(packet.CoARequest, {"User-Name": "alice",
                                                 "Acct-Session-Id": "81a00001",
                                                 "Mikrotik-Rate-Limit": "20M/100M"})]


def test_coa_with_a_message_authenticator_is_acked_with_one(nas):
    client = _client(nas)
    request = client.CreateCoAPacket(User_Name="alice", message_authenticator=True)
    request["Mikrotik-Address-List"] = "walled-garden"

    reply = client.SendPacket(request)  # pyrad verifies the reply's Message-Authenticator

    assert reply.code == packet.CoAACK and reply.message_authenticator
    assert nas.sessions["alice"]["Mikrotik-Address-List"] == "walled-garden"


def test_coa_for_no_session_is_naked_with_session_context_not_found(nas):
    client = _client(nas)
    for attributes in ({"User_Name": "nobody"},
                       {"User_Name": "alice", "Acct_Session_Id": "ended-session"}):
        reply = client.SendPacket(client.CreateCoAPacket(**attributes))

        assert reply.code == packet.CoANAK
        assert reply["Error-Cause"] == ["Session-Context-Not-Found"]
        assert int.from_bytes(reply[101][0]) == 503  # the raw attribute
    assert nas.sessions["alice"]["Mikrotik-Rate-Limit"] == "10M/50M"


def test_disconnect_ends_the_session_and_a_second_one_is_naked(nas):
    client = _client(nas)

    first = client.SendPacket(client.CreateCoAPacket(code=packet.DisconnectRequest,
                                                     User_Name="alice"))
    second = client.SendPacket(client.CreateCoAPacket(code=packet.DisconnectRequest,
                                                      User_Name="alice"))

    assert first.code == packet.DisconnectACK
    assert "alice" not in nas.sessions
    assert second.code == packet.DisconnectNAK
    assert second["Error-Cause"] == ["Session-Context-Not-Found"]
    assert [code for code, _ in nas.received] == [packet.DisconnectRequest] * 2


def test_a_request_signed_with_another_secret_is_discarded_silently(nas):
    client = _client(nas, secret="not-the-secret", timeout=0.3)
    request = client.CreateCoAPacket(code=packet.DisconnectRequest, User_Name="alice")

    with pytest.raises(Timeout):
        client.SendPacket(request)

    assert nas.discarded == ["authenticator does not match the shared secret"]
    assert nas.received == [] and "alice" in nas.sessions


def test_a_silent_nas_makes_the_client_time_out_after_its_retries(nas):
    nas.silent = True
    client = _client(nas, timeout=0.3, retries=2)
    request = client.CreateCoAPacket(User_Name="alice")
    request["Mikrotik-Rate-Limit"] = "20M/100M"

    with pytest.raises(Timeout):
        client.SendPacket(request)

    assert [code for code, _ in nas.received] == [packet.CoARequest] * 2
    assert nas.sessions["alice"]["Mikrotik-Rate-Limit"] == "10M/50M"
