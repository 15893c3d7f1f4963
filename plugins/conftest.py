"""Plugins in this repository test against Headend's own pytest fixtures (app, make_tenant...)."""

pytest_plugins = ["headend.testing"]
