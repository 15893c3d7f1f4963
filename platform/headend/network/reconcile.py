"""The reconciler: for each target (every active MikroTik router, and the tenant's RADIUS
database), desired entries from billing state, actual entries read back from the target, and
only the difference applied. Idempotent: a second run finds nothing to do. A target that
cannot be reached is reported and never stops the others; the next run repairs what it missed.

Live changes follow the applied difference: a service newly suspended is disconnected (so its
session re-authenticates into the suspended state), and a changed rate is pushed to the live
session (CoA on a RADIUS NAS; a MikroTik simple queue is live already).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.db import utcnow
from headend.network.desired import (
    SUSPENDED_GROUP,
    ServiceState,
    mikrotik_entries,
    radius_entries,
    service_states,
)
from headend.network.models import NetworkChange, NetworkSettings, Router
from headend.plugins.interfaces import (
    EntriesRefused,
    RouterDiff,
    RouterDriver,
    RouterEntry,
    RouterUnavailable,
)
from headend.secrets import unseal
from headend.tenancy.context import current_scope

SECRET_ATTRIBUTES = {"password", "Cleartext-Password"}
SAMPLE = 20  # changes listed per target in a preview


def diff(desired: Iterable[RouterEntry], actual: Iterable[RouterEntry]) -> RouterDiff:
    """What turns `actual` into `desired`: new keys added, different attributes changed (to
    the whole desired entry), keys no longer wanted removed."""
    want = {e.key: e for e in desired}
    have = {e.key: e for e in actual}
    return RouterDiff(
        add=tuple(want[k] for k in sorted(want.keys() - have.keys())),
        change=tuple(want[k] for k in sorted(want.keys() & have.keys())
                     if dict(want[k].attributes) != dict(have[k].attributes)),
        remove=tuple(sorted(have.keys() - want.keys())))


@dataclass
class TargetResult:
    target: str
    added: int = 0
    changed: int = 0
    removed: int = 0
    live: int = 0
    status: str = "ok"  # ok / unreachable / error
    error: str | None = None
    sample: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.status != "ok":
            return f"{self.target}: {self.status} - {self.error}"
        if not (self.added or self.changed or self.removed):
            return f"{self.target}: nothing to do"
        return (f"{self.target}: {self.added} to add, {self.changed} to change, "
                f"{self.removed} to remove")


@dataclass(frozen=True)
class Target:
    """One place entries live: a router (mikrotik) or the RADIUS database (router None)."""

    name: str
    driver: RouterDriver
    settings: dict
    router: Router | None
    entries: Callable[[list[ServiceState]], list[RouterEntry]]
    serves: Callable[[ServiceState], bool]


def router_mapping(router: Router | None) -> dict:
    """What a driver is told about a router (secrets unsealed)."""
    if router is None:
        return {}
    secrets = unseal(router.secret_config)
    return {"id": router.id, "name": router.name, "address": router.address,
            "api_port": router.api_port, "username": router.username or "",
            "password": secrets.get("password", ""),
            "radius_secret": secrets.get("radius_secret", ""), "coa_port": router.coa_port}


def drivers(session: Session) -> dict[str, tuple[RouterDriver, dict]]:
    """The acting tenant's enabled router drivers, with their settings."""
    from headend.plugins.manager import current_manager
    from headend.plugins.services import plugin_settings

    tenant_id = current_scope().tenant_id
    return {d.plugin_id: (d, plugin_settings(session, d.plugin_id, d))
            for d in current_manager().plugins_for(tenant_id, RouterDriver.kind)}


def targets(session: Session, router_ids: Iterable[int] | None = None) -> list[Target]:
    """The RADIUS database when the FreeRADIUS driver is on, then each active MikroTik router
    when the MikroTik driver is on (or only the routers named).

    A service belongs to the router it is assigned to: a MikroTik router managed through its
    API holds its queue and PPP secret; a service on a RADIUS NAS, or on no router, is in the
    RADIUS database (the NAS asks RADIUS, and takes CoA/Disconnect)."""
    enabled = drivers(session)
    out = []
    if "freeradius" in enabled and router_ids is None:
        driver, settings = enabled["freeradius"]
        api_routers = set(session.scalars(sa.select(Router.id).where(Router.kind == "mikrotik")))
        out.append(Target("radius", driver, settings, None, radius_entries,
                          lambda s: s.router_id not in api_routers))
    if "mikrotik" in enabled:
        driver, settings = enabled["mikrotik"]
        stmt = sa.select(Router).where(Router.kind == "mikrotik", Router.active.is_(True))
        if router_ids is not None:
            stmt = stmt.where(Router.id.in_(list(router_ids)))
        suspended_list = settings.get("suspended_list") or "headend-suspended"
        for router in session.scalars(stmt.order_by(Router.id)):
            out.append(Target(
                f"router {router.name}", driver, settings, router,
                lambda states, lst=suspended_list: mikrotik_entries(states, lst),
                lambda s, rid=router.id: s.router_id == rid))
    return out


def _describe(action: str, entry_key: str, attributes=None) -> str:
    shown = {k: v for k, v in (attributes or {}).items() if k not in SECRET_ATTRIBUTES}
    return f"{action} {entry_key}" + (f" {shown}" if shown else "")


def reconcile(session: Session, *, dry_run: bool = False,
              router_ids: Iterable[int] | None = None,
              today: dt.date | None = None) -> list[TargetResult]:
    """Make every target of the acting tenant equal to billing state (and data caps as of
    `today`), or, dry run, say what that would change. Changes and failures are recorded as
    NetworkChange rows; the caller commits."""
    states = service_states(session, today=today)
    results = []
    for target in targets(session, router_ids):
        results.append(_reconcile_target(session, target, states, dry_run))
    return results


def _reconcile_target(session: Session, target: Target, states: list[ServiceState],
                      dry_run: bool) -> TargetResult:
    result = TargetResult(target.name)
    mapping = router_mapping(target.router)
    desired = target.entries([s for s in states if target.serves(s)])
    try:
        actual = target.driver.read_state(target.settings, mapping)
        change = diff(desired, actual)
        result.added, result.changed, result.removed = (
            len(change.add), len(change.change), len(change.remove))
        result.sample = ([_describe("add", e.key, e.attributes) for e in change.add]
                         + [_describe("change", e.key, e.attributes) for e in change.change]
                         + [_describe("remove", k) for k in change.remove])[:SAMPLE]
        if dry_run:
            return result
        if not (change.add or change.change or change.remove):
            _record_status(session, target, "ok", None)
            return result
        refused = {}
        try:
            target.driver.apply_diff(target.settings, mapping, change)
        except EntriesRefused as exc:
            refused = exc.refused
            result.status, result.error = "error", str(exc)[:500]
        applied = _without(change, refused)
        _record_changes(session, target, applied, "applied", None)
        for key, reason in refused.items():
            _change_row(session, target, key, _action(change, key), None, "failed", reason[:500])
        result.live = _live_changes(session, target, states, actual, applied)
        if not refused:
            _record_status(session, target, "ok", None)
        else:
            _record_status(session, target, "error", result.error)
            return result
    except RouterUnavailable as exc:
        result.status, result.error = "unreachable", str(exc)[:500]
    except Exception as exc:  # noqa: BLE001  (a driver's failure is reported, others go on)
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"[:500]
    if result.status != "ok" and not dry_run:
        _record_status(session, target, result.status, result.error)
        _record_failure(session, target, result.error)
    return result


def _without(change: RouterDiff, keys) -> RouterDiff:
    """The part of `change` whose entries are not among `keys`."""
    return RouterDiff(add=tuple(e for e in change.add if e.key not in keys),
                      change=tuple(e for e in change.change if e.key not in keys),
                      remove=tuple(k for k in change.remove if k not in keys))


def _action(change: RouterDiff, key: str) -> str:
    if key in change.remove:
        return "remove"
    return "add" if any(e.key == key for e in change.add) else "change"


def _live_changes(session: Session, target: Target, states: list[ServiceState],
                  actual: list[RouterEntry], change: RouterDiff) -> int:
    """Disconnect sessions of services newly suspended; push changed rates to live sessions.
    A failure here is recorded and left for the session's next login to pick up."""
    had = {e.key: e for e in actual}
    by_name = {s.username: s for s in states}
    nas = {r.id: r for r in session.scalars(sa.select(Router).where(
        Router.kind == "radius_nas", Router.active.is_(True)))}
    done = 0
    for entry in (*change.add, *change.change):
        kind, _, username = entry.key.partition(":")
        state = by_name.get(username)
        if state is None:
            continue
        action = None
        if kind == "group" and entry.attributes.get("groupname") == SUSPENDED_GROUP:
            action = "disconnect"
        elif kind == "reply" and entry.key in had and had[entry.key].attributes.get(
                "Mikrotik-Rate-Limit") != entry.attributes.get("Mikrotik-Rate-Limit"):
            action = "rate"
        elif kind == "secret" and entry.attributes.get("disabled") == "true":
            action = "disconnect"
        if action is None:
            continue
        router = target.router if target.router is not None else nas.get(state.router_id)
        if router is None:
            continue  # no NAS known for this service: the next login takes the new state
        mapping = router_mapping(router)
        try:
            if action == "disconnect":
                target.driver.disconnect(target.settings, mapping, username)
            else:
                target.driver.change_rate(target.settings, mapping, username,
                                          state.rate.radius())
            _change_row(session, target, entry.key, action, None, "applied", None, router)
            done += 1
        except Exception as exc:  # noqa: BLE001
            _change_row(session, target, entry.key, action, None, "failed",
                        f"{type(exc).__name__}: {exc}"[:500], router)
    return done


# --- the record ---------------------------------------------------------------------------------

def _change_row(session: Session, target: Target, key: str, action: str, attributes,
                result: str, error: str | None, router: Router | None = None) -> None:
    shown = {k: v for k, v in (attributes or {}).items() if k not in SECRET_ATTRIBUTES}
    router = router or target.router
    session.add(NetworkChange(
        target=target.name, router_id=router.id if router else None, key=key[:120],
        action=action, attributes=shown or None, result=result, error=error))


def _record_changes(session: Session, target: Target, change: RouterDiff, result: str,
                    error: str | None) -> None:
    """One row per applied change, in one statement (a first sync writes thousands)."""
    now, router_id = utcnow(), target.router.id if target.router else None
    rows = [(e.key, "add", e.attributes) for e in change.add] + [
        (e.key, "change", e.attributes) for e in change.change] + [
        (key, "remove", None) for key in change.remove]
    session.execute(sa.insert(NetworkChange), [dict(
        at=now, target=target.name, router_id=router_id, key=key[:120], action=action,
        attributes={k: v for k, v in attrs.items() if k not in SECRET_ATTRIBUTES}
        if attrs else None, result=result, error=error) for key, action, attrs in rows])


def _record_failure(session: Session, target: Target, error: str | None) -> None:
    _change_row(session, target, "*", "reconcile", None, "failed", error)


def _record_status(session: Session, target: Target, status: str, error: str | None) -> None:
    now = utcnow()
    if target.router is not None:
        target.router.status, target.router.last_error = status, error
        target.router.reconciled_at = now
        return
    settings = network_settings(session)
    settings.radius_status, settings.radius_error, settings.radius_reconciled_at = (
        status, error, now)


def network_settings(session: Session) -> NetworkSettings:
    """The acting tenant's settings row (created with the defaults when missing)."""
    row = session.scalar(sa.select(NetworkSettings))
    if row is None:
        row = NetworkSettings()
        session.add(row)
        session.flush()
    return row
