"""The classic invoice form plugin: registers ClassicForm with Headend."""

from __future__ import annotations

from headend import hookimpl

from headend_form_classic.form import ClassicForm

__all__ = ["ClassicForm"]


@hookimpl
def register_invoice_forms():
    return [ClassicForm()]
