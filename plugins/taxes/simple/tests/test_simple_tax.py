"""The simple engine against hand-computed invoices, and its rounding properties."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

import pytest
from headend.plugins.interfaces import (
    TaxDetail,
    TaxEngineRejected,
    TaxLine,
    TaxLineResult,
    TaxRateSpec,
    TaxRequest,
)
from headend_tax_simple import SimpleTax
from headend_tax_simple.engine import exact_taxes
from hypothesis import given, settings
from hypothesis import strategies as st

ENGINE = SimpleTax()
STATE = TaxRateSpec("State", "percent", Decimal("6.25"), tax_rate_id=1)
COUNTY = TaxRateSpec("County", "percent", Decimal("1"), tax_rate_id=2)
E911 = TaxRateSpec("E911", "flat", Decimal("0.75"), tax_rate_id=3)


def request(*lines, rounding="line", currency="USD"):
    return TaxRequest("INV-1", "C-1", dt.date(2026, 3, 1), currency, {}, tuple(lines), rounding)


def test_percent_rate_is_a_share_of_the_line():
    result = ENGINE.quote({}, request(
        TaxLine(1, 10_000, rates=(TaxRateSpec("Sales", "percent", Decimal("7.25")),))))
    assert result.total_tax == 725
    assert result.lines == (TaxLineResult(1, 725, 10_000, (
        TaxDetail("Sales", "Sales", Decimal("7.25"), 725),)),)


def test_flat_rate_is_per_unit_per_cycle():
    line = TaxLine(1, 3_000, quantity=Decimal(3),
                   rates=(TaxRateSpec("Line fee", "flat", Decimal("1.50")),))
    assert ENGINE.quote({}, request(line)).total_tax == 450
    yen = TaxLine(1, 5_000, quantity=Decimal(2), rates=(TaxRateSpec("Fee", "flat", Decimal(100)),))
    assert ENGINE.quote({}, request(yen, currency="JPY")).total_tax == 200


def test_exempt_line_pays_nothing():
    result = ENGINE.quote({}, request(
        TaxLine(1, 10_000, exemption_code="RESALE", rates=(STATE, E911)),
        TaxLine(2, 2_000, rates=(STATE,))))
    assert result.lines[0] == TaxLineResult(1, 0, 0, ())
    assert result.total_tax == 125


def test_several_labels_on_one_line_are_itemised():
    # 49.99: state 6.25 % = 3.124375 -> 3.12; county 1 % = 0.4999 -> 0.50; E911 0.75 flat
    result = ENGINE.quote({}, request(TaxLine(1, 4_999, rates=(STATE, COUNTY, E911))))
    (line,) = result.lines
    assert [(d.jurisdiction, d.tax, d.tax_rate_id) for d in line.details] == [
        ("State", 312, 1), ("County", 50, 2), ("E911", 75, 3)]
    assert line.tax == result.total_tax == 437
    assert line.taxable == 4_999


def test_tax_included_amount_is_split_back_out():
    result = ENGINE.quote({}, request(TaxLine(
        1, 10_725, tax_included=True, rates=(TaxRateSpec("Sales", "percent", Decimal("7.25")),))))
    assert (result.total_tax, result.lines[0].taxable) == (725, 10_000)


def test_invoice_rounding_differs_from_line_rounding_by_a_cent():
    # three lines of 0.10 at 5 %: each 0.005 rounds up to 0.01 (0.03); their sum 0.015 is 0.02
    lines = [TaxLine(n, 10, rates=(TaxRateSpec("Sales", "percent", Decimal(5)),))
             for n in (1, 2, 3)]
    per_line = ENGINE.quote({}, request(*lines))
    per_invoice = ENGINE.quote({}, request(*lines, rounding="invoice"))
    assert [r.tax for r in per_line.lines] == [1, 1, 1] and per_line.total_tax == 3
    assert [r.tax for r in per_invoice.lines] == [1, 1, 0] and per_invoice.total_tax == 2


def test_invoice_rounding_shares_by_largest_remainder():
    # 4 % of 0.30, 0.45, 0.20 = 1.2, 1.8, 0.8 cents; total 3.8 -> 4: floors 1, 1, 0 + 2 units
    lines = [TaxLine(n, amount, rates=(TaxRateSpec("Sales", "percent", Decimal(4)),))
             for n, amount in ((1, 30), (2, 45), (3, 20))]
    result = ENGINE.quote({}, request(*lines, rounding="invoice"))
    assert [r.tax for r in result.lines] == [1, 2, 1] and result.total_tax == 4


def test_quote_and_post_agree_and_void_is_a_no_op():
    req = request(TaxLine(1, 12_345, rates=(STATE, E911)))
    assert ENGINE.post({}, req) == ENGINE.quote({}, req)
    assert ENGINE.void({}, "INV-1") is None


def test_bad_kind_or_rounding_is_rejected():
    with pytest.raises(TaxEngineRejected, match="tax kind"):
        ENGINE.quote({}, request(TaxLine(1, 100, rates=(TaxRateSpec("X", "weird", Decimal(1)),))))
    with pytest.raises(TaxEngineRejected, match="rounding"):
        ENGINE.quote({}, request(TaxLine(1, 100), rounding="daily"))


def test_engine_is_found_through_its_entry_point(app):
    engines = {p.plugin_id: p for p in app.extensions["headend_plugins"].of_kind("tax_engine")}
    assert isinstance(engines["simple_tax"], SimpleTax)


RATES = st.sampled_from([
    STATE, COUNTY, E911, TaxRateSpec("City", "percent", Decimal("2.375")),
    TaxRateSpec("Fee", "flat", Decimal("0.333")), TaxRateSpec("State", "percent", Decimal("3")),
])
LINES = st.lists(st.tuples(
    st.integers(-1_000_000, 10_000_000), st.integers(1, 12),
    st.lists(RATES, max_size=4, unique=True), st.booleans(), st.booleans()), max_size=8)


def _half_up(value):
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@settings(max_examples=300, deadline=None)
@given(LINES, st.sampled_from(["line", "invoice"]))
def test_totals_add_up_and_rounding_stays_within_a_unit(specs, rounding):
    lines = tuple(TaxLine(n, amount, Decimal(qty), rates=tuple(rates), tax_included=included,
                          exemption_code="EX" if exempt else "")
                  for n, (amount, qty, rates, included, exempt) in enumerate(specs, 1))
    result = ENGINE.quote({}, request(*lines, rounding=rounding))
    assert result.total_tax == sum(r.tax for r in result.lines)
    assert all(r.tax == sum(d.tax for d in r.details) for r in result.lines)
    exact_by_label, rounded_by_label = defaultdict(Decimal), defaultdict(int)
    for line, line_result in zip(lines, result.lines, strict=True):
        exact = exact_taxes(line, "USD")
        assert len(exact) == len(line_result.details)
        for (spec, tax), detail in zip(exact, line_result.details, strict=True):
            limit = Decimal("0.5") if rounding == "line" else Decimal(1)
            assert abs(detail.tax - tax) <= limit and abs(detail.tax - tax) < 1
            exact_by_label[spec.label] += tax
            rounded_by_label[spec.label] += detail.tax
    if rounding == "invoice":
        assert {k: _half_up(v) for k, v in exact_by_label.items()} == dict(rounded_by_label)
