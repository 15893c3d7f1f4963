"""Provisioning end to end: Autofill and Activate, the reconciler against the RouterOS fake and
a real FreeRADIUS (with CoA/Disconnect to the NAS peer), suspension and restore driving the
network through billing's events, drift repaired, an unreachable router reported while the
others proceed, and refused input that writes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from headend.billing.changes import cancel_subscription
from headend.cli import main
from headend.db import db
from headend.dunning.services import restore_now, suspend_now
from headend.errors import ValidationFailed
from headend.network.desired import Rate, service_states
from headend.network.models import NetworkChange, Router
from headend.network.reconcile import diff, reconcile
from headend.network.services import activate, autofill, deactivate, save_router
from headend.plugins.interfaces import RouterEntry
from headend.subscribers.models import ServiceInstance
from headend.tenancy.context import acting_as
from pyrad import packet

from tests import network_helpers as peers
from tests.network_helpers import (
    RATE,
    activated,
    customer,
    enable_network,
    internet_package,
    mikrotik_router,
    radius_nas,
)

# fixtures
freeradius, nas, radius, radius_engine, routeros = (
    peers.freeradius, peers.nas, peers.radius, peers.radius_engine, peers.routeros)

TODAY = dt.date(2026, 3, 10)


@pytest.fixture
def net(books, radius, routeros, nas):
    """A tenant with both drivers on, a MikroTik router, a NAS and the Internet package."""
    s = books
    enable_network(s, radius)
    s.info["router"] = mikrotik_router(s, routeros)
    s.info["nas"] = radius_nas(s, nas)
    s.info["package"] = internet_package(s)
    s.commit()
    return s


def _queue(server, name):
    return next(r for r in server.rows("/queue/simple") if r["name"] == name)


def test_rates_and_diffs():
    assert Rate(10_000_000, 50_000_000, 20_000_000, 100_000_000, 8_000_000, 40_000_000,
                8).radius() == RATE
    assert Rate(512_000, 2_500_500).radius() == "512k/2500500"
    a, b = RouterEntry("queue:a", {"max-limit": "1/2"}), RouterEntry("queue:b", {"x": "1"})
    change = diff([RouterEntry("queue:a", {"max-limit": "1/3"}), RouterEntry("queue:c", {})],
                  [a, b])
    assert ([e.key for e in change.add], [e.key for e in change.change], change.remove) == (
        ["queue:c"], ["queue:a"], ("queue:b",))
    assert diff([a], [a]) == diff([], [])


def test_autofill_gives_a_free_username_and_a_strong_password(net):
    s = net
    sub, service = customer(s, s.info["package"])
    username, password = autofill(s, service.id)
    assert username == f"{sub.account_number}-1"
    assert len(password) == 12 and not set(password) & set("0O1lI")
    activate(s, service.id, username=username, password=password)
    _, other = customer(s, s.info["package"])
    other.subscription.subscriber.account_number = sub.account_number + "x"
    taken = ServiceInstance(subscription=other.subscription, service_line=other.service_line,
                            label="second")
    s.add(taken)
    s.flush()
    activate(s, taken.id, username=f"{sub.account_number}x-2", password="abcdefgh")
    assert autofill(s, taken.id)[0] == f"{sub.account_number}x-2"  # its own name is free
    assert autofill(s, other.id)[0] == f"{sub.account_number}x-1"


@pytest.mark.parametrize("values, field, reason", [
    (dict(username="bad name"), "username", "letters, digits"),
    (dict(username="taken"), "username", "already used"),
    (dict(password="short"), "password", "6-64 characters"),
    (dict(static_ip="10.0.0.300"), "static_ip", "IPv4 or IPv6"),
    (dict(static_ip="10.0.0.5"), "static_ip", "already assigned"),
    (dict(router_id=999999), "router", "not an active router"),
    (dict(download_override=100), "download_override", "does not allow speed overrides"),
])
def test_activation_refuses_bad_input_and_changes_nothing(net, values, field, reason):
    s = net
    activated(s, s.info["package"], static_ip="10.0.0.5", username="taken")
    _, service = customer(s, s.info["package"])
    s.commit()
    with pytest.raises(ValidationFailed) as refused:
        activate(s, service.id, **({"username": "fresh", "password": "s3cretPW"} | values))
    assert reason in " ".join(refused.value.errors[field])
    s.rollback()
    s.refresh(service)
    assert (service.status, service.username, service.static_ip) == ("pending", None, None)


def test_routers_need_a_name_address_and_nas_secret(net):
    with pytest.raises(ValidationFailed) as refused:
        save_router(net, name="Core-1", kind="radius_nas", address="", coa_port=0)
    errors = refused.value.errors
    assert set(errors) == {"name", "address", "coa_port", "radius_secret"}
    assert "already the name" in errors["name"][0]


def test_activation_then_reconcile_provisions_router_and_radius(net, routeros, freeradius,
                                                                nas):
    s = net
    router, bras = s.info["router"], s.info["nas"]
    _, on_api = activated(s, s.info["package"], router, static_ip="10.1.0.7", username="alice")
    _, on_radius = activated(s, s.info["package"], bras, static_ip="10.2.0.9", username="bob")
    s.commit()  # the activations asked for a reconcile, run after the commit (inline here)
    queue = _queue(routeros, "alice")
    assert (queue["max-limit"], queue["burst-limit"], queue["burst-threshold"],
            queue["burst-time"], queue["target"], queue["disabled"]) == (
        "10000000/50000000", "20000000/100000000", "8000000/40000000", "8s/8s",
        "10.1.0.7/32", "false")
    secret = next(r for r in routeros.rows("/ppp/secret") if r["name"] == "alice")
    assert (secret["password"], secret["remote-address"]) == ("s3cretPW", "10.1.0.7")
    code, attributes = freeradius.authenticate("bob", "s3cretPW")
    assert code == packet.AccessAccept
    assert attributes["Mikrotik-Rate-Limit"] == [RATE]
    assert attributes["Framed-IP-Address"] == ["10.2.0.9"]
    assert freeradius.authenticate("alice", "s3cretPW")[0] == packet.AccessReject  # on the API
    assert freeradius.authenticate("bob", "wrong")[0] == packet.AccessReject
    # a second run has nothing to do and writes nothing
    writes = len(routeros.writes)
    again = reconcile(s)
    assert [r.describe() for r in again] == ["radius: nothing to do",
                                             "router Core-1: nothing to do"]
    assert len(routeros.writes) == writes
    recorded = s.scalars(sa.select(NetworkChange.key).where(
        NetworkChange.result == "applied").order_by(NetworkChange.key)).all()
    assert recorded == ["check:bob", "queue:alice", "reply:bob", "secret:alice"]
    assert s.get(Router, router.id).status == "ok"


def test_suspension_and_restore_follow_billing_through_events(net, routeros, freeradius, nas):
    s = net
    router, bras = s.info["router"], s.info["nas"]
    alice, _ = activated(s, s.info["package"], router, static_ip="10.1.0.7", username="alice")
    bob, _ = activated(s, s.info["package"], bras, username="bob")
    s.commit()
    routeros.connect_session("alice", address="10.1.0.7")
    nas.sessions["bob"] = {"Acct-Session-Id": "b0b", "Mikrotik-Rate-Limit": RATE}

    suspend_now(s, alice.id, TODAY)
    suspend_now(s, bob.id, TODAY)
    s.commit()  # the events asked for a reconcile after the commit (inline: no Redis here)
    assert freeradius.authenticate("bob", "s3cretPW")[0] == packet.AccessReject
    assert "bob" not in nas.sessions  # disconnected, so the NAS asks RADIUS again
    assert (_queue(routeros, "alice")["disabled"], routeros.disconnected) == ("true", ["alice"])
    listed = routeros.rows("/ip/firewall/address-list")
    assert [(r["list"], r["address"]) for r in listed] == [("headend-suspended", "10.1.0.7")]

    restore_now(s, alice.id, TODAY)
    restore_now(s, bob.id, TODAY)
    s.commit()
    assert freeradius.authenticate("bob", "s3cretPW")[0] == packet.AccessAccept
    assert _queue(routeros, "alice")["disabled"] == "false"
    assert routeros.rows("/ip/firewall/address-list") == []


def test_a_package_change_reaches_the_live_session(net, routeros, freeradius, nas):
    from headend.billing.changes import change_package

    s = net
    faster = internet_package(s, download_speed=200, upload_speed=40, burst_download=None,
                              burst_upload=None, burst_threshold_download=None,
                              burst_threshold_upload=None, burst_time_seconds=None)
    alice, _ = activated(s, s.info["package"], s.info["router"], username="alice")
    bob, _ = activated(s, s.info["package"], s.info["nas"], username="bob")
    s.commit()
    nas.sessions["bob"] = {"Acct-Session-Id": "b0b", "Mikrotik-Rate-Limit": RATE}
    for sub in (alice, bob):
        change_package(s, sub.subscriptions[0].id, faster.id, TODAY)
    s.commit()
    assert nas.sessions["bob"]["Mikrotik-Rate-Limit"] == "40M/200M"  # CoA, still online
    code, attributes = freeradius.authenticate("bob", "s3cretPW")
    assert (code, attributes["Mikrotik-Rate-Limit"]) == (packet.AccessAccept, ["40M/200M"])
    queue = _queue(routeros, "alice")  # a simple queue change is live on RouterOS
    assert (queue["max-limit"], queue.get("burst-limit", "0/0")) == ("40000000/200000000", "0/0")
    rate = s.scalars(sa.select(NetworkChange).where(NetworkChange.action == "rate")).all()
    assert [(c.key, c.result) for c in rate] == [("reply:bob", "applied")]


def test_drift_is_reported_by_a_dry_run_and_repaired(net, routeros):
    s = net
    activated(s, s.info["package"], s.info["router"], username="alice")
    s.commit()
    queue = _queue(routeros, "alice")
    with routeros_client(routeros) as api:
        api.path("queue", "simple").update(**{".id": queue[".id"], "max-limit": "1M/1M"})
    router_preview = reconcile(s, dry_run=True)[1]
    assert (router_preview.added, router_preview.changed, router_preview.removed) == (0, 1, 0)
    (line,) = router_preview.sample
    assert line.startswith("change queue:alice") and "'max-limit': '10000000/50000000'" in line
    assert _queue(routeros, "alice")["max-limit"] == "1000000/1000000"  # dry run: untouched
    reconcile(s)
    assert _queue(routeros, "alice")["max-limit"] == "10000000/50000000"


def test_a_suspension_entry_disabled_by_hand_is_enabled_again(net, routeros):
    s = net
    alice, _ = activated(s, s.info["package"], s.info["router"], static_ip="10.1.0.7",
                         username="alice")
    s.commit()
    suspend_now(s, alice.id, TODAY)
    s.commit()
    (entry,) = routeros.rows("/ip/firewall/address-list")
    with routeros_client(routeros) as api:
        api.path("ip", "firewall", "address-list").update(**{".id": entry[".id"],
                                                             "disabled": True})
    assert reconcile(s, dry_run=True)[1].changed == 1
    reconcile(s)
    assert routeros.rows("/ip/firewall/address-list")[0]["disabled"] == "false"


def test_an_unreachable_router_is_reported_and_the_others_proceed(net, routeros, freeradius):
    s = net
    routeros.take_down()
    activated(s, s.info["package"], s.info["router"], username="alice")
    activated(s, s.info["package"], None, username="carol")  # RADIUS only
    s.commit()  # the activations' reconcile ran after the commit, the router down
    assert freeradius.authenticate("carol", "s3cretPW")[0] == packet.AccessAccept
    router = s.get(Router, s.info["router"].id)
    s.refresh(router)
    assert router.status == "unreachable" and router.last_error
    failed = s.scalars(sa.select(NetworkChange).where(NetworkChange.result == "failed")).all()
    assert [(f.target, f.action) for f in failed] == [("router Core-1", "reconcile")]
    radius_result, router_result = reconcile(s)
    assert (radius_result.describe(), router_result.status) == (
        "radius: nothing to do", "unreachable")
    routeros.bring_up()
    assert [r.status for r in reconcile(s)] == ["ok", "ok"]
    assert _queue(routeros, "alice")["max-limit"] == "10000000/50000000"


def test_an_entry_the_router_refuses_is_named_and_the_others_are_applied(net, routeros):
    s = net
    routeros.fail_next("/queue/simple/add", "failure: out of memory")
    activated(s, s.info["package"], s.info["router"], username="alice")
    activated(s, s.info["package"], s.info["router"], username="bob")
    s.commit()  # the reconcile after the commit: alice's queue refused, the rest written

    router = s.get(Router, s.info["router"].id)
    s.refresh(router)
    assert router.status == "error" and "queue:alice" in router.last_error
    failed = s.scalars(sa.select(NetworkChange).where(NetworkChange.result == "failed")).all()
    assert [(f.key, f.action, f.error) for f in failed] == [
        ("queue:alice", "add", f"add refused by router Core-1 ({routeros.host}:{routeros.port})"
                               ": failure: out of memory")]
    assert _queue(routeros, "bob")["max-limit"] == "10000000/50000000"
    assert "queue:bob" in s.scalars(sa.select(NetworkChange.key).where(
        NetworkChange.result == "applied")).all()

    (result,) = [r for r in reconcile(s) if r.target == "router Core-1"]
    assert (result.status, result.added, result.changed) == ("ok", 1, 0)
    assert _queue(routeros, "alice")["max-limit"] == "10000000/50000000"


def test_an_unreachable_radius_database_is_reported_and_the_routers_proceed(
        net, routeros, tmp_path):
    from headend.network.reconcile import network_settings
    from headend.plugins.services import configure_plugin

    s = net
    activated(s, s.info["package"], s.info["router"], username="alice")
    configure_plugin(s, "freeradius", True, {
        "database_url": f"sqlite:///{tmp_path / 'gone' / 'radius.db'}"})
    s.commit()

    radius_result, router_result = reconcile(s)

    assert (radius_result.status, router_result.status) == ("unreachable", "ok")
    assert "RADIUS database" in radius_result.error
    assert network_settings(s).radius_status == "unreachable"
    assert _queue(routeros, "alice")["max-limit"] == "10000000/50000000"


def test_on_redis_a_failed_reconcile_comes_back_later(app, net, routeros, on_redis):
    from headend.jobs import queue, rq_job_id
    from headend.network.jobs import RETRY_DELAYS
    from rq import SimpleWorker
    from rq.job import Job

    s = net
    routeros.take_down()
    activated(s, s.info["package"], s.info["router"], username="alice")
    s.commit()  # queued for a worker now, not run in-process
    network = queue("network")
    assert network.count == 1 and routeros.rows("/queue/simple") == []
    SimpleWorker([network], connection=network.connection).work(burst=True)
    retry_id = rq_job_id(f"network-retry:{s.info['tenant']}:1")
    registry = network.scheduled_job_registry
    assert registry.get_job_ids() == [retry_id]
    due = registry.get_scheduled_time(retry_id) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=RETRY_DELAYS[0] - 10) < due <= dt.timedelta(
        seconds=RETRY_DELAYS[0])
    routeros.bring_up()
    Job.fetch(retry_id, connection=network.connection).perform()  # when its time comes
    assert _queue(routeros, "alice")["disabled"] == "false"
    assert registry.get_job_ids() == [retry_id]  # nothing more scheduled: it went through


def test_deactivated_and_cancelled_services_leave_the_network(net, routeros, freeradius):
    s = net
    _, alice = activated(s, s.info["package"], s.info["router"], username="alice")
    _, bob = activated(s, s.info["package"], None, username="bob")
    s.commit()
    assert freeradius.authenticate("bob", "s3cretPW")[0] == packet.AccessAccept
    deactivate(s, alice.id)
    cancel_subscription(s, bob.subscription.id, dt.date.today(), today=dt.date.today())
    s.flush()
    assert (alice.status, bob.subscription.status, bob.status) == (
        "inactive", "cancelled", "cancelled")
    assert bob.username == "bob" and bob.password  # kept for the record
    assert service_states(s) == []
    reconcile(s)
    s.commit()
    assert routeros.rows("/queue/simple") == [] and routeros.rows("/ppp/secret") == []
    assert freeradius.authenticate("bob", "s3cretPW")[0] == packet.AccessReject

    with pytest.raises(ValidationFailed) as refused:
        activate(s, bob.id, username="bob", password="s3cretPW")
    assert refused.value.errors["service"] == ["belongs to a cancelled subscription"]
    activate(s, alice.id, username="alice", password="s3cretPW")  # staff may bring it back
    assert alice.status == "active"


def test_cli_network_reconcile_dry_run_then_apply(app, net, routeros):
    s = net
    routeros.take_down()  # the activation's own reconcile finds it down
    activated(s, s.info["package"], s.info["router"], username="alice")
    tenant = s.info["tenant"]
    slug = s.scalar(sa.text("SELECT slug FROM tenant WHERE id = :t"), {"t": tenant})
    s.commit()
    env = {"HEADEND_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "HEADEND_SECRET_KEY": app.config["SECRET_KEY"]}  # the router's sealed password
    routeros.bring_up()
    runner = CliRunner()
    dry = runner.invoke(main, ["network", "reconcile", "--tenant", slug, "--dry-run"], env=env,
                        catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    assert f"{slug} router Core-1: 2 to add, 0 to change, 0 to remove" in dry.output
    assert "add queue:alice" in dry.output and "s3cretPW" not in dry.output
    assert routeros.rows("/queue/simple") == []
    done = runner.invoke(main, ["network", "reconcile", "--tenant", slug], env=env,
                         catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert _queue(routeros, "alice")["name"] == "alice"
    routeros.take_down()
    down = runner.invoke(main, ["network", "reconcile", "--tenant", slug], env=env)
    assert down.exit_code == 1 and "unreachable" in down.output
    with app.app_context(), acting_as(tenant):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(NetworkChange)
                                 .where(NetworkChange.result == "failed")) == 2


# --- small helpers --------------------------------------------------------------------------

def routeros_client(server):
    import contextlib

    import librouteros

    @contextlib.contextmanager
    def connected():
        api = librouteros.connect(server.host, "admin", "secret", port=server.port)
        try:
            yield api
        finally:
            api.close()
    return connected()

