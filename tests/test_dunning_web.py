"""Collections pages, API and command line: thin layers over the services; bad input is refused
naming the field and writes nothing; another tenant's subscriber or promise is a 404."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from click.testing import CliRunner
from headend.billing.models import Invoice
from headend.cli import main
from headend.db import db
from headend.dunning.models import (
    AppliedFee,
    CollectionSettings,
    ScheduledAction,
    SubscriberCollection,
)
from headend.dunning.services import collection_settings
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.dunning_helpers import ServiceListener, active_subscriber, owe, rules

TODAY = dt.date.today()


def _overdue_subscriber(app, tenant, amount="80.00", days_ago=40) -> int:
    """A subscriber owing an invoice dated `days_ago` days ago (due 15 days after it)."""
    with app.app_context(), acting_as(tenant):
        s = db.session
        rules(s, late_fee_days=5, late_fee_amount=D("7.50"), grace_days=10)
        sub = active_subscriber(s)
        owe(s, sub, amount, on=TODAY - dt.timedelta(days=days_ago))
        s.commit()
        return sub.id


def _read(app, tenant, fn):
    with app.app_context(), acting_as(tenant):
        return fn(db.session)


def _promises(s):
    return s.scalars(select(ScheduledAction).order_by(ScheduledAction.id)).all()


def test_settings_form_saves_and_refuses_bad_input(app, make_tenant, login_as):
    t = make_tenant()
    client = login_as(t, "Billing")
    page = client.get("/collections/settings/").get_data(as_text=True)
    assert 'id="collection-settings"' in page and 'name="late_fee_max"' in page
    form = {"retry_count": "2", "retry_interval_days": "4", "late_fee_days": "7",
            "late_fee_kind": "percent", "late_fee_amount": "1.5", "late_fee_max": "25",
            "rebill_fee_days": "", "rebill_fee_amount": "", "grace_days": "12",
            "grace_amount": "5.00", "auto_suspend": "1", "auto_restore": "1",
            "suspension_notice_days": "3", "writeoff_threshold": "", "writeoff_days": "90"}
    resp = client.post("/collections/settings/", data=form)
    assert resp.status_code == 302
    row = _read(app, t, lambda s: s.scalar(select(CollectionSettings)))
    assert (row.late_fee_kind, row.late_fee_amount, row.late_fee_max, row.grace_days,
            row.retry_count, row.writeoff_enabled) == ("percent", D("1.5"), D("25"), 12, 2, False)

    bad = client.post("/collections/settings/", data={
        **form, "late_fee_amount": "-10", "grace_days": "soon", "late_fee_kind": "percent",
        "writeoff_enabled": "1"})
    text = bad.get_data(as_text=True)
    assert bad.status_code == 200 and "cannot be negative" in text and "whole number" in text
    over = client.post("/collections/settings/", data={**form, "late_fee_amount": "150"})
    assert "cannot exceed 100" in over.get_data(as_text=True)
    no_threshold = client.post("/collections/settings/", data={**form, "writeoff_enabled": "1"})
    assert "is required" in no_threshold.get_data(as_text=True)
    row = _read(app, t, lambda s: s.scalar(select(CollectionSettings)))
    assert (row.late_fee_amount, row.grace_days, row.writeoff_enabled) == (D("1.5"), 12, False)


def test_read_only_roles_see_the_settings_but_cannot_save(app, make_tenant, login_as):
    t = make_tenant()
    client = login_as(t, "Support")
    page = client.get("/collections/settings/").get_data(as_text=True)
    assert 'id="collection-settings"' in page and 'id="save-collection-settings"' not in page
    client.post("/collections/settings/", data={"grace_days": "99"})
    assert _read(app, t, lambda s: collection_settings(s).grace_days) == 10


def test_profile_box_overrides_promise_and_logs(app, make_tenant, login_as):
    t = make_tenant()
    sid = _overdue_subscriber(app, t)
    client = login_as(t, "Billing")
    profile = client.get(f"/subscriberview/profile/{sid}").get_data(as_text=True)
    assert 'id="collections"' in profile and 'id="collections-log"' in profile
    assert "80.00 USD" in profile  # overdue now

    resp = client.post(f"/collections/subscriber/{sid}/overrides", data={
        "grace_days": "30", "grace_amount": "12.50", "never_suspend": "1"})
    assert resp.status_code == 302 and resp.location.endswith(f"/profile/{sid}#collections")
    row = _read(app, t, lambda s: s.scalar(select(SubscriberCollection)))
    assert (row.grace_days, row.grace_amount, row.never_suspend, row.autopay) == \
        (30, D("12.50"), True, False)
    bad = client.post(f"/collections/subscriber/{sid}/overrides", data={
        "grace_days": "30", "grace_amount": "-1", "autopay": "1"}, follow_redirects=True)
    assert "Grace amount: cannot be negative" in bad.get_data(as_text=True)
    row = _read(app, t, lambda s: s.scalar(select(SubscriberCollection)))
    assert (row.grace_amount, row.autopay) == (D("12.50"), False)

    past = client.post(f"/collections/subscriber/{sid}/promise", data={
        "action": "suspend", "not_before": str(TODAY - dt.timedelta(days=1)),
        "reason": "Paycheck"}, follow_redirects=True)
    assert "Not before: must be after today" in past.get_data(as_text=True)
    assert _read(app, t, _promises) == []
    ok = client.post(f"/collections/subscriber/{sid}/promise", data={
        "action": "suspend", "not_before": str(TODAY + dt.timedelta(days=5)),
        "reason": "Paycheck on Friday"}, follow_redirects=True)
    page = ok.get_data(as_text=True)
    assert "Promise to pay recorded" in page and "Paycheck on Friday" in page
    (promise,) = _read(app, t, _promises)
    assert promise.created_by.startswith("billing-")
    client.post(f"/collections/promise/{promise.id}/cancel")
    assert _read(app, t, _promises)[0].cancelled_at is not None
    log = client.get(f"/subscriberview/profile/{sid}").get_data(as_text=True)
    assert "(cancelled)" in log and "Promise to pay: no suspension" in log


def test_another_tenants_subscriber_and_promise_are_404(app, make_tenant, login_as):
    a, b = make_tenant("A Fiber", "a-fiber"), make_tenant("B Fiber", "b-fiber")
    theirs = _overdue_subscriber(app, b)
    client = login_as(a, "Admin")
    assert client.post(f"/collections/subscriber/{theirs}/promise", data={
        "action": "suspend", "not_before": str(TODAY + dt.timedelta(days=3)),
        "reason": "x"}).status_code == 404
    assert client.post(f"/collections/subscriber/{theirs}/overrides",
                       data={"never_suspend": "1"}).status_code == 404
    assert _read(app, b, _promises) == []
    assert _read(app, b, lambda s: s.scalar(select(SubscriberCollection))) is None


def test_collections_page_lists_overdue_accounts_and_the_aging_chart(app, make_tenant,
                                                                    login_as):
    t = make_tenant()
    late = _overdue_subscriber(app, t, "80.00", days_ago=40)  # due 25 days ago
    _overdue_subscriber(app, t, "15.00", days_ago=5)  # not yet due: current
    client = login_as(t, "Support")
    page = client.get("/collections/").get_data(as_text=True)
    assert 'data-testid="chart-ar-aging"' in page
    assert f'data-subscriber-id="{late}"' in page and "80.00 USD" in page
    assert "suspend" in page and "15.00 USD" in page  # the current bucket


def test_cli_collections_dry_run_then_for_real(app, make_tenant):
    t = make_tenant("Cli Fiber", "cli-fiber")
    sid = _overdue_subscriber(app, t, days_ago=40)  # due 25 days ago: fee and suspension
    env = {"HEADEND_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"]}
    runner = CliRunner()
    day = TODAY.isoformat()
    dry = runner.invoke(main, ["collections", "--date", day, "--dry-run"], env=env,
                        catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    assert f"dry run {day}" in dry.output
    assert "would do cli-fiber" in dry.output and "1 late fees" in dry.output
    assert "1 suspensions" in dry.output
    assert _read(app, t, lambda s: s.scalar(select(func.count(AppliedFee.id)))) == 0
    done = runner.invoke(main, ["collections", "--date", day, "--tenant", "cli-fiber"],
                         env=env, catch_exceptions=False)
    assert done.exit_code == 0 and "1 late fees" in done.output, done.output
    again = runner.invoke(main, ["collections", "--date", day], env=env,
                          catch_exceptions=False)
    assert "cli-fiber" in again.output and "0 late fees" in again.output
    assert "0 suspensions" in again.output
    assert _read(app, t, lambda s: (
        s.scalar(select(func.count(Invoice.id)).where(Invoice.source == "late_fee")),
        s.get(Subscriber, sid).status)) == (1, "suspended")
    unknown = runner.invoke(main, ["collections", "--tenant", "nope"], env=env)
    assert unknown.exit_code != 0 and "no active tenant" in unknown.output


# --- API ------------------------------------------------------------------------------------

def test_api_settings(app, make_tenant, api_as):
    t = make_tenant()
    client, headers = api_as(t, "Billing")
    got = client.get("/api/v1/collections/settings", headers=headers)
    assert got.status_code == 200 and got.get_json()["result"]["grace_days"] == 10
    put = client.put("/api/v1/collections/settings", headers=headers, json={
        "late_fee_days": 5, "late_fee_kind": "fixed", "late_fee_amount": "12.50"})
    assert put.status_code == 200, put.get_json()
    assert D(put.get_json()["result"]["late_fee_amount"]) == D("12.50")
    bad = client.put("/api/v1/collections/settings", headers=headers, json={
        "late_fee_amount": "-1", "grace_days": -3, "bogus": 1, "auto_suspend": "yes"})
    assert bad.status_code == 422
    assert set(bad.get_json()["message"]) == {"late_fee_amount", "bogus"}
    bad = client.put("/api/v1/collections/settings", headers=headers, json={
        "grace_days": -3, "auto_suspend": "yes"})
    assert set(bad.get_json()["message"]) == {"grace_days", "auto_suspend"}
    floats = client.put("/api/v1/collections/settings", headers=headers,
                        json={"late_fee_amount": 1.5})
    assert "not a float" in floats.get_json()["message"]["late_fee_amount"][0]
    assert _read(app, t, lambda s: (collection_settings(s).late_fee_amount,
                                    collection_settings(s).grace_days)) == (D("12.50"), 10)
    cookie_only = client.put("/api/v1/collections/settings", json={"grace_days": 3})
    assert cookie_only.status_code == 401


def test_api_subscriber_overrides_and_promises(app, make_tenant, api_as):
    a, b = make_tenant("A Fiber", "a-fiber"), make_tenant("B Fiber", "b-fiber")
    sid, theirs = _overdue_subscriber(app, a), _overdue_subscriber(app, b)
    client, headers = api_as(a, "Billing")
    got = client.get(f"/api/v1/subscriber_collection/{sid}", headers=headers).get_json()
    assert got["result"]["overdue"] == 8000 and got["result"]["autopay"] is False
    put = client.put(f"/api/v1/subscriber_collection/{sid}", headers=headers,
                     json={"grace_amount": "10.00", "no_late_fees": True})
    assert put.status_code == 200 and put.get_json()["result"]["no_late_fees"] is True
    refused = client.put(f"/api/v1/subscriber_collection/{sid}", headers=headers,
                         json={"autopay": True, "grace_days": "x"})
    assert refused.status_code == 422
    assert set(refused.get_json()["message"]) == {"grace_days", "autopay_method_id"}

    past = client.post(f"/api/v1/subscriber_collection/{sid}/promise", headers=headers, json={
        "action": "late_fee", "not_before": TODAY.isoformat(), "reason": "later"})
    assert past.status_code == 422 and "not_before" in past.get_json()["message"]
    made = client.post(f"/api/v1/subscriber_collection/{sid}/promise", headers=headers, json={
        "action": "late_fee", "not_before": (TODAY + dt.timedelta(days=9)).isoformat(),
        "reason": "Pays with the next invoice"})
    assert made.status_code == 201, made.get_json()
    pid = made.get_json()["result"]["id"]
    assert client.get(f"/api/v1/promise_to_pay/{pid}", headers=headers).status_code == 200
    cancelled = client.delete(f"/api/v1/promise_to_pay/{pid}", headers=headers)
    assert cancelled.status_code == 200 and cancelled.get_json()["result"]["cancelled"] is True
    assert client.delete(f"/api/v1/promise_to_pay/{pid}", headers=headers).status_code == 422

    for method, url in (("GET", f"/api/v1/subscriber_collection/{theirs}"),
                        ("PUT", f"/api/v1/subscriber_collection/{theirs}"),
                        ("POST", f"/api/v1/subscriber_collection/{theirs}/promise")):
        resp = client.open(url, method=method, headers=headers, json={
            "action": "suspend", "not_before": (TODAY + dt.timedelta(days=3)).isoformat(),
            "reason": "x"} if method == "POST" else {})
        assert resp.status_code == 404, (method, url)
    assert _read(app, b, _promises) == []

    overdue = client.get("/api/v1/collections/overdue", headers=headers).get_json()["result"]
    assert [(r["subscriber_id"], r["overdue"], r["next_action"]) for r in overdue] == [
        (sid, 8000, "suspend")]
    aging = client.get("/api/v1/collections/aging", headers=headers).get_json()["result"]
    assert aging == [{"bucket": "current", "amount": 0}, {"bucket": "1-30", "amount": 8000},
                     {"bucket": "31-60", "amount": 0}, {"bucket": "61-90", "amount": 0},
                     {"bucket": "90+", "amount": 0}]


def test_dashboard_shows_the_ar_aging_chart(app, make_tenant, login_as):
    t = make_tenant()
    _overdue_subscriber(app, t, "80.00", days_ago=40)
    page = login_as(t, "ReadOnly").get("/").get_data(as_text=True)
    assert 'data-testid="chart-ar-aging"' in page and "1-30: 80.00 USD" in page


def test_daily_jobs_run_autopay_then_collections_and_audit_them(app, make_tenant):
    from headend.audit.models import AuditLog
    from headend.jobs import daily_jobs

    t = make_tenant("Daily Fiber", "daily-fiber")
    sid = _overdue_subscriber(app, t, days_ago=40)
    with app.app_context():
        jobs = {j.job_id: j for j in daily_jobs(TODAY, app)}
    key = f"{t}:{TODAY.isoformat()}"
    assert jobs[f"autopay:{key}"].result == {"attempts": 0, "processed": 0, "failed": 0,
                                             "charged": 0}
    assert jobs[f"collections:{key}"].result == {
        "write_offs": 0, "late_fees": 1, "rebill_fees": 0, "notices": 0, "suspended": [sid]}
    with app.app_context():
        again = {j.job_id: j for j in daily_jobs(TODAY, app)}  # a restarted scheduler
    assert again[f"collections:{key}"].result["late_fees"] == 0
    with app.app_context(), acting_as(t):
        audited = db.session.execute(select(AuditLog.entity, AuditLog.after).where(
            AuditLog.actor_name == "collections", AuditLog.entity == "subscriber")).all()
        assert [after for _, after in audited] == [{"status": "suspended"}]


def test_a_promise_to_pay_is_audited(app, make_tenant, login_as):
    from headend.audit.models import AuditLog

    t = make_tenant()
    sid = _overdue_subscriber(app, t)
    client = login_as(t, "Billing")
    client.post(f"/collections/subscriber/{sid}/promise", data={
        "action": "suspend", "not_before": str(TODAY + dt.timedelta(days=5)),
        "reason": "Paycheck on Friday"})
    with app.app_context(), acting_as(t):
        (row,) = db.session.scalars(select(AuditLog).where(
            AuditLog.entity == "scheduled_action")).all()
        assert row.action == "create" and row.actor_name.startswith("billing-")
        assert row.after["reason"] == "Paycheck on Friday"


# --- Suspend now / Restore now ----------------------------------------------------------------

def _states(app, tenant, sid):
    def read(s):
        sub = s.get(Subscriber, sid)
        return sub.status, sorted(x.status for x in sub.subscriptions)
    return _read(app, tenant, read)


def test_staff_suspend_now_and_restore_now_from_the_profile(app, make_tenant, login_as):
    from headend.audit.models import AuditLog
    from headend.dunning.models import Notice
    from headend.dunning.services import after_payment

    t = make_tenant()
    sid = _overdue_subscriber(app, t, days_ago=1)  # not past grace: the job would wait
    pm = app.extensions["headend_plugins"]
    listener = ServiceListener()
    pm.register(listener, name="staff-suspension-listener")
    try:
        assert 'id="suspend-now"' not in login_as(t, "Support").get(
            f"/subscriberview/profile/{sid}").get_data(as_text=True)
        client = login_as(t, "Billing")
        page = client.get(f"/subscriberview/profile/{sid}").get_data(as_text=True)
        assert 'id="suspend-now"' in page and 'id="restore-now"' not in page
        resp = client.post(f"/collections/subscriber/{sid}/suspend", follow_redirects=True)
        assert "Service suspended (1 subscriptions)" in resp.get_data(as_text=True)
        assert 'id="restore-now"' in resp.get_data(as_text=True)
        assert _states(app, t, sid) == ("suspended", ["suspended"])
        (subscription_id,) = _read(app, t, lambda s: [x.id for x in s.get(
            Subscriber, sid).subscriptions])
        assert listener.events == [("suspended", subscription_id)]
        again = client.post(f"/collections/subscriber/{sid}/suspend", follow_redirects=True)
        assert "only an active subscriber can be suspended" in again.get_data(as_text=True)
        # a staff suspension is not the job's: no payment lifts it
        assert _read(app, t, lambda s: after_payment(s, sid, TODAY)) == []
        resp = client.post(f"/collections/subscriber/{sid}/restore", follow_redirects=True)
        assert "Service restored (1 subscriptions)" in resp.get_data(as_text=True)
        assert _states(app, t, sid) == ("active", ["active"])
        assert listener.events == [("suspended", subscription_id),
                                   ("restored", subscription_id)]
    finally:
        pm.unregister(listener)
    with app.app_context(), acting_as(t):
        notices = db.session.scalars(select(Notice.message).order_by(Notice.id)).all()
        assert [n.split(" on ")[0] for n in notices] == ["Service suspended",
                                                         "Service restored"]
        assert all(" by billing-" in n for n in notices)
        audited = db.session.execute(select(AuditLog.actor_name, AuditLog.after).where(
            AuditLog.entity == "subscriber", AuditLog.action == "update")).all()
        assert [after for _, after in audited] == [{"status": "suspended"},
                                                   {"status": "active"}]
        assert all(actor.startswith("billing-") for actor, _ in audited)
    # read-only roles cannot
    support = login_as(t, "Support")
    support.post(f"/collections/subscriber/{sid}/suspend")
    assert _states(app, t, sid) == ("active", ["active"])


def test_restore_now_after_the_job_restores_what_the_job_suspended(app, make_tenant,
                                                                   login_as):
    from headend.dunning.collect import run_collections
    from headend.subscribers.services import add_package

    from tests.invoicing_helpers import triple_play

    t = make_tenant()
    sid = _overdue_subscriber(app, t, days_ago=40)
    with app.app_context(), acting_as(t):
        s = db.session
        assert run_collections(s, TODAY).suspended == [sid]
        # suspended apart from collections (by hand): not the job's to give back
        other = add_package(s, sid, triple_play(s).id, billing_cycle="monthly",
                            bill_start_date=TODAY)
        other.status = "suspended"
        s.commit()
        other_id = other.id
    client = login_as(t, "Billing")
    client.post(f"/collections/subscriber/{sid}/restore")
    with app.app_context(), acting_as(t):
        sub = db.session.get(Subscriber, sid)
        states = {x.id: x.status for x in sub.subscriptions}
        assert sub.status == "active" and states.pop(other_id) == "suspended"
        assert set(states.values()) == {"active"}
        assert db.session.scalar(select(SubscriberCollection.suspended_on)) is None


def test_suspend_and_restore_need_the_csrf_token(app, make_tenant, make_user, database_url):
    from headend.app import create_app
    from headend.testing import app_settings

    from tests.test_csrf import _login

    t = make_tenant()
    sid = _overdue_subscriber(app, t, days_ago=1)
    csrf_app = create_app(overrides={**app_settings(database_url), "WTF_CSRF_ENABLED": True})
    client = csrf_app.test_client()
    token = _login(client, make_user(t, "Billing"))
    assert client.post(f"/collections/subscriber/{sid}/suspend").status_code == 400
    assert _states(app, t, sid) == ("active", ["active"])
    assert client.post(f"/collections/subscriber/{sid}/suspend",
                       data={"csrf_token": token}).status_code == 302
    assert _states(app, t, sid) == ("suspended", ["suspended"])


def test_api_suspend_and_restore(app, make_tenant, api_as):
    a, b = make_tenant("A Fiber", "a-fiber"), make_tenant("B Fiber", "b-fiber")
    sid, theirs = _overdue_subscriber(app, a, days_ago=1), _overdue_subscriber(app, b)
    client, headers = api_as(a, "Billing")
    url = f"/api/v1/subscriber_collection/{sid}"
    resp = client.post(f"{url}/suspend", headers=headers)
    assert resp.status_code == 200, resp.get_json()
    result = resp.get_json()["result"]
    assert (result["status"], len(result["subscription_ids"])) == ("suspended", 1)
    refused = client.post(f"{url}/suspend", headers=headers)
    assert refused.status_code == 422 and "status" in refused.get_json()["message"]
    resp = client.post(f"{url}/restore", headers=headers)
    assert resp.status_code == 200 and resp.get_json()["result"]["status"] == "active"
    assert client.post(f"{url}/restore", headers=headers).status_code == 422
    for action in ("suspend", "restore"):
        assert client.post(f"/api/v1/subscriber_collection/{theirs}/{action}",
                           headers=headers).status_code == 404
    assert _states(app, b, theirs) == ("active", ["active"])
    reader, read_headers = api_as(a, "Support")
    assert reader.post(f"{url}/suspend", headers=read_headers).status_code in (401, 403)
    assert _states(app, a, sid) == ("active", ["active"])
