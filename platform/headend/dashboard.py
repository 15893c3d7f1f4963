"""The landing page: the tenant at a glance (subscribers and subscriptions by status)."""

from __future__ import annotations

import datetime as dt

from flask_appbuilder import IndexView, expose
from sqlalchemy import extract, func, select
from sqlalchemy.orm import Session

from headend.billing.models import Invoice
from headend.billing.periods import shift_months
from headend.db import db
from headend.money import format_money
from headend.subscribers.models import (
    SUBSCRIBER_STATUSES,
    SUBSCRIPTION_STATUSES,
    Subscriber,
    Subscription,
)


def _by_status(session: Session, column, statuses) -> list[tuple[str, int]]:
    counts = dict(session.execute(select(column, func.count()).group_by(column)).all())
    return [(status, counts.get(status, 0)) for status in statuses]


def billed_revenue(session: Session, today: dt.date, months: int = 12) -> list[tuple]:
    """(month "2026-01", billed minor units, label) for the last `months` months, from posted
    invoices (drafts and voided ones excluded), one grouped query."""
    first = shift_months(today.replace(day=1), -(months - 1))
    year, month = extract("year", Invoice.invoice_date), extract("month", Invoice.invoice_date)
    rows = session.execute(
        select(year, month, func.sum(Invoice.total), func.max(Invoice.currency))
        .where(Invoice.invoice_date >= first, Invoice.status.not_in(("draft", "void")))
        .group_by(year, month)).all()
    totals = {(int(y), int(m)): (int(total), currency) for y, m, total, currency in rows}
    currency = next((c for _, c in totals.values()), "USD")
    result = []
    for k in range(months):
        day = shift_months(first, k)
        total = totals.get((day.year, day.month), (0, currency))[0]
        result.append((f"{day:%Y-%m}", total, format_money(total, currency)))
    return result


def summary(session: Session) -> dict:
    """Counts the dashboard charts; scoped to the current tenant like every query."""
    return {
        "subscribers": _by_status(session, Subscriber.status, SUBSCRIBER_STATUSES),
        "subscriptions": _by_status(session, Subscription.status, SUBSCRIPTION_STATUSES),
        "revenue": billed_revenue(session, dt.date.today()),
        "aging": ar_aging(session, dt.date.today()),
    }


def ar_aging(session: Session, today: dt.date) -> list[tuple]:
    """(bucket, balance due in minor units, label) of open invoices by days past due."""
    from headend.billing.drafting import currency
    from headend.dunning.reports import ar_aging as buckets

    code = currency(session)
    return [(name, amount, format_money(amount, code)) for name, amount in
            buckets(session, today)]


class DashboardIndexView(IndexView):
    index_template = "headend/index.html"

    @expose("/")
    def index(self):
        from flask_login import current_user

        data = summary(db.session) if current_user.is_authenticated else None
        return self.render_template(self.index_template, appbuilder=self.appbuilder, data=data)
