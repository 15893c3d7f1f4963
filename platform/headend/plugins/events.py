"""Announcing events to plugins: services call `fire("invoice_posted", tenant_id=..., ...)`.

Hooks run synchronously inside the caller's transaction, so an exception in a plugin rolls the
change back; plugins with slow or remote work enqueue a job instead. Outside an app context
(plain unit tests, scripts) there are no plugins and firing does nothing.
"""

from __future__ import annotations

from flask import current_app, has_app_context

from headend.plugins.hookspecs import event_names


def fire(name: str, **kwargs) -> list:
    """Call `name` on the plugins that are on for kwargs["tenant_id"]; return their results."""
    if name not in event_names():
        raise ValueError(f"{name!r} is not an event hook; one of {', '.join(event_names())}")
    if not has_app_context():
        return []
    pm = current_app.extensions.get("headend_plugins")
    if pm is None:
        return []
    return pm.event_caller(name, kwargs["tenant_id"])(**kwargs)
