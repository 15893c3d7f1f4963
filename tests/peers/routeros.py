"""A stateful fake of the MikroTik RouterOS API, for testing router drivers through the real
`librouteros` client over real TCP.

It speaks the API wire protocol: length-prefixed words, sentences ended by an empty word,
`/login =name= =password=` (6.43+ style), `!re` rows, `!done` (with `=ret=` after an add),
`!trap =message=` followed by exactly one `!done`, and `!fatal` on `/quit`. Menus keep their rows
per server: `/queue/simple`, `/ppp/secret`, `/ip/firewall/address-list`, read-only
`/ppp/active` (sessions come from `connect_session`), and print-only `/system/identity` and
`/system/resource`. Values are stored as a router prints them, not as they were sent: rates
become bits per second (`10M/50M` -> `10000000/50000000`), burst times `8/8` -> `8s/8s`, a
single-address target gains `/32`, booleans are `true`/`false`; a property that was never set
(comment, remote-address, ...) is left out of a row, as RouterOS does. A driver that compares
desired and actual state has to normalise the same way it would against a real router.

Hooks for tests: `rows(menu)`, `writes` (each executed add/set/remove/enable/disable),
`disconnected` (names whose `/ppp/active` entry was removed), `fail_next(command, message)`,
`load(menu, rows)` (bulk rows that are not counted as writes), `reset()`, and `take_down()` /
`bring_up()` (refuse connections and drop open ones, then listen again on the same port).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

HOST = "127.0.0.1"
WRITE_VERBS = ("add", "set", "remove", "enable", "disable")
MAX_RATE = 0xFFFFFFFF
_RATE_UNITS = {"": 1, "k": 1_000, "K": 1_000, "M": 1_000_000, "G": 1_000_000_000}
_RATE = re.compile(r"(\d+(?:\.\d+)?)([kKMG]?)")
_TIME = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")
_BOOLEANS = {"yes": "true", "true": "true", "no": "false", "false": "false"}
_SERVICES = ("any", "async", "l2tp", "ovpn", "pppoe", "pptp", "sstp")

Row = dict[str, str]
Predicate = Callable[[Row], bool]


class Trap(Exception):
    """A command failure, answered as `!trap =message=...` and then `!done`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Write(NamedTuple):
    """One executed write command and the attribute words it was sent with."""

    command: str
    attributes: dict[str, str]


# ---- wire format -------------------------------------------------------------------------------


def _put_word(buf: bytearray, word: str) -> None:
    """Append one length-prefixed word (surrogateescape keeps arbitrary bytes round-trippable)."""
    data = word.encode("utf-8", "surrogateescape")
    size = len(data)
    if size < 0x80:
        buf.append(size)
    elif size < 0x4000:
        buf += (size | 0x8000).to_bytes(2, "big")
    elif size < 0x200000:
        buf += (size | 0xC00000).to_bytes(3, "big")
    elif size < 0x10000000:
        buf += (size | 0xE0000000).to_bytes(4, "big")
    else:
        buf += b"\xf0" + size.to_bytes(4, "big")
    buf += data


def encode_sentence(*words: str) -> bytes:
    """One sentence: its words, then the empty word."""
    buf = bytearray()
    for word in words:
        _put_word(buf, word)
    buf.append(0)
    return bytes(buf)


def _read_length(stream: BinaryIO) -> int | None:
    """Decode a word length; None when the peer has gone."""
    first = stream.read(1)
    if not first:
        return None
    control = first[0]
    if control < 0x80:
        return control
    extra = 1 if control < 0xC0 else 2 if control < 0xE0 else 3 if control < 0xF0 else 4
    rest = stream.read(extra)
    if len(rest) < extra:
        return None
    if control >= 0xF0:
        return int.from_bytes(rest, "big")
    mask = (0x80, 0xC0, 0xE0)[extra - 1]
    return int.from_bytes(bytes([control & ~mask & 0xFF]) + rest, "big")


def read_sentence(stream: BinaryIO) -> list[str] | None:
    """Read words up to the empty word; None at end of stream."""
    words: list[str] = []
    while (size := _read_length(stream)) is not None:
        if size == 0:
            return words
        data = stream.read(size)
        if len(data) < size:
            return None
        words.append(data.decode("utf-8", "surrogateescape"))
    return None


DONE = encode_sentence("!done")
QUIT = encode_sentence("!fatal", "session terminated on request")


def trap(message: str) -> bytes:
    """A trap reply: the `!trap` sentence and the single `!done` that ends every command."""
    return encode_sentence("!trap", f"=message={message}") + DONE


# ---- values ------------------------------------------------------------------------------------


def _rate_part(name: str, text: str) -> int:
    """One side of a rate (`512k`, `10M`, `1000000`) in bits per second."""
    match = _RATE.fullmatch(text)
    if match is None:
        raise Trap(f"value of {name} out of range (0..{MAX_RATE})")
    value = float(match[1]) * _RATE_UNITS[match[2]]
    if value > MAX_RATE or value != int(value):
        raise Trap(f"value of {name} out of range (0..{MAX_RATE})")
    return int(value)


def clean_rate(name: str, value: str) -> str:
    """`upload/download` as RouterOS prints it back: plain bits per second."""
    parts = value.split("/")
    if len(parts) != 2:
        raise Trap(f"value of {name} out of range (0..{MAX_RATE})")
    return "/".join(str(_rate_part(name, part)) for part in parts)


def _seconds(name: str, text: str) -> int:
    """A duration like `8`, `8s`, `1m30s`, `2h` in seconds."""
    match = _TIME.fullmatch(text)
    if not text or match is None:
        raise Trap(f"value of {name} out of range")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def format_duration(seconds: int) -> str:
    """RouterOS duration text: `1h2m3s`, `8s`, `0s`."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


def clean_burst_time(name: str, value: str) -> str:
    """`8/8` or `8s/8s` -> `8s/8s`."""
    parts = value.split("/")
    if len(parts) != 2:
        raise Trap(f"value of {name} out of range")
    return "/".join(format_duration(_seconds(name, part)) for part in parts)


def clean_bool(name: str, value: str) -> str:
    """yes/no/true/false -> true/false."""
    if value not in _BOOLEANS:
        raise Trap(f"input does not match any value of {name}")
    return _BOOLEANS[value]


def clean_service(name: str, value: str) -> str:
    """Only the PPP services RouterOS knows."""
    if value not in _SERVICES:
        raise Trap(f"input does not match any value of {name}")
    return value


def _network_text(item: str) -> str:
    """A single address gains /32 (/128); an interface name such as `<pppoe-x>` is kept."""
    try:
        return str(ipaddress.ip_network(item, strict=False))
    except ValueError:
        return item


def clean_target(_name: str, value: str) -> str:
    """Queue targets as RouterOS prints them."""
    return ",".join(_network_text(item) for item in value.split(","))


def clean_list_address(_name: str, value: str) -> str:
    """Address-list entries print a single host without its /32."""
    return value.removesuffix("/32")


# ---- menus -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A menu property: its default (None = absent until set) and how its input is cleaned."""

    default: str | None = None
    clean: Callable[[str, str], str] | None = None


@dataclass(frozen=True)
class Menu:
    """What a menu accepts and which properties identify a row."""

    fields: dict[str, Field]
    required: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    duplicate: str = "failure: already have such name"
    auto_name: str | None = None
    writable: bool = True

    def clean(self, attributes: dict[str, str]) -> Row:
        """Validate property names and normalise values as the router stores them."""
        cleaned: Row = {}
        for name, value in attributes.items():
            spec = self.fields.get(name)
            if spec is None:
                raise Trap(f"unknown parameter {name}")
            cleaned[name] = spec.clean(name, value) if spec.clean and value else value
        return cleaned

    def query_value(self, name: str, value: str) -> str:
        """Compare queried values in stored form (`?disabled=yes` matches `true`)."""
        spec = self.fields.get(name)
        if spec is None or spec.clean is None:
            return value
        try:
            return spec.clean(name, value)
        except Trap:
            return value


_DISABLED = Field("false", clean_bool)
MENUS: dict[str, Menu] = {
    "/queue/simple": Menu(
        fields={
            "name": Field(),
            "target": Field(clean=clean_target),
            "max-limit": Field("0/0", clean_rate),
            "limit-at": Field("0/0", clean_rate),
            "burst-limit": Field("0/0", clean_rate),
            "burst-threshold": Field("0/0", clean_rate),
            "burst-time": Field("0s/0s", clean_burst_time),
            "comment": Field(),
            "disabled": _DISABLED,
        },
        required=("target",),
        unique=("name",),
        auto_name="queue",
    ),
    "/ppp/secret": Menu(
        fields={
            "name": Field(),
            "password": Field(""),
            "service": Field("any", clean_service),
            "profile": Field("default"),
            "remote-address": Field(),
            "local-address": Field(),
            "comment": Field(),
            "disabled": _DISABLED,
        },
        required=("name",),
        unique=("name",),
    ),
    "/ip/firewall/address-list": Menu(
        fields={
            "list": Field(),
            "address": Field(clean=clean_list_address),
            "comment": Field(),
            "disabled": _DISABLED,
        },
        required=("list", "address"),
        unique=("list", "address"),
        duplicate="failure: already have such entry",
    ),
    "/ppp/active": Menu(
        fields={
            "name": Field(),
            "service": Field("pppoe"),
            "caller-id": Field(""),
            "address": Field(""),
            "uptime": Field("0s"),
            "encoding": Field(""),
            "session-id": Field(),
            "radius": Field("false", clean_bool),
        },
        required=("name",),
        writable=False,
    ),
}


@dataclass
class Table:
    """The rows of one menu, keyed by `.id`, with an index of the unique key."""

    menu: Menu
    items: dict[str, Row] = field(default_factory=dict)
    keys: dict[tuple[str, ...], str] = field(default_factory=dict)
    next_id: int = 1

    def key(self, row: Row) -> tuple[str, ...] | None:
        return tuple(row[name] for name in self.menu.unique) if self.menu.unique else None

    def add(self, attributes: dict[str, str]) -> str:
        """Insert a row; ids are `*hex` and never reused."""
        values = self.menu.clean(attributes)
        if self.menu.auto_name and not values.get("name"):
            values["name"] = self._free_name()
        missing = [name for name in self.menu.required if not values.get(name)]
        if missing:
            raise Trap(f"missing value(s) of argument(s) {','.join(missing)}")
        row_id = f"*{self.next_id:X}"
        row = {".id": row_id}
        for name, spec in self.menu.fields.items():
            value = values.get(name) or spec.default
            if value is not None:
                row[name] = value
        key = self.key(row)
        if key is not None and key in self.keys:
            raise Trap(self.menu.duplicate)
        self.next_id += 1
        self.items[row_id] = row
        if key is not None:
            self.keys[key] = row_id
        return row_id

    def _free_name(self) -> str:
        """The first unused `queueN`, as RouterOS names an unnamed queue."""
        number = 1
        while (f"{self.menu.auto_name}{number}",) in self.keys:
            number += 1
        return f"{self.menu.auto_name}{number}"

    def lookup(self, ids: str) -> list[str]:
        """Resolve a `.id` list; any unknown id fails the whole command."""
        wanted = [item for item in ids.split(",") if item]
        if not wanted or any(item not in self.items for item in wanted):
            raise Trap("no such item")
        return wanted

    def update(self, ids: list[str], attributes: dict[str, str]) -> None:
        """Change rows atomically: every id and the unique index are checked first."""
        values = self.menu.clean(attributes)
        changed = {row_id: self._changed(self.items[row_id], values) for row_id in ids}
        self._check_unique(changed)
        for row_id, row in changed.items():
            old_key = self.key(self.items[row_id])
            if old_key is not None:
                del self.keys[old_key]
            self.items[row_id] = row
        for row_id, row in changed.items():
            if (key := self.key(row)) is not None:
                self.keys[key] = row_id

    def _changed(self, row: Row, values: Row) -> Row:
        """The row after a set; an emptied property returns to its default or disappears."""
        new = dict(row)
        for name, value in values.items():
            if value == "" and (name in self.menu.required or name in self.menu.unique):
                raise Trap(f"missing value(s) of argument(s) {name}")
            default = self.menu.fields[name].default
            if value == "" and default is None:
                new.pop(name, None)
            else:
                new[name] = value or default
        return new

    def _check_unique(self, changed: dict[str, Row]) -> None:
        if not self.menu.unique:
            return
        seen: set[tuple[str, ...]] = set()
        for row in changed.values():
            key = self.key(row)
            owner = self.keys.get(key)
            if key in seen or (owner is not None and owner not in changed):
                raise Trap(self.menu.duplicate)
            seen.add(key)

    def remove(self, ids: list[str]) -> list[Row]:
        removed = [self.items.pop(row_id) for row_id in ids]
        for row in removed:
            if (key := self.key(row)) is not None:
                del self.keys[key]
        return removed


# ---- queries -----------------------------------------------------------------------------------


def _less(left: str | None, right: str) -> bool:
    if left is None:
        return False
    if left.isdigit() and right.isdigit():
        return int(left) < int(right)
    return left < right


def _query_test(word: str, menu: Menu) -> Predicate:
    """One query word (without `?`): `-name`, `name`, `name=v`, `=name=v`, `<name=v`, `>name=v`."""
    if word.startswith("-"):
        absent = word[1:]
        return lambda row: absent not in row
    operator = word[0] if word[:1] in ("=", "<", ">") else "="
    name, has_value, value = word.lstrip("=<>").partition("=")
    if not has_value:
        return lambda row: name in row
    value = menu.query_value(name, value)
    if operator == "<":
        return lambda row: _less(row.get(name), value)
    if operator == ">":
        return lambda row: row.get(name) is not None and _less(value, row[name])
    return lambda row: row.get(name, "") == value


def _apply_operations(stack: list[Predicate], operations: str) -> None:
    """Stack operations `|`, `&`, `!`, `.` and `0`-`9` (push a copy of that entry)."""
    for operation in operations:
        if operation == "!":
            inner = stack.pop()
            stack.append(lambda row, p=inner: not p(row))
        elif operation in "|&":
            right, left = stack.pop(), stack.pop()
            if operation == "|":
                stack.append(lambda row, a=left, b=right: a(row) or b(row))
            else:
                stack.append(lambda row, a=left, b=right: a(row) and b(row))
        elif operation == ".":
            stack.append(stack[-1])
        elif operation.isdigit():
            stack.append(stack[int(operation)])
        else:
            raise Trap(f"unknown query operation {operation}")


def compile_query(words: list[str], menu: Menu) -> Predicate | None:
    """Turn the query words into one predicate; whatever is left on the stack is ANDed."""
    stack: list[Predicate] = []
    try:
        for word in words:
            if word.startswith("#"):
                _apply_operations(stack, word[1:])
            else:
                stack.append(_query_test(word, menu))
    except IndexError:
        raise Trap("invalid query: stack is empty") from None
    if not stack:
        return None
    tests = tuple(stack)
    return lambda row: all(test(row) for test in tests)


# ---- commands ----------------------------------------------------------------------------------


@dataclass
class Command:
    """A parsed request sentence."""

    path: str
    attributes: dict[str, str]
    query: list[str]

    @classmethod
    def parse(cls, words: list[str]) -> Command:
        attributes: dict[str, str] = {}
        query: list[str] = []
        for word in words[1:]:
            if word.startswith("="):
                name, _, value = word[1:].partition("=")
                attributes[name] = value
            elif word.startswith("?"):
                query.append(word[1:])
        return cls(words[0], attributes, query)


def encode_rows(rows: Iterable[Row], proplist: list[str] | None) -> bytes:
    """All `!re` sentences and the final `!done` in one buffer."""
    buf = bytearray()
    for row in rows:
        _put_word(buf, "!re")
        items = row.items() if proplist is None else ((k, row[k]) for k in proplist if k in row)
        for name, value in items:
            _put_word(buf, f"={name}={value}")
        buf.append(0)
    buf += DONE
    return bytes(buf)


class Connection:
    """Per-connection state: only whether this client has logged in."""

    logged_in = False


class RouterOSServer:
    """A RouterOS API endpoint on 127.0.0.1 with a free port; state is shared by connections."""

    def __init__(
        self,
        username: str = "admin",
        password: str = "secret",
        *,
        identity: str = "MikroTik",
        version: str = "7.16 (stable)",
        board_name: str = "CCR2004-1G-12S+2XS",
    ) -> None:
        self.username, self.password = username, password
        self.host, self.port = HOST, 0
        self.identity = {"name": identity}
        self.resource = {
            "uptime": "1w2d3h4m5s",
            "version": version,
            "build-time": "2024-10-10 12:00:00",
            "free-memory": "3221225472",
            "total-memory": "4294967296",
            "cpu": "ARM64",
            "cpu-count": "4",
            "cpu-frequency": "1700",
            "cpu-load": "3",
            "free-hdd-space": "100663296",
            "total-hdd-space": "134217728",
            "architecture-name": "arm64",
            "board-name": board_name,
            "platform": "MikroTik",
        }
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # -- lifecycle

    def start(self) -> RouterOSServer:
        self.bring_up()
        return self

    def stop(self) -> None:
        self.take_down()

    def __enter__(self) -> RouterOSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def bring_up(self) -> None:
        """Listen (again): the first time on a free port, afterwards on the same one."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def take_down(self) -> None:
        """Stop listening (connections are refused) and drop every open connection."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() at once
        listener.close()
        self._thread.join()
        with self._lock:
            for sock in self._connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # the client closed it already

    def _accept(self, listener: socket.socket) -> None:
        """One thread per connection, until the listener is shut down."""
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        """Read sentences; answer each with one sendall."""
        with self._lock:
            self._connections.add(sock)
        connection = Connection()
        try:
            with sock, sock.makefile("rb") as stream:
                while (words := read_sentence(stream)) is not None:
                    if not words:
                        continue
                    reply, keep_open = self.respond(Command.parse(words), connection)
                    sock.sendall(reply)
                    if not keep_open:
                        return
        except OSError:
            pass  # the client went away or take_down() dropped the connection
        finally:
            with self._lock:
                self._connections.discard(sock)

    # -- test hooks

    def reset(self) -> None:
        """Forget every row, write, disconnect and pending failure (a factory-fresh router)."""
        with self._lock:
            self._tables = {path: Table(menu) for path, menu in MENUS.items()}
            self._writes: list[Write] = []
            self._disconnected: list[str] = []
            self._failures: defaultdict[str, deque[str]] = defaultdict(deque)

    @property
    def writes(self) -> list[Write]:
        with self._lock:
            return list(self._writes)

    @property
    def disconnected(self) -> list[str]:
        with self._lock:
            return list(self._disconnected)

    def rows(self, menu: str) -> list[Row]:
        """A copy of a menu's rows (with `.id`), in id order."""
        with self._lock:
            return [dict(row) for row in self._table(menu).items.values()]

    def load(self, menu: str, rows: Iterable[dict[str, str]]) -> list[str]:
        """Insert rows directly (validated like an add, not counted as writes); their ids."""
        with self._lock:
            table = self._table(menu)
            return [table.add(dict(row)) for row in rows]

    def connect_session(
        self,
        name: str,
        address: str = "",
        *,
        service: str = "pppoe",
        caller_id: str = "",
        uptime: str = "0s",
    ) -> str:
        """A PPP client connects: a `/ppp/active` row appears. Returns its id."""
        row = {
            "name": name,
            "address": address,
            "service": service,
            "caller-id": caller_id,
            "uptime": uptime,
        }
        return self.load("/ppp/active", [row])[0]

    def fail_next(self, command: str, message: str) -> None:
        """Make the next `command` (e.g. `/queue/simple/set`) trap with `message`, unexecuted."""
        with self._lock:
            self._failures[command].append(message)

    # -- protocol

    def respond(self, command: Command, connection: Connection) -> tuple[bytes, bool]:
        """The complete reply to one sentence, and whether the connection stays open."""
        if command.path == "/quit":
            return QUIT, False
        with self._lock:
            failures = self._failures.get(command.path)
            if failures:
                return trap(failures.popleft()), True
        if command.path == "/login":
            return self._login(command.attributes, connection)
        if not connection.logged_in:
            return trap("not logged in"), True
        try:
            with self._lock:
                return self._dispatch(command), True
        except Trap as failure:
            return trap(failure.message), True

    def _login(self, attributes: dict[str, str], connection: Connection) -> tuple[bytes, bool]:
        credentials = (attributes.get("name"), attributes.get("password"))
        if credentials != (self.username, self.password):
            return trap("invalid user name or password (6)"), False
        connection.logged_in = True
        return DONE, True

    def _table(self, menu: str) -> Table:
        return self._tables["/" + menu.strip("/")]

    def _dispatch(self, command: Command) -> bytes:
        menu_path, _, verb = command.path.rpartition("/")
        single = {"/system/identity": self.identity, "/system/resource": self.resource}
        if menu_path in single:
            if verb != "print":
                raise Trap("no such command")
            return encode_rows([single[menu_path]], _proplist(command.attributes))
        table = self._tables.get(menu_path)
        if table is None:
            raise Trap("no such command prefix")
        if verb == "print":
            return self._print(table, command)
        if verb not in WRITE_VERBS or (verb != "remove" and not table.menu.writable):
            raise Trap("no such command")
        reply = self._write(table, verb, command.attributes)
        self._writes.append(Write(command.path, dict(command.attributes)))
        return reply

    def _print(self, table: Table, command: Command) -> bytes:
        attributes = dict(command.attributes)
        proplist = _proplist(attributes)
        count_only = attributes.pop("count-only", None) is not None
        attributes.pop(".proplist", None)
        if attributes:
            raise Trap(f"unknown parameter {next(iter(attributes))}")
        test = compile_query(command.query, table.menu)
        rows = table.items.values() if test is None else filter(test, table.items.values())
        if count_only:
            return encode_sentence("!done", f"=ret={sum(1 for _ in rows)}")
        return encode_rows(rows, proplist)

    def _write(self, table: Table, verb: str, attributes: dict[str, str]) -> bytes:
        if verb == "add":
            return encode_sentence("!done", f"=ret={table.add(attributes)}")
        values = dict(attributes)
        ids = table.lookup(values.pop(".id", ""))
        if verb != "set" and values:
            raise Trap(f"unknown parameter {next(iter(values))}")
        if verb == "remove":
            removed = table.remove(ids)
            if table is self._tables["/ppp/active"]:
                self._disconnected.extend(row["name"] for row in removed)
        elif verb == "set":
            table.update(ids, values)
        else:
            table.update(ids, {"disabled": "true" if verb == "disable" else "false"})
        return DONE


def _proplist(attributes: dict[str, str]) -> list[str] | None:
    value = attributes.get(".proplist")
    return None if value is None else [name for name in value.split(",") if name]
