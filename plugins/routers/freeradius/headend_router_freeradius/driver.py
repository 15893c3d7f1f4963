"""The FreeRADIUS driver: a tenant's subscribers as rows of FreeRADIUS's SQL tables, and live
changes sent to the NAS as RFC 5176 CoA and Disconnect requests.

Entries (the contract shared with the core's reconciler, all values strings):
`check:{user}` -> radcheck {"Cleartext-Password": pw}, `reply:{user}` -> radreply
{"Mikrotik-Rate-Limit": ..., optional "Framed-IP-Address": ...}, both with op ":=", and
`group:{user}` -> radusergroup {"groupname": ...}. The database belongs to Headend for the
tenant, so read_state reports every row of those tables: a row written by hand is drift. A row
whose op is not ":=" is read as the attribute name followed by its op, and a repeated attribute
as its values joined by newlines, so that such drift never compares equal to what the core wants.

FreeRADIUS reads the same rows on every request, so apply_diff writes in one transaction: a
subscriber is never seen half written, and a failure leaves the database as it was.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from headend.plugins.interfaces import (
    ConfigSchema,
    Field,
    RouterDiff,
    RouterDriver,
    RouterEntry,
    RouterUnavailable,
    UsageRecord,
)
from pyrad import packet
from pyrad.client import Client, Timeout
from pyrad.dictionary import Dictionary

from headend_router_freeradius.schema import (
    create_schema,
    radacct,
    radcheck,
    radgroupcheck,
    radgroupreply,
    radreply,
    radusergroup,
)
from headend_router_freeradius.usage import read_usage

VERSION = "0.1.0"
OP = ":="
SUSPENDED_GROUP, THROTTLED_GROUP = "headend-suspended", "headend-throttled"
# RFC 5176 Error-Cause 503 Session-Context-Not-Found: the user is not online, nothing to change.
NO_SESSION = 503
ERROR_CAUSE = 101
# Usernames per DELETE ... IN (...), well under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500
_DICTIONARY = Path(__file__).with_name("dictionary")
_ACK = {packet.CoARequest: packet.CoAACK, packet.DisconnectRequest: packet.DisconnectACK}

# The table behind each kind of entry key, and its user-owned attribute tables.
_ATTRIBUTE_TABLES = {"check": radcheck, "reply": radreply}
_TABLES = {**_ATTRIBUTE_TABLES, "group": radusergroup}

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


class RequestRefused(RuntimeError):
    """The NAS answered a CoA or Disconnect request with a NAK other than "no session"."""


def engine_for(database_url: str) -> sa.Engine:
    """The process's engine for a RADIUS database, its tables created on first use; an
    unreachable database raises (and is tried again on the next call)."""
    with _engines_lock:
        engine = _engines.get(database_url)
        if engine is None:
            engine = _create_engine(database_url)
            try:
                create_schema(engine)
            except BaseException:
                engine.dispose()
                raise
            _engines[database_url] = engine
        return engine


def _create_engine(database_url: str) -> sa.Engine:
    url = sa.engine.make_url(database_url)
    # A database that does not answer must not hold a reconcile job for minutes.
    connect_args = {"connect_timeout": 10} if url.get_backend_name() == "postgresql" else {}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


@contextlib.contextmanager
def _reachable(database_url: str):
    """A database that refuses, times out or drops the connection is RouterUnavailable, as a
    router that does not answer: the core reports it "unreachable" and tries again later."""
    try:
        yield
    except sa.exc.OperationalError as error:
        shown = sa.engine.make_url(database_url).render_as_string(hide_password=True)
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise RouterUnavailable(f"RADIUS database {shown} cannot be reached: {reason}") from error


@functools.cache
def _dictionary() -> Dictionary:
    return Dictionary(str(_DICTIONARY))


# --- reading ------------------------------------------------------------------------------------

def _attribute_name(attribute: str, op: str) -> str:
    return attribute if op == OP else f"{attribute} {op}"


def _collect(rows: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """{username: {name: value}} from (username, name, value) rows in id order; a repeated
    name keeps every value, one per line."""
    users: dict[str, dict[str, str]] = defaultdict(dict)
    for username, name, value in rows:
        attributes = users[username]
        attributes[name] = f"{attributes[name]}\n{value}" if name in attributes else value
    return users


def _read_entries(conn: sa.Connection) -> list[RouterEntry]:
    entries = []
    for kind, table in _ATTRIBUTE_TABLES.items():
        rows = conn.execute(sa.select(table.c.username, table.c.attribute, table.c.op,
                                      table.c.value).order_by(table.c.id))
        users = _collect((user, _attribute_name(name, op), value)
                         for user, name, op, value in rows)
        entries += [RouterEntry(f"{kind}:{user}", attrs) for user, attrs in users.items()]
    rows = conn.execute(sa.select(radusergroup.c.username, radusergroup.c.groupname)
                        .order_by(radusergroup.c.priority, radusergroup.c.id))
    users = _collect((user, "groupname", group) for user, group in rows)
    entries += [RouterEntry(f"group:{user}", attrs) for user, attrs in users.items()]
    return entries


# --- writing ------------------------------------------------------------------------------------

def _split_key(key: str) -> tuple[str, str]:
    kind, _, username = key.partition(":")
    if kind not in _TABLES or not username:
        raise ValueError(f"not a FreeRADIUS entry key: {key!r}")
    return kind, username


def _rows(kind: str, username: str, entry: RouterEntry) -> list[dict[str, Any]]:
    """The rows one entry is made of."""
    if kind == "group":
        if set(entry.attributes) != {"groupname"}:
            raise ValueError(f"{entry.key}: a group entry has exactly a groupname")
        return [{"username": username, "groupname": entry.attributes["groupname"],
                 "priority": 1}]
    return [{"username": username, "attribute": name, "op": OP, "value": value}
            for name, value in entry.attributes.items()]


def _plan(diff: RouterDiff) -> tuple[dict[str, list[str]], dict[str, list[dict[str, Any]]]]:
    """Per kind: the usernames whose rows go, and the rows that come in their place. Added
    keys are cleared too, so applying the same diff twice writes the same rows once."""
    deletes: dict[str, list[str]] = defaultdict(list)
    inserts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key in diff.remove:
        kind, username = _split_key(key)
        deletes[kind].append(username)
    for entry in (*diff.change, *diff.add):
        kind, username = _split_key(entry.key)
        deletes[kind].append(username)
        inserts[kind] += _rows(kind, username, entry)
    return deletes, inserts


def _group_definitions(settings: Mapping[str, Any]) -> dict[sa.Table, list[dict[str, str]]]:
    """The radgroupcheck/radgroupreply rows of Headend's groups for the tenant's suspend mode;
    the throttled group has none (the user's own reply carries the throttled rate)."""
    if settings["suspend_mode"] == "walled_garden":
        rows = {radgroupcheck: [], radgroupreply: [
            {"attribute": "Mikrotik-Address-List", "value": settings["walled_garden_list"]}]}
    else:
        rows = {radgroupcheck: [{"attribute": "Auth-Type", "value": "Reject"}],
                radgroupreply: []}
    return {table: [{"groupname": SUSPENDED_GROUP, "op": OP, **row} for row in table_rows]
            for table, table_rows in rows.items()}


def _write_groups(conn: sa.Connection, settings: Mapping[str, Any]) -> None:
    for table, rows in _group_definitions(settings).items():
        conn.execute(table.delete().where(
            table.c.groupname.in_((SUSPENDED_GROUP, THROTTLED_GROUP))))
        if rows:
            conn.execute(table.insert(), rows)


def _write(conn: sa.Connection, diff: RouterDiff) -> None:
    deletes, inserts = _plan(diff)
    for kind, usernames in deletes.items():
        table = _TABLES[kind]
        unique = sorted(set(usernames))
        for start in range(0, len(unique), _CHUNK):
            conn.execute(table.delete().where(
                table.c.username.in_(unique[start:start + _CHUNK])))
    for kind, rows in inserts.items():
        if rows:
            conn.execute(_TABLES[kind].insert(), rows)


# --- CoA and Disconnect -------------------------------------------------------------------------

def _open_session_id(conn: sa.Connection, username: str) -> str | None:
    """The Acct-Session-Id of the user's newest open session in radacct, if any."""
    return conn.execute(
        sa.select(radacct.c.acctsessionid)
        .where(radacct.c.username == username, radacct.c.acctstoptime.is_(None))
        .order_by(sa.nulls_last(radacct.c.acctstarttime.desc()), radacct.c.radacctid.desc())
        .limit(1)).scalar()


def _client(settings: Mapping[str, Any], router: Mapping[str, Any]) -> Client:
    """A client for the NAS's CoA port that sends each request once: the core retries later."""
    return Client(server=router["address"], coaport=int(router["coa_port"]),
                  secret=str(router["radius_secret"]).encode(), dict=_dictionary(),
                  retries=1, timeout=int(settings["coa_timeout"]))


def _send(settings: Mapping[str, Any], router: Mapping[str, Any], client: Client,
          request: packet.Packet) -> None:
    """Send once; an ACK or a "no session" NAK is done, silence or another NAK raises."""
    try:
        reply = client.SendPacket(request)
    except (Timeout, OSError) as error:
        raise RouterUnavailable(
            f"{router['name']} ({router['address']}:{router['coa_port']}) did not answer the "
            f"{_name(request.code)} within {settings['coa_timeout']} s") from error
    finally:
        client._CloseSocket()  # pyrad has no public close; do not leave the socket to the GC
    if reply.code == _ACK[request.code]:
        return
    causes = [int.from_bytes(value, "big") for value in reply.get(ERROR_CAUSE, [])]
    if causes != [NO_SESSION]:
        raise RequestRefused(f"{router['name']} refused the {_name(request.code)}: "
                             f"Error-Cause {', '.join(map(str, causes)) or 'none'}")


def _name(code: int) -> str:
    return "Disconnect-Request" if code == packet.DisconnectRequest else "CoA-Request"


class FreeradiusDriver(RouterDriver):
    """Subscribers in the tenant's FreeRADIUS SQL database; CoA/Disconnect to the NAS."""

    plugin_id = "freeradius"
    name = "FreeRADIUS (SQL)"
    version = VERSION
    config_schema = ConfigSchema((
        Field("database_url", "str", label="Database URL", required=True, secret=True,
              help="SQLAlchemy URL of the FreeRADIUS database, e.g. "
                   "postgresql+psycopg://radius:password@db.example.net/radius"),
        Field("suspend_mode", "choice", choices=("reject", "walled_garden"), default="reject",
              help="reject: suspended subscribers cannot log in; walled_garden: they log in "
                   "and the NAS puts them on the walled-garden address list"),
        Field("walled_garden_list", "str", label="Walled-garden address list",
              default="headend-walled-garden",
              help="Mikrotik-Address-List given to suspended subscribers in walled_garden mode"),
        Field("coa_timeout", "int", label="CoA timeout (seconds)", default="3",
              help="How long to wait for the NAS to answer a CoA or Disconnect request"),
    ))

    def _settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        values = self.config_schema.with_defaults(settings)
        if not values["database_url"]:
            raise ValueError("the FreeRADIUS driver has no database_url")
        return values

    def read_state(self, settings, router) -> list[RouterEntry]:
        url = self._settings(settings)["database_url"]
        with _reachable(url), engine_for(url).connect() as conn:
            return _read_entries(conn)

    def apply_diff(self, settings, router, diff: RouterDiff) -> None:
        values = self._settings(settings)
        with _reachable(values["database_url"]), engine_for(values["database_url"]).begin() as conn:
            _write(conn, diff)
            _write_groups(conn, values)

    def read_usage(self, settings, changed_after, limit: int) -> list[UsageRecord]:
        """radacct sessions changed at or after `changed_after` (see .usage)."""
        url = self._settings(settings)["database_url"]
        with _reachable(url):
            return read_usage(engine_for(url), changed_after, limit)

    def disconnect(self, settings, router, username: str) -> None:
        values = self._settings(settings)
        with _reachable(values["database_url"]), \
                engine_for(values["database_url"]).connect() as conn:
            session_id = _open_session_id(conn, username)
        client = _client(values, router)
        request = client.CreateCoAPacket(code=packet.DisconnectRequest, User_Name=username,
                                         message_authenticator=True)
        if session_id is not None:
            request["Acct-Session-Id"] = session_id
        _send(values, router, client, request)

    def change_rate(self, settings, router, username: str, rate: str) -> None:
        values = self._settings(settings)
        client = _client(values, router)
        request = client.CreateCoAPacket(User_Name=username, message_authenticator=True)
        request["Mikrotik-Rate-Limit"] = rate
        _send(values, router, client, request)
