"""Portal logins: invitations and password resets by emailed one-time token, setting the
password, and signing in with a throttle on failed attempts.

Everything runs in the acting tenant's scope (a portal request acts as its tenant), so a token,
an account or a login name of another tenant is simply not found. Only a token's SHA-256 is
stored; the token itself exists in the email alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from headend.db import utcnow
from headend.errors import DomainError, ValidationFailed
from headend.mail.outbox import queue_email
from headend.portal.models import PortalAccount, PortalLoginFailure, PortalToken
from headend.subscribers.models import Subscriber
from headend.tenancy.context import current_scope
from headend.tenancy.models import Tenant

LIFETIME = {"invite": dt.timedelta(hours=72), "reset": dt.timedelta(hours=1)}
MAX_FAILURES = 5  # failed logins per login name ...
MAX_ADDRESS_FAILURES = 20  # ... or from one client address (a password tried on many logins) ...
FAILURE_WINDOW = dt.timedelta(minutes=15)  # ... within this window, then refused until older
MAX_RESETS_PER_HOUR = 3  # reset emails per account: "forgot password" cannot flood a mailbox
MIN_PASSWORD = 10
MAX_PASSWORD = 128
# Checked against when the login does not exist, so both answers take as long.
_DUMMY_HASH = generate_password_hash("headend-portal-no-such-login")


class LoginThrottled(DomainError):
    """Too many failed logins for this login name or from this address: refused without
    checking the password."""


def normalize_login(login) -> str:
    return login.strip().lower() if isinstance(login, str) else ""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def set_password_path(slug: str, token: str) -> str:
    return f"/portal/{slug}/set-password/{token}"


def _tenant(session: Session) -> Tenant:
    tenant_id = current_scope().tenant_id
    if tenant_id is None:
        raise ValidationFailed({"tenant": "choose a tenant to act for"})
    return session.get(Tenant, tenant_id)


def account_of(session: Session, subscriber_id: int) -> PortalAccount | None:
    return session.scalar(sa.select(PortalAccount).where(
        PortalAccount.subscriber_id == subscriber_id))


def _issue(session: Session, account: PortalAccount, purpose: str) -> tuple[str, PortalToken]:
    """A new token for the account; its earlier unused ones of any purpose stop working."""
    now = utcnow()
    session.execute(sa.update(PortalToken)
                    .where(PortalToken.account_id == account.id, PortalToken.used_at.is_(None))
                    .values(used_at=now).execution_options(synchronize_session=False))
    token = secrets.token_urlsafe(32)
    row = PortalToken(account_id=account.id, purpose=purpose, token_hash=token_hash(token),
                      created_at=now, expires_at=now + LIFETIME[purpose])
    session.add(row)
    session.flush()
    return token, row


def _send(session: Session, account: PortalAccount, subscriber: Subscriber, purpose: str,
          base_url: str) -> None:
    """Issue a token of `purpose` and queue the email that carries its link."""
    token, row = _issue(session, account, purpose)
    tenant = session.get(Tenant, account.tenant_id)
    link = base_url.rstrip("/") + set_password_path(tenant.slug, token)
    hours = int(LIFETIME[purpose].total_seconds() // 3600)
    if purpose == "invite":
        kind, subject = "portal_invite", f"Your {tenant.name} online account"
        body = (f"Hello {subscriber.display_name},\n\n{tenant.name} has opened an online account "
                f"for you: see your balance, invoices and usage, and pay online.\n\n"
                f"Choose your password here (the link works for {hours} hours, once):\n{link}\n\n"
                f"Your login is {account.login}.\n")
    else:
        kind, subject = "password_reset", f"Reset your {tenant.name} password"
        body = (f"Hello {subscriber.display_name},\n\nSomeone (we hope you) asked to reset the "
                f"password of your {tenant.name} online account.\n\nChoose a new password here "
                f"(the link works for {hours} hour{'s' if hours != 1 else ''}, once):\n{link}\n\n"
                "If you did not ask, ignore this email: your password stays as it is.\n")
    queue_email(session, tenant_id=account.tenant_id, kind=kind, key=f"portal_token:{row.id}",
                to=subscriber.email or account.login, subject=subject, body_text=body,
                subscriber_id=subscriber.id)


def invite(session: Session, subscriber_id: int, *, base_url: str = "") -> PortalAccount:
    """Create (or refresh) the subscriber's portal login, named by their email, and email them
    a link to choose a password. A password already set keeps working until they choose anew."""
    _tenant(session)
    subscriber = session.scalar(sa.select(Subscriber).where(Subscriber.id == subscriber_id)) \
        if isinstance(subscriber_id, int) else None
    if subscriber is None:
        raise ValidationFailed({"subscriber": "does not exist"})
    login = normalize_login(subscriber.email)
    if not login or "@" not in login:
        raise ValidationFailed({"email": "the subscriber has no email address to invite"})
    other = session.scalar(sa.select(PortalAccount.id).where(
        PortalAccount.login == login, PortalAccount.subscriber_id != subscriber.id))
    if other is not None:
        raise ValidationFailed({"email": f"{login} is the portal login of another subscriber"})
    account = account_of(session, subscriber.id)
    if account is None:
        account = PortalAccount(subscriber_id=subscriber.id, login=login)
        session.add(account)
    account.login, account.active = login, True
    session.flush()
    _send(session, account, subscriber, "invite", base_url)
    return account


def request_reset(session: Session, login: str, *, base_url: str = "") -> None:
    """Email a reset link when the login exists and is active; the caller answers the same
    either way (whether a login exists is not told)."""
    _tenant(session)
    account = session.scalar(sa.select(PortalAccount).where(
        PortalAccount.login == normalize_login(login), PortalAccount.active.is_(True)))
    if account is None:
        return
    recent = session.scalar(sa.select(sa.func.count()).select_from(PortalToken).where(
        PortalToken.account_id == account.id, PortalToken.purpose == "reset",
        PortalToken.created_at > utcnow() - dt.timedelta(hours=1)))
    if recent >= MAX_RESETS_PER_HOUR:
        return
    subscriber = session.get(Subscriber, account.subscriber_id)
    _send(session, account, subscriber, "reset", base_url)


def check_token(session: Session, token: str) -> PortalToken:
    """The usable token (of the acting tenant), else ValidationFailed on "token" saying why."""
    row = session.scalar(sa.select(PortalToken).where(
        PortalToken.token_hash == token_hash(token or ""))) if isinstance(token, str) else None
    if row is None:
        raise ValidationFailed({"token": "This link is not valid. Ask for a new one."})
    if row.used_at is not None:
        raise ValidationFailed({"token": "This link has already been used. Ask for a new one."})
    if row.expires_at <= utcnow():
        raise ValidationFailed({"token": "This link has expired. Ask for a new one."})
    return row


def check_password_rules(password, confirm) -> None:
    errors = {}
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        errors["password"] = f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
    elif password != confirm:
        errors["confirm"] = "does not match the password"
    if errors:
        raise ValidationFailed(errors)


def set_password(session: Session, token: str, password: str, confirm: str) -> PortalAccount:
    """Spend the token on a new password: once only (a second use in a race finds it spent),
    unexpired, of this tenant. Refused: nothing changes."""
    row = check_token(session, token)
    check_password_rules(password, confirm)
    now = utcnow()
    spent = session.execute(
        sa.update(PortalToken).where(PortalToken.id == row.id, PortalToken.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False))
    if spent.rowcount != 1:
        raise ValidationFailed({"token": "This link has already been used. Ask for a new one."})
    account = session.scalar(sa.select(PortalAccount).where(PortalAccount.id == row.account_id)
                             .with_for_update())
    if account is None or not account.active:
        raise ValidationFailed({"token": "This account is closed."})
    account.password_hash = generate_password_hash(password)
    account.last_login_at = now
    session.execute(sa.delete(PortalLoginFailure).where(PortalLoginFailure.login == account.login))
    session.flush()
    return account


def recent_failures(session: Session, *, login: str | None = None,
                    address: str | None = None) -> int:
    """Failed logins within FAILURE_WINDOW for this login name, or from this address."""
    column, value = (PortalLoginFailure.login, login) if address is None \
        else (PortalLoginFailure.address, address)
    return session.scalar(sa.select(sa.func.count()).select_from(PortalLoginFailure).where(
        column == value, PortalLoginFailure.failed_at > utcnow() - FAILURE_WINDOW))


def authenticate(session: Session, login: str, password: str, *,
                 address: str | None = None) -> PortalAccount | None:
    """The account when the password is right; None when wrong (the failure is recorded: the
    caller commits either way). LoginThrottled after MAX_FAILURES for the login, or
    MAX_ADDRESS_FAILURES from the client `address`, within FAILURE_WINDOW."""
    _tenant(session)
    name = normalize_login(login)[:254]
    address = address[:64] if address else None
    if recent_failures(session, login=name) >= MAX_FAILURES or (
            address and recent_failures(session, address=address) >= MAX_ADDRESS_FAILURES):
        raise LoginThrottled("Too many failed attempts: try again in 15 minutes, or reset "
                             "your password.")
    account = session.scalar(sa.select(PortalAccount).where(PortalAccount.login == name)) \
        if name else None
    usable = account is not None and account.active and account.password_hash
    ok = check_password_hash(account.password_hash if usable else _DUMMY_HASH,
                             password if isinstance(password, str) else "")
    if not (usable and ok):
        now = utcnow()
        session.execute(sa.delete(PortalLoginFailure).where(
            PortalLoginFailure.failed_at <= now - FAILURE_WINDOW))
        session.add(PortalLoginFailure(login=name, address=address, failed_at=now))
        session.flush()
        return None
    session.execute(sa.delete(PortalLoginFailure).where(PortalLoginFailure.login == name))
    account.last_login_at = utcnow()
    session.flush()
    return account


def set_access(session: Session, subscriber_id: int, active: bool) -> PortalAccount:
    """Close a subscriber's portal login (its sessions end at their next request) or open it
    again; closed, it cannot sign in, set a password or get reset links."""
    account = account_of(session, subscriber_id)
    if account is None:
        raise ValidationFailed({"portal": "this subscriber has no portal login"})
    account.active = active
    session.flush()
    return account


def session_stamp(account: PortalAccount) -> str:
    """What a portal session remembers of the password: a new password ends other sessions."""
    return hashlib.sha256((account.password_hash or "").encode()).hexdigest()[:16]
