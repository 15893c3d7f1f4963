"""FCC Broadband Data Collection fixed technology codes (help.bdc.fcc.gov "Fixed Technology
Codes", checked 2026-11).

The one place the list lives: service lines store the code, the BDC export reads the names.
"""

from __future__ import annotations

FIXED_TECHNOLOGY_CODES: dict[int, str] = {
    0: "Other",
    10: "Copper Wire",
    40: "Coaxial Cable / HFC",
    50: "Optical Carrier / Fiber to the Premises",
    60: "Geostationary Satellite",
    61: "Non-geostationary Satellite",
    70: "Unlicensed Terrestrial Fixed Wireless",
    71: "Licensed Terrestrial Fixed Wireless",
    72: "Licensed-by-Rule Terrestrial Fixed Wireless",
}


def is_known(code: int | None) -> bool:
    return code in FIXED_TECHNOLOGY_CODES


def choices() -> list[tuple[str, str]]:
    """(value, label) pairs for a select field; the empty choice means "not reported"."""
    return [("", "—")] + [(str(c), f"{c} {name}") for c, name in FIXED_TECHNOLOGY_CODES.items()]
