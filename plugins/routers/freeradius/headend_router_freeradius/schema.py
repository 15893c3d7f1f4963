"""FreeRADIUS's SQL tables (rlm_sql), as SQLAlchemy Core tables for PostgreSQL and SQLite.

Headend provisions subscribers by writing radcheck/radreply/radusergroup and reads usage back
from radacct, while FreeRADIUS reads and writes the same rows with its stock queries
(`mods-config/sql/main/<dialect>/queries.conf`). So the columns, types and indexes are the ones
those queries rely on: on PostgreSQL they cast addresses to `inet`, insert with
`ON CONFLICT (acctuniqueid)` (which needs the unique constraint) and write `timestamptz`; on
SQLite they write times as Unix epoch integers and absent addresses as ''. Two column types hide
that difference, so callers see aware UTC datetimes and None on both.

The tables live in the RADIUS database, which is FreeRADIUS's and not Headend's, and their shape
is fixed by FreeRADIUS, not by Headend's migrations: `create_schema` creates whatever is missing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()


class RadiusTime(sa.types.TypeDecorator):
    """A point in time: timestamptz on PostgreSQL, epoch seconds on SQLite (FreeRADIUS's SQLite
    queries write `%l`-style integers; radpostauth gets 'YYYY-MM-DD HH:MM:SS.uuuuuu' UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Integer())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value, dialect):
        if value is None or dialect.name != "sqlite":
            return value
        return int(value.timestamp())

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class RadiusAddress(sa.types.TypeDecorator):
    """An IP address or prefix as text: inet on PostgreSQL (its queries cast with ::inet), text on
    SQLite, where FreeRADIUS writes '' for an absent address; read back as str or None on both."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.INET())
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value, dialect):
        return str(value) if value not in (None, "") else None

    def process_result_value(self, value, dialect):
        return str(value) if value not in (None, "") else None


# SQLite only auto-numbers an INTEGER PRIMARY KEY; BIGINT is bigserial on PostgreSQL.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_OPEN = sa.text("acctstoptime IS NULL")


def _attribute_table(name: str, owner: str, default_op: str) -> sa.Table:
    """radcheck/radreply (owner username) and radgroupcheck/radgroupreply (owner groupname):
    rows of `attribute op value` that FreeRADIUS reads ORDER BY id."""
    return sa.Table(
        name, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(owner, sa.Text, nullable=False, server_default=""),
        sa.Column("attribute", sa.Text, nullable=False, server_default=""),
        sa.Column("op", sa.String(2), nullable=False, server_default=default_op),
        sa.Column("value", sa.Text, nullable=False, server_default=""),
        sa.Index(f"{name}_{owner}", owner, "attribute"),
        sqlite_autoincrement=True,
    )


radcheck = _attribute_table("radcheck", "username", "==")
radreply = _attribute_table("radreply", "username", "=")
radgroupcheck = _attribute_table("radgroupcheck", "groupname", "==")
radgroupreply = _attribute_table("radgroupreply", "groupname", "=")

radusergroup = sa.Table(
    "radusergroup", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.Text, nullable=False, server_default=""),
    sa.Column("groupname", sa.Text, nullable=False, server_default=""),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Index("radusergroup_username", "username"),
    sqlite_autoincrement=True,
)

radacct = sa.Table(
    "radacct", metadata,
    sa.Column("radacctid", _BIG_ID, primary_key=True),
    sa.Column("acctsessionid", sa.Text, nullable=False),
    # ON CONFLICT (acctuniqueid) in the PostgreSQL queries needs exactly this constraint.
    sa.Column("acctuniqueid", sa.Text, nullable=False, unique=True),
    sa.Column("username", sa.Text),
    sa.Column("realm", sa.Text),
    sa.Column("nasipaddress", RadiusAddress, nullable=False),
    sa.Column("nasportid", sa.Text),
    sa.Column("nasporttype", sa.Text),
    sa.Column("acctstarttime", RadiusTime),
    sa.Column("acctupdatetime", RadiusTime),
    sa.Column("acctstoptime", RadiusTime),
    sa.Column("acctinterval", sa.BigInteger),
    sa.Column("acctsessiontime", sa.BigInteger),
    sa.Column("acctauthentic", sa.Text),
    sa.Column("connectinfo_start", sa.Text),
    sa.Column("connectinfo_stop", sa.Text),
    # Octets including gigawords (gigawords << 32): more than 4 GiB per session.
    sa.Column("acctinputoctets", sa.BigInteger),
    sa.Column("acctoutputoctets", sa.BigInteger),
    sa.Column("calledstationid", sa.Text),
    sa.Column("callingstationid", sa.Text),
    sa.Column("acctterminatecause", sa.Text),
    sa.Column("servicetype", sa.Text),
    sa.Column("framedprotocol", sa.Text),
    sa.Column("framedipaddress", RadiusAddress),
    sa.Column("framedipv6address", RadiusAddress),
    sa.Column("framedipv6prefix", RadiusAddress),
    sa.Column("framedinterfaceid", sa.Text),
    sa.Column("delegatedipv6prefix", RadiusAddress),
    sa.Column("class", sa.Text),
    # Interim/Stop update the open row of a session.
    sa.Index("radacct_active_session_idx", "acctuniqueid",
             postgresql_where=_OPEN, sqlite_where=_OPEN),
    # A subscriber's open sessions: simultaneous-use checks, and whom to send CoA/Disconnect.
    sa.Index("radacct_active_user_idx", "username",
             postgresql_where=_OPEN, sqlite_where=_OPEN),
    # Accounting-On/Off closes every open session of a NAS.
    sa.Index("radacct_bulk_close", "nasipaddress", "acctstarttime",
             postgresql_where=_OPEN, sqlite_where=_OPEN),
    # Usage per subscriber over a period.
    sa.Index("radacct_start_user_idx", "acctstarttime", "username"),
    sa.Index("radacct_class_idx", "class"),
    sqlite_autoincrement=True,
)

radpostauth = sa.Table(
    "radpostauth", metadata,
    sa.Column("id", _BIG_ID, primary_key=True),
    sa.Column("username", sa.Text, nullable=False),
    sa.Column("pass", sa.Text),
    sa.Column("reply", sa.Text),
    sa.Column("calledstationid", sa.Text),
    sa.Column("callingstationid", sa.Text),
    sa.Column("authdate", RadiusTime, nullable=False, server_default=sa.func.now()),
    sa.Column("class", sa.Text),
    sa.Index("radpostauth_username_idx", "username"),
    sa.Index("radpostauth_class_idx", "class"),
    sqlite_autoincrement=True,
)

nas = sa.Table(
    "nas", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("nasname", sa.Text, nullable=False),
    sa.Column("shortname", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False, server_default="other"),
    sa.Column("ports", sa.Integer),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("server", sa.Text),
    sa.Column("community", sa.Text),
    sa.Column("description", sa.Text),
    sa.Index("nas_nasname", "nasname"),
    sqlite_autoincrement=True,
)

# Read by the default simultaneous-use queries and written on Accounting-On: sessions that
# started before a NAS's last reboot are not counted as open.
nasreload = sa.Table(
    "nasreload", metadata,
    sa.Column("nasipaddress", RadiusAddress, primary_key=True),
    sa.Column("reloadtime", RadiusTime, nullable=False),
)


def create_schema(engine: sa.Engine) -> None:
    """Create the FreeRADIUS tables and indexes that are missing in the RADIUS database."""
    metadata.create_all(engine, checkfirst=True)
