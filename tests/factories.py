"""A valid row of any tenant-scoped model, created in the current tenant scope.

The isolation walker asks for a row of every model a view or API exposes; a model missing here
fails that test, so adding a view means adding its factory.
"""

from __future__ import annotations

import itertools
from decimal import Decimal as D

from headend.audit.models import AuditLog
from headend.billing import models as billing
from headend.branding.models import Branding
from headend.catalog import models as cat
from headend.documents.models import InvoiceDesign, PrintBatch
from headend.dunning.models import ScheduledAction
from headend.ledger.models import JournalEntry
from headend.mail.models import MailSettings, OutboundEmail
from headend.network import models as net
from headend.payments import models as payments
from headend.portal import models as portal
from headend.signup.models import SignupAttempt
from headend.subscribers import models as sub
from headend.tenancy.context import current_scope
from sqlalchemy.orm import Session

_seq = itertools.count(1)


def _package(s: Session) -> cat.Package:
    n = next(_seq)
    package = cat.Package(name=f"Package {n}", price_monthly=D("49.99"), setup_fee=D("10"),
                          allow_custom_pricing=False)
    service = cat.Service(name=f"Internet {n}", type="internet")
    package.service_lines.append(cat.PackageServiceLine(service=service, label="Internet",
                                                        quantity=1, fcc_technology_code=50))
    s.add(package)
    return package


def _subscriber(s: Session) -> sub.Subscriber:
    from headend.subscribers.services import create_subscriber

    n = next(_seq)
    return create_subscriber(s, first_name="Ana", last_name=f"Test{n}", email=f"a{n}@x.test")


def _subscription(s: Session) -> sub.Subscription:
    from headend.subscribers.services import add_package

    subscriber, package = _subscriber(s), _package(s)
    s.flush()
    return add_package(s, subscriber.id, package.id, billing_cycle="monthly")


def _journal_entry(s: Session):
    import datetime as dt

    from headend.ledger.services import LegSpec, post_entry

    n, subscriber = next(_seq), _subscriber(s)
    return post_entry(s, key=f"test-{n}", entry_date=dt.date(2024, 1, 1), source_type="test",
                      source_id=n, description=f"Test entry {n}",
                      legs=[LegSpec("1200", debit=100, subscriber_id=subscriber.id),
                            LegSpec("4000", credit=100)])


def _memo(s: Session):
    import datetime as dt

    from headend.billing.memos import credit_memo

    return credit_memo(s, _subscriber(s).id, 500, "Test credit", dt.date(2024, 1, 1))


def _recurring_line(s: Session):
    import datetime as dt

    from headend.billing.models import RecurringLine

    return RecurringLine(subscriber=_subscriber(s), description="Static IP", kind="charge",
                         unit_price=D("5"), start_date=dt.date(2024, 1, 1))


def _invoice(s: Session):
    import datetime as dt

    from headend.billing.invoicing import new_invoice

    return new_invoice(s, _subscriber(s).id, dt.date(2024, 1, 1),
                       [{"description": "Test charge", "unit_price": "10"}],
                       today=dt.date(2024, 1, 1))


def _payment(s: Session):
    import datetime as dt

    from headend.payments.services import receive_payment
    from headend.plugins.services import configure_plugin

    configure_plugin(s, "manual", True, {})
    return receive_payment(s, _subscriber(s).id, 1500, "check", dt.date(2024, 1, 1),
                           reference=f"{next(_seq)}")


def _refund(s: Session):
    import datetime as dt

    from headend.payments.services import refund_payment

    return refund_payment(s, _payment(s).id, 500, dt.date(2024, 1, 2), "test")


def _saved_method(s: Session):
    return payments.SavedPaymentMethod(
        subscriber=_subscriber(s), plugin_id="stripe", provider_ref=f"pm_test_{next(_seq)}",
        customer_ref="cus_test", method="card", brand="visa", last4="4242", exp_month=4,
        exp_year=2031)


def _audit(s: Session) -> AuditLog:
    row = AuditLog(tenant_id=current_scope().tenant_id, actor_name="test", action="create",
                   entity="x", entity_id="1")
    s.add(row)
    return row


def _scheduled_action(s: Session):
    import datetime as dt

    return ScheduledAction(subscriber=_subscriber(s), action="suspend",
                           not_before=dt.date.today() + dt.timedelta(days=7), reason="promised")


def _portal_account(s: Session):
    subscriber = _subscriber(s)
    s.add(subscriber)
    s.flush()
    return portal.PortalAccount(subscriber_id=subscriber.id, login=f"p{next(_seq)}@example.net")


def _portal_token(s: Session):
    import datetime as dt

    account = _portal_account(s)
    s.add(account)
    s.flush()
    return portal.PortalToken(account_id=account.id, purpose="invite",
                              token_hash=f"{next(_seq):064x}",
                              expires_at=dt.datetime(2030, 1, 1))


BUILDERS = {
    net.Router: lambda s: net.Router(name=f"Router {next(_seq)}", kind="mikrotik",
                                     address="127.0.0.1"),
    net.NetworkChange: lambda s: net.NetworkChange(target="radius", key=f"check:u{next(_seq)}",
                                                   action="add", result="applied"),
    cat.Account: lambda s: cat.Account(code=f"9{next(_seq):03d}", name="Test", type="asset"),
    cat.TaxRate: lambda s: cat.TaxRate(label=f"Tax {next(_seq)}", kind="percent", rate=D("5")),
    cat.Item: lambda s: cat.Item(code=f"IT-{next(_seq)}", name="Thing", type="fee",
                                 price=D("1")),
    cat.Service: lambda s: cat.Service(name=f"Svc {next(_seq)}", type="tv"),
    cat.Package: _package,
    cat.PackageServiceLine: lambda s: _package(s).service_lines[0],
    cat.PackageInclusion: lambda s: cat.PackageInclusion(
        package=_package(s), item=BUILDERS[cat.Item](s), quantity=1),
    cat.InternetProfile: lambda s: cat.InternetProfile(
        package=_package(s), download_speed=100, upload_speed=20, speed_unit="Mbps"),
    sub.Subscriber: _subscriber,
    sub.SubscriberNote: lambda s: sub.SubscriberNote(subscriber=_subscriber(s), body="hi",
                                                      author="t"),
    sub.Subscription: _subscription,
    sub.ServiceInstance: lambda s: _subscription(s).services[0],
    AuditLog: _audit,
    JournalEntry: _journal_entry,
    billing.Invoice: _invoice,
    billing.Memo: _memo,
    billing.RecurringLine: _recurring_line,
    payments.Payment: _payment,
    payments.Refund: _refund,
    payments.SavedPaymentMethod: _saved_method,
    ScheduledAction: _scheduled_action,
    Branding: lambda s: Branding(display_name="Test ISP"),
    InvoiceDesign: lambda s: InvoiceDesign(marketing_message="Hello"),
    PrintBatch: lambda s: PrintBatch(criteria={"date_from": "2026-03-01", "date_to": "2026-03-31",
                                               "status": "all", "paper_only": False}),
    MailSettings: lambda s: MailSettings(host="127.0.0.1", from_address="billing@example.net"),
    OutboundEmail: lambda s: OutboundEmail(
        kind="test", key=f"test:{next(_seq)}", to_address="a@example.net", subject="Hi",
        body_text="Hello"),
    portal.PortalAccount: _portal_account,
    portal.PortalToken: _portal_token,
    portal.PortalLoginFailure: lambda s: portal.PortalLoginFailure(login="x@example.net"),
    SignupAttempt: lambda s: SignupAttempt(ip="127.0.0.1", status="refused"),
}


def make_row(session: Session, model):
    try:
        build = BUILDERS[model]
    except KeyError:
        raise AssertionError(f"tests/factories.py has no builder for {model.__name__}") from None
    row = build(session)
    session.add(row)
    session.flush()
    return row
