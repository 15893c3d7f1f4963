"""Talking to the tenant's SMTP server with smtplib: plain, STARTTLS or TLS from the first byte,
a login when a username is set, and a timeout on every network wait."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from flask import current_app

from headend.mail.models import MailSettings, OutboundEmail
from headend.mail.services import password_of

TIMEOUT = 20  # seconds, for the connection and every reply

# The server refused this one message (the connection is still good for the next). Every
# other OSError (smtplib's errors are OSErrors) says the server is unusable for now.
MESSAGE_ERRORS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused,
                  smtplib.SMTPDataError)


def tls_context() -> ssl.SSLContext:
    """Certificates checked as usual; MAIL_SSL_CAFILE names extra trusted CAs (a private relay,
    or the tests' self-signed server)."""
    return ssl.create_default_context(cafile=current_app.config.get("MAIL_SSL_CAFILE"))


def connect(settings: MailSettings, timeout: float = TIMEOUT) -> smtplib.SMTP:
    """An open, logged-in connection (the caller quits it)."""
    if settings.security == "tls":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout,
                                              context=tls_context())
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
    try:
        if settings.security == "starttls":
            smtp.starttls(context=tls_context())
        if settings.username:
            smtp.login(settings.username, password_of(settings) or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


def message(settings: MailSettings, row: OutboundEmail,
            attachment: tuple[str, bytes] | None = None) -> EmailMessage:
    """The MIME message of an outbox row: text, an HTML alternative, the PDF when given."""
    msg = EmailMessage()
    msg["From"] = formataddr((settings.from_name or "", settings.from_address))
    msg["To"] = row.to_address
    msg["Subject"] = row.subject
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    msg["Message-ID"] = make_msgid(idstring=f"headend.{row.tenant_id}.{row.id}",
                                   domain=settings.from_address.rpartition("@")[2])
    msg.set_content(row.body_text)
    if row.body_html:
        msg.add_alternative(row.body_html, subtype="html")
    if attachment is not None:
        filename, data = attachment
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=filename)
    return msg
