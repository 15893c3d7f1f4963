"""The tenant's email settings: reading them (defaults when nothing was saved), saving them with
errors by field, and the switches the event hooks read. The SMTP password is sealed
(headend.secrets) into `secret_config` and never handed back: a blank password keeps it."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from headend.db import utcnow
from headend.errors import raise_if, require
from headend.mail.models import SECURITY, MailSettings
from headend.secrets import seal, unseal

ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+")
HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?|\[?[0-9a-fA-F:.]+\]?")


@dataclass(frozen=True)
class Switches:
    """What is emailed without staff asking, for one tenant (all off when mail is off)."""

    invoices: bool = False
    receipts: bool = False
    notices: bool = False


def mail_settings(session: Session) -> MailSettings:
    """The acting tenant's settings row, or an unsaved one with the defaults."""
    return session.scalar(select(MailSettings)) or MailSettings(
        enabled=False, port=587, security="starttls", email_invoices=True, email_receipts=True,
        email_notices=True)


def has_password(row: MailSettings) -> bool:
    return bool(unseal(row.secret_config).get("password"))


def password_of(row: MailSettings) -> str | None:
    return unseal(row.secret_config).get("password")


def is_address(value) -> bool:
    return isinstance(value, str) and bool(ADDRESS.fullmatch(value))


def _text(value) -> str | None:
    return value.strip() or None if isinstance(value, str) else value


def save_settings(session: Session, *, enabled: bool, host, port, security, username=None,
                  password=None, from_address=None, from_name=None, reply_to=None,
                  email_invoices: bool = True, email_receipts: bool = True,
                  email_notices: bool = True) -> MailSettings:
    """Save the acting tenant's SMTP settings. Mail on needs a server and a sender; a username
    needs a password (typed now, or kept from before). Header values refuse line breaks."""
    host, username, from_address = _text(host), _text(username), _text(from_address)
    from_name, reply_to = _text(from_name), _text(reply_to)
    row = mail_settings(session)
    # the saved password goes only to the server and login it was given for: pointing the
    # settings elsewhere needs it typed again, or it could be sent to anyone's server
    same_server = row.id is not None and (row.host, row.port, row.username) == (
        host, port, username)
    kept = password_of(row) if same_server else None
    password = password or kept
    errors: dict[str, list[str]] = {}
    require(errors, "host", host is None or (len(host) <= 255 and bool(HOST.fullmatch(host))),
            "must be a host name or an IP address")
    require(errors, "host", host is not None or not enabled, "is needed to send email")
    require(errors, "port", isinstance(port, int) and not isinstance(port, bool)
            and 1 <= port <= 65535, "must be a whole number from 1 to 65535")
    require(errors, "security", security in SECURITY, f"must be one of {', '.join(SECURITY)}")
    require(errors, "username", username is None or (len(username) <= 254
                                                     and "\n" not in username),
            "must be at most 254 characters on one line")
    require(errors, "password", not username or bool(password),
            "is needed with a username (again, when the server or username changes)")
    require(errors, "from_address", from_address is None or is_address(from_address),
            "must be an email address")
    require(errors, "from_address", from_address is not None or not enabled,
            "is needed to send email")
    require(errors, "from_name", from_name is None or (len(from_name) <= 120 and not any(
        c in from_name for c in "\r\n")), "must be at most 120 characters on one line")
    require(errors, "reply_to", reply_to is None or is_address(reply_to),
            "must be an email address")
    raise_if(errors)
    sends_invoices = bool(enabled) and bool(email_invoices)
    if not sends_invoices:
        row.invoices_since = None
    elif not (row.enabled and row.email_invoices) or row.invoices_since is None:
        row.invoices_since = utcnow()
    row.enabled, row.host, row.port, row.security = bool(enabled), host, port, security
    row.username = username
    row.secret_config = seal({"password": password}) if username and password else None
    row.from_address, row.from_name, row.reply_to = from_address, from_name, reply_to
    row.email_invoices, row.email_receipts = bool(email_invoices), bool(email_receipts)
    row.email_notices = bool(email_notices)
    session.add(row)
    session.flush()
    return row


def switches(connection: sa.Connection, tenant_ids) -> dict[int, Switches]:
    """The switches of these tenants in one query on `connection` (a plain connection, not a
    session: the event hooks may run on a billing run's writer thread)."""
    if not tenant_ids:
        return {}
    t = MailSettings.__table__
    rows = connection.execute(
        select(t.c.tenant_id, t.c.email_invoices, t.c.email_receipts, t.c.email_notices)
        .where(t.c.tenant_id.in_(sorted(tenant_ids)), t.c.enabled.is_(True)))
    return {tenant: Switches(bool(inv), bool(rec), bool(notices))
            for tenant, inv, rec, notices in rows}
