"""Translation between Headend's tax dataclasses and AvaTax REST v2 JSON.

Amounts go out as decimal currency amounts and come back the same way; both directions are exact:
outgoing amounts are whole minor units scaled down (JSON has no Decimal, so they travel as floats
whose shortest text is the exact decimal), and responses are parsed with Decimal for every number
and rounded half-up to minor units.
"""

from __future__ import annotations

import json
from decimal import Decimal

from headend.money import from_minor, to_minor
from headend.plugins.interfaces import TaxDetail, TaxLineResult, TaxRequest, TaxResult

# AvaTax's escapes for characters a transaction code cannot carry in a URL path.
_PATH_ESCAPES = (("%", "_-ava25-_"), ("/", "_-ava2f-_"), ("+", "_-ava2b-_"), ("?", "_-ava3f-_"))
_ADDRESS_KEYS = {"line1": "line1", "city": "city", "region": "region", "country": "country",
                 "postal_code": "postalCode"}


def path_code(code: str) -> str:
    """A transaction code as AvaTax wants it inside a URL path."""
    for char, escape in _PATH_ESCAPES:
        code = code.replace(char, escape)
    return code


def _amount(minor: int, currency: str) -> float:
    return float(from_minor(minor, currency))


def transaction_model(request: TaxRequest, company_code: str, doc_type: str,
                      commit: bool) -> dict:
    """A CreateTransactionModel for `request`."""
    address = {theirs: request.address[ours] for ours, theirs in _ADDRESS_KEYS.items()
               if request.address.get(ours)}
    return {
        "type": doc_type,
        "companyCode": company_code,
        "code": request.document_code,
        "customerCode": request.customer_code,
        "date": request.date.isoformat(),
        "currencyCode": request.currency,
        "commit": commit,
        "addresses": {"singleLocation": address},
        "lines": [{
            "number": str(line.number),
            "amount": _amount(line.amount, request.currency),
            "quantity": float(line.quantity),
            "itemCode": line.item_code,
            "taxCode": line.tax_code,
            "taxIncluded": line.tax_included,
            "exemptionCode": line.exemption_code,
        } for line in request.lines],
    }


def decode(text: str) -> dict:
    """A response body with every JSON number as Decimal (ValueError when it is not JSON)."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def error_message(text: str) -> str:
    """AvaTax's own explanation from an error body, with the details it lists."""
    try:
        error = decode(text).get("error") or {}
    except (ValueError, AttributeError):
        return text[:500]
    parts = [error.get("message") or error.get("code") or "AvaTax refused the request"]
    for detail in error.get("details") or ():
        message = detail.get("message") or detail.get("description")
        if message and message not in parts:
            parts.append(message)
    code = error.get("code")
    return f"{code}: {' '.join(parts)}" if code else " ".join(parts)


def _percent(rate) -> Decimal:
    """AvaTax rates are fractions (0.0625); Headend's TaxDetail rates are percents (6.25)."""
    return (Decimal(rate or 0) * 100).normalize()


def tax_result(transaction: dict, currency: str, recorded: bool) -> TaxResult:
    """A TaxResult from a TransactionModel; engine_ref is AvaTax's id when it was recorded."""
    lines = []
    for line in transaction.get("lines") or ():
        details = tuple(
            TaxDetail(d.get("jurisName") or "", d.get("taxName") or "", _percent(d.get("rate")),
                      to_minor(Decimal(d.get("tax") or 0), currency))
            for d in line.get("details") or ())
        lines.append(TaxLineResult(
            int(line["lineNumber"]), to_minor(Decimal(line.get("tax") or 0), currency),
            to_minor(Decimal(line.get("taxableAmount") or 0), currency), details))
    ref = str(transaction["id"]) if recorded and transaction.get("id") else None
    return TaxResult(to_minor(Decimal(transaction.get("totalTax") or 0), currency),
                     tuple(lines), ref)
