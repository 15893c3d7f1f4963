"""Usage read back from radacct, for the core's incremental usage import.

A radacct row is one accounting session as FreeRADIUS last wrote it: totals so far, octets with
gigawords already folded in (`gigawords << 32 | octets`, 64-bit). Download is what the NAS sent
to the subscriber (acctoutputoctets), upload what it received (acctinputoctets).

radacct has no "written at" column, so a row's change time is the latest of its start, update
and stop times (a Start writes the first, an Interim-Update the second, a Stop the third; the
SQLite queries leave acctupdatetime alone on Stop). Rows are read in that order, at or after
the caller's watermark, through an index on exactly that expression (created on first use:
without it every read would scan and sort the whole, ever-growing table).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from itertools import starmap

import sqlalchemy as sa
from headend.plugins.interfaces import UsageRecord

from headend_router_freeradius.schema import RadiusTime, radacct

log = logging.getLogger(__name__)

INDEX = "radacct_changed_idx"
_u, _s, _t = radacct.c.acctupdatetime, radacct.c.acctstoptime, radacct.c.acctstarttime
# The index statements spell the same expressions `_changed_at` builds, so the planner uses them.
_INDEX_DDL = {
    "postgresql": f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON radacct "
                  "(GREATEST(acctupdatetime, acctstoptime, acctstarttime), radacctid)",
    "sqlite": f"CREATE INDEX IF NOT EXISTS {INDEX} ON radacct ("
              "max(coalesce(acctupdatetime, acctstoptime, acctstarttime), "
              "coalesce(acctstoptime, acctstarttime, acctupdatetime), "
              "coalesce(acctstarttime, acctupdatetime, acctstoptime)), radacctid)",
}
_indexed: set[str] = set()
_indexed_lock = threading.Lock()


def _changed_at(dialect: str) -> sa.ColumnElement:
    """The latest of the row's three times, NULLs ignored: GREATEST does that on PostgreSQL;
    SQLite's max() returns NULL when any argument is, so each argument is coalesced first.
    Read as stored (timestamptz / epoch seconds): converting here is cheaper than RadiusTime."""
    if dialect == "postgresql":
        return sa.type_coerce(sa.func.greatest(_u, _s, _t), sa.DateTime(timezone=True))
    return sa.type_coerce(
        sa.func.max(sa.func.coalesce(_u, _s, _t), sa.func.coalesce(_s, _t, _u),
                    sa.func.coalesce(_t, _u, _s)), sa.Integer())


def ensure_index(engine: sa.Engine) -> None:
    """Create the change-time index once per database and process. On PostgreSQL it is built
    CONCURRENTLY: FreeRADIUS keeps writing accounting meanwhile. A database user that may not
    create it gets a warning, and reads go on without it (correct, slower); any other failure
    (the database is down) is raised, and the next read tries again."""
    key = engine.url.render_as_string(hide_password=False)
    with _indexed_lock:
        if key in _indexed:
            return
        ddl = _INDEX_DDL.get(engine.dialect.name)
        if ddl is not None:
            try:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql(ddl)
            except sa.exc.ProgrammingError as error:
                log.warning("radacct index %s not created, usage reads scan radacct: %s",
                            INDEX, error)
        _indexed.add(key)


def _utc(value: datetime) -> datetime:
    """Aware UTC: a naive watermark is UTC (RadiusTime would read it as local time)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_usage(engine: sa.Engine, changed_after: datetime | None,
               limit: int) -> list[UsageRecord]:
    """Up to `limit` sessions changed at or after `changed_after` (all when None), oldest change
    first (then radacctid, so equal times come in a stable order). Start and stop times are not
    read: the import needs neither."""
    ensure_index(engine)
    dialect = engine.dialect.name
    changed = _changed_at(dialect)
    zero = sa.literal(0)
    stmt = (sa.select(radacct.c.acctuniqueid, sa.func.coalesce(radacct.c.username, ""), changed,
                      sa.func.coalesce(radacct.c.acctoutputoctets, zero),
                      sa.func.coalesce(radacct.c.acctinputoctets, zero),
                      sa.func.coalesce(radacct.c.acctsessiontime, zero))
            .where(changed.is_not(None))
            .order_by(changed, radacct.c.radacctid).limit(limit))
    if changed_after is not None:
        stmt = stmt.where(changed >= sa.bindparam("after", _utc(changed_after), RadiusTime()))
    with engine.begin() as conn:
        if dialect == "postgresql":  # times come back in UTC, nothing to convert per row
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        rows = conn.execute(stmt).all()
    if dialect == "sqlite":  # epoch seconds
        return [UsageRecord(uid, user, datetime.fromtimestamp(at, UTC), *rest)
                for uid, user, at, *rest in rows]
    return list(starmap(UsageRecord, rows))
