"""The RouterOS API fake, driven by the real librouteros client over loopback TCP."""

from __future__ import annotations

import socket
import threading

import librouteros
import pytest
from librouteros.api import Api
from librouteros.connections import SocketTransport
from librouteros.exceptions import ConnectionClosed, FatalError, TrapError
from librouteros.protocol import ApiProtocol
from librouteros.query import And, Key, Or

from tests.peers.routeros import RouterOSServer

QUEUES = "/queue/simple"
SECRETS = "/ppp/secret"
ADDRESS_LIST = "/ip/firewall/address-list"
ACTIVE = "/ppp/active"


@pytest.fixture
def router():
    with RouterOSServer() as server:
        yield server


@pytest.fixture
def api(router):
    connection = librouteros.connect(router.host, "admin", "secret", port=router.port, timeout=5)
    yield connection
    connection.close()


def raw_api(server: RouterOSServer) -> tuple[Api, socket.socket]:
    """librouteros's own Api on a socket that has not logged in."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    return Api(ApiProtocol(SocketTransport(sock), "ASCII")), sock


def queue(**kwargs):
    """Queue attributes as a driver writes them (librouteros kwargs)."""
    return {key.replace("_", "-"): value for key, value in kwargs.items()}


# ---- login -------------------------------------------------------------------------------------


def test_login_and_system_menus(router, api):
    assert router.port > 0 and router.host == "127.0.0.1"
    assert tuple(api.path("system", "identity")) == ({"name": "MikroTik"},)
    (resource,) = tuple(api.path("system", "resource"))
    assert resource["version"] == "7.16 (stable)"
    assert resource["board-name"] == "CCR2004-1G-12S+2XS"
    assert tuple(api.path("system", "resource").select(Key("version"))) == (
        {"version": "7.16 (stable)"},
    )


def test_wrong_password_raises_trap_error_and_server_hangs_up(router):
    with pytest.raises(TrapError) as failure:
        librouteros.connect(router.host, "admin", "wrong", port=router.port, timeout=5)
    assert failure.value.message == "invalid user name or password (6)"

    raw, sock = raw_api(router)
    with pytest.raises(TrapError, match="invalid user name or password"):
        tuple(raw.rawCmd("/login", "=name=nobody", "=password=secret"))
    assert sock.recv(1) == b"", "the router closes the connection after a failed login"
    sock.close()


def test_commands_before_login_trap(router):
    raw, sock = raw_api(router)
    with pytest.raises(TrapError, match="not logged in"):
        tuple(raw.rawCmd("/queue/simple/print"))
    tuple(raw.rawCmd("/login", "=name=admin", "=password=secret"))
    assert tuple(raw.rawCmd("/queue/simple/print")) == ()
    sock.close()


def test_quit_answers_fatal(api):
    with pytest.raises(FatalError, match="session terminated on request"):
        tuple(api("/quit"))


# ---- /queue/simple -----------------------------------------------------------------------------


def test_queue_add_print_where_update_remove(router, api):
    queues = api.path("queue", "simple")
    first = queues.add(**queue(name="sub-1", target="10.0.0.1", max_limit="10M/50M", comment="A"))
    second = queues.add(**queue(name="sub-2", target="10.0.0.2/32", max_limit="512k/2M"))
    assert (first, second) == ("*1", "*2")

    rows = {row["name"]: row for row in queues}
    assert rows["sub-1"] == {
        ".id": "*1",
        "name": "sub-1",
        "target": "10.0.0.1/32",
        "max-limit": "10000000/50000000",
        "limit-at": "0/0",
        "burst-limit": "0/0",
        "burst-threshold": "0/0",
        "burst-time": "0s/0s",
        "comment": "A",
        "disabled": False,
    }
    assert "comment" not in rows["sub-2"], "an unset property is left out, as RouterOS does"
    assert rows["sub-2"]["max-limit"] == "512000/2000000"

    found = tuple(queues.select().where(Key("name") == "sub-2"))
    assert [row[".id"] for row in found] == ["*2"]

    queues.update(**{".id": first, "max-limit": "20M/100M", "disabled": True, "comment": ""})
    (changed,) = queues.select().where(Key(".id") == first)
    assert changed["max-limit"] == "20000000/100000000"
    assert changed["burst-time"] == "0s/0s"
    assert changed["disabled"] is True
    assert "comment" not in changed

    queues.update(**{".id": second, "max-limit": ""})
    assert router.rows(QUEUES)[1]["max-limit"] == "0/0", "an emptied property is back to default"
    queues.remove(first)
    assert [row["name"] for row in router.rows(QUEUES)] == ["sub-2"]


def test_queue_burst_settings_and_default_name(router, api):
    queues = api.path("queue", "simple")
    queues.add(
        target="10.0.0.9",
        **queue(
            max_limit="1000000/5000000",
            burst_limit="2M/10M",
            burst_threshold="800k/4M",
            burst_time="8/8",
            limit_at="0/0",
        ),
    )
    queues.add(**queue(target="<pppoe-alice>", burst_time="1m30s/8s"))
    first, second = router.rows(QUEUES)
    assert first["name"] == "queue1" and second["name"] == "queue2"
    assert first["burst-limit"] == "2000000/10000000"
    assert first["burst-threshold"] == "800000/4000000"
    assert first["burst-time"] == "8s/8s"
    assert second["target"] == "<pppoe-alice>"
    assert second["burst-time"] == "1m30s/8s"


@pytest.mark.parametrize(
    "value, stored",
    [
        ("10M/50M", "10000000/50000000"),
        ("512k/2M", "512000/2000000"),
        ("0/0", "0/0"),
        ("1000000/5000000", "1000000/5000000"),
        ("1.5M/1G", "1500000/1000000000"),
    ],
)
def test_rates_are_stored_in_bits_per_second(router, api, value, stored):
    api.path("queue", "simple").add(name="q", target="10.0.0.1", **{"max-limit": value})
    assert router.rows(QUEUES)[0]["max-limit"] == stored


@pytest.mark.parametrize("prop", ["max-limit", "burst-limit", "burst-threshold", "limit-at"])
@pytest.mark.parametrize("value", ["fast", "10M", "10X/5M", "-1/5M", "5000000000/1", "1/2/3"])
def test_bad_rate_traps_and_adds_nothing(router, api, prop, value):
    with pytest.raises(TrapError) as failure:
        api.path("queue", "simple").add(name="q", target="10.0.0.1", **{prop: value})
    assert failure.value.message == f"value of {prop} out of range (0..4294967295)"
    assert router.rows(QUEUES) == [] and router.writes == []


def test_bad_burst_time_traps(api):
    with pytest.raises(TrapError, match="value of burst-time out of range"):
        api.path("queue", "simple").add(target="10.0.0.1", **{"burst-time": "soon/8s"})


def test_duplicate_queue_name_traps_and_stays_in_step(router, api):
    queues = api.path("queue", "simple")
    queues.add(name="sub-1", target="10.0.0.1")
    other = queues.add(name="sub-2", target="10.0.0.2")
    with pytest.raises(TrapError) as failure:
        queues.add(name="sub-1", target="10.0.0.3")
    assert failure.value.message == "failure: already have such name"
    with pytest.raises(TrapError, match="already have such name"):
        queues.update(**{".id": other, "name": "sub-1"})
    # exactly one !done followed each trap: the next reply is this command's own
    assert [row["name"] for row in queues] == ["sub-1", "sub-2"]
    assert [write.command for write in router.writes] == [f"{QUEUES}/add"] * 2


def test_ids_are_hex_and_never_reused(api):
    queues = api.path("queue", "simple")
    ids = [queues.add(target=f"10.0.0.{n}") for n in range(1, 11)]
    assert ids[-2:] == ["*9", "*A"]
    queues.remove("*A")
    assert queues.add(target="10.0.0.99") == "*B"


def test_update_and_remove_several_ids(router, api):
    queues = api.path("queue", "simple")
    ids = [queues.add(name=f"q{n}", target=f"10.0.0.{n}") for n in range(1, 4)]
    queues.update(**{".id": ",".join(ids[:2]), "max-limit": "1M/1M"})
    assert [row["max-limit"] for row in router.rows(QUEUES)] == ["1000000/1000000"] * 2 + ["0/0"]
    queues.remove(*ids[1:])
    assert [row[".id"] for row in router.rows(QUEUES)] == ["*1"]


def test_unknown_id_traps_and_changes_nothing(router, api):
    queues = api.path("queue", "simple")
    queues.add(name="q", target="10.0.0.1")
    with pytest.raises(TrapError) as failure:
        queues.update(**{".id": "*99", "max-limit": "1M/1M"})
    assert failure.value.message == "no such item"
    with pytest.raises(TrapError, match="no such item"):
        queues.remove("*1", "*99")
    assert len(router.rows(QUEUES)) == 1


def test_unknown_parameter_traps(api):
    with pytest.raises(TrapError) as failure:
        api.path("queue", "simple").add(target="10.0.0.1", speed="fast")
    assert failure.value.message == "unknown parameter speed"


def test_unknown_command_and_menu_trap(api):
    with pytest.raises(TrapError) as failure:
        tuple(api.path("ip", "nothing-here"))
    assert failure.value.message == "no such command prefix"
    with pytest.raises(TrapError, match="no such command"):
        tuple(api.path("queue", "simple")("frobnicate"))
    with pytest.raises(TrapError, match="no such command"):
        tuple(api.path("system", "identity")("set", name="hacked"))


def test_missing_required_value_traps(api):
    with pytest.raises(TrapError, match=r"missing value\(s\) of argument\(s\) target"):
        api.path("queue", "simple").add(name="no-target")


# ---- queries -----------------------------------------------------------------------------------


@pytest.fixture
def three_queues(router):
    router.load(
        QUEUES,
        [
            {"name": "alpha", "target": "10.0.0.1", "comment": "vip"},
            {"name": "bravo", "target": "10.0.0.2", "disabled": "yes"},
            {"name": "charlie", "target": "10.0.0.3"},
        ],
    )


def names(rows):
    return [row["name"] for row in rows]


def test_proplist_returns_only_those_properties(api, three_queues):
    rows = tuple(api.path("queue", "simple").select(Key(".id"), Key("name")))
    assert rows[0] == {".id": "*1", "name": "alpha"}
    assert all(set(row) == {".id", "name"} for row in rows)


def test_query_operators(api, three_queues):
    queues = api.path("queue", "simple")
    name = Key("name")
    assert names(queues.select().where(Or(name == "alpha", name == "charlie"))) == [
        "alpha",
        "charlie",
    ]
    assert names(queues.select().where(And(name != "alpha", Key("disabled") == False))) == [  # noqa: E712
        "charlie"
    ]
    assert names(queues.select().where(Key("disabled") == True)) == ["bravo"]  # noqa: E712
    assert names(queues.select().where(name.In("alpha", "bravo", "zulu"))) == ["alpha", "bravo"]
    assert names(queues.select().where(name > "alpha", name < "charlie")) == ["bravo"]
    assert names(queues.select().where(Key("max-limit") == "0/0")) == names(queues)


def test_presence_queries_and_raw_words(api, three_queues):
    queues = api.path("queue", "simple")
    assert names(queues.select().where(["?comment"])) == ["alpha"]
    assert names(queues.select().where(["?-comment"])) == ["bravo", "charlie"]
    assert names(api.rawCmd("/queue/simple/print", "?name=bravo")) == ["bravo"]
    assert names(api.rawCmd("/queue/simple/print", "?=name=bravo", "?=name=alpha", "?#|!")) == [
        "charlie"
    ]
    assert tuple(api.rawCmd("/queue/simple/print", "=count-only=", "?disabled=no")) == ({"ret": 2},)


def test_query_with_empty_stack_traps(api, three_queues):
    with pytest.raises(TrapError, match="invalid query"):
        tuple(api.rawCmd("/queue/simple/print", "?#|"))


# ---- /ppp/secret -------------------------------------------------------------------------------


def test_ppp_secret_lifecycle(router, api):
    secrets = api.path("ppp", "secret")
    alice = secrets.add(name="alice", password="pw1", profile="10M", service="pppoe")
    secrets.add(name="bob", password="pw2", **{"remote-address": "100.64.0.2"})
    rows = {row["name"]: row for row in secrets}
    assert rows["alice"] == {
        ".id": alice,
        "name": "alice",
        "password": "pw1",
        "service": "pppoe",
        "profile": "10M",
        "disabled": False,
    }
    assert rows["bob"]["service"] == "any" and rows["bob"]["profile"] == "default"
    assert names(secrets.select().where(["?-remote-address"])) == ["alice"]

    with pytest.raises(TrapError, match="failure: already have such name"):
        secrets.add(name="alice", password="x")
    with pytest.raises(TrapError, match="input does not match any value of service"):
        secrets.add(name="carol", service="telnet")

    tuple(secrets("disable", **{".id": alice}))
    assert names(secrets.select().where(Key("disabled") == True)) == ["alice"]  # noqa: E712
    tuple(secrets("enable", **{".id": alice}))
    secrets.update(**{".id": alice, "password": "new", "profile": "suspended"})
    (row,) = secrets.select(Key("password"), Key("profile")).where(Key("name") == "alice")
    assert row == {"password": "new", "profile": "suspended"}
    secrets.remove(alice)
    assert names(router.rows(SECRETS)) == ["bob"]


# ---- /ip/firewall/address-list -----------------------------------------------------------------


def test_address_list_lifecycle(router, api):
    lists = api.path("ip", "firewall", "address-list")
    entry = lists.add(list="suspended", address="100.64.0.7/32", comment="sub 7")
    lists.add(list="suspended", address="100.64.0.8")
    lists.add(list="walled", address="100.64.0.7")
    assert [(row["list"], row["address"]) for row in router.rows(ADDRESS_LIST)] == [
        ("suspended", "100.64.0.7"),
        ("suspended", "100.64.0.8"),
        ("walled", "100.64.0.7"),
    ]
    with pytest.raises(TrapError) as failure:
        lists.add(list="suspended", address="100.64.0.7")
    assert failure.value.message == "failure: already have such entry"

    found = lists.select(Key(".id")).where(
        Key("list") == "suspended", Key("address") == "100.64.0.7"
    )
    assert tuple(found) == ({".id": entry},)
    tuple(lists("disable", **{".id": entry}))
    assert router.rows(ADDRESS_LIST)[0]["disabled"] == "true"
    lists.remove(entry)
    assert len(router.rows(ADDRESS_LIST)) == 2


# ---- /ppp/active -------------------------------------------------------------------------------


def test_ppp_active_remove_records_the_disconnect(router, api):
    alice = router.connect_session("alice", address="100.64.0.2", caller_id="AA:BB:CC:00:00:01")
    router.connect_session("bob", address="100.64.0.3", uptime="1h2m3s")
    active = api.path("ppp", "active")
    rows = {row["name"]: row for row in active}
    assert rows["alice"]["address"] == "100.64.0.2"
    assert rows["alice"]["caller-id"] == "AA:BB:CC:00:00:01"
    assert rows["bob"]["uptime"] == "1h2m3s" and rows["bob"]["service"] == "pppoe"

    (found,) = active.select(Key(".id")).where(Key("name") == "alice")
    active.remove(found[".id"])
    assert found[".id"] == alice
    assert router.disconnected == ["alice"]
    assert names(active) == ["bob"]
    with pytest.raises(TrapError, match="no such command"):
        active.add(name="mallory")


# ---- test hooks --------------------------------------------------------------------------------


def test_writes_record_only_write_commands(router, api, three_queues):
    queues = api.path("queue", "simple")
    tuple(queues)
    tuple(queues.select().where(Key("name") == "alpha"))
    assert router.writes == [], "reading wrote nothing"
    queues.update(**{".id": "*1", "max-limit": "1M/1M"})
    tuple(queues("disable", **{".id": "*1"}))
    queues.remove("*2")
    assert [(w.command, w.attributes) for w in router.writes] == [
        (f"{QUEUES}/set", {".id": "*1", "max-limit": "1M/1M"}),
        (f"{QUEUES}/disable", {".id": "*1"}),
        (f"{QUEUES}/remove", {".id": "*2"}),
    ]


def test_fail_next_traps_once_without_executing(router, api):
    queues = api.path("queue", "simple")
    router.fail_next(f"{QUEUES}/add", "failure: out of memory")
    with pytest.raises(TrapError) as failure:
        queues.add(name="q", target="10.0.0.1")
    assert failure.value.message == "failure: out of memory"
    assert router.rows(QUEUES) == [] and router.writes == []
    assert queues.add(name="q", target="10.0.0.1") == "*1"


def test_reset_forgets_everything(router, api, three_queues):
    router.connect_session("alice")
    router.fail_next(f"{QUEUES}/print", "boom")
    api.path("queue", "simple").remove("*1")
    router.reset()
    assert router.rows(QUEUES) == [] and router.rows(ACTIVE) == []
    assert router.writes == [] and router.disconnected == []
    assert tuple(api.path("queue", "simple")) == ()
    assert api.path("queue", "simple").add(target="10.0.0.1") == "*1"


def test_unreachable_then_reachable_on_the_same_port(router, api):
    api.path("queue", "simple").add(name="kept", target="10.0.0.1")
    port = router.port
    router.take_down()
    with pytest.raises(ConnectionRefusedError):
        librouteros.connect(router.host, "admin", "secret", port=port, timeout=5)
    with pytest.raises((ConnectionClosed, OSError)):
        tuple(api.path("queue", "simple"))

    router.bring_up()
    assert router.port == port
    again = librouteros.connect(router.host, "admin", "secret", port=port, timeout=5)
    assert names(again.path("queue", "simple")) == ["kept"]
    again.close()


def test_long_words_use_multi_byte_lengths(router, api):
    comments = ["x" * 200, "y" * 20_000]
    queues = api.path("queue", "simple")
    for n, comment in enumerate(comments, 1):
        queues.add(target=f"10.0.0.{n}", comment=comment)
    assert [row["comment"] for row in queues] == comments


def test_connections_share_state_safely(router):
    def add_queues(worker: int) -> None:
        client = librouteros.connect(router.host, "admin", "secret", port=router.port, timeout=5)
        for n in range(50):
            client.path("queue", "simple").add(name=f"w{worker}-{n}", target=f"10.{worker}.0.{n}")
        client.close()

    threads = [threading.Thread(target=add_queues, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = router.rows(QUEUES)
    assert len(rows) == 200
    assert {row[".id"] for row in rows} == {f"*{n:X}" for n in range(1, 201)}


def test_ten_thousand_queues_print(router, api):
    router.load(
        QUEUES,
        (
            {"name": f"sub-{n}", "target": f"10.{n >> 8}.{n & 255}.1", "max-limit": "10M/50M"}
            for n in range(10_000)
        ),
    )
    assert router.writes == []
    assert len(tuple(api.path("queue", "simple"))) == 10_000
    assert len(tuple(api.path("queue", "simple").select(Key(".id"), Key("max-limit")))) == 10_000
