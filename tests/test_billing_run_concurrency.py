"""Two billing runs at once, in two processes on PostgreSQL: still one invoice per
subscription-period (the advisory lock orders them, the unique key would refuse a double)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
from headend.billing.models import BilledPeriod, Invoice
from headend.db import db
from headend.subscribers.models import Subscription
from headend.tenancy.context import acting_as

from tests.billing_run_helpers import RUN, fingerprint, tenant_with_subscribers

pytestmark = pytest.mark.postgresql_only

APR = "2026-04-01"


def _start(app, day: str, chunk: str) -> subprocess.Popen:
    env = os.environ | {"HEADEND_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"]}
    return subprocess.Popen(
        [sys.executable, "-m", "headend.cli", "bill-run", "--date", day, "--chunk-size", chunk],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _together(app, day: str, chunk: str = "7") -> list[str]:
    procs = [_start(app, day, chunk) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    return outputs


def test_two_processes_at_once_five_times_bill_each_period_once(app, make_tenant):
    tenants = [tenant_with_subscribers(app, make_tenant, f"Race ISP {n}", 40) for n in (1, 2)]
    with app.app_context(), acting_as(tenants[0]):
        # a bill-to group, so chunks carry a multi-subscription invoice too
        subs = db.session.scalars(sa.select(Subscription).order_by(Subscription.id)).all()
        for sub in subs[1:4]:
            sub.bill_to_subscriber_id = subs[0].subscriber_id
        db.session.commit()
    outputs = _together(app, RUN.isoformat())
    billed = sum(int(line.split(": ")[1].split()[0]) for out in outputs
                 for line in out.splitlines() if line.startswith("invoiced race-isp-1"))
    assert billed == 37  # 40 subscriptions, 4 of them on one invoice
    _together(app, RUN.isoformat())
    _together(app, APR)
    _together(app, APR)
    _together(app, APR, chunk="2000")
    for tenant, invoices in zip(tenants, (37 * 2, 40 * 2), strict=True):
        with app.app_context(), acting_as(tenant):
            session = db.session
            assert session.scalar(sa.select(sa.func.count()).select_from(Invoice)) == invoices
            assert session.scalar(sa.select(sa.func.count()).select_from(BilledPeriod)) == 80
            print_ = fingerprint(session)
            assert print_["max_lines_per_charge"] == 1
            assert print_["debits"] == print_["credits"] == print_["invoice_total"]
            db.session.remove()
