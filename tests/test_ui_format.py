"""How stored values read on admin pages: prices without noise, booleans and blanks in words."""

from decimal import Decimal

from headend.catalog.models import Package
from headend.ui import decimal_text, formatters_for, labels_for, yes_no_text


def test_decimals_show_cents_and_only_the_places_they_have():
    assert decimal_text(Decimal("49.9900")) == "49.99"
    assert decimal_text(Decimal("0.0125")) == "0.0125"
    assert decimal_text(Decimal("100")) == "100.00"
    assert decimal_text(Decimal("1319.9900")) == "1319.99"
    assert decimal_text(Decimal("0")) == "0.00"
    assert decimal_text(None) == "—"


def test_booleans_and_blanks_read_as_words():
    assert (yes_no_text(True), yes_no_text(False), yes_no_text(None)) == ("Yes", "No", "—")
    formatters = formatters_for(Package)
    assert formatters["price_quarterly"](None) == "—"
    assert formatters["setup_fee"](Decimal("49.9900")) == "49.99"
    assert formatters["active"](True) == "Yes"
    assert formatters["description"](None) == "—"
    assert formatters["service_lines"]([]) == "—"


def test_labels_are_sentence_case_with_overrides():
    labels = labels_for(Package, price_semiannual="Price semi-annual")
    assert labels["setup_fee"] == "Setup fee"
    assert labels["price_semiannual"] == "Price semi-annual"
    assert labels["service_lines"] == "Service lines"
