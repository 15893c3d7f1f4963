"""localstripe (the stateful fake Stripe from PyPI) on loopback, for the Stripe gateway's tests.

localstripe's command line binds every interface, so the tests serve its aiohttp routes
themselves on 127.0.0.1, in a daemon thread with its own event loop, once per test session
(its store is one module-level dict); every test starts from an empty store, as with
`--from-scratch` (DELETE /_config/data).

In front of localstripe's routes sit two behaviours of real Stripe that localstripe lacks, so the
gateway is tested against them:

- Idempotency-Key: a POST repeated with the same key and the same parameters gets the first
  answer again (header `Idempotent-Replayed: true`), with other parameters a 400
  `idempotency_error`, and while the first is still running a 409. As at Stripe, an answer is
  kept only when the request began executing (success, or a 402 decline), not a validation error.
- outage switches: `fail_with = 503` answers every API request with that status without doing
  it; `delay = seconds` waits before doing it (the client may have given up by then: the request
  is still carried out and its response is lost). `closed_url()` is an address where nothing
  listens.

`requests` records (method, path, Idempotency-Key) of every API request. `deliver_webhooks(secret)`
registers a receiver on loopback to which localstripe posts its signed events.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiohttp import web
from localstripe import server as localstripe_server
from localstripe import webhooks as localstripe_webhooks

SECRET_KEY = "sk_test_headend"
PUBLISHABLE_KEY = "pk_test_headend"
WEBHOOK_SECRET = "whsec_headend_test"


@dataclass(frozen=True)
class _Kept:
    method: str
    path: str
    body: bytes
    status: int
    answer: bytes


def _error(status: int, kind: str, message: str, code: str | None = None) -> web.Response:
    error = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return web.json_response({"error": error}, status=status)


@dataclass
class Inbox:
    """Events localstripe delivered to our receiver: (headers, raw body) pairs."""

    url: str = ""
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def wait_for(self, event_type: str, timeout: float = 5) -> tuple[dict[str, str], bytes]:
        """The first delivery of `event_type`, waiting for localstripe's (1 s late) post."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for headers, body in list(self.deliveries):
                if json.loads(body)["type"] == event_type:
                    return headers, body
            time.sleep(0.05)
        raise AssertionError(f"localstripe delivered no {event_type} event")

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _receiver(inbox: Inbox) -> ThreadingHTTPServer:
    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # keep pytest output quiet
            return None

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            inbox.deliveries.append((dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="stripe-webhooks").start()
    return server


@dataclass
class LocalStripe:
    url: str = ""
    fail_with: int | None = None
    delay: float = 0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    inbox: Inbox | None = None
    _kept: dict[tuple[str, str], _Kept] = field(default_factory=dict)
    _running: set[tuple[str, str]] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None

    def reset(self) -> None:
        """Empty localstripe's store, forget kept answers, webhooks and switches."""
        self.fail_with, self.delay = None, 0
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_config/data",
                                                      method="DELETE"), timeout=5).close()
        asyncio.run_coroutine_threadsafe(self._forget(), self._loop).result(5)
        self.requests.clear()
        if self.inbox is not None:
            self.inbox.close()
            self.inbox = None

    async def _forget(self) -> None:
        # On localstripe's loop. It has no call to unregister a webhook, and posts each event a
        # second late: drop the registrations and the posts a previous test left pending.
        localstripe_webhooks._webhooks.clear()
        for task in asyncio.all_tasks():
            if task.get_coro().__qualname__ == localstripe_webhooks._send_webhook.__qualname__:
                task.cancel()
        self._kept.clear()
        self._running.clear()

    def closed_url(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def deliver_webhooks(self, secret: str = WEBHOOK_SECRET) -> Inbox:
        """Have localstripe post its events, signed with `secret`, to a receiver on loopback."""
        inbox = self.inbox = Inbox()
        inbox._server = _receiver(inbox)
        inbox.url = f"http://127.0.0.1:{inbox._server.server_address[1]}/stripe"
        data = json.dumps({"url": inbox.url, "secret": secret}).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"{self.url}/_config/webhooks/headend", data=data, method="POST",
            headers={"Content-Type": "application/json"}), timeout=5).close()
        return inbox

    def middleware(self):
        @web.middleware
        async def like_stripe(request: web.Request, handler):
            if not request.path.startswith("/v1/"):
                return await handler(request)
            key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
            self.requests.append((request.method, request.path, key))
            body = await request.read()  # kept by aiohttp for localstripe's own reading
            if self.fail_with:
                return _error(self.fail_with, "api_error", "Stripe is unavailable (test switch)")
            if self.delay:
                await asyncio.sleep(self.delay)
            if key is None:
                return await handler(request)
            ident = (request.headers.get("Authorization", ""), key)
            kept = self._kept.get(ident)
            if kept is not None:
                if (kept.method, kept.path, kept.body) != (request.method, request.path, body):
                    return _error(400, "idempotency_error",
                                  "Keys for idempotent requests can only be used with the same "
                                  f"parameters they were first used with (key {key!r}).")
                return web.Response(body=kept.answer, status=kept.status,
                                    content_type="application/json",
                                    headers={"Idempotent-Replayed": "true"})
            if ident in self._running:
                return _error(409, "invalid_request_error",
                              "There is currently another in-progress request using this "
                              "Idempotent Key.", code="idempotency_key_in_use")
            self._running.add(ident)
            try:
                response = await handler(request)
            finally:
                self._running.discard(ident)
            if response.status < 400 or response.status == 402:
                self._kept[ident] = _Kept(request.method, request.path, body, response.status,
                                          response.body)
            return response

        return like_stripe


def start() -> tuple[LocalStripe, Callable[[], None]]:
    """Serve localstripe on a free 127.0.0.1 port in a daemon thread; return it and a stopper."""
    peer = LocalStripe()
    app = web.Application(middlewares=[peer.middleware(), *localstripe_server.app.middlewares])
    app.on_response_prepare.append(localstripe_server.add_cors_headers)  # Stripe.js in a browser
    for route in localstripe_server.app.router.routes():  # in order: extra routes come first
        app.router.add_route(route.method, route.resource.canonical, route.handler)
    loop = peer._loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()

    serving = threading.Event()

    def run() -> None:
        # The loop lives in its own thread from the start: the test's thread may already run
        # one (Playwright's), and a thread can drive only one loop at a time.
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        serving.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True, name="localstripe")
    thread.start()
    if not serving.wait(10):
        raise RuntimeError("localstripe did not start")
    peer.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def stop() -> None:
        if peer.inbox is not None:
            peer.inbox.close()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    return peer, stop


@pytest.fixture(scope="session")
def localstripe_session():
    peer, stop = start()
    yield peer
    stop()


@pytest.fixture
def stripe_server(localstripe_session):
    """localstripe with an empty store: `.url`, `.requests`, `.fail_with`, `.delay`,
    `.closed_url()`, `.deliver_webhooks(secret)`."""
    localstripe_session.reset()
    yield localstripe_session
    localstripe_session.reset()
