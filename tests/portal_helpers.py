"""A tenant with subscribers invited to the portal, the emailed link read back from the outbox
(the recorded send), and a signed-in portal client, for the portal tests."""

from __future__ import annotations

import re
import uuid

from headend.db import db
from headend.mail.models import OutboundEmail
from headend.portal import accounts
from headend.subscribers.services import create_subscriber
from headend.tenancy.context import acting_as
from sqlalchemy import select

PORTAL_PASSWORD = "Portal-pass-2024"
LINK = re.compile(r"/portal/([\w-]+)/set-password/([\w-]+)")


def customer(session, email: str | None = None, **fields) -> int:
    """A subscriber with an email (the portal login), in the acting tenant."""
    email = email or f"ana-{uuid.uuid4().hex[:8]}@example.test"
    return create_subscriber(session, first_name="Ana", last_name="Portal", email=email,
                             **fields).id


def emailed_link(session, subscriber_id: int, kind: str = "portal_invite") -> str:
    """The set-password path in the newest email of `kind` queued for the subscriber."""
    mail = session.scalars(select(OutboundEmail).where(
        OutboundEmail.subscriber_id == subscriber_id, OutboundEmail.kind == kind)
        .order_by(OutboundEmail.id.desc())).first()
    assert mail is not None, f"no {kind} email queued"
    found = LINK.search(mail.body_text)
    assert found, mail.body_text
    return found.group(0)


def invited(app, tenant_id: int, subscriber_id: int) -> str:
    """Invite the subscriber (as staff would); the emailed set-password path."""
    with app.app_context(), acting_as(tenant_id):
        accounts.invite(db.session, subscriber_id, base_url="http://portal.test")
        db.session.commit()
        return emailed_link(db.session, subscriber_id)


def signed_in(app, tenant_id: int, subscriber_id: int, password: str = PORTAL_PASSWORD):
    """A test client signed in to the portal as the subscriber (invited, password chosen)."""
    client = app.test_client()
    link = invited(app, tenant_id, subscriber_id)
    resp = client.post(link, data={"password": password, "confirm": password})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return client


def portal_login(client, slug: str, login: str, password: str = PORTAL_PASSWORD,
                 address: str = "127.0.0.1"):
    return client.post(f"/portal/{slug}/login", data={"login": login, "password": password},
                       environ_base={"REMOTE_ADDR": address})
