"""Cash and check payments posted by 4 processes at once, and the daily collections job, over
100k subscribers on PostgreSQL.

    .venv/bin/python bench/payments.py [--subscribers 100000] [--payments 10000]
                                       [--batch 500] [--single 2000] [--processes 4]
                                       [--profile N] [--keep]

Creates (and at the end drops) the database `headend_bench_payments` on 127.0.0.1:5432, seeds
one tenant with the demo catalog and N active subscribers, each with one subscription, then runs
the real billing run: every subscriber has one posted open invoice with its ledger entry.

Payments: `--processes` OS processes (spawned, each its own app and engine) post cash/check
payments (manual gateway) in two ways, each twice: round 1 to distinct subscribers, round 2 with
every process paying the same subscribers in the same order at the same time.
- `--payments` through `payments.batch.receive_payments` in transactions of `--batch` payments
  (how deposit files, lockbox imports and the batch API post). Target >= 1,000 payments/s.
- `--single` through `payments.services.receive_payment`, one transaction per payment (the
  cashier's form, the payment API): printed for comparison.
Then checks, independently of the services: each subscriber's balance from the ledger equals
its invoice totals less its payments and write-offs; each invoice's amount_paid equals its
allocations and each payment's unapplied its amount less its allocations; each invoice's
amount_paid (and the credit left) equals what the bench sent that subscriber; the number of
payments and of distinct receipt numbers.

Collections: on a day when 5 % of the subscribers are past the late-fee day, 2 % past grace
(and the re-billing fee day) and 0.1 % archived long enough for a write-off (the bench moves
those invoices' dates back; the rest fall due that day), times the tenant's collections job
(`run_collections_job`, what the scheduler enqueues) and its rerun, which must do nothing.
Target <= 10 s.

`--profile N` also posts N payments in this process under cProfile and prints the SQL
statements per payment and the top of the profile.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import multiprocessing as mp
import pstats
import random
import time
from decimal import Decimal

import click
import sqlalchemy as sa
from headend.app import create_app
from headend.billing.models import Invoice
from headend.billing.run import bill_run
from headend.catalog.models import Account
from headend.catalog.services import ACCOUNTS_RECEIVABLE
from headend.db import db
from headend.dunning.models import AppliedFee, Notice, SubscriberCollection, WriteOff
from headend.ledger.models import Leg
from headend.migrate import upgrade
from headend.payments.models import Payment, PaymentAllocation
from headend.plugins.services import configure_plugin
from headend.subscribers.models import (
    Subscriber,
)
from headend.tenancy.context import acting_as
from headend.tenancy.services import create_tenant
from headend.testing import app_settings
from seeding import BATCH, SERVER, admin, seed_subscriptions

NAME = "headend_bench_payments"
URL = f"{SERVER}/{NAME}"
RUN = dt.date(2026, 3, 1)
PAID_ON = dt.date(2026, 3, 5)
# Collections: the day every untouched invoice falls due, and the tenant's rules.
LATE_FEE_DAYS, REBILL_FEE_DAYS, GRACE_DAYS, NOTICE_DAYS, WRITEOFF_DAYS = 10, 20, 20, 5, 90
SHARES = {"late": 0.05, "past_grace": 0.02, "archived": 0.001}


def _app():
    return create_app(overrides=app_settings(URL) | {"TESTING": False})


# --- seeding ---------------------------------------------------------------------------------

def seed(app, count: int) -> int:
    """One tenant, N subscribers with one subscription each, billed by the billing run."""
    rnd = random.Random(7)
    with app.app_context(), acting_as(None):
        tenant_id = create_tenant(db.session, "Bench Payments ISP", "bench").id
        db.session.commit()
    with app.app_context(), acting_as(tenant_id):
        session = db.session
        seed_subscriptions(session, count, RUN, rnd)
        configure_plugin(session, "manual", True, {})
        session.commit()
    with app.app_context(), acting_as(None):
        with click.progressbar(length=count, label="billing run") as bar:
            (result,) = bill_run(db.session, RUN, tenant_slug="bench", progress=bar.update)
        db.session.remove()
    assert result.invoices == count, result.describe()
    return tenant_id


def cohorts(app, tenant_id: int) -> dict[str, list[int]]:
    """Split the subscribers (seeded order, shuffled): late, past grace, archived, current."""
    with app.app_context(), acting_as(tenant_id):
        ids = db.session.scalars(sa.select(Subscriber.id).order_by(Subscriber.id)).all()
        db.session.remove()
    random.Random(3).shuffle(ids)
    out, at = {}, 0
    for name, share in SHARES.items():
        size = max(1, round(len(ids) * share))
        out[name], at = ids[at:at + size], at + size
    out["current"] = ids[at:]
    return out


# --- payments --------------------------------------------------------------------------------

def _worker(tenant_id: int, jobs: list[tuple], batch: int, barrier, results) -> None:
    """One OS process: its own app and engine; one receive_payment + commit per payment, or
    (batch > 1) one receive_payments + commit per `batch` payments."""
    app = _app()
    with app.app_context(), acting_as(tenant_id, actor_name="bench"):
        session = db.session
        session.execute(sa.select(1))  # connect before the clock starts
        session.commit()
        barrier.wait()
        start = time.perf_counter()
        post = _post_one_by_one if batch == 1 else _post_batches
        failures = post(session, jobs, batch)
        elapsed = time.perf_counter() - start
        db.session.remove()
        db.engine.dispose()
    results.put((len(jobs), elapsed, failures))


def _post_batches(session, jobs: list[tuple], batch: int) -> list[str]:
    from headend.payments.batch import PaymentLine, receive_payments

    failures = []
    for at in range(0, len(jobs), batch):
        chunk = jobs[at:at + batch]
        try:
            result = receive_payments(session, [PaymentLine(
                amount, method, PAID_ON, subscriber_id=subscriber_id,
                reference=f"chk-{txid[-8:]}" if method == "check" else None,
                transaction_id=txid) for subscriber_id, amount, method, txid in chunk])
            session.commit()
            if len(result.posted) != len(chunk):
                failures.append(f"batch at {at}: {result.describe()}")
        except Exception as exc:  # noqa: BLE001  (a bench counts failures, it does not stop)
            session.rollback()
            failures.append(f"batch at {at}: {type(exc).__name__}: {exc}"[:300])
    return failures


def _post_one_by_one(session, jobs: list[tuple], _batch: int) -> list[str]:
    from headend.payments.services import receive_payment

    failures = []
    for subscriber_id, amount, method, txid in jobs:
        try:
            payment = receive_payment(
                session, subscriber_id, amount, method, PAID_ON,
                reference=f"chk-{txid[-8:]}" if method == "check" else None,
                transaction_id=txid)
            session.commit()
            if payment.status != "processed":
                failures.append(f"{txid}: {payment.status} {payment.message}")
        except Exception as exc:  # noqa: BLE001  (a bench counts failures, it does not stop)
            session.rollback()
            failures.append(f"{txid}: {type(exc).__name__}: {exc}"[:300])
    return failures


def payment_jobs(rnd: random.Random, subscribers: list[int], round_no: int, processes: int,
                 total: int, overlap: bool) -> list[list[tuple]]:
    """Per process: (subscriber, amount, method, transaction id). Round 1 splits distinct
    subscribers among the processes; round 2 gives every process the same subscribers in the
    same order, so that they pay each one at the same moment."""
    per = total // processes
    if overlap:
        hot = subscribers[:per]
        amounts = {s: [rnd.randint(500, 4000) for _ in range(processes)] for s in hot}
        return [[(s, amounts[s][p], "cash" if (s + p) % 2 else "check",
                  f"bench-r{round_no}-p{p}-{n}") for n, s in enumerate(hot)]
                for p in range(processes)]
    chosen = subscribers[:per * processes]
    return [[(s, rnd.randint(500, 15000), "cash" if n % 2 else "check",
              f"bench-r{round_no}-p{p}-{n}") for n, s in enumerate(chosen[p::processes])]
            for p in range(processes)]


def payment_round(tenant_id: int, jobs: list[list[tuple]], batch: int
                  ) -> tuple[float, int, list[str]]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(jobs) + 1), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(tenant_id, chunk, batch, barrier, results))
             for chunk in jobs]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    done = [results.get() for _ in procs]
    wall = time.perf_counter() - start
    for proc in procs:
        proc.join()
    return wall, sum(n for n, _, _ in done), [f for _, _, fs in done for f in fs]


def sent_by_subscriber(rounds: list[list[list[tuple]]]) -> dict[int, int]:
    sent: dict[int, int] = {}
    for jobs in rounds:
        for chunk in jobs:
            for subscriber_id, amount, _, _ in chunk:
                sent[subscriber_id] = sent.get(subscriber_id, 0) + amount
    return sent


# --- checks ----------------------------------------------------------------------------------

def ledger_mismatches(session) -> tuple[int, int]:
    """(subscribers checked, subscribers whose AR balance from the ledger differs from their
    posted invoices less processed payments (net of refunds) less write-offs)."""
    def per_subscriber(column, value, *where):
        return (sa.select(column.label("sid"), sa.func.sum(value).label("v"))
                .where(*where).group_by(column).subquery())

    ar = per_subscriber(Leg.subscriber_id, Leg.debit - Leg.credit, Leg.account_id == sa.select(
        Account.id).where(Account.code == ACCOUNTS_RECEIVABLE).scalar_subquery())
    invoiced = per_subscriber(Invoice.subscriber_id, Invoice.total,
                              Invoice.posted_entry_id.is_not(None), Invoice.status != "void")
    paid = per_subscriber(Payment.subscriber_id, Payment.amount - Payment.refunded,
                          Payment.status.in_(("processed", "voided")))
    written = per_subscriber(WriteOff.subscriber_id, WriteOff.amount)
    zero = sa.literal(0)
    expected = (sa.func.coalesce(invoiced.c.v, zero) - sa.func.coalesce(paid.c.v, zero)
                - sa.func.coalesce(written.c.v, zero))
    rows = session.execute(
        sa.select(sa.func.count(),
                  sa.func.count().filter(sa.func.coalesce(ar.c.v, zero) != expected))
        .select_from(Subscriber)
        .outerjoin(ar, ar.c.sid == Subscriber.id)
        .outerjoin(invoiced, invoiced.c.sid == Subscriber.id)
        .outerjoin(paid, paid.c.sid == Subscriber.id)
        .outerjoin(written, written.c.sid == Subscriber.id)).one()
    return int(rows[0]), int(rows[1])


def allocation_mismatches(session) -> tuple[int, int]:
    """(invoices whose amount_paid is not the sum of their allocations, processed payments
    never refunded whose unapplied is not their amount less their allocations)."""
    allocated = (sa.select(PaymentAllocation.invoice_id.label("iid"),
                           sa.func.sum(PaymentAllocation.amount).label("v"))
                 .group_by(PaymentAllocation.invoice_id).subquery())
    invoices = session.scalar(
        sa.select(sa.func.count()).select_from(Invoice)
        .outerjoin(allocated, allocated.c.iid == Invoice.id)
        .where(Invoice.amount_paid != sa.func.coalesce(allocated.c.v, 0)))
    spent = (sa.select(PaymentAllocation.payment_id.label("pid"),
                       sa.func.sum(PaymentAllocation.amount).label("v"))
             .group_by(PaymentAllocation.payment_id).subquery())
    payments = session.scalar(
        sa.select(sa.func.count()).select_from(Payment)
        .outerjoin(spent, spent.c.pid == Payment.id)
        .where(Payment.status == "processed", Payment.refunded == 0,
               Payment.unapplied != Payment.amount - sa.func.coalesce(spent.c.v, 0)))
    return int(invoices), int(payments)


def sent_mismatches(session, sent: dict[int, int]) -> int:
    """Subscribers (each with one invoice) whose invoice's amount_paid and credit differ from
    min(total, what the bench sent) and the rest: what a lost update would show."""
    rows = session.execute(
        sa.select(Invoice.subscriber_id, Invoice.total, Invoice.amount_paid)
        .where(Invoice.source == "billing_run")).all()
    credit = dict(session.execute(
        sa.select(Payment.subscriber_id, sa.func.sum(Payment.unapplied))
        .where(Payment.status == "processed").group_by(Payment.subscriber_id)).all())
    bad = 0
    for subscriber_id, total, amount_paid in rows:
        money = sent.get(subscriber_id, 0)
        if amount_paid != min(total, money) or int(credit.get(subscriber_id, 0)) != max(
                0, money - total):
            bad += 1
    return bad


def check(app, tenant_id: int, sent: dict[int, int], expected_payments: dict[str, int]) -> bool:
    with app.app_context(), acting_as(tenant_id):
        s = db.session
        checked, ledger_bad = ledger_mismatches(s)
        invoices_bad, payments_bad = allocation_mismatches(s)
        sent_bad = sent_mismatches(s, sent)
        counts = {prefix: s.scalar(sa.select(sa.func.count()).select_from(Payment).where(
            Payment.transaction_id.like(f"{prefix}-%"), Payment.status == "processed"))
            for prefix in expected_payments}
        numbers = s.scalar(sa.select(sa.func.count(sa.distinct(Payment.number))))
        total = s.scalar(sa.select(sa.func.count()).select_from(Payment))
        s.remove()
    ok = not (ledger_bad or invoices_bad or payments_bad or sent_bad) and numbers == total \
        and counts == expected_payments
    print(f"  ledger balance = invoices - payments - write-offs: {checked - ledger_bad:,} of "
          f"{checked:,} subscribers ({ledger_bad} differ)")
    print(f"  invoice amount_paid = its allocations: {invoices_bad} differ; "
          f"payment unapplied = amount - allocations: {payments_bad} differ")
    print(f"  amount_paid and credit = what was sent (lost updates): {sent_bad} differ")
    print("  payments recorded: " + ", ".join(
        f"{k} {v:,} (expected {expected_payments[k]:,})" for k, v in counts.items())
        + f"; {numbers:,} distinct receipt numbers for {total:,} payments")
    print(f"  {'OK' if ok else 'FAILED'}")
    return ok


# --- profile ---------------------------------------------------------------------------------

def profile(app, tenant_id: int, subscribers: list[int], count: int) -> None:
    """N payments in this process under cProfile, with the SQL statements they run."""
    from headend.payments.services import receive_payment

    statements = 0

    def counted(*_args, **_kw):
        nonlocal statements
        statements += 1

    with app.app_context(), acting_as(tenant_id, actor_name="bench"):
        session = db.session
        sa.event.listen(db.engine, "before_cursor_execute", counted)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        for n, subscriber_id in enumerate(subscribers[:count]):
            receive_payment(session, subscriber_id, 1000, "cash", PAID_ON,
                            transaction_id=f"bench-profile-{n}")
            session.commit()
        profiler.disable()
        elapsed = time.perf_counter() - start
        sa.event.remove(db.engine, "before_cursor_execute", counted)
        session.remove()
    print(f"\nprofile: {count} payments in one process, {elapsed / count * 1000:.2f} ms each, "
          f"{statements / count:.1f} SQL statements per payment (commit included)")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    print(out.getvalue())


# --- collections -----------------------------------------------------------------------------

def prepare_collections(app, tenant_id: int, groups: dict[str, list[int]]) -> dt.date:
    """The tenant's rules, and the day: the bench's invoices fall due on it, except those of
    the late and past-grace cohorts (moved back) and the archived ones (archived long ago)."""
    from headend.dunning.services import update_collection_settings

    with app.app_context(), acting_as(tenant_id):
        s = db.session
        day = s.scalar(sa.select(sa.func.min(Invoice.due_date)))
        update_collection_settings(
            s, late_fee_days=LATE_FEE_DAYS, late_fee_kind="percent",
            late_fee_amount=Decimal("5"), late_fee_max=Decimal("10.00"),
            rebill_fee_days=REBILL_FEE_DAYS, rebill_fee_amount=Decimal("3.00"),
            grace_days=GRACE_DAYS, grace_amount=Decimal("5.00"),
            suspension_notice_days=NOTICE_DAYS, writeoff_enabled=True,
            writeoff_threshold=Decimal("500.00"), writeoff_days=WRITEOFF_DAYS)
        late = groups["late"]
        half = len(late) // 2
        moves = ((late[:half], LATE_FEE_DAYS + 2),  # a late fee, suspension weeks away
                 (late[half:], GRACE_DAYS - NOTICE_DAYS + 3),  # a fee and a notice
                 (groups["past_grace"], GRACE_DAYS + 5))  # both fees and a suspension
        for ids, days_back in moves:
            for chunk in range(0, len(ids), BATCH):
                s.execute(sa.update(Invoice)
                          .where(Invoice.subscriber_id.in_(ids[chunk:chunk + BATCH]))
                          .values(due_date=day - dt.timedelta(days=days_back),
                                  invoice_date=day - dt.timedelta(days=days_back + 15))
                          .execution_options(synchronize_session=False))
        archived = groups["archived"]
        s.execute(sa.update(Subscriber).where(Subscriber.id.in_(archived))
                  .values(status="archived").execution_options(synchronize_session=False))
        s.execute(sa.insert(SubscriberCollection), [
            {"subscriber_id": sid, "tenant_id": tenant_id,
             "archived_on": day - dt.timedelta(days=WRITEOFF_DAYS + 1)} for sid in archived])
        s.commit()
        s.execute(sa.text("ANALYZE"))
        s.commit()
        s.remove()
    return day


def effects(app, tenant_id: int) -> dict[str, int]:
    with app.app_context(), acting_as(tenant_id):
        s = db.session

        def count(model, *where):
            return s.scalar(sa.select(sa.func.count()).select_from(model).where(*where))

        out = {"late fees": count(AppliedFee, AppliedFee.kind == "late_fee"),
               "re-billing fees": count(AppliedFee, AppliedFee.kind == "rebill_fee"),
               "fee invoices": count(Invoice, Invoice.source.in_(("late_fee", "rebill_fee")),
                                     Invoice.posted_entry_id.is_not(None)),
               "notices": count(Notice, Notice.kind == "upcoming_suspension"),
               "suspended": count(Subscriber, Subscriber.status == "suspended"),
               "write-offs": count(WriteOff)}
        s.remove()
    return out


def timed_collections(app, tenant_id: int, day: dt.date) -> tuple[float, dict]:
    from headend.dunning.jobs import run_collections_job

    with app.app_context():
        start = time.perf_counter()
        result = run_collections_job(tenant_id, day.isoformat())
        elapsed = time.perf_counter() - start
        db.session.remove()
    return elapsed, result


# --- main ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--payments", type=int, default=10_000,
                        help="per round of batches")
    parser.add_argument("--batch", type=int, default=500, help="payments per batch")
    parser.add_argument("--single", type=int, default=2_000,
                        help="per round of payments one by one")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile N payments in one process")
    parser.add_argument("--skip-collections", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    admin(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{NAME}"')
    app = _app()
    upgrade(app)
    t0 = time.perf_counter()
    tenant_id = seed(app, args.subscribers)
    groups = cohorts(app, tenant_id)
    print(f"seeded {args.subscribers:,} subscribers with one posted invoice each "
          f"in {time.perf_counter() - t0:.1f} s")

    rnd = random.Random(5)
    current = groups["current"]
    ok, rounds, expected, at, round_no = True, [], {}, 0, 0
    for mode, total, batch in (("one transaction per payment", args.single, 1),
                               (f"batches of {args.batch} (deposit file, API batch)",
                                args.payments, args.batch)):
        per_round = total // args.processes * args.processes
        distinct = payment_jobs(rnd, current[at:], round_no + 1, args.processes, per_round,
                                overlap=False)
        at += per_round
        overlap = payment_jobs(rnd, current[at:], round_no + 2, args.processes, per_round,
                               overlap=True)
        at += per_round // args.processes
        print(f"\npayments: {args.processes} processes, {mode}")
        for label, jobs in (("distinct subscribers", distinct),
                            (f"same {len(overlap[0]):,} subscribers in every process", overlap)):
            round_no += 1
            wall, posted, failures = payment_round(tenant_id, jobs, batch)
            rounds.append(jobs)
            expected[f"bench-r{round_no}"] = per_round
            rate = posted / wall
            flag = "" if rate >= 1000 or batch == 1 else "  UNDER TARGET (1,000/s)"
            print(f"  {label:45} {posted:,} payments {wall:7.2f} s {rate:8,.0f} payments/s"
                  f"{flag}")
            for failure in failures[:5]:
                print(f"    failed: {failure}")
            if failures:
                print(f"    {len(failures)} failed")
                ok = False
    ok &= check(app, tenant_id, sent_by_subscriber(rounds), expected)
    hot = current[at:]

    if args.profile:
        profile(app, tenant_id, hot, args.profile)

    if not args.skip_collections:
        ok &= collections(app, tenant_id, groups)

    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if not args.keep:
        admin(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
    raise SystemExit(0 if ok else 1)


def collections(app, tenant_id: int, groups: dict[str, list[int]]) -> bool:
    day = prepare_collections(app, tenant_id, groups)
    shares = ", ".join(f"{len(groups[k]):,} {k.replace('_', ' ')}" for k in SHARES)
    print(f"\ncollections on {day} ({shares}; late fee {LATE_FEE_DAYS} d, re-billing fee "
          f"{REBILL_FEE_DAYS} d, grace {GRACE_DAYS} d, notice {NOTICE_DAYS} d before)")
    seconds, _ = timed_collections(app, tenant_id, day)
    after = effects(app, tenant_id)
    rerun, _ = timed_collections(app, tenant_id, day)
    again = effects(app, tenant_id)
    print(f"  run     {seconds:7.2f} s{'' if seconds <= 10 else '  OVER TARGET (10 s)'}   "
          + ", ".join(f"{v:,} {k}" for k, v in after.items()))
    print(f"  rerun   {rerun:7.2f} s   "
          + ("nothing done" if again == after else "CHANGED: " + ", ".join(
              f"{k} {after[k]:,} -> {v:,}" for k, v in again.items() if v != after[k])))
    with app.app_context(), acting_as(tenant_id):
        checked, ledger_bad = ledger_mismatches(db.session)
        db.session.remove()
    print(f"  after it, ledger balance = invoices (fees included) - payments - write-offs: "
          f"{checked - ledger_bad:,} of {checked:,} subscribers ({ledger_bad} differ)")
    return again == after and ledger_bad == 0


if __name__ == "__main__":
    main()
