"""What plugins implement: the only way plugin code and the core talk besides the hooks.

Every plugin object carries `plugin_id` (unique across all plugins, stored per tenant in
PluginConfiguration), `name`, `kind`, `version` and a `config_schema`. Each method receives the
tenant's decrypted `settings` (validated against that schema) first, so one object serves every
tenant. Amounts are integers in minor units with an ISO 4217 currency; never floats.
"""

from __future__ import annotations

import datetime as dt
import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

from headend.plugins.config_schema import ConfigSchema, Field

__all__ = [
    "ConfigSchema", "Field", "Plugin", "PaymentGateway", "PaymentStatus", "PaymentResult",
    "SavedMethod", "BILLING_METHODS", "GatewayUnavailable",
    "TaxEngine", "TaxRateSpec", "TaxLine", "TaxRequest", "TaxDetail", "TaxLineResult", "TaxResult",
    "TaxEngineUnavailable", "TaxEngineRejected",
    "RouterDriver", "RouterEntry", "RouterDiff", "RouterUnavailable", "UsageRecord",
    "InvoiceForm", "KINDS",
]

Settings = Mapping[str, Any]


class Plugin(ABC):
    """Identity and settings schema shared by every kind of plugin object."""

    kind: ClassVar[str]
    plugin_id: str
    name: str
    version: str = "0"
    config_schema: ConfigSchema = ConfigSchema()


# --- payments ---------------------------------------------------------------------------


class PaymentStatus(enum.StrEnum):
    PROCESSED = "processed"
    PENDING = "pending"  # the provider will tell later (webhook or get_payment_info)
    ERROR = "error"  # refused: a decline is a result with a decline_code, not an exception
    UNDEFINED = "undefined"  # outcome unknown (timeout): the core reconciles, never retries blind
    CANCELLED = "cancelled"


# How a subscriber pays; a tenant picks one gateway per method on the Plugins page.
BILLING_METHODS = ("card", "echeck", "cash", "check", "bank_transfer", "other")


@dataclass(frozen=True)
class PaymentResult:
    status: PaymentStatus
    transaction_id: str  # ours, as given to the call (or found in a webhook)
    amount: int = 0
    currency: str = ""
    provider_ref: str | None = None
    decline_code: str | None = None
    message: str = ""
    # refund(): "void" when the provider released an unsettled charge, "refund" when money
    # went back after settlement.
    reversal: str | None = None
    # handle_webhook(): the provider's event id, which the core deduplicates on.
    event_id: str | None = None


class GatewayUnavailable(RuntimeError):
    """The provider could not be reached for a call that is not a payment (customers, saved
    methods): nothing happened, try again later. Payment calls return UNDEFINED instead."""


@dataclass(frozen=True)
class SavedMethod:
    """A payment method tokenized and kept by the provider; we keep only this description."""

    provider_ref: str  # e.g. Stripe's pm_...
    method: str  # one of BILLING_METHODS ("card", "echeck")
    brand: str = ""
    last4: str = ""
    exp_month: int | None = None
    exp_year: int | None = None


class PaymentGateway(Plugin):
    """A card/bank processor. Every call carries our transaction id, which the gateway passes to
    the provider as its idempotency key, so retrying a call can never charge twice."""

    kind = "payment_gateway"
    # The billing methods this gateway can take (a tenant maps each method to one gateway).
    methods: ClassVar[tuple[str, ...]] = ()
    # Whether it keeps payment methods for later off-session charges (cards, bank accounts).
    saves_methods: ClassVar[bool] = False

    def create_customer(self, settings: Settings, customer_code: str, name: str,
                        email: str) -> str:
        """The provider's customer for one subscriber (its id); idempotent by customer_code."""
        raise NotImplementedError(f"{self.plugin_id} does not keep customers")

    def save_method(self, settings: Settings, customer_ref: str, token: str) -> SavedMethod:
        """Attach a token made by the provider's client-side library to the customer.

        A card refused at this point raises ValueError with the provider's message; an
        unreachable provider raises GatewayUnavailable."""
        raise NotImplementedError(f"{self.plugin_id} does not save payment methods")

    def remove_method(self, settings: Settings, provider_ref: str) -> None:
        """Detach a saved method at the provider."""
        raise NotImplementedError(f"{self.plugin_id} does not save payment methods")

    @abstractmethod
    def purchase(self, settings: Settings, transaction_id: str, amount: int, currency: str,
                 payment_method: str, customer_ref: str | None = None) -> PaymentResult:
        """Authorize and capture in one step. `payment_method` is a saved method's
        provider_ref (charged off-session) or, for offline gateways, the billing method."""

    @abstractmethod
    def authorize(self, settings: Settings, transaction_id: str, amount: int, currency: str,
                  payment_method: str, customer_ref: str | None = None) -> PaymentResult:
        """Reserve funds without capturing them."""

    @abstractmethod
    def capture(self, settings: Settings, transaction_id: str, provider_ref: str,
                amount: int, currency: str) -> PaymentResult:
        """Capture (part of) an authorization."""

    @abstractmethod
    def void(self, settings: Settings, transaction_id: str, provider_ref: str) -> PaymentResult:
        """Release an authorization that was not captured."""

    @abstractmethod
    def refund(self, settings: Settings, transaction_id: str, provider_ref: str,
               amount: int, currency: str) -> PaymentResult:
        """Give back (part of) a payment; the core refuses refunds above what remains.

        The gateway voids a charge that has not settled yet and refunds one that has, and says
        which in the result's `reversal`."""

    @abstractmethod
    def get_payment_info(self, settings: Settings, transaction_id: str,
                         provider_ref: str | None = None) -> PaymentResult:
        """The provider's current view of a transaction (used to reconcile "undefined")."""

    @abstractmethod
    def handle_webhook(self, settings: Settings, transaction_id: str | None,
                       headers: Mapping[str, str], body: bytes) -> PaymentResult | None:
        """Verify and translate a provider notification; None when it is not about a payment.

        `transaction_id` is ours when the webhook URL carries it, else None and the result
        names it (the gateway stored it as metadata with the provider).
        """


# --- taxes ------------------------------------------------------------------------------


class TaxEngineUnavailable(RuntimeError):
    """The engine could not be reached or failed on its side (timeout, 5xx): nothing is known to
    be recorded, so the core keeps the document waiting and retries with backoff."""


class TaxEngineRejected(ValueError):
    """The engine refused the request (credentials, validation): retrying will not help."""


@dataclass(frozen=True)
class TaxRateSpec:
    """A tenant tax rate the core decided applies to a line; engines that compute locally use it.

    `rate` is a percent for kind "percent" (7.25 means 7.25 %) and an amount per unit in major
    currency units for kind "flat" (charged once per cycle per unit).
    """

    label: str
    kind: str  # "percent" | "flat"
    rate: Decimal
    tax_rate_id: int | None = None


@dataclass(frozen=True)
class TaxLine:
    number: int
    amount: int  # minor units, the line total
    quantity: Decimal = Decimal(1)
    item_code: str = ""
    tax_code: str = ""
    tax_included: bool = False
    exemption_code: str = ""
    rates: tuple[TaxRateSpec, ...] = ()


@dataclass(frozen=True)
class TaxRequest:
    document_code: str  # our invoice number: the engine's transaction code
    customer_code: str
    date: dt.date
    currency: str
    address: Mapping[str, str]  # line1, city, region, country, postal_code
    lines: tuple[TaxLine, ...]
    rounding: str = "line"  # "line": round each line's tax; "invoice": round the sums per label


@dataclass(frozen=True)
class TaxDetail:
    jurisdiction: str
    tax_name: str
    rate: Decimal  # percent for percent taxes (6.25), the per-unit amount for flat ones
    tax: int
    tax_rate_id: int | None = None  # the tenant's rate it came from, when the core supplied it


@dataclass(frozen=True)
class TaxLineResult:
    number: int
    tax: int
    taxable: int
    details: tuple[TaxDetail, ...] = ()


@dataclass(frozen=True)
class TaxResult:
    total_tax: int
    lines: tuple[TaxLineResult, ...] = field(default_factory=tuple)
    engine_ref: str | None = None


class TaxEngine(Plugin):
    """Computes sales taxes; quote is side-effect free, post records it with the engine."""

    kind = "tax_engine"

    @abstractmethod
    def quote(self, settings: Settings, request: TaxRequest) -> TaxResult:
        """Taxes for a draft document; records nothing."""

    @abstractmethod
    def post(self, settings: Settings, request: TaxRequest) -> TaxResult:
        """Record (commit) the document's taxes with the engine, idempotent by document_code."""

    @abstractmethod
    def void(self, settings: Settings, document_code: str) -> None:
        """Void a posted document's taxes (the invoice was voided)."""


# --- routers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RouterEntry:
    """One managed item on a router (a queue, a PPP secret, an address-list entry)."""

    key: str  # our stable name for it, e.g. "sub-42"
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RouterDiff:
    add: tuple[RouterEntry, ...] = ()
    change: tuple[RouterEntry, ...] = ()
    remove: tuple[str, ...] = ()  # keys


class UsageRecord(NamedTuple):
    """One accounting session as the target last reported it (totals so far, not deltas):
    octets as 64-bit counts (gigawords folded in), download = sent to the subscriber. A named
    tuple: an import reads hundreds of thousands of them."""

    unique_id: str  # stable per session (radacct.acctuniqueid)
    username: str
    changed_at: dt.datetime  # UTC, when the target last updated the record
    download_bytes: int
    upload_bytes: int
    session_seconds: int
    started_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None


class RouterUnavailable(Exception):
    """The router or RADIUS database could not be reached (refused, timed out): the core
    reports the target unreachable and retries later; the other targets go on."""


class EntriesRefused(Exception):
    """The target refused some entries of a diff and took the rest: `refused` maps each refused
    entry's key to the target's reason. The core records the rest as applied and each refused
    entry as failed, so one bad entry never holds back the others."""

    def __init__(self, refused: Mapping[str, str]):
        self.refused = dict(refused)
        shown = "; ".join(f"{key}: {reason}" for key, reason in list(self.refused.items())[:5])
        more = len(self.refused) - 5
        super().__init__(f"{len(self.refused)} refused - {shown}"
                         + (f" (and {more} more)" if more > 0 else ""))


class RouterDriver(Plugin):
    """Talks to one kind of network device; the core computes diffs, the driver applies them."""

    kind = "router_driver"

    @abstractmethod
    def read_state(self, settings: Settings, router: Mapping[str, Any]) -> list[RouterEntry]:
        """The entries Headend manages on `router` (connection details in the mapping)."""

    @abstractmethod
    def apply_diff(self, settings: Settings, router: Mapping[str, Any], diff: RouterDiff) -> None:
        """Apply a diff computed by the core. Raise RouterUnavailable when the target cannot be
        reached, EntriesRefused when it took some entries and refused others (having tried
        every one), anything else when nothing is known to be applied (the core retries)."""

    @abstractmethod
    def disconnect(self, settings: Settings, router: Mapping[str, Any], username: str) -> None:
        """Drop a subscriber's live session so new settings take effect."""

    @abstractmethod
    def change_rate(self, settings: Settings, router: Mapping[str, Any], username: str,
                    rate: str) -> None:
        """Change a live session's rate limit (e.g. "10M/50M") without disconnecting."""

    def read_usage(self, settings: Settings, changed_after: dt.datetime | None,
                   limit: int) -> list[UsageRecord]:
        """Up to `limit` accounting records changed at or after `changed_after` (all when
        None), oldest change first. Drivers of targets that keep no accounting return []."""
        return []


# --- documents --------------------------------------------------------------------------


class InvoiceForm(Plugin):
    """Renders an invoice document (usually PDF), run in the documents queue."""

    kind = "invoice_form"
    media_type: str = "application/pdf"

    @abstractmethod
    def render(self, invoice: Any, branding: Mapping[str, Any]) -> bytes:
        """The document's bytes in `media_type`."""


KINDS = {cls.kind: cls for cls in (PaymentGateway, TaxEngine, RouterDriver, InvoiceForm)}
