"""MikroTik routers through the RouterOS API (librouteros): simple queues, PPP secrets and the
suspended address list.

Headend owns only the items whose comment starts with "headend:"; anything else on the router was
made by hand and is never read, changed or removed. `read_state` returns the managed items in the
core's canonical vocabulary (docs: the network entry contract), normalising whatever the router
prints ("10M/50M" or "10000000/50000000", "1m30s", "10.0.0.5") into the long forms the core
writes, so that a diff shows real drift and nothing else.

Every call opens its own connection and closes it: the calls are rare and may run in any worker.
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from headend.plugins.interfaces import (
    ConfigSchema,
    EntriesRefused,
    Field,
    RouterDriver,
    RouterEntry,
    RouterUnavailable,
)
from librouteros.api import Api
from librouteros.exceptions import ConnectionClosed, FatalError, TrapError
from librouteros.login import plain
from librouteros.protocol import ApiProtocol, decode_length, determine_length

VERSION = "0.1.0"
MANAGED = "headend:"
ENCODING = "utf-8"
_RATE_UNITS = {"": 1, "k": 1_000, "K": 1_000, "M": 1_000_000, "G": 1_000_000_000}
_RATE = re.compile(r"(\d+(?:\.\d+)?)([kKMG]?)")
_DURATION_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)([wdhms]?)")
_BOOLEANS = {"yes": "true", "true": "true", "no": "false", "false": "false"}
# Failures that mean the router cannot be talked to right now (refused, timed out, hung up).
_UNREACHABLE = (OSError, ConnectionClosed, FatalError)

Row = dict[str, str]


# ---- connection --------------------------------------------------------------------------------


class BufferedTransport:
    """librouteros's socket transport reads each word with two or three `recv` calls; reading
    through a buffered file instead makes a 10k-row print several times faster."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stream = sock.makefile("rb")

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, length: int) -> bytes:
        data = self.stream.read(length)
        if len(data) < length:
            raise ConnectionClosed("Connection unexpectedly closed.")
        return data

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


class TextProtocol(ApiProtocol):
    """librouteros's protocol, reading each sentence in one tight loop: its own reader makes three
    calls per word and formats a debug log line for every word even when logging is off."""

    def readSentence(self) -> tuple[str, tuple[str, ...]]:  # noqa: N802 (librouteros's name)
        read, words = self.transport.read, []
        while (control := read(1)) != b"\x00":
            extra = determine_length(control)
            length = decode_length(control + read(extra)) if extra else control[0]
            words.append(read(length).decode(self.encoding, "ignore"))
        if words[0] == "!fatal":
            self.transport.close()
            raise FatalError(words[1] if len(words) > 1 else "fatal")
        return words[0], tuple(words[1:])


class TextApi(Api):
    """librouteros's Api, but values stay the router's text: its own parsing turns "yes" into
    True and "7" into 7, which would corrupt a password such as "yes" and slows big prints."""

    def readSentence(self) -> tuple[str, dict[str, str]]:  # noqa: N802 (librouteros's name)
        reply_word, words = self.protocol.readSentence()
        pairs = (word[1:].partition("=") for word in words if word[:1] == "=")
        return reply_word, {name: value for name, _, value in pairs}


def _where(router: Mapping[str, Any]) -> str:
    """How error messages name the router: "router core-1 (10.0.0.1:8728)"."""
    address = f"{router['address']}:{router['api_port']}"
    return f"router {router.get('name') or address} ({address})"


def connect(router: Mapping[str, Any], timeout: float) -> TextApi:
    """Log in (RouterOS 6.43+ plain login) like librouteros.connect, on a buffered transport."""
    sock = socket.create_connection((router["address"], int(router["api_port"])), timeout=timeout)
    transport = BufferedTransport(sock)
    api = TextApi(TextProtocol(transport, ENCODING))
    try:
        plain(api, router["username"], router["password"])
    except BaseException:
        transport.close()
        raise
    return api


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


@contextmanager
def session(router: Mapping[str, Any], timeout: float) -> Iterator[TextApi]:
    """One logged-in connection for one driver call; connection trouble is RouterUnavailable."""
    try:
        api = connect(router, timeout)
    except _UNREACHABLE as exc:
        raise RouterUnavailable(f"{_where(router)} unreachable: {_reason(exc)}") from exc
    except TrapError as exc:
        # Wrong credentials: nothing can be done with this router until they are fixed.
        raise RouterUnavailable(f"{_where(router)} refused the login: {exc.message}") from exc
    try:
        yield api
    except _UNREACHABLE as exc:
        raise RouterUnavailable(f"{_where(router)} connection lost: {_reason(exc)}") from exc
    except TrapError as exc:  # a write names its entry itself (MikrotikDriver._run)
        raise RuntimeError(f"{_where(router)} refused: {exc.message}") from exc
    finally:
        api.close()


# ---- normalising what the router prints --------------------------------------------------------


def _pair(value: str, part: Callable[[str], str | None]) -> str:
    """Normalise both halves of `up/down`; text that does not parse stays as printed."""
    halves = value.split("/")
    parsed = [part(half) for half in halves]
    if len(halves) != 2 or None in parsed:
        return value
    return "/".join(parsed)


def _bits(text: str) -> str | None:
    match = _RATE.fullmatch(text)
    if match is None:
        return None
    value = float(match[1]) * _RATE_UNITS[match[2]]
    return str(int(value)) if value == int(value) else None


def _seconds(text: str) -> str | None:
    parts = _DURATION.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        return None
    return f"{sum(int(number) * _DURATION_UNITS[unit or 's'] for number, unit in parts)}s"


@functools.lru_cache(maxsize=4096)  # a few plans' rates repeat across thousands of queues
def canonical_rate(value: str) -> str:
    """`10M/50M` or `10000000/50000000` -> `10000000/50000000` (bits per second)."""
    return _pair(value, _bits)


@functools.lru_cache(maxsize=4096)
def canonical_burst_time(value: str) -> str:
    """`8/8`, `8s/8s` or `1m30s/8s` -> seconds on both sides: `90s/8s`."""
    return _pair(value, _seconds)


def boolean(value: str) -> str:
    return _BOOLEANS.get(value, value)


def _host(item: str) -> str:
    """A single IPv4 address gains /32 as in a queue target; `<pppoe-x>` and networks stay."""
    return f"{item}/32" if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", item) else item


def queue_attributes(row: Row) -> Row:
    """A /queue/simple row in canonical form; burst settings left at zero are not set."""
    attributes = {
        "name": row.get("name", ""),
        "target": ",".join(_host(item) for item in row.get("target", "").split(",")),
        "max-limit": canonical_rate(row.get("max-limit", "0/0")),
    }
    for name in ("burst-limit", "burst-threshold"):
        if (value := canonical_rate(row.get(name, "0/0"))) != "0/0":
            attributes[name] = value
    if (value := canonical_burst_time(row.get("burst-time", "0s/0s"))) != "0s/0s":
        attributes["burst-time"] = value
    attributes["disabled"] = boolean(row.get("disabled", "false"))
    attributes["comment"] = row["comment"]
    return attributes


def secret_attributes(row: Row) -> Row:
    """A /ppp/secret row in canonical form; remote-address only when set."""
    attributes = {name: row.get(name, "") for name in ("name", "password", "service", "profile")}
    if row.get("remote-address"):
        attributes["remote-address"] = row["remote-address"]
    attributes["disabled"] = boolean(row.get("disabled", "false"))
    attributes["comment"] = row["comment"]
    return attributes


def address_attributes(row: Row) -> Row:
    """An address-list row in canonical form (a single host without /32); a suspension
    entry disabled by hand reads as different, so the reconciler enables it again."""
    return {"list": row.get("list", ""), "address": row.get("address", "").removesuffix("/32"),
            "disabled": boolean(row.get("disabled", "false")), "comment": row["comment"]}


# ---- the three kinds of managed items ----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Kind:
    """One menu of managed items: where it is, what to read, and how to name and clear them."""

    prefix: str  # the entry key's prefix: "queue" in "queue:alice"
    path: str
    properties: tuple[str, ...]  # read with .proplist: 2-3x faster than full rows
    key_property: str
    canonical: Callable[[Row], Row]
    # How `set` clears an optional property that the desired entry no longer has.
    unset: Mapping[str, str]

    def print_words(self, settings: Mapping[str, Any], with_id: bool) -> list[str]:
        """Query words: only commented rows (and only the suspended list for addresses)."""
        properties = ((".id",) if with_id else ()) + self.properties
        words = [f"=.proplist={','.join(properties)}", "?comment"]
        if self.prefix == "suspended":
            words.append(f"?=list={settings['suspended_list']}")
        return words

    def read(self, api: Api, settings: Mapping[str, Any], with_id: bool = False) -> Iterator[Row]:
        """The managed rows of this menu as printed."""
        rows = api.rawCmd(f"{self.path}/print", *self.print_words(settings, with_id))
        return (row for row in rows if row.get("comment", "").startswith(MANAGED))

    def key(self, attributes: Row) -> str:
        return f"{self.prefix}:{attributes[self.key_property]}"


KINDS = (
    Kind("queue", "/queue/simple",
         ("name", "target", "max-limit", "burst-limit", "burst-threshold", "burst-time",
          "disabled", "comment"),
         "name", queue_attributes,
         {"burst-limit": "0/0", "burst-threshold": "0/0", "burst-time": "0s/0s"}),
    Kind("secret", "/ppp/secret",
         ("name", "password", "service", "profile", "remote-address", "disabled", "comment"),
         "name", secret_attributes, {"remote-address": ""}),
    Kind("suspended", "/ip/firewall/address-list", ("list", "address", "disabled", "comment"),
         "address", address_attributes, {}),
)
_BY_PREFIX = {kind.prefix: kind for kind in KINDS}


def kind_of(key: str) -> Kind:
    prefix = key.partition(":")[0]
    if prefix not in _BY_PREFIX:
        raise ValueError(f"{key}: not a MikroTik entry (expected queue:, secret: or suspended:)")
    return _BY_PREFIX[prefix]


@dataclass(frozen=True)
class Item:
    """A managed item found on the router: its id and its canonical attributes."""

    id: str
    attributes: Row


def changed_values(current: Row, desired: Mapping[str, str], unset: Mapping[str, str]) -> Row:
    """What a `set` must send to turn `current` into `desired` (empty when they are equal)."""
    values = {name: value for name, value in desired.items() if current.get(name) != value}
    values.update({name: unset[name] for name in current if name not in desired and name in unset})
    return values


# ---- the driver --------------------------------------------------------------------------------


class MikrotikDriver(RouterDriver):
    plugin_id = "mikrotik"
    name = "MikroTik RouterOS API"
    version = VERSION
    config_schema = ConfigSchema((
        Field("timeout", "int", label="Timeout (seconds)", default="10",
              help="How long to wait for the router to connect or answer"),
        Field("suspended_list", "str", label="Suspended address list",
              default="headend-suspended",
              help="The firewall address list that holds suspended subscribers' addresses"),
    ))

    def _settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return self.config_schema.with_defaults(
            {name: value for name, value in settings.items() if value is not None})

    def read_state(self, settings, router):
        """Every managed queue, PPP secret and suspended address, in canonical form."""
        settings = self._settings(settings)
        with session(router, settings["timeout"]) as api:
            return [RouterEntry(kind.key(attributes), attributes)
                    for kind in KINDS
                    for attributes in map(kind.canonical, kind.read(api, settings))]

    def apply_diff(self, settings, router, diff):
        """Remove, then change (`set` by .id, only what differs), then add.

        Items are looked up by reading first, so applying the same diff twice is harmless: a
        removed key that is gone is skipped, and an add or change of a key already there sets
        only what differs. An entry the router refuses is noted with the router's message and
        the others are still written; then EntriesRefused names every refused entry.
        """
        settings = self._settings(settings)
        keys = [*diff.remove, *(entry.key for entry in (*diff.change, *diff.add))]
        if not keys:
            return
        kinds = {kind_of(key) for key in keys}
        refused: dict[str, str] = {}
        with session(router, settings["timeout"]) as api:
            found = self._managed_items(api, settings, kinds)
            for key in diff.remove:
                if key in found:
                    self._run(api, router, key, "remove", refused, **{".id": found[key].id})
            for entry in (*diff.change, *diff.add):
                self._put(api, router, entry, found.get(entry.key), refused)
        if refused:
            raise EntriesRefused(refused)

    def _managed_items(self, api: Api, settings: Mapping[str, Any],
                       kinds: Iterable[Kind]) -> dict[str, Item]:
        items = {}
        for kind in kinds:
            for row in kind.read(api, settings, with_id=True):
                attributes = kind.canonical(row)
                items[kind.key(attributes)] = Item(row[".id"], attributes)
        return items

    def _put(self, api: Api, router: Mapping[str, Any], entry: RouterEntry,
             item: Item | None, refused: dict[str, str]) -> None:
        """Add the entry, or set what differs on the item that has its key."""
        kind = kind_of(entry.key)
        if item is None:
            self._run(api, router, entry.key, "add", refused, **entry.attributes)
            return
        values = changed_values(item.attributes, entry.attributes, kind.unset)
        if values:
            self._run(api, router, entry.key, "set", refused, **{".id": item.id}, **values)

    def _run(self, api: Api, router: Mapping[str, Any], key: str, verb: str,
             refused: dict[str, str], **attributes: str) -> None:
        """One write; a refusal is noted under the entry's key with the router's message."""
        try:
            tuple(api(f"{kind_of(key).path}/{verb}", **attributes))
        except TrapError as exc:
            refused[key] = f"{verb} refused by {_where(router)}: {exc.message}"

    def disconnect(self, settings, router, username):
        """Remove the subscriber's /ppp/active sessions; none is fine."""
        settings = self._settings(settings)
        with session(router, settings["timeout"]) as api:
            ids = [row[".id"] for row in api.rawCmd("/ppp/active/print", "=.proplist=.id",
                                                    f"?=name={username}")]
            if ids:
                tuple(api("/ppp/active/remove", **{".id": ",".join(ids)}))

    def change_rate(self, settings, router, username, rate):
        """Nothing to do: a simple queue change is live on RouterOS, and apply_diff made it."""
