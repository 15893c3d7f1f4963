"""An RFC 5176 Dynamic Authorization server (the CoA/Disconnect listener a NAS runs) on loopback,
for testing what Headend sends to routers through pyrad.

Built on pyrad's packet classes, it checks what a NAS checks: a request whose Request
Authenticator (or Message-Authenticator) does not match the shared secret is silently discarded
and noted in `discarded`. Every accepted request is kept in `received` as (code, attributes).

`sessions` maps a user name to its session's attributes (tests add them, e.g.
`{"Acct-Session-Id": "s1", "Mikrotik-Rate-Limit": "10M/50M"}`). A CoA-Request for a session
replaces its attributes with the ones it carries (a new Mikrotik-Rate-Limit, say) and is ACKed;
a Disconnect-Request ends it. A request for no session (or another Acct-Session-Id) is NAKed with
Error-Cause 503 Session-Context-Not-Found, one without User-Name with 402 Missing-Attribute.
`silent = True` makes it answer nothing, as a NAS that is down, to test timeouts.

Attribute values are single values (a list only when an attribute is repeated).
"""

from __future__ import annotations

import select
import socket
import threading
from pathlib import Path

import headend_router_freeradius
from pyrad import packet
from pyrad.dictionary import Dictionary

DICTIONARY = Path(headend_router_freeradius.__file__).with_name("dictionary")
# Attributes that pick the session (RFC 5176 section 3) or protect the packet, not changes to it.
IDENTIFYING = {
    "User-Name", "Acct-Session-Id", "Acct-Multi-Session-Id", "NAS-IP-Address", "NAS-Identifier",
    "NAS-Port", "NAS-Port-Id", "Framed-IP-Address", "Calling-Station-Id", "Called-Station-Id",
    "Event-Timestamp", "Message-Authenticator", "Proxy-State",
}
_ACK = {packet.CoARequest: packet.CoAACK, packet.DisconnectRequest: packet.DisconnectACK}
_NAK = {packet.CoARequest: packet.CoANAK, packet.DisconnectRequest: packet.DisconnectNAK}


def attributes_of(pkt: packet.Packet) -> dict[str, object]:
    """A packet's attributes by name, without the Message-Authenticator."""
    values = {name: pkt[name] for name in pkt.keys() if name != "Message-Authenticator"}
    return {name: value[0] if len(value) == 1 else value for name, value in values.items()}


class DynamicAuthorizationServer:
    """The NAS side of CoA/Disconnect on 127.0.0.1:`port` (a free UDP port)."""

    def __init__(self, secret: str = "testing123"):
        self.secret = secret.encode()
        self.dictionary = Dictionary(str(DICTIONARY))
        self.sessions: dict[str, dict[str, object]] = {}
        self.received: list[tuple[int, dict[str, object]]] = []
        self.discarded: list[str] = []
        self.silent = False
        self.port = 0
        self._socket: socket.socket | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DynamicAuthorizationServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="radius-dae", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            ready, _, _ = select.select([self._socket], [], [], 0.1)
            if ready:
                data, source = self._socket.recvfrom(8192)
                reply = self._answer(data)
                if reply is not None:
                    self._socket.sendto(reply, source)

    def _answer(self, data: bytes) -> bytes | None:
        """The encoded reply to a datagram, or None to stay silent."""
        try:
            request = packet.CoAPacket(packet=data, secret=self.secret, dict=self.dictionary)
        except packet.PacketError as error:
            self.discarded.append(f"malformed: {error}")
            return None
        if request.code not in _ACK:
            self.discarded.append(f"not a CoA or Disconnect request (code {request.code})")
            return None
        if not request.VerifyCoARequest() or (
                request.message_authenticator and not request.verify_message_authenticator()):
            self.discarded.append("authenticator does not match the shared secret")
            return None
        attributes = attributes_of(request)
        self.received.append((request.code, attributes))
        if self.silent:
            return None
        reply = request.CreateReply()
        error_cause = self._apply(request.code, attributes)
        if error_cause:
            reply.code = _NAK[request.code]
            reply["Error-Cause"] = error_cause
        if request.message_authenticator:
            reply.add_message_authenticator()
        return reply.ReplyPacket()

    def _apply(self, code: int, attributes: dict[str, object]) -> str | None:
        """Change or end the session; the Error-Cause of a NAK, None for an ACK."""
        username = attributes.get("User-Name")
        if username is None:
            return "Missing-Attribute"
        session = self.sessions.get(username)
        if session is None:
            return "Session-Context-Not-Found"
        wanted = attributes.get("Acct-Session-Id")
        if wanted is not None and session.get("Acct-Session-Id", wanted) != wanted:
            return "Session-Context-Not-Found"
        if code == packet.DisconnectRequest:
            del self.sessions[username]
        else:
            session.update({k: v for k, v in attributes.items() if k not in IDENTIFYING})
        return None
