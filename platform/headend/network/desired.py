"""What the network should look like, read from billing state: one ServiceState per activated
Internet service, and the entries each kind of target must hold for it (the vocabulary the
router drivers read back in, so that desired and actual compare with ==).

Standing: an active subscription is in good standing; suspended or hibernating ones are
suspended (no service while hibernating, no charge either); pending, cancelled and archived
ones have no entries at all, which removes them from every target.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.catalog.models import InternetProfile, PackageServiceLine, Service
from headend.db import among
from headend.plugins.interfaces import RouterEntry
from headend.subscribers.models import ServiceInstance, Subscription

STANDING = {"active": "active", "suspended": "suspended", "hibernating": "suspended"}
UNIT_BITS = {"Mbps": 1_000_000, "Kbps": 1_000, "Gbps": 1_000_000_000}
SUSPENDED_GROUP, THROTTLED_GROUP = "headend-suspended", "headend-throttled"


@dataclass(frozen=True)
class Rate:
    """Bits per second, upload and download, with the optional burst of a simple queue."""

    up: int
    down: int
    burst_up: int | None = None
    burst_down: int | None = None
    threshold_up: int | None = None
    threshold_down: int | None = None
    burst_seconds: int | None = None

    @property
    def bursts(self) -> bool:
        return bool(self.burst_up and self.burst_down and self.threshold_up
                    and self.threshold_down and self.burst_seconds)

    def radius(self) -> str:
        """Mikrotik-Rate-Limit: "rx/tx [burst-rx/burst-tx threshold-rx/threshold-tx
        time-rx/time-tx]" - the NAS receives the upload and transmits the download."""
        text = f"{short(self.up)}/{short(self.down)}"
        if self.bursts:
            text += (f" {short(self.burst_up)}/{short(self.burst_down)}"
                     f" {short(self.threshold_up)}/{short(self.threshold_down)}"
                     f" {self.burst_seconds}/{self.burst_seconds}")
        return text


def short(bits: int) -> str:
    """RADIUS rate notation: 25000000 -> "25M", 512000 -> "512k"."""
    for suffix, size in (("M", 1_000_000), ("k", 1_000)):
        if bits % size == 0:
            return f"{bits // size}{suffix}"
    return str(bits)


@dataclass(frozen=True)
class ServiceState:
    service_id: int
    username: str
    password: str
    static_ip: str | None
    router_id: int | None
    standing: str  # active / suspended / throttled
    rate: Rate


def profile_rate(profile: InternetProfile, service: ServiceInstance | None = None, *,
                 throttled: bool = False) -> Rate:
    """The package's speeds in bits per second, the subscriber's override where the package
    allows one, or the throttled speeds (no burst) when a data cap was passed."""
    unit = UNIT_BITS.get(profile.speed_unit, 1_000_000)
    if throttled and profile.throttled_download and profile.throttled_upload:
        return Rate(profile.throttled_upload * unit, profile.throttled_download * unit)
    down, up = profile.download_speed, profile.upload_speed
    if service is not None and profile.allow_subscriber_overrides:
        down = service.download_override or down
        up = service.upload_override or up

    def bits(value):
        return value * unit if value else None
    return Rate(up * unit, down * unit, bits(profile.burst_upload),
                bits(profile.burst_download), bits(profile.burst_threshold_upload),
                bits(profile.burst_threshold_download), profile.burst_time_seconds)


def service_states(session: Session, service_ids: Iterable[int] | None = None,
                   today: dt.date | None = None) -> list[ServiceState]:
    """Every activated Internet service of the acting tenant whose subscription gives it a
    standing (or only those named), in id order; a service past its data cap today is
    throttled (the throttled speeds) or, when the package says so, cut like a suspension.

    Plain columns, not ORM objects: a reconcile reads 10k of them and has nothing to change."""
    stmt = (sa.select(ServiceInstance.id, ServiceInstance.username, ServiceInstance.password,
                      ServiceInstance.static_ip, ServiceInstance.router_id,
                      ServiceInstance.download_override, ServiceInstance.upload_override,
                      ServiceInstance.data_limit_gb_override, Subscription.status,
                      Subscription.package_id)
            .join(Subscription, Subscription.id == ServiceInstance.subscription_id)
            .join(PackageServiceLine,
                  PackageServiceLine.id == ServiceInstance.package_service_line_id)
            .join(Service, Service.id == PackageServiceLine.service_id)
            .where(Service.type == "internet", ServiceInstance.status == "active",
                   ServiceInstance.username.is_not(None),
                   Subscription.status.in_(tuple(STANDING)))
            .order_by(ServiceInstance.id))
    if service_ids is not None:
        stmt = stmt.where(ServiceInstance.id.in_(list(service_ids)))
    profiles = {p.package_id: p for p in session.scalars(sa.select(InternetProfile))}
    rows = [r for r in session.execute(stmt) if r.package_id in profiles]
    caps = _caps(session, rows, profiles, today or dt.date.today())
    out = []
    for row in rows:
        standing = STANDING[row.status]
        if standing == "active" and row.id in caps:
            standing = "throttled" if caps[row.id] == "throttled" else "suspended"
        out.append(ServiceState(
            row.id, row.username, row.password or "", row.static_ip, row.router_id, standing,
            profile_rate(profiles[row.package_id], row, throttled=standing == "throttled")))
    return out


def _caps(session: Session, rows, profiles: dict[int, InternetProfile],
          today: dt.date) -> dict[int, str]:
    """network.caps for the active services that could pass a limit (few: the rest of the
    tenant costs nothing)."""
    from headend.network.caps import cap_states

    def watched(row) -> bool:
        profile = profiles[row.package_id]
        return row.status == "active" and bool(
            profile.data_limit_gb or row.data_limit_gb_override
            or (profile.usage_billing_enabled and profile.usage_disconnect_on_exceed))

    ids = [row.id for row in rows if watched(row)]
    if not ids:
        return {}
    loaded = session.execute(
        sa.select(ServiceInstance, Subscription)
        .join(Subscription, Subscription.id == ServiceInstance.subscription_id)
        .where(among(ServiceInstance.id, ids))).tuples().all()
    return cap_states(session, [(service, sub, profiles[sub.package_id])
                                for service, sub in loaded], today)


# --- entries per kind of target -----------------------------------------------------------------

def _pair(up: int, down: int) -> str:
    return f"{up}/{down}"


def mikrotik_entries(states: Iterable[ServiceState], suspended_list: str
                     ) -> list[RouterEntry]:
    """A simple queue and a PPPoE secret per service; a suspended service with a static
    address also sits on the suspended address list (the router's filter drops or redirects
    it), and its queue and secret are disabled."""
    out = []
    for s in states:
        comment, off = f"headend:{s.service_id}", "false" if s.standing != "suspended" else "true"
        queue = {"name": s.username,
                 "target": f"{s.static_ip}/32" if s.static_ip else f"<pppoe-{s.username}>",
                 "max-limit": _pair(s.rate.up, s.rate.down), "disabled": off, "comment": comment}
        if s.rate.bursts:
            queue |= {"burst-limit": _pair(s.rate.burst_up, s.rate.burst_down),
                      "burst-threshold": _pair(s.rate.threshold_up, s.rate.threshold_down),
                      "burst-time": f"{s.rate.burst_seconds}s/{s.rate.burst_seconds}s"}
        secret = {"name": s.username, "password": s.password, "service": "pppoe",
                  "profile": "default", "disabled": off, "comment": comment}
        if s.static_ip:
            secret["remote-address"] = s.static_ip
        out += [RouterEntry(f"queue:{s.username}", queue),
                RouterEntry(f"secret:{s.username}", secret)]
        if s.standing == "suspended" and s.static_ip:
            out.append(RouterEntry(f"suspended:{s.static_ip}", {
                "list": suspended_list, "address": s.static_ip, "disabled": "false",
                "comment": comment}))
    return out


def radius_entries(states: Iterable[ServiceState]) -> list[RouterEntry]:
    """The password check, the rate (and fixed address) reply, and the suspended or
    throttled group of each service."""
    out = []
    for s in states:
        reply = {"Mikrotik-Rate-Limit": s.rate.radius()}
        if s.static_ip:
            reply["Framed-IP-Address"] = s.static_ip
        out += [RouterEntry(f"check:{s.username}", {"Cleartext-Password": s.password}),
                RouterEntry(f"reply:{s.username}", reply)]
        if s.standing in ("suspended", "throttled"):
            group = SUSPENDED_GROUP if s.standing == "suspended" else THROTTLED_GROUP
            out.append(RouterEntry(f"group:{s.username}", {"groupname": group}))
    return out
