"""The AvaTax tax engine plugin: registers AvalaraTax with Headend."""

from __future__ import annotations

from headend import hookimpl

from headend_tax_avalara.engine import AvalaraTax

__all__ = ["AvalaraTax"]


@hookimpl
def register_tax_engines():
    return [AvalaraTax()]
