"""The landing page: the tenant at a glance (subscribers and subscriptions by status)."""

from __future__ import annotations

from flask_appbuilder import IndexView, expose
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from headend.db import db
from headend.subscribers.models import (
    SUBSCRIBER_STATUSES,
    SUBSCRIPTION_STATUSES,
    Subscriber,
    Subscription,
)


def _by_status(session: Session, column, statuses) -> list[tuple[str, int]]:
    counts = dict(session.execute(select(column, func.count()).group_by(column)).all())
    return [(status, counts.get(status, 0)) for status in statuses]


def summary(session: Session) -> dict:
    """Counts the dashboard charts; scoped to the current tenant like every query."""
    return {
        "subscribers": _by_status(session, Subscriber.status, SUBSCRIBER_STATUSES),
        "subscriptions": _by_status(session, Subscription.status, SUBSCRIPTION_STATUSES),
    }


class DashboardIndexView(IndexView):
    index_template = "headend/index.html"

    @expose("/")
    def index(self):
        from flask_login import current_user

        data = summary(db.session) if current_user.is_authenticated else None
        return self.render_template(self.index_template, appbuilder=self.appbuilder, data=data)
