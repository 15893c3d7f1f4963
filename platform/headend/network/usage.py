"""Usage imported from the routers' accounting (RADIUS radacct), incrementally.

A driver reports each accounting session as its totals so far; what UsageSession says was
already counted of it is subtracted, and only the growth is added to UsageDaily, on the UTC day
of the record's change. A replayed record, or one read twice, adds nothing; a counter that went
down (a late Interim-Update overwriting a Stop on FreeRADIUS's SQLite queries) adds nothing and
lowers nothing. Traffic thus counts on the day an import sees it: an open session's growth
since the previous import lands on the day of its latest update, so the more often the import
runs, the closer each byte is to its day.

Accounting can arrive late: a NAS that lost its RADIUS server for a while sends its buffered
Interim-Updates and Stops afterwards, stamped with the time they describe. Each import therefore
reads again from LATE_ACCOUNTING before its watermark; what was counted already adds nothing.

Set-based: a batch of records is loaded into a temporary table (COPY on PostgreSQL), and two
statements do the rest inside the database - the growth of each session over what was counted
of it added to its service's day, then the counted amounts kept - and a commit. Two imports
at once take turns batch by batch (the tenant's UsageCursor row is locked before each batch is
read and counted), so nothing counts twice.

Data caps and usage billing sum UsageDaily per period (network.caps.period_totals) and apply
the package's rule on counting upload there; UsageDaily keeps both directions for the chart.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from headend.db import utcnow
from headend.network.jobs import request_reconcile
from headend.network.models import UsageCursor, UsageSession
from headend.network.reconcile import drivers
from headend.plugins.interfaces import RouterDriver, UsageRecord
from headend.subscribers.models import ServiceInstance
from headend.tenancy.context import current_scope

_NOTHING = (0, 0, 0)
FIRST_READ = 5000  # records
# How far before its watermark an import looks again, for accounting that arrived late.
LATE_ACCOUNTING = dt.timedelta(hours=2)
# What was counted of a session not updated for this long before the watermark is forgotten
# (once a day): it is not read again, and the table would otherwise keep every session ever seen.
PRUNE_AFTER = dt.timedelta(days=62)


@dataclass
class UsageImportResult:
    records: int = 0  # accounting records read (records at a watermark are read again)
    sessions: int = 0  # sessions whose counts grew
    days: int = 0  # service-days that got usage (one per batch they got it in)
    skipped: int = 0  # records of usernames no service has

    def describe(self) -> str:
        return (f"{self.records} records read, {self.sessions} sessions and {self.days} "
                f"service-days counted, {self.skipped} records of unknown usernames skipped")


def import_usage(session: Session, *, batch: int = 50000,
                 progress: Callable[[int], None] | None = None,
                 look_back: dt.timedelta = LATE_ACCOUNTING) -> UsageImportResult:
    """Count the acting tenant's new usage from every enabled router driver; commits after each
    batch, so an interrupted import keeps what it counted (and the next reads it again at no
    cost). `progress(n)` hears how many records were just read."""
    if current_scope().tenant_id is None:
        raise ValueError("a usage import acts for one tenant (acting_as)")
    result = UsageImportResult()
    services = dict(session.execute(sa.select(ServiceInstance.username, ServiceInstance.id)
                                    .where(ServiceInstance.username.is_not(None))).all())
    cursor = _locked_cursor(session)
    start, last_import = _aware(cursor.updated_after), cursor.imported_at
    if start is not None:
        start -= look_back
    marks = []
    for driver, settings in drivers(session).values():
        mark = _import_from(session, driver, settings, start, batch, services, result,
                            progress)
        if mark is not None:
            marks.append(mark)
    watermark = _move_cursor(session, min(marks) if marks else None)
    if watermark is not None and (last_import is None or last_import.date() < utcnow().date()):
        session.execute(sa.delete(UsageSession).where(
            UsageSession.tenant_id == current_scope().tenant_id,
            UsageSession.updated_at < watermark - PRUNE_AFTER))
    if result.sessions and _has_limits(session):
        # a data cap may have been passed: the network follows after the commit
        request_reconcile(session, current_scope().tenant_id)
    session.commit()
    return result


def _has_limits(session: Session) -> bool:
    """Whether any of the tenant's services can be throttled or cut by its usage (a data
    limit, a subscriber's own limit, usage billing that disconnects)."""
    from headend.catalog.models import InternetProfile

    tenant_id = current_scope().tenant_id
    return session.scalar(sa.select(sa.or_(
        sa.exists().where(InternetProfile.tenant_id == tenant_id, sa.or_(
            InternetProfile.data_limit_gb.is_not(None), sa.and_(
                InternetProfile.usage_billing_enabled.is_(True),
                InternetProfile.usage_disconnect_on_exceed.is_(True)))),
        sa.exists().where(ServiceInstance.tenant_id == tenant_id,
                          ServiceInstance.data_limit_gb_override.is_not(None))))) or False


def _import_from(session: Session, driver: RouterDriver, settings: dict,
                 after: dt.datetime | None, batch: int, services: dict[str, int],
                 result: UsageImportResult, progress: Callable[[int], None] | None
                 ) -> dt.datetime | None:
    """Read one driver's records batch by batch from `after`; the newest change time seen.

    The next batch is read (by a thread, from the RADIUS database) while this one is counted
    (in ours): both databases work at once. Reading needs no lock - counting compares with
    what is counted at that moment, under the cursor's lock, so a batch read early or by two
    imports still counts once.

    The first read is short (FIRST_READ), so that counting starts soon and reads overlap from
    the second batch on.

    Records changed at the same instant as the last of a full batch are read again from that
    instant; when a whole batch shares it (thousands of sessions closed at once by a NAS's
    Accounting-On), the next read asks for twice as many so that it gets past them."""
    limit, newest = min(batch, FIRST_READ), None
    with ThreadPoolExecutor(1, thread_name_prefix="usage-read") as reader:
        def read(since: dt.datetime | None, count: int) -> Future:
            """In the reader thread, with this one's context (app, acting tenant)."""
            return reader.submit(contextvars.copy_context().run, driver.read_usage, settings,
                                 since, count)

        pending = read(after, limit)
        while True:
            records = pending.result()
            full = len(records) >= limit
            if records:
                newest = records[-1].changed_at
            if full:
                limit = limit * 2 if newest == after else batch
                after = newest
                pending = read(after, limit)
            _locked_cursor(session)
            _count(session, records, services, result)
            session.commit()
            result.records += len(records)
            if progress is not None:
                progress(len(records))
            if not full:  # a NAS clock ahead must not move the watermark past what is to come
                return None if newest is None else min(newest,
                                                       utcnow().replace(tzinfo=dt.UTC))


def _count(session: Session, records: list[UsageRecord], services: dict[str, int],
           result: UsageImportResult) -> None:
    """Add the growth of each session over what was counted of it: the batch goes into a
    temporary table, and SQL computes and writes the rest inside the database."""
    batch, find = {}, services.get
    for unique_id, username, changed_at, down, up, seconds, *_ in records:
        service_id = find(username)
        if service_id is not None:  # one row per session: the last read of it wins
            batch[unique_id] = (unique_id, service_id, down, up, seconds, changed_at)
    result.skipped += len(records) - len(batch)
    if not batch:
        return
    params = {"tenant": current_scope().tenant_id}
    if _dialect(session) == "postgresql":
        _copy_batch(session, batch.values())
        sessions, days = session.execute(_COUNT_POSTGRESQL, params).one()
    else:
        _insert_batch(session, batch.values())
        days = session.execute(_ADD_DAYS_SQLITE, params).rowcount
        sessions = session.execute(_KEEP_COUNTED_SQLITE, params).rowcount
    result.sessions += sessions
    result.days += days


# The batch's sessions that grew beyond what was counted of them (`c`: the counted row, NULL
# the first time a session is seen), and by how much per component: a counter that went down
# adds nothing and lowers nothing.
_AMOUNTS = ("download_bytes", "upload_bytes", "session_seconds")
_GROWTH = [f"CASE WHEN b.{a} > COALESCE(c.{a}, 0) THEN b.{a} - COALESCE(c.{a}, 0) ELSE 0 END"
           for a in _AMOUNTS]
_GREW = " OR ".join(f"b.{a} > COALESCE(c.{a}, 0)" for a in _AMOUNTS)
_FROM = ("FROM usage_batch b LEFT JOIN usage_session c "
         "ON c.tenant_id = :tenant AND c.unique_id = b.unique_id")
_DAILY = "usage_daily (tenant_id, service_id, day, download_bytes, upload_bytes, session_seconds)"
_DAILY_ADDS = ("ON CONFLICT (tenant_id, service_id, day) DO UPDATE SET "
               + ", ".join(f"{a} = usage_daily.{a} + excluded.{a}" for a in _AMOUNTS))
_COUNTED = ("usage_session (tenant_id, unique_id, service_id, download_bytes, upload_bytes, "
            "session_seconds, updated_at)")
_COUNTED_KEEPS = ("ON CONFLICT (tenant_id, unique_id) DO UPDATE SET "
                  + ", ".join(f"{a} = CASE WHEN excluded.{a} > usage_session.{a} "
                              f"THEN excluded.{a} ELSE usage_session.{a} END" for a in _AMOUNTS)
                  + ", updated_at = excluded.updated_at")
# PostgreSQL: one statement - the join is made once, both upserts read its snapshot.
_COUNT_POSTGRESQL = sa.text(
    "WITH grown AS (SELECT b.unique_id, b.service_id, b.download_bytes, b.upload_bytes, "
    "b.session_seconds, b.changed_at AT TIME ZONE 'UTC' AS changed_at, "
    + ", ".join(f"{g} AS more_{a}" for g, a in zip(_GROWTH, _AMOUNTS, strict=True))
    + f" {_FROM} WHERE {_GREW}), "
    f"counted AS (INSERT INTO {_COUNTED} SELECT :tenant, unique_id, service_id, "
    f"download_bytes, upload_bytes, session_seconds, changed_at FROM grown {_COUNTED_KEEPS} "
    "RETURNING 1), "
    f"days AS (INSERT INTO {_DAILY} SELECT :tenant, service_id, changed_at::date, "
    + ", ".join(f"SUM(more_{a})" for a in _AMOUNTS)
    + f" FROM grown GROUP BY service_id, changed_at::date {_DAILY_ADDS} RETURNING 1) "
    "SELECT (SELECT count(*) FROM counted), (SELECT count(*) FROM days)")
# SQLite (no writing WITH): the days first, while `c` still holds what was counted before.
_ADD_DAYS_SQLITE = sa.text(
    f"INSERT INTO {_DAILY} SELECT :tenant, b.service_id, date(b.changed_at), "
    + ", ".join(f"SUM({g})" for g in _GROWTH)
    + f" {_FROM} WHERE {_GREW} GROUP BY b.service_id, date(b.changed_at) {_DAILY_ADDS}")
_KEEP_COUNTED_SQLITE = sa.text(
    f"INSERT INTO {_COUNTED} SELECT :tenant, b.unique_id, b.service_id, b.download_bytes, "
    f"b.upload_bytes, b.session_seconds, b.changed_at {_FROM} WHERE {_GREW} {_COUNTED_KEEPS}")
_BATCH_COLUMNS = "unique_id, service_id, download_bytes, upload_bytes, session_seconds, changed_at"


def _copy_batch(session: Session, rows) -> None:
    """PostgreSQL: the batch as this connection's temporary table usage_batch, sent with a
    binary COPY; its rows go at commit."""
    connection = session.connection()
    connection.exec_driver_sql(
        "CREATE TEMPORARY TABLE IF NOT EXISTS usage_batch (unique_id varchar(64), "
        "service_id int, download_bytes bigint, upload_bytes bigint, session_seconds bigint, "
        "changed_at timestamptz) ON COMMIT DELETE ROWS")
    with connection.connection.driver_connection.cursor() as cursor, cursor.copy(
            f"COPY usage_batch ({_BATCH_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(("varchar", "int4", "int8", "int8", "int8", "timestamptz"))
        for row in rows:
            copy.write_row(row)
    # without statistics the planner guesses a temporary table big and hash-joins the whole
    # of usage_session to it; measured, a batch joins by the primary key instead
    connection.exec_driver_sql("ANALYZE usage_batch")


def _insert_batch(session: Session, rows) -> None:
    """SQLite: the batch as the temporary table usage_batch (emptied first), times as SQLite
    keeps them - naive UTC text."""
    connection = session.connection()
    connection.exec_driver_sql(
        "CREATE TEMPORARY TABLE IF NOT EXISTS usage_batch (unique_id TEXT, service_id INTEGER, "
        "download_bytes INTEGER, upload_bytes INTEGER, session_seconds INTEGER, "
        "changed_at DATETIME)")
    connection.exec_driver_sql("DELETE FROM usage_batch")
    connection.exec_driver_sql(
        f"INSERT INTO usage_batch ({_BATCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        [(*row[:5], row[5].astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
         for row in rows])


def _insert(session: Session):
    """The dialect's INSERT, which has ON CONFLICT DO UPDATE (PostgreSQL and SQLite)."""
    return postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _locked_cursor(session: Session) -> UsageCursor:
    """The tenant's cursor row (created when missing), locked until the next commit. The
    INSERT comes first: on SQLite, which has no FOR UPDATE, it takes the database's write lock
    before anything is read; on PostgreSQL the FOR UPDATE waits for an import holding the row."""
    session.execute(_insert(session)(UsageCursor.__table__).on_conflict_do_nothing(
        index_elements=["tenant_id"]), {"tenant_id": current_scope().tenant_id})
    return session.scalar(sa.select(UsageCursor).with_for_update()
                          .execution_options(populate_existing=True))


def _move_cursor(session: Session, newest: dt.datetime | None) -> dt.datetime | None:
    """Forward only: an import running alongside may have gone further. The watermark now."""
    cursor = _locked_cursor(session)
    if newest is not None:
        newest = newest.replace(tzinfo=None)  # UTC, as drivers report
        if cursor.updated_after is None or newest > cursor.updated_after:
            cursor.updated_after = newest
    cursor.imported_at = utcnow()
    return cursor.updated_after


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """Stored times are naive UTC; drivers are given aware ones."""
    return value.replace(tzinfo=dt.UTC) if value is not None else None
