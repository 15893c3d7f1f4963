"""A protocol-level fake of the AvaTax REST v2 API, for testing the avalara plugin through the
real SDK over real HTTP.

It speaks the wire format the SDK and AvaTax use: HTTP Basic auth (account id : license key),
JSON TransactionModels with `lines[].details[]`, AvaTax error bodies
(`{"error": {"code", "message", "target", "details"}}`) and an `x-correlation-id` header on every
response (the SDK's logging reads it). It is stateful: recorded transactions live in
`transactions` keyed by (company code, transaction code); SalesOrder estimates are never stored.
Tax comes from a jurisdiction table keyed by postal code, else region.

Switches for outage tests: `fail_with = 503` answers every request with that status;
`fail_next = n` fails only the next n requests (with 503, or `fail_with`), after the first
`fail_after` requests succeed: an outage that begins and ends mid-run; `delay = seconds`
sleeps before handling (the request is still processed afterwards, as a real server would);
`closed_url()` is an address where nothing listens; `refuse_postal_codes` makes it refuse
(400) documents addressed there, as AvaTax refuses an address it cannot resolve; `received`
keeps each request's method, path and decoded body.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

ACCOUNT_ID = "2000123456"
LICENSE_KEY = "A1B2C3D4E5F6-fake-license"
COMPANY = "HEADEND"
CENT = Decimal("0.01")
RECORDED_TYPES = {"SalesInvoice", "ReturnInvoice", "PurchaseInvoice"}


@dataclass(frozen=True)
class Jurisdiction:
    juris_type: str  # STA, CTY, CIT, STJ as AvaTax abbreviates them
    name: str
    tax_name: str
    rate: Decimal  # a fraction, as AvaTax reports it (0.0625 = 6.25 %)


ILLINOIS = (
    Jurisdiction("STA", "ILLINOIS", "IL STATE TAX", Decimal("0.0625")),
    Jurisdiction("CTY", "COOK", "IL COUNTY TAX", Decimal("0.01")),
    Jurisdiction("CIT", "CHICAGO", "IL CITY TAX", Decimal("0.02")),
)
DEFAULT_JURISDICTIONS = {"60601": ILLINOIS, "IL": ILLINOIS[:1], "OR": ()}

# AvaTax escapes these characters in transaction codes inside URL paths.
_CODE_ESCAPES = {"_-ava2f-_": "/", "_-ava2b-_": "+", "_-ava3f-_": "?", "_-ava25-_": "%"}


def decode_code(segment: str) -> str:
    text = unquote(segment)
    for escape, char in _CODE_ESCAPES.items():
        text = text.replace(escape, char)
    return text


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _lower_keys(mapping) -> dict:
    return {str(k).lower(): v for k, v in (mapping or {}).items()}


class AvaTaxError(Exception):
    def __init__(self, status: int, code: str, message: str, target: str = "IncorrectData"):
        super().__init__(message)
        self.status, self.code, self.message, self.target = status, code, message, target

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "target": self.target,
                          "details": [{"code": self.code, "number": 0, "message": self.message,
                                       "description": self.message, "faultCode": "Client",
                                       "severity": "Error"}]}}


@dataclass
class FakeAvaTax:
    """State and behaviour of the fake; the HTTP layer only decodes and encodes."""

    accounts: dict[str, str] = field(default_factory=lambda: {ACCOUNT_ID: LICENSE_KEY})
    companies: set[str] = field(default_factory=lambda: {COMPANY})
    jurisdictions: dict[str, tuple[Jurisdiction, ...]] = field(
        default_factory=lambda: dict(DEFAULT_JURISDICTIONS))
    transactions: dict[tuple[str, str], dict] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    received: list[tuple[str, str, dict | None]] = field(default_factory=list)
    fail_with: int | None = None
    fail_next: int = 0
    fail_after: int = 0
    refuse_postal_codes: set[str] = field(default_factory=set)
    delay: float = 0.0
    url: str = ""
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1001))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stored(self, code: str, company: str = COMPANY) -> dict | None:
        return self.transactions.get((company, code))

    def failing(self) -> int | None:
        """The status this request fails with, if it is to fail (counting `fail_next` down)."""
        with self._lock:
            if self.fail_after > 0:
                self.fail_after -= 1
            elif self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_with or 503
        return self.fail_with

    def closed_url(self) -> str:
        """A local address where nothing listens: connections are refused."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{s.getsockname()[1]}"

    # --- auth and routing ---------------------------------------------------------------

    def authenticate(self, header: str | None) -> None:
        try:
            scheme, encoded = (header or "").split(" ", 1)
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            user = password = scheme = ""
        if scheme != "Basic" or self.accounts.get(user) != password or not password:
            raise AvaTaxError(401, "AuthenticationException",
                              "Authentication failed. Please check your credentials.",
                              "HttpRequestHeaders")

    def handle(self, method: str, path: str, body: dict | None) -> dict:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts == ["api", "v2", "utilities", "ping"]:
            return {"version": "fake-26.10", "authenticated": True, "authenticationType":
                    "AccountIdLicenseKey", "authenticatedAccountId": int(ACCOUNT_ID)}
        if method == "POST" and parts == ["api", "v2", "transactions", "create"]:
            return self.create(body or {}, replace=False)
        if method == "POST" and parts == ["api", "v2", "transactions", "createoradjust"]:
            model = _lower_keys(body).get("createtransactionmodel")
            if not isinstance(model, dict):
                raise AvaTaxError(400, "ValueRequiredError",
                                  "Field 'createTransactionModel' is required.")
            return self.create(model, replace=True)
        if (len(parts) in (6, 7) and parts[:3] == ["api", "v2", "companies"]
                and parts[4] == "transactions"):
            company, code = parts[3], decode_code(parts[5])
            action = parts[6] if len(parts) == 7 else None
            if method == "GET" and action is None:
                return self._existing(company, code)
            if method == "POST" and action == "commit":
                return self._set_status(company, code, "Committed")
            if method == "POST" and action == "void":
                return self._set_status(company, code, "Cancelled")
        raise AvaTaxError(404, "EntityNotFoundError", f"No route for {method} {path}.")

    # --- transactions -------------------------------------------------------------------

    def create(self, model: dict, replace: bool) -> dict:
        m = _lower_keys(model)
        for name in ("companycode", "customercode", "date", "lines"):
            if not m.get(name):
                raise AvaTaxError(400, "ValueRequiredError", f"Field '{name}' is required.")
        company, doc_type = m["companycode"], m.get("type") or "SalesOrder"
        if company not in self.companies:
            raise AvaTaxError(400, "CompanyNotFoundError",
                              f"The company code '{company}' does not exist.")
        code = str(m.get("code") or uuid.uuid4())
        transaction = self._compute(m, company, code, doc_type)
        if doc_type not in RECORDED_TYPES:
            return transaction
        with self._lock:
            old = self.transactions.get((company, code))
            if old is not None and not replace:
                raise AvaTaxError(400, "DuplicateEntry",
                                  f"The transaction code '{code}' already exists.")
            if old is not None:
                transaction["id"], transaction["adjustmentReason"] = old["id"], m.get(
                    "adjustmentreason", "NotAdjusted")
                transaction["version"] = old["version"] + 1
            self.transactions[(company, code)] = transaction
        return transaction

    def _compute(self, m: dict, company: str, code: str, doc_type: str) -> dict:
        address = _lower_keys(_lower_keys(m.get("addresses")).get("singlelocation"))
        if str(address.get("postalcode", "")) in self.refuse_postal_codes:
            raise AvaTaxError(400, "InvalidAddress",
                              f"The address in {address['postalcode']} cannot be resolved.")
        juris = self.jurisdictions.get(str(address.get("postalcode", "")),
                                       self.jurisdictions.get(str(address.get("region", "")), ()))
        tx_id = next(self._ids)
        region = str(address.get("region", ""))
        lines = [self._line(tx_id, i, _lower_keys(line), juris, region)
                 for i, line in enumerate(m["lines"], 1)]
        committed = bool(m.get("commit")) and doc_type in RECORDED_TYPES
        status = ("Temporary" if doc_type not in RECORDED_TYPES
                  else "Committed" if committed else "Saved")
        return {
            "id": tx_id if doc_type in RECORDED_TYPES else 0, "code": code, "companyId": 1,
            "companyCode": company, "date": str(m["date"]), "status": status, "type": doc_type,
            "customerCode": m["customercode"], "currencyCode": m.get("currencycode", "USD"),
            "version": 1, "locked": False, "reconciled": False,
            "totalAmount": sum((ln["lineAmount"] for ln in lines), Decimal(0)),
            "totalExempt": sum((ln["exemptAmount"] for ln in lines), Decimal(0)),
            "totalTax": sum((ln["tax"] for ln in lines), Decimal(0)),
            "totalTaxable": sum((ln["taxableAmount"] for ln in lines), Decimal(0)),
            "totalTaxCalculated": sum((ln["tax"] for ln in lines), Decimal(0)),
            "modifiedDate": dt.datetime.now(dt.UTC).isoformat(),
            "lines": lines,
        }

    def _line(self, tx_id: int, index: int, line: dict, juris, region: str) -> dict:
        if "amount" not in line:
            raise AvaTaxError(400, "ValueRequiredError", "Field 'amount' is required.")
        amount = Decimal(str(line["amount"]))
        exempt = bool(line.get("exemptioncode"))
        total_rate = sum((j.rate for j in juris), Decimal(0))
        base = amount / (1 + total_rate) if line.get("taxincluded") else amount
        details = []
        for j in juris:
            tax = Decimal(0) if exempt else _money(base * j.rate)
            details.append({
                "id": tx_id * 100 + index * 10 + len(details), "transactionLineId": index,
                "country": "US", "region": region, "jurisType": j.juris_type,
                "jurisName": j.name, "taxName": j.tax_name, "rate": j.rate, "tax": tax,
                "taxCalculated": tax, "taxable": Decimal(0) if exempt else _money(base),
                "exemption": amount if exempt else Decimal(0), "nonTaxable": Decimal(0),
            })
        tax = sum((d["tax"] for d in details), Decimal(0))
        taxable = Decimal(0) if exempt or not juris else _money(base)
        return {
            "id": tx_id * 100 + index, "transactionId": tx_id,
            "lineNumber": str(line.get("number", index)), "itemCode": line.get("itemcode", ""),
            "taxCode": line.get("taxcode", "P0000000"),
            "quantity": Decimal(str(line.get("quantity", 1))), "lineAmount": amount,
            "taxIncluded": bool(line.get("taxincluded")),
            "exemptCertId": 0, "exemptNo": line.get("exemptioncode", ""),
            "exemptAmount": amount if exempt else Decimal(0),
            "taxableAmount": taxable, "tax": tax, "taxCalculated": tax, "details": details,
        }

    def _existing(self, company: str, code: str) -> dict:
        transaction = self.transactions.get((company, code))
        if transaction is None:
            raise AvaTaxError(404, "EntityNotFoundError",
                              f"Document with code '{code}' not found.", "HttpRequest")
        return transaction

    def _set_status(self, company: str, code: str, status: str) -> dict:
        with self._lock:
            transaction = self._existing(company, code)
            transaction["status"] = status
            return transaction


def _json_default(value):
    """Decimals go out as JSON numbers (AvaTax amounts have at most a few decimals)."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAvaTax  # set on the subclass made per server

    def log_message(self, format, *args):  # keep pytest output quiet
        return None

    def _respond(self, status: int, payload) -> None:
        data = json.dumps(payload, default=_json_default).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-correlation-id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, method: str) -> None:
        fake = self.fake
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake.requests.append((method, path))
        try:
            body, bad_json = json.loads(raw, parse_float=Decimal) if raw else None, False
        except ValueError:
            body, bad_json = None, True
        fake.received.append((method, path, body))
        if fake.delay:
            time.sleep(fake.delay)
        failure = fake.failing()
        if failure:
            self._respond(failure, {"error": {"code": "ServiceUnavailable",
                                              "message": "The service is unavailable."}})
            return
        try:
            fake.authenticate(self.headers.get("Authorization"))
            if bad_json:
                raise AvaTaxError(400, "InvalidJson", "The request body is not JSON.")
            self._respond(200, fake.handle(method, path, body))
        except AvaTaxError as exc:
            self._respond(exc.status, exc.body())

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")


def start(fake: FakeAvaTax | None = None) -> tuple[FakeAvaTax, ThreadingHTTPServer]:
    """Serve `fake` on a free 127.0.0.1 port in a daemon thread; set its `url`."""
    fake = fake or FakeAvaTax()
    handler = type("AvaTaxHandler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="fake-avatax").start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    return fake, server


@pytest.fixture
def avatax_server():
    """A fresh fake AvaTax per test: `.url`, `.transactions`, `.received`, `.fail_with`,
    `.fail_next`, `.delay`."""
    fake, server = start()
    yield fake
    server.shutdown()
    server.server_close()

