"""Plugin discovery (built-ins and the `headend` entry-point group) and per-tenant plugin sets.

Startup fails, naming the plugin, when a plugin cannot be imported, implements a hook that has
no spec (a typo would otherwise be silently ignored), or registers a malformed or duplicate
plugin object.
"""

from __future__ import annotations

import importlib
from importlib import metadata

import pluggy
from flask import current_app
from sqlalchemy import select

from headend.plugins import hookspecs
from headend.plugins.interfaces import KINDS, Plugin

# Module paths of the plugins that ship with the core (real ones arrive with their features).
DEFAULT_PLUGINS: tuple[str, ...] = ("headend.network.listener", "headend.mail.listener")
ENTRY_POINT_GROUP = "headend"


class PluginLoadError(RuntimeError):
    """A plugin cannot run: the message names it and says why."""


def parse_allowlist(value) -> set[str] | None:
    """HEADEND_PLUGIN_ALLOWLIST as a set of entry-point names; None allows every plugin."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    return {name.strip() for name in value if name.strip()}


class HeadendPluginManager(pluggy.PluginManager):
    """pluggy's manager plus the registry of plugin objects handed over by register_* hooks."""

    def __init__(self):
        super().__init__("headend")
        self.add_hookspecs(hookspecs)
        self._registry: dict[str, Plugin] | None = None

    def register(self, plugin, name=None):
        self._registry = None
        return super().register(plugin, name)

    def unregister(self, plugin=None, name=None):
        self._registry = None
        return super().unregister(plugin, name)

    def check(self) -> None:
        """pluggy's check_pending, with an error that names the offending plugin."""
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginLoadError(f"plugin {name!r}: {exc}") from exc
        self.registry  # noqa: B018  (collecting validates every plugin object now)

    @property
    def registry(self) -> dict[str, Plugin]:
        """Every plugin object by plugin_id, in registration-hook order."""
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def _collect(self) -> dict[str, Plugin]:
        found: dict[str, tuple[Plugin, str]] = {}
        for hook_name, kind in hookspecs.REGISTRATION_KINDS.items():
            interface = KINDS[kind]
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                if impl.hookwrapper or impl.wrapper:
                    continue
                for obj in impl.function() or ():
                    where = f"plugin {impl.plugin_name!r} ({hook_name})"
                    if not isinstance(obj, interface):
                        raise PluginLoadError(
                            f"{where}: {obj!r} does not implement {interface.__name__}"
                        )
                    pid = getattr(obj, "plugin_id", None)
                    if not isinstance(pid, str) or not pid or not getattr(obj, "name", None):
                        raise PluginLoadError(f"{where}: {obj!r} needs a plugin_id and a name")
                    if pid in found:
                        raise PluginLoadError(
                            f"{where}: plugin_id {pid!r} is already registered by plugin "
                            f"{found[pid][1]!r}"
                        )
                    found[pid] = (obj, impl.plugin_name)
        self._owners = {pid: owner for pid, (_, owner) in found.items()}
        return {pid: obj for pid, (obj, _) in found.items()}

    def get(self, plugin_id: str) -> Plugin | None:
        return self.registry.get(plugin_id)

    def of_kind(self, kind: str) -> list[Plugin]:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}; one of {', '.join(KINDS)}")
        return [p for p in self.registry.values() if p.kind == kind]

    def enabled_ids(self, tenant_id: int) -> set[str]:
        """The plugin_ids `tenant_id` has enabled (needs an app context)."""
        from headend.db import db
        from headend.plugins.models import PluginConfiguration
        from headend.tenancy.context import acting_as

        with acting_as(tenant_id):
            return set(db.session.scalars(
                select(PluginConfiguration.plugin_id).where(PluginConfiguration.enabled)
            ))

    def plugins_for(self, tenant_id: int, kind: str) -> list[Plugin]:
        """The plugins of `kind` that `tenant_id` has enabled (needs an app context)."""
        enabled = self.enabled_ids(tenant_id)
        return [p for p in self.of_kind(kind) if p.plugin_id in enabled]

    def event_caller(self, name: str, tenant_id: int):
        """The `name` hook of the plugins that are on for `tenant_id`.

        A plugin that provides gateways, engines, drivers or forms hears a tenant's events only
        when the tenant enabled one of them; a plugin that provides none (a pure listener) hears
        every tenant's.
        """
        self.registry  # noqa: B018  (fills _owners)
        enabled = self.enabled_ids(tenant_id)
        on = {owner for pid, owner in self._owners.items() if pid in enabled}
        off = set(self._owners.values()) - on
        return self.subset_hook_caller(name, remove_plugins=[self.get_plugin(n) for n in off])


def load_entry_points(pm: HeadendPluginManager, allowlist: set[str] | None) -> list[str]:
    """Register installed plugins allowed by `allowlist`; return the names registered."""
    loaded = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowlist is not None and ep.name not in allowlist:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginLoadError(f"plugin {ep.name!r} ({ep.value}) cannot load: {exc}") from exc
        pm.register(plugin, name=ep.name)
        loaded.append(ep.name)
    return loaded


def build_manager(allowlist: set[str] | None = None) -> HeadendPluginManager:
    pm = HeadendPluginManager()
    for path in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(path), name=path)
    load_entry_points(pm, allowlist)
    pm.check()
    return pm


def init_plugins(app, appbuilder=None) -> HeadendPluginManager:
    pm = build_manager(parse_allowlist(app.config.get("HEADEND_PLUGIN_ALLOWLIST")))
    app.extensions["headend_plugins"] = pm
    return pm


def current_manager() -> HeadendPluginManager:
    return current_app.extensions["headend_plugins"]
