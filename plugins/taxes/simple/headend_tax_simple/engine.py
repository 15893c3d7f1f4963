"""Taxes from the rates the core picked for each line: percent of the line or flat per unit.

The core decides which of the tenant's rates apply (subscriber settings, exemptions, package tax
mode) and sends them on each `TaxLine`; this engine only does the arithmetic. Exact taxes are
kept as Decimals in minor units and rounded half-up either per line and rate ("line") or per label
over the whole invoice ("invoice"), where the rounded label total is shared back to the lines
by largest remainder so every line still carries its own tax and the lines add up.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from headend.money import exponent
from headend.plugins.interfaces import (
    TaxDetail,
    TaxEngine,
    TaxEngineRejected,
    TaxLine,
    TaxLineResult,
    TaxRateSpec,
    TaxRequest,
    TaxResult,
)

KINDS = ("percent", "flat")
ROUNDINGS = ("line", "invoice")
_HUNDRED = Decimal(100)


def exact_taxes(line: TaxLine, currency: str) -> list[tuple[TaxRateSpec, Decimal]]:
    """Each applicable rate with its unrounded tax in minor units (none for an exempt line).

    Flat rates are major units per unit of quantity. When the amount includes tax, the flat
    taxes come off first and the percent taxes are extracted from what remains.
    """
    if line.exemption_code:
        return []
    for spec in line.rates:
        if spec.kind not in KINDS:
            raise TaxEngineRejected(f"line {line.number}: tax kind {spec.kind!r} is not one of "
                                    f"{', '.join(KINDS)}")
    scale = Decimal(1).scaleb(exponent(currency))
    flats = {id(s): s.rate * line.quantity * scale for s in line.rates if s.kind == "flat"}
    base = Decimal(line.amount)
    if line.tax_included:
        percent = sum((s.rate for s in line.rates if s.kind == "percent"), Decimal(0))
        base = (base - sum(flats.values(), Decimal(0))) * _HUNDRED / (_HUNDRED + percent)
    return [(s, flats[id(s)] if s.kind == "flat" else base * s.rate / _HUNDRED)
            for s in line.rates]


def _half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _share(exacts: list[Decimal]) -> list[int]:
    """Integers within one unit of each value, summing to the half-up rounded total: floors, then
    one more unit each to the largest remainders (earliest first on ties)."""
    floors = [int(v.to_integral_value(rounding=ROUND_FLOOR)) for v in exacts]
    short = _half_up(sum(exacts, Decimal(0))) - sum(floors)
    by_remainder = sorted(range(len(exacts)), key=lambda i: (-(exacts[i] - floors[i]), i))
    for i in by_remainder[:short]:
        floors[i] += 1
    return floors


def _rounded(request: TaxRequest, exact: list[list[tuple[TaxRateSpec, Decimal]]]
             ) -> list[list[int]]:
    if request.rounding == "line":
        return [[_half_up(tax) for _, tax in taxes] for taxes in exact]
    rounded = [[0] * len(taxes) for taxes in exact]
    by_label: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for li, taxes in enumerate(exact):
        for ti, (spec, _) in enumerate(taxes):
            by_label[spec.label].append((li, ti))
    for places in by_label.values():
        shares = _share([exact[li][ti][1] for li, ti in places])
        for (li, ti), amount in zip(places, shares, strict=True):
            rounded[li][ti] = amount
    return rounded


def compute(request: TaxRequest) -> TaxResult:
    """The taxes of every line of `request`, rounded as the request asks."""
    if request.rounding not in ROUNDINGS:
        raise TaxEngineRejected(f"rounding must be one of {', '.join(ROUNDINGS)}")
    exact = [exact_taxes(line, request.currency) for line in request.lines]
    rounded = _rounded(request, exact)
    lines = []
    for line, taxes, amounts in zip(request.lines, exact, rounded, strict=True):
        details = tuple(TaxDetail(spec.label, spec.label, spec.rate, amount, spec.tax_rate_id)
                        for (spec, _), amount in zip(taxes, amounts, strict=True))
        tax = sum(amounts)
        taxable = 0 if not taxes else line.amount - tax if line.tax_included else line.amount
        lines.append(TaxLineResult(line.number, tax, taxable, details))
    return TaxResult(sum(r.tax for r in lines), tuple(lines))


class SimpleTax(TaxEngine):
    """Local arithmetic, no remote state: quote and post give the same answer, void does
    nothing (the ledger reversal of the invoice carries the tax back)."""

    plugin_id = "simple_tax"
    name = "Simple tax (tenant rates)"
    version = "0.1.0"

    def quote(self, settings, request):
        return compute(request)

    def post(self, settings, request):
        return compute(request)

    def void(self, settings, document_code):
        return None
