"""Exact money: Decimal prices and rates, integer minor units for anything posted."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor-unit exponents for the currencies whose exponent is not 2.
_EXPONENTS = {"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3,
              "JOD": 3, "TND": 3}


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount: Decimal, currency: str) -> int:
    """Round an exact amount half-up to the currency's minor unit and return it as an int."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be Decimal, not {type(amount).__name__}")
    quantum = Decimal(1).scaleb(-exponent(currency))
    return int(amount.quantize(quantum, rounding=ROUND_HALF_UP).scaleb(exponent(currency)))


def from_minor(minor: int, currency: str) -> Decimal:
    if not isinstance(minor, int) or isinstance(minor, bool):
        raise TypeError("minor units must be int")
    return Decimal(minor).scaleb(-exponent(currency))


def format_money(minor: int, currency: str) -> str:
    return f"{from_minor(minor, currency):,.{exponent(currency)}f} {currency.upper()}"


def parse_decimal(value, *, places: int = 4, maximum: Decimal | None = None,
                  allow_negative: bool = False) -> Decimal:
    """An exact decimal from user input, or ValueError saying why in words a user understands.

    Floats are refused (they are not exact), so are NaN/Infinity, more places than the column
    stores (never silently rounded) and values too large for an 18-digit scaled column.
    """
    if isinstance(value, (bool, float)):
        raise ValueError("must be an exact decimal number (send it as a string), not a float")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError("must be a number") from None
    if not number.is_finite():
        raise ValueError("must be a number")
    if number < 0 and not allow_negative:
        raise ValueError("cannot be negative")
    if abs(number) >= Decimal(10) ** (18 - places):
        raise ValueError("is too large")
    if maximum is not None and number > maximum:
        raise ValueError(f"cannot exceed {maximum}")
    if number.normalize().as_tuple().exponent < -places:
        raise ValueError(f"allows at most {places} decimal places")
    return number
