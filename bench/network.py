"""Network provisioning and usage import over 10k Internet subscribers on PostgreSQL.

    .venv/bin/python bench/network.py [--subscribers 10000] [--change 0.01] [--rounds 3]
                                      [--radacct 200000] [--profile] [--keep]

Creates (and at the end drops) the databases `headend_bench_network` (Headend) and
`headend_bench_network_radius` (FreeRADIUS's tables, from headend_router_freeradius.schema) on
127.0.0.1:5432, and starts the RouterOS fake (tests/peers/routeros.py) in a child process, so
that the router's work does not share this process's interpreter lock. Seeds one tenant with the
demo catalog (its Internet profiles given a burst and subscriber speed overrides), both router
plugins on, one MikroTik router, and N active subscribers, each with an Internet package whose
Internet service is activated by one bulk UPDATE: even subscribers on the router (queue + PPP
secret), odd ones RADIUS-only (radcheck + radreply), one in five with a static address. Then
times `headend.network.reconcile.reconcile` (what the network job runs, committed):
- the first reconcile (every entry written);
- `--rounds` reconciles with nothing to do (target: median <= 2 s), and where that time goes;
- `--rounds` rounds of `--change` of the subscribers changed, in four equal parts: suspended,
  speed changed (a subscriber speed override, as a plan change gives), deactivated, and new
  activations of waiting services, each reconciled (target: median <= 3 s) and then reconciled
  again, which must find nothing to do and write nothing on the router.
Then usage: `--radacct` accounting rows written straight into radacct with COPY (sessions over
the last days; 1 % of unknown usernames), imported by `headend.network.usage.import_usage`,
then an interim update of every open session (more octets, in the next hour) imported again
(target >= 50,000 records/s), and the counted bytes checked against radacct's.

`--profile` runs the first timed step of each kind under cProfile (its time then includes the
profiler's overhead) and prints the top of each profile.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import multiprocessing as mp
import pstats
import random
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import click
import psycopg
import sqlalchemy as sa
from headend.app import create_app
from headend.catalog.models import InternetProfile, Package, PackageServiceLine, Service
from headend.db import db
from headend.demo import _catalog
from headend.migrate import upgrade
from headend.network.desired import service_states
from headend.network.models import Router, UsageDaily, UsageSession
from headend.network.reconcile import diff, reconcile, router_mapping, targets
from headend.network.services import save_router
from headend.plugins.services import configure_plugin
from headend.sequences import TenantSequence
from headend.subscribers.models import ServiceInstance, Subscriber, Subscription
from headend.tenancy.context import acting_as
from headend.tenancy.services import create_tenant
from headend.testing import app_settings
from headend_router_freeradius.schema import create_schema, radacct
from seeding import SERVER, admin, insert_batches

NAME, RADIUS = "headend_bench_network", "headend_bench_network_radius"
URL, RADIUS_URL = f"{SERVER}/{NAME}", f"{SERVER}/{RADIUS}"
START = dt.date(2026, 3, 1)
NOW = dt.datetime(2026, 3, 20, 12, 0, tzinfo=dt.UTC)
REPO = Path(__file__).resolve().parent.parent


# --- the router, in a child process ----------------------------------------------------------

def _router_process(conn) -> None:
    """Serve the RouterOS fake; answer the parent's questions until it says stop."""
    sys.path.insert(0, str(REPO))
    from tests.peers.routeros import RouterOSServer

    with RouterOSServer() as server:
        conn.send(server.port)
        while (question := conn.recv()) != "stop":
            if question == "writes":
                conn.send(len(server.writes))
            else:
                conn.send(len(server.rows(question)))


class RouterChild:
    """The RouterOS fake in a spawned process, and a pipe to ask it things."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_router_process, args=(child,), daemon=True)
        self.process.start()
        self.port = self.conn.recv()

    def ask(self, question: str) -> int:
        self.conn.send(question)
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send("stop")
        self.process.join(10)


# --- seeding ---------------------------------------------------------------------------------

def seed(app, count: int, waiting: int, router_port: int) -> int:
    """One tenant: the demo catalog with bursts, both plugins, the router, `count` active
    subscribers with activated Internet services and `waiting` more whose service waits."""
    with app.app_context(), acting_as(None):
        tenant_id = create_tenant(db.session, "Bench Network ISP", "bench").id
        db.session.commit()
    with app.app_context(), acting_as(tenant_id):
        s = db.session
        packages = [p for p in _catalog(s).values() if p.internet_profile is not None]
        for package in packages:
            _give_burst(package.internet_profile)
        configure_plugin(s, "mikrotik", True, {"timeout": "60"})
        configure_plugin(s, "freeradius", True, {"database_url": RADIUS_URL})
        router = save_router(s, name="Core-1", kind="mikrotik", address="127.0.0.1",
                             api_port=router_port, username="admin", password="secret")
        s.commit()
        _subscribers(s, packages, count + waiting, random.Random(17))
        activated = _activate(s, tenant_id, router.id, count)
        s.execute(sa.text("ANALYZE"))
        s.commit()
        s.remove()
    assert activated == count, f"{activated} services activated, expected {count}"
    return tenant_id


def _give_burst(profile: InternetProfile) -> None:
    """Burst to twice the speed above 80 % of it for 8 s; subscribers may have overrides."""
    profile.burst_download, profile.burst_upload = (profile.download_speed * 2,
                                                    profile.upload_speed * 2)
    profile.burst_threshold_download = profile.download_speed * 8 // 10
    profile.burst_threshold_upload = profile.upload_speed * 8 // 10
    profile.burst_time_seconds = 8
    profile.allow_subscriber_overrides = True


def _subscribers(s, packages: list[Package], count: int, rnd: random.Random) -> None:
    """`count` active subscribers, each with one active subscription of a random Internet
    package and its (pending) service instances; core multi-row inserts."""
    lines = {p.id: [(line.id, line.label) for line in p.service_lines] for p in packages}
    ids = [p.id for p in packages]
    with click.progressbar(length=count, label="subscribers") as bar:
        insert_batches(s, Subscriber, ({
            "account_number": f"{n:08d}", "first_name": "Bench", "last_name": f"Sub{n}",
            "email": f"sub{n}@example.net", "status": "active",
            "customer_type": "residential", "billing_cycle": "monthly", "bill_day": 1,
            "service_country": "US", "search_text": f"{n:08d} bench sub{n}",
            "billing_same_as_service": True, "tax_exempt": False, "paper_invoice": False,
            "bill_all_to_parent": False} for n in range(1, count + 1)), bar)
    s.add(TenantSequence(name="subscriber_account", last_value=count))
    s.commit()
    subscriber_ids = s.scalars(sa.select(Subscriber.id).order_by(Subscriber.id)).all()
    with click.progressbar(length=count, label="subscriptions") as bar:
        insert_batches(s, Subscription, ({
            "subscriber_id": sid, "package_id": rnd.choice(ids), "quantity": 1,
            "status": "active", "billing_cycle": "monthly", "bill_start_date": START}
            for sid in subscriber_ids), bar)
    s.commit()
    subs = s.execute(sa.select(Subscription.id, Subscription.package_id)
                     .order_by(Subscription.id)).all()
    with click.progressbar(length=len(subs), label="service instances") as bar:
        insert_batches(s, ServiceInstance, ({
            "subscription_id": sub_id, "package_service_line_id": line_id, "label": label,
            "status": "pending"}
            for sub_id, package_id in subs for line_id, label in lines[package_id]), bar)
    s.commit()


# Credentials, router and address from the subscriber's number: even ones on the router,
# odd ones RADIUS-only; one in five has a static address (10.x.y.z from the service id).
ACTIVATE = """
UPDATE service_instance si
   SET username = 'sub' || sr.account_number, password = substr(md5(si.id::text), 1, 12),
       status = 'active', activated_at = now(),
       router_id = CASE WHEN sr.id % 2 = 0 THEN :router END,
       static_ip = CASE WHEN sr.id % 5 = 0 THEN
           '10.' || (si.id / 65536) % 256 || '.' || (si.id / 256) % 256 || '.' || si.id % 256
       END
  FROM subscription sn, subscriber sr, package_service_line psl, service sv
 WHERE si.tenant_id = :tenant AND sn.id = si.subscription_id AND sr.id = sn.subscriber_id
   AND psl.id = si.package_service_line_id AND sv.id = psl.service_id
   AND sv.type = 'internet' AND si.status = 'pending' AND sr.id BETWEEN :first AND :last
"""


def _activate(s, tenant_id: int, router_id: int, count: int, first: int = 0) -> int:
    """Activate the Internet services of the `count` subscribers from the `first` (seeded
    order, consecutive ids: the bench's database has one tenant) in one statement, as
    `network.services.activate` would; the number activated."""
    ids = s.scalars(sa.select(Subscriber.id).order_by(Subscriber.id)
                    .offset(first).limit(count)).all()
    s.execute(sa.text("ANALYZE"))
    done = s.execute(sa.text(ACTIVATE), {"tenant": tenant_id, "router": router_id,
                                         "first": ids[0], "last": ids[-1]}).rowcount
    s.commit()
    return done


# --- the 1 % change --------------------------------------------------------------------------

def change(app, tenant_id: int, share: float, active: int, round_no: int) -> dict[str, int]:
    """`share` of the subscribers changed in four equal parts (bulk updates, as billing would
    leave them; no events, so that nothing reconciles before the clock), each round among the
    services no earlier round touched, and the next waiting services activated."""
    part = max(1, round(active * share / 4))
    with app.app_context(), acting_as(tenant_id):
        s = db.session
        services = s.execute(_internet_services().where(
            ServiceInstance.status == "active", Subscription.status == "active",
            ServiceInstance.download_override.is_(None)).order_by(ServiceInstance.id)).all()
        chosen = random.Random(23 + round_no).sample(services, 3 * part)
        suspend, faster, stop = (chosen[:part], chosen[part:2 * part], chosen[2 * part:])
        s.execute(sa.update(Subscription).where(Subscription.id.in_([r[1] for r in suspend]))
                  .values(status="suspended"))
        s.execute(sa.update(Subscriber).where(Subscriber.id.in_([r[2] for r in suspend]))
                  .values(status="suspended"))
        s.execute(sa.update(ServiceInstance).where(ServiceInstance.id.in_(
            [r[0] for r in faster])).values(download_override=900, upload_override=300))
        s.execute(sa.update(ServiceInstance).where(ServiceInstance.id.in_(
            [r[0] for r in stop])).values(status="inactive"))
        router_id = s.scalar(sa.select(Router.id))
        s.commit()
        new = _activate(s, tenant_id, router_id, part, first=active + round_no * part)
        s.remove()
    return {"suspended": part, "speed changed": part, "deactivated": part, "activated": new}


def _internet_services():
    return (sa.select(ServiceInstance.id, Subscription.id, Subscription.subscriber_id)
            .join(Subscription, Subscription.id == ServiceInstance.subscription_id)
            .join(PackageServiceLine,
                  PackageServiceLine.id == ServiceInstance.package_service_line_id)
            .join(Service, Service.id == PackageServiceLine.service_id)
            .where(Service.type == "internet"))


# --- timing ----------------------------------------------------------------------------------

@contextmanager
def profiled(enabled: bool, label: str):
    """cProfile around a step when asked, printing the top of it afterwards."""
    if not enabled:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(22)
        print(f"\n--- profile: {label} ---\n{out.getvalue()}")


def timed_reconcile(app, tenant_id: int, profile: bool, label: str):
    """One reconcile of the tenant, committed: (seconds, results)."""
    with app.app_context(), acting_as(tenant_id, actor_name="network"):
        with profiled(profile, label):
            start = time.perf_counter()
            results = reconcile(db.session)
            db.session.commit()
            elapsed = time.perf_counter() - start
        db.session.remove()
    return elapsed, results


def report(label: str, seconds: float, results) -> bool:
    """Print a reconcile's time and what it wrote; False when a target failed."""
    written = sum(r.added + r.changed + r.removed for r in results)
    print(f"{label:36} {seconds:7.2f} s  {written:7,} entries written")
    for r in results:
        print(f"    {r.describe()}")
    return all(r.status == "ok" for r in results)


def breakdown(app, tenant_id: int) -> None:
    """Where a reconcile with nothing to do spends its time: the same steps, one by one."""
    with app.app_context(), acting_as(tenant_id):
        s = db.session
        start = time.perf_counter()
        states = service_states(s)
        steps = [("desired: service_states", time.perf_counter() - start, len(states))]
        for target in targets(s):
            mapping = router_mapping(target.router)
            at = time.perf_counter()
            actual = target.driver.read_state(target.settings, mapping)
            steps.append((f"{target.name}: read_state", time.perf_counter() - at, len(actual)))
            at = time.perf_counter()
            desired = target.entries([x for x in states if target.serves(x)])
            change = diff(desired, actual)
            steps.append((f"{target.name}: entries + diff", time.perf_counter() - at,
                          len(change.add) + len(change.change) + len(change.remove)))
        s.remove()
    for label, seconds, n in steps:
        print(f"    {label:36} {seconds:6.2f} s  ({n:,})")


# --- usage -----------------------------------------------------------------------------------

COLUMNS = ("acctsessionid", "acctuniqueid", "username", "nasipaddress", "acctstarttime",
           "acctupdatetime", "acctstoptime", "acctsessiontime", "acctinputoctets",
           "acctoutputoctets", "framedipaddress")


def radacct_rows(usernames: list[str], count: int, rnd: random.Random):
    """`count` sessions that ended or last reported in the 10 days before NOW (1 % of
    usernames nobody has); two in three closed, the rest open with an interim update; octets
    up to ~50 GB (beyond 32 bits)."""
    for n in range(count):
        user = usernames[n % len(usernames)] if n % 100 else f"stranger{n}"
        end = NOW - dt.timedelta(seconds=rnd.randrange(10 * 86_400))
        seconds = rnd.randrange(60, 86_400)
        start = end - dt.timedelta(seconds=seconds)
        closed = n % 3 != 0
        yield (f"s{n:x}", f"u{n:016x}", user, "192.0.2.1", start,
               None if closed else end, end if closed else None, seconds,
               rnd.randrange(1 << 34), rnd.randrange(1 << 35), None)


def load_radacct(usernames: list[str], count: int) -> float:
    """COPY the sessions into radacct; the seconds it took."""
    rows, start = radacct_rows(usernames, count, random.Random(29)), time.perf_counter()
    with psycopg.connect(RADIUS_URL.replace("+psycopg", "")) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY radacct ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            with click.progressbar(rows, length=count, label="radacct rows") as bar:
                for row in bar:
                    copy.write_row(row)
        cur.execute("ANALYZE radacct")
    return time.perf_counter() - start


INTERIM = """
UPDATE radacct SET acctinputoctets = acctinputoctets + (radacctid %% 1000) * 1000003,
                   acctoutputoctets = acctoutputoctets + (radacctid %% 997) * 5000011,
                   acctsessiontime = acctsessiontime + 3600,
                   acctupdatetime = %(at)s + (radacctid %% 3600) * interval '1 second'
 WHERE acctstoptime IS NULL
"""


def interim_updates() -> int:
    """Every open session reports more traffic in the hour after NOW (spread over it, as
    interim updates come): its row changes in place."""
    with psycopg.connect(RADIUS_URL.replace("+psycopg", "")) as conn:
        return conn.execute(INTERIM, {"at": NOW + dt.timedelta(seconds=1)}).rowcount


def timed_import(app, tenant_id: int, profile: bool, label: str):
    from headend.network.usage import import_usage

    with app.app_context(), acting_as(tenant_id, actor_name="usage"):
        with profiled(profile, label):
            start = time.perf_counter()
            result = import_usage(db.session)
            elapsed = time.perf_counter() - start
        db.session.remove()
    return elapsed, result


def usage_matches(app, tenant_id: int) -> tuple[int, int, bool]:
    """(bytes counted in UsageDaily, bytes of known users in radacct, sessions all counted)."""
    with app.app_context(), acting_as(tenant_id):
        s = db.session
        counted = s.scalar(sa.select(sa.func.sum(UsageDaily.download_bytes
                                                 + UsageDaily.upload_bytes)))
        sessions = s.scalar(sa.select(sa.func.count()).select_from(UsageSession))
        s.remove()
    engine = sa.create_engine(RADIUS_URL)
    with engine.connect() as conn:
        total, known = conn.execute(
            sa.select(sa.func.sum(radacct.c.acctinputoctets + radacct.c.acctoutputoctets),
                      sa.func.count())
            .where(radacct.c.username.not_like("stranger%"))).one()
    engine.dispose()
    return int(counted or 0), int(total or 0), sessions == known


def usage(app, tenant_id: int, count: int, profile: bool) -> bool:
    with app.app_context(), acting_as(tenant_id):
        usernames = db.session.scalars(sa.select(ServiceInstance.username).where(
            ServiceInstance.username.is_not(None)).order_by(ServiceInstance.id)).all()
        db.session.remove()
    copy_s = load_radacct(usernames, count)
    print(f"\nusage: {count:,} radacct rows written with COPY in {copy_s:.1f} s")
    ok = True
    seconds, result = timed_import(app, tenant_id, profile, "usage import")
    ok &= _usage_line("import", seconds, result)
    updated = interim_updates()
    seconds, result = timed_import(app, tenant_id, profile, "usage import of interim updates")
    ok &= _usage_line(f"import after {updated:,} interim updates", seconds, result)
    counted, total, sessions = usage_matches(app, tenant_id)
    same = counted == total and sessions
    print(f"  counted {counted:,} bytes, radacct holds {total:,} for known users: "
          f"{'equal' if same else 'DIFFERENT'}")
    return ok and same


def _usage_line(label: str, seconds: float, result) -> bool:
    rate = result.records / seconds if seconds else 0
    under = rate < 50_000
    print(f"  {label:36} {seconds:6.2f} s  {rate:9,.0f} records/s"
          f"{'  UNDER TARGET (50,000/s)' if under else ''}\n    {result.describe()}")
    return not under


# --- main ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--change", type=float, default=0.01,
                        help="share of subscribers changed before the third reconcile")
    parser.add_argument("--rounds", type=int, default=3,
                        help="no-op reconciles, and rounds of changes, timed")
    parser.add_argument("--radacct", type=int, default=200_000, help="accounting rows")
    parser.add_argument("--profile", action="store_true", help="cProfile each timed step")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args()

    for name in (NAME, RADIUS):
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin(f'CREATE DATABASE "{name}"')
    engine = sa.create_engine(RADIUS_URL)
    create_schema(engine)
    engine.dispose()
    router = RouterChild()
    app = create_app(overrides=app_settings(URL) | {"TESTING": False})
    upgrade(app)
    try:
        ok = run(app, router, args)
    finally:
        router.stop()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        if not args.keep:
            for name in (NAME, RADIUS):
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    raise SystemExit(0 if ok else 1)


def run(app, router: RouterChild, args) -> bool:
    t0 = time.perf_counter()
    part = max(1, round(args.subscribers * args.change / 4))
    tenant_id = seed(app, args.subscribers, part * args.rounds, router.port)
    print(f"seeded {args.subscribers:,} subscribers with activated Internet services "
          f"(+{part * args.rounds} waiting) in {time.perf_counter() - t0:.1f} s\n")

    seconds, results = timed_reconcile(app, tenant_id, args.profile, "first reconcile")
    ok = report("first reconcile", seconds, results)
    writes = router.ask("writes")
    print(f"    router now holds {router.ask('/queue/simple'):,} queues, "
          f"{router.ask('/ppp/secret'):,} PPP secrets ({writes:,} API writes)")

    times = []
    for n in range(args.rounds):
        seconds, results = timed_reconcile(app, tenant_id, args.profile and n == 0,
                                           "no-op reconcile")
        ok &= report(f"reconcile, nothing to do ({n + 1})", seconds, results)
        times.append(seconds)
    ok &= router.ask("writes") == writes
    ok &= verdict("reconcile with nothing to do", times, 2)
    print("  where the time goes (the same steps, one by one):")
    breakdown(app, tenant_id)

    times = []
    for n in range(args.rounds):
        changed = change(app, tenant_id, args.change, args.subscribers, n)
        print(f"\nround {n + 1} changed: " + ", ".join(f"{v} {k}" for k, v in changed.items()))
        seconds, results = timed_reconcile(app, tenant_id, args.profile and n == 0,
                                           "reconcile after change")
        ok &= report(f"reconcile after {args.change:.0%} changed", seconds, results)
        times.append(seconds)
        writes = router.ask("writes")
        seconds, results = timed_reconcile(app, tenant_id, False, "rerun")
        quiet = all(r.status == "ok" and not (r.added or r.changed or r.removed)
                    for r in results) and router.ask("writes") == writes
        print(f"  rerun: {'nothing to do' if quiet else 'CHANGED AGAIN'} ({seconds:.2f} s)")
        ok &= quiet
    ok &= verdict(f"reconcile after {args.change:.0%} changed", times, 3)

    if args.radacct:
        ok &= usage(app, tenant_id, args.radacct, args.profile)
    print("\nOK" if ok else "\nFAILED (see above)")
    return ok


def verdict(label: str, times: list[float], target: float) -> bool:
    """The median of the rounds against the target (the machine is shared: rounds vary)."""
    median = statistics.median(times)
    print(f"==> {label}: median {median:.2f} s of {len(times)} "
          f"(min {min(times):.2f}, max {max(times):.2f})"
          + ("" if median <= target else f"  OVER TARGET ({target:g} s)"))
    return median <= target


if __name__ == "__main__":
    main()
