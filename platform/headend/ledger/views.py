"""Accounting pages: journal entries (read-only: corrections are reversing entries), the trial
balance for a date range, and the closed-books setting. Rules live in ledger.services."""

from __future__ import annotations

import datetime as dt

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from headend.db import db
from headend.errors import ValidationFailed
from headend.ledger import services
from headend.ledger.models import CLOSING_MODES, JournalEntry
from headend.money import format_money
from headend.subscribers.models import Subscriber
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.tenancy.models import Tenant
from headend.ui import PermissionsMixin, add_view, formatters_for, labels_for, titled
from headend.views_base import HeadendInterface, HeadendModelView

CATEGORY = "Accounting"
NO_TENANT = "Choose a tenant to act for (Platform > Act for tenant) to see its books."


def _currency() -> str:
    tenant = db.session.get(Tenant, current_scope().tenant_id or 0)
    return tenant.currency if tenant else "USD"


def _money(minor: int) -> str:
    return format_money(minor, _currency()) if minor else ""


def _subscriber_link(subscriber_id: int | None):
    if subscriber_id is None:
        return ""
    return Markup('<a href="{}">{}</a>').format(
        url_for("SubscriberView.profile", pk=subscriber_id), subscriber_id)


def _legs_table(legs) -> Markup:
    rows = Markup("").join(
        Markup('<tr><td>{}</td><td>{}</td><td class="text-right">{}</td>'
               '<td class="text-right">{}</td><td>{}</td></tr>').format(
            leg.account, _subscriber_link(leg.subscriber_id), _money(leg.debit),
            _money(leg.credit), " ".join(filter(None, (leg.jurisdiction, leg.memo))))
        for leg in legs)
    return Markup(
        '<table class="table table-condensed" id="legs"><thead><tr><th>Account</th>'
        '<th>Subscriber</th><th class="text-right">Debit</th><th class="text-right">Credit</th>'
        "<th>Memo</th></tr></thead><tbody>{}</tbody></table>").format(rows)


@titled("Journal entries", "journal entry")
class JournalEntryView(HeadendModelView):
    datamodel = HeadendInterface(JournalEntry)
    class_permission_name = perms.LEDGER
    include_route_methods = {"list", "show"}
    label_columns = labels_for(JournalEntry, entry_date="Date", source_id="Source no.",
                               reverses="Reverses", closed_books_override="Into closed books")
    formatters_columns = formatters_for(JournalEntry) | {"legs": _legs_table}
    list_columns = ["entry_date", "description", "source_type", "source_id",
                    "closed_books_override", "posted_at"]
    show_columns = ["entry_date", "description", "source_type", "source_id", "key", "reverses",
                    "closed_books_override", "posted_at", "legs"]
    search_columns = ["entry_date", "source_type", "source_id", "key"]
    order_columns = ["entry_date", "source_type", "source_id", "posted_at"]
    base_order = ("entry_date", "desc")


def _date_arg(name: str, default: dt.date, errors: dict) -> dt.date:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        errors[name] = ["must be a date (YYYY-MM-DD)"]
        return default


def _bars(rows) -> list[tuple]:
    """(row, bar width in px) for the closing balances, scaled to the largest."""
    largest = max((abs(r.closing) for r in rows), default=0) or 1
    return [(r, round(280 * abs(r.closing) / largest)) for r in rows]


class TrialBalanceView(PermissionsMixin, BaseView):
    route_base = "/ledger/trial-balance"
    class_permission_name = perms.LEDGER
    method_permission_name = {"trial_balance": perms.READ}
    default_view = "trial_balance"

    @expose("/")
    @has_access
    def trial_balance(self):
        today = dt.date.today()
        errors: dict[str, list[str]] = {}
        start = _date_arg("start", today.replace(day=1), errors)
        end = _date_arg("end", today, errors)
        rows = []
        if current_scope().all_tenants:
            flash(NO_TENANT, "warning")
        elif not errors:
            try:
                rows = services.trial_balance(db.session, start, end)
            except ValidationFailed as exc:
                errors = exc.errors
        return self.render_template(
            "ledger/trial_balance.html", start=start, end=end, errors=errors, bars=_bars(rows),
            totals=services.trial_balance_totals(rows), money=_money)


class ClosedBooksView(PermissionsMixin, BaseView):
    route_base = "/ledger/closed-books"
    class_permission_name = perms.LEDGER
    method_permission_name = {"closed_books": perms.READ, "save": perms.WRITE}
    default_view = "closed_books"

    def _page(self, closing_date, mode, errors=None):
        return self.render_template(
            "ledger/closed_books.html", closing_date=closing_date or "", mode=mode,
            modes=CLOSING_MODES, errors=errors or {},
            can_write=self.appbuilder.sm.has_access("can_write", perms.LEDGER))

    @expose("/")
    @has_access
    def closed_books(self):
        settings = services.ledger_settings(db.session)
        if settings is None:
            return self._page(None, "block")
        return self._page(settings.closing_date, settings.closing_mode)

    @expose("/", methods=["POST"])
    @has_access
    def save(self):
        raw, mode = request.form.get("closing_date", "").strip(), request.form.get("mode", "")
        if current_scope().all_tenants:
            flash(NO_TENANT, "danger")
            return self._page(raw, mode)
        try:
            closing_date = dt.date.fromisoformat(raw) if raw else None
        except ValueError:
            return self._page(raw, mode, {"closing_date": ["must be a date (YYYY-MM-DD)"]})
        try:
            services.set_closing_date(db.session, closing_date, mode)
            db.session.commit()
        except ValidationFailed as exc:
            db.session.rollback()
            return self._page(raw, mode, exc.errors)
        except SQLAlchemyError:
            db.session.rollback()
            flash("The database refused the change; nothing was saved.", "danger")
            return self._page(raw, mode)
        flash("Closed books saved", "success")
        return redirect(url_for("ClosedBooksView.closed_books"))


class AccountHistoryView(PermissionsMixin, BaseView):
    """A subscriber's statement: receivable entries in date order with the running balance."""

    route_base = "/ledger/history"
    class_permission_name = perms.LEDGER
    method_permission_name = {"history": perms.READ}
    pk_model = Subscriber  # what the <pk> names, for the tenant isolation walker

    @expose("/<int:pk>")
    @has_access
    def history(self, pk):
        sub = db.session.scalar(select(Subscriber).where(Subscriber.id == pk))
        if sub is None:
            abort(404)
        return self.render_template(
            "ledger/history.html", sub=sub, rows=services.account_history(db.session, sub.id),
            balance=services.subscriber_balance(db.session, sub.id), money=_money)


def register(appbuilder):
    add_view(appbuilder, JournalEntryView, "Journal entries", category=CATEGORY, icon="fa-book")
    add_view(appbuilder, TrialBalanceView, "Trial balance", category=CATEGORY,
             icon="fa-balance-scale")
    add_view(appbuilder, ClosedBooksView, "Closed books", category=CATEGORY, icon="fa-lock")
    appbuilder.add_view_no_menu(AccountHistoryView)
