"""FreeRADIUS 3.2 (Debian packages) on loopback with its SQL module, for the FreeRADIUS driver's
tests.

The driver writes FreeRADIUS's SQL tables and FreeRADIUS alone decides what they mean, so the
tests ask the real server: `FreeRadiusServer` runs it unprivileged from a copy of
/etc/freeradius/3.0 on free 127.0.0.1 UDP ports, with the stock `sql` queries on a given database
(PostgreSQL, or a SQLite file as in the embedded setup), group checks and replies on
(radusergroup -> radgroupcheck/radgroupreply) and accounting into radacct. `authenticate` and
`account` talk to it through pyrad with the driver's dictionary, as a NAS would.

Plain helpers, not fixtures, so that any test file can build its own session fixture:
`radius_database_url(kind, directory)` gives a fresh RADIUS database (a separate PostgreSQL
database, dropped at the end, or a SQLite file) and `wipe_radius_tables(engine)` empties it
between tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import headend_router_freeradius
import sqlalchemy as sa
from headend.testing import PG_SERVER
from headend_router_freeradius.schema import metadata
from pyrad import packet
from pyrad.client import Client, Timeout
from pyrad.dictionary import Dictionary

BINARY = "/usr/sbin/freeradius"
POSTGRESQL_DRIVER = "/usr/lib/freeradius/rlm_sql_postgresql.so"
SYSTEM_CONFIG = Path("/etc/freeradius/3.0")
INSTALL = "apt-get update && apt-get install -y freeradius freeradius-postgresql freeradius-utils"
DICTIONARY = Path(headend_router_freeradius.__file__).with_name("dictionary")
# The only modules the test virtual server uses; the stock set wants EAP certificates and more.
MODULES = ("always", "attr_filter", "expr", "pap", "preprocess")
# Integrity attributes of a reply, not part of what the server granted.
_ENVELOPE = {"Message-Authenticator", "Proxy-State"}

RADIUSD_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = ${{exec_prefix}}/sbin
logdir = {dir}/log
raddbdir = {dir}
radacctdir = ${{logdir}}/radacct
name = freeradius
confdir = ${{raddbdir}}
modconfdir = ${{confdir}}/mods-config
certdir = ${{confdir}}/certs
cadir = ${{confdir}}/certs
run_dir = {dir}/run
db_dir = ${{raddbdir}}
libdir = /usr/lib/freeradius
pidfile = ${{run_dir}}/${{name}}.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 16384
hostname_lookups = no
log {{
\tdestination = files
\tcolourise = no
\tfile = ${{logdir}}/radius.log
\tauth = yes
}}
security {{
\tallow_core_dumps = no
\tmax_attributes = 200
\treject_delay = 0
\tstatus_server = yes
}}
proxy_requests = no
$INCLUDE clients.conf
thread pool {{
\tstart_servers = 4
\tmax_servers = 16
\tmin_spare_servers = 2
\tmax_spare_servers = 8
\tmax_requests_per_server = 0
\tauto_limit_acct = no
}}
modules {{
\t$INCLUDE mods-enabled/
}}
policy {{
\t$INCLUDE policy.d/
}}
$INCLUDE sites-enabled/
"""

CLIENTS_CONF = """\
client headend_tests {{
\tipaddr = 127.0.0.1
\tproto = udp
\tsecret = {secret}
\tnas_type = other
}}
"""

# Authorize from SQL (user check/reply, then group check/reply), PAP, accounting and post-auth
# logging into SQL: the parts of the stock `default` site a PPPoE/hotspot NAS exercises.
SITE = """\
server headend {{
listen {{
\ttype = auth
\tipaddr = 127.0.0.1
\tport = {auth_port}
}}
listen {{
\ttype = acct
\tipaddr = 127.0.0.1
\tport = {acct_port}
}}
authorize {{
\tpreprocess
\tsql
\tpap
}}
authenticate {{
\tAuth-Type PAP {{
\t\tpap
\t}}
}}
preacct {{
\tpreprocess
\tacct_unique
}}
accounting {{
\tsql
\tattr_filter.accounting_response
}}
post-auth {{
\tsql
\tPost-Auth-Type REJECT {{
\t\tsql
\t\tattr_filter.access_reject
\t}}
}}
}}
"""

SQL_MODULE = """\
sql {{
\tdialect = "{dialect}"
\tdriver = "rlm_sql_${{dialect}}"
{connection}
\tacct_table1 = "radacct"
\tacct_table2 = "radacct"
\tpostauth_table = "radpostauth"
\tauthcheck_table = "radcheck"
\tgroupcheck_table = "radgroupcheck"
\tauthreply_table = "radreply"
\tgroupreply_table = "radgroupreply"
\tusergroup_table = "radusergroup"
\tclient_table = "nas"
\tread_clients = no
\tread_groups = yes
\tdelete_stale_sessions = yes
\tgroup_attribute = "SQL-Group"
\tpool {{
\t\tstart = 1
\t\tmin = 1
\t\tmax = 16
\t\tspare = 4
\t\tuses = 0
\t\tretry_delay = 1
\t\tlifetime = 0
\t\tidle_timeout = 60
\t}}
\t$INCLUDE ${{modconfdir}}/${{.:name}}/main/${{dialect}}/queries.conf
}}
"""


def _quoted(value: object) -> str:
    """A FreeRADIUS configuration string literal."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def sql_connection(db_url: str) -> tuple[str, str]:
    """(dialect, connection settings of the sql module) for a SQLAlchemy URL."""
    url = sa.engine.make_url(db_url)
    dialect = url.get_backend_name()
    if dialect == "sqlite":
        filename = _quoted(Path(url.database).resolve())
        return dialect, f"\tsqlite {{\n\t\tfilename = {filename}\n\t\tbusy_timeout = 5000\n\t}}"
    if dialect != "postgresql":
        raise ValueError(f"FreeRADIUS tests support postgresql and sqlite, not {dialect}")
    settings = {"server": url.host or "127.0.0.1", "port": url.port or 5432,
                "login": url.username or "", "password": url.password or "",
                "radius_db": url.database}
    return dialect, "\n".join(f"\t{key} = {_quoted(value)}" for key, value in settings.items())


def free_udp_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1, all held at once so they differ."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                   for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def require_installed(dialect: str) -> None:
    """Fail (not skip) with the install command when the Debian packages are missing."""
    missing = [path for path in (BINARY, POSTGRESQL_DRIVER if dialect == "postgresql" else None)
               if path and not os.path.exists(path)]
    if missing or not SYSTEM_CONFIG.is_dir():
        raise RuntimeError(f"FreeRADIUS is not installed ({', '.join(missing) or SYSTEM_CONFIG} "
                           f"missing): run `{INSTALL}` (scripts/test does it)")


class FreeRadiusServer:
    """A FreeRADIUS process on free loopback ports, authorizing and accounting into `db_url`.

    The tables must exist (`create_schema`) before `start()`. `debug=True` runs `-X`
    (single-threaded, every request logged); the log is in `log_path` either way and its tail is
    part of every failure message.
    """

    def __init__(self, db_url: str, secret: str = "testing123", debug: bool = False):
        self.db_url = db_url
        self.secret = secret
        self.debug = debug
        self.dialect, self._connection = sql_connection(db_url)
        self.auth_port = self.acct_port = 0
        self.directory: Path | None = None
        self._process: subprocess.Popen | None = None
        self._client: Client | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "log" / "radius.log"

    def __enter__(self) -> FreeRadiusServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        """Write the configuration, check it, run the server and wait until it answers."""
        require_installed(self.dialect)
        self.directory = Path(tempfile.mkdtemp(prefix="freeradius-"))
        try:
            self._run()
        except BaseException:
            self.stop()
            raise

    def _run(self) -> None:
        self.auth_port, self.acct_port = free_udp_ports(2)
        self._configure()
        self._check_config()
        flags = ["-X"] if self.debug else ["-f"]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [BINARY, *flags, "-d", str(self.directory)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TZ": "UTC"})
        self._client = Client(server="127.0.0.1", authport=self.auth_port,
                              acctport=self.acct_port, secret=self.secret.encode(),
                              dict=Dictionary(str(DICTIONARY)))
        self._client.timeout, self._client.retries = 2, 2
        self._wait_until_answering()

    def stop(self) -> None:
        """Stop the process and remove its directory."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _configure(self) -> None:
        """Copy the system configuration and replace what must differ for a test server."""
        directory = self.directory
        try:
            shutil.copytree(SYSTEM_CONFIG, directory, dirs_exist_ok=True, symlinks=True,
                            ignore=shutil.ignore_patterns("certs"))
        except (PermissionError, shutil.Error) as error:
            raise RuntimeError(f"cannot copy {SYSTEM_CONFIG} (owned by freerad, mode 0640): run "
                               f"the tests as root or in group freerad: {error}") from error
        for name in ("log", "run"):
            (directory / name).mkdir(exist_ok=True)
        for folder in ("mods-enabled", "sites-enabled"):
            shutil.rmtree(directory / folder)
            (directory / folder).mkdir()
        for module in MODULES:
            (directory / "mods-enabled" / module).symlink_to(f"../mods-available/{module}")
        (directory / "radiusd.conf").write_text(RADIUSD_CONF.format(dir=directory))
        (directory / "clients.conf").write_text(CLIENTS_CONF.format(secret=_quoted(self.secret)))
        (directory / "sites-enabled" / "headend").write_text(
            SITE.format(auth_port=self.auth_port, acct_port=self.acct_port))
        (directory / "mods-enabled" / "sql").write_text(
            SQL_MODULE.format(dialect=self.dialect, connection=self._connection))

    def _check_config(self) -> None:
        result = subprocess.run([BINARY, "-C", "-X", "-d", str(self.directory)],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            raise RuntimeError(f"freeradius -C rejected the test configuration:\n{tail}")

    def _wait_until_answering(self, timeout: float = 15) -> None:
        """Send Status-Server until the server answers; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._fail(f"freeradius exited with status {self._process.returncode}")
            try:
                self._send(self._client.CreateAuthPacket(code=packet.StatusServer), retries=1,
                           timeout=0.3)
                return
            except Timeout:
                continue
        self._fail(f"freeradius did not answer Status-Server within {timeout} s")

    def _fail(self, message: str) -> None:
        raise RuntimeError(f"{message}; log tail:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"

    def _send(self, request: packet.Packet, retries: int | None = None,
              timeout: float | None = None) -> packet.Packet:
        client = self._client
        saved = client.retries, client.timeout
        client.retries, client.timeout = retries or client.retries, timeout or client.timeout
        try:
            return client.SendPacket(request)
        finally:
            client.retries, client.timeout = saved

    def _request(self, request: packet.Packet) -> packet.Packet:
        """Send a request; a timeout fails with the server's log tail."""
        try:
            return self._send(request)
        except Timeout as timeout:
            raise AssertionError(
                f"FreeRADIUS did not answer; log tail:\n{self.log_tail()}") from timeout

    def authenticate(self, username: str, password: str) -> tuple[int, dict[str, list]]:
        """PAP Access-Request: (reply code, reply attributes as name -> list of values)."""
        request = self._client.CreateAuthPacket(User_Name=username, NAS_IP_Address="127.0.0.1")
        request["User-Password"] = request.PwCrypt(password)
        return _outcome(self._request(request))

    def account(self, username: str, status: str, session_id: str, input_octets: int,
                output_octets: int, input_gigawords: int = 0, output_gigawords: int = 0,
                session_time: int = 0, event_time: datetime | None = None,
                framed_ip: str | None = None, terminate_cause: str | None = None,
                nas_ip: str = "127.0.0.1") -> tuple[int, dict[str, list]]:
        """Accounting-Request (status Start, Interim-Update or Stop) as a NAS sends it.

        Pass the same `event_time` to replay a packet exactly: FreeRADIUS stores Event-Timestamp
        (else its own clock) as the row's times."""
        when = event_time or datetime.now(UTC)
        attributes = {
            "User-Name": username, "Acct-Status-Type": status, "Acct-Session-Id": session_id,
            "NAS-IP-Address": nas_ip, "NAS-Port-Type": "Ethernet", "Service-Type": "Framed-User",
            "Acct-Input-Octets": input_octets, "Acct-Output-Octets": output_octets,
            "Acct-Input-Gigawords": input_gigawords, "Acct-Output-Gigawords": output_gigawords,
            "Acct-Session-Time": session_time, "Event-Timestamp": int(when.timestamp()),
            "Framed-IP-Address": framed_ip, "Acct-Terminate-Cause": terminate_cause,
        }
        request = self._client.CreateAcctPacket()
        for name, value in attributes.items():
            if value is not None:
                request[name] = value
        return _outcome(self._request(request))


def _outcome(reply: packet.Packet) -> tuple[int, dict[str, list]]:
    return reply.code, {name: reply[name] for name in reply.keys() if name not in _ENVELOPE}


@contextlib.contextmanager
def radius_database_url(kind: str, directory: Path) -> Iterator[str]:
    """A fresh, empty RADIUS database: a SQLite file in `directory`, or a PostgreSQL database of
    its own on the test server (`headend_test_radius_<random>`, dropped at the end, so that runs
    in parallel do not share one)."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'radius.db'}"
        return
    name = f"headend_test_radius_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wipe_radius_tables(engine: sa.Engine) -> None:
    """Empty every FreeRADIUS table (between tests; the server keeps running)."""
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
