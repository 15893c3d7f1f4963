"""The simple tax engine plugin: registers SimpleTax with Headend."""

from __future__ import annotations

from headend import hookimpl

from headend_tax_simple.engine import SimpleTax

__all__ = ["SimpleTax"]


@hookimpl
def register_tax_engines():
    return [SimpleTax()]
