"""Usage import end to end: accounting sent to a real FreeRADIUS as a NAS sends it, read back
from radacct by the FreeRADIUS driver and counted into daily usage - gigawords, interim deltas,
replays, unknown usernames, sessions crossing midnight, a NAS closing every session at once,
period totals for caps and billing, the CLI, the scheduled job, and two imports at once
(PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from headend.cli import main
from headend.db import db
from headend.network.caps import counted_bytes, period_totals
from headend.network.jobs import enqueue_usage_imports
from headend.network.models import UsageCursor, UsageDaily, UsageSession
from headend.network.usage import import_usage
from headend.tenancy.context import acting_as
from headend_router_freeradius.driver import engine_for
from headend_router_freeradius.schema import radacct
from headend_router_freeradius.usage import INDEX, read_usage
from pyrad import packet

from tests import network_helpers as peers
from tests.network_helpers import activated, enable_network, internet_package

# fixtures
freeradius, radius, radius_engine = peers.freeradius, peers.radius, peers.radius_engine

GIB = 2**30
DAY = dt.date(2026, 3, 9)
EVENING = dt.datetime(2026, 3, 9, 18, 0, tzinfo=dt.UTC)
MIDNIGHT = dt.datetime(2026, 3, 10, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def net(books, radius):
    """A tenant with the FreeRADIUS driver on and the Internet package."""
    s = books
    enable_network(s, radius)
    s.info["package"] = internet_package(s)
    s.commit()
    return s


def _send(server, username, session_id, steps):
    """Accounting-Requests of one session: (status, at, download, upload, seconds) each, with
    the octets split into gigawords and the rest as the NAS counts them (32-bit counters)."""
    for status, at, down, up, seconds in steps:
        code, _ = server.account(
            username, status, session_id, input_octets=up % 2**32, input_gigawords=up >> 32,
            output_octets=down % 2**32, output_gigawords=down >> 32, session_time=seconds,
            event_time=at)
        assert code == packet.AccountingResponse


def _daily(s):
    """{(service id, day): (download, upload, seconds)}."""
    return {(r.service_id, r.day): (r.download_bytes, r.upload_bytes, r.session_seconds)
            for r in s.scalars(sa.select(UsageDaily))}


def _counted(s):
    return {r.unique_id: (r.download_bytes, r.upload_bytes, r.session_seconds)
            for r in s.scalars(sa.select(UsageSession))}


def _at(minutes: int) -> dt.datetime:
    return EVENING + dt.timedelta(minutes=minutes)


def test_the_driver_reads_radacct_in_change_order_from_a_watermark(freeradius, radius):
    _send(freeradius, "alice", "a1", [("Start", _at(0), 0, 0, 0),
                                      ("Interim-Update", _at(10), 5 * GIB, GIB, 600)])
    _send(freeradius, "bob", "b1", [("Start", _at(5), 0, 0, 0)])
    _send(freeradius, "carol", "c1", [("Start", _at(1), 0, 0, 0),
                                      ("Stop", _at(20), 7, 3, 1140)])
    engine = engine_for(radius.url.render_as_string(hide_password=False))

    records = read_usage(engine, None, 10)

    assert [(r.username, r.changed_at) for r in records] == [
        ("bob", _at(5)), ("alice", _at(10)), ("carol", _at(20))]
    alice = records[1]
    assert (alice.download_bytes, alice.upload_bytes, alice.session_seconds) == (
        5 * GIB, GIB, 600)  # gigawords folded in; download is what the NAS sent
    assert alice.changed_at.utcoffset() == dt.timedelta(0)
    assert [r.username for r in read_usage(engine, _at(10), 10)] == ["alice", "carol"]
    assert [r.username for r in read_usage(engine, _at(10).replace(tzinfo=None), 1)] == [
        "alice"]  # a naive watermark is UTC; the limit holds
    catalog = ("SELECT name FROM sqlite_master WHERE type = 'index'" if radius.dialect.name
               == "sqlite" else "SELECT indexname FROM pg_indexes WHERE tablename = 'radacct'")
    with radius.connect() as conn:  # made on first use (SQLAlchemy skips expression indexes)
        assert INDEX in set(conn.exec_driver_sql(catalog).scalars())


def test_a_session_counts_its_growth_once_with_gigawords_and_replays_change_nothing(
        net, freeradius):
    s = net
    _, service = activated(s, s.info["package"], username="alice")
    s.commit()
    start, first, second, stop = [
        ("Start", _at(0), 0, 0, 0),
        ("Interim-Update", _at(10), 3 * GIB, GIB // 2, 600),
        ("Interim-Update", _at(20), 4 * GIB + 100, GIB, 1200),
        ("Stop", _at(30), 5 * GIB, 2 * GIB, 1800)]
    _send(freeradius, "alice", "81a00001", [start, first])

    result = import_usage(s)

    assert (result.records, result.sessions, result.days, result.skipped) == (1, 1, 1, 0)
    assert _daily(s) == {(service.id, DAY): (3 * GIB, GIB // 2, 600)}
    _send(freeradius, "alice", "81a00001", [second])
    import_usage(s)
    assert _daily(s) == {(service.id, DAY): (4 * GIB + 100, GIB, 1200)}  # only the growth
    _send(freeradius, "alice", "81a00001", [stop])
    import_usage(s)
    done = {(service.id, DAY): (5 * GIB, 2 * GIB, 1800)}
    assert _daily(s) == done
    assert list(_counted(s).values()) == [(5 * GIB, 2 * GIB, 1800)]

    # The NAS sends everything again. FreeRADIUS's SQLite queries let the late interims
    # overwrite the stopped row with lower counters: that counts nothing and lowers nothing.
    _send(freeradius, "alice", "81a00001", [start, first])
    assert import_usage(s).sessions == 0
    _send(freeradius, "alice", "81a00001", [second, stop])
    again = import_usage(s)
    assert (again.sessions, again.days) == (0, 0)
    assert _daily(s) == done
    assert list(_counted(s).values()) == [(5 * GIB, 2 * GIB, 1800)]
    assert import_usage(s).records == 1  # the record at the watermark, read again: harmless
    assert s.scalar(sa.select(UsageCursor.updated_after)) == _at(30).replace(tzinfo=None)


def test_sessions_of_a_day_add_up_and_unknown_usernames_are_skipped(net, freeradius):
    s = net
    _, alice = activated(s, s.info["package"], username="alice")
    _, bob = activated(s, s.info["package"], username="bob")
    s.commit()
    _send(freeradius, "alice", "a1", [("Start", _at(0), 0, 0, 0),
                                      ("Stop", _at(30), GIB, 10, 1800)])
    _send(freeradius, "alice", "a2", [("Start", _at(40), 0, 0, 0),
                                      ("Stop", _at(60), 2 * GIB, 20, 1200)])
    _send(freeradius, "bob", "b1", [("Start", _at(5), 0, 0, 0),
                                    ("Interim-Update", _at(15), 300, 30, 600)])
    _send(freeradius, "mallory", "m1", [("Start", _at(5), 0, 0, 0),
                                        ("Stop", _at(6), 9 * GIB, GIB, 60)])

    result = import_usage(s, batch=2)

    # four sessions, the last of each of the three full batches read again by the next
    assert (result.records, result.sessions, result.skipped) == (4 + 3, 3, 1)
    assert _daily(s) == {(alice.id, DAY): (3 * GIB, 30, 3000), (bob.id, DAY): (300, 30, 600)}
    assert len(_counted(s)) == 3  # nothing kept of mallory's session


def test_a_session_across_midnight_counts_each_delta_on_its_day(net, freeradius):
    s = net
    _, service = activated(s, s.info["package"], username="alice")
    s.commit()
    late = MIDNIGHT - dt.timedelta(minutes=10)
    _send(freeradius, "alice", "n1", [("Start", late, 0, 0, 0),
                                      ("Interim-Update", late + dt.timedelta(minutes=9), GIB,
                                       100, 540)])
    import_usage(s)
    _send(freeradius, "alice", "n1", [("Interim-Update", MIDNIGHT + dt.timedelta(minutes=10),
                                       3 * GIB, 300, 1200)])
    import_usage(s)
    _send(freeradius, "alice", "n1", [("Stop", MIDNIGHT + dt.timedelta(minutes=20), 4 * GIB,
                                       400, 1800)])
    import_usage(s)

    assert _daily(s) == {(service.id, DAY): (GIB, 100, 540),
                         (service.id, DAY + dt.timedelta(days=1)): (3 * GIB, 300, 1260)}
    assert period_totals(s, [service.id], DAY, DAY + dt.timedelta(days=1)) == {
        service.id: (4 * GIB, 400, 1800)}


def test_accounting_that_arrives_late_is_counted_once_within_the_look_back(net, freeradius):
    s = net
    _, alice = activated(s, s.info["package"], username="alice")
    _, bob = activated(s, s.info["package"], username="bob")
    s.commit()
    _send(freeradius, "alice", "l1", [("Start", _at(0), 0, 0, 0),
                                      ("Stop", _at(90), GIB, 10, 5400)])
    import_usage(s)  # the watermark is now at 19:30
    # bob's NAS lost its RADIUS server and sends its buffered accounting, stamped earlier
    _send(freeradius, "bob", "l2", [("Start", _at(10), 0, 0, 0),
                                    ("Stop", _at(40), 2 * GIB, 20, 1800)])
    # and one from before the look-back: too late to count
    _send(freeradius, "bob", "l3", [("Start", _at(-200), 0, 0, 0),
                                    ("Stop", _at(-190), 7 * GIB, 70, 600)])

    assert import_usage(s).sessions == 1
    assert import_usage(s).sessions == 0  # read again, counted once

    assert _daily(s) == {(alice.id, DAY): (GIB, 10, 5400), (bob.id, DAY): (2 * GIB, 20, 1800)}


def test_a_nas_clock_ahead_does_not_move_the_watermark_into_the_future(net, freeradius):
    from headend.db import utcnow

    s = net
    activated(s, s.info["package"], username="alice")
    s.commit()
    ahead = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    _send(freeradius, "alice", "f1", [("Start", ahead, 0, 0, 0), ("Stop", ahead, GIB, 1, 60)])

    assert import_usage(s).sessions == 1
    assert s.scalar(sa.select(UsageCursor.updated_after)) <= utcnow()


def test_sessions_long_finished_are_forgotten_once_a_day(net, freeradius):
    from headend.network.usage import PRUNE_AFTER

    s = net
    _, alice = activated(s, s.info["package"], username="alice")
    s.commit()
    old = (EVENING - PRUNE_AFTER - dt.timedelta(hours=1)).replace(tzinfo=None)
    s.add(UsageSession(unique_id="ancient", service_id=alice.id, download_bytes=1,
                       upload_bytes=1, session_seconds=1, updated_at=old))
    s.commit()
    _send(freeradius, "alice", "p1", [("Start", _at(0), 0, 0, 0),
                                      ("Stop", _at(30), GIB, 10, 1800)])

    import_usage(s)

    counted = _counted(s)
    assert "ancient" not in counted and list(counted.values()) == [(GIB, 10, 1800)]
    assert _daily(s) == {(alice.id, DAY): (GIB, 10, 1800)}


def test_a_nas_closing_more_sessions_at_once_than_a_batch_holds(net, freeradius):
    """Accounting-On closes every open session of the NAS at one instant: reading from that
    instant again would return the same full batch forever."""
    s = net
    services = [activated(s, s.info["package"], username=f"user{n}")[1] for n in range(5)]
    s.commit()
    for n, service in enumerate(services):
        _send(freeradius, service.username, f"s{n}", [("Start", _at(n), 0, 0, 0)])
    reboot = _at(60)
    assert freeradius.account("user0", "Accounting-On", "boot", 0, 0,
                              event_time=reboot)[0] == packet.AccountingResponse

    result = import_usage(s, batch=2)

    assert result.sessions == 5
    assert _daily(s) == {(service.id, DAY): (0, 0, 3600 - 60 * n)
                         for n, service in enumerate(services)}
    assert s.scalar(sa.select(UsageCursor.updated_after)) == reboot.replace(tzinfo=None)


def test_period_totals_and_the_package_rule_on_upload(net):
    s = net
    _, counted = activated(s, s.info["package"], username="alice")
    download_only = internet_package(s, count_upload_in_usage=False)
    _, uncounted = activated(s, download_only, username="bob")
    _, idle = activated(s, s.info["package"], username="carol")
    for service, day, down, up in [(counted, DAY, 100, 10), (counted, DAY.replace(day=31), 1, 1),
                                   (counted, DAY.replace(day=1), 200, 20),
                                   (uncounted, DAY, 300, 30),
                                   (counted, DAY.replace(month=4, day=1), 999, 999)]:
        s.add(UsageDaily(service_id=service.id, day=day, download_bytes=down, upload_bytes=up))
    s.commit()

    totals = period_totals(s, [counted.id, uncounted.id, idle.id], DAY.replace(day=1),
                           DAY.replace(day=31))

    assert totals == {counted.id: (301, 31, 0), uncounted.id: (300, 30, 0)}
    assert counted_bytes(counted.subscription.package.internet_profile, 301, 31) == 332
    assert counted_bytes(download_only.internet_profile, 300, 30) == 300


def test_cli_imports_every_tenant_or_the_one_named(app, net, freeradius):
    s = net
    _, service = activated(s, s.info["package"], username="alice")
    slug = s.scalar(sa.text("SELECT slug FROM tenant WHERE id = :t"), {"t": s.info["tenant"]})
    s.commit()
    _send(freeradius, "alice", "c1", [("Start", _at(0), 0, 0, 0),
                                      ("Stop", _at(30), 5 * GIB, GIB, 1800)])
    env = {"HEADEND_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "HEADEND_SECRET_KEY": app.config["SECRET_KEY"]}  # the sealed database URL
    runner = CliRunner()

    done = runner.invoke(main, ["network", "import-usage", "--tenant", slug], env=env,
                         catch_exceptions=False)

    assert done.exit_code == 0, done.output
    assert f"{slug} 1 records read, 1 sessions and 1 service-days counted" in done.output
    again = runner.invoke(main, ["network", "import-usage"], env=env, catch_exceptions=False)
    assert again.exit_code == 0 and f"{slug} 1 records read, 0 sessions" in again.output
    unknown = runner.invoke(main, ["network", "import-usage", "--tenant", "nope"], env=env)
    assert unknown.exit_code == 1 and "no active tenant" in unknown.output
    s.rollback()
    assert _daily(s) == {(service.id, DAY): (5 * GIB, GIB, 1800)}


def test_the_scheduled_job_imports_every_tenant(app, net, freeradius):
    s = net
    activated(s, s.info["package"], username="alice")
    s.commit()
    _send(freeradius, "alice", "j1", [("Start", _at(0), 0, 0, 0),
                                      ("Interim-Update", _at(5), GIB, 1, 300)])
    job_id = f"usage-import:{s.info['tenant']}:2026030918"

    with app.app_context():  # no Redis: the job runs inline
        (job,) = [j for j in enqueue_usage_imports(app, stamp="2026030918") if j.job_id == job_id]

    assert job.result.startswith("1 records read, 1 sessions and 1 service-days counted")
    assert s.scalar(sa.select(UsageDaily.download_bytes)) == GIB


@pytest.mark.postgresql_only
def test_two_imports_at_once_count_every_session_once(app, net, radius):
    s = net
    tenant = s.info["tenant"]
    services = [activated(s, s.info["package"], username=f"user{n}")[1] for n in range(50)]
    s.commit()
    rows = [dict(acctsessionid=f"s{n}", acctuniqueid=f"u{n}", username=f"user{n % 50}",
                 nasipaddress="127.0.0.1", acctstarttime=_at(0), acctupdatetime=_at(n % 90),
                 acctinputoctets=n, acctoutputoctets=1000 + n, acctsessiontime=60)
            for n in range(2000)]
    with radius.begin() as conn:
        conn.execute(radacct.insert(), rows)
    barrier, errors = threading.Barrier(2), []

    def run():
        try:
            with app.app_context(), acting_as(tenant):
                barrier.wait()
                import_usage(db.session, batch=100)
                db.session.remove()
        except Exception as exc:  # reported below, a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "an import is stuck"
    assert errors == []
    totals = s.execute(sa.select(sa.func.sum(UsageDaily.download_bytes),
                                 sa.func.sum(UsageDaily.upload_bytes))).one()
    assert tuple(map(int, totals)) == (sum(1000 + n for n in range(2000)), sum(range(2000)))
    assert len(_counted(s)) == 2000 and len(_daily(s)) == len(services)
