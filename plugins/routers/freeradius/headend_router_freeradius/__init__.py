"""The FreeRADIUS router driver plugin: subscribers' credentials, rate limits and suspension
groups in FreeRADIUS's SQL tables; live changes by CoA and Disconnect."""

from __future__ import annotations

from headend import hookimpl

from headend_router_freeradius.driver import FreeradiusDriver

__all__ = ["FreeradiusDriver"]


@hookimpl
def register_router_drivers():
    return [FreeradiusDriver()]
