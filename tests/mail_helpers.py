"""The SMTP peer as fixtures, and a tenant's email settings pointed at it, for the mail tests."""

from __future__ import annotations

import pytest
from headend.mail.models import OutboundEmail
from headend.mail.services import save_settings
from sqlalchemy import select

from tests.peers.smtp import PASSWORD, USERNAME, SmtpPeer


@pytest.fixture
def smtp_server(app, tmp_path, monkeypatch):
    """A plain SMTP server with AUTH (the tests' certificate trusted, for the TLS variants)."""
    peer = SmtpPeer(tmp_path, auth=True).start()
    monkeypatch.setitem(app.config, "MAIL_SSL_CAFILE", str(peer.cafile))
    yield peer
    peer.stop()


def mail_on(s, peer, **over):
    """The acting tenant's mail on, through `peer`, every switch on (unless `over` says)."""
    values = dict(enabled=True, host=peer.host, port=peer.port, security=peer.security,
                  username=USERNAME if peer.auth else None,
                  password=PASSWORD if peer.auth else None,
                  from_address="billing@valley.test", from_name="Valley Fiber Billing",
                  reply_to="help@valley.test", email_invoices=True, email_receipts=True,
                  email_notices=True)
    values.update(over)
    return save_settings(s, **values)


def outbox(s) -> list[OutboundEmail]:
    s.expire_all()
    return list(s.scalars(select(OutboundEmail).order_by(OutboundEmail.id)))


def attachments(msg) -> list[tuple[str, str, bytes]]:
    """(filename, content type, bytes) of a received message's attachments."""
    return [(part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
            for part in msg.iter_attachments()]


def text_of(msg) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


def html_of(msg) -> str:
    return msg.get_body(preferencelist=("html",)).get_content()
