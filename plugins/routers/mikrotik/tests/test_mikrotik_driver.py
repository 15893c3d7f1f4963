"""The MikroTik driver through the real librouteros client against the RouterOS API fake on
loopback (tests/peers/routeros.py), which prints values back the way a router does."""

from __future__ import annotations

import socket
import time

import librouteros
import pytest
from headend.plugins.interfaces import EntriesRefused, RouterDiff, RouterEntry, RouterUnavailable
from headend.plugins.manager import build_manager
from headend_router_mikrotik import MikrotikDriver
from headend_router_mikrotik.driver import canonical_burst_time, canonical_rate

from tests.peers.routeros import RouterOSServer, Write

QUEUES = "/queue/simple"
SECRETS = "/ppp/secret"
ADDRESS_LIST = "/ip/firewall/address-list"
DRIVER = MikrotikDriver()
SETTINGS = {"timeout": 5}

ALICE_QUEUE = RouterEntry("queue:alice", {
    "name": "alice", "target": "10.0.0.5/32", "max-limit": "10000000/50000000",
    "burst-limit": "20000000/100000000", "burst-threshold": "8000000/40000000",
    "burst-time": "8s/8s", "disabled": "false", "comment": "headend:11",
})
BOB_QUEUE = RouterEntry("queue:bob", {
    "name": "bob", "target": "<pppoe-bob>", "max-limit": "512000/2000000", "disabled": "true",
    "comment": "headend:12",
})
ALICE_SECRET = RouterEntry("secret:alice", {
    "name": "alice", "password": "yes", "service": "pppoe", "profile": "default",
    "remote-address": "10.0.0.5", "disabled": "false", "comment": "headend:11",
})
BOB_SECRET = RouterEntry("secret:bob", {
    "name": "bob", "password": "0012", "service": "pppoe", "profile": "default",
    "disabled": "false", "comment": "headend:12",
})
ALICE_SUSPENDED = RouterEntry("suspended:10.0.0.5", {
    "list": "headend-suspended", "address": "10.0.0.5", "disabled": "false",
    "comment": "headend:11",
})
EVERYTHING = (ALICE_QUEUE, BOB_QUEUE, ALICE_SECRET, BOB_SECRET, ALICE_SUSPENDED)


@pytest.fixture
def server():
    with RouterOSServer() as peer:
        yield peer


@pytest.fixture
def router(server):
    return {"id": 1, "name": "core-1", "address": server.host, "api_port": server.port,
            "username": "admin", "password": "secret", "radius_secret": "", "coa_port": 3799}


@pytest.fixture
def applied(server, router):
    """The router with every example entry applied (one add each); the queues' ids by name."""
    DRIVER.apply_diff(SETTINGS, router, RouterDiff(add=EVERYTHING))
    assert len(server.writes) == len(EVERYTHING)
    return {row["name"]: row[".id"] for row in server.rows(QUEUES)}


def later_writes(server):
    """The writes made after the `applied` fixture's adds."""
    return server.writes[len(EVERYTHING):]


def state(router, settings=SETTINGS):
    return sorted(DRIVER.read_state(settings, router), key=lambda entry: entry.key)


def by_key(*entries):
    return sorted(entries, key=lambda entry: entry.key)


def with_attributes(entry, drop=(), **changes):
    attributes = {k: v for k, v in entry.attributes.items() if k not in drop}
    attributes.update({k.replace("_", "-"): v for k, v in changes.items()})
    return RouterEntry(entry.key, attributes)


def hand_edit(server, menu, row_id, **values):
    """Change an item the way an operator would, in the router's own short forms."""
    api = librouteros.connect(server.host, "admin", "secret", port=server.port, timeout=5)
    try:
        api.path(*menu.strip("/").split("/")).update(**{".id": row_id}, **values)
    finally:
        api.close()


# ---- plugin ------------------------------------------------------------------------------------


def test_registered_through_its_entry_point_with_its_settings():
    driver = build_manager({"mikrotik"}).get("mikrotik")
    assert isinstance(driver, MikrotikDriver)
    assert driver.kind == "router_driver" and driver.name == "MikroTik RouterOS API"
    plain, secret = driver.config_schema.validate({"timeout": "3"})
    assert plain == {"timeout": 3} and secret == {}
    assert driver.config_schema.with_defaults({}) == {
        "timeout": 10, "suspended_list": "headend-suspended"}


@pytest.mark.parametrize("printed, canonical", [
    ("10M/50M", "10000000/50000000"),
    ("10000000/50000000", "10000000/50000000"),
    ("512k/1.5M", "512000/1500000"),
    ("0/0", "0/0"),
    ("fast/50M", "fast/50M"),  # unknown text stays as printed, so it shows up as a difference
])
def test_rates_are_normalised_to_bits_per_second(printed, canonical):
    assert canonical_rate(printed) == canonical


@pytest.mark.parametrize("printed, canonical", [
    ("8/8", "8s/8s"), ("8s/8s", "8s/8s"), ("1m30s/8s", "90s/8s"), ("1h/0s", "3600s/0s"),
    ("soon/8s", "soon/8s"),
])
def test_burst_times_are_normalised_to_seconds(printed, canonical):
    assert canonical_burst_time(printed) == canonical


# ---- read_state and apply_diff -----------------------------------------------------------------


def test_an_empty_router_has_no_entries(router):
    assert DRIVER.read_state(SETTINGS, router) == []


def test_added_entries_read_back_exactly(server, router):
    DRIVER.apply_diff(SETTINGS, router, RouterDiff(add=EVERYTHING))

    assert state(router) == by_key(*EVERYTHING)
    assert [write.command for write in server.writes] == [
        f"{QUEUES}/add", f"{QUEUES}/add", f"{SECRETS}/add", f"{SECRETS}/add",
        f"{ADDRESS_LIST}/add"]
    alice = server.rows(QUEUES)[0]
    assert alice["max-limit"] == "10000000/50000000" and alice["burst-time"] == "8s/8s"
    assert server.rows(SECRETS)[0]["password"] == "yes"


def test_the_suspended_list_comes_from_the_settings(server, router):
    settings = {"timeout": 5, "suspended_list": "cut-off"}
    entry = RouterEntry("suspended:10.0.0.9",
                        {"list": "cut-off", "address": "10.0.0.9", "disabled": "false",
                         "comment": "headend:3"})
    DRIVER.apply_diff(settings, router, RouterDiff(add=(entry, ALICE_SUSPENDED)))

    assert state(router, settings) == [entry]
    assert state(router) == [ALICE_SUSPENDED]


def test_a_change_is_one_set_of_what_differs(server, router, applied):
    slower = with_attributes(ALICE_QUEUE, max_limit="5000000/25000000", disabled="true")
    DRIVER.apply_diff(SETTINGS, router, RouterDiff(change=(slower,)))

    assert later_writes(server) == [Write(f"{QUEUES}/set", {
        ".id": applied["alice"], "max-limit": "5000000/25000000", "disabled": "true"})]
    assert state(router) == by_key(slower, *EVERYTHING[1:])


def test_a_change_clears_optional_attributes_the_entry_no_longer_has(server, router, applied):
    no_burst = with_attributes(ALICE_QUEUE, drop=("burst-limit", "burst-threshold", "burst-time"))
    dynamic = with_attributes(ALICE_SECRET, drop=("remote-address",))
    DRIVER.apply_diff(SETTINGS, router, RouterDiff(change=(no_burst, dynamic)))

    assert [write.command for write in later_writes(server)] == [
        f"{QUEUES}/set", f"{SECRETS}/set"]
    assert state(router) == by_key(no_burst, BOB_QUEUE, dynamic, BOB_SECRET, ALICE_SUSPENDED)


def test_applying_the_same_diff_again_writes_nothing(server, router, applied):
    DRIVER.apply_diff(SETTINGS, router, RouterDiff(add=EVERYTHING, change=EVERYTHING))
    DRIVER.apply_diff(SETTINGS, router, RouterDiff(remove=("queue:nobody", "suspended:10.9.9.9")))
    assert later_writes(server) == []
    assert state(router) == by_key(*EVERYTHING)


def test_remove_deletes_only_those_entries(server, router, applied):
    DRIVER.apply_diff(SETTINGS, router, RouterDiff(
        remove=("queue:bob", "secret:bob", "suspended:10.0.0.5")))

    assert [write.command for write in later_writes(server)] == [
        f"{QUEUES}/remove", f"{SECRETS}/remove", f"{ADDRESS_LIST}/remove"]
    assert state(router) == by_key(ALICE_QUEUE, ALICE_SECRET)


def test_removes_run_before_adds_so_an_entry_can_be_replaced(server, router, applied):
    moved = RouterEntry("queue:carol", {**BOB_QUEUE.attributes, "name": "carol",
                                        "target": "<pppoe-carol>"})
    DRIVER.apply_diff(SETTINGS, router, RouterDiff(add=(moved,), remove=("queue:bob",)))
    assert [write.command for write in later_writes(server)] == [
        f"{QUEUES}/remove", f"{QUEUES}/add"]
    assert [entry.key for entry in state(router) if entry.key.startswith("queue:")] == [
        "queue:alice", "queue:carol"]


def test_hand_made_items_are_never_read_changed_or_removed(server, router):
    hand_made = {
        QUEUES: [{"name": "uplink", "target": "10.1.0.0/24", "max-limit": "1G/1G",
                  "comment": "ISP uplink"},
                 {"name": "bob", "target": "10.1.0.7"}],
        SECRETS: [{"name": "tech", "password": "x", "comment": "field laptop"}],
        ADDRESS_LIST: [{"list": "headend-suspended", "address": "10.0.0.66"},
                       {"list": "blocked", "address": "10.0.0.5", "comment": "headend:11"}],
    }
    for menu, rows in hand_made.items():
        server.load(menu, rows)
    before = {menu: server.rows(menu) for menu in hand_made}

    assert DRIVER.read_state(SETTINGS, router) == []
    DRIVER.apply_diff(SETTINGS, router, RouterDiff(
        remove=("queue:uplink", "queue:bob", "secret:tech", "suspended:10.0.0.66")))
    assert server.writes == []

    with pytest.raises(EntriesRefused) as refused:
        DRIVER.apply_diff(SETTINGS, router, RouterDiff(add=(ALICE_QUEUE, BOB_QUEUE)))
    assert list(refused.value.refused) == ["queue:bob"]
    assert "already have such name" in refused.value.refused["queue:bob"]
    assert state(router) == [ALICE_QUEUE]
    assert server.rows(QUEUES)[:2] == before[QUEUES]
    assert server.rows(SECRETS) == before[SECRETS]
    assert server.rows(ADDRESS_LIST) == before[ADDRESS_LIST]


def test_drift_made_by_hand_shows_in_read_state(server, router, applied):
    hand_edit(server, QUEUES, applied["alice"], **{"max-limit": "20M/100M", "burst-time": "1m/8"})

    drifted = with_attributes(ALICE_QUEUE, max_limit="20000000/100000000", burst_time="60s/8s")
    assert state(router) == by_key(drifted, *EVERYTHING[1:])

    DRIVER.apply_diff(SETTINGS, router, RouterDiff(change=(ALICE_QUEUE,)))
    assert state(router) == by_key(*EVERYTHING)


def test_a_hand_edit_to_the_same_values_in_short_form_is_no_drift(server, router, applied):
    hand_edit(server, QUEUES, applied["alice"],
              **{"max-limit": "10M/50M", "burst-threshold": "8M/40M", "burst-time": "8/8",
                 "target": "10.0.0.5", "disabled": "no"})
    assert state(router) == by_key(*EVERYTHING)


def test_a_router_error_mid_diff_names_the_entry_and_the_others_are_still_written(
        server, router):
    server.fail_next(f"{QUEUES}/add", "failure: out of memory")
    diff = RouterDiff(add=(ALICE_SECRET, ALICE_QUEUE, ALICE_SUSPENDED))

    with pytest.raises(EntriesRefused) as failure:
        DRIVER.apply_diff(SETTINGS, router, diff)
    assert failure.value.refused == {"queue:alice": (
        f"add refused by router core-1 ({server.host}:{server.port}): failure: out of memory")}
    assert str(failure.value).startswith("1 refused - queue:alice: add refused by router")
    assert state(router) == by_key(ALICE_SECRET, ALICE_SUSPENDED)

    DRIVER.apply_diff(SETTINGS, router, diff)
    assert state(router) == by_key(ALICE_QUEUE, ALICE_SECRET, ALICE_SUSPENDED)


def test_values_the_router_refuses_are_each_named_and_the_good_entries_written(router):
    broken_bob = with_attributes(BOB_QUEUE, max_limit="fast/50M")
    broken_alice = with_attributes(ALICE_QUEUE, max_limit="slow/50M")
    with pytest.raises(EntriesRefused) as refused:
        DRIVER.apply_diff(SETTINGS, router, RouterDiff(add=(broken_alice, ALICE_SECRET,
                                                            broken_bob)))
    assert sorted(refused.value.refused) == ["queue:alice", "queue:bob"]
    assert all("value of max-limit out" in reason for reason in refused.value.refused.values())
    assert state(router) == [ALICE_SECRET]


def test_an_unknown_key_is_refused_before_connecting(server):
    unreachable = {"name": "x", "address": "127.0.0.1", "api_port": 1}
    with pytest.raises(ValueError, match="route:1: not a MikroTik entry"):
        DRIVER.apply_diff(SETTINGS, unreachable, RouterDiff(remove=("route:1",)))


# ---- live sessions -----------------------------------------------------------------------------


def test_disconnect_removes_the_users_sessions(server, router):
    server.connect_session("alice", "10.0.0.5")
    server.connect_session("bob", "10.0.0.6")
    server.connect_session("alice", "10.0.0.7")

    DRIVER.disconnect(SETTINGS, router, "alice")
    assert server.disconnected == ["alice", "alice"]
    assert [row["name"] for row in server.rows("/ppp/active")] == ["bob"]


def test_disconnect_without_a_session_is_fine(server, router):
    server.connect_session("bob")
    DRIVER.disconnect(SETTINGS, router, "alice")
    assert server.disconnected == [] and server.writes == []


def test_a_refused_read_or_disconnect_names_the_router(server, router):
    server.connect_session("alice")
    server.fail_next("/ppp/active/remove", "failure: busy")
    with pytest.raises(RuntimeError, match=r"^router core-1 \(127.0.0.1:\d+\) refused: failure"):
        DRIVER.disconnect(SETTINGS, router, "alice")
    server.fail_next(f"{QUEUES}/print", "failure: busy")
    with pytest.raises(RuntimeError, match="refused: failure: busy"):
        DRIVER.read_state(SETTINGS, router)
    assert server.disconnected == []


def test_change_rate_is_a_no_op_because_queue_changes_are_live(server, router, applied):
    DRIVER.change_rate(SETTINGS, router, "alice", "5M/25M")
    assert later_writes(server) == [] and state(router) == by_key(*EVERYTHING)


# ---- an unreachable router ---------------------------------------------------------------------


def test_a_router_that_refuses_connections_is_unavailable_at_once(server, router):
    server.take_down()
    started = time.monotonic()
    for call in (lambda: DRIVER.read_state(SETTINGS, router),
                 lambda: DRIVER.apply_diff(SETTINGS, router, RouterDiff(add=(ALICE_QUEUE,))),
                 lambda: DRIVER.disconnect(SETTINGS, router, "alice")):
        with pytest.raises(RouterUnavailable, match=r"router core-1 .* unreachable"):
            call()
    assert time.monotonic() - started < 1

    server.bring_up()
    assert DRIVER.read_state(SETTINGS, router) == []


def test_a_router_that_never_answers_times_out_after_the_setting(router):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # connections complete in the kernel; nothing ever answers the login
    try:
        mute = {**router, "api_port": silent.getsockname()[1]}
        started = time.monotonic()
        with pytest.raises(RouterUnavailable, match="unreachable: timed out"):
            DRIVER.read_state({"timeout": 1}, mute)
        assert 1 <= time.monotonic() - started < 5
    finally:
        silent.close()


def test_wrong_credentials_are_reported_as_unavailable(router):
    with pytest.raises(RouterUnavailable, match="refused the login: invalid user name"):
        DRIVER.read_state(SETTINGS, {**router, "password": "wrong"})


# ---- scale -------------------------------------------------------------------------------------


def test_ten_thousand_subscribers_read_state(server, router, capsys):
    count = 10_000
    server.load(QUEUES, ({
        "name": f"sub-{n}", "target": f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}",
        "max-limit": "10M/50M", "burst-limit": "20M/100M", "burst-threshold": "8M/40M",
        "burst-time": "8/8", "comment": f"headend:{n}"} for n in range(count)))
    server.load(SECRETS, ({"name": f"sub-{n}", "password": f"pw-{n}", "service": "pppoe",
                           "comment": f"headend:{n}"} for n in range(count)))
    server.load(QUEUES, [{"name": "uplink", "target": "10.200.0.0/16", "comment": "by hand"}])

    started = time.perf_counter()
    entries = DRIVER.read_state(SETTINGS, router)
    elapsed = time.perf_counter() - started

    assert len(entries) == 2 * count
    assert entries[count - 1] == RouterEntry(f"queue:sub-{count - 1}", {
        "name": f"sub-{count - 1}", "target": "10.0.39.15/32", "max-limit": "10000000/50000000",
        "burst-limit": "20000000/100000000", "burst-threshold": "8000000/40000000",
        "burst-time": "8s/8s", "disabled": "false", "comment": f"headend:{count - 1}"})
    with capsys.disabled():
        print(f"\nread_state of {count} queues + {count} PPP secrets: {elapsed:.2f} s")
