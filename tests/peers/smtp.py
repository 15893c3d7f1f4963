"""A real SMTP server on loopback (aiosmtpd) for the mail tests, keeping what it receives.

`SmtpPeer(security=...)` listens on 127.0.0.1 on a free port (or `port`): "none" (plain,
optionally with AUTH over the TLS-less loopback), "starttls" (AUTH only after STARTTLS) or
"tls" (TLS from the first byte), with a self-signed certificate for 127.0.0.1 made with
`cryptography` (`cafile` is its path, for the client to trust). `messages` holds each received
message as an `email.message.EmailMessage`, `envelopes` the (mail from, recipients) pairs and
`logins` the usernames that authenticated. `refuse` lists recipients answered 550; `delay`
makes it slow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import ipaddress
import socket
import ssl
import threading
from email import policy
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USERNAME, PASSWORD = "mailer", "smtp-Secret-9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler:
    def __init__(self, peer: SmtpPeer):
        self.peer = peer

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.peer.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.peer.delay:
            await asyncio.sleep(self.peer.delay)
        msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                       policy=policy.default)
        with self.peer.lock:
            self.peer.messages.append(msg)
            self.peer.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SmtpPeer:
    def __init__(self, directory: Path, *, security: str = "none", auth: bool = False,
                 port: int | None = None):
        self.security, self.auth = security, auth
        self.host, self.port = "127.0.0.1", port or free_port()
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        self.refuse: set[str] = set()
        self.delay = 0.0  # seconds before accepting each message (a slow server)
        self.lock = threading.Lock()
        self.cafile, keyfile = self_signed(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cafile, keyfile)
        kwargs = {}
        if security == "starttls":
            kwargs |= {"tls_context": context, "require_starttls": True}
        if auth:
            kwargs |= {"authenticator": self._authenticate, "auth_required": True,
                       "auth_exclude_mechanism": ["LOGIN"],  # smtplib tries PLAIN first
                       # implicit TLS is TLS too (aiosmtpd only counts STARTTLS)
                       "auth_require_tls": security == "starttls"}
        self.controller = Controller(
            _Handler(self), hostname=self.host, port=self.port,
            ssl_context=context if security == "tls" else None, **kwargs)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            (auth_data.login, auth_data.password) == (USERNAME.encode(), PASSWORD.encode())
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535

    def start(self) -> SmtpPeer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[email.message.EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]
