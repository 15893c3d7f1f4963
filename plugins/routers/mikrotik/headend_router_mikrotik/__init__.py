"""The MikroTik router driver plugin: simple queues, PPP secrets and the suspended address list
through the RouterOS API."""

from __future__ import annotations

from headend import hookimpl

from headend_router_mikrotik.driver import MikrotikDriver

__all__ = ["MikrotikDriver"]


@hookimpl
def register_router_drivers():
    return [MikrotikDriver()]
