"""A flat-rate tax engine: the smallest real plugin, installed by the core's tests."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from headend import hookimpl
from headend.plugins.interfaces import (
    ConfigSchema,
    Field,
    TaxEngine,
    TaxLineResult,
    TaxResult,
)


class HelloTax(TaxEngine):
    plugin_id = "hello_tax"
    name = "Hello flat tax"
    version = "0.1.0"
    config_schema = ConfigSchema((
        Field("api_url", "str", required=True, help="Where the (imaginary) service lives"),
        Field("license_key", "str", required=True, secret=True),
        Field("rate", "decimal", default="0.05"),
        Field("mode", "choice", default="sandbox", choices=("sandbox", "production")),
    ))

    def quote(self, settings, request):
        rate = Decimal(settings["rate"])
        lines = tuple(
            TaxLineResult(
                line.number,
                int((rate * line.amount).quantize(Decimal(1), rounding=ROUND_HALF_UP)),
                line.amount,
            )
            for line in request.lines
        )
        return TaxResult(sum(line.tax for line in lines), lines)

    def post(self, settings, request):
        return self.quote(settings, request)

    def void(self, settings, document_code):
        return None


@hookimpl
def register_tax_engines():
    return [HelloTax()]
