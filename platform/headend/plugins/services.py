"""Enabling and configuring plugins for the acting tenant, and reading their settings back.

Values are validated against the plugin's config schema; secret fields are encrypted into
`secret_config` and only ever come back through `plugin_settings` (for plugin code). What the UI
and API show is `public_settings`, where a stored secret reads as REDACTED.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from headend import secrets
from headend.errors import ValidationFailed
from headend.plugins.config_schema import from_json, to_json
from headend.plugins.interfaces import Plugin
from headend.plugins.models import PluginConfiguration
from headend.tenancy.context import current_scope

REDACTED = "••• (set)"


def _plugin(plugin_id: str, plugin: Plugin | None) -> Plugin:
    if plugin is None:
        from headend.plugins.manager import current_manager

        plugin = current_manager().get(plugin_id)
    if plugin is None or plugin.plugin_id != plugin_id:
        raise ValidationFailed({"plugin_id": f"{plugin_id!r} is not an installed plugin"})
    return plugin


def configuration(session: Session, plugin_id: str) -> PluginConfiguration | None:
    """The acting tenant's row for `plugin_id` (scoping keeps other tenants' rows out)."""
    if current_scope().all_tenants:
        # Without a tenant this would be any tenant's row, shown as if it were everyone's.
        raise ValidationFailed({"tenant": "choose a tenant to act for (Platform > Act for "
                                          "tenant)"})
    return session.scalar(
        select(PluginConfiguration).where(PluginConfiguration.plugin_id == plugin_id)
    )


def _stored_secrets(row: PluginConfiguration | None) -> dict:
    """The stored secrets for editing and display; unreadable ones (key changed) count as unset,
    so the form asks for them again instead of failing."""
    try:
        return secrets.unseal(row.secret_config) if row else {}
    except secrets.SecretsUnreadable:
        return {}


def _save(session, plugin, row, enabled: bool, values: Mapping[str, Any]) -> PluginConfiguration:
    stored = _stored_secrets(row)
    plain, secret = plugin.config_schema.validate(values, stored, enforce_required=enabled)
    if row is None:
        row = PluginConfiguration(plugin_id=plugin.plugin_id)
        session.add(row)
    row.enabled = bool(enabled)
    row.config = to_json(plain)
    if to_json(secret) != stored:  # re-encrypting unchanged secrets would churn the audit log
        row.secret_config = secrets.seal(to_json(secret))
    session.flush()
    return row


def configure_plugin(session: Session, plugin_id: str, enabled: bool,
                     values: Mapping[str, Any], plugin: Plugin | None = None
                     ) -> PluginConfiguration:
    """Replace the acting tenant's settings of a plugin; a blank secret keeps the stored one.

    Required settings are enforced only when the plugin is enabled, so a tenant can save a
    half-finished configuration while the plugin stays off.
    """
    return _save(session, _plugin(plugin_id, plugin), configuration(session, plugin_id),
                 enabled, values)


def set_enabled(session: Session, plugin_id: str, enabled: bool,
                plugin: Plugin | None = None) -> PluginConfiguration:
    """Switch a plugin on or off, keeping its settings (enabling checks the required ones)."""
    plugin = _plugin(plugin_id, plugin)
    row = configuration(session, plugin_id)
    values = dict(row.config or {}) if row else {}
    return _save(session, plugin, row, enabled, values)


def plugin_settings(session: Session, plugin_id: str, plugin: Plugin | None = None) -> dict:
    """Every setting, secrets decrypted, typed and defaulted: for plugin code, never for display."""
    plugin = _plugin(plugin_id, plugin)
    row = configuration(session, plugin_id)
    stored = dict(row.config or {}) if row else {}
    if row is not None:
        stored.update(secrets.unseal(row.secret_config))
    return plugin.config_schema.with_defaults(from_json(plugin.config_schema, stored))


def public_settings(session: Session, plugin_id: str, plugin: Plugin | None = None) -> dict:
    """Settings safe to show: plain values as stored, a set secret as REDACTED, unset as None."""
    plugin = _plugin(plugin_id, plugin)
    row = configuration(session, plugin_id)
    plain = dict(row.config or {}) if row else {}
    secret_names = set(_stored_secrets(row))
    return {
        f.name: (REDACTED if f.name in secret_names else None) if f.secret
        else plain.get(f.name, f.default)
        for f in plugin.config_schema
    }


def overview(session: Session, plugins: list[Plugin]) -> list[dict]:
    """One entry per installed plugin with the acting tenant's enabled flag."""
    rows = {r.plugin_id: r for r in session.scalars(select(PluginConfiguration))}
    return [
        {"plugin": p, "enabled": bool(rows.get(p.plugin_id) and rows[p.plugin_id].enabled),
         "configured": p.plugin_id in rows}
        for p in plugins
    ]
