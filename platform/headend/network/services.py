"""Provisioning a subscriber's Internet service: routers and NAS, Autofill (a username from
the tenant's pattern and a strong password), Activate (checked credentials, static address and
router) and Deactivate. The reconciler turns the result into router and RADIUS entries.

Each call writes in the caller's transaction (the caller commits, then enqueues the reconcile).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.catalog.models import InternetProfile, PackageServiceLine, Service
from headend.db import utcnow
from headend.errors import NotFound, ValidationFailed, raise_if, require
from headend.network.models import ROUTER_KINDS, NetworkSettings, Router
from headend.network.reconcile import network_settings
from headend.secrets import seal, unseal
from headend.subscribers.models import ServiceInstance, Subscriber, Subscription

USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# no look-alikes (0/O, 1/l/I): passwords get read out over the phone
PASSWORD_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")
PATTERN_FIELDS = {"account", "n", "first", "last"}


def _service(session: Session, service_id) -> ServiceInstance:
    service = session.scalar(sa.select(ServiceInstance).where(ServiceInstance.id == service_id)) \
        if isinstance(service_id, int) else None
    if service is None:
        raise NotFound(f"no service {service_id}")
    return service


def internet_profile(session: Session, service: ServiceInstance) -> InternetProfile | None:
    """The package's Internet profile when this instance is an Internet service, else None."""
    return session.scalar(
        sa.select(InternetProfile)
        .join(Subscription, Subscription.package_id == InternetProfile.package_id)
        .join(PackageServiceLine, PackageServiceLine.id == service.package_service_line_id)
        .join(Service, Service.id == PackageServiceLine.service_id)
        .where(Subscription.id == service.subscription_id, Service.type == "internet"))


# --- Autofill ----------------------------------------------------------------------------------

def _taken(session: Session, username: str, service_id: int) -> bool:
    return session.scalar(sa.select(ServiceInstance.id).where(
        ServiceInstance.username == username, ServiceInstance.id != service_id)) is not None


def autofill(session: Session, service_id: int) -> tuple[str, str]:
    """A free username from the tenant's pattern (a suffix when taken) and a strong password;
    nothing is saved - the staff member sees them in the form and activates."""
    service = _service(session, service_id)
    settings = network_settings(session)
    subscriber = session.get(Subscriber, service.subscription.subscriber_id)
    siblings = session.scalars(
        sa.select(ServiceInstance.id).join(Subscription)
        .where(Subscription.subscriber_id == subscriber.id).order_by(ServiceInstance.id)).all()
    values = {"account": subscriber.account_number, "n": siblings.index(service.id) + 1,
              "first": _slug(subscriber.first_name), "last": _slug(subscriber.last_name)}
    base = settings.username_pattern.format(**values)[:60]
    username, n = base, 1
    while _taken(session, username, service.id):
        n += 1
        username = f"{base}-{n}"
    password = "".join(secrets.choice(PASSWORD_ALPHABET)
                       for _ in range(settings.password_length))
    return username, password


def _slug(text: str | None) -> str:
    return re.sub(r"[^a-z0-9]", "", (text or "").lower())


EXAMPLE = {"account": "10001", "n": 1, "first": "jane", "last": "doe"}


def example_username(pattern: str) -> str:
    """The pattern filled for a made-up subscriber ("" when it cannot be filled)."""
    try:
        return pattern.format(**EXAMPLE)
    except (ValueError, KeyError, IndexError, AttributeError):
        return ""


def validate_pattern(pattern) -> None:
    """A pattern Autofill can always fill into a legal username."""
    fields = set(re.findall(r"{(\w*)}", pattern)) if isinstance(pattern, str) else set()
    if not fields or fields - PATTERN_FIELDS or len(pattern) > 60 \
            or not USERNAME.fullmatch(example_username(pattern)):
        raise ValidationFailed({"username_pattern": (
            "use the fields {account}, {n}, {first}, {last} (at least one) with letters, "
            "digits or . _ @ - (at most 60 characters)")})


def save_settings(session: Session, *, username_pattern, password_length) -> NetworkSettings:
    """The tenant's credential settings: a pattern the Autofill can fill and a password length
    the activation accepts (6..64)."""
    errors: dict[str, list[str]] = {}
    try:
        validate_pattern(username_pattern)
    except ValidationFailed as exc:
        errors.update(exc.errors)
    require(errors, "password_length", isinstance(password_length, int)
            and not isinstance(password_length, bool) and 6 <= password_length <= 64,
            "must be a whole number from 6 to 64")
    raise_if(errors)
    row = network_settings(session)
    row.username_pattern, row.password_length = username_pattern, password_length
    session.flush()
    return row


# --- Activate / Deactivate ---------------------------------------------------------------------

def activate(session: Session, service_id: int, *, username, password, static_ip=None,
             router_id=None, download_override=None, upload_override=None) -> ServiceInstance:
    """Give the Internet service its credentials, optional static address and router, and
    mark it active; refused input names each field and changes nothing."""
    service = _service(session, service_id)
    profile = internet_profile(session, service)
    errors: dict[str, list[str]] = {}
    require(errors, "service", profile is not None, "is not an Internet service")
    require(errors, "service", service.status != "cancelled"
            and service.subscription.status != "cancelled",
            "belongs to a cancelled subscription")
    require(errors, "username", isinstance(username, str) and bool(USERNAME.fullmatch(username)),
            "must be 1-64 letters, digits or . _ @ -")
    if "username" not in errors:
        require(errors, "username", not _taken(session, username, service.id),
                "is already used by another service")
    require(errors, "password", isinstance(password, str) and 6 <= len(password) <= 64
            and password.isprintable() and " " not in password,
            "must be 6-64 characters without spaces")
    address = _static_ip(session, errors, static_ip, service.id)
    router = _router(session, errors, router_id)
    overrides = {"download_override": download_override, "upload_override": upload_override}
    for field, value in overrides.items():
        if value is None:
            continue
        require(errors, field, profile is not None and profile.allow_subscriber_overrides,
                "the package does not allow speed overrides")
        require(errors, field, isinstance(value, int) and not isinstance(value, bool)
                and 0 < value <= 100_000, "must be a positive speed in the package's unit")
    raise_if(errors)
    service.username = username
    service.password = password
    service.static_ip = address
    service.router_id = router.id if router else None
    service.download_override, service.upload_override = download_override, upload_override
    service.status = "active"
    service.activated_at = utcnow()
    session.flush()
    return service


def _static_ip(session: Session, errors: dict, value, service_id: int) -> str | None:
    if value in (None, ""):
        return None
    try:
        address = str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        require(errors, "static_ip", False, "must be an IPv4 or IPv6 address")
        return None
    other = session.scalar(sa.select(ServiceInstance.label).where(
        ServiceInstance.static_ip == address, ServiceInstance.id != service_id))
    require(errors, "static_ip", other is None, f"is already assigned ({other})")
    return address


def _router(session: Session, errors: dict, router_id) -> Router | None:
    if router_id is None:
        return None
    router = session.scalar(sa.select(Router).where(Router.id == router_id)) \
        if isinstance(router_id, int) else None
    require(errors, "router", router is not None and router.active,
            "is not an active router of this tenant")
    return router


def deactivate(session: Session, service_id: int) -> ServiceInstance:
    """Take the service off the network (cancelled): the next reconcile removes its entries;
    the credentials stay for the record and a later re-activation."""
    service = _service(session, service_id)
    service.status = "inactive"
    session.flush()
    return service


# --- routers -----------------------------------------------------------------------------------

def save_router(session: Session, router: Router | None = None, *, name, kind, address,
                api_port=8728, username=None, password=None, radius_secret=None,
                coa_port=3799, active=True) -> Router:
    """Create or update a router / NAS; a blank password or secret keeps the stored one."""
    errors: dict[str, list[str]] = {}
    require(errors, "name", isinstance(name, str) and 0 < len(name.strip()) <= 80,
            "is required (at most 80 characters)")
    require(errors, "kind", kind in ROUTER_KINDS, f"must be one of: {', '.join(ROUTER_KINDS)}")
    require(errors, "address", isinstance(address, str) and 0 < len(address.strip()) <= 255,
            "is required (a host name or address)")
    for field, value in (("api_port", api_port), ("coa_port", coa_port)):
        require(errors, field, isinstance(value, int) and 0 < value < 65536,
                "must be a port number (1-65535)")
    if kind == "radius_nas" and router is None:
        require(errors, "radius_secret", bool(radius_secret), "a NAS needs its RADIUS secret")
    if isinstance(name, str):
        clash = session.scalar(sa.select(Router.id).where(
            Router.name == name.strip(), Router.id != (router.id if router else -1)))
        require(errors, "name", clash is None, "is already the name of another router")
    raise_if(errors)
    router = router or Router()
    stored = unseal(router.secret_config)
    stored |= {k: v for k, v in (("password", password), ("radius_secret", radius_secret)) if v}
    router.name, router.kind, router.address = name.strip(), kind, address.strip()
    router.api_port, router.coa_port, router.username = api_port, coa_port, username or None
    router.secret_config, router.active = seal(stored), bool(active)
    session.add(router)
    session.flush()
    return router
